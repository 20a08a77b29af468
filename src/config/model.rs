//! The validated config: typed, defaults filled in, cross-references checked.
//! Everything downstream reads only this, never the raw file.

use ipnet::IpNet;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A config that passed validation; the proxy can trust every field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from, for messages.
    pub source: PathBuf,
    /// Process-wide settings.
    pub server: Server,
    /// The TLS listener, when configured.
    pub tls: Option<Tls>,
    /// Backends by name.
    pub upstreams: BTreeMap<String, Upstream>,
    /// In file order; the router decides precedence.
    pub routes: Vec<Route>,
    /// The in-process hub.
    pub hub: Hub,
    /// Users, sessions and the login.
    pub auth: Auth,
    /// Rate rules, in file order; a request must pass every rule that matches it.
    pub limits: Vec<Limit>,
    /// The private listener for metrics.
    pub admin: Admin,
    /// Where shared state lives: this edge's SQLite files, or a Redis that
    /// several edges share.
    pub storage: Storage,
}

/// `[storage]`: one edge keeps its state in SQLite under `data_dir`; several
/// edges behind one load balancer share it through Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// The embedded SQLite files (the default).
    Sqlite,
    /// A Redis every edge of the deployment uses.
    Redis(RedisStorage),
}

/// How to reach the shared Redis and how to behave without it.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisStorage {
    /// `redis://[user:password@]host[:port][/db]` (`rediss://` for TLS is
    /// refused: the client is built without TLS). Holds a password: never logged.
    pub url: String,
    /// Longest wait for one Redis command (connect included) before the
    /// edge treats Redis as down.
    pub timeout: Duration,
    /// How long a session this edge read from Redis keeps working while Redis
    /// is unreachable (revocations elsewhere are not seen meanwhile).
    pub offline_grace: Duration,
    /// Prefix of every key and channel, so deployments can share a Redis.
    pub prefix: String,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage")
            .field("url", &redact_url(&self.url))
            .field("timeout", &self.timeout)
            .field("offline_grace", &self.offline_grace)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// `url` without its password, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_string(),
    }
}

/// `[admin]`: metrics on a listener of their own, never the public one
/// (what the edge counts is for the operator, not for browsers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    /// Where it listens; `None` when turned off (`listen = "off"`).
    pub listen: Option<std::net::SocketAddr>,
}

/// What a rate rule counts requests by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// The client IP (an IPv6 client by its /64).
    Ip,
    /// The session cookie of a signed-in request.
    Session,
    /// The signed-in user.
    User,
    /// The bearer token a request carries (Sim flows on `/api/events`).
    Token,
}

impl LimitKey {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            LimitKey::Ip => "ip",
            LimitKey::Session => "session",
            LimitKey::User => "user",
            LimitKey::Token => "token",
        }
    }
}

/// One `[[limits]]` rule: GCRA, like nginx `limit_req ... burst=N nodelay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// For logs and the `RateLimit-Policy` header.
    pub name: String,
    /// Requests whose normalised path starts with this.
    pub prefix: String,
    /// Only these methods (upper-case); empty: every method.
    pub methods: Vec<http::Method>,
    /// What is counted; several parts form one key. A request that lacks a
    /// part (no user on an open route, no token) is not counted by the rule.
    pub key: Vec<LimitKey>,
    /// One request is allowed every `per / count`...
    pub count: u32,
    /// ...of this period (`"20/s"`: count 20, per 1 s).
    pub per: Duration,
    /// How many may come at once.
    pub burst: u32,
    /// Counted once for every edge that shares a Redis (`[storage] backend =
    /// "redis"`), rather than by each edge on its own; no effect on SQLite.
    pub shared: bool,
}

/// Hub settings: where its data lives and how its streams behave.
#[derive(Debug, Clone)]
pub struct Hub {
    /// Bearer token Sim flows send with `POST /api/events`; `None` refuses them all (503).
    pub events_token: Option<String>,
    /// `[{agent, npc, webhookUrl, name?, description?}]`, re-read when it changes.
    pub agents_file: PathBuf,
    /// The SQLite event store.
    pub store: PathBuf,
    /// How long a run's webhook may take to answer.
    pub webhook_timeout: Duration,
    /// Events a stream opens with when the client brings no `Last-Event-ID`.
    pub replay_recent: usize,
    /// Most events a `Last-Event-ID` replay sends; a client further behind
    /// gets a `missed` marker and the newest this many.
    pub replay_max: usize,
    /// Most channels (npc values) beyond the agents' own.
    pub max_channels: usize,
    /// Interval of SSE comment heartbeats.
    pub heartbeat: Duration,
    /// Events a subscriber may fall behind before it is disconnected.
    pub subscriber_queue: usize,
    /// Largest accepted `POST /api/events` (and run) body.
    pub max_event_bytes: usize,
    /// Events older than this are pruned.
    pub retention_age: Duration,
    /// At most this many events are kept per channel.
    pub retention_per_channel: usize,
    /// Where the built-in demo flow (`"webhookUrl": "builtin:demo"`) posts
    /// its events, through the real events API; `None` when `hub.demo` is off.
    pub demo_events: Option<String>,
    /// Whether `events_token` is still accepted beside the per-run tokens.
    pub accept_shared_token: bool,
    /// How long a run's events token lasts (each event it posts renews it).
    pub run_token_ttl: Duration,
    /// The secret that signs per-run event tokens (created on first start).
    pub run_token_key: PathBuf,
}

