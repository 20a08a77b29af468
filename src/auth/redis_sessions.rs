//! Sessions in the Redis several edges share. One hash per session under
//! the SHA-256 of its token (`<prefix>:session:<hex>`: user, created,
//! last_seen) that Redis expires at the session's idle or absolute end, and
//! one set per user of their session keys, for "end every session of this
//! user". Every deletion is published on `<prefix>:revoked`, so each edge
//! drops the session from its cache at once (see [`Revocations`]).
//!
//! The multi-key steps are Lua scripts: Redis runs each atomically, so a
//! touch racing a logout cannot bring the session back.

use super::session_store::{Ends, Key, SessionStore, StoreError, Stored, hex};
use crate::redis_link::RedisLink;
use redis::Script;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

/// Names this store in error messages.
const WHAT: &str = "session";

/// The shared session store.
pub struct RedisSessions {
    link: Arc<RedisLink>,
}

/// Sets a field only on a session that still exists, and moves its expiry.
static TOUCH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('EXISTS', KEYS[1]) == 1 then
            redis.call('HSET', KEYS[1], 'last_seen', ARGV[1])
            redis.call('PEXPIREAT', KEYS[1], ARGV[2])
          end
          return 0",
    )
});

/// Deletes one session, takes it out of its user's set, announces it.
/// KEYS: session, channel; ARGV: prefix, hex.
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local user = redis.call('HGET', KEYS[1], 'user')
          local n = redis.call('DEL', KEYS[1])
          if user then redis.call('SREM', ARGV[1] .. ':user-sessions:' .. user, ARGV[2]) end
          redis.call('PUBLISH', KEYS[2], 'k:' .. ARGV[2])
          return n",
    )
});

/// Deletes every session of a user and announces it. KEYS: the user's set,
/// channel; ARGV: prefix, user.
static DELETE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local n = 0
          for _, h in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            n = n + redis.call('DEL', ARGV[1] .. ':session:' .. h)
          end
          redis.call('DEL', KEYS[1])
          redis.call('PUBLISH', KEYS[2], 'u:' .. ARGV[2])
          return n",
    )
});

impl RedisSessions {
    /// The store on `link`.
    pub fn new(link: Arc<RedisLink>) -> Self {
        Self { link }
    }

    fn session_key(&self, key: &Key) -> String {
        self.link.key(&["session", &hex(key)])
    }

    /// The channel deletions are announced on.
    pub fn channel(link: &RedisLink) -> String {
        link.key(&["revoked"])
    }

    fn run<T>(
        &self,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.link.run(f).map_err(|e| StoreError::Shared(WHAT, e))
    }

    fn delete_hex(&self, h: &str) -> Result<usize, StoreError> {
        let key = self.link.key(&["session", h]);
        let channel = Self::channel(&self.link);
        let prefix = self.link.settings().prefix.clone();
        self.run(|c| {
            DELETE
                .key(&key)
                .key(&channel)
                .arg(&prefix)
                .arg(h)
                .invoke::<usize>(c)
        })
    }
}

fn parse(fields: HashMap<String, String>) -> Option<Stored> {
    Some(Stored {
        user: fields.get("user")?.clone(),
        created: fields.get("created")?.parse().ok()?,
        last_seen: fields.get("last_seen")?.parse().ok()?,
    })
}

impl SessionStore for RedisSessions {
    fn insert(&self, key: &Key, s: &Stored, ends: Ends) -> Result<(), StoreError> {
        let k = self.session_key(key);
        let set = self.link.key(&["user-sessions", &s.user]);
        self.run(|c| {
            let mut p = redis::pipe();
            p.atomic()
                .hset_multiple(
                    &k,
                    &[
                        ("user", s.user.clone()),
                        ("created", s.created.to_string()),
                        ("last_seen", s.last_seen.to_string()),
                    ],
                )
                .ignore()
                .cmd("PEXPIREAT")
                .arg(&k)
                .arg(ends.at)
                .ignore()
                .sadd(&set, hex(key))
                .ignore();
            // The set lives as long as the longest-lived session in it may,
            // in whatever order they are added (a migration adds the newest
            // first).
            crate::redis_link::extend_expiry(&mut p, &set, ends.latest);
            p.query::<()>(c)
        })
    }

    fn get(&self, key: &Key) -> Result<Option<Stored>, StoreError> {
        let k = self.session_key(key);
        let fields: HashMap<String, String> =
            self.run(|c| redis::cmd("HGETALL").arg(&k).query(c))?;
        Ok(parse(fields))
    }

