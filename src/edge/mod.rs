//! The Pingora service. Each phase is a thin call into a policy module:
//! `request` decides, `forward` rewrites what goes upstream, `headers` secures
//! what comes back, `errors` says what failed.

pub mod errors;
pub mod forward;
pub mod headers;
pub mod path;
pub mod request;
pub mod respond;
pub mod router;
pub mod upstream;

use crate::auth::csrf;
use crate::auth::gate::{self, Denial};
use crate::auth::service::{AuthService, Identity, SessionAlive};
use crate::auth::watch::Registration;
use crate::config::{Config, Route, RouteAuth};
use crate::hub::{Handled, Hub};
use crate::telemetry;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType, Result};
use request::{Decision, Facts, Policy};
use respond::Reply;
use std::sync::Arc;
use std::time::Instant;
use upstream::Upstreams;

/// Per-request state shared by the phases.
pub struct RequestCtx {
    started: Instant,
    facts: Facts,
    tls: bool,
    route: Option<Arc<Route>>,
    upstream: Option<String>,
    target: String,
    body_limit: u64,
    body_seen: u64,
    reason: Option<&'static str>,
    identity: Option<Identity>,
    /// For upgraded (websocket) streams on gated routes: is the session still live?
    alive: Option<SessionAlive>,
    alive_checked: Instant,
    /// Keeps a gated stream on the session watch while the request lives.
    watched: Option<Registration>,
    /// The upstream connection's socket, for watching a stream whose client
    /// connection is shared (HTTP/2).
    upstream_fd: Option<std::os::fd::RawFd>,
}

/// The edge proxy: routing, forwarding and response policy for both listeners.
pub struct Edge {
    policy: Policy,
    hub: Option<Arc<Hub>>,
    auth: Option<Arc<AuthService>>,
    upstreams: Upstreams,
    hsts: bool,
    keepalive_secs: u64,
}

impl Edge {
    /// Builds the per-process policy from a validated config; `hub` serves
    /// the routes of kind `hub` (they answer 503 without it).
    pub fn new(config: &Config, hub: Option<Arc<Hub>>, auth: Option<Arc<AuthService>>) -> Self {
        Self {
            policy: Policy::new(config),
            hub,
            auth,
            upstreams: Upstreams::new(&config.upstreams),
            hsts: config.tls.as_ref().is_some_and(|t| t.hsts),
            keepalive_secs: config.server.keepalive_timeout.as_secs(),
        }
    }

    fn hsts_for(&self, ctx: &RequestCtx) -> bool {
        self.hsts && ctx.tls
    }

    /// The session gate (DESIGN step 3): `Some(reply)` refuses the request.
    fn gate(
        &self,
        req: &pingora::http::RequestHeader,
        decision: &Decision,
        ctx: &mut RequestCtx,
    ) -> Option<Reply> {
        let route = decision.route()?;
        if route.auth != RouteAuth::Session || crate::hub::has_own_auth(&ctx.facts.path) {
            return None;
        }
        let Some(auth) = &self.auth else {
            return Some(Reply::error(
                503,
                "sign-in is not available",
                ctx.facts.json,
            ));
        };
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        match auth.identify(req, ctx.facts.secure()) {
            Some(id) => {
                // Unsafe methods, and websocket handshakes (GETs whose frames
                // can change state), must come from a page of this origin.
                if (ctx.facts.upgrade || csrf::needs_check(&req.method))
                    && let Err(e) = csrf::provenance(
                        header("sec-fetch-site"),
                        header("origin"),
                        &auth.origin_here(req, ctx.facts.proto),
                    )
                {
                    return Some(Reply::error(403, e.message(), ctx.facts.json));
                }
                ctx.identity = Some(id);
                if ctx.facts.upgrade {
                    // A websocket outlives the request: the session watch closes it
                    // when the session ends, and it re-checks as frames flow.
                    ctx.alive = auth.liveness(req, ctx.facts.secure());
                }
                None
            }
            None => {
                let target = match req.uri.query() {
                    Some(q) => format!("{}?{q}", ctx.facts.path),
                    None => ctx.facts.path.clone(),
                };
                match gate::deny(
                    &req.method,
                    header("sec-fetch-mode"),
                    header("accept"),
                    ctx.facts.upgrade,
                    &target,
                ) {
                    Denial::Login { status, location } => Some(Reply::redirect(status, location)),
                    Denial::Unauthorized => {
                        Some(Reply::error(401, "sign in first", ctx.facts.json))
                    }
                }
            }
        }
    }
}

