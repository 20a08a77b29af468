//! The agent hub (was the Node gateway), answered in-process under `/api/`:
//! agents, runs, events and SSE streams, durable in an embedded store.
//! Everything else under `/api/` is Sim's own API and falls through to the
//! route's fallback upstream.

pub mod agents;
pub mod api;
pub mod channels;
pub mod demo;
pub mod event;
pub mod fanout;
pub mod ids;
pub mod journal;
pub mod query;
pub mod redis_store;
pub mod run_token;
pub mod sqlite;
pub mod sse;
pub mod store;
pub mod tail;
pub mod webhook;

use crate::config;
use crate::reply::Reply;
use crate::reply::body::read_capped;
use crate::reply::handler::{Call, Handled, Handler};
use agents::Agents;
use api::{Endpoint, error};
use async_trait::async_trait;
use bytes::Bytes;
use fanout::Fanout;
use journal::Journal;
use pingora::proxy::Session;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::sync::Arc;
use std::time::Duration;
use store::{EventStore, StoreError};
use webhook::Webhooks;

/// Where Sim flows post their events (with the hub's bearer token).
pub const EVENTS_PATH: &str = "/api/events";

/// The hub's own endpoints: `/api/<name>` and everything below it.
const ENDPOINTS: [&str; 5] = ["run", "events", "stream", "agents", "runs"];

/// Whether `path` (normalised) is one of the hub's endpoints.
pub fn claims(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/api/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    ENDPOINTS.contains(&first)
}

/// The running hub.
pub struct Hub {
    /// The settings a reload may replace (token, replay, heartbeat, limits,
    /// retention); the store, the agents file, the queue size and the
    /// channel cap are fixed at start.
    cfg: arc_swap::ArcSwap<config::Hub>,
    agents: Arc<Agents>,
    store: Arc<dyn EventStore>,
    journal: Journal,
    fanout: Arc<Fanout>,
    webhooks: arc_swap::ArcSwap<Webhooks>,
    respond_lock: tokio::sync::Mutex<()>,
    channels: channels::ChannelSet,
    demo: Option<demo::DemoFlow>,
    run_tokens: run_token::RunTokens,
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The event store (its message names the file).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The journal writer thread.
    #[error("cannot start the journal writer: {0}")]
    Journal(std::io::Error),
    /// The webhook HTTP client.
    #[error("cannot build the webhook client: {0}")]
    Webhooks(reqwest::Error),
    /// The built-in demo flow.
    #[error("cannot start the demo flow: {0}")]
    Demo(String),
    /// The run token key file.
    #[error("{0}")]
    RunTokens(String),
}

impl Hub {
    /// Opens the store (an unwritable or corrupt one is an error naming the
    /// file; with `link`, the shared Redis, which may be down for now),
    /// loads the agents and starts the journal writer.
    pub fn open(
        cfg: &config::Hub,
        link: Option<&Arc<crate::redis_link::RedisLink>>,
    ) -> Result<Arc<Self>, OpenError> {
        let fanout = Arc::new(match link {
            None => Fanout::new(cfg.subscriber_queue),
            Some(_) => Fanout::awaiting_reader(cfg.subscriber_queue),
        });
        let (store, known): (Arc<dyn EventStore>, Vec<String>) = match link {
            None => {
                let store = Arc::new(sqlite::SqliteStore::open(&cfg.store)?);
                let known = store.channels()?;
                (store, known)
            }
            Some(link) => {
                let store = Arc::new(redis_store::RedisStore::new(
                    link.clone(),
                    cfg.retention_per_channel,
                ));
                tail::start(link.clone(), store.clone(), fanout.clone())
                    .map_err(OpenError::Journal)?;
                // Redis may be down at start: the channel cap fills as
                // channels show up.
                let known = store.channels().unwrap_or_default();
                (store, known)
            }
        };
        let journal = Journal::start(store.clone(), fanout.clone(), link.is_none())
            .map_err(OpenError::Journal)?;
        let run_tokens = run_token::RunTokens::open(&cfg.run_token_key, cfg.run_token_ttl)
            .map_err(OpenError::RunTokens)?;
        Ok(Arc::new(Self {
            run_tokens,
            cfg: arc_swap::ArcSwap::from_pointee(cfg.clone()),
            agents: Arc::new(Agents::open(&cfg.agents_file)),
            store,
            journal,
            fanout,
            webhooks: arc_swap::ArcSwap::from_pointee(
                Webhooks::new(cfg.webhook_timeout).map_err(OpenError::Webhooks)?,
            ),
            channels: channels::ChannelSet::new(known, cfg.max_channels),
            respond_lock: tokio::sync::Mutex::new(()),
            demo: cfg
                .demo_events
                .as_deref()
                .map(demo::DemoFlow::new)
                .transpose()
                .map_err(OpenError::Demo)?,
        }))
    }

