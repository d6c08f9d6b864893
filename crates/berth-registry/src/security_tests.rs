//! Authorization of the registry, end to end inside the process: the ECR
//! API's requirements, `/v2/` requests authorized as their ECR actions for
//! the token's principal, download URLs good for one layer, and garbage
//! requests that never panic nor answer 5xx.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::Router;
use base64::Engine;
use berth_model::authz::{Access, Authorizer, Denial, DenialStyle, Requirement};
use berth_model::{Principal, PrincipalKind, RequestContext};
use berth_store::{SqliteOptions, SqliteStore, Store};
use http::{Method, Request, StatusCode};
use sha2::Digest as _;
use tower::ServiceExt;

use crate::Registry;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn repo_arn(name: &str) -> String {
    format!("arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{name}")
}

fn root() -> Principal {
    Principal {
        kind: PrincipalKind::Root,
        arn: format!("arn:aws:iam::{ACCOUNT}:root"),
        user_id: ACCOUNT.into(),
        account_id: ACCOUNT.into(),
        access_key_id: "AKIAROOT".into(),
    }
}

fn alice() -> Principal {
    Principal {
        kind: PrincipalKind::User,
        arn: format!("arn:aws:iam::{ACCOUNT}:user/alice"),
        user_id: "AIDAALICE".into(),
        account_id: ACCOUNT.into(),
        access_key_id: "AKIAALICE".into(),
    }
}

fn agent() -> Principal {
    Principal {
        kind: PrincipalKind::Agent,
        arn: format!("arn:aws:ecs:{REGION}:{ACCOUNT}:container-instance/default/agent1"),
        user_id: "agent1".into(),
        account_id: ACCOUNT.into(),
        access_key_id: "AKIAAGENT".into(),
    }
}

/// Allows exactly the (action, resource) pairs granted (a resource ending in
/// `*` is a prefix), and records every requirement it is asked about.
#[derive(Default)]
struct Grants {
    allowed: Mutex<Vec<(String, String)>>,
    asked: Mutex<Vec<Requirement>>,
}

impl Grants {
    fn allow(&self, action: &str, resource: &str) {
        self.allowed
            .lock()
            .unwrap()
            .push((action.to_string(), resource.to_string()));
    }

    fn asked(&self) -> Vec<Requirement> {
        std::mem::take(&mut *self.asked.lock().unwrap())
    }
}

impl Authorizer for Grants {
    fn authorize(&self, _: &RequestContext, requirements: &[Requirement]) -> Result<(), Denial> {
        self.asked
            .lock()
            .unwrap()
            .extend(requirements.iter().cloned());
        let allowed = self.allowed.lock().unwrap();
        for r in requirements {
            let ok = allowed.iter().any(|(a, res)| {
                a == &r.action
                    && match res.strip_suffix('*') {
                        Some(prefix) => r.resource.starts_with(prefix),
                        None => res == &r.resource,
                    }
            });
            if !ok {
                return Err(Denial::implicit(r));
            }
        }
        Ok(())
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    registry: Arc<Registry>,
    grants: Arc<Grants>,
    router: Router,
}

fn fixture(enforce: bool) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
    let registry = Registry::open(dir.path(), store, "registry.test:5000".into()).unwrap();
    let grants = Arc::new(Grants::default());
    let authorizer: Option<Arc<dyn Authorizer>> = enforce.then(|| grants.clone() as _);
    let router = registry.router(authorizer);
    Fixture {
        _dir: dir,
        registry,
        grants,
        router,
    }
}

impl Fixture {
    /// An ECR call as `principal`, decided by this fixture's grants.
    async fn ecr(
        &self,
        principal: Principal,
        operation: &str,
        input: serde_json::Value,
    ) -> Result<serde_json::Value, berth_model::AwsError> {
        let agent_allowed =
            principal.kind == PrincipalKind::Agent && operation == "GetAuthorizationToken";
        let ctx = RequestContext::for_principal(principal, REGION).with_access(Access::new(
            Some(self.grants.clone() as Arc<dyn Authorizer>),
            DenialStyle::Json,
            agent_allowed,
        ));
        let body = self
            .registry
            .ecr_service()
            .handle(&ctx, operation, input.to_string().as_bytes())
            .await?;
        Ok(serde_json::from_slice(&body).unwrap())
    }

