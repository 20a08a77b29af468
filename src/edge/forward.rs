//! What goes upstream: the request header rewritten so the upstream can trust
//! every identity and forwarding header it sees, because the edge set them all.

use crate::auth::cookies::EDGE_COOKIES;
use http::{HeaderName, HeaderValue};
use pingora::Result;
use pingora::http::RequestHeader;
use std::net::IpAddr;

/// Headers that describe one connection and must not be forwarded (RFC 9110 §7.6.1).
/// `Transfer-Encoding` and `Content-Length` are left to Pingora, which frames the body.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Never removed because `Connection` names them: they frame or address the request.
const NEVER_LISTED: [&str; 3] = ["host", "content-length", "transfer-encoding"];

/// Client-supplied headers that claim an identity or a forwarding path. Upstreams
/// (Sim, SkyOffice, the apps behind an auth proxy) may believe them, so only the
/// edge may set them. Some servers treat `X_Forwarded_For` as `X-Forwarded-For`,
/// so `_` counts as `-`. `HeaderName`s are already lower-case.
///
/// Next.js' internal headers go too: `x-middleware-*` (a client-sent
/// `x-middleware-subrequest` skips Sim's middleware, CVE-2025-29927) and
/// `x-invoke-*` (its router server's own). A browser never sends them.
/// `x-esprit-*` is the edge's own (`X-Esprit-Jwt-Assertion`).
/// `x-nextjs-*` stays: Next's own client sends `x-nextjs-data` on data fetches.
const IDENTITY_PREFIXES: [&str; 10] = [
    "x-esprit-",
    "x-forwarded-",
    "x-auth-",
    "remote-",
    "x-original-",
    "x-remote-",
    "x-authenticated-",
    "x-webauth-",
    "x-middleware-",
    "x-invoke-",
];
const IDENTITY_NAMES: [&str; 12] = [
    "forwarded",
    "x-real-ip",
    "x-client-ip",
    "true-client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-rewrite-url",
    "x-user",
    "x-email",
    "client-ip",
    "x-originating-ip",
];

/// Byte equality where `_` in the header name matches `-` in the pattern.
fn same(name: &[u8], pattern: &[u8]) -> bool {
    name.len() == pattern.len()
        && name
            .iter()
            .zip(pattern)
            .all(|(n, p)| n.to_ascii_lowercase() == *p || (*n == b'_' && *p == b'-'))
}

fn is_identity_header(name: &str) -> bool {
    let n = name.as_bytes();
    IDENTITY_PREFIXES
        .iter()
        .any(|p| n.len() > p.len() && same(&n[..p.len()], p.as_bytes()))
        || IDENTITY_NAMES.iter().any(|p| same(n, p.as_bytes()))
}

/// What the edge knows about the downstream request, to tell the upstream.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The client as the edge determined it (peer or trusted XFF).
    pub client_ip: IpAddr,
    /// `http` or `https`, as the browser reached us (or our trusted proxy).
    pub proto: &'static str,
    /// The host (and port) the browser asked for, as it sent them.
    pub host: Option<&'a str>,
    /// The signed-in user (`X-Forwarded-User`), when the route is gated.
    pub user: Option<&'a str>,
    /// Their email (`X-Forwarded-Email`), when known.
    pub email: Option<&'a str>,
    /// The request's id (`X-Request-Id`), replacing any the client sent.
    pub request_id: &'a str,
    /// The signed identity assertion for this upstream (a gated route).
    pub assertion: Option<&'a HeaderValue>,
}

/// Whether the `Cookie` value `v` holds one of the edge's own cookies.
fn carries_edge_cookie(v: &str) -> bool {
    v.split(';')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, _)| EDGE_COOKIES.contains(&k.trim()))
}

