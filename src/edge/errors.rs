//! Error answers: which status a failure gets, and a small body in the form the
//! client reads (JSON for APIs and `Accept: application/json`, HTML otherwise).

use bytes::Bytes;
use pingora::{ErrorSource, ErrorType};

/// A failure mapped to what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 0 when the downstream is gone and nothing can be written.
    pub status: u16,
    /// Safe to show a client: no addresses or internals.
    pub message: &'static str,
}

/// Maps a proxy error to a status and a message safe to show a client.
pub fn classify(etype: &ErrorType, source: &ErrorSource) -> Failure {
    use ErrorType::*;
    if *source == ErrorSource::Downstream {
        let (status, message) = match etype {
            HTTPStatus(code) => (*code, "request refused"),
            ReadError | WriteError | ConnectionClosed | WriteTimedout => (0, "client went away"),
            ReadTimedout => (408, "request timed out"),
            _ => (400, "bad request"),
        };
        return Failure { status, message };
    }
    let (status, message) = match etype {
        HTTPStatus(code) => (*code, "request refused"),
        ConnectTimedout => (504, "upstream did not accept the connection in time"),
        ReadTimedout | WriteTimedout => (504, "upstream timed out"),
        ConnectRefused => (502, "upstream refused the connection"),
        ConnectNoRoute | ConnectError | SocketError | BindError => (502, "upstream unreachable"),
        TLSHandshakeFailure | TLSHandshakeTimedout | InvalidCert | HandshakeError => {
            (502, "upstream TLS handshake failed")
        }
        _ => match source {
            ErrorSource::Upstream => (502, "bad response from upstream"),
            _ => (500, "internal error"),
        },
    };
    Failure { status, message }
}

/// Whether the client should get JSON: API paths and clients that ask for it.
pub fn wants_json(path: &str, accept: Option<&str>) -> bool {
    if path.starts_with("/api/") || path == "/api" || path.starts_with("/auth/") {
        return true;
    }
    accept.is_some_and(|a| {
        let json = a.find("application/json");
        let html = a.find("text/html");
        match (json, html) {
            (Some(j), Some(h)) => j < h,
            (Some(_), None) => true,
            _ => false,
        }
    })
}

/// The body and its content type for `status` with `message`.
pub fn body(status: u16, message: &str, json: bool) -> (&'static str, Bytes) {
    if json {
        let v = serde_json::json!({ "error": message, "status": status });
        ("application/json", Bytes::from(v.to_string()))
    } else {
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("Error");
        let html = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{status} {reason}</title>\
             <style>body{{font:16px system-ui,sans-serif;margin:4rem auto;max-width:36rem;color:#222}}h1{{font-size:1.4rem}}</style>\
             </head><body><h1>{status} {reason}</h1><p>{}</p></body></html>\n",
            escape(message)
        );
        ("text/html; charset=utf-8", Bytes::from(html))
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(
            classify(&ErrorType::ConnectRefused, &ErrorSource::Upstream).status,
            502
        );
        assert_eq!(
            classify(&ErrorType::ReadTimedout, &ErrorSource::Upstream).status,
            504
        );
        assert_eq!(
            classify(&ErrorType::ConnectTimedout, &ErrorSource::Upstream).status,
            504
        );
        assert_eq!(
            classify(&ErrorType::H1Error, &ErrorSource::Upstream).status,
            502
        );
        assert_eq!(
            classify(&ErrorType::ConnectionClosed, &ErrorSource::Downstream).status,
            0
        );
        assert_eq!(
            classify(&ErrorType::HTTPStatus(413), &ErrorSource::Downstream).status,
            413
        );
        // A slow client is not an upstream timeout.
        let slow_client = classify(&ErrorType::ReadTimedout, &ErrorSource::Downstream);
        assert_eq!(slow_client.status, 408);
        let filter_said = classify(&ErrorType::HTTPStatus(413), &ErrorSource::Unset);
        assert_eq!(filter_said.status, 413);
    }

    #[test]
    fn json_or_html() {
        assert!(wants_json("/api/run/x", Some("text/html")));
        assert!(wants_json("/x", Some("application/json")));
        assert!(!wants_json("/x", Some("text/html,application/json;q=0.9")));
        assert!(!wants_json("/x", None));
        let (ct, b) = body(502, "upstream refused the connection", true);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"], "upstream refused the connection");
        let (ct, b) = body(504, "<x>", false);
        assert!(ct.starts_with("text/html"));
        assert!(
            std::str::from_utf8(&b)
                .unwrap()
                .contains("504 Gateway Timeout</h1><p>&lt;x&gt;")
        );
    }
}
