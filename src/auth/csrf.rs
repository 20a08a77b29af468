//! Cross-site request checks for unsafe methods on cookie-authenticated
//! routes: `Sec-Fetch-Site` first (every current browser sends it), then
//! `Origin` against the public origin.

/// Why a request was refused (403 with this text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsrfError {
    /// `Sec-Fetch-Site: cross-site` or `same-site`.
    CrossSite,
    /// `Origin` is another origin, or `null`.
    ForeignOrigin,
    /// Neither header: a non-browser client must not ride a browser cookie.
    NoProvenance,
}

impl CsrfError {
    /// The message the client gets.
    pub fn message(self) -> &'static str {
        match self {
            CsrfError::CrossSite => "cross-site request refused",
            CsrfError::ForeignOrigin => "request from another origin refused",
            CsrfError::NoProvenance => "request without Sec-Fetch-Site or Origin refused",
        }
    }
}

impl std::fmt::Display for CsrfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Whether `method` can change state, so needs [`check`]; lets the gate skip
/// working out its own origin on the (common) safe requests.
pub fn needs_check(method: &http::Method) -> bool {
    !matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    )
}

/// Checks one request. `origin_here` is the origin the browser used (the
/// configured public origin, else scheme and Host of this request).
pub fn check(
    method: &http::Method,
    sec_fetch_site: Option<&str>,
    origin: Option<&str>,
    origin_here: &str,
) -> Result<(), CsrfError> {
    if !needs_check(method) {
        return Ok(());
    }
    provenance(sec_fetch_site, origin, origin_here)
}

/// Checks that a request comes from a page of this origin, whatever its
/// method: a websocket handshake is a GET, but what flows over it can
/// change state, and `SameSite=Lax` still sends the cookie from sibling
/// hosts (cross-site websocket hijacking). Browsers always send `Origin`
/// on a websocket handshake.
pub fn provenance(
    sec_fetch_site: Option<&str>,
    origin: Option<&str>,
    origin_here: &str,
) -> Result<(), CsrfError> {
    match sec_fetch_site.map(str::trim) {
        Some(s) if s.eq_ignore_ascii_case("same-origin") || s.eq_ignore_ascii_case("none") => {
            return Ok(());
        }
        Some(_) => return Err(CsrfError::CrossSite),
        None => {}
    }
    match origin.map(str::trim) {
        Some(o) if o.eq_ignore_ascii_case(origin_here) => Ok(()),
        Some(_) => Err(CsrfError::ForeignOrigin),
        None => Err(CsrfError::NoProvenance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    const HERE: &str = "https://hub.example.com";

    #[test]
    fn safe_methods_pass() {
        assert_eq!(check(&Method::GET, Some("cross-site"), None, HERE), Ok(()));
    }

    #[test]
    fn fetch_metadata_decides_first() {
        assert_eq!(
            check(
                &Method::POST,
                Some("same-origin"),
                Some("https://evil"),
                HERE
            ),
            Ok(())
        );
        assert_eq!(check(&Method::POST, Some("none"), None, HERE), Ok(()));
        assert_eq!(
            check(&Method::DELETE, Some("cross-site"), Some(HERE), HERE),
            Err(CsrfError::CrossSite)
        );
        assert_eq!(
            check(&Method::PUT, Some("same-site"), None, HERE),
            Err(CsrfError::CrossSite)
        );
    }

    #[test]
    fn websocket_handshakes_need_this_origin() {
        assert_eq!(provenance(Some("same-origin"), Some(HERE), HERE), Ok(()));
        assert_eq!(provenance(None, Some(HERE), HERE), Ok(()));
        assert_eq!(
            provenance(Some("same-site"), Some("https://other.example.com"), HERE),
            Err(CsrfError::CrossSite)
        );
        assert_eq!(
            provenance(None, Some("http://localhost:3000"), HERE),
            Err(CsrfError::ForeignOrigin)
        );
        assert_eq!(provenance(None, None, HERE), Err(CsrfError::NoProvenance));
    }

    #[test]
    fn origin_when_no_fetch_metadata() {
        assert_eq!(
            check(&Method::POST, None, Some("https://HUB.example.com"), HERE),
            Ok(())
        );
        assert_eq!(
            check(&Method::POST, None, Some("https://evil.example"), HERE),
            Err(CsrfError::ForeignOrigin)
        );
        assert_eq!(
            check(&Method::POST, None, Some("null"), HERE),
            Err(CsrfError::ForeignOrigin)
        );
        assert_eq!(
            check(&Method::POST, None, None, HERE),
            Err(CsrfError::NoProvenance)
        );
    }
}
