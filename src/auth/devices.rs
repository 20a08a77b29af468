//! Device cookies (OWASP's answer to lockout abuse): a browser that signed
//! in to an account before carries a random token for it, and its sign-ins
//! to that account skip the per-account and per-IP backoff, which someone
//! failing on purpose elsewhere could otherwise keep closed. A trusted
//! device gets only a few wrong passwords before it is trusted no more.
//!
//! Like sessions, only a SHA-256 of each token is stored (in the session
//! store's database), so the table cannot be replayed as cookies.

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

pub use super::store_error::StoreError;

/// Names this store in error messages.
const WHAT: &str = "device";

/// Wrong passwords a trusted device may send before it is forgotten.
const DEVICE_FAILURES: i64 = 5;

/// A device as `export` gives it: key, user, issued (ms), failures spent.
pub type Exported = ([u8; 32], String, i64, i64);

/// The known devices of each account.
pub struct Devices {
    store: Store,
    ttl_ms: i64,
}

/// Where they are kept.
enum Store {
    /// The `devices` table beside the sessions.
    Sqlite(Mutex<Connection>),
    /// The Redis several edges share.
    Redis(super::redis_devices::RedisDevices),
}

fn key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Devices {
    /// Opens (creating) the `devices` table in the database at `path`;
    /// a device is trusted for `ttl` after its last successful sign-in.
    pub fn open(path: &Path, ttl: Duration) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(|e| StoreError::open(path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 2000;
             CREATE TABLE IF NOT EXISTS devices (
                id_hash BLOB PRIMARY KEY, user TEXT NOT NULL, issued INTEGER NOT NULL,
                failures INTEGER NOT NULL DEFAULT 0);
             CREATE INDEX IF NOT EXISTS devices_user ON devices(user);",
        )
        .map_err(|e| StoreError::open(path, e))?;
        Ok(Self {
            store: Store::Sqlite(Mutex::new(conn)),
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        })
    }

    /// Devices in the Redis several edges share.
    pub fn shared(link: std::sync::Arc<crate::redis_link::RedisLink>, ttl: Duration) -> Self {
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        Self {
            store: Store::Redis(super::redis_devices::RedisDevices::new(link, ttl_ms)),
            ttl_ms,
        }
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, StoreError> {
        match &self.store {
            Store::Sqlite(c) => c.lock().map_err(|_| StoreError::Poisoned(WHAT)),
            Store::Redis(_) => Err(StoreError::Refused("not a SQLite device store")),
        }
    }

    /// A new device token for `user` after a successful sign-in (64 hex chars).
    pub fn issue(&self, user: &str, now: i64) -> Result<String, StoreError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Random(WHAT, e))?;
        let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        if let Store::Redis(r) = &self.store {
            r.issue(&key(&token), user, now)?;
            return Ok(token);
        }
        self.conn()?
            .execute(
                "INSERT INTO devices (id_hash, user, issued) VALUES (?1, ?2, ?3)",
                params![&key(&token)[..], user, now],
            )
            .map_err(|e| StoreError::Db(WHAT, e))?;
        Ok(token)
    }

    /// Admits one sign-in attempt from `token` to `user`'s account: true when
    /// it is a live device of that account that still has a wrong password to
    /// spend. The attempt is counted as a failure before its password is
    /// checked (in one statement, so attempts sent in parallel cannot all
    /// pass); a success replaces the device anyway.
    pub fn admit(&self, token: &str, user: &str, now: i64) -> bool {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        if let Store::Redis(r) = &self.store {
            return r.admit(&key(token), user, DEVICE_FAILURES);
        }
        let Ok(conn) = self.conn() else {
            return false;
        };
        conn.execute(
            "UPDATE devices SET failures = failures + 1
             WHERE id_hash = ?1 AND user = ?2 AND failures < ?3 AND issued >= ?4",
            params![
                &key(token)[..],
                user,
                DEVICE_FAILURES,
                now.saturating_sub(self.ttl_ms)
            ],
        )
        .is_ok_and(|changed| changed == 1)
    }

    /// Forgets `token` (replaced by a new one at sign-in).
    pub fn forget(&self, token: &str) {
        if let Store::Redis(r) = &self.store {
            return r.forget(&key(token));
        }
        if let Ok(conn) = self.conn() {
            let _ = conn.execute(
                "DELETE FROM devices WHERE id_hash = ?1",
                params![&key(token)[..]],
            );
        }
    }

    /// Forgets every device of `user` (removed from the users file).
    pub fn forget_user(&self, user: &str) -> Result<usize, StoreError> {
        if let Store::Redis(r) = &self.store {
            return r.forget_user(user);
        }
        self.conn()?
            .execute("DELETE FROM devices WHERE user = ?1", params![user])
            .map_err(|e| StoreError::Db(WHAT, e))
    }

    /// Every live device as (key, user, issued, failures), for `esprit-edge
    /// migrate` (SQLite only: a shared store is the target, not a source).
    pub fn export(&self, now: i64) -> Result<Vec<Exported>, StoreError> {
        let conn = self.conn()?;
        let mut st = conn
            .prepare("SELECT id_hash, user, issued, failures FROM devices WHERE issued >= ?1 AND failures < ?2")
            .map_err(|e| StoreError::Db(WHAT, e))?;
        let rows = st
            .query_map(
                params![now.saturating_sub(self.ttl_ms), DEVICE_FAILURES],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .map_err(|e| StoreError::Db(WHAT, e))?;
        let mut out = Vec::new();
        for row in rows {
            let (k, user, issued, failures) = row.map_err(|e| StoreError::Db(WHAT, e))?;
            if let Ok(k) = <[u8; 32]>::try_from(k.as_slice()) {
                out.push((k, user, issued, failures));
            }
        }
        Ok(out)
    }

    /// Stores a device read from another store (Redis only).
    pub fn import(
        &self,
        key: &[u8; 32],
        user: &str,
        issued: i64,
        failures: i64,
    ) -> Result<(), StoreError> {
        match &self.store {
            Store::Redis(r) => r.import(key, user, issued, failures),
            Store::Sqlite(_) => Err(StoreError::Refused("devices are imported into Redis only")),
        }
    }

    /// Deletes devices past their lifetime or out of attempts; returns how many.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        if let Store::Redis(_) = &self.store {
            // Redis expires devices by their TTL.
            return Ok(0);
        }
        self.conn()?
            .execute(
                "DELETE FROM devices WHERE issued < ?1 OR failures >= ?2",
                params![now.saturating_sub(self.ttl_ms), DEVICE_FAILURES],
            )
            .map_err(|e| StoreError::Db(WHAT, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000;

    fn store(dir: &Path) -> Devices {
        Devices::open(
            &dir.join("sessions.sqlite3"),
            Duration::from_secs(30 * 86_400),
        )
        .unwrap()
    }

    #[test]
    fn a_device_is_trusted_for_its_own_account_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let d = store(dir.path());
        let t = d.issue("alice", 0).unwrap();
        assert!(d.admit(&t, "alice", DAY));
        assert!(!d.admit(&t, "bob", DAY), "bound to its account");
        assert!(!d.admit(&t, "alice", 31 * DAY), "expired");
        assert!(!d.admit("f00", "alice", 0));
        // Survives a restart.
        drop(d);
        let d = store(dir.path());
        assert!(d.admit(&t, "alice", DAY));
        assert_eq!(d.prune(31 * DAY).unwrap(), 1);
        assert!(!d.admit(&t, "alice", DAY));
    }

    #[test]
    fn a_device_gets_five_attempts_even_sent_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let d = store(dir.path());
        let t = d.issue("alice", 0).unwrap();
        let other = d.issue("alice", 0).unwrap();
        // Ten attempts in flight together, none finished: five are admitted.
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..10)
                .map(|_| s.spawn(|| usize::from(d.admit(&t, "alice", 0))))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, DEVICE_FAILURES as usize);
        assert!(!d.admit(&t, "alice", 0));
        assert!(d.admit(&other, "alice", 0), "only the guessing device");
        assert_eq!(d.prune(0).unwrap(), 1, "the spent device is pruned");
        assert_eq!(d.forget_user("alice").unwrap(), 1);
        assert!(!d.admit(&other, "alice", 0));
    }

    #[test]
    fn the_store_keeps_hashes_not_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let d = store(dir.path());
        let t = d.issue("alice", 0).unwrap();
        drop(d);
        for f in ["sessions.sqlite3", "sessions.sqlite3-wal"] {
            let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
            assert!(!bytes.windows(64).any(|w| w == t.as_bytes()), "{f}");
        }
    }
}
