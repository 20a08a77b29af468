//! The session gate (DESIGN step 3), whole: a route with `auth = "session"`
//! lets a request through only with a live session, and then only from a
//! page of this origin when it can change state. Without a session a browser
//! navigation is sent to the login page (and back afterwards); everything
//! else (fetch, XHR, SSE, websocket, socket.io polling) gets 401, so
//! `EventSource` stops instead of looping and no upgrade reaches upstream.

use super::csrf;
use super::service::AuthService;
use crate::identity::Identity;
use crate::reply::Reply;
use pingora::http::RequestHeader;

/// What the edge learned about a request that the gate needs.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The normalised path (the return path after sign-in).
    pub path: &'a str,
    /// `https` when the browser used HTTPS.
    pub proto: &'static str,
    /// A websocket handshake.
    pub upgrade: bool,
    /// Refusals go out as JSON.
    pub json: bool,
}

impl AuthService {
    /// Lets `req` through with its identity, or says how it is refused.
    pub fn gate(&self, req: &RequestHeader, asked: &Asked<'_>) -> Result<Identity, Box<Reply>> {
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let found = match self.identify_checked(req, asked.proto == "https") {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(target: "auth", error = %e, "session store unreachable; gated request refused");
                let mut r = Reply::error(
                    503,
                    "the session store is unreachable; try again in a moment",
                    asked.json,
                );
                r.retry_after = Some(5);
                return Err(Box::new(r));
            }
        };
        let Some(id) = found else {
            let target = match req.uri.query() {
                Some(q) => format!("{}?{q}", asked.path),
                None => asked.path.to_string(),
            };
            return Err(Box::new(
                match deny(
                    &req.method,
                    header("sec-fetch-mode"),
                    header("accept"),
                    asked.upgrade,
                    &target,
                ) {
                    Denial::Login { status, location } => Reply::redirect(status, location),
                    Denial::Unauthorized => Reply::error(401, "sign in first", asked.json),
                },
            ));
        };
        // Unsafe methods, and websocket handshakes (GETs whose frames can
        // change state), must come from a page of this origin.
        if (asked.upgrade || csrf::needs_check(&req.method))
            && let Err(e) = csrf::provenance(
                header("sec-fetch-site"),
                header("origin"),
                &self.origin_here(req, asked.proto),
            )
        {
            return Err(Box::new(Reply::error(403, e.message(), asked.json)));
        }
        Ok(id)
    }
}

/// The answer for an unauthenticated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// To the login page, with the original path and query as `rd`.
    Login {
        /// 302 for GET/HEAD, 303 for other methods (so the login is fetched with GET).
        status: u16,
        /// `/auth/login?rd=...`
        location: String,
    },
    /// 401; JSON for `/api/` and clients that prefer it.
    Unauthorized,
}

/// Whether the request is a top-level browser navigation.
pub fn is_navigation(sec_fetch_mode: Option<&str>, accept: Option<&str>) -> bool {
    match sec_fetch_mode {
        Some(mode) => mode.trim().eq_ignore_ascii_case("navigate"),
        None => accept.is_some_and(|a| {
            let html = a.find("text/html");
            let other = ["application/json", "text/event-stream"]
                .iter()
                .filter_map(|t| a.find(t))
                .min();
            match (html, other) {
                (Some(h), Some(o)) => h < o,
                (Some(_), None) => true,
                _ => false,
            }
        }),
    }
}

/// Decides the denial for `method` on `path_and_query`.
pub fn deny(
    method: &http::Method,
    sec_fetch_mode: Option<&str>,
    accept: Option<&str>,
    upgrade: bool,
    path_and_query: &str,
) -> Denial {
    if upgrade || !is_navigation(sec_fetch_mode, accept) {
        return Denial::Unauthorized;
    }
    let status = if matches!(*method, http::Method::GET | http::Method::HEAD) {
        302
    } else {
        303
    };
    let rd: String = form_urlencoded::byte_serialize(path_and_query.as_bytes()).collect();
    Denial::Login {
        status,
        location: format!("/auth/login?rd={rd}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn navigations_go_to_the_login_with_their_path() {
        assert_eq!(
            deny(
                &Method::GET,
                Some("navigate"),
                None,
                false,
                "/studio/w/1?tab=2"
            ),
            Denial::Login {
                status: 302,
                location: "/auth/login?rd=%2Fstudio%2Fw%2F1%3Ftab%3D2".into()
            }
        );
        assert_eq!(
            deny(&Method::POST, Some("navigate"), None, false, "/studio/"),
            Denial::Login {
                status: 303,
                location: "/auth/login?rd=%2Fstudio%2F".into()
            }
        );
        // Old browsers without fetch metadata: Accept decides.
        assert!(matches!(
            deny(
                &Method::GET,
                None,
                Some("text/html,application/xhtml+xml,*/*;q=0.8"),
                false,
                "/"
            ),
            Denial::Login { .. }
        ));
    }

    #[test]
    fn everything_else_gets_401() {
        assert_eq!(
            deny(
                &Method::GET,
                Some("cors"),
                Some("application/json"),
                false,
                "/api/agents"
            ),
            Denial::Unauthorized
        );
        assert_eq!(
            deny(
                &Method::GET,
                None,
                Some("text/event-stream"),
                false,
                "/api/stream"
            ),
            Denial::Unauthorized
        );
        assert_eq!(
            deny(&Method::GET, Some("websocket"), None, true, "/socket.io/"),
            Denial::Unauthorized
        );
        assert_eq!(
            deny(&Method::GET, Some("navigate"), None, true, "/socket.io/"),
            Denial::Unauthorized
        );
        assert_eq!(
            deny(
                &Method::GET,
                None,
                Some("*/*"),
                false,
                "/socket.io/?EIO=4&transport=polling"
            ),
            Denial::Unauthorized
        );
        assert_eq!(
            deny(&Method::GET, None, None, false, "/studio/"),
            Denial::Unauthorized
        );
    }
}
