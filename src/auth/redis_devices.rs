//! Known devices in the Redis several edges share: one hash per device
//! (`<prefix>:device:<hex>`: user, failures) that Redis expires when the
//! device's trust does, and one set per user, for forgetting a removed
//! user's devices. A device trusted on one edge is trusted on all.

use super::session_store::hex;
use super::store_error::StoreError;
use crate::redis_link::RedisLink;
use redis::Script;
use std::sync::{Arc, LazyLock};

const WHAT: &str = "device";

/// Counts one attempt against a device of this user with attempts left.
/// KEYS: device; ARGV: user, most failures.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('HGET', KEYS[1], 'user') ~= ARGV[1] then return 0 end
          local f = tonumber(redis.call('HGET', KEYS[1], 'failures') or '0')
          if f >= tonumber(ARGV[2]) then return 0 end
          redis.call('HINCRBY', KEYS[1], 'failures', 1)
          return 1",
    )
});

/// KEYS: the user's set; ARGV: prefix.
static FORGET_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = 0
          for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            n = n + redis.call('DEL', ARGV[1] .. ':device:' .. h)
          end
          redis.call('DEL', KEYS[1])
          return n",
    )
});

/// The shared device store.
pub struct RedisDevices {
    link: Arc<RedisLink>,
    ttl_ms: i64,
}

impl RedisDevices {
    /// Devices on `link`, trusted for `ttl_ms` after their sign-in.
    pub fn new(link: Arc<RedisLink>, ttl_ms: i64) -> Self {
        Self { link, ttl_ms }
    }

    fn run<T>(
        &self,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.link.run(f).map_err(|e| StoreError::Shared(WHAT, e))
    }

    /// Stores device `key` of `user`, issued at `now`.
    pub fn issue(&self, key: &[u8; 32], user: &str, now: i64) -> Result<(), StoreError> {
        self.import(key, user, now, 0)
    }

    /// Stores device `key` of `user` as issued at `issued` with `failures`
    /// spent (a new device, or one copied by `esprit-edge migrate`).
    pub fn import(
        &self,
        key: &[u8; 32],
        user: &str,
        issued: i64,
        failures: i64,
    ) -> Result<(), StoreError> {
        let now = issued;
        let failures = failures.to_string();
        let k = self.link.key(&["device", &hex(key)]);
        let set = self.link.key(&["user-devices", user]);
        let until = now.saturating_add(self.ttl_ms);
        self.run(|c| {
            let mut p = redis::pipe();
            p.atomic()
                .hset_multiple(&k, &[("user", user), ("failures", failures.as_str())])
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&k)
                .arg(until)
                .ignore()
                .sadd(&set, hex(key))
                .ignore();
            crate::redis_link::extend_expiry(&mut p, &set, until);
            p.query::<()>(c)
        })
    }

    /// Spends one attempt of device `key` for `user`.
    pub fn admit(&self, key: &[u8; 32], user: &str, most: i64) -> bool {
        let k = self.link.key(&["device", &hex(key)]);
        self.run(|c| ADMIT.key(&k).arg(user).arg(most).invoke::<i64>(c))
            .is_ok_and(|n| n == 1)
    }

    /// Forgets device `key`.
    pub fn forget(&self, key: &[u8; 32]) {
        let k = self.link.key(&["device", &hex(key)]);
        let _ = self.run(|c| redis::cmd("DEL").arg(&k).query::<i64>(c));
    }

    /// Forgets every device of `user`.
    pub fn forget_user(&self, user: &str) -> Result<usize, StoreError> {
        let set = self.link.key(&["user-devices", user]);
        let prefix = self.link.settings().prefix.clone();
        self.run(|c| FORGET_USER.key(&set).arg(&prefix).invoke::<usize>(c))
    }
}
