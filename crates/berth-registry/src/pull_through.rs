//! Pull-through cache: a pull of `<prefix>/<repo>:<ref>` that the registry
//! does not have is fetched from the rule's upstream registry (the OCI
//! distribution API over HTTPS, verified against the system's certificate
//! authorities and those `--pull-through-ca` adds; over plain HTTP for an
//! upstream URL written `http://host[:port]`), stored in
//! repository `<prefix>/<repo>` (created from the PULL_THROUGH_CACHE
//! creation template, or with ECR's defaults) and served from there.
//! Credentials come from the Secrets Manager secret the rule names
//! (`ecr-pullthroughcache/…`, a JSON `{"username": …, "accessToken": …}`),
//! sent as Basic auth or exchanged for a Bearer token when the upstream
//! asks for one. A cached tag is served as it is until it is older than the
//! refresh interval (ECR's 24 hours; `--pull-through-refresh-seconds`);
//! the next pull by tag then asks the upstream again and moves the tag when
//! the upstream's has moved, serving the cached image when the upstream
//! cannot be reached.

use std::sync::Arc;

use base64::Engine;
use berth_model::shapes::ecr;
use bytes::Bytes;
use http_body_util::{BodyExt, BodyStream, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::digest::Digest;
use crate::meta::{self, PutError, Scope};
use crate::settings::Creation;
use crate::Registry;

/// Why a rule's credential secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialError {
    NotFound,
    Unreadable(String),
}

/// Reads Secrets Manager secrets for the registry (wired by the binary).
pub trait UpstreamSecrets: Send + Sync + 'static {
    /// The SecretString of secret `arn` in `account`/`region`.
    fn secret_string(
        &self,
        account: &str,
        region: &str,
        arn: &str,
    ) -> Result<String, CredentialError>;
}

/// How long a cached tag is served before its upstream is asked again.
pub const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The upstream registries ECR knows by URL.
const KNOWN_UPSTREAMS: &[(&str, &str)] = &[
    ("public.ecr.aws", "ecr-public"),
    ("registry-1.docker.io", "docker-hub"),
    ("ghcr.io", "github-container-registry"),
    ("registry.gitlab.com", "gitlab-container-registry"),
    ("registry.k8s.io", "k8s"),
    ("quay.io", "quay"),
    ("cgr.dev", "chainguard"),
];

/// The scheme and `host[:port]` of an upstream registry URL: HTTPS unless
/// it is written `http://…` (ECR takes `host[:port]` and always uses HTTPS).
fn scheme_and_host(url: &str) -> (&'static str, &str) {
    match url.strip_prefix("http://") {
        Some(host) => ("http", host),
        None => ("https", url),
    }
}

/// Checks a rule's upstream URL (`host[:port]`, as ECR takes it, or
/// `http://host[:port]` for a registry without TLS) and kind; returns the
/// kind to record (none for a registry ECR does not list, which Berth
/// reaches as a plain OCI registry).
pub fn check_upstream(url: &str, kind: Option<&str>) -> Result<Option<String>, String> {
    let (_, host) = scheme_and_host(url);
    let valid = !host.is_empty()
        && host.len() <= 255
        && !host.contains('/')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b));
    if !valid {
        return Err(format!(
            "The upstream registry URL '{url}' is not a registry host name (host[:port], no scheme or path)."
        ));
    }
    if let Some(kind) = kind {
        if !ecr::UPSTREAM_REGISTRY_VALUES.contains(&kind) {
            return Err(format!(
                "The upstream registry '{kind}' is not supported; use one of {:?}.",
                ecr::UPSTREAM_REGISTRY_VALUES
            ));
        }
        return Ok(Some(kind.to_string()));
    }
    let known = KNOWN_UPSTREAMS
        .iter()
        .find(|(h, _)| *h == host)
        .map(|(_, k)| k.to_string())
        .or_else(|| {
            host.ends_with(".azurecr.io")
                .then(|| "azure-container-registry".into())
        })
        .or_else(|| {
            (host.contains(".dkr.ecr.") && host.ends_with(".amazonaws.com")).then(|| "ecr".into())
        });
    Ok(known)
}

