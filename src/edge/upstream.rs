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

/// How long a resolved address is reused.
const DNS_TTL: Duration = Duration::from_secs(5);
/// How long an idle pooled upstream connection is kept.
const POOL_IDLE: Duration = Duration::from_secs(60);

struct Entry {
    host: String,
    port: u16,
    fixed: Option<SocketAddr>,
    cached: Mutex<Option<(Instant, SocketAddr)>>,
}

/// All upstreams by name.
pub struct Upstreams {
    entries: HashMap<String, Entry>,
}

impl Upstreams {
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
        if let Ok(guard) = entry.cached.lock()
            && let Some((at, addr)) = *guard
            && at.elapsed() < DNS_TTL
        {
            return Ok(addr);
        }
        let found = tokio::net::lookup_host((entry.host.as_str(), entry.port))
            .await
            .map_err(|e| {
                Error::because(
                    ErrorType::ConnectNoRoute,
                    format!(
                        "cannot resolve upstream {name} ({}:{})",
                        entry.host, entry.port
                    ),
                    e,
                )
            })?
            .next();
        let addr = found.ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("upstream {name} ({}) has no address", entry.host),
            )
        })?;
        if let Ok(mut guard) = entry.cached.lock() {
            *guard = Some((Instant::now(), addr));
        }
        Ok(addr)
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
