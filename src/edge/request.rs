//! The request policy: everything `request_filter` decides, as a pure function
//! of the request header, the peer and the listener, so it is tested without a
//! socket. It normalises the path, finds the route and says what to do.

use super::path::normalize;
use super::router::{self, Router};
use crate::config::{Config, HandlerKind, Route, RouteAction};
use crate::limit::client_ip::TrustedProxies;
use crate::reply::Reply;
use crate::reply::error_body::wants_json;
use pingora::http::RequestHeader;
use std::net::IpAddr;
use std::sync::Arc;

// Looked up on every request: as statics they are hashed, not parsed, each time.
static X_FORWARDED_FOR: http::HeaderName = http::HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: http::HeaderName = http::HeaderName::from_static("x-forwarded-proto");

/// The liveness endpoint: answered before routing, never touches an upstream.
pub const HEALTH_PATH: &str = "/healthz";

/// What the edge learned about a request before deciding.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Client address: the peer, or what trusted proxies said.
    pub client_ip: Option<IpAddr>,
    /// Lower-case host without port or trailing dot.
    pub host: Option<String>,
    /// The valid `Host` as sent, port kept, lower-cased: `X-Forwarded-Host`
    /// (apps like Next.js build absolute URLs from it, so the port matters).
    pub authority: Option<String>,
    /// Several `Host` headers, or one that is not a host (answered with 400).
    pub bad_host: bool,
    /// The normalised path; empty until `decide` accepted it.
    pub path: String,
    /// Errors go out as JSON.
    pub json: bool,
    /// A websocket handshake: the only upgrade passed upstream (an `h2c` or
    /// other upgrade would open a tunnel past every later check).
    pub upgrade: bool,
    /// The client asks for `text/event-stream` (every `EventSource` does).
    pub event_stream: bool,
    /// `https` if the browser reached us over TLS (ours or a trusted proxy's).
    pub proto: &'static str,
    /// The request's id (`X-Request-Id`): a trusted proxy's, or new.
    pub request_id: String,
}

impl Facts {
    /// Whether the browser used HTTPS: cookies then get `Secure` and their prefix.
    pub fn secure(&self) -> bool {
        self.proto == "https"
    }
}

/// Where a proxied request goes.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The matched route.
    pub route: Arc<Route>,
    /// Upstream name.
    pub upstream: String,
    /// Path and query sent upstream.
    pub target: String,
}

/// The outcome of the request phase.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Answer in-process; the route is known when one matched.
    Reply(Reply, Option<Arc<Route>>),
    /// Forward to an upstream.
    Proxy(Forward),
    /// Answer in-process with the handler registered for the kind.
    Handle(Arc<Route>, HandlerKind),
    /// Serve a file of the route's directory; the path under the route names it.
    Static(Arc<Route>, String),
}

/// Whether the in-process handler of a kind answers a path (it claims its
/// own endpoints; the rest of its route goes to the route's fallback).
pub type Claims<'a> = &'a dyn Fn(HandlerKind, &str) -> bool;

/// Plain-listener redirect to the TLS listener.
#[derive(Debug, Clone)]
pub struct HttpsRedirect {
    /// Port of the TLS listener (omitted from the URL when 443).
    pub port: u16,
}

/// Routing and request limits, built once from the config.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Route lookup.
    pub router: Router,
    /// Proxies whose forwarding headers are believed.
    pub trusted: TrustedProxies,
    /// Longest accepted path+query.
    pub max_request_target: usize,
    /// Server-wide body cap (0: none).
    pub max_body_bytes: u64,
    /// Largest request head and most header fields (431 beyond).
    pub head: super::framing::HeadCaps,
    /// Plain-listener redirect, when configured.
    pub https_redirect: Option<HttpsRedirect>,
}