/// Why a pull through the cache failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("the upstream registry does not have {0}")]
    NotFound(String),
    #[error("the upstream registry refused the credentials: {0}")]
    Denied(String),
    #[error("{0}")]
    Upstream(String),
    #[error("the store failed: {0}")]
    Store(#[from] berth_store::StoreError),
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// How upstream registries' certificates are verified.
#[derive(Clone)]
pub struct UpstreamTls(Arc<rustls::ClientConfig>);

impl UpstreamTls {
    /// The system's certificate authorities (its CA bundle) and `extra`,
    /// PEM certificates of private authorities (`--pull-through-ca`).
    /// Answers how many authorities it trusts.
    pub fn new(extra: &[u8]) -> Result<(UpstreamTls, usize), String> {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(native.certs);
        let mut extras = 0;
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(extra) {
            let cert = cert.map_err(|e| format!("a certificate authority is not PEM: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate authority cannot be used: {e}"))?;
            extras += 1;
        }
        if !extra.is_empty() && extras == 0 {
            return Err("no PEM certificate found".into());
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok((UpstreamTls(Arc::new(config)), added + extras))
    }
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// One conversation with an upstream registry.
struct Upstream {
    client: HttpClient,
    /// `http` or `https`.
    scheme: &'static str,
    host: String,
    credentials: Option<(String, String)>,
    /// What the last request authorized with (`Basic …`/`Bearer …`).
    authorization: Option<String>,
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// The parameters of a `Bearer realm="…",service="…",scope="…"` challenge.
fn challenge(header: &str) -> Option<Vec<(String, String)>> {
    let rest = header.strip_prefix("Bearer ")?;
    let mut out = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            chars.by_ref().take_while(|c| *c != '"').collect()
        } else {
            chars.by_ref().take_while(|c| *c != ',').collect()
        };
        out.push((key.trim().to_string(), value));
    }
    Some(out)
}

impl Upstream {
    fn new(url: &str, credentials: Option<(String, String)>, tls: &UpstreamTls) -> Upstream {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*tls.0).clone())
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let authorization = credentials.as_ref().map(|(u, p)| basic(u, p));
        let (scheme, host) = scheme_and_host(url);
        Upstream {
            client,
            scheme,
            host: host.to_string(),
            credentials,
            authorization,
        }
    }

    /// `scheme://host[:port]`.
    fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.host)
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, PullError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|_| PullError::Upstream(format!("'{url}' is not a URL")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(PullError::Upstream(format!(
                "'{url}' is not an HTTP or HTTPS URL"
            )));
        }
        let mut request = hyper::Request::get(uri);
        if let Some(a) = accept {
            request = request.header("accept", a);
        }
        if let Some(a) = authorization {
            request = request.header("authorization", a);
        }
        let request = request
            .body(Empty::new())
            .map_err(|e| PullError::Upstream(e.to_string()))?;
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            self.client.request(request),
        )
        .await
        .map_err(|_| {
            PullError::Upstream(format!(
                "the upstream registry {} did not answer within 30 s",
                self.host
            ))
        })?
        .map_err(|e| {
            // The TLS failure (an unknown authority, a wrong name) is
            // the source's source.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            PullError::Upstream(format!(
                "cannot reach the upstream registry {}: {why}",
                self.host
            ))
        })?;
        Ok(response)
    }

    /// Exchanges the credentials (if any) for a token at the challenge's realm.
    async fn bearer(&self, params: &[(String, String)]) -> Result<String, PullError> {
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let realm = get("realm")
            .ok_or_else(|| PullError::Upstream("a Bearer challenge without realm".into()))?;
        let mut query = Vec::new();
        for k in ["service", "scope"] {
            if let Some(v) = get(k) {
                query.push(format!(
                    "{k}={}",
                    percent_encoding::utf8_percent_encode(&v, percent_encoding::NON_ALPHANUMERIC)
                ));
            }
        }
        let sep = if realm.contains('?') { '&' } else { '?' };
        let url = format!("{realm}{sep}{}", query.join("&"));
        let basic = self.credentials.as_ref().map(|(u, p)| basic(u, p));
        let response = self.send(&url, None, basic.as_deref()).await?;
        if !response.status().is_success() {
            return Err(PullError::Denied(format!(
                "the token service answered {}",
                response.status()
            )));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| PullError::Upstream(e.to_string()))?
            .to_bytes();
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|_| PullError::Upstream("the token service's answer is not JSON".into()))?;
        doc["token"]
            .as_str()
            .or(doc["access_token"].as_str())
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| PullError::Upstream("the token service gave no token".into()))
    }

    /// GET `path`, answering a Bearer challenge and following redirects.
    async fn get(
        &mut self,
        path: &str,
        accept: Option<&str>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, PullError> {
        let mut url = format!("{}{path}", self.base());
        let mut challenged = false;
        for _ in 0..5 {
            let same_host = url.starts_with(&format!("{}/", self.base()));
            let auth = if same_host {
                self.authorization.clone()
            } else {
                None
            };
            let response = self.send(&url, accept, auth.as_deref()).await?;
            let status = response.status();
            if status == hyper::StatusCode::UNAUTHORIZED && !challenged {
                challenged = true;
                let header = response
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                if let Some(params) = challenge(&header) {
                    self.authorization = Some(self.bearer(&params).await?);
                    continue;
                }
                return Err(PullError::Denied(format!(
                    "{} asks for credentials ({header})",
                    self.host
                )));
            }
            if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
                return Err(PullError::Denied(format!(
                    "{} answered {status}",
                    self.host
                )));
            }
            if status.is_redirection() {
                let location = response
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| PullError::Upstream("a redirect without Location".into()))?;
                url = if location.starts_with('/') {
                    format!("{}{location}", self.base())
                } else {
                    location.to_string()
                };
                continue;
            }
            return Ok(response);
        }
        Err(PullError::Upstream(format!(
            "too many redirects from {}",
            self.host
        )))
    }
}

