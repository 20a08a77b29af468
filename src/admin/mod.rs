//! The admin listener: what the operator's tools read, on an address of its
//! own that the public listener never serves (`[admin] listen`, loopback by
//! default). `GET /metrics` is the Prometheus scrape (OpenMetrics text);
//! `GET /readyz` says whether every upstream answers its check ([`health`]);
//! `GET /healthz` answers as on the public listener (liveness only).

pub mod health;

use crate::limit::connections::ConnectionCaps;
use crate::telemetry::metrics::metrics;
use async_trait::async_trait;
use health::Health;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The OpenMetrics content type Prometheus asks for and reads.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints.
pub struct Admin {
    caps: Arc<ConnectionCaps>,
    health: Arc<Health>,
    stores: Vec<health::Store>,
}

impl Admin {
    /// Reads live gauges (open connections) from `caps` at each scrape, and
    /// readiness from `health` and the `stores`' probes.
    pub fn new(caps: Arc<ConnectionCaps>, health: Arc<Health>, stores: Vec<health::Store>) -> Self {
        Self {
            caps,
            health,
            stores,
        }
    }
}

/// What the admin listener answers for `method` and `path`: status,
/// content type, body. Kept apart from the socket so it is unit-tested.
fn answer(
    method: &http::Method,
    path: &str,
    scrape: impl FnOnce() -> String,
    ready: impl FnOnce() -> (bool, serde_json::Value),
) -> (StatusCode, &'static str, Vec<u8>) {
    let text = "text/plain; charset=utf-8";
    if method != http::Method::GET && method != http::Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, text, b"GET only\n".to_vec());
    }
    match path {
        "/metrics" => (StatusCode::OK, OPENMETRICS, scrape().into_bytes()),
        "/healthz" => (StatusCode::OK, text, b"ok\n".to_vec()),
        "/readyz" => {
            let (ok, body) = ready();
            let status = if ok {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (status, "application/json", format!("{body}\n").into_bytes())
        }
        _ => (
            StatusCode::NOT_FOUND,
            text,
            b"not found: the admin listener serves /metrics, /readyz and /healthz\n".to_vec(),
        ),
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let stores = match session.req_header().uri.path() {
            "/readyz" => health::check_stores(&self.stores).await,
            _ => Vec::new(),
        };
        let req = session.req_header();
        let head = req.method == http::Method::HEAD;
        let (status, ct, body) = answer(
            &req.method,
            req.uri.path(),
            || {
                let open = self.caps.total();
                metrics()
                    .open_connections
                    .set(i64::try_from(open).unwrap_or(i64::MAX));
                metrics().encode()
            },
            || health::readiness(&self.health.snapshot(), &stores),
        );
        let len = body.len();
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_LENGTH, len)
            .header(header::CACHE_CONTROL, "no-store")
            .body(if head { Vec::new() } else { body })
            // HEAD tells the length it would send, and sends nothing.
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready() -> (bool, serde_json::Value) {
        (false, serde_json::json!({"ready": false}))
    }

    #[test]
    fn metrics_readyz_healthz_and_nothing_else() {
        let get = http::Method::GET;
        let (s, ct, body) = answer(&get, "/metrics", || "# EOF\n".into(), ready);
        assert_eq!(
            (s, ct, body.as_slice()),
            (StatusCode::OK, OPENMETRICS, &b"# EOF\n"[..])
        );
        assert_eq!(
            answer(&get, "/healthz", String::new, ready).0,
            StatusCode::OK
        );
        let (s, _, body) = answer(&get, "/readyz", String::new, ready);
        assert_eq!(
            (s, body.as_slice()),
            (StatusCode::SERVICE_UNAVAILABLE, &b"{\"ready\":false}\n"[..])
        );
        assert_eq!(
            answer(&get, "/api/agents", String::new, ready).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&http::Method::POST, "/metrics", || unreachable!(), ready).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
