//! Turns the raw file into the typed model, checking every value and every
//! cross-reference. All problems are collected so one `check` run shows them all.

use super::env::Overrides;
use super::error::Problems;
use super::file::{AuthSection, FileConfig, HubSection, RouteSection, ServerSection, TlsSection};
use super::model::{
    Auth, Config, HandlerKind, Hub, PathMatch, Route, RouteAction, RouteAuth, Server, Timeouts,
    Tls, Upstream,
};
use ipnet::IpNet;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default plain listener, as the nginx container it replaces.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
const DEFAULT_READ: Duration = Duration::from_secs(60);
/// Longer than socket.io's ping interval + timeout (25 s + 20 s), with room for SSE heartbeats.
const DEFAULT_STREAM_READ: Duration = Duration::from_secs(300);
const DEFAULT_WRITE: Duration = Duration::from_secs(60);
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

pub(crate) fn validate(
    source: &Path,
    file: FileConfig,
    env: &Overrides,
    problems: &mut Problems,
) -> Config {
    let upstreams = upstreams(&file, env, problems);
    let server = server(file.server, env, problems);
    let tls = file.tls.map(|t| tls(t, problems));
    if server.redirect_https && tls.is_none() {
        problems.add(
            "server.redirect_https",
            "is true but there is no [tls] listener to redirect to",
        );
    }
    let routes = routes(file.routes, &upstreams, problems);
    let hub = hub(file.hub, &server.data_dir, env, problems);
    let auth = auth(file.auth, &server.data_dir, problems);
    Config {
        source: source.to_path_buf(),
        server,
        tls,
        upstreams,
        routes,
        hub,
        auth,
    }
}

fn server(s: ServerSection, env: &Overrides, p: &mut Problems) -> Server {
    let listen_key = env.label("server.listen");
    let listen = socket_addr(
        s.listen.as_deref().unwrap_or(DEFAULT_LISTEN),
        &listen_key,
        p,
    );
    let public_origin = s.public_origin.and_then(|o| match origin(&o) {
        Ok(o) => Some(o),
        Err(why) => {
            p.add(env.label("server.public_origin"), why);
            None
        }
    });
    let mut trusted = Vec::new();
    for (i, cidr) in s.trusted_proxies.iter().enumerate() {
        match parse_cidr(cidr) {
            Some(net) => trusted.push(net),
            None => p.add(
                format!("server.trusted_proxies[{i}]"),
                format!("{cidr:?} is not an IP address or CIDR (like 10.0.0.0/8)"),
            ),
        }
    }
    let threads = s
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads == 0 || threads > 256 {
        p.add(
            "server.threads",
            format!("{threads} is out of range (1 to 256)"),
        );
    }
    let max_request_target = s.max_request_target.unwrap_or(8192);
    if !(256..=65536).contains(&max_request_target) {
        p.add(
            "server.max_request_target",
            format!("{max_request_target} is out of range (256 to 65536 bytes)"),
        );
    }
    let read_buffer = s.read_buffer.unwrap_or(8192);
    if !(1024..=1024 * 1024).contains(&read_buffer) {
        p.add(
            "server.read_buffer",
            format!("{read_buffer} is out of range (1024 to 1048576 bytes)"),
        );
    }
    let keepalive_timeout = s.keepalive_timeout.unwrap_or(Duration::from_secs(75));
    if keepalive_timeout < Duration::from_secs(1) {
        p.add(
            "server.keepalive_timeout",
            "must be at least 1s (Pingora counts it in whole seconds)",
        );
    }
    Server {
        listen,
        public_origin,
        data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from("data")),
        threads,
        trusted_proxies: trusted,
        redirect_https: s.redirect_https,
        grace_period: s.grace_period.unwrap_or(Duration::from_secs(1)),
        shutdown_timeout: s.shutdown_timeout.unwrap_or(Duration::from_secs(2)),
        keepalive_timeout,
        upgrade_sock: s
            .upgrade_sock
            .unwrap_or_else(|| PathBuf::from("/tmp/esprit-edge-upgrade.sock")),
        pid_file: s
            .pid_file
            .unwrap_or_else(|| PathBuf::from("/tmp/esprit-edge.pid")),
        max_request_target,
        max_body_bytes: s.max_body_bytes.unwrap_or(0),
        read_buffer,
    }
}

