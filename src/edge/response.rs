//! What comes back from an upstream, beyond the security headers: an
//! upstream can never set or clear the edge's own cookies (a compromised or
//! confused app must not plant a session, log a browser out, or replace its
//! known-device cookie).

use crate::auth::cookies::EDGE_COOKIES;
use pingora::Result;
use pingora::http::ResponseHeader;

/// Whether a `Set-Cookie` value sets one of the edge's cookies (names compared
/// without case: browsers match the `__Host-`/`__Secure-` prefixes so).
fn sets_edge_cookie(value: &[u8]) -> bool {
    let name = value.split(|b| *b == b'=').next().unwrap_or(value);
    let name = name.trim_ascii();
    EDGE_COOKIES
        .iter()
        .any(|c| c.as_bytes().eq_ignore_ascii_case(name))
}

/// Removes every `Set-Cookie` of the edge's own cookies; returns how many.
pub fn drop_edge_cookies(resp: &mut ResponseHeader) -> Result<usize> {
    let all = resp.headers.get_all(http::header::SET_COOKIE);
    if !all.iter().any(|v| sets_edge_cookie(v.as_bytes())) {
        return Ok(0);
    }
    let (kept, dropped): (Vec<_>, Vec<_>) = all
        .iter()
        .cloned()
        .partition(|v| !sets_edge_cookie(v.as_bytes()));
    resp.remove_header(&http::header::SET_COOKIE);
    for v in kept {
        resp.append_header(http::header::SET_COOKIE, v)?;
    }
    Ok(dropped.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_edges_cookies_are_dropped() {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for v in [
            "app=1; Path=/",
            "esprit_session=planted; Path=/",
            "__host-esprit_session=x; Path=/; Secure",
            " esprit_device=; Max-Age=0",
            "__Secure-esprit_device=y; Path=/auth/",
            "esprit_session_other=fine",
        ] {
            r.append_header("set-cookie", v).unwrap();
        }
        assert_eq!(drop_edge_cookies(&mut r).unwrap(), 4);
        let left: Vec<&str> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(left, ["app=1; Path=/", "esprit_session_other=fine"]);
        let mut none = ResponseHeader::build(200, None).unwrap();
        none.append_header("set-cookie", "app=1").unwrap();
        assert_eq!(drop_edge_cookies(&mut none).unwrap(), 0);
    }
}
