//! Service-level tests over a real store: the operations as a client calls
//! them (JSON in, JSON out) and the agent-side resolver.

use std::sync::Arc;

use berth_model::{AwsError, JsonService, Principal, PrincipalKind, RequestContext};
use berth_store::{ReadView, SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};

use crate::{resolve_secret_value, MasterKey, SecretsManagerService, SsmService};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    keys: Arc<MasterKey>,
    sm: SecretsManagerService,
    ssm: SsmService,
    ctx: RequestContext,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
    let keys = Arc::new(MasterKey::from_bytes([9; 32]));
    Fixture {
        sm: SecretsManagerService::new(store.clone(), keys.clone()),
        ssm: SsmService::new(store.clone(), keys.clone()),
        store,
        keys,
        _dir: dir,
        ctx: RequestContext {
            request_id: "r".into(),
            account_id: ACCOUNT.into(),
            region: REGION.into(),
            principal: Principal {
                kind: PrincipalKind::Root,
                arn: format!("arn:aws:iam::{ACCOUNT}:root"),
                user_id: ACCOUNT.into(),
                account_id: ACCOUNT.into(),
                access_key_id: "AKIA".into(),
            },
            source_ip: None,
            secure_transport: false,
            access: Default::default(),
        },
    }
}

impl Fixture {
    async fn sm(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        let out = self
            .sm
            .handle(&self.ctx, op, body.to_string().as_bytes())
            .await?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    async fn ssm(&self, op: &str, body: Value) -> Result<Value, AwsError> {
        let out = self
            .ssm
            .handle(&self.ctx, op, body.to_string().as_bytes())
            .await?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    fn resolve(&self, value_from: &str) -> Result<String, AwsError> {
        let view: &dyn ReadView = self.store.as_ref();
        resolve_secret_value(view, &self.keys, ACCOUNT, REGION, value_from)
    }

    fn store_text(&self) -> String {
        let mut text = String::new();
        for prefix in ["/secretsmanager/", "/ssm/"] {
            for kv in self.store.range(prefix, None, 10_000) {
                text.push_str(&String::from_utf8_lossy(&kv.value));
            }
        }
        text
    }
}

#[tokio::test]
async fn secret_lifecycle() {
    let f = fixture();
    let created = f
        .sm("CreateSecret", json!({"Name": "db/pass", "SecretString": "s3cr3t-one", "Description": "d", "KmsKeyId": "alias/k"}))
        .await
        .unwrap();
    let arn = created["ARN"].as_str().unwrap().to_string();
    assert!(arn.starts_with(&format!(
        "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db/pass-"
    )));
    assert_eq!(
        arn.len(),
        format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:db/pass-").len() + 6
    );
    let v1 = created["VersionId"].as_str().unwrap().to_string();
    assert!(!f.store_text().contains("s3cr3t-one"));

    for id in ["db/pass", arn.as_str(), &arn[..arn.len() - 7]] {
        let got = f
            .sm("GetSecretValue", json!({"SecretId": id}))
            .await
            .unwrap();
        assert_eq!(got["SecretString"], "s3cr3t-one", "{id}");
        assert_eq!(got["VersionStages"], json!(["AWSCURRENT"]));
    }
    let e = f
        .sm("GetSecretValue", json!({"SecretId": format!("{arn}x")}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceNotFoundException");
    assert_eq!(
        e.message,
        "Secrets Manager can't find the specified secret."
    );

    let e = f
        .sm(
            "CreateSecret",
            json!({"Name": "db/pass", "SecretString": "x"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceExistsException");

    let put = f
        .sm(
            "PutSecretValue",
            json!({"SecretId": "db/pass", "SecretString": "s3cr3t-two"}),
        )
        .await
        .unwrap();
    let v2 = put["VersionId"].as_str().unwrap().to_string();
    let d = f
        .sm("DescribeSecret", json!({"SecretId": "db/pass"}))
        .await
        .unwrap();
    assert_eq!(d["VersionIdsToStages"][&v1], json!(["AWSPREVIOUS"]));
    assert_eq!(d["VersionIdsToStages"][&v2], json!(["AWSCURRENT"]));
    assert_eq!(d["KmsKeyId"], "alias/k");
    let prev = f
        .sm(
            "GetSecretValue",
            json!({"SecretId": "db/pass", "VersionStage": "AWSPREVIOUS"}),
        )
        .await
        .unwrap();
    assert_eq!(prev["SecretString"], "s3cr3t-one");
    let by_id = f
        .sm(
            "GetSecretValue",
            json!({"SecretId": "db/pass", "VersionId": v1}),
        )
        .await
        .unwrap();
    assert_eq!(by_id["SecretString"], "s3cr3t-one");

    // A third version: AWSPREVIOUS moves on, the first version keeps no label.
    f.sm(
        "PutSecretValue",
        json!({"SecretId": "db/pass", "SecretString": "three"}),
    )
    .await
    .unwrap();
    let d = f
        .sm("DescribeSecret", json!({"SecretId": "db/pass"}))
        .await
        .unwrap();
    assert_eq!(d["VersionIdsToStages"][&v2], json!(["AWSPREVIOUS"]));
    assert!(d["VersionIdsToStages"].get(&v1).is_none());

    let e = f
        .sm(
            "DeleteSecret",
            json!({"SecretId": "db/pass", "RecoveryWindowInDays": 3}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidParameterException");
    let del = f
        .sm(
            "DeleteSecret",
            json!({"SecretId": "db/pass", "RecoveryWindowInDays": 7}),
        )
        .await
        .unwrap();
    assert!(del["DeletionDate"].as_f64().is_some());
    let e = f
        .sm("GetSecretValue", json!({"SecretId": "db/pass"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidRequestException");
    assert_eq!(
        e.message,
        "You can't perform this operation on the secret because it was marked for deletion."
    );
    let listed = f.sm("ListSecrets", json!({})).await.unwrap();
    assert_eq!(listed["SecretList"], json!([]));
    let listed = f
        .sm("ListSecrets", json!({"IncludePlannedDeletion": true}))
        .await
        .unwrap();
    assert_eq!(listed["SecretList"].as_array().unwrap().len(), 1);
    f.sm("RestoreSecret", json!({"SecretId": arn}))
        .await
        .unwrap();
    let got = f
        .sm("GetSecretValue", json!({"SecretId": "db/pass"}))
        .await
        .unwrap();
    assert_eq!(got["SecretString"], "three");

    f.sm(
        "DeleteSecret",
        json!({"SecretId": "db/pass", "ForceDeleteWithoutRecovery": true}),
    )
    .await
    .unwrap();
    let e = f
        .sm("DescribeSecret", json!({"SecretId": "db/pass"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceNotFoundException");
}

#[tokio::test]
async fn idempotency_binary_tags_update_and_pages() {
    let f = fixture();
    let token = "a".repeat(32);
    let body = json!({"Name": "bin", "SecretBinary": "AAEC", "ClientRequestToken": token});
    let a = f.sm("CreateSecret", body.clone()).await.unwrap();
    let b = f.sm("CreateSecret", body).await.unwrap();
    assert_eq!(a, b);
    let got = f
        .sm("GetSecretValue", json!({"SecretId": "bin"}))
        .await
        .unwrap();
    assert_eq!(got["SecretBinary"], "AAEC");
    assert!(got.get("SecretString").is_none());
    let e = f
        .sm(
            "PutSecretValue",
            json!({"SecretId": "bin", "SecretString": "other", "ClientRequestToken": token}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceExistsException");

    f.sm("TagResource", json!({"SecretId": "bin", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]})).await.unwrap();
    f.sm(
        "UntagResource",
        json!({"SecretId": "bin", "TagKeys": ["a"]}),
    )
    .await
    .unwrap();
    f.sm(
        "UpdateSecret",
        json!({"SecretId": "bin", "Description": "new", "SecretString": "str"}),
    )
    .await
    .unwrap();
    let d = f
        .sm("DescribeSecret", json!({"SecretId": "bin"}))
        .await
        .unwrap();
    assert_eq!(d["Tags"], json!([{"Key": "b", "Value": "2"}]));
    assert_eq!(d["Description"], "new");
    assert_eq!(
        f.sm("GetSecretValue", json!({"SecretId": "bin"}))
            .await
            .unwrap()["SecretString"],
        "str"
    );

    for i in 0..5 {
        f.sm(
            "CreateSecret",
            json!({"Name": format!("p{i}"), "SecretString": "v"}),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({"MaxResults": 2});
        if let Some(t) = &token {
            req["NextToken"] = json!(t);
        }
        let page = f.sm("ListSecrets", req).await.unwrap();
        for s in page["SecretList"].as_array().unwrap() {
            names.push(s["Name"].as_str().unwrap().to_string());
        }
        match page.get("NextToken").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["bin", "p0", "p1", "p2", "p3", "p4"]);

    let pw = f
        .sm(
            "GetRandomPassword",
            json!({"PasswordLength": 20, "ExcludePunctuation": true}),
        )
        .await
        .unwrap();
    let pw = pw["RandomPassword"].as_str().unwrap();
    assert_eq!(pw.len(), 20);
    assert!(pw.chars().all(|c| c.is_ascii_alphanumeric()));

    let e = f
        .sm("RotateSecret", json!({"SecretId": "bin"}))
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
    assert_eq!(e.code, "InvalidRequestException");
    assert!(e.message.contains("Berth has no Lambda"), "{}", e.message);
}

#[tokio::test]
async fn parameters() {
    let f = fixture();
    assert_eq!(
        f.ssm(
            "PutParameter",
            json!({"Name": "/app/db/host", "Value": "h1", "Type": "String"})
        )
        .await
        .unwrap()["Version"],
        1
    );
    let e = f
        .ssm(
            "PutParameter",
            json!({"Name": "/app/db/host", "Value": "h2", "Type": "String"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ParameterAlreadyExists");
    assert_eq!(
        f.ssm(
            "PutParameter",
            json!({"Name": "/app/db/host", "Value": "h2", "Overwrite": true})
        )
        .await
        .unwrap()["Version"],
        2
    );
    f.ssm(
        "PutParameter",
        json!({"Name": "/app/db/pass", "Value": "pw-plain", "Type": "SecureString"}),
    )
    .await
    .unwrap();
    f.ssm(
        "PutParameter",
        json!({"Name": "/app/list", "Value": "a,b", "Type": "StringList"}),
    )
    .await
    .unwrap();
    f.ssm(
        "PutParameter",
        json!({"Name": "flat", "Value": "f", "Type": "String"}),
    )
    .await
    .unwrap();
    assert!(!f.store_text().contains("pw-plain"));

    let p = f
        .ssm("GetParameter", json!({"Name": "/app/db/host"}))
        .await
        .unwrap();
    assert_eq!(p["Parameter"]["Value"], "h2");
    assert_eq!(
        p["Parameter"]["ARN"],
        format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/app/db/host")
    );
    let p = f
        .ssm("GetParameter", json!({"Name": "/app/db/host:1"}))
        .await
        .unwrap();
    assert_eq!(p["Parameter"]["Value"], "h1");
    assert_eq!(p["Parameter"]["Selector"], ":1");
    let e = f
        .ssm("GetParameter", json!({"Name": "/app/db/host:9"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ParameterVersionNotFound");
    let hidden = f
        .ssm("GetParameter", json!({"Name": "/app/db/pass"}))
        .await
        .unwrap();
    let hidden = hidden["Parameter"]["Value"].as_str().unwrap();
    assert_ne!(hidden, "pw-plain");
    assert!(!hidden.contains("pw-plain"));
    let shown = f
        .ssm(
            "GetParameter",
            json!({"Name": "/app/db/pass", "WithDecryption": true}),
        )
        .await
        .unwrap();
    assert_eq!(shown["Parameter"]["Value"], "pw-plain");
    let by_arn = f
        .ssm(
            "GetParameter",
            json!({"Name": format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/flat")}),
        )
        .await
        .unwrap();
    assert_eq!(by_arn["Parameter"]["Value"], "f");

    let many = f
        .ssm("GetParameters", json!({"Names": ["/app/list", "/nope"]}))
        .await
        .unwrap();
    assert_eq!(many["Parameters"][0]["Value"], "a,b");
    assert_eq!(many["InvalidParameters"], json!(["/nope"]));

    let one_level = f
        .ssm("GetParametersByPath", json!({"Path": "/app"}))
        .await
        .unwrap();
    let names: Vec<&str> = one_level["Parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["/app/list"]);
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req =
            json!({"Path": "/", "Recursive": true, "MaxResults": 2, "WithDecryption": true});
        if let Some(t) = &token {
            req["NextToken"] = json!(t);
        }
        let page = f.ssm("GetParametersByPath", req).await.unwrap();
        for p in page["Parameters"].as_array().unwrap() {
            all.push(format!(
                "{}={}",
                p["Name"].as_str().unwrap(),
                p["Value"].as_str().unwrap()
            ));
        }
        match page.get("NextToken").and_then(Value::as_str) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(
        all,
        // A name without a leading slash sits at the root, as on AWS.
        [
            "/app/db/host=h2",
            "/app/db/pass=pw-plain",
            "/app/list=a,b",
            "flat=f"
        ]
    );

    let described = f.ssm("DescribeParameters", json!({"ParameterFilters": [{"Key": "Name", "Option": "BeginsWith", "Values": ["/app/db"]}]})).await.unwrap();
    assert_eq!(described["Parameters"].as_array().unwrap().len(), 2);
    assert_eq!(described["Parameters"][1]["KeyId"], "alias/aws/ssm");

    f.ssm("DeleteParameter", json!({"Name": "/app/list"}))
        .await
        .unwrap();
    let e = f
        .ssm("DeleteParameter", json!({"Name": "/app/list"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ParameterNotFound");
    let e = f
        .ssm(
            "PutParameter",
            json!({"Name": "aws-thing", "Value": "x", "Type": "String"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationException");
    let e = f.ssm("SendCommand", json!({})).await.unwrap_err();
    assert!(e.message.contains("does not implement"));
}

#[tokio::test]
async fn resolves_value_from() {
    let f = fixture();
    let created = f
        .sm(
            "CreateSecret",
            json!({"Name": "creds", "SecretString": "{\"user\":\"admin\",\"port\":5432}"}),
        )
        .await
        .unwrap();
    let arn = created["ARN"].as_str().unwrap().to_string();
    let v1 = created["VersionId"].as_str().unwrap().to_string();
    f.sm(
        "PutSecretValue",
        json!({"SecretId": "creds", "SecretString": "{\"user\":\"root\"}"}),
    )
    .await
    .unwrap();
    f.ssm(
        "PutParameter",
        json!({"Name": "/svc/token", "Value": "tok", "Type": "SecureString"}),
    )
    .await
    .unwrap();
    f.ssm(
        "PutParameter",
        json!({"Name": "plain", "Value": "p", "Type": "String"}),
    )
    .await
    .unwrap();

    assert_eq!(f.resolve(&arn).unwrap(), "{\"user\":\"root\"}");
    assert_eq!(f.resolve(&format!("{arn}:user::")).unwrap(), "root");
    assert_eq!(
        f.resolve(&format!("{arn}:user:AWSPREVIOUS:")).unwrap(),
        "admin"
    );
    assert_eq!(f.resolve(&format!("{arn}:port::{v1}")).unwrap(), "5432");
    let partial = &arn[..arn.len() - 7];
    assert_eq!(f.resolve(&format!("{partial}:user::")).unwrap(), "root");
    let e = f.resolve(&format!("{arn}:missing::")).unwrap_err();
    assert_eq!(e.code, "InvalidParameterException");
    assert!(!e.message.contains("root"));
    let e = f
        .resolve(&format!(
            "arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:nope"
        ))
        .unwrap_err();
    assert_eq!(e.code, "ResourceNotFoundException");

    assert_eq!(f.resolve("/svc/token").unwrap(), "tok");
    assert_eq!(
        f.resolve(&format!(
            "arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/svc/token"
        ))
        .unwrap(),
        "tok"
    );
    assert_eq!(
        f.resolve(&format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/plain"))
            .unwrap(),
        "p"
    );
    assert_eq!(f.resolve("plain").unwrap(), "p");
    assert_eq!(f.resolve("/nope").unwrap_err().code, "ParameterNotFound");
    // Another account's or region's ARN finds nothing, even for a name that
    // exists here.
    let foreign = arn.replace(ACCOUNT, "111111111111");
    assert_eq!(
        f.resolve(&foreign).unwrap_err().code,
        "ResourceNotFoundException"
    );
    let foreign = format!("arn:aws:ssm:eu-west-1:{ACCOUNT}:parameter/svc/token");
    assert_eq!(f.resolve(&foreign).unwrap_err().code, "ParameterNotFound");

    f.sm("DeleteSecret", json!({"SecretId": "creds"}))
        .await
        .unwrap();
    assert_eq!(f.resolve(&arn).unwrap_err().code, "InvalidRequestException");
}

/// A name that itself ends in `-` and six characters (`my-secret`) must still
/// resolve by name, full ARN and partial ARN, and never be mistaken for
/// another secret whose name is its prefix.
#[tokio::test]
async fn names_that_look_like_arn_suffixes() {
    let f = fixture();
    let short = f
        .sm(
            "CreateSecret",
            json!({"Name": "my", "SecretString": "short"}),
        )
        .await
        .unwrap();
    let long = f
        .sm(
            "CreateSecret",
            json!({"Name": "my-secret", "SecretString": "long"}),
        )
        .await
        .unwrap();
    let long_arn = long["ARN"].as_str().unwrap();
    let short_arn = short["ARN"].as_str().unwrap();
    for (id, want) in [
        ("my-secret", "long"),
        (long_arn, "long"),
        (&long_arn[..long_arn.len() - 7], "long"),
        ("my", "short"),
        (short_arn, "short"),
    ] {
        let got = f
            .sm("GetSecretValue", json!({"SecretId": id}))
            .await
            .unwrap();
        assert_eq!(got["SecretString"], want, "{id}");
    }
}

#[tokio::test]
async fn parameter_labels_and_selectors() {
    let f = fixture();
    for v in ["v1", "v2", "v3"] {
        f.ssm(
            "PutParameter",
            json!({"Name": "/l/p", "Value": v, "Type": "String", "Overwrite": true}),
        )
        .await
        .unwrap();
    }
    // Default: the latest version; invalid labels are reported, not applied.
    let out = f
        .ssm(
            "LabelParameterVersion",
            json!({"Name": "/l/p", "Labels": ["prod", "1abc", "AWSx", "ssm-x", "bad label", "ok.-_"]}),
        )
        .await
        .unwrap();
    assert_eq!(out["ParameterVersion"], 3);
    assert_eq!(
        out["InvalidLabels"],
        json!(["1abc", "AWSx", "ssm-x", "bad label"])
    );
    let got = f
        .ssm("GetParameter", json!({"Name": "/l/p:prod"}))
        .await
        .unwrap();
    assert_eq!(got["Parameter"]["Value"], "v3");
    assert_eq!(got["Parameter"]["Selector"], ":prod");
    // A label moves from its version to the new one.
    let out = f
        .ssm(
            "LabelParameterVersion",
            json!({"Name": "/l/p", "ParameterVersion": 1, "Labels": ["prod"]}),
        )
        .await
        .unwrap();
    assert_eq!(out["InvalidLabels"], json!([]));
    let got = f
        .ssm(
            "GetParameters",
            json!({"Names": ["/l/p:prod", "/l/p:ok.-_", "/l/p:nope", "/l/p:2"]}),
        )
        .await
        .unwrap();
    let values: Vec<&str> = got["Parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["v1", "v3", "v2"]);
    assert_eq!(got["InvalidParameters"], json!(["/l/p:nope"]));
    let e = f
        .ssm("GetParameter", json!({"Name": "/l/p:nope"}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "ParameterVersionNotFound");

    // History: oldest first, labels per version, pages of MaxResults.
    let h = f
        .ssm("GetParameterHistory", json!({"Name": "/l/p"}))
        .await
        .unwrap();
    let labels: Vec<Value> = h["Parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Labels"].clone())
        .collect();
    assert_eq!(labels, [json!(["prod"]), json!([]), json!(["ok.-_"])]);
    assert!(h.get("NextToken").is_none());
    let p1 = f
        .ssm(
            "GetParameterHistory",
            json!({"Name": "/l/p", "MaxResults": 2}),
        )
        .await
        .unwrap();
    assert_eq!(p1["Parameters"].as_array().unwrap().len(), 2);
    let token = p1["NextToken"].as_str().unwrap().to_string();
    let p2 = f
        .ssm(
            "GetParameterHistory",
            json!({"Name": "/l/p", "MaxResults": 2, "NextToken": token}),
        )
        .await
        .unwrap();
    assert_eq!(p2["Parameters"][0]["Version"], 3);
    assert!(p2.get("NextToken").is_none());
    for (body, code) in [
        (
            json!({"Name": "/l/p", "MaxResults": 51}),
            "ValidationException",
        ),
        (
            json!({"Name": "/l/p", "MaxResults": 0}),
            "ValidationException",
        ),
        (
            json!({"Name": "/l/p", "NextToken": "garbage!"}),
            "InvalidNextToken",
        ),
        (json!({"Name": "/l/missing"}), "ParameterNotFound"),
    ] {
        let e = f.ssm("GetParameterHistory", body).await.unwrap_err();
        assert_eq!(e.code, code);
    }

    // Errors change nothing.
    let before = f.store_text();
    let eleven: Vec<String> = (0..11).map(|i| format!("l{i}")).collect();
    for (body, code) in [
        (
            json!({"Name": "/l/missing", "Labels": ["a"]}),
            "ParameterNotFound",
        ),
        (
            json!({"Name": "/l/p", "ParameterVersion": 9, "Labels": ["a"]}),
            "ParameterVersionNotFound",
        ),
        (
            json!({"Name": "/l/p", "Labels": eleven}),
            "ValidationException",
        ),
        (json!({"Name": "/l/p", "Labels": []}), "ValidationException"),
        (
            json!({"Name": "/l/p", "Labels": ["x".repeat(101)]}),
            "ValidationException",
        ),
    ] {
        let e = f.ssm("LabelParameterVersion", body).await.unwrap_err();
        assert_eq!(e.code, code);
    }
    let nine: Vec<String> = (0..9).map(|i| format!("l{i}")).collect();
    f.ssm(
        "LabelParameterVersion",
        json!({"Name": "/l/p", "ParameterVersion": 2, "Labels": nine}),
    )
    .await
    .unwrap();
    let mid = f.store_text();
    assert_ne!(before, mid);
    let e = f
        .ssm(
            "LabelParameterVersion",
            json!({"Name": "/l/p", "ParameterVersion": 2, "Labels": ["x1", "x2"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ParameterVersionLabelLimitExceeded");
    assert_eq!(f.store_text(), mid);
    // Re-applying labels a version has does not count twice; moving one
    // onto it does.
    f.ssm(
        "LabelParameterVersion",
        json!({"Name": "/l/p", "ParameterVersion": 2, "Labels": ["l0", "prod"]}),
    )
    .await
    .unwrap();
    let got = f
        .ssm("GetParameter", json!({"Name": "/l/p:prod"}))
        .await
        .unwrap();
    assert_eq!(got["Parameter"]["Version"], 2);

    let out = f
        .ssm(
            "UnlabelParameterVersion",
            json!({"Name": "/l/p", "ParameterVersion": 2, "Labels": ["prod", "ok.-_"]}),
        )
        .await
        .unwrap();
    assert_eq!(out["RemovedLabels"], json!(["prod"]));
    assert_eq!(out["InvalidLabels"], json!(["ok.-_"]));
    let e = f
        .ssm(
            "UnlabelParameterVersion",
            json!({"Name": "/l/p", "Labels": ["x"]}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationException");
}

async fn list_tags(f: &Fixture, id: &str) -> Value {
    f.ssm(
        "ListTagsForResource",
        json!({"ResourceType": "Parameter", "ResourceId": id}),
    )
    .await
    .unwrap()["TagList"]
        .clone()
}

#[tokio::test]
async fn parameter_history_decryption_and_tags() {
    let f = fixture();
    f.ssm(
        "PutParameter",
        json!({"Name": "/t/s", "Value": "hidden-1", "Type": "SecureString",
               "Tags": [{"Key": "team", "Value": "a"}]}),
    )
    .await
    .unwrap();
    f.ssm(
        "PutParameter",
        json!({"Name": "/t/s", "Value": "hidden-2", "Overwrite": true}),
    )
    .await
    .unwrap();
    let h = f
        .ssm("GetParameterHistory", json!({"Name": "/t/s"}))
        .await
        .unwrap();
    let text = h.to_string();
    assert!(!text.contains("hidden-1") && !text.contains("hidden-2"));
    assert_eq!(h["Parameters"][1]["KeyId"], "alias/aws/ssm");
    assert_eq!(h["Parameters"][1]["LastModifiedUser"], f.ctx.principal.arn);
    let h = f
        .ssm(
            "GetParameterHistory",
            json!({"Name": "/t/s", "WithDecryption": true}),
        )
        .await
        .unwrap();
    assert_eq!(h["Parameters"][0]["Value"], "hidden-1");
    assert_eq!(h["Parameters"][1]["Value"], "hidden-2");

    assert_eq!(
        list_tags(&f, "/t/s").await,
        json!([{"Key": "team", "Value": "a"}])
    );
    f.ssm(
        "AddTagsToResource",
        json!({"ResourceType": "Parameter", "ResourceId": "/t/s",
               "Tags": [{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "prod"}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        list_tags(&f, "/t/s").await,
        json!([{"Key": "team", "Value": "b"}, {"Key": "env", "Value": "prod"}])
    );
    f.ssm(
        "RemoveTagsFromResource",
        json!({"ResourceType": "Parameter", "ResourceId": "/t/s", "TagKeys": ["team", "nope"]}),
    )
    .await
    .unwrap();
    assert_eq!(
        list_tags(&f, "/t/s").await,
        json!([{"Key": "env", "Value": "prod"}])
    );

    let before = f.store_text();
    let fifty: Vec<Value> = (0..50)
        .map(|i| json!({"Key": format!("k{i}"), "Value": "v"}))
        .collect();
    for (op, body, code) in [
        (
            "AddTagsToResource",
            json!({"ResourceType": "Parameter", "ResourceId": "/t/none", "Tags": [{"Key": "a", "Value": "b"}]}),
            "InvalidResourceId",
        ),
        (
            "ListTagsForResource",
            json!({"ResourceType": "Parameter", "ResourceId": "/t/none"}),
            "InvalidResourceId",
        ),
        (
            "RemoveTagsFromResource",
            json!({"ResourceType": "Parameter", "ResourceId": "/t/none", "TagKeys": ["a"]}),
            "InvalidResourceId",
        ),
        (
            "AddTagsToResource",
            json!({"ResourceType": "Document", "ResourceId": "/t/s", "Tags": [{"Key": "a", "Value": "b"}]}),
            "InvalidResourceType",
        ),
        (
            "ListTagsForResource",
            json!({"ResourceType": "Bucket", "ResourceId": "/t/s"}),
            "ValidationException",
        ),
        (
            "AddTagsToResource",
            json!({"ResourceType": "Parameter", "ResourceId": "/t/s", "Tags": fifty}),
            "TooManyTagsError",
        ),
        (
            "AddTagsToResource",
            json!({"ResourceType": "Parameter", "ResourceId": "/t/s", "Tags": [{"Key": "", "Value": "b"}]}),
            "ValidationException",
        ),
        (
            "AddTagsToResource",
            json!({"ResourceType": "Parameter", "ResourceId": "/t/s", "Tags": [{"Key": "a", "Value": "x".repeat(257)}]}),
            "ValidationException",
        ),
        (
            "PutParameter",
            json!({"Name": "/t/s", "Value": "v", "Overwrite": true, "Tags": [{"Key": "a", "Value": "b"}]}),
            "ValidationException",
        ),
        (
            "PutParameter",
            json!({"Name": "/t/new", "Value": "v", "Type": "String", "Tags": (0..51).map(|i| json!({"Key": format!("k{i}"), "Value": "v"})).collect::<Vec<_>>()}),
            "TooManyTagsError",
        ),
        (
            "PutParameter",
            json!({"Name": "/t/s", "Value": "v", "Type": "String"}),
            "ParameterAlreadyExists",
        ),
        (
            "PutParameter",
            json!({"Name": "/t/big", "Value": "x".repeat(4097), "Type": "String"}),
            "ValidationException",
        ),
        (
            "PutParameter",
            json!({"Name": "/t/big", "Value": "x".repeat(8193), "Type": "String", "Tier": "Advanced"}),
            "ValidationException",
        ),
        (
            "PutParameter",
            json!({"Name": "/t/bad name", "Value": "v", "Type": "String"}),
            "ValidationException",
        ),
        (
            "PutParameter",
            json!({"Name": "/ssm/x", "Value": "v", "Type": "String"}),
            "ValidationException",
        ),
        (
            "PutParameter",
            json!({"Name": "t/x", "Value": "v", "Type": "String"}),
            "ValidationException",
        ),
    ] {
        let e = f.ssm(op, body).await.unwrap_err();
        assert_eq!(e.code, code, "{op}");
        assert!(!e.message.contains("hidden-"));
    }
    assert_eq!(f.store_text(), before);
    // 4096 characters is still a Standard parameter.
    f.ssm(
        "PutParameter",
        json!({"Name": "/t/big", "Value": "x".repeat(4096), "Type": "String"}),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn parameter_oldest_labelled_version_is_kept() {
    let f = fixture();
    for i in 0..100 {
        f.ssm(
            "PutParameter",
            json!({"Name": "many", "Value": format!("v{i}"), "Type": "String", "Overwrite": true}),
        )
        .await
        .unwrap();
    }
    f.ssm(
        "LabelParameterVersion",
        json!({"Name": "many", "ParameterVersion": 1, "Labels": ["keep"]}),
    )
    .await
    .unwrap();
    let e = f
        .ssm(
            "PutParameter",
            json!({"Name": "many", "Value": "v100", "Overwrite": true}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ParameterMaxVersionLimitExceeded");
    f.ssm(
        "UnlabelParameterVersion",
        json!({"Name": "many", "ParameterVersion": 1, "Labels": ["keep"]}),
    )
    .await
    .unwrap();
    let out = f
        .ssm(
            "PutParameter",
            json!({"Name": "many", "Value": "v100", "Overwrite": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["Version"], 101);
}

async fn put(f: &Fixture, value: &str, stages: Option<Vec<&str>>) -> String {
    let mut body = json!({"SecretId": "rot", "SecretString": value});
    if let Some(s) = stages {
        body["VersionStages"] = json!(s);
    }
    f.sm("PutSecretValue", body).await.unwrap()["VersionId"]
        .as_str()
        .unwrap()
        .to_string()
}

fn stages_of(d: &Value, id: &str) -> Value {
    let mut s: Vec<String> = d["VersionIdsToStages"][id]
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
        .unwrap_or_default();
    s.sort();
    json!(s)
}

#[tokio::test]
async fn secret_versions_and_stages() {
    let f = fixture();
    f.sm("CreateSecret", json!({"Name": "rot"})).await.unwrap();
    // The first value is AWSCURRENT whatever VersionStages says.
    let v1 = put(&f, "one", Some(vec!["AWSPENDING"])).await;
    let d = f
        .sm("DescribeSecret", json!({"SecretId": "rot"}))
        .await
        .unwrap();
    assert_eq!(stages_of(&d, &v1), json!(["AWSCURRENT", "AWSPENDING"]));
    let v2 = put(&f, "two", Some(vec!["AWSPENDING"])).await;
    let d = f
        .sm("DescribeSecret", json!({"SecretId": "rot"}))
        .await
        .unwrap();
    assert_eq!(stages_of(&d, &v1), json!(["AWSCURRENT"]));
    assert_eq!(stages_of(&d, &v2), json!(["AWSPENDING"]));

    // Idempotent retry with the same token and value; another value fails.
    let token = "0123456789abcdef0123456789abcdef";
    for _ in 0..2 {
        let out = f
            .sm(
                "PutSecretValue",
                json!({"SecretId": "rot", "SecretString": "three", "ClientRequestToken": token, "VersionStages": ["custom"]}),
            )
            .await
            .unwrap();
        assert_eq!(out["VersionId"], token);
        assert_eq!(out["VersionStages"], json!(["custom"]));
    }
    let before = f.store_text();
    let e = f
        .sm(
            "PutSecretValue",
            json!({"SecretId": "rot", "SecretString": "other", "ClientRequestToken": token}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ResourceExistsException");
    assert!(!e.message.contains("other"));
    assert_eq!(f.store_text(), before);

    // Moving AWSCURRENT needs RemoveFromVersionId naming its holder.
    let e = f
        .sm(
            "UpdateSecretVersionStage",
            json!({"SecretId": "rot", "VersionStage": "AWSCURRENT", "MoveToVersionId": v2}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidParameterException");
    assert_eq!(
        e.message,
        format!(
            "The parameter RemoveFromVersionId can't be empty. Staging label AWSCURRENT is \
             currently attached to version {v1}, so you must explicitly reference that version \
             in RemoveFromVersionId."
        )
    );
    let missing = "ffffffffffffffffffffffffffffffff";
    for (body, code) in [
        (
            json!({"SecretId": "rot", "VersionStage": "AWSCURRENT", "MoveToVersionId": v2, "RemoveFromVersionId": v2}),
            "InvalidParameterException",
        ),
        (
            json!({"SecretId": "rot", "VersionStage": "AWSCURRENT", "MoveToVersionId": missing, "RemoveFromVersionId": v1}),
            "InvalidParameterException",
        ),
        (
            json!({"SecretId": "rot", "VersionStage": "AWSCURRENT", "RemoveFromVersionId": v1}),
            "InvalidParameterException",
        ),
        (
            json!({"SecretId": "rot", "VersionStage": "AWSCURRENT"}),
            "InvalidParameterException",
        ),
        (
            json!({"SecretId": "rot", "VersionStage": "x", "MoveToVersionId": "short"}),
            "ValidationException",
        ),
        (json!({"SecretId": "rot"}), "InvalidParameterException"),
        (
            json!({"SecretId": "nope", "VersionStage": "x", "MoveToVersionId": v2}),
            "ResourceNotFoundException",
        ),
    ] {
        let e = f.sm("UpdateSecretVersionStage", body).await.unwrap_err();
        assert_eq!(e.code, code, "{}", e.message);
    }
    let before_move = f.store_text();
    assert_eq!(before_move, before);
    f.sm(
        "UpdateSecretVersionStage",
        json!({"SecretId": "rot", "VersionStage": "AWSCURRENT", "MoveToVersionId": v2, "RemoveFromVersionId": v1}),
    )
    .await
    .unwrap();
    let d = f
        .sm("DescribeSecret", json!({"SecretId": "rot"}))
        .await
        .unwrap();
    assert_eq!(stages_of(&d, &v1), json!(["AWSPREVIOUS"]));
    assert_eq!(stages_of(&d, &v2), json!(["AWSCURRENT", "AWSPENDING"]));
    let cur = f
        .sm("GetSecretValue", json!({"SecretId": "rot"}))
        .await
        .unwrap();
    assert_eq!(cur["SecretString"], "two");
    // Removing a label; the version left without labels is deprecated.
    f.sm(
        "UpdateSecretVersionStage",
        json!({"SecretId": "rot", "VersionStage": "custom", "RemoveFromVersionId": token}),
    )
    .await
    .unwrap();
    // Adding a label nobody holds needs no RemoveFromVersionId.
    f.sm(
        "UpdateSecretVersionStage",
        json!({"SecretId": "rot", "VersionStage": "blue", "MoveToVersionId": v1}),
    )
    .await
    .unwrap();

    let listed = f
        .sm("ListSecretVersionIds", json!({"SecretId": "rot"}))
        .await
        .unwrap();
    let ids: Vec<&str> = listed["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["VersionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&v1.as_str()) && ids.contains(&v2.as_str()));
    assert!(listed["ARN"].as_str().unwrap().contains(":secret:rot-"));
    assert_eq!(listed["Name"], "rot");
    let v = &listed["Versions"][0];
    assert!(v["CreatedDate"].is_number() && v["VersionStages"].is_array());
    let all = f
        .sm(
            "ListSecretVersionIds",
            json!({"SecretId": "rot", "IncludeDeprecated": true}),
        )
        .await
        .unwrap();
    assert_eq!(all["Versions"].as_array().unwrap().len(), 3);
    // Pages of one, each version once.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut body = json!({"SecretId": "rot", "IncludeDeprecated": true, "MaxResults": 1});
        if let Some(t) = &next {
            body["NextToken"] = json!(t);
        }
        let page = f.sm("ListSecretVersionIds", body).await.unwrap();
        for v in page["Versions"].as_array().unwrap() {
            seen.push(v["VersionId"].as_str().unwrap().to_string());
        }
        match page["NextToken"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    seen.sort();
    let mut want = vec![v1.clone(), v2.clone(), token.to_string()];
    want.sort();
    assert_eq!(seen, want);
    for (body, code) in [
        (
            json!({"SecretId": "rot", "MaxResults": 101}),
            "ValidationException",
        ),
        (
            json!({"SecretId": "rot", "NextToken": "bad"}),
            "InvalidNextTokenException",
        ),
        (json!({"SecretId": "missing"}), "ResourceNotFoundException"),
        (json!({}), "InvalidParameterException"),
    ] {
        let e = f.sm("ListSecretVersionIds", body).await.unwrap_err();
        assert_eq!(e.code, code);
    }
}

#[tokio::test]
async fn batch_get_secret_value() {
    let f = fixture();
    for (name, value) in [("b/one", "1"), ("b/two", "2"), ("c/three", "3")] {
        f.sm(
            "CreateSecret",
            json!({"Name": name, "SecretString": value, "Tags": [{"Key": "app", "Value": name}]}),
        )
        .await
        .unwrap();
    }
    f.sm("CreateSecret", json!({"Name": "b/empty"}))
        .await
        .unwrap();
    f.sm(
        "CreateSecret",
        json!({"Name": "b/gone", "SecretString": "x"}),
    )
    .await
    .unwrap();
    f.sm("DeleteSecret", json!({"SecretId": "b/gone"}))
        .await
        .unwrap();
    let out = f
        .sm(
            "BatchGetSecretValue",
            json!({"SecretIdList": ["b/one", "c/three", "missing", "b/gone", "b/empty"]}),
        )
        .await
        .unwrap();
    let values: Vec<(&str, &str)> = out["SecretValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["Name"].as_str().unwrap(),
                v["SecretString"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(values, [("b/one", "1"), ("c/three", "3")]);
    assert_eq!(
        out["SecretValues"][0]["VersionStages"],
        json!(["AWSCURRENT"])
    );
    let errors: Vec<(&str, &str)> = out["Errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["SecretId"].as_str().unwrap(),
                e["ErrorCode"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("missing", "ResourceNotFoundException"),
            ("b/gone", "InvalidRequestException"),
            ("b/empty", "ResourceNotFoundException")
        ]
    );
    assert_eq!(
        out["Errors"][0]["Message"],
        "Secrets Manager can't find the specified secret."
    );

    // Filters, paged.
    let mut names = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut body = json!({"Filters": [{"Key": "name", "Values": ["b/"]}], "MaxResults": 1});
        if let Some(t) = &next {
            body["NextToken"] = json!(t);
        }
        let page = f.sm("BatchGetSecretValue", body).await.unwrap();
        for v in page["SecretValues"].as_array().unwrap() {
            names.push(v["Name"].as_str().unwrap().to_string());
        }
        for e in page["Errors"].as_array().unwrap() {
            names.push(format!("error:{}", e["SecretId"].as_str().unwrap()));
        }
        match page["NextToken"].as_str() {
            Some(t) => next = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["error:b/empty", "b/one", "b/two"]);
    let out = f
        .sm(
            "BatchGetSecretValue",
            json!({"Filters": [{"Key": "tag-value", "Values": ["c/"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(out["SecretValues"][0]["Name"], "c/three");
    let out = f
        .sm(
            "BatchGetSecretValue",
            json!({"Filters": [{"Key": "name", "Values": ["!b/"]}]}),
        )
        .await
        .unwrap();
    assert_eq!(out["SecretValues"].as_array().unwrap().len(), 1);

    let ids: Vec<String> = (0..21).map(|i| format!("s{i}")).collect();
    for (body, code) in [
        (json!({}), "InvalidParameterException"),
        (
            json!({"SecretIdList": ["b/one"], "Filters": [{"Key": "name", "Values": ["b"]}]}),
            "InvalidParameterException",
        ),
        (
            json!({"SecretIdList": ["b/one"], "MaxResults": 5}),
            "InvalidParameterException",
        ),
        (json!({"SecretIdList": ids}), "ValidationException"),
        (
            json!({"Filters": [{"Key": "name", "Values": ["b"]}], "MaxResults": 21}),
            "ValidationException",
        ),
        (
            json!({"Filters": [{"Key": "colour", "Values": ["b"]}]}),
            "ValidationException",
        ),
        (
            json!({"Filters": [{"Key": "name", "Values": ["b"]}], "NextToken": "bad"}),
            "InvalidNextTokenException",
        ),
    ] {
        let e = f.sm("BatchGetSecretValue", body).await.unwrap_err();
        assert_eq!(e.code, code, "{}", e.message);
    }
}

#[tokio::test]
async fn bad_secret_requests_change_nothing() {
    let f = fixture();
    f.sm(
        "CreateSecret",
        json!({"Name": "keep", "SecretString": "kept-value"}),
    )
    .await
    .unwrap();
    let before = f.store_text();
    let big = "x".repeat(65537);
    for (op, body, code) in [
        (
            "CreateSecret",
            json!({"Name": "has space", "SecretString": "v"}),
            "InvalidParameterException",
        ),
        (
            "CreateSecret",
            json!({"Name": "n".repeat(513), "SecretString": "v"}),
            "ValidationException",
        ),
        (
            "CreateSecret",
            json!({"Name": "keep", "SecretString": "v"}),
            "ResourceExistsException",
        ),
        (
            "CreateSecret",
            json!({"Name": "big", "SecretString": big}),
            "ValidationException",
        ),
        (
            "PutSecretValue",
            json!({"SecretId": "keep", "SecretString": big}),
            "ValidationException",
        ),
        (
            "PutSecretValue",
            json!({"SecretId": "keep", "SecretString": "v", "VersionStages": []}),
            "ValidationException",
        ),
        (
            "PutSecretValue",
            json!({"SecretId": "nope", "SecretString": "v"}),
            "ResourceNotFoundException",
        ),
        (
            "GetSecretValue",
            json!({"SecretId": "nope"}),
            "ResourceNotFoundException",
        ),
    ] {
        let e = f.sm(op, body).await.unwrap_err();
        assert_eq!(e.code, code, "{op}: {}", e.message);
        assert!(!e.message.contains("xxxxxxxx"));
    }
    assert_eq!(f.store_text(), before);
    // 512 characters and 65536 bytes are allowed.
    f.sm(
        "CreateSecret",
        json!({"Name": "n".repeat(512), "SecretString": "x".repeat(65536)}),
    )
    .await
    .unwrap();
}
