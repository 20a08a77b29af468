//! The part of the edge a config reload replaces: the request policy
//! (routes, CSP, trusted proxies, request caps), the upstreams, the rate
//! rules and the per-request timeouts. It is swapped whole, and a request
//! takes one snapshot when it arrives, so it sees one config from its first
//! phase to its last; open connections and streams keep what they had.

use super::request::Policy;
use super::upstream::Upstreams;
use crate::config::{Config, Route};
use crate::limit::rate::RateRules;
use crate::telemetry::metrics::{RouteMetrics, metrics};
use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Duration;

/// One config's worth of request handling.
pub struct Live {
    /// Decides what each request is.
    pub policy: Policy,
    /// Where upstreams are, by name.
    pub upstreams: Upstreams,
    /// The `[[limits]]` rules.
    pub limits: Arc<RateRules>,
    /// `Strict-Transport-Security` on TLS answers.
    pub hsts: bool,
    /// Idle time of a client keep-alive connection.
    pub keepalive_secs: u64,
    /// Longest silence while a request body arrives.
    pub body_timeout: Duration,
    /// Each route's metric series, by its index; the last is "no route".
    pub route_metrics: Vec<RouteMetrics>,
    /// Each upstream's time-to-first-byte histogram.
    pub first_byte: std::collections::HashMap<String, Histogram>,
    /// Where the built-in console is, for pages that point a person to it.
    pub console: Option<String>,
}

impl Live {
    /// The metric series of `route` (or of "no route").
    pub fn metrics_of(&self, route: Option<&Route>) -> &RouteMetrics {
        let last = self.route_metrics.len() - 1;
        &self.route_metrics[route.map_or(last, |r| r.index.min(last))]
    }
}

impl Live {
    /// The request handling of `config`, counting with `limits`.
    pub fn new(config: &Config, limits: Arc<RateRules>) -> Self {
        Self {
            policy: Policy::new(config),
            upstreams: Upstreams::new(&config.upstreams),
            limits,
            hsts: config.tls.as_ref().is_some_and(|t| t.hsts),
            keepalive_secs: config.server.keepalive_timeout.as_secs(),
            body_timeout: config.server.body_timeout,
            route_metrics: config
                .routes
                .iter()
                .map(|r| metrics().route(Some(r.label())))
                .chain(std::iter::once(metrics().route(None)))
                .collect(),
            first_byte: config
                .upstreams
                .keys()
                .map(|name| (name.clone(), metrics().upstream_ttfb(name)))
                .collect(),
            console: config
                .routes
                .iter()
                .find_map(|r| match (&r.action, &r.path) {
                    (
                        crate::config::RouteAction::Handler {
                            kind: crate::config::HandlerKind::Console,
                            ..
                        },
                        crate::config::PathMatch::Prefix(p),
                    ) if p.ends_with('/') => Some(p.clone()),
                    _ => None,
                }),
        }
    }
}

/// The current [`Live`], shared by the edge and whoever reloads it.
pub type LiveConfig = Arc<ArcSwap<Live>>;

/// Which settings of `new` a reload cannot apply to a running process, one
/// line each: listeners move through the SIGQUIT hand-over, the rest with a
/// restart. (Compared by their debug form: the model has no `PartialEq`
/// for every section, and what matters is "anything differs".)
pub fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.server.listen != new.server.listen
        || old.tls.as_ref().map(|t| t.listen) != new.tls.as_ref().map(|t| t.listen)
        || old.admin != new.admin
        || old.tls.is_some() != new.tls.is_some()
    {
        out.push("listener addresses (server.listen, tls.listen, admin.listen) move with a SIGQUIT hand-over (README, Signals)");
    }
    let caps = |c: &Config| {
        (
            c.server.max_connections,
            c.server.max_connections_per_ip,
            c.server.max_streams_per_ip,
            c.server.max_streams_per_session,
            c.server.header_timeout,
            c.server.read_buffer,
            c.server.threads,
        )
    };
    if caps(old) != caps(new) {
        out.push("[server] connection and stream caps, header_timeout, read_buffer and threads take a restart or hand-over");
    }
    if old.storage != new.storage {
        out.push("[storage] (backend, Redis URL, timeout, grace, prefix) takes a restart");
    }
    // [hub] and [auth]: their handlers apply what they can and name the rest.
    out
}
