//! Upstream addresses and peers. Names are resolved when a request needs them
//! (not only at start-up, so a restarted container with a new IP is found) and
//! cached briefly so the hot path rarely waits on DNS.

use crate::config::{Timeouts, Upstream};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a resolved address is reused before asking DNS again.
const DNS_TTL: Duration = Duration::from_secs(5);
/// How long a known address keeps serving while DNS fails (a restarting
/// resolver must not take every route down with it).
const DNS_STALE: Duration = Duration::from_secs(300);
/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy)]
struct Cached {
    addr: SocketAddr,
    /// When DNS last gave this address.
    resolved: Instant,
    /// When DNS was last asked, successfully or not.
    checked: Instant,
}

struct Entry {
    host: String,
    port: u16,
    fixed: Option<SocketAddr>,
    cached: Mutex<Option<Cached>>,
}

/// All upstreams by name, with their resolution state.
pub struct Upstreams {
    entries: HashMap<String, Entry>,
}

impl Upstreams {
    /// One entry per configured upstream; IP literals never touch DNS.
    pub fn new(config: &BTreeMap<String, Upstream>) -> Self {
        let entries = config
            .values()
            .map(|u| {
                let fixed = u
                    .host
                    .parse::<IpAddr>()
                    .ok()
                    .map(|ip| SocketAddr::new(ip, u.port));
                let e = Entry {
                    host: u.host.clone(),
                    port: u.port,
                    fixed,
                    cached: Mutex::new(None),
                };
                (u.name.clone(), e)
            })
            .collect();
        Self { entries }
    }

    /// The current address of upstream `name`.
    pub async fn address(&self, name: &str) -> Result<SocketAddr> {
        let entry = self.entries.get(name).ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                format!("no upstream named {name}"),
            )
        })?;
        if let Some(addr) = entry.fixed {
            return Ok(addr);
        }
        let cached = entry.cached.lock().ok().and_then(|g| *g);
        if let Some(c) = cached
            && c.checked.elapsed() < DNS_TTL
        {
            return Ok(c.addr);
        }
        let looked_up = tokio::net::lookup_host((entry.host.as_str(), entry.port))
            .await
            .map(|mut addrs| addrs.next());
        let now = Instant::now();
        match (looked_up, cached) {
            (Ok(Some(addr)), _) => {
                remember(
                    entry,
                    Cached {
                        addr,
                        resolved: now,
                        checked: now,
                    },
                );
                Ok(addr)
            }
            (failure, Some(c)) if c.resolved.elapsed() < DNS_STALE => {
                let why = match failure {
                    Err(e) => e.to_string(),
                    Ok(_) => "no address".to_string(),
                };
                tracing::warn!(target: "edge", upstream = name, host = %entry.host, error = %why,
                    "DNS failed; keeping the last known address");
                remember(entry, Cached { checked: now, ..c });
                Ok(c.addr)
            }
            (Err(e), _) => Err(Error::because(
                ErrorType::ConnectNoRoute,
                format!(
                    "cannot resolve upstream {name} ({}:{})",
                    entry.host, entry.port
                ),
                e,
            )),
            (Ok(None), _) => Err(Error::explain(
                ErrorType::ConnectNoRoute,
                format!("upstream {name} ({}) has no address", entry.host),
            )),
        }
    }
}

fn remember(entry: &Entry, c: Cached) {
    if let Ok(mut guard) = entry.cached.lock() {
        *guard = Some(c);
    }
}

/// A plain HTTP/1.1 peer with the route's timeouts; pooled by Pingora.
pub fn peer(addr: SocketAddr, t: &Timeouts) -> Box<HttpPeer> {
    let mut p = HttpPeer::new(addr, false, String::new());
    p.options.connection_timeout = Some(t.connect);
    p.options.total_connection_timeout = Some(t.connect);
    p.options.read_timeout = Some(t.read);
    p.options.write_timeout = Some(t.write);
    p.options.idle_timeout = Some(POOL_IDLE);
    Box::new(p)
}
