//! Upload sessions, shared by every server through the store.
//!
//! A session is the record `/ecr/<account>/<region>/uploads/<uuid>`
//! ([`UploadRecord`]: repository, start, last activity, bytes accepted) and
//! the file `<root>/uploads/<uuid>` beside the blobs, so the POST, PATCHes
//! and PUT of one upload may each reach a different server. A request that
//! writes or finishes an upload first *claims* it in the store (a
//! compare-and-set on the record, so across servers only one request holds
//! it); a claim lasts [`CLAIM_TTL`] and is renewed while the body streams,
//! and the writer stops writing a little before its claim could lapse, so a
//! request whose server stalls or dies never writes over the next holder.
//! Finishing claims the upload *sealed*: nobody else may claim it again, and
//! the file is verified and placed while it holds still.
//!
//! The record's `size` is the truth about the file: bytes past it (from a
//! request that failed or died) are cut off by the next holder, and a PATCH's
//! `Content-Range` is checked against it. A PUT reads the file to verify the
//! digest, unless this process wrote every byte of the upload and kept their
//! running sha256 (`lastWriter` names it), which spares a read of the file
//! when an upload stays on one server.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_store::{Op, Store, StoreExt};
use berth_util::time::now_epoch;
use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use crate::blobs::{self, BlobStore, UploadError};
use crate::digest::{Algorithm, Digest, Hasher};
use crate::meta::{self, Scope};

/// How long a claim holds without renewal (seconds).
pub(crate) const CLAIM_TTL: f64 = 20.0;
/// A streaming request renews its claim this often (seconds).
const RENEW_EVERY: f64 = 8.0;
/// A writer stops this long before its claim ends (seconds): room for
/// clocks that differ a little between servers.
const WRITE_MARGIN: f64 = 4.0;
/// An upload file no session record names is removed once it is this old
/// (the record is always written before the file, so a younger one may be
/// a session another server's view has not caught up with yet).
pub(crate) const ORPHAN_GRACE: Duration = Duration::from_secs(600);
/// Running hashes kept for sessions this long after their last write.
const RUNNING_KEPT: Duration = Duration::from_secs(3600);

/// An upload session as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UploadRecord {
    pub repository: String,
    pub started: f64,
    pub last_activity: f64,
    /// Bytes accepted: the upload file's first `size` bytes.
    pub size: u64,
    /// The server process that appended last and kept the running sha256
    /// of those bytes.
    #[serde(default)]
    pub last_writer: Option<String>,
    /// The request holding the upload, if any.
    #[serde(default)]
    pub claim: Option<Claim>,
}

/// A request's hold on an upload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Claim {
    pub token: String,
    /// Epoch seconds; a claim not renewed by then may be taken over.
    pub until: f64,
    /// Taken by a request finishing the upload: never taken over.
    #[serde(default)]
    pub sealed: bool,
}

impl UploadRecord {
    fn claimable(&self, now: f64) -> bool {
        self.claim
            .as_ref()
            .is_none_or(|c| !c.sealed && c.until <= now)
    }

    /// Idle longer than `idle` seconds and held by no live request (a sealed
    /// hold is as old as the last activity).
    pub(crate) fn abandoned(&self, now: f64, idle: f64) -> bool {
        self.last_activity < now - idle
            && self
                .claim
                .as_ref()
                .is_none_or(|c| c.sealed || c.until <= now)
    }
}

/// A running sha256 of an upload's first `size` bytes.
struct Running {
    size: u64,
    hasher: Hasher,
    at: Instant,
}

/// Upload sessions: records in the store, files in the blob store.
pub struct Uploads {
    store: Arc<dyn Store>,
    blobs: Arc<BlobStore>,
    /// This process, as `lastWriter` names it.
    instance: String,
    running: Mutex<HashMap<uuid::Uuid, Running>>,
}

/// An upload claimed by one request. End it with [`Uploads::release`],
/// [`Uploads::cancel`] or by completing it; a session dropped otherwise (a
/// client that went away) gives its claim back once its writer stopped
/// (and a sealed one is cancelled).
pub struct Session {
    pub id: uuid::Uuid,
    pub scope: Scope,
    pub repository: String,
    /// Bytes accepted, including this request's.
    pub size: u64,
    key: String,
    token: String,
    until: f64,
    renewed_at: f64,
    sealed: bool,
    /// sha256 of the first `size` bytes, when this process saw them all.
    hasher: Option<Hasher>,
    wrote: bool,
    /// Held by the writer thread while it may still write.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// Whether the store has a record of it: a monolithic upload, which
    /// one request starts and finishes, has only its file (fresh while it
    /// is written, so no collection takes it).
    recorded: bool,
    /// Set until the session is ended explicitly.
    on_drop: Option<(Arc<dyn Store>, Arc<BlobStore>)>,
}

