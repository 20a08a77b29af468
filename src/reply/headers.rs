//! Security headers on every response, proxied or answered in-process, from one
//! function so the two paths cannot drift apart.

use http::header::{self, HeaderName, HeaderValue};
use pingora::Result;
use pingora::http::ResponseHeader;

/// CSP for pages the edge writes itself (errors, redirects): nothing to load.
pub const EDGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const HSTS: &str = "max-age=31536000";

/// What to add to a response.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecurityHeaders<'a> {
    /// CSP to send when the response has none of its own (Sim sends its own).
    pub csp: Option<&'a str>,
    /// Add `Strict-Transport-Security` (TLS responses, when enabled).
    pub hsts: bool,
}

// Names known at compile time: looking them up hashes them directly, where a
// `&str` would be parsed into a header name on every call (issue 12); being
// statics, their `&'static str` spelling goes to Pingora without a copy.
static SERVER: HeaderName = header::SERVER;
static X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");
static NOSNIFF: HeaderName = header::X_CONTENT_TYPE_OPTIONS;
static REFERRER: HeaderName = header::REFERRER_POLICY;
static FRAMES: HeaderName = header::X_FRAME_OPTIONS;
static CSP: HeaderName = header::CONTENT_SECURITY_POLICY;
static STS: HeaderName = header::STRICT_TRANSPORT_SECURITY;

/// Removes what reveals the stack and adds the security headers the upstream
/// did not set; never overrides a header the upstream chose itself.
pub fn apply(resp: &mut ResponseHeader, policy: &SecurityHeaders<'_>) -> Result<()> {
    if resp.headers.contains_key(&SERVER) {
        resp.remove_header(&SERVER);
    }
    if resp.headers.contains_key(&X_POWERED_BY) {
        resp.remove_header(&X_POWERED_BY);
    }
    // Room for the headers below, so neither header map regrows.
    resp.reserve(5);
    set_default(resp, &NOSNIFF, HeaderValue::from_static("nosniff"));
    set_default(
        resp,
        &REFERRER,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    set_default(resp, &FRAMES, HeaderValue::from_static("SAMEORIGIN"));
    if let Some(csp) = policy.csp
        && !resp.headers.contains_key(&CSP)
    {
        resp.insert_header(CSP.as_str(), csp)?;
    }
    if policy.hsts {
        set_default(resp, &STS, HeaderValue::from_static(HSTS));
    }
    Ok(())
}

/// Whether `resp` is a server-sent event stream (it may outlive its session).
pub fn is_event_stream(resp: &ResponseHeader) -> bool {
    resp.headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

/// [`apply`] for a response the edge wrote itself (errors, redirects, hub, SSE).
pub fn apply_edge(resp: &mut ResponseHeader, hsts: bool) -> Result<()> {
    apply(
        resp,
        &SecurityHeaders {
            csp: Some(EDGE_CSP),
            hsts,
        },
    )
}

/// Inserts `value` under `name` unless the upstream set it.
fn set_default(resp: &mut ResponseHeader, name: &'static HeaderName, value: HeaderValue) {
    if !resp.headers.contains_key(name) {
        resp.insert_header_static(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_defaults_and_strips_server() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("Server", "nginx/1.25").unwrap();
        r.insert_header("X-Powered-By", "Next.js").unwrap();
        apply(
            &mut r,
            &SecurityHeaders {
                csp: Some("default-src 'self'"),
                hsts: true,
            },
        )
        .unwrap();
        assert!(r.headers.get("server").is_none());
        assert!(r.headers.get("x-powered-by").is_none());
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
        assert_eq!(r.headers["content-security-policy"], "default-src 'self'");
        assert_eq!(r.headers["strict-transport-security"], HSTS);
    }

    #[test]
    fn upstream_csp_and_frame_options_win() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        r.insert_header("Content-Security-Policy", "script-src 'self' 'nonce-x'")
            .unwrap();
        r.insert_header("X-Frame-Options", "DENY").unwrap();
        apply(
            &mut r,
            &SecurityHeaders {
                csp: Some("default-src 'none'"),
                hsts: false,
            },
        )
        .unwrap();
        assert_eq!(
            r.headers["content-security-policy"],
            "script-src 'self' 'nonce-x'"
        );
        assert_eq!(r.headers["x-frame-options"], "DENY");
        assert!(r.headers.get("strict-transport-security").is_none());
    }
}
