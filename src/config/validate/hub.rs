//! `[hub]`: the event token, the store, streams and retention.

use super::super::defaults as d;
use super::super::env::Overrides;
use super::super::error::Problems;
use super::super::file::HubSection;
use super::super::model::{Hub, Server};

pub(super) fn hub(h: HubSection, server: &Server, env: &Overrides, p: &mut Problems) -> Hub {
    let data_dir = server.data_dir.as_path();
    let events_token = h.events_token.filter(|t| !t.is_empty());
    if let Some(t) = &events_token
        && (t.len() < 16 || t.bytes().any(|b| !b.is_ascii_graphic()))
    {
        p.add(
            env.label("hub.events_token"),
            "must be at least 16 printable characters without spaces (use `openssl rand -hex 32`)",
        );
    }
    if let Some(t) = &events_token
        && t.starts_with("eyJ")
        && t.matches('.').count() == 2
    {
        p.add(
            env.label("hub.events_token"),
            "looks like a JWT, which the hub would take for a run's token and never compare: use `openssl rand -hex 32`",
        );
    }
    let hub = Hub {
        events_token,
        agents_file: h
            .agents_file
            .unwrap_or_else(|| data_dir.join("agents.json")),
        store: h.store.unwrap_or_else(|| data_dir.join("hub.sqlite3")),
        webhook_timeout: h.webhook_timeout.unwrap_or(d::WEBHOOK_TIMEOUT),
        replay_recent: h.replay_recent.unwrap_or(d::REPLAY_RECENT),
        replay_max: h.replay_max.unwrap_or(d::REPLAY_MAX),
        max_channels: h.max_channels.unwrap_or(d::MAX_CHANNELS),
        heartbeat: h.heartbeat.unwrap_or(d::HEARTBEAT),
        subscriber_queue: h.subscriber_queue.unwrap_or(d::SUBSCRIBER_QUEUE),
        max_event_bytes: h.max_event_bytes.unwrap_or(d::MAX_EVENT_BYTES),
        retention_age: h.retention_age.unwrap_or(d::RETENTION_AGE),
        retention_per_channel: h.retention_per_channel.unwrap_or(d::RETENTION_PER_CHANNEL),
        demo_events: h.demo.unwrap_or(false).then(|| demo_events(server)),
        accept_shared_token: h.accept_shared_token.unwrap_or(true),
        run_token_ttl: h.run_token_ttl.unwrap_or(d::RUN_TOKEN_TTL),
        run_token_key: h
            .run_token_key
            .unwrap_or_else(|| data_dir.join("run-token.key")),
    };
    if !(std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(7 * 24 * 3600))
        .contains(&hub.run_token_ttl)
    {
        p.add("hub.run_token_ttl", "out of range (1m to 7d)");
    }
    if hub.demo_events.is_some() && server.redirect_https {
        p.add(
            env.label("hub.demo"),
            "the demo flow posts its events to the plain listener, which server.redirect_https turns into redirects: turn one of them off",
        );
    }
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
    if !(1..=1_000_000).contains(&hub.max_channels) {
        p.add("hub.max_channels", "out of range (1 to 1000000)");
    }
    if !(1..=100_000).contains(&hub.replay_max) {
        p.add("hub.replay_max", "out of range (1 to 100000)");
    }
    if hub.replay_recent > 10_000 {
        p.add("hub.replay_recent", "out of range (0 to 10000)");
    }
    hub
}

/// Where the demo flow posts: the plain listener's `/api/events`, over
/// loopback when it listens on every address.
fn demo_events(server: &Server) -> String {
    let mut addr = server.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/api/events")
}
