//! The process's metrics, in one registry that the admin listener exposes.
//! A leaf, so every layer records into it without plumbing: the edge counts
//! requests, `limit` its refusals. One process-wide instance, like the log:
//! there is one edge per process, and tests read it over the admin listener.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// What a method does, as dashboards group it: reads are safe to retry.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum MethodClass {
    /// GET, HEAD, OPTIONS.
    Read = 0,
    /// Every other method.
    Write = 1,
}

impl MethodClass {
    /// The class of `method`.
    pub fn of(method: &http::Method) -> Self {
        match *method {
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS => Self::Read,
            _ => Self::Write,
        }
    }
}

/// One finished request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The matched route's pattern, or `none`.
    pub route: Arc<String>,
    /// Read or write.
    pub method: MethodClass,
    /// The status sent (`0` when the client left first).
    pub status: u16,
}

/// A route's label alone.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// The matched route's pattern, or `none`.
    pub route: Arc<String>,
}

/// Status codes a route's counters are kept for without a lookup.
const CODES: usize = 600;

/// One route's series, resolved once (when the config is loaded), so a
/// request costs a few atomic adds and no label hashing or allocation: the
/// hot path must not pay for being observed.
pub struct RouteMetrics {
    route: Arc<String>,
    requests: Family<RequestLabels, Counter>,
    duration: Histogram,
    /// `[method class][status]`, each made on first use (so the exposition
    /// shows only statuses that happened).
    counters: [Box<[OnceLock<Counter>]>; 2],
}

impl RouteMetrics {
    /// Counts a finished request on this route and its duration.
    pub fn request(&self, method: &http::Method, status: u16, took: Duration) {
        let class = MethodClass::of(method);
        let make = || {
            self.requests
                .get_or_create(&RequestLabels {
                    route: self.route.clone(),
                    method: class,
                    status,
                })
                .clone()
        };
        match self.counters[class as usize].get(usize::from(status)) {
            Some(slot) => slot.get_or_init(make).inc(),
            None => make().inc(),
        };
        self.duration.observe(took.as_secs_f64());
    }
}

/// What kind of long stream: `sse` or `websocket`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StreamKindLabel {
    /// `sse` (hub or proxied) or `websocket`.
    pub kind: &'static str,
}

/// A limit's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    /// The rule (`[[limits]]` name, or a cap such as `connections-per-ip`).
    pub rule: String,
}

/// An upstream's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// The name in `[upstreams.NAME]`.
    pub upstream: String,
}

/// What went wrong with an upstream.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum UpstreamFailure {
    /// Refused, unreachable, or the TLS handshake failed.
    Connect,
    /// Connecting, reading or writing took too long.
    Timeout,
    /// It answered something the edge could not use.
    Response,
}

/// An upstream and what went wrong.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamFailureLabels {
    /// The name in `[upstreams.NAME]`.
    pub upstream: String,
    /// What went wrong.
    pub kind: UpstreamFailure,
}

/// How something ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `applied`, `refused`, ...
    pub outcome: String,
}

/// The build, as a constant 1 with labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// Every metric the edge keeps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabel, Histogram>,
    refusals: Family<RuleLabel, Counter>,
    upstream_up: Family<UpstreamLabel, Gauge>,
    reloads: Family<OutcomeLabel, Counter>,
    sign_ins: Family<OutcomeLabel, Counter>,
    upstream_failures: Family<UpstreamFailureLabels, Counter>,
    upstream_ttfb: Family<UpstreamLabel, Histogram>,
    /// Open client connections, set when the admin listener is scraped.
    pub open_connections: Gauge,
    /// Open long streams by kind (websockets, hub and proxied SSE), kept
    /// by the stream caps' permits.
    open_streams: Family<StreamKindLabel, Gauge>,
    /// Hub events stored (each is acknowledged only once stored).
    pub hub_events: Counter,
    /// Live hub events written to a subscriber.
    pub hub_delivered: Counter,
    /// Hub subscribers cut off for falling a queue behind.
    pub hub_dropped: Counter,
}

