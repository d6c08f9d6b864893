"""Issue 19, ECR: registry policy, account settings, scanning configuration
(and the scan calls answered without a scanner), repository creation
templates (create on push), lifecycle policy previews, replication between
Berth's regions, pull-through cache against a local upstream registry
(Debian's docker-registry), bad inputs, and state across a restart. Through
boto3 and the aws CLI; every answer is checked against the botocore model."""
import base64
import hashlib
import http.client
import json
import shutil
import ssl
import subprocess
import time
from pathlib import Path

import boto3
import botocore.config
import pytest
from botocore.exceptions import ClientError

from berth_harness import ACCESS_KEY, ACCOUNT, SECRET_KEY, Berth, check_output, free_port, load_model
from test_registry import OCI_MANIFEST, Oci

MODEL = load_model("ecr", "2015-09-21")
WEST = "us-west-2"


def ecr(server, region="us-east-1"):
    return boto3.client(
        "ecr", endpoint_url=server.endpoint, region_name=region,
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(retries={"max_attempts": 1}))


def ok(client, operation, **params):
    """A boto3 call whose answer is validated against the model."""
    method = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
    out = getattr(client, method)(**params)
    out.pop("ResponseMetadata", None)
    check_output(MODEL, operation, json.loads(json.dumps(out, default=lambda d: d.timestamp())))
    return out


def error_code(client, operation, **params):
    method = "".join("_" + c.lower() if c.isupper() else c for c in operation).lstrip("_")
    with pytest.raises(ClientError) as e:
        getattr(client, method)(**params)
    return e.value.response["Error"]["Code"], e.value.response["Error"]["Message"]


def token(client):
    data = client.get_authorization_token()["authorizationData"][0]
    return base64.b64decode(data["authorizationToken"]).decode().split(":", 1)[1]


def lifecycle(count):
    return json.dumps({"rules": [{"rulePriority": 1, "description": "keep the newest",
                                  "selection": {"tagStatus": "any", "countType": "imageCountMoreThan",
                                                "countNumber": count},
                                  "action": {"type": "expire"}}]})


