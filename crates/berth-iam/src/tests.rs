//! IAM and STS over a real store: the operations as the gateway calls them
//! (form fields in, XML out), credential resolution and the authorizer view.

use std::sync::Arc;

use berth_model::credentials::CredentialSource;
use berth_model::{AwsError, Principal, PrincipalKind, QueryService, RequestContext};
use berth_store::{SqliteOptions, SqliteStore, Store, StoreExt};

use crate::records::{session_key, SessionRecord};
use crate::{Iam, IamCredentials, IamService, StsService};

const ACCOUNT: &str = "123456789012";

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    iam: Arc<Iam>,
    iam_svc: Arc<IamService>,
    sts: Arc<StsService>,
    creds: Arc<IamCredentials>,
    root: RequestContext,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
    let iam = Iam::new(store.clone());
    Fixture {
        iam_svc: iam.iam_service(),
        sts: iam.sts_service(),
        creds: iam.credentials(),
        iam,
        store,
        _dir: dir,
        root: ctx_for(Principal {
            kind: PrincipalKind::Root,
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            user_id: ACCOUNT.into(),
            account_id: ACCOUNT.into(),
            access_key_id: "AKIAROOTROOTROOTROOT".into(),
        }),
    }
}

fn ctx_for(principal: Principal) -> RequestContext {
    RequestContext {
        request_id: "req".into(),
        account_id: principal.account_id.clone(),
        region: "us-east-1".into(),
        principal,
        source_ip: None,
        secure_transport: false,
        access: Default::default(),
    }
}

fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The text of the first `<name>` element.
fn tag(xml: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{name}>"))? + start;
    Some(xml[start..end].to_string())
}

fn decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

const TRUST_ACCOUNT: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},"Action":"sts:AssumeRole"}]}"#;
const TRUST_TASKS: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
const ALLOW_ECS: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ecs:*","Resource":"*"}]}"#;
const ALLOW_LOGS: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"logs:*","Resource":"*"}]}"#;

impl Fixture {
    async fn iam_as(
        &self,
        ctx: &RequestContext,
        action: &str,
        p: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        self.iam_svc.handle(ctx, action, &params(p)).await
    }

    async fn iam(&self, action: &str, p: &[(&str, &str)]) -> Result<String, AwsError> {
        self.iam_as(&self.root, action, p).await
    }

    async fn sts(
        &self,
        ctx: &RequestContext,
        action: &str,
        p: &[(&str, &str)],
    ) -> Result<String, AwsError> {
        self.sts.handle(ctx, action, &params(p)).await
    }

    /// `ctx` with IAM enforced by the real authorizer.
    fn enforced(&self, ctx: RequestContext) -> RequestContext {
        ctx.with_access(berth_model::Access::new(
            Some(Arc::new(crate::IamAuthorizer::new(self.iam.clone()))),
            berth_model::DenialStyle::Query,
            false,
        ))
    }

    /// A user with an access key; returns the caller context of the key.
    async fn user_ctx(&self, name: &str) -> RequestContext {
        self.iam("CreateUser", &[("UserName", name)]).await.unwrap();
        let out = self
            .iam("CreateAccessKey", &[("UserName", name)])
            .await
            .unwrap();
        let id = tag(&out, "AccessKeyId").unwrap();
        ctx_for(self.creds.resolve(&id).unwrap().principal)
    }
}