impl Policy {
    /// Built once at start-up; requests only read it.
    pub fn new(config: &Config) -> Self {
        let https_redirect = match (&config.tls, config.server.redirect_https) {
            (Some(tls), true) => Some(HttpsRedirect {
                port: tls.listen.port(),
            }),
            _ => None,
        };
        Self {
            router: Router::new(&config.routes),
            trusted: TrustedProxies::new(config.server.trusted_proxies.clone()),
            max_request_target: config.server.max_request_target,
            max_body_bytes: config.server.max_body_bytes,
            head: super::framing::HeadCaps {
                bytes: config.server.max_header_bytes,
                fields: config.server.max_headers,
            },
            https_redirect,
        }
    }

    /// Learns the facts of `req` from `peer` on a listener that is TLS or not.
    pub fn facts(&self, req: &RequestHeader, peer: Option<IpAddr>, tls: bool) -> Facts {
        let peer_trusted = peer.is_some_and(|p| self.trusted.contains(p));
        let client_ip = peer.map(|p| {
            let xff = req
                .headers
                .get_all(&X_FORWARDED_FOR)
                .iter()
                .filter_map(|v| v.to_str().ok());
            self.trusted.client_ip(p, xff)
        });
        // Only the hop nearest to us (the last value) was written by our proxy.
        let forwarded_https = peer_trusted
            && req
                .headers
                .get_all(&X_FORWARDED_PROTO)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
        let (host, authority, bad_host) = match host_of(req) {
            Ok(Some(h)) => (Some(h), raw_host(req).map(str::to_ascii_lowercase), false),
            Ok(None) => (None, None, false),
            Err(()) => (None, None, true),
        };
        Facts {
            client_ip,
            host,
            authority,
            bad_host,
            path: String::new(),
            json: wants_json(
                req.uri.path(),
                req.headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            ),
            upgrade: is_websocket_upgrade(req),
            event_stream: req.headers.get(http::header::ACCEPT).is_some_and(|v| {
                v.as_bytes()
                    .windows(17)
                    .any(|w| w.eq_ignore_ascii_case(b"text/event-stream"))
            }),
            proto: if tls || forwarded_https {
                "https"
            } else {
                "http"
            },
            request_id: super::request_id::of(req, peer_trusted),
        }
    }

    /// Decides what to do with `req`; `facts.path` becomes the normalised path.
    pub fn decide(
        &self,
        req: &RequestHeader,
        tls: bool,
        facts: &mut Facts,
        claims: Claims<'_>,
    ) -> Decision {
        let raw_path = req.uri.path();
        let query = req.uri.query();
        let target_len = raw_path.len() + query.map_or(0, |q| q.len() + 1);
        let path = match normalize(raw_path, target_len, self.max_request_target) {
            Ok(p) => p,
            Err(e) => {
                let msg = match e.status() {
                    414 => "request target too long",
                    _ => "bad request path",
                };
                return Decision::Reply(Reply::error(e.status(), msg, facts.json), None);
            }
        };
        facts.path = path;
        let path = facts.path.as_str();
        if facts.bad_host {
            return Decision::Reply(
                Reply::error(400, "bad or repeated Host header", facts.json),
                None,
            );
        }
        if let Err(why) = self.head.check(req) {
            return Decision::Reply(Reply::error(431, why, facts.json), None);
        }
        if let Err(why) = super::framing::check(req) {
            return Decision::Reply(Reply::error(400, why, facts.json), None);
        }
        if path == HEALTH_PATH {
            return Decision::Reply(Reply::text(200, "ok\n", "health"), None);
        }
        if let (Some(r), false) = (&self.https_redirect, tls) {
            let Some(host) = &facts.host else {
                return Decision::Reply(Reply::error(400, "missing Host header", facts.json), None);
            };
            let port = if r.port == 443 {
                String::new()
            } else {
                format!(":{}", r.port)
            };
            let q = query.map(|q| format!("?{q}")).unwrap_or_default();
            let host = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.clone()
            };
            return Decision::Reply(
                Reply::redirect(308, format!("https://{host}{port}{path}{q}")),
                None,
            );
        }
        let Some(route) = self.router.find(facts.host.as_deref(), path) else {
            return Decision::Reply(
                Reply::error(404, "no route for this path", facts.json),
                None,
            );
        };
        let limit = body_limit(self, Some(route));
        if limit > 0 && content_length(req).is_some_and(|n| n > limit) {
            return Decision::Reply(
                Reply::error(413, "request body too large", facts.json),
                Some(route.clone()),
            );
        }
        let with_query = |p: &str| match query {
            Some(q) => format!("{p}?{q}"),
            None => p.to_string(),
        };
        match &route.action {
            RouteAction::Redirect { to, status } => Decision::Reply(
                Reply::redirect(
                    *status,
                    router::redirect_target(to, &route.path, path, query),
                ),
                Some(route.clone()),
            ),
            RouteAction::Proxy {
                upstream,
                strip_prefix,
            } => {
                let target = if *strip_prefix {
                    with_query(&router::stripped(&route.path, path))
                } else {
                    with_query(path)
                };
                Decision::Proxy(Forward {
                    route: route.clone(),
                    upstream: upstream.clone(),
                    target,
                })
            }
            RouteAction::Static { .. } => {
                Decision::Static(route.clone(), router::stripped(&route.path, path))
            }
            RouteAction::Handler { kind, fallback } => {
                if claims(*kind, path) {
                    return Decision::Handle(route.clone(), *kind);
                }
                match fallback {
                    Some(upstream) => Decision::Proxy(Forward {
                        route: route.clone(),
                        upstream: upstream.clone(),
                        target: with_query(path),
                    }),
                    None => Decision::Reply(
                        Reply::error(404, "no such endpoint", facts.json),
                        Some(route.clone()),
                    ),
                }
            }
        }
    }
}

