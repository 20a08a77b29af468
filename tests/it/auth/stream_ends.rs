//! Long-lived streams end with their session: logout and CLI revocation close
//! hub SSE, proxied SSE and silent websockets, and an open websocket does not
//! keep an idle session alive.

use super::{Stack, get_as, logout, open_ws, sign_in_alice, stack, stack_with};
use crate::common::config::ConfigBuilder;
use crate::common::{self, Edge};
use std::process::Command;

/// Opens an event stream at `path` with `cookie`; checks it answers 200.
async fn open_event_stream(
    edge: &Edge,
    cookie: &str,
    path: &str,
) -> impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin {
    let stream = common::client_no_timeout()
        .get(edge.url(path))
        .header("cookie", cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    Box::pin(stream.bytes_stream())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_the_sessions_live_stream() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    let mut body = open_event_stream(&s.edge, &cookie, "/api/stream?npc=a").await;
    // It stays open while the session lives.
    assert!(
        !common::sse::ends_within(&mut body, 3).await,
        "the stream ended while the session was live"
    );
    let r = logout(&s.edge, &cookie).await;
    assert_eq!(r.status(), 303);
    assert!(
        common::sse::ends_within(&mut body, 15).await,
        "the stream outlived its session"
    );
    s.edge
        .wait_log(|v| v["target"] == "hub" && v["message"] == "session ended; closing its stream");
}

/// Waits, silent, for the edge to close `ws`; then checks the upstream side
/// was closed too and the edge said why.
async fn closed_while_silent(
    s: &Stack,
    mut ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    // The client sends nothing and the upstream sends nothing: only the
    // session watch can end this socket.
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
    match end {
        Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => {}
        Ok(Some(Ok(m))) => panic!("a frame instead of the close: {m:?}"),
        Err(_) => panic!("the silent websocket outlived its session by 10 s"),
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.ws.closed() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream websocket was left open"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.edge
        .wait_log(|v| v["target"] == "auth" && v["message"] == "session ended; closing its stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_the_sessions_silent_websocket() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    // A second session of the same user keeps its websocket.
    let other = sign_in_alice(&s.edge).await;
    let ws = open_ws(&s, &cookie).await;
    let mut kept = open_ws(&s, &other).await;
    let r = logout(&s.edge, &cookie).await;
    assert_eq!(r.status(), 303);
    closed_while_silent(&s, ws).await;
    assert_eq!(
        s.ws.closed(),
        1,
        "only the logged-out session's socket ends"
    );
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        kept.send(Message::text("still here")).await.unwrap();
        assert_eq!(
            kept.next().await.unwrap().unwrap(),
            Message::text("still here")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_session_from_the_cli_closes_its_silent_websocket() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    let ws = open_ws(&s, &cookie).await;
    let out = Command::new(common::binary())
        .args(["--config", s.edge.config.to_str().unwrap()])
        .args(["session", "revoke", "--user", "alice"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    closed_while_silent(&s, ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_closes_a_proxied_event_stream() {
    use futures_util::StreamExt;
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    // The upstream sends one event, then holds the stream silent for a minute.
    let mut body = open_event_stream(&s.edge, &cookie, "/app/feed?mode=sse&ms=60000").await;
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
        .await
        .expect("the first event")
        .expect("a chunk")
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    // It stays open while the session lives.
    assert!(
        !common::sse::ends_within(&mut body, 3).await,
        "the proxied stream ended while the session was live"
    );
    assert_eq!(logout(&s.edge, &cookie).await.status(), 303);
    assert!(
        common::sse::ends_within(&mut body, 10).await,
        "the proxied stream outlived its session"
    );
    s.edge
        .wait_log(|v| v["target"] == "auth" && v["message"] == "session ended; closing its stream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_does_not_keep_an_idle_session_alive() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let s = stack_with(ConfigBuilder::new().auth("idle_timeout", "3s")).await;
    let cookie = sign_in_alice(&s.edge).await;
    let mut ws = open_ws(&s, &cookie).await;
    // Frames flow every 300 ms, but nobody uses the session otherwise: it
    // goes idle after 3 s, and the edge closes the websocket.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut frames = 0;
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the websocket kept an idle session alive ({frames} frames)"
        );
        if ws.send(Message::text("tick")).await.is_err() {
            break;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t == "tick" => frames += 1,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => break,
            other => panic!("unexpected {other:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    assert!(
        frames >= 5,
        "closed after {frames} frames: before the idle limit?"
    );
    let me = get_as(&s.edge, "/auth/me", &cookie).await;
    assert_eq!(me.status(), 401);
}
