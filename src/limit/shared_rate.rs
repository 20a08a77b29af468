//! Rate rules counted once across every edge that shares a Redis: the same
//! GCRA as the local rules, run atomically in Redis by one Lua script on
//! Redis's own clock (`TIME`), so edges with skewed clocks agree. The key
//! is a SHA-256 of the rule's key, so no session token or bearer token is
//! stored in Redis.
//!
//! The local limiter still runs first with the same quota: a flood from one
//! client on one edge is refused there without a round trip. When Redis
//! cannot be reached the local answer stands (each edge then limits on its
//! own, as with SQLite) rather than refusing everything.

use crate::redis_link::RedisLink;
use redis::Script;
use sha2::{Digest, Sha256};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

/// GCRA. KEYS: the key; ARGV: emission interval and burst tolerance (µs).
/// Returns 0 when allowed, else the µs until the next request would be.
static GCRA: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local t = redis.call('TIME')
          local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
          local interval = tonumber(ARGV[1])
          local tolerance = tonumber(ARGV[2])
          local tat = tonumber(redis.call('GET', KEYS[1]) or now)
          if tat < now then tat = now end
          local allow_at = tat - tolerance
          if now < allow_at then return allow_at - now end
          local new_tat = tat + interval
          redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
          return 0",
    )
});

/// What Redis said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit across every edge.
    Allowed,
    /// Over it; the next request of this key is allowed after this long.
    Wait(Duration),
    /// Redis did not answer: the local limiter's answer stands.
    Unknown,
}

/// The shared counters of the rate rules.
pub struct SharedRates {
    link: Arc<RedisLink>,
}

impl SharedRates {
    /// Counters on `link`.
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self { link }
    }

    /// Counts one request of `key` under `rule`: one every `interval`,
    /// `burst` at once.
    pub fn check(&self, rule: &str, key: &str, interval: Duration, burst: u32) -> Verdict {
        let digest = Sha256::digest(key.as_bytes());
        let h: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let k = self.link.key(&["rate", rule, &h]);
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let tolerance_us = interval_us.saturating_mul(u64::from(burst.max(1)) - 1);
        match self.link.run(|c| {
            GCRA.key(&k)
                .arg(interval_us)
                .arg(tolerance_us)
                .invoke::<u64>(c)
        }) {
            Ok(0) => Verdict::Allowed,
            Ok(us) => Verdict::Wait(Duration::from_micros(us)),
            Err(e) => {
                tracing::debug!(target: "limit", error = %e, "shared rate counter unavailable; this edge's own count applies");
                Verdict::Unknown
            }
        }
    }
}
