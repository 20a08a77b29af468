//! SIGHUP reloads the whole config: new routes, upstreams and headers take
//! effect for new requests while an SSE stream and a websocket opened before
//! stay up; an invalid file is refused, every problem logged, and the
//! running config keeps serving.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{Edge, client};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn config(app: &str, csp: &str, sse: &str, ws: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .upstream("app", app)
        .upstream("sse", sse)
        .upstream("ws", ws)
        .route(Route::prefix("/app/").upstream("app").csp(csp))
        .route(Route::prefix("/events/").upstream("sse").stream())
        .route(Route::prefix("/ws/").upstream("ws").stream())
}

async fn app_peer(edge: &Edge) -> (String, String) {
    let r = client().get(edge.url("/app/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    (v["peer"].as_str().unwrap().to_string(), csp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_new_config_and_refuses_a_broken_one_keeping_open_streams() {
    let one = peers::echo("one").await;
    let two = peers::echo("two").await;
    let sse = peers::echo("sse").await;
    let ws = peers::ws_echo().await;
    let before = config(
        &one.address(),
        "default-src 'self'",
        &sse.address(),
        &ws.address(),
    );
    let edge = Edge::start(&before);
    assert_eq!(
        app_peer(&edge).await,
        ("one".into(), "default-src 'self'".into())
    );

    // Streams opened before the reload.
    let mut events = client()
        .get(edge.url("/events/?mode=sse&ms=6000"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), events.chunk())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.starts_with(b"id: 1"), "{first:?}");
    let (mut sock, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/echo", edge.port))
            .await
            .expect("websocket through the edge");
    sock.send(Message::text("before")).await.unwrap();
    assert_eq!(sock.next().await.unwrap().unwrap(), Message::text("before"));

    // A new upstream and CSP for /app/, and a route that did not exist.
    let after = config(
        &two.address(),
        "default-src 'none'",
        &sse.address(),
        &ws.address(),
    )
    .route(Route::prefix("/new/").upstream("app"));
    std::fs::write(&edge.config, after.render(edge.dir.path(), edge.port)).unwrap();
    edge.signal("HUP");
    edge.wait_log(|v| v["target"] == "edge" && v["message"] == "config reloaded");
    assert_eq!(
        app_peer(&edge).await,
        ("two".into(), "default-src 'none'".into())
    );
    let r = client().get(edge.url("/new/y")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        one.hits(),
        1,
        "the old upstream got a request after the reload"
    );
    assert_eq!(
        edge.metric("esprit_config_reloads_total{outcome=\"applied\"}")
            .await,
        1.0
    );

    // The streams opened before are still up.
    sock.send(Message::text("after")).await.unwrap();
    let back = tokio::time::timeout(Duration::from_secs(10), sock.next())
        .await
        .expect("the websocket survived the reload")
        .unwrap()
        .unwrap();
    assert_eq!(back, Message::text("after"));
    let second = tokio::time::timeout(Duration::from_secs(15), events.chunk())
        .await
        .expect("the SSE stream survived the reload")
        .unwrap()
        .unwrap();
    assert!(second.starts_with(b"id: 2"), "{second:?}");

    // A broken file: refused with its problems, and the running config stays.
    std::fs::write(
        &edge.config,
        format!(
            "{}\n[[routes]]\nprefix = \"/bad/\"\nupstream = \"nowhere\"\n",
            after.render(edge.dir.path(), edge.port)
        ),
    )
    .unwrap();
    edge.signal("HUP");
    let line = edge.wait_log(|v| v["message"] == "config reload refused");
    assert!(
        line["problem"].as_str().unwrap().contains("nowhere"),
        "{line}"
    );
    edge.wait_log(|v| {
        v["message"] == "SIGHUP: the new config is invalid; the running config stays"
    });
    assert_eq!(app_peer(&edge).await.0, "two");
    assert_eq!(
        edge.metric("esprit_config_reloads_total{outcome=\"refused\"}")
            .await,
        1.0
    );
    let r = client().get(edge.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// `[hub]` and `[auth]` on SIGHUP: a new events token and new session
/// timeouts apply at once (rotating the token needs no restart); a new store
/// path cannot, and the log says so while the running store stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_hub_and_auth_settings() {
    const OLD: &str = "test-only-old-token-0123";
    const NEW: &str = "test-only-new-token-4567";
    let config = |token: &str, idle: &str| {
        ConfigBuilder::new()
            .hub("events_token", token)
            .auth("idle_timeout", idle)
            .route(Route::prefix("/api/").hub().session())
            .route(Route::exact("/api/events").hub().token())
            .route(Route::prefix("/auth/").sign_in())
    };
    let edge = Edge::start(&config(OLD, "1h"));
    let post = |token: &'static str| {
        let url = edge.url("/api/events");
        async move {
            client()
                .post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"npc": "n", "type": "step"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post(OLD).await, 202);
    assert_eq!(post(NEW).await, 401);
    let cookie = crate::common::sign_in(&edge).await;
    let me = |cookie: String| {
        let url = edge.url("/auth/me");
        async move {
            let v: Value = crate::common::client_with_cookie(&cookie)
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let before = me(cookie.clone()).await["expires"].as_i64().unwrap();

    let after = config(NEW, "5m").hub(
        "store",
        edge.dir
            .path()
            .join("elsewhere.sqlite3")
            .display()
            .to_string(),
    );
    std::fs::write(&edge.config, after.render(edge.dir.path(), edge.port)).unwrap();
    edge.signal("HUP");
    edge.wait_log(|v| v["message"] == "config reloaded");
    let line = edge.wait_log(|v| v["key"] == "hub.store");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("not applied by SIGHUP"),
        "{line}"
    );
    assert_eq!(post(NEW).await, 202, "the new token works at once");
    assert_eq!(post(OLD).await, 401, "the old one no longer does");
    // The session's expiry now follows the 5-minute idle timeout.
    let now_expires = me(cookie).await["expires"].as_i64().unwrap();
    assert!(
        now_expires < before - 50 * 60 * 1000,
        "{before} -> {now_expires}"
    );
    assert!(
        !edge.dir.path().join("elsewhere.sqlite3").exists(),
        "the running store stays"
    );
}
