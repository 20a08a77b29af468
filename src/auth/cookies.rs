//! The edge's own cookies: their names, how they are read from a request, and
//! the one function every `Set-Cookie` the edge sends is built by, so the
//! attributes (`HttpOnly`, `Secure`, `SameSite`, prefixes) cannot drift apart.

use pingora::http::RequestHeader;

/// The session cookie over plain HTTP.
pub const SESSION: &str = "esprit_session";
/// The session cookie over TLS: `__Host-` pins it to this host, path `/`, Secure.
pub const SESSION_TLS: &str = "__Host-esprit_session";
/// The device cookie over plain HTTP (sent to `/auth/` only, see `devices`).
pub const DEVICE: &str = "esprit_device";
/// The device cookie over TLS: `__Secure-` allows the `/auth/` path.
pub const DEVICE_TLS: &str = "__Secure-esprit_device";
/// Every cookie of the edge's own: never forwarded upstream.
pub const EDGE_COOKIES: [&str; 4] = [SESSION, SESSION_TLS, DEVICE, DEVICE_TLS];

/// How long a browser stays a known device of an account after signing in.
pub const DEVICE_TTL: std::time::Duration = std::time::Duration::from_secs(90 * 86_400);

/// The session cookie's name; `secure` when the browser used HTTPS (to the
/// edge, or to a trusted proxy in front of it).
pub fn session_name(secure: bool) -> &'static str {
    if secure { SESSION_TLS } else { SESSION }
}

/// The device cookie's name.
pub fn device_name(secure: bool) -> &'static str {
    if secure { DEVICE_TLS } else { DEVICE }
}

/// The session cookie's values in `req`: usually one. A sibling host, or a
/// cookie with a longer path, can add another of the same name, sent first;
/// `AuthService::session_token` decides which, if any, counts.
pub fn session_values(req: &RequestHeader, secure: bool) -> impl Iterator<Item = &str> {
    named(req, session_name(secure)).take(4)
}

/// Every cookie called `name` in `req`.
fn named<'a>(req: &'a RequestHeader, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The values of the first few cookies called `name`: a cookie planted by a
/// sibling host (same name, longer path, so sent first) must not hide the
/// browser's own device cookie.
pub fn all_named(req: &RequestHeader, name: &str) -> Vec<String> {
    named(req, name).take(4).map(str::to_string).collect()
}

/// One `Set-Cookie` value. Always `HttpOnly`; `Secure` when the browser used
/// HTTPS; `max_age` 0 deletes the cookie.
fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: u64,
    secure: bool,
    same_site: &str,
) -> String {
    let secure = if secure { " Secure;" } else { "" };
    format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly;{secure} SameSite={same_site}"
    )
}

/// The session cookie for `token`, living `max_age` seconds.
pub fn session(token: &str, max_age: u64, secure: bool) -> String {
    set_cookie(session_name(secure), token, "/", max_age, secure, "Lax")
}

/// Deletes the session cookie.
pub fn clear_session(secure: bool) -> String {
    set_cookie(session_name(secure), "", "/", 0, secure, "Lax")
}

/// The device cookie: only ever sent back to the sign-in (`Path=/auth/`),
/// never upstream, never cross-site.
pub fn device(token: &str, secure: bool) -> String {
    set_cookie(
        device_name(secure),
        token,
        "/auth/",
        DEVICE_TTL.as_secs(),
        secure,
        "Strict",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cookie_of_a_name_is_seen() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("cookie", "esprit_device=planted; a=1")
            .unwrap();
        r.append_header("cookie", "esprit_device=mine").unwrap();
        assert_eq!(all_named(&r, DEVICE), ["planted", "mine"]);
        assert_eq!(named(&r, DEVICE).next(), Some("planted"));
    }

    #[test]
    fn cookie_lookup_by_transport() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header(
            "cookie",
            "a=1; esprit_session=plain; __Host-esprit_session=tls",
        )
        .unwrap();
        assert_eq!(session_values(&r, false).next(), Some("plain"));
        assert_eq!(session_values(&r, true).next(), Some("tls"));
    }

    #[test]
    fn attributes_follow_the_scheme() {
        assert_eq!(
            session("t", 60, false),
            "esprit_session=t; Path=/; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            session("t", 60, true),
            "__Host-esprit_session=t; Path=/; Max-Age=60; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            clear_session(true),
            "__Host-esprit_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            device("d", false),
            "esprit_device=d; Path=/auth/; Max-Age=7776000; HttpOnly; SameSite=Strict"
        );
        assert!(device("d", true).starts_with("__Secure-esprit_device=d; Path=/auth/;"));
    }
}