/// Process-wide settings.
#[derive(Debug, Clone)]
pub struct Server {
    /// The plain-HTTP listener.
    pub listen: SocketAddr,
    /// The origin browsers use (`https://hub.example.com`), when known.
    pub public_origin: Option<String>,
    /// Where agents.json and (later) users and the store live.
    pub data_dir: PathBuf,
    /// Worker threads for the proxy service.
    pub threads: usize,
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Answer plain-HTTP requests with 308 to the TLS listener.
    pub redirect_https: bool,
    /// After SIGTERM the listeners close at once; in-flight requests (and open
    /// streams) get this long to finish before they are cut.
    pub grace_period: Duration,
    /// Then the worker runtimes get this long to stop their remaining blocking work.
    pub shutdown_timeout: Duration,
    /// How long an idle downstream keep-alive connection is held.
    pub keepalive_timeout: Duration,
    /// Socket on which a new process (`--upgrade`) receives the listeners.
    pub upgrade_sock: PathBuf,
    /// Written only in daemon mode (Pingora).
    pub pid_file: PathBuf,
    /// Longest request target (path and query) accepted, in bytes.
    pub max_request_target: usize,
    /// Default cap on request bodies, in bytes (0: no cap).
    pub max_body_bytes: u64,
    /// Per-connection socket read buffer, in bytes: what an idle connection costs.
    pub read_buffer: usize,
    /// Open client connections, all listeners together; more are closed at accept.
    pub max_connections: usize,
    /// Open client connections from one IP (an IPv6 client by its /64);
    /// trusted proxies are exempt, since every client arrives through them.
    pub max_connections_per_ip: usize,
    /// Concurrent long streams (websockets, SSE) from one client IP.
    pub max_streams_per_ip: usize,
    /// Concurrent long streams of one signed-in session.
    pub max_streams_per_session: usize,
    /// The whole request head must arrive within this (nginx `client_header_timeout`).
    pub header_timeout: Duration,
    /// Longest silence while a request body arrives (nginx `client_body_timeout`).
    pub body_timeout: Duration,
    /// Largest request head (request line and headers), in bytes; more gets 431.
    pub max_header_bytes: usize,
    /// Most header fields in a request; more gets 431.
    pub max_headers: usize,
}

/// The TLS listener.
#[derive(Debug, Clone)]
pub struct Tls {
    /// TLS listener address.
    pub listen: SocketAddr,
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Send `Strict-Transport-Security` on TLS responses.
    pub hsts: bool,
}

/// A named backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The name routes use.
    pub name: String,
    /// A DNS name or an IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// What the readiness check asks: `GET` of this path (any status below
    /// 500 is up), or only a TCP connect when `None`.
    pub health_path: Option<String>,
    /// How often it is checked.
    pub health_interval: std::time::Duration,
    /// Whether it is checked at all: health checks are opt-in (a
    /// `health_path` or a `health_interval`), as in HAProxy or Envoy, so
    /// nothing connects to an upstream the operator did not ask about.
    pub health_checked: bool,
}

/// How a route matches the request path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The path starts with this. A prefix without a trailing `/` matches only at a
    /// segment boundary: `/login` matches `/login` and `/login/x`, not `/loginx`.
    Prefix(String),
    /// The path is exactly this.
    Exact(String),
}

/// What a matched route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Forward to a named upstream, optionally without the route prefix.
    Proxy {
        /// Upstream name.
        upstream: String,
        /// Send the path without the route prefix.
        strip_prefix: bool,
    },
    /// Answer with a redirect; the rest of the path and the query are carried over.
    Redirect {
        /// Path or URL the rest of the path and the query are appended to.
        to: String,
        /// 301, 302, 303, 307 or 308.
        status: u16,
    },
    /// Files from a directory (`kind = "static"`), the path under the route
    /// naming the file.
    Static {
        /// The directory served.
        root: PathBuf,
        /// A miss on an extension-less path answers the root's `index.html`
        /// (a single-page app's client routes).
        spa: bool,
    },
    /// Answered in-process by the handler registered for `kind`; paths under
    /// the route it does not claim go to `fallback`.
    Handler {
        /// Which in-process handler.
        kind: HandlerKind,
        /// Upstream for the paths under the route the handler does not claim.
        fallback: Option<String>,
    },
}

