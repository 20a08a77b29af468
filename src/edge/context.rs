//! Per-request state shared by the phases, grouped by who has it: what every
//! request has, what a proxied request adds, what a watched stream holds.

use super::request::Facts;
use crate::config::Route;
use crate::identity::Identity;
use crate::limit::streams::StreamPermit;
use crate::watch::StreamGuard;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::Instant;

/// Per-request state shared by the phases.
pub struct RequestCtx {
    /// When the request arrived (for the access log's duration).
    pub started: Instant,
    /// What the edge learned before deciding.
    pub facts: Facts,
    /// Arrived on the TLS listener.
    pub tls: bool,
    /// The matched route, once known.
    pub route: Option<Arc<Route>>,
    /// Why the edge answered itself, for the access log.
    pub reason: Option<&'static str>,
    /// The signed-in user, on a session-gated route.
    pub identity: Option<Identity>,
    /// Set when the request is forwarded to an upstream.
    pub proxy: Option<Proxied>,
    /// Set for a long stream (websocket, SSE) of a signed-in user: it ends
    /// with the session.
    pub stream: Option<StreamGuard>,
    /// A long stream's place under the stream caps, held until it ends.
    pub stream_place: Option<StreamPermit>,
    /// The config this request is handled by (a reload swaps it for new ones).
    pub live: Option<Arc<super::live::Live>>,
}

impl Default for RequestCtx {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            facts: Facts::default(),
            tls: false,
            route: None,
            reason: None,
            identity: None,
            proxy: None,
            stream: None,
            stream_place: None,
            live: None,
        }
    }
}

/// What a forwarded request carries through the phases.
pub struct Proxied {
    /// The upstream's name.
    pub upstream: String,
    /// Path and query sent upstream.
    pub target: String,
    /// The body cap in force (0: none).
    pub body_limit: u64,
    /// Body bytes seen so far.
    pub body_seen: u64,
    /// The upstream connection's socket, for watching a stream whose client
    /// connection is shared (HTTP/2).
    pub upstream_fd: Option<RawFd>,
}
