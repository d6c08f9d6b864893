//! Linking finished blobs into repositories, lifecycle policies, and garbage
//! collection of unreferenced links, blob files and abandoned uploads.
//!
//! Several servers may share the blob directory, and during a change of
//! leader two may collect at once, so nothing here relies on a lock in
//! memory. A blob file is removed only when no link or manifest references
//! it, it is older than the grace period (committing or reusing a blob marks
//! it as just written), and it is *marked* in the store
//! (`/ecr-sweep/<digest>/<pass>`, with an expiry) while the pass looks at
//! the references again and removes it: a link to a marked blob waits until
//! the mark is gone, and every link recorded before the mark is in the view
//! the pass looks at again. A commit looks at its blob once more after its
//! link is recorded and places it again when a sweep took it meanwhile.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_store::{Op, Store, StoreError, StoreExt};
use berth_util::time::now_epoch;
use serde::{Deserialize, Serialize};

use crate::blobs::UploadError;
use crate::digest::Digest;
use crate::lifecycle;
use crate::meta::{self, LayerLink, ManifestRecord, RepoRecord, Scope};
use crate::uploads::Session;
use crate::Registry;

/// Where sweep marks live (outside `/ecr/`: blob files are shared by every
/// account and region).
pub(crate) const SWEEP_ROOT: &str = "/ecr-sweep/";
/// How long a sweep mark holds (seconds): a pass that dies or is aborted
/// blocks links to its candidates at most this long.
const SWEEP_TTL: f64 = 30.0;
/// A pass stops removing files this long before its marks end (seconds).
const SWEEP_MARGIN: f64 = 10.0;
/// Candidates one pass marks at most; the rest wait for the next pass.
const SWEEP_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum CompleteError {
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("repository not found")]
    RepositoryNotFound,
    #[error("garbage collection kept the blob busy for too long")]
    Sweeping,
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

#[derive(Serialize, Deserialize)]
struct SweepMark {
    until: f64,
}

fn sweep_prefix(digest: &str) -> String {
    format!("{SWEEP_ROOT}{digest}/")
}

/// One pass's sweep marks. Dropped before they are removed (the pass was
/// aborted), it removes them once the files' removal has stopped, so an
/// aborted pass does not hold links up until its marks expire.
struct Marks {
    store: Arc<dyn Store>,
    keys: Vec<String>,
    removing: Option<tokio::task::JoinHandle<usize>>,
}

impl Marks {
    async fn remove(&mut self) {
        if unmark(self.store.as_ref(), &self.keys).await {
            self.keys.clear();
        }
    }
}

/// Removes sweep marks; false when the store refused (they expire then).
async fn unmark(store: &dyn Store, keys: &[String]) -> bool {
    let deletes: Vec<Op> = keys.iter().cloned().map(Op::delete).collect();
    match store.mutate(Box::new(move |_| Ok(deletes.clone()))).await {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "unmarking swept blobs failed; the marks expire");
            false
        }
    }
}

impl Drop for Marks {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (store, keys, removing) = (
            self.store.clone(),
            std::mem::take(&mut self.keys),
            self.removing.take(),
        );
        runtime.spawn(async move {
            if let Some(removing) = removing {
                let _ = removing.await;
            }
            unmark(store.as_ref(), &keys).await;
        });
    }
}

impl Registry {
    /// Links a stored blob into a repository (and, when `finishing`, removes
    /// that upload record in the same mutation). `Sweeping` while a garbage
    /// collection pass has the blob marked.
    pub(crate) async fn link_blob(
        &self,
        scope: &Scope,
        repo: &str,
        digest: &Digest,
        size: u64,
        finishing: Option<&str>,
    ) -> Result<(), CompleteError> {
        let (scope, repo, digest) = (scope.clone(), repo.to_string(), digest.to_string());
        let finishing = finishing.map(str::to_string);
        let now = now_epoch();
        self.store
            .update(move |view| {
                if view.get(&scope.repo(&repo)).is_none() {
                    return Err(CompleteError::RepositoryNotFound);
                }
                let marked = view
                    .range(&sweep_prefix(&digest), None, 64)
                    .iter()
                    .any(|kv| meta::decode::<SweepMark>(kv).is_some_and(|m| m.until > now));
                if marked {
                    return Err(CompleteError::Sweeping);
                }
                let link = LayerLink {
                    size,
                    linked_at: now,
                };
                let mut ops = vec![Op::put(scope.layer(&repo, &digest), meta::encode(&link))];
                if let Some(key) = &finishing {
                    ops.push(Op::delete(key.clone()));
                }
                Ok((ops, ()))
            })
            .await??;
        Ok(())
    }

