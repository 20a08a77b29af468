//! The admin listener: what the operator's tools read, on an address of its
//! own that the public listener never serves (`[admin] listen`, loopback by
//! default). `GET /metrics` is the Prometheus scrape (OpenMetrics text);
//! `GET /healthz` answers as on the public listener.

use crate::limit::connections::ConnectionCaps;
use crate::telemetry::metrics::metrics;
use async_trait::async_trait;
use http::{Response, StatusCode, header};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::Arc;

/// The OpenMetrics content type Prometheus asks for and reads.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves the admin endpoints.
pub struct Admin {
    caps: Arc<ConnectionCaps>,
}

impl Admin {
    /// Reads live gauges (open connections) from `caps` at each scrape.
    pub fn new(caps: Arc<ConnectionCaps>) -> Self {
        Self { caps }
    }
}

/// What the admin listener answers for `method` and `path`: status,
/// content type, body. Kept apart from the socket so it is unit-tested.
fn answer(
    method: &http::Method,
    path: &str,
    scrape: impl FnOnce() -> String,
) -> (StatusCode, &'static str, Vec<u8>) {
    let text = "text/plain; charset=utf-8";
    if method != http::Method::GET && method != http::Method::HEAD {
        return (StatusCode::METHOD_NOT_ALLOWED, text, b"GET only\n".to_vec());
    }
    match path {
        "/metrics" => (StatusCode::OK, OPENMETRICS, scrape().into_bytes()),
        "/healthz" => (StatusCode::OK, text, b"ok\n".to_vec()),
        _ => (
            StatusCode::NOT_FOUND,
            text,
            b"not found: the admin listener serves /metrics and /healthz\n".to_vec(),
        ),
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let head = req.method == http::Method::HEAD;
        let (status, ct, body) = answer(&req.method, req.uri.path(), || {
            let (open, _) = self.caps.count(std::net::IpAddr::from([0, 0, 0, 0]));
            metrics()
                .open_connections
                .set(i64::try_from(open).unwrap_or(i64::MAX));
            metrics().encode()
        });
        let len = body.len();
        let mut resp = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, ct)
            .header(header::CONTENT_LENGTH, len)
            .header(header::CACHE_CONTROL, "no-store")
            .body(if head { Vec::new() } else { body })
            .unwrap_or_default();
        if head {
            // HEAD tells the length it would send.
            resp.headers_mut()
                .insert(header::CONTENT_LENGTH, http::HeaderValue::from(len));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_healthz_and_nothing_else() {
        let (s, ct, body) = answer(&http::Method::GET, "/metrics", || "# EOF\n".into());
        assert_eq!(
            (s, ct, body.as_slice()),
            (StatusCode::OK, OPENMETRICS, &b"# EOF\n"[..])
        );
        assert_eq!(
            answer(&http::Method::GET, "/healthz", String::new).0,
            StatusCode::OK
        );
        assert_eq!(
            answer(&http::Method::GET, "/api/agents", String::new).0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            answer(&http::Method::POST, "/metrics", || unreachable!()).0,
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