#[tokio::test]
async fn user_and_access_key_lifecycle() {
    let f = fixture();
    let out = f
        .iam("CreateUser", &[("UserName", "bob"), ("Path", "/team/")])
        .await
        .unwrap();
    assert!(
        out.starts_with("<User><Path>/team/</Path><UserName>bob</UserName><UserId>AIDA"),
        "{out}"
    );
    let user_id = tag(&out, "UserId").unwrap();
    assert_eq!(user_id.len(), 21);
    assert_eq!(
        tag(&out, "Arn").unwrap(),
        format!("arn:aws:iam::{ACCOUNT}:user/team/bob")
    );
    assert!(tag(&out, "CreateDate").unwrap().ends_with('Z'));

    let e = f
        .iam("CreateUser", &[("UserName", "BOB")])
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (409, "EntityAlreadyExists"));
    assert_eq!(e.message, "User with name BOB already exists.");

    let e = f
        .iam("GetUser", &[("UserName", "alice")])
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (404, "NoSuchEntity"));
    assert_eq!(e.message, "The user with name alice cannot be found.");

    // Bad input changes nothing.
    let e = f
        .iam("CreateUser", &[("UserName", "bad name")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");
    assert!(e.message.contains("at 'userName'"), "{}", e.message);
    let e = f
        .iam("CreateUser", &[("UserName", "carol"), ("Path", "nope")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");
    let list = f.iam("ListUsers", &[]).await.unwrap();
    assert_eq!(list.matches("<member>").count(), 1, "{list}");

    let out = f
        .iam("CreateAccessKey", &[("UserName", "bob")])
        .await
        .unwrap();
    let key_id = tag(&out, "AccessKeyId").unwrap();
    let secret = tag(&out, "SecretAccessKey").unwrap();
    assert!(key_id.starts_with("AKIA") && key_id.len() == 20, "{key_id}");
    assert_eq!(secret.len(), 40);
    assert_eq!(tag(&out, "Status").unwrap(), "Active");

    let resolved = f.creds.resolve(&key_id).unwrap();
    assert_eq!(resolved.secret_access_key, secret);
    assert_eq!(resolved.session_token, None);
    assert_eq!(resolved.principal.kind, PrincipalKind::User);
    assert_eq!(
        resolved.principal.arn,
        format!("arn:aws:iam::{ACCOUNT}:user/team/bob")
    );
    assert_eq!(resolved.principal.user_id, user_id);

    // The user itself, without UserName.
    let bob = ctx_for(resolved.principal.clone());
    let me = f.iam_as(&bob, "GetUser", &[]).await.unwrap();
    assert_eq!(tag(&me, "UserName").unwrap(), "bob");
    let out = f.sts(&bob, "GetCallerIdentity", &[]).await.unwrap();
    assert_eq!(tag(&out, "UserId").unwrap(), user_id);
    assert_eq!(tag(&out, "Account").unwrap(), ACCOUNT);

    f.iam(
        "UpdateAccessKey",
        &[
            ("UserName", "bob"),
            ("AccessKeyId", &key_id),
            ("Status", "Inactive"),
        ],
    )
    .await
    .unwrap();
    assert!(
        f.creds.resolve(&key_id).is_none(),
        "inactive keys do not resolve"
    );
    let keys = f
        .iam("ListAccessKeys", &[("UserName", "bob")])
        .await
        .unwrap();
    assert_eq!(tag(&keys, "Status").unwrap(), "Inactive");
    let e = f
        .iam(
            "UpdateAccessKey",
            &[
                ("UserName", "bob"),
                ("AccessKeyId", &key_id),
                ("Status", "Sleepy"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");

    f.iam("CreateAccessKey", &[("UserName", "bob")])
        .await
        .unwrap();
    let e = f
        .iam("CreateAccessKey", &[("UserName", "bob")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "LimitExceeded");
    assert_eq!(e.message, "Cannot exceed quota for AccessKeysPerUser: 2");

    let e = f
        .iam("DeleteUser", &[("UserName", "bob")])
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (409, "DeleteConflict"));
    assert_eq!(
        e.message,
        "Cannot delete entity, must delete access keys first."
    );

    let keys = f
        .iam("ListAccessKeys", &[("UserName", "bob")])
        .await
        .unwrap();
    for id in keys
        .split("<AccessKeyId>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_string())
    {
        f.iam(
            "DeleteAccessKey",
            &[("UserName", "bob"), ("AccessKeyId", &id)],
        )
        .await
        .unwrap();
    }
    let e = f
        .iam(
            "DeleteAccessKey",
            &[("UserName", "bob"), ("AccessKeyId", &key_id)],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!("The Access Key with id {key_id} cannot be found.")
    );
    assert_eq!(
        f.iam("DeleteUser", &[("UserName", "bob")]).await.unwrap(),
        ""
    );
    assert_eq!(
        f.iam("GetUser", &[("UserName", "bob")])
            .await
            .unwrap_err()
            .code,
        "NoSuchEntity"
    );
    assert!(f.creds.resolve(&key_id).is_none());
}

#[tokio::test]
async fn roles_trust_and_assume_role() {
    let f = fixture();
    let e = f
        .iam(
            "CreateRole",
            &[
                ("RoleName", "app"),
                ("AssumeRolePolicyDocument", "{not json"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        (e.status, e.code.as_ref()),
        (400, "MalformedPolicyDocument")
    );
    let e = f
        .iam(
            "CreateRole",
            &[("RoleName", "app"), ("AssumeRolePolicyDocument", ALLOW_ECS)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocument");
    assert_eq!(
        f.iam("GetRole", &[("RoleName", "app")])
            .await
            .unwrap_err()
            .code,
        "NoSuchEntity"
    );

    let out = f
        .iam(
            "CreateRole",
            &[
                ("RoleName", "app"),
                ("AssumeRolePolicyDocument", TRUST_ACCOUNT),
            ],
        )
        .await
        .unwrap();
    let role_id = tag(&out, "RoleId").unwrap();
    assert!(role_id.starts_with("AROA") && role_id.len() == 21);
    assert_eq!(tag(&out, "MaxSessionDuration").unwrap(), "3600");
    assert_eq!(
        decode(&tag(&out, "AssumeRolePolicyDocument").unwrap()),
        TRUST_ACCOUNT
    );
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/app");
    let e = f
        .iam(
            "CreateRole",
            &[
                ("RoleName", "APP"),
                ("AssumeRolePolicyDocument", TRUST_ACCOUNT),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.message, "Role with name APP already exists.");

    // Root may assume a role whose trust names the account.
    let out = f
        .sts(
            &f.root,
            "AssumeRole",
            &[("RoleArn", &role_arn), ("RoleSessionName", "s1")],
        )
        .await
        .unwrap();
    let key_id = tag(&out, "AccessKeyId").unwrap();
    assert!(key_id.starts_with("ASIA") && key_id.len() == 20);
    assert_eq!(tag(&out, "AssumedRoleId").unwrap(), format!("{role_id}:s1"));
    let session_arn = format!("arn:aws:sts::{ACCOUNT}:assumed-role/app/s1");
    assert_eq!(tag(&out, "Arn").unwrap(), session_arn);
    let resolved = f.creds.resolve(&key_id).unwrap();
    assert_eq!(resolved.principal.kind, PrincipalKind::AssumedRole);
    assert_eq!(resolved.principal.arn, session_arn);
    assert_eq!(resolved.principal.user_id, format!("{role_id}:s1"));
    assert_eq!(
        resolved.session_token.as_deref(),
        tag(&out, "SessionToken").as_deref()
    );
    assert_eq!(
        resolved.secret_access_key,
        tag(&out, "SecretAccessKey").unwrap()
    );
    assert!(resolved.expires_at.unwrap() > berth_util::time::now_secs() + 3500);
    let session = ctx_for(resolved.principal);
    let who = f.sts(&session, "GetCallerIdentity", &[]).await.unwrap();
    assert_eq!(tag(&who, "Arn").unwrap(), session_arn);
    assert_eq!(tag(&who, "UserId").unwrap(), format!("{role_id}:s1"));

    // Input checks.
    for (name, duration) in [
        ("a", "3600"),
        ("bad name", "3600"),
        ("ok", "899"),
        ("ok", "7200"),
    ] {
        let e = f
            .sts(
                &f.root,
                "AssumeRole",
                &[
                    ("RoleArn", &role_arn),
                    ("RoleSessionName", name),
                    ("DurationSeconds", duration),
                ],
            )
            .await
            .unwrap_err();
        assert_eq!(
            e.code, "ValidationError",
            "{name} {duration}: {}",
            e.message
        );
    }

    // A trust policy for ECS tasks only: root is refused.
    f.iam(
        "CreateRole",
        &[
            ("RoleName", "task"),
            ("AssumeRolePolicyDocument", TRUST_TASKS),
        ],
    )
    .await
    .unwrap();
    let task_arn = format!("arn:aws:iam::{ACCOUNT}:role/task");
    let e = f
        .sts(
            &f.root,
            "AssumeRole",
            &[("RoleArn", &task_arn), ("RoleSessionName", "s1")],
        )
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (403, "AccessDenied"));
    assert_eq!(
        e.message,
        format!("User: arn:aws:iam::{ACCOUNT}:root is not authorized to perform: sts:AssumeRole on resource: {task_arn}")
    );
    // ... but the server may mint task sessions.
    let creds = f
        .iam
        .issue_role_session(ACCOUNT, &task_arn, "task-1", 3600)
        .await
        .unwrap();
    assert_eq!(
        creds.arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/task/task-1")
    );
    assert!(f.creds.resolve(&creds.access_key_id).is_some());
    let e = f
        .iam
        .issue_role_session(ACCOUNT, &format!("{task_arn}x"), "tx", 3600)
        .await
        .unwrap_err();
    assert_eq!(e.code, "NoSuchEntity");

    // A user in the account needs an identity policy when the trust names the account.
    let bob = f.enforced(f.user_ctx("bob").await);
    let e = f
        .sts(
            &bob,
            "AssumeRole",
            &[("RoleArn", &role_arn), ("RoleSessionName", "bb")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");
    assert!(e
        .message
        .starts_with(&format!("User: arn:aws:iam::{ACCOUNT}:user/bob ")));
    f.iam(
        "AttachUserPolicy",
        &[
            ("UserName", "bob"),
            ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
        ],
    )
    .await
    .unwrap();
    f.sts(
        &bob,
        "AssumeRole",
        &[("RoleArn", &role_arn), ("RoleSessionName", "bb")],
    )
    .await
    .unwrap();

    // A trust naming the user directly needs no identity policy.
    let carol = f.enforced(f.user_ctx("carol").await);
    let direct = TRUST_ACCOUNT.replace(":root", ":user/carol");
    f.iam(
        "UpdateAssumeRolePolicy",
        &[("RoleName", "app"), ("PolicyDocument", &direct)],
    )
    .await
    .unwrap();
    f.sts(
        &carol,
        "AssumeRole",
        &[("RoleArn", &role_arn), ("RoleSessionName", "cc")],
    )
    .await
    .unwrap();
    let e = f
        .iam(
            "UpdateAssumeRolePolicy",
            &[("RoleName", "app"), ("PolicyDocument", "[]")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocument");

    // A missing role is refused the same way.
    let e = f
        .sts(
            &f.root,
            "AssumeRole",
            &[
                ("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/none")),
                ("RoleSessionName", "s1"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");

    // Service-linked role for ECS.
    let out = f
        .iam(
            "CreateServiceLinkedRole",
            &[("AWSServiceName", "ecs.amazonaws.com")],
        )
        .await
        .unwrap();
    assert_eq!(tag(&out, "RoleName").unwrap(), "AWSServiceRoleForECS");
    assert_eq!(
        tag(&out, "Path").unwrap(),
        "/aws-service-role/ecs.amazonaws.com/"
    );
    assert_eq!(
        tag(&out, "Arn").unwrap(),
        format!(
            "arn:aws:iam::{ACCOUNT}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS"
        )
    );
    let e = f
        .iam(
            "CreateServiceLinkedRole",
            &[("AWSServiceName", "ecs.amazonaws.com")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidInput");
    let roles = f.iam("ListRoles", &[]).await.unwrap();
    assert_eq!(roles.matches("<member>").count(), 3);
}

#[tokio::test]
async fn expired_sessions_do_not_resolve_and_are_collected() {
    let f = fixture();
    f.iam(
        "CreateRole",
        &[
            ("RoleName", "task"),
            ("AssumeRolePolicyDocument", TRUST_TASKS),
        ],
    )
    .await
    .unwrap();
    let arn = format!("arn:aws:iam::{ACCOUNT}:role/task");
    let creds = f
        .iam
        .issue_role_session(ACCOUNT, &arn, "t1", 900)
        .await
        .unwrap();
    assert!(f.creds.resolve(&creds.access_key_id).is_some());
    let e = f
        .iam
        .issue_role_session(ACCOUNT, &arn, "t1", 60)
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");

    // Age the session past its expiration.
    let key = session_key(&creds.access_key_id);
    let kv = f.store.get(&key).unwrap();
    let mut session: SessionRecord = serde_json::from_slice(&kv.value).unwrap();
    session.expires = berth_util::time::now_secs() - 1;
    f.store
        .put(&key, serde_json::to_vec(&session).unwrap().into())
        .await
        .unwrap();
    assert!(f.creds.resolve(&creds.access_key_id).is_none());
    assert_eq!(f.iam.gc_expired_sessions().await.unwrap(), 1);
    assert!(f.store.get(&key).is_none());
}

#[tokio::test]
async fn policy_versions() {
    let f = fixture();
    let out = f
        .iam(
            "CreatePolicy",
            &[
                ("PolicyName", "ecs"),
                ("PolicyDocument", ALLOW_ECS),
                ("Description", "d"),
            ],
        )
        .await
        .unwrap();
    let arn = tag(&out, "Arn").unwrap();
    assert_eq!(arn, format!("arn:aws:iam::{ACCOUNT}:policy/ecs"));
    assert!(tag(&out, "PolicyId").unwrap().starts_with("ANPA"));
    assert_eq!(tag(&out, "DefaultVersionId").unwrap(), "v1");
    assert_eq!(tag(&out, "AttachmentCount").unwrap(), "0");
    let e = f
        .iam(
            "CreatePolicy",
            &[("PolicyName", "ECS"), ("PolicyDocument", ALLOW_ECS)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "EntityAlreadyExists");
    assert_eq!(
        e.message,
        "A policy called ECS already exists. Duplicate names are not allowed."
    );
    let e = f
        .iam(
            "CreatePolicy",
            &[("PolicyName", "bad"), ("PolicyDocument", TRUST_TASKS)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocument");
    assert_eq!(e.message, "Policy document should not specify a principal.");

    for n in 2..=5 {
        let out = f
            .iam(
                "CreatePolicyVersion",
                &[("PolicyArn", &arn), ("PolicyDocument", ALLOW_LOGS)],
            )
            .await
            .unwrap();
        assert_eq!(tag(&out, "VersionId").unwrap(), format!("v{n}"));
        assert_eq!(tag(&out, "IsDefaultVersion").unwrap(), "false");
    }
    let e = f
        .iam(
            "CreatePolicyVersion",
            &[
                ("PolicyArn", &arn),
                ("PolicyDocument", ALLOW_LOGS),
                ("SetAsDefault", "true"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!((e.status, e.code.as_ref()), (409, "LimitExceeded"));
    f.iam(
        "DeletePolicyVersion",
        &[("PolicyArn", &arn), ("VersionId", "v2")],
    )
    .await
    .unwrap();
    let e = f
        .iam(
            "DeletePolicyVersion",
            &[("PolicyArn", &arn), ("VersionId", "v1")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "DeleteConflict");
    let out = f
        .iam(
            "CreatePolicyVersion",
            &[
                ("PolicyArn", &arn),
                ("PolicyDocument", ALLOW_LOGS),
                ("SetAsDefault", "true"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(tag(&out, "VersionId").unwrap(), "v6");
    assert_eq!(tag(&out, "IsDefaultVersion").unwrap(), "true");
    let got = f.iam("GetPolicy", &[("PolicyArn", &arn)]).await.unwrap();
    assert_eq!(tag(&got, "DefaultVersionId").unwrap(), "v6");
    let v1 = f
        .iam(
            "GetPolicyVersion",
            &[("PolicyArn", &arn), ("VersionId", "v1")],
        )
        .await
        .unwrap();
    assert_eq!(decode(&tag(&v1, "Document").unwrap()), ALLOW_ECS);
    assert_eq!(tag(&v1, "IsDefaultVersion").unwrap(), "false");
    let e = f
        .iam(
            "GetPolicyVersion",
            &[("PolicyArn", &arn), ("VersionId", "v2")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "NoSuchEntity");
    let versions = f
        .iam("ListPolicyVersions", &[("PolicyArn", &arn)])
        .await
        .unwrap();
    assert_eq!(versions.matches("<member>").count(), 5);
    let e = f
        .iam("GetPolicy", &[("PolicyArn", "not-an-arn-at-all-here")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidInput");
    let e = f
        .iam(
            "GetPolicy",
            &[("PolicyArn", &format!("arn:aws:iam::{ACCOUNT}:policy/none"))],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!("Policy arn:aws:iam::{ACCOUNT}:policy/none was not found.")
    );

    // AWS managed policies.
    let admin = f
        .iam(
            "GetPolicyVersion",
            &[
                ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
                ("VersionId", "v1"),
            ],
        )
        .await
        .unwrap();
    assert!(decode(&tag(&admin, "Document").unwrap()).contains("\"*\""));
    let aws = f.iam("ListPolicies", &[("Scope", "AWS")]).await.unwrap();
    assert_eq!(
        aws.matches("<member>").count(),
        berth_policy::managed::ALL.len()
    );
    let local = f.iam("ListPolicies", &[("Scope", "Local")]).await.unwrap();
    assert_eq!(local.matches("<member>").count(), 1);
    let e = f
        .iam("ListPolicies", &[("Scope", "Mine")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");
    let page = f.iam("ListPolicies", &[("MaxItems", "2")]).await.unwrap();
    assert_eq!(tag(&page, "IsTruncated").unwrap(), "true");
    let marker = tag(&page, "Marker").unwrap();
    let next = f
        .iam("ListPolicies", &[("Marker", &marker), ("MaxItems", "1000")])
        .await
        .unwrap();
    assert_eq!(
        next.matches("<member>").count(),
        berth_policy::managed::ALL.len() + 1 - 2
    );
}

#[tokio::test]
async fn attachments_inline_policies_and_delete_conflicts() {
    let f = fixture();
    let out = f
        .iam(
            "CreatePolicy",
            &[("PolicyName", "ecs"), ("PolicyDocument", ALLOW_ECS)],
        )
        .await
        .unwrap();
    let arn = tag(&out, "Arn").unwrap();
    f.iam(
        "CreateRole",
        &[
            ("RoleName", "task"),
            ("AssumeRolePolicyDocument", TRUST_TASKS),
        ],
    )
    .await
    .unwrap();
    let admin = "arn:aws:iam::aws:policy/AdministratorAccess";
    f.iam(
        "AttachRolePolicy",
        &[("RoleName", "task"), ("PolicyArn", &arn)],
    )
    .await
    .unwrap();
    f.iam(
        "AttachRolePolicy",
        &[("RoleName", "task"), ("PolicyArn", &arn)],
    )
    .await
    .unwrap();
    f.iam(
        "AttachRolePolicy",
        &[("RoleName", "task"), ("PolicyArn", admin)],
    )
    .await
    .unwrap();
    let e = f
        .iam(
            "AttachRolePolicy",
            &[
                ("RoleName", "task"),
                ("PolicyArn", "arn:aws:iam::aws:policy/Nope"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "Policy arn:aws:iam::aws:policy/Nope does not exist or is not attachable."
    );
    let e = f
        .iam(
            "AttachRolePolicy",
            &[("RoleName", "ghost"), ("PolicyArn", admin)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.message, "The role with name ghost cannot be found.");
    let listed = f
        .iam("ListAttachedRolePolicies", &[("RoleName", "task")])
        .await
        .unwrap();
    assert_eq!(listed.matches("<member>").count(), 2, "{listed}");
    assert!(listed.contains("<member><PolicyName>ecs</PolicyName><PolicyArn>"));

    f.iam(
        "PutRolePolicy",
        &[
            ("RoleName", "task"),
            ("PolicyName", "logs"),
            ("PolicyDocument", ALLOW_LOGS),
        ],
    )
    .await
    .unwrap();
    let e = f
        .iam(
            "PutRolePolicy",
            &[
                ("RoleName", "task"),
                ("PolicyName", "bad"),
                ("PolicyDocument", "{}"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "MalformedPolicyDocument");
    let got = f
        .iam(
            "GetRolePolicy",
            &[("RoleName", "task"), ("PolicyName", "logs")],
        )
        .await
        .unwrap();
    assert!(got.starts_with("<RoleName>task</RoleName><PolicyName>logs</PolicyName><PolicyDocument>%7B%22Version%22"), "{got}");
    assert_eq!(decode(&tag(&got, "PolicyDocument").unwrap()), ALLOW_LOGS);
    let names = f
        .iam("ListRolePolicies", &[("RoleName", "task")])
        .await
        .unwrap();
    assert_eq!(
        names,
        "<PolicyNames><member>logs</member></PolicyNames><IsTruncated>false</IsTruncated>"
    );
    let e = f
        .iam(
            "GetRolePolicy",
            &[("RoleName", "task"), ("PolicyName", "x")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.message, "The role policy with name x cannot be found.");

    // Policies in use cannot go.
    let e = f
        .iam("DeletePolicy", &[("PolicyArn", &arn)])
        .await
        .unwrap_err();
    assert_eq!(
        (e.code.as_ref(), e.message.as_str()),
        (
            "DeleteConflict",
            "Cannot delete a policy attached to entities."
        )
    );
    let e = f
        .iam("DeleteRole", &[("RoleName", "task")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "DeleteConflict");
    let got = f.iam("GetPolicy", &[("PolicyArn", &arn)]).await.unwrap();
    assert_eq!(tag(&got, "AttachmentCount").unwrap(), "1");
    let attached = f
        .iam("ListPolicies", &[("OnlyAttached", "true")])
        .await
        .unwrap();
    assert_eq!(attached.matches("<member>").count(), 2);

    // What an authorizer sees for a session of the role, parsed once.
    let creds = f
        .iam
        .issue_role_session(
            ACCOUNT,
            &format!("arn:aws:iam::{ACCOUNT}:role/task"),
            "t1",
            3600,
        )
        .await
        .unwrap();
    let principal = f.creds.resolve(&creds.access_key_id).unwrap().principal;
    let (who, policies) = f.iam.identity_policies(&principal).unwrap();
    assert_eq!(
        who.arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/task/t1")
    );
    assert_eq!(
        who.role_arn.as_deref(),
        Some(format!("arn:aws:iam::{ACCOUNT}:role/task").as_str())
    );
    assert_eq!(policies.len(), 3);
    let (_, again) = f.iam.identity_policies(&principal).unwrap();
    assert!(policies.iter().zip(&again).all(|(a, b)| Arc::ptr_eq(a, b)));
    let ctx = berth_policy::Context::new();
    let req = berth_policy::Request::new(&who, "ecs:RunTask", "*", &ctx);
    let refs: Vec<&berth_policy::Policy> = policies.iter().map(|p| p.as_ref()).collect();
    assert!(berth_policy::evaluate(&refs, None, &req).is_allowed());

    // A new default version takes effect.
    f.iam(
        "CreatePolicyVersion",
        &[
            ("PolicyArn", &arn),
            ("PolicyDocument", ALLOW_LOGS),
            ("SetAsDefault", "true"),
        ],
    )
    .await
    .unwrap();
    f.iam(
        "DetachRolePolicy",
        &[("RoleName", "task"), ("PolicyArn", admin)],
    )
    .await
    .unwrap();
    let (_, policies) = f.iam.identity_policies(&principal).unwrap();
    let refs: Vec<&berth_policy::Policy> = policies.iter().map(|p| p.as_ref()).collect();
    assert!(!berth_policy::evaluate(&refs, None, &req).is_allowed());

    let e = f
        .iam(
            "DetachRolePolicy",
            &[("RoleName", "task"), ("PolicyArn", admin)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "NoSuchEntity");
    f.iam(
        "DetachRolePolicy",
        &[("RoleName", "task"), ("PolicyArn", &arn)],
    )
    .await
    .unwrap();
    let e = f
        .iam("DeleteRole", &[("RoleName", "task")])
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "Cannot delete entity, must delete policies first."
    );
    f.iam(
        "DeleteRolePolicy",
        &[("RoleName", "task"), ("PolicyName", "logs")],
    )
    .await
    .unwrap();
    f.iam("DeleteRole", &[("RoleName", "task")]).await.unwrap();
    let e = f
        .iam("DeletePolicy", &[("PolicyArn", &arn)])
        .await
        .unwrap_err();
    assert_eq!(e.code, "DeleteConflict", "versions must go first");
    for v in ["v1"] {
        f.iam(
            "DeletePolicyVersion",
            &[("PolicyArn", &arn), ("VersionId", v)],
        )
        .await
        .unwrap();
    }
    f.iam("DeletePolicy", &[("PolicyArn", &arn)]).await.unwrap();
    assert_eq!(
        f.iam("GetPolicy", &[("PolicyArn", &arn)])
            .await
            .unwrap_err()
            .code,
        "NoSuchEntity"
    );

    // User inline and attached policies block deleting the user.
    f.iam("CreateUser", &[("UserName", "bob")]).await.unwrap();
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "bob"),
            ("PolicyName", "p"),
            ("PolicyDocument", ALLOW_ECS),
        ],
    )
    .await
    .unwrap();
    let e = f
        .iam("DeleteUser", &[("UserName", "bob")])
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "Cannot delete entity, must delete policies first."
    );
    let got = f
        .iam("GetUserPolicy", &[("UserName", "bob"), ("PolicyName", "p")])
        .await
        .unwrap();
    assert_eq!(tag(&got, "UserName").unwrap(), "bob");
    assert_eq!(
        f.iam("ListUserPolicies", &[("UserName", "bob")])
            .await
            .unwrap(),
        "<PolicyNames><member>p</member></PolicyNames><IsTruncated>false</IsTruncated>"
    );
    f.iam(
        "DeleteUserPolicy",
        &[("UserName", "bob"), ("PolicyName", "p")],
    )
    .await
    .unwrap();
    f.iam(
        "AttachUserPolicy",
        &[("UserName", "bob"), ("PolicyArn", admin)],
    )
    .await
    .unwrap();
    let listed = f
        .iam("ListAttachedUserPolicies", &[("UserName", "bob")])
        .await
        .unwrap();
    assert_eq!(
        listed,
        "<AttachedPolicies><member><PolicyName>AdministratorAccess</PolicyName><PolicyArn>arn:aws:iam::aws:policy/AdministratorAccess</PolicyArn></member></AttachedPolicies><IsTruncated>false</IsTruncated>"
    );
    let e = f
        .iam("DeleteUser", &[("UserName", "bob")])
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        "Cannot delete entity, must detach all policies first."
    );
    f.iam(
        "DetachUserPolicy",
        &[("UserName", "bob"), ("PolicyArn", admin)],
    )
    .await
    .unwrap();
    f.iam("DeleteUser", &[("UserName", "bob")]).await.unwrap();
}

#[tokio::test]
async fn xml_shapes_and_unknown_actions() {
    let f = fixture();
    f.iam("CreateUser", &[("UserName", "a&b")])
        .await
        .unwrap_err();
    f.iam("CreateUser", &[("UserName", "bob")]).await.unwrap();
    let list = f.iam("ListUsers", &[]).await.unwrap();
    assert!(
        list.starts_with("<Users><member><Path>/</Path><UserName>bob</UserName><UserId>AIDA"),
        "{list}"
    );
    assert!(
        list.ends_with("</CreateDate></member></Users><IsTruncated>false</IsTruncated>"),
        "{list}"
    );
    f.iam("CreateUser", &[("UserName", "carol")]).await.unwrap();
    let page = f.iam("ListUsers", &[("MaxItems", "1")]).await.unwrap();
    assert!(
        page.ends_with("<IsTruncated>true</IsTruncated><Marker>bob</Marker>"),
        "{page}"
    );
    let rest = f.iam("ListUsers", &[("Marker", "bob")]).await.unwrap();
    assert_eq!(tag(&rest, "UserName").unwrap(), "carol");
    let e = f.iam("ListUsers", &[("MaxItems", "0")]).await.unwrap_err();
    assert_eq!(e.code, "ValidationError");

    // Tags show in Get, not in List.
    f.iam(
        "CreateUser",
        &[
            ("UserName", "tagged"),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", "a b"),
            ("Tags.member.2.Key", "env"),
            ("Tags.member.2.Value", ""),
        ],
    )
    .await
    .unwrap();
    let got = f.iam("GetUser", &[("UserName", "tagged")]).await.unwrap();
    assert!(
        got.ends_with("</CreateDate><Tags><member><Key>team</Key><Value>a b</Value></member><member><Key>env</Key><Value></Value></member></Tags></User>"),
        "{got}"
    );
    assert!(!f.iam("ListUsers", &[]).await.unwrap().contains("<Tags>"));
    let e = f
        .iam(
            "CreateRole",
            &[
                ("RoleName", "r"),
                ("AssumeRolePolicyDocument", TRUST_TASKS),
                ("Tags.member.1.Key", "k"),
                ("Tags.member.1.Value", "1"),
                ("Tags.member.2.Key", "K"),
                ("Tags.member.2.Value", "2"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "InvalidInput");
    let e = f
        .iam(
            "CreateRole",
            &[
                ("RoleName", "r"),
                ("AssumeRolePolicyDocument", TRUST_TASKS),
                ("Tags.member.1.Key", "k"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "ValidationError");
    assert_eq!(
        f.iam("GetRole", &[("RoleName", "r")])
            .await
            .unwrap_err()
            .code,
        "NoSuchEntity"
    );

    let root = f.iam("GetUser", &[]).await.unwrap();
    assert_eq!(
        root,
        format!("<User><UserId>{ACCOUNT}</UserId><Arn>arn:aws:iam::{ACCOUNT}:root</Arn></User>")
    );
    let who = f.sts(&f.root, "GetCallerIdentity", &[]).await.unwrap();
    assert_eq!(
        who,
        format!("<UserId>{ACCOUNT}</UserId><Account>{ACCOUNT}</Account><Arn>arn:aws:iam::{ACCOUNT}:root</Arn>")
    );

    for e in [
        f.iam("Frobnicate", &[]).await.unwrap_err(),
        f.sts(&f.root, "Frobnicate", &[]).await.unwrap_err(),
    ] {
        assert_eq!(
            (e.status, e.code.as_ref(), e.message.as_str()),
            (400, "InvalidAction", "")
        );
    }
    let e = f.iam("GetRole", &[]).await.unwrap_err();
    assert_eq!(
        e.message,
        "1 validation error detected: Value null at 'roleName' failed to satisfy constraint: Member must not be null"
    );
}

struct RepoPolicy(String);

impl berth_model::authz::ResourcePolicySource for RepoPolicy {
    fn resource_policy(&self, resource_arn: &str) -> Option<String> {
        resource_arn
            .ends_with(":repository/shared")
            .then(|| self.0.clone())
    }
}

#[tokio::test]
async fn the_authorizer_combines_identity_and_resource_policies() {
    use berth_model::authz::{Authorizer, Requirement};
    let f = fixture();
    let alice = f.user_ctx("alice").await;
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "alice"),
            ("PolicyName", "ecs"),
            ("PolicyDocument", ALLOW_ECS),
        ],
    )
    .await
    .unwrap();
    let grant = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/alice"}},"Action":"ecr:ListImages"}},
            {{"Effect":"Deny","Principal":{{"AWS":"arn:aws:iam::{ACCOUNT}:user/alice"}},"Action":"ecr:DeleteRepository"}}]}}"#
    );
    let authorizer = crate::IamAuthorizer::new(f.iam.clone())
        .with_resource_policies(Arc::new(RepoPolicy(grant)));
    let need = |action: &str, resource: &str| vec![Requirement::new(action, resource)];
    let shared = format!("arn:aws:ecr:us-east-1:{ACCOUNT}:repository/shared");
    let other = format!("arn:aws:ecr:us-east-1:{ACCOUNT}:repository/other");
    assert!(authorizer
        .authorize(&alice, &need("ecs:ListClusters", "*"))
        .is_ok());
    // The repository policy alone lets her list the shared repository…
    assert!(authorizer
        .authorize(&alice, &need("ecr:ListImages", &shared))
        .is_ok());
    // …but not another one.
    let denial = authorizer
        .authorize(&alice, &need("ecr:ListImages", &other))
        .unwrap_err();
    assert!(!denial.explicit);
    // Its Deny is explicit and named as resource-based.
    let denial = authorizer
        .authorize(&alice, &need("ecr:DeleteRepository", &shared))
        .unwrap_err();
    assert!(denial.explicit && denial.in_resource_policy);
    assert!(denial
        .message(&alice.principal.arn)
        .ends_with("with an explicit deny in a resource-based policy"));
    // Every requirement must pass.
    let mut both = need("ecs:ListClusters", "*");
    both.extend(need("ecr:ListImages", &other));
    assert_eq!(
        authorizer.authorize(&alice, &both).unwrap_err().action,
        "ecr:ListImages"
    );
}

#[tokio::test]
async fn task_role_sessions_need_the_service_in_the_trust_policy() {
    let f = fixture();
    for (name, trust) in [("tasks", TRUST_TASKS), ("people", TRUST_ACCOUNT)] {
        f.iam(
            "CreateRole",
            &[("RoleName", name), ("AssumeRolePolicyDocument", trust)],
        )
        .await
        .unwrap();
    }
    f.iam(
        "PutRolePolicy",
        &[
            ("RoleName", "tasks"),
            ("PolicyName", "logs"),
            ("PolicyDocument", ALLOW_LOGS),
        ],
    )
    .await
    .unwrap();
    let tasks = format!("arn:aws:iam::{ACCOUNT}:role/tasks");
    let session = f
        .iam
        .issue_service_role_session(ACCOUNT, &tasks, "ecs-tasks.amazonaws.com", "task-1", 3600)
        .await
        .unwrap();
    assert_eq!(
        session.arn,
        format!("arn:aws:sts::{ACCOUNT}:assumed-role/tasks/task-1")
    );
    let e = f
        .iam
        .issue_service_role_session(
            ACCOUNT,
            &format!("arn:aws:iam::{ACCOUNT}:role/people"),
            "ecs-tasks.amazonaws.com",
            "task-1",
            3600,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");

    assert!(f
        .iam
        .check_role_permission(ACCOUNT, &tasks, "task-1", "logs:PutLogEvents", "*")
        .is_ok());
    let e = f
        .iam
        .check_role_permission(
            ACCOUNT,
            &tasks,
            "task-1",
            "secretsmanager:GetSecretValue",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
        )
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    assert!(e.message.starts_with(&format!(
        "User: arn:aws:sts::{ACCOUNT}:assumed-role/tasks/task-1 is not authorized to perform: \
         secretsmanager:GetSecretValue on resource: arn:aws:secretsmanager"
    )));
    let e = f
        .iam
        .check_role_permission(
            ACCOUNT,
            "arn:aws:iam::123456789012:role/nope",
            "t",
            "a:b",
            "*",
        )
        .unwrap_err();
    assert_eq!(e.code, "NoSuchEntity");
}

/// A stand-in for the master key: enough to see secrets leave the store
/// sealed and come back opened (the real one is `berth-secrets`' AES-GCM).
struct TestSealer;

impl berth_model::Sealer for TestSealer {
    fn seal(&self, plaintext: &[u8]) -> Result<Vec<u8>, berth_model::SealError> {
        Ok(plaintext.iter().rev().map(|b| b ^ 0xa5).collect())
    }
    fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, berth_model::SealError> {
        Ok(sealed.iter().rev().map(|b| b ^ 0xa5).collect())
    }
}

/// Every value in the store, as one string (what a reader of the file sees).
fn raw_store(store: &Arc<dyn Store>) -> String {
    store
        .range("/", None, usize::MAX)
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn secret_access_keys_are_stored_sealed_and_old_plaintext_ones_migrate() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());

    // An older data directory: keys and sessions in plaintext.
    let plain = Iam::new(store.clone());
    let f_root = fixture().root;
    let svc = plain.iam_service();
    svc.handle(&f_root, "CreateUser", &params(&[("UserName", "old")]))
        .await
        .unwrap();
    let out = svc
        .handle(&f_root, "CreateAccessKey", &params(&[("UserName", "old")]))
        .await
        .unwrap();
    let old_id = tag(&out, "AccessKeyId").unwrap();
    let old_secret = tag(&out, "SecretAccessKey").unwrap();
    svc.handle(
        &f_root,
        "CreateRole",
        &params(&[
            ("RoleName", "r"),
            ("AssumeRolePolicyDocument", TRUST_ACCOUNT),
        ]),
    )
    .await
    .unwrap();
    let role_arn = format!("arn:aws:iam::{ACCOUNT}:role/r");
    let old_session = plain
        .issue_role_session(ACCOUNT, &role_arn, "s1", 900)
        .await
        .unwrap();
    assert!(raw_store(&store).contains(&old_secret));

    // The server now seals: the old records still resolve…
    let iam = Iam::with_sealer(store.clone(), Arc::new(TestSealer));
    let creds = iam.credentials();
    assert_eq!(
        creds.resolve(&old_id).unwrap().secret_access_key,
        old_secret
    );
    // …and are sealed in place at start.
    assert_eq!(iam.seal_stored_secrets().await.unwrap(), 2);
    assert_eq!(iam.seal_stored_secrets().await.unwrap(), 0);
    let raw = raw_store(&store);
    assert!(!raw.contains(&old_secret));
    assert!(!raw.contains(&old_session.secret_access_key));
    assert!(raw.contains(berth_model::seal::SEALED_PREFIX));
    let fresh = Iam::with_sealer(store.clone(), Arc::new(TestSealer)).credentials();
    assert_eq!(
        fresh.resolve(&old_id).unwrap().secret_access_key,
        old_secret
    );
    assert_eq!(
        fresh
            .resolve(&old_session.access_key_id)
            .unwrap()
            .secret_access_key,
        old_session.secret_access_key
    );

    // New keys and sessions never reach the store in plaintext.
    let svc = iam.iam_service();
    let out = svc
        .handle(&f_root, "CreateAccessKey", &params(&[("UserName", "old")]))
        .await
        .unwrap();
    let (id, secret) = (
        tag(&out, "AccessKeyId").unwrap(),
        tag(&out, "SecretAccessKey").unwrap(),
    );
    let session = iam
        .issue_role_session(ACCOUNT, &role_arn, "s2", 900)
        .await
        .unwrap();
    let raw = raw_store(&store);
    assert!(!raw.contains(&secret));
    assert!(!raw.contains(&session.secret_access_key));
    assert_eq!(creds.resolve(&id).unwrap().secret_access_key, secret);
    assert_eq!(
        creds
            .resolve(&session.access_key_id)
            .unwrap()
            .secret_access_key,
        session.secret_access_key
    );
    // Without the key, a sealed secret does not resolve (and is not served
    // sealed as if it were the secret).
    assert!(Iam::new(store.clone()).credentials().resolve(&id).is_none());
}

#[tokio::test]
async fn iam_calls_are_authorized_on_canonical_arns() {
    let f = fixture();
    f.iam("CreateUser", &[("UserName", "bob"), ("Path", "/division/")])
        .await
        .unwrap();
    let admin = f.enforced(f.user_ctx("admin").await);
    let policy = format!(
        r#"{{"Version":"2012-10-17","Statement":[
            {{"Effect":"Allow","Action":"iam:*","Resource":"*"}},
            {{"Effect":"Deny","Action":"iam:*","Resource":"arn:aws:iam::{ACCOUNT}:user/division/*"}}]}}"#
    );
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "admin"),
            ("PolicyName", "p"),
            ("PolicyDocument", &policy),
        ],
    )
    .await
    .unwrap();
    // By name, in any case: the Deny on the path still applies.
    for name in ["bob", "BOB"] {
        for (action, extra) in [
            ("GetUser", vec![]),
            ("CreateAccessKey", vec![]),
            ("DeleteUser", vec![]),
            (
                "AttachUserPolicy",
                vec![("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess")],
            ),
            (
                "PutUserPolicy",
                vec![("PolicyName", "x"), ("PolicyDocument", ALLOW_ECS)],
            ),
        ] {
            let mut p = vec![("UserName", name)];
            p.extend(extra);
            let e = f.iam_as(&admin, action, &p).await.unwrap_err();
            assert_eq!(
                (e.status, e.code.as_ref()),
                (403, "AccessDenied"),
                "{action}"
            );
            assert_eq!(
                e.message,
                format!(
                    "User: arn:aws:iam::{ACCOUNT}:user/admin is not authorized to perform: \
                     iam:{action} on resource: arn:aws:iam::{ACCOUNT}:user/division/bob with an \
                     explicit deny in an identity-based policy"
                )
            );
        }
    }
    // Other users are allowed; a missing one is checked at `/` and not found.
    f.iam_as(&admin, "GetUser", &[("UserName", "admin")])
        .await
        .unwrap();
    let e = f
        .iam_as(&admin, "GetUser", &[("UserName", "ghost")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "NoSuchEntity");
    // Listing the denied path is denied; listing everything is not.
    let e = f
        .iam_as(&admin, "ListUsers", &[("PathPrefix", "/division/")])
        .await
        .unwrap_err();
    assert!(e.message.contains(&format!(
        "on resource: arn:aws:iam::{ACCOUNT}:user/division/ "
    )));
    f.iam_as(&admin, "ListUsers", &[]).await.unwrap();

    // Attaching is authorized on the principal with iam:PolicyARN, and
    // needs nothing on the policy itself.
    let carol = f.enforced(f.user_ctx("carol").await);
    let only_readonly = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Action":"iam:AttachUserPolicy",
            "Resource":"arn:aws:iam::{ACCOUNT}:user/carol",
            "Condition":{{"ArnEquals":{{"iam:PolicyARN":"arn:aws:iam::aws:policy/AmazonSSMReadOnlyAccess"}}}}}}]}}"#
    );
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "carol"),
            ("PolicyName", "p"),
            ("PolicyDocument", &only_readonly),
        ],
    )
    .await
    .unwrap();
    f.iam_as(
        &carol,
        "AttachUserPolicy",
        &[
            ("UserName", "carol"),
            (
                "PolicyArn",
                "arn:aws:iam::aws:policy/AmazonSSMReadOnlyAccess",
            ),
        ],
    )
    .await
    .unwrap();
    let e = f
        .iam_as(
            &carol,
            "AttachUserPolicy",
            &[
                ("UserName", "carol"),
                ("PolicyArn", "arn:aws:iam::aws:policy/AdministratorAccess"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");

    // Tags: aws:RequestTag on create, aws:ResourceTag afterwards.
    let dave = f.enforced(f.user_ctx("dave").await);
    let abac = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"iam:CreateRole","Resource":"*",
         "Condition":{"StringEquals":{"aws:RequestTag/team":"blue"}}},
        {"Effect":"Allow","Action":"iam:GetRole","Resource":"*",
         "Condition":{"StringEquals":{"aws:ResourceTag/team":"blue"}}}]}"#;
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "dave"),
            ("PolicyName", "p"),
            ("PolicyDocument", abac),
        ],
    )
    .await
    .unwrap();
    let create = |name: &'static str, team: &'static str| {
        vec![
            ("RoleName", name),
            ("AssumeRolePolicyDocument", TRUST_ACCOUNT),
            ("Tags.member.1.Key", "team"),
            ("Tags.member.1.Value", team),
        ]
    };
    f.iam_as(&dave, "CreateRole", &create("blue", "blue"))
        .await
        .unwrap();
    let e = f
        .iam_as(&dave, "CreateRole", &create("red", "red"))
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");
    f.iam("CreateRole", &create("red", "red")).await.unwrap();
    f.iam_as(&dave, "GetRole", &[("RoleName", "blue")])
        .await
        .unwrap();
    let e = f
        .iam_as(&dave, "GetRole", &[("RoleName", "red")])
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDenied");

    // AssumeRole: the identity check sees the role's tags and canonical ARN.
    let erin = f.enforced(f.user_ctx("erin").await);
    let assume_blue = r#"{"Version":"2012-10-17","Statement":[
        {"Effect":"Allow","Action":"sts:AssumeRole","Resource":"*",
         "Condition":{"StringEquals":{"aws:ResourceTag/team":"blue"}}}]}"#;
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "erin"),
            ("PolicyName", "p"),
            ("PolicyDocument", assume_blue),
        ],
    )
    .await
    .unwrap();
    for (role, ok) in [("blue", true), ("red", false)] {
        let r = f
            .sts(
                &erin,
                "AssumeRole",
                &[
                    ("RoleArn", &format!("arn:aws:iam::{ACCOUNT}:role/{role}")),
                    ("RoleSessionName", "s1"),
                ],
            )
            .await;
        assert_eq!(r.is_ok(), ok, "{role}: {r:?}");
    }
    // GetCallerIdentity needs nothing, even under an explicit deny.
    let frank = f.enforced(f.user_ctx("frank").await);
    f.iam(
        "PutUserPolicy",
        &[
            ("UserName", "frank"),
            ("PolicyName", "p"),
            (
                "PolicyDocument",
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#,
            ),
        ],
    )
    .await
    .unwrap();
    f.sts(&frank, "GetCallerIdentity", &[]).await.unwrap();
    assert!(frank.access.checked());
}
