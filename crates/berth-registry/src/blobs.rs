//! The content-addressed blob store on disk and the upload files that feed it.
//!
//! A blob lives at `<root>/blobs/<algorithm>/<first two hex>/<hex>`, one file
//! per digest whichever repositories link it (deduplication is by path). An
//! upload's bytes go to `<root>/uploads/<uuid>`; only once its digest is
//! verified is the file fsynced and hard-linked (renamed where the file system
//! has no hard links) into place, then the directory fsynced, so a crash
//! leaves either the whole blob or nothing under `blobs/`, never a partial
//! one. `<root>` may be a directory several servers share (NFS): every step
//! here is a single-file operation that is atomic there too.
//!
//! Who may write an upload file, and how much of it counts, is decided by
//! the upload's session record in the store (see [`crate::uploads`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures::Stream;

use crate::digest::{Algorithm, Digest, Hasher};

/// Bytes read from disk per chunk when serving or hashing a blob.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("blob storage failed: {0}")]
    Io(#[from] io::Error),
    #[error("the registry store failed: {0}")]
    Store(#[from] berth_store::StoreError),
    #[error("the uploaded content has digest {actual}, not {expected}")]
    DigestMismatch { expected: String, actual: String },
    #[error("this upload lost bytes it had accepted and cannot continue; start a new one")]
    Broken,
    #[error("the request body could not be read: {0}")]
    Body(String),
    #[error("the upload is unknown: it finished, was cancelled or expired")]
    Unknown,
    #[error("another request is writing this upload (it has {size} bytes)")]
    Busy { size: u64 },
    #[error("this request's hold on the upload lapsed; another request may have taken it over")]
    Lost,
}

/// The blob files under `<root>`.
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the store. Upload files are left alone: their
    /// sessions are in the store, possibly another server's.
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(root.join("blobs"))?;
        fs::create_dir_all(root.join("uploads"))?;
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

    pub(crate) fn upload_path(&self, id: &uuid::Uuid) -> PathBuf {
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
                    let modified = match entry.metadata() {
                        Ok(m) => m.modified()?,
                        // Removed since the directory was read.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    out.push((digest, modified));
                }
            }
        }
        Ok(out)
    }

    /// Removes blob `digest` if its file is still older than `grace` (it is
    /// looked at again right before, so a blob just written or reused since
    /// the caller listed it stays). Returns whether it was removed.
    pub fn remove_if_older(&self, digest: &Digest, grace: Duration) -> io::Result<bool> {
        let path = self.blob_path(digest);
        let modified = match fs::metadata(&path) {
            Ok(m) => m.modified()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        if !older_than(modified, grace) {
            return Ok(false);
        }
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Upload files on disk with their modification times.
    pub(crate) fn upload_files(&self) -> io::Result<Vec<(uuid::Uuid, SystemTime)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("uploads"))? {
            let entry = entry?;
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| uuid::Uuid::parse_str(n).ok())
            else {
                continue;
            };
            match entry.metadata() {
                Ok(m) => out.push((id, m.modified()?)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Creates the empty file of a new upload.
    pub(crate) fn create_upload(&self, id: &uuid::Uuid) -> io::Result<()> {
        File::create_new(self.upload_path(id)).map(drop)
    }

    /// Removes an upload's file (gone already is fine).
    pub(crate) fn remove_upload(&self, id: &uuid::Uuid) {
        if let Err(e) = fs::remove_file(self.upload_path(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(error = %e, upload = %id, "could not remove an upload file");
            }
        }
    }

    /// Makes verified upload `id` the blob `digest`. When the blob exists
    /// already it is touched (restarting its grace period); otherwise the
    /// upload file is hard-linked into place and the directory fsynced. The
    /// upload file stays, so the caller can place it again should the blob
    /// vanish before its link is recorded; on a file system without hard
    /// links it is renamed instead. Returns whether the upload file is
    /// still there.
    pub(crate) fn place(&self, id: &uuid::Uuid, digest: &Digest) -> io::Result<bool> {
        let upload = self.upload_path(id);
        let target = self.blob_path(digest);
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        fs::create_dir_all(dir)?;
        for _ in 0..3 {
            match self.touch(digest) {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            match fs::hard_link(&upload, &target) {
                Ok(()) => {
                    File::open(dir)?.sync_all()?;
                    return Ok(true);
                }
                // Placed by someone else meanwhile: touch it.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "hard link refused; renaming the upload instead");
                    fs::rename(&upload, &target)?;
                    File::open(dir)?.sync_all()?;
                    return Ok(false);
                }
            }
        }
        Err(io::Error::other(format!(
            "blob {digest} kept appearing and vanishing while it was placed"
        )))
    }
}

/// Whether `modified` is at least `grace` in the past (a time in the future,
/// from another machine's clock, is not).
pub(crate) fn older_than(modified: SystemTime, grace: Duration) -> bool {
    SystemTime::now()
        .duration_since(modified)
        .is_ok_and(|age| age >= grace)
}

/// Writes what arrives on `rx` to the upload file at `path`, after its first
/// `committed` bytes (bytes beyond them, left by a request that failed or
/// died, are cut off first). Every write first checks `deadline` (epoch
/// milliseconds): past it, this writer's hold on the upload may have passed
/// to another server, so it stops. Returns the hasher (fed what was
/// written), how many bytes were written and how it ended.
pub(crate) fn write_upload(
    path: &Path,
    committed: u64,
    mut rx: tokio::sync::mpsc::Receiver<Bytes>,
    mut hasher: Option<Hasher>,
    deadline: &AtomicI64,
) -> (Option<Hasher>, u64, Result<(), UploadError>) {
    let mut written = 0u64;
    let result = (|| -> Result<(), UploadError> {
        let mut file = match OpenOptions::new().write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UploadError::Unknown),
            Err(e) => return Err(e.into()),
        };
        let len = file.metadata()?.len();
        if len < committed {
            return Err(UploadError::Broken);
        }
        if len > committed {
            file.set_len(committed)?;
        }
        file.seek(SeekFrom::Start(committed))?;
        while let Some(chunk) = rx.blocking_recv() {
            if berth_util::time::now_millis() >= deadline.load(Ordering::Acquire) {
                return Err(UploadError::Lost);
            }
            file.write_all(&chunk)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&chunk);
            }
            written += chunk.len() as u64;
        }
        Ok(())
    })();
    (hasher, written, result)
}