/// The in-process route kinds (`kind = "..."` in the config). A new one is a
/// variant here, its row in the validator's key table, a module implementing
/// `reply::handler::Handler`, and one registration line in `server.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HandlerKind {
    /// The agent hub (`kind = "hub"`): runs, events, streams.
    Hub,
    /// The sign-in (`kind = "auth"`): login page, logout, `/auth/me`.
    Auth,
    /// The built-in console (`kind = "console"`): agents, runs, live log.
    Console,
}

impl HandlerKind {
    /// Every kind, in the order the config documents them.
    pub const ALL: [HandlerKind; 3] = [HandlerKind::Hub, HandlerKind::Auth, HandlerKind::Console];

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            HandlerKind::Hub => "hub",
            HandlerKind::Auth => "auth",
            HandlerKind::Console => "console",
        }
    }

    /// What a request gets when the kind is configured but not running.
    pub fn unavailable(self) -> &'static str {
        match self {
            HandlerKind::Hub => "the hub is not running",
            HandlerKind::Auth => "sign-in is not available",
            HandlerKind::Console => "the console is not available",
        }
    }

    /// Whether the kind's handler checks bearer tokens (`auth = "token"`).
    pub fn takes_tokens(self) -> bool {
        matches!(self, HandlerKind::Hub)
    }
}

/// Upstream timeouts for one route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for the TCP connection.
    pub connect: Duration,
    /// Longest silence while reading the upstream (also the idle limit of upgraded streams).
    pub read: Duration,
    /// Longest wait while sending to the upstream.
    pub write: Duration,
}

/// One validated routing rule.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the file, for messages and logs (`routes[3]`).
    pub index: usize,
    /// Lower-case host without port, like nginx `server_name`; `None` matches any host.
    pub host: Option<String>,
    /// How the path matches.
    pub path: PathMatch,
    /// What the route does.
    pub action: RouteAction,
    /// Upstream timeouts.
    pub timeouts: Timeouts,
    /// Long-lived responses (SSE, websockets, long-polling): long read timeout.
    pub stream: bool,
    /// CSP sent when the upstream sets none.
    pub csp: Option<String>,
    /// Request body cap in bytes: `None` inherits the server's, `Some(0)` lifts it.
    pub max_body_bytes: Option<u64>,
    /// Whether only a live session gets through.
    pub auth: RouteAuth,
    /// Compress proxied responses on the fly (gzip, brotli or zstd, as the
    /// client takes them); never event streams or upgraded connections.
    pub compress: bool,
    /// Send the upstream a signed identity assertion (gated routes).
    pub assertion: bool,
}

/// A route's access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAuth {
    /// Open (the upstream decides, or it is public).
    None,
    /// Only requests with a live edge session.
    Session,
    /// A bearer token instead of a session (Sim flows carry no cookie); the
    /// route's in-process handler says which tokens are good.
    Token,
}

/// Users, sessions and the login.
#[derive(Debug, Clone)]
pub struct Auth {
    /// `users.toml`, managed with `esprit-edge user`.
    pub users_file: PathBuf,
    /// The session store.
    pub sessions: PathBuf,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, used or not.
    pub absolute_timeout: Duration,
    /// Password checks running at once (argon2 takes 19 MiB and tens of ms each).
    pub login_concurrency: usize,
    /// Sign-ins waiting for a password check, per line (known devices have
    /// their own, served first); more get 503 at once.
    pub login_queue: usize,
    /// The identity assertions' signing keys (created on first start).
    pub keys_file: PathBuf,
    /// How long an identity assertion is valid.
    pub assertion_ttl: Duration,
}

impl Route {
    /// A short name for logs: the match pattern.
    pub fn label(&self) -> &str {
        match &self.path {
            PathMatch::Prefix(p) | PathMatch::Exact(p) => p,
        }
    }

    /// The upstream a proxied request on this route goes to, if any.
    pub fn upstream(&self) -> Option<&str> {
        match &self.action {
            RouteAction::Proxy { upstream, .. } => Some(upstream),
            RouteAction::Handler { fallback, .. } => fallback.as_deref(),
            RouteAction::Redirect { .. } | RouteAction::Static { .. } => None,
        }
    }
}
