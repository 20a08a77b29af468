//! Connection, head, body and stream caps against the real binary, over raw
//! sockets: a connection over a cap is closed at accept (before TLS) and the
//! cap frees as connections close; a slow or oversized request head is cut
//! off (408, 431) while a normal client is served at the same time; a body
//! that stops arriving ends the request; long streams over their per-IP or
//! per-session cap get 429, and the upstream never sees a refused request.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{self, Edge, client};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `edge` from the loopback address `from` (Linux
/// routes all of 127/8 to lo, so each is a distinct client IP).
async fn connect_from(edge: &Edge, from: &str) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    socket.connect(edge.addr()).await.unwrap()
}

/// Whether the edge closed `conn` (EOF or reset) within `wait`, without
/// the client having sent anything.
async fn closed_within(conn: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(wait, conn.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) => panic!("the edge sent something unasked"),
        Err(_) => false,
    }
}

/// Sends one request on `conn` and reads the answer's status line.
async fn status_on(conn: &mut TcpStream, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    text.lines().next().unwrap_or("").to_string()
}

async fn app_edge(server: &[(&str, toml_value::V)]) -> (Edge, peers::Peer) {
    let app = peers::echo("app").await;
    let mut config = ConfigBuilder::new()
        .upstream("app", app.address())
        .route(Route::prefix("/").upstream("app"));
    for (k, v) in server {
        config = match v {
            toml_value::V::N(n) => config.server(k, *n),
            toml_value::V::S(s) => config.server(k, *s),
        };
    }
    (Edge::start(&config), app)
}

