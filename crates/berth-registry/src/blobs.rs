//! The content-addressed blob store on disk and the uploads that feed it.
//!
//! A blob lives at `<root>/blobs/<algorithm>/<first two hex>/<hex>`, one file
//! per digest whichever repositories link it (deduplication is by path). An
//! upload streams into `<root>/uploads/<uuid>` while its sha256 is computed
//! incrementally; only when its digest is verified is the file fsynced and
//! renamed into place (then the directory is fsynced), so a crash leaves either
//! the whole blob or nothing under `blobs/`, never a partial one.
//!
//! Upload sessions (offset and running hash) live in memory: an upload that a
//! restart interrupts is unusable, so `open` removes every leftover upload
//! file and clients start again, as the distribution spec lets them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::meta::Scope;

/// Bytes read from disk per chunk when serving a blob.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("blob storage failed: {0}")]
    Io(#[from] io::Error),
    #[error("the uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("this upload failed earlier and cannot continue; start a new one")]
    Broken,
    #[error("the request body could not be read: {0}")]
    Body(String),
}

/// The blob files under `<data-dir>/registry`.
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the store and removes uploads a previous process left.
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(root.join("blobs"))?;
        let uploads = root.join("uploads");
        if uploads.exists() {
            // Their hash state died with the process that held it.
            fs::remove_dir_all(&uploads)?;
        }
        fs::create_dir_all(&uploads)?;
        Ok(BlobStore {
            root: root.to_path_buf(),
        })
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().name())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &uuid::Uuid) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    /// The size of a stored blob, or `None` when its file is absent.
    pub fn size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn open_blob(&self, digest: &Digest) -> io::Result<Option<File>> {
        match File::open(self.blob_path(digest)) {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Marks an existing blob as just used, so garbage collection's grace
    /// period protects it while a new link to it is being written.
    pub fn touch(&self, digest: &Digest) -> io::Result<()> {
        let f = File::options().write(true).open(self.blob_path(digest))?;
        f.set_modified(SystemTime::now())
    }

    /// Every blob file with its modification time.
    pub fn list(&self) -> io::Result<Vec<(Digest, SystemTime)>> {
        let mut out = Vec::new();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.root.join("blobs").join(algorithm.name());
            let Ok(prefixes) = fs::read_dir(&dir) else {
                continue;
            };
            for prefix in prefixes {
                let prefix = prefix?;
                for entry in fs::read_dir(prefix.path())? {
                    let entry = entry?;
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    let Ok(digest) = Digest::parse(&format!("{}:{name}", algorithm.name())) else {
                        // A stray temp file or something an operator left.
                        continue;
                    };
                    let modified = entry.metadata()?.modified()?;
                    out.push((digest, modified));
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, digest: &Digest) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Upload files on disk, by id.
    fn upload_ids(&self) -> io::Result<Vec<uuid::Uuid>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("uploads"))? {
            let entry = entry?;
            if let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    /// Makes a verified upload file the blob `digest`: fsync, rename, fsync
    /// the directory. When the blob already exists the upload is dropped.
    fn commit(&self, upload: &Path, digest: &Digest) -> io::Result<()> {
        let target = self.blob_path(digest);
        if target.exists() {
            fs::remove_file(upload)?;
            return self.touch(digest);
        }
        File::open(upload)?.sync_all()?;
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        fs::create_dir_all(dir)?;
        fs::rename(upload, &target)?;
        File::open(dir)?.sync_all()
    }
}

/// The state of one upload, guarded by its session's lock.
pub struct UploadState {
    /// Bytes received so far.
    pub size: u64,
    hasher: Hasher,
    touched: Instant,
    broken: bool,
}

/// One upload session (a distribution-spec upload or an ECR layer upload).
pub struct Upload {
    pub id: uuid::Uuid,
    pub scope: Scope,
    pub repository: String,
    path: PathBuf,
    pub state: tokio::sync::Mutex<UploadState>,
}

/// Upload sessions by id.
pub struct Uploads {
    store: Arc<BlobStore>,
    sessions: Mutex<HashMap<uuid::Uuid, Arc<Upload>>>,
}

impl Uploads {
    pub fn new(store: Arc<BlobStore>) -> Uploads {
        Uploads {
            store,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<uuid::Uuid, Arc<Upload>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts an empty upload.
    pub fn start(&self, scope: &Scope, repository: &str) -> io::Result<Arc<Upload>> {
        let id = uuid::Uuid::new_v4();
        let upload = Arc::new(Upload {
            id,
            scope: scope.clone(),
            repository: repository.to_string(),
            path: self.store.upload_path(&id),
            state: tokio::sync::Mutex::new(UploadState {
                size: 0,
                hasher: Hasher::new(Algorithm::Sha256),
                touched: Instant::now(),
                broken: false,
            }),
        });
        // In the map before the file exists, so GC never takes the file for
        // a leftover.
        self.sessions().insert(id, upload.clone());
        if let Err(e) = File::create(&upload.path) {
            self.sessions().remove(&id);
            return Err(e);
        }
        Ok(upload)
    }

    /// The upload `id` of `repository` in `scope`, if it is in progress.
    pub fn get(&self, scope: &Scope, repository: &str, id: &str) -> Option<Arc<Upload>> {
        let id = uuid::Uuid::parse_str(id).ok()?;
        let upload = self.sessions().get(&id)?.clone();
        (upload.scope == *scope && upload.repository == repository).then_some(upload)
    }

    /// Ends an upload and removes its file.
    pub fn cancel(&self, upload: &Upload) {
        self.sessions().remove(&upload.id);
        if let Err(e) = fs::remove_file(&upload.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, upload = %upload.id, "could not remove an upload file");
            }
        }
    }

    /// Appends a body to an upload, hashing as it goes. The file is written
    /// on a blocking thread fed through a small channel, so memory stays at a
    /// few chunks whatever the size and the async workers never wait on disk.
    pub async fn append<S, E>(
        &self,
        upload: &Upload,
        state: &mut UploadState,
        mut body: S,
    ) -> Result<u64, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if state.broken {
            return Err(UploadError::Broken);
        }
        state.touched = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let mut hasher = std::mem::replace(&mut state.hasher, Hasher::new(Algorithm::Sha256));
        let path = upload.path.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut written = 0u64;
            let result = (|| -> io::Result<()> {
                let mut file = OpenOptions::new().append(true).open(&path)?;
                while let Some(chunk) = rx.blocking_recv() {
                    file.write_all(&chunk)?;
                    hasher.update(&chunk);
                    written += chunk.len() as u64;
                }
                Ok(())
            })();
            (hasher, written, result)
        });
        let mut body_error = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(chunk) if chunk.is_empty() => {}
                Ok(chunk) => {
                    if tx.send(chunk).await.is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    body_error = Some(e.to_string());
                    break;
                }
            }
        }
        drop(tx);
        let (hasher, written, result) = writer
            .await
            .map_err(|e| UploadError::Io(io::Error::other(e.to_string())))?;
        state.hasher = hasher;
        state.size += written;
        state.touched = Instant::now();
        if let Err(e) = result {
            // The file and the hash may disagree now: the upload is unusable.
            state.broken = true;
            return Err(UploadError::Io(e));
        }
        match body_error {
            Some(e) => Err(UploadError::Body(e)),
            None => Ok(written),
        }
    }

    /// Verifies the upload against `expected` and, when it matches, makes it
    /// the blob. A mismatch removes the upload: nothing is stored. The session
    /// ends either way.
    pub async fn finish(
        &self,
        upload: &Upload,
        state: &mut UploadState,
        expected: &Digest,
    ) -> Result<u64, UploadError> {
        if state.broken {
            self.cancel(upload);
            return Err(UploadError::Broken);
        }
        let store = self.store.clone();
        let path = upload.path.clone();
        let hasher = state.hasher.clone();
        let expected_owned = expected.clone();
        let outcome = tokio::task::spawn_blocking(move || -> Result<(), UploadError> {
            let actual = match expected_owned.algorithm() {
                Algorithm::Sha256 => hasher.finish(),
                // Only sha256 is hashed while streaming (it is what every
                // client uses); other algorithms re-read the file once.
                algorithm => hash_file(&path, algorithm)?,
            };
            if actual != expected_owned {
                return Err(UploadError::DigestMismatch {
                    expected: expected_owned.to_string(),
                    actual: actual.to_string(),
                });
            }
            store.commit(&path, &expected_owned)?;
            Ok(())
        })
        .await
        .map_err(|e| UploadError::Io(io::Error::other(e.to_string())));
        let size = state.size;
        self.sessions().remove(&upload.id);
        match outcome.and_then(|r| r) {
            Ok(()) => Ok(size),
            Err(e) => {
                let _ = fs::remove_file(&upload.path);
                Err(e)
            }
        }
    }

    /// Ends sessions idle longer than `idle` and removes upload files that no
    /// session owns. Returns how many uploads were removed.
    pub fn collect(&self, idle: Duration) -> io::Result<usize> {
        let mut removed = 0;
        let stale: Vec<Arc<Upload>> = self
            .sessions()
            .values()
            .filter(|u| {
                // A session whose lock is held is in use right now.
                u.state
                    .try_lock()
                    .map(|s| s.touched.elapsed() > idle)
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        for upload in stale {
            self.cancel(&upload);
            removed += 1;
        }
        let live: std::collections::HashSet<uuid::Uuid> = self.sessions().keys().copied().collect();
        for id in self.store.upload_ids()? {
            if !live.contains(&id) {
                let _ = fs::remove_file(self.store.upload_path(&id));
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn hash_file(path: &Path, algorithm: Algorithm) -> io::Result<Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.finish());
        }
        hasher.update(&buf[..n]);
    }
}

/// Reads `len` bytes of `file` from `offset` at once (for small blobs).
pub async fn read_all(mut file: File, offset: u64, len: u64) -> io::Result<Bytes> {
    tokio::task::spawn_blocking(move || {
        file.seek(SeekFrom::Start(offset))?;
        let mut buf = vec![0u8; len as usize];
        file.read_exact(&mut buf)?;
        Ok(Bytes::from(buf))
    })
    .await
    .map_err(|e| io::Error::other(e.to_string()))?
}

/// Streams `len` bytes of `file` from `offset`, read on a blocking thread a
/// chunk at a time; the channel's bound keeps memory flat for any size.
pub fn read_stream(
    mut file: File,
    offset: u64,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(e));
            return;
        }
        let mut left = len;
        while left > 0 {
            let want = (left as usize).min(READ_CHUNK);
            let mut buf = BytesMut::zeroed(want);
            match file.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than recorded",
                    )));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf.freeze())).is_err() {
                        return; // the client went away
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

#[cfg(test)]
mod tests {
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

    #[tokio::test]
    async fn chunked_upload_verifies_and_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path()).unwrap());
        let uploads = Uploads::new(store.clone());
        let digest = Digest::sha256_of(b"hello world");
        for _ in 0..2 {
            let up = uploads.start(&scope(), "repo").unwrap();
            let mut st = up.state.lock().await;
            uploads
                .append(&up, &mut st, body(&[b"hello "]))
                .await
                .unwrap();
            uploads
                .append(&up, &mut st, body(&[b"wor", b"ld"]))
                .await
                .unwrap();
            assert_eq!(uploads.finish(&up, &mut st, &digest).await.unwrap(), 11);
        }
        assert_eq!(store.size(&digest).unwrap(), Some(11));
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.upload_ids().unwrap().is_empty());
    }

    #[tokio::test]
    async fn wrong_digest_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path()).unwrap());
        let uploads = Uploads::new(store.clone());
        let claimed = Digest::sha256_of(b"something else");
        let up = uploads.start(&scope(), "repo").unwrap();
        let mut st = up.state.lock().await;
        uploads
            .append(&up, &mut st, body(&[b"data"]))
            .await
            .unwrap();
        let err = uploads.finish(&up, &mut st, &claimed).await.unwrap_err();
        assert!(matches!(err, UploadError::DigestMismatch { .. }));
        assert_eq!(store.size(&claimed).unwrap(), None);
        assert!(store.list().unwrap().is_empty());
        assert!(store.upload_ids().unwrap().is_empty());
        assert!(uploads.get(&scope(), "repo", &up.id.to_string()).is_none());
    }

    #[tokio::test]
    async fn sha512_is_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path()).unwrap());
        let uploads = Uploads::new(store.clone());
        let zero512 = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        let digest = zero512.of_same_kind(b"abc");
        let up = uploads.start(&scope(), "repo").unwrap();
        let mut st = up.state.lock().await;
        uploads.append(&up, &mut st, body(&[b"abc"])).await.unwrap();
        uploads.finish(&up, &mut st, &digest).await.unwrap();
        assert_eq!(store.size(&digest).unwrap(), Some(3));
    }

    #[tokio::test]
    async fn read_stream_serves_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..(READ_CHUNK * 2 + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        fs::write(&path, &data).unwrap();
        let collect = |offset: u64, len: u64| {
            let file = File::open(&path).unwrap();
            async move {
                let parts: Vec<Bytes> = read_stream(file, offset, len)
                    .map(|r| r.unwrap())
                    .collect()
                    .await;
                parts.concat()
            }
        };
        assert_eq!(collect(0, data.len() as u64).await, data);
        assert_eq!(collect(5, 10).await, &data[5..15]);
    }

    #[tokio::test]
    async fn leftovers_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(dir.path()).unwrap());
        fs::write(store.upload_path(&uuid::Uuid::new_v4()), b"x").unwrap();
        let uploads = Uploads::new(store.clone());
        let live = uploads.start(&scope(), "repo").unwrap();
        assert_eq!(uploads.collect(Duration::from_secs(3600)).unwrap(), 1);
        assert!(uploads
            .get(&scope(), "repo", &live.id.to_string())
            .is_some());
        assert_eq!(uploads.collect(Duration::ZERO).unwrap(), 1);
        assert!(uploads
            .get(&scope(), "repo", &live.id.to_string())
            .is_none());
        // Reopening removes whatever a crashed process left.
        fs::write(store.upload_path(&uuid::Uuid::new_v4()), b"x").unwrap();
        let reopened = BlobStore::open(dir.path()).unwrap();
        assert!(reopened.upload_ids().unwrap().is_empty());
    }
}
