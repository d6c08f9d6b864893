//! The data directory is private: it holds the store (every record), the
//! log events, the secrets master key, the registry's token key and blobs,
//! and the root credentials. `berth up` creates it 0700 and every file in it
//! 0600, and tightens what an older Berth left readable by others.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// What Berth keeps at the top of its data directory; these (and everything
/// under the directories among them) are tightened at start. Nothing else is
/// touched, in case the directory is shared with other files.
const BERTH_ENTRIES: &[&str] = &[
    "store.db",
    "store.db-wal",
    "store.db-shm",
    "credentials",
    "agent-token",
    "logs",
    "secrets",
    "registry",
    "agent",
];

/// Makes every file and directory this process creates from now on private
/// to its user (umask 077), whatever the caller's umask: SQLite's WAL files,
/// registry blobs and uploads, key files.
pub fn private_umask() {
    // SAFETY: umask only sets the process's file mode creation mask; it
    // cannot fail and touches no memory.
    unsafe {
        libc::umask(0o077);
    }
}

fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no preconditions.
    unsafe { libc::geteuid() }
}

/// Creates `dir` (0700) or, when it exists and this user owns it, tightens
/// it to 0700.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("reading the data directory {}", dir.display()))?;
    if meta.uid() == euid() && meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private (0700)", dir.display()))?;
        tracing::info!(dir = %dir.display(), "the data directory was readable by others; it is now 0700");
    }
    Ok(())
}

/// Creates the data directory 0700 and tightens what Berth keeps in it:
/// directories 0700, files 0600 (for data directories made by older
/// versions, which left them 0755/0644). Files this user does not own are
/// left alone with a warning.
pub fn make_private(data_dir: &Path) -> anyhow::Result<()> {
    private_dir(data_dir)?;
    let uid = euid();
    let mut tightened = 0usize;
    for entry in BERTH_ENTRIES {
        tighten(&data_dir.join(entry), uid, &mut tightened);
    }
    if tightened > 0 {
        tracing::info!(
            files = tightened,
            dir = %data_dir.display(),
            "tightened files of the data directory to 0600 (directories 0700)"
        );
    }
    Ok(())
}

/// Tightens `path` and, for a directory, everything under it. Symbolic
/// links are not followed.
fn tighten(path: &Path, uid: u32, count: &mut usize) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    if meta.file_type().is_symlink() {
        return;
    }
    let wanted = if meta.is_dir() { 0o700 } else { 0o600 };
    if meta.permissions().mode() & 0o777 != wanted {
        if meta.uid() != uid {
            tracing::warn!(path = %path.display(), "not owned by this user; left as it is");
        } else {
            match std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)) {
                Ok(()) => *count += 1,
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot make private"),
            }
        }
    }
    if meta.is_dir() {
        let Ok(entries) = std::fs::read_dir(path) else {
            return;
        };
        for entry in entries.flatten() {
            tighten(&entry.path(), uid, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn an_old_data_directory_is_tightened_and_other_files_are_left_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let open = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        for f in ["store.db", "store.db-wal", "credentials", "notes.txt"] {
            std::fs::write(dir.join(f), b"x").unwrap();
            open(&dir.join(f), 0o644);
        }
        let blobs = dir.join("registry/blobs/sha256/ab");
        std::fs::create_dir_all(&blobs).unwrap();
        std::fs::write(blobs.join("abcd"), b"x").unwrap();
        open(&blobs.join("abcd"), 0o644);
        open(&blobs, 0o755);
        std::os::unix::fs::symlink("/etc/hostname", dir.join("logs")).unwrap();

        make_private(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        for f in ["store.db", "store.db-wal", "credentials"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        assert_eq!(mode(&blobs), 0o700);
        assert_eq!(mode(&blobs.join("abcd")), 0o600);
        // Not Berth's: untouched; a symbolic link is not followed.
        assert_eq!(mode(&dir.join("notes.txt")), 0o644);
        assert_ne!(mode(Path::new("/etc/hostname")) & 0o077, 0);

        // A new one is created 0700.
        let fresh = root.path().join("fresh/data");
        make_private(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }
}
