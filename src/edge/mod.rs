//! The Pingora service. Each phase is a thin call into a policy module:
//! `request` decides, the route's gate (`auth::gate`, or its handler's token
//! check) admits, a registered [`Handler`](crate::reply::handler::Handler)
//! answers in-process, `forward` rewrites what goes upstream,
//! `reply::headers` secures what comes back, `errors` says what failed.

pub mod compression;
pub mod connection;
pub mod context;
pub mod errors;
pub mod forward;
pub mod framing;
pub mod handlers;
pub mod live;
pub mod path;
pub mod request;
pub mod request_id;
pub mod response;
pub mod router;
pub mod upstream;

use crate::auth::gate::Asked;
use crate::auth::service::AuthService;
use crate::config::{Config, HandlerKind, Route, RouteAction, RouteAuth};
use crate::limit::rate::{Exceeded, RateRules, Stage, Subject};
use crate::limit::streams::{Opener, StreamCaps, StreamRefused};
use crate::reply::handler::{Call, Handled};
use crate::reply::{self, Reply, headers};
use crate::telemetry;
use crate::watch::{StreamGuard, StreamWatch};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use context::{Proxied, RequestCtx};
use handlers::Handlers;
use live::{Live, LiveConfig};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use request::Decision;
use std::sync::Arc;

/// The edge proxy: routing, forwarding and response policy for both listeners.
pub struct Edge {
    /// What a reload replaces; each request takes a snapshot into its context.
    live: LiveConfig,
    handlers: Handlers,
    auth: Option<Arc<AuthService>>,
    streams: Arc<StreamWatch>,
    stream_caps: Arc<StreamCaps>,
}

impl Edge {
    /// Builds the per-process policy from a validated config. `handlers`
    /// serve the in-process routes (a kind without one answers 503); `auth`
    /// gates `auth = "session"` routes; gated streams go on `streams`;
    /// `limits` are the rate rules.
    pub fn new(
        config: &Config,
        handlers: Handlers,
        auth: Option<Arc<AuthService>>,
        streams: Arc<StreamWatch>,
        limits: Arc<RateRules>,
    ) -> Self {
        Self {
            live: Arc::new(ArcSwap::from_pointee(Live::new(config, limits))),
            handlers,
            auth,
            streams,
            stream_caps: Arc::new(StreamCaps::new(
                config.server.max_streams_per_ip,
                config.server.max_streams_per_session,
            )),
        }
    }

    /// The handle a reload swaps the request handling through.
    pub fn live(&self) -> LiveConfig {
        self.live.clone()
    }

    fn hsts_for(&self, ctx: &RequestCtx) -> bool {
        ctx.live.as_ref().is_some_and(|l| l.hsts) && ctx.tls
    }

    /// The route's gate (DESIGN step 3): the route says how it is
    /// authenticated. `Err(reply)` refuses the request.
    fn admit(
        &self,
        req: &RequestHeader,
        route: &Route,
        ctx: &mut RequestCtx,
    ) -> Result<(), Box<Reply>> {
        let json = ctx.facts.json;
        match route.auth {
            RouteAuth::None => Ok(()),
            RouteAuth::Token => {
                let handler = match &route.action {
                    RouteAction::Handler { kind, .. } => self
                        .handlers
                        .get(*kind)
                        .ok_or_else(|| Box::new(Reply::error(503, kind.unavailable(), json)))?,
                    _ => {
                        return Err(Box::new(Reply::error(
                            401,
                            "this route takes no bearer token",
                            json,
                        )));
                    }
                };
                handler.check_token(req, &ctx.facts.path)
            }
            RouteAuth::Session => {
                let Some(auth) = &self.auth else {
                    let unavailable = HandlerKind::Auth.unavailable();
                    return Err(Box::new(Reply::error(503, unavailable, json)));
                };
                let asked = Asked {
                    path: &ctx.facts.path,
                    proto: ctx.facts.proto,
                    upgrade: ctx.facts.upgrade,
                    json,
                };
                let id = auth.gate(req, &asked)?;
                if ctx.facts.upgrade {
                    // A websocket outlives the request: it ends with its session.
                    ctx.stream = auth.liveness(req, ctx.facts.secure()).map(StreamGuard::new);
                }
                ctx.identity = Some(id);
                Ok(())
            }
        }
    }

