//! The hub's JSON endpoints. Each takes what it needs (never the socket) and
//! returns the reply, so the rules are tested without a server.

use super::Hub;
use super::event::{EventType, NewEvent};
use super::ids::{Npc, RunId};
use super::query;
use crate::clock::now_ms;
use crate::reply::Reply;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Which endpoint a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /api/agents`
    Agents,
    /// `POST /api/run/:agent`
    Run(String),
    /// `POST /api/events`
    Events,
    /// `GET /api/stream`
    Stream,
    /// `GET /api/runs`
    Runs,
    /// `GET /api/runs/:id`
    RunEvents(String),
    /// `POST /api/runs/:id/respond`
    Respond(String),
    /// A hub path with the wrong method; carries the allowed one.
    WrongMethod(&'static str),
    /// A hub path that does not exist.
    Unknown,
}

impl Endpoint {
    /// Whether the endpoint reads a request body.
    pub fn takes_body(&self) -> bool {
        matches!(
            self,
            Endpoint::Run(_) | Endpoint::Events | Endpoint::Respond(_)
        )
    }
}

/// Maps method and normalised path to an endpoint.
pub fn endpoint(method: &http::Method, path: &str) -> Endpoint {
    let rest = path.strip_prefix("/api/").unwrap_or("");
    let parts: Vec<&str> = rest.split('/').collect();
    let (want, ep) = match parts.as_slice() {
        ["agents"] => ("GET", Endpoint::Agents),
        ["run", agent] if !agent.is_empty() => ("POST", Endpoint::Run((*agent).to_string())),
        ["events"] => ("POST", Endpoint::Events),
        ["stream"] => ("GET", Endpoint::Stream),
        ["runs"] => ("GET", Endpoint::Runs),
        ["runs", id] if !id.is_empty() => ("GET", Endpoint::RunEvents((*id).to_string())),
        ["runs", id, "respond"] if !id.is_empty() => ("POST", Endpoint::Respond((*id).to_string())),
        _ => return Endpoint::Unknown,
    };
    let ok = method.as_str() == want || (want == "GET" && method == http::Method::HEAD);
    if ok { ep } else { Endpoint::WrongMethod(want) }
}

/// What a token lets `POST /api/events` post for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The hub's shared token: any channel.
    Any,
    /// The demo flow's own token: only the channels of demo agents.
    Demo,
    /// A run's own token: that run of that npc only.
    Run(super::run_token::Grant),
}

/// A JSON error `{"error": why}`.
pub fn error(status: u16, why: impl Into<String>) -> Reply {
    Reply::json(status, &json!({ "error": why.into() }), "hub error")
}

/// Parses a JSON object body; an empty body is `{}`.
fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Box<Reply>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Box::new(error(400, "the body must be a JSON object"))),
        Err(e) => Err(Box::new(error(
            400,
            format!("the body is not valid JSON: {e}"),
        ))),
    }
}

impl Hub {
    /// `GET /api/agents`.
    pub fn agents_reply(&self) -> Reply {
        Reply::json(200, &self.agents.public_list(), "agents")
    }

    /// `POST /api/run/:agent`: record `started`, call the webhook, report.
    pub async fn run(&self, agent_id: &str, body: &[u8]) -> Reply {
        let Some(agent) = self.agents.find(agent_id) else {
            return error(404, format!("no agent named {agent_id:?}"));
        };
        if agent.is_demo() && self.demo.is_none() {
            return error(
                503,
                "this agent runs the built-in demo flow, which is off (hub.demo, ESPRIT_DEMO)",
            );
        }
        let req = match object(body) {
            Ok(m) => m,
            Err(r) => return *r,
        };
        let payload = req.get("payload").cloned().unwrap_or(Value::Null);
        let npc = match req.get("npc") {
            // The demo flow's token posts for demo channels only: its runs stay on its own.
            _ if agent.is_demo() => Some(agent.npc.clone()),
            None | Some(Value::Null) => Some(agent.npc.clone()),
            Some(Value::String(n)) => Npc::parse(n),
            Some(_) => None,
        };
        let Some(npc) = npc else {
            return error(400, "npc must be 1-64 of a-z 0-9 _ -");
        };
        if let Err(e) = self.channels.admit(&npc, self.agents.has_npc(&npc)) {
            return error(429, e.to_string());
        }
        let run_id = RunId::generate();
        let started = NewEvent {
            ts: now_ms(),
            npc: npc.clone(),
            kind: EventType::Started,
            run_id: Some(run_id.clone()),
            agent: Some(agent.agent.clone()),
            data: json!({ "agent": agent.agent, "payload": payload }),
        };
        if let Err(e) = self.journal.append(started).await {
            return error(503, format!("cannot record the run: {e}"));
        }
        if let (true, Some(demo)) = (agent.is_demo(), &self.demo) {
            demo.start(super::demo::DemoRun {
                run_id: run_id.clone(),
                npc,
                payload,
            });
            return Reply::json(202, &json!({ "ok": true, "runId": run_id }), "run started");
        }
        let mut call =
            json!({ "runId": run_id, "agent": agent.agent, "npc": npc, "payload": payload });
        // The run's own token: posts for this npc and run only. Never in an
        // event, so neither `started` nor `/api/runs` can reveal it.
        if let Some(t) = self.run_tokens.issue(&npc, &run_id, now_ms()) {
            call["eventsToken"] = json!(t);
        }
        let webhooks = self.webhooks.load_full();
        match webhooks.post(&agent.webhook, &call).await {
            Ok(_) => Reply::json(202, &json!({ "ok": true, "runId": run_id }), "run started"),
            Err(reason) => {
                tracing::warn!(target: "hub", agent = %agent.agent, run_id = %run_id, error = %reason, "run webhook failed");
                let failed = NewEvent {
                    ts: now_ms(),
                    npc,
                    kind: EventType::Error,
                    run_id: Some(run_id.clone()),
                    agent: None,
                    data: json!({ "error": reason, "stage": "webhook" }),
                };
                if let Err(e) = self.journal.append(failed).await {
                    tracing::error!(target: "hub", run_id = %run_id, error = %e, "could not record the webhook failure");
                }
                Reply::json(
                    502,
                    &json!({ "error": reason, "runId": run_id }),
                    "run webhook failed",
                )
            }
        }
    }

    /// Checks `Authorization` for `POST /api/events`: what it may post
    /// for, or the reply that refuses it.
    pub fn events_scope(&self, authorization: Option<&str>) -> Result<Scope, Box<Reply>> {
        if let (Some(demo), Some(got)) = (&self.demo, crate::identity::bearer(authorization))
            && demo.is_token(got)
        {
            return Ok(Scope::Demo);
        }
        let cfg = self.cfg.load();
        let refuse = |why: &str| {
            let mut r = error(401, why);
            r.www_authenticate = true;
            Err(Box::new(r))
        };
        let Some(got) = crate::identity::bearer(authorization) else {
            return refuse("missing bearer token (Authorization: Bearer <token>)");
        };
        if super::run_token::looks_like_jwt(got) {
            return match self.run_tokens.check(got, now_ms()) {
                Ok(grant) => Ok(Scope::Run(grant)),
                Err(why) => refuse(&why.to_string()),
            };
        }
        let Some(want) = &cfg.events_token else {
            return Err(Box::new(error(
                503,
                "the shared events token is not set (hub.events_token or ESPRIT_EVENTS_TOKEN): post with the run's eventsToken",
            )));
        };
        // Digests first: equal lengths, so the comparison's time says nothing
        // about the token's length either.
        let (got, want) = (
            Sha256::digest(got.as_bytes()),
            Sha256::digest(want.as_bytes()),
        );
        if !cfg.accept_shared_token {
            // Before any comparison: a guess learns nothing about the old token.
            return refuse(
                "the shared events token is turned off (hub.accept_shared_token = false): post with the run's eventsToken",
            );
        }
        if !bool::from(got.as_slice().ct_eq(want.as_slice())) {
            return refuse("wrong bearer token");
        }
        Ok(Scope::Any)
    }

    /// `POST /api/events` (token already checked): validate, store, ack.
    pub async fn post_event(&self, body: &[u8], scope: Scope) -> Reply {
        let req = match object(body) {
            Ok(m) => m,
            Err(r) => return *r,
        };
        let npc = match req.get("npc") {
            Some(Value::String(n)) => match Npc::parse(n) {
                Some(npc) => npc,
                None => return error(400, format!("npc {n:?} is not 1-64 of a-z 0-9 _ -")),
            },
            _ => return error(400, "npc is required (a string)"),
        };
        let kind = match req.get("type") {
            Some(Value::String(t)) => match EventType::parse(t) {
                Some(k) => k,
                None => {
                    return error(
                        400,
                        format!("type {t:?} is not one of started, step, awaiting, done, error"),
                    );
                }
            },
            _ => {
                return error(
                    400,
                    "type is required (started, step, awaiting, done or error)",
                );
            }
        };
        let run_id = match req.get("runId") {
            None | Some(Value::Null) => None,
            Some(Value::String(r)) => match RunId::parse(r) {
                Some(id) => Some(id),
                None => return error(400, "runId must be 1-64 of A-Z a-z 0-9 _ -"),
            },
            Some(_) => return error(400, "runId must be 1-64 of A-Z a-z 0-9 _ -"),
        };
        if scope == Scope::Demo && !self.agents.is_demo_npc(&npc) {
            return error(
                403,
                "the demo flow's token posts only for the channels of demo agents",
            );
        }
        let mut renewed = None;
        if let Scope::Run(grant) = &scope {
            if npc.as_str() != grant.npc
                || run_id.as_ref().map(RunId::as_str) != Some(grant.run.as_str())
            {
                return error(
                    403,
                    format!(
                        "this events token posts only for npc {:?}, run {:?} (with that runId)",
                        grant.npc, grant.run
                    ),
                );
            }
            // Renewed only while the run goes on: not by its last event, nor
            // for a run that has already ended.
            if self.run_tokens.due(grant, now_ms())
                && !matches!(kind, EventType::Done | EventType::Error)
                && !self.run_ended(&grant.run).await
            {
                renewed = self.run_tokens.renewal(grant, now_ms());
            }
        }
        if let Err(e) = self.channels.admit(&npc, self.agents.has_npc(&npc)) {
            return error(429, e.to_string());
        }
        let ev = NewEvent {
            ts: now_ms(),
            npc,
            kind,
            run_id,
            agent: None,
            data: req.get("data").cloned().unwrap_or(Value::Null),
        };
        match self.journal.append(ev).await {
            Ok(stored) => {
                let mut ack = json!({ "id": stored.id });
                if let Some(t) = renewed {
                    // The run's token, renewed: the flow posts with this one from now on.
                    ack["eventsToken"] = json!(t);
                }
                Reply::json(202, &ack, "event stored")
            }
            Err(e) => error(503, format!("cannot store the event: {e}")),
        }
    }

    /// Whether run `run` has a `done` or `error` event (asked only when a
    /// token is due for renewal, about once per half-lifetime of a run).
    async fn run_ended(&self, run: &str) -> bool {
        let id = run.to_string();
        match self.read(move |s| s.run_events(&id)).await {
            Ok(evs) => evs
                .iter()
                .any(|e| matches!(e.kind, EventType::Done | EventType::Error)),
            // Unknown: no renewal; the current token still works until it expires.
            Err(_) => true,
        }
    }

    /// `GET /api/runs?npc=&limit=`.
    pub async fn runs_reply(&self, q: Option<&str>) -> Reply {
        let npc = query::param(q, "npc");
        if let Some(n) = &npc
            && Npc::parse(n).is_none()
        {
            return error(400, format!("npc {n:?} is not 1-64 of a-z 0-9 _ -"));
        }
        let limit = match query::limit(q, 50, 500) {
            Ok(l) => l,
            Err(why) => return error(400, why),
        };
        match self.read(move |s| s.runs(npc.as_deref(), limit)).await {
            Ok(runs) => Reply::json(200, &json!({ "runs": runs }), "runs"),
            Err(e) => error(503, e.to_string()),
        }
    }

    /// `GET /api/runs/:id`.
    pub async fn run_events_reply(&self, run_id: &str) -> Reply {
        if RunId::parse(run_id).is_none() {
            return error(400, "run ids are 1-64 of A-Z a-z 0-9 _ -");
        }
        let id = run_id.to_string();
        match self.read(move |s| s.run_events(&id)).await {
            Ok(evs) if evs.is_empty() => error(404, format!("no run {run_id:?}")),
            Ok(evs) => {
                let list: Vec<Value> = evs.iter().map(|e| e.to_value()).collect();
                Reply::json(200, &json!({ "runId": run_id, "events": list }), "run")
            }
            Err(e) => error(503, e.to_string()),
        }
    }

    /// `POST /api/runs/:id/respond`: relay a person's answer to the flow that
    /// waits for it, only to a host one of our agents' webhooks live on.
    pub async fn respond(&self, run_id: &str, body: &[u8]) -> Reply {
        let Some(run) = RunId::parse(run_id) else {
            return error(400, "run ids are 1-64 of A-Z a-z 0-9 _ -");
        };
        let answer = match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            Err(e) => return error(400, format!("the body is not valid JSON: {e}")),
        };
        // One response at a time, so two clicks cannot both relay.
        let _one = self.respond_lock.lock().await;
        let id = run_id.to_string();
        let events = match self.read(move |s| s.run_events(&id)).await {
            Ok(e) => e,
            Err(e) => return error(503, e.to_string()),
        };
        if events.is_empty() {
            return error(404, format!("no run {run_id:?}"));
        }
        let Some(waiting) = events.last().filter(|e| e.kind == EventType::Awaiting) else {
            return error(409, format!("run {run_id:?} is not awaiting a response"));
        };
        let Some(url) = waiting.data.get("resumeUrl").and_then(Value::as_str) else {
            return error(409, "the awaiting event carries no data.resumeUrl");
        };
        let url = match reqwest::Url::parse(url) {
            Ok(u) => u,
            Err(_) => return error(409, "the awaiting event's resumeUrl is not a URL"),
        };
        if !self.agents.is_webhook_origin(&url) {
            return error(
                403,
                "resumeUrl is not on a host of any agent's webhook; refusing to relay",
            );
        }
        let Some(npc) = Npc::parse(&waiting.npc) else {
            return error(500, "the stored run has an invalid npc");
        };
        // Across edges sharing a store, only one answer is relayed: the
        // lock above is this process's, the claim is the store's.
        let awaiting = waiting.id;
        match self.read(move |s| s.claim(awaiting)).await {
            Ok(true) => {}
            Ok(false) => {
                return error(409, format!("run {run_id:?} was answered already"));
            }
            Err(e) => return error(503, e.to_string()),
        }
        let webhooks = self.webhooks.load_full();
        if let Err(reason) = webhooks.post(&url, &answer).await {
            let _ = self
                .read(move |s| {
                    s.release(awaiting);
                    Ok(())
                })
                .await;
            return error(502, reason);
        }
        let step = NewEvent {
            ts: now_ms(),
            npc,
            kind: EventType::Step,
            run_id: Some(run),
            agent: None,
            data: json!({ "respondedTo": waiting.id, "response": answer }),
        };
        match self.journal.append(step).await {
            Ok(ev) => Reply::json(202, &json!({ "ok": true, "id": ev.id }), "response relayed"),
            Err(e) => error(503, format!("relayed, but cannot record it: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint(&Method::POST, "/api/run/research"),
            Endpoint::Run("research".into())
        );
        assert_eq!(
            endpoint(&Method::GET, "/api/run/research"),
            Endpoint::WrongMethod("POST")
        );
        assert_eq!(endpoint(&Method::GET, "/api/stream"), Endpoint::Stream);
        assert_eq!(endpoint(&Method::HEAD, "/api/agents"), Endpoint::Agents);
        assert_eq!(
            endpoint(&Method::GET, "/api/runs/abc"),
            Endpoint::RunEvents("abc".into())
        );
        assert_eq!(
            endpoint(&Method::POST, "/api/runs/abc/respond"),
            Endpoint::Respond("abc".into())
        );
        assert_eq!(endpoint(&Method::GET, "/api/run/"), Endpoint::Unknown);
        assert_eq!(endpoint(&Method::GET, "/api/stream/x"), Endpoint::Unknown);
        assert!(Endpoint::Events.takes_body());
    }

    #[test]
    fn bodies() {
        assert!(object(b"").unwrap().is_empty());
        assert!(object(b"[1]").is_err());
        assert!(object(b"{").is_err());
        assert_eq!(object(br#"{"payload":1}"#).unwrap()["payload"], 1);
    }
}
