//! The login's return path (`rd`): accepted only when it is a same-origin
//! relative path, so the login page cannot be turned into an open redirect.

/// Returns `rd` if it is a safe same-origin path (`/studio/x?y=1`), else `None`.
/// Refused: anything not starting with one `/` (`//evil`, `/\evil`,
/// `https://evil`, `evil`), backslashes, control characters (raw or
/// percent-encoded: `/%09/evil` is read as `//evil` by browsers), and an
/// encoded slash or backslash right after the first one.
pub fn safe_return_path(rd: &str) -> Option<&str> {
    if rd.len() > 2048 || !rd.starts_with('/') {
        return None;
    }
    let bytes = rd.as_bytes();
    if bytes
        .iter()
        .any(|b| b.is_ascii_control() || *b == b'\\' || *b == b' ')
    {
        return None;
    }
    let decoded: Vec<u8> = percent_decode(bytes);
    if decoded.iter().any(|b| b.is_ascii_control() || *b == b'\\') {
        return None;
    }
    match decoded.get(1) {
        Some(b'/') => None,
        _ => Some(rd),
    }
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && let (Some(h), Some(l)) = (
                s.get(i + 1).copied().and_then(hex),
                s.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_same_origin_paths() {
        for ok in [
            "/",
            "/studio/",
            "/studio/workspace/a?tab=1#x",
            "/api/agents",
            "/a%20b",
        ] {
            assert_eq!(safe_return_path(ok), Some(ok), "{ok}");
        }
    }

    #[test]
    fn refuses_open_redirects() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "/%5Cevil.example",
            "/%2Fevil.example",
            "/%2f%2fevil",
            "/%09/evil.example",
            "/\t/evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            "/x\r\nSet-Cookie: a=b",
            "/x%0d%0aSet-Cookie:%20a=b",
            "/a\\b",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }
}
