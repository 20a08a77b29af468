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
        "watch",
        "reply",
    ],
    // Who is asking and how much: client IP, backoff, rate rules, caps.
    &["limit"],
    // Concerns: each may use the layers below, none another concern.
    &["auth", "hub", "tls"],
    // The Pingora service.
    &["edge"],
    // Assembly.
    &["server"],
];

/// Uses inside one layer that are allowed: leaves built on other leaves.
const WITHIN: &[(&str, &str)] = &[
    ("watch", "identity"),
    ("reply", "identity"),
    ("reply", "watch"),
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

/// The top-level module a file of `src/` belongs to (`None`: lib.rs, main.rs).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.trim_end_matches(".rs").to_string()),
    }
}

/// Every `crate::<name>` a line of code refers to (comments skipped).
fn uses(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push((n + 1, name));
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
    let mut modules = BTreeSet::new();
    let mut wrong = Vec::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        modules.insert(from.clone());
        if EXEMPT.contains(&from.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read");
        for (line, to) in uses(&text) {
            if !allowed(&from, &to) {
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
    assert_eq!(
        uses(
            "use crate::edge::Edge; // crate::hub in a comment\nlet x = crate::auth::cookies::SESSION;"
        ),
        vec![(1, "edge".to_string()), (2, "auth".to_string())]
    );
}
