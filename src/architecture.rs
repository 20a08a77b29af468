//! The architecture test: dependencies between the crate's top-level
//! modules run one way, downwards through the layers of DESIGN.md. It reads
//! every `crate::<module>` path in `src/` and fails on one that points up or
//! sideways, naming the file and line. The table below is also the list of
//! what each module may use (README, Layout).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The layers, bottom first. A module may use any module of a lower layer.
const LAYERS: &[&[&str]] = &[
    // Leaves: the vocabulary everything shares.
    &[
        "config",
        "clock",
        "identity",
        "telemetry",
        "watched_file",
        "private_file",
        "watch",
        "reply",
        "redis_link",
    ],
    // Who is asking and how much: client IP, backoff, rate rules, caps.
    &["limit"],
    // Concerns: each may use the layers below, none another concern.
    &["admin", "auth", "console", "hub", "static_files", "tls"],
    // The Pingora service.
    &["edge"],
    // Assembly (and the one-off copy between storage backends).
    &["server", "migrate"],
    // The fuzz harnesses, which drive every layer (assembly's checks too).
    &["fuzzing"],
];

/// Uses inside one layer that are allowed: leaves built on other leaves.
const WITHIN: &[(&str, &str)] = &[
    ("watch", "identity"),
    ("reply", "watch"),
    ("redis_link", "config"),
];

/// Modules not in the table (the test's own file).
const EXEMPT: &[&str] = &["architecture"];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Whether `from` may use `to`.
pub fn allowed(from: &str, to: &str) -> bool {
    if from == to || WITHIN.contains(&(from, to)) {
        return true;
    }
    match (layer(from), layer(to)) {
        (Some(a), Some(b)) => b < a,
        _ => false,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file of `src/`: `config/validate/routes.rs` is
/// `[config, validate, routes]`, `config/validate/mod.rs` is `[config,
/// validate]`; empty for `lib.rs` and `main.rs`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let Ok(rel) = file.strip_prefix(src) else {
        return Vec::new();
    };
    let mut parts: Vec<String> = rel
        .components()
        .filter_map(|c| c.as_os_str().to_str())
        .map(|c| c.trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|l| l == "mod") || parts == ["lib"] || parts == ["main"] {
        parts.pop();
    }
    parts
}

/// The leading identifier of `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segments named right after a path prefix: `x` in `x::y`, or
/// each of `a`, `b` in `{a::y, b}`.
fn heads(rest: &str) -> Vec<String> {
    let Some(group) = rest.strip_prefix('{') else {
        return vec![ident(rest).to_string()];
    };
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                out.push(ident(&group[i..]).to_string());
                start = false;
            }
            _ => {}
        }
    }
    out
}

/// Every top-level module a line of code names through `crate::` or through
/// `super::` chains that climb to the crate root (comments skipped), from a
/// file at `path`. Names that are not modules are left to the caller.
fn uses(path: &[String], text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            out.extend(heads(rest).into_iter().map(|h| (n + 1, h)));
        }
        let mut rest = code;
        while let Some(at) = rest.find("super::") {
            let before = &rest[..at];
            if before.ends_with("::") {
                // Part of a chain already counted.
                rest = &rest[at + "super::".len()..];
                continue;
            }
            let mut climb = 0;
            rest = &rest[at..];
            while let Some(r) = rest.strip_prefix("super::") {
                climb += 1;
                rest = r;
            }
            if climb == path.len() {
                out.extend(heads(rest).into_iter().map(|h| (n + 1, h)));
            }
        }
    }
    out
}

#[test]
fn dependencies_run_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|f| module_path(&src, f).into_iter().next())
        .collect();
    let mut wrong = Vec::new();
    for file in &files {
        let path = module_path(&src, file);
        let Some(from) = path.first().cloned() else {
            continue;
        };
        if EXEMPT.contains(&from.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (line, to) in uses(&path, &text) {
            if modules.contains(&to) && !allowed(&from, &to) {
                wrong.push(format!(
                    "{}:{line}: {from} uses crate::{to}",
                    file.strip_prefix(&src).unwrap_or(file).display()
                ));
            }
        }
    }
    for m in &modules {
        assert!(
            EXEMPT.contains(&m.as_str()) || layer(m).is_some(),
            "src/{m} is in no layer: add it to LAYERS in src/architecture.rs"
        );
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers (DESIGN.md, Layout):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_import() {
    assert!(allowed("edge", "auth"));
    assert!(allowed("auth", "reply"));
    assert!(!allowed("auth", "edge"), "a concern must not use the edge");
    assert!(!allowed("hub", "auth"), "concerns must not use each other");
    assert!(!allowed("reply", "hub"), "leaves use nothing above them");
    assert!(!allowed("identity", "reply"));
    let names = |path: &[&str], text: &str| -> Vec<String> {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        uses(&path, text).into_iter().map(|(_, m)| m).collect()
    };
    // Made-up module names, so this file names no real module itself.
    assert_eq!(
        names(
            &["lower"],
            "use crate::upper::Thing; // crate::other in a comment\nlet x = crate::side::y::Z;"
        ),
        ["upper", "side"]
    );
    assert_eq!(
        names(
            &["lower", "api"],
            "use crate::{upper::Thing, side::{A, b}};"
        ),
        ["upper", "side"]
    );
    // `super::` that climbs to the crate root names a top-level module.
    assert_eq!(names(&["lower"], "use super::upper::Thing;"), ["upper"]);
    assert_eq!(
        names(&["lower", "sse"], "use super::super::upper::Thing;"),
        ["upper"]
    );
    assert!(names(&["lower", "sse"], "use super::sibling::Thing;").is_empty());
}
