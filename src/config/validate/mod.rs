//! Turns the raw file into the typed model, checking every value and every
//! cross-reference, one file per config area. All problems are collected so
//! one `check` run shows them all. Defaults come from `config::defaults`.

mod admin;
mod auth;
mod hub;
mod limits;
mod routes;
mod server;
mod storage;
mod tls;
mod upstreams;

use super::env::Overrides;
use super::error::Problems;
use super::file::FileConfig;
use super::model::Config;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

pub(crate) fn validate(
    source: &Path,
    file: FileConfig,
    env: &Overrides,
    problems: &mut Problems,
) -> Config {
    let upstreams = upstreams::upstreams(&file, env, problems);
    let server = server::server(file.server, env, problems);
    let tls = file.tls.map(|t| tls::tls(t, problems));
    if server.redirect_https && tls.is_none() {
        problems.add(
            "server.redirect_https",
            "is true but there is no [tls] listener to redirect to",
        );
    }
    let routes = routes::routes(file.routes, &upstreams, problems);
    let hub = hub::hub(file.hub, &server, env, problems);
    let auth = auth::auth(file.auth, &server.data_dir, problems);
    let limits = limits::limits(file.limits, problems);
    let admin = admin::admin(file.admin, &server, tls.as_ref(), env, problems);
    let storage = storage::storage(file.storage, env, problems);
    Config {
        source: source.to_path_buf(),
        server,
        tls,
        upstreams,
        routes,
        hub,
        auth,
        limits,
        admin,
        storage,
    }
}

/// An `IP:port` listener address; a bad one is a problem at `key`.
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

/// A browser origin (`https://host[:port]`), lower-cased.
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

/// A CIDR, or a single IP as its /32 or /128.
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
}