/// Prepares a finished upload file for placing: cuts it to its `committed`
/// bytes, checks none is missing, computes its digest with `algorithm` from
/// the file unless `running` (a hash of exactly those bytes) is given,
/// marks it as just written (for garbage collection's grace periods) and
/// fsyncs it.
pub(crate) fn seal_upload(
    path: &Path,
    committed: u64,
    algorithm: Algorithm,
    running: Option<Hasher>,
) -> Result<Digest, UploadError> {
    let mut file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UploadError::Unknown),
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata()?.len();
    if len < committed {
        return Err(UploadError::Broken);
    }
    if len > committed {
        file.set_len(committed)?;
    }
    let digest = match running {
        Some(h) => h.finish(),
        None => {
            let mut hasher = Hasher::new(algorithm);
            let mut buf = vec![0u8; READ_CHUNK];
            file.seek(SeekFrom::Start(0))?;
            loop {
                let n = match file.read(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                };
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            hasher.finish()
        }
    };
    file.set_modified(SystemTime::now())?;
    file.sync_all()?;
    Ok(digest)
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
    use futures::StreamExt;

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

    #[test]
    fn writes_after_committed_bytes_and_stops_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = uuid::Uuid::new_v4();
        store.create_upload(&id).unwrap();
        let path = store.upload_path(&id);
        // Three committed bytes and a tail a failed request left.
        fs::write(&path, b"abcXYZ").unwrap();
        let far = AtomicI64::new(i64::MAX);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"de")).unwrap();
        drop(tx);
        let (_, written, result) = write_upload(&path, 3, rx, None, &far);
        result.unwrap();
        assert_eq!((written, fs::read(&path).unwrap()), (2, b"abcde".to_vec()));
        // Fewer bytes than committed: the upload is broken.
        let (_, rx) = tokio::sync::mpsc::channel(1);
        let (_, _, result) = write_upload(&path, 9, rx, None, &far);
        assert!(matches!(result, Err(UploadError::Broken)));
        // Past the deadline nothing is written.
        let past = AtomicI64::new(0);
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Bytes::from_static(b"f")).unwrap();
        drop(tx);
        let (_, written, result) = write_upload(&path, 5, rx, None, &past);
        assert!(matches!(result, Err(UploadError::Lost)));
        assert_eq!((written, fs::read(&path).unwrap()), (0, b"abcde".to_vec()));
    }

    #[test]
    fn sealing_hashes_the_committed_bytes_and_placing_dedups() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let id = uuid::Uuid::new_v4();
        store.create_upload(&id).unwrap();
        fs::write(store.upload_path(&id), b"hello worldJUNK").unwrap();
        let digest = seal_upload(&store.upload_path(&id), 11, Algorithm::Sha256, None).unwrap();
        assert_eq!(digest, Digest::sha256_of(b"hello world"));
        let d512 = seal_upload(&store.upload_path(&id), 11, Algorithm::Sha512, None).unwrap();
        assert_eq!(d512, d512.of_same_kind(b"hello world"));
        assert!(matches!(
            seal_upload(&store.upload_path(&id), 12, Algorithm::Sha256, None),
            Err(UploadError::Broken)
        ));
        assert!(store.place(&id, &digest).unwrap());
        assert_eq!(store.size(&digest).unwrap(), Some(11));
        store.remove_upload(&id);
        // A second upload of the same bytes finds the blob there.
        let again = uuid::Uuid::new_v4();
        store.create_upload(&again).unwrap();
        fs::write(store.upload_path(&again), b"hello world").unwrap();
        assert!(store.place(&again, &digest).unwrap());
        store.remove_upload(&again);
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.upload_files().unwrap().is_empty());
        // A blob is removed only when it is older than the grace period.
        assert!(!store
            .remove_if_older(&digest, Duration::from_secs(60))
            .unwrap());
        assert!(store.remove_if_older(&digest, Duration::ZERO).unwrap());
        assert_eq!(store.size(&digest).unwrap(), None);
    }
}
