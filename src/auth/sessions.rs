//! Server-side sessions: a 256-bit random id lives only in the browser's
//! cookie; the store keeps its SHA-256 with the user, creation and last-seen
//! times, so a leaked database cannot be replayed as cookies. Sessions persist
//! in a [`SessionStore`] (this edge's SQLite file, or the Redis several edges
//! share) behind an in-memory cache, so the gate's lookup on most requests
//! touches neither.

use super::redis_sessions::{Revocations, Revoked};
use super::session_store::{Ends, SessionStore, Stored, hex};
use super::sqlite_sessions::SqliteSessions;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use super::store_error::StoreError;

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
/// a revocation by another process (`esprit-edge session revoke`, another
/// edge's use that moved `last_seen`) takes effect. Redis also announces
/// deletions, which take effect at once.
const RECHECK_EVERY: Duration = Duration::from_secs(3);

use super::session_index::{Key, SessionIndex};

/// A session as last read from the store.
struct Cached {
    key: Key,
    rec: SessionRecord,
    /// When the store was last asked (cache hits keep it).
    read_at: Instant,
}

/// Entries kept before stale ones (older than the recheck) are swept.
const CACHE_SWEEP_AT: usize = 10_000;

/// The cache, keyed by the cookie token itself, so the gate's usual lookup
/// costs a SipHash, not a SHA-256 (the process sees every token in requests
/// anyway; only the store must not hold them).
#[derive(Default)]
struct SessionCache {
    map: Mutex<HashMap<String, Cached>>,
    /// Tokens a shared store said it does not have (unknown, ended,
    /// revoked), with when: answered without another round trip for
    /// `recheck`, so a stale or forged cookie costs one read, not one per
    /// check. SQLite's index does this job there.
    absent: Mutex<HashMap<String, Instant>>,
    /// Counts revocations announced by other edges: a store read that
    /// raced one is not cached (it may be the session just revoked).
    revocations: std::sync::atomic::AtomicU64,
}

impl SessionCache {
    /// Drops the entries `keep` refuses, remembering their tokens as absent.
    fn retain(&self, mut keep: impl FnMut(&String, &mut Cached) -> bool) {
        let mut gone = Vec::new();
        if let Ok(mut c) = self.map.lock() {
            c.retain(|t, e| {
                let k = keep(t, e);
                if !k {
                    gone.push(t.clone());
                }
                k
            });
        }
        for t in gone {
            self.mark_absent(&t);
        }
    }

    fn mark_absent(&self, token: &str) {
        if let Ok(mut a) = self.absent.lock() {
            if a.len() >= CACHE_SWEEP_AT {
                a.retain(|_, at| at.elapsed() < RECHECK_EVERY);
            }
            a.insert(token.to_string(), Instant::now());
        }
    }

    fn is_absent(&self, token: &str, within: Duration) -> bool {
        self.absent
            .lock()
            .ok()
            .and_then(|a| a.get(token).map(|at| at.elapsed() < within))
            .unwrap_or(false)
    }
}

impl Revocations for SessionCache {
    fn revoked(&self, what: Revoked) {
        self.revocations
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        match what {
            Revoked::Key(h) => self.retain(|_, e| hex(&e.key) != h),
            Revoked::User(u) => self.retain(|_, e| e.rec.user != u),
        }
    }

    fn resubscribed(&self) {
        self.revocations
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        // Not known to be gone, only unchecked: re-read, not refused.
        if let Ok(mut c) = self.map.lock() {
            c.clear();
        }
    }
}

/// The session store.
pub struct Sessions {
    store: Box<dyn SessionStore>,
    cache: Arc<SessionCache>,
    /// Every id in the store (SQLite): an unknown cookie is refused without
    /// a query. `None` for Redis, whose store keeps no cheap listing.
    index: Option<SessionIndex>,
    /// Idle and absolute timeouts in ms; a reload may change them.
    idle_ms: std::sync::atomic::AtomicI64,
    absolute_ms: std::sync::atomic::AtomicI64,
    touch_ms: i64,
    recheck: Duration,
    /// How long a cached session keeps working while the store cannot be
    /// reached (Redis down); zero for SQLite.
    offline_grace: Duration,
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

fn record(k: &Key, s: Stored) -> SessionRecord {
    SessionRecord {
        user: s.user,
        created: s.created,
        last_seen: s.last_seen,
        reference: reference_of(k),
    }
}

impl Sessions {
    /// Opens (creating) the SQLite store at `path` with the idle and absolute timeouts.
    pub fn open(path: &Path, idle: Duration, absolute: Duration) -> Result<Self, StoreError> {
        Self::with_store(
            Box::new(SqliteSessions::open(path)?),
            idle,
            absolute,
            Duration::ZERO,
        )
    }

