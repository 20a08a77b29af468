//! Routes that take a bearer token instead of a session (`auth = "token"`):
//! the route says so, the edge refuses before the handler reads a body, and
//! the token opens only what its handler says it opens.

use super::{TOKEN, client, sign_in_alice, stack};
use crate::common::Edge;
use crate::common::config::{ConfigBuilder, Route};
use serde_json::json;
use std::time::Duration;

/// How many events of channel `npc` a fresh stream replays (signed in with `cookie`).
async fn events_on(edge: &Edge, npc: &str, cookie: &str) -> usize {
    let mut r = client()
        .get(edge.url(&format!("/api/stream?npc={npc}")))
        .header("accept", "text/event-stream")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    // The replay comes first, then the stream idles: read until it goes quiet.
    while let Ok(chunk) = tokio::time::timeout(Duration::from_millis(500), r.chunk()).await {
        match chunk.unwrap() {
            Some(c) => text.push_str(&String::from_utf8_lossy(&c)),
            None => break,
        }
    }
    text.matches("\nevent: ").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_route_refuses_a_session_and_a_wrong_token_and_stores_nothing() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    let post = |token: Option<&'static str>, cookie: Option<String>| {
        let mut req = client()
            .post(s.edge.url("/api/events"))
            .header("sec-fetch-site", "same-origin")
            .json(&json!({"npc": "tokened", "type": "step"}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send()
    };
    for (token, with_cookie, why) in [
        (None, true, "a session alone"),
        (None, false, "nothing"),
        (Some("wrong-token-0123456789"), true, "a wrong token"),
    ] {
        let r = post(token, with_cookie.then(|| cookie.clone()))
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{why}");
        assert_eq!(r.headers()["www-authenticate"], "Bearer", "{why}");
        assert_eq!(
            r.headers()["connection"],
            "close",
            "{why}: refused before its body was read"
        );
    }
    assert_eq!(events_on(&s.edge, "tokened", &cookie).await, 0);
    let r = post(Some(TOKEN), None).await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(events_on(&s.edge, "tokened", &cookie).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hubs_token_opens_only_its_events_endpoint() {
    let edge = Edge::start(
        &ConfigBuilder::new()
            .hub("events_token", TOKEN)
            .route(Route::prefix("/api/").hub().token()),
    );
    for (method, path) in [
        ("GET", "/api/agents"),
        ("GET", "/api/stream?npc=a"),
        ("GET", "/api/runs"),
        ("POST", "/api/run/research"),
        ("POST", "/api/runs/abc/respond"),
    ] {
        let r = client()
            .request(method.parse().unwrap(), edge.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(
            body["error"], "the hub's bearer token opens only POST /api/events",
            "{method} {path}"
        );
    }
    let r = client()
        .post(edge.url("/api/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"npc": "a", "type": "done"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}