    /// The signed identity assertion a gated route sends its upstream
    /// (audience: the upstream's name), unless the route turned it off.
    fn assertion_for(&self, ctx: &RequestCtx) -> Option<http::HeaderValue> {
        let (Some(id), Some(route), Some(p), Some(auth)) =
            (&ctx.identity, &ctx.route, &ctx.proxy, &self.auth)
        else {
            return None;
        };
        if !route.assertion {
            return None;
        }
        auth.assertion(
            id,
            &p.upstream,
            ctx.facts.authority.as_deref(),
            ctx.facts.proto,
        )
    }

    /// With sessions in Redis, reads the request's session on a blocking
    /// thread when the cache cannot answer, so the gate (synchronous, like
    /// its SQLite store) finds it cached and this worker thread, which
    /// serves other connections too, never waits on the network.
    async fn warm_session(&self, req: &RequestHeader, route: Option<&Route>, ctx: &RequestCtx) {
        let (Some(auth), Some(route)) = (&self.auth, route) else {
            return;
        };
        // The gate, and the sign-in handler (`/auth/me`, logout, a sign-in
        // replacing a session) read sessions; other routes never do.
        let sign_in = matches!(
            route.action,
            RouteAction::Handler {
                kind: HandlerKind::Auth,
                ..
            }
        );
        if route.auth != RouteAuth::Session && !sign_in {
            return;
        }
        let tokens = auth.to_warm(req, ctx.facts.secure());
        if tokens.is_empty() {
            return;
        }
        let auth = auth.clone();
        let _ = tokio::task::spawn_blocking(move || auth.warm(&tokens)).await;
    }