    /// The Basic `Authorization` of a registry login for `principal`.
    fn login(&self, principal: &Principal) -> String {
        let (token, _) = self.registry.mint_token(principal, REGION);
        format!("Basic {token}")
    }

    async fn send(
        &self,
        method: &str,
        uri: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let mut builder = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        if let Some(auth) = auth {
            builder = builder.header("authorization", auth);
        }
        let response = self
            .router
            .clone()
            .oneshot(builder.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, bytes.to_vec())
    }

    async fn create_repository(&self, name: &str) {
        self.ecr(
            root(),
            "CreateRepository",
            serde_json::json!({"repositoryName": name}),
        )
        .await
        .unwrap();
    }

    /// Pushes a one-layer image as root; returns the layer's digest.
    async fn push_image(&self, repo: &str, tag: &str, layer: &[u8]) -> String {
        let auth = self.login(&root());
        let config =
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let mut digests = Vec::new();
        for blob in [&config[..], layer] {
            let digest = sha256(blob);
            let (status, _, body) = self
                .send(
                    "POST",
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                    Some(&auth),
                    blob.to_vec(),
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
        let (status, _, body) = self
            .send(
                "PUT",
                &format!("/v2/{repo}/manifests/{tag}"),
                Some(&auth),
                manifest,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&body)
        );
        digests.pop().unwrap()
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::meta::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}]
    })
    .to_string()
    .into_bytes()
}

fn error_of(body: &[u8]) -> (String, String) {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    let e = &v["errors"][0];
    (
        e["code"].as_str().unwrap().to_string(),
        e["message"].as_str().unwrap().to_string(),
    )
}

fn refusal(action: &str, repo: &str) -> String {
    format!(
        "User: arn:aws:iam::{ACCOUNT}:user/alice is not authorized to perform: {action} on \
         resource: {} because no identity-based policy allows the {action} action",
        repo_arn(repo)
    )
}

#[tokio::test]
async fn a_login_alone_neither_pushes_nor_pulls_nor_lists() {
    let f = fixture(true);
    f.create_repository("app").await;
    let layer = f.push_image("app", "v1", b"layer-one").await;
    f.grants.allow("ecr:GetAuthorizationToken", "*");

    let out = f
        .ecr(alice(), "GetAuthorizationToken", serde_json::json!({}))
        .await
        .unwrap();
    let token = out["authorizationData"][0]["authorizationToken"]
        .as_str()
        .unwrap();
    let auth = format!("Basic {token}");
    assert_eq!(f.grants.asked()[0].resource, "*");

    // /v2/ answers (docker login probes it); the catalog is empty.
    let (status, _, _) = f.send("GET", "/v2/", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = f.send("GET", "/v2/_catalog", Some(&auth), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"repositories": []})
    );

    let d = sha256(b"new");
    let cases = [
        (
            "POST",
            format!("/v2/app/blobs/uploads/?digest={d}"),
            "ecr:InitiateLayerUpload",
        ),
        (
            "GET",
            "/v2/app/manifests/v1".to_string(),
            "ecr:BatchGetImage",
        ),
        (
            "GET",
            format!("/v2/app/blobs/{layer}"),
            "ecr:GetDownloadUrlForLayer",
        ),
        ("GET", "/v2/app/tags/list".to_string(), "ecr:ListImages"),
        ("PUT", "/v2/app/manifests/v2".to_string(), "ecr:PutImage"),
        (
            "DELETE",
            "/v2/app/manifests/v1".to_string(),
            "ecr:BatchDeleteImage",
        ),
        (
            "PATCH",
            "/v2/app/blobs/uploads/x".to_string(),
            "ecr:UploadLayerPart",
        ),
        (
            "PUT",
            format!("/v2/app/blobs/uploads/x?digest={d}"),
            "ecr:CompleteLayerUpload",
        ),
        (
            "GET",
            format!("/v2/app/referrers/{layer}"),
            "ecr:BatchGetImage",
        ),
    ];
    for (method, path, action) in cases {
        let (status, _, body) = f.send(method, &path, Some(&auth), b"{}".to_vec()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}");
        assert_eq!(
            error_of(&body),
            ("DENIED".to_string(), refusal(action, "app")),
            "{method} {path}"
        );
    }
    // HEAD of a blob: refused, as BatchCheckLayerAvailability.
    let (status, _, _) = f
        .send(
            "HEAD",
            &format!("/v2/app/blobs/{layer}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing was written: still one tag.
    let (_, _, body) = f
        .send("GET", "/v2/app/tags/list", Some(&f.login(&root())), vec![])
        .await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["tags"],
        serde_json::json!(["v1"])
    );
}

