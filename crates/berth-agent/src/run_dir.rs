//! `/run/berth`: what the agents of one host share. The directory is
//! root's alone (0700) and every file in it 0600; it holds the locks that
//! serialize the agents' changes to the host's network and elect the agent
//! that serves the task endpoint, and that endpoint's local socket.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the agents of a host meet.
pub const RUN_DIR: &str = "/run/berth";

/// Creates `dir` (and its parents) unless it exists, and makes it 0700.
/// A directory owned by another user is refused: whoever owns it could
/// read what the agents put there.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let metadata = std::fs::metadata(dir)?;
    let own_uid = std::fs::metadata("/proc/self")?.uid();
    if metadata.uid() != own_uid {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to uid {}, not to this agent's uid {own_uid}",
                dir.display(),
                metadata.uid()
            ),
        ));
    }
    if metadata.permissions().mode() & 0o777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// An exclusive `flock` on a file of the run directory, held until
/// dropped (or until the process ends, whatever way it ends: the kernel
/// releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
    path: PathBuf,
}

impl FileLock {
    fn open(path: &Path) -> io::Result<File> {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir)?;
        }
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
    }

    /// Waits for the lock (on a blocking thread).
    pub async fn acquire(path: &Path) -> io::Result<FileLock> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = Self::open(&path)?;
            file.lock()?;
            Ok(FileLock { _file: file, path })
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The lock when nobody holds it; `None` when somebody does.
    pub fn try_acquire(path: &Path) -> io::Result<Option<FileLock>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock {
                _file: file,
                path: path.to_path_buf(),
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_0700() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[tokio::test]
    async fn one_holder_at_a_time_even_within_a_process() {
        let base = tempfile::tempdir().unwrap();
        let path = base.path().join("run/x.lock");
        let first = FileLock::try_acquire(&path).unwrap().expect("free");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        let waiter = {
            let path = path.clone();
            tokio::spawn(async move { FileLock::acquire(&path).await.unwrap() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!waiter.is_finished());
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("the waiter gets the lock")
            .unwrap();
        assert_eq!(second.path(), path.as_path());
    }
}