/// The `Cookie` header without the edge's own cookies (never sent upstream;
/// the device cookies have `Path=/auth/`, so browsers should not send them
/// here, but a forged or stray copy is dropped all the same); `None` when
/// nothing is left.
fn without_edge_cookies(values: &[&str]) -> Option<String> {
    let kept: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|kv| !kv.is_empty())
        .filter(|kv| {
            !EDGE_COOKIES
                .iter()
                .any(|name| kv.split_once('=').is_some_and(|(k, _)| k.trim() == *name))
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

// The headers the edge sets, as statics: Pingora takes them without parsing
// or copying the name on every request (issue 12, vendor/pingora-http).
static X_FORWARDED_USER: HeaderName = HeaderName::from_static("x-forwarded-user");
static X_FORWARDED_EMAIL: HeaderName = HeaderName::from_static("x-forwarded-email");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static(super::request_id::HEADER);
static X_ESPRIT_JWT_ASSERTION: HeaderName = HeaderName::from_static(crate::auth::assertion::HEADER);

/// Sets `name` to `value`, refusing a value that is not a valid field value.
fn put(req: &mut RequestHeader, name: &'static HeaderName, value: &str) -> Result<()> {
    let value = HeaderValue::from_str(value).map_err(|e| {
        pingora::Error::because(
            pingora::ErrorType::InvalidHTTPHeader,
            format!("{name} value"),
            e,
        )
    })?;
    req.insert_header_static(name, value);
    Ok(())
}

/// The client address as a header value, written as the access log writes it.
fn ip_value(ip: IpAddr) -> Result<HeaderValue> {
    let mut text = String::with_capacity(15);
    crate::telemetry::push_ip(&mut text, ip);
    HeaderValue::try_from(text).map_err(|e| {
        pingora::Error::because(pingora::ErrorType::InternalError, "client address", e)
    })
}

/// How many headers [`prepare`] may add: user, email, for, real-ip, proto,
/// host, request id, assertion, and `Connection` or `Host`.
const FORWARDING_HEADERS: usize = 9;

/// Rewrites `req` for the upstream: `path_and_query` as the target, hop-by-hop
/// and client identity headers removed, forwarding headers set from `fwd`.
/// `upgrade` keeps a websocket handshake intact.
pub fn prepare(
    req: &mut RequestHeader,
    fwd: &Forwarded<'_>,
    upgrade: bool,
    path_and_query: &str,
) -> Result<()> {
    // Headers the client named in `Connection` are hop-by-hop too (RFC 9110
    // §7.6.1), except the ones that frame or address the request.
    let listed: Vec<&str> = req
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let doomed: Vec<http::HeaderName> = req
        .headers
        .keys()
        .filter(|k| {
            let k = k.as_str();
            if upgrade && k == "upgrade" || NEVER_LISTED.contains(&k) {
                return false;
            }
            HOP_BY_HOP.contains(&k)
                || is_identity_header(k)
                || listed.iter().any(|t| t.eq_ignore_ascii_case(k))
        })
        .cloned()
        .collect();
    for name in &doomed {
        req.remove_header(name);
    }
    // Room for the forwarding headers below, so neither header map regrows.
    req.reserve(FORWARDING_HEADERS);
    if upgrade {
        req.insert_header(http::header::CONNECTION, "upgrade")?;
    }
    if req.headers.get(http::header::HOST).is_none()
        && let Some(authority) = req.uri.authority().map(|a| a.as_str().to_string())
    {
        req.insert_header(http::header::HOST, authority)?;
    }
    // Rewritten only when it carries the edge's cookie, or bytes we cannot
    // read (which could hide it); otherwise the apps' cookies pass as sent.
    let values = req.headers.get_all(http::header::COOKIE);
    let cookies: Vec<&str> = values.iter().filter_map(|v| v.to_str().ok()).collect();
    let opaque = cookies.len() < values.iter().count();
    if opaque || cookies.iter().any(|v| carries_edge_cookie(v)) {
        match without_edge_cookies(&cookies) {
            // `insert_header` replaces every value under the name.
            Some(kept) => req.insert_header(http::header::COOKIE, kept)?,
            None => {
                req.remove_header(&http::header::COOKIE);
            }
        }
    }
    if let Some(user) = fwd.user {
        put(req, &X_FORWARDED_USER, user)?;
        if let Some(email) = fwd.email {
            put(req, &X_FORWARDED_EMAIL, email)?;
        }
    }
    // One value for both headers: the second is a reference count, not a copy.
    let ip = ip_value(fwd.client_ip)?;
    req.insert_header_static(&X_FORWARDED_FOR, ip.clone());
    req.insert_header_static(&X_REAL_IP, ip);
    req.insert_header_static(&X_FORWARDED_PROTO, HeaderValue::from_static(fwd.proto));
    if let Some(host) = fwd.host {
        put(req, &X_FORWARDED_HOST, host)?;
    }
    put(req, &X_REQUEST_ID, fwd.request_id)?;
    if let Some(assertion) = fwd.assertion {
        req.insert_header_static(&X_ESPRIT_JWT_ASSERTION, assertion.clone());
    }
    let uri: http::Uri = path_and_query.parse().map_err(|e| {
        pingora::Error::because(
            pingora::ErrorType::InternalError,
            format!("upstream target {path_and_query:?}"),
            e,
        )
    })?;
    req.set_uri(uri);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd() -> Forwarded<'static> {
        Forwarded {
            client_ip: "198.51.100.7".parse().unwrap(),
            proto: "https",
            host: Some("hub.example.com"),
            user: None,
            email: None,
            request_id: "0123456789abcdef01234567",
            assertion: None,
        }
    }

    fn req(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/studio/x?y=1", None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn headers_added_by_name_reach_the_wire_with_every_other() {
        // The vendored pingora-http's `reserve` and `insert_header_static`
        // must keep its case map in step with the values, or the wire form
        // (which walks both together) would lose or misname headers.
        let mut r = req(&[
            ("Host", "hub.local"),
            ("Accept", "*/*"),
            ("X-Real-IP", "6.6.6.6"),
        ]);
        prepare(&mut r, &fwd(), false, "/x").unwrap();
        let mut wire = bytes::BytesMut::new();
        r.header_to_h1_wire(&mut wire);
        let wire = String::from_utf8(wire.to_vec()).unwrap();
        let lines: Vec<&str> = wire.split("\r\n").filter(|l| !l.is_empty()).collect();
        assert_eq!(lines.len(), r.headers.len(), "{wire}");
        for line in [
            "Host: hub.local",
            "Accept: */*",
            "x-forwarded-for: 198.51.100.7",
            "x-real-ip: 198.51.100.7",
            "x-forwarded-proto: https",
            "x-forwarded-host: hub.example.com",
            "x-request-id: 0123456789abcdef01234567",
        ] {
            assert!(lines.contains(&line), "{line} missing from {wire}");
        }
    }

    #[test]
    fn client_addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "198.51.100.7",
            "255.255.255.255",
            "10.0.0.1",
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.1",
        ] {
            let addr: IpAddr = ip.parse().unwrap();
            assert_eq!(ip_value(addr).unwrap(), addr.to_string().as_str(), "{ip}");
        }
    }

    #[test]
    fn forged_identity_headers_are_removed_in_any_spelling() {
        let mut r = req(&[
            ("X-Forwarded-For", "6.6.6.6"),
            ("x_forwarded_for", "6.6.6.6"),
            ("X-FORWARDED-USER", "admin"),
            ("Forwarded", "for=6.6.6.6"),
            ("X-Real-IP", "6.6.6.6"),
            ("X-Auth-Request-User", "admin"),
            ("Remote-User", "admin"),
            ("remote_user", "admin"),
            ("X-Original-URL", "/admin"),
            ("Accept", "text/html"),
        ]);
        prepare(&mut r, &fwd(), false, "/x?y=1").unwrap();
        let names: Vec<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        for bad in [
            "x_forwarded_for",
            "x-forwarded-user",
            "forwarded",
            "x-auth-request-user",
            "remote-user",
            "remote_user",
            "x-original-url",
        ] {
            assert!(!names.contains(&bad), "{bad} survived: {names:?}");
        }
        assert_eq!(r.headers["x-forwarded-for"], "198.51.100.7");
        assert_eq!(r.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(r.headers["x-real-ip"], "198.51.100.7");
        assert_eq!(r.headers["x-forwarded-proto"], "https");
        assert_eq!(r.headers["x-forwarded-host"], "hub.example.com");
        assert_eq!(r.headers["accept"], "text/html");
        assert_eq!(r.uri.to_string(), "/x?y=1");
    }

    #[test]
    fn a_client_assertion_never_reaches_the_upstream() {
        let forged = [
            ("X-Esprit-Jwt-Assertion", "forged.by.client"),
            ("x_esprit_jwt_assertion", "forged.by.client"),
        ];
        // Open route: no assertion of ours, and theirs is gone.
        let mut r = req(&forged);
        prepare(&mut r, &fwd(), false, "/x").unwrap();
        assert!(r.headers.keys().all(|k| !k.as_str().contains("esprit")));
        // Gated route: exactly ours.
        let mut r = req(&forged);
        let signed = HeaderValue::from_static("signed.by.edge");
        let ours = Forwarded {
            assertion: Some(&signed),
            ..fwd()
        };
        prepare(&mut r, &ours, false, "/x").unwrap();
        let values: Vec<_> = r.headers.get_all("x-esprit-jwt-assertion").iter().collect();
        assert_eq!(values, ["signed.by.edge"]);
        assert!(r.headers.get("x_esprit_jwt_assertion").is_none());
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_go() {
        let mut r = req(&[
            ("Connection", "keep-alive, X-Secret"),
            ("Keep-Alive", "timeout=5"),
            ("X-Secret", "1"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic x"),
            ("Upgrade", "h2c"),
        ]);
        prepare(&mut r, &fwd(), false, "/").unwrap();
        for gone in [
            "connection",
            "keep-alive",
            "x-secret",
            "te",
            "proxy-authorization",
            "upgrade",
        ] {
            assert!(r.headers.get(gone).is_none(), "{gone}");
        }
    }

    #[test]
    fn identity_matching() {
        for yes in [
            "x-forwarded-for",
            "x_forwarded_user",
            "x-forwarded_proto",
            "forwarded",
            "remote_user",
            "x-auth-request-email",
            "x_real_ip",
            "x-remote-addr",
            "x_authenticated_user",
            "x-webauth-user",
            "x-email",
            "client_ip",
            "x-originating-ip",
            "x-middleware-subrequest",
            "x_middleware_subrequest",
            "x-invoke-path",
        ] {
            assert!(is_identity_header(yes), "{yes}");
        }
        for no in [
            "x-forwarded",
            "accept",
            "x-remote",
            "forwarded-x",
            "remote",
            "authorization",
            "cookie",
            "x-nextjs-data",
            "x-middleware",
        ] {
            assert!(!is_identity_header(no), "{no}");
        }
    }

    #[test]
    fn edge_cookie_stays_and_identity_is_set() {
        let mut r = req(&[
            ("Cookie", "a=1; esprit_session=secret"),
            (
                "Cookie",
                "__Host-esprit_session=s2; better-auth.session_token=x",
            ),
            ("X-Forwarded-User", "admin"),
        ]);
        let mut f = fwd();
        f.user = Some("alice");
        f.email = Some("alice@example.com");
        prepare(&mut r, &f, false, "/").unwrap();
        assert_eq!(
            r.headers.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; better-auth.session_token=x"]
        );
        assert_eq!(
            r.headers
                .get_all("x-forwarded-user")
                .iter()
                .collect::<Vec<_>>(),
            ["alice"]
        );
        assert_eq!(r.headers["x-forwarded-email"], "alice@example.com");
        let mut only_edge = req(&[("Cookie", "esprit_session=secret")]);
        prepare(&mut only_edge, &fwd(), false, "/").unwrap();
        assert!(only_edge.headers.get("cookie").is_none());
        // Without the edge's cookie, the apps' cookies pass exactly as sent.
        let mut apps = req(&[("Cookie", "a=1;b=2"), ("Cookie", "c=3")]);
        prepare(&mut apps, &fwd(), false, "/").unwrap();
        assert_eq!(
            apps.headers.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1;b=2", "c=3"]
        );
        // A value that is not text could hide the edge's cookie: it is dropped.
        let mut opaque = req(&[("Cookie", "a=1")]);
        opaque
            .append_header(
                "Cookie",
                http::HeaderValue::from_bytes(b"esprit_session=secret; x=\xff").unwrap(),
            )
            .unwrap();
        prepare(&mut opaque, &fwd(), false, "/").unwrap();
        assert_eq!(
            opaque.headers.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1"]
        );
    }

    #[test]
    fn connection_cannot_remove_host_or_framing() {
        let mut r = req(&[
            ("Host", "hub.local"),
            ("Connection", "host, content-length"),
            ("Content-Length", "0"),
        ]);
        prepare(&mut r, &fwd(), false, "/").unwrap();
        assert_eq!(r.headers["host"], "hub.local");
        assert_eq!(r.headers["content-length"], "0");
    }

    #[test]
    fn websocket_handshake_survives() {
        let mut r = req(&[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ]);
        prepare(&mut r, &fwd(), true, "/socket.io/?EIO=4").unwrap();
        assert_eq!(r.headers["upgrade"], "websocket");
        assert_eq!(r.headers["connection"], "upgrade");
        assert!(r.headers.get("sec-websocket-key").is_some());
    }

    #[test]
    fn host_comes_from_authority_for_h2() {
        let mut r = RequestHeader::build("GET", b"/x", None).unwrap();
        r.set_uri("https://hub.example.com/x".parse().unwrap());
        prepare(&mut r, &fwd(), false, "/x").unwrap();
        assert_eq!(r.headers["host"], "hub.example.com");
        assert_eq!(r.uri.to_string(), "/x");
    }
}
