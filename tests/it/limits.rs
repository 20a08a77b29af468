//! Rate rules (`[[limits]]`) against the real binary: 429 with `Retry-After`
//! and the `RateLimit` headers in the client's format, the upstream never
//! sees a refused request, one log line per rule and key however many are
//! refused, and the shipped rules on runs and sign-ins.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{self, Edge, client};
use serde_json::{Value, json};

/// An edge whose `/app/` allows 2 requests per client IP per minute.
async fn two_per_minute() -> (Edge, peers::Peer) {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .route(Route::prefix("/").upstream("app"))
            .raw("[[limits]]\nname = \"app-ip\"\nprefix = \"/app/\"\nkey = \"ip\"\nrate = \"2/m\"\nburst = 2\n"),
    );
    (edge, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_limit_is_429_with_retry_after_and_ratelimit_headers() {
    let (edge, app) = two_per_minute().await;
    for _ in 0..2 {
        let r = client().get(edge.url("/app/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("ratelimit").is_none(),
            "only refusals carry the headers"
        );
    }
    let r = client()
        .get(edge.url("/app/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry), "one request every 30 s: {retry}");
    assert_eq!(r.headers()["ratelimit-policy"], "\"app-ip\";q=2;w=60");
    assert_eq!(
        r.headers()["ratelimit"].to_str().unwrap(),
        format!("\"app-ip\";r=0;t={retry}")
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": "too many requests; slow down", "status": 429})
    );
    // A browser gets a page; other paths are not counted by the rule.
    let r = client()
        .get(edge.url("/app/x"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap().contains("429 Too Many Requests"));
    let r = client().get(edge.url("/other")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.hits(), 3, "refused requests never reach the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_logged_once_per_rule_and_key_not_once_each() {
    let (edge, _app) = two_per_minute().await;
    for _ in 0..12 {
        let _ = client().get(edge.url("/app/x")).send().await.unwrap();
    }
    let line = edge.wait_log(|v| v["target"] == "limit");
    assert_eq!(line["message"], "rate limit exceeded");
    assert_eq!(line["rule"], "app-ip");
    assert_eq!(line["key"], "127.0.0.1");
    // Ten refusals inside a second or two: one line (two if a second ticked over).
    let lines = edge
        .settled_stdout()
        .lines()
        .filter(|l| l.contains("\"target\":\"limit\""))
        .count();
    assert!(
        (1..=2).contains(&lines),
        "{lines} log lines for 10 refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_rules_limit_runs_per_user_and_sign_ins_per_ip() {
    let sim = peers::echo("sim").await;
    let edge = common::start_default(
        ConfigBuilder::new(),
        &[
            ("ESPRIT_UPSTREAM_SIM", sim.address()),
            ("ESPRIT_UPSTREAM_SKYOFFICE", peers::dead_address()),
            ("ESPRIT_UPSTREAM_REALTIME", peers::dead_address()),
        ],
    );
    let cookie = common::sign_in(&edge).await;
    let me = common::client_with_cookie(&cookie);
    // runs-per-user: 10 at once (each starts a Sim workflow; here the agent
    // does not exist, so the hub answers 404), then 429.
    for i in 0..10 {
        let r = me
            .post(edge.url("/api/run/nobody"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "run {i}");
    }
    let r = me
        .post(edge.url("/api/run/nobody"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["ratelimit-policy"],
        "\"runs-per-user\";q=10;w=20"
    );
    // Reads are not runs.
    assert_eq!(
        me.get(edge.url("/api/agents"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // login-per-ip: the sign-in above was one of 10; 9 more, then 429 before
    // any password is checked.
    let attempt = || {
        client()
            .post(edge.url("/auth/login"))
            .header("sec-fetch-site", "same-origin")
            .header("accept", "application/json")
            .form(&[("username", "tester"), ("password", "tester-password-1")])
            .send()
    };
    for i in 0..9 {
        assert_eq!(attempt().await.unwrap().status(), 303, "sign-in {i}");
    }
    let r = attempt().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["ratelimit-policy"],
        "\"login-per-ip\";q=10;w=20"
    );
    assert_eq!(sim.hits(), 0, "nothing of this reached Sim");
}

/// The per-token rule reads `Authorization` the way the hub does: a scheme
/// in another case is the same token, not a way around the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_rule_counts_the_token_however_the_scheme_is_spelled() {
    let token = "test-only-token-0123456789";
    let edge = Edge::start(
        &ConfigBuilder::new()
            .hub("events_token", token)
            .route(Route::prefix("/api/").hub())
            .raw("[[limits]]\nname = \"events\"\nprefix = \"/api/events\"\nkey = \"token\"\nrate = \"1/m\"\nburst = 1\n"),
    );
    let post = |scheme: &'static str| {
        client()
            .post(edge.url("/api/events"))
            .header("authorization", format!("{scheme} {token}"))
            .json(&json!({"npc": "a", "type": "step"}))
            .send()
    };
    assert_eq!(post("Bearer").await.unwrap().status(), 202);
    let r = post("bearer").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["ratelimit-policy"], "\"events\";q=1;w=60");
}