impl Decision {
    /// The route whose access rule applies, for the gate.
    pub fn route(&self) -> Option<&Arc<Route>> {
        match self {
            Decision::Reply(_, r) => r.as_ref(),
            Decision::Proxy(f) => Some(&f.route),
            Decision::Handle(r, _) | Decision::Static(r, _) => Some(r),
        }
    }
}

/// The request's body limit in force for `route`.
pub fn body_limit(policy: &Policy, route: Option<&Route>) -> u64 {
    match route {
        Some(Route {
            max_body_bytes: Some(cap),
            ..
        }) => *cap,
        _ => policy.max_body_bytes,
    }
}

fn content_length(req: &RequestHeader) -> Option<u64> {
    req.headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `Host` (or the h2 authority), lower-cased, without port or trailing dot.
/// `Ok(None)` when there is none; `Err` for several `Host` headers or one that
/// is not `host[:port]` (RFC 9112 §3.2 wants a 400 for both).
fn host_of(req: &RequestHeader) -> Result<Option<String>, ()> {
    let mut hosts = req.headers.get_all(http::header::HOST).iter();
    let raw = match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => return Err(()),
        (Some(v), None) => v.to_str().map_err(|_| ())?,
        (None, _) => match req.uri.authority() {
            Some(a) => a.as_str(),
            None => return Ok(None),
        },
    };
    if raw.is_empty() {
        return Ok(None);
    }
    let host = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(())?;
        v6.parse::<std::net::Ipv6Addr>().map_err(|_| ())?;
        if !(after.is_empty() || valid_port(after.strip_prefix(':').ok_or(())?)) {
            return Err(());
        }
        v6
    } else {
        let host = match raw.rsplit_once(':') {
            Some((h, port)) if valid_port(port) => h,
            Some(_) => return Err(()),
            None => raw,
        };
        let ok = host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
        if !ok {
            return Err(());
        }
        host.strip_suffix('.').unwrap_or(host)
    };
    if host.is_empty() {
        return Err(());
    }
    Ok(Some(host.to_ascii_lowercase()))
}

/// The single `Host` header (or h2 authority) as sent; only meaningful once
/// [`host_of`] accepted it.
fn raw_host(req: &RequestHeader) -> Option<&str> {
    match req.headers.get(http::header::HOST) {
        Some(v) => v.to_str().ok(),
        None => req.uri.authority().map(|a| a.as_str()),
    }
}

