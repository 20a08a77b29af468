//! Long-lived streams through the edge: SSE unbuffered, websockets, and a real
//! socket.io 4 server and client on both transports.

use crate::common;
use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{Edge, client};
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn stream_config(sse: &str, ws: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .upstream("sse", sse)
        .upstream("ws", ws)
        .route(Route::prefix("/events/").upstream("sse").stream())
        // Frames after the 101 are not a request body: this cap must not cut them.
        .route(
            Route::prefix("/ws/")
                .upstream("ws")
                .stream()
                .max_body_bytes(1024),
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_first_event_arrives_while_upstream_holds_the_stream() {
    let sse = peers::echo("sse").await;
    let edge = Edge::start(&stream_config(&sse.address(), &peers::dead_address()));
    // The peer sends one event, then holds the response open for 60 s. A
    // buffering proxy would deliver nothing until then; the bound below is a
    // liveness limit far inside that, not a speed assertion.
    let resp = client()
        .get(edge.url("/events/?mode=sse&ms=60000"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert!(resp.headers().get("content-length").is_none());
    assert!(resp.headers().get("content-encoding").is_none());
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    let first = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(chunk) = body.next().await {
            got.extend_from_slice(&chunk.unwrap());
            if got.windows(5).any(|w| w == b"first") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        first,
        Ok(true),
        "first SSE event was held back: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(!got.windows(6).any(|w| w == b"second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_stream_completes_with_every_event() {
    let sse = peers::echo("sse").await;
    let edge = Edge::start(&stream_config(&sse.address(), &peers::dead_address()));
    let body = client()
        .get(edge.url("/events/?mode=sse&ms=200"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "id: 1\ndata: first\n\nid: 2\ndata: second\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_text_and_binary_frames() {
    let ws = peers::ws_echo().await;
    let edge = Edge::start(&stream_config(&peers::dead_address(), &ws.address()));
    let (mut sock, resp) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/echo", edge.port))
            .await
            .expect("websocket handshake through the edge");
    assert_eq!(resp.status(), 101);
    let big: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let msgs = [
        Message::text("hello through the edge"),
        Message::binary(vec![0u8, 1, 2, 253, 254, 255]),
        Message::binary(big),
        Message::text("é✓ unicode"),
    ];
    for m in msgs {
        sock.send(m.clone()).await.unwrap();
        let back = tokio::time::timeout(Duration::from_secs(15), sock.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back, m);
    }
    sock.close(None).await.unwrap();
    assert_eq!(ws.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_client_outlives_pingoras_60s_default() {
    // A browser on a server-push websocket (or SSE) may send nothing for
    // minutes. Pingora's own downstream read timeout is 60 s; on a stream
    // route the connection must stay up past it while the upstream pushes.
    // This test takes 70 s of wall time on purpose: nothing shorter shows it.
    let ticker = peers::ws_ticker(Duration::from_secs(1)).await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("ws", ticker.address())
            .route(Route::prefix("/ws/").upstream("ws").stream()),
    );
    let (mut sock, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/feed", edge.port))
            .await
            .unwrap();
    let start = tokio::time::Instant::now();
    let until = start + Duration::from_secs(70);
    let mut last = String::new();
    while tokio::time::Instant::now() < until {
        match tokio::time::timeout(Duration::from_secs(20), sock.next()).await {
            Ok(Some(Ok(m))) if m.is_text() => last = m.into_text().unwrap().to_string(),
            Ok(Some(Ok(_))) => {}
            other => panic!(
                "stream ended after {:?} at {last:?}: {other:?}\n{}",
                start.elapsed(),
                edge.stdout()
            ),
        }
    }
    assert!(last.starts_with("tick "), "no push arrived: {last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_survives_an_upstream_that_answers_before_reading() {
    // Pingora 0.9.1 tore a tunnel down right after the 101 whenever it read
    // the 101 before the upgrade request's own empty body had gone through
    // (cloudflare/pingora#946); the client saw the 101, then EOF. The eager
    // peer answers on accept, so that ordering comes up often; one
    // connection cannot show it, many in a row can.
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws = peers::ws_eager().await;
    let edge = Edge::start(&stream_config(&peers::dead_address(), &ws.address()));
    const ROUNDS: usize = 200;
    let mut torn = Vec::new();
    for round in 0..ROUNDS {
        let mut req = format!("ws://127.0.0.1:{}/ws/eager", edge.port)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("sec-websocket-key", peers::EAGER_WS_KEY.parse().unwrap());
        let (mut sock, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
        assert_eq!(resp.status(), 101);
        let greeting = tokio::time::timeout(Duration::from_secs(15), sock.next()).await;
        let echoed = match greeting {
            Ok(Some(Ok(m))) if m == Message::text("hello") => {
                let ping = Message::text(format!("ping {round}"));
                match sock.send(ping.clone()).await {
                    Ok(()) => matches!(
                        tokio::time::timeout(Duration::from_secs(15), sock.next()).await,
                        Ok(Some(Ok(m))) if m == ping
                    ),
                    Err(_) => false,
                }
            }
            _ => false,
        };
        if !echoed {
            torn.push(round);
        }
        let _ = sock.close(None).await;
    }
    assert!(
        torn.is_empty(),
        "{} of {ROUNDS} tunnels ended right after their 101 (rounds {torn:?})\n{}",
        torn.len(),
        edge.stdout()
    );
    assert_eq!(ws.hits(), ROUNDS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_to_a_dead_upstream_fails_cleanly() {
    let edge = Edge::start(&stream_config(
        &peers::dead_address(),
        &peers::dead_address(),
    ));
    let err =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/echo", edge.port)).await;
    match err {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 502),
        other => panic!("expected a 502 handshake failure, got {other:?}"),
    }
}

async fn socketio_stack() -> (Edge, peers::SocketIo, String) {
    let sio = peers::SocketIo::start();
    let edge = common::start_default(
        ConfigBuilder::new(),
        &[
            ("ESPRIT_UPSTREAM_SKYOFFICE", peers::dead_address()),
            ("ESPRIT_UPSTREAM_SIM", peers::dead_address()),
            ("ESPRIT_UPSTREAM_REALTIME", sio.address()),
        ],
    );
    let cookie = common::sign_in(&edge).await;
    (edge, sio, cookie)
}

fn assert_echoed(report: &serde_json::Value, transport: &str) {
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["text"], "héllo through the edge");
    assert_eq!(report["binary"], serde_json::json!([0, 1, 2, 254, 255]));
    assert_eq!(report["serverTransport"], transport, "{report}");
    assert_eq!(report["forwardedFor"], "127.0.0.1", "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_websocket_transport_through_the_default_config() {
    let (edge, _sio, cookie) = socketio_stack().await;
    let report = peers::socketio_client(&edge.url(""), "websocket", None, Some(&cookie));
    assert_echoed(&report, "websocket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_long_polling_through_the_default_config() {
    let (edge, _sio, cookie) = socketio_stack().await;
    let report = peers::socketio_client(&edge.url(""), "polling", None, Some(&cookie));
    assert_echoed(&report, "polling");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_polling_upgrades_to_websocket() {
    let (edge, _sio, cookie) = socketio_stack().await;
    let report = peers::socketio_client(&edge.url(""), "polling,websocket", None, Some(&cookie));
    assert_echoed(&report, "websocket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_without_a_session_is_refused_on_both_transports() {
    let (edge, _sio, _cookie) = socketio_stack().await;
    for transports in ["polling", "websocket"] {
        let report = peers::socketio_client(&edge.url(""), transports, None, None);
        assert_eq!(report["ok"], false, "{transports}: {report}");
    }
    let r = client()
        .get(edge.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
