//! Every default the config fills in, named once: the validator uses these
//! constants, and [`DOCUMENTED`] ties each to its key so a test holds the
//! README's configuration reference to the same values.

use std::time::Duration;

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// `server.listen`: the plain listener, as the nginx container it replaces.
pub const LISTEN: &str = "0.0.0.0:8080";
/// `server.data_dir`.
pub const DATA_DIR: &str = "data";
/// `server.grace_period`: in-flight requests after SIGTERM (docker stop kills after 10 s).
pub const GRACE_PERIOD: Duration = secs(1);
/// `server.shutdown_timeout`: then the workers.
pub const SHUTDOWN_TIMEOUT: Duration = secs(2);
/// `server.keepalive_timeout`, as nginx's.
pub const KEEPALIVE_TIMEOUT: Duration = secs(75);
/// `server.upgrade_sock`.
pub const UPGRADE_SOCK: &str = "/tmp/esprit-edge-upgrade.sock";
/// `server.pid_file`.
pub const PID_FILE: &str = "/tmp/esprit-edge.pid";
/// `server.max_request_target`, in bytes.
pub const MAX_REQUEST_TARGET: usize = 8192;
/// `server.max_body_bytes` (0: no cap).
pub const MAX_BODY_BYTES: u64 = 0;
/// `server.read_buffer`: Pingora's 64 KiB per connection adds up with thousands
/// of idle streams. Pingora reads a head into its own 4 KiB buffer and a body
/// in larger reads, both of which bypass a smaller buffer, so 1 KiB only
/// holds small reads (TLS record headers) and costs no system calls (issue 12).
pub const READ_BUFFER: usize = 1024;
/// `server.max_connections`: half the descriptors the container usually gets,
/// the rest is for upstream connections and stores.
pub const MAX_CONNECTIONS: usize = 10_000;
/// `server.max_connections_per_ip`: a browser opens 6 per origin; an office
/// behind one NAT address has many browsers.
pub const MAX_CONNECTIONS_PER_IP: usize = 256;
/// `server.max_streams_per_ip`.
pub const MAX_STREAMS_PER_IP: usize = 64;
/// `server.max_streams_per_session`: the UI holds a websocket and a few SSE streams.
pub const MAX_STREAMS_PER_SESSION: usize = 16;
/// `server.header_timeout`: nginx's is 60 s, long enough for slowloris.
pub const HEADER_TIMEOUT: Duration = secs(10);
/// `server.body_timeout`, as nginx's `client_body_timeout`.
pub const BODY_TIMEOUT: Duration = secs(60);
/// `server.max_header_bytes`, as nginx's `large_client_header_buffers 4 8k`.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;
/// `admin.listen`: loopback only, so metrics are private unless the operator
/// says otherwise.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// `storage.timeout`: a Redis on the same network answers in well under a
/// millisecond; a quarter second without an answer means it is down.
pub const STORAGE_TIMEOUT: Duration = Duration::from_millis(250);
/// `storage.offline_grace`: how long cached sessions outlive a Redis outage.
pub const OFFLINE_GRACE: Duration = secs(60);
/// `storage.prefix`.
pub const STORAGE_PREFIX: &str = "esprit";
/// `[[limits]] shared`: with Redis, rules of at most this many requests per
/// second are counted across edges by default; faster ones by each edge.
pub const SHARED_RATE_UP_TO: f64 = 10.0;
/// `storage.backend`.
pub const STORAGE_BACKEND: &str = "sqlite";

/// `upstreams.NAME.health_interval`.
pub const HEALTH_INTERVAL: Duration = secs(5);

/// `server.max_headers`.
pub const MAX_HEADERS: usize = 100;

/// `tls.hsts`.
pub const HSTS: bool = true;

