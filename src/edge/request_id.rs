//! Request ids: one per request, logged in the access line and passed
//! upstream as `X-Request-Id`, so one request can be followed through the
//! edge's log and the app's. An incoming id is kept only from a trusted proxy
//! (its own id then spans both hops); from anyone else it could be chosen to
//! collide with or impersonate another request's, so a new one is made.

use pingora::http::RequestHeader;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The header, as nginx's `$request_id` is commonly passed.
pub const HEADER: &str = "x-request-id";

/// Longest incoming id kept.
const MAX_LEN: usize = 128;

/// Whether `id` is safe to log and forward as it is.
fn acceptable(id: &str) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new id: a random per-process prefix and a counter, 24 hex digits.
/// Unique within the process and across processes (the prefix), and cheap:
/// no system call per request, unlike a random UUID.
pub fn generate() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without randomness the time still tells processes apart.
        if getrandom::fill(&mut b).is_err() {
            b = (crate::clock::now_ms() as u64).to_le_bytes();
        }
        u64::from_le_bytes(b)
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 24];
    let digits = (u128::from(prefix) << 32) | u128::from(n as u32);
    for (i, d) in out.iter_mut().enumerate() {
        *d = HEX[((digits >> (4 * (23 - i))) & 0xf) as usize];
    }
    // Hex digits are ASCII.
    String::from_utf8_lossy(&out).into_owned()
}

/// The request's id: a trusted proxy's, when it sent one that is safe, else new.
pub fn of(req: &RequestHeader, peer_trusted: bool) -> String {
    if peer_trusted {
        let sent = req.headers.get_all(HEADER);
        let mut values = sent.iter();
        if let (Some(v), None) = (values.next(), values.next())
            && let Ok(id) = v.to_str()
            && acceptable(id)
        {
            return id.to_string();
        }
    }
    generate()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(ids: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for id in ids {
            r.append_header(HEADER, *id).unwrap();
        }
        r
    }

    #[test]
    fn only_a_trusted_proxys_safe_id_is_kept() {
        assert_eq!(of(&req(&["abc-123"]), true), "abc-123");
        let fresh = |id: String| id.len() == 24 && id.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(
            fresh(of(&req(&["abc-123"]), false)),
            "an untrusted client's id kept"
        );
        let long = "x".repeat(129);
        for bad in [
            &[][..],
            &["a b"],
            &["x\"y"],
            &["one", "two"],
            &[long.as_str()],
        ] {
            assert!(fresh(of(&req(bad), true)), "{bad:?}");
        }
    }

    #[test]
    fn generated_ids_are_the_prefix_then_the_counter_in_hex() {
        let a = generate();
        let b = generate();
        let n = |s: &str| u32::from_str_radix(&s[16..], 16).unwrap();
        assert!(n(&b) > n(&a), "{a} {b}");
        assert!(u64::from_str_radix(&a[..16], 16).is_ok());
    }

    #[test]
    fn generated_ids_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a[..16], b[..16], "one prefix per process");
    }
}
