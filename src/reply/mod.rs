//! The leaf every in-process answer is built from: [`Reply`] and [`send`],
//! the security headers of the edge's own answers, error bodies, the capped
//! body reader, the HTML escape, and the [`handler::Handler`] trait the edge
//! calls in-process routes through. It imports no other module of the crate
//! but the leaf `watch` (a handler's stream guard), so the sign-in, the hub
//! and the edge all may use it.

pub mod body;
pub mod error_body;
pub mod handler;
pub mod headers;
pub mod html;

use bytes::Bytes;
use pingora::Result;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

/// A complete in-process response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<&'static str>,
    /// The whole body.
    pub body: Bytes,
    /// `Location`, for redirects.
    pub location: Option<String>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
    /// `Allow`, for 405.
    pub allow: Option<&'static str>,
    /// Send `WWW-Authenticate: Bearer` (401 on a token endpoint).
    pub www_authenticate: bool,
    /// `Set-Cookie` headers, for the login and logout.
    pub set_cookies: Vec<String>,
    /// Any other headers (`RateLimit-Policy`, `RateLimit`).
    pub headers: Vec<(&'static str, String)>,
    /// `Cache-Control` for a public, cacheable answer (the JWKS); every
    /// other in-process answer is `no-store`.
    pub cache_control: Option<&'static str>,
    /// Why the edge answered, for the access log.
    pub reason: &'static str,
}

impl Reply {
    /// A reply with `status` and nothing else set: the other constructors start here.
    fn bare(status: u16, reason: &'static str) -> Self {
        Self {
            status,
            content_type: None,
            body: Bytes::new(),
            location: None,
            retry_after: None,
            allow: None,
            www_authenticate: false,
            set_cookies: Vec::new(),
            headers: Vec::new(),
            cache_control: None,
            reason,
        }
    }

    /// An error in the form the client reads.
    pub fn error(status: u16, message: &'static str, json: bool) -> Self {
        let (ct, body) = error_body::body(status, message, json);
        Self {
            content_type: Some(ct),
            body,
            ..Self::bare(status, message)
        }
    }

    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value, reason: &'static str) -> Self {
        Self {
            content_type: Some("application/json"),
            body: Bytes::from(value.to_string()),
            ..Self::bare(status, reason)
        }
    }

    /// Plain text.
    pub fn text(status: u16, body: &'static str, reason: &'static str) -> Self {
        Self {
            content_type: Some("text/plain; charset=utf-8"),
            body: Bytes::from_static(body.as_bytes()),
            ..Self::bare(status, reason)
        }
    }

    /// An HTML page.
    pub fn html(status: u16, body: String, reason: &'static str) -> Self {
        Self {
            content_type: Some("text/html; charset=utf-8"),
            body: Bytes::from(body),
            ..Self::bare(status, reason)
        }
    }

    /// A redirect with no body.
    pub fn redirect(status: u16, location: String) -> Self {
        Self {
            location: Some(location),
            ..Self::bare(status, "redirect")
        }
    }

    /// The full response header, security headers included.
    pub fn header(&self, hsts: bool) -> Result<ResponseHeader> {
        let mut resp = ResponseHeader::build(self.status, Some(6))?;
        if let Some(ct) = self.content_type {
            resp.insert_header(http::header::CONTENT_TYPE, ct)?;
        }
        resp.insert_header(http::header::CONTENT_LENGTH, self.body.len())?;
        resp.insert_header(
            http::header::CACHE_CONTROL,
            self.cache_control.unwrap_or("no-store"),
        )?;
        if let Some(loc) = &self.location {
            resp.insert_header(http::header::LOCATION, loc)?;
        }
        if let Some(secs) = self.retry_after {
            resp.insert_header(http::header::RETRY_AFTER, secs)?;
        }
        if let Some(allow) = self.allow {
            resp.insert_header(http::header::ALLOW, allow)?;
        }
        for c in &self.set_cookies {
            resp.append_header(http::header::SET_COOKIE, c)?;
        }
        for (name, value) in &self.headers {
            resp.append_header(*name, value)?;
        }
        if self.www_authenticate {
            resp.insert_header(http::header::WWW_AUTHENTICATE, "Bearer")?;
        }
        headers::apply_edge(&mut resp, hsts)?;
        Ok(resp)
    }
}

/// Writes `reply` to the client; no body for HEAD.
pub async fn send(session: &mut Session, reply: &Reply, hsts: bool) -> Result<()> {
    let head = session.req_header().method == http::Method::HEAD;
    let header = reply.header(hsts)?;
    let no_body = head || reply.body.is_empty();
    session
        .write_response_header(Box::new(header), no_body)
        .await?;
    if !no_body {
        session
            .write_response_body(Some(reply.body.clone()), true)
            .await?;
    }
    Ok(())
}