fn valid_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// A websocket handshake: GET with `Upgrade: websocket` and `Connection: upgrade`.
fn is_websocket_upgrade(req: &RequestHeader) -> bool {
    let has_token = |name: http::header::HeaderName, token: &str| {
        req.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    req.version != http::Version::HTTP_2
        && req.method == http::Method::GET
        && has_token(http::header::UPGRADE, "websocket")
        && has_token(http::header::CONNECTION, "upgrade")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn policy() -> Policy {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate::config::DEFAULT_PATH);
        Policy::new(&crate::config::load_with_env(&path, Vec::new()).unwrap())
    }

    fn run(method: &str, target: &str, headers: &[(&str, &str)]) -> (Facts, Decision) {
        let mut req = RequestHeader::build(method, target.as_bytes(), None).unwrap();
        for (k, v) in headers {
            req.append_header(k.to_string(), *v).unwrap();
        }
        let p = policy();
        let mut f = p.facts(&req, Some("203.0.113.5".parse().unwrap()), false);
        let d = p.decide(&req, false, &mut f, &hub_claims);
        (f, d)
    }

    /// Stands in for the hub's `claims` (the edge does not import the hub).
    fn hub_claims(kind: HandlerKind, path: &str) -> bool {
        kind != HandlerKind::Hub || path.starts_with("/api/run/")
    }

    fn proxied(target: &str) -> (String, String) {
        match run("GET", target, &[("Host", "hub.local")]).1 {
            Decision::Proxy(f) => (f.upstream, f.target),
            other => panic!("{target}: expected proxy, got {other:?}"),
        }
    }

    fn replied(target: &str) -> Reply {
        match run("GET", target, &[("Host", "hub.local")]).1 {
            Decision::Reply(r, _) => r,
            other => panic!("{target}: expected reply, got {other:?}"),
        }
    }

    #[test]
    fn default_routing_table() {
        assert_eq!(proxied("/"), ("skyoffice".into(), "/".into()));
        assert_eq!(
            proxied("/assets/app.js"),
            ("skyoffice".into(), "/assets/app.js".into())
        );
        assert_eq!(proxied("/studio/"), ("sim".into(), "/".into()));
        assert_eq!(
            proxied("/studio/w/1?x=1"),
            ("sim".into(), "/w/1?x=1".into())
        );
        assert_eq!(proxied("/sim/abc"), ("sim".into(), "/abc".into()));
        assert_eq!(
            proxied("/_next/static/a.js"),
            ("sim".into(), "/_next/static/a.js".into())
        );
        assert_eq!(
            proxied("/api/workflows/1"),
            ("sim".into(), "/api/workflows/1".into())
        );
        assert_eq!(
            proxied("/api/auth/get-session"),
            ("sim".into(), "/api/auth/get-session".into())
        );
        assert_eq!(
            proxied("/socket.io/?EIO=4&transport=polling"),
            (
                "realtime".into(),
                "/socket.io/?EIO=4&transport=polling".into()
            )
        );
    }

    #[test]
    fn redirects_and_hub() {
        let r = replied("/studio");
        assert_eq!((r.status, r.location.as_deref()), (308, Some("/studio/")));
        let r = replied("/login?next=x");
        assert_eq!(
            (r.status, r.location.as_deref()),
            (302, Some("/studio/login?next=x"))
        );
        let r = replied("/workspace/abc/w/1");
        assert_eq!(r.location.as_deref(), Some("/studio/workspace/abc/w/1"));
        let (_, d) = run("POST", "/api/run/research", &[("Host", "hub.local")]);
        assert!(matches!(d, Decision::Handle(r, HandlerKind::Hub) if r.label() == "/api/"));
    }

    #[test]
    fn health_and_bad_paths() {
        assert_eq!(replied("/healthz").status, 200);
        assert_eq!(replied("/auth/../api/run/x").status, 400);
        assert_eq!(replied("/api%2Frun").status, 400);
        assert_eq!(replied(&format!("/{}", "a".repeat(9000))).status, 414);
    }

    #[test]
    fn double_slash_cannot_dodge_the_api_route() {
        let (_, d) = run("POST", "//api/run/x", &[("Host", "hub.local")]);
        assert!(matches!(d, Decision::Handle(_, HandlerKind::Hub)));
    }

    #[test]
    fn facts() {
        let (f, _) = run(
            "GET",
            "/socket.io/?EIO=4&transport=websocket",
            &[
                ("Host", "Hub.Local:8080"),
                ("Connection", "keep-alive, Upgrade"),
                ("Upgrade", "websocket"),
                ("X-Forwarded-For", "1.2.3.4"),
            ],
        );
        assert!(f.upgrade);
        assert_eq!(f.host.as_deref(), Some("hub.local"));
        assert_eq!(f.authority.as_deref(), Some("hub.local:8080"), "port kept");
        assert_eq!(f.client_ip, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(f.proto, "http");
    }

    #[test]
    fn hosts() {
        let host = |v: &[&str]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for h in v {
                r.append_header("host", *h).unwrap();
            }
            host_of(&r)
        };
        assert_eq!(
            host(&["Hub.Example.com:8080"]),
            Ok(Some("hub.example.com".into()))
        );
        assert_eq!(
            host(&["hub.example.com."]),
            Ok(Some("hub.example.com".into()))
        );
        assert_eq!(host(&["[::1]:8443"]), Ok(Some("::1".into())));
        assert_eq!(host(&[]), Ok(None));
        assert_eq!(host(&["a", "b"]), Err(()));
        assert_eq!(host(&["a b"]), Err(()));
        assert_eq!(host(&["user@evil.com"]), Err(()));
        assert_eq!(host(&["evil.com/x"]), Err(()));
        assert_eq!(host(&["a:99999x"]), Err(()));
        assert_eq!(host(&["[::1"]), Err(()));
        let (_, d) = run("GET", "/studio/", &[("Host", "a"), ("Host", "b")]);
        assert!(matches!(d, Decision::Reply(r, _) if r.status == 400));
    }

    #[test]
    fn only_websocket_upgrades_pass() {
        let up = |method: &str, upgrade: &str| {
            let mut r = RequestHeader::build(method, b"/", None).unwrap();
            r.append_header("connection", "Upgrade").unwrap();
            r.append_header("upgrade", upgrade).unwrap();
            is_websocket_upgrade(&r)
        };
        assert!(up("GET", "websocket"));
        assert!(up("GET", "WebSocket"));
        assert!(!up("GET", "h2c"));
        assert!(!up("POST", "websocket"));
    }

    #[test]
    fn forwarded_proto_uses_the_nearest_hop_only() {
        let mut p = policy();
        p.trusted = TrustedProxies::new(vec!["203.0.113.0/24".parse().unwrap()]);
        let proto = |values: &[&str]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            for v in values {
                r.append_header("x-forwarded-proto", *v).unwrap();
            }
            p.facts(&r, Some("203.0.113.5".parse().unwrap()), false)
                .proto
        };
        assert_eq!(proto(&["https"]), "https");
        assert_eq!(proto(&["https", "http"]), "http");
        assert_eq!(proto(&["https, http"]), "http");
        assert_eq!(proto(&["http, https"]), "https");
    }

    #[test]
    fn oversized_content_length() {
        let mut p = policy();
        p.max_body_bytes = 10;
        let mut req = RequestHeader::build("POST", b"/x", None).unwrap();
        req.append_header("Host", "hub.local").unwrap();
        req.append_header("Content-Length", "11").unwrap();
        let mut f = p.facts(&req, None, false);
        match p.decide(&req, false, &mut f, &hub_claims) {
            Decision::Reply(r, _) => assert_eq!(r.status, 413),
            d => panic!("{d:?}"),
        }
    }
}
