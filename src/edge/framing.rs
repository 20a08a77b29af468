//! Strict HTTP/1 framing (RFC 9112): requests whose length or target an
//! intermediary could read differently from the upstream are refused with
//! 400 and never forwarded (request smuggling), and the connection is closed.
//! Pingora already refuses a `Content-Length` with a sign or junk and an
//! absolute-form target whose host disagrees with `Host`; the rest is here.

use pingora::http::RequestHeader;

/// Caps on a request head: nginx answers 400 or 494 past its header
/// buffers; RFC 6585 names the status for it, 431.
#[derive(Debug, Clone, Copy)]
pub struct HeadCaps {
    /// Request line and header fields, in bytes as on the wire.
    pub bytes: usize,
    /// Header fields.
    pub fields: usize,
}

impl HeadCaps {
    /// Why the head is too large; the message is safe to show. (The
    /// connection's head guard bounds what is read before this can run.)
    pub fn check(&self, req: &RequestHeader) -> Result<(), &'static str> {
        let h = &req.headers;
        if h.len() > self.fields {
            return Err("too many header fields");
        }
        // "GET " + target + " HTTP/1.1\r\n", then "name: value\r\n" each.
        let line = req.method.as_str().len()
            + req.uri.path().len()
            + 12
            + req.uri.query().map_or(0, |q| q.len() + 1);
        let fields: usize = h.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum();
        if line + fields + 2 > self.bytes {
            return Err("request header fields too large");
        }
        Ok(())
    }
}

/// Why a request's framing is refused; the message is safe to show.
pub fn check(req: &RequestHeader) -> Result<(), &'static str> {
    let h = &req.headers;
    if req.version == http::Version::HTTP_11 {
        // §3.2: a 1.1 request without Host, or with an empty one, is a 400.
        // (HTTP/2 carries :authority; HTTP/1.0 may omit Host.)
        match h.get(http::header::HOST) {
            None => return Err("HTTP/1.1 request without Host"),
            Some(v) if v.as_bytes().trim_ascii().is_empty() => return Err("empty Host header"),
            Some(_) => {}
        }
    }
    let lengths: Vec<&[u8]> = h
        .get_all(http::header::CONTENT_LENGTH)
        .iter()
        .map(|v| v.as_bytes())
        .collect();
    if h.contains_key(http::header::TRANSFER_ENCODING) && !lengths.is_empty() {
        // §6.1: both framings at once is the classic smuggling vector.
        return Err("both Content-Length and Transfer-Encoding");
    }
    match lengths.as_slice() {
        [] => {}
        [one] if !one.is_empty() && one.iter().all(u8::is_ascii_digit) => {}
        _ => return Err("Content-Length is not one plain number"),
    }
    // A proxy or app that folds `_` into `-` would see a framing header the
    // edge did not frame the body by.
    if h.keys().any(|k| {
        let k = k.as_str();
        k.eq_ignore_ascii_case("content_length") || k.eq_ignore_ascii_case("transfer_encoding")
    }) {
        return Err("framing header spelled with '_'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_over_the_caps_are_refused() {
        let caps = HeadCaps {
            bytes: 200,
            fields: 3,
        };
        let mut r = req(http::Version::HTTP_11, &[("Host", "a"), ("X-A", "1")]);
        assert_eq!(caps.check(&r), Ok(()));
        r.append_header("X-B", "2").unwrap();
        r.append_header("X-C", "3").unwrap();
        assert_eq!(caps.check(&r), Err("too many header fields"));
        let r = req(
            http::Version::HTTP_11,
            &[("Host", "a"), ("Cookie", &"x".repeat(180))],
        );
        assert_eq!(caps.check(&r), Err("request header fields too large"));
        let r = req(
            http::Version::HTTP_11,
            &[("Host", "a"), ("Cookie", &"x".repeat(150))],
        );
        assert_eq!(caps.check(&r), Ok(()));
    }

    fn req(version: http::Version, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/x", None).unwrap();
        r.set_version(version);
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        use http::Version as V;
        let ok = |v, h: &[(&str, &str)]| check(&req(v, h)).is_ok();
        assert!(ok(V::HTTP_11, &[("host", "a"), ("content-length", "3")]));
        assert!(ok(
            V::HTTP_11,
            &[("host", "a"), ("transfer-encoding", "chunked")]
        ));
        assert!(ok(V::HTTP_10, &[]), "HTTP/1.0 may omit Host");
        assert!(ok(V::HTTP_2, &[]), "HTTP/2 has :authority");
        assert!(!ok(V::HTTP_11, &[]));
        assert!(!ok(V::HTTP_11, &[("host", " ")]));
        assert!(!ok(
            V::HTTP_11,
            &[
                ("host", "a"),
                ("content-length", "3"),
                ("transfer-encoding", "chunked")
            ]
        ));
        assert!(!ok(
            V::HTTP_11,
            &[("host", "a"), ("content-length", "3, 3")]
        ));
        assert!(!ok(
            V::HTTP_11,
            &[
                ("host", "a"),
                ("content-length", "3"),
                ("content-length", "3")
            ]
        ));
        assert!(!ok(V::HTTP_11, &[("host", "a"), ("content-length", "")]));
        assert!(!ok(V::HTTP_11, &[("host", "a"), ("content_length", "3")]));
        assert!(!ok(
            V::HTTP_11,
            &[("host", "a"), ("Transfer_Encoding", "chunked")]
        ));
    }
}
