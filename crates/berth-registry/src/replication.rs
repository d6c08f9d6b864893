//! Replication between Berth's registries (one per account and region):
//! after an image is stored, the registry's replication configuration names
//! the destinations its repository goes to. Blobs are content-addressed and
//! shared by every registry of the installation, so replicating links the
//! blobs into the destination repository and stores the same manifest and
//! tag there; no bytes are copied. The destination repository is created
//! when missing, from the repository creation template that applies for
//! REPLICATION (or ECR's defaults). Each image's per-destination outcome is
//! kept for DescribeImageReplicationStatus (IN_PROGRESS, then COMPLETE or
//! FAILED with the reason).

use std::time::Duration;

use berth_model::shapes::ecr;
use berth_store::{Op, StoreExt};

use crate::digest::Digest;
use crate::gc::CompleteError;
use crate::meta::{self, ManifestRecord, PutError, Scope};
use crate::settings::{self, Creation, ReplicationRecord};
use crate::Registry;

/// Why an image could not be replicated to one destination.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("{0}")]
    Refused(String),
    #[error("the store failed: {0}")]
    Store(#[from] berth_store::StoreError),
}

impl Registry {
    /// The registries `repo` of `scope` replicates to, per its replication
    /// configuration (a rule without filters takes every repository).
    pub(crate) fn replication_destinations(&self, scope: &Scope, repo: &str) -> Vec<Scope> {
        let Some(config) = meta::get::<ecr::ReplicationConfiguration>(
            self.store.as_ref(),
            &scope.replication_configuration(),
        ) else {
            return Vec::new();
        };
        let mut out: Vec<Scope> = Vec::new();
        for rule in config.rules.iter().flatten() {
            let filters = rule.repository_filters.as_deref().unwrap_or_default();
            let selected = filters.is_empty()
                || filters.iter().any(|f| {
                    settings::filter_matches(
                        f.filter_type.as_deref().unwrap_or(""),
                        f.filter.as_deref().unwrap_or(""),
                        repo,
                    )
                });
            if !selected {
                continue;
            }
            for d in rule.destinations.iter().flatten() {
                let dest = Scope {
                    account: d.registry_id.clone().unwrap_or_default(),
                    region: d.region.clone().unwrap_or_default(),
                };
                if dest != *scope && !out.contains(&dest) {
                    out.push(dest);
                }
            }
        }
        out
    }

    /// Starts replicating image `digest` (pushed as `tag`) of `repo`, if the
    /// configuration says so; returns at once.
    pub(crate) fn replicate_after_push(
        &self,
        scope: &Scope,
        repo: &str,
        digest: &str,
        tag: Option<&str>,
    ) {
        let destinations = self.replication_destinations(scope, repo);
        if destinations.is_empty() {
            return;
        }
        let Some(registry) = self.me.upgrade() else {
            return;
        };
        let (scope, repo, digest, tag) = (
            scope.clone(),
            repo.to_string(),
            digest.to_string(),
            tag.map(str::to_string),
        );
        tokio::spawn(async move {
            registry
                .replicate(&scope, &repo, &digest, tag.as_deref(), &destinations)
                .await;
        });
    }

    /// Replicates one image to `destinations`, recording each outcome.
    pub(crate) async fn replicate(
        &self,
        scope: &Scope,
        repo: &str,
        digest: &str,
        tag: Option<&str>,
        destinations: &[Scope],
    ) {
        let status =
            |d: &Scope, state: &str, failure: Option<String>| ecr::ImageReplicationStatus {
                region: Some(d.region.clone()),
                registry_id: Some(d.account.clone()),
                status: Some(state.to_string()),
                failure_code: failure,
            };
        let key = scope.replication_status(repo, digest);
        let started: Vec<ecr::ImageReplicationStatus> = destinations
            .iter()
            .map(|d| status(d, "IN_PROGRESS", None))
            .collect();
        let began = Some((tag.map(str::to_string), berth_util::time::now_epoch()));
        self.record_statuses(&key, started, began).await;
        for d in destinations {
            let outcome = self.replicate_to(scope, repo, digest, tag, d).await;
            let entry = match outcome {
                Ok(()) => status(d, "COMPLETE", None),
                Err(e) => {
                    tracing::warn!(repository = %repo, %digest, destination = %d.region, error = %e, "replication failed");
                    status(d, "FAILED", Some(e.to_string()))
                }
            };
            self.record_statuses(&key, vec![entry], None).await;
        }
    }