/// `hub.webhook_timeout`.
pub const WEBHOOK_TIMEOUT: Duration = secs(10);
/// `hub.replay_recent`.
pub const REPLAY_RECENT: usize = 100;
/// `hub.replay_max`: a ~120-byte request must not stream megabytes.
pub const REPLAY_MAX: usize = 1000;
/// `hub.max_channels`: npc values beyond the agents' own.
pub const MAX_CHANNELS: usize = 1000;
/// `hub.heartbeat`.
pub const HEARTBEAT: Duration = secs(15);
/// `hub.subscriber_queue`.
pub const SUBSCRIBER_QUEUE: usize = 1024;
/// `hub.max_event_bytes`.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// `hub.retention_age`.
pub const RETENTION_AGE: Duration = secs(30 * 24 * 3600);
/// `hub.retention_per_channel`.
pub const RETENTION_PER_CHANNEL: usize = 10_000;

/// `auth.idle_timeout`.
pub const IDLE_TIMEOUT: Duration = secs(2 * 3600);
/// `auth.absolute_timeout`.
pub const ABSOLUTE_TIMEOUT: Duration = secs(12 * 3600);
/// `auth.assertion_ttl`: short, as Cloudflare Access and IAP keep theirs.
pub const ASSERTION_TTL: Duration = secs(60);
/// `hub.run_token_ttl`: a run's events token; each event renews it.
pub const RUN_TOKEN_TTL: Duration = secs(3600);
/// `auth.login_concurrency` (each argon2 check takes 19 MiB).
pub const LOGIN_CONCURRENCY: usize = 4;
/// `auth.login_queue`: with 4 checks of ~50 ms at once, a full line waits
/// about 200 ms.
pub const LOGIN_QUEUE: usize = 16;

/// `routes[].connect_timeout`.
pub const CONNECT_TIMEOUT: Duration = secs(5);
/// `routes[].read_timeout`.
pub const READ_TIMEOUT: Duration = secs(60);
/// `routes[].read_timeout` with `stream = true`: longer than socket.io's ping
/// interval + timeout (25 s + 20 s), with room for SSE heartbeats.
pub const STREAM_READ_TIMEOUT: Duration = secs(300);
/// `routes[].write_timeout`.
pub const WRITE_TIMEOUT: Duration = secs(60);
/// `routes[].status` of a redirect.
pub const REDIRECT_STATUS: u16 = 302;

/// A default as the README writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Documented {
    /// A quoted string (`"0.0.0.0:8080"`).
    Text(&'static str),
    /// A quoted duration (`"75s"`, `"30days"`).
    Duration(Duration),
    /// A number.
    Number(u64),
    /// `true` or `false`.
    Bool(bool),
}