    /// Runs a blocking store read off the async workers.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn EventStore) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| StoreError::ReaderFailed(e.to_string()))?
    }

    /// A reloaded config's `[hub]`: the token, replay, heartbeat, body cap,
    /// retention and webhook timeout apply to new requests; returns the
    /// settings that need a restart, which keep their running values.
    pub fn apply(&self, new: &config::Hub) -> Vec<&'static str> {
        let old = self.cfg.load_full();
        let mut fixed = Vec::new();
        let mut next = new.clone();
        if new.store != old.store {
            fixed.push("hub.store");
        }
        if new.agents_file != old.agents_file {
            fixed.push("hub.agents_file");
        }
        if new.subscriber_queue != old.subscriber_queue {
            fixed.push("hub.subscriber_queue");
        }
        if new.max_channels != old.max_channels {
            fixed.push("hub.max_channels");
        }
        if new.demo_events != old.demo_events {
            fixed.push("hub.demo");
        }
        if (&new.run_token_key, new.run_token_ttl) != (&old.run_token_key, old.run_token_ttl) {
            fixed.push("hub.run_token_key / hub.run_token_ttl");
        }
        (next.store, next.agents_file) = (old.store.clone(), old.agents_file.clone());
        (next.subscriber_queue, next.max_channels) = (old.subscriber_queue, old.max_channels);
        next.demo_events = old.demo_events.clone();
        (next.run_token_key, next.run_token_ttl) = (old.run_token_key.clone(), old.run_token_ttl);
        if new.webhook_timeout != old.webhook_timeout {
            match Webhooks::new(new.webhook_timeout) {
                Ok(w) => self.webhooks.store(Arc::new(w)),
                Err(e) => {
                    tracing::error!(target: "hub", error = %e, "cannot rebuild the webhook client; the old timeout stays");
                    next.webhook_timeout = old.webhook_timeout;
                }
            }
        }
        self.cfg.store(Arc::new(next));
        fixed
    }

    /// For `/readyz`: whether the event store answers a read.
    pub fn store_ready(&self) -> Result<(), String> {
        self.store.ping().map_err(|e| e.to_string())
    }

    /// The background work: agents-file watch and retention.
    pub fn maintenance(self: &Arc<Self>) -> Maintenance {
        Maintenance(self.clone())
    }
}

#[async_trait]
impl Handler for Hub {
    fn claims(&self, path: &str) -> bool {
        claims(path)
    }

    fn streams(&self, path: &str) -> bool {
        matches!(api::endpoint(&http::Method::GET, path), Endpoint::Stream)
    }

    /// Sim flows post events with the hub's bearer token (they carry no
    /// cookie). The token opens that endpoint only: on a token route it
    /// never stands in for a session on runs, approvals or streams.
    fn check_token(
        &self,
        req: &pingora::http::RequestHeader,
        path: &str,
    ) -> Result<(), Box<Reply>> {
        if !matches!(api::endpoint(&http::Method::POST, path), Endpoint::Events) {
            let mut r = error(401, "the hub's bearer token opens only POST /api/events");
            r.www_authenticate = true;
            return Err(Box::new(r));
        }
        let authorization = req
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.events_scope(authorization).map(|_| ())
    }

