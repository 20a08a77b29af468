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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_second_session_cookie_never_wins_silently() {
    let s = stack().await;
    let alice = super::sign_in_alice(&s.edge).await;
    crate::common::add_user(&s.edge, "mallory", "mallorys-password-1", &[]);
    let mallory =
        super::session_cookie(&super::login(&s.edge, "mallory", "mallorys-password-1", None).await);
    let value = |c: &str| c.split_once('=').unwrap().1.to_string();
    let edge = &s.edge;
    let me = |cookie: String| async move {
        let r = super::get_as(edge, "/auth/me", cookie).await;
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    // A junk or stale value sent first does not hide the browser's own.
    let junk = "ab".repeat(32);
    let (status, body) = me(format!("esprit_session={junk}; {alice}")).await;
    assert_eq!((status, body["user"].as_str()), (200, Some("alice")));
    // A live session of someone else planted first: neither wins.
    let planted = format!(
        "esprit_session={}; esprit_session={}",
        value(&mallory),
        value(&alice)
    );
    let (status, _) = me(planted.clone()).await;
    assert_eq!(status, 401, "a planted session signed the browser in");
    let r = super::get_as(&s.edge, "/app/x", &planted).await;
    assert_ne!(
        r.status(),
        200,
        "a gated route let two users' sessions through"
    );
    assert_eq!(s.app.hits(), 0);
    s.edge.wait_log(|v| {
        v["target"] == "auth"
            && v["message"] == "two live session cookies of different users; treated as signed out"
    });
    // Each alone still works.
    assert_eq!(me(alice.clone()).await.0, 200);
    assert_eq!(me(mallory.clone()).await.0, 200);
}