/// The two kinds of `[server]` value these tests set.
mod toml_value {
    pub enum V {
        N(i64),
        S(&'static str),
    }
}
use toml_value::V;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_connection_cap_is_closed_at_accept_and_the_cap_frees_on_close() {
    let (edge, app) = app_edge(&[
        ("max_connections_per_ip", V::N(3)),
        ("header_timeout", V::S("60s")),
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from(&edge, "127.0.0.2").await);
    }
    // The fourth from the same address is closed at once.
    let mut fourth = connect_from(&edge, "127.0.0.2").await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(5)).await,
        "a connection over the per-IP cap was kept"
    );
    // The held ones are open and served.
    assert!(!closed_within(&mut held[0], Duration::from_millis(300)).await);
    assert!(status_on(&mut held[1], "/x").await.contains(" 200 "));
    // Another client is not affected.
    let mut other = connect_from(&edge, "127.0.0.3").await;
    assert!(status_on(&mut other, "/x").await.contains(" 200 "));
    // Closing one frees its place.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut again = connect_from(&edge, "127.0.0.2").await;
    assert!(status_on(&mut again, "/x").await.contains(" 200 "));
    assert_eq!(app.hits(), 3);
    edge.wait_log(|v| v["target"] == "limit" && v["message"] == "connections refused at accept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_connection_cap_counts_every_client() {
    let (edge, _app) = app_edge(&[
        ("max_connections", V::N(4)),
        ("max_connections_per_ip", V::N(2)),
        ("header_timeout", V::S("60s")),
    ])
    .await;
    let mut held = Vec::new();
    for from in ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.3"] {
        held.push(connect_from(&edge, from).await);
    }
    let mut fifth = connect_from(&edge, "127.0.0.4").await;
    assert!(closed_within(&mut fifth, Duration::from_secs(5)).await);
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut next = connect_from(&edge, "127.0.0.4").await;
    assert!(status_on(&mut next, "/x").await.contains(" 200 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_closes_before_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::common::certs::pki("localhost").write(dir.path());
    let tls_port = common::free_port();
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .tls(
                &format!("127.0.0.1:{tls_port}"),
                cert.to_str().unwrap(),
                key.to_str().unwrap(),
            )
            .server("max_connections_per_ip", 2)
            .upstream("app", app.address())
            .route(Route::prefix("/").upstream("app")),
    );
    let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let connect = || async {
        let s = TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.5:0".parse().unwrap()).unwrap();
        s.connect(tls_addr).await.unwrap()
    };
    // Two connections that never start their handshake hold their places...
    let _a = connect().await;
    let _b = connect().await;
    // ...so the third is closed without a handshake: a ClientHello gets EOF,
    // not a ServerHello.
    let mut c = connect().await;
    assert!(closed_within(&mut c, Duration::from_secs(5)).await);
    drop(edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_is_cut_off_with_408_while_a_normal_client_is_served() {
    let (edge, app) = app_edge(&[("header_timeout", V::S("2s"))]).await;
    let mut slow = TcpStream::connect(edge.addr()).await.unwrap();
    let started = Instant::now();
    let head = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let dribble = async {
        for b in head.iter() {
            if slow.write_all(&[*b]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let normal = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..5 {
            let r = client().get(edge.url("/ok")).send().await.unwrap();
            assert_eq!(r.status(), 200, "a normal client waits for no one");
        }
    };
    tokio::join!(dribble, normal);
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the slow client was held for {:?}",
        started.elapsed()
    );
    assert_eq!(app.hits(), 5, "the slow request never reached the upstream");
    edge.wait_log(|v| {
        v["target"] == "limit"
            && v["message"] == "request head not received in time; connection closed"
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_idle_time_is_not_the_heads() {
    let (edge, _app) = app_edge(&[("header_timeout", V::S("1s"))]).await;
    let mut conn = TcpStream::connect(edge.addr()).await.unwrap();
    assert!(status_on(&mut conn, "/one").await.contains(" 200 "));
    // Idle for longer than the head timeout, within the keep-alive timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(status_on(&mut conn, "/two").await.contains(" 200 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_and_too_many_fields_get_431_and_never_reach_the_upstream() {
    let (edge, app) =
        app_edge(&[("max_header_bytes", V::N(4096)), ("max_headers", V::N(20))]).await;
    // Over the byte cap, sent at once.
    let mut conn = TcpStream::connect(edge.addr()).await.unwrap();
    let big = format!(
        "GET /x HTTP/1.1\r\nHost: t\r\nCookie: {}\r\n\r\n",
        "c".repeat(5000)
    );
    conn.write_all(big.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    // Far over it, without an end: cut off once the cap is read.
    let mut conn = TcpStream::connect(edge.addr()).await.unwrap();
    conn.write_all(b"GET /x HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    let line = format!("X-Fill: {}\r\n", "f".repeat(1000));
    let mut cut = false;
    for _ in 0..200 {
        if conn.write_all(line.as_bytes()).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        cut || answer.starts_with("HTTP/1.1 431 "),
        "200 KB of head were taken: {answer:?}"
    );
    // Too many fields.
    let mut conn = TcpStream::connect(edge.addr()).await.unwrap();
    let mut many = String::from("GET /x HTTP/1.1\r\nHost: t\r\n");
    for i in 0..30 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    conn.write_all(many.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    assert!(answer.contains("too many header fields"), "{answer:?}");
    // A head within the caps is served.
    let r = client()
        .get(edge.url("/x"))
        .header("cookie", "c".repeat(3000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_arriving_ends_the_request() {
    let (edge, app) = app_edge(&[("body_timeout", V::S("1s"))]).await;
    let mut conn = TcpStream::connect(edge.addr()).await.unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(15), conn.read_to_end(&mut answer)).await;
    assert!(r.is_ok(), "the connection was held past the body timeout");
    assert!(started.elapsed() >= Duration::from_millis(900));
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty()
            || answer.starts_with("HTTP/1.1 408 ")
            || answer.starts_with("HTTP/1.1 400 "),
        "{answer:?}"
    );
    assert_eq!(app.bodies(), 0, "no partial body was taken as a whole one");
}

/// An edge with a gated hub, an open SSE upstream and a websocket echo, and
/// the stream caps given.
async fn streams_edge(per_ip: i64, per_session: i64) -> (Edge, peers::Peer, peers::Peer) {
    let app = peers::echo("app").await;
    let ws = peers::ws_echo().await;
    let edge = Edge::start_with(
        {
            let app = app.address();
            let ws = ws.address();
            move |dir, port| {
                std::fs::write(dir.join("agents.json"), "[]").unwrap();
                ConfigBuilder::new()
                    .server("max_streams_per_ip", per_ip)
                    .server("max_streams_per_session", per_session)
                    .hub("events_token", "test-only-token-0123456789")
                    .upstream("app", app.clone())
                    .upstream("ws", ws.clone())
                    .route(Route::prefix("/").upstream("app").stream())
                    .route(Route::prefix("/ws/").upstream("ws").stream())
                    .route(Route::prefix("/api/").hub().fallback("app").session())
                    .route(Route::prefix("/auth/").sign_in())
                    .render(dir, port)
            }
        },
        &[],
    );
    (edge, app, ws)
}

async fn sse(edge: &Edge, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = common::client_no_timeout()
        .get(edge.url(path))
        .header("accept", "text/event-stream");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_over_the_per_ip_cap_get_429_and_free_as_they_close() {
    let (edge, app, _ws) = streams_edge(3, 10).await;
    // Two proxied SSE streams and a websocket take the three places.
    let a = sse(&edge, "/events?mode=sse&ms=60000", None).await;
    assert_eq!(a.status(), 200);
    let b = sse(&edge, "/events?mode=sse&ms=60000", None).await;
    assert_eq!(b.status(), 200);
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/x", edge.port))
        .await
        .expect("websocket");
    let hits = app.hits();
    let r = sse(&edge, "/events?mode=sse&ms=60000", None).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        app.hits(),
        hits,
        "the refused stream never reached the upstream"
    );
    // So does a websocket.
    let refused =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/ws/x", edge.port)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 429),
        other => panic!(
            "a fourth stream was let through: {:?}",
            other.map(|(_, r)| r.status())
        ),
    }
    // Plain requests are not streams.
    assert_eq!(
        client().get(edge.url("/x")).send().await.unwrap().status(),
        200
    );
    // The admin listener sees the three streams and the two refusals.
    assert_eq!(edge.metric("esprit_open_streams{kind=\"sse\"}").await, 2.0);
    assert_eq!(
        edge.metric("esprit_open_streams{kind=\"websocket\"}").await,
        1.0
    );
    assert_eq!(
        edge.metric("esprit_limit_refusals_total{rule=\"streams-per-ip\"}")
            .await,
        2.0
    );
    drop(a);
    drop(ws);
    let mut reopened = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = sse(&edge, "/events?mode=sse&ms=60000", None).await;
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
    }
    assert!(
        reopened.is_some(),
        "closed streams did not free their places"
    );
    drop(b);
    edge.wait_log(|v| v["target"] == "limit" && v["message"] == "stream cap reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_over_its_stream_cap_gets_429_other_sessions_do_not() {
    let (edge, _app, _ws) = streams_edge(50, 2).await;
    let cookie = common::sign_in(&edge).await;
    let a = sse(&edge, "/api/stream?npc=a", Some(&cookie)).await;
    assert_eq!(a.status(), 200);
    let b = sse(&edge, "/api/stream?npc=b", Some(&cookie)).await;
    assert_eq!(b.status(), 200);
    let c = sse(&edge, "/api/stream?npc=c", Some(&cookie)).await;
    assert_eq!(c.status(), 429);
    let body: serde_json::Value = c.json().await.unwrap();
    assert_eq!(body["error"], "too many open streams; close one first");
    // The hub's stream is one even without `Accept: text/event-stream`.
    let r = common::client_no_timeout()
        .get(edge.url("/api/stream?npc=d"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    // A second session of the same user has its own places.
    let r = client()
        .post(edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "tester"), ("password", "tester-password-1")])
        .send()
        .await
        .unwrap();
    let other = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let d = sse(&edge, "/api/stream?npc=a", Some(&other)).await;
    assert_eq!(d.status(), 200);
    drop((a, b, d));
}