impl Session {
    /// Epoch milliseconds after which this request's writer must not write.
    fn write_deadline(&self) -> i64 {
        if self.sealed {
            i64::MAX
        } else {
            ((self.until - WRITE_MARGIN) * 1000.0) as i64
        }
    }

    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    fn end(&mut self) {
        self.on_drop = None;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some((store, blobs)) = self.on_drop.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (gate, key, token, sealed, id) = (
            self.gate.clone(),
            self.key.clone(),
            self.token.clone(),
            self.sealed,
            self.id,
        );
        let recorded = self.recorded;
        runtime.spawn(async move {
            // Wait for the writer thread: nothing may write after the claim
            // is given back.
            let _writer_done = gate.lock_owned().await;
            if !recorded {
                blobs.remove_upload(&id);
                return;
            }
            let result = store
                .update(move |view| {
                    let mut record: UploadRecord = meta::get(view, &key).ok_or(())?;
                    if record.claim.as_ref().map(|c| c.token.as_str()) != Some(token.as_str()) {
                        return Err(());
                    }
                    if sealed {
                        return Ok((vec![Op::delete(key.clone())], true));
                    }
                    // What this request wrote was never accepted; the next
                    // holder cuts it off.
                    record.claim = None;
                    Ok((vec![Op::put(key.clone(), meta::encode(&record))], false))
                })
                .await;
            if let Ok(Ok((_, true))) = result {
                blobs.remove_upload(&id);
            }
        });
    }
}