/// Latency buckets in seconds: 0.5 ms to 10 s, for a proxy in front of
/// pages and APIs (streams land in the last).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("esprit");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route, method class and status",
            requests.clone(),
        );
        let durations =
            Family::<RouteLabel, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response, by route",
            durations.clone(),
        );
        let refusals = Family::<RuleLabel, Counter>::default();
        registry.register(
            "limit_refusals",
            "Requests and connections refused by a rate rule or a cap, by rule",
            refusals.clone(),
        );
        let upstream_up = Family::<UpstreamLabel, Gauge>::default();
        registry.register(
            "upstream_up",
            "Whether the upstream passed its last health check (1) or not (0)",
            upstream_up.clone(),
        );
        let reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP), by outcome: applied or refused",
            reloads.clone(),
        );
        let sign_ins = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "sign_ins",
            "Sign-in attempts (POST /auth/login), by outcome: signed_in, wrong_credentials, throttled, busy, refused",
            sign_ins.clone(),
        );
        let upstream_failures = Family::<UpstreamFailureLabels, Counter>::default();
        registry.register(
            "upstream_failures",
            "Proxied requests that failed at the upstream, by upstream and kind (connect, timeout, response)",
            upstream_failures.clone(),
        );
        let upstream_ttfb =
            Family::<UpstreamLabel, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register(
            "upstream_first_byte_seconds",
            "From a request's arrival to its upstream's response header, by upstream",
            upstream_ttfb.clone(),
        );
        let open_streams = Family::<StreamKindLabel, Gauge>::default();
        registry.register(
            "open_streams",
            "Long streams open now, by kind: sse (hub or proxied) and websocket",
            open_streams.clone(),
        );
        let hub_events = Counter::default();
        registry.register(
            "hub_events",
            "Hub events stored (POST /api/events, and runs' started and error events)",
            hub_events.clone(),
        );
        let hub_delivered = Counter::default();
        registry.register(
            "hub_deliveries",
            "Live hub events written to an SSE subscriber",
            hub_delivered.clone(),
        );
        let hub_dropped = Counter::default();
        registry.register(
            "hub_slow_subscribers_dropped",
            "Hub SSE subscribers cut off for falling a queue behind (they replay on reconnect)",
            hub_dropped.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections open or in their TLS handshake",
            open_connections.clone(),
        );
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        registry.register("build_info", "The running build", build);
        Self {
            registry,
            requests,
            durations,
            refusals,
            upstream_up,
            reloads,
            sign_ins,
            upstream_failures,
            upstream_ttfb,
            open_connections,
            open_streams,
            hub_events,
            hub_delivered,
            hub_dropped,
        }
    }

    /// The series of the route labelled `route` (`None`: no route matched).
    pub fn route(&self, route: Option<&str>) -> RouteMetrics {
        let route = Arc::new(route.unwrap_or("none").to_string());
        let duration = self
            .durations
            .get_or_create(&RouteLabel {
                route: route.clone(),
            })
            .clone();
        let slots = || (0..CODES).map(|_| OnceLock::new()).collect::<Box<[_]>>();
        RouteMetrics {
            route,
            requests: self.requests.clone(),
            duration,
            counters: [slots(), slots()],
        }
    }

    /// The open-streams gauge of `kind` (`sse` or `websocket`).
    pub fn open_streams(&self, kind: &'static str) -> Gauge {
        self.open_streams
            .get_or_create(&StreamKindLabel { kind })
            .clone()
    }

    /// Counts one refusal by `rule`.
    pub fn refused(&self, rule: &str) {
        self.refusals
            .get_or_create(&RuleLabel {
                rule: rule.to_string(),
            })
            .inc();
    }

    /// Counts a proxied request that failed at `upstream`.
    pub fn upstream_failure(&self, upstream: &str, kind: UpstreamFailure) {
        self.upstream_failures
            .get_or_create(&UpstreamFailureLabels {
                upstream: upstream.to_string(),
                kind,
            })
            .inc();
    }

    /// The time-to-first-byte histogram of `upstream`, resolved once per
    /// config so the hot path only observes.
    pub fn upstream_ttfb(&self, upstream: &str) -> Histogram {
        self.upstream_ttfb
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_string(),
            })
            .clone()
    }

    /// Counts a sign-in attempt by how it ended.
    pub fn sign_in(&self, outcome: &str) {
        self.sign_ins
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Counts a config reload by how it ended.
    pub fn reload(&self, outcome: &str) {
        self.reloads
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// Records an upstream's last health check.
    pub fn upstream_up(&self, upstream: &str, up: bool) {
        self.upstream_up
            .get_or_create(&UpstreamLabel {
                upstream: upstream.to_string(),
            })
            .set(i64::from(up));
    }

    /// The OpenMetrics text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(target: "admin", error = %e, "metrics not encoded");
        }
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_refusals_show_in_the_exposition() {
        let m = Metrics::new();
        m.route(Some("/api/"))
            .request(&http::Method::POST, 202, Duration::from_millis(3));
        m.route(None)
            .request(&http::Method::GET, 404, Duration::from_micros(100));
        m.refused("per-ip");
        m.refused("per-ip");
        let text = m.encode();
        assert!(
            text.contains(r#"esprit_requests_total{route="/api/",method="Write",status="202"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"esprit_requests_total{route="none",method="Read",status="404"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"esprit_limit_refusals_total{rule="per-ip"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"esprit_request_duration_seconds_bucket{le="0.005",route="/api/"} 1"#),
            "{text}"
        );
        assert!(text.contains("esprit_build_info{version="), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
