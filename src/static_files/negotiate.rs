//! Which stored representation of a file to send: the `.br` or `.gz`
//! sibling a build wrote beside it (like nginx `gzip_static`/`brotli_static`),
//! chosen by the client's `Accept-Encoding` with its q-values.

/// A precompressed representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `.br`, `Content-Encoding: br`.
    Brotli,
    /// `.gz`, `Content-Encoding: gzip`.
    Gzip,
}

impl Encoding {
    /// The sibling file's suffix.
    pub fn suffix(self) -> &'static str {
        match self {
            Encoding::Brotli => ".br",
            Encoding::Gzip => ".gz",
        }
    }

    /// The `Content-Encoding` value.
    pub fn token(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
        }
    }
}

/// The encodings the client accepts, best first: by q-value, brotli before
/// gzip at equal q (smaller). `q=0` refuses one; `*` stands for any not
/// named. Identity is always acceptable as the last resort, so it is not listed.
pub fn preferred(accept_encoding: Option<&str>) -> Vec<Encoding> {
    let Some(header) = accept_encoding else {
        return Vec::new();
    };
    let q_of = |want: &str| -> Option<u16> {
        let mut star = None;
        for item in header.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .or_else(|| p.trim().strip_prefix("Q="))
                })
                .find_map(qvalue)
                .unwrap_or(1000);
            if coding.eq_ignore_ascii_case(want) {
                return Some(q);
            }
            if coding == "*" {
                star = Some(q);
            }
        }
        star
    };
    let mut out: Vec<(u16, Encoding)> = [Encoding::Brotli, Encoding::Gzip]
        .into_iter()
        .filter_map(|e| q_of(e.token()).filter(|q| *q > 0).map(|q| (q, e)))
        .collect();
    // Stable: brotli stays ahead of gzip at equal q.
    out.sort_by_key(|(q, _)| std::cmp::Reverse(*q));
    out.into_iter().map(|(_, e)| e).collect()
}

/// A q-value in thousandths (`0.5` → 500); `None` when malformed.
fn qvalue(s: &str) -> Option<u16> {
    let v: f32 = s.trim().parse().ok()?;
    (0.0..=1.0)
        .contains(&v)
        .then(|| (v * 1000.0).round() as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    #[test]
    fn browsers_get_brotli_first() {
        assert_eq!(
            preferred(Some("gzip, deflate, br, zstd")),
            vec![Brotli, Gzip]
        );
        assert_eq!(preferred(Some("gzip")), vec![Gzip]);
        assert_eq!(preferred(None), vec![]);
        assert_eq!(preferred(Some("identity")), vec![]);
    }

    #[test]
    fn q_values_order_and_refuse() {
        assert_eq!(preferred(Some("br;q=0.5, gzip")), vec![Gzip, Brotli]);
        assert_eq!(preferred(Some("br;q=0, gzip;q=0.1")), vec![Gzip]);
        assert_eq!(preferred(Some("*")), vec![Brotli, Gzip]);
        assert_eq!(preferred(Some("*;q=0, gzip")), vec![Gzip]);
        assert_eq!(preferred(Some("BR")), vec![Brotli]);
        // A malformed q counts as absent (q=1), as most servers read it.
        assert_eq!(preferred(Some("gzip;q=lots")), vec![Gzip]);
    }
}
