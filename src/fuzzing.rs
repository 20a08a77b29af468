//! Fuzz harnesses: the bodies of the `cargo fuzz` targets in `fuzz/`, kept
//! in the library so the saved corpus (`fuzz/corpus/<target>/`) is replayed by
//! the ordinary test suite on stable Rust. Each harness feeds arbitrary bytes
//! to one parser of untrusted input and checks what must always hold; a
//! violated property panics, which is what the fuzzer reports.

use crate::auth::redirect::safe_return_path;
use crate::config::{self, HandlerKind};
use crate::edge::path::normalize;
use crate::edge::request::{Decision, Policy};
use pingora::http::RequestHeader;
use std::path::Path;
use std::sync::OnceLock;

/// A harness: arbitrary bytes in, a panic when a property fails.
pub type Harness = fn(&[u8]);

/// The targets, by the name of their corpus folder and fuzz target.
pub const TARGETS: &[(&str, Harness)] = &[
    ("path", path),
    ("return_path", return_path),
    ("decide", decide),
    ("config", config),
];

/// The path normaliser: an accepted path is canonical (absolute, no empty,
/// `.` or `..` segments, no backslash, control character or encoded
/// separator) and normalising it again changes nothing.
pub fn path(data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = normalize(raw, raw.len(), 8192) else {
        return;
    };
    assert!(p.starts_with('/'), "{raw:?} -> {p:?}");
    assert!(!p.contains("//"), "{raw:?} -> {p:?}");
    assert!(!p.contains('\\'), "{raw:?} -> {p:?}");
    assert!(!p.bytes().any(|b| b.is_ascii_control()), "{raw:?} -> {p:?}");
    for seg in p.split('/').skip(1) {
        assert!(seg != "." && seg != "..", "{raw:?} -> {p:?}");
        let upper = seg.to_ascii_uppercase();
        assert!(
            !upper.contains("%2F") && !upper.contains("%5C") && !upper.contains("%2E"),
            "{raw:?} -> {p:?}"
        );
    }
    assert_eq!(
        normalize(&p, p.len(), 8192).as_deref(),
        Ok(p.as_str()),
        "not idempotent for {raw:?}"
    );
}

/// The login's return-path check: an accepted value is a same-origin path
/// that no browser reads as another origin.
pub fn return_path(data: &[u8]) {
    let Ok(rd) = std::str::from_utf8(data) else {
        return;
    };
    let Some(p) = safe_return_path(rd) else {
        return;
    };
    assert_eq!(p, rd);
    assert!(p.starts_with('/'), "{rd:?}");
    // What a browser does first (strip tabs and newlines, read `\` as `/`),
    // after one decoding by whatever serves the path: no second leading slash.
    let decoded = percent_decode_once(p);
    let browser: String = decoded
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .map(|c| if c == '\\' { '/' } else { c })
        .collect();
    assert!(!browser.starts_with("//"), "{rd:?} reads as {browser:?}");
    assert!(!p.bytes().any(|b| b.is_ascii_control()), "{rd:?}");
}

/// Percent-decodes once, as a server behind the redirect might.
fn percent_decode_once(s: &str) -> String {
    form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn shipped_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(config::DEFAULT_PATH);
        match config::load_with_env(&path, Vec::new()) {
            Ok(c) => Policy::new(&c),
            Err(e) => panic!("the shipped config does not load: {e}"),
        }
    })
}

/// The request decision on the shipped config, for a request built from
/// the bytes (first line `METHOD TARGET`, then `name: value` lines): it
/// never panics, and what it forwards has a canonical path that the route
/// it matched covers.
pub fn decide(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or("");
    let (method, target) = first.split_once(' ').unwrap_or(("GET", first));
    let Ok(mut req) = RequestHeader::build(method.trim(), target.trim().as_bytes(), None) else {
        return;
    };
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            let _ = req.append_header(k.trim().to_string(), v.trim());
        }
    }
    let policy = shipped_policy();
    for tls in [false, true] {
        let mut facts = policy.facts(&req, Some([203, 0, 113, 5].into()), tls);
        let claims =
            |kind: HandlerKind, p: &str| kind != HandlerKind::Hub || p.starts_with("/api/run/");
        match policy.decide(&req, tls, &mut facts, &claims) {
            Decision::Proxy(fwd) => {
                let path = fwd.target.split('?').next().unwrap_or("");
                assert!(path.starts_with('/'), "{first:?} -> {:?}", fwd.target);
                assert!(
                    !path.split('/').any(|s| s == ".." || s == "."),
                    "{first:?} -> {:?}",
                    fwd.target
                );
                assert!(
                    fwd.route.upstream().is_some(),
                    "proxied on a route without an upstream"
                );
            }
            Decision::Handle(route, _) => {
                assert!(matches!(route.action, config::RouteAction::Handler { .. }));
            }
            Decision::Static(route, rel) => {
                assert!(matches!(route.action, config::RouteAction::Static { .. }));
                assert!(rel.starts_with('/') && !rel.split('/').any(|s| s == ".." || s == "."));
            }
            Decision::Reply(r, _) => assert!((100..600).contains(&r.status)),
        }
    }
}

/// The config loader: any text either loads into a config the edge can be
/// built from, or is refused with problems that name a key.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(Path::new("fuzz.toml"), text, Vec::<(String, String)>::new()) {
        Ok(c) => {
            let _ = Policy::new(&c);
            let _ = crate::server::advice(&c);
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

#[cfg(test)]
mod tests {
    /// Every saved input of every target still holds (the fuzzers' finds
    /// stay fixed).
    #[test]
    fn the_fuzz_corpus_replays_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
        let mut replayed = 0;
        for (name, run) in super::TARGETS {
            let dir = root.join(name);
            let entries =
                std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let file = entry.expect("corpus entry").path();
                let data = std::fs::read(&file).expect("corpus file");
                run(&data);
                replayed += 1;
            }
        }
        assert!(replayed >= 40, "only {replayed} corpus inputs");
    }
}
