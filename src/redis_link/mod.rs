//! The connection to the Redis that several edges share (`[storage] backend
//! = "redis"`): a small pool of blocking connections, each command bounded
//! by `storage.timeout`, and a breaker, so that when Redis is down a caller
//! fails at once instead of every request waiting out the timeout. The
//! breaker closes by itself: the next command after a second tries again.
//!
//! Blocking, like the SQLite stores it stands in for: the session and
//! event traits are synchronous and called where SQLite is today (the
//! session cache keeps Redis off the path of most requests). The pool is
//! hand-written because r2d2 makes each caller wait its connection timeout
//! while Redis is down, which the breaker exists to avoid.

pub mod subscriber;

use crate::config::{RedisStorage, redact_url};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Connections kept for reuse; more are opened under load and closed after.
const POOL_KEEP: usize = 16;
/// How long the breaker stays open after a failure.
const BREAK_FOR: Duration = Duration::from_secs(1);

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
    /// Until when (ms on [`Self::epoch`]) commands fail at once.
    broken_until: AtomicU64,
    /// Whether the last command reached Redis (for `/readyz` and logs).
    up: AtomicBool,
    last_error: Mutex<String>,
    epoch: Instant,
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
        Ok(std::sync::Arc::new(Self {
            client,
            shown,
            settings: settings.clone(),
            pool: Mutex::new(Vec::new()),
            broken_until: AtomicU64::new(0),
            up: AtomicBool::new(true),
            last_error: Mutex::new(String::new()),
            epoch: Instant::now(),
        }))
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

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
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

    /// A connection: a pooled one, or a new one within the timeout.
    fn connection(&self) -> Result<redis::Connection, LinkError> {
        if let Some(c) = self.pool.lock().ok().and_then(|mut p| p.pop()) {
            return Ok(c);
        }
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
    /// breaker for a second and drops the connection; a command error (Redis
    /// answered) keeps both.
    pub fn run<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, LinkError> {
        let until = self.broken_until.load(Ordering::Relaxed);
        if until > self.now() {
            let why = self
                .last_error
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default();
            return Err(self.unreachable(why));
        }
        let mut c = match self.connection() {
            Ok(c) => c,
            Err(e) => {
                self.trip(&e);
                return Err(e);
            }
        };
        match f(&mut c) {
            Ok(v) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    tracing::info!(target: "storage", redis = %self.shown, "Redis is reachable again");
                }
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
        self.broken_until.store(
            self.now() + u64::try_from(BREAK_FOR.as_millis()).unwrap_or(1000),
            Ordering::Relaxed,
        );
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

    /// For `/readyz`: a PING now (the breaker is bypassed, so readiness
    /// returns as soon as Redis does).
    pub fn ping(&self) -> Result<(), LinkError> {
        self.broken_until.store(0, Ordering::Relaxed);
        self.run(|c| redis::cmd("PING").query::<String>(c))
            .map(|_| ())
    }

    /// A connection of its own for a subscriber or a blocking read, with
    /// no read timeout (the caller sets one).
    pub fn dedicated(&self) -> Result<redis::Connection, LinkError> {
        self.client
            .get_connection_with_timeout(self.settings.timeout)
            .map_err(|e| self.unreachable(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
