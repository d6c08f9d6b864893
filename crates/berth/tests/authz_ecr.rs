//! ECR authorization through the real handlers and the real `IamAuthorizer`
//! (with repository policies taking part, as `berth up` wires it): a
//! policy-simulation table for the JSON API (repositories by name, by ARN in
//! the tag calls, by an explicit registry id; wildcards, resource and
//! request tags, repository policies that allow or deny, registry-level
//! calls on `*`), the same for the registry's `/v2/` routes (pull, push,
//! catalog) through its router, `aws:SourceIp` from the caller's address,
//! and a walk over every ECR operation as a user without policies.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use berth_model::authz::ResourcePolicySource;
use berth_model::{
    Access, AwsError, DenialStyle, JsonService, Principal, PrincipalKind, QueryService,
    RequestContext,
};
use berth_registry::digest::Digest;
use berth_registry::Registry;
use berth_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn repo_arn(name: &str) -> String {
    format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}")
}

fn user_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:user/{name}")
}

fn root_principal() -> Principal {
    Principal {
        kind: PrincipalKind::Root,
        arn: format!("arn:aws:iam::{ACCOUNT}:root"),
        user_id: ACCOUNT.into(),
        account_id: ACCOUNT.into(),
        access_key_id: "AKIAROOT".into(),
    }
}

fn root() -> RequestContext {
    RequestContext::for_principal(root_principal(), REGION)
}

/// Repository policies for the authorizer, as `berth up` registers them.
struct RepositoryPolicies(Arc<Registry>);

impl ResourcePolicySource for RepositoryPolicies {
    fn resource_policy(&self, resource_arn: &str) -> Option<String> {
        self.0.repository_policy(resource_arn)
    }
}

/// What IAM must answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Allowed: the call may still fail for other reasons, but not with
    /// AccessDeniedException (on `/v2/`: it answers 2xx).
    Allow,
    /// Refused by an explicit Deny (identity or repository policy).
    Deny,
    /// Refused for want of an Allow.
    NoMatch,
}

use Expect::*;

struct World {
    _dir: tempfile::TempDir,
    iam_svc: Arc<berth_iam::IamService>,
    registry: Arc<Registry>,
    ecr: Arc<dyn JsonService>,
    authorizer: Arc<berth_iam::IamAuthorizer>,
    router: axum::Router,
    /// IAM's unique id of each user made, by name.
    user_ids: Mutex<std::collections::HashMap<String, String>>,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
        let registry =
            Registry::open(dir.path(), store.clone(), "registry.test:5000".into()).unwrap();
        let iam = berth_iam::Iam::new(store);
        let authorizer = Arc::new(
            berth_iam::IamAuthorizer::new(iam.clone())
                .with_resource_policies(Arc::new(RepositoryPolicies(registry.clone()))),
        );
        let router = registry.router(Some(
            authorizer.clone() as Arc<dyn berth_model::authz::Authorizer>
        ));
        World {
            iam_svc: iam.iam_service(),
            ecr: registry.ecr_service(),
            registry,
            authorizer,
            router,
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

    fn principal(&self, name: &str) -> Principal {
        Principal {
            kind: PrincipalKind::User,
            arn: user_arn(name),
            user_id: self.user_ids.lock().unwrap()[name].clone(),
            account_id: ACCOUNT.into(),
            access_key_id: format!("AKIA{name}"),
        }
    }

    /// A fresh request context for user `name`, with IAM enforced, calling
    /// from `source_ip`.
    fn ctx_from(&self, name: &str, source_ip: Option<IpAddr>) -> RequestContext {
        let mut ctx = RequestContext::for_principal(self.principal(name), REGION).with_access(
            Access::new(Some(self.authorizer.clone()), DenialStyle::Json, false),
        );
        ctx.source_ip = source_ip;
        ctx
    }

    async fn call_as(
        &self,
        ctx: &RequestContext,
        op: &str,
        body: &Value,
    ) -> Result<Value, AwsError> {
        let out = self.ecr.handle(ctx, op, body.to_string().as_bytes()).await;
        // What the gateway enforces: no answer without a check.
        if out.is_ok() && ctx.principal.kind != PrincipalKind::Root {
            assert!(ctx.access.checked(), "{op} answered without asking IAM");
        }
        out.map(|bytes| serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn root_call(&self, op: &str, body: Value) -> Value {
        self.call_as(&root(), op, &body)
            .await
            .unwrap_or_else(|e| panic!("{op} as root: {e:?}"))
    }

    async fn user_call(&self, user: &str, op: &str, body: &Value) -> Result<Value, AwsError> {
        self.call_as(&self.ctx_from(user, loopback()), op, body)
            .await
    }

    /// What IAM answered a JSON call, from its result.
    fn outcome(user: &str, result: &Result<Value, AwsError>) -> Expect {
        match result {
            Err(e) if e.code == "AccessDeniedException" => {
                assert!(
                    e.message.starts_with(&format!(
                        "User: {} is not authorized to perform: ",
                        user_arn(user)
                    )),
                    "{}",
                    e.message
                );
                if e.message.contains("explicit deny") {
                    Deny
                } else {
                    NoMatch
                }
            }
            _ => Allow,
        }
    }

    /// Runs each JSON case and reports every mismatch at once.
    async fn check(&self, cases: &[(&str, &str, Value, Expect)]) {
        let mut failures = Vec::new();
        for (user, op, body, expect) in cases {
            let result = self.user_call(user, op, body).await;
            let got = Self::outcome(user, &result);
            if got != *expect {
                failures.push(format!(
                    "{user} {op} {body}: expected {expect:?}, got {got:?} ({result:?})"
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} cases failed:\n{}",
            failures.len(),
            cases.len(),
            failures.join("\n")
        );
    }

    /// Creates repository `name` as root, with `tags`.
    async fn repository(&self, name: &str, tags: &[(&str, &str)]) {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"Key": k, "Value": v}))
            .collect();
        self.root_call(
            "CreateRepository",
            json!({"repositoryName": name, "tags": tags}),
        )
        .await;
    }

    async fn set_policy(&self, repo: &str, statements: Vec<Value>) {
        let text = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
        self.root_call(
            "SetRepositoryPolicy",
            json!({"repositoryName": repo, "policyText": text}),
        )
        .await;
    }

    /// The Basic `Authorization` of a registry login for `principal`.
    fn login(&self, principal: &Principal) -> String {
        let (token, _) = self.registry.mint_token(principal, REGION);
        format!("Basic {token}")
    }

    /// A `/v2/` request from `peer`.
    async fn send(
        &self,
        method: &Method,
        uri: &str,
        auth: &str,
        body: Vec<u8>,
        peer: IpAddr,
    ) -> (StatusCode, Vec<u8>) {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header("authorization", auth)
            .body(Body::from(body))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(SocketAddr::new(peer, 40000)));
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, bytes.to_vec())
    }

