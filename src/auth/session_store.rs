//! Where sessions are kept, behind one small trait: this edge's SQLite file,
//! or the Redis several edges share. [`super::sessions::Sessions`] puts the
//! cache, the timeouts and the index of known ids in front of either.

pub use super::session_index::Key;
pub use super::store_error::StoreError;

/// What a store keeps of one session (under the SHA-256 of its token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Who signed in.
    pub user: String,
    /// When (ms since epoch).
    pub created: i64,
    /// Last request seen (ms since epoch).
    pub last_seen: i64,
}

/// When a session ends unless used again: a store that expires keys (Redis)
/// sets its TTL from these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ends {
    /// Idle or absolute end, whichever is first (ms since epoch).
    pub at: i64,
    /// The absolute end (ms since epoch).
    pub latest: i64,
}

/// The session store's operations. Calls block (a SQLite statement, a
/// Redis round trip bounded by `storage.timeout`).
pub trait SessionStore: Send + Sync {
    /// Stores a new session.
    fn insert(&self, key: &Key, s: &Stored, ends: Ends) -> Result<(), StoreError>;
    /// The session stored under `key`.
    fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError>;
    /// Records use at `last_seen` (never brings back a deleted session).
    fn touch(&self, key: &Key, last_seen: i64, ends: Ends) -> Result<(), StoreError>;
    /// Ends one session (logout), on every edge that shares the store.
    fn delete(&self, key: &Key) -> Result<(), StoreError>;
    /// Ends every session of `user`; returns how many.
    fn delete_user(&self, user: &str) -> Result<usize, StoreError>;
    /// Ends the sessions whose key, in hex, starts with `prefix` (lower case).
    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError>;
    /// Every stored session, newest first.
    fn list(&self) -> Result<Vec<(Key, Stored)>, StoreError>;
    /// Deletes sessions last seen before `idle_before` or created before
    /// `created_before`; returns how many (a store whose keys expire by
    /// themselves deletes nothing here).
    fn prune(&self, idle_before: i64, created_before: i64) -> Result<usize, StoreError>;
    /// Whether the store answers now (for `/readyz`).
    fn ping(&self) -> Result<(), StoreError>;
    /// Ids created at or after `from` with their creation time, for the
    /// in-memory index of known ids; `None` from a store that keeps no such
    /// listing cheaply (every unknown id then costs one read).
    fn ids_since(&self, from: i64) -> Result<Option<Vec<(Key, i64)>>, StoreError>;
    /// Whether a session deleted through another process may still be in
    /// this one's cache until it is re-read (SQLite); a shared store that
    /// announces deletions (Redis pub/sub) says false.
    fn announces_deletions(&self) -> bool {
        false
    }
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
