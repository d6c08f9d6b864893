//! Policy simulation for Secrets Manager, SSM Parameter Store and CloudWatch
//! Logs: each case is a principal's policy, an operation with its input
//! (names, partial ARNs, full ARNs, `name:selector`, group ARNs with and
//! without `:*`) and the outcome IAM must give, run through the real
//! handlers with the real `IamAuthorizer` deciding.

use std::sync::Arc;

use berth_logs::LogsService;
use berth_model::{
    Access, AwsError, DenialStyle, JsonService, Principal, PrincipalKind, QueryService,
    RequestContext,
};
use berth_secrets::{MasterKey, SecretPolicies, SecretsManagerService, SsmService};
use berth_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn sm_arn(rest: &str) -> String {
    format!("arn:aws:secretsmanager:{REGION}:{ACCOUNT}:{rest}")
}

fn ssm_arn(rest: &str) -> String {
    format!("arn:aws:ssm:{REGION}:{ACCOUNT}:{rest}")
}

fn logs_arn(rest: &str) -> String {
    format!("arn:aws:logs:{REGION}:{ACCOUNT}:{rest}")
}

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

/// What IAM must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Allowed: the call may still fail for other reasons (a missing
    /// secret), but not with AccessDeniedException.
    Allow,
    /// Refused by an explicit Deny.
    Deny,
    /// Refused for want of an Allow.
    NoMatch,
}

#[derive(Clone, Copy)]
enum Svc {
    Sm,
    Ssm,
    Logs,
}