#[tokio::test]
async fn pull_rights_on_one_repository_pull_it_only() {
    let f = fixture(true);
    for name in ["app", "other"] {
        f.create_repository(name).await;
    }
    let layer = f.push_image("app", "v1", b"app-layer").await;
    f.push_image("other", "v1", b"other-layer").await;
    for action in [
        "ecr:BatchGetImage",
        "ecr:GetDownloadUrlForLayer",
        "ecr:BatchCheckLayerAvailability",
        "ecr:DescribeRepositories",
    ] {
        f.grants.allow(action, &repo_arn("app"));
    }
    let auth = f.login(&alice());

    let (status, _, _) = f
        .send("GET", "/v2/app/manifests/v1", Some(&auth), vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = f
        .send(
            "GET",
            &format!("/v2/app/blobs/{layer}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"app-layer"[..])
    );
    let (status, _, _) = f
        .send(
            "HEAD",
            &format!("/v2/app/blobs/{layer}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = f
        .send("GET", "/v2/other/manifests/v1", Some(&auth), vec![])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(error_of(&body).1, refusal("ecr:BatchGetImage", "other"));
    let (_, _, body) = f.send("GET", "/v2/_catalog", Some(&auth), vec![]).await;
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        serde_json::json!({"repositories": ["app"]})
    );
    // No push.
    let (status, _, _) = f
        .send("POST", "/v2/app/blobs/uploads/", Some(&auth), vec![])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // With push rights on app, a mount from other (which alice may not
    // read) falls back to an upload instead of copying other's layer.
    for action in [
        "ecr:InitiateLayerUpload",
        "ecr:UploadLayerPart",
        "ecr:CompleteLayerUpload",
        "ecr:PutImage",
    ] {
        f.grants.allow(action, &repo_arn("app"));
    }
    let other_layer = sha256(b"other-layer");
    let (status, headers, _) = f
        .send(
            "POST",
            &format!("/v2/app/blobs/uploads/?mount={other_layer}&from=other"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert!(headers.contains_key("docker-upload-uuid"));
    // A mount from a repository alice may read works.
    f.grants
        .allow("ecr:GetDownloadUrlForLayer", &repo_arn("other"));
    let (status, _, _) = f
        .send(
            "POST",
            &format!("/v2/app/blobs/uploads/?mount={other_layer}&from=other"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn agents_pull_but_never_push_and_root_does_anything() {
    for enforce in [true, false] {
        let f = fixture(enforce);
        f.create_repository("app").await;
        f.push_image("app", "v1", b"layer").await;
        let auth = f.login(&agent());
        let (status, _, _) = f
            .send("GET", "/v2/app/manifests/v1", Some(&auth), vec![])
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _, body) = f
            .send("POST", "/v2/app/blobs/uploads/", Some(&auth), vec![])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(error_of(&body).0, "DENIED");
        let (status, _, _) = f
            .send("DELETE", "/v2/app/manifests/v1", Some(&auth), vec![])
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        // Root, without any grant.
        let auth = f.login(&root());
        let (status, _, _) = f
            .send("DELETE", "/v2/app/manifests/v1", Some(&auth), vec![])
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    // With IAM off a user may push.
    let f = fixture(false);
    f.create_repository("app").await;
    let (status, _, _) = f
        .send(
            "POST",
            "/v2/app/blobs/uploads/",
            Some(&f.login(&alice())),
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn a_download_url_fetches_its_layer_and_nothing_else() {
    let f = fixture(true);
    f.create_repository("app").await;
    f.create_repository("other").await;
    let layer = f.push_image("app", "v1", b"the-layer").await;
    let other = f.push_image("app", "v2", b"another-layer").await;
    f.push_image("other", "v1", b"the-layer").await;
    // Refused without the permission.
    let e = f
        .ecr(
            alice(),
            "GetDownloadUrlForLayer",
            serde_json::json!({"repositoryName": "app", "layerDigest": layer}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    f.grants
        .allow("ecr:GetDownloadUrlForLayer", &repo_arn("app"));
    let out = f
        .ecr(
            alice(),
            "GetDownloadUrlForLayer",
            serde_json::json!({"repositoryName": "app", "layerDigest": layer}),
        )
        .await
        .unwrap();
    let url = out["downloadUrl"].as_str().unwrap();
    let path = url.strip_prefix("http://registry.test:5000").unwrap();
    let query = path.split_once('?').unwrap().1;
    let token = query.strip_prefix("berth-token=").unwrap();

    let (status, _, body) = f.send("GET", path, None, vec![]).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"the-layer"[..])
    );
    let (status, _, _) = f.send("HEAD", path, None, vec![]).await;
    assert_eq!(status, StatusCode::OK);

    let refused = [
        ("GET", format!("/v2/app/blobs/{other}?{query}")),
        ("GET", format!("/v2/other/blobs/{layer}?{query}")),
        ("GET", format!("/v2/app/manifests/v1?{query}")),
        ("GET", format!("/v2/_catalog?{query}")),
        ("GET", format!("/v2/?{query}")),
        ("GET", format!("/v2/app/tags/list?{query}")),
        ("DELETE", path.to_string()),
        ("POST", format!("/v2/app/blobs/uploads/?{query}")),
    ];
    for (method, uri) in refused {
        let (status, _, _) = f.send(method, &uri, None, vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
    }
    // Nor is it a password.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("AWS:{token}"))
    );
    for uri in ["/v2/", "/v2/_catalog", "/v2/app/manifests/v1"] {
        let (status, _, _) = f.send("GET", uri, Some(&basic), vec![]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}");
    }
    let (status, _, _) = f
        .send(
            "GET",
            &format!("/v2/app/blobs/{layer}"),
            Some(&basic),
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn ecr_asks_for_canonical_arns_with_tags() {
    let f = fixture(true);
    f.grants.allow("ecr:CreateRepository", &repo_arn("*"));
    f.grants.allow("ecr:TagResource", &repo_arn("*"));
    f.grants.allow("ecr:UntagResource", &repo_arn("*"));
    f.grants
        .allow("ecr:DescribeRepositories", &repo_arn("team/*"));
    f.ecr(
        alice(),
        "CreateRepository",
        serde_json::json!({"repositoryName": "team/app", "tags": [{"Key": "team", "Value": "blue"}]}),
    )
    .await
    .unwrap();
    let [create] = f.grants.asked().try_into().unwrap();
    assert_eq!(
        (create.action.as_str(), create.resource.as_str()),
        ("ecr:CreateRepository", repo_arn("team/app").as_str())
    );
    assert_eq!(
        create.condition_of("aws:RequestTag/team"),
        Some(&["blue".to_string()][..])
    );
    assert_eq!(
        create.condition_of("aws:TagKeys"),
        Some(&["team".to_string()][..])
    );

    f.ecr(
        alice(),
        "TagResource",
        serde_json::json!({"resourceArn": repo_arn("team/app"), "tags": [{"Key": "env", "Value": "prod"}]}),
    )
    .await
    .unwrap();
    let [tag] = f.grants.asked().try_into().unwrap();
    assert_eq!(tag.resource, repo_arn("team/app"));
    assert_eq!(
        tag.condition_of("aws:ResourceTag/team"),
        Some(&["blue".to_string()][..])
    );
    assert_eq!(
        tag.condition_of("ecr:ResourceTag/team"),
        Some(&["blue".to_string()][..])
    );
    assert_eq!(
        tag.condition_of("aws:RequestTag/env"),
        Some(&["prod".to_string()][..])
    );

    f.ecr(
        alice(),
        "UntagResource",
        serde_json::json!({"resourceArn": repo_arn("team/app"), "tagKeys": ["env"]}),
    )
    .await
    .unwrap();
    let [untag] = f.grants.asked().try_into().unwrap();
    assert_eq!(
        untag.condition_of("aws:TagKeys"),
        Some(&["env".to_string()][..])
    );
    assert_eq!(
        untag.condition_of("aws:ResourceTag/env"),
        Some(&["prod".to_string()][..])
    );

    // Named repositories each; all of them as repository/*.
    f.ecr(
        alice(),
        "DescribeRepositories",
        serde_json::json!({"repositoryNames": ["team/app"]}),
    )
    .await
    .unwrap();
    assert_eq!(f.grants.asked()[0].resource, repo_arn("team/app"));
    let e = f
        .ecr(alice(), "DescribeRepositories", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    assert!(e.message.contains(&format!(
        "ecr:DescribeRepositories on resource: {}",
        repo_arn("*")
    )));
    // A refused call changes nothing and reveals nothing.
    let e = f
        .ecr(
            alice(),
            "DeleteRepository",
            serde_json::json!({"repositoryName": "team/app", "force": true}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    let e = f
        .ecr(
            alice(),
            "DeleteRepository",
            serde_json::json!({"repositoryName": "missing"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, "AccessDeniedException");
    // Agents call nothing but GetAuthorizationToken through the API.
    let e = f
        .ecr(
            agent(),
            "CreateRepository",
            serde_json::json!({"repositoryName": "x1"}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.status, 400);
    assert!(f
        .ecr(agent(), "GetAuthorizationToken", serde_json::json!({}))
        .await
        .is_ok());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("/".to_string()),
            Just("app".to_string()),
            Just("_catalog".to_string()),
            Just("manifests/".to_string()),
            Just("blobs/".to_string()),
            Just("uploads/".to_string()),
            Just("tags/list".to_string()),
            Just("referrers/".to_string()),
            Just("v1".to_string()),
            Just(format!("sha256:{}", "a".repeat(64))),
            Just("%".to_string()),
            Just("%a\u{e9}".to_string()),
            Just("%C3%A9".to_string()),
            Just("%2F".to_string()),
            Just("%0A".to_string()),
            Just("?".to_string()),
            Just("&n=".to_string()),
            Just("&last=".to_string()),
            Just("&digest=".to_string()),
            Just("&mount=".to_string()),
            Just("&from=".to_string()),
            Just("&berth-token=".to_string()),
            "\\PC{0,6}",
        ]
    }

    fn garbage() -> impl Strategy<Value = String> {
        prop::collection::vec(piece(), 0..4).prop_map(|p| p.concat())
    }

    /// A path shaped like a route (repository, route, reference, query)
    /// with garbage in any part, or garbage alone.
    fn path() -> impl Strategy<Value = String> {
        let digest = format!("sha256:{}", "a".repeat(64));
        let structured = (
            prop_oneof![
                4 => Just("app".to_string()),
                1 => Just("team/app".to_string()),
                1 => Just("missing".to_string()),
                1 => garbage(),
            ],
            prop_oneof![
                2 => Just("manifests/".to_string()),
                2 => Just("blobs/".to_string()),
                2 => Just("blobs/uploads/".to_string()),
                1 => Just("tags/list".to_string()),
                1 => Just("referrers/".to_string()),
                1 => garbage(),
            ],
            prop_oneof![
                2 => Just("v1".to_string()),
                1 => Just(digest),
                2 => Just(sha256(b"layer")),
                2 => Just(String::new()),
                1 => garbage(),
            ],
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("n"),
                        Just("last"),
                        Just("digest"),
                        Just("mount"),
                        Just("from"),
                        Just("artifactType"),
                        Just("berth-token"),
                    ],
                    garbage(),
                ),
                0..4,
            ),
        )
            .prop_map(|(repo, route, reference, query)| {
                let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let query = if query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", query.join("&"))
                };
                format!("/v2/{repo}/{route}{reference}{query}")
            });
        prop_oneof![
            3 => structured,
            1 => prop::collection::vec(piece(), 0..10).prop_map(|p| format!("/v2/{}", p.concat())),
        ]
    }

    #[allow(clippy::type_complexity)]
    fn request(
    ) -> impl Strategy<Value = (String, String, u8, Option<String>, Option<String>, Vec<u8>)> {
        (
            prop_oneof![
                Just("GET"),
                Just("HEAD"),
                Just("PUT"),
                Just("POST"),
                Just("PATCH"),
                Just("DELETE"),
                Just("OPTIONS"),
                Just("BREW"),
            ]
            .prop_map(str::to_string),
            path(),
            prop_oneof![1 => Just(0u8), 4 => Just(1u8), 1 => Just(2u8), 1 => Just(3u8), 1 => Just(4u8)],
            proptest::option::of("\\PC{0,24}"),
            proptest::option::of("\\PC{0,24}"),
            prop::collection::vec(proptest::arbitrary::any::<u8>(), 0..64),
        )
    }

    /// Garbage through the real router: never a panic, never a 5xx.
    #[test]
    fn no_request_panics_or_fails_the_server() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = fixture(true);
        runtime.block_on(async {
            f.create_repository("app").await;
            f.push_image("app", "v1", b"layer").await;
        });
        f.grants.allow("ecr:BatchGetImage", &repo_arn("app"));
        let layer = sha256(b"layer");
        let url = f.registry.layer_url(&alice(), REGION, "app", &layer);
        let layer_token = url.split_once("berth-token=").unwrap().1.to_string();
        let logins = [f.login(&root()), f.login(&alice()), f.login(&agent())];
        let mut config = ProptestConfig::with_cases(1500);
        config.failure_persistence = None;
        let mut runner = proptest::test_runner::TestRunner::new(config);
        runner
            .run(
                &request(),
                |(method, path, who, range, content_range, body)| {
                    let mut builder = Request::builder().method(method.as_str());
                    builder = match http::Uri::try_from(path.as_str()) {
                        Ok(uri) => builder.uri(uri),
                        // What hyper would refuse before routing; send it
                        // percent-encoded instead.
                        Err(_) => builder.uri(
                            percent_encoding::utf8_percent_encode(
                                &path,
                                percent_encoding::NON_ALPHANUMERIC,
                            )
                            .to_string()
                            .replacen("%2Fv2%2F", "/v2/", 1),
                        ),
                    };
                    match who {
                        0 => {}
                        1..=3 => {
                            builder = builder.header("authorization", &logins[who as usize - 1])
                        }
                        _ => {
                            builder = builder.header(
                                "authorization",
                                format!(
                                    "Basic {}",
                                    crate::token::authorization_token(&layer_token)
                                ),
                            )
                        }
                    }
                    if let Some(range) = &range {
                        if let Ok(v) = http::HeaderValue::from_str(range) {
                            builder = builder.header("range", v);
                        }
                    }
                    if let Some(content_range) = &content_range {
                        if let Ok(v) = http::HeaderValue::from_str(content_range) {
                            builder = builder.header("content-range", v);
                        }
                    }
                    let Ok(request) = builder.body(Body::from(body)) else {
                        return Ok(());
                    };
                    let status = runtime.block_on(async {
                        f.router.clone().oneshot(request).await.unwrap().status()
                    });
                    prop_assert!(
                        !status.is_server_error(),
                        "{method} {path} answered {status}"
                    );
                    Ok(())
                },
            )
            .unwrap();
    }
}
