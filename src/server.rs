//! Assembles the Pingora server from a validated config: listeners, the edge
//! service, certificate reload, and the shutdown and upgrade settings that make
//! `docker stop` and SIGQUIT hand-overs behave.

use crate::admin::Admin;
use crate::admin::health::{Checker, Health};
use crate::auth::service::AuthService;
use crate::auth::upkeep::Upkeep;
use crate::config::{Config, HandlerKind, RouteAction, RouteAuth, Storage};
use crate::edge::Edge;
use crate::edge::connection::head::HeadRules;
use crate::edge::connection::{AcceptFilter, Served};
use crate::edge::handlers::Handlers;
use crate::edge::live::{Live, LiveConfig, needs_restart};
use crate::hub::Hub;
use crate::limit::connections::ConnectionCaps;
use crate::limit::rate::{Prune, RateRules};
use crate::redis_link::RedisLink;
use crate::tls::CertStore;
use crate::watch::{StreamWatch, Sweeper};
use anyhow::Context;
use arc_swap::ArcSwap;
use pingora::listeners::{DEFAULT_L4_WRITE_BUFFER_SIZE, L4BufferSettings, ListenerConfig};
use pingora::prelude::{Opt, Server};
use pingora::proxy::http_proxy;
use pingora::server::ShutdownWatch;
use pingora::server::configuration::ServerConf;
use pingora::services::background::{BackgroundService, background_service};
use pingora::services::listening::Service;
use std::sync::Arc;

/// What SIGHUP does. Its default action ends the process, and operators
/// send it out of habit (`nginx -s reload`, log rotation, `systemctl
/// reload`), so the handler is always installed: it reloads what can be
/// reloaded (the TLS certificate) and never stops the edge.
struct Hangup {
    certs: Option<Arc<CertStore>>,
    reload: Reload,
}

/// What SIGHUP swaps: the edge's request handling and the rules the prune
/// service keeps small; `running` is the config in force, for what changed.
struct Reload {
    running: std::sync::Mutex<Config>,
    live: LiveConfig,
    rules: Arc<ArcSwap<RateRules>>,
    /// The admin listener's upstream health, when it runs.
    health: Option<Arc<Health>>,
    /// The hub and the sign-in, when they run: their reloadable settings.
    hub: Option<Arc<Hub>>,
    auth: Option<Arc<AuthService>>,
    /// The shared Redis, for the shared counts of reloaded rate rules.
    link: Option<Arc<RedisLink>>,
}

impl Reload {
    /// Re-reads the config file (and the environment) and applies what a
    /// running edge can: an invalid file is refused with every problem
    /// logged, and the running config stays.
    fn apply(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let source = running.source.clone();
        let new = match crate::config::load(&source)
            .map_err(|e| e.to_string())
            .and_then(|c| {
                preflight(&c).map_err(|e| format!("{e:#}"))?;
                Ok(c)
            }) {
            Ok(c) => c,
            Err(problems) => {
                for line in problems.lines().filter(|l| !l.trim().is_empty()) {
                    tracing::error!(target: "edge", file = %source.display(), problem = line, "config reload refused");
                }
                tracing::error!(target: "edge", file = %source.display(), "SIGHUP: the new config is invalid; the running config stays");
                crate::telemetry::metrics::metrics().reload("refused");
                return;
            }
        };
        for advice in advice(&new) {
            tracing::warn!(target: "edge", "{advice}");
        }
        for what in needs_restart(&running, &new) {
            tracing::warn!(target: "edge", "not applied by SIGHUP: {what}");
        }
        let rules = Arc::new(RateRules::new(&new.limits, self.link.clone()));
        self.rules.store(rules.clone());
        self.live.store(Arc::new(Live::new(&new, rules)));
        if let Some(h) = &self.health {
            h.replace(new.upstreams.values().cloned());
        }
        let mut fixed = Vec::new();
        if let Some(hub) = &self.hub {
            fixed.extend(hub.apply(&new.hub));
        }
        if let Some(auth) = &self.auth {
            fixed.extend(auth.apply(&new.auth));
        }
        for key in fixed {
            tracing::warn!(target: "edge", key, "not applied by SIGHUP: {key} takes a restart or hand-over; the running value stays");
        }
        tracing::info!(target: "edge", file = %source.display(), routes = new.routes.len(), limits = new.limits.len(), "config reloaded");
        crate::telemetry::metrics::metrics().reload("applied");
        *running = new;
    }
}