struct World {
    _dir: tempfile::TempDir,
    iam_svc: Arc<berth_iam::IamService>,
    authorizer: Arc<berth_iam::IamAuthorizer>,
    sm: SecretsManagerService,
    ssm: SsmService,
    logs: Arc<LogsService>,
    /// IAM's unique id of each user made, by name.
    user_ids: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
        let keys = Arc::new(MasterKey::from_bytes([7; 32]));
        let iam = berth_iam::Iam::new(store.clone());
        let authorizer = Arc::new(
            berth_iam::IamAuthorizer::new(iam.clone())
                .with_resource_policies(Arc::new(SecretPolicies::new(store.clone()))),
        );
        World {
            iam_svc: iam.iam_service(),
            authorizer,
            sm: SecretsManagerService::new(store.clone(), keys.clone()),
            ssm: SsmService::new(store.clone(), keys),
            logs: LogsService::open(dir.path()).unwrap(),
            user_ids: Default::default(),
            _dir: dir,
        }
    }

    /// A user with `policy` as its only inline policy (none when `None`).
    async fn user(&self, name: &str, policy: Option<Value>) {
        let root = root();
        let call = |action: &str, params: Vec<(&str, String)>| {
            let params: Vec<(String, String)> = params
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let action = action.to_string();
            let svc = self.iam_svc.clone();
            let root = root.clone();
            async move { svc.handle(&root, &action, &params).await }
        };
        let out = call("CreateUser", vec![("UserName", name.to_string())])
            .await
            .unwrap();
        let id = out
            .split_once("<UserId>")
            .and_then(|(_, rest)| rest.split_once("</UserId>"))
            .map(|(id, _)| id.to_string())
            .unwrap();
        self.user_ids.lock().unwrap().insert(name.to_string(), id);
        if let Some(policy) = policy {
            call(
                "PutUserPolicy",
                vec![
                    ("UserName", name.to_string()),
                    ("PolicyName", "p".to_string()),
                    ("PolicyDocument", policy.to_string()),
                ],
            )
            .await
            .unwrap();
        }
    }

    /// A fresh request context for user `name`, with IAM enforced.
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

    fn service(&self, svc: Svc) -> &dyn JsonService {
        match svc {
            Svc::Sm => &self.sm,
            Svc::Ssm => &self.ssm,
            Svc::Logs => self.logs.as_ref(),
        }
    }

    async fn call_as(
        &self,
        ctx: &RequestContext,
        svc: Svc,
        op: &str,
        body: &Value,
    ) -> Result<Value, AwsError> {
        let out = self
            .service(svc)
            .handle(ctx, op, body.to_string().as_bytes())
            .await;
        // What the gateway enforces: no answer without a check.
        if out.is_ok() {
            assert!(ctx.access.checked(), "{op} answered without asking IAM");
        }
        out.map(|bytes| serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn root_call(&self, svc: Svc, op: &str, body: Value) -> Value {
        self.call_as(&root(), svc, op, &body)
            .await
            .unwrap_or_else(|e| panic!("{op} as root: {e:?}"))
    }

    async fn user_call(
        &self,
        user: &str,
        svc: Svc,
        op: &str,
        body: &Value,
    ) -> Result<Value, AwsError> {
        self.call_as(&self.ctx(user), svc, op, body).await
    }

    /// Runs each case and reports every mismatch at once.
    async fn check(&self, svc: Svc, cases: &[(&str, &str, Value, Expect)]) {
        let mut failures = Vec::new();
        for (user, op, body, expect) in cases {
            let result = self.user_call(user, svc, op, body).await;
            let got = match &result {
                Err(e) if e.code == "AccessDeniedException" => {
                    assert!(
                        e.message.starts_with(&format!(
                            "User: arn:aws:iam::{ACCOUNT}:user/{user} is not authorized to perform: "
                        )),
                        "{}",
                        e.message
                    );
                    if e.message.contains("explicit deny") {
                        Expect::Deny
                    } else {
                        Expect::NoMatch
                    }
                }
                _ => Expect::Allow,
            };
            if got != *expect {
                failures.push(format!(
                    "{user} {op} {body}: expected {expect:?}, got {got:?} ({result:?})"
                ));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

fn allow_all(service: &str) -> Value {
    json!({"Effect": "Allow", "Action": format!("{service}:*"), "Resource": "*"})
}

fn policy(statements: Vec<Value>) -> Option<Value> {
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

/// Secrets `prod/db` (team red), `app/blue` (team blue) and `app/red`
/// (team red); answers their full ARNs.
async fn secrets(w: &World) -> (String, String, String) {
    let mut arns = Vec::new();
    for (name, team) in [("prod/db", "red"), ("app/blue", "blue"), ("app/red", "red")] {
        let out = w
            .root_call(
                Svc::Sm,
                "CreateSecret",
                json!({"Name": name, "SecretString": format!("{name}-value"),
                       "Tags": [{"Key": "team", "Value": team}]}),
            )
            .await;
        arns.push(out["ARN"].as_str().unwrap().to_string());
    }
    (arns[0].clone(), arns[1].clone(), arns[2].clone())
}

#[tokio::test]
async fn secrets_manager_policy_table() {
    let w = World::new();
    let (db, blue, red) = secrets(&w).await;
    assert!(
        db.starts_with(&sm_arn("secret:prod/db-"))
            && db.len() == sm_arn("secret:prod/db-").len() + 6
    );
    let db_pattern = sm_arn("secret:prod/db-??????");
    w.user(
        "denyprod",
        policy(vec![
            allow_all("secretsmanager"),
            json!({"Effect": "Deny", "Action": "secretsmanager:*", "Resource": db_pattern}),
        ]),
    )
    .await;
    w.user(
        "blue",
        policy(vec![
            json!({"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}),
        ]),
    )
    .await;
    w.user(
        "smtag",
        policy(vec![
            json!({"Effect": "Allow", "Action": "secretsmanager:DescribeSecret",
            "Resource": "*",
            "Condition": {"StringEquals": {"secretsmanager:ResourceTag/team": "red"}}}),
        ]),
    )
    .await;
    w.user(
        "creator",
        policy(vec![json!({"Effect": "Allow",
            "Action": ["secretsmanager:CreateSecret", "secretsmanager:TagResource"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}})]),
    )
    .await;
    w.user(
        "stages",
        policy(vec![
            json!({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
            "Resource": sm_arn("secret:app/*"),
            "Condition": {"StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}}),
        ]),
    )
    .await;
    w.user(
        "named",
        policy(vec![
            json!({"Effect": "Allow", "Action": "secretsmanager:CreateSecret",
            "Resource": "*",
            "Condition": {"StringLike": {"secretsmanager:Name": "team-a/*"}}}),
        ]),
    )
    .await;
    w.user("nobody", None).await;
    let partial = |name: &str| sm_arn(&format!("secret:{name}"));
    let id = |v: &str| json!({"SecretId": v});
    use Expect::*;
    let cases = vec![
        // A Deny on the suffixed ARN holds for every form of reference.
        ("denyprod", "GetSecretValue", id("prod/db"), Deny),
        ("denyprod", "GetSecretValue", id(&partial("prod/db")), Deny),
        ("denyprod", "GetSecretValue", id(&db), Deny),
        ("denyprod", "DescribeSecret", id("prod/db"), Deny),
        (
            "denyprod",
            "PutSecretValue",
            json!({"SecretId": partial("prod/db"), "SecretString": "x"}),
            Deny,
        ),
        (
            "denyprod",
            "TagResource",
            json!({"SecretId": "prod/db", "Tags": [{"Key": "k", "Value": "v"}]}),
            Deny,
        ),
        (
            "denyprod",
            "DeleteSecret",
            json!({"SecretId": partial("prod/db"), "ForceDeleteWithoutRecovery": true}),
            Deny,
        ),
        ("denyprod", "ListSecretVersionIds", id("prod/db"), Deny),
        // …and blocks creating the name again (its new ARN matches too).
        (
            "denyprod",
            "CreateSecret",
            json!({"Name": "prod/db", "SecretString": "x"}),
            Deny,
        ),
        ("denyprod", "GetSecretValue", id("app/blue"), Allow),
        ("denyprod", "GetSecretValue", id("no/such"), Allow),
        // Tag-based access: the secret's stored tags, whatever the form.
        ("blue", "DescribeSecret", id("app/blue"), Allow),
        ("blue", "GetSecretValue", id(&partial("app/blue")), Allow),
        ("blue", "GetSecretValue", id(&blue), Allow),
        ("blue", "GetSecretValue", id("app/red"), NoMatch),
        ("blue", "GetSecretValue", id(&red), NoMatch),
        ("blue", "DescribeSecret", id(&partial("prod/db")), NoMatch),
        ("blue", "ListSecrets", json!({}), NoMatch),
        // Secrets Manager's own spelling of the tag key.
        ("smtag", "DescribeSecret", id("app/red"), Allow),
        ("smtag", "DescribeSecret", id("app/blue"), NoMatch),
        // Request tags on create (and TagResource for tags at creation).
        (
            "creator",
            "CreateSecret",
            json!({"Name": "new/one", "SecretString": "x", "Tags": [{"Key": "team", "Value": "blue"}]}),
            Allow,
        ),
        (
            "creator",
            "CreateSecret",
            json!({"Name": "new/two", "SecretString": "x"}),
            NoMatch,
        ),
        (
            "creator",
            "CreateSecret",
            json!({"Name": "new/three", "SecretString": "x", "Tags": [{"Key": "team", "Value": "red"}]}),
            NoMatch,
        ),
        // secretsmanager:VersionStage and secretsmanager:Name.
        (
            "stages",
            "GetSecretValue",
            json!({"SecretId": "app/blue", "VersionStage": "AWSCURRENT"}),
            Allow,
        ),
        (
            "stages",
            "GetSecretValue",
            json!({"SecretId": "app/blue", "VersionStage": "AWSPREVIOUS"}),
            NoMatch,
        ),
        (
            "named",
            "CreateSecret",
            json!({"Name": "team-a/db", "SecretString": "x"}),
            Allow,
        ),
        (
            "named",
            "CreateSecret",
            json!({"Name": "team-b/db", "SecretString": "x"}),
            NoMatch,
        ),
        // No policy, no access, even to learn a secret is missing.
        ("nobody", "GetSecretValue", id("no/such"), NoMatch),
        ("nobody", "ListSecrets", json!({}), NoMatch),
        ("nobody", "GetRandomPassword", json!({}), NoMatch),
    ];
    w.check(Svc::Sm, &cases).await;

    // The refusal names the secret's full ARN, however it was named.
    let e = w
        .user_call("denyprod", Svc::Sm, "GetSecretValue", &id("prod/db"))
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "User: arn:aws:iam::{ACCOUNT}:user/denyprod is not authorized to perform: \
             secretsmanager:GetSecretValue on resource: {db} with an explicit deny in an \
             identity-based policy"
        )
    );
    // The blue user really reads the blue secret.
    let out = w
        .user_call("blue", Svc::Sm, "GetSecretValue", &id("app/blue"))
        .await
        .unwrap();
    assert_eq!(out["SecretString"], "app/blue-value");
}

#[tokio::test]
async fn batch_get_secret_value_checks_each_secret() {
    let w = World::new();
    let (_db, blue, red) = secrets(&w).await;
    w.user(
        "reader",
        policy(vec![
            json!({"Effect": "Allow",
                   "Action": ["secretsmanager:BatchGetSecretValue", "secretsmanager:ListSecrets"],
                   "Resource": "*"}),
            json!({"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                   "Resource": sm_arn("secret:app/blue-??????")}),
        ]),
    )
    .await;
    w.user(
        "nolist",
        policy(vec![json!({"Effect": "Allow",
            "Action": ["secretsmanager:BatchGetSecretValue", "secretsmanager:GetSecretValue"],
            "Resource": "*"})]),
    )
    .await;
    w.user(
        "nobatch",
        policy(vec![json!({"Effect": "Allow",
        "Action": "secretsmanager:GetSecretValue", "Resource": "*"})]),
    )
    .await;

    let out = w
        .user_call(
            "reader",
            Svc::Sm,
            "BatchGetSecretValue",
            &json!({"SecretIdList": ["app/blue", "app/red", "missing"]}),
        )
        .await
        .unwrap();
    let values = out["SecretValues"].as_array().unwrap();
    assert_eq!(values.len(), 1);
    assert_eq!(values[0]["ARN"], blue.as_str());
    assert_eq!(values[0]["SecretString"], "app/blue-value");
    let errors = out["Errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["SecretId"], "app/red");
    assert_eq!(errors[0]["ErrorCode"], "AccessDeniedException");
    assert_eq!(
        errors[0]["Message"],
        format!(
            "User: arn:aws:iam::{ACCOUNT}:user/reader is not authorized to perform: \
             secretsmanager:GetSecretValue on resource: {red} because no identity-based policy \
             allows the secretsmanager:GetSecretValue action"
        )
    );
    // A secret the caller may not read is refused before it is found.
    assert_eq!(errors[1]["SecretId"], "missing");
    assert_eq!(errors[1]["ErrorCode"], "AccessDeniedException");
    assert!(!out.to_string().contains("app/red-value"));

    // Filters list only what the caller may read.
    let out = w
        .user_call(
            "reader",
            Svc::Sm,
            "BatchGetSecretValue",
            &json!({"Filters": [{"Key": "name", "Values": ["app/"]}]}),
        )
        .await
        .unwrap();
    let names: Vec<&str> = out["SecretValues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app/blue"]);
    assert!(!out.to_string().contains("app/red"));

    // Filters also need ListSecrets; the call needs BatchGetSecretValue.
    let e = w
        .user_call(
            "nolist",
            Svc::Sm,
            "BatchGetSecretValue",
            &json!({"Filters": [{"Key": "name", "Values": ["app/"]}]}),
        )
        .await
        .unwrap_err();
    assert!(
        e.message
            .contains("secretsmanager:ListSecrets on resource: *"),
        "{}",
        e.message
    );
    let e = w
        .user_call(
            "nobatch",
            Svc::Sm,
            "BatchGetSecretValue",
            &json!({"SecretIdList": ["app/blue"]}),
        )
        .await
        .unwrap_err();
    assert!(e
        .message
        .contains("secretsmanager:BatchGetSecretValue on resource: *"));
}

#[tokio::test]
async fn secret_resource_policies_take_part() {
    let w = World::new();
    let (_db, blue, red) = secrets(&w).await;
    w.user("guest", None).await;
    w.user("admin", policy(vec![allow_all("secretsmanager")]))
        .await;
    let user = |n: &str| format!("arn:aws:iam::{ACCOUNT}:user/{n}");
    // The red secret's own policy lets the guest read it and denies the admin.
    let rp = json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": user("guest")},
         "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        {"Effect": "Deny", "Principal": {"AWS": user("admin")},
         "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]});
    w.root_call(
        Svc::Sm,
        "PutResourcePolicy",
        json!({"SecretId": "app/red", "ResourcePolicy": rp.to_string()}),
    )
    .await;
    let got = w
        .root_call(Svc::Sm, "GetResourcePolicy", json!({"SecretId": red}))
        .await;
    assert_eq!(got["ResourcePolicy"], rp.to_string());
    use Expect::*;
    w.check(
        Svc::Sm,
        &[
            (
                "guest",
                "GetSecretValue",
                json!({"SecretId": "app/red"}),
                Allow,
            ),
            (
                "guest",
                "GetSecretValue",
                json!({"SecretId": sm_arn("secret:app/red")}),
                Allow,
            ),
            (
                "guest",
                "GetSecretValue",
                json!({"SecretId": blue}),
                NoMatch,
            ),
            (
                "guest",
                "DescribeSecret",
                json!({"SecretId": "app/red"}),
                NoMatch,
            ),
            (
                "admin",
                "GetSecretValue",
                json!({"SecretId": "app/red"}),
                Deny,
            ),
            (
                "admin",
                "GetSecretValue",
                json!({"SecretId": "app/blue"}),
                Allow,
            ),
        ],
    )
    .await;
    let e = w
        .user_call(
            "admin",
            Svc::Sm,
            "GetSecretValue",
            &json!({"SecretId": "app/red"}),
        )
        .await
        .unwrap_err();
    assert!(e
        .message
        .ends_with("with an explicit deny in a resource-based policy"));
    // A public policy is refused when BlockPublicPolicy asks.
    let public = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
        "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]});
    let e = w
        .call_as(
            &root(),
            Svc::Sm,
            "PutResourcePolicy",
            &json!({"SecretId": "app/red", "ResourcePolicy": public.to_string(),
                    "BlockPublicPolicy": true}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "PublicPolicyException");
    let e = w
        .call_as(
            &root(),
            Svc::Sm,
            "PutResourcePolicy",
            &json!({"SecretId": "app/red", "ResourcePolicy": "{not json"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocumentException");
    // Once deleted, the policy no longer grants anything.
    w.root_call(
        Svc::Sm,
        "DeleteResourcePolicy",
        json!({"SecretId": "app/red"}),
    )
    .await;
    w.check(
        Svc::Sm,
        &[(
            "guest",
            "GetSecretValue",
            json!({"SecretId": "app/red"}),
            NoMatch,
        )],
    )
    .await;
}

#[tokio::test]
async fn ssm_policy_table() {
    let w = World::new();
    for (name, env) in [("/app/db", "prod"), ("/app/cfg", "dev"), ("plain", "dev")] {
        w.root_call(
            Svc::Ssm,
            "PutParameter",
            json!({"Name": name, "Value": "v", "Type": "SecureString",
                   "Tags": [{"Key": "env", "Value": env}]}),
        )
        .await;
    }
    w.user(
        "denydb",
        policy(vec![
            allow_all("ssm"),
            json!({"Effect": "Deny", "Action": "ssm:*", "Resource": ssm_arn("parameter/app/db")}),
        ]),
    )
    .await;
    w.user(
        "dev",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ssm:GetParameter*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/env": "dev"}}}),
        ]),
    )
    .await;
    w.user(
        "ssmtag",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ssm:GetParameter", "Resource": "*",
            "Condition": {"StringEquals": {"ssm:resourceTag/env": "prod"}}}),
        ]),
    )
    .await;
    w.user(
        "path",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ssm:GetParametersByPath",
            "Resource": ssm_arn("parameter/app"),
            "Condition": {"StringEquals": {"ssm:Recursive": "false"}}}),
        ]),
    )
    .await;
    w.user(
        "nooverwrite",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ssm:PutParameter", "Resource": "*",
            "Condition": {"StringEquals": {"ssm:Overwrite": "false"}}}),
        ]),
    )
    .await;
    w.user(
        "tagger",
        policy(vec![
            json!({"Effect": "Allow", "Action": ["ssm:AddTagsToResource", "ssm:PutParameter"],
            "Resource": "*",
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["env"]},
                          "Null": {"aws:TagKeys": "false"}}}),
        ]),
    )
    .await;
    w.user("nobody", None).await;
    let name = |v: &str| json!({"Name": v});
    let tags = |id: &str| {
        json!({"ResourceType": "Parameter", "ResourceId": id,
               "Tags": [{"Key": "env", "Value": "x"}]})
    };
    use Expect::*;
    let cases = vec![
        ("denydb", "GetParameter", name("/app/db"), Deny),
        ("denydb", "GetParameter", name("/app/db:1"), Deny),
        (
            "denydb",
            "GetParameter",
            name(&ssm_arn("parameter/app/db")),
            Deny,
        ),
        (
            "denydb",
            "GetParameter",
            name(&format!("{}:1", ssm_arn("parameter/app/db"))),
            Deny,
        ),
        (
            "denydb",
            "GetParameters",
            json!({"Names": ["/app/cfg", "/app/db"]}),
            Deny,
        ),
        ("denydb", "GetParameterHistory", name("/app/db"), Deny),
        (
            "denydb",
            "DeleteParameters",
            json!({"Names": ["/app/db"]}),
            Deny,
        ),
        (
            "denydb",
            "LabelParameterVersion",
            json!({"Name": "/app/db", "Labels": ["l"]}),
            Deny,
        ),
        ("denydb", "AddTagsToResource", tags("/app/db"), Deny),
        (
            "denydb",
            "PutParameter",
            json!({"Name": "/app/db", "Value": "w", "Overwrite": true}),
            Deny,
        ),
        ("denydb", "GetParameter", name("/app/cfg"), Allow),
        (
            "denydb",
            "GetParameters",
            json!({"Names": ["/app/cfg", "plain"]}),
            Allow,
        ),
        ("dev", "GetParameter", name("/app/cfg"), Allow),
        (
            "dev",
            "GetParameter",
            name(&ssm_arn("parameter/plain")),
            Allow,
        ),
        ("dev", "GetParameterHistory", name("plain"), Allow),
        ("dev", "GetParameter", name("/app/db"), NoMatch),
        (
            "dev",
            "GetParameters",
            json!({"Names": ["/app/cfg", "/app/db"]}),
            NoMatch,
        ),
        ("dev", "DeleteParameter", name("/app/cfg"), NoMatch),
        ("ssmtag", "GetParameter", name("/app/db"), Allow),
        ("ssmtag", "GetParameter", name("/app/cfg"), NoMatch),
        (
            "path",
            "GetParametersByPath",
            json!({"Path": "/app", "Recursive": false}),
            Allow,
        ),
        (
            "path",
            "GetParametersByPath",
            json!({"Path": "/app", "Recursive": true}),
            NoMatch,
        ),
        (
            "path",
            "GetParametersByPath",
            json!({"Path": "/other"}),
            NoMatch,
        ),
        (
            "nooverwrite",
            "PutParameter",
            json!({"Name": "/new/p", "Value": "v", "Type": "String"}),
            Allow,
        ),
        (
            "nooverwrite",
            "PutParameter",
            json!({"Name": "/app/cfg", "Value": "v", "Overwrite": true}),
            NoMatch,
        ),
        ("tagger", "AddTagsToResource", tags("plain"), Allow),
        (
            "tagger",
            "AddTagsToResource",
            json!({"ResourceType": "Parameter", "ResourceId": "plain",
            "Tags": [{"Key": "owner", "Value": "x"}]}),
            NoMatch,
        ),
        (
            "tagger",
            "PutParameter",
            json!({"Name": "/t/p", "Value": "v", "Type": "String",
            "Tags": [{"Key": "env", "Value": "dev"}]}),
            Allow,
        ),
        (
            "tagger",
            "PutParameter",
            json!({"Name": "/t/q", "Value": "v", "Type": "String"}),
            NoMatch,
        ),
        ("nobody", "DescribeParameters", json!({}), NoMatch),
        ("nobody", "GetParameter", name("/no/such"), NoMatch),
    ];
    w.check(Svc::Ssm, &cases).await;
    let e = w
        .user_call("denydb", Svc::Ssm, "GetParameter", &name("/app/db:1"))
        .await
        .unwrap_err();
    assert!(e.message.contains(&format!(
        "ssm:GetParameter on resource: {} with an explicit deny",
        ssm_arn("parameter/app/db")
    )));
    let out = w
        .user_call(
            "dev",
            Svc::Ssm,
            "GetParameter",
            &json!({"Name": "/app/cfg", "WithDecryption": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["Parameter"]["Value"], "v");
}

#[tokio::test]
async fn logs_policy_table() {
    let w = World::new();
    for (group, team) in [("/app/web", "blue"), ("/app/secret", "red")] {
        w.root_call(
            Svc::Logs,
            "CreateLogGroup",
            json!({"logGroupName": group, "tags": {"team": team}}),
        )
        .await;
        w.root_call(
            Svc::Logs,
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": "s1"}),
        )
        .await;
    }
    let secret_group = logs_arn("log-group:/app/secret");
    w.user(
        "denysecret",
        policy(vec![
            allow_all("logs"),
            json!({"Effect": "Deny", "Action": "logs:*",
                   "Resource": [secret_group.clone(), format!("{secret_group}:*")]}),
        ]),
    )
    .await;
    w.user(
        "blue",
        policy(vec![
            json!({"Effect": "Allow", "Action": "logs:*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}),
        ]),
    )
    .await;
    w.user(
        "webreader",
        policy(vec![json!({"Effect": "Allow",
            "Action": ["logs:FilterLogEvents", "logs:DescribeLogStreams", "logs:GetLogEvents"],
            "Resource": logs_arn("log-group:/app/web:*")})]),
    )
    .await;
    w.user(
        "creator",
        policy(vec![
            json!({"Effect": "Allow", "Action": ["logs:CreateLogGroup", "logs:TagResource"],
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}}),
        ]),
    )
    .await;
    w.user("nobody", None).await;
    let group = |g: &str| json!({"logGroupName": g});
    let ident = |g: &str| json!({"logGroupIdentifier": g});
    let stream = |g: &str| json!({"logGroupName": g, "logStreamName": "s1"});
    use Expect::*;
    let cases = vec![
        ("denysecret", "GetLogEvents", stream("/app/secret"), Deny),
        (
            "denysecret",
            "GetLogEvents",
            json!({"logGroupIdentifier": secret_group, "logStreamName": "s1"}),
            Deny,
        ),
        (
            "denysecret",
            "FilterLogEvents",
            ident(&format!("{secret_group}:*")),
            Deny,
        ),
        ("denysecret", "FilterLogEvents", ident("/app/secret"), Deny),
        (
            "denysecret",
            "DescribeLogStreams",
            group("/app/secret"),
            Deny,
        ),
        (
            "denysecret",
            "PutLogEvents",
            json!({"logGroupName": "/app/secret", "logStreamName": "s1",
            "logEvents": [{"timestamp": 1, "message": "m"}]}),
            Deny,
        ),
        (
            "denysecret",
            "PutRetentionPolicy",
            json!({"logGroupName": "/app/secret", "retentionInDays": 1}),
            Deny,
        ),
        (
            "denysecret",
            "TagResource",
            json!({"resourceArn": secret_group, "tags": {"a": "b"}}),
            Deny,
        ),
        (
            "denysecret",
            "ListTagsForResource",
            json!({"resourceArn": format!("{secret_group}:*")}),
            Deny,
        ),
        ("denysecret", "DeleteLogGroup", group("/app/secret"), Deny),
        ("denysecret", "GetLogEvents", stream("/app/web"), Allow),
        ("denysecret", "DescribeLogGroups", json!({}), Allow),
        ("blue", "DescribeLogStreams", group("/app/web"), Allow),
        (
            "blue",
            "FilterLogEvents",
            ident(&logs_arn("log-group:/app/web")),
            Allow,
        ),
        ("blue", "ListTagsLogGroup", group("/app/web"), Allow),
        ("blue", "FilterLogEvents", group("/app/secret"), NoMatch),
        (
            "blue",
            "UntagResource",
            json!({"resourceArn": secret_group, "tagKeys": ["team"]}),
            NoMatch,
        ),
        ("webreader", "FilterLogEvents", group("/app/web"), Allow),
        ("webreader", "GetLogEvents", stream("/app/web"), Allow),
        (
            "webreader",
            "DescribeLogStreams",
            group("/app/secret"),
            NoMatch,
        ),
        ("webreader", "GetLogEvents", stream("/app/secret"), NoMatch),
        (
            "creator",
            "CreateLogGroup",
            json!({"logGroupName": "/new/a", "tags": {"team": "blue"}}),
            Allow,
        ),
        (
            "creator",
            "CreateLogGroup",
            json!({"logGroupName": "/new/b"}),
            NoMatch,
        ),
        (
            "creator",
            "CreateLogGroup",
            json!({"logGroupName": "/new/c", "tags": {"team": "red"}}),
            NoMatch,
        ),
        ("nobody", "DescribeLogGroups", json!({}), NoMatch),
        ("nobody", "CreateLogStream", stream("/app/web"), NoMatch),
    ];
    w.check(Svc::Logs, &cases).await;
    let e = w
        .user_call(
            "nobody",
            Svc::Logs,
            "DescribeLogStreams",
            &group("/app/web"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "User: arn:aws:iam::{ACCOUNT}:user/nobody is not authorized to perform: \
             logs:DescribeLogStreams on resource: {}:log-stream: because no identity-based \
             policy allows the logs:DescribeLogStreams action",
            logs_arn("log-group:/app/web")
        )
    );
}

/// A plausible input for each implemented operation (so the call gets past
/// validation to the IAM check), `{}` for the others.
fn plausible(svc: Svc, op: &str) -> Value {
    let secret = json!({"SecretId": "prod/db"});
    match (svc, op) {
        (Svc::Sm, "CreateSecret") => json!({"Name": "x/new", "SecretString": "v"}),
        (Svc::Sm, "PutSecretValue") | (Svc::Sm, "UpdateSecret") => {
            json!({"SecretId": "prod/db", "SecretString": "v"})
        }
        (Svc::Sm, "TagResource") => {
            json!({"SecretId": "prod/db", "Tags": [{"Key": "a", "Value": "b"}]})
        }
        (Svc::Sm, "UntagResource") => json!({"SecretId": "prod/db", "TagKeys": ["a"]}),
        (Svc::Sm, "UpdateSecretVersionStage") => {
            json!({"SecretId": "prod/db", "VersionStage": "X", "RemoveFromVersionId": "a".repeat(32)})
        }
        (Svc::Sm, "BatchGetSecretValue") => json!({"SecretIdList": ["prod/db"]}),
        (Svc::Sm, "PutResourcePolicy") | (Svc::Sm, "ValidateResourcePolicy") => json!({
            "SecretId": "prod/db",
            "ResourcePolicy": r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::000000000000:root"},"Action":"secretsmanager:*","Resource":"*"}]}"#}),
        (Svc::Sm, "ListSecrets") | (Svc::Sm, "GetRandomPassword") => json!({}),
        (Svc::Sm, _) => secret,
        (Svc::Ssm, "PutParameter") => json!({"Name": "/x", "Value": "v", "Type": "String"}),
        (Svc::Ssm, "GetParameters") | (Svc::Ssm, "DeleteParameters") => {
            json!({"Names": ["/app/db"]})
        }
        (Svc::Ssm, "GetParametersByPath") => json!({"Path": "/app"}),
        (Svc::Ssm, "LabelParameterVersion") | (Svc::Ssm, "UnlabelParameterVersion") => {
            json!({"Name": "/app/db", "Labels": ["l"], "ParameterVersion": 1})
        }
        (Svc::Ssm, "AddTagsToResource") => {
            json!({"ResourceType": "Parameter", "ResourceId": "/app/db",
            "Tags": [{"Key": "a", "Value": "b"}]})
        }
        (Svc::Ssm, "RemoveTagsFromResource") => {
            json!({"ResourceType": "Parameter", "ResourceId": "/app/db", "TagKeys": ["a"]})
        }
        (Svc::Ssm, "ListTagsForResource") => {
            json!({"ResourceType": "Parameter", "ResourceId": "/app/db"})
        }
        (Svc::Ssm, _) => json!({"Name": "/app/db"}),
        (Svc::Logs, "CreateLogStream")
        | (Svc::Logs, "DeleteLogStream")
        | (Svc::Logs, "GetLogEvents") => {
            json!({"logGroupName": "/app/web", "logStreamName": "s1"})
        }
        (Svc::Logs, "PutLogEvents") => json!({"logGroupName": "/app/web", "logStreamName": "s1",
            "logEvents": [{"timestamp": 1, "message": "m"}]}),
        (Svc::Logs, "PutRetentionPolicy") => {
            json!({"logGroupName": "/app/web", "retentionInDays": 1})
        }
        (Svc::Logs, "TagResource") => {
            json!({"resourceArn": logs_arn("log-group:/app/web"), "tags": {"a": "b"}})
        }
        (Svc::Logs, "UntagResource") => {
            json!({"resourceArn": logs_arn("log-group:/app/web"), "tagKeys": ["a"]})
        }
        (Svc::Logs, "ListTagsForResource") => {
            json!({"resourceArn": logs_arn("log-group:/app/web")})
        }
        (Svc::Logs, "TagLogGroup") => json!({"logGroupName": "/app/web", "tags": {"a": "b"}}),
        (Svc::Logs, "UntagLogGroup") => json!({"logGroupName": "/app/web", "tags": ["a"]}),
        (Svc::Logs, "DescribeLogGroups") => json!({}),
        (Svc::Logs, _) => json!({"logGroupName": "/app/web"}),
    }
}

/// Every operation of the service's model, as a user with no policies:
/// none answers success, and the ones Berth implements are refused by IAM.
async fn no_policy_walk(svc: Svc, operations: &[&str], implemented: &[&str]) {
    let w = World::new();
    secrets(&w).await;
    w.root_call(
        Svc::Ssm,
        "PutParameter",
        json!({"Name": "/app/db", "Value": "v", "Type": "String"}),
    )
    .await;
    w.root_call(
        Svc::Logs,
        "CreateLogGroup",
        json!({"logGroupName": "/app/web"}),
    )
    .await;
    w.root_call(
        Svc::Logs,
        "CreateLogStream",
        json!({"logGroupName": "/app/web", "logStreamName": "s1"}),
    )
    .await;
    w.user("nobody", None).await;
    let mut failures = Vec::new();
    for op in operations {
        let body = plausible(svc, op);
        match w.user_call("nobody", svc, op, &body).await {
            Ok(out) => failures.push(format!("{op} answered success: {out}")),
            Err(e) if implemented.contains(op) && e.code != "AccessDeniedException" => {
                failures.push(format!("{op} was not refused by IAM: {e:?}"))
            }
            Err(_) => {}
        }
    }
    for op in implemented {
        assert!(operations.contains(op), "{op} is not in the model");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn secrets_manager_operations_refuse_a_user_without_policies() {
    no_policy_walk(
        Svc::Sm,
        berth_model::shapes::secretsmanager::OPERATIONS,
        &[
            "BatchGetSecretValue",
            "CreateSecret",
            "DeleteResourcePolicy",
            "DeleteSecret",
            "DescribeSecret",
            "GetRandomPassword",
            "GetResourcePolicy",
            "GetSecretValue",
            "ListSecretVersionIds",
            "ListSecrets",
            "PutResourcePolicy",
            "PutSecretValue",
            "RestoreSecret",
            "TagResource",
            "UntagResource",
            "UpdateSecret",
            "UpdateSecretVersionStage",
            "ValidateResourcePolicy",
        ],
    )
    .await;
}

#[tokio::test]
async fn ssm_operations_refuse_a_user_without_policies() {
    no_policy_walk(
        Svc::Ssm,
        berth_model::shapes::ssm::OPERATIONS,
        &[
            "AddTagsToResource",
            "DeleteParameter",
            "DeleteParameters",
            "DescribeParameters",
            "GetParameter",
            "GetParameterHistory",
            "GetParameters",
            "GetParametersByPath",
            "LabelParameterVersion",
            "ListTagsForResource",
            "PutParameter",
            "RemoveTagsFromResource",
            "UnlabelParameterVersion",
        ],
    )
    .await;
}

#[tokio::test]
async fn logs_operations_refuse_a_user_without_policies() {
    no_policy_walk(
        Svc::Logs,
        berth_model::shapes::logs::OPERATIONS,
        &[
            "CreateLogGroup",
            "CreateLogStream",
            "DeleteLogGroup",
            "DeleteLogStream",
            "DeleteRetentionPolicy",
            "DescribeLogGroups",
            "DescribeLogStreams",
            "FilterLogEvents",
            "GetLogEvents",
            "ListTagsForResource",
            "ListTagsLogGroup",
            "PutLogEvents",
            "PutRetentionPolicy",
            "TagLogGroup",
            "TagResource",
            "UntagLogGroup",
            "UntagResource",
        ],
    )
    .await;
}
