//! Which status a proxying failure gets and what the client is told about it
//! (the body itself is written by `reply::error_body`).

use pingora::{ErrorSource, ErrorType};

/// A failure mapped to what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// 0 when the downstream is gone and nothing can be written.
    pub status: u16,
    /// Safe to show a client: no addresses or internals.
    pub message: &'static str,
}

/// What kind of upstream failure `etype` is, for the metrics (`None`: not
/// the upstream's).
pub fn upstream_failure(
    etype: &ErrorType,
    source: &ErrorSource,
) -> Option<crate::telemetry::metrics::UpstreamFailure> {
    use crate::telemetry::metrics::UpstreamFailure::*;
    use ErrorType::*;
    if *source == ErrorSource::Downstream {
        return None;
    }
    Some(match etype {
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout => Timeout,
        ConnectRefused | ConnectNoRoute | ConnectError | SocketError | BindError
        | TLSHandshakeFailure | InvalidCert | HandshakeError => Connect,
        HTTPStatus(_) => return None,
        _ if *source == ErrorSource::Upstream => Response,
        _ => return None,
    })
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

/// The page a browser navigation gets when its upstream cannot answer
/// (a first run with nothing else started, a service down): what is
/// missing, by the upstream's name (never its address), and where the
/// edge's own console is when one is configured, instead of a bare 502.
pub fn unavailable_page(failure: &Failure, upstream: &str, console: Option<&str>) -> String {
    use crate::reply::html::escape;
    let console = match console {
        Some(path) => format!(
            "<p>The edge's own console still works: <a href=\"{0}\">{0}</a> lists the agents and runs them.</p>",
            escape(path)
        ),
        None => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} · not answering</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#0f172a}}code{{background:#e2e8f0;padding:0 .25rem;border-radius:4px}}h1{{font-size:1.3rem}}</style>
</head><body><main>
<h1 id="unavailable">The app behind this page is not answering</h1>
<p>The edge forwards this path to the upstream <code>{upstream}</code>, which did not answer: {message} ({status}).</p>
<p>If you run the stack, start that service (or point <code>ESPRIT_UPSTREAM_{var}</code> at it); its health shows on the admin listener's <code>/readyz</code>.</p>
{console}</main></body></html>
"#,
        status = failure.status,
        upstream = escape(upstream),
        message = escape(failure.message),
        var = escape(&upstream.to_ascii_uppercase().replace('-', "_")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unavailable_page_names_the_upstream_and_links_the_console() {
        let f = classify(&ErrorType::ConnectRefused, &ErrorSource::Upstream);
        let page = unavailable_page(&f, "skyoffice", Some("/console/"));
        assert!(page.contains("<code>skyoffice</code>"));
        assert!(page.contains("ESPRIT_UPSTREAM_SKYOFFICE"));
        assert!(page.contains("href=\"/console/\""));
        assert!(!unavailable_page(&f, "sim", None).contains("console"));
        assert!(!unavailable_page(&f, "<x>", None).contains("<x>"));
    }

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
}