    /// Pushes a one-layer image as root through `/v2/`; answers the
    /// manifest and the layer's digest.
    async fn push(&self, repo: &str, tag: &str, layer: &[u8]) -> (Vec<u8>, String) {
        let auth = self.login(&root_principal());
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let mut digests = Vec::new();
        for blob in [&config[..], layer] {
            let digest = Digest::sha256_of(blob).to_string();
            let (status, body) = self
                .send(
                    &Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                    &auth,
                    blob.to_vec(),
                    [127, 0, 0, 1].into(),
                )
                .await;
            assert_eq!(
                status,
                StatusCode::CREATED,
                "{}",
                String::from_utf8_lossy(&body)
            );
            digests.push(digest);
        }
        let manifest = manifest(&digests[0], config.len(), &digests[1], layer.len());
        let (status, body) = self
            .send(
                &Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                &auth,
                manifest.clone(),
                [127, 0, 0, 1].into(),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        (manifest, digests.pop().unwrap())
    }

    /// What IAM answered a `/v2/` request, from its status and body.
    fn v2_outcome(status: StatusCode, body: &[u8]) -> Option<Expect> {
        if status.is_success() {
            return Some(Allow);
        }
        if status != StatusCode::FORBIDDEN {
            return None;
        }
        let v: Value = serde_json::from_slice(body).ok()?;
        let e = &v["errors"][0];
        if e["code"] != "DENIED" {
            return None;
        }
        let message = e["message"].as_str()?;
        Some(if message.contains("explicit deny") {
            Deny
        } else {
            NoMatch
        })
    }
}

fn loopback() -> Option<IpAddr> {
    Some([127, 0, 0, 1].into())
}

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": berth_registry::meta::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": layer_size}]
    })
    .to_string()
    .into_bytes()
}

fn policy(statements: Vec<Value>) -> Option<Value> {
    Some(json!({"Version": "2012-10-17", "Statement": statements}))
}

fn allow_all() -> Value {
    json!({"Effect": "Allow", "Action": "ecr:*", "Resource": "*"})
}

/// Repositories `team-a` (team=blue), `team-b` (team=red), `prod/api`
/// (team=red), `app` (untagged) and `scratch` (scratch=yes, team=green).
async fn repositories(w: &World) {
    w.repository("team-a", &[("team", "blue")]).await;
    w.repository("team-b", &[("team", "red")]).await;
    w.repository("prod/api", &[("team", "red")]).await;
    w.repository("app", &[]).await;
    w.repository("scratch", &[("scratch", "yes"), ("team", "green")])
        .await;
}

fn name(repo: &str) -> Value {
    json!({"repositoryName": repo})
}

fn names(repos: &[&str]) -> Value {
    json!({"repositoryNames": repos})
}

fn arn_of(repo: &str) -> Value {
    json!({"resourceArn": repo_arn(repo)})
}

fn tag(repo: &str, key: &str, value: &str) -> Value {
    json!({"resourceArn": repo_arn(repo), "tags": [{"Key": key, "Value": value}]})
}