fn auth(a: AuthSection, data_dir: &Path, p: &mut Problems) -> Auth {
    let auth = Auth {
        users_file: a.users_file.unwrap_or_else(|| data_dir.join("users.toml")),
        sessions: a
            .sessions
            .unwrap_or_else(|| data_dir.join("sessions.sqlite3")),
        idle_timeout: a.idle_timeout.unwrap_or(Duration::from_secs(2 * 3600)),
        absolute_timeout: a.absolute_timeout.unwrap_or(Duration::from_secs(12 * 3600)),
        login_concurrency: a.login_concurrency.unwrap_or(4),
    };
    if auth.idle_timeout < Duration::from_secs(1) {
        p.add("auth.idle_timeout", "must be at least 1s");
    }
    if auth.absolute_timeout < auth.idle_timeout {
        p.add(
            "auth.absolute_timeout",
            "must not be shorter than auth.idle_timeout",
        );
    }
    if !(1..=64).contains(&auth.login_concurrency) {
        p.add("auth.login_concurrency", "out of range (1 to 64)");
    }
    auth
}

fn hub(h: HubSection, data_dir: &Path, env: &Overrides, p: &mut Problems) -> Hub {
    let events_token = h.events_token.filter(|t| !t.is_empty());
    if let Some(t) = &events_token
        && (t.len() < 16 || t.bytes().any(|b| !b.is_ascii_graphic()))
    {
        p.add(
            env.label("hub.events_token"),
            "must be at least 16 printable characters without spaces (use `openssl rand -hex 32`)",
        );
    }
    let hub = Hub {
        events_token,
        agents_file: h
            .agents_file
            .unwrap_or_else(|| data_dir.join("agents.json")),
        store: h.store.unwrap_or_else(|| data_dir.join("hub.sqlite3")),
        webhook_timeout: h.webhook_timeout.unwrap_or(Duration::from_secs(10)),
        replay_recent: h.replay_recent.unwrap_or(100),
        heartbeat: h.heartbeat.unwrap_or(Duration::from_secs(15)),
        subscriber_queue: h.subscriber_queue.unwrap_or(1024),
        max_event_bytes: h.max_event_bytes.unwrap_or(64 * 1024),
        retention_age: h
            .retention_age
            .unwrap_or(Duration::from_secs(30 * 24 * 3600)),
        retention_per_channel: h.retention_per_channel.unwrap_or(10_000),
    };
    for (key, d) in [
        ("hub.webhook_timeout", hub.webhook_timeout),
        ("hub.heartbeat", hub.heartbeat),
        ("hub.retention_age", hub.retention_age),
    ] {
        if d.is_zero() {
            p.add(key, "must be longer than zero");
        }
    }
    if !(1..=1_000_000).contains(&hub.subscriber_queue) {
        p.add("hub.subscriber_queue", "out of range (1 to 1000000)");
    }
    if !(256..=16 * 1024 * 1024).contains(&hub.max_event_bytes) {
        p.add("hub.max_event_bytes", "out of range (256 bytes to 16 MiB)");
    }
    if hub.retention_per_channel == 0 {
        p.add("hub.retention_per_channel", "must keep at least one event");
    }
    if hub.replay_recent > 10_000 {
        p.add("hub.replay_recent", "out of range (0 to 10000)");
    }
    hub
}

fn tls(t: TlsSection, p: &mut Problems) -> Tls {
    let listen = socket_addr(&t.listen, "tls.listen", p);
    for (key, path) in [("tls.cert", &t.cert), ("tls.key", &t.key)] {
        if let Err(e) = std::fs::File::open(path) {
            p.add(key, format!("cannot read {}: {e}", path.display()));
        }
    }
    Tls {
        listen,
        cert: t.cert,
        key: t.key,
        hsts: t.hsts.unwrap_or(true),
    }
}

