//! Berth's image registry: the OCI distribution API under `/v2/` (what
//! `docker push`/`pull`, skopeo and agents speak), Amazon ECR's JSON API
//! (`AmazonEC2ContainerRegistry_V20150921`), and the content-addressed blob
//! store on disk that both share.
//!
//! Blob bytes live in files under `<root>/blobs` (see [`blobs`]; `<root>` is
//! `<data-dir>/registry`, or a directory several servers share);
//! everything else — repositories, manifests, tags, which blobs a repository
//! links, upload sessions (see [`uploads`]) — lives in the Berth store (see
//! [`meta`]), so it is durable, group-committed, read from memory and
//! shared by every server on the same store. `/v2/` authenticates with the tokens
//! `GetAuthorizationToken` mints ([`token`]); a token names the account and
//! region the request acts in and the principal it was issued to, and every
//! `/v2/` request is authorized as the ECR action it is, for that principal,
//! on the repository's ARN (repository policies taking part), by the same
//! [`Authorizer`] as the API.
//!
//! Architecture invariant: a blob file appears under `blobs/` only complete
//! and verified against its digest, a repository links a blob only after its
//! file is durable, and no server removes a blob file that a link or
//! manifest references or that is being linked. Every `/v2/` request but
//! `GET /v2/` is authorized before it reads or writes a repository.

pub mod blobs;
pub mod digest;
mod ecr;
mod gc;
pub mod lifecycle;
pub mod meta;
#[cfg(test)]
mod multi_server_tests;
mod oci;
pub mod pull_through;
pub mod replication;
#[cfg(test)]
mod security_tests;
pub mod settings;
pub mod token;
pub mod uploads;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use berth_model::authz::{Authorizer, Requirement};
use berth_model::{JsonService, Principal};
use berth_store::Store;
use berth_util::time::{now_epoch, now_secs};

use blobs::BlobStore;
use token::{Claims, Purpose, TokenKey};
use uploads::Uploads;

/// Why the registry could not start.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} ({path}): {source}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How often garbage collection runs and what it spares.
#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Time between passes (lifecycle policies, uploads, links, blobs).
    pub interval: Duration,
    /// Uploads untouched this long (and held by no request) are abandoned.
    pub upload_idle: Duration,
    /// A blob link no manifest references is kept this long, so a push whose
    /// manifest has not arrived yet keeps its layers.
    pub link_grace: Duration,
    /// A blob file is kept this long after it was written or reused, so a
    /// blob placed for a link not recorded yet is never taken.
    pub blob_grace: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_secs(60),
            upload_idle: Duration::from_secs(3600),
            link_grace: Duration::from_secs(24 * 3600),
            blob_grace: Duration::from_secs(600),
        }
    }
}

/// Where the registry keeps its files.
#[derive(Clone, Debug)]
pub struct RegistryPaths {
    /// Blobs and upload files (`blobs/`, `uploads/`): every server of an
    /// installation must see the same directory (a shared one such as NFS
    /// when there are several).
    pub root: PathBuf,
    /// The key registry tokens are signed with (made, 0600, when absent).
    /// Every server that answers `/v2/` must have the same key.
    pub token_key: PathBuf,
}

impl RegistryPaths {
    /// One server's layout: `<data_dir>/registry` and
    /// `<data_dir>/registry/token.key`.
    pub fn in_data_dir(data_dir: &Path) -> RegistryPaths {
        let root = data_dir.join("registry");
        RegistryPaths {
            token_key: root.join("token.key"),
            root,
        }
    }
}

/// The registry: one per server, shared by the `/v2/` router, the ECR
/// service and the garbage collector. Several servers may each open one over
/// the same store and the same [`RegistryPaths::root`]; any of them then
/// serves any request, an upload's included.
pub struct Registry {
    store: Arc<dyn Store>,
    blobs: Arc<BlobStore>,
    uploads: Uploads,
    tokens: TokenKey,
    host: String,
    gc: GcConfig,
    /// This registry, for the work it starts in the background (replication).
    me: std::sync::Weak<Registry>,
    /// Secrets Manager, for pull-through cache credentials.
    secrets: std::sync::OnceLock<Arc<dyn pull_through::UpstreamSecrets>>,
    /// How long a tag pulled through a cache is served before its upstream
    /// is asked again (milliseconds; ECR's 24 hours unless set).
    pull_through_refresh_ms: std::sync::atomic::AtomicU64,
    /// How upstream registries' certificates are verified (built on first
    /// use unless the binary sets it).
    upstream_tls: std::sync::OnceLock<Result<pull_through::UpstreamTls, String>>,
}

