//! The session gate: what each kind of request gets without a session.

use super::{TOKEN, client, stack};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_each_kind_of_request_gets_the_right_refusal() {
    let s = stack().await;
    let r = client()
        .get(s.edge.url("/api/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/json");
    let r = client()
        .get(s.edge.url("/api/stream?npc=a"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "EventSource must stop, not loop");
    let r = client()
        .post(s.edge.url("/app/form"))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let ws = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/x", s.edge.port)).await;
    match ws {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("websocket without a session: {other:?}"),
    }
    assert_eq!(
        s.ws.hits(),
        0,
        "an upgrade reached the upstream without a session"
    );
    assert_eq!(s.app.hits(), 0);
    // Sim flows authenticate with the bearer token, not a cookie.
    let r = client()
        .post(s.edge.url("/api/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"npc": "a", "type": "step"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Open routes stay open.
    assert_eq!(
        client()
            .get(s.edge.url("/public"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
