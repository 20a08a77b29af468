//! The built-in demo flow: what an agent whose `webhookUrl` is
//! `builtin:demo` runs instead of a Sim workflow, so a first run with
//! nothing else installed shows a run from `started` to `done`. It behaves
//! like a Sim flow from outside: it posts `step` events and a `done` over
//! HTTP to the edge's own `POST /api/events`, with a token of its own that
//! opens that endpoint for demo agents' channels only. Off unless
//! `hub.demo` (or `ESPRIT_DEMO=on`) turns it on; the container turns it off.

use super::ids::{Npc, RunId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// The `webhookUrl` that names this flow.
pub const WEBHOOK: &str = "builtin:demo";

/// How long each step of the demo takes: long enough to watch.
const STEP: Duration = Duration::from_millis(700);

/// What the demo flow reports, in order, before `done`.
const STEPS: [&str; 3] = [
    "Reading the request",
    "Thinking it over (this is the built-in demo flow, not Sim)",
    "Writing the answer",
];

/// The running demo flow: where it posts and with what token.
pub struct DemoFlow {
    events_url: reqwest::Url,
    token: String,
    client: reqwest::Client,
}

/// One run the demo flow was asked to do.
pub struct DemoRun {
    /// The run id the hub issued.
    pub run_id: RunId,
    /// The channel its events go to.
    pub npc: Npc,
    /// What the browser sent with the run.
    pub payload: Value,
}

impl DemoFlow {
    /// A flow posting to `events_url` with a fresh random token.
    pub fn new(events_url: &str) -> Result<Self, String> {
        let events_url =
            reqwest::Url::parse(events_url).map_err(|e| format!("demo events URL: {e}"))?;
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(|e| format!("demo token: {e}"))?;
        let token = raw.iter().map(|b| format!("{b:02x}")).collect();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("esprit-edge-demo-flow/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("demo flow client: {e}"))?;
        Ok(Self {
            events_url,
            token,
            client,
        })
    }

    /// Whether `got` is the demo flow's token (constant time).
    pub fn is_token(&self, got: &str) -> bool {
        let (a, b) = (
            Sha256::digest(got.as_bytes()),
            Sha256::digest(self.token.as_bytes()),
        );
        bool::from(a.as_slice().ct_eq(b.as_slice()))
    }

    /// Runs `run` in the background: its steps and `done` arrive through
    /// the events API like a Sim flow's would.
    pub fn start(&self, run: DemoRun) {
        let (client, url, token) = (
            self.client.clone(),
            self.events_url.clone(),
            self.token.clone(),
        );
        tokio::spawn(async move {
            let post = |kind: &'static str, data: Value| {
                let body =
                    json!({ "npc": run.npc, "type": kind, "runId": run.run_id, "data": data });
                client
                    .post(url.clone())
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
            };
            for (i, message) in STEPS.iter().enumerate() {
                tokio::time::sleep(STEP).await;
                let data = json!({ "step": i + 1, "of": STEPS.len(), "message": message });
                if let Err(why) = check(post("step", data).await) {
                    tracing::warn!(target: "hub", run_id = %run.run_id, error = %why, "the demo flow could not post its event");
                    return;
                }
            }
            tokio::time::sleep(STEP).await;
            let done =
                json!({ "result": format!("Demo finished. You sent: {}", echo(&run.payload)) });
            if let Err(why) = check(post("done", done).await) {
                tracing::warn!(target: "hub", run_id = %run.run_id, error = %why, "the demo flow could not post its event");
            }
        });
    }
}

/// What the demo says back of the payload: its JSON, cut to a length that
/// always fits an event.
fn echo(payload: &Value) -> String {
    const MAX: usize = 200;
    let text = payload.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn check(r: reqwest::Result<reqwest::Response>) -> Result<(), String> {
    match r {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("the events API answered {}", resp.status())),
        Err(e) => Err(e.without_url().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Hub;
    use super::super::api::Scope;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn its_token_posts_for_demo_channels_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("agents.json"),
            r#"[{"agent":"demo","npc":"demo","webhookUrl":"builtin:demo"},
                {"agent":"sim","npc":"other","webhookUrl":"http://sim:3000/api/webhooks/trigger/x"}]"#,
        )
        .unwrap();
        let config = dir.path().join("edge.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nlisten = \"127.0.0.1:8080\"\ndata_dir = {:?}\n[hub]\ndemo = true\n[[routes]]\nprefix = \"/api/\"\nkind = \"hub\"\n",
                dir.path().display().to_string()
            ),
        )
        .unwrap();
        let cfg = crate::config::load_with_env(&config, Vec::new()).unwrap();
        assert_eq!(
            cfg.hub.demo_events.as_deref(),
            Some("http://127.0.0.1:8080/api/events")
        );
        let hub = Hub::open(&cfg.hub, None).unwrap();
        let token = hub.demo.as_ref().unwrap().token.clone();
        let bearer = format!("Bearer {token}");
        assert_eq!(hub.events_scope(Some(&bearer)).unwrap(), Scope::Demo);
        // Not the demo token, and no shared token configured: events are off.
        assert_eq!(
            hub.events_scope(Some("Bearer not-the-token-at-all"))
                .unwrap_err()
                .status,
            503
        );
        let other = hub
            .post_event(br#"{"npc":"other","type":"step"}"#, Scope::Demo)
            .await;
        assert_eq!(other.status, 403);
        let own = hub
            .post_event(br#"{"npc":"demo","type":"step"}"#, Scope::Demo)
            .await;
        assert_eq!(own.status, 202);
        // The shared token's scope posts anywhere, as before.
        let any = hub
            .post_event(br#"{"npc":"other","type":"step"}"#, Scope::Any)
            .await;
        assert_eq!(any.status, 202);
        // A run of the demo agent stays on its own channel whatever it asks
        // for, and nothing it answers or stores carries the token.
        let run = hub
            .run("demo", br#"{"npc":"other","payload":{"q":1}}"#)
            .await;
        assert_eq!(run.status, 202);
        let body = String::from_utf8_lossy(&run.body).into_owned();
        assert!(!body.contains(&token), "{body}");
        let runs = hub.runs_reply(Some("npc=demo")).await;
        let runs = String::from_utf8_lossy(&runs.body).into_owned();
        assert!(runs.contains("\"npc\":\"demo\""), "{runs}");
        assert!(!runs.contains(&token));
        let other = hub.runs_reply(Some("npc=other")).await;
        assert!(!String::from_utf8_lossy(&other.body).contains("\"agent\":\"demo\""));
    }

    #[test]
    fn the_echo_is_cut() {
        assert_eq!(super::echo(&serde_json::json!({"a": 1})), r#"{"a":1}"#);
        let long = super::echo(&serde_json::json!("x".repeat(1000)));
        assert_eq!(long.chars().count(), 201);
    }
}
