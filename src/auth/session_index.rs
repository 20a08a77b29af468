//! Which session ids exist, held in memory, so a request with an unknown
//! session cookie is answered without touching the store. A flood of random
//! well-formed cookies then costs a SHA-256 and a set lookup each, not a
//! SQLite query under the store's lock on a proxy worker. It is a negative
//! cache of everything: an id not in the set is unknown.
//!
//! Another process may create sessions in the same store (the new process of
//! a SIGQUIT hand-over): on a miss the set is topped up from the store, at
//! most once per [`REFRESH_EVERY`], so such a session is known here within
//! that time. Ids deleted elsewhere linger until a lookup finds them gone.

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// A session id's SHA-256, as the store keeps it.
pub type Key = [u8; 32];

/// How often a miss may top the set up from the store.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// Sessions created this long before the newest one seen are read again at
/// a top-up: another process's clock and commit order may lag ours.
pub const OVERLAP_MS: i64 = 5_000;

/// The set, and how far the store has been read into it.
#[derive(Default)]
pub struct SessionIndex {
    ids: RwLock<HashSet<Key>>,
    /// The newest `created` read from the store.
    through: AtomicI64,
    refreshed: Mutex<Option<Instant>>,
}

impl SessionIndex {
    /// Whether `key` is a session id (as far as this process knows).
    pub fn contains(&self, key: &Key) -> bool {
        self.ids
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(key)
    }

    /// Adds ids read from the store or just created, with their creation time.
    pub fn add(&self, ids: impl IntoIterator<Item = (Key, i64)>) {
        let mut set = self.ids.write().unwrap_or_else(|p| p.into_inner());
        for (k, created) in ids {
            set.insert(k);
            self.through.fetch_max(created, Ordering::Relaxed);
        }
    }

    /// Forgets ids that are gone.
    pub fn remove<'a>(&self, keys: impl IntoIterator<Item = &'a Key>) {
        let mut set = self.ids.write().unwrap_or_else(|p| p.into_inner());
        for k in keys {
            set.remove(k);
        }
    }

    /// Keeps only the ids `keep` says are still there.
    pub fn retain(&self, keep: impl Fn(&Key) -> bool) {
        self.ids
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|k| keep(k));
    }

    /// The `created` from which a top-up reads, when one is due now (at most
    /// one per [`REFRESH_EVERY`], whichever thread asks first).
    pub fn top_up_from(&self, now: Instant) -> Option<i64> {
        let mut last = self.refreshed.try_lock().ok()?;
        if last.is_some_and(|t| now.duration_since(t) < REFRESH_EVERY) {
            return None;
        }
        *last = Some(now);
        Some(
            self.through
                .load(Ordering::Relaxed)
                .saturating_sub(OVERLAP_MS),
        )
    }

    /// How many ids are known.
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_known_until_removed() {
        let i = SessionIndex::default();
        i.add([([1; 32], 10), ([2; 32], 20)]);
        assert!(i.contains(&[1; 32]) && i.contains(&[2; 32]));
        assert!(!i.contains(&[3; 32]));
        i.remove([&[1; 32]]);
        assert!(!i.contains(&[1; 32]));
        i.retain(|k| k[0] != 2);
        assert!(i.is_empty());
    }

    #[test]
    fn top_ups_are_at_most_once_a_second_and_overlap() {
        let i = SessionIndex::default();
        i.add([([1; 32], 100_000)]);
        let t0 = Instant::now();
        assert_eq!(i.top_up_from(t0), Some(100_000 - OVERLAP_MS));
        assert_eq!(i.top_up_from(t0 + Duration::from_millis(500)), None);
        assert!(i.top_up_from(t0 + REFRESH_EVERY).is_some());
    }
}
