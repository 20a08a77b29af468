//! The one interface the edge serves in-process routes through (the sign-in,
//! the hub; next: metrics, static files, JWKS). A new route kind is a module
//! that implements [`Handler`] plus one registration line in `server.rs`; the
//! edge's `request_filter` has a single arm for all of them.

use super::Reply;
use crate::watch::StreamGuard;
use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use std::net::IpAddr;

/// What the edge already established about a request it hands to a handler:
/// the path is normalised, the route's gate has passed.
pub struct Call<'a> {
    /// The normalised path.
    pub path: &'a str,
    /// `https` when the browser used HTTPS (to the edge or a trusted proxy).
    pub proto: &'static str,
    /// The client as the edge determined it (peer, or trusted `X-Forwarded-For`).
    pub client_ip: Option<IpAddr>,
    /// Add `Strict-Transport-Security` to what the handler writes itself.
    pub hsts: bool,
    /// For a long response of a signed-in user: ends it with the session.
    pub stream: Option<StreamGuard>,
}

impl Call<'_> {
    /// Whether the browser used HTTPS: cookies then get `Secure` and their prefix.
    pub fn secure(&self) -> bool {
        self.proto == "https"
    }
}

/// What the edge does after a handler ran.
pub enum Handled {
    /// A complete reply for the edge to send.
    Reply(Reply),
    /// The handler wrote the response itself (SSE).
    Streamed,
}

/// An in-process route kind.
#[async_trait]
pub trait Handler: Send + Sync {
    /// Whether this handler answers `path` (normalised); other paths under
    /// its route go to the route's fallback upstream, or get 404.
    fn claims(&self, path: &str) -> bool;

    /// Authenticates a request for `path` (normalised) on a route with
    /// `auth = "token"`: the route says a bearer token stands in for the
    /// session, and the handler knows which tokens are good for which of its
    /// endpoints. `Err` is the refusal to send. The default refuses: a kind
    /// that takes no token cannot be opened by one.
    fn check_token(&self, req: &RequestHeader, path: &str) -> Result<(), Box<Reply>> {
        let _ = (req, path);
        Err(Box::new(Reply::error(
            401,
            "this route takes no bearer token",
            true,
        )))
    }

    /// Whether `path` (normalised) answers with a long stream (SSE): such a
    /// request takes a place under the edge's stream caps.
    fn streams(&self, path: &str) -> bool {
        let _ = path;
        false
    }

    /// Answers one request this handler claims.
    async fn serve(&self, session: &mut Session, call: Call<'_>) -> pingora::Result<Handled>;
}