    /// Merges `entries` into the status record at `key` (by destination);
    /// `began`: the pushed tag and when replication started.
    async fn record_statuses(
        &self,
        key: &str,
        entries: Vec<ecr::ImageReplicationStatus>,
        began: Option<(Option<String>, f64)>,
    ) {
        let key = key.to_string();
        let result = self
            .store
            .update(move |view| {
                let mut record: ReplicationRecord = meta::get(view, &key).unwrap_or_default();
                if let Some((tag, at)) = &began {
                    record.tag = tag.clone();
                    record.started_at = *at;
                }
                for e in &entries {
                    match record
                        .statuses
                        .iter_mut()
                        .find(|s| s.region == e.region && s.registry_id == e.registry_id)
                    {
                        Some(s) => *s = e.clone(),
                        None => record.statuses.push(e.clone()),
                    }
                }
                Ok::<_, std::convert::Infallible>((
                    vec![Op::put(key.clone(), meta::encode(&record))],
                    (),
                ))
            })
            .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "recording a replication status failed");
        }
    }

    /// Replicates again every image whose replication a crash cut short:
    /// destinations still IN_PROGRESS in a record started before
    /// `started_before` (epoch seconds). Replicating is idempotent, so one
    /// that was in fact still running elsewhere is only repeated. Answers
    /// how many images it replicated again.
    pub(crate) async fn resume_replications(&self, started_before: f64) -> usize {
        let mut scopes: Vec<Scope> = Vec::new();
        for (scope, _) in meta::all_repositories(self.store.as_ref()) {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
        let mut resumed = 0;
        for scope in scopes {
            let prefix = format!("{}replication/", scope.root());
            for kv in meta::scan(self.store.as_ref(), &prefix) {
                let Some(record) = meta::decode::<ReplicationRecord>(&kv) else {
                    continue;
                };
                if record.started_at >= started_before {
                    continue;
                }
                let unfinished: Vec<Scope> = record
                    .statuses
                    .iter()
                    .filter(|s| s.status.as_deref() == Some("IN_PROGRESS"))
                    .map(|s| Scope {
                        account: s.registry_id.clone().unwrap_or_default(),
                        region: s.region.clone().unwrap_or_default(),
                    })
                    .collect();
                let Some((repo, digest)) = kv.key[prefix.len()..].split_once('|') else {
                    continue;
                };
                if unfinished.is_empty() {
                    continue;
                }
                tracing::info!(repository = %repo, %digest, "replicating an image again after an interruption");
                self.replicate(&scope, repo, digest, record.tag.as_deref(), &unfinished)
                    .await;
                resumed += 1;
            }
        }
        resumed
    }

    async fn replicate_to(
        &self,
        source: &Scope,
        repo: &str,
        digest: &str,
        tag: Option<&str>,
        destination: &Scope,
    ) -> Result<(), ReplicationError> {
        if destination.account != source.account {
            return Err(ReplicationError::Refused(format!(
                "Berth replicates between the regions of one account; registry {} is another account's",
                destination.account
            )));
        }
        self.ensure_repository(destination, repo, Creation::Replication)
            .await?;
        self.copy_image(source, repo, digest, destination, tag)
            .await
    }

    /// Creates repository `name` of `scope` (from the creation template that
    /// applies for `how`, or with ECR's defaults) unless it exists. With
    /// `only_with_template` (CREATE_ON_PUSH) nothing is created when no
    /// template applies. Returns whether it exists now.
    pub(crate) async fn ensure_repository(
        &self,
        scope: &Scope,
        name: &str,
        how: Creation,
    ) -> Result<bool, berth_store::StoreError> {
        if self.store.get(&scope.repo(name)).is_some() {
            return Ok(true);
        }
        let (scope, name) = (scope.clone(), name.to_string());
        let (_, exists) = self
            .store
            .update(move |view| {
                if view.get(&scope.repo(&name)).is_some() {
                    return Ok::<_, std::convert::Infallible>((Vec::new(), true));
                }
                let template = settings::template_for(view, &scope, &name, how);
                if template.is_none() && how == Creation::CreateOnPush {
                    return Ok((Vec::new(), false));
                }
                let record = settings::new_repository(
                    &name,
                    template.as_ref(),
                    berth_util::time::now_epoch(),
                );
                Ok((
                    vec![Op::put(scope.repo(&name), meta::encode(&record))],
                    true,
                ))
            })
            .await?
            .unwrap_or_else(|never| match never {});
        Ok(exists)
    }

    /// Links `digest`, a blob file that exists, into `repo` of `scope`.
    pub(crate) async fn link_existing_blob(
        &self,
        scope: &Scope,
        repo: &str,
        digest: &Digest,
    ) -> Result<bool, ReplicationError> {
        if self
            .store
            .get(&scope.layer(repo, &digest.to_string()))
            .is_some()
        {
            return Ok(true);
        }
        for _ in 0..50 {
            let size = match self.blobs.size(digest) {
                Ok(Some(size)) => size,
                Ok(None) => return Ok(false),
                Err(e) => return Err(ReplicationError::Refused(e.to_string())),
            };
            if self.blobs.touch(digest).is_err() {
                return Ok(false);
            }
            match self.link_blob(scope, repo, digest, size, None).await {
                Ok(()) => {}
                Err(CompleteError::Sweeping) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => return Err(ReplicationError::Refused(e.to_string())),
            }
            if matches!(self.blobs.size(digest), Ok(Some(_))) {
                return Ok(true);
            }
            let key = scope.layer(repo, &digest.to_string());
            self.store.delete(&key).await?;
            return Ok(false);
        }
        Err(ReplicationError::Refused(format!(
            "blob {digest} stayed marked by garbage collection"
        )))
    }

    /// Stores image `digest` of `repo` in `source` (and the images an index
    /// references) in the same repository of `destination`, tagged `tag`.
    async fn copy_image(
        &self,
        source: &Scope,
        repo: &str,
        digest: &str,
        destination: &Scope,
        tag: Option<&str>,
    ) -> Result<(), ReplicationError> {
        let record: ManifestRecord = meta::get(self.store.as_ref(), &source.manifest(repo, digest))
            .ok_or_else(|| {
                ReplicationError::Refused(format!("image {digest} is no longer in {repo}"))
            })?;
        for child in &record.children {
            Box::pin(self.copy_image(source, repo, child, destination, None)).await?;
        }
        for blob in &record.blobs {
            if self.store.get(&source.layer(repo, blob)).is_none() {
                // A foreign layer: it lives elsewhere and is not linked.
                continue;
            }
            let d = Digest::parse(blob).map_err(|e| ReplicationError::Refused(e.to_string()))?;
            if !self.link_existing_blob(destination, repo, &d).await? {
                return Err(ReplicationError::Refused(format!(
                    "blob {blob} is missing from the blob store"
                )));
            }
        }
        let parsed = meta::parse_manifest(record.manifest.as_bytes(), Some(&record.media_type))
            .map_err(ReplicationError::Refused)?;
        let put = meta::put_manifest(
            self.store.as_ref(),
            destination,
            repo,
            record.manifest.as_bytes(),
            &parsed,
            digest,
            tag,
            berth_util::time::now_epoch(),
        )
        .await;
        match put {
            Ok(_) => Ok(()),
            Err(PutError::Store(e)) => Err(e.into()),
            Err(PutError::TagImmutable(t)) => Err(ReplicationError::Refused(format!(
                "the tag '{t}' is immutable in the destination repository and names another image"
            ))),
            Err(e) => Err(ReplicationError::Refused(e.to_string())),
        }
    }
}

