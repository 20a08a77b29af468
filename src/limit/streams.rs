//! Concurrent long-lived streams (websockets, SSE) per client IP and per
//! session. A stream holds a [`StreamPermit`] for as long as it is open; the
//! permit's drop frees its place. A rate rule cannot do this: 500 streams
//! opened slowly pass any rate, and each holds memory and a socket.

use super::client_ip::block;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// A stream over a cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StreamRefused {
    /// `server.max_streams_per_ip`.
    #[error("too many open streams from this address (at most {0})")]
    PerIp(usize),
    /// `server.max_streams_per_session`.
    #[error("too many open streams for this session (at most {0})")]
    PerSession(usize),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Ip(IpAddr),
    Session(String),
}

/// The caps and the open streams by key (absent when zero, so the map holds
/// only keys with open streams).
pub struct StreamCaps {
    per_ip: usize,
    per_session: usize,
    open: Mutex<HashMap<Key, u32>>,
}

/// Who opens a stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Opener<'a> {
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// The session cookie of a signed-in request.
    pub session: Option<&'a str>,
}

impl StreamCaps {
    /// At most `per_ip` streams per client block and `per_session` per session.
    pub fn new(per_ip: usize, per_session: usize) -> Self {
        Self {
            per_ip,
            per_session,
            open: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, u32>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn keys(who: Opener<'_>) -> Vec<Key> {
        let mut keys = Vec::with_capacity(2);
        if let Some(ip) = who.ip {
            keys.push(Key::Ip(block(ip)));
        }
        if let Some(s) = who.session {
            keys.push(Key::Session(s.to_string()));
        }
        keys
    }

    /// A place for a new stream, or why not.
    pub fn acquire(self: &Arc<Self>, who: Opener<'_>) -> Result<StreamPermit, StreamRefused> {
        let keys = Self::keys(who);
        let mut open = self.lock();
        for k in &keys {
            let n = open.get(k).copied().unwrap_or(0) as usize;
            match k {
                Key::Ip(_) if n >= self.per_ip => return Err(StreamRefused::PerIp(self.per_ip)),
                Key::Session(_) if n >= self.per_session => {
                    return Err(StreamRefused::PerSession(self.per_session));
                }
                _ => {}
            }
        }
        Ok(self.hold(&mut open, keys))
    }

    /// Counts a stream that is already open (a response that turned out to
    /// be one), so it takes its place from later ones; never refuses.
    pub fn count(self: &Arc<Self>, who: Opener<'_>) -> StreamPermit {
        let keys = Self::keys(who);
        let mut open = self.lock();
        self.hold(&mut open, keys)
    }

    fn hold(self: &Arc<Self>, open: &mut HashMap<Key, u32>, keys: Vec<Key>) -> StreamPermit {
        for k in &keys {
            *open.entry(k.clone()).or_insert(0) += 1;
        }
        StreamPermit {
            gauge: None,
            caps: self.clone(),
            keys,
        }
    }

    /// Open streams of the client block of `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.lock().get(&Key::Ip(block(ip))).copied().unwrap_or(0) as usize
    }
}

/// One open stream's place.
pub struct StreamPermit {
    caps: Arc<StreamCaps>,
    keys: Vec<Key>,
    /// The open-streams gauge it is counted in, once its kind is known.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl StreamPermit {
    /// Counts the stream in `esprit_open_streams{kind}` (`sse` or
    /// `websocket`) until the permit is dropped; once.
    pub fn counted_as(&mut self, kind: &'static str) {
        if self.gauge.is_none() {
            let g = crate::telemetry::metrics::metrics().open_streams(kind);
            g.inc();
            self.gauge = Some(g);
        }
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
        let mut open = self.caps.lock();
        for k in self.keys.drain(..) {
            if let Some(n) = open.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&k);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn a_session_is_capped_and_freed_on_drop() {
        let caps = Arc::new(StreamCaps::new(10, 2));
        let who = Opener {
            ip: ip("10.0.0.1"),
            session: Some("s1"),
        };
        let a = caps.acquire(who).unwrap();
        let _b = caps.acquire(who).unwrap();
        assert_eq!(caps.acquire(who).err(), Some(StreamRefused::PerSession(2)));
        // Another session from the same address is not.
        let other = Opener {
            ip: ip("10.0.0.1"),
            session: Some("s2"),
        };
        let _c = caps.acquire(other).unwrap();
        drop(a);
        let _d = caps.acquire(who).unwrap();
    }

    #[test]
    fn an_address_is_capped_with_or_without_a_session() {
        let caps = Arc::new(StreamCaps::new(2, 10));
        let anon = Opener {
            ip: ip("10.0.0.1"),
            session: None,
        };
        let _a = caps.acquire(anon).unwrap();
        let _b = caps
            .acquire(Opener {
                ip: ip("10.0.0.1"),
                session: Some("s"),
            })
            .unwrap();
        assert_eq!(caps.acquire(anon).err(), Some(StreamRefused::PerIp(2)));
        assert!(
            caps.acquire(Opener {
                ip: ip("10.0.0.2"),
                session: None
            })
            .is_ok()
        );
    }

    #[test]
    fn counted_streams_take_places_but_are_never_refused() {
        let caps = Arc::new(StreamCaps::new(1, 1));
        let who = Opener {
            ip: ip("10.0.0.1"),
            session: None,
        };
        let _a = caps.count(who);
        let _b = caps.count(who);
        assert_eq!(caps.open_from("10.0.0.1".parse().unwrap()), 2);
        assert!(caps.acquire(who).is_err());
    }

    #[test]
    fn nothing_is_kept_once_every_stream_closed() {
        let caps = Arc::new(StreamCaps::new(5, 5));
        let permits: Vec<_> = (0..5)
            .map(|i| {
                caps.acquire(Opener {
                    ip: ip(&format!("10.0.0.{i}")),
                    session: Some("s"),
                })
                .unwrap()
            })
            .collect();
        drop(permits);
        assert!(caps.lock().is_empty());
    }
}
