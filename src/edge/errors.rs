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
}
