"""AWS Certificate Manager (`acm`) through boto3 and the aws CLI: certificates
requested from Berth's local CA (issued at once, verified with openssl against
`berth ca-certificate`), an imported self-signed certificate, tags, account
configuration; bad input answered with AWS's error codes and changing nothing;
the CA and the certificates kept across a restart. Every answer is checked
against the botocore model."""
import base64
import subprocess
import urllib.request

import boto3
import botocore.config
import pytest

from berth_harness import (ACCESS_KEY, ACCOUNT, REGION, SECRET_KEY, Berth, berth_binary,
                           check_output, load_model)

MODEL = load_model("acm", "2015-12-08")
TARGET = "CertificateManager"
ALL_KEY_TYPES = ["RSA_1024", "RSA_2048", "RSA_3072", "RSA_4096", "EC_prime256v1",
                 "EC_secp384r1", "EC_secp521r1"]
MISSING = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/11111111-2222-3333-4444-555555555555"


def client(berth, validate=True):
    return boto3.client(
        "acm", endpoint_url=berth.endpoint, region_name=REGION,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(retries={"max_attempts": 1},
                                      parameter_validation=validate))


def raw(berth, operation, payload):
    """A signed call; its body checked against the model when it succeeds."""
    status, body, _ = berth.raw("acm", TARGET, operation, payload)
    if status == 200:
        check_output(MODEL, operation, body)
    return status, body


def ok(berth, operation, payload):
    status, body = raw(berth, operation, payload)
    assert status == 200, (operation, body)
    return body