    /// Counts the request against the rate rules of `stage` (DESIGN step 2):
    /// this edge's count here, the count shared in Redis (rules with
    /// `shared`) on a blocking thread, so no worker thread waits on it.
    async fn limit(
        &self,
        stage: Stage,
        req: &RequestHeader,
        ctx: &RequestCtx,
    ) -> Result<(), Box<Reply>> {
        let Some(live) = &ctx.live else {
            return Ok(());
        };
        if !live.limits.has(stage) {
            return Ok(());
        }
        let mut who = Subject {
            ip: ctx.facts.client_ip,
            ..Subject::default()
        };
        if stage == Stage::Identity {
            who.user = ctx.identity.as_ref().map(|i| i.user.as_str());
            if who.user.is_some() {
                who.session = self
                    .auth
                    .as_ref()
                    .and_then(|a| a.session_token(req, ctx.facts.secure()));
            }
            who.token = crate::identity::bearer(
                req.headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok()),
            );
        }
        let path = if ctx.facts.path.is_empty() {
            req.uri.path()
        } else {
            &ctx.facts.path
        };
        let json = ctx.facts.json;
        let pending = live
            .limits
            .check_local(stage, &req.method, path, &who)
            .map_err(|e| Box::new(too_many(e, json)))?;
        if pending.is_empty() {
            return Ok(());
        }
        let limits = live.limits.clone();
        match tokio::task::spawn_blocking(move || limits.check_shared(&pending)).await {
            Ok(Err(e)) => Err(Box::new(too_many(e, json))),
            _ => Ok(()),
        }
    }

    /// Who opens a stream: the client, and its session when signed in.
    fn opener<'r>(&self, req: &'r RequestHeader, ctx: &RequestCtx) -> Opener<'r> {
        Opener {
            ip: ctx.facts.client_ip,
            session: match (&ctx.identity, &self.auth) {
                (Some(_), Some(auth)) => auth.session_token(req, ctx.facts.secure()),
                _ => None,
            },
        }
    }

    /// A long stream (websocket, SSE) takes a place under the stream caps
    /// for as long as it is open; over a cap it gets 429.
    fn hold_stream(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<(), Box<Reply>> {
        match self.stream_caps.acquire(self.opener(req, ctx)) {
            Ok(mut place) => {
                place.counted_as(if ctx.facts.upgrade {
                    "websocket"
                } else {
                    "sse"
                });
                ctx.stream_place = Some(place);
                Ok(())
            }
            Err(why) => {
                let (rule, n) = match why {
                    StreamRefused::PerIp(n) => ("streams-per-ip", n),
                    StreamRefused::PerSession(n) => ("streams-per-session", n),
                };
                telemetry::metrics::metrics().refused(rule);
                tracing::warn!(target: "limit", rule, max = n, client = ?ctx.facts.client_ip, path = %ctx.facts.path, "stream cap reached");
                let mut r = Reply::error(
                    429,
                    "too many open streams; close one first",
                    ctx.facts.json,
                );
                r.retry_after = Some(STREAM_RETRY_SECS);
                Err(Box::new(r))
            }
        }
    }

    /// Whether the decided request opens a long stream.
    fn opens_stream(&self, decision: &Decision, ctx: &RequestCtx) -> bool {
        ctx.facts.upgrade
            || ctx.facts.event_stream
            || matches!(decision, Decision::Handle(_, kind)
                if self.handlers.get(*kind).is_some_and(|h| h.streams(&ctx.facts.path)))
    }

    /// Puts a gated stream's socket on the watch, so it is closed when the
    /// session ends even if nothing flows again. Over HTTP/1.1 that is the
    /// client's socket (a websocket, or an SSE response, owns its
    /// connection). Over HTTP/2 the client's connection carries other
    /// requests, so it is the stream's own upstream socket: Pingora then ends
    /// the response, and only that stream.
    fn watch_socket(&self, session: &Session, ctx: &mut RequestCtx) {
        let upstream_fd = ctx.proxy.as_ref().and_then(|p| p.upstream_fd);
        let fd = match session.downstream_session.stream() {
            Some(client) => Some(client.id()),
            None => upstream_fd,
        };
        if let (Some(guard), Some(fd)) = (&mut ctx.stream, fd) {
            guard.watch_socket(&self.streams, fd);
        }
    }

    /// Serves a route of an in-process kind: one path for every handler.
    /// `None` when the handler wrote the response itself.
    async fn handle(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        kind: HandlerKind,
    ) -> Result<Option<Reply>> {
        let Some(handler) = self.handlers.get(kind) else {
            return Ok(Some(Reply::error(503, kind.unavailable(), true)));
        };
        // A handler's long response (hub SSE) ends with its session too.
        let stream = match (&self.auth, &ctx.identity) {
            (Some(auth), Some(_)) => ctx.stream.take().or_else(|| {
                auth.liveness(session.req_header(), ctx.facts.secure())
                    .map(StreamGuard::new)
            }),
            _ => None,
        };
        let call = Call {
            path: &ctx.facts.path,
            proto: ctx.facts.proto,
            client_ip: ctx.facts.client_ip,
            hsts: self.hsts_for(ctx),
            stream,
        };
        Ok(match handler.serve(session, call).await? {
            Handled::Reply(r) => Some(r),
            Handled::Streamed => None,
        })
    }
}

/// When a client refused a stream may try again: streams end at their own pace.
const STREAM_RETRY_SECS: u64 = 5;

/// The 429 for a request over a rate rule.
fn too_many(e: Exceeded, json: bool) -> Reply {
    telemetry::metrics::metrics().refused(&e.rule);
    let mut r = Reply::error(429, "too many requests; slow down", json);
    r.retry_after = Some(e.retry_after);
    r.headers.push(("ratelimit-policy", e.policy));
    r.headers.push(("ratelimit", e.state));
    r
}