impl Uploads {
    pub fn new(store: Arc<dyn Store>, blobs: Arc<BlobStore>) -> Uploads {
        Uploads {
            store,
            blobs,
            instance: uuid::Uuid::new_v4().to_string(),
            running: Mutex::new(HashMap::new()),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[allow(clippy::too_many_arguments)]
    fn session(
        &self,
        recorded: bool,
        id: uuid::Uuid,
        scope: &Scope,
        repository: &str,
        size: u64,
        claim: &Claim,
        hasher: Option<Hasher>,
    ) -> Session {
        Session {
            id,
            scope: scope.clone(),
            repository: repository.to_string(),
            size,
            key: scope.upload(&id),
            token: claim.token.clone(),
            until: claim.until,
            renewed_at: claim.until - CLAIM_TTL,
            sealed: claim.sealed,
            hasher,
            wrote: false,
            gate: Arc::new(tokio::sync::Mutex::new(())),
            recorded,
            on_drop: Some((self.store.clone(), self.blobs.clone())),
        }
    }

    /// Starts an empty upload; returns its id.
    pub async fn start(&self, scope: &Scope, repository: &str) -> Result<uuid::Uuid, UploadError> {
        let id = uuid::Uuid::new_v4();
        let key = scope.upload(&id);
        let now = now_epoch();
        let record = UploadRecord {
            repository: repository.to_string(),
            started: now,
            last_activity: now,
            size: 0,
            last_writer: None,
            claim: None,
        };
        // The record first: a file no record names is a leftover to the GC.
        self.store.put(&key, meta::encode(&record)).await?;
        if let Err(e) = self.blobs.create_upload(&id) {
            let _ = self.store.delete(&key).await;
            return Err(e.into());
        }
        Ok(id)
    }

    /// Starts an upload that this request fills and finishes (a monolithic
    /// upload), sealed from the start. No other request can name it, so it
    /// has no record: only its file (the link that finishes it is its one
    /// store write).
    pub fn start_sealed(&self, scope: &Scope, repository: &str) -> Result<Session, UploadError> {
        let id = uuid::Uuid::new_v4();
        self.blobs.create_upload(&id)?;
        let claim = Claim {
            token: uuid::Uuid::new_v4().to_string(),
            until: now_epoch() + CLAIM_TTL,
            sealed: true,
        };
        Ok(self.session(
            false,
            id,
            scope,
            repository,
            0,
            &claim,
            Some(Hasher::new(Algorithm::Sha256)),
        ))
    }

    /// Claims upload `id` of `repository` for this request: to append to it,
    /// or `sealed` to finish it. `Busy` when another request holds it.
    pub async fn claim(
        &self,
        scope: &Scope,
        repository: &str,
        id: &str,
        sealed: bool,
    ) -> Result<Session, UploadError> {
        let id = uuid::Uuid::parse_str(id).map_err(|_| UploadError::Unknown)?;
        let key = scope.upload(&id);
        let now = now_epoch();
        let claim = Claim {
            token: uuid::Uuid::new_v4().to_string(),
            until: now + CLAIM_TTL,
            sealed,
        };
        let (repo, new_claim) = (repository.to_string(), claim.clone());
        let record = self
            .store
            .update(move |view| {
                let record: UploadRecord = meta::get(view, &key).ok_or(UploadError::Unknown)?;
                if record.repository != repo {
                    return Err(UploadError::Unknown);
                }
                if !record.claimable(now) {
                    return Err(UploadError::Busy { size: record.size });
                }
                let mut next = record.clone();
                next.claim = Some(new_claim.clone());
                next.last_activity = now;
                Ok((vec![Op::put(key.clone(), meta::encode(&next))], record))
            })
            .await??
            .1;
        let cached = self.running().remove(&id);
        let hasher = if record.size == 0 {
            Some(Hasher::new(Algorithm::Sha256))
        } else if record.last_writer.as_deref() == Some(self.instance.as_str()) {
            // Only this process appended: its running hash covers the
            // accepted bytes if it saw exactly as many.
            cached.filter(|r| r.size == record.size).map(|r| r.hasher)
        } else {
            None
        };
        Ok(self.session(true, id, scope, repository, record.size, &claim, hasher))
    }

    /// How many bytes upload `id` has accepted (and marks it active).
    pub async fn status(
        &self,
        scope: &Scope,
        repository: &str,
        id: &str,
    ) -> Result<(uuid::Uuid, u64), UploadError> {
        let id = uuid::Uuid::parse_str(id).map_err(|_| UploadError::Unknown)?;
        let key = scope.upload(&id);
        let (repo, now) = (repository.to_string(), now_epoch());
        // A write, not a read of this server's view: it sees every server's
        // last PATCH, however recent.
        let size = self
            .store
            .update(move |view| {
                let mut record: UploadRecord = meta::get(view, &key).ok_or(UploadError::Unknown)?;
                if record.repository != repo {
                    return Err(UploadError::Unknown);
                }
                record.last_activity = now;
                Ok((
                    vec![Op::put(key.clone(), meta::encode(&record))],
                    record.size,
                ))
            })
            .await??
            .1;
        Ok((id, size))
    }

    /// Cancels upload `id` whoever holds it.
    pub async fn cancel_id(
        &self,
        scope: &Scope,
        repository: &str,
        id: &str,
    ) -> Result<(), UploadError> {
        let id = uuid::Uuid::parse_str(id).map_err(|_| UploadError::Unknown)?;
        let key = scope.upload(&id);
        let repo = repository.to_string();
        self.store
            .update(move |view| {
                let record: UploadRecord = meta::get(view, &key).ok_or(UploadError::Unknown)?;
                if record.repository != repo {
                    return Err(UploadError::Unknown);
                }
                Ok((vec![Op::delete(key.clone())], ()))
            })
            .await??;
        self.blobs.remove_upload(&id);
        self.running().remove(&id);
        Ok(())
    }

    /// Extends the session's claim (and its activity).
    async fn renew(&self, session: &mut Session) -> Result<(), UploadError> {
        let (key, token, now) = (session.key.clone(), session.token.clone(), now_epoch());
        self.store
            .update(move |view| {
                let mut record: UploadRecord = meta::get(view, &key).ok_or(UploadError::Unknown)?;
                match record.claim.as_mut() {
                    Some(claim) if claim.token == token => claim.until = now + CLAIM_TTL,
                    _ => return Err(UploadError::Lost),
                }
                record.last_activity = now;
                Ok((vec![Op::put(key.clone(), meta::encode(&record))], ()))
            })
            .await??;
        session.until = now + CLAIM_TTL;
        session.renewed_at = now;
        Ok(())
    }

    /// Appends a body to a claimed upload at its accepted size. The file is
    /// written on a blocking thread fed through a small channel, so memory
    /// stays at a few chunks whatever the size and the async workers never
    /// wait on disk; the claim is renewed as the body streams. Returns the
    /// bytes written; `session.size` counts them (even when the body broke
    /// off: what arrived is kept, and the client may resume from there).
    pub async fn append<S, E>(&self, session: &mut Session, mut body: S) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<bytes::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let deadline = Arc::new(AtomicI64::new(session.write_deadline()));
        let gate = session.gate.clone().lock_owned().await;
        let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
        let path = self.blobs.upload_path(&session.id);
        let (hasher, committed, limit) = (session.hasher.take(), session.size, deadline.clone());
        let writer = tokio::task::spawn_blocking(move || {
            let _gate = gate;
            blobs::write_upload(&path, committed, rx, hasher, &limit)
        });
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if session.recorded && now_epoch() - session.renewed_at > RENEW_EVERY {
                        if let Err(e) = self.renew(session).await {
                            failure = Some(e);
                            break;
                        }
                        deadline.store(session.write_deadline(), Ordering::Release);
                    }
                    if tx.send(chunk).await.is_err() {
                        break; // the writer stopped; its error is reported below
                    }
                }
                Err(e) => {
                    failure = Some(UploadError::Body(e.to_string()));
                    break;
                }
            }
        }
        drop(tx);
        let (hasher, written, result) = writer
            .await
            .map_err(|e| UploadError::Io(std::io::Error::other(e.to_string())))?;
        session.size += written;
        session.wrote |= written > 0;
        session.hasher = hasher;
        result?;
        match failure {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Records what the session appended and gives the upload back. Returns
    /// the accepted size.
    pub async fn release(&self, mut session: Session) -> Result<u64, UploadError> {
        session.end();
        let (key, token, now) = (session.key.clone(), session.token.clone(), now_epoch());
        let (size, wrote) = (session.size, session.wrote);
        let writer = session.hasher.is_some().then(|| self.instance.clone());
        self.store
            .update(move |view| {
                let mut record: UploadRecord = meta::get(view, &key).ok_or(UploadError::Unknown)?;
                if record.claim.as_ref().map(|c| c.token.as_str()) != Some(token.as_str()) {
                    return Err(UploadError::Lost);
                }
                record.size = size;
                if wrote {
                    record.last_writer = writer.clone();
                }
                record.claim = None;
                record.last_activity = now;
                Ok((vec![Op::put(key.clone(), meta::encode(&record))], ()))
            })
            .await??;
        let mut running = self.running();
        running.retain(|_, r| r.at.elapsed() < RUNNING_KEPT);
        if let Some(hasher) = session.hasher.take() {
            running.insert(
                session.id,
                Running {
                    size,
                    hasher,
                    at: Instant::now(),
                },
            );
        }
        Ok(size)
    }

    /// Verifies a sealed session's bytes against `expected` (reading the
    /// file unless this process hashed every byte as it arrived), cuts off
    /// anything past them, and fsyncs the file.
    pub(crate) async fn verify(
        &self,
        session: &mut Session,
        expected: &Digest,
    ) -> Result<(), UploadError> {
        let running = match expected.algorithm() {
            Algorithm::Sha256 => session.hasher.take(),
            _ => None,
        };
        let (path, size, algorithm) = (
            self.blobs.upload_path(&session.id),
            session.size,
            expected.algorithm(),
        );
        let actual = tokio::task::spawn_blocking(move || {
            blobs::seal_upload(&path, size, algorithm, running)
        })
        .await
        .map_err(|e| UploadError::Io(std::io::Error::other(e.to_string())))??;
        if actual != *expected {
            return Err(UploadError::DigestMismatch {
                expected: expected.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    /// Ends a session and removes its upload, record and file.
    pub async fn cancel(&self, mut session: Session) {
        session.end();
        if session.recorded {
            if let Err(e) = self.store.delete(&session.key).await {
                tracing::warn!(error = %e, upload = %session.id, "could not remove an upload's record");
            }
        }
        self.blobs.remove_upload(&session.id);
        self.running().remove(&session.id);
    }

    /// Ends a session whose record the completing mutation removed.
    pub(crate) fn finished(&self, mut session: Session) {
        session.end();
        self.blobs.remove_upload(&session.id);
        self.running().remove(&session.id);
    }

    /// Removes sessions idle longer than `idle` that no request holds, and
    /// upload files no session names. Returns how many uploads went.
    pub async fn collect(&self, idle: Duration) -> Result<usize, UploadError> {
        let now = now_epoch();
        let idle = idle.as_secs_f64();
        let mut removed = 0;
        for (key, id, record) in meta::all_uploads(self.store.as_ref()) {
            if !record.abandoned(now, idle) {
                continue;
            }
            let gone = self
                .store
                .update(move |view| match meta::get::<UploadRecord>(view, &key) {
                    Some(r) if r.abandoned(now, idle) => Ok((vec![Op::delete(key.clone())], ())),
                    _ => Err(()),
                })
                .await?;
            if gone.is_ok() {
                self.blobs.remove_upload(&id);
                self.running().remove(&id);
                removed += 1;
            }
        }
        Ok(removed + self.remove_orphans()?)
    }

    /// Removes upload files that no session record names and that are older
    /// than [`ORPHAN_GRACE`] (left by a crash, or by an older Berth that
    /// kept sessions in memory). Returns how many.
    pub fn remove_orphans(&self) -> std::io::Result<usize> {
        let live: HashSet<uuid::Uuid> = meta::all_uploads(self.store.as_ref())
            .into_iter()
            .map(|(_, id, _)| id)
            .collect();
        let mut removed = 0;
        for (id, modified) in self.blobs.upload_files()? {
            if !live.contains(&id) && blobs::older_than(modified, ORPHAN_GRACE) {
                self.blobs.remove_upload(&id);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::time::SystemTime;

    use berth_store::MemoryStore;
    use bytes::Bytes;

    use super::*;

    fn scope() -> Scope {
        Scope {
            account: "000000000000".into(),
            region: "us-east-1".into(),
        }
    }

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    fn uploads(dir: &std::path::Path, store: &Arc<dyn Store>) -> Uploads {
        Uploads::new(store.clone(), Arc::new(BlobStore::open(dir).unwrap()))
    }

    fn record(store: &dyn Store, id: &uuid::Uuid) -> Option<UploadRecord> {
        meta::get(store, &scope().upload(id))
    }

    #[tokio::test]
    async fn one_request_holds_an_upload_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (a, b) = (uploads(dir.path(), &store), uploads(dir.path(), &store));
        let id = a.start(&scope(), "repo").await.unwrap();
        let text = id.to_string();
        let mut held = a.claim(&scope(), "repo", &text, false).await.unwrap();
        assert!(matches!(
            b.claim(&scope(), "repo", &text, false).await,
            Err(UploadError::Busy { size: 0 })
        ));
        assert!(matches!(
            b.claim(&scope(), "other", &text, false).await,
            Err(UploadError::Unknown)
        ));
        a.append(&mut held, body(&[b"hello "])).await.unwrap();
        assert_eq!(a.release(held).await.unwrap(), 6);
        let rec = record(store.as_ref(), &id).unwrap();
        assert_eq!((rec.size, rec.claim), (6, None));
        assert_eq!(b.status(&scope(), "repo", &text).await.unwrap().1, 6);
        // B continues it: no running hash there, so finishing reads the file.
        let mut held = b.claim(&scope(), "repo", &text, true).await.unwrap();
        assert!(held.hasher.is_none());
        b.append(&mut held, body(&[b"world"])).await.unwrap();
        b.verify(&mut held, &Digest::sha256_of(b"hello world"))
            .await
            .unwrap();
        // A sealed upload is never taken over, not even after its claim's time.
        let mut rec = record(store.as_ref(), &id).unwrap();
        rec.claim.as_mut().unwrap().until = 0.0;
        store
            .put(&scope().upload(&id), meta::encode(&rec))
            .await
            .unwrap();
        assert!(matches!(
            a.claim(&scope(), "repo", &text, false).await,
            Err(UploadError::Busy { .. })
        ));
        b.cancel(held).await;
        assert!(record(store.as_ref(), &id).is_none());
        assert!(matches!(
            a.status(&scope(), "repo", &text).await,
            Err(UploadError::Unknown)
        ));
    }

    #[tokio::test]
    async fn a_lapsed_claim_is_taken_over_and_its_tail_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let (a, b) = (uploads(dir.path(), &store), uploads(dir.path(), &store));
        let id = a.start(&scope(), "repo").await.unwrap();
        let text = id.to_string();
        let mut held = a.claim(&scope(), "repo", &text, false).await.unwrap();
        a.append(&mut held, body(&[b"abc"])).await.unwrap();
        a.release(held).await.unwrap();
        // A request on A writes bytes, then its server stalls: the bytes are
        // never accepted and its claim runs out.
        let mut stalled = a.claim(&scope(), "repo", &text, false).await.unwrap();
        a.append(&mut stalled, body(&[b"XYZ"])).await.unwrap();
        let mut rec = record(store.as_ref(), &id).unwrap();
        rec.claim.as_mut().unwrap().until = now_epoch() - 1.0;
        store
            .put(&scope().upload(&id), meta::encode(&rec))
            .await
            .unwrap();
        let mut taken = b.claim(&scope(), "repo", &text, false).await.unwrap();
        assert_eq!(taken.size, 3);
        b.append(&mut taken, body(&[b"de"])).await.unwrap();
        assert_eq!(b.release(taken).await.unwrap(), 5);
        // The stalled request cannot record its bytes any more, and past
        // its deadline its writer would not write.
        assert!(matches!(a.release(stalled).await, Err(UploadError::Lost)));
        assert_eq!(
            fs::read(dir.path().join("uploads").join(&text)).unwrap(),
            b"abcde"
        );
        // A running hash kept on A is not trusted after B wrote.
        let held = a.claim(&scope(), "repo", &text, true).await.unwrap();
        assert!(held.hasher.is_none());
        drop(held);
    }

    #[tokio::test]
    async fn a_dropped_session_gives_its_claim_back() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = uploads(dir.path(), &store);
        let id = a.start(&scope(), "repo").await.unwrap();
        let text = id.to_string();
        let claim = |sealed: bool| {
            let (a, text) = (&a, &text);
            async move {
                loop {
                    match a.claim(&scope(), "repo", text, sealed).await {
                        Err(UploadError::Busy { .. }) => tokio::task::yield_now().await,
                        other => return other.unwrap(),
                    }
                }
            }
        };
        let mut held = claim(false).await;
        a.append(&mut held, body(&[b"lost"])).await.unwrap();
        drop(held);
        let again = claim(false).await;
        assert_eq!(again.size, 0);
        drop(again);
        // A dropped sealed session cancels the upload.
        let mut sealed = claim(true).await;
        a.append(&mut sealed, body(&[b"gone"])).await.unwrap();
        drop(sealed);
        let file = dir.path().join("uploads").join(&text);
        for _ in 0..100 {
            if record(store.as_ref(), &id).is_none() && !file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(record(store.as_ref(), &id).is_none() && !file.exists());
        // So does a dropped monolithic upload, which has only its file.
        let mono = a.start_sealed(&scope(), "repo").unwrap();
        let file = dir.path().join("uploads").join(mono.id.to_string());
        assert!(file.exists() && record(store.as_ref(), &mono.id).is_none());
        drop(mono);
        for _ in 0..100 {
            if !file.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!file.exists());
    }

    #[tokio::test]
    async fn idle_sessions_and_leftover_files_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let a = uploads(dir.path(), &store);
        let live = a.start(&scope(), "repo").await.unwrap();
        let idle = a.start(&scope(), "repo").await.unwrap();
        let mut rec = record(store.as_ref(), &idle).unwrap();
        rec.last_activity -= 7200.0;
        store
            .put(&scope().upload(&idle), meta::encode(&rec))
            .await
            .unwrap();
        let old = SystemTime::now() - 2 * ORPHAN_GRACE;
        let orphan = dir
            .path()
            .join("uploads")
            .join(uuid::Uuid::new_v4().to_string());
        fs::write(&orphan, b"x").unwrap();
        File::options()
            .write(true)
            .open(&orphan)
            .unwrap()
            .set_modified(old)
            .unwrap();
        // A young file without a record may be a session this server has not
        // heard of yet: it stays.
        let young = dir
            .path()
            .join("uploads")
            .join(uuid::Uuid::new_v4().to_string());
        fs::write(&young, b"x").unwrap();
        // A restart removes only the old leftover.
        assert_eq!(a.remove_orphans().unwrap(), 1);
        assert!(!orphan.exists() && young.exists());
        assert_eq!(a.collect(Duration::from_secs(3600)).await.unwrap(), 1);
        assert!(record(store.as_ref(), &idle).is_none());
        assert!(!dir.path().join("uploads").join(idle.to_string()).exists());
        assert!(record(store.as_ref(), &live).is_some());
        assert!(dir.path().join("uploads").join(live.to_string()).exists());
        // A held upload is not collected however idle.
        let held = a
            .claim(&scope(), "repo", &live.to_string(), false)
            .await
            .unwrap();
        let mut rec = record(store.as_ref(), &live).unwrap();
        rec.last_activity -= 7200.0;
        store
            .put(&scope().upload(&live), meta::encode(&rec))
            .await
            .unwrap();
        assert_eq!(a.collect(Duration::from_secs(3600)).await.unwrap(), 0);
        a.release(held).await.unwrap();
    }
}
