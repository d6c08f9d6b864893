//! Linking finished blobs into repositories, lifecycle policies, and garbage
//! collection of unreferenced links, blob files and abandoned uploads.

use std::collections::BTreeSet;
use std::time::SystemTime;

use berth_store::{Op, StoreError, StoreExt};

use crate::blobs::{Upload, UploadError, UploadState};
use crate::digest::Digest;
use crate::lifecycle;
use crate::meta::{self, LayerLink, ManifestRecord, RepoRecord, Scope};
use crate::Registry;

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("repository not found")]
    RepositoryNotFound,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one garbage-collection pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub images_expired: usize,
    pub uploads_removed: usize,
    pub links_removed: usize,
    pub blobs_removed: usize,
}

impl Registry {
    /// Links a stored blob into a repository.
    async fn link_blob(
        &self,
        scope: &Scope,
        repo: &str,
        digest: &Digest,
        size: u64,
    ) -> Result<(), CompleteError> {
        let (scope, repo, digest) = (scope.clone(), repo.to_string(), digest.to_string());
        let now = crate::now_epoch();
        self.store
            .update(move |view| {
                if view.get(&scope.repo(&repo)).is_none() {
                    return Err(CompleteError::RepositoryNotFound);
                }
                let link = LayerLink {
                    size,
                    linked_at: now,
                };
                Ok((
                    vec![Op::put(scope.layer(&repo, &digest), meta::encode(&link))],
                    (),
                ))
            })
            .await??;
        Ok(())
    }

    /// Verifies an upload against `digest`, stores it and links it into the
    /// upload's repository. Returns the blob's size.
    pub(crate) async fn complete_upload(
        &self,
        upload: &Upload,
        state: &mut UploadState,
        digest: &Digest,
    ) -> Result<u64, CompleteError> {
        let _gc = self.gc_lock.read().await;
        let size = self.uploads.finish(upload, state, digest).await?;
        self.link_blob(&upload.scope, &upload.repository, digest, size)
            .await?;
        Ok(size)
    }

    /// Links a blob `from` another repository of the same account and region
    /// without copying it. Returns its size, or `None` when `from` does not
    /// have it (the caller then starts a normal upload).
    pub(crate) async fn mount_blob(
        &self,
        scope: &Scope,
        repo: &str,
        from: &str,
        digest: &Digest,
    ) -> Result<Option<u64>, CompleteError> {
        let _gc = self.gc_lock.read().await;
        if self
            .store
            .get(&scope.layer(from, &digest.to_string()))
            .is_none()
        {
            return Ok(None);
        }
        let Some(size) = self.blobs.size(digest).map_err(UploadError::Io)? else {
            return Ok(None);
        };
        // Restart the grace period so a GC pass that began before the link
        // exists cannot take the file.
        self.blobs.touch(digest).map_err(UploadError::Io)?;
        self.link_blob(scope, repo, digest, size).await?;
        Ok(Some(size))
    }

    /// Applies `repo`'s lifecycle policy; returns the digests it expired.
    pub(crate) async fn apply_lifecycle(
        &self,
        scope: &Scope,
        repo: &str,
        now: f64,
    ) -> Result<Vec<String>, StoreError> {
        let (scope, repo) = (scope.clone(), repo.to_string());
        let outcome = self
            .store
            .update(move |view| {
                let Some(mut record) = meta::get::<RepoRecord>(view, &scope.repo(&repo)) else {
                    return Err(());
                };
                let Some(text) = record.lifecycle_policy.clone() else {
                    return Err(());
                };
                let Ok(policy) = lifecycle::parse(&text) else {
                    return Err(());
                };
                let images: Vec<lifecycle::Image> = meta::images(view, &scope, &repo)
                    .into_iter()
                    .map(|i| lifecycle::Image {
                        digest: i.record.digest,
                        tags: i.tags,
                        pushed_at: i.record.pushed_at,
                    })
                    .collect();
                let expired = lifecycle::evaluate(&policy, &images, now);
                let mut ops = Vec::new();
                for (digest, _) in &expired {
                    ops.extend(meta::delete_image_ops(view, &scope, &repo, digest));
                }
                record.lifecycle_evaluated_at = Some(now);
                ops.push(Op::put(scope.repo(&repo), meta::encode(&record)));
                Ok((ops, expired.into_iter().map(|(d, _)| d).collect()))
            })
            .await?;
        Ok(outcome.map(|(_, v)| v).unwrap_or_default())
    }