    fn touch(&self, key: &Key, last_seen: i64, ends: Ends) -> Result<(), StoreError> {
        let k = self.session_key(key);
        self.run(|c| TOUCH.key(&k).arg(last_seen).arg(ends.at).invoke::<i64>(c))
            .map(|_| ())
    }

    fn delete(&self, key: &Key) -> Result<(), StoreError> {
        self.delete_hex(&hex(key)).map(|_| ())
    }

    fn delete_user(&self, user: &str) -> Result<usize, StoreError> {
        let set = self.link.key(&["user-sessions", user]);
        let channel = Self::channel(&self.link);
        let prefix = self.link.settings().prefix.clone();
        self.run(|c| {
            DELETE_USER
                .key(&set)
                .key(&channel)
                .arg(&prefix)
                .arg(user)
                .invoke::<usize>(c)
        })
    }

    fn delete_prefix(&self, prefix: &str) -> Result<usize, StoreError> {
        let mut n = 0;
        for (key, _) in self.list()? {
            let h = hex(&key);
            if h.starts_with(prefix) {
                n += self.delete_hex(&h)?;
            }
        }
        Ok(n)
    }

    fn list(&self) -> Result<Vec<(Key, Stored)>, StoreError> {
        let pattern = self.link.key(&["session", "*"]);
        let keys: Vec<String> = self.run(|c| {
            let mut cursor = 0u64;
            let mut keys = Vec::new();
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)?;
                keys.extend(batch);
                if next == 0 {
                    return Ok(keys);
                }
                cursor = next;
            }
        })?;
        let mut out = Vec::new();
        for chunk in keys.chunks(500) {
            let rows: Vec<HashMap<String, String>> = self.run(|c| {
                let mut p = redis::pipe();
                for k in chunk {
                    p.cmd("HGETALL").arg(k);
                }
                p.query(c)
            })?;
            for (k, fields) in chunk.iter().zip(rows) {
                let h = k.rsplit(':').next().unwrap_or("");
                let mut key = [0u8; 32];
                if h.len() == 64
                    && (0..32).all(|i| {
                        u8::from_str_radix(&h[2 * i..2 * i + 2], 16)
                            .map(|b| key[i] = b)
                            .is_ok()
                    })
                    && let Some(s) = parse(fields)
                {
                    out.push((key, s));
                }
            }
        }
        out.sort_by_key(|(_, s)| std::cmp::Reverse(s.created));
        Ok(out)
    }

    fn prune(&self, _: i64, _: i64) -> Result<usize, StoreError> {
        // Redis expires sessions by their TTL.
        Ok(0)
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.link.ping().map_err(|e| StoreError::Shared(WHAT, e))
    }

    fn ids_since(&self, _: i64) -> Result<Option<Vec<(Key, i64)>>, StoreError> {
        Ok(None)
    }

    fn announces_deletions(&self) -> bool {
        true
    }
}

/// A revocation as announced on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// One session, by the hex of its key.
    Key(String),
    /// Every session of a user.
    User(String),
}

impl Revoked {
    /// Reads a message of the revocation channel.
    pub fn parse(payload: &[u8]) -> Option<Self> {
        let s = std::str::from_utf8(payload).ok()?;
        if let Some(h) = s.strip_prefix("k:") {
            return Some(Self::Key(h.to_string()));
        }
        s.strip_prefix("u:").map(|u| Self::User(u.to_string()))
    }
}

/// What the revocation subscriber tells the session cache.
pub trait Revocations: Send + Sync + 'static {
    /// Forget `what` now.
    fn revoked(&self, what: Revoked);
    /// Messages may have been missed: forget everything cached.
    fn resubscribed(&self);
}

/// Bridges the pub/sub thread to a session cache.
pub struct RevocationListener(pub Arc<dyn Revocations>);

impl crate::redis_link::subscriber::Listener for RevocationListener {
    fn connected(&self) {
        self.0.resubscribed();
    }

    fn message(&self, _: &str, payload: &[u8]) {
        if let Some(r) = Revoked::parse(payload) {
            self.0.revoked(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocation_messages() {
        assert_eq!(Revoked::parse(b"k:ab12"), Some(Revoked::Key("ab12".into())));
        assert_eq!(
            Revoked::parse(b"u:alice"),
            Some(Revoked::User("alice".into()))
        );
        assert_eq!(Revoked::parse(b"x"), None);
        assert_eq!(Revoked::parse(&[0xff]), None);
    }
}
