//! `[[routes]]`: path matches, kinds, their keys, timeouts and access rules.
//! Which optional key applies to which kind is one table, [`KEYS`], which
//! the README's "applies to" column is checked against.

use super::super::defaults as d;
use super::super::error::Problems;
use super::super::file::RouteSection;
use super::super::model::{
    HandlerKind, PathMatch, Route, RouteAction, RouteAuth, Timeouts, Upstream,
};
use std::collections::{BTreeMap, HashMap};

const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

/// A route's kind as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Proxy,
    Redirect,
    Static,
    Handler(HandlerKind),
}

impl Kind {
    fn parse(name: &str) -> Option<Kind> {
        match name {
            "proxy" => Some(Kind::Proxy),
            "redirect" => Some(Kind::Redirect),
            "static" => Some(Kind::Static),
            other => HandlerKind::ALL
                .into_iter()
                .find(|k| k.name() == other)
                .map(Kind::Handler),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Proxy => "proxy",
            Kind::Redirect => "redirect",
            Kind::Static => "static",
            Kind::Handler(k) => k.name(),
        }
    }
}

const PROXY: Kind = Kind::Proxy;
const REDIRECT: Kind = Kind::Redirect;
const STATIC: Kind = Kind::Static;
const HUB: Kind = Kind::Handler(HandlerKind::Hub);

/// A key that only some kinds take: its name, those kinds, and whether a
/// route section sets it.
struct KeyRule {
    key: &'static str,
    kinds: &'static [Kind],
    set: fn(&RouteSection) -> bool,
}

/// Which optional keys apply to which kinds (every other key applies to all).
/// A key set on a kind it does not apply to is an error naming both.
const KEYS: &[KeyRule] = &[
    KeyRule {
        key: "upstream",
        kinds: &[PROXY],
        set: |r| r.upstream.is_some(),
    },
    KeyRule {
        key: "strip_prefix",
        kinds: &[PROXY],
        set: |r| r.strip_prefix.is_some(),
    },
    KeyRule {
        key: "to",
        kinds: &[REDIRECT],
        set: |r| r.to.is_some(),
    },
    KeyRule {
        key: "status",
        kinds: &[REDIRECT],
        set: |r| r.status.is_some(),
    },
    KeyRule {
        key: "root",
        kinds: &[STATIC],
        set: |r| r.root.is_some(),
    },
    KeyRule {
        key: "spa",
        kinds: &[STATIC],
        set: |r| r.spa.is_some(),
    },
    KeyRule {
        key: "fallback",
        kinds: &[HUB],
        set: |r| r.fallback.is_some(),
    },
    KeyRule {
        key: "stream",
        kinds: &[PROXY, HUB],
        set: |r| r.stream.is_some(),
    },
    KeyRule {
        key: "compress",
        kinds: &[PROXY, HUB],
        set: |r| r.compress.is_some(),
    },
    KeyRule {
        key: "assertion",
        kinds: &[PROXY, HUB],
        set: |r| r.assertion.is_some(),
    },
    KeyRule {
        key: "connect_timeout",
        kinds: &[PROXY, HUB],
        set: |r| r.connect_timeout.is_some(),
    },
    KeyRule {
        key: "read_timeout",
        kinds: &[PROXY, HUB],
        set: |r| r.read_timeout.is_some(),
    },
    KeyRule {
        key: "write_timeout",
        kinds: &[PROXY, HUB],
        set: |r| r.write_timeout.is_some(),
    },
];

pub(super) fn routes(
    raw: Vec<RouteSection>,
    upstreams: &BTreeMap<String, Upstream>,
    p: &mut Problems,
) -> Vec<Route> {
    if raw.is_empty() {
        p.add("routes", "no routes: add at least one [[routes]] entry");
    }
    let mut seen: HashMap<(Option<String>, PathMatch), usize> = HashMap::new();
    let mut out = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let key = format!("routes[{i}]");
        if let Some(route) = route(i, &key, r, upstreams, p) {
            let id = (route.host.clone(), route.path.clone());
            if let Some(first) = seen.get(&id) {
                p.add(
                    &key,
                    format!(
                        "matches the same host and path as routes[{first}] ({})",
                        route.label()
                    ),
                );
                continue;
            }
            seen.insert(id, i);
            out.push(route);
        }
    }
    out
}

fn path_match(key: &str, r: &RouteSection, p: &mut Problems) -> Option<PathMatch> {
    let path = match (&r.prefix, &r.exact) {
        (Some(prefix), None) => PathMatch::Prefix(prefix.clone()),
        (None, Some(exact)) => PathMatch::Exact(exact.clone()),
        (Some(_), Some(_)) => {
            p.add(key, "set either `prefix` or `exact`, not both");
            return None;
        }
        (None, None) => {
            p.add(
                key,
                "missing `prefix` or `exact`: every route matches a path",
            );
            return None;
        }
    };
    if let PathMatch::Prefix(s) | PathMatch::Exact(s) = &path
        && let Err(why) = config_path(s)
    {
        let which = if r.prefix.is_some() {
            "prefix"
        } else {
            "exact"
        };
        p.add(format!("{key}.{which}"), why);
    }
    Some(path)
}