def test_registry_policy_settings_and_scanning(berth):
    client = ecr(berth)
    out = ok(client, "DescribeRegistry")
    assert out == {"registryId": ACCOUNT, "replicationConfiguration": {"rules": []}}

    assert error_code(client, "GetRegistryPolicy")[0] == "RegistryPolicyNotFoundException"
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "replicate", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111111111111:root"},
        "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"],
        "Resource": f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/*"}]})
    assert ok(client, "PutRegistryPolicy", policyText=policy)["policyText"] == policy
    _, got, _ = berth.aws("ecr", "get-registry-policy")
    check_output(MODEL, "GetRegistryPolicy", got)
    assert got == {"registryId": ACCOUNT, "policyText": policy}
    assert ok(client, "DeleteRegistryPolicy")["policyText"] == policy
    assert error_code(client, "DeleteRegistryPolicy")[0] == "RegistryPolicyNotFoundException"

    assert ok(client, "GetAccountSetting", name="REGISTRY_POLICY_SCOPE")["value"] == "V2"
    assert ok(client, "GetAccountSetting", name="BASIC_SCAN_TYPE_VERSION")["value"] == "AWS_NATIVE"
    _, out, _ = berth.aws("ecr", "put-account-setting", "--name", "REGISTRY_POLICY_SCOPE",
                          "--value", "V1")
    assert out == {"name": "REGISTRY_POLICY_SCOPE", "value": "V1"}
    assert ok(client, "GetAccountSetting", name="REGISTRY_POLICY_SCOPE")["value"] == "V1"

    got = ok(client, "GetRegistryScanningConfiguration")
    assert got["scanningConfiguration"] == {"scanType": "BASIC", "rules": []}
    rules = [{"scanFrequency": "SCAN_ON_PUSH",
              "repositoryFilters": [{"filter": "prod*", "filterType": "WILDCARD"}]}]
    ok(client, "PutRegistryScanningConfiguration", scanType="BASIC", rules=rules)
    assert ok(client, "GetRegistryScanningConfiguration")["scanningConfiguration"]["rules"] == rules
    code, message = error_code(client, "PutRegistryScanningConfiguration", scanType="ENHANCED")
    assert code == "ValidationException" and "Inspector" in message

    client.create_repository(repositoryName="prod-api")
    client.create_repository(repositoryName="dev-api")
    out = ok(client, "BatchGetRepositoryScanningConfiguration",
             repositoryNames=["prod-api", "dev-api", "missing"])
    by_name = {c["repositoryName"]: c for c in out["scanningConfigurations"]}
    assert by_name["prod-api"]["scanOnPush"] is True
    assert by_name["prod-api"]["appliedScanFilters"] == rules[0]["repositoryFilters"]
    assert by_name["dev-api"]["scanFrequency"] == "MANUAL"
    assert out["failures"][0]["failureCode"] == "REPOSITORY_NOT_FOUND"

    oci = Oci(berth, token(client))
    digest, _ = oci.push_image("prod-api", "v1", b"scan-me")
    code, message = error_code(client, "StartImageScan", repositoryName="prod-api",
                               imageId={"imageTag": "v1"})
    assert code == "UnsupportedImageTypeException" and "no vulnerability scanner" in message
    code, message = error_code(client, "DescribeImageScanFindings", repositoryName="prod-api",
                               imageId={"imageDigest": digest})
    assert code == "ScanNotFoundException" and "no vulnerability scanner" in message
    assert error_code(client, "StartImageScan", repositoryName="prod-api",
                      imageId={"imageTag": "nope"})[0] == "ImageNotFoundException"

    # Referrers: an artifact whose subject is the image.
    _, raw = oci.push_image("prod-api", "sig", b"signature", extra={
        "artifactType": "application/vnd.example.sig",
        "subject": {"mediaType": OCI_MANIFEST, "digest": digest, "size": 10}})
    out = ok(client, "ListImageReferrers", repositoryName="prod-api",
             subjectId={"imageDigest": digest})
    assert [r["artifactType"] for r in out["referrers"]] == ["application/vnd.example.sig"]
    out = ok(client, "ListImageReferrers", repositoryName="prod-api",
             subjectId={"imageDigest": digest}, filter={"artifactTypes": ["other"]})
    assert out["referrers"] == []

    # Not implemented operations answer a precise error.
    code, message = error_code(client, "GetSigningConfiguration")
    assert code == "ValidationException" and "AWS Signer" in message


def test_creation_templates_and_create_on_push(berth):
    client = ecr(berth)
    t = ok(client, "CreateRepositoryCreationTemplate", prefix="auto", appliedFor=["CREATE_ON_PUSH"],
           description="pushed repositories", imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
           imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "dev-*"}],
           resourceTags=[{"Key": "made-by", "Value": "template"}],
           lifecyclePolicy=lifecycle(5))["repositoryCreationTemplate"]
    assert t["prefix"] == "auto" and t["encryptionConfiguration"] == {"encryptionType": "AES256"}
    _, out, _ = berth.aws("ecr", "create-repository-creation-template", "--prefix", "ROOT",
                          "--applied-for", "REPLICATION", "PULL_THROUGH_CACHE")
    check_output(MODEL, "CreateRepositoryCreationTemplate", out)
    assert error_code(client, "CreateRepositoryCreationTemplate", prefix="auto/",
                      appliedFor=["REPLICATION"])[0] == "TemplateAlreadyExistsException"
    out = ok(client, "DescribeRepositoryCreationTemplates")
    assert [t["prefix"] for t in out["repositoryCreationTemplates"]] == ["ROOT", "auto"]
    out = ok(client, "UpdateRepositoryCreationTemplate", prefix="ROOT", description="root")
    assert out["repositoryCreationTemplate"]["description"] == "root"

    # A push to a missing repository under auto/ creates it from the template.
    oci = Oci(berth, token(client))
    oci.push_image("auto/app", "v1", b"one")
    repo = client.describe_repositories(repositoryNames=["auto/app"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repo["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "dev-*"}]
    tags = client.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
    assert tags == [{"Key": "made-by", "Value": "template"}]
    assert client.get_lifecycle_policy(repositoryName="auto/app")["lifecyclePolicyText"] == lifecycle(5)
    # Exclusions enforced on /v2/: v1 is immutable, dev-* tags move.
    oci.push_image("auto/app", "dev-1", b"one")
    oci.push_image("auto/app", "dev-1", b"two")
    status, _, body = oci.request("PUT", "/v2/auto/app/manifests/v1",
                                  *_manifest_of(client, "auto/app", "dev-1"))
    assert status == 400 and b"immutable" in body
    # Without a template, a push to a missing repository is refused.
    status, _, _ = oci.request("POST", "/v2/elsewhere/app/blobs/uploads/")
    assert status == 404

    ok(client, "DeleteRepositoryCreationTemplate", prefix="auto")
    assert error_code(client, "DeleteRepositoryCreationTemplate",
                      prefix="auto")[0] == "TemplateNotFoundException"


def _manifest_of(client, repo, tag):
    image = client.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}])["images"][0]
    return image["imageManifest"].encode(), {"Content-Type": image["imageManifestMediaType"]}


def test_lifecycle_policy_preview_deletes_nothing(berth):
    client = ecr(berth)
    client.create_repository(repositoryName="keep")
    oci = Oci(berth, token(client))
    digests = []
    for i in range(3):
        digests.append(oci.push_image("keep", f"v{i}", f"layer-{i}".encode())[0])
        time.sleep(0.05)
    assert error_code(client, "GetLifecyclePolicyPreview",
                      repositoryName="keep")[0] == "LifecyclePolicyPreviewNotFoundException"
    assert error_code(client, "StartLifecyclePolicyPreview",
                      repositoryName="keep")[0] == "LifecyclePolicyNotFoundException"
    out = ok(client, "StartLifecyclePolicyPreview", repositoryName="keep",
             lifecyclePolicyText=lifecycle(1))
    assert out["status"] == "COMPLETE"
    _, out, _ = berth.aws("ecr", "get-lifecycle-policy-preview", "--repository-name", "keep")
    check_output(MODEL, "GetLifecyclePolicyPreview", out)
    assert out["summary"] == {"expiringImageTotalCount": 2}
    assert sorted(r["imageDigest"] for r in out["previewResults"]) == sorted(digests[:2])
    assert all(r["action"] == {"type": "EXPIRE"} and r["appliedRulePriority"] == 1
               for r in out["previewResults"])
    # Nothing was deleted.
    assert len(client.list_images(repositoryName="keep")["imageIds"]) == 3
    out = ok(client, "GetLifecyclePolicyPreview", repositoryName="keep",
             imageIds=[{"imageTag": "v0"}])
    assert [r["imageDigest"] for r in out["previewResults"]] == [digests[0]]


def wait_for(check, timeout=10.0):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value or time.time() > deadline:
            return value
        time.sleep(0.1)


def test_replication_between_regions(berth):
    east, west = ecr(berth), ecr(berth, WEST)
    config = {"rules": [{"destinations": [{"region": WEST, "registryId": ACCOUNT}],
                         "repositoryFilters": [{"filter": "prod", "filterType": "PREFIX_MATCH"}]}]}
    _, out, _ = berth.aws("ecr", "put-replication-configuration", "--replication-configuration",
                          json.dumps(config))
    check_output(MODEL, "PutReplicationConfiguration", out)
    assert ok(east, "DescribeRegistry")["replicationConfiguration"] == config
    # The destination's repositories are created from its REPLICATION template.
    ok(west, "CreateRepositoryCreationTemplate", prefix="prod", appliedFor=["REPLICATION"],
       imageTagMutability="IMMUTABLE")
    east.create_repository(repositoryName="prod/app")
    east.create_repository(repositoryName="dev/app")
    oci = Oci(berth, token(east))
    digest, raw = oci.push_image("prod/app", "v1", b"replicated-layer")
    oci.push_image("dev/app", "v1", b"local-only")

    def status():
        s = ok(east, "DescribeImageReplicationStatus", repositoryName="prod/app",
               imageId={"imageTag": "v1"})["replicationStatuses"]
        return s if s and s[0]["status"] == "COMPLETE" else None
    assert wait_for(status) == [{"region": WEST, "registryId": ACCOUNT, "status": "COMPLETE"}]
    repo = west.describe_repositories(repositoryNames=["prod/app"])["repositories"][0]
    assert repo["repositoryArn"] == f"arn:aws:ecr:{WEST}:{ACCOUNT}:repository/prod/app"
    assert repo["imageTagMutability"] == "IMMUTABLE"
    ids = west.list_images(repositoryName="prod/app")["imageIds"]
    assert ids == [{"imageDigest": digest, "imageTag": "v1"}]
    assert error_code(west, "DescribeRepositories",
                      repositoryNames=["dev/app"])[0] == "RepositoryNotFoundException"
    # Pulled from the other region's endpoint with that region's token.
    pull = Oci(berth, token(west))
    status_code, headers, body = pull.request("GET", "/v2/prod/app/manifests/v1",
                                              headers={"Accept": OCI_MANIFEST})
    assert status_code == 200 and body == raw
    layer = json.loads(raw)["layers"][0]["digest"]
    status_code, _, body = pull.request("GET", f"/v2/prod/app/blobs/{layer}")
    assert status_code == 200 and body == b"replicated-layer"
    # The east token does not reach the west repository's copy by itself:
    # an untagged east-only repository is absent in the west.
    assert pull.request("GET", "/v2/dev/app/manifests/v1")[0] == 404


class Upstream:
    """Debian's docker-registry on a free port, unauthenticated."""

    def __init__(self, tmp_path, tls=None):
        """`tls`: (certificate, key, CA certificate) files to serve HTTPS with."""
        self.port = free_port()
        self.tls = tls
        root = tmp_path / "upstream"
        root.mkdir()
        config = root / "config.yml"
        tls_config = (f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else "")
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
            f"    rootdirectory: {root / 'data'}\nhttp:\n  addr: 127.0.0.1:{self.port}\n"
            + tls_config)
        self.proc = subprocess.Popen([shutil.which("docker-registry"), "serve", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=open(root / "log", "wb"))
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if self.request("GET", "/v2/")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("docker-registry did not start: " + (root / "log").read_text())

    def request(self, method, path, body=b"", headers=None):
        if self.tls:
            context = ssl.create_default_context(cafile=str(self.tls[2]))
            conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30,
                                               context=context)
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data

    def push_blob(self, repo, data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, h, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert status == 202
        location = h["location"].replace(f"http://127.0.0.1:{self.port}", "").replace(
            f"https://127.0.0.1:{self.port}", "")
        sep = "&" if "?" in location else "?"
        status, _, body = self.request("PUT", f"{location}{sep}digest={digest}", data,
                                       {"Content-Type": "application/octet-stream"})
        assert status == 201, body
        return digest

    def push_image(self, repo, tag, layer):
        config = json.dumps({"architecture": "amd64", "os": "linux",
                             "rootfs": {"type": "layers", "diff_ids": []}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": self.push_blob(repo, config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": self.push_blob(repo, layer), "size": len(layer)}]}).encode()
        status, _, body = self.request("PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                                       {"Content-Type": OCI_MANIFEST})
        assert status == 201, body
        return "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs Debian's docker-registry")
def test_pull_through_cache_from_a_local_upstream(berth, tmp_path):
    upstream = Upstream(tmp_path)
    try:
        digest, raw = upstream.push_image("library/tool", "1.0", b"upstream-layer")
        client = ecr(berth)
        sm = berth.client("secretsmanager")
        arn = sm.create_secret(Name="ecr-pullthroughcache/local",
                               SecretString=json.dumps({"username": "u", "accessToken": "t"}))["ARN"]
        # awscli v1 fetches parameters that look like URLs unless told not
        # to (v2 does not): the plain-HTTP upstream is written http://….
        config = tmp_path / "aws-config"
        config.write_text("[default]\ncli_follow_urlparam = false\n")
        env = dict(berth.cli_env(), AWS_CONFIG_FILE=str(config))
        _, out, _ = berth.aws("ecr", "create-pull-through-cache-rule", "--ecr-repository-prefix",
                              "mirror", "--upstream-registry-url", f"http://127.0.0.1:{upstream.port}",
                              "--credential-arn", arn, env=env)
        check_output(MODEL, "CreatePullThroughCacheRule", out)
        assert out["upstreamRepositoryPrefix"] == "ROOT" and "upstreamRegistry" not in out
        assert ok(client, "ValidatePullThroughCacheRule", ecrRepositoryPrefix="mirror")["isValid"]
        rules = ok(client, "DescribePullThroughCacheRules")["pullThroughCacheRules"]
        assert [r["ecrRepositoryPrefix"] for r in rules] == ["mirror"]

        oci = Oci(berth, token(client))
        status, headers, body = oci.request("GET", "/v2/mirror/library/tool/manifests/1.0",
                                            headers={"Accept": OCI_MANIFEST})
        assert status == 200 and body == raw and headers["docker-content-digest"] == digest
        layer = json.loads(raw)["layers"][0]["digest"]
        status, _, body = oci.request("GET", f"/v2/mirror/library/tool/blobs/{layer}")
        assert status == 200 and body == b"upstream-layer"
        # Stored: the repository exists (ROOT template applied) and serves
        # the image with the upstream stopped.
        repo = client.describe_repositories(repositoryNames=["mirror/library/tool"])["repositories"]
        assert repo[0]["repositoryName"] == "mirror/library/tool"
        upstream.stop()
        status, _, body = oci.request("GET", "/v2/mirror/library/tool/manifests/1.0",
                                      headers={"Accept": OCI_MANIFEST})
        assert status == 200 and body == raw
        # A miss with the upstream gone names the failure.
        status, _, body = oci.request("GET", "/v2/mirror/library/tool/manifests/2.0")
        assert status == 502 and b"cannot reach the upstream registry" in body
        out = ok(client, "ValidatePullThroughCacheRule", ecrRepositoryPrefix="mirror")
        assert out["isValid"] is False and "cannot reach" in out["failure"]
        out = ok(client, "UpdatePullThroughCacheRule", ecrRepositoryPrefix="mirror",
                 credentialArn=arn)
        assert out["credentialArn"] == arn
        ok(client, "DeletePullThroughCacheRule", ecrRepositoryPrefix="mirror")
    finally:
        upstream.stop() if upstream.proc.poll() is None else None


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs Debian's docker-registry")
def test_a_cached_tag_is_refreshed_from_its_upstream_after_the_refresh_interval(tmp_path):
    """ECR asks the upstream again for a cached tag once a day; this server
    does after 2 s (`--pull-through-refresh-seconds 2`). Within the interval
    the cached image is served even though the upstream's tag moved; after
    it, the tag follows the upstream; an upstream that is gone leaves the
    cached image served."""
    server = Berth(tmp_path / "data", extra_args=["--pull-through-refresh-seconds", "2"]).start()
    upstream = Upstream(tmp_path)
    try:
        first, raw_first = upstream.push_image("team/app", "stable", b"first-layer")
        client = ecr(server)
        ok(client, "CreatePullThroughCacheRule", ecrRepositoryPrefix="mirror",
           upstreamRegistryUrl=f"http://127.0.0.1:{upstream.port}")
        oci = Oci(server, token(client))
        path = "/v2/mirror/team/app/manifests/stable"

        def pulled():
            status, headers, body = oci.request("GET", path, headers={"Accept": OCI_MANIFEST})
            assert status == 200, body
            return headers["docker-content-digest"], body
        started = time.time()
        assert pulled() == (first, raw_first)
        second, raw_second = upstream.push_image("team/app", "stable", b"second-layer")
        assert second != first
        # Within the interval: the cached image.
        assert pulled() == (first, raw_first)
        assert time.time() - started < 2, "the machine was too slow to see the interval"
        # After it: the upstream's.
        time.sleep(max(0.0, started + 2.2 - time.time()))
        assert pulled() == (second, raw_second)
        images = client.describe_images(repositoryName="mirror/team/app")["imageDetails"]
        tagged = [i["imageDigest"] for i in images if "stable" in i.get("imageTags", [])]
        assert tagged == [second], images
        # The upstream gone: the cached image, after the interval too.
        upstream.stop()
        time.sleep(2.2)
        assert pulled() == (second, raw_second)
        # Pulls by digest never ask.
        status, _, body = oci.request("GET", f"/v2/mirror/team/app/manifests/{first}",
                                      headers={"Accept": OCI_MANIFEST})
        assert status == 200 and body == raw_first
    finally:
        upstream.stop() if upstream.proc.poll() is None else None
        server.stop()


def certificate_authority(tmp_path):
    """A CA and a certificate it signs for 127.0.0.1: (cert, key, CA cert)."""
    d = tmp_path / "pki"
    d.mkdir()

    def openssl(*args):
        proc = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(d / "leaf.key"), "-out", str(d / "leaf.csr"))
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", str(d / "leaf.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(d / "ext"), "-out", str(d / "leaf.pem"))
    return d / "leaf.pem", d / "leaf.key", d / "ca.pem"


@pytest.mark.skipif(shutil.which("docker-registry") is None, reason="needs Debian's docker-registry")
def test_pull_through_an_https_upstream_signed_by_a_private_authority(tmp_path):
    """An upstream URL without a scheme is reached over HTTPS, as ECR does;
    its certificate must be signed by an authority the system or
    `--pull-through-ca` trusts."""
    tls = certificate_authority(tmp_path)
    upstream = Upstream(tmp_path, tls=tls)
    strict = Berth(tmp_path / "strict").start()
    trusting = Berth(tmp_path / "trusting", extra_args=["--pull-through-ca", str(tls[2])]).start()
    try:
        digest, raw = upstream.push_image("team/app", "1.0", b"tls-layer")
        for server in (strict, trusting):
            ok(ecr(server), "CreatePullThroughCacheRule", ecrRepositoryPrefix="secure",
               upstreamRegistryUrl=f"127.0.0.1:{upstream.port}")
        path = "/v2/secure/team/app/manifests/1.0"
        status, _, body = Oci(strict, token(ecr(strict))).request(
            "GET", path, headers={"Accept": OCI_MANIFEST})
        assert status == 502 and b"UnknownIssuer" in body, body
        out = ok(ecr(strict), "ValidatePullThroughCacheRule", ecrRepositoryPrefix="secure")
        assert out["isValid"] is False and "UnknownIssuer" in out["failure"], out
        client = ecr(trusting)
        assert ok(client, "ValidatePullThroughCacheRule", ecrRepositoryPrefix="secure")["isValid"]
        status, headers, body = Oci(trusting, token(client)).request(
            "GET", path, headers={"Accept": OCI_MANIFEST})
        assert status == 200 and body == raw and headers["docker-content-digest"] == digest
        layer = json.loads(raw)["layers"][0]["digest"]
        status, _, body = Oci(trusting, token(client)).request(
            "GET", f"/v2/secure/team/app/blobs/{layer}")
        assert status == 200 and body == b"tls-layer"
    finally:
        upstream.stop()
        strict.stop()
        trusting.stop()


def test_bad_inputs_change_nothing(berth):
    client = ecr(berth)
    client.create_repository(repositoryName="base")
    sm = berth.client("secretsmanager")
    wrong = sm.create_secret(Name="ecr-pullthroughcache/notjson", SecretString="plain")["ARN"]

    def snapshot():
        return (ok(client, "DescribeRegistry"),
                ok(client, "GetRegistryScanningConfiguration"),
                ok(client, "DescribeRepositoryCreationTemplates"),
                ok(client, "DescribePullThroughCacheRules"),
                ok(client, "GetAccountSetting", name="REGISTRY_POLICY_SCOPE"),
                client.describe_repositories()["repositories"])

    before = snapshot()
    cases = [
        ("PutRegistryPolicy", {"policyText": "not json"}, "InvalidParameterException"),
        ("PutRegistryPolicy", {"policyText": json.dumps({"Statement": [{"Effect": "Allow",
                               "Principal": "*", "Action": "s3:GetObject", "Resource": "*"}]})},
         "InvalidParameterException"),
        ("PutAccountSetting", {"name": "NOPE", "value": "V2"}, "InvalidParameterException"),
        ("PutAccountSetting", {"name": "REGISTRY_POLICY_SCOPE", "value": "V3"},
         "InvalidParameterException"),
        ("PutRegistryScanningConfiguration", {"scanType": "BASIC", "rules": [
            {"scanFrequency": "CONTINUOUS_SCAN",
             "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}]},
         "InvalidParameterException"),
        ("PutReplicationConfiguration", {"replicationConfiguration": {"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": ACCOUNT}]}]}},
         "InvalidParameterException"),
        ("PutReplicationConfiguration", {"replicationConfiguration": {"rules": [
            {"destinations": [{"region": WEST, "registryId": "12"}]}]}},
         "InvalidParameterException"),
        ("PutReplicationConfiguration", {"replicationConfiguration": {"rules": [
            {"destinations": [{"region": WEST, "registryId": ACCOUNT}],
             "repositoryFilters": [{"filter": "xy", "filterType": "WILDCARD"}]}]}},
         "InvalidParameterException"),
        ("CreateRepositoryCreationTemplate", {"prefix": "Bad_Prefix", "appliedFor": ["REPLICATION"]},
         "InvalidParameterException"),
        ("CreateRepositoryCreationTemplate", {"prefix": "ok", "appliedFor": ["SOMETIMES"]},
         "InvalidParameterException"),
        ("CreateRepositoryCreationTemplate", {"prefix": "ok2", "appliedFor": ["REPLICATION"],
                                              "imageTagMutability": "IMMUTABLE_WITH_EXCLUSION"},
         "InvalidParameterException"),
        ("CreateRepositoryCreationTemplate", {"prefix": "ok3", "appliedFor": ["REPLICATION"],
                                              "lifecyclePolicy": "{}"},
         "InvalidParameterException"),
        ("UpdateRepositoryCreationTemplate", {"prefix": "absent"}, "TemplateNotFoundException"),
        ("CreatePullThroughCacheRule", {"ecrRepositoryPrefix": "hub",
                                        "upstreamRegistryUrl": "https://example.test/x"},
         "UnsupportedUpstreamRegistryException"),
        ("CreatePullThroughCacheRule", {"ecrRepositoryPrefix": "hub",
                                        "upstreamRegistryUrl": "registry-1.docker.io",
                                        "credentialArn": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:ecr-pullthroughcache/missing-AbCdEf"},
         "SecretNotFoundException"),
        ("CreatePullThroughCacheRule", {"ecrRepositoryPrefix": "hub",
                                        "upstreamRegistryUrl": "registry-1.docker.io",
                                        "credentialArn": wrong},
         "UnableToAccessSecretException"),
        ("CreatePullThroughCacheRule", {"ecrRepositoryPrefix": "-bad-", "upstreamRegistryUrl": "quay.io"},
         "InvalidParameterException"),
        ("ValidatePullThroughCacheRule", {"ecrRepositoryPrefix": "absent"},
         "PullThroughCacheRuleNotFoundException"),
        ("StartLifecyclePolicyPreview", {"repositoryName": "absent"}, "RepositoryNotFoundException"),
        ("StartLifecyclePolicyPreview", {"repositoryName": "base", "lifecyclePolicyText": "{" + " " * 120 + "}"},
         "InvalidParameterException"),
        ("GetLifecyclePolicyPreview", {"repositoryName": "base", "maxResults": 1000},
         "InvalidParameterException"),
        ("DescribeImageReplicationStatus", {"repositoryName": "base", "imageId": {"imageTag": "none"}},
         "ImageNotFoundException"),
        ("ListImageReferrers", {"repositoryName": "base", "subjectId": {"imageDigest": "sha256:zz"}},
         "InvalidParameterException"),
        ("BatchGetRepositoryScanningConfiguration", {"repositoryNames": ["UPPER"]},
         "InvalidParameterException"),
        ("PutImageTagMutability", {"repositoryName": "base", "imageTagMutability": "MUTABLE_WITH_EXCLUSION"},
         "InvalidParameterException"),
        ("CreateRepository", {"repositoryName": "other", "imageTagMutability": "IMMUTABLE",
                              "imageTagMutabilityExclusionFilters": [{"filterType": "WILDCARD",
                                                                     "filter": "x*"}]},
         "InvalidParameterException"),
    ]
    assert len(cases) >= 10
    for operation, params, expected in cases:
        code, message = error_code(client, operation, **params)
        assert code == expected, (operation, params, code, message)
    # The CLI gets the same answers.
    rc, _, err = berth.aws("ecr", "get-account-setting", "--name", "NOPE", check=False)
    assert rc != 0 and "InvalidParameterException" in err
    assert snapshot() == before


def test_registry_state_survives_restart(berth):
    client = ecr(berth)
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "ecr:ReplicateImage", "Resource": "*"}]})
    client.put_registry_policy(policyText=policy)
    client.put_account_setting(name="BLOB_MOUNTING", value="DISABLED")
    client.put_replication_configuration(replicationConfiguration={"rules": [
        {"destinations": [{"region": WEST, "registryId": ACCOUNT}]}]})
    client.put_registry_scanning_configuration(scanType="BASIC", rules=[
        {"scanFrequency": "MANUAL", "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])
    client.create_repository_creation_template(prefix="kept", appliedFor=["REPLICATION"])
    client.create_pull_through_cache_rule(ecrRepositoryPrefix="kept",
                                          upstreamRegistryUrl="127.0.0.1:9")
    client.create_repository(repositoryName="kept/one")
    Oci(berth, token(client)).push_image("kept/one", "v1", b"x")
    client.start_lifecycle_policy_preview(repositoryName="kept/one", lifecyclePolicyText=lifecycle(5))
    assert wait_for(lambda: [s for s in client.describe_image_replication_status(
        repositoryName="kept/one", imageId={"imageTag": "v1"})["replicationStatuses"]
        if s["status"] == "COMPLETE"])
    before = (client.get_registry_policy()["policyText"],
              client.get_account_setting(name="BLOB_MOUNTING")["value"],
              client.describe_registry()["replicationConfiguration"],
              client.get_registry_scanning_configuration()["scanningConfiguration"],
              client.describe_repository_creation_templates()["repositoryCreationTemplates"],
              client.describe_pull_through_cache_rules()["pullThroughCacheRules"],
              client.get_lifecycle_policy_preview(repositoryName="kept/one")["status"],
              client.describe_image_replication_status(
                  repositoryName="kept/one", imageId={"imageTag": "v1"})["replicationStatuses"])
    berth.stop()
    berth.start()
    client = ecr(berth)
    after = (client.get_registry_policy()["policyText"],
             client.get_account_setting(name="BLOB_MOUNTING")["value"],
             client.describe_registry()["replicationConfiguration"],
             client.get_registry_scanning_configuration()["scanningConfiguration"],
             client.describe_repository_creation_templates()["repositoryCreationTemplates"],
             client.describe_pull_through_cache_rules()["pullThroughCacheRules"],
             client.get_lifecycle_policy_preview(repositoryName="kept/one")["status"],
             client.describe_image_replication_status(
                 repositoryName="kept/one", imageId={"imageTag": "v1"})["replicationStatuses"])
    assert after == before
    assert before[-1][0]["status"] == "COMPLETE"
