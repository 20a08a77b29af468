//! Files the edge creates (the session store, the event store, and their
//! WAL files, the signing keys) hold session hashes, users, events and
//! secrets: owner-only, mode 0600.

use std::path::Path;

/// Makes `path` readable and writable by its owner only. SQLite gives the
/// `-wal` and `-shm` files it creates later the database file's mode, so
/// this is called right after the database is opened. A file the edge may
/// use but not chmod (another owner) is logged, not refused.
pub fn make_private(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        tracing::warn!(target: "edge", file = %path.display(), error = %e, "cannot make the file owner-only");
    }
}

/// Writes `bytes` to `path` atomically (a 0600 temp file beside it, fsync,
/// rename), so a reader sees the old file or the new one, never half of it,
/// and the content is never readable by others, not even for an instant.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // The process id makes two writers (two CLI runs) use two temp files.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Creates `path` with `bytes` unless it exists, atomically: edges that
/// share a data dir and start at the same moment must end up with the one
/// secret, not each with its own. Writes a 0600 temp file of a random name
/// (two containers' edges are both PID 1) and hard-links it into place,
/// which fails if `path` appeared meanwhile; returns whether this call
/// created it (if not, read what the other process wrote). A filesystem
/// without hard links gets the rename `write_private` does, which is
/// atomic but lets a simultaneous second creator win.
pub fn create_private(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new.{}", u64::from_le_bytes(suffix)));
    let tmp = std::path::PathBuf::from(tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()));
    let placed = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(_) if !path.exists() => std::fs::rename(&tmp, path).map(|()| true),
        Err(e) => Err(e),
    });
    let _ = std::fs::remove_file(&tmp);
    placed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_file_becomes_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        make_private(&p);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn written_files_are_owner_only_and_replace_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/key");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.path().join("sub/key.tmp").exists());
    }

    #[test]
    fn the_first_creator_wins_and_the_second_keeps_its_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub").join("secret");
        assert!(create_private(&p, b"first").unwrap());
        assert!(!create_private(&p, b"second").unwrap());
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temp file left beside it.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
