//! The built-in console and the first run, as a person meets them.
//!
//! In headless Chromium (`tests/peers/browser-console.js`): sign in, see the
//! agents, run the demo agent (the built-in demo flow posting through the
//! real events API) and one wired to a test webhook (whose events this test
//! posts as a Sim flow would), see `started`, `step` and `done` appear live,
//! reload and see the history; no console error, so nothing broke the CSP.
//! Over HTTP: the console is gated, its files carry the strict CSP, the demo
//! flow's token posts for demo channels only, and a fresh config (the
//! shipped one, nothing else running) answers `/` with a page that points
//! to the console and `/console/` after sign-in.

use crate::browser::{ONE_BROWSER, chromium, require_browser};
use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers::{self, Hook};
use crate::common::{self, Edge, client};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse-battery";
const TOKEN: &str = "test-only-token-0123456789";

fn start(hook: &Hook) -> Edge {
    let agents = json!([
        {"agent": "demo", "npc": "demo", "name": "Demo agent", "webhookUrl": "builtin:demo"},
        {"agent": "hooked", "npc": "hooked", "name": "Hooked agent", "webhookUrl": hook.url("/api/webhooks/trigger/t")},
    ])
    .to_string();
    let edge = Edge::start_with(
        move |dir, port| {
            std::fs::write(dir.join("agents.json"), &agents).unwrap();
            ConfigBuilder::new()
                .hub("events_token", TOKEN)
                .hub("demo", true)
                .route(Route::prefix("/console/").set("kind", "console").session())
                .route(Route::prefix("/api/").hub().stream().session())
                .route(Route::exact("/api/events").hub().token())
                .route(Route::prefix("/auth/").sign_in())
                .render(dir, port)
        },
        &[],
    );
    common::add_user(&edge, USER, PASSWORD, &[]);
    edge
}

