//! The connection to the Redis that several edges share (`[storage] backend
//! = "redis"`): a small pool of blocking connections, each command bounded
//! by `storage.timeout`, and a breaker, so that when Redis is down a caller
//! fails at once instead of every request waiting out the timeout. The
//! breaker closes by itself: a probe thread PINGs every second while it is
//! open, so no request waits on a Redis that is still away.
//!
//! Blocking, like the SQLite stores it stands in for: the session and
//! event traits are synchronous, and the edge calls them on blocking
//! threads (`spawn_blocking`, the hub's reads, the journal's writer), never
//! on a Pingora worker; the session cache keeps Redis off the path of most
//! requests. The pool is hand-written because r2d2 makes each caller wait
//! its connection timeout while Redis is down, which the breaker exists to
//! avoid.

pub mod subscriber;

use crate::config::{RedisStorage, redact_url};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Connections kept for reuse; more are opened under load and closed after.
const POOL_KEEP: usize = 16;
/// How often the probe tries a Redis the breaker gave up on.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Why a Redis command did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LinkError {
    /// Redis could not be reached or did not answer in time (the breaker
    /// may be open: the last failure is given).
    #[error("Redis at {at} is unreachable: {why}")]
    Unreachable {
        /// The URL without its password.
        at: String,
        /// What failed.
        why: String,
    },
    /// Redis answered with an error (a script bug, a wrong type, OOM).
    #[error("Redis at {at} refused a command: {why}")]
    Refused {
        /// The URL without its password.
        at: String,
        /// Redis's message.
        why: String,
    },
}

/// The shared Redis: the pool, the breaker and the settings.
pub struct RedisLink {
    client: redis::Client,
    /// The URL without its password, for messages.
    shown: String,
    settings: RedisStorage,
    pool: Mutex<Vec<redis::Connection>>,
    /// Whether Redis answered last; while false (the breaker is open)
    /// commands fail at once and only the probe tries Redis.
    up: AtomicBool,
    last_error: Mutex<String>,
}

impl RedisLink {
    /// A link to `settings.url`; does not connect (an edge starts while Redis
    /// is down, and reports it on `/readyz`).
    pub fn new(settings: &RedisStorage) -> Result<std::sync::Arc<Self>, LinkError> {
        let shown = redact_url(&settings.url);
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|e| LinkError::Refused {
                at: shown.clone(),
                why: e.to_string().replace(&settings.url, &shown),
            })?;
        let link = std::sync::Arc::new(Self {
            client,
            shown,
            settings: settings.clone(),
            pool: Mutex::new(Vec::new()),
            up: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
        });
        let weak = std::sync::Arc::downgrade(&link);
        // Ends when the link is dropped (a CLI command's link, a test's).
        let _ = std::thread::Builder::new()
            .name("esprit-edge-redis-probe".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(PROBE_EVERY);
                    let Some(link) = weak.upgrade() else { return };
                    if !link.is_up() {
                        let _ = link.probe();
                    }
                }
            });
        Ok(link)
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &RedisStorage {
        &self.settings
    }

    /// A key under the deployment's prefix: `esprit:session:ab12`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut k = self.settings.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    /// Whether the last command reached Redis.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    fn unreachable(&self, why: String) -> LinkError {
        LinkError::Unreachable {
            at: self.shown.clone(),
            why,
        }
    }

    /// A new connection, its reads and writes bounded by the timeout.
    fn connect(&self) -> Result<redis::Connection, LinkError> {
        let t = self.settings.timeout;
        let c = self
            .client
            .get_connection_with_timeout(t)
            .map_err(|e| self.unreachable(e.to_string()))?;
        c.set_read_timeout(Some(t))
            .and_then(|()| c.set_write_timeout(Some(t)))
            .map_err(|e| self.unreachable(e.to_string()))?;
        Ok(c)
    }

    /// Runs `f` on a connection. A connection or timeout failure opens the
    /// breaker (until the probe reaches Redis) and drops the connection; a
    /// command error (Redis answered) keeps both.
    pub fn run<T>(
        &self,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, LinkError> {
        if !self.is_up() {
            let why = self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            return Err(self.unreachable(why));
        }
        let pooled = self.pool.lock().ok().and_then(|mut p| p.pop());
        let was_pooled = pooled.is_some();
        let mut c = match pooled.map_or_else(|| self.connect(), Ok) {
            Ok(c) => c,
            Err(e) => {
                self.trip(&e);
                return Err(e);
            }
        };
        let mut result = f(&mut c);
        // A pooled connection Redis closed while it sat idle (Redis's
        // `timeout`, a restart, a proxy between) fails on first use: that
        // says nothing about Redis now, so one fresh connection tries again.
        if was_pooled && result.as_ref().is_err_and(dropped) {
            match self.connect() {
                Ok(fresh) => {
                    c = fresh;
                    result = f(&mut c);
                }
                Err(e) => {
                    self.trip(&e);
                    return Err(e);
                }
            }
        }
        match result {
            Ok(v) => {
                if let Ok(mut p) = self.pool.lock()
                    && p.len() < POOL_KEEP
                {
                    p.push(c);
                }
                Ok(v)
            }
            Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                let e = self.unreachable(e.to_string());
                self.trip(&e);
                Err(e)
            }
            Err(e) => Err(LinkError::Refused {
                at: self.shown.clone(),
                why: e.to_string(),
            }),
        }
    }

    fn trip(&self, e: &LinkError) {
        if let Ok(mut p) = self.pool.lock() {
            // The others shared the failure; they reconnect when next needed.
            p.clear();
        }
        if let Ok(mut last) = self.last_error.lock() {
            *last = e.to_string();
        }
        if self.up.swap(false, Ordering::Relaxed) {
            tracing::error!(target: "storage", error = %e, "Redis is unreachable: sign-ins and hub writes are refused, cached sessions keep working for storage.offline_grace");
        }
    }

    /// A PING on a new connection, whatever the breaker says; an answer
    /// closes the breaker. Called by the probe thread and by [`Self::ping`].
    fn probe(&self) -> Result<(), LinkError> {
        let answered = self.connect().and_then(|mut c| {
            redis::cmd("PING")
                .query::<String>(&mut c)
                .map_err(|e| self.unreachable(e.to_string()))
                .map(|_| c)
        });
        match answered {
            Ok(c) => {
                if let Ok(mut p) = self.pool.lock() {
                    p.push(c);
                }
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(target: "storage", redis = %self.shown, "Redis is reachable again");
                }
                Ok(())
            }
            Err(e) => {
                self.trip(&e);
                Err(e)
            }
        }
    }

    /// For `/readyz` and the start-up check: a PING now, even while the
    /// breaker is open (so readiness returns as soon as Redis does).
    pub fn ping(&self) -> Result<(), LinkError> {
        if self.is_up() {
            self.run(|c| redis::cmd("PING").query::<String>(c))
                .map(|_| ())
        } else {
            self.probe()
        }
    }

    /// A connection of its own for a subscriber or a blocking read, with
    /// no read timeout (the caller sets one).
    pub fn dedicated(&self) -> Result<redis::Connection, LinkError> {
        self.client
            .get_connection_with_timeout(self.settings.timeout)
            .map_err(|e| self.unreachable(e.to_string()))
    }
}

