//! Server-side sessions: a 256-bit random id lives only in the browser's
//! cookie; the store keeps its SHA-256 with the user, creation and last-seen
//! times, so a leaked database cannot be replayed as cookies. Sessions persist
//! in SQLite (a restart logs nobody out) behind an in-memory cache, so the
//! gate's lookup on every request does not touch the disk.

use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use super::store_error::StoreError;

/// Names this store in error messages.
const WHAT: &str = "session";

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// Who signed in.
    pub user: String,
    /// When (ms since epoch).
    pub created: i64,
    /// Last request seen (ms since epoch), refreshed at most once a minute
    /// (or a quarter of the idle timeout, when that is shorter).
    pub last_seen: i64,
    /// The session's public name (identity assertions' `sid`): derived from
    /// the stored hash when the record is read, so a request that finds it
    /// cached hashes nothing. Neither the token nor the store's key.
    pub reference: String,
}

/// How long `last_seen` may lag before it is written again (less when the
/// idle timeout is short, so it stays accurate to a quarter of it).
const TOUCH_EVERY_MS: i64 = 60_000;
/// How long a cached session is trusted before the store is asked again, so
/// a revocation by another process (`esprit-edge session revoke`) takes effect.
const RECHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(3);

use super::session_index::{Key, SessionIndex};

/// A session as last read from the store.
struct Cached {
    key: Key,
    rec: SessionRecord,
    /// When the store was last asked (cache hits keep it).
    read_at: std::time::Instant,
}

/// Entries kept before stale ones (older than the recheck) are swept.
const CACHE_SWEEP_AT: usize = 10_000;

/// The session store.
pub struct Sessions {
    conn: Mutex<Connection>,
    /// The file, for the readiness probe's own connection.
    path: std::path::PathBuf,
    /// Keyed by the cookie token itself, so the gate's usual lookup costs a
    /// SipHash, not a SHA-256 (the process sees every token in requests
    /// anyway; only the store must not hold them).
    cache: Mutex<HashMap<String, Cached>>,
    /// Every id in the store: an unknown cookie is refused without a query.
    index: SessionIndex,
    /// Idle and absolute timeouts in ms; a reload may change them.
    idle_ms: std::sync::atomic::AtomicI64,
    absolute_ms: std::sync::atomic::AtomicI64,
    touch_ms: i64,
    recheck: std::time::Duration,
}

fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

