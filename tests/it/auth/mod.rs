//! Login and the session gate against the real binary: sign-in, cookies,
//! fixation, logout, CSRF, open redirects, forged identity headers, and what
//! each kind of request gets without a session. One module per feature; the
//! stack they share (an edge with open, gated, websocket, hub and auth
//! routes, and user `alice`) and its helpers are here.

mod csrf;
mod gate;
mod sessions;
mod sign_in;
mod stream_ends;
mod throttle;
mod token;

use crate::common;
use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers::{self, Peer};
use crate::common::{Edge, client};

const TOKEN: &str = "test-only-token-0123456789";

struct Stack {
    edge: Edge,
    app: Peer,
    ws: Peer,
}

async fn stack() -> Stack {
    stack_with(ConfigBuilder::new()).await
}

/// The stack with settings of the test's own in `config` (`[auth]` ones, say).
async fn stack_with(config: ConfigBuilder) -> Stack {
    let app = peers::echo("app").await;
    let ws = peers::ws_echo().await;
    let edge = Edge::start(
        &config
            .hub("events_token", TOKEN)
            .upstream("app", app.address())
            .upstream("ws", ws.address())
            .route(Route::prefix("/").upstream("app"))
            .route(Route::prefix("/app/").upstream("app").session())
            .route(Route::prefix("/ws/").upstream("ws").stream().session())
            .route(Route::prefix("/api/").hub().fallback("app").session())
            .route(Route::exact("/api/events").hub().token())
            .route(Route::prefix("/auth/").sign_in()),
    );
    common::add_user(
        &edge,
        "alice",
        "correct-horse-battery",
        &[
            "--email",
            "alice@example.com",
            "--display-name",
            "Alice Liddell",
        ],
    );
    Stack { edge, app, ws }
}

/// Signs in (as a same-origin form post) and returns the response.
async fn login(edge: &Edge, user: &str, password: &str, rd: Option<&str>) -> reqwest::Response {
    let url = match rd {
        Some(rd) => format!("{}?rd={}", edge.url("/auth/login"), rd),
        None => edge.url("/auth/login"),
    };
    client()
        .post(url)
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// Signs `alice` in; returns her `Cookie` header value.
async fn sign_in_alice(edge: &Edge) -> String {
    session_cookie(&login(edge, "alice", "correct-horse-battery", None).await)
}

/// Logs the session in `cookie` out (a same-origin form post, as the UI does).
async fn logout(edge: &Edge, cookie: &str) -> reqwest::Response {
    client()
        .post(edge.url("/auth/logout"))
        .header("cookie", cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap()
}

/// GETs `path` with the session in `cookie`.
async fn get_as(edge: &Edge, path: &str, cookie: impl AsRef<str>) -> reqwest::Response {
    client()
        .get(edge.url(path))
        .header("cookie", cookie.as_ref())
        .send()
        .await
        .unwrap()
}

fn session_cookie(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

/// Opens a websocket through the edge with `cookie` and checks it echoes.
async fn open_ws(
    s: &Stack,
    cookie: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://127.0.0.1:{}/ws/chat", s.edge.port)
        .into_client_request()
        .unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    // Browsers always send the page's origin with a websocket handshake.
    req.headers_mut().insert(
        "origin",
        s.edge.url("").trim_end_matches('/').parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket with a session");
    assert_eq!(resp.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("m{i}"))).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::text(format!("m{i}"))
        );
    }
    ws
}