/// Ends a stream (websocket or SSE) whose session was logged out, expired or revoked.
fn check_still_signed_in(ctx: &mut RequestCtx) -> Result<()> {
    if !ctx.stream.as_mut().is_some_and(StreamGuard::ended) {
        return Ok(());
    }
    tracing::info!(target: "auth", "session ended; closing its stream");
    Error::e_explain(ErrorType::ConnectionClosed, "session ended").map_err(|e| e.into_down())
}

/// Whether the request announces a body (which a refusal leaves unread).
fn has_body(req: &RequestHeader) -> bool {
    req.headers.contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx::default()
    }

    fn init_downstream_modules(&self, modules: &mut pingora::modules::http::HttpModules) {
        compression::install(modules);
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        connection::head::head_done(session.downstream_session.stream());
        // Off for everything the edge answers itself; a proxied request on a
        // compressing route turns it back on below.
        compression::set(session, false);
        let live = self.live.load_full();
        ctx.live = Some(live.clone());
        if session.get_keepalive().is_some() {
            // Only where Pingora keeps the connection: it turns keep-alive off
            // for a request framed by both Content-Length and Transfer-Encoding
            // (RFC 9112 §6.1) and for HTTP/1.0 without `Connection: keep-alive`.
            session.set_keepalive(Some(live.keepalive_secs));
        }
        // A body that stops arriving (nginx `client_body_timeout`); an
        // upgraded stream gets its route's idle time below.
        session.set_read_timeout(Some(live.body_timeout));
        ctx.tls = is_tls(session);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        ctx.facts = live.policy.facts(req, peer, ctx.tls);
        let claims = |kind, path: &str| self.handlers.claims(kind, path);
        let decision = live.policy.decide(req, ctx.tls, &mut ctx.facts, &claims);
        ctx.route = decision.route().cloned();
        // Limits by IP, then the route's gate, then limits by who it is.
        let req = session.req_header();
        let refused = match self.limit(Stage::Peer, req, ctx).await {
            Err(r) => Some((r, true)),
            Ok(()) => {
                self.warm_session(req, decision.route().map(|r| &**r), ctx)
                    .await;
                match decision.route().map(|route| self.admit(req, route, ctx)) {
                    Some(Err(r)) => Some((r, false)),
                    _ => match self.limit(Stage::Identity, req, ctx).await {
                        Err(r) => Some((r, true)),
                        Ok(()) if matches!(decision, Decision::Reply(..)) => None,
                        Ok(()) if self.opens_stream(&decision, ctx) => {
                            self.hold_stream(req, ctx).err().map(|r| (r, true))
                        }
                        Ok(()) => None,
                    },
                }
            }
        };
        if let Some((reply, limited)) = refused {
            let token_route = decision.route().is_some_and(|r| r.auth == RouteAuth::Token);
            if token_route || (limited && has_body(session.req_header())) {
                // Refused before its body is read: don't reuse the connection.
                session.set_keepalive(None);
            }
            ctx.reason = Some(reply.reason);
            reply::send(session, &reply, self.hsts_for(ctx)).await?;
            return Ok(true);
        }
        let reply = match decision {
            Decision::Reply(reply, _) => {
                if matches!(reply.status, 400 | 413 | 431) {
                    // Don't read a body we refused (or could not frame) just
                    // to keep the connection.
                    session.set_keepalive(None);
                }
                reply
            }
            Decision::Static(route, rel) => {
                let RouteAction::Static { root, spa } = &route.action else {
                    return Error::e_explain(
                        ErrorType::InternalError,
                        "static decision on another route",
                    );
                };
                let site = crate::static_files::Site {
                    root,
                    spa: *spa,
                    security: headers::SecurityHeaders {
                        csp: route.csp.as_deref(),
                        hsts: self.hsts_for(ctx),
                    },
                };
                let path = ctx.facts.path.clone();
                match crate::static_files::serve(session, &site, &rel, &path, ctx.facts.json)
                    .await?
                {
                    Some(reply) => reply,
                    None => return Ok(true),
                }
            }
            Decision::Handle(_, kind) => match self.handle(session, ctx, kind).await? {
                Some(reply) => reply,
                // The handler wrote the response itself (SSE).
                None => return Ok(true),
            },
            Decision::Proxy(fwd) => {
                let compress = compression::wanted(
                    fwd.route.compress,
                    ctx.facts.upgrade,
                    ctx.facts.event_stream,
                );
                compression::set(session, compress);
                ctx.proxy = Some(Proxied {
                    body_limit: request::body_limit(&live.policy, Some(&fwd.route)),
                    upstream: fwd.upstream,
                    target: fwd.target,
                    body_seen: 0,
                    upstream_fd: None,
                });
                if ctx.facts.upgrade {
                    // A websocket is quiet for as long as its route allows.
                    session.set_read_timeout(Some(fwd.route.timeouts.read));
                }
                // A gated websocket goes on the watch now (its socket is the client's).
                self.watch_socket(session, ctx);
                return Ok(false);
            }
        };
        ctx.reason = Some(reply.reason);
        reply::send(session, &reply, self.hsts_for(ctx)).await?;
        Ok(true)
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if session.was_upgraded() {
            // Websocket frames after the 101 are a stream, not a request body.
            return check_still_signed_in(ctx);
        }
        if let (Some(chunk), Some(p)) = (body, &mut ctx.proxy) {
            p.body_seen += chunk.len() as u64;
            if p.body_limit > 0 && p.body_seen > p.body_limit {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
        }
        Ok(())
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        let (Some(route), Some(p), Some(live)) = (&ctx.route, &ctx.proxy, &ctx.live) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        let addr = live.upstreams.address(&p.upstream).await?;
        Ok(upstream::peer(addr, &route.timeouts))
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        fd: std::os::fd::RawFd,
        _digest: Option<&pingora::protocols::Digest>,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if let Some(p) = &mut ctx.proxy {
            p.upstream_fd = Some(fd);
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client_ip = ctx
            .facts
            .client_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let assertion = self.assertion_for(ctx);
        let fwd = forward::Forwarded {
            client_ip,
            proto: ctx.facts.proto,
            host: ctx.facts.authority.as_deref(),
            user: ctx.identity.as_ref().map(|i| i.user.as_str()),
            email: ctx.identity.as_ref().and_then(|i| i.email.as_deref()),
            request_id: &ctx.facts.request_id,
            assertion: assertion.as_ref(),
        };
        let target = ctx.proxy.as_ref().map_or("", |p| p.target.as_str());
        forward::prepare(upstream_request, &fwd, ctx.facts.upgrade, target)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.identity.is_some()
            && ctx.stream.is_none()
            && headers::is_event_stream(upstream_response)
            && let Some(auth) = &self.auth
        {
            // A proxied SSE stream of a signed-in user ends with the session too.
            // (It holds a stream place already when it asked for one.)
            ctx.stream = auth
                .liveness(session.req_header(), ctx.facts.secure())
                .map(StreamGuard::new);
            self.watch_socket(session, ctx);
        }
        if headers::is_event_stream(upstream_response) {
            // An event stream the client did not announce: never compressed.
            compression::set(session, false);
        }
        if ctx.stream_place.is_none() && headers::is_event_stream(upstream_response) {
            // A stream the client did not announce still takes its place.
            let mut place = self
                .stream_caps
                .count(self.opener(session.req_header(), ctx));
            place.counted_as("sse");
            ctx.stream_place = Some(place);
        }
        if let (Some(live), Some(p)) = (&ctx.live, &ctx.proxy)
            && let Some(h) = live.first_byte.get(&p.upstream)
        {
            h.observe(ctx.started.elapsed().as_secs_f64());
        }
        let dropped = response::drop_edge_cookies(upstream_response)?;
        if dropped > 0 {
            let route = ctx.route.as_ref().map_or("", |r| r.label());
            let upstream = ctx.proxy.as_ref().map_or("", |p| p.upstream.as_str());
            tracing::warn!(target: "edge", route, upstream, dropped, "upstream tried to set the edge's own cookies; dropped");
        }
        let policy = headers::SecurityHeaders {
            csp: ctx.route.as_ref().and_then(|r| r.csp.as_deref()),
            hsts: self.hsts_for(ctx),
        };
        headers::apply(upstream_response, &policy)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Self::CTX,
    ) -> FailToProxy {
        let failure = errors::classify(e.etype(), e.esource());
        if let (Some(kind), Some(p)) =
            (errors::upstream_failure(e.etype(), e.esource()), &ctx.proxy)
        {
            telemetry::metrics::metrics().upstream_failure(&p.upstream, kind);
        }
        ctx.reason = Some(failure.message);
        let route = ctx.route.as_ref().map(|r| r.label()).unwrap_or("");
        let upstream = ctx.proxy.as_ref().map_or("", |p| p.upstream.as_str());
        if failure.status == 0 || *e.esource() == pingora::ErrorSource::Downstream {
            // The client left or sent something bad: not the edge's or the upstream's fault.
            tracing::info!(target: "edge", route, upstream, status = failure.status, error = %e, "{}", failure.message);
        } else {
            tracing::warn!(target: "edge", route, upstream, status = failure.status, error = %e, "{}", failure.message);
        }
        if failure.status > 0 && session.response_written().is_none() {
            // The edge's own answer now, not the upstream's: never compressed.
            compression::set(session, false);
            let navigation = !ctx.facts.json
                && *e.esource() != pingora::ErrorSource::Downstream
                && matches!(failure.status, 502 | 504)
                && {
                    let req = session.req_header();
                    let header = |n: &str| req.headers.get(n).and_then(|v| v.to_str().ok());
                    req.method == http::Method::GET
                        && crate::auth::gate::is_navigation(
                            header("sec-fetch-mode"),
                            header("accept"),
                        )
                };
            let reply = match (&ctx.proxy, navigation) {
                (Some(p), true) => {
                    let console = ctx.live.as_ref().and_then(|l| l.console.as_deref());
                    Reply::html(
                        failure.status,
                        errors::unavailable_page(&failure, &p.upstream, console),
                        failure.message,
                    )
                }
                _ => Reply::error(failure.status, failure.message, ctx.facts.json),
            };
            if let Err(we) = reply::send(session, &reply, self.hsts_for(ctx)).await {
                tracing::debug!(target: "edge", error = %we, "could not write the error response");
            }
        }
        FailToProxy {
            error_code: failure.status,
            can_reuse_downstream: false,
        }
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Self::CTX,
    ) -> Result<Option<std::time::Duration>> {
        // Gated websockets and SSE streams: their session must still live.
        check_still_signed_in(ctx)?;
        Ok(None)
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &Self::CTX, _error: &Error) -> bool {
        // fail_to_proxy logs every failure with its route and upstream.
        true
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Self::CTX) {
        connection::head::next_head(session.downstream_session.stream());
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
        let duration = ctx.started.elapsed();
        let route = ctx.route.as_ref().map(|r| r.label());
        // A request refused before request_filter (a bad or slow head) took
        // no snapshot: it counts under the current config's "no route".
        let live = ctx.live.clone().unwrap_or_else(|| self.live.load_full());
        live.metrics_of(ctx.route.as_deref())
            .request(&req.method, status, duration);
        telemetry::access(&telemetry::Access {
            client: ctx.facts.client_ip,
            method: req.method.as_str(),
            path: if ctx.facts.path.is_empty() {
                req.uri.path()
            } else {
                &ctx.facts.path
            },
            status,
            bytes: session.body_bytes_sent(),
            duration,
            route,
            upstream: ctx.proxy.as_ref().map(|p| p.upstream.as_str()),
            proto: ctx.facts.proto,
            request_id: &ctx.facts.request_id,
            error: e
                .map(|e| e.to_string())
                .or_else(|| ctx.reason.filter(|_| status >= 400).map(str::to_string)),
        });
    }
}
