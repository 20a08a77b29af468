//! Sessions in this edge's SQLite file (the default backend): WAL, one
//! connection behind a lock, statements that take microseconds.

use super::session_store::{Ends, Key, SessionStore, StoreError, Stored};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Names this store in error messages.
const WHAT: &str = "session";

/// The `sessions` table.
pub struct SqliteSessions {
    conn: Mutex<Connection>,
    /// The file, for the readiness probe's own connection.
    path: PathBuf,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Db(WHAT, e)
}

impl SqliteSessions {
    /// Opens (creating) the store at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::open(dir, e))?;
        }
        let conn = Connection::open(path).map_err(|e| StoreError::open(path, e))?;
        crate::private_file::make_private(path);
        conn.execute_batch(
            // NORMAL, not FULL: WAL commits then survive a crash of the edge,
            // and a power cut costs at most the last sign-ins and last-seen
            // updates, while no write on the request path waits on an fsync.
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 2000;
             CREATE TABLE IF NOT EXISTS sessions (
                id_hash BLOB PRIMARY KEY, user TEXT NOT NULL, created INTEGER NOT NULL, last_seen INTEGER NOT NULL);
             CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user);
             CREATE INDEX IF NOT EXISTS sessions_created ON sessions(created);",
        )
        .map_err(|e| StoreError::open(path, e))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned(WHAT))?;
        f(&conn).map_err(db)
    }
}

impl SessionStore for SqliteSessions {
    fn insert(&self, key: &Key, s: &Stored, _: Ends) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO sessions (id_hash, user, created, last_seen) VALUES (?1, ?2, ?3, ?4)",
                params![&key[..], s.user, s.created, s.last_seen],
            )
        })
        .map(|_| ())
    }

    fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT user, created, last_seen FROM sessions WHERE id_hash = ?1")?
                .query_row(params![&key[..]], |row| {
                    Ok(Stored {
                        user: row.get(0)?,
                        created: row.get(1)?,
                        last_seen: row.get(2)?,
                    })
                })
                .optional()
        })
    }

    fn touch(&self, key: &Key, last_seen: i64, _: Ends) -> Result<(), StoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
                params![&key[..], last_seen],
            )
        })
        .map(|_| ())
    }

    fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.with(|c| c.execute("DELETE FROM sessions WHERE id_hash = ?1", params![&key[..]]))
            .map(|_| ())
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        self.with(|c| c.execute("DELETE FROM sessions WHERE user = ?1", params![user]))
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM sessions WHERE lower(hex(id_hash)) LIKE ?1 || '%'",
                params![prefix],
            )
        })
    }

    fn list(&self) -> Result<Vec<(Key, Stored)>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT id_hash, user, created, last_seen FROM sessions ORDER BY created DESC",
            )?;
            let rows = st.query_map([], |row| {
                let k: Vec<u8> = row.get(0)?;
                Ok((
                    k,
                    Stored {
                        user: row.get(1)?,
                        created: row.get(2)?,
                        last_seen: row.get(3)?,
                    },
                ))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (k, s) = r?;
                if let Ok(k) = Key::try_from(k.as_slice()) {
                    out.push((k, s));
                }
            }
            Ok(out)
        })
    }

    fn prune(&self, idle_before: i64, created_before: i64) -> Result<usize, StoreError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM sessions WHERE last_seen < ?1 OR created < ?2",
                params![idle_before, created_before],
            )
        })
    }

    /// A fresh read-only connection, so a file replaced or damaged on disk
    /// shows even while the serving connection's cache hides it.
    fn ping(&self) -> Result<(), StoreError> {
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db)?;
        // A writer's checkpoint may hold a lock for a moment: not "not ready".
        c.busy_timeout(Duration::from_millis(500)).map_err(db)?;
        c.query_row("SELECT count(*) FROM sessions WHERE 0", [], |_| Ok(()))
            .map_err(db)
    }

    fn ids_since(&self, from: i64) -> Result<Option<Vec<(Key, i64)>>, StoreError> {
        self.with(|c| {
            let mut st =
                c.prepare_cached("SELECT id_hash, created FROM sessions WHERE created >= ?1")?;
            let rows = st.query_map(params![from], |row| {
                let k: Vec<u8> = row.get(0)?;
                let created: i64 = row.get(1)?;
                Ok((k, created))
            })?;
            let mut out = Vec::new();
            for r in rows {
                let (k, created) = r?;
                if let Ok(k) = Key::try_from(k.as_slice()) {
                    out.push((k, created));
                }
            }
            Ok(Some(out))
        })
    }
}
