//! Private files: keys, credentials and tokens, readable by their owner only.
//!
//! Every such file is written the same way: to a temporary file (mode 0600
//! from the moment it exists) in the same directory, fsynced, moved into
//! place, and the directory fsynced. A crash at any point leaves the old file
//! or the new one, never a truncated key, and once the call returns the file
//! survives a power loss.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Writes `contents` to `path` (mode 0600), replacing what was there
/// atomically and durably.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = write_temporary(path, contents)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

/// Creates `path` (mode 0600) holding `contents`, atomically and durably;
/// fails with [`io::ErrorKind::AlreadyExists`] and changes nothing when
/// `path` exists, so of two processes creating the same key one wins and the
/// other can read the winner's.
pub fn create_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = write_temporary(path, contents)?;
    // A hard link never replaces an existing name, and appears whole.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked?;
    sync_dir(path)
}

/// Reads the private file at `path`, creating it with `make()` first when it
/// does not exist. Answers the contents and whether this call created them.
/// When another process creates the file at the same moment, both answer
/// that process's contents.
pub fn read_or_create_private(
    path: &Path,
    make: impl FnOnce() -> Vec<u8>,
) -> io::Result<(Vec<u8>, bool)> {
    match std::fs::read(path) {
        Ok(contents) => return Ok((contents, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let contents = make();
    match create_private(path, &contents) {
        Ok(()) => Ok((contents, true)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((std::fs::read(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Creates the SQLite database at `path` readable by its owner only (0600)
/// when absent, and tightens an existing one and its `-wal`/`-shm` files.
/// SQLite gives new WAL and shared-memory files the database file's mode, so
/// they follow.
pub fn private_database(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.as_os_str().to_owned();
            file.push(suffix);
            match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Writes `contents` to a new 0600 file beside `path` and fsyncs it.
fn write_temporary(path: &Path, contents: &[u8]) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a file path is needed"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", crate::ids::random_hex(8)));
    let tmp = path.with_file_name(tmp_name);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

/// Fsyncs the directory holding `path`, so its new name is durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".tmp"))
            .collect()
    }

    #[test]
    fn writes_replace_atomically_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token.key");
        write_private(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(mode(&path), 0o600);
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn create_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials");
        create_private(&path, b"first").unwrap();
        assert_eq!(mode(&path), 0o600);
        let e = create_private(&path, b"second").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        assert!(leftovers(dir.path()).is_empty());
    }

    #[test]
    fn read_or_create_makes_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let (a, created) = read_or_create_private(&path, || b"key-a".to_vec()).unwrap();
        assert!(created);
        let (b, created) = read_or_create_private(&path, || b"key-b".to_vec()).unwrap();
        assert!(!created);
        assert_eq!((a.as_slice(), b.as_slice()), (&b"key-a"[..], &b"key-a"[..]));
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn concurrent_creators_agree() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent-token");
        let results: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|i| {
                    let path = &path;
                    s.spawn(move || {
                        read_or_create_private(path, || format!("token-{i}").into_bytes())
                            .unwrap()
                            .0
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(results.iter().all(|r| *r == results[0]));
        assert_eq!(std::fs::read(&path).unwrap(), results[0]);
    }

    #[test]
    fn a_missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("key");
        assert_eq!(
            write_private(&path, b"x").unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    #[test]
    fn databases_and_their_sidecars_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        private_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let wal = dir.path().join("store.db-wal");
        std::fs::write(&wal, b"").unwrap();
        std::fs::set_permissions(&wal, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        private_database(&db).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
    }
}