fn host(key: &str, r: &RouteSection, p: &mut Problems) -> Option<String> {
    let host = r.host.as_deref().map(|h| h.to_ascii_lowercase());
    if let Some(h) = &host
        && (h.is_empty()
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
    {
        p.add(
            format!("{key}.host"),
            format!("{h:?} is not a host name (no port, no scheme)"),
        );
    }
    host
}

fn route(
    index: usize,
    key: &str,
    r: RouteSection,
    upstreams: &BTreeMap<String, Upstream>,
    p: &mut Problems,
) -> Option<Route> {
    let before = p.len();
    let path = path_match(key, &r, p);
    let host = host(key, &r, p);
    let kind_name = r.kind.clone().unwrap_or_else(|| {
        if r.to.is_some() {
            "redirect".into()
        } else {
            "proxy".into()
        }
    });
    let kind = Kind::parse(&kind_name);
    let action = match kind {
        Some(kind) => {
            for rule in KEYS {
                if (rule.set)(&r) && !rule.kinds.contains(&kind) {
                    p.add(
                        format!("{key}.{}", rule.key),
                        format!("does not apply to kind = {:?}", kind.name()),
                    );
                }
            }
            action(key, kind, &r, upstreams, p)
        }
        None => {
            let names: Vec<&str> = [PROXY, REDIRECT, STATIC]
                .into_iter()
                .chain(HandlerKind::ALL.into_iter().map(Kind::Handler))
                .map(Kind::name)
                .collect();
            p.add(
                format!("{key}.kind"),
                format!("unknown kind {kind_name:?} (one of: {})", names.join(", ")),
            );
            None
        }
    };
    let stream = r.stream.unwrap_or(false);
    let timeouts = Timeouts {
        connect: r.connect_timeout.unwrap_or(d::CONNECT_TIMEOUT),
        read: r.read_timeout.unwrap_or(if stream {
            d::STREAM_READ_TIMEOUT
        } else {
            d::READ_TIMEOUT
        }),
        write: r.write_timeout.unwrap_or(d::WRITE_TIMEOUT),
    };
    for (field, t) in [
        ("connect_timeout", timeouts.connect),
        ("read_timeout", timeouts.read),
        ("write_timeout", timeouts.write),
    ] {
        if t.is_zero() {
            p.add(format!("{key}.{field}"), "must be longer than zero");
        }
    }
    if let Some(csp) = &r.csp
        && http::HeaderValue::from_str(csp).is_err()
    {
        p.add(
            format!("{key}.csp"),
            "is not a valid header value (no newlines or control characters)",
        );
    }
    if r.compress == Some(true) && stream {
        p.add(
            format!("{key}.compress"),
            "cannot go with stream = true: a compressor holds back what a streamed answer sends until its buffer fills",
        );
    }
    let auth = route_auth(key, &r, action.as_ref(), &kind_name, p);
    if r.assertion.is_some() && auth != RouteAuth::Session {
        p.add(
            format!("{key}.assertion"),
            "applies to auth = \"session\" routes only: an open route has nobody to assert",
        );
    }
    if p.len() != before {
        return None;
    }
    Some(Route {
        index,
        host,
        path: path?,
        action: action?,
        timeouts,
        stream,
        csp: r.csp,
        max_body_bytes: r.max_body_bytes,
        compress: r.compress.unwrap_or(false),
        assertion: r.assertion.unwrap_or(true),
        auth,
    })
}

/// What a route of `kind` does, from its kind's own keys.
fn action(
    key: &str,
    kind: Kind,
    r: &RouteSection,
    upstreams: &BTreeMap<String, Upstream>,
    p: &mut Problems,
) -> Option<RouteAction> {
    let check_upstream = |field: &str, name: &str, p: &mut Problems| {
        if !upstreams.contains_key(name) {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            p.add(
                format!("{key}.{field}"),
                format!("no upstream named {name:?} (defined: {})", known.join(", ")),
            );
        }
    };
    match kind {
        Kind::Proxy => {
            let strip = r.strip_prefix.unwrap_or(false);
            if strip && r.exact.is_some() {
                p.add(
                    format!("{key}.strip_prefix"),
                    "needs a `prefix` route, not `exact`",
                );
            }
            let Some(u) = &r.upstream else {
                p.add(key, "kind = \"proxy\" needs `upstream`");
                return None;
            };
            check_upstream("upstream", u, p);
            Some(RouteAction::Proxy {
                upstream: u.clone(),
                strip_prefix: strip,
            })
        }
        Kind::Redirect => {
            let status = r.status.unwrap_or(d::REDIRECT_STATUS);
            if !REDIRECT_STATUSES.contains(&status) {
                p.add(
                    format!("{key}.status"),
                    format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
                );
            }
            match &r.to {
                Some(to)
                    if to.starts_with('/') && !to.starts_with("//")
                        || to.starts_with("https://")
                        || to.starts_with("http://") =>
                {
                    if to.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                        p.add(format!("{key}.to"), "contains spaces or control characters");
                    }
                    Some(RouteAction::Redirect {
                        to: to.clone(),
                        status,
                    })
                }
                Some(to) => {
                    p.add(
                        format!("{key}.to"),
                        format!("{to:?} must be a path starting with '/' or an http(s):// URL"),
                    );
                    None
                }
                None => {
                    p.add(key, "kind = \"redirect\" needs `to`");
                    None
                }
            }
        }
        Kind::Static => {
            let Some(root) = &r.root else {
                p.add(
                    key,
                    "kind = \"static\" needs `root` (the directory to serve)",
                );
                return None;
            };
            match std::fs::metadata(root) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => p.add(
                    format!("{key}.root"),
                    format!("{} is not a directory", root.display()),
                ),
                Err(e) => p.add(format!("{key}.root"), format!("{}: {e}", root.display())),
            }
            Some(RouteAction::Static {
                root: root.clone(),
                spa: r.spa.unwrap_or(true),
            })
        }
        Kind::Handler(kind) => {
            if let Some(f) = &r.fallback {
                check_upstream("fallback", f, p);
            }
            Some(RouteAction::Handler {
                kind,
                fallback: r.fallback.clone(),
            })
        }
    }
}

