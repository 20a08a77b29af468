//! Files the edge creates (the session store, the event store, and their
//! WAL files) hold session hashes, users and events: owner-only, mode 0600.

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
}