    /// Sessions in `store`; a store that keeps a listing of ids gets the
    /// index of known ids, read once here.
    pub fn with_store(
        store: Box<dyn SessionStore>,
        idle: Duration,
        absolute: Duration,
        offline_grace: Duration,
    ) -> Result<Self, StoreError> {
        let index = match store.ids_since(i64::MIN)? {
            Some(ids) => {
                let index = SessionIndex::default();
                index.add(ids);
                Some(index)
            }
            None => None,
        };
        Ok(Self {
            store,
            cache: Arc::default(),
            index,
            idle_ms: std::sync::atomic::AtomicI64::new(ms(idle)),
            absolute_ms: std::sync::atomic::AtomicI64::new(ms(absolute)),
            touch_ms: (i64::try_from(idle.as_millis()).unwrap_or(i64::MAX) / 4).min(TOUCH_EVERY_MS),
            recheck: RECHECK_EVERY,
            offline_grace,
        })
    }

    /// Whether other edges use the same store (Redis).
    pub fn shared(&self) -> bool {
        self.store.announces_deletions()
    }

    /// What a revocation subscriber tells (see `redis_sessions`).
    pub fn revocations(&self) -> Arc<dyn Revocations> {
        self.cache.clone()
    }

    fn ends(&self, created: i64, last_seen: i64) -> Ends {
        let (idle, absolute) = self.timeouts_ms();
        let latest = created.saturating_add(absolute);
        Ends {
            at: last_seen.saturating_add(idle).min(latest),
            latest,
        }
    }