/// The repository an upstream registry holds for local `name` under `rule`.
fn upstream_repository(rule: &ecr::PullThroughCacheRule, name: &str) -> Option<String> {
    let prefix = rule.ecr_repository_prefix.as_deref()?;
    let rest = if prefix == "ROOT" {
        name
    } else {
        name.strip_prefix(prefix)?.strip_prefix('/')?
    };
    if rest.is_empty() {
        return None;
    }
    Some(match rule.upstream_repository_prefix.as_deref() {
        None | Some("ROOT") => rest.to_string(),
        Some(up) => format!("{up}/{rest}"),
    })
}

impl Registry {
    /// Lets the registry read pull-through cache credentials.
    pub fn set_upstream_secrets(&self, secrets: Arc<dyn UpstreamSecrets>) {
        let _ = self.secrets.set(secrets);
    }

    /// The username and access token in secret `arn`.
    pub(crate) fn upstream_credentials(
        &self,
        scope: &Scope,
        arn: &str,
    ) -> Result<(String, String), CredentialError> {
        let secrets = self.secrets.get().ok_or_else(|| {
            CredentialError::Unreadable("this registry has no access to Secrets Manager".into())
        })?;
        let text = secrets.secret_string(&scope.account, &scope.region, arn)?;
        let doc: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
            CredentialError::Unreadable(
                "the secret is not JSON with 'username' and 'accessToken'".into(),
            )
        })?;
        match (doc["username"].as_str(), doc["accessToken"].as_str()) {
            (Some(u), Some(t)) => Ok((u.to_string(), t.to_string())),
            _ => Err(CredentialError::Unreadable(
                "the secret must hold 'username' and 'accessToken'".into(),
            )),
        }
    }

    fn upstream(
        &self,
        scope: &Scope,
        rule: &ecr::PullThroughCacheRule,
    ) -> Result<Upstream, PullError> {
        let credentials = match rule.credential_arn.as_deref() {
            Some(arn) => Some(self.upstream_credentials(scope, arn).map_err(|e| match e {
                CredentialError::NotFound => {
                    PullError::Denied(format!("the credential secret {arn} does not exist"))
                }
                CredentialError::Unreadable(why) => PullError::Denied(why),
            })?),
            None => None,
        };
        Ok(Upstream::new(
            rule.upstream_registry_url.as_deref().unwrap_or(""),
            credentials,
            &self.upstream_tls()?,
        ))
    }

    /// Whether the rule's upstream answers its API base with these
    /// credentials; the failure as ValidatePullThroughCacheRule reports it.
    pub(crate) async fn probe_upstream(
        &self,
        scope: &Scope,
        rule: &ecr::PullThroughCacheRule,
    ) -> Result<(), String> {
        let mut upstream = self.upstream(scope, rule).map_err(|e| e.to_string())?;
        let response = upstream
            .get("/v2/", None)
            .await
            .map_err(|e| e.to_string())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the upstream registry answered {} for /v2/",
                response.status()
            ))
        }
    }

    /// The pull-through cache rule that covers repository `name`, with the
    /// upstream repository it maps to (the longest prefix wins; ROOT last).
    pub(crate) fn cache_rule_for(
        &self,
        scope: &Scope,
        name: &str,
    ) -> Option<(ecr::PullThroughCacheRule, String)> {
        let mut best: Option<(ecr::PullThroughCacheRule, String)> = None;
        for kv in meta::scan(self.store.as_ref(), &scope.cache_rules()) {
            let Some(rule) = meta::decode::<ecr::PullThroughCacheRule>(&kv) else {
                continue;
            };
            let Some(up) = upstream_repository(&rule, name) else {
                continue;
            };
            let len = |r: &ecr::PullThroughCacheRule| match r.ecr_repository_prefix.as_deref() {
                Some("ROOT") | None => 0,
                Some(p) => p.len(),
            };
            if best.as_ref().is_none_or(|(b, _)| len(&rule) > len(b)) {
                best = Some((rule, up));
            }
        }
        best
    }

    /// Sets the certificate authorities upstream registries are verified
    /// against (the binary's `--pull-through-ca`); the system's alone until
    /// then. Only the first call counts.
    pub fn set_upstream_tls(&self, tls: UpstreamTls) {
        let _ = self.upstream_tls.set(Ok(tls));
    }

    fn upstream_tls(&self) -> Result<UpstreamTls, PullError> {
        self.upstream_tls
            .get_or_init(|| UpstreamTls::new(&[]).map(|(tls, _)| tls))
            .clone()
            .map_err(|e| PullError::Upstream(format!("no TLS client for upstream registries: {e}")))
    }

    /// Sets how long a cached tag is served before its upstream is asked
    /// again (tests shorten ECR's 24 hours).
    pub fn set_pull_through_refresh(&self, every: std::time::Duration) {
        self.pull_through_refresh_ms.store(
            every.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Whether tag `tag` of `name`, cached, is due a look at its upstream.
    pub(crate) fn tag_refresh_due(&self, scope: &Scope, name: &str, tag: &str, now: f64) -> bool {
        let every = self
            .pull_through_refresh_ms
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1000.0;
        meta::get::<meta::TagRecord>(self.store.as_ref(), &scope.tag(name, tag))
            .is_some_and(|t| now - t.upstream_checked() >= every)
    }

    /// Asks the upstream again for cached tag `tag` of `name`: the tag
    /// moves to what the upstream's names now; either way the check is
    /// recorded, so an upstream that cannot be reached is not asked on
    /// every pull. The cached image stays when the upstream fails (the
    /// error is answered for the log).
    pub(crate) async fn refresh_tag(
        &self,
        scope: &Scope,
        name: &str,
        tag: &str,
        rule: &ecr::PullThroughCacheRule,
        upstream_repo: &str,
    ) -> Result<(), PullError> {
        let fetched = match self.upstream(scope, rule) {
            Ok(mut upstream) => {
                self.fetch_manifest(&mut upstream, scope, name, upstream_repo, tag, Some(tag))
                    .await
            }
            Err(e) => Err(e),
        };
        let now = berth_util::time::now_epoch();
        if let Some(current) =
            meta::get::<meta::TagRecord>(self.store.as_ref(), &scope.tag(name, tag))
        {
            meta::mark_tag_checked(self.store.as_ref(), scope, name, tag, &current.digest, now)
                .await?;
        }
        fetched
    }

    /// Fetches `reference` (a tag or digest) of `upstream_repo` through
    /// `rule` into repository `name`, creating the repository if needed.
    pub(crate) async fn pull_through(
        &self,
        scope: &Scope,
        name: &str,
        reference: &str,
        rule: &ecr::PullThroughCacheRule,
        upstream_repo: &str,
    ) -> Result<(), PullError> {
        let mut upstream = self.upstream(scope, rule)?;
        self.ensure_repository(scope, name, Creation::PullThroughCache)
            .await?;
        let tag = (!reference.contains(':')).then_some(reference);
        self.fetch_manifest(&mut upstream, scope, name, upstream_repo, reference, tag)
            .await
    }

    async fn fetch_manifest(
        &self,
        upstream: &mut Upstream,
        scope: &Scope,
        name: &str,
        upstream_repo: &str,
        reference: &str,
        tag: Option<&str>,
    ) -> Result<(), PullError> {
        let response = upstream
            .get(
                &format!("/v2/{upstream_repo}/manifests/{reference}"),
                Some(MANIFEST_TYPES),
            )
            .await?;
        if response.status() == hyper::StatusCode::NOT_FOUND {
            return Err(PullError::NotFound(format!("{upstream_repo}:{reference}")));
        }
        if !response.status().is_success() {
            return Err(PullError::Upstream(format!(
                "the upstream registry answered {} for {upstream_repo}:{reference}",
                response.status()
            )));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| PullError::Upstream(e.to_string()))?
            .to_bytes();
        if bytes.len() > meta::MAX_MANIFEST {
            return Err(PullError::Upstream(
                "the upstream manifest is too large".into(),
            ));
        }
        let parsed = meta::parse_manifest(&bytes, content_type.as_deref())
            .map_err(|m| PullError::Upstream(format!("the upstream manifest is invalid: {m}")))?;
        let digest = if reference.contains(':') {
            let claimed =
                Digest::parse(reference).map_err(|e| PullError::Upstream(e.to_string()))?;
            if claimed.of_same_kind(&bytes) != claimed {
                return Err(PullError::Upstream(format!(
                    "the upstream manifest does not match digest {reference}"
                )));
            }
            reference.to_string()
        } else {
            Digest::sha256_of(&bytes).to_string()
        };
        for child in &parsed.children {
            if self.store.get(&scope.manifest(name, child)).is_none() {
                Box::pin(self.fetch_manifest(upstream, scope, name, upstream_repo, child, None))
                    .await?;
            }
        }
        for blob in parsed.blobs.iter().filter(|b| !b.foreign) {
            self.fetch_blob(upstream, scope, name, upstream_repo, &blob.digest)
                .await?;
        }
        let put = meta::put_manifest(
            self.store.as_ref(),
            scope,
            name,
            &bytes,
            &parsed,
            &digest,
            tag,
            berth_util::time::now_epoch(),
        )
        .await;
        match put {
            Ok(_) => Ok(()),
            Err(PutError::Store(e)) => Err(e.into()),
            Err(e) => Err(PullError::Upstream(format!(
                "the upstream image could not be stored: {e}"
            ))),
        }
    }

    async fn fetch_blob(
        &self,
        upstream: &mut Upstream,
        scope: &Scope,
        name: &str,
        upstream_repo: &str,
        digest: &str,
    ) -> Result<(), PullError> {
        let d = Digest::parse(digest).map_err(|e| PullError::Upstream(e.to_string()))?;
        match self.link_existing_blob(scope, name, &d).await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => return Err(PullError::Upstream(e.to_string())),
        }
        let response = upstream
            .get(&format!("/v2/{upstream_repo}/blobs/{digest}"), None)
            .await?;
        if !response.status().is_success() {
            return Err(PullError::Upstream(format!(
                "the upstream registry answered {} for blob {digest}",
                response.status()
            )));
        }
        let mut session = self
            .uploads
            .start_sealed(scope, name)
            .map_err(|e| PullError::Upstream(e.to_string()))?;
        let body = BodyStream::new(response.into_body());
        let stream = futures::StreamExt::filter_map(body, |frame| async move {
            match frame {
                Ok(f) => f.into_data().ok().map(Ok::<Bytes, String>),
                Err(e) => Some(Err(e.to_string())),
            }
        });
        let mut stream = Box::pin(stream);
        if let Err(e) = self.uploads.append(&mut session, &mut stream).await {
            self.uploads.cancel(session).await;
            return Err(PullError::Upstream(format!("fetching blob {digest}: {e}")));
        }
        self.complete_upload(session, &d)
            .await
            .map_err(|e| PullError::Upstream(format!("storing blob {digest}: {e}")))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_names_and_repositories() {
        assert_eq!(
            check_upstream("registry-1.docker.io", None),
            Ok(Some("docker-hub".into()))
        );
        assert_eq!(check_upstream("127.0.0.1:5000", None), Ok(None));
        // ECR's URLs have no scheme and mean HTTPS; http:// is plain HTTP.
        assert_eq!(scheme_and_host("quay.io"), ("https", "quay.io"));
        assert_eq!(
            scheme_and_host("http://127.0.0.1:5000"),
            ("http", "127.0.0.1:5000")
        );
        // Private authorities: PEM only.
        assert!(UpstreamTls::new(b"not a certificate").is_err());
        assert!(UpstreamTls::new(&[]).is_ok());
        assert!(check_upstream("https://quay.io", None).is_err());
        assert!(check_upstream("quay.io/x", None).is_err());
        assert!(check_upstream("quay.io", Some("nope")).is_err());
        let rule = |prefix: &str, up: Option<&str>| ecr::PullThroughCacheRule {
            ecr_repository_prefix: Some(prefix.into()),
            upstream_repository_prefix: up.map(str::to_string),
            ..Default::default()
        };
        assert_eq!(
            upstream_repository(&rule("hub", None), "hub/library/alpine").as_deref(),
            Some("library/alpine")
        );
        assert_eq!(
            upstream_repository(&rule("hub", Some("mirror")), "hub/alpine").as_deref(),
            Some("mirror/alpine")
        );
        assert_eq!(upstream_repository(&rule("hub", None), "hubble/x"), None);
        assert_eq!(
            upstream_repository(&rule("ROOT", None), "x/y").as_deref(),
            Some("x/y")
        );
    }

    #[test]
    fn bearer_challenges_parse() {
        let p = challenge(r#"Bearer realm="http://auth.test/token",service="registry",scope="repository:a/b:pull""#).unwrap();
        assert_eq!(p[0], ("realm".into(), "http://auth.test/token".into()));
        assert_eq!(p[2], ("scope".into(), "repository:a/b:pull".into()));
        assert!(challenge("Basic realm=x").is_none());
    }
}