    /// Verifies a sealed upload against `digest`, stores it and links it into
    /// the upload's repository, ending the session. Returns the blob's size.
    /// A mismatch removes the upload: nothing is stored.
    pub(crate) async fn complete_upload(
        &self,
        mut session: Session,
        digest: &Digest,
    ) -> Result<u64, CompleteError> {
        if let Err(e) = self.uploads.verify(&mut session, digest).await {
            self.uploads.cancel(session).await;
            return Err(e.into());
        }
        let size = session.size;
        let started = now_epoch();
        let mut placings = 0;
        loop {
            placings += 1;
            let (blobs, id, d) = (self.blobs.clone(), session.id, digest.clone());
            let placed = tokio::task::spawn_blocking(move || blobs.place(&id, &d))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
                .and_then(|r| r);
            let kept = match placed {
                Ok(kept) => kept,
                Err(e) => {
                    self.uploads.cancel(session).await;
                    return Err(match e.kind() {
                        // Cancelled meanwhile.
                        std::io::ErrorKind::NotFound => UploadError::Unknown,
                        _ => UploadError::Io(e),
                    }
                    .into());
                }
            };
            let key = session.key().to_string();
            match self
                .link_blob(
                    &session.scope,
                    &session.repository,
                    digest,
                    size,
                    Some(&key),
                )
                .await
            {
                Ok(()) => {}
                Err(CompleteError::Sweeping) if now_epoch() - started < SWEEP_TTL + 5.0 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
                Err(e) => {
                    self.uploads.cancel(session).await;
                    return Err(e);
                }
            }
            // A sweep that began before the link may have taken the file.
            match self.blobs.size(digest) {
                Ok(Some(_)) => break,
                Ok(None) if kept && placings < 5 => {
                    tracing::info!(%digest, "a blob was collected while it was linked; placing it again");
                }
                Ok(None) => {
                    self.uploads.cancel(session).await;
                    return Err(UploadError::Io(std::io::Error::other(format!(
                        "blob {digest} vanished while it was linked"
                    )))
                    .into());
                }
                Err(e) => {
                    self.uploads.cancel(session).await;
                    return Err(UploadError::Io(e).into());
                }
            }
        }
        self.uploads.finished(session);
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
        // exists does not pick the file.
        match self.blobs.touch(digest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(UploadError::Io(e).into()),
        }
        match self.link_blob(scope, repo, digest, size, None).await {
            Ok(()) => {}
            Err(CompleteError::Sweeping) => return Ok(None),
            Err(e) => return Err(e),
        }
        if self.blobs.size(digest).map_err(UploadError::Io)?.is_none() {
            // Taken by a sweep meanwhile: undo the link, upload instead.
            let key = scope.layer(repo, &digest.to_string());
            self.store.delete(&key).await?;
            return Ok(None);
        }
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
        match self.uploads.collect(self.gc.upload_idle).await {
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
    /// older than the grace period, under sweep marks (see the module's
    /// documentation). Safe to run on several servers at once and to abort
    /// at any point: marks expire, and removal stops before they do.
    async fn collect_blobs(&self) -> usize {
        let now = now_epoch();
        // Marks a pass left when it died or was aborted.
        let _ = self
            .store
            .update(move |view| {
                let ops: Vec<Op> = meta::scan(view, SWEEP_ROOT)
                    .into_iter()
                    .filter(|kv| meta::decode::<SweepMark>(kv).is_none_or(|m| m.until < now))
                    .map(|kv| Op::delete(kv.key))
                    .collect();
                if ops.is_empty() {
                    Err(())
                } else {
                    Ok((ops, ()))
                }
            })
            .await;
        let referenced = meta::referenced_blobs(self.store.as_ref());
        let (blobs, grace) = (self.blobs.clone(), self.gc.blob_grace);
        let files = match tokio::task::spawn_blocking(move || blobs.list()).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "listing blobs failed");
                return 0;
            }
            Err(_) => return 0,
        };
        let candidates: Vec<Digest> = files
            .into_iter()
            .filter(|(digest, modified)| {
                crate::blobs::older_than(*modified, grace)
                    && !referenced.contains(&digest.to_string())
            })
            .map(|(digest, _)| digest)
            .take(SWEEP_BATCH)
            .collect();
        if candidates.is_empty() {
            return 0;
        }
        let pass = uuid::Uuid::new_v4();
        let until = now_epoch() + SWEEP_TTL;
        let mut marks = Marks {
            store: self.store.clone(),
            keys: candidates
                .iter()
                .map(|d| format!("{}{pass}", sweep_prefix(&d.to_string())))
                .collect(),
            removing: None,
        };
        let puts: Vec<Op> = marks
            .keys
            .iter()
            .map(|k| Op::put(k.clone(), meta::encode(&SweepMark { until })))
            .collect();
        if let Err(e) = self.store.mutate(Box::new(move |_| Ok(puts.clone()))).await {
            tracing::warn!(error = %e, "marking blobs to sweep failed");
            return 0;
        }
        // Every link recorded before the marks is in this view now (a
        // mutation answers once it is visible here); later ones wait.
        let referenced = meta::referenced_blobs(self.store.as_ref());
        let doomed: Vec<Digest> = candidates
            .into_iter()
            .filter(|d| !referenced.contains(&d.to_string()))
            .collect();
        let blobs = self.blobs.clone();
        let removing = marks.removing.insert(tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            for digest in doomed {
                if now_epoch() > until - SWEEP_MARGIN {
                    break; // the rest waits for the next pass
                }
                match blobs.remove_if_older(&digest, grace) {
                    Ok(true) => removed += 1,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, %digest, "removing a blob failed"),
                }
            }
            removed
        }));
        let removed = removing.await.unwrap_or(0);
        marks.removing = None;
        marks.remove().await;
        removed
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
        let mut up = reg.uploads.start_sealed(&scope(), repo).unwrap();
        let body = futures::stream::iter(vec![Ok::<_, String>(Bytes::from_static(data))]);
        reg.uploads.append(&mut up, body).await.unwrap();
        let digest = Digest::sha256_of(data);
        reg.complete_upload(up, &digest).await.unwrap();
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
        let report = reg.gc_pass(berth_util::time::now_epoch() + 1.0).await;
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
        let report = reg.gc_pass(berth_util::time::now_epoch() + 1.0).await;
        assert_eq!(report.links_removed, 2);
        assert_eq!(report.blobs_removed, 2);
        assert!(reg.blobs.list().unwrap().is_empty());
    }
}