def b64(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.b64encode(data).decode()


def state(berth):
    """Everything a caller can see of ACM."""
    certs = ok(berth, "ListCertificates", {"Includes": {"keyTypes": ALL_KEY_TYPES}})
    out = {"list": certs["CertificateSummaryList"]}
    for c in out["list"]:
        arn = c["CertificateArn"]
        d = ok(berth, "DescribeCertificate", {"CertificateArn": arn})["Certificate"]
        d.pop("RenewalEligibility", None)
        out[arn] = (d, ok(berth, "ListTagsForCertificate", {"CertificateArn": arn}),
                    ok(berth, "GetCertificate", {"CertificateArn": arn}))
    out["config"] = ok(berth, "GetAccountConfiguration", {})
    return out


def ca_pem(berth):
    out = subprocess.run([berth_binary(), "ca-certificate", "--endpoint", berth.endpoint],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout


def openssl(*args, input=None):
    return subprocess.run(["openssl", *args], capture_output=True, text=True, input=input,
                          timeout=60)


def self_signed(tmp_path, name, days=30):
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
    proc = openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                   "-out", str(cert), "-days", str(days), "-subj", f"/CN={name}/O=Tests",
                   "-addext", f"subjectAltName=DNS:{name}")
    assert proc.returncode == 0, proc.stderr
    return cert, key


def expired_self_signed(tmp_path):
    """A self-signed certificate valid in January 2020 only (`openssl ca`
    sets past dates, which OpenSSL 3.0's `req` cannot)."""
    d = tmp_path / "ca"
    d.mkdir()
    (d / "ca.cnf").write_text("[ca]\ndefault_ca = d\n[d]\ndatabase = index.txt\n"
                              "new_certs_dir = .\nserial = serial\ndefault_md = sha256\n"
                              "policy = p\n[p]\ncommonName = supplied\n")
    (d / "index.txt").write_text("")
    (d / "serial").write_text("01\n")
    proc = subprocess.run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes",
                           "-keyout", "old.key", "-out", "old.csr", "-subj", "/CN=old.example.test"],
                          cwd=d, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(["openssl", "ca", "-batch", "-config", "ca.cnf", "-selfsign",
                           "-keyfile", "old.key", "-in", "old.csr", "-out", "old.crt", "-notext",
                           "-startdate", "20200101000000Z", "-enddate", "20200201000000Z"],
                          cwd=d, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return d / "old.crt", d / "old.key"


@pytest.fixture(scope="module")
def acm_berth(tmp_path_factory):
    server = Berth(tmp_path_factory.mktemp("berth") / "data").start()
    yield server
    server.stop()


def test_requested_certificate_is_issued_and_verifies_against_the_ca(acm_berth, tmp_path):
    acm = client(acm_berth)
    arn = acm.request_certificate(
        DomainName="www.example.test", SubjectAlternativeNames=["api.example.test"],
        ValidationMethod="DNS", Tags=[{"Key": "team", "Value": "web"}])["CertificateArn"]
    assert arn.startswith(f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/")
    d = ok(acm_berth, "DescribeCertificate", {"CertificateArn": arn})["Certificate"]
    assert d["Status"] == "ISSUED" and d["Type"] == "AMAZON_ISSUED"
    assert d["KeyAlgorithm"] == "RSA_2048"
    assert d["SubjectAlternativeNames"] == ["www.example.test", "api.example.test"]
    assert {o["ValidationStatus"] for o in d["DomainValidationOptions"]} == {"SUCCESS"}
    assert d["DomainValidationOptions"][0]["ResourceRecord"]["Type"] == "CNAME"
    assert 394 * 86400 < d["NotAfter"] - d["NotBefore"] < 396 * 86400
    assert d["InUseBy"] == [] and d["RenewalEligibility"] == "INELIGIBLE"
    got = ok(acm_berth, "GetCertificate", {"CertificateArn": arn})
    ca = ca_pem(acm_berth)
    assert "BEGIN CERTIFICATE" in ca
    assert got["CertificateChain"].strip() == ca.strip()
    # The same PEM over plain HTTP, for curl.
    with urllib.request.urlopen(f"{acm_berth.endpoint}/_berth/ca-certificate", timeout=10) as r:
        assert r.read().decode().strip() == ca.strip()
    (tmp_path / "ca.pem").write_text(ca)
    (tmp_path / "leaf.pem").write_text(got["Certificate"])
    proc = openssl("verify", "-CAfile", str(tmp_path / "ca.pem"), "-purpose", "sslserver",
                   "-verify_hostname", "api.example.test", str(tmp_path / "leaf.pem"))
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout + proc.stderr
    proc = openssl("verify", "-CAfile", str(tmp_path / "ca.pem"),
                   "-verify_hostname", "other.example.test", str(tmp_path / "leaf.pem"))
    assert proc.returncode != 0
    # The aws CLI sees the same certificate; ListCertificates shows RSA_2048 by default.
    _, listed, _ = acm_berth.aws("acm", "list-certificates")
    assert arn in [c["CertificateArn"] for c in listed["CertificateSummaryList"]]
    _, described, _ = acm_berth.aws("acm", "describe-certificate", "--certificate-arn", arn)
    assert described["Certificate"]["Serial"] == d["Serial"]
    # An EC certificate, found with the keyTypes filter only.
    ec = acm.request_certificate(DomainName="ec.example.test",
                                 KeyAlgorithm="EC_prime256v1")["CertificateArn"]
    default = [c["CertificateArn"] for c in
               ok(acm_berth, "ListCertificates", {})["CertificateSummaryList"]]
    assert ec not in default
    filtered = ok(acm_berth, "ListCertificates", {"Includes": {"keyTypes": ["EC_prime256v1"]}})
    assert [c["CertificateArn"] for c in filtered["CertificateSummaryList"]] == [ec]
    # Renewal re-issues under the same ARN.
    acm.renew_certificate(CertificateArn=ec)
    renewed = ok(acm_berth, "DescribeCertificate", {"CertificateArn": ec})["Certificate"]
    assert renewed["RenewalSummary"]["RenewalStatus"] == "SUCCESS"
    acm.delete_certificate(CertificateArn=ec)
    # Paging.
    page = ok(acm_berth, "ListCertificates", {"MaxItems": 1, "Includes": {"keyTypes": ALL_KEY_TYPES}})
    assert len(page["CertificateSummaryList"]) == 1


def test_imported_self_signed_certificate_through_the_cli(acm_berth, tmp_path):
    cert, key = self_signed(tmp_path, "imported.example.test")
    _, out, _ = acm_berth.aws("acm", "import-certificate", "--certificate", f"fileb://{cert}",
                              "--private-key", f"fileb://{key}",
                              "--tags", "Key=env,Value=test")
    arn = out["CertificateArn"]
    d = ok(acm_berth, "DescribeCertificate", {"CertificateArn": arn})["Certificate"]
    assert d["Type"] == "IMPORTED" and d["Status"] == "ISSUED"
    assert d["DomainName"] == "imported.example.test" and d["Issuer"] == "Tests"
    assert "ImportedAt" in d and "DomainValidationOptions" not in d
    got = ok(acm_berth, "GetCertificate", {"CertificateArn": arn})
    assert got["Certificate"].strip() == cert.read_text().strip()
    assert "CertificateChain" not in got
    # Re-import (a new certificate for the same name) keeps the ARN.
    cert2, key2 = self_signed(tmp_path, "imported.example.test", days=60)
    _, again, _ = acm_berth.aws("acm", "import-certificate", "--certificate-arn", arn,
                                "--certificate", f"fileb://{cert2}",
                                "--private-key", f"fileb://{key2}")
    assert again["CertificateArn"] == arn
    got = ok(acm_berth, "GetCertificate", {"CertificateArn": arn})
    assert got["Certificate"].strip() == cert2.read_text().strip()
    # Tags.
    acm_berth.aws("acm", "add-tags-to-certificate", "--certificate-arn", arn,
                  "--tags", "Key=team,Value=web")
    acm_berth.aws("acm", "remove-tags-from-certificate", "--certificate-arn", arn,
                  "--tags", "Key=env")
    tags = ok(acm_berth, "ListTagsForCertificate", {"CertificateArn": arn})["Tags"]
    assert tags == [{"Key": "team", "Value": "web"}]
    # Account configuration.
    acm = client(acm_berth)
    assert acm.get_account_configuration()["ExpiryEvents"]["DaysBeforeExpiry"] == 45
    acm.put_account_configuration(IdempotencyToken="tok", ExpiryEvents={"DaysBeforeExpiry": 30})
    assert acm.get_account_configuration()["ExpiryEvents"]["DaysBeforeExpiry"] == 30
    acm_berth.aws("acm", "delete-certificate", "--certificate-arn", arn)
    code, _, err = acm_berth.aws("acm", "describe-certificate", "--certificate-arn", arn,
                                 check=False)
    assert code != 0 and "ResourceNotFoundException" in err


def test_bad_input_answers_aws_errors_and_changes_nothing(acm_berth, tmp_path):
    acm = client(acm_berth)
    keep = acm.request_certificate(DomainName="keep.example.test",
                                   KeyAlgorithm="EC_prime256v1")["CertificateArn"]
    cert, key = self_signed(tmp_path, "a.example.test")
    _, other_key = self_signed(tmp_path, "b.example.test")
    expired, expired_key = expired_self_signed(tmp_path)
    c, k, ok_key = cert.read_text(), key.read_text(), other_key.read_text()
    before = state(acm_berth)
    cases = [
        ("ImportCertificate", {"Certificate": b64(c), "PrivateKey": b64(ok_key)},
         "ValidationException"),
        ("ImportCertificate", {"Certificate": b64(expired.read_text()),
                               "PrivateKey": b64(expired_key.read_text())}, "ValidationException"),
        ("ImportCertificate", {"Certificate": b64(c + c), "PrivateKey": b64(k)},
         "ValidationException"),
        ("ImportCertificate", {"Certificate": b64("garbage"), "PrivateKey": b64(k)},
         "ValidationException"),
        ("ImportCertificate", {"Certificate": b64(c), "PrivateKey": b64("garbage")},
         "ValidationException"),
        ("ImportCertificate", {"PrivateKey": b64(k)}, "ValidationException"),
        ("ImportCertificate", {"Certificate": b64(c), "PrivateKey": b64(k),
                               "CertificateArn": keep}, "ValidationException"),
        ("ImportCertificate", {"Certificate": b64(c), "PrivateKey": b64(k),
                               "Tags": [{"Key": "aws:reserved", "Value": "x"}]},
         "InvalidTagException"),
        ("RequestCertificate", {}, "ValidationException"),
        ("RequestCertificate", {"DomainName": "-bad-.example"}, "ValidationException"),
        ("RequestCertificate", {"DomainName": "a.example.test", "ValidationMethod": "FAX"},
         "ValidationException"),
        ("RequestCertificate", {"DomainName": "a.example.test", "KeyAlgorithm": "RSA_4096"},
         "ValidationException"),
        ("RequestCertificate", {"DomainName": "a.example.test",
                                "SubjectAlternativeNames": [f"n{i}.example.test" for i in range(11)]},
         "LimitExceededException"),
        ("DescribeCertificate", {"CertificateArn": "not-an-arn-at-all-really"},
         "ValidationException"),
        ("DescribeCertificate", {"CertificateArn": f"arn:aws:acm:{REGION}:{ACCOUNT}:thing/x"},
         "InvalidArnException"),
        ("DescribeCertificate", {"CertificateArn": MISSING}, "ResourceNotFoundException"),
        ("GetCertificate", {"CertificateArn": MISSING}, "ResourceNotFoundException"),
        ("DeleteCertificate", {"CertificateArn": MISSING}, "ResourceNotFoundException"),
        ("ListCertificates", {"MaxItems": 0}, "ValidationException"),
        ("ListCertificates", {"CertificateStatuses": ["BOGUS"]}, "ValidationException"),
        ("AddTagsToCertificate", {"CertificateArn": keep,
                                  "Tags": [{"Key": "aws:x", "Value": "y"}]}, "InvalidTagException"),
        ("PutAccountConfiguration", {"ExpiryEvents": {"DaysBeforeExpiry": 10}},
         "ValidationException"),
        ("ExportCertificate", {"CertificateArn": keep, "Passphrase": b64("secret")},
         "ValidationException"),
        ("RenewCertificate", {"CertificateArn": MISSING}, "ResourceNotFoundException"),
    ]
    failures = []
    for operation, payload, code in cases:
        status, body = raw(acm_berth, operation, payload)
        if status != 400 or body.get("__type", "").split("#")[-1] != code:
            failures.append(f"{operation} {str(payload)[:80]}: {status} {body}")
    assert not failures, "\n".join(failures)
    assert state(acm_berth) == before


def test_ca_and_certificates_survive_a_restart(tmp_path):
    server = Berth(tmp_path / "data").start()
    try:
        first_ca = ca_pem(server)
        arn = client(server).request_certificate(
            DomainName="kept.example.test", KeyAlgorithm="EC_prime256v1")["CertificateArn"]
        cert = ok(server, "GetCertificate", {"CertificateArn": arn})["Certificate"]
        server.stop()
        server.start()
        assert ca_pem(server) == first_ca
        assert ok(server, "GetCertificate", {"CertificateArn": arn})["Certificate"] == cert
        # The private keys and the CA's key are sealed in the store.
        store = (tmp_path / "data").rglob("*.db")
        for path in store:
            assert b"PRIVATE KEY" not in path.read_bytes(), path
    finally:
        server.stop()
