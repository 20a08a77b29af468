//! Open client connections, total and per client IP, counted from accept to
//! close. Pingora's accept-time filter sees only the peer's address and has
//! no close hook, so a connection is counted twice over: *pending* from
//! accept until it is served (its TLS handshake may still fail), then held by
//! a [`ConnectionPermit`] whose drop frees the place.

use super::client_ip::block;
use ipnet::IpNet;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long an accepted connection may stay pending: Pingora gives a TLS
/// handshake 60 s, so one older than this never reached the edge.
pub const PENDING_TTL: Duration = Duration::from_secs(70);
/// Pending connections are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// `server.max_connections` are open.
    #[error("the edge holds its maximum of {0} open connections")]
    Total(usize),
    /// `server.max_connections_per_ip` are open from this client.
    #[error("this client holds its maximum of {0} open connections")]
    PerIp(usize),
}

#[derive(Default)]
struct State {
    total: usize,
    /// Open connections by client block; absent when zero.
    per_ip: HashMap<IpAddr, u32>,
    /// Accepted but not yet served, by peer address.
    pending: HashMap<SocketAddr, Instant>,
    swept: Option<Instant>,
}

impl State {
    fn release(&mut self, ip: Option<IpAddr>) {
        self.total = self.total.saturating_sub(1);
        if let Some(ip) = ip
            && let Some(n) = self.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// The caps and the counts.
pub struct ConnectionCaps {
    max_total: usize,
    max_per_ip: usize,
    /// Trusted proxies: every client arrives through them, so no per-IP cap.
    exempt: Vec<IpNet>,
    state: Mutex<State>,
    /// Refusals since the last log line, and that line's second.
    refused: AtomicU64,
    logged_at: AtomicU64,
}

impl ConnectionCaps {
    /// Caps of `max_total` connections, `max_per_ip` per client block
    /// outside `exempt`.
    pub fn new(max_total: usize, max_per_ip: usize, exempt: Vec<IpNet>) -> Self {
        Self {
            max_total,
            max_per_ip,
            exempt,
            state: Mutex::new(State::default()),
            refused: AtomicU64::new(0),
            logged_at: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The counts stay consistent under a panic elsewhere: take them anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, ip: IpAddr) -> Option<IpAddr> {
        (!self.exempt.iter().any(|n| n.contains(&ip))).then(|| block(ip))
    }

    /// At accept: counts the connection as pending, or refuses it.
    pub fn admit(&self, peer: SocketAddr, now: Instant) -> Result<(), Refused> {
        let key = self.key(peer.ip());
        let mut s = self.lock();
        if s.swept.is_none_or(|t| now.duration_since(t) >= SWEEP_EVERY) {
            s.swept = Some(now);
            self.sweep(&mut s, now);
        }
        if s.total >= self.max_total {
            return Err(self.note(Refused::Total(self.max_total)));
        }
        if let Some(ip) = key {
            let n = s.per_ip.get(&ip).copied().unwrap_or(0);
            if n as usize >= self.max_per_ip {
                return Err(self.note(Refused::PerIp(self.max_per_ip)));
            }
            *s.per_ip.entry(ip).or_insert(0) += 1;
        }
        s.total += 1;
        if s.pending.insert(peer, now).is_some() {
            // The same address and port again: the earlier one is gone.
            s.release(key);
        }
        Ok(())
    }

    /// Pending connections whose handshake never finished.
    fn sweep(&self, s: &mut State, now: Instant) {
        let stale: Vec<SocketAddr> = s
            .pending
            .iter()
            .filter(|(_, at)| now.duration_since(**at) >= PENDING_TTL)
            .map(|(p, _)| *p)
            .collect();
        for peer in stale {
            s.pending.remove(&peer);
            s.release(self.key(peer.ip()));
        }
    }

    fn note(&self, r: Refused) -> Refused {
        self.refused.fetch_add(1, Ordering::Relaxed);
        r
    }

    /// Refusals since the last call, at most once a second (for one log
    /// line per second under a flood, not one per connection).
    pub fn refusals_to_log(&self, now_secs: u64) -> Option<u64> {
        let last = self.logged_at.load(Ordering::Relaxed);
        if now_secs <= last
            || self
                .logged_at
                .compare_exchange(last, now_secs, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        Some(self.refused.swap(0, Ordering::Relaxed)).filter(|n| *n > 0)
    }

    /// The connection is served: from now on its permit holds its place.
    /// A connection that was never admitted (no accept filter) is counted now.
    pub fn open(self: &Arc<Self>, peer: SocketAddr) -> ConnectionPermit {
        let key = self.key(peer.ip());
        let mut s = self.lock();
        if s.pending.remove(&peer).is_none() {
            s.total += 1;
            if let Some(ip) = key {
                *s.per_ip.entry(ip).or_insert(0) += 1;
            }
        }
        ConnectionPermit {
            caps: self.clone(),
            key,
        }
    }

    /// Open and pending connections in all.
    pub fn total(&self) -> usize {
        self.lock().total
    }

    /// Open and pending connections: in all, and from `ip`'s block.
    pub fn count(&self, ip: IpAddr) -> (usize, usize) {
        let s = self.lock();
        let mine = self
            .key(ip)
            .and_then(|k| s.per_ip.get(&k).copied())
            .unwrap_or(0);
        (s.total, mine as usize)
    }
}

/// One served connection's place; dropping it frees the place.
pub struct ConnectionPermit {
    caps: Arc<ConnectionCaps>,
    key: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.caps.lock().release(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[test]
    fn the_per_ip_cap_frees_as_connections_close() {
        let caps = Arc::new(ConnectionCaps::new(100, 2, vec![]));
        let now = Instant::now();
        caps.admit(peer("10.0.0.1", 1), now).unwrap();
        caps.admit(peer("10.0.0.1", 2), now).unwrap();
        assert_eq!(caps.admit(peer("10.0.0.1", 3), now), Err(Refused::PerIp(2)));
        // Another client is not affected.
        caps.admit(peer("10.0.0.2", 1), now).unwrap();
        let a = caps.open(peer("10.0.0.1", 1));
        let _b = caps.open(peer("10.0.0.1", 2));
        assert_eq!(caps.count("10.0.0.1".parse().unwrap()), (3, 2));
        drop(a);
        assert_eq!(caps.count("10.0.0.1".parse().unwrap()), (2, 1));
        caps.admit(peer("10.0.0.1", 3), now).unwrap();
    }

    #[test]
    fn the_total_cap_counts_every_client() {
        let caps = ConnectionCaps::new(2, 2, vec![]);
        let now = Instant::now();
        caps.admit(peer("10.0.0.1", 1), now).unwrap();
        caps.admit(peer("10.0.0.2", 1), now).unwrap();
        assert_eq!(caps.admit(peer("10.0.0.3", 1), now), Err(Refused::Total(2)));
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let caps = ConnectionCaps::new(100, 1, vec![]);
        let now = Instant::now();
        caps.admit(peer("2001:db8::1", 1), now).unwrap();
        assert!(caps.admit(peer("2001:db8::2", 1), now).is_err());
        caps.admit(peer("2001:db8:0:1::1", 1), now).unwrap();
    }

    #[test]
    fn trusted_proxies_have_no_per_ip_cap() {
        let caps = ConnectionCaps::new(100, 1, vec!["10.0.0.0/8".parse().unwrap()]);
        let now = Instant::now();
        for port in 1..10 {
            caps.admit(peer("10.1.2.3", port), now).unwrap();
        }
        assert_eq!(caps.count("10.1.2.3".parse().unwrap()), (9, 0));
    }

    #[test]
    fn a_handshake_that_never_finishes_frees_its_place() {
        let caps = ConnectionCaps::new(100, 1, vec![]);
        let t0 = Instant::now();
        caps.admit(peer("10.0.0.1", 1), t0).unwrap();
        assert!(caps.admit(peer("10.0.0.1", 2), t0).is_err());
        let later = t0 + PENDING_TTL;
        caps.admit(peer("10.0.0.1", 2), later).unwrap();
        assert_eq!(caps.count("10.0.0.1".parse().unwrap()), (1, 1));
    }

    #[test]
    fn refusals_are_reported_once_a_second() {
        let caps = ConnectionCaps::new(1, 1, vec![]);
        let now = Instant::now();
        caps.admit(peer("10.0.0.1", 1), now).unwrap();
        for port in 2..12 {
            assert!(caps.admit(peer("10.0.0.1", port), now).is_err());
        }
        assert_eq!(caps.refusals_to_log(5), Some(10));
        assert!(caps.admit(peer("10.0.0.1", 20), now).is_err());
        assert_eq!(caps.refusals_to_log(5), None);
        assert_eq!(caps.refusals_to_log(6), Some(1));
    }
}