/// Whether `e` means the connection was gone before Redis could run the
/// command: not a timeout (Redis may have run it, and must not run it
/// twice), not a refusal.
fn dropped(e: &redis::RedisError) -> bool {
    !e.is_timeout() && (e.is_connection_dropped() || e.is_io_error())
}

/// Moves `key`'s expiry to `at` (ms since epoch) unless it already lasts
/// longer (`PEXPIREAT … GT`, which needs Redis 7; this works from 6.2). For
/// the per-user sets, which must live as long as their longest-lived member
/// whatever order members are added in.
const EXTEND: &str = r"local t = redis.call('PTTL', KEYS[1])
    if t == -2 then return 0 end
    if t >= 0 then
      local now = redis.call('TIME')
      local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
      if now_ms + t >= tonumber(ARGV[1]) then return 0 end
    end
    return redis.call('PEXPIREAT', KEYS[1], ARGV[1])";

/// Adds to `p` the command that extends `key`'s expiry to `at`, never
/// shortening it (see `EXTEND`).
pub fn extend_expiry(p: &mut redis::Pipeline, key: &str, at: i64) {
    p.cmd("EVAL").arg(EXTEND).arg(1).arg(key).arg(at).ignore();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn dead() -> std::sync::Arc<RedisLink> {
        // A port nothing listens on: connect is refused at once.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        RedisLink::new(&RedisStorage {
            url: format!("redis://:hunter2@127.0.0.1:{port}"),
            timeout: Duration::from_millis(200),
            offline_grace: Duration::from_secs(60),
            prefix: "t".into(),
        })
        .unwrap()
    }

    #[test]
    fn a_dead_redis_trips_the_breaker_and_the_message_hides_the_password() {
        let link = dead();
        let e = link
            .run(|c| redis::cmd("PING").query::<String>(c))
            .unwrap_err();
        assert!(matches!(e, LinkError::Unreachable { .. }));
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!link.is_up());
        // The breaker is open: the next command does not even try.
        let started = Instant::now();
        let mut tried = false;
        let again = link.run(|c| {
            tried = true;
            redis::cmd("PING").query::<String>(c)
        });
        assert!(
            again.is_err() && !tried,
            "the breaker let a command through"
        );
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(link.key(&["session", "ab"]), "t:session:ab");
    }
}
