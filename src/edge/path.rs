//! Request-target normalisation: one canonical path that routing, auth and the
//! upstream all see, so no encoding trick can match one route and reach another.

use std::fmt;

/// Why a request target was refused; each maps to a 4xx with this text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Longer than `server.max_request_target` (414).
    TooLong,
    /// Not origin-form (`/...`), or a bad `%` escape (400).
    Malformed,
    /// `%2F` or `%5C`, or a raw backslash: a separator hidden from routing (400).
    EncodedSeparator,
    /// A `.` or `..` segment, raw or encoded (400).
    DotSegment,
    /// NUL or another control character, raw or encoded (400).
    ControlChar,
}

impl PathError {
    /// The status this error answers with.
    pub fn status(self) -> u16 {
        match self {
            PathError::TooLong => 414,
            _ => 400,
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::TooLong => "request target too long",
            PathError::Malformed => "malformed request path",
            PathError::EncodedSeparator => "encoded or backslash path separator",
            PathError::DotSegment => "dot segment in path",
            PathError::ControlChar => "control character in path",
        })
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Normalises a raw path (without query): `%XX` of unreserved characters decoded,
/// other escapes upper-cased, runs of `/` merged; refuses dot segments, encoded
/// separators and control characters. `max_len` bounds the whole target.
pub fn normalize(raw: &str, target_len: usize, max_len: usize) -> Result<String, PathError> {
    if target_len > max_len {
        return Err(PathError::TooLong);
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::Malformed);
    }
    let mut out = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::Malformed);
                };
                let d = hi << 4 | lo;
                if d == b'/' || d == b'\\' {
                    return Err(PathError::EncodedSeparator);
                }
                if d.is_ascii_control() {
                    return Err(PathError::ControlChar);
                }
                if unreserved(d) {
                    out.push(d as char);
                } else {
                    out.push('%');
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                    out.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(PathError::EncodedSeparator),
            b'/' if out.ends_with('/') => {}
            _ if b.is_ascii_control() => return Err(PathError::ControlChar),
            // Non-ASCII bytes arrive only inside a valid &str; keep them whole.
            _ if b >= 0x80 => {
                let ch_len = raw[i..].chars().next().map_or(1, char::len_utf8);
                out.push_str(&raw[i..i + ch_len]);
                i += ch_len;
                continue;
            }
            _ => out.push(b as char),
        }
        i += 1;
    }
    if out.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(PathError::DotSegment);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(p: &str) -> Result<String, PathError> {
        normalize(p, p.len(), 8192)
    }

    #[test]
    fn keeps_ordinary_paths() {
        assert_eq!(n("/").unwrap(), "/");
        assert_eq!(n("/studio/workspace/abc").unwrap(), "/studio/workspace/abc");
        assert_eq!(n("/a%20b").unwrap(), "/a%20b");
        assert_eq!(n("/a%3fb").unwrap(), "/a%3Fb");
        assert_eq!(n("/caf\u{e9}").unwrap(), "/caf\u{e9}");
    }

    #[test]
    fn decodes_unreserved_and_merges_slashes() {
        assert_eq!(n("/%61pi/run").unwrap(), "/api/run");
        assert_eq!(n("//api///run/").unwrap(), "/api/run/");
    }

    #[test]
    fn refuses_tricks() {
        assert_eq!(n("/auth/../api/run/x"), Err(PathError::DotSegment));
        assert_eq!(n("/auth/%2e%2e/api"), Err(PathError::DotSegment));
        assert_eq!(n("/auth/.%2E/api"), Err(PathError::DotSegment));
        assert_eq!(n("/./api"), Err(PathError::DotSegment));
        assert_eq!(n("/api/.."), Err(PathError::DotSegment));
        assert_eq!(n("/auth%2F..%2Fapi"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%5cb"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a\\b"), Err(PathError::EncodedSeparator));
        assert_eq!(n("/a%00b"), Err(PathError::ControlChar));
        assert_eq!(n("/a%0d%0ab"), Err(PathError::ControlChar));
        assert_eq!(n("/a%zz"), Err(PathError::Malformed));
        assert_eq!(n("/a%2"), Err(PathError::Malformed));
        assert_eq!(n("api"), Err(PathError::Malformed));
        assert_eq!(n("*"), Err(PathError::Malformed));
    }

    #[test]
    fn dots_inside_names_are_fine() {
        assert_eq!(
            n("/a..b/.well-known/x.js").unwrap(),
            "/a..b/.well-known/x.js"
        );
    }

    #[test]
    fn too_long() {
        assert_eq!(normalize("/a", 9000, 8192), Err(PathError::TooLong));
        assert_eq!(PathError::TooLong.status(), 414);
    }
}