    /// Starts a session for `user`; returns the cookie token (64 hex chars).
    /// Every login gets a new id, so a planted id is never promoted.
    pub fn create(&self, user: &str, now: i64) -> Result<String, StoreError> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Random("session", e))?;
        let token = hex(&raw);
        let k = key(&token);
        let stored = Stored {
            user: user.to_string(),
            created: now,
            last_seen: now,
        };
        self.store.insert(&k, &stored, self.ends(now, now))?;
        if let Some(index) = &self.index {
            index.add([(k, now)]);
        }
        let seen = self.revocations_announced();
        self.cache_put(&token, k, record(&k, stored), Instant::now(), seen);
        Ok(token)
    }

    fn expired(&self, r: &SessionRecord, now: i64) -> bool {
        let (idle, absolute) = self.timeouts_ms();
        now - r.last_seen > idle || now - r.created > absolute
    }

    fn revocations_announced(&self) -> u64 {
        self.cache
            .revocations
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Caches `rec` unless a revocation was announced since `seen` (checked
    /// under the lock the revocation handler takes): the announcement may
    /// have been for this very session, and caching what was read before
    /// it would let it work here for another recheck interval.
    fn cache_put(&self, token: &str, key: Key, rec: SessionRecord, read_at: Instant, seen: u64) {
        if let Ok(mut c) = self.cache.map.lock() {
            if self.revocations_announced() != seen {
                return;
            }
            if c.len() >= CACHE_SWEEP_AT {
                let keep = self.recheck.max(self.offline_grace);
                c.retain(|_, e| e.read_at.elapsed() < keep);
            }
            c.insert(token.to_string(), Cached { key, rec, read_at });
        }
    }

    /// The live session for `token`, refreshing its idle timer; expired ones are deleted.
    pub fn resolve(&self, token: &str, now: i64) -> Option<SessionRecord> {
        self.lookup(token, now, true).ok().flatten()
    }

    /// As [`Self::resolve`], telling a store that cannot be reached (and a
    /// session not cached long enough to ride it out) from no session.
    pub fn resolve_checked(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        self.lookup(token, now, true)
    }

    /// Whether lookups may have to ask a shared store (Redis), so the edge
    /// reads sessions ahead off its worker threads; SQLite's index and
    /// cache keep it off disk, and such requests skip the read-ahead whole.
    pub fn reads_ahead(&self) -> bool {
        self.index.is_none()
    }

    /// Whether resolving `token` now would wait on a shared store (not
    /// cached, cached too long ago, or a use to record), so the edge can do
    /// it on a blocking thread first and the gate then finds it cached.
    /// Never for SQLite, whose index and cache keep it off disk.
    pub fn would_wait(&self, token: &str, now: i64, touch: bool) -> bool {
        if self.index.is_some() || token.len() != 64 || self.cache.is_absent(token, self.recheck) {
            return false;
        }
        let Ok(c) = self.cache.map.lock() else {
            return false;
        };
        match c.get(token) {
            None => true,
            Some(e) => {
                e.read_at.elapsed() >= self.recheck
                    || (touch && now - e.rec.last_seen >= self.touch_ms)
            }
        }
    }

    /// The live session for `token` without counting as use: an open stream
    /// polls this, and must not keep an idle session alive by itself.
    pub fn peek(&self, token: &str, now: i64) -> Option<SessionRecord> {
        self.lookup(token, now, false).ok().flatten()
    }

    fn lookup(
        &self,
        token: &str,
        now: i64,
        touch: bool,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if token.len() != 64 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        // Taken before anything is read: a revocation announced after this
        // point keeps what this lookup read out of the cache.
        let revocations_seen = self.revocations_announced();
        if self.index.is_none() && self.cache.is_absent(token, self.recheck) {
            return Ok(None);
        }
        let cached = self
            .cache
            .map
            .lock()
            .ok()
            .and_then(|c| c.get(token).map(|e| (e.key, e.rec.clone(), e.read_at)));
        // A cached entry is trusted until `recheck` after the store was read, so
        // a session in constant use still sees revocations by other processes.
        let fresh = cached
            .as_ref()
            .is_some_and(|(_, _, read_at)| read_at.elapsed() < self.recheck);
        let (k, rec, read_at, hit) = match cached {
            Some((k, rec, read_at)) if fresh => (k, rec, read_at, true),
            cached => {
                let k = cached.as_ref().map_or_else(|| key(token), |c| c.0);
                let read_at = Instant::now();
                if cached.is_none() && !self.known(&k, read_at) {
                    return Ok(None);
                }
                match self.store.get(&k) {
                    Ok(Some(s)) => (k, record(&k, s), read_at, false),
                    Ok(None) => {
                        if let Ok(mut c) = self.cache.map.lock() {
                            c.remove(token);
                        }
                        if self.index.is_none() {
                            self.cache.mark_absent(token);
                        }
                        // Deleted by another process.
                        if let Some(index) = &self.index {
                            index.remove([&k]);
                        }
                        return Ok(None);
                    }
                    // Redis is down: a session read not long ago rides it out.
                    Err(e) if e.unreachable() => match cached {
                        Some((k, rec, old)) if old.elapsed() < self.offline_grace => {
                            (k, rec, old, true)
                        }
                        _ => return Err(e),
                    },
                    Err(e) => return Err(e),
                }
            }
        };
        if self.expired(&rec, now) {
            self.delete(token, &k);
            return Ok(None);
        }
        let mut rec = rec;
        let touched = touch && now - rec.last_seen >= self.touch_ms;
        if touched {
            rec.last_seen = now;
            // A failed write only costs idle-timer accuracy.
            let _ = self.store.touch(&k, now, self.ends(rec.created, now));
        }
        // A plain cache hit (the gate's usual case) leaves the cache alone.
        // A read that a revocation overtook is answered but not kept: the
        // announcement may have been for this very session, and caching
        // it would let it work here for another recheck interval.
        if touched || !hit {
            self.cache_put(token, k, rec.clone(), read_at, revocations_seen);
        }
        Ok(Some(rec))
    }

    /// Whether `k` may be a session: in the index, or in the store's
    /// newest rows when a top-up is due. Without an index, anything may be.
    fn known(&self, k: &Key, now: Instant) -> bool {
        let Some(index) = &self.index else {
            return true;
        };
        if index.contains(k) {
            return true;
        }
        let Some(from) = index.top_up_from(now) else {
            return false;
        };
        if let Ok(Some(ids)) = self.store.ids_since(from) {
            index.add(ids);
        }
        index.contains(k)
    }

    fn delete(&self, token: &str, k: &Key) {
        if let Ok(mut c) = self.cache.map.lock() {
            c.remove(token);
        }
        if self.index.is_none() {
            self.cache.mark_absent(token);
        }
        if let Some(index) = &self.index {
            index.remove([k]);
        }
        if let Err(e) = self.store.delete(k) {
            tracing::warn!(target: "auth", error = %e, "a session could not be deleted from the store");
        }
    }

    /// Ends the session of `token` (logout).
    pub fn revoke(&self, token: &str) {
        self.delete(token, &key(token));
    }

    /// Ends the session of `token`, saying whether the store took it: a
    /// logout that Redis did not hear must not look done.
    pub fn revoke_checked(&self, token: &str) -> Result<(), StoreError> {
        let k = key(token);
        if let Ok(mut c) = self.cache.map.lock() {
            c.remove(token);
        }
        match &self.index {
            Some(index) => index.remove([&k]),
            None => self.cache.mark_absent(token),
        }
        self.store.delete(&k)
    }

    /// Ends every session of `user`; returns how many.
    pub fn revoke_user(&self, user: &str) -> Result<usize, StoreError> {
        self.cache.retain(|_, e| e.rec.user != user);
        let n = self.store.delete_user(user)?;
        self.resync_index()?;
        Ok(n)
    }

    /// Makes the index exactly the store's ids again (after bulk deletes).
    fn resync_index(&self) -> Result<(), StoreError> {
        let Some(index) = &self.index else {
            return Ok(());
        };
        let ids: std::collections::HashSet<Key> = self
            .store
            .ids_since(i64::MIN)?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        index.retain(|k| ids.contains(k));
        Ok(())
    }

    /// Ends the sessions whose id hash starts with `prefix` (as `list` shows it); returns how many.
    pub fn revoke_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        if prefix.len() < 6 || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Refused(
                "give at least 6 hex characters of a session id from `session list`",
            ));
        }
        let prefix = prefix.to_ascii_lowercase();
        let n = self.store.delete_prefix(&prefix)?;
        self.cache.retain(|_, e| !hex(&e.key).starts_with(&prefix));
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

    /// Whether the store answers a read (for `/readyz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.store.ping()
    }

    /// Deletes expired sessions (nobody may present them again); returns how many.
    pub fn prune(&self, now: i64) -> Result<usize, StoreError> {
        let keep = self.recheck.max(self.offline_grace);
        self.cache
            .retain(|_, e| !self.expired(&e.rec, now) && e.read_at.elapsed() < keep);
        let (idle, absolute) = self.timeouts_ms();
        let n = self
            .store
            .prune(now.saturating_sub(idle), now.saturating_sub(absolute))?;
        if n > 0 {
            self.resync_index()?;
        }
        Ok(n)
    }

    /// Live sessions as (id prefix for operators, record), newest first.
    pub fn list(&self, now: i64) -> Result<Vec<(String, SessionRecord)>, StoreError> {
        Ok(self
            .store
            .list()?
            .into_iter()
            .map(|(k, s)| (hex(&k[..6]), record(&k, s)))
            .filter(|(_, r)| !self.expired(r, now))
            .collect())
    }

    /// Every stored session with its key, for `esprit-edge migrate`.
    pub fn export(&self) -> Result<Vec<(Key, Stored)>, StoreError> {
        self.store.list()
    }

    /// Stores a session read from another store under its key (migration).
    pub fn import(&self, key: &Key, s: &Stored) -> Result<(), StoreError> {
        self.store.insert(key, s, self.ends(s.created, s.last_seen))
    }
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
            serving.index.as_ref().unwrap().len(),
            1,
            "an unknown id is not remembered as known"
        );
        // Revoked by the other process: gone here too once rechecked.
        other.revoke(&t);
        serving.cache.map.lock().unwrap().clear();
        assert_eq!(serving.resolve(&t, 2), None);
        assert!(serving.index.as_ref().unwrap().is_empty());
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

    /// A store that keeps no id listing, like Redis, in memory: only the
    /// cache policy is under test here (tests/it/shared_store.rs runs the
    /// real Redis).
    #[derive(Default)]
    struct Listless(
        Mutex<HashMap<Key, Stored>>,
        /// Announces a revocation during each read, as another edge's
        /// logout can arrive while this one waits on Redis.
        Arc<Mutex<Option<Arc<dyn Revocations>>>>,
        /// Reads so far.
        Arc<std::sync::atomic::AtomicUsize>,
    );

    impl SessionStore for Listless {
        fn insert(&self, key: &Key, s: &Stored, _: Ends) -> Result<(), StoreError> {
            self.0.lock().unwrap().insert(*key, s.clone());
            Ok(())
        }
        fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
            self.2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let found = self.0.lock().unwrap().get(key).cloned();
            if let Some(r) = self.1.lock().unwrap().as_ref() {
                r.revoked(Revoked::Key(hex(key)));
            }
            Ok(found)
        }
        fn touch(&self, key: &Key, last_seen: i64, _: Ends) -> Result<(), StoreError> {
            if let Some(s) = self.0.lock().unwrap().get_mut(key) {
                s.last_seen = last_seen;
            }
            Ok(())
        }
        fn delete(&self, key: &Key) -> Result<(), StoreError> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
        fn delete_user(&self, _: &str) -> Result<usize, StoreError> {
            Ok(0)
        }
        fn delete_prefix(&self, _: &str) -> Result<usize, StoreError> {
            Ok(0)
        }
        fn list(&self) -> Result<Vec<(Key, Stored)>, StoreError> {
            Ok(Vec::new())
        }
        fn prune(&self, _: i64, _: i64) -> Result<usize, StoreError> {
            Ok(0)
        }
        fn ping(&self) -> Result<(), StoreError> {
            Ok(())
        }
        fn ids_since(&self, _: i64) -> Result<Option<Vec<(Key, i64)>>, StoreError> {
            Ok(None)
        }
        fn announces_deletions(&self) -> bool {
            true
        }
    }

    /// Sessions over `store`, with the shipped timeouts.
    fn listless(store: Listless) -> Sessions {
        Sessions::with_store(
            Box::new(store),
            Duration::from_secs(2 * 3600),
            Duration::from_secs(12 * 3600),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    #[test]
    fn only_a_lookup_that_would_reach_a_shared_store_is_warmed_first() {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = store(dir.path());
        let t = sqlite.create("alice", 0).unwrap();
        assert!(
            !sqlite.would_wait(&t, 1, true),
            "SQLite stays on the worker"
        );

        let mut shared = listless(Listless::default());
        shared.recheck = Duration::from_millis(500);
        let t = shared.create("alice", 0).unwrap();
        shared.cache.map.lock().unwrap().clear();
        assert!(shared.would_wait(&t, 1, true), "not cached: a read");
        assert!(shared.resolve(&t, 1).is_some());
        assert!(
            !shared.would_wait(&t, 2, true),
            "just read: the cache answers"
        );
        assert!(
            shared.would_wait(&t, 2 + shared.touch_ms, true),
            "a use to record"
        );
        assert!(
            !shared.would_wait(&t, 2 + shared.touch_ms, false),
            "a peek records no use"
        );
        std::thread::sleep(Duration::from_millis(520));
        assert!(shared.would_wait(&t, 3, true), "past the recheck: a read");
        assert!(!shared.would_wait("short", 3, true), "not a session id");
    }

    #[test]
    fn a_read_overtaken_by_a_revocation_is_not_cached() {
        let store = Listless::default();
        let hook = store.1.clone();
        let s = listless(store);
        let t = s.create("alice", 0).unwrap();
        s.cache.map.lock().unwrap().clear();
        *hook.lock().unwrap() = Some(s.revocations());
        assert!(s.resolve(&t, 1).is_some(), "the read itself is answered");
        assert!(
            s.would_wait(&t, 2, true),
            "but not cached: the next request reads the store again"
        );
        *hook.lock().unwrap() = None;
        assert!(s.resolve(&t, 2).is_some());
        assert!(!s.would_wait(&t, 3, true), "an undisturbed read is cached");
    }

    #[test]
    fn a_token_the_shared_store_lacks_costs_one_read_per_recheck() {
        let store = Listless::default();
        let reads = store.2.clone();
        let s = listless(store);
        let read = || reads.load(std::sync::atomic::Ordering::SeqCst);
        let forged = "cd".repeat(32);
        assert!(s.resolve(&forged, 1).is_none());
        assert!(s.resolve(&forged, 2).is_none());
        assert!(s.peek(&forged, 3).is_none());
        assert_eq!(read(), 1, "one read, then remembered as absent");
        assert!(!s.would_wait(&forged, 4, true));
        // A session revoked by another edge is absent at once, unread.
        let t = s.create("alice", 0).unwrap();
        assert!(s.resolve(&t, 5).is_some());
        let before = read();
        s.revocations().revoked(Revoked::User("alice".into()));
        assert!(!s.would_wait(&t, 6, true));
        assert!(s.resolve(&t, 6).is_none(), "revoked here without a read");
        assert_eq!(read(), before);
    }
}