    /// One pass: lifecycle policies, abandoned uploads, stale links, then
    /// blob files nothing references.
    pub(crate) async fn gc_pass(&self, now: f64) -> Report {
        let mut report = Report::default();
        let repos = meta::all_repositories(self.store.as_ref());
        for (scope, record) in &repos {
            if record.lifecycle_policy.is_some() {
                match self.apply_lifecycle(scope, &record.name, now).await {
                    Ok(expired) => {
                        if !expired.is_empty() {
                            tracing::info!(repository = %record.name, images = expired.len(), "lifecycle policy expired images");
                        }
                        report.images_expired += expired.len();
                    }
                    Err(e) => tracing::warn!(error = %e, "applying a lifecycle policy failed"),
                }
            }
        }
        match self.uploads.collect(self.gc.upload_idle) {
            Ok(n) => report.uploads_removed = n,
            Err(e) => tracing::warn!(error = %e, "collecting abandoned uploads failed"),
        }
        let link_cutoff = now - self.gc.link_grace.as_secs_f64();
        for (scope, record) in &repos {
            let (scope, repo) = (scope.clone(), record.name.clone());
            let result = self
                .store
                .update(move |view| {
                    let referenced: BTreeSet<String> = meta::scan(view, &scope.manifests(&repo))
                        .iter()
                        .filter_map(meta::decode::<ManifestRecord>)
                        .flat_map(|m| m.blobs)
                        .collect();
                    let prefix = scope.layers(&repo);
                    let ops: Vec<Op> = meta::scan(view, &prefix)
                        .into_iter()
                        .filter(|kv| {
                            let digest = &kv.key[prefix.len()..];
                            !referenced.contains(digest)
                                && meta::decode::<LayerLink>(kv)
                                    .is_none_or(|l| l.linked_at < link_cutoff)
                        })
                        .map(|kv| Op::delete(kv.key))
                        .collect();
                    let n = ops.len();
                    Ok::<_, ()>((ops, n))
                })
                .await;
            if let Ok(Ok((_, n))) = result {
                report.links_removed += n;
            }
        }
        report.blobs_removed = self.collect_blobs().await;
        report
    }

    /// Removes blob files that no link or manifest references and that are
    /// older than the grace period.
    async fn collect_blobs(&self) -> usize {
        let _exclusive = self.gc_lock.write().await;
        let referenced = meta::referenced_blobs(self.store.as_ref());
        let blobs = self.blobs.clone();
        let grace = self.gc.blob_grace;
        tokio::task::spawn_blocking(move || {
            let files = match blobs.list() {
                Ok(files) => files,
                Err(e) => {
                    tracing::warn!(error = %e, "listing blobs failed");
                    return 0;
                }
            };
            let now = SystemTime::now();
            let mut removed = 0;
            for (digest, modified) in files {
                let old = now.duration_since(modified).is_ok_and(|age| age >= grace);
                if old && !referenced.contains(&digest.to_string()) {
                    match blobs.remove(&digest) {
                        Ok(()) => removed += 1,
                        Err(e) => tracing::warn!(error = %e, %digest, "removing a blob failed"),
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use berth_store::{SqliteOptions, SqliteStore, Store};
    use bytes::Bytes;

    use super::*;
    use crate::GcConfig;

    fn scope() -> Scope {
        Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        }
    }

    async fn push_blob(reg: &Registry, repo: &str, data: &'static [u8]) -> Digest {
        let up = reg.uploads.start(&scope(), repo).unwrap();
        let mut st = up.state.lock().await;
        let body = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(data))]);
        reg.uploads.append(&up, &mut st, body).await.unwrap();
        let digest = Digest::sha256_of(data);
        reg.complete_upload(&up, &mut st, &digest).await.unwrap();
        digest
    }

    #[tokio::test]
    async fn unreferenced_blobs_go_after_their_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(SqliteOptions::new(dir.path().join("store.db"))).unwrap());
        let gc = GcConfig {
            link_grace: Duration::ZERO,
            blob_grace: Duration::ZERO,
            ..GcConfig::default()
        };
        let reg = Registry::open_with(dir.path(), store.clone(), "h:1".into(), gc).unwrap();
        let repo = RepoRecord {
            name: "app".into(),
            created_at: 0.0,
            image_tag_mutability: "MUTABLE".into(),
            mutability_exclusions: vec![],
            scan_on_push: false,
            encryption_type: "AES256".into(),
            kms_key: None,
            tags: vec![],
            policy: None,
            lifecycle_policy: None,
            lifecycle_evaluated_at: None,
        };
        store
            .put(&scope().repo("app"), meta::encode(&repo))
            .await
            .unwrap();
        let config = push_blob(&reg, "app", b"{}").await;
        let layer = push_blob(&reg, "app", b"layer").await;
        let orphan = push_blob(&reg, "app", b"orphan").await;
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": meta::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 5}]
        })
        .to_string();
        let parsed = meta::parse_manifest(manifest.as_bytes(), None).unwrap();
        let mdigest = Digest::sha256_of(manifest.as_bytes()).to_string();
        meta::put_manifest(
            store.as_ref(),
            &scope(),
            "app",
            manifest.as_bytes(),
            &parsed,
            &mdigest,
            Some("v1"),
            1.0,
        )
        .await
        .unwrap();
        let report = reg.gc_pass(crate::now_epoch() + 1.0).await;
        assert_eq!(report.links_removed, 1);
        assert_eq!(report.blobs_removed, 1);
        assert!(reg.blobs.size(&orphan).unwrap().is_none());
        assert!(reg.blobs.size(&layer).unwrap().is_some());

        // Deleting the image frees its blobs on the next passes.
        let ops = meta::delete_image_ops(store.as_ref(), &scope(), "app", &mdigest);
        store
            .mutate(Box::new(move |_| Ok(ops.clone())))
            .await
            .unwrap();
        let report = reg.gc_pass(crate::now_epoch() + 1.0).await;
        assert_eq!(report.links_removed, 2);
        assert_eq!(report.blobs_removed, 2);
        assert!(reg.blobs.list().unwrap().is_empty());
    }
}