fn upstreams(f: &FileConfig, env: &Overrides, p: &mut Problems) -> BTreeMap<String, Upstream> {
    let mut out = BTreeMap::new();
    let mut vars: HashMap<String, &str> = HashMap::new();
    for name in f.upstreams.keys() {
        let var = super::env::upstream_var(name);
        if let Some(other) = vars.insert(var.clone(), name) {
            p.add(
                format!("upstreams.{name}"),
                format!("shares its override variable {var} with upstreams.{other}; rename one"),
            );
        }
    }
    for (name, u) in &f.upstreams {
        let key = format!("upstreams.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            p.add(&key, "upstream names use only a-z, 0-9, '_' and '-'");
            continue;
        }
        match host_port(&u.address) {
            Ok((host, port)) => {
                out.insert(
                    name.clone(),
                    Upstream {
                        name: name.clone(),
                        host,
                        port,
                    },
                );
            }
            Err(why) => p.add(env.label(&format!("{key}.address")), why),
        }
    }
    out
}

fn routes(
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

fn route(
    index: usize,
    key: &str,
    r: RouteSection,
    upstreams: &BTreeMap<String, Upstream>,
    p: &mut Problems,
) -> Option<Route> {
    let before = p.len();
    let path = match (&r.prefix, &r.exact) {
        (Some(prefix), None) => Some(PathMatch::Prefix(prefix.clone())),
        (None, Some(exact)) => Some(PathMatch::Exact(exact.clone())),
        (Some(_), Some(_)) => {
            p.add(key, "set either `prefix` or `exact`, not both");
            None
        }
        (None, None) => {
            p.add(
                key,
                "missing `prefix` or `exact`: every route matches a path",
            );
            None
        }
    };
    if let Some(PathMatch::Prefix(s) | PathMatch::Exact(s)) = &path
        && let Err(why) = config_path(s)
    {
        let which = if r.prefix.is_some() {
            "prefix"
        } else {
            "exact"
        };
        p.add(format!("{key}.{which}"), why);
    }
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
    let kind = r.kind.clone().unwrap_or_else(|| {
        if r.to.is_some() {
            "redirect".into()
        } else {
            "proxy".into()
        }
    });
    let check_upstream = |field: &str, name: &str, p: &mut Problems| {
        if !upstreams.contains_key(name) {
            let known: Vec<&str> = upstreams.keys().map(String::as_str).collect();
            p.add(
                format!("{key}.{field}"),
                format!("no upstream named {name:?} (defined: {})", known.join(", ")),
            );
        }
    };
    let not_for = |field: &str, set: bool, p: &mut Problems| {
        if set {
            p.add(
                format!("{key}.{field}"),
                format!("does not apply to kind = {kind:?}"),
            );
        }
    };
    let action = match kind.as_str() {
        "proxy" => {
            not_for("to", r.to.is_some(), p);
            not_for("status", r.status.is_some(), p);
            not_for("fallback", r.fallback.is_some(), p);
            let strip = r.strip_prefix.unwrap_or(false);
            if strip && r.exact.is_some() {
                p.add(
                    format!("{key}.strip_prefix"),
                    "needs a `prefix` route, not `exact`",
                );
            }
            match &r.upstream {
                Some(u) => {
                    check_upstream("upstream", u, p);
                    Some(RouteAction::Proxy {
                        upstream: u.clone(),
                        strip_prefix: strip,
                    })
                }
                None => {
                    p.add(key, "kind = \"proxy\" needs `upstream`");
                    None
                }
            }
        }
        "redirect" => {
            not_for("upstream", r.upstream.is_some(), p);
            not_for("fallback", r.fallback.is_some(), p);
            not_for("strip_prefix", r.strip_prefix.is_some(), p);
            let status = r.status.unwrap_or(302);
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
        "auth" => {
            for (field, set) in [
                ("upstream", r.upstream.is_some()),
                ("to", r.to.is_some()),
                ("status", r.status.is_some()),
                ("strip_prefix", r.strip_prefix.is_some()),
                ("fallback", r.fallback.is_some()),
            ] {
                not_for(field, set, p);
            }
            Some(RouteAction::Handler {
                kind: HandlerKind::Auth,
                fallback: None,
            })
        }
        "hub" => {
            not_for("upstream", r.upstream.is_some(), p);
            not_for("to", r.to.is_some(), p);
            not_for("status", r.status.is_some(), p);
            not_for("strip_prefix", r.strip_prefix.is_some(), p);
            if let Some(f) = &r.fallback {
                check_upstream("fallback", f, p);
            }
            Some(RouteAction::Handler {
                kind: HandlerKind::Hub,
                fallback: r.fallback.clone(),
            })
        }
        other => {
            p.add(
                format!("{key}.kind"),
                format!("unknown kind {other:?} (one of: proxy, redirect, hub, auth)"),
            );
            None
        }
    };
    let stream = r.stream.unwrap_or(false);
    let timeouts = Timeouts {
        connect: r.connect_timeout.unwrap_or(DEFAULT_CONNECT),
        read: r.read_timeout.unwrap_or(if stream {
            DEFAULT_STREAM_READ
        } else {
            DEFAULT_READ
        }),
        write: r.write_timeout.unwrap_or(DEFAULT_WRITE),
    };
    for (field, d) in [
        ("connect_timeout", timeouts.connect),
        ("read_timeout", timeouts.read),
        ("write_timeout", timeouts.write),
    ] {
        if d.is_zero() {
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
    let route_auth = match r.auth.as_deref() {
        None | Some("none") => RouteAuth::None,
        Some("session") => RouteAuth::Session,
        Some("token") => {
            let takes =
                matches!(&action, Some(RouteAction::Handler { kind, .. }) if kind.takes_tokens());
            if !takes && action.is_some() {
                p.add(
                    format!("{key}.auth"),
                    format!("\"token\" needs a route whose handler checks tokens (kind = \"hub\"), not kind = {kind:?}"),
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
    };
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
        auth: route_auth,
    })
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

fn socket_addr(s: &str, key: &str, p: &mut Problems) -> SocketAddr {
    match s.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            p.add(
                key,
                format!("{s:?} is not an IP:port address (like 0.0.0.0:8080 or [::]:8080)"),
            );
            SocketAddr::from(([0, 0, 0, 0], 0))
        }
    }
}

/// `host:port`, `1.2.3.4:80` or `[::1]:80` → (host, port).
pub(crate) fn host_port(s: &str) -> Result<(String, u16), String> {
    let bad = || format!("{s:?} is not host:port (like sim:3000 or 127.0.0.1:3000)");
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, port) = rest.split_once("]:").ok_or_else(bad)?;
        h.parse::<std::net::Ipv6Addr>().map_err(|_| bad())?;
        (h, port)
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    let port: u16 = port.parse().map_err(|_| bad())?;
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' || b == b':');
    if port == 0 || !valid_host {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn origin(s: &str) -> Result<String, String> {
    let bad = |why: &str| format!("{s:?} is not an origin like https://hub.example.com: {why}");
    let uri: http::Uri = s.parse().map_err(|_| bad("unparsable"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad("scheme must be http or https")),
    }
    let auth = uri.authority().ok_or_else(|| bad("no host"))?;
    if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() || s.ends_with('/') {
        return Err(bad("no path, query or trailing slash"));
    }
    Ok(format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        auth.as_str().to_ascii_lowercase()
    ))
}

fn parse_cidr(s: &str) -> Option<IpNet> {
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(host_port("sim:3000").unwrap(), ("sim".into(), 3000));
        assert_eq!(host_port("[::1]:80").unwrap(), ("::1".into(), 80));
        assert!(host_port("sim").is_err());
        assert!(host_port("sim:0").is_err());
        assert!(host_port(":80").is_err());
        assert!(host_port("a b:80").is_err());
        assert!(host_port("sim:99999").is_err());
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin("https://Hub.Example.com").unwrap(),
            "https://hub.example.com"
        );
        assert_eq!(
            origin("http://localhost:8080").unwrap(),
            "http://localhost:8080"
        );
        assert!(origin("ftp://x").is_err());
        assert!(origin("https://x/path").is_err());
        assert!(origin("https://x/").is_err());
        assert!(origin("hub.example.com").is_err());
    }

    #[test]
    fn config_paths() {
        assert!(config_path("/studio/").is_ok());
        assert!(config_path("studio").is_err());
        assert!(config_path("/a//b").is_err());
        assert!(config_path("/a/../b").is_err());
        assert!(config_path("/a%2fb").is_err());
    }
}