#[async_trait::async_trait]
impl BackgroundService for Hangup {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(target: "edge", error = %e, "cannot listen for SIGHUP; a SIGHUP would stop the edge");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    if let Some(certs) = &self.certs {
                        certs.reload_logged();
                    }
                    self.reload.apply();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Whole seconds, rounded up and at least `min`: Pingora counts its shutdown
/// phases in seconds, and "500ms" must not become no grace at all.
fn secs(d: std::time::Duration, min: u64) -> u64 {
    let up = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    up.max(min)
}

/// Checks what start-up would load beyond the config itself (certificates).
pub fn preflight(config: &Config) -> anyhow::Result<()> {
    if let Some(tls) = &config.tls {
        crate::tls::load(&tls.cert, &tls.key)
            .with_context(|| format!("{}: tls", config.source.display()))?;
    }
    if config.hub.demo_events.is_some() {
        // The demo flow posts over HTTP with its own bearer token: that
        // request must reach the hub, never an upstream or a session gate.
        let router = crate::edge::router::Router::new(&config.routes);
        let events = crate::hub::EVENTS_PATH;
        let reaches_hub = router.find(None, events).is_some_and(|r| {
            r.auth == RouteAuth::Token
                && matches!(
                    r.action,
                    RouteAction::Handler {
                        kind: HandlerKind::Hub,
                        ..
                    }
                )
        });
        if !reaches_hub {
            anyhow::bail!(
                "{}: hub.demo: the demo flow posts to {events}, which no route answers with kind = \"hub\" and auth = \"token\" (add that route, or turn the demo off)",
                config.source.display()
            );
        }
    }
    Ok(())
}

/// What is valid but probably not what the operator meant, one line each:
/// `check` prints these, a starting edge logs them.
pub fn advice(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let router = crate::edge::router::Router::new(&config.routes);
    let events = crate::hub::EVENTS_PATH;
    if let Some(r) = router.find(None, events)
        && r.auth == RouteAuth::Session
        && matches!(
            r.action,
            RouteAction::Handler {
                kind: HandlerKind::Hub,
                ..
            }
        )
    {
        // Configs from before `auth = "token"` gated the hub's events with
        // the rest of /api/; the edge used to exempt them in code.
        out.push(format!(
            "{}: routes[{}] ({}) asks for a session on {events}, but Sim flows post there with the hub's token and no cookie: add a route exact = \"{events}\", kind = \"hub\", auth = \"token\"",
            config.source.display(),
            r.index,
            r.label()
        ));
    }
    out
}

/// Runs until SIGTERM (graceful), SIGINT (fast) or SIGQUIT (hand-over to `--upgrade`).
pub fn run(config: Config, upgrade: bool) -> anyhow::Result<()> {
    let certs = match &config.tls {
        Some(tls) => Some(
            CertStore::open(&tls.cert, &tls.key)
                .with_context(|| format!("{}: tls", config.source.display()))?,
        ),
        None => None,
    };
    let conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(secs(config.server.grace_period, 0)),
        graceful_shutdown_timeout_seconds: Some(secs(config.server.shutdown_timeout, 1)),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        pid_file: config.server.pid_file.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let serves = |kind| {
        config
            .routes
            .iter()
            .any(|r| matches!(r.action, RouteAction::Handler { kind: k, .. } if k == kind))
    };
    let mut handlers = Handlers::default();
    // What /readyz asks besides the upstreams.
    let mut stores: Vec<crate::admin::health::Store> = Vec::new();
    // The Redis several edges share, when `[storage]` says so; the edge
    // starts without it and says so on /readyz.
    let link = match &config.storage {
        Storage::Sqlite => None,
        Storage::Redis(r) => {
            let link = RedisLink::new(r)
                .map_err(|e| anyhow::anyhow!("{}: storage.url: {e}", config.source.display()))?;
            if let Err(e) = link.ping() {
                tracing::error!(target: "storage", error = %e, "Redis is unreachable at start; retrying in the background");
            }
            let probe = link.clone();
            stores.push(crate::admin::health::Store {
                name: "redis".into(),
                probe: Arc::new(move || probe.ping().map_err(|e| e.to_string())),
            });
            Some(link)
        }
    };
    let mut running_hub = None;
    if serves(HandlerKind::Hub) {
        let hub = Hub::open(&config.hub, link.as_ref())
            .map_err(|e| anyhow::anyhow!("{}: hub: {e}", config.source.display()))?;
        server.add_service(background_service("hub maintenance", hub.maintenance()));
        let probe = hub.clone();
        stores.push(crate::admin::health::Store {
            name: "hub".into(),
            probe: Arc::new(move || probe.store_ready()),
        });
        running_hub = Some(hub.clone());
        handlers.register(HandlerKind::Hub, hub);
    }
    if serves(HandlerKind::Console) {
        handlers.register(HandlerKind::Console, Arc::new(crate::console::Console));
    }
    let wants_auth =
        serves(HandlerKind::Auth) || config.routes.iter().any(|r| r.auth == RouteAuth::Session);
    let auth = if wants_auth {
        Some(
            AuthService::open(&config, link.as_ref())
                .map_err(|e| anyhow::anyhow!("{}: auth: {e}", config.source.display()))?,
        )
    } else {
        None
    };
    let limits = Arc::new(RateRules::new(&config.limits, link.clone()));
    // Pruned even when empty: a reload may bring rules.
    let rules = Arc::new(ArcSwap::new(limits.clone()));
    server.add_service(background_service(
        "rate limit upkeep",
        Prune(rules.clone()),
    ));
    let streams = Arc::new(StreamWatch::default());
    if let Some(auth) = &auth {
        let probe = auth.clone();
        stores.push(crate::admin::health::Store {
            name: "sessions".into(),
            probe: Arc::new(move || probe.store_ready()),
        });
        handlers.register(HandlerKind::Auth, auth.clone());
        server.add_service(background_service(
            "session stream watch",
            Sweeper(streams.clone()),
        ));
        server.add_service(background_service("session upkeep", Upkeep(auth.clone())));
    }
    let caps = Arc::new(ConnectionCaps::new(
        config.server.max_connections,
        config.server.max_connections_per_ip,
        config.server.trusted_proxies.clone(),
    ));
    let head = HeadRules {
        timeout: config.server.header_timeout,
        max_bytes: config.server.max_header_bytes,
    };
    let running_auth = auth.clone();
    let edge_app = Edge::new(&config, handlers, auth, streams, limits);
    let health = config
        .admin
        .listen
        .map(|_| Arc::new(Health::new(config.upstreams.values().cloned())));
    let reload = Reload {
        running: std::sync::Mutex::new(config.clone()),
        live: edge_app.live(),
        rules,
        health: health.clone(),
        hub: running_hub,
        auth: running_auth,
        link: link.clone(),
    };
    let proxy = http_proxy(&server.configuration, edge_app);
    let mut edge = Service::new(
        "esprit-edge".to_string(),
        Served::new(proxy, caps.clone(), head),
    );
    edge.set_connection_filter(Arc::new(AcceptFilter(caps.clone())));
    // Pingora's default 64 KiB read buffer per connection is zeroed up front:
    // with thousands of idle SSE or websocket clients that is most of the
    // memory. Headers are read through a small one; large reads bypass it.
    let buffers = L4BufferSettings::new(config.server.read_buffer, DEFAULT_L4_WRITE_BUFFER_SIZE);
    let plain = config.server.listen.to_string();
    edge.add_listener(ListenerConfig::tcp(&plain).l4_buffer(buffers));
    tracing::info!(target: "edge", listen = %plain, tls = false, routes = config.routes.len(), "listening");
    if let (Some(tls), Some(certs)) = (&config.tls, &certs) {
        let addr = tls.listen.to_string();
        edge.add_listener(
            ListenerConfig::tcp(&addr)
                .tls(certs.settings()?)
                .l4_buffer(buffers),
        );
        tracing::info!(target: "edge", listen = %addr, tls = true, "listening");
    }
    if let (Some(addr), Some(health)) = (config.admin.listen, health) {
        server.add_service(background_service(
            "upstream health checks",
            Checker(health.clone()),
        ));
        let mut admin = Service::new("admin".to_string(), Admin::new(caps, health, stores));
        admin.add_tcp(&addr.to_string());
        tracing::info!(target: "edge", listen = %addr, "admin listener (metrics)");
        server.add_service(admin);
    }
    server.add_service(background_service("SIGHUP", Hangup { certs, reload }));
    server.add_service(edge);
    // `run`, not `run_forever`: that one ends in `process::exit`, which
    // would skip the log's final flush in `main`.
    server.run(pingora::server::RunArgs::default());
    Ok(())
}
