//! Caching for static files: the validators (`ETag`, `Last-Modified`), the
//! conditional requests they answer with 304, `If-Range`, and which
//! `Cache-Control` a file gets by its name.

use std::time::{SystemTime, UNIX_EPOCH};

/// `Last-Modified`: the file's time, or the epoch for one outside what an
/// HTTP date can say (before 1970, after 9999), which would not format.
pub fn last_modified(modified: SystemTime) -> String {
    let max = UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    let t = if modified < UNIX_EPOCH || modified > max {
        UNIX_EPOCH
    } else {
        modified
    };
    httpdate::fmt_http_date(t)
}

/// A strong entity tag from what changes when the file does: size and
/// modification time (nanoseconds), plus the representation, so the `.br`
/// and the plain file never share one.
pub fn etag(len: u64, modified: SystemTime, encoding: Option<&str>) -> String {
    let nanos = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match encoding {
        Some(e) => format!("\"{len:x}-{nanos:x}-{e}\""),
        None => format!("\"{len:x}-{nanos:x}\""),
    }
}

/// Whether the client's copy is current (RFC 9110 §13.2.2): `If-None-Match`
/// decides when present (weak comparison, `*` matches), else
/// `If-Modified-Since` (second resolution).
pub fn not_modified(
    if_none_match: Option<&str>,
    if_modified_since: Option<&str>,
    etag: &str,
    modified: SystemTime,
) -> bool {
    if let Some(inm) = if_none_match {
        let ours = opaque(etag);
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || opaque(t) == ours);
    }
    match if_modified_since.and_then(|d| httpdate::parse_http_date(d).ok()) {
        Some(since) => seconds(modified) <= seconds(since),
        None => false,
    }
}

/// Whether a `Range` applies under `If-Range` (RFC 9110 §13.1.5): absent,
/// or a strong match of the entity tag, or exactly the `Last-Modified` date.
pub fn range_applies(if_range: Option<&str>, etag: &str, modified: SystemTime) -> bool {
    match if_range.map(str::trim) {
        None => true,
        Some(v) if v.starts_with('"') => v == etag,
        Some(v) if v.starts_with("W/") => false,
        Some(v) => httpdate::parse_http_date(v).is_ok_and(|d| seconds(d) == seconds(modified)),
    }
}

/// `Cache-Control` by file name: a name with a content hash
/// (`index-BXk3Qw9a.js`, what Vite and webpack emit) never changes, so it
/// is cached for a year without revalidation; everything else (`index.html`
/// above all, which names the hashed files) is revalidated every time.
pub fn cache_control(file_name: &str) -> &'static str {
    if has_content_hash(file_name) {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    }
}

/// `name-<hash>.ext` or `name.<hash>.ext`. Two shapes: Vite/Rollup's 8
/// characters of base64url (which may hold `-` and `_`: `index-C-1Rz6Ep.js`)
/// right after the name's last separator, or a longer `[A-Za-z0-9_]` run
/// (webpack's hex). Either with a digit or both cases in it, so
/// `index-settings.js` is not taken for one. HTML is never immutable.
fn has_content_hash(file_name: &str) -> bool {
    let Some((stem, ext)) = file_name.rsplit_once('.') else {
        return false;
    };
    if ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm") {
        return false;
    }
    let hashy = |h: &[u8], extra: &[u8]| {
        h.iter()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
            && (h.iter().any(u8::is_ascii_digit)
                || (h.iter().any(u8::is_ascii_uppercase) && h.iter().any(u8::is_ascii_lowercase)))
    };
    let b = stem.as_bytes();
    // Vite: exactly 8 base64url characters after a `-` or `.`.
    if b.len() > 9 && matches!(b[b.len() - 9], b'-' | b'.') && hashy(&b[b.len() - 8..], b"-_") {
        return true;
    }
    let Some(hash) = stem
        .rsplit(['-', '.'])
        .next()
        .filter(|h| h.len() < stem.len())
    else {
        return false;
    };
    hash.len() >= 8 && hashy(hash.as_bytes(), b"_")
}

/// An entity tag without its weakness mark, for the weak comparison.
fn opaque(tag: &str) -> &str {
    tag.strip_prefix("W/").unwrap_or(tag)
}

fn seconds(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn etags_differ_by_representation_and_change() {
        let a = etag(10, t(1_700_000_000), None);
        assert_ne!(a, etag(10, t(1_700_000_000), Some("br")));
        assert_ne!(a, etag(11, t(1_700_000_000), None));
        assert_ne!(a, etag(10, t(1_700_000_001), None));
        assert!(a.starts_with('"') && a.ends_with('"'));
    }

    #[test]
    fn conditional_get() {
        let m = t(1_700_000_000);
        let tag = etag(10, m, None);
        assert!(not_modified(Some(&tag), None, &tag, m));
        assert!(not_modified(
            Some(&format!("\"x\", W/{tag}")),
            None,
            &tag,
            m
        ));
        assert!(not_modified(Some("*"), None, &tag, m));
        assert!(!not_modified(Some("\"other\""), None, &tag, m));
        let date = httpdate::fmt_http_date(m);
        assert!(not_modified(None, Some(&date), &tag, m));
        assert!(!not_modified(
            None,
            Some(&httpdate::fmt_http_date(t(1_600_000_000))),
            &tag,
            m
        ));
        // If-None-Match wins over a matching date.
        assert!(!not_modified(Some("\"other\""), Some(&date), &tag, m));
        assert!(!not_modified(None, Some("yesterday"), &tag, m));
    }

    #[test]
    fn dates_out_of_range_do_not_panic() {
        let epoch = "Thu, 01 Jan 1970 00:00:00 GMT";
        assert_eq!(last_modified(UNIX_EPOCH - Duration::from_secs(10)), epoch);
        assert_eq!(last_modified(t(300_000_000_000)), epoch);
        assert_eq!(
            last_modified(t(1_700_000_000)),
            httpdate::fmt_http_date(t(1_700_000_000))
        );
    }

    #[test]
    fn if_range() {
        let m = t(1_700_000_000);
        let tag = etag(10, m, None);
        assert!(range_applies(None, &tag, m));
        assert!(range_applies(Some(&tag), &tag, m));
        assert!(!range_applies(Some("\"stale\""), &tag, m));
        assert!(!range_applies(Some(&format!("W/{tag}")), &tag, m));
        assert!(range_applies(Some(&httpdate::fmt_http_date(m)), &tag, m));
        assert!(!range_applies(
            Some(&httpdate::fmt_http_date(t(1))),
            &tag,
            m
        ));
    }

    #[test]
    fn hashed_names_are_immutable() {
        for name in [
            "index-BXk3Qw9a.js",
            "vendor.3f9a1c2e.css",
            "logo-a1b2c3d4.svg",
            "chunk-DiwrgTda.js",
            "index-C-1Rz6Ep.js",
            "vendor-react-_x9Qk2Lm.js",
            "main.3f9a1c2e5b7d4a60.js",
        ] {
            assert_eq!(
                cache_control(name),
                "public, max-age=31536000, immutable",
                "{name}"
            );
        }
        for name in [
            "index.html",
            "app-BXk3Qw9a.html",
            "favicon.ico",
            "index-settings.js",
            "robots.txt",
            "noext",
        ] {
            assert_eq!(cache_control(name), "no-cache", "{name}");
        }
    }
}
