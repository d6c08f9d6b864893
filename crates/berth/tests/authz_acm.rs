//! IAM for AWS Certificate Manager (`acm`): a walk over every implemented
//! operation as a user without policies (each is refused by IAM, naming the
//! certificate's ARN), and policies scoped to a certificate ARN, to its
//! tags and to RequestCertificate's condition keys, run through the real
//! handlers with the real `IamAuthorizer` deciding.

use std::sync::Arc;

use berth_acm::AcmService;
use berth_model::shapes::acm::OPERATIONS;
use berth_model::{
    Access, AwsError, DenialStyle, JsonService, Principal, PrincipalKind, QueryService,
    RequestContext,
};
use berth_store::{MemoryStore, Store};
use serde_json::{json, Value};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn root() -> RequestContext {
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
    iam_svc: Arc<berth_iam::IamService>,
    authorizer: Arc<berth_iam::IamAuthorizer>,
    acm: AcmService,
    user_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl World {
    fn new() -> World {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let iam = berth_iam::Iam::new(store.clone());
        World {
            iam_svc: iam.iam_service(),
            authorizer: Arc::new(berth_iam::IamAuthorizer::new(iam.clone())),
            acm: AcmService::new(store, None),
            user_ids: Default::default(),
        }
    }

    async fn user(&self, name: &str, policy: Option<Value>) {
        let root = root();
        let params = |p: Vec<(&str, String)>| -> Vec<(String, String)> {
            p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
        };
        let out = self
            .iam_svc
            .handle(
                &root,
                "CreateUser",
                &params(vec![("UserName", name.into())]),
            )
            .await
            .unwrap();
        let id = out
            .split_once("<UserId>")
            .and_then(|(_, rest)| rest.split_once("</UserId>"))
            .map(|(id, _)| id.to_string())
            .unwrap();
        self.user_ids.lock().unwrap().insert(name.to_string(), id);
        if let Some(policy) = policy {
            self.iam_svc
                .handle(
                    &root,
                    "PutUserPolicy",
                    &params(vec![
                        ("UserName", name.into()),
                        ("PolicyName", "p".into()),
                        ("PolicyDocument", policy.to_string()),
                    ]),
                )
                .await
                .unwrap();
        }
    }

    fn ctx(&self, name: &str) -> RequestContext {
        RequestContext::for_principal(
            Principal {
                kind: PrincipalKind::User,
                arn: format!("arn:aws:iam::{ACCOUNT}:user/{name}"),
                user_id: self.user_ids.lock().unwrap()[name].clone(),
                account_id: ACCOUNT.into(),
                access_key_id: format!("AKIA{name}"),
            },
            REGION,
        )
        .with_access(Access::new(
            Some(self.authorizer.clone()),
            DenialStyle::Json,
            false,
        ))
    }

    async fn call_as(
        &self,
        ctx: &RequestContext,
        op: &str,
        body: &Value,
    ) -> Result<Value, AwsError> {
        let out = self.acm.handle(ctx, op, body.to_string().as_bytes()).await;
        if out.is_ok() {
            assert!(ctx.access.checked(), "{op} answered without asking IAM");
        }
        out.map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null))
    }

    async fn root_call(&self, op: &str, body: Value) -> Value {
        self.call_as(&root(), op, &body)
            .await
            .unwrap_or_else(|e| panic!("{op} as root: {e:?}"))
    }

    /// A requested certificate tagged team=blue: its ARN.
    async fn seed(&self, name: &str, team: &str) -> String {
        self.root_call(
            "RequestCertificate",
            json!({"DomainName": name, "KeyAlgorithm": "EC_prime256v1",
                   "Tags": [{"Key": "team", "Value": team}]}),
        )
        .await["CertificateArn"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

fn b64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A valid request for each implemented operation, naming `arn`.
fn plausible(op: &str, arn: &str) -> Value {
    match op {
        "ImportCertificate" => json!({"Certificate": b64("x"), "PrivateKey": b64("y")}),
        "RequestCertificate" => json!({"DomainName": "new.example.com"}),
        "DescribeCertificate"
        | "GetCertificate"
        | "DeleteCertificate"
        | "RenewCertificate"
        | "ListTagsForCertificate" => json!({"CertificateArn": arn}),
        "ListCertificates" | "GetAccountConfiguration" => json!({}),
        "AddTagsToCertificate" | "RemoveTagsFromCertificate" => {
            json!({"CertificateArn": arn, "Tags": [{"Key": "a", "Value": "b"}]})
        }
        "PutAccountConfiguration" => {
            json!({"IdempotencyToken": "t1", "ExpiryEvents": {"DaysBeforeExpiry": 30}})
        }
        "ExportCertificate" => json!({"CertificateArn": arn, "Passphrase": b64("secret")}),
        "ResendValidationEmail" => {
            json!({"CertificateArn": arn, "Domain": "a.example.com", "ValidationDomain": "example.com"})
        }
        "UpdateCertificateOptions" => json!({"CertificateArn": arn,
            "Options": {"CertificateTransparencyLoggingPreference": "DISABLED"}}),
        other => panic!("no plausible input for {other}"),
    }
}

#[tokio::test]
async fn every_operation_refuses_a_user_without_policies() {
    let w = World::new();
    let arn = w.seed("a.example.com", "blue").await;
    w.user("nobody", None).await;
    let mut failures = Vec::new();
    for op in OPERATIONS {
        let unimplemented = berth_acm::NOT_IMPLEMENTED.iter().any(|(o, _)| o == op);
        if unimplemented {
            // Never a success, for anyone.
            if let Ok(out) = w.call_as(&w.ctx("nobody"), op, &json!({})).await {
                failures.push(format!("unimplemented {op} answered success: {out}"));
            }
            continue;
        }
        let body = plausible(op, &arn);
        match w.call_as(&w.ctx("nobody"), op, &body).await {
            Ok(out) => failures.push(format!("{op} answered success: {out}")),
            Err(e) if e.code != "AccessDeniedException" => {
                failures.push(format!("{op} was not refused by IAM: {e:?}"))
            }
            Err(e) => {
                let resource = match *op {
                    "ImportCertificate"
                    | "RequestCertificate"
                    | "ListCertificates"
                    | "GetAccountConfiguration"
                    | "PutAccountConfiguration" => "*".to_string(),
                    _ => arn.clone(),
                };
                assert_eq!(
                    e.message,
                    format!(
                        "User: arn:aws:iam::{ACCOUNT}:user/nobody is not authorized to perform: \
                         acm:{op} on resource: {resource} because no identity-based policy \
                         allows the acm:{op} action"
                    ),
                    "{op}"
                );
            }
        }
    }
    for (op, _) in berth_acm::NOT_IMPLEMENTED {
        assert!(OPERATIONS.contains(op), "{op} is not in the model");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn policies_scope_to_certificate_arns_tags_and_request_conditions() {
    let w = World::new();
    let blue = w.seed("blue.example.com", "blue").await;
    let red = w.seed("red.example.com", "red").await;
    w.user(
        "reader",
        Some(json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "acm:DescribeCertificate", "Resource": blue},
            {"Effect": "Allow", "Action": "acm:GetCertificate", "Resource": "*",
             "Condition": {"StringEquals": {"aws:ResourceTag/team": "red"}}},
            {"Effect": "Allow", "Action": "acm:RequestCertificate", "Resource": "*",
             "Condition": {"StringEquals": {"acm:KeyAlgorithm": "EC_prime256v1"}}}
        ]})),
    )
    .await;
    let ctx = || w.ctx("reader");
    let denied = |r: Result<Value, AwsError>| match r {
        Err(e) => e.code == "AccessDeniedException",
        Ok(_) => false,
    };
    w.call_as(
        &ctx(),
        "DescribeCertificate",
        &json!({"CertificateArn": blue}),
    )
    .await
    .unwrap();
    assert!(denied(
        w.call_as(
            &ctx(),
            "DescribeCertificate",
            &json!({"CertificateArn": red})
        )
        .await
    ));
    w.call_as(&ctx(), "GetCertificate", &json!({"CertificateArn": red}))
        .await
        .unwrap();
    assert!(denied(
        w.call_as(&ctx(), "GetCertificate", &json!({"CertificateArn": blue}))
            .await
    ));
    w.call_as(
        &ctx(),
        "RequestCertificate",
        &json!({"DomainName": "c.example.com", "KeyAlgorithm": "EC_prime256v1"}),
    )
    .await
    .unwrap();
    assert!(denied(
        w.call_as(
            &ctx(),
            "RequestCertificate",
            &json!({"DomainName": "d.example.com", "KeyAlgorithm": "EC_secp384r1"}),
        )
        .await
    ));
    // A missing certificate is refused by IAM before it is found missing.
    let missing =
        format!("arn:aws:acm:{REGION}:{ACCOUNT}:certificate/11111111-1111-1111-1111-111111111111");
    assert!(denied(
        w.call_as(
            &ctx(),
            "DescribeCertificate",
            &json!({"CertificateArn": missing})
        )
        .await
    ));
}
