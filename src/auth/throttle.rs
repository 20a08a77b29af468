//! Sign-in throttling: after a few free failures each further attempt from the
//! same key waits twice as long as the last, up to a cap. A success clears an
//! account's count; an IP's count only fades (see `fail`).
//! Backoff, not lockout: per account the cap is short, so nobody can lock
//! someone else out for long by failing on purpose.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last: Instant,
}

/// Failure counts for one kind of key (client IP, or account).
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
    free: u32,
    base: Duration,
    cap: Duration,
}

/// Keys kept before old ones are swept (memory stays bounded under a spray).
const MAX_KEYS: usize = 100_000;

impl Throttle {
    /// `free` failures cost nothing; then waits of `base`, `2·base`, … up to `cap`.
    pub fn new(free: u32, base: Duration, cap: Duration) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            free,
            base,
            cap,
        }
    }

    fn wait_for(&self, e: &Entry) -> Duration {
        if e.failures < self.free {
            return Duration::ZERO;
        }
        let doublings = (e.failures - self.free).min(20);
        self.base.saturating_mul(1 << doublings).min(self.cap)
    }

    /// `Err(wait)` while `key` must still wait.
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(map) = self.entries.lock() else {
            return Ok(());
        };
        let Some(e) = map.get(key) else { return Ok(()) };
        let until = e.last + self.wait_for(e);
        if now < until {
            Err(until - now)
        } else {
            Ok(())
        }
    }

    /// Records a failure for `key`.
    pub fn fail(&self, key: &str, now: Instant) {
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= MAX_KEYS {
            let horizon = self.cap * 2;
            map.retain(|_, e| now.duration_since(e.last) < horizon);
        }
        let e = map.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            last: now,
        });
        // Old failures are forgiven once the cap has passed twice over.
        if now.duration_since(e.last) > self.cap * 2 {
            e.failures = 0;
        }
        e.failures += 1;
        e.last = now;
    }

    /// Forgets `key` (a successful sign-in to that account).
    pub fn succeed(&self, key: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_failures_then_doubling_waits_up_to_the_cap() {
        let t = Throttle::new(3, Duration::from_secs(1), Duration::from_secs(4));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.check("ip", t0).is_ok());
            t.fail("ip", t0);
        }
        assert_eq!(t.check("ip", t0), Err(Duration::from_secs(1)));
        assert!(t.check("ip", t0 + Duration::from_secs(1)).is_ok());
        t.fail("ip", t0 + Duration::from_secs(1));
        assert_eq!(
            t.check("ip", t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(2))
        );
        for _ in 0..10 {
            t.fail("ip", t0 + Duration::from_secs(1));
        }
        assert_eq!(
            t.check("ip", t0 + Duration::from_secs(1)),
            Err(Duration::from_secs(4)),
            "capped"
        );
        assert!(t.check("other", t0).is_ok());
        t.succeed("ip");
        assert!(t.check("ip", t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn old_failures_are_forgiven() {
        let t = Throttle::new(2, Duration::from_secs(1), Duration::from_secs(2));
        let t0 = Instant::now();
        t.fail("k", t0);
        t.fail("k", t0);
        t.fail("k", t0);
        assert!(t.check("k", t0).is_err());
        t.fail("k", t0 + Duration::from_secs(10));
        assert!(
            t.check("k", t0 + Duration::from_secs(10)).is_ok(),
            "counted from scratch again"
        );
    }
}