/// How often a stream re-checks its session (on traffic in either direction).
const STREAM_RECHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Ends a stream (websocket or SSE) whose session was logged out, expired or revoked.
fn check_still_signed_in(ctx: &mut RequestCtx) -> Result<()> {
    let Some(alive) = &ctx.alive else {
        return Ok(());
    };
    if ctx.alive_checked.elapsed() < STREAM_RECHECK {
        return Ok(());
    }
    ctx.alive_checked = Instant::now();
    if alive() {
        return Ok(());
    }
    tracing::info!(target: "auth", "session ended; closing its stream");
    Error::e_explain(ErrorType::ConnectionClosed, "session ended").map_err(|e| e.into_down())
}

/// Puts a gated stream on the session watch, so it is closed when the
/// session ends even if nothing flows again. Over HTTP/1.1 the watch shuts
/// the client's socket (a websocket, or an SSE response, owns its
/// connection). Over HTTP/2 the client's connection carries other requests,
/// so it shuts the stream's own upstream socket instead: Pingora then ends
/// the response, and only that stream. Without either (or a spare
/// descriptor) the stream still ends on its next frame or event.
fn watch_stream(
    auth: &AuthService,
    session: &Session,
    upstream_fd: Option<std::os::fd::RawFd>,
    alive: SessionAlive,
) -> Option<Registration> {
    let fd = match session.downstream_session.stream() {
        Some(client) => client.id(),
        None => upstream_fd?,
    };
    match auth.streams().register(fd, alive) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(target: "auth", error = %e, "cannot watch this stream; it ends on its next frame after the session");
            None
        }
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> Self::CTX {
        RequestCtx {
            started: Instant::now(),
            facts: Facts::default(),
            tls: false,
            route: None,
            upstream: None,
            target: String::new(),
            body_limit: 0,
            body_seen: 0,
            reason: None,
            identity: None,
            alive: None,
            alive_checked: Instant::now(),
            watched: None,
            upstream_fd: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        session.set_keepalive(Some(self.keepalive_secs));
        ctx.tls = is_tls(session);
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let req = session.req_header();
        ctx.facts = self.policy.facts(req, peer, ctx.tls);
        let decision = self.policy.decide(req, ctx.tls, &mut ctx.facts);
        if let Some(reply) = self.gate(session.req_header(), &decision, ctx) {
            ctx.route = decision.route().cloned();
            ctx.reason = Some(reply.reason);
            respond::send(session, &reply, self.hsts_for(ctx)).await?;
            return Ok(true);
        }
        match decision {
            Decision::Reply(reply, route) => {
                if reply.status == 413 {
                    // Don't read a body we refused just to keep the connection.
                    session.set_keepalive(None);
                }
                ctx.route = route;
                ctx.reason = Some(reply.reason);
                respond::send(session, &reply, self.hsts_for(ctx)).await?;
                Ok(true)
            }
            Decision::Hub(route) => {
                ctx.route = Some(route);
                let hsts = self.hsts_for(ctx);
                let reply = match &self.hub {
                    Some(hub) => {
                        let alive = match (&self.auth, ctx.identity.is_some()) {
                            (Some(auth), true) => {
                                auth.liveness(session.req_header(), ctx.facts.secure())
                            }
                            _ => None,
                        };
                        match hub.serve(session, &ctx.facts.path, hsts, alive).await? {
                            Handled::Reply(r) => r,
                            Handled::Streamed => return Ok(true),
                        }
                    }
                    None => Reply::error(503, "the hub is not running", true),
                };
                ctx.reason = Some(reply.reason);
                respond::send(session, &reply, hsts).await?;
                Ok(true)
            }
            Decision::Auth(route) => {
                ctx.route = Some(route);
                let hsts = self.hsts_for(ctx);
                let reply = match &self.auth {
                    Some(auth) => {
                        auth.serve(
                            session,
                            &ctx.facts.path,
                            ctx.facts.secure(),
                            ctx.facts.proto,
                            ctx.facts.client_ip,
                        )
                        .await?
                    }
                    None => Reply::error(503, "sign-in is not available", true),
                };
                ctx.reason = Some(reply.reason);
                respond::send(session, &reply, hsts).await?;
                Ok(true)
            }
            Decision::Proxy(fwd) => {
                if let (Some(auth), Some(alive)) = (&self.auth, &ctx.alive) {
                    ctx.watched = watch_stream(auth, session, None, alive.clone());
                }
                ctx.body_limit = request::body_limit(&self.policy, Some(&fwd.route));
                ctx.route = Some(fwd.route);
                ctx.upstream = Some(fwd.upstream);
                ctx.target = fwd.target;
                Ok(false)
            }
        }
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
        if let Some(chunk) = body {
            ctx.body_seen += chunk.len() as u64;
            if ctx.body_limit > 0 && ctx.body_seen > ctx.body_limit {
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
        let (Some(route), Some(name)) = (&ctx.route, &ctx.upstream) else {
            return Error::e_explain(ErrorType::InternalError, "no upstream chosen");
        };
        let addr = self.upstreams.address(name).await?;
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
        ctx.upstream_fd = Some(fd);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut pingora::http::RequestHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        let client_ip = ctx
            .facts
            .client_ip
            .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        let fwd = forward::Forwarded {
            client_ip,
            proto: ctx.facts.proto,
            host: ctx.facts.authority.as_deref(),
            user: ctx.identity.as_ref().map(|i| i.user.as_str()),
            email: ctx.identity.as_ref().and_then(|i| i.email.as_deref()),
        };
        forward::prepare(upstream_request, &fwd, ctx.facts.upgrade, &ctx.target)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Self::CTX,
    ) -> Result<()> {
        if ctx.identity.is_some()
            && ctx.alive.is_none()
            && headers::is_event_stream(upstream_response)
            && let Some(auth) = &self.auth
        {
            // A proxied SSE stream of a signed-in user ends with the session too.
            ctx.alive = auth.liveness(session.req_header(), ctx.facts.secure());
            if let Some(alive) = &ctx.alive {
                ctx.watched = watch_stream(auth, session, ctx.upstream_fd, alive.clone());
            }
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
        ctx.reason = Some(failure.message);
        let route = ctx.route.as_ref().map(|r| r.label()).unwrap_or("");
        let upstream = ctx.upstream.as_deref().unwrap_or("");
        if failure.status == 0 || *e.esource() == pingora::ErrorSource::Downstream {
            // The client left or sent something bad: not the edge's or the upstream's fault.
            tracing::info!(target: "edge", route, upstream, status = failure.status, error = %e, "{}", failure.message);
        } else {
            tracing::warn!(target: "edge", route, upstream, status = failure.status, error = %e, "{}", failure.message);
        }
        if failure.status > 0 && session.response_written().is_none() {
            let reply = Reply::error(failure.status, failure.message, ctx.facts.json);
            if let Err(we) = respond::send(session, &reply, self.hsts_for(ctx)).await {
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
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let req = session.req_header();
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
            duration: ctx.started.elapsed(),
            route: ctx.route.as_ref().map(|r| r.label()),
            upstream: ctx.upstream.as_deref(),
            proto: ctx.facts.proto,
            error: e
                .map(|e| e.to_string())
                .or_else(|| ctx.reason.filter(|_| status >= 400).map(str::to_string)),
        });
    }
}
