//! The config file as written: serde structs that mirror the TOML one to one.
//! Nothing here is trusted; `validate` turns it into the typed model.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// The whole file. Unknown keys are rejected so a typo is an error, not a silent default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub server: ServerSection,
    pub tls: Option<TlsSection>,
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub hub: HubSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub limits: Vec<LimitSection>,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub storage: StorageSection,
}

/// `[storage]`: where sessions, devices, hub events and rate counters live.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageSection {
    pub backend: Option<String>,
    pub url: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub offline_grace: Option<Duration>,
    pub prefix: Option<String>,
}

/// `[admin]`: the private listener for metrics.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
}

/// `[[limits]]`: one rate rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    pub name: Option<String>,
    pub prefix: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    pub key: Option<String>,
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub shared: Option<bool>,
}

/// `[hub]`: the in-process agent hub.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubSection {
    pub events_token: Option<String>,
    pub agents_file: Option<PathBuf>,
    pub store: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub webhook_timeout: Option<Duration>,
    pub replay_recent: Option<usize>,
    pub replay_max: Option<usize>,
    pub max_channels: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<Duration>,
    pub subscriber_queue: Option<usize>,
    pub max_event_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub retention_age: Option<Duration>,
    pub retention_per_channel: Option<usize>,
    pub demo: Option<bool>,
    pub accept_shared_token: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub run_token_ttl: Option<Duration>,
    pub run_token_key: Option<PathBuf>,
}

/// `[server]`: listener, identity and process settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub public_origin: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub threads: Option<usize>,
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    #[serde(default)]
    pub redirect_https: bool,
    #[serde(default, with = "humantime_serde")]
    pub grace_period: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub keepalive_timeout: Option<Duration>,
    pub upgrade_sock: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub max_request_target: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub read_buffer: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub max_streams_per_ip: Option<usize>,
    pub max_streams_per_session: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub body_timeout: Option<Duration>,
    pub max_header_bytes: Option<usize>,
    pub max_headers: Option<usize>,
}

/// `[tls]`: the TLS listener and its certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub hsts: Option<bool>,
}

/// `[upstreams.NAME]`: one backend address.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    pub address: String,
    pub health_path: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub health_interval: Option<Duration>,
}

/// `[[routes]]`: one routing rule; which keys apply depends on `kind`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub host: Option<String>,
    pub prefix: Option<String>,
    pub exact: Option<String>,
    pub kind: Option<String>,
    pub upstream: Option<String>,
    pub strip_prefix: Option<bool>,
    pub fallback: Option<String>,
    pub to: Option<String>,
    pub status: Option<u16>,
    pub stream: Option<bool>,
    #[serde(default, with = "humantime_serde")]
    pub connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub read_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub write_timeout: Option<Duration>,
    pub csp: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub auth: Option<String>,
    pub root: Option<PathBuf>,
    pub compress: Option<bool>,
    pub assertion: Option<bool>,
    pub spa: Option<bool>,
}

/// `[auth]`: users, sessions and the login.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub users_file: Option<PathBuf>,
    pub sessions: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub absolute_timeout: Option<Duration>,
    pub login_concurrency: Option<usize>,
    pub login_queue: Option<usize>,
    pub keys_file: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub assertion_ttl: Option<Duration>,
}