    /// Answers one request for a path [`claims`] said is the hub's.
    async fn serve(&self, session: &mut Session, call: Call<'_>) -> pingora::Result<Handled> {
        let req = session.req_header();
        let ep = api::endpoint(&req.method, call.path);
        let query = req.uri.query().map(str::to_string);
        let header = |name: http::header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let authorization = header(http::header::AUTHORIZATION);
        let last_event_id = header(http::HeaderName::from_static("last-event-id"));
        // The endpoint's own contract, whatever route it is served on (a
        // token route has checked it already; an open or session route has not).
        let scope = match ep {
            Endpoint::Events => match self.events_scope(authorization.as_deref()) {
                Ok(scope) => scope,
                Err(reply) => {
                    // Refused before its body is read: don't reuse the connection.
                    session.set_keepalive(None);
                    return Ok(Handled::Reply(*reply));
                }
            },
            _ => api::Scope::Any,
        };
        let body = if ep.takes_body() {
            let max = self.cfg.load().max_event_bytes;
            match read_capped(session, max).await? {
                Ok(b) => b,
                Err(too_large) => {
                    return Ok(Handled::Reply(error(
                        413,
                        format!("{too_large} (hub.max_event_bytes)"),
                    )));
                }
            }
        } else {
            Bytes::new()
        };
        let reply = match ep {
            Endpoint::Agents => self.agents_reply(),
            Endpoint::Run(agent) => self.run(&agent, &body).await,
            Endpoint::Events => self.post_event(&body, scope).await,
            Endpoint::Runs => self.runs_reply(query.as_deref()).await,
            Endpoint::RunEvents(id) => self.run_events_reply(&id).await,
            Endpoint::Respond(id) => self.respond(&id, &body).await,
            Endpoint::Stream => {
                let channels = match query::channels(query.as_deref()) {
                    Ok(c) => c,
                    Err(why) => return Ok(Handled::Reply(error(400, why))),
                };
                let last = match query::last_event_id(last_event_id.as_deref(), query.as_deref()) {
                    Ok(l) => l,
                    Err(why) => return Ok(Handled::Reply(error(400, why))),
                };
                return sse::serve(self, session, channels, last, call.hsts, call.stream).await;
            }
            Endpoint::WrongMethod(allow) => {
                let mut r = error(405, format!("use {allow} here"));
                r.allow = Some(allow);
                r
            }
            Endpoint::Unknown => error(404, "no such hub endpoint"),
        };
        Ok(Handled::Reply(reply))
    }
}

/// Watches the agents file and prunes old events.
pub struct Maintenance(Arc<Hub>);

#[async_trait]
impl BackgroundService for Maintenance {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let hub = &self.0;
        let mut watch = tokio::time::interval(Duration::from_secs(1));
        let mut prune = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = watch.tick() => {
                    let agents = hub.agents.clone();
                    let _ = tokio::task::spawn_blocking(move || agents.reload_if_changed()).await;
                }
                _ = prune.tick() => {
                    let cfg = hub.cfg.load_full();
                    let before = crate::clock::now_ms() - i64::try_from(cfg.retention_age.as_millis()).unwrap_or(i64::MAX);
                    let keep = cfg.retention_per_channel;
                    match hub.read(move |s| s.prune(before, keep)).await {
                        Ok(0) => {}
                        Ok(n) => {
                            tracing::info!(target: "hub", removed = n, "pruned old events");
                            // Channels retention emptied free their place.
                            if let Ok(left) = hub.read(|s| s.channels()).await {
                                hub.channels.retain(left);
                            }
                        }
                        Err(e) => tracing::error!(target: "hub", error = %e, "pruning failed"),
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_only_its_endpoints() {
        assert!(claims("/api/run/research"));
        assert!(claims("/api/events"));
        assert!(claims("/api/stream"));
        assert!(claims("/api/agents"));
        assert!(claims("/api/runs/abc"));
        assert!(!claims("/api/workflows/x"));
        assert!(!claims("/api/auth/session"));
        assert!(!claims("/api/runner"));
        assert!(!claims("/apix/run"));
        assert!(!claims("/api/"));
    }
}
