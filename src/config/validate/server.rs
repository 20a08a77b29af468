//! `[server]`: listeners, identity of the public origin, process settings.

use super::super::defaults as d;
use super::super::env::Overrides;
use super::super::error::Problems;
use super::super::file::ServerSection;
use super::super::model::Server;
use super::{origin, parse_cidr, socket_addr};
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn server(s: ServerSection, env: &Overrides, p: &mut Problems) -> Server {
    let listen_key = env.label("server.listen");
    let listen = socket_addr(s.listen.as_deref().unwrap_or(d::LISTEN), &listen_key, p);
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
    let max_request_target = s.max_request_target.unwrap_or(d::MAX_REQUEST_TARGET);
    if !(256..=65536).contains(&max_request_target) {
        p.add(
            "server.max_request_target",
            format!("{max_request_target} is out of range (256 to 65536 bytes)"),
        );
    }
    let read_buffer = s.read_buffer.unwrap_or(d::READ_BUFFER);
    if !(1024..=1024 * 1024).contains(&read_buffer) {
        p.add(
            "server.read_buffer",
            format!("{read_buffer} is out of range (1024 to 1048576 bytes)"),
        );
    }
    let keepalive_timeout = s.keepalive_timeout.unwrap_or(d::KEEPALIVE_TIMEOUT);
    if keepalive_timeout < Duration::from_secs(1) {
        p.add(
            "server.keepalive_timeout",
            "must be at least 1s (Pingora counts it in whole seconds)",
        );
    }
    let count = |value: Option<usize>,
                 default: usize,
                 key: &str,
                 range: (usize, usize),
                 p: &mut Problems| {
        let v = value.unwrap_or(default);
        if !(range.0..=range.1).contains(&v) {
            p.add(
                format!("server.{key}"),
                format!("{v} is out of range ({} to {})", range.0, range.1),
            );
        }
        v
    };
    let max_connections = count(
        s.max_connections,
        d::MAX_CONNECTIONS,
        "max_connections",
        (1, 1_000_000),
        p,
    );
    let max_connections_per_ip = count(
        s.max_connections_per_ip,
        d::MAX_CONNECTIONS_PER_IP,
        "max_connections_per_ip",
        (1, 1_000_000),
        p,
    );
    if max_connections_per_ip > max_connections {
        p.add(
            "server.max_connections_per_ip",
            format!(
                "{max_connections_per_ip} is more than server.max_connections ({max_connections})"
            ),
        );
    }
    let max_streams_per_ip = count(
        s.max_streams_per_ip,
        d::MAX_STREAMS_PER_IP,
        "max_streams_per_ip",
        (1, 1_000_000),
        p,
    );
    let max_streams_per_session = count(
        s.max_streams_per_session,
        d::MAX_STREAMS_PER_SESSION,
        "max_streams_per_session",
        (1, 1_000_000),
        p,
    );
    let max_header_bytes = count(
        s.max_header_bytes,
        d::MAX_HEADER_BYTES,
        "max_header_bytes",
        (1024, 1024 * 1024),
        p,
    );
    let max_headers = count(s.max_headers, d::MAX_HEADERS, "max_headers", (8, 256), p);
    let header_timeout = s.header_timeout.unwrap_or(d::HEADER_TIMEOUT);
    if header_timeout < Duration::from_millis(100) || header_timeout > Duration::from_secs(600) {
        p.add("server.header_timeout", "out of range (100ms to 10m)");
    }
    let body_timeout = s.body_timeout.unwrap_or(d::BODY_TIMEOUT);
    if body_timeout < Duration::from_millis(100) || body_timeout > Duration::from_secs(3600) {
        p.add("server.body_timeout", "out of range (100ms to 1h)");
    }
    Server {
        listen,
        public_origin,
        data_dir: s.data_dir.unwrap_or_else(|| PathBuf::from(d::DATA_DIR)),
        threads,
        trusted_proxies: trusted,
        redirect_https: s.redirect_https,
        grace_period: s.grace_period.unwrap_or(d::GRACE_PERIOD),
        shutdown_timeout: s.shutdown_timeout.unwrap_or(d::SHUTDOWN_TIMEOUT),
        keepalive_timeout,
        upgrade_sock: s
            .upgrade_sock
            .unwrap_or_else(|| PathBuf::from(d::UPGRADE_SOCK)),
        pid_file: s.pid_file.unwrap_or_else(|| PathBuf::from(d::PID_FILE)),
        max_request_target,
        max_body_bytes: s.max_body_bytes.unwrap_or(d::MAX_BODY_BYTES),
        read_buffer,
        max_connections,
        max_connections_per_ip,
        max_streams_per_ip,
        max_streams_per_session,
        header_timeout,
        body_timeout,
        max_header_bytes,
        max_headers,
    }
}
