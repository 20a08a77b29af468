//! Sign-in throttling: after a few free failures each further attempt from the
//! same key waits twice as long as the last, up to a cap. A success clears an
//! account's count; an IP's count only fades (see `fail`).
//! Backoff, not lockout: per account the cap is short, so nobody can lock
//! someone else out for long by failing on purpose.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The per-IP throttle's key: an IPv4 address, or the /64 an IPv6 address
/// is in (one host usually holds a whole /64, so single addresses would
/// give it endless fresh keys).
pub fn ip_key(ip: IpAddr) -> String {
    match super::client_ip::block(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(net) => format!("{net}/64"),
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// When the latest counted attempt started.
    last: Instant,
    /// `last` before that attempt, restored if it is refunded.
    before: Instant,
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

    /// Starts an attempt for `key`: `Err(wait)` while it must still wait,
    /// else the attempt is counted as a failure at once, so attempts sent in
    /// parallel cannot all pass before the first one fails. A success takes
    /// it back with [`Throttle::refund`] or [`Throttle::succeed`].
    pub fn attempt(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Ok(mut map) = self.entries.lock() else {
            return Ok(());
        };
        if let Some(e) = map.get(key) {
            // `now` was read before the lock: a parallel attempt may have
            // stored a later one. Free attempts never wait, whatever the order.
            let wait = self.wait_for(e);
            let until = e.last + wait;
            if !wait.is_zero() && now < until {
                return Err(until - now);
            }
        }
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            make_room(&mut map, now, self.cap * 2);
        }
        let e = map.entry(key.to_string()).or_insert(Entry {
            failures: 0,
            last: now,
            before: now,
        });
        // Old failures are forgiven once the cap has passed twice over.
        if now.duration_since(e.last) > self.cap * 2 {
            e.failures = 0;
        }
        e.failures += 1;
        e.before = e.last;
        e.last = e.last.max(now);
        Ok(())
    }

    /// Takes back one attempt of `key` that turned out not to be a failure
    /// (a success from a client IP: its earlier failures still count).
    pub fn refund(&self, key: &str) {
        if let Ok(mut map) = self.entries.lock()
            && let Some(e) = map.get_mut(key)
        {
            e.failures = e.failures.saturating_sub(1);
            // Failures fade from the last *failure*, not the last attempt.
            e.last = e.before;
        }
    }

    /// Forgets `key` (a successful sign-in to that account).
    pub fn succeed(&self, key: &str) {
        if let Ok(mut map) = self.entries.lock() {
            map.remove(key);
        }
    }
}

/// Frees space in a full map: first the keys whose failures are forgiven
/// anyway, then (under a spray of fresh keys) the older half, so memory and
/// the cost of this sweep stay bounded.
fn make_room(map: &mut HashMap<String, Entry>, now: Instant, horizon: Duration) {
    map.retain(|_, e| now.duration_since(e.last) < horizon);
    if map.len() < MAX_KEYS {
        return;
    }
    let mut lasts: Vec<Instant> = map.values().map(|e| e.last).collect();
    let mid = lasts.len() / 2;
    let (_, median, _) = lasts.select_nth_unstable(mid);
    let median = *median;
    map.retain(|_, e| e.last > median);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_failures_then_doubling_waits_up_to_the_cap() {
        let t = Throttle::new(3, Duration::from_secs(1), Duration::from_secs(4));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.attempt("ip", t0).is_ok());
        }
        assert_eq!(t.attempt("ip", t0), Err(Duration::from_secs(1)));
        let t1 = t0 + Duration::from_secs(1);
        assert!(t.attempt("ip", t1).is_ok());
        assert_eq!(t.attempt("ip", t1), Err(Duration::from_secs(2)));
        for i in 1..=10 {
            let at = t1 + Duration::from_secs(4 * i);
            assert!(t.attempt("ip", at).is_ok(), "attempt {i} after its wait");
        }
        let last = t1 + Duration::from_secs(40);
        assert_eq!(t.attempt("ip", last), Err(Duration::from_secs(4)), "capped");
        assert!(t.attempt("other", t0).is_ok());
        t.succeed("ip");
        assert!(t.attempt("ip", last).is_ok());
    }

    #[test]
    fn parallel_attempts_are_counted_before_they_finish() {
        let t = Throttle::new(5, Duration::from_secs(1), Duration::from_secs(30));
        let t0 = Instant::now();
        // Twenty attempts arrive together; none has finished yet.
        let passed = (0..20).filter(|_| t.attempt("alice", t0).is_ok()).count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn free_attempts_pass_whatever_order_their_clocks_arrive_in() {
        let t = Throttle::new(3, Duration::from_secs(1), Duration::from_secs(30));
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_millis(5);
        // The later-stamped attempt takes the lock first.
        assert!(t.attempt("ip", t1).is_ok());
        assert!(t.attempt("ip", t0).is_ok(), "a free attempt was throttled");
        assert!(t.attempt("ip", t0).is_ok());
        assert_eq!(
            t.attempt("ip", t0),
            Err(Duration::from_millis(1005)),
            "the wait runs from the latest attempt"
        );
    }

    #[test]
    fn a_refund_takes_back_one_attempt_only() {
        let t = Throttle::new(2, Duration::from_secs(1), Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(t.attempt("ip", t0).is_ok());
        assert!(t.attempt("ip", t0).is_ok());
        t.refund("ip");
        assert!(
            t.attempt("ip", t0).is_ok(),
            "the refunded attempt is free again"
        );
        assert!(
            t.attempt("ip", t0).is_err(),
            "the earlier failure still counts"
        );
    }

    #[test]
    fn a_refund_does_not_restart_the_fading_clock() {
        let t = Throttle::new(1, Duration::from_secs(1), Duration::from_secs(10));
        let t0 = Instant::now();
        t.attempt("ip", t0).unwrap();
        // A success 19 s later is refunded: the failure at t0 still fades at t0 + 20 s.
        let later = t0 + Duration::from_secs(19);
        t.attempt("ip", later).unwrap();
        t.refund("ip");
        let map = t.entries.lock().unwrap();
        assert_eq!(map["ip"].failures, 1);
        assert_eq!(map["ip"].last, t0);
    }

    #[test]
    fn a_spray_of_fresh_keys_keeps_the_map_bounded() {
        let t = Throttle::new(5, Duration::from_secs(1), Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            let at = t0 + Duration::from_micros(i as u64);
            t.attempt(&format!("k{i}"), at).unwrap();
        }
        let len = t.entries.lock().unwrap().len();
        assert!(len <= MAX_KEYS, "{len} keys");
        assert!(len > MAX_KEYS / 3, "{len} keys: too much forgotten");
    }

    #[test]
    fn old_failures_are_forgiven() {
        let t = Throttle::new(2, Duration::from_secs(1), Duration::from_secs(2));
        let t0 = Instant::now();
        for _ in 0..2 {
            t.attempt("k", t0).unwrap();
        }
        assert!(t.attempt("k", t0).is_err());
        let later = t0 + Duration::from_secs(10);
        t.attempt("k", later).unwrap();
        assert!(t.attempt("k", later).is_ok(), "counted from scratch again");
    }

    #[test]
    fn an_ipv6_host_is_throttled_by_its_64() {
        let key = |s: &str| ip_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