/// Stores a small image (config and one layer) as `tag` of `repo`.
#[cfg(test)]
pub(crate) async fn push_test_image(
    registry: &Registry,
    scope: &Scope,
    repo: &str,
    tag: &str,
    layer: &[u8],
) -> String {
    let config = format!("{{\"architecture\":\"amd64\",\"os\":\"linux\",\"tag\":\"{tag}\"}}");
    let mut descriptors = Vec::new();
    for data in [config.as_bytes(), layer] {
        let digest = Digest::sha256_of(data);
        let mut session = registry.uploads.start_sealed(scope, repo).unwrap();
        let body =
            futures::stream::iter(vec![Ok::<_, String>(bytes::Bytes::copy_from_slice(data))]);
        registry.uploads.append(&mut session, body).await.unwrap();
        registry.complete_upload(session, &digest).await.unwrap();
        descriptors.push((digest.to_string(), data.len()));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": meta::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": descriptors[0].0, "size": descriptors[0].1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": descriptors[1].0, "size": descriptors[1].1}],
    })
    .to_string();
    let parsed = meta::parse_manifest(manifest.as_bytes(), None).unwrap();
    let digest = Digest::sha256_of(manifest.as_bytes()).to_string();
    meta::put_manifest(
        registry.store.as_ref(),
        scope,
        repo,
        manifest.as_bytes(),
        &parsed,
        &digest,
        Some(tag),
        berth_util::time::now_epoch(),
    )
    .await
    .unwrap();
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn scope(region: &str) -> Scope {
        Scope {
            account: "000000000000".into(),
            region: region.into(),
        }
    }

    #[tokio::test]
    async fn replicates_an_image_to_another_region_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn berth_store::Store> = Arc::new(berth_store::MemoryStore::new());
        let registry = Registry::open(dir.path(), store.clone(), "r.test:5000".into()).unwrap();
        let (east, west) = (scope("us-east-1"), scope("us-west-2"));
        let config = ecr::ReplicationConfiguration {
            rules: Some(vec![ecr::ReplicationRule {
                destinations: Some(vec![ecr::ReplicationDestination {
                    region: Some("us-west-2".into()),
                    registry_id: Some("000000000000".into()),
                }]),
                repository_filters: Some(vec![ecr::RepositoryFilter {
                    filter: Some("prod".into()),
                    filter_type: Some("PREFIX_MATCH".into()),
                }]),
                delete_replication: None,
            }]),
        };
        store
            .put(&east.replication_configuration(), meta::encode(&config))
            .await
            .unwrap();
        assert_eq!(
            registry.replication_destinations(&east, "prod/app"),
            vec![west.clone()]
        );
        assert!(registry
            .replication_destinations(&east, "dev/app")
            .is_empty());

        registry
            .ensure_repository(&east, "prod/app", Creation::Replication)
            .await
            .unwrap();
        let digest = push_test_image(&registry, &east, "prod/app", "v1", b"layer").await;
        registry
            .replicate(
                &east,
                "prod/app",
                &digest,
                Some("v1"),
                std::slice::from_ref(&west),
            )
            .await;
        let tag: meta::TagRecord = meta::get(store.as_ref(), &west.tag("prod/app", "v1")).unwrap();
        assert_eq!(tag.digest, digest);
        let status: ReplicationRecord = meta::get(
            store.as_ref(),
            &east.replication_status("prod/app", &digest),
        )
        .unwrap();
        assert_eq!(status.statuses[0].status.as_deref(), Some("COMPLETE"));
        // Another account: refused, recorded as FAILED.
        let other = Scope {
            account: "111111111111".into(),
            region: "us-west-2".into(),
        };
        registry
            .replicate(&east, "prod/app", &digest, Some("v1"), &[other])
            .await;
        let status: ReplicationRecord = meta::get(
            store.as_ref(),
            &east.replication_status("prod/app", &digest),
        )
        .unwrap();
        assert_eq!(status.statuses[1].status.as_deref(), Some("FAILED"));
    }

    #[tokio::test]
    async fn a_replication_cut_short_by_a_crash_is_done_again() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn berth_store::Store> = Arc::new(berth_store::MemoryStore::new());
        let registry = Registry::open(dir.path(), store.clone(), "r.test:5000".into()).unwrap();
        let (east, west) = (scope("us-east-1"), scope("us-west-2"));
        registry
            .ensure_repository(&east, "app", Creation::Replication)
            .await
            .unwrap();
        let digest = push_test_image(&registry, &east, "app", "v7", b"layer").await;
        // The server died after recording IN_PROGRESS, before copying.
        let key = east.replication_status("app", &digest);
        let interrupted = ReplicationRecord {
            statuses: vec![ecr::ImageReplicationStatus {
                region: Some("us-west-2".into()),
                registry_id: Some("000000000000".into()),
                status: Some("IN_PROGRESS".into()),
                failure_code: None,
            }],
            tag: Some("v7".into()),
            started_at: 1_000.0,
        };
        store.put(&key, meta::encode(&interrupted)).await.unwrap();
        // Not yet stale for a cutoff before it started: left alone.
        assert_eq!(registry.resume_replications(999.0).await, 0);
        assert!(meta::get::<meta::TagRecord>(store.as_ref(), &west.tag("app", "v7")).is_none());
        assert_eq!(registry.resume_replications(2_000.0).await, 1);
        let tag: meta::TagRecord = meta::get(store.as_ref(), &west.tag("app", "v7")).unwrap();
        assert_eq!(tag.digest, digest);
        let status: ReplicationRecord = meta::get(store.as_ref(), &key).unwrap();
        assert_eq!(status.statuses[0].status.as_deref(), Some("COMPLETE"));
        // Finished: nothing to do the next time.
        assert_eq!(
            registry
                .resume_replications(berth_util::time::now_epoch() + 10.0)
                .await,
            0
        );
    }
}
