//! Handler tests over an in-memory store, as the root of the account.

use std::sync::Arc;

use base64::Engine;
use berth_model::{
    AwsError, JsonService, Principal, PrincipalKind, RequestContext, SealError, Sealer,
};
use berth_store::{MemoryStore, Store};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use serde_json::{json, Value};

use crate::{x509, AcmService};

const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

/// Not encryption: enough to see that keys are stored sealed.
struct Xor;
impl Sealer for Xor {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        Ok(plaintext.iter().map(|b| b ^ 0x5a).collect())
    }
    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        Ok(sealed.iter().map(|b| b ^ 0x5a).collect())
    }
}

fn ctx() -> RequestContext {
    RequestContext::for_principal(
        Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            user_id: ACCOUNT.into(),
            account_id: ACCOUNT.into(),
            access_key_id: "AKIAROOT".into(),
        },
        REGION,
    )
}

struct World {
    store: Arc<dyn Store>,
    acm: AcmService,
}

fn world() -> World {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let acm = AcmService::new(store.clone(), Some(Arc::new(Xor)));
    World { store, acm }
}

impl World {
    async fn call(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        let out = self
            .acm
            .handle(&ctx(), op, body.to_string().as_bytes())
            .await?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    async fn err(&self, op: &str, body: Value) -> AwsError {
        self.call(op, body).await.expect_err("the call must fail")
    }

    fn dump(&self) -> Vec<(String, Vec<u8>)> {
        self.store
            .range("acm/", None, usize::MAX)
            .into_iter()
            .map(|kv| (kv.key, kv.value.to_vec()))
            .collect()
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A self-signed certificate for `name` valid from `from` to `to` (unix
/// seconds), with its key.
fn self_signed(name: &str, from: i64, to: i64) -> (String, String) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Test Org");
    params.distinguished_name = dn;
    params.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    params.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn now() -> i64 {
    berth_util::time::now_secs()
}

fn import_body(cert: &str, key: &str) -> Value {
    json!({"Certificate": b64(cert), "PrivateKey": b64(key)})
}

#[tokio::test]
async fn requested_certificate_is_issued_and_signed_by_the_ca() {
    let w = world();
    let out = w
        .call(
            "RequestCertificate",
            json!({"DomainName": "www.example.com", "SubjectAlternativeNames": ["api.example.com"],
                   "KeyAlgorithm": "EC_prime256v1", "ValidationMethod": "DNS"}),
        )
        .await
        .unwrap();
    let arn = out["CertificateArn"].as_str().unwrap().to_string();
    assert!(arn.starts_with(&format!("arn:aws:acm:{REGION}:{ACCOUNT}:certificate/")));

    let d = w
        .call("DescribeCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    let c = &d["Certificate"];
    assert_eq!(c["Status"], "ISSUED");
    assert_eq!(c["Type"], "AMAZON_ISSUED");
    assert_eq!(c["DomainName"], "www.example.com");
    assert_eq!(
        c["SubjectAlternativeNames"],
        json!(["www.example.com", "api.example.com"])
    );
    assert_eq!(c["KeyAlgorithm"], "EC_prime256v1");
    assert_eq!(c["SignatureAlgorithm"], "SHA256WITHECDSA");
    assert_eq!(c["Issuer"], "Berth");
    assert_eq!(c["Subject"], "CN=www.example.com");
    assert_eq!(c["RenewalEligibility"], "INELIGIBLE");
    assert_eq!(c["InUseBy"], json!([]));
    assert_eq!(
        c["DomainValidationOptions"][0]["ValidationStatus"],
        "SUCCESS"
    );
    let validity = c["NotAfter"].as_f64().unwrap() - c["NotBefore"].as_f64().unwrap();
    assert!(
        (validity - (395.0 * 86400.0 + 60.0)).abs() < 5.0,
        "{validity}"
    );
    assert!(c["KeyUsages"]
        .as_array()
        .unwrap()
        .contains(&json!({"Name": "DIGITAL_SIGNATURE"})));
    assert_eq!(
        c["ExtendedKeyUsages"][0]["Name"],
        "TLS_WEB_SERVER_AUTHENTICATION"
    );

    // GetCertificate: the leaf and the CA, and the CA signed the leaf.
    let g = w
        .call("GetCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    let ca_pem = w.acm.ca_certificate_pem().await.unwrap();
    assert_eq!(g["CertificateChain"].as_str().unwrap(), ca_pem);
    let leaf_der =
        x509::single_certificate_der(g["Certificate"].as_str().unwrap().as_bytes()).unwrap();
    let ca_der = x509::single_certificate_der(ca_pem.as_bytes()).unwrap();
    let leaf = x509::parse(&leaf_der).unwrap();
    let ca = x509::parse(&ca_der).unwrap();
    assert!(ca.is_ca());
    assert!(x509::signed_by(&leaf, &ca));
    assert!(x509::signed_by(&ca, &ca));
    assert!(!x509::signed_by(&ca, &leaf));

    // The data plane gets the chain and the key, which matches the leaf;
    // the store holds the key sealed.
    let material = w
        .acm
        .certificate_pem(ACCOUNT, REGION, &arn)
        .unwrap()
        .unwrap();
    assert!(material
        .chain_pem
        .starts_with(g["Certificate"].as_str().unwrap()));
    assert!(material.chain_pem.ends_with(&ca_pem));
    let key = x509::private_key(material.key_pem.as_bytes()).unwrap();
    assert!(x509::key_matches(&leaf, &key));
    assert_eq!(material.names, vec!["www.example.com", "api.example.com"]);
    for (_, value) in w.dump() {
        let text = String::from_utf8_lossy(&value);
        assert!(
            !text.contains("PRIVATE KEY"),
            "a key is stored in the clear"
        );
    }
    w.acm.check_issued(ACCOUNT, REGION, &arn).unwrap();
    let e = w.acm.check_issued(ACCOUNT, "eu-west-1", &arn).unwrap_err();
    assert_eq!(e.code, "CertificateNotFound");
}

#[tokio::test]
async fn rsa_is_the_default_key_algorithm() {
    let w = world();
    let out = w
        .call("RequestCertificate", json!({"DomainName": "*.example.org"}))
        .await
        .unwrap();
    let arn = out["CertificateArn"].as_str().unwrap();
    let d = w
        .call("DescribeCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(d["Certificate"]["KeyAlgorithm"], "RSA_2048");
    assert_eq!(d["Certificate"]["DomainName"], "*.example.org");
    // The default ListCertificates shows RSA_2048 certificates.
    let l = w.call("ListCertificates", json!({})).await.unwrap();
    assert_eq!(l["CertificateSummaryList"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn the_ca_is_shared_through_the_store() {
    let w = world();
    let first = w.acm.ca_certificate_pem().await.unwrap();
    let other = AcmService::new(w.store.clone(), Some(Arc::new(Xor)));
    assert_eq!(other.ca_certificate_pem().await.unwrap(), first);
    let raw = w.store.get(crate::CA_KEY).unwrap();
    assert!(!String::from_utf8_lossy(&raw.value).contains("PRIVATE KEY"));
    assert!(first.contains("BEGIN CERTIFICATE"));
}

#[tokio::test]
async fn idempotency_token_answers_the_same_certificate() {
    let w = world();
    let body = json!({"DomainName": "a.example.com", "KeyAlgorithm": "EC_prime256v1",
                      "IdempotencyToken": "tok1"});
    let a = w.call("RequestCertificate", body.clone()).await.unwrap();
    let b = w.call("RequestCertificate", body).await.unwrap();
    assert_eq!(a, b);
    let c = w
        .call(
            "RequestCertificate",
            json!({"DomainName": "a.example.com", "KeyAlgorithm": "EC_prime256v1"}),
        )
        .await
        .unwrap();
    assert_ne!(a, c);
}

#[tokio::test]
async fn import_reimport_list_tags_and_delete() {
    let w = world();
    let (cert, key) = self_signed("imported.example.com", now() - 60, now() + 86_400 * 30);
    let mut body = import_body(&cert, &key);
    body["Tags"] = json!([{"Key": "env", "Value": "test"}]);
    let out = w.call("ImportCertificate", body).await.unwrap();
    let arn = out["CertificateArn"].as_str().unwrap().to_string();
    let d = w
        .call("DescribeCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    let c = &d["Certificate"];
    assert_eq!(c["Type"], "IMPORTED");
    assert_eq!(c["Status"], "ISSUED");
    assert_eq!(c["Issuer"], "Test Org");
    assert!(c.get("ImportedAt").is_some());
    assert!(c.get("DomainValidationOptions").is_none());
    // EC certificates are listed only when asked for.
    let l = w.call("ListCertificates", json!({})).await.unwrap();
    assert_eq!(l["CertificateSummaryList"], json!([]));
    let l = w
        .call(
            "ListCertificates",
            json!({"Includes": {"keyTypes": ["EC_prime256v1"]}}),
        )
        .await
        .unwrap();
    assert_eq!(l["CertificateSummaryList"][0]["CertificateArn"], arn);
    assert_eq!(l["CertificateSummaryList"][0]["Type"], "IMPORTED");

    // Re-import keeps the ARN and the tags.
    let (cert2, key2) = self_signed("imported.example.com", now() - 60, now() + 86_400 * 60);
    let mut body = import_body(&cert2, &key2);
    body["CertificateArn"] = json!(arn);
    let again = w.call("ImportCertificate", body).await.unwrap();
    assert_eq!(again["CertificateArn"], arn);
    let g = w
        .call("GetCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(g["Certificate"].as_str().unwrap().trim(), cert2.trim());
    assert!(g.get("CertificateChain").is_none());

    // Tags.
    w.call(
        "AddTagsToCertificate",
        json!({"CertificateArn": arn, "Tags": [{"Key": "team", "Value": "web"}]}),
    )
    .await
    .unwrap();
    w.call(
        "RemoveTagsFromCertificate",
        json!({"CertificateArn": arn, "Tags": [{"Key": "env", "Value": "other"}]}),
    )
    .await
    .unwrap();
    let t = w
        .call("ListTagsForCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(
        t["Tags"],
        json!([{"Key": "env", "Value": "test"}, {"Key": "team", "Value": "web"}])
    );
    w.call(
        "RemoveTagsFromCertificate",
        json!({"CertificateArn": arn, "Tags": [{"Key": "env"}]}),
    )
    .await
    .unwrap();
    let t = w
        .call("ListTagsForCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(t["Tags"], json!([{"Key": "team", "Value": "web"}]));

    // In use: DeleteCertificate is refused until the users are gone.
    let lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/a/1";
    w.acm
        .set_in_use_by(ACCOUNT, REGION, &arn, vec![lb.to_string()])
        .await
        .unwrap();
    let d = w
        .call("DescribeCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(d["Certificate"]["InUseBy"], json!([lb]));
    let e = w
        .err("DeleteCertificate", json!({"CertificateArn": arn}))
        .await;
    assert_eq!(e.code, "ResourceInUseException");
    w.acm
        .set_in_use_by(ACCOUNT, REGION, &arn, Vec::new())
        .await
        .unwrap();
    w.call("DeleteCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    let e = w
        .err("DescribeCertificate", json!({"CertificateArn": arn}))
        .await;
    assert_eq!(e.code, "ResourceNotFoundException");
    assert!(w
        .acm
        .certificate_pem(ACCOUNT, REGION, &arn)
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn bad_imports_change_nothing() {
    let w = world();
    let (cert, key) = self_signed("a.example.com", now() - 60, now() + 86_400);
    let (_, other_key) = self_signed("b.example.com", now() - 60, now() + 86_400);
    let (expired, expired_key) = self_signed("c.example.com", now() - 86_400 * 10, now() - 86_400);
    let (chain_ca, _) = self_signed("ca.example.com", now() - 60, now() + 86_400);
    let before = w.dump();
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            import_body(&cert, &other_key),
            "ValidationException",
            "does not match",
        ),
        (
            import_body(&expired, &expired_key),
            "ValidationException",
            "expired",
        ),
        (
            import_body(&format!("{cert}{cert}"), &key),
            "ValidationException",
            "more than one certificate",
        ),
        (
            import_body("not a pem", &key),
            "ValidationException",
            "Unable to parse certificate",
        ),
        (
            import_body(&cert, "garbage"),
            "ValidationException",
            "private key",
        ),
        (
            json!({"PrivateKey": b64(&key)}),
            "ValidationException",
            "'certificate'",
        ),
        (
            json!({"Certificate": b64(&cert)}),
            "ValidationException",
            "'privateKey'",
        ),
        (
            json!({"Certificate": b64(&cert), "PrivateKey": b64(&key),
                   "CertificateChain": b64(&chain_ca)}),
            "ValidationException",
            "certificate chain",
        ),
        (
            json!({"Certificate": b64(&cert), "PrivateKey": b64(&key),
                   "Tags": [{"Key": "aws:x", "Value": "y"}]}),
            "InvalidTagException",
            "aws:",
        ),
        (
            json!({"Certificate": b64(&cert), "PrivateKey": b64(&key),
                   "CertificateArn": format!("arn:aws:acm:{REGION}:{ACCOUNT}:certificate/00000000-0000-0000-0000-000000000000")}),
            "ResourceNotFoundException",
            "Could not find certificate",
        ),
    ];
    for (body, code, text) in cases {
        let e = w.err("ImportCertificate", body.clone()).await;
        assert_eq!(e.code, code, "{body}: {}", e.message);
        assert!(e.message.contains(text), "{body}: {}", e.message);
    }
    assert_eq!(w.dump(), before);
}

#[tokio::test]
async fn bad_requests_change_nothing() {
    let w = world();
    let before = w.dump();
    let missing =
        format!("arn:aws:acm:{REGION}:{ACCOUNT}:certificate/11111111-1111-1111-1111-111111111111");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("RequestCertificate", json!({}), "ValidationException"),
        (
            "RequestCertificate",
            json!({"DomainName": "-bad-.com"}),
            "ValidationException",
        ),
        (
            "RequestCertificate",
            json!({"DomainName": "nodot"}),
            "ValidationException",
        ),
        (
            "RequestCertificate",
            json!({"DomainName": "a.example.com", "ValidationMethod": "FAX"}),
            "ValidationException",
        ),
        (
            "RequestCertificate",
            json!({"DomainName": "a.example.com", "KeyAlgorithm": "RSA_4096"}),
            "ValidationException",
        ),
        (
            "RequestCertificate",
            json!({"DomainName": "a.example.com", "SubjectAlternativeNames": ["bad_name"]}),
            "InvalidDomainValidationOptionsException",
        ),
        (
            "RequestCertificate",
            json!({"DomainName": "a.example.com",
                   "SubjectAlternativeNames": (0..11).map(|i| format!("n{i}.example.com")).collect::<Vec<_>>()}),
            "LimitExceededException",
        ),
        (
            "RequestCertificate",
            json!({"DomainName": "a.example.com", "IdempotencyToken": "no-dashes"}),
            "ValidationException",
        ),
        ("DescribeCertificate", json!({}), "ValidationException"),
        (
            "DescribeCertificate",
            json!({"CertificateArn": "not-an-arn-at-all-really"}),
            "ValidationException",
        ),
        (
            "DescribeCertificate",
            json!({"CertificateArn": format!("arn:aws:acm:{REGION}:{ACCOUNT}:thing/x")}),
            "InvalidArnException",
        ),
        (
            "DescribeCertificate",
            json!({"CertificateArn": missing}),
            "ResourceNotFoundException",
        ),
        (
            "GetCertificate",
            json!({"CertificateArn": missing}),
            "ResourceNotFoundException",
        ),
        (
            "DeleteCertificate",
            json!({"CertificateArn": missing}),
            "ResourceNotFoundException",
        ),
        (
            "ListCertificates",
            json!({"MaxItems": 0}),
            "ValidationException",
        ),
        (
            "ListCertificates",
            json!({"CertificateStatuses": ["BOGUS"]}),
            "ValidationException",
        ),
        (
            "AddTagsToCertificate",
            json!({"CertificateArn": missing, "Tags": [{"Key": "k", "Value": "v"}]}),
            "ResourceNotFoundException",
        ),
        (
            "PutAccountConfiguration",
            json!({"ExpiryEvents": {"DaysBeforeExpiry": 10}}),
            "ValidationException",
        ),
        (
            "PutAccountConfiguration",
            json!({"IdempotencyToken": "t", "ExpiryEvents": {"DaysBeforeExpiry": 90}}),
            "ValidationException",
        ),
        ("SearchCertificates", json!({}), "ValidationException"),
    ];
    for (op, body, code) in cases {
        let e = w.err(op, body.clone()).await;
        assert_eq!(e.code, code, "{op} {body}: {}", e.message);
    }
    assert_eq!(w.dump(), before);
}

#[tokio::test]
async fn renew_export_and_account_configuration() {
    let w = world();
    let out = w
        .call(
            "RequestCertificate",
            json!({"DomainName": "r.example.com", "KeyAlgorithm": "EC_prime256v1"}),
        )
        .await
        .unwrap();
    let arn = out["CertificateArn"].as_str().unwrap();
    let before = w
        .call("GetCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    w.call("RenewCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    let after = w
        .call("GetCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_ne!(before["Certificate"], after["Certificate"]);
    let d = w
        .call("DescribeCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(
        d["Certificate"]["RenewalSummary"]["RenewalStatus"],
        "SUCCESS"
    );

    let e = w
        .err(
            "ExportCertificate",
            json!({"CertificateArn": arn, "Passphrase": b64("secret")}),
        )
        .await;
    assert_eq!(e.code, "ValidationException");
    assert!(e.message.contains("is not a private certificate"));

    let c = w.call("GetAccountConfiguration", json!({})).await.unwrap();
    assert_eq!(c["ExpiryEvents"]["DaysBeforeExpiry"], 45);
    w.call(
        "PutAccountConfiguration",
        json!({"IdempotencyToken": "abc", "ExpiryEvents": {"DaysBeforeExpiry": 30}}),
    )
    .await
    .unwrap();
    let c = w.call("GetAccountConfiguration", json!({})).await.unwrap();
    assert_eq!(c["ExpiryEvents"]["DaysBeforeExpiry"], 30);

    w.call(
        "UpdateCertificateOptions",
        json!({"CertificateArn": arn, "Options": {"CertificateTransparencyLoggingPreference": "DISABLED"}}),
    )
    .await
    .unwrap();
    let d = w
        .call("DescribeCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
    assert_eq!(
        d["Certificate"]["Options"]["CertificateTransparencyLoggingPreference"],
        "DISABLED"
    );
    let e = w
        .err(
            "ResendValidationEmail",
            json!({"CertificateArn": arn, "Domain": "r.example.com", "ValidationDomain": "example.com"}),
        )
        .await;
    assert_eq!(e.code, "InvalidStateException");
}

#[test]
fn every_unimplemented_operation_is_in_the_model_once() {
    let ops = berth_model::shapes::acm::OPERATIONS;
    for (op, why) in crate::NOT_IMPLEMENTED {
        assert!(ops.contains(op), "{op} is not in the model");
        assert!(why.len() > 20);
        assert_eq!(
            crate::NOT_IMPLEMENTED
                .iter()
                .filter(|(o, _)| o == op)
                .count(),
            1
        );
    }
}

#[test]
fn pkcs1_rsa_keys_are_read() {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::EncodePrivateKey;
    let mut rng = rand::rngs::OsRng;
    let key = rsa::RsaPrivateKey::new(&mut rng, 2048).unwrap();
    let pkcs1 = key.to_pkcs1_pem(rsa::pkcs1::LineEnding::LF).unwrap();
    let pkcs8 = key.to_pkcs8_der().unwrap();
    let pair = KeyPair::try_from(pkcs8.as_bytes()).unwrap();
    let params = CertificateParams::new(vec!["rsa.example.com".to_string()]).unwrap();
    let cert = params.self_signed(&pair).unwrap();
    let der = cert.der().to_vec();
    let parsed = x509::parse(&der).unwrap();
    let read = x509::private_key(pkcs1.as_bytes()).unwrap();
    assert!(x509::key_matches(&parsed, &read));
    assert_eq!(x509::info(&parsed).unwrap().key_algorithm, "RSA_2048");
}

#[tokio::test]
async fn delete_asks_the_users_port_in_its_own_mutation() {
    // A fake user service: a key `users/<arn>` holding a load balancer ARN.
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let acm = AcmService::new(store.clone(), Some(Arc::new(Xor))).with_certificate_users(Arc::new(
        |view: &dyn berth_store::ReadView, _: &str, _: &str, arn: &str| {
            view.get(&format!("users/{arn}"))
                .map(|kv| vec![String::from_utf8_lossy(&kv.value).into_owned()])
                .unwrap_or_default()
        },
    ));
    let w = World { store, acm };
    let arn = w
        .call(
            "RequestCertificate",
            json!({"DomainName": "used.example.test"}),
        )
        .await
        .unwrap()["CertificateArn"]
        .as_str()
        .unwrap()
        .to_string();
    let lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/b/2";
    berth_store::StoreExt::put(
        w.store.as_ref(),
        &format!("users/{arn}"),
        lb.as_bytes().to_vec().into(),
    )
    .await
    .unwrap();
    // Not recorded in InUseBy yet, refused all the same.
    let e = w
        .err("DeleteCertificate", json!({"CertificateArn": arn}))
        .await;
    assert_eq!(e.code, "ResourceInUseException");
    assert_eq!(e.message, format!("Certificate {arn} in use by {lb}"));
    berth_store::StoreExt::delete(w.store.as_ref(), &format!("users/{arn}"))
        .await
        .unwrap();
    w.call("DeleteCertificate", json!({"CertificateArn": arn}))
        .await
        .unwrap();
}
