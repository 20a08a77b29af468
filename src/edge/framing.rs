//! Strict HTTP/1 framing (RFC 9112): requests whose length or target an
//! intermediary could read differently from the upstream are refused with
//! 400 and never forwarded (request smuggling), and the connection is closed.
//! Pingora already refuses a `Content-Length` with a sign or junk and an
//! absolute-form target whose host disagrees with `Host`; the rest is here.

use pingora::http::RequestHeader;

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