#[tokio::test]
async fn ecr_policy_table() {
    let w = World::new();
    repositories(&w).await;
    w.user(
        "teams",
        policy(vec![json!({"Effect": "Allow", "Action": "ecr:*",
            "Resource": repo_arn("team-*")})]),
    )
    .await;
    w.user(
        "denyprod",
        policy(vec![
            allow_all(),
            json!({"Effect": "Deny", "Action": "ecr:*", "Resource": repo_arn("prod/*")}),
        ]),
    )
    .await;
    w.user(
        "blue",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ecr:*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}),
        ]),
    )
    .await;
    w.user(
        "ecrtag",
        policy(vec![json!({"Effect": "Allow",
            "Action": "ecr:DescribeRepositories", "Resource": "*",
            "Condition": {"StringEquals": {"ecr:ResourceTag/team": "red"}}})]),
    )
    .await;
    w.user(
        "creator",
        policy(vec![json!({"Effect": "Allow",
            "Action": ["ecr:CreateRepository", "ecr:TagResource"], "Resource": "*",
            "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"}}})]),
    )
    .await;
    w.user(
        "untagger",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ecr:UntagResource",
            "Resource": repo_arn("scratch"),
            "Condition": {"ForAllValues:StringEquals": {"aws:TagKeys": ["scratch"]}}}),
        ]),
    )
    .await;
    w.user(
        "login",
        policy(vec![json!({"Effect": "Allow",
            "Action": ["ecr:GetAuthorizationToken", "ecr:DescribeRepositories"],
            "Resource": "*"})]),
    )
    .await;
    w.user("nobody", None).await;

    let cases = vec![
        // A wildcard on the repository name: by name and by ARN.
        ("teams", "DescribeRepositories", names(&["team-a"]), Allow),
        (
            "teams",
            "DescribeRepositories",
            names(&["team-a", "team-b"]),
            Allow,
        ),
        ("teams", "ListImages", name("team-b"), Allow),
        (
            "teams",
            "ListImages",
            json!({"registryId": ACCOUNT, "repositoryName": "team-b"}),
            Allow,
        ),
        ("teams", "TagResource", tag("team-a", "k", "v"), Allow),
        ("teams", "ListTagsForResource", arn_of("team-b"), Allow),
        (
            "teams",
            "DescribeRepositories",
            names(&["prod/api"]),
            NoMatch,
        ),
        // One name outside the wildcard refuses the whole call.
        (
            "teams",
            "DescribeRepositories",
            names(&["team-a", "app"]),
            NoMatch,
        ),
        ("teams", "ListTagsForResource", arn_of("prod/api"), NoMatch),
        ("teams", "CreateRepository", name("team-new"), Allow),
        ("teams", "CreateRepository", name("other-new"), NoMatch),
        // Registry-level calls are on `*`, which `repository/team-*` is not;
        // describing every repository is `repository/*`.
        ("teams", "GetAuthorizationToken", json!({}), NoMatch),
        ("teams", "DescribeRepositories", json!({}), NoMatch),
        // An explicit Deny holds for the name, the ARN and the registry id.
        (
            "denyprod",
            "DescribeRepositories",
            names(&["prod/api"]),
            Deny,
        ),
        (
            "denyprod",
            "DescribeRepositories",
            json!({"registryId": ACCOUNT, "repositoryNames": ["prod/api"]}),
            Deny,
        ),
        (
            "denyprod",
            "BatchGetImage",
            json!({"repositoryName": "prod/api",
            "imageIds": [{"imageTag": "v1"}]}),
            Deny,
        ),
        ("denyprod", "TagResource", tag("prod/api", "k", "v"), Deny),
        (
            "denyprod",
            "UntagResource",
            json!({"resourceArn": repo_arn("prod/api"),
            "tagKeys": ["team"]}),
            Deny,
        ),
        ("denyprod", "ListTagsForResource", arn_of("prod/api"), Deny),
        (
            "denyprod",
            "SetRepositoryPolicy",
            json!({"repositoryName": "prod/api",
            "policyText": "{}"}),
            Deny,
        ),
        ("denyprod", "DeleteRepository", name("prod/api"), Deny),
        // ... and for a repository that does not exist yet.
        ("denyprod", "CreateRepository", name("prod/new"), Deny),
        ("denyprod", "DescribeRepositories", names(&["app"]), Allow),
        ("denyprod", "GetAuthorizationToken", json!({}), Allow),
        ("denyprod", "DescribeRepositories", json!({}), Allow),
        // The repository's stored tags, however it is named.
        ("blue", "DescribeImages", name("team-a"), Allow),
        ("blue", "ListTagsForResource", arn_of("team-a"), Allow),
        ("blue", "DescribeImages", name("team-b"), NoMatch),
        ("blue", "ListTagsForResource", arn_of("team-b"), NoMatch),
        ("blue", "DescribeImages", name("app"), NoMatch),
        ("blue", "GetAuthorizationToken", json!({}), NoMatch),
        // ECR's own spelling of the tag key.
        ("ecrtag", "DescribeRepositories", names(&["team-b"]), Allow),
        (
            "ecrtag",
            "DescribeRepositories",
            names(&["prod/api"]),
            Allow,
        ),
        (
            "ecrtag",
            "DescribeRepositories",
            names(&["team-a"]),
            NoMatch,
        ),
        // Request tags on create and tag calls.
        (
            "creator",
            "CreateRepository",
            json!({"repositoryName": "new/blue", "tags": [{"Key": "team", "Value": "blue"}]}),
            Allow,
        ),
        ("creator", "CreateRepository", name("new/plain"), NoMatch),
        (
            "creator",
            "CreateRepository",
            json!({"repositoryName": "new/red", "tags": [{"Key": "team", "Value": "red"}]}),
            NoMatch,
        ),
        (
            "creator",
            "TagResource",
            tag("scratch", "team", "blue"),
            Allow,
        ),
        (
            "creator",
            "TagResource",
            tag("scratch", "owner", "me"),
            NoMatch,
        ),
        // aws:TagKeys on untag.
        (
            "untagger",
            "UntagResource",
            json!({"resourceArn": repo_arn("scratch"),
            "tagKeys": ["team"]}),
            NoMatch,
        ),
        (
            "untagger",
            "UntagResource",
            json!({"resourceArn": repo_arn("scratch"),
            "tagKeys": ["scratch"]}),
            Allow,
        ),
        // Registry-level calls on `*`.
        ("login", "GetAuthorizationToken", json!({}), Allow),
        ("login", "DescribeRepositories", json!({}), Allow),
        ("login", "ListImages", name("app"), NoMatch),
        // No policy, no access, even to learn a repository is missing.
        ("nobody", "GetAuthorizationToken", json!({}), NoMatch),
        ("nobody", "DescribeRepositories", json!({}), NoMatch),
        (
            "nobody",
            "DescribeRepositories",
            names(&["no-such"]),
            NoMatch,
        ),
        ("nobody", "ListTagsForResource", arn_of("no-such"), NoMatch),
    ];
    w.check(&cases).await;

    // The refusal names the repository's ARN, as AWS words it.
    let e = w
        .user_call("teams", "ListTagsForResource", &arn_of("prod/api"))
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "User: {} is not authorized to perform: ecr:ListTagsForResource on resource: {} \
             because no identity-based policy allows the ecr:ListTagsForResource action",
            user_arn("teams"),
            repo_arn("prod/api")
        )
    );
    let e = w
        .user_call("denyprod", "DescribeRepositories", &names(&["prod/api"]))
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "User: {} is not authorized to perform: ecr:DescribeRepositories on resource: {} \
             with an explicit deny in an identity-based policy",
            user_arn("denyprod"),
            repo_arn("prod/api")
        )
    );
    // What was allowed really happened; what was refused did not.
    let out = w.root_call("ListTagsForResource", arn_of("scratch")).await;
    assert_eq!(out["tags"], json!([{"Key": "team", "Value": "blue"}]));
    let out = w.root_call("DescribeRepositories", json!({})).await;
    let mut made: Vec<&str> = out["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["repositoryName"].as_str())
        .collect();
    made.sort_unstable();
    assert_eq!(
        made,
        ["app", "new/blue", "prod/api", "scratch", "team-a", "team-b", "team-new"]
    );
}