/// Plays the Sim flow behind the "hooked" agent: once its webhook is called,
/// posts a step and a done for that run with the hub's shared token.
async fn play_flow(edge_url: String, hook: &Hook) {
    let deadline = Instant::now() + Duration::from_secs(90);
    let call = loop {
        if let Some(c) = hook.received().into_iter().next() {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the hooked agent's webhook was never called"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let run = call["runId"].as_str().expect("runId").to_string();
    for (kind, data) in [
        ("step", json!({"message": "halfway there"})),
        ("done", json!({"result": "all done"})),
    ] {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = client()
            .post(format!("{edge_url}/api/events"))
            .bearer_auth(TOKEN)
            .json(&json!({"npc": "hooked", "type": kind, "runId": run, "data": data}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
}

fn types(card: &Value) -> Vec<String> {
    card["log"]
        .as_array()
        .expect("log")
        .iter()
        .map(|l| l["type"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_runs_agents_and_sees_them_live() {
    require_browser();
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(&hook);
    let _turn = ONE_BROWSER.lock().await;
    let script = common::peers_dir().join("browser-console.js");
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(&script)
        .arg(edge.url("").trim_end_matches('/'))
        .arg(USER)
        .arg(PASSWORD)
        .env("CHROMIUM", chromium())
        .kill_on_drop(true);
    if let Ok(shot) = std::env::var("CONSOLE_SCREENSHOT") {
        cmd.env("SCREENSHOT", shot);
    }
    let browser = tokio::time::timeout(Duration::from_secs(120), cmd.output());
    let (out, ()) = tokio::join!(
        browser,
        play_flow(edge.url("").trim_end_matches('/').to_string(), &hook)
    );
    let out = out
        .expect("browser-console.js ran over 120 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser-console.js failed: {}\nstdout: {stdout}\nstderr: {}\nedge log: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        edge.stdout()
    );
    let report: Value = serde_json::from_str(stdout.trim()).expect("report");
    assert!(
        report["loginUrl"]
            .as_str()
            .unwrap()
            .contains("/auth/login?rd=%2Fconsole%2F"),
        "{report:#}"
    );
    assert_eq!(report["finalUrl"], edge.url("/console/"));
    assert_eq!(report["who"], "signed in as alice");
    assert_eq!(report["agents"], json!(["demo", "hooked"]));
    assert_eq!(
        report["consoleErrors"],
        json!([]),
        "script errors or CSP violations"
    );

    let demo = &report["demo"];
    assert_eq!(demo["whileRunning"], "running");
    assert_eq!(
        types(demo),
        ["started", "step", "step", "step", "done"],
        "{demo:#}"
    );
    assert_eq!(demo["status"], "done");
    assert!(
        demo["result"].as_str().unwrap().starts_with("Run "),
        "{demo:#}"
    );
    assert!(
        demo["log"][1]["text"]
            .as_str()
            .unwrap()
            .contains("Reading the request")
    );
    let hooked = &report["hooked"];
    assert_eq!(types(hooked), ["started", "step", "done"], "{hooked:#}");
    assert!(
        hooked["log"][2]["text"]
            .as_str()
            .unwrap()
            .contains("all done")
    );
    // Every live event of a run carries that run's id.
    let run = demo["runs"][0]["run"].as_str().unwrap();
    assert!(
        demo["log"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["run"] == run)
    );

    // After a reload: the history from /api/runs and the log replayed by the stream.
    let again = &report["afterReload"];
    assert_eq!(
        again["demo"]["runs"],
        json!([{"run": run, "status": "done"}])
    );
    assert_eq!(
        types(&again["demo"]),
        ["started", "step", "step", "step", "done"]
    );
    assert_eq!(types(&again["hooked"]), ["started", "step", "done"]);
    assert_eq!(again["hooked"]["runs"][0]["status"], "done");
}

#[tokio::test]
async fn the_console_is_gated_and_strict() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(&hook);
    let r = client()
        .get(edge.url("/console/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/auth/login?rd=")
    );
    let cookie = common::sign_in_as(&edge, USER, PASSWORD).await;
    let c = common::client_with_cookie(&cookie);
    for (path, ct) in [
        ("/console/", "text/html; charset=utf-8"),
        ("/console/console.js", "text/javascript; charset=utf-8"),
        ("/console/console.css", "text/css; charset=utf-8"),
    ] {
        let r = c.get(edge.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], ct);
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self'"),
            "{csp}"
        );
        assert!(!csp.contains("unsafe"), "{csp}");
    }
    assert_eq!(
        c.get(edge.url("/console/x.js"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        c.delete(edge.url("/console/"))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_agent_runs_without_any_webhook() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(&hook);
    let cookie = common::sign_in_as(&edge, USER, PASSWORD).await;
    let c = common::client_with_cookie(&cookie);
    // A run of the demo agent calls no webhook and ends in done by itself.
    let r = c
        .post(edge.url("/api/run/demo"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let run = r.json::<Value>().await.unwrap()["runId"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v: Value = c
            .get(edge.url(&format!("/api/runs/{run}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kinds: Vec<&str> = v["events"]
            .as_array()
            .map(|e| e.iter().filter_map(|e| e["type"].as_str()).collect())
            .unwrap_or_default();
        if kinds.last() == Some(&"done") {
            assert_eq!(kinds, ["started", "step", "step", "step", "done"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the demo run never finished: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        hook.received().is_empty(),
        "the demo agent must not call any webhook"
    );
    // Its events came over HTTP with the demo flow's own token, not the shared one.
    let posts = edge
        .settled_stdout()
        .lines()
        .filter(|l| l.contains("\"path\":\"/api/events\"") && l.contains("\"status\":202"))
        .count();
    assert_eq!(posts, 4, "{}", edge.stdout());
    // (Its token's scope, and that nothing a browser sees carries it, are
    // unit-tested in hub::demo, where the token is known.)
}

#[tokio::test]
async fn the_demo_agent_is_refused_when_the_demo_is_off() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = Edge::start_with(
        |dir, port| {
            std::fs::write(
                dir.join("agents.json"),
                r#"[{"agent":"demo","npc":"demo","webhookUrl":"builtin:demo"}]"#,
            )
            .unwrap();
            ConfigBuilder::new()
                .route(Route::prefix("/api/").hub())
                .render(dir, port)
        },
        &[],
    );
    drop(hook);
    let r = client()
        .post(edge.url("/api/run/demo"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("demo flow, which is off"),
        "{v}"
    );
}

/// The shipped config on a machine with nothing else running: `/` explains
/// and links the console, the sign-in page says how to add the first user,
/// and after adding one, `/console/` answers.
#[tokio::test]
async fn a_first_run_on_the_shipped_config_answers_the_console() {
    let edge = common::start_default(
        ConfigBuilder::new(),
        &[
            ("ESPRIT_UPSTREAM_SKYOFFICE", peers::dead_address()),
            ("ESPRIT_UPSTREAM_SIM", peers::dead_address()),
            ("ESPRIT_UPSTREAM_REALTIME", peers::dead_address()),
        ],
    );
    let r = client()
        .get(edge.url("/"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("<code>skyoffice</code>") && page.contains("href=\"/console/\""),
        "{page}"
    );
    // An API client still gets JSON.
    let r = client()
        .get(edge.url("/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().starts_with('{'));

    let login = client()
        .get(edge.url("/auth/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login.contains("No account exists yet") && login.contains("esprit-edge user add"),
        "{login}"
    );
    edge.wait_log(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("no users yet"))
    });

    common::add_user(&edge, USER, PASSWORD, &[]);
    let login = client()
        .get(edge.url("/auth/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!login.contains("No account exists yet"));
    let cookie = common::sign_in_as(&edge, USER, PASSWORD).await;
    let r = common::client_with_cookie(&cookie)
        .get(edge.url("/console/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Esprit-Hub console"));
}

#[test]
fn the_demo_is_refused_where_its_events_would_not_reach_the_hub() {
    // /api/events falls under a session-gated hub route (or an upstream):
    // the demo flow's token would be refused there, or sent away.
    let (ok, err) = common::check(
        &ConfigBuilder::new()
            .hub("demo", true)
            .route(Route::prefix("/api/").hub().session()),
    );
    assert!(!ok);
    assert!(
        err.contains("hub.demo") && err.contains("/api/events"),
        "{err}"
    );
}