/// How the route is authenticated: `none`, `session`, or `token` (only
/// where the handler checks tokens).
fn route_auth(
    key: &str,
    r: &RouteSection,
    action: Option<&RouteAction>,
    kind_name: &str,
    p: &mut Problems,
) -> RouteAuth {
    match r.auth.as_deref() {
        None | Some("none") => RouteAuth::None,
        Some("session") => RouteAuth::Session,
        Some("token") => {
            let takes =
                matches!(action, Some(RouteAction::Handler { kind, .. }) if kind.takes_tokens());
            if !takes && action.is_some() {
                p.add(
                    format!("{key}.auth"),
                    format!(
                        "\"token\" needs a route whose handler checks tokens (kind = \"hub\"), not kind = {kind_name:?}"
                    ),
                );
            }
            if r.fallback.is_some() {
                // The token would stand in for a session on the upstream too,
                // and go there in `Authorization`.
                p.add(
                    format!("{key}.fallback"),
                    "cannot go with auth = \"token\": a token route answers in-process only",
                );
            }
            RouteAuth::Token
        }
        Some(other) => {
            p.add(
                format!("{key}.auth"),
                format!("{other:?} is not \"session\", \"token\" or \"none\""),
            );
            RouteAuth::None
        }
    }
}

/// A route path must already be in the form the normaliser produces.
fn config_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("{s:?} must start with '/'"));
    }
    if s.contains("//") || s.split('/').any(|seg| seg == "." || seg == "..") {
        return Err(format!("{s:?} has an empty, '.' or '..' segment"));
    }
    if s.bytes().any(|b| {
        b.is_ascii_control() || b == b'%' || b == b'?' || b == b'#' || b == b' ' || b == b'\\'
    }) {
        return Err(format!(
            "{s:?} has characters a normalised path never has (%, ?, #, space, \\, controls)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths() {
        assert!(config_path("/studio/").is_ok());
        assert!(config_path("studio").is_err());
        assert!(config_path("/a//b").is_err());
        assert!(config_path("/a/../b").is_err());
        assert!(config_path("/a%2fb").is_err());
    }

    /// The README's `[[routes]]` table says which kinds each key applies to;
    /// it must say what [`KEYS`] enforces.
    #[test]
    fn the_readme_says_which_keys_apply_to_which_kind() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let start = readme.find("### `[[routes]]`").expect("routes section");
        let section = &readme[start..];
        let section = &section[..section[4..].find("\n## ").map_or(section.len(), |i| i + 4)];
        for rule in KEYS {
            let row = section
                .lines()
                .find(|l| {
                    l.starts_with('|')
                        && l.split('|')
                            .nth(1)
                            .is_some_and(|c| c.split('`').any(|k| k == rule.key))
                })
                .unwrap_or_else(|| panic!("README has no [[routes]] row for {}", rule.key));
            let applies = row.split('|').nth(2).unwrap_or("").trim();
            let mut documented: Vec<&str> = applies.split(',').map(str::trim).collect();
            documented.sort_unstable();
            let mut enforced: Vec<&str> = rule.kinds.iter().map(|k| k.name()).collect();
            enforced.sort_unstable();
            assert_eq!(documented, enforced, "README row for {}: {row}", rule.key);
        }
    }
}