#[tokio::test]
async fn repository_policies_take_part() {
    let w = World::new();
    repositories(&w).await;
    w.user("guest", None).await;
    w.user("admin", policy(vec![allow_all()])).await;
    // app's own policy lets the guest pull and denies the admin the pull.
    w.set_policy(
        "app",
        vec![
            json!({"Sid": "guest", "Effect": "Allow", "Principal": {"AWS": user_arn("guest")},
                   "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                              "ecr:DescribeImages"]}),
            json!({"Sid": "noadmin", "Effect": "Deny", "Principal": {"AWS": user_arn("admin")},
                   "Action": "ecr:BatchGetImage"}),
        ],
    )
    .await;
    let get = |repo: &str| json!({"repositoryName": repo, "imageIds": [{"imageTag": "v1"}]});
    w.check(&[
        // The repository policy alone allows a user with no identity policy.
        ("guest", "BatchGetImage", get("app"), Allow),
        ("guest", "DescribeImages", name("app"), Allow),
        // Only what it grants, only on its repository.
        ("guest", "ListImages", name("app"), NoMatch),
        (
            "guest",
            "PutImage",
            json!({"repositoryName": "app", "imageManifest": "{}"}),
            NoMatch,
        ),
        ("guest", "BatchGetImage", get("team-a"), NoMatch),
        ("guest", "GetAuthorizationToken", json!({}), NoMatch),
        // Its explicit Deny beats the admin's identity Allow.
        ("admin", "BatchGetImage", get("app"), Deny),
        ("admin", "DescribeImages", name("app"), Allow),
        ("admin", "BatchGetImage", get("team-a"), Allow),
    ])
    .await;
    let e = w
        .user_call("admin", "BatchGetImage", &get("app"))
        .await
        .unwrap_err();
    assert_eq!(
        e.message,
        format!(
            "User: {} is not authorized to perform: ecr:BatchGetImage on resource: {} \
             with an explicit deny in a resource-based policy",
            user_arn("admin"),
            repo_arn("app")
        )
    );
    // Once deleted, the policy grants and denies nothing.
    w.root_call("DeleteRepositoryPolicy", name("app")).await;
    w.check(&[
        ("guest", "BatchGetImage", get("app"), NoMatch),
        ("admin", "BatchGetImage", get("app"), Allow),
    ])
    .await;
}

/// The registry policy takes part like a repository policy, for every
/// repository it names (scope V2), or only for ecr:ReplicateImage,
/// ecr:BatchImportUpstreamImage and ecr:CreateRepository (scope V1).
#[tokio::test]
async fn the_registry_policy_takes_part() {
    let w = World::new();
    repositories(&w).await;
    w.user("guest", None).await;
    w.user("admin", policy(vec![allow_all()])).await;
    let registry_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "pull", "Effect": "Allow", "Principal": {"AWS": user_arn("guest")},
         "Action": ["ecr:DescribeImages", "ecr:CreateRepository"],
         "Resource": format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/team-*")},
        {"Sid": "nodelete", "Effect": "Deny", "Principal": {"AWS": user_arn("admin")},
         "Action": "ecr:DeleteRepository", "Resource": repo_arn("app")}]});
    w.root_call(
        "PutRegistryPolicy",
        json!({"policyText": registry_policy.to_string()}),
    )
    .await;
    w.check(&[
        ("guest", "DescribeImages", name("team-a"), Allow),
        ("guest", "DescribeImages", name("app"), NoMatch),
        ("guest", "ListImages", name("team-a"), NoMatch),
        ("guest", "CreateRepository", name("team-x"), Allow),
        ("admin", "DeleteRepository", name("app"), Deny),
        ("admin", "DescribeImages", name("app"), Allow),
        // Registry-level calls are on `*`, which the policy does not cover.
        ("guest", "GetRegistryPolicy", json!({}), NoMatch),
    ])
    .await;
    // Scope V1: only the three actions; DescribeImages and the Deny on
    // DeleteRepository no longer come from the registry policy.
    w.root_call(
        "PutAccountSetting",
        json!({"name": "REGISTRY_POLICY_SCOPE", "value": "V1"}),
    )
    .await;
    w.check(&[
        ("guest", "DescribeImages", name("team-b"), NoMatch),
        ("guest", "CreateRepository", name("team-y"), Allow),
        ("admin", "DeleteRepository", name("scratch"), Allow),
    ])
    .await;
    w.root_call("DeleteRegistryPolicy", json!({})).await;
    w.check(&[("guest", "CreateRepository", name("team-z"), NoMatch)])
        .await;
}

