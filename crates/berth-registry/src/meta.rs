//! Repositories, manifests, tags and blob links in the Berth store.
//!
//! Layout, all under `/ecr/<account>/<region>/` (a repository name may hold
//! `/`, so its end is marked with `|`, which names cannot contain; that keeps
//! `a`'s records apart from `a/b`'s under prefix scans):
//!
//! - `repos/<name>`: the repository ([`RepoRecord`])
//! - `manifests/<name>|<digest>`: an image ([`ManifestRecord`], manifest bytes included)
//! - `tags/<name>|<tag>`: a tag ([`TagRecord`])
//! - `layers/<name>|<digest>`: a blob linked into the repository ([`LayerLink`])
//! - `referrers/<name>|<subject digest>|<digest>`: the referrers index (a descriptor)
//! - `uploads/<uuid>`: an upload session (`crate::uploads::UploadRecord`); its
//!   bytes are the file `<root>/uploads/<uuid>`
//!
//! Every change that checks state and writes happens in one store mutation.

use std::collections::{BTreeMap, BTreeSet};

use berth_store::{KeyValue, Op, ReadView, Store, StoreError, StoreExt};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;

pub const ROOT: &str = "/ecr/";

/// The account and region a request acts in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    pub account: String,
    pub region: String,
}

impl Scope {
    pub(crate) fn root(&self) -> String {
        format!("{ROOT}{}/{}/", self.account, self.region)
    }
    pub fn repos(&self) -> String {
        format!("{}repos/", self.root())
    }
    pub fn repo(&self, name: &str) -> String {
        format!("{}repos/{name}", self.root())
    }
    pub fn manifests(&self, name: &str) -> String {
        format!("{}manifests/{name}|", self.root())
    }
    pub fn manifest(&self, name: &str, digest: &str) -> String {
        format!("{}manifests/{name}|{digest}", self.root())
    }
    pub fn tags(&self, name: &str) -> String {
        format!("{}tags/{name}|", self.root())
    }
    pub fn tag(&self, name: &str, tag: &str) -> String {
        format!("{}tags/{name}|{tag}", self.root())
    }
    pub fn layers(&self, name: &str) -> String {
        format!("{}layers/{name}|", self.root())
    }
    pub fn layer(&self, name: &str, digest: &str) -> String {
        format!("{}layers/{name}|{digest}", self.root())
    }
    pub fn referrers(&self, name: &str, subject: &str) -> String {
        format!("{}referrers/{name}|{subject}|", self.root())
    }
    pub fn referrers_of_repo(&self, name: &str) -> String {
        format!("{}referrers/{name}|", self.root())
    }
    pub fn referrer(&self, name: &str, subject: &str, digest: &str) -> String {
        format!("{}referrers/{name}|{subject}|{digest}", self.root())
    }
    pub fn uploads(&self) -> String {
        format!("{}uploads/", self.root())
    }
    pub fn upload(&self, id: &uuid::Uuid) -> String {
        format!("{}uploads/{id}", self.root())
    }
    pub fn repo_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:ecr:{}:{}:repository/{name}",
            self.region, self.account
        )
    }
    /// Every prefix holding one repository's records.
    pub fn repo_prefixes(&self, name: &str) -> [String; 6] {
        [
            self.manifests(name),
            self.tags(name),
            self.layers(name),
            self.referrers_of_repo(name),
            self.replication_statuses(name),
            self.lifecycle_preview(name),
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagPair {
    pub key: String,
    pub value: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExclusionFilter {
    pub filter_type: String,
    pub filter: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoRecord {
    pub name: String,
    pub created_at: f64,
    pub image_tag_mutability: String,
    #[serde(default)]
    pub mutability_exclusions: Vec<ExclusionFilter>,
    pub scan_on_push: bool,
    pub encryption_type: String,
    #[serde(default)]
    pub kms_key: Option<String>,
    #[serde(default)]
    pub tags: Vec<TagPair>,
    #[serde(default)]
    pub policy: Option<String>,
    #[serde(default)]
    pub lifecycle_policy: Option<String>,
    #[serde(default)]
    pub lifecycle_evaluated_at: Option<f64>,
}

impl RepoRecord {
    /// Whether a tag may not move to another image.
    pub fn tag_is_immutable(&self, tag: &str) -> bool {
        let excluded = || {
            self.mutability_exclusions
                .iter()
                .any(|f| wildcard_match(&f.filter, tag))
        };
        match self.image_tag_mutability.as_str() {
            "IMMUTABLE" => true,
            "IMMUTABLE_WITH_EXCLUSION" => !excluded(),
            "MUTABLE_WITH_EXCLUSION" => excluded(),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRecord {
    pub digest: String,
    pub media_type: String,
    /// The manifest exactly as pushed (manifests are JSON, hence UTF-8).
    pub manifest: String,
    /// Sum of the layer sizes (ECR's `imageSizeInBytes`).
    pub image_size: i64,
    pub pushed_at: f64,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config_media_type: Option<String>,
    #[serde(default)]
    pub subject: Option<String>,
    /// Blobs the manifest references (config and layers).
    #[serde(default)]
    pub blobs: Vec<String>,
    /// Manifests an index references.
    #[serde(default)]
    pub children: Vec<String>,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TagRecord {
    pub digest: String,
    pub pushed_at: f64,
    /// When a pull-through cache last asked its upstream registry what the
    /// tag names (`pushed_at` until then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_checked_at: Option<f64>,
}

impl TagRecord {
    /// When the tag was last fetched from or checked against an upstream.
    pub fn upstream_checked(&self) -> f64 {
        self.upstream_checked_at.unwrap_or(self.pushed_at)
    }
}

/// Records that tag `tag` of `repo` was checked against its upstream at
/// `now`, if it still names `digest` (a newer push or refresh wins).
pub async fn mark_tag_checked(
    store: &dyn Store,
    scope: &Scope,
    repo: &str,
    tag: &str,
    digest: &str,
    now: f64,
) -> Result<(), StoreError> {
    let key = scope.tag(repo, tag);
    let digest = digest.to_string();
    store
        .update(move |view| {
            let Some(mut record) = view
                .get(&key)
                .and_then(|kv| serde_json::from_slice::<TagRecord>(&kv.value).ok())
            else {
                return Ok::<_, ()>((vec![], ()));
            };
            if record.digest != digest {
                return Ok((vec![], ()));
            }
            record.upstream_checked_at = Some(now);
            Ok((vec![Op::put(key.clone(), encode(&record))], ()))
        })
        .await
        .map(|_| ())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerLink {
    pub size: u64,
    pub linked_at: f64,
}

pub fn decode<T: serde::de::DeserializeOwned>(kv: &KeyValue) -> Option<T> {
    match serde_json::from_slice(&kv.value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(key = %kv.key, error = %e, "corrupt registry record");
            None
        }
    }
}

pub fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serializing these plain records cannot fail.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

pub fn get<T: serde::de::DeserializeOwned>(
    view: &(impl ReadView + ?Sized),
    key: &str,
) -> Option<T> {
    view.get(key).and_then(|kv| decode(&kv))
}

/// Every key-value under `prefix`, in key order.
pub fn scan(view: &(impl ReadView + ?Sized), prefix: &str) -> Vec<KeyValue> {
    let mut out = Vec::new();
    loop {
        let after = out.last().map(|kv: &KeyValue| kv.key.clone());
        let page = view.range(prefix, after.as_deref(), 1024);
        let done = page.len() < 1024;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// `*` matches any run of characters; everything else matches itself.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// ECR's repository name rule: 2–256 characters of lowercase components
/// separated by `/`, each `[a-z0-9]+` joined by `.`, `_`, `__` or dashes.
pub fn valid_repository_name(name: &str) -> bool {
    if name.len() < 2 || name.len() > 256 {
        return false;
    }
    name.split('/').all(|component| {
        let b = component.as_bytes();
        if b.is_empty() {
            return false;
        }
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            // A separator run: ".", "_", "__" or one or more "-".
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &component[start..i];
            let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-');
            if !ok {
                return false;
            }
        }
        true
    })
}

/// The distribution spec's tag rule: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"._-".contains(c))
}

// --- manifests -------------------------------------------------------------

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Manifests are small JSON documents; distribution refuses more than 4 MiB.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

/// A blob a manifest names.
#[derive(Clone, Debug, PartialEq)]
pub struct BlobRef {
    pub digest: String,
    pub size: i64,
    /// Foreign (non-distributable) layers live elsewhere and are not checked.
    pub foreign: bool,
}

/// What the registry needs to know about a manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedManifest {
    pub media_type: String,
    pub blobs: Vec<BlobRef>,
    pub children: Vec<String>,
    pub subject: Option<String>,
    pub artifact_type: Option<String>,
    pub config_media_type: Option<String>,
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    media_type: Option<String>,
    digest: Option<String>,
    size: Option<i64>,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<RawDescriptor>,
    layers: Option<Vec<RawDescriptor>>,
    manifests: Option<Vec<RawDescriptor>>,
    subject: Option<RawDescriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

fn descriptor_digest(d: &RawDescriptor, what: &str) -> Result<String, String> {
    let digest = d
        .digest
        .as_deref()
        .ok_or_else(|| format!("{what} has no digest"))?;
    Digest::parse(digest).map_err(|e| format!("{what}: {e}"))?;
    if d.size.is_none_or(|s| s < 0) {
        return Err(format!("{what} has no valid size"));
    }
    Ok(digest.to_string())
}

/// Parses and checks a manifest. `declared` is the media type the client
/// sent (Content-Type or ECR's `imageManifestMediaType`); when both it and
/// the manifest's own `mediaType` are present they must agree.
pub fn parse_manifest(bytes: &[u8], declared: Option<&str>) -> Result<ParsedManifest, String> {
    if bytes.len() > MAX_MANIFEST {
        return Err(format!("manifest is larger than {MAX_MANIFEST} bytes"));
    }
    let raw: RawManifest =
        serde_json::from_slice(bytes).map_err(|e| format!("manifest is not valid JSON: {e}"))?;
    let declared = declared
        .map(|d| d.split(';').next().unwrap_or("").trim())
        .filter(|d| !d.is_empty() && *d != "application/json" && *d != "application/octet-stream");
    if let (Some(d), Some(own)) = (declared, raw.media_type.as_deref()) {
        if d != own {
            return Err(format!(
                "the manifest's mediaType '{own}' does not match the declared '{d}'"
            ));
        }
    }
    let media_type = declared
        .map(str::to_string)
        .or(raw.media_type.clone())
        .unwrap_or_else(|| {
            if raw.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if raw.schema_version != Some(2) {
        return Err("only schemaVersion 2 manifests are supported".into());
    }
    let subject = match &raw.subject {
        Some(s) => Some(descriptor_digest(s, "subject")?),
        None => None,
    };
    let mut parsed = ParsedManifest {
        media_type: media_type.clone(),
        blobs: Vec::new(),
        children: Vec::new(),
        subject,
        artifact_type: raw.artifact_type.clone(),
        config_media_type: None,
        annotations: raw.annotations.clone(),
    };
    match media_type.as_str() {
        DOCKER_MANIFEST | OCI_MANIFEST => {
            let config = raw
                .config
                .as_ref()
                .ok_or("an image manifest needs a config")?;
            parsed.blobs.push(BlobRef {
                digest: descriptor_digest(config, "config")?,
                size: config.size.unwrap_or(0),
                foreign: false,
            });
            parsed.config_media_type = config.media_type.clone();
            let layers = raw.layers.as_deref().unwrap_or_default();
            if media_type == DOCKER_MANIFEST && layers.is_empty() {
                return Err("a Docker image manifest needs at least one layer".into());
            }
            for (i, layer) in layers.iter().enumerate() {
                let foreign = layer.urls.as_ref().is_some_and(|u| !u.is_empty())
                    || layer
                        .media_type
                        .as_deref()
                        .is_some_and(|m| m.contains("foreign") || m.contains("nondistributable"));
                parsed.blobs.push(BlobRef {
                    digest: descriptor_digest(layer, &format!("layers[{i}]"))?,
                    size: layer.size.unwrap_or(0),
                    foreign,
                });
            }
        }
        DOCKER_LIST | OCI_INDEX => {
            let manifests = raw
                .manifests
                .as_ref()
                .ok_or("an index needs a manifests list")?;
            for (i, m) in manifests.iter().enumerate() {
                parsed
                    .children
                    .push(descriptor_digest(m, &format!("manifests[{i}]"))?);
            }
        }
        other => return Err(format!("manifest media type '{other}' is not supported")),
    }
    Ok(parsed)
}

/// Why a manifest could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    #[error("repository not found")]
    RepositoryNotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("blobs unknown to the repository: {}", .0.join(", "))]
    BlobsUnknown(Vec<String>),
    #[error("manifests unknown to the repository: {}", .0.join(", "))]
    ManifestsUnknown(Vec<String>),
    #[error("tag '{0}' is immutable")]
    TagImmutable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a manifest put changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The manifest was already stored (and the tag, if any, already named it).
    pub unchanged: bool,
}

/// Stores a parsed manifest and points `tag` at it, after checking that the
/// repository exists, that it links every referenced blob and manifest, and
/// that the tag may move; all in one mutation.
#[allow(clippy::too_many_arguments)]
pub async fn put_manifest(
    store: &dyn Store,
    scope: &Scope,
    repo: &str,
    bytes: &[u8],
    parsed: &ParsedManifest,
    digest: &str,
    tag: Option<&str>,
    now: f64,
) -> Result<PutOutcome, PutError> {
    let manifest = String::from_utf8(bytes.to_vec())
        .map_err(|_| PutError::Invalid("the manifest is not UTF-8 JSON".into()))?;
    let image_size: i64 = parsed
        .blobs
        .iter()
        // The first blob of an image manifest is its config, not a layer.
        .skip(1)
        .map(|b| b.size)
        .sum();
    let (scope, repo, parsed, digest, tag) = (
        scope.clone(),
        repo.to_string(),
        parsed.clone(),
        digest.to_string(),
        tag.map(str::to_string),
    );
    let result = store
        .update(move |view| {
            let record: RepoRecord =
                get(view, &scope.repo(&repo)).ok_or(PutError::RepositoryNotFound)?;
            let missing: Vec<String> = parsed
                .blobs
                .iter()
                .filter(|b| !b.foreign && view.get(&scope.layer(&repo, &b.digest)).is_none())
                .map(|b| b.digest.clone())
                .collect();
            if !missing.is_empty() {
                return Err(PutError::BlobsUnknown(missing));
            }
            let mut child_size = 0i64;
            let mut missing = Vec::new();
            for child in &parsed.children {
                match get::<ManifestRecord>(view, &scope.manifest(&repo, child)) {
                    Some(m) => child_size += m.image_size,
                    None => missing.push(child.clone()),
                }
            }
            if !missing.is_empty() {
                return Err(PutError::ManifestsUnknown(missing));
            }
            let existing: Option<ManifestRecord> = get(view, &scope.manifest(&repo, &digest));
            let current_tag: Option<TagRecord> =
                tag.as_ref().and_then(|t| get(view, &scope.tag(&repo, t)));
            if let (Some(t), Some(current)) = (&tag, &current_tag) {
                if current.digest != digest && record.tag_is_immutable(t) {
                    return Err(PutError::TagImmutable(t.clone()));
                }
            }
            let tag_unchanged = match (&tag, &current_tag) {
                (None, _) => true,
                (Some(_), Some(current)) => current.digest == digest,
                (Some(_), None) => false,
            };
            let mut ops = Vec::new();
            if existing.is_none() {
                let record = ManifestRecord {
                    digest: digest.clone(),
                    media_type: parsed.media_type.clone(),
                    manifest: manifest.clone(),
                    image_size: if parsed.children.is_empty() {
                        image_size
                    } else {
                        child_size
                    },
                    pushed_at: now,
                    artifact_type: parsed.artifact_type.clone(),
                    config_media_type: parsed.config_media_type.clone(),
                    subject: parsed.subject.clone(),
                    blobs: parsed.blobs.iter().map(|b| b.digest.clone()).collect(),
                    children: parsed.children.clone(),
                    annotations: parsed.annotations.clone(),
                };
                ops.push(Op::put(scope.manifest(&repo, &digest), encode(&record)));
                if let Some(subject) = &parsed.subject {
                    let descriptor = referrer_descriptor(&record);
                    ops.push(Op::put(
                        scope.referrer(&repo, subject, &digest),
                        encode(&descriptor),
                    ));
                }
            }
            if let (Some(t), false) = (&tag, tag_unchanged) {
                ops.push(Op::put(
                    scope.tag(&repo, t),
                    encode(&TagRecord {
                        digest: digest.clone(),
                        pushed_at: now,
                        upstream_checked_at: None,
                    }),
                ));
            }
            Ok((
                ops,
                PutOutcome {
                    unchanged: existing.is_some() && tag_unchanged,
                },
            ))
        })
        .await?;
    result.map(|(_, outcome)| outcome)
}

/// The descriptor the referrers API lists for a manifest.
pub fn referrer_descriptor(m: &ManifestRecord) -> serde_json::Value {
    let mut d = serde_json::json!({
        "mediaType": m.media_type,
        "digest": m.digest,
        "size": m.manifest.len(),
    });
    if let Some(t) = m.artifact_type.as_ref().or(m.config_media_type.as_ref()) {
        d["artifactType"] = serde_json::Value::String(t.clone());
    }
    if let Some(a) = &m.annotations {
        d["annotations"] = serde_json::json!(a);
    }
    d
}

/// The ops that delete image `digest` of `repo` with every tag naming it.
pub fn delete_image_ops(view: &dyn ReadView, scope: &Scope, repo: &str, digest: &str) -> Vec<Op> {
    let Some(record) = get::<ManifestRecord>(view, &scope.manifest(repo, digest)) else {
        return Vec::new();
    };
    let mut ops = vec![Op::delete(scope.manifest(repo, digest))];
    for kv in scan(view, &scope.tags(repo)) {
        if decode::<TagRecord>(&kv).is_some_and(|t| t.digest == digest) {
            ops.push(Op::delete(kv.key));
        }
    }
    if let Some(subject) = &record.subject {
        ops.push(Op::delete(scope.referrer(repo, subject, digest)));
    }
    ops
}

/// An image of a repository as the ECR API and lifecycle rules see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageView {
    pub record: ManifestRecord,
    pub tags: Vec<String>,
}

/// Every image of `repo` with its tags, ordered by digest.
pub fn images(view: &(impl ReadView + ?Sized), scope: &Scope, repo: &str) -> Vec<ImageView> {
    let mut tags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let prefix = scope.tags(repo);
    for kv in scan(view, &prefix) {
        if let Some(t) = decode::<TagRecord>(&kv) {
            tags.entry(t.digest)
                .or_default()
                .push(kv.key[prefix.len()..].to_string());
        }
    }
    scan(view, &scope.manifests(repo))
        .iter()
        .filter_map(decode::<ManifestRecord>)
        .map(|record| ImageView {
            tags: tags.remove(&record.digest).unwrap_or_default(),
            record,
        })
        .collect()
}

/// Every digest any manifest or link of any repository references.
pub fn referenced_blobs(view: &(impl ReadView + ?Sized)) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for kv in scan(view, ROOT) {
        let rest = &kv.key[ROOT.len()..];
        let mut parts = rest.splitn(3, '/');
        let (_, _, tail) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
        if let Some(link) = tail.strip_prefix("layers/") {
            if let Some((_, digest)) = link.rsplit_once('|') {
                out.insert(digest.to_string());
            }
        } else if tail.starts_with("manifests/") {
            if let Some(m) = decode::<ManifestRecord>(&kv) {
                out.extend(m.blobs);
            }
        }
    }
    out
}

/// Every (account, region) with records, found with one short range read
/// per scope rather than a scan of every record.
pub fn scopes(view: &(impl ReadView + ?Sized)) -> Vec<Scope> {
    let mut out: Vec<Scope> = Vec::new();
    let mut after: Option<String> = None;
    while let Some(kv) = view.range(ROOT, after.as_deref(), 1).pop() {
        let rest = &kv.key[ROOT.len()..];
        let mut parts = rest.splitn(3, '/');
        let (Some(account), Some(region), Some(_)) = (parts.next(), parts.next(), parts.next())
        else {
            after = Some(kv.key);
            continue;
        };
        let scope = Scope {
            account: account.to_string(),
            region: region.to_string(),
        };
        if out.last() == Some(&scope) {
            // A key past the skip below (it would take U+10FFFF): step on.
            after = Some(kv.key);
            continue;
        }
        // Past every key of this scope.
        after = Some(format!("{}\u{10FFFF}", scope.root()));
        out.push(scope);
    }
    out
}

/// Every upload session in the store: its key, id and record.
pub fn all_uploads(
    view: &(impl ReadView + ?Sized),
) -> Vec<(String, uuid::Uuid, crate::uploads::UploadRecord)> {
    let mut out = Vec::new();
    for scope in scopes(view) {
        let prefix = scope.uploads();
        for kv in scan(view, &prefix) {
            let Ok(id) = uuid::Uuid::parse_str(&kv.key[prefix.len()..]) else {
                continue;
            };
            if let Some(record) = decode(&kv) {
                out.push((kv.key.clone(), id, record));
            }
        }
    }
    out
}

/// Every (scope, repository) in the store.
pub fn all_repositories(view: &(impl ReadView + ?Sized)) -> Vec<(Scope, RepoRecord)> {
    let mut out = Vec::new();
    for kv in scan(view, ROOT) {
        let rest = &kv.key[ROOT.len()..];
        let mut parts = rest.splitn(3, '/');
        let (Some(account), Some(region), Some(tail)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if tail.starts_with("repos/") {
            if let Some(record) = decode::<RepoRecord>(&kv) {
                out.push((
                    Scope {
                        account: account.to_string(),
                        region: region.to_string(),
                    },
                    record,
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_ecr() {
        for ok in [
            "ab",
            "a/b",
            "my-app",
            "team/my_app.v2",
            "a__b",
            "a---b",
            "x/y/z9",
        ] {
            assert!(valid_repository_name(ok), "{ok}");
        }
        for bad in [
            "a", "A/b", "-ab", "ab-", "a//b", "a/", "a..b", "a_.b", "a___b", "a b",
        ] {
            assert!(!valid_repository_name(bad), "{bad}");
        }
        assert!(!valid_repository_name(&"a".repeat(257)));
    }

    #[test]
    fn tags_follow_the_spec() {
        assert!(valid_tag("latest"));
        assert!(valid_tag("_v1.2-rc"));
        assert!(!valid_tag(".hidden"));
        assert!(!valid_tag(""));
        assert!(!valid_tag(&"a".repeat(129)));
    }

    #[tokio::test]
    async fn scopes_are_found_without_a_full_scan() {
        let store = berth_store::MemoryStore::new();
        for key in [
            "/ecr/111111111111/eu-west-1/repos/a",
            "/ecr/111111111111/eu-west-1/uploads/x",
            "/ecr/111111111111/us-east-1/repos/b",
            "/ecr/222222222222/us-east-1/tags/b|v1",
            "/ecr/malformed",
        ] {
            store.put(key, Bytes::from_static(b"{}")).await.unwrap();
        }
        let found: Vec<String> = scopes(&store)
            .into_iter()
            .map(|s| format!("{}/{}", s.account, s.region))
            .collect();
        assert_eq!(
            found,
            [
                "111111111111/eu-west-1",
                "111111111111/us-east-1",
                "222222222222/us-east-1"
            ]
        );
    }

    #[tokio::test]
    async fn a_tag_check_is_recorded_only_while_the_tag_names_the_checked_digest() {
        let store = berth_store::MemoryStore::new();
        let scope = Scope {
            account: "111111111111".into(),
            region: "us-east-1".into(),
        };
        let record = TagRecord {
            digest: "sha256:a".into(),
            pushed_at: 10.0,
            upstream_checked_at: None,
        };
        assert_eq!(record.upstream_checked(), 10.0);
        store
            .put(&scope.tag("r", "t"), encode(&record))
            .await
            .unwrap();
        mark_tag_checked(&store, &scope, "r", "t", "sha256:a", 20.0)
            .await
            .unwrap();
        let read = |store: &berth_store::MemoryStore| {
            get::<TagRecord>(store, &scope.tag("r", "t")).unwrap()
        };
        assert_eq!(read(&store).upstream_checked(), 20.0);
        assert_eq!(read(&store).pushed_at, 10.0);
        // The tag moved meanwhile: the check was of another image.
        mark_tag_checked(&store, &scope, "r", "t", "sha256:b", 30.0)
            .await
            .unwrap();
        assert_eq!(read(&store).upstream_checked(), 20.0);
        // No such tag: nothing written.
        mark_tag_checked(&store, &scope, "r", "gone", "sha256:a", 30.0)
            .await
            .unwrap();
        assert!(get::<TagRecord>(&store, &scope.tag("r", "gone")).is_none());
    }

    #[test]
    fn wildcards() {
        assert!(wildcard_match("prod*", "prod-1"));
        assert!(wildcard_match("*-rc*", "v1-rc2"));
        assert!(wildcard_match("*", ""));
        assert!(!wildcard_match("prod", "prod-1"));
        assert!(!wildcard_match("a*c", "abd"));
    }

    #[test]
    fn immutability_with_exclusions() {
        let mut r = RepoRecord {
            name: "r".into(),
            created_at: 0.0,
            image_tag_mutability: "IMMUTABLE".into(),
            mutability_exclusions: vec![ExclusionFilter {
                filter_type: "WILDCARD".into(),
                filter: "dev-*".into(),
            }],
            scan_on_push: false,
            encryption_type: "AES256".into(),
            kms_key: None,
            tags: vec![],
            policy: None,
            lifecycle_policy: None,
            lifecycle_evaluated_at: None,
        };
        assert!(r.tag_is_immutable("dev-1"));
        r.image_tag_mutability = "IMMUTABLE_WITH_EXCLUSION".into();
        assert!(!r.tag_is_immutable("dev-1"));
        assert!(r.tag_is_immutable("v1"));
        r.image_tag_mutability = "MUTABLE_WITH_EXCLUSION".into();
        assert!(r.tag_is_immutable("dev-1"));
        assert!(!r.tag_is_immutable("v1"));
    }

    #[test]
    fn parses_manifests() {
        let d = |c: &str| format!("sha256:{}", c.repeat(64));
        let m = serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": d("a"), "size": 10},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": d("b"), "size": 100}]
        });
        let p = parse_manifest(m.to_string().as_bytes(), Some(DOCKER_MANIFEST)).unwrap();
        assert_eq!(p.blobs.len(), 2);
        assert!(parse_manifest(m.to_string().as_bytes(), Some(OCI_MANIFEST)).is_err());
        let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": d("c"), "size": 5}],
                                     "subject": {"mediaType": OCI_MANIFEST, "digest": d("e"), "size": 1}});
        let p = parse_manifest(idx.to_string().as_bytes(), None).unwrap();
        assert_eq!(p.media_type, OCI_INDEX);
        assert_eq!(p.children, vec![d("c")]);
        assert_eq!(p.subject, Some(d("e")));
        assert!(parse_manifest(b"{\"schemaVersion\": 1}", None).is_err());
        assert!(parse_manifest(b"not json", None).is_err());
    }
}