/// The public name of the session stored under `key`: a domain-separated
/// SHA-256 of it, 128 bits in base64url.
fn reference_of(key: &[u8]) -> String {
    use base64::Engine;
    let digest = Sha256::new()
        .chain_update(b"esprit-edge session ref\0")
        .chain_update(key)
        .finalize();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Opens (creating) the store at `path` with the idle and absolute timeouts.
    pub fn open(path: &Path, idle: Duration, absolute: Duration) -> Result<Self, StoreError> {
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
        let index = SessionIndex::default();
        index.add(read_ids(&conn, i64::MIN).map_err(|e| StoreError::Db(WHAT, e))?);
        Ok(Self {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
            cache: Mutex::new(HashMap::new()),
            index,
            idle_ms: std::sync::atomic::AtomicI64::new(ms(idle)),
            absolute_ms: std::sync::atomic::AtomicI64::new(ms(absolute)),
            touch_ms: (i64::try_from(idle.as_millis()).unwrap_or(i64::MAX) / 4).min(TOUCH_EVERY_MS),
            recheck: RECHECK_EVERY,
        })
    }

    /// Starts a session for `user`; returns the cookie token (64 hex chars).
    /// Every login gets a new id, so a planted id is never promoted.
    pub fn create(&self, user: &str, now: i64) -> Result<String, StoreError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Random(WHAT, e))?;
        let token = hex(&raw);
        let k = key(&token);
        let rec = SessionRecord {
            user: user.to_string(),
            created: now,
            last_seen: now,
            reference: reference_of(&k),
        };
        self.conn
            .lock()
            .map_err(|_| StoreError::Poisoned(WHAT))?
            .execute(
                "INSERT INTO sessions (id_hash, user, created, last_seen) VALUES (?1, ?2, ?3, ?3)",
                params![&k[..], user, now],
            )
            .map_err(|e| StoreError::Db(WHAT, e))?;
        self.index.add([(k, now)]);
        self.cache_put(&token, k, rec, std::time::Instant::now());
        Ok(token)
    }

    fn expired(&self, r: &SessionRecord, now: i64) -> bool {
        let (idle, absolute) = self.timeouts_ms();
        now - r.last_seen > idle || now - r.created > absolute
    }

    fn cache_put(&self, token: &str, key: Key, rec: SessionRecord, read_at: std::time::Instant) {
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_SWEEP_AT {
                c.retain(|_, e| e.read_at.elapsed() < self.recheck);
            }
            c.insert(token.to_string(), Cached { key, rec, read_at });
        }
    }

    /// The live session for `token`, refreshing its idle timer; expired ones are deleted.
    pub fn resolve(&self, token: &str, now: i64) -> Option<SessionRecord> {
        self.lookup(token, now, true)
    }

    /// The live session for `token` without counting as use: an open stream
    /// polls this, and must not keep an idle session alive by itself.
    pub fn peek(&self, token: &str, now: i64) -> Option<SessionRecord> {
        self.lookup(token, now, false)
    }

    fn lookup(&self, token: &str, now: i64, touch: bool) -> Option<SessionRecord> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // A cached entry is trusted until `recheck` after the store was read, so
        // a session in constant use still sees revocations by other processes.
        let cached = self.cache.lock().ok().and_then(|c| {
            c.get(token)
                .filter(|e| e.read_at.elapsed() < self.recheck)
                .map(|e| (e.key, e.rec.clone(), e.read_at))
        });
        let hit = cached.is_some();
        let (k, rec, read_at) = match cached {
            Some(hit) => hit,
            None => {
                let k = key(token);
                let read_at = std::time::Instant::now();
                if !self.known(&k, read_at) {
                    return None;
                }
                let conn = self.conn.lock().ok()?;
                let r = conn
                    .query_row(
                        "SELECT user, created, last_seen FROM sessions WHERE id_hash = ?1",
                        params![&k[..]],
                        |row| {
                            Ok(SessionRecord {
                                user: row.get(0)?,
                                created: row.get(1)?,
                                last_seen: row.get(2)?,
                                reference: reference_of(&k),
                            })
                        },
                    )
                    .optional()
                    .ok()?;
                drop(conn);
                match r {
                    Some(r) => (k, r, read_at),
                    None => {
                        if let Ok(mut c) = self.cache.lock() {
                            c.remove(token);
                        }
                        // Deleted by another process.
                        self.index.remove([&k]);
                        return None;
                    }
                }
            }
        };
        if self.expired(&rec, now) {
            self.delete(token, &k);
            return None;
        }
        let mut rec = rec;
        let touched = touch && now - rec.last_seen >= self.touch_ms;
        if touched {
            rec.last_seen = now;
            if let Ok(conn) = self.conn.lock() {
                let _ = conn.execute(
                    "UPDATE sessions SET last_seen = ?2 WHERE id_hash = ?1",
                    params![&k[..], now],
                );
            }
        }
        // A plain cache hit (the gate's usual case) leaves the cache alone.
        if touched || !hit {
            self.cache_put(token, k, rec.clone(), read_at);
        }
        Some(rec)
    }

    /// Whether `k` may be a session: in the index, or in the store's
    /// newest rows when a top-up is due.
    fn known(&self, k: &Key, now: std::time::Instant) -> bool {
        if self.index.contains(k) {
            return true;
        }
        let Some(from) = self.index.top_up_from(now) else {
            return false;
        };
        if let Ok(conn) = self.conn.lock()
            && let Ok(ids) = read_ids(&conn, from)
        {
            self.index.add(ids);
        }
        self.index.contains(k)
    }

    fn delete(&self, token: &str, k: &Key) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(token);
        }
        self.index.remove([k]);
        if let Ok(conn) = self.conn.lock() {
            let _ = conn.execute("DELETE FROM sessions WHERE id_hash = ?1", params![&k[..]]);
        }
    }

    /// Ends the session of `token` (logout).
    pub fn revoke(&self, token: &str) {
        self.delete(token, &key(token));
    }

    /// Ends every session of `user`; returns how many.
    pub fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, e| e.rec.user != user);
        }
        let n = self
            .conn
            .lock()
            .map_err(|_| StoreError::Poisoned(WHAT))?
            .execute("DELETE FROM sessions WHERE user = ?1", params![user])
            .map_err(|e| StoreError::Db(WHAT, e))?;
        self.resync_index()?;
        Ok(n)
    }

    /// Makes the index exactly the store's ids again (after bulk deletes).
    fn resync_index(&self) -> Result<(), StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned(WHAT))?;
        let ids: std::collections::HashSet<Key> = read_ids(&conn, i64::MIN)
            .map_err(|e| StoreError::Db(WHAT, e))?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        self.index.retain(|k| ids.contains(k));
        Ok(())
    }

    /// Ends the sessions whose id hash starts with `prefix` (as `list` shows it); returns how many.
    pub fn revoke_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        if prefix.len() < 6 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Refused(
                "give at least 6 hex characters of a session id from `session list`",
            ));
        }
        let n = self
            .conn
            .lock()
            .map_err(|_| StoreError::Poisoned(WHAT))?
            .execute(
                "DELETE FROM sessions WHERE lower(hex(id_hash)) LIKE ?1 || '%'",
                params![prefix.to_ascii_lowercase()],
            )
            .map_err(|e| StoreError::Db(WHAT, e))?;
        if let Ok(mut c) = self.cache.lock() {
            let prefix = prefix.to_ascii_lowercase();
            c.retain(|_, e| !hex(&e.key).starts_with(&prefix));
        }
        self.resync_index()?;
        Ok(n)
    }

    /// The idle and absolute timeouts, in ms.
    pub fn timeouts_ms(&self) -> (i64, i64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.idle_ms.load(Relaxed), self.absolute_ms.load(Relaxed))
    }

    /// New timeouts from a reloaded config: every session is judged by them
    /// from its next use on.
    pub fn set_timeouts(&self, idle: Duration, absolute: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.idle_ms.store(ms(idle), Relaxed);
        self.absolute_ms.store(ms(absolute), Relaxed);
    }

    /// Whether the store answers a read (for `/readyz`): an unreadable or
    /// corrupt file, or a stuck connection, fails it.
    /// A fresh read-only connection, so a file replaced or damaged on disk
    /// shows even while the serving connection's cache hides it.
    pub fn ping(&self) -> Result<(), StoreError> {
        let c = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Db(WHAT, e))?;
        // A writer's checkpoint may hold a lock for a moment: not "not ready".
        c.busy_timeout(Duration::from_millis(500))
            .map_err(|e| StoreError::Db(WHAT, e))?;
        c.query_row("SELECT count(*) FROM sessions WHERE 0", [], |_| Ok(()))
            .map_err(|e| StoreError::Db(WHAT, e))
    }

    /// Deletes expired sessions (nobody may present them again); returns how many.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        if let Ok(mut c) = self.cache.lock() {
            c.retain(|_, e| !self.expired(&e.rec, now));
        }
        let n = self
            .conn
            .lock()
            .map_err(|_| StoreError::Poisoned(WHAT))?
            .execute(
                "DELETE FROM sessions WHERE last_seen < ?1 OR created < ?2",
                params![
                    now.saturating_sub(self.timeouts_ms().0),
                    now.saturating_sub(self.timeouts_ms().1)
                ],
            )
            .map_err(|e| StoreError::Db(WHAT, e))?;
        if n > 0 {
            self.resync_index()?;
        }
        Ok(n)
    }

    /// Live sessions as (id prefix for operators, record), newest first.
    pub fn list(&self, now: i64) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        let conn = self.conn.lock().map_err(|_| StoreError::Poisoned(WHAT))?;
        let mut st = conn
            .prepare("SELECT id_hash, user, created, last_seen FROM sessions ORDER BY created DESC")
            .map_err(|e| StoreError::Db(WHAT, e))?;
        let rows = st
            .query_map([], |row| {
                let k: Vec<u8> = row.get(0)?;
                Ok((
                    hex(&k[..6.min(k.len())]),
                    SessionRecord {
                        user: row.get(1)?,
                        created: row.get(2)?,
                        last_seen: row.get(3)?,
                        reference: reference_of(&k),
                    },
                ))
            })
            .map_err(|e| StoreError::Db(WHAT, e))?
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| StoreError::Db(WHAT, e))?;
        Ok(rows
            .into_iter()
            .filter(|(_, r)| !self.expired(r, now))
            .collect())
    }
}