#[tokio::test]
async fn source_ip_is_the_callers_address() {
    let w = World::new();
    repositories(&w).await;
    w.user(
        "local",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ecr:DescribeRepositories",
            "Resource": "*", "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}),
        ]),
    )
    .await;
    w.user(
        "office",
        policy(vec![
            allow_all(),
            json!({"Effect": "Deny", "Action": "ecr:*", "Resource": "*",
            "Condition": {"NotIpAddress": {"aws:SourceIp": ["127.0.0.1/32", "10.0.0.0/8"]}}}),
        ]),
    )
    .await;
    let mut failures = Vec::new();
    for (user, ip, expect) in [
        ("local", Some("127.0.0.1"), Allow),
        ("local", Some("127.3.2.1"), Allow),
        ("local", Some("10.1.2.3"), NoMatch),
        ("local", Some("::1"), NoMatch),
        // No address known: IpAddress cannot match.
        ("local", None, NoMatch),
        ("office", Some("127.0.0.1"), Allow),
        ("office", Some("10.9.8.7"), Allow),
        ("office", Some("192.0.2.1"), Deny),
    ] {
        let ctx = w.ctx_from(user, ip.map(|ip| ip.parse().unwrap()));
        let result = w
            .call_as(&ctx, "DescribeRepositories", &names(&["app"]))
            .await;
        let got = World::outcome(user, &result);
        if got != expect {
            failures.push(format!(
                "{user} from {ip:?}: expected {expect:?}, got {got:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn registry_routes_policy_table() {
    let w = World::new();
    repositories(&w).await;
    let (manifest, layer) = w.push("team-a", "v1", b"team-a-layer").await;
    w.push("prod/api", "v1", b"prod-layer").await;
    w.push("app", "v1", b"app-layer").await;
    let pull = [
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
    ];
    let push = [
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
        "ecr:BatchCheckLayerAvailability",
    ];
    let mut pull_and_list = pull.to_vec();
    pull_and_list.push("ecr:DescribeRepositories");
    w.user(
        "puller",
        policy(vec![json!({"Effect": "Allow", "Action": pull_and_list,
            "Resource": repo_arn("team-*")})]),
    )
    .await;
    w.user(
        "pusher",
        policy(vec![json!({"Effect": "Allow", "Action": push,
            "Resource": repo_arn("app")})]),
    )
    .await;
    w.user(
        "denyprod",
        policy(vec![
            allow_all(),
            json!({"Effect": "Deny", "Action": "ecr:*", "Resource": repo_arn("prod/*")}),
        ]),
    )
    .await;
    w.user(
        "blue",
        policy(vec![
            json!({"Effect": "Allow", "Action": "ecr:*", "Resource": "*",
            "Condition": {"StringEquals": {"aws:ResourceTag/team": "blue"}}}),
        ]),
    )
    .await;
    w.user(
        "local",
        policy(vec![
            json!({"Effect": "Allow", "Action": pull, "Resource": "*",
            "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}),
        ]),
    )
    .await;
    w.user("guest", None).await;
    w.user("admin", policy(vec![allow_all()])).await;
    w.user("nobody", None).await;
    w.set_policy(
        "app",
        vec![
            json!({"Sid": "guest", "Effect": "Allow", "Principal": {"AWS": user_arn("guest")},
                   "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                              "ecr:DescribeRepositories"]}),
            json!({"Sid": "noadmin", "Effect": "Deny", "Principal": {"AWS": user_arn("admin")},
                   "Action": ["ecr:BatchGetImage", "ecr:PutImage"]}),
        ],
    )
    .await;

    let new_blob = b"pushed-by-a-user".to_vec();
    let new_digest = Digest::sha256_of(&new_blob).to_string();
    let monolithic = |repo: &str| format!("/v2/{repo}/blobs/uploads/?digest={new_digest}");
    let get = Method::GET;
    let head = Method::HEAD;
    let put = Method::PUT;
    let post = Method::POST;
    let delete = Method::DELETE;
    let cases: Vec<(&str, &Method, String, Vec<u8>, Expect)> = vec![
        // Pull by wildcard: manifest, layer, layer size.
        (
            "puller",
            &get,
            "/v2/team-a/manifests/v1".into(),
            vec![],
            Allow,
        ),
        (
            "puller",
            &get,
            format!("/v2/team-a/blobs/{layer}"),
            vec![],
            Allow,
        ),
        (
            "puller",
            &head,
            format!("/v2/team-a/blobs/{layer}"),
            vec![],
            Allow,
        ),
        (
            "puller",
            &get,
            "/v2/prod/api/manifests/v1".into(),
            vec![],
            NoMatch,
        ),
        (
            "puller",
            &get,
            "/v2/team-a/tags/list".into(),
            vec![],
            NoMatch,
        ),
        // Pull rights do not push.
        (
            "puller",
            &post,
            monolithic("team-a"),
            new_blob.clone(),
            NoMatch,
        ),
        (
            "puller",
            &put,
            "/v2/team-a/manifests/evil".into(),
            manifest.clone(),
            NoMatch,
        ),
        (
            "puller",
            &delete,
            "/v2/team-a/manifests/v1".into(),
            vec![],
            NoMatch,
        ),
        // Push rights on app push there, and only push.
        ("pusher", &post, monolithic("app"), new_blob.clone(), Allow),
        (
            "pusher",
            &head,
            format!("/v2/app/blobs/{new_digest}"),
            vec![],
            Allow,
        ),
        (
            "pusher",
            &post,
            "/v2/app/blobs/uploads/".into(),
            vec![],
            Allow,
        ),
        (
            "pusher",
            &get,
            "/v2/app/manifests/v1".into(),
            vec![],
            NoMatch,
        ),
        (
            "pusher",
            &post,
            monolithic("team-a"),
            new_blob.clone(),
            NoMatch,
        ),
        // An explicit Deny on prod/* for pull and push.
        (
            "denyprod",
            &get,
            "/v2/prod/api/manifests/v1".into(),
            vec![],
            Deny,
        ),
        (
            "denyprod",
            &get,
            "/v2/prod/api/tags/list".into(),
            vec![],
            Deny,
        ),
        (
            "denyprod",
            &post,
            monolithic("prod/api"),
            new_blob.clone(),
            Deny,
        ),
        (
            "denyprod",
            &get,
            "/v2/team-a/manifests/v1".into(),
            vec![],
            Allow,
        ),
        // Tag-based access on the stored tags.
        (
            "blue",
            &get,
            "/v2/team-a/manifests/v1".into(),
            vec![],
            Allow,
        ),
        ("blue", &get, "/v2/app/manifests/v1".into(), vec![], NoMatch),
        // aws:SourceIp is the peer's address (127.0.0.1 here).
        ("local", &get, "/v2/app/manifests/v1".into(), vec![], Allow),
        // The repository policy allows a user with no identity policy ...
        ("guest", &get, "/v2/app/manifests/v1".into(), vec![], Allow),
        (
            "guest",
            &get,
            "/v2/team-a/manifests/v1".into(),
            vec![],
            NoMatch,
        ),
        (
            "guest",
            &post,
            "/v2/app/blobs/uploads/".into(),
            vec![],
            NoMatch,
        ),
        // ... and its explicit Deny beats an identity Allow.
        ("admin", &get, "/v2/app/manifests/v1".into(), vec![], Deny),
        (
            "admin",
            &put,
            "/v2/app/manifests/evil".into(),
            manifest.clone(),
            Deny,
        ),
        (
            "admin",
            &get,
            "/v2/team-a/manifests/v1".into(),
            vec![],
            Allow,
        ),
        (
            "nobody",
            &get,
            "/v2/app/manifests/v1".into(),
            vec![],
            NoMatch,
        ),
        (
            "nobody",
            &get,
            format!("/v2/team-a/blobs/{layer}"),
            vec![],
            NoMatch,
        ),
    ];
    let mut failures = Vec::new();
    for (user, method, path, body, expect) in &cases {
        let auth = w.login(&w.principal(user));
        let (status, answer) = w
            .send(method, path, &auth, body.clone(), [127, 0, 0, 1].into())
            .await;
        let got = World::v2_outcome(status, &answer);
        if got != Some(*expect) {
            failures.push(format!(
                "{user} {method} {path}: expected {expect:?}, got {got:?} ({status} {})",
                String::from_utf8_lossy(&answer)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );

    // From an address outside 127.0.0.0/8 the same pull is refused.
    let auth = w.login(&w.principal("local"));
    let (status, answer) = w
        .send(
            &Method::GET,
            "/v2/app/manifests/v1",
            &auth,
            vec![],
            [192, 0, 2, 7].into(),
        )
        .await;
    assert_eq!(World::v2_outcome(status, &answer), Some(NoMatch));

    // The refusal reads as AWS's.
    let auth = w.login(&w.principal("admin"));
    let (_, answer) = w
        .send(
            &get,
            "/v2/app/manifests/v1",
            &auth,
            vec![],
            [127, 0, 0, 1].into(),
        )
        .await;
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(
        v["errors"][0]["message"],
        format!(
            "User: {} is not authorized to perform: ecr:BatchGetImage on resource: {} \
             with an explicit deny in a resource-based policy",
            user_arn("admin"),
            repo_arn("app")
        )
    );

    // The catalog lists what each caller may DescribeRepositories.
    for (user, expected) in [
        ("puller", json!(["team-a", "team-b"])),
        ("denyprod", json!(["app", "scratch", "team-a", "team-b"])),
        ("blue", json!(["team-a"])),
        ("guest", json!(["app"])),
        ("local", json!([])),
        ("nobody", json!([])),
        (
            "admin",
            json!(["app", "prod/api", "scratch", "team-a", "team-b"]),
        ),
    ] {
        let auth = w.login(&w.principal(user));
        let (status, answer) = w
            .send(&get, "/v2/_catalog", &auth, vec![], [127, 0, 0, 1].into())
            .await;
        assert_eq!(status, StatusCode::OK, "{user}");
        let v: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["repositories"], expected, "catalog of {user}");
    }
    // Nothing a refused push sent was kept: team-a and prod/api have v1 only.
    let root_auth = w.login(&root_principal());
    for repo in ["team-a", "prod/api"] {
        let (_, answer) = w
            .send(
                &get,
                &format!("/v2/{repo}/tags/list"),
                &root_auth,
                vec![],
                [127, 0, 0, 1].into(),
            )
            .await;
        let v: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(v["tags"], json!(["v1"]), "{repo}");
    }
    let out = w
        .root_call(
            "BatchCheckLayerAvailability",
            json!({"repositoryName": "team-a", "layerDigests": [new_digest]}),
        )
        .await;
    let available = out["layers"].as_array().map_or(0, Vec::len);
    assert_eq!(available, 0, "{out}");
    assert_eq!(
        out["failures"][0]["failureCode"], "MissingLayerDigest",
        "{out}"
    );
}

/// A plausible input for each implemented operation (so the call gets past
/// validation to the IAM check), a repository name for the others.
fn plausible(op: &str) -> Value {
    let digest = format!("sha256:{}", "a".repeat(64));
    match op {
        "GetAuthorizationToken" | "DescribeRepositories" => json!({}),
        "CreateRepository" => name("x-new"),
        "TagResource" => tag("app", "a", "b"),
        "UntagResource" => json!({"resourceArn": repo_arn("app"), "tagKeys": ["a"]}),
        "ListTagsForResource" => arn_of("app"),
        "BatchGetImage" | "BatchDeleteImage" => {
            json!({"repositoryName": "app", "imageIds": [{"imageTag": "v1"}]})
        }
        "PutImage" => json!({"repositoryName": "app", "imageTag": "v2",
            "imageManifest": String::from_utf8(manifest(&digest, 1, &digest, 1)).unwrap()}),
        "BatchCheckLayerAvailability" => {
            json!({"repositoryName": "app", "layerDigests": [digest]})
        }
        "GetDownloadUrlForLayer" => json!({"repositoryName": "app", "layerDigest": digest}),
        "UploadLayerPart" => json!({"repositoryName": "app", "uploadId": "u",
            "partFirstByte": 0, "partLastByte": 0, "layerPartBlob": "YQ=="}),
        "CompleteLayerUpload" => json!({"repositoryName": "app", "uploadId": "u",
            "layerDigests": [digest]}),
        "PutImageTagMutability" => {
            json!({"repositoryName": "app", "imageTagMutability": "IMMUTABLE"})
        }
        "PutImageScanningConfiguration" => json!({"repositoryName": "app",
            "imageScanningConfiguration": {"scanOnPush": true}}),
        "SetRepositoryPolicy" => json!({"repositoryName": "app", "policyText":
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                "Principal": "*", "Action": "ecr:*"}]}).to_string()}),
        "BatchGetRepositoryScanningConfiguration" => json!({"repositoryNames": ["app"]}),
        "ListImageReferrers" => {
            json!({"repositoryName": "app", "subjectId": {"imageDigest": digest}})
        }
        "PutAccountSetting" => json!({"name": "REGISTRY_POLICY_SCOPE", "value": "V1"}),
        "GetAccountSetting" => json!({"name": "REGISTRY_POLICY_SCOPE"}),
        "PutLifecyclePolicy" => json!({"repositoryName": "app", "lifecyclePolicyText":
            json!({"rules": [{"rulePriority": 1, "selection": {"tagStatus": "any",
                "countType": "imageCountMoreThan", "countNumber": 1},
                "action": {"type": "expire"}}]}).to_string()}),
        _ => name("app"),
    }
}

/// The operations Berth's ECR implements.
const IMPLEMENTED: &[&str] = &[
    "BatchCheckLayerAvailability",
    "BatchDeleteImage",
    "BatchGetImage",
    "BatchGetRepositoryScanningConfiguration",
    "CompleteLayerUpload",
    "CreatePullThroughCacheRule",
    "CreateRepository",
    "CreateRepositoryCreationTemplate",
    "DeleteLifecyclePolicy",
    "DeletePullThroughCacheRule",
    "DeleteRegistryPolicy",
    "DeleteRepository",
    "DeleteRepositoryCreationTemplate",
    "DeleteRepositoryPolicy",
    "DescribeImageReplicationStatus",
    "DescribeImageScanFindings",
    "DescribeImages",
    "DescribePullThroughCacheRules",
    "DescribeRegistry",
    "DescribeRepositories",
    "DescribeRepositoryCreationTemplates",
    "GetAccountSetting",
    "GetAuthorizationToken",
    "GetDownloadUrlForLayer",
    "GetLifecyclePolicy",
    "GetLifecyclePolicyPreview",
    "GetRegistryPolicy",
    "GetRegistryScanningConfiguration",
    "GetRepositoryPolicy",
    "InitiateLayerUpload",
    "ListImageReferrers",
    "ListImages",
    "ListTagsForResource",
    "PutAccountSetting",
    "PutImage",
    "PutImageScanningConfiguration",
    "PutImageTagMutability",
    "PutLifecyclePolicy",
    "PutRegistryPolicy",
    "PutRegistryScanningConfiguration",
    "PutReplicationConfiguration",
    "SetRepositoryPolicy",
    "StartImageScan",
    "StartLifecyclePolicyPreview",
    "TagResource",
    "UntagResource",
    "UpdatePullThroughCacheRule",
    "UpdateRepositoryCreationTemplate",
    "UploadLayerPart",
    "ValidatePullThroughCacheRule",
];

/// The IAM action an operation asks for, where it is not `ecr:<operation>`
/// (ECR documents ecr:BatchGetImage for ListImageReferrers).
fn action_of(op: &str) -> String {
    match op {
        "ListImageReferrers" => "ecr:BatchGetImage".into(),
        other => format!("ecr:{other}"),
    }
}

/// Every operation of ECR's model, as a user with no policies: none answers
/// success, and the ones Berth implements are refused by IAM; nothing
/// changed.
#[tokio::test]
async fn ecr_operations_refuse_a_user_without_policies() {
    let w = World::new();
    repositories(&w).await;
    w.push("app", "v1", b"app-layer").await;
    w.user("nobody", None).await;
    let before = w.root_call("DescribeRepositories", json!({})).await;
    let mut failures = Vec::new();
    for op in berth_model::shapes::ecr::OPERATIONS {
        let body = plausible(op);
        match w.user_call("nobody", op, &body).await {
            Ok(out) => failures.push(format!("{op} answered success: {out}")),
            Err(e) if IMPLEMENTED.contains(op) && e.code != "AccessDeniedException" => {
                failures.push(format!("{op} was not refused by IAM: {e:?}"))
            }
            Err(e) if IMPLEMENTED.contains(op) => {
                let expected = format!(
                    "User: {} is not authorized to perform: {} on resource: ",
                    user_arn("nobody"),
                    action_of(op)
                );
                if !e.message.starts_with(&expected) {
                    failures.push(format!("{op}: refusal reads {:?}", e.message));
                }
            }
            Err(_) => {}
        }
    }
    for op in IMPLEMENTED {
        assert!(
            berth_model::shapes::ecr::OPERATIONS.contains(op),
            "{op} is not in the model"
        );
    }
    // Every model operation is implemented or listed with its reason.
    for op in berth_model::shapes::ecr::OPERATIONS {
        let listed = berth_registry::NOT_IMPLEMENTED.iter().any(|(o, _)| o == op);
        assert!(
            IMPLEMENTED.contains(op) != listed,
            "{op}: implemented and listed, or neither"
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let after = w.root_call("DescribeRepositories", json!({})).await;
    assert_eq!(before, after);
    let out = w.root_call("ListImages", name("app")).await;
    assert_eq!(out["imageIds"].as_array().map(Vec::len), Some(1), "{out}");
}