/// Each default with its README section and key, for the docs test.
pub const DOCUMENTED: &[(&str, &str, Documented)] = {
    use Documented::*;
    &[
        ("[server]", "listen", Text(LISTEN)),
        ("[admin]", "listen", Text(ADMIN_LISTEN)),
        ("[storage]", "backend", Text(STORAGE_BACKEND)),
        ("[storage]", "timeout", Duration(STORAGE_TIMEOUT)),
        ("[storage]", "offline_grace", Duration(OFFLINE_GRACE)),
        ("[storage]", "prefix", Text(STORAGE_PREFIX)),
        (
            "[upstreams.NAME]",
            "health_interval",
            Duration(HEALTH_INTERVAL),
        ),
        ("[server]", "data_dir", Text(DATA_DIR)),
        ("[server]", "grace_period", Duration(GRACE_PERIOD)),
        ("[server]", "shutdown_timeout", Duration(SHUTDOWN_TIMEOUT)),
        ("[server]", "keepalive_timeout", Duration(KEEPALIVE_TIMEOUT)),
        ("[server]", "upgrade_sock", Text(UPGRADE_SOCK)),
        ("[server]", "pid_file", Text(PID_FILE)),
        (
            "[server]",
            "max_request_target",
            Number(MAX_REQUEST_TARGET as u64),
        ),
        ("[server]", "max_body_bytes", Number(MAX_BODY_BYTES)),
        ("[server]", "read_buffer", Number(READ_BUFFER as u64)),
        (
            "[server]",
            "max_connections",
            Number(MAX_CONNECTIONS as u64),
        ),
        (
            "[server]",
            "max_connections_per_ip",
            Number(MAX_CONNECTIONS_PER_IP as u64),
        ),
        (
            "[server]",
            "max_streams_per_ip",
            Number(MAX_STREAMS_PER_IP as u64),
        ),
        (
            "[server]",
            "max_streams_per_session",
            Number(MAX_STREAMS_PER_SESSION as u64),
        ),
        ("[server]", "header_timeout", Duration(HEADER_TIMEOUT)),
        ("[server]", "body_timeout", Duration(BODY_TIMEOUT)),
        (
            "[server]",
            "max_header_bytes",
            Number(MAX_HEADER_BYTES as u64),
        ),
        ("[server]", "max_headers", Number(MAX_HEADERS as u64)),
        ("[tls]", "hsts", Bool(HSTS)),
        ("[hub]", "webhook_timeout", Duration(WEBHOOK_TIMEOUT)),
        ("[hub]", "replay_recent", Number(REPLAY_RECENT as u64)),
        ("[hub]", "replay_max", Number(REPLAY_MAX as u64)),
        ("[hub]", "max_channels", Number(MAX_CHANNELS as u64)),
        ("[hub]", "heartbeat", Duration(HEARTBEAT)),
        ("[hub]", "subscriber_queue", Number(SUBSCRIBER_QUEUE as u64)),
        ("[hub]", "max_event_bytes", Number(MAX_EVENT_BYTES as u64)),
        ("[hub]", "retention_age", Duration(RETENTION_AGE)),
        (
            "[hub]",
            "retention_per_channel",
            Number(RETENTION_PER_CHANNEL as u64),
        ),
        ("[auth]", "idle_timeout", Duration(IDLE_TIMEOUT)),
        ("[auth]", "absolute_timeout", Duration(ABSOLUTE_TIMEOUT)),
        (
            "[auth]",
            "login_concurrency",
            Number(LOGIN_CONCURRENCY as u64),
        ),
        ("[auth]", "login_queue", Number(LOGIN_QUEUE as u64)),
        ("[auth]", "assertion_ttl", Duration(ASSERTION_TTL)),
        ("[hub]", "run_token_ttl", Duration(RUN_TOKEN_TTL)),
        ("[[routes]]", "connect_timeout", Duration(CONNECT_TIMEOUT)),
        ("[[routes]]", "read_timeout", Duration(READ_TIMEOUT)),
        ("[[routes]]", "read_timeout", Duration(STREAM_READ_TIMEOUT)),
        ("[[routes]]", "status", Number(REDIRECT_STATUS as u64)),
        ("[[routes]]", "write_timeout", Duration(WRITE_TIMEOUT)),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The README row for `key` under the `### \`section\`` heading.
    fn readme_row(readme: &str, section: &str, key: &str) -> Option<Vec<String>> {
        let heading = format!("### `{section}");
        let start = readme.find(&heading)?;
        let body = &readme[start + heading.len()..];
        let body = &body[..body.find("\n### ").unwrap_or(body.len())];
        // The key cell may name several keys: `prefix` / `exact`, `to`, `status`.
        body.lines()
            .find(|l| {
                l.split('|')
                    .nth(1)
                    .is_some_and(|c| c.split('`').skip(1).step_by(2).any(|k| k == key))
            })
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
    }

    /// Every backticked value in `cell`, unquoted.
    fn values(cell: &str) -> impl Iterator<Item = &str> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(|v| v.trim_matches('"'))
    }

    #[test]
    fn the_readme_documents_the_defaults_the_validator_uses() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        for (section, key, want) in DOCUMENTED {
            let row = readme_row(&readme, section, key)
                .unwrap_or_else(|| panic!("README has no row for {section} {key}"));
            // Columns: "", key, (applies to,) default, ...: any backticked
            // value after the key that reads as the wanted default.
            let found = row
                .iter()
                .skip(2)
                .flat_map(|c| values(c))
                .any(|v| match want {
                    Documented::Text(t) => v == *t,
                    Documented::Duration(d) => {
                        humantime::parse_duration(v).is_ok_and(|got| got == *d)
                    }
                    // `8192`, `0` (no cap), `status = 302`.
                    Documented::Number(n) => {
                        v.split_whitespace().any(|x| x.parse::<u64>() == Ok(*n))
                    }
                    Documented::Bool(b) => v.parse::<bool>() == Ok(*b),
                });
            assert!(
                found,
                "README {section} {key}: default is not {want:?} in {row:?}"
            );
        }
    }
}