/// ECR operations of the model that Berth leaves unimplemented, with why;
/// each answers a precise error naming the reason.
pub const NOT_IMPLEMENTED: &[(&str, &str)] = ecr::NOT_IMPLEMENTED;

impl Registry {
    /// Opens the registry's files under `<data_dir>/registry`. `registry_host`
    /// is the `host:port` clients reach `/v2/` at; it prefixes every
    /// `repositoryUri`.
    pub fn open(
        data_dir: &Path,
        store: Arc<dyn Store>,
        registry_host: String,
    ) -> Result<Arc<Registry>, RegistryError> {
        Self::open_with(data_dir, store, registry_host, GcConfig::default())
    }

    pub fn open_with(
        data_dir: &Path,
        store: Arc<dyn Store>,
        registry_host: String,
        gc: GcConfig,
    ) -> Result<Arc<Registry>, RegistryError> {
        Self::open_at(
            &RegistryPaths::in_data_dir(data_dir),
            store,
            registry_host,
            gc,
        )
    }

    /// Opens the registry with its files where `paths` says. Upload files
    /// that no session in `store` names (older than
    /// [`uploads::ORPHAN_GRACE`]) are removed; live sessions, this server's
    /// from before a restart or other servers', are kept.
    pub fn open_at(
        paths: &RegistryPaths,
        store: Arc<dyn Store>,
        registry_host: String,
        gc: GcConfig,
    ) -> Result<Arc<Registry>, RegistryError> {
        let root = &paths.root;
        let io = |what: &'static str, path: &Path| {
            let path = path.display().to_string();
            move |source| RegistryError::Io { what, path, source }
        };
        std::fs::create_dir_all(root).map_err(io("creating the registry directory", root))?;
        let blobs = Arc::new(BlobStore::open(root).map_err(io("opening the blob store", root))?);
        if let Some(dir) = paths.token_key.parent() {
            std::fs::create_dir_all(dir)
                .map_err(io("creating the registry token key's directory", dir))?;
        }
        let tokens = TokenKey::load_or_create(&paths.token_key)
            .map_err(io("loading the registry token key", &paths.token_key))?;
        let uploads = Uploads::new(store.clone(), blobs.clone());
        match uploads.remove_orphans() {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed upload files no session names"),
            Err(e) => tracing::warn!(error = %e, "removing leftover upload files failed"),
        }
        Ok(Arc::new_cyclic(|me| Registry {
            store,
            uploads,
            blobs,
            tokens,
            host: registry_host,
            gc,
            me: me.clone(),
            secrets: std::sync::OnceLock::new(),
            upstream_tls: std::sync::OnceLock::new(),
            pull_through_refresh_ms: std::sync::atomic::AtomicU64::new(
                pull_through::DEFAULT_REFRESH.as_millis() as u64,
            ),
        }))
    }

    /// The `/v2/` routes (merge beside the gateway's router). `authorizer`
    /// decides for users and role sessions, as the gateway's does (None when
    /// IAM is not enforced: any valid token may do anything but an agent's,
    /// which only pulls).
    pub fn router(self: &Arc<Self>, authorizer: Option<Arc<dyn Authorizer>>) -> axum::Router {
        oci::router(self.clone(), authorizer)
    }

    /// `action` (e.g. `ecr:BatchGetImage`) on repository `name` of `scope`:
    /// its canonical ARN, with the repository's tags as `aws:ResourceTag/*`
    /// and `ecr:ResourceTag/*` when it exists.
    pub(crate) fn repository_requirement(
        &self,
        scope: &meta::Scope,
        action: &str,
        name: &str,
    ) -> Requirement {
        let mut requirement = Requirement::new(action, scope.repo_arn(name));
        if let Some(record) = meta::get::<meta::RepoRecord>(self.store.as_ref(), &scope.repo(name))
        {
            requirement = requirement.resource_tags(
                record
                    .tags
                    .iter()
                    .map(|t| (t.key.as_str(), t.value.as_str())),
            );
            for t in &record.tags {
                requirement =
                    requirement.condition(format!("ecr:ResourceTag/{}", t.key), t.value.clone());
            }
        }
        requirement
    }

    /// The resource policy of `repository_arn`
    /// (`arn:aws:ecr:<region>:<account>:repository/<name>`): its repository
    /// policy joined with the registry policy (see
    /// [`settings::effective_policy`]), if there is either.
    pub fn repository_policy(&self, repository_arn: &str) -> Option<String> {
        let mut parts = repository_arn.splitn(6, ':');
        let (arn, _, service, region, account, rest) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if arn != "arn" || service != "ecr" {
            return None;
        }
        let name = rest.strip_prefix("repository/")?;
        let scope = meta::Scope {
            account: account.to_string(),
            region: region.to_string(),
        };
        let own = meta::get::<meta::RepoRecord>(self.store.as_ref(), &scope.repo(name))
            .and_then(|r| r.policy);
        settings::effective_policy(self.store.as_ref(), &scope, own)
    }

    /// Amazon ECR's JSON 1.1 API.
    pub fn ecr_service(self: &Arc<Self>) -> Arc<dyn JsonService> {
        Arc::new(ecr::EcrService::new(self.clone()))
    }

    /// Runs garbage collection and lifecycle policies periodically. With
    /// several servers, run it on one at a time (the leader); two at once
    /// (a change of leader) are still safe. The task may be aborted at any
    /// point: what a pass leaves half done (sweep marks, an upload record
    /// without its file) expires or is finished by the next pass.
    pub fn spawn_gc(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let registry = self.clone();
        tokio::spawn(async move {
            // Replications a crash (or the last leader's end) cut short.
            let started = now_epoch();
            let resumed = registry.resume_replications(started).await;
            if resumed > 0 {
                tracing::info!(images = resumed, "resumed interrupted replications");
            }
            let mut ticker = tokio::time::interval(registry.gc.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                // A replication runs for seconds: one still IN_PROGRESS a
                // whole pass later was interrupted.
                let cutoff = now_epoch() - registry.gc.interval.as_secs_f64();
                registry.resume_replications(cutoff).await;
                let report = registry.gc_pass(now_epoch()).await;
                if report != gc::Report::default() {
                    tracing::info!(?report, "registry garbage collection");
                }
            }
        })
    }

    /// Mints a registry token for `principal` in `region`: the base64
    /// `AWS:<token>` of ECR's `authorizationToken`, and its expiry (epoch
    /// seconds). What the bearer may do is decided per request, as
    /// `principal` (an agent only pulls).
    pub fn mint_token(&self, principal: &Principal, region: &str) -> (String, f64) {
        let now = now_secs();
        let claims = Claims::new(
            principal,
            region,
            Purpose::Login,
            now + token::TOKEN_LIFETIME_SECS,
        );
        (
            token::authorization_token(&self.tokens.sign(&claims)),
            claims.e as f64,
        )
    }

    /// A download URL for blob `digest` of repository `name`: allows GET and
    /// HEAD of that blob only, for [`token::LAYER_URL_LIFETIME_SECS`].
    pub(crate) fn layer_url(
        &self,
        principal: &Principal,
        region: &str,
        name: &str,
        digest: &str,
    ) -> String {
        let claims = Claims::new(
            principal,
            region,
            Purpose::Layer {
                repository: name.to_string(),
                digest: digest.to_string(),
            },
            now_secs() + token::LAYER_URL_LIFETIME_SECS,
        );
        format!(
            "http://{}/v2/{name}/blobs/{digest}?{}={}",
            self.host,
            oci::LAYER_TOKEN_PARAM,
            self.tokens.sign(&claims)
        )
    }

    /// `host:port` of `/v2/`.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn repository_uri(&self, name: &str) -> String {
        format!("{}/{name}", self.host)
    }
}