/// Session ids created at or after `from` (ms), with their creation time.
fn read_ids(conn: &Connection, from: i64) -> rusqlite::Result<Vec<(Key, i64)>> {
    let mut st =
        conn.prepare_cached("SELECT id_hash, created FROM sessions WHERE created >= ?1")?;
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
    Ok(out)
}

/// A duration in ms, as the store keeps times.
fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;

    fn store(dir: &Path) -> Sessions {
        Sessions::open(
            &dir.join("sessions.sqlite3"),
            Duration::from_secs(2 * 3600),
            Duration::from_secs(12 * 3600),
        )
        .unwrap()
    }

    #[test]
    fn a_session_created_by_another_process_is_found_unknown_ones_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let serving = store(dir.path());
        // The other process of a hand-over, on the same file.
        let other = store(dir.path());
        let t = other.create("alice", 0).unwrap();
        assert_eq!(serving.resolve(&t, 1).map(|r| r.user), Some("alice".into()));
        let unknown = "ab".repeat(32);
        assert_eq!(serving.resolve(&unknown, 1), None);
        assert_eq!(
            serving.index.len(),
            1,
            "an unknown id is not remembered as known"
        );
        // Revoked by the other process: gone here too once rechecked.
        other.revoke(&t);
        serving.cache.lock().unwrap().clear();
        assert_eq!(serving.resolve(&t, 2), None);
        assert!(serving.index.is_empty());
    }

    #[test]
    fn create_resolve_revoke_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let t = s.create("alice", 0).unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(
            t,
            s.create("alice", 0).unwrap(),
            "every login gets a new id"
        );
        assert_eq!(s.resolve(&t, MIN).unwrap().user, "alice");
        drop(s);
        let s = store(dir.path());
        assert_eq!(
            s.resolve(&t, 2 * MIN).unwrap().user,
            "alice",
            "restart logged alice out"
        );
        s.revoke(&t);
        assert!(s.resolve(&t, 3 * MIN).is_none());
        assert!(s.resolve("not-a-token", 0).is_none());
    }

    #[test]
    fn idle_and_absolute_timeouts() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let idle = s.create("a", 0).unwrap();
        assert!(s.resolve(&idle, 2 * 60 * MIN + 1).is_none(), "idle timeout");
        let busy = s.create("b", 0).unwrap();
        let mut now = 0;
        while now < 12 * 60 * MIN {
            now += 60 * MIN;
            let alive = s.resolve(&busy, now).is_some();
            assert_eq!(alive, now <= 12 * 60 * MIN, "at {now}");
        }
        assert!(
            s.resolve(&busy, 12 * 60 * MIN + 1).is_none(),
            "absolute timeout"
        );
    }

    #[test]
    fn peeking_does_not_keep_a_session_alive_and_prune_drops_the_expired() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let watched = s.create("a", 0).unwrap();
        let used = s.create("b", 0).unwrap();
        let mut now = 0;
        while now < 3 * 60 * MIN {
            now += 10 * MIN;
            let alive = s.peek(&watched, now).is_some();
            assert_eq!(alive, now <= 2 * 60 * MIN, "peeked at {now}");
            assert!(s.resolve(&used, now).is_some(), "used at {now}");
        }
        s.create("c", now).unwrap();
        assert_eq!(s.prune(now + 2 * 60 * MIN + 1).unwrap(), 2);
        assert!(s.list(now).unwrap().is_empty(), "pruned from the store");
    }

    #[test]
    fn the_store_keeps_hashes_not_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let t = s.create("alice", 0).unwrap();
        s.create("bob", 0).unwrap();
        let raw = std::fs::read(dir.path().join("sessions.sqlite3")).unwrap();
        let wal = std::fs::read(dir.path().join("sessions.sqlite3-wal")).unwrap_or_default();
        for bytes in [raw, wal] {
            assert!(
                !bytes.windows(64).any(|w| w == t.as_bytes()),
                "token stored in clear"
            );
        }
        assert_eq!(s.list(0).unwrap().len(), 2);
        assert_eq!(s.revoke_user("alice").unwrap(), 1);
        assert!(s.resolve(&t, 0).is_none());
        assert_eq!(s.list(0).unwrap().len(), 1);
    }

    #[test]
    fn a_revocation_elsewhere_is_seen_even_by_a_session_in_constant_use() {
        let dir = tempfile::tempdir().unwrap();
        let mut edge = store(dir.path());
        edge.recheck = Duration::from_millis(100);
        let cli = store(dir.path());
        let t = edge.create("alice", 0).unwrap();
        assert_eq!(cli.revoke_user("alice").unwrap(), 1);
        // Resolved every 10 ms: cache hits must not keep postponing the re-read.
        let started = std::time::Instant::now();
        while edge.resolve(&t, 0).is_some() {
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "the cached session never saw its revocation"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
