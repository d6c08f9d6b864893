//! Several servers over one store and one shared directory: two `Registry`
//! instances over one `MemoryStore` and one temporary directory, each with
//! its own router, as two `berth server` processes behind a load balancer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use berth_model::{Principal, PrincipalKind, RequestContext};
use berth_store::{MemoryStore, Store, StoreExt};
use http::{Method, Request, StatusCode};
use sha2::Digest as _;
use tower::ServiceExt;

use crate::meta::{self, Scope};
use crate::{GcConfig, Registry, RegistryPaths};

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

fn root() -> Principal {
    Principal {
        kind: PrincipalKind::Root,
        arn: format!("arn:aws:iam::{ACCOUNT}:root"),
        user_id: ACCOUNT.into(),
        account_id: ACCOUNT.into(),
        access_key_id: "AKIAROOT".into(),
    }
}

fn scope() -> Scope {
    Scope {
        account: ACCOUNT.into(),
        region: REGION.into(),
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

struct Server {
    registry: Arc<Registry>,
    router: Router,
}

struct Cluster {
    dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    a: Server,
    b: Server,
    auth: String,
}

fn paths(dir: &std::path::Path) -> RegistryPaths {
    // The shared directory holds the blobs; the key is where the binary
    // says (here the same file for both, as every server needs it).
    RegistryPaths {
        root: dir.join("shared").join("registry"),
        token_key: dir.join("keys").join("registry-token.key"),
    }
}

fn server(dir: &std::path::Path, store: &Arc<dyn Store>, gc: GcConfig) -> Server {
    let registry =
        Registry::open_at(&paths(dir), store.clone(), "registry.test:5000".into(), gc).unwrap();
    let router = registry.router(None);
    Server { registry, router }
}

async fn cluster(gc: GcConfig) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let a = server(dir.path(), &store, gc.clone());
    let b = server(dir.path(), &store, gc);
    let (token, _) = a.registry.mint_token(&root(), REGION);
    let ctx = RequestContext::for_principal(root(), REGION);
    a.registry
        .ecr_service()
        .handle(
            &ctx,
            "CreateRepository",
            serde_json::json!({"repositoryName": "app"})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    Cluster {
        dir,
        store,
        a,
        b,
        auth: format!("Basic {token}"),
    }
}

impl Cluster {
    async fn send(
        &self,
        server: &Server,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        send(&server.router, &self.auth, method, uri, headers, body).await
    }

    fn upload_files(&self) -> Vec<std::path::PathBuf> {
        std::fs::read_dir(paths(self.dir.path()).root.join("uploads"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

async fn send(
    router: &Router,
    auth: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut builder = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri)
        .header("authorization", auth);
    for (name, value) in headers {
        builder = builder.header(*name, value);
    }
    let response = router
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

async fn push_blob(router: &Router, auth: &str, data: &[u8]) -> String {
    let digest = sha256(data);
    let (status, _, body) = send(
        router,
        auth,
        "POST",
        &format!("/v2/app/blobs/uploads/?digest={digest}"),
        &[],
        data.to_vec(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    digest
}

fn manifest(config: &str, config_size: usize, layer: &str, layer_size: usize) -> Vec<u8> {
    serde_json::json!({
        "schemaVersion": 2,
        "mediaType": meta::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}]
    })
    .to_string()
    .into_bytes()
}

fn range(start: usize, part: &[u8]) -> (&'static str, String) {
    (
        "content-range",
        format!("{start}-{}", start + part.len() - 1),
    )
}

#[tokio::test]
async fn a_chunked_upload_moves_between_servers() {
    let c = cluster(GcConfig::default()).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let (one, rest) = data.split_at(100_000);
    let (two, three) = rest.split_at(150_000);
    let digest = sha256(&data);

    // Started on A, first chunk on A.
    let (status, h, _) = c
        .send(&c.a, "POST", "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let location = h["location"].to_str().unwrap().to_string();
    let (status, h, _) = c
        .send(&c.a, "PATCH", &location, &[range(0, one)], one.to_vec())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h["range"], format!("0-{}", one.len() - 1));

    // B knows where it stands and continues it.
    let (status, h, _) = c.send(&c.b, "GET", &location, &[], vec![]).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h["range"], format!("0-{}", one.len() - 1));
    let (status, h, _) = c
        .send(
            &c.b,
            "PATCH",
            &location,
            &[range(one.len(), two)],
            two.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(h["range"], format!("0-{}", one.len() + two.len() - 1));
    // A chunk out of order on A is refused with where the upload stands.
    let (status, h, _) = c
        .send(
            &c.a,
            "PATCH",
            &location,
            &[range(one.len(), two)],
            two.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(h["range"], format!("0-{}", one.len() + two.len() - 1));

    // The last chunk rides on A's PUT. A's running hash stopped at the
    // first chunk, so A verifies by reading the file.
    let (status, h, body) = c
        .send(
            &c.a,
            "PUT",
            &format!("{location}?digest={digest}"),
            &[],
            three.to_vec(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(h["docker-content-digest"], digest.as_str());
    assert_eq!(
        c.send(&c.b, "GET", &location, &[], vec![]).await.0,
        StatusCode::NOT_FOUND
    );
    assert!(c.upload_files().is_empty());

    // Pulled through B, whole and by range.
    let (status, _, body) = c
        .send(&c.b, "GET", &format!("/v2/app/blobs/{digest}"), &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, data);
    let (status, _, body) = c
        .send(
            &c.b,
            "GET",
            &format!("/v2/app/blobs/{digest}"),
            &[("range", "bytes=1000-1999".to_string())],
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, &data[1000..2000]);

    // A wrong digest is caught whichever server wrote which chunk.
    let (_, h, _) = c
        .send(&c.b, "POST", "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    let location = h["location"].to_str().unwrap().to_string();
    c.send(&c.b, "PATCH", &location, &[range(0, one)], one.to_vec())
        .await;
    c.send(
        &c.a,
        "PATCH",
        &location,
        &[range(one.len(), two)],
        two.to_vec(),
    )
    .await;
    let wrong = sha256(b"something else");
    let (status, _, body) = c
        .send(
            &c.b,
            "PUT",
            &format!("{location}?digest={wrong}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(String::from_utf8_lossy(&body).contains("DIGEST_INVALID"));
    assert!(c.upload_files().is_empty());

    // Cancelled from the other server.
    let (_, h, _) = c
        .send(&c.a, "POST", "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    let location = h["location"].to_str().unwrap().to_string();
    c.send(&c.a, "PATCH", &location, &[range(0, one)], one.to_vec())
        .await;
    assert_eq!(
        c.send(&c.b, "DELETE", &location, &[], vec![]).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.send(
            &c.a,
            "PATCH",
            &location,
            &[range(one.len(), two)],
            two.to_vec()
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert!(c.upload_files().is_empty());
}

#[tokio::test]
async fn an_upload_that_stays_on_one_server_uses_its_running_hash() {
    let c = cluster(GcConfig::default()).await;
    let (_, h, _) = c
        .send(&c.a, "POST", "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    let location = h["location"].to_str().unwrap().to_string();
    c.send(
        &c.a,
        "PATCH",
        &location,
        &[range(0, b"hello ")],
        b"hello ".to_vec(),
    )
    .await;
    // Change the bytes behind A's back: only a file read would notice, so
    // the PUT that trusts A's running hash accepts "hello world" ...
    let id = location.rsplit('/').next().unwrap();
    let file = paths(c.dir.path()).root.join("uploads").join(id);
    std::fs::write(&file, b"HELLO ").unwrap();
    let digest = sha256(b"hello world");
    let (status, _, _) = c
        .send(
            &c.a,
            "PUT",
            &format!("{location}?digest={digest}"),
            &[],
            b"world".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // ... while B, which has no running hash, reads the file and refuses.
    let (_, h, _) = c
        .send(&c.a, "POST", "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    let location = h["location"].to_str().unwrap().to_string();
    c.send(
        &c.a,
        "PATCH",
        &location,
        &[range(0, b"hello ")],
        b"hello ".to_vec(),
    )
    .await;
    let id = location.rsplit('/').next().unwrap();
    std::fs::write(paths(c.dir.path()).root.join("uploads").join(id), b"HELLO ").unwrap();
    let (status, _, _) = c
        .send(
            &c.b,
            "PUT",
            &format!("{location}?digest={digest}"),
            &[],
            b"world".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn an_image_pushed_through_one_server_is_pulled_through_the_other() {
    let c = cluster(GcConfig::default()).await;
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"a layer pushed through A".to_vec();
    let config_digest = push_blob(&c.a.router, &c.auth, config).await;
    let layer_digest = push_blob(&c.a.router, &c.auth, &layer).await;
    let raw = manifest(&config_digest, config.len(), &layer_digest, layer.len());
    let (status, _, _) = c
        .send(&c.a, "PUT", "/v2/app/manifests/v1", &[], raw.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, h, body) = c
        .send(&c.b, "GET", "/v2/app/manifests/v1", &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, raw);
    assert_eq!(h["docker-content-digest"], sha256(&raw).as_str());
    for (digest, bytes) in [(&config_digest, &config[..]), (&layer_digest, &layer[..])] {
        let (status, _, body) = c
            .send(&c.b, "GET", &format!("/v2/app/blobs/{digest}"), &[], vec![])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, bytes);
    }
    // A mount on B of what A pushed, into another repository.
    let ctx = RequestContext::for_principal(root(), REGION);
    c.b.registry
        .ecr_service()
        .handle(
            &ctx,
            "CreateRepository",
            serde_json::json!({"repositoryName": "copy"})
                .to_string()
                .as_bytes(),
        )
        .await
        .unwrap();
    let (status, _, _) = c
        .send(
            &c.b,
            "POST",
            &format!("/v2/copy/blobs/uploads/?mount={layer_digest}&from=app"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, body) = c
        .send(
            &c.a,
            "GET",
            &format!("/v2/copy/blobs/{layer_digest}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!((status, body), (StatusCode::OK, layer));
}

#[tokio::test]
async fn a_restart_keeps_live_uploads() {
    let c = cluster(GcConfig::default()).await;
    let (_, h, _) = c
        .send(&c.a, "POST", "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    let location = h["location"].to_str().unwrap().to_string();
    c.send(
        &c.a,
        "PATCH",
        &location,
        &[range(0, b"before ")],
        b"before ".to_vec(),
    )
    .await;
    // A restarts (or another server starts) on the same directory.
    let restarted = server(c.dir.path(), &c.store, GcConfig::default());
    assert_eq!(c.upload_files().len(), 1);
    let digest = sha256(b"before after");
    let (status, _, _) = c
        .send(
            &restarted,
            "PUT",
            &format!("{location}?digest={digest}"),
            &[],
            b"after".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Every blob a repository links has its file.
fn check_links(c: &Cluster) {
    for kv in meta::scan(c.store.as_ref(), &scope().layers("app")) {
        let digest = &kv.key[scope().layers("app").len()..];
        let digest = crate::digest::Digest::parse(digest).unwrap();
        assert!(
            c.a.registry.blobs.size(&digest).unwrap().is_some(),
            "{digest} is linked but its file is gone"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_on_one_server_never_takes_a_blob_the_other_links() {
    // No grace for blob files: only the sweep marks and the commits' second
    // look protect a blob being linked.
    let gc = GcConfig {
        blob_grace: Duration::ZERO,
        ..GcConfig::default()
    };
    let c = Arc::new(cluster(gc).await);
    let data: &'static [u8] = b"a layer pushed again and again";
    for round in 0..120 {
        // The blob exists, unreferenced: what a sweep takes.
        let digest = push_blob(&c.a.router, &c.auth, data).await;
        let (status, _, _) = c
            .send(
                &c.b,
                "DELETE",
                &format!("/v2/app/blobs/{digest}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        let (pusher, collector) = if round % 2 == 0 {
            (&c.a, &c.b)
        } else {
            (&c.b, &c.a)
        };
        let (router, auth) = (pusher.router.clone(), c.auth.clone());
        // Vary which of the two gets ahead, and by how much.
        let lead = Duration::from_micros((round * 173 % 3000) as u64);
        let (push_delay, sweep_delay) = if round % 4 < 2 {
            (Duration::ZERO, lead)
        } else {
            (lead / 4, Duration::ZERO)
        };
        let push = tokio::spawn(async move {
            tokio::time::sleep(push_delay).await;
            push_blob(&router, &auth, data).await
        });
        let registry = collector.registry.clone();
        let sweep = tokio::spawn(async move {
            tokio::time::sleep(sweep_delay).await;
            registry.gc_pass(berth_util::time::now_epoch()).await
        });
        // Every third round both collect at once (a change of leader).
        if round % 3 == 0 {
            pusher.registry.gc_pass(berth_util::time::now_epoch()).await;
        }
        push.await.unwrap();
        sweep.await.unwrap();
        check_links(&c);
        let (status, _, body) = c
            .send(
                collector,
                "GET",
                &format!("/v2/app/blobs/{digest}"),
                &[],
                vec![],
            )
            .await;
        assert_eq!(
            (status, body.as_slice()),
            (StatusCode::OK, data),
            "round {round}"
        );
    }
    // Every pass removed its marks.
    assert!(meta::scan(c.store.as_ref(), crate::gc::SWEEP_ROOT).is_empty());
}

#[tokio::test]
async fn a_commit_waits_for_a_sweep_mark_and_an_expired_mark_is_ignored() {
    let c = cluster(GcConfig::default()).await;
    let data = b"marked";
    let digest = sha256(data);
    let mark = format!("{}{digest}/some-pass", crate::gc::SWEEP_ROOT);
    let until = berth_util::time::now_epoch() + 20.0;
    c.store
        .put(
            &mark,
            serde_json::to_vec(&serde_json::json!({"until": until}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let (router, auth) = (c.a.router.clone(), c.auth.clone());
    let started = Instant::now();
    let push = tokio::spawn(async move { push_blob(&router, &auth, data).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!push.is_finished());
    c.store.delete(&mark).await.unwrap();
    push.await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400));

    // A mark whose pass died does not hold anything up, and the next pass
    // removes it.
    let other = b"after a dead pass";
    let mark = format!("{}{}/dead-pass", crate::gc::SWEEP_ROOT, sha256(other));
    let until = berth_util::time::now_epoch() - 1.0;
    c.store
        .put(
            &mark,
            serde_json::to_vec(&serde_json::json!({"until": until}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    push_blob(&c.b.router, &c.auth, other).await;
    c.a.registry.gc_pass(berth_util::time::now_epoch()).await;
    assert!(c.store.get(&mark).is_none());
}

#[tokio::test]
async fn an_aborted_collector_leaves_nothing_that_blocks() {
    let gc = GcConfig {
        interval: Duration::from_millis(1),
        blob_grace: Duration::ZERO,
        ..GcConfig::default()
    };
    let c = cluster(gc).await;
    for i in 0..20u32 {
        let data = format!("orphan {i}").into_bytes();
        let digest = push_blob(&c.a.router, &c.auth, &data).await;
        c.send(
            &c.a,
            "DELETE",
            &format!("/v2/app/blobs/{digest}"),
            &[],
            vec![],
        )
        .await;
        let handle = c.b.registry.spawn_gc();
        tokio::time::sleep(Duration::from_micros(200 * u64::from(i))).await;
        handle.abort();
        let _ = handle.await;
        // Whatever the pass was doing, pushing that blob again works and
        // its link has its file.
        push_blob(&c.a.router, &c.auth, &data).await;
        check_links(&c);
    }
}
