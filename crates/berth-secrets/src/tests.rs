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
    assert!(e.message.contains("does not implement"));
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
        ["/app/db/host=h2", "/app/db/pass=pw-plain", "/app/list=a,b"]
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
