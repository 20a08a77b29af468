//! Login and the session gate against the real binary: sign-in, cookies,
//! fixation, logout, CSRF, open redirects, forged identity headers, and what
//! each kind of request gets without a session.

use crate::common;

use crate::common::peers::{self, Peer};
use crate::common::{Edge, client};
use serde_json::{Value, json};
use std::process::Command;

const TOKEN: &str = "test-only-token-0123456789";

struct Stack {
    edge: Edge,
    app: Peer,
    ws: Peer,
}

async fn stack() -> Stack {
    stack_with("").await
}

/// The stack with `extra` config lines (an `[auth]` section, say).
async fn stack_with(extra: &str) -> Stack {
    let extra = extra.to_string();
    let app = peers::echo("app").await;
    let ws = peers::ws_echo().await;
    let (a, w) = (app.address(), ws.address());
    let edge = Edge::start_with(
        move |dir, port| {
            format!(
                "{}[hub]\nevents_token = \"{TOKEN}\"\n\
                 [upstreams.app]\naddress = \"{a}\"\n[upstreams.ws]\naddress = \"{w}\"\n\
                 [[routes]]\nprefix = \"/\"\nupstream = \"app\"\n\
                 [[routes]]\nprefix = \"/app/\"\nupstream = \"app\"\nauth = \"session\"\n\
                 [[routes]]\nprefix = \"/ws/\"\nupstream = \"ws\"\nstream = true\nauth = \"session\"\n\
                 [[routes]]\nprefix = \"/api/\"\nkind = \"hub\"\nfallback = \"app\"\nauth = \"session\"\n\
                 [[routes]]\nprefix = \"/auth/\"\nkind = \"auth\"\n{extra}",
                common::server_section(dir, port)
            )
        },
        &[],
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

/// Waits (up to 10 s) until `cookie` no longer opens `/auth/me`: the edge
/// re-reads cached sessions every 3 s and the users file every second.
async fn wait_signed_out(edge: &Edge, cookie: &str, why: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let r = client()
            .get(edge.url("/auth/me"))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        if r.status() == 401 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{why}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
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

fn session_cookie(r: &reqwest::Response) -> String {
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    set.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_then_reach_the_app_as_yourself() {
    let s = stack().await;
    // A browser navigation is sent to the login with its path.
    let r = client()
        .get(s.edge.url("/app/x?y=1"))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/auth/login?rd=%2Fapp%2Fx%3Fy%3D1");
    assert_eq!(s.app.hits(), 0);

    let page = client()
        .get(s.edge.url("/auth/login?rd=%2Fapp%2Fx"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\""));
    assert!(
        !html.contains("<script"),
        "the page must work without script"
    );

    let r = login(
        &s.edge,
        "alice",
        "correct-horse-battery",
        Some("%2Fapp%2Fx%3Fy%3D1"),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/app/x?y=1");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["esprit_session=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP cookie marked Secure: {set}"
    );
    let cookie = session_cookie(&r);

    let echo: Value = client()
        .get(s.edge.url("/app/x"))
        .header("cookie", format!("{cookie}; better-auth.session_token=sim"))
        .header("x-forwarded-user", "admin")
        .header("X_Forwarded_User", "admin")
        .header("remote-user", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-forwarded-user"), ["alice"]);
    assert_eq!(get("x-forwarded-email"), ["alice@example.com"]);
    assert!(get("remote-user").is_empty() && get("x_forwarded_user").is_empty());
    assert_eq!(
        get("cookie"),
        ["better-auth.session_token=sim"],
        "the edge cookie reached the upstream"
    );

    let me: Value = get_as(&s.edge, "/auth/me", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "alice");
    assert_eq!(me["name"], "Alice Liddell");
    assert_eq!(me["email"], "alice@example.com");
    assert!(me["expires"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let s = stack().await;
    let a = login(&s.edge, "alice", "wrong-password-123", None).await;
    let b = login(&s.edge, "mallory", "wrong-password-123", None).await;
    assert_eq!(a.status(), 401);
    assert_eq!(b.status(), 401);
    assert!(a.headers().get("set-cookie").is_none());
    let (ta, tb) = (a.text().await.unwrap(), b.text().await.unwrap());
    assert!(ta.contains("Wrong user name or password."));
    assert_eq!(
        ta.replace("alice", "USER"),
        tb.replace("mallory", "USER"),
        "the answers differ"
    );
    let j = client()
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "alice", "password": "nope-nope-nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(j.status(), 401);
    assert_eq!(
        j.json::<Value>().await.unwrap()["error"],
        "Wrong user name or password."
    );
    let ok = client()
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "alice", "password": "correct-horse-battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_gets_a_new_id_and_logout_ends_it() {
    let s = stack().await;
    let c1 = sign_in_alice(&s.edge).await;
    let c2 = sign_in_alice(&s.edge).await;
    assert_ne!(c1, c2);
    let r = logout(&s.edge, &c1).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let replay = client()
        .get(s.edge.url("/app/x"))
        .header("cookie", &c1)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "a logged-out cookie still worked");
    let other = get_as(&s.edge, "/app/x", &c2).await;
    assert_eq!(other.status(), 200);
}

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
async fn cross_site_writes_are_refused() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    for (method, headers) in [
        ("POST", vec![("sec-fetch-site", "cross-site")]),
        ("PUT", vec![("sec-fetch-site", "same-site")]),
        ("DELETE", vec![("origin", "https://evil.example")]),
        ("POST", vec![("origin", "null")]),
        ("POST", vec![]),
    ] {
        let mut req = client()
            .request(method.parse().unwrap(), s.edge.url("/app/x"))
            .header("cookie", &cookie);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            403,
            "{method} {headers:?}"
        );
    }
    assert_eq!(s.app.hits(), 0);
    let ok = client()
        .post(s.edge.url("/app/x"))
        .header("cookie", &cookie)
        .header("origin", format!("http://127.0.0.1:{}", s.edge.port))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The login form itself is protected the same way.
    let r = client()
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("username", "alice"), ("password", "correct-horse-battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_paths_cannot_leave_the_site() {
    let s = stack().await;
    for rd in [
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%2509%2Fevil",
        "%2Fx%0D%0ASet-Cookie%3A%20a%3Db",
    ] {
        let r = login(&s.edge, "alice", "correct-horse-battery", Some(rd)).await;
        assert_eq!(r.status(), 303, "{rd}");
        assert_eq!(r.headers()["location"], "/", "{rd}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_user_ends_their_sessions() {
    let s = stack().await;
    common::add_user(&s.edge, "bob", "bobs-password-123", &[]);
    let alice = sign_in_alice(&s.edge).await;
    // A second session of alice's that nobody uses while she is gone.
    let untouched = sign_in_alice(&s.edge).await;
    let bob = session_cookie(&login(&s.edge, "bob", "bobs-password-123", None).await);
    for c in [&alice, &bob] {
        let r = get_as(&s.edge, "/app/x", c).await;
        assert_eq!(r.status(), 200);
    }
    // An operator edits the file by hand (written whole, as editors do):
    // the running edge re-reads it and alice's session ends.
    let file = s.edge.dir.path().join("users.toml");
    let mut users: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
    users["users"].as_table_mut().unwrap().remove("alice");
    let tmp = file.with_extension("edit");
    std::fs::write(&tmp, toml::to_string(&users).unwrap()).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    wait_signed_out(
        &s.edge,
        &alice,
        "a user removed from the file kept her session",
    )
    .await;
    // Added again, she starts afresh: the session nobody presented while she
    // was gone does not come back to life.
    common::add_user(&s.edge, "alice", "correct-horse-battery", &[]);
    let r = get_as(&s.edge, "/auth/me", &untouched).await;
    assert_eq!(r.status(), 401, "a removed user's old session came back");
    // Through the CLI: bob's session ends too, and he can no longer sign in.
    let ok = Command::new(common::binary())
        .args(["--config", s.edge.config.to_str().unwrap()])
        .args(["user", "remove", "bob"])
        .status()
        .unwrap();
    assert!(ok.success());
    wait_signed_out(&s.edge, &bob, "a removed user's session still works").await;
    assert_eq!(
        login(&s.edge, "bob", "bobs-password-123", None)
            .await
            .status(),
        401
    );
    // The gate refuses them as well as /auth/me does.
    let r = client()
        .get(s.edge.url("/app/x"))
        .header("cookie", &alice)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_throttled_with_retry_after() {
    let s = stack().await;
    // Per account: 5 free failures, then a 1 s wait (doubling with each
    // further failure). The right password sent straight after the fifth
    // failure lands inside that wait: one local round trip, not a second.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            login(&s.edge, "alice", "not-the-password", None)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401; 5]);
    let r = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(r.status(), 429, "the account is not throttled");
    // A person at the form gets the page again, saying why.
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins; try again later.")
    );
    // Another account from the same IP is not blocked yet (IP allows 10).
    common::add_user(&s.edge, "bob", "bobs-password-123", &[]);
    assert_eq!(
        login(&s.edge, "bob", "bobs-password-123", None)
            .await
            .status(),
        303
    );
    // Per IP: spraying many accounts runs into the IP limit, even with a
    // valid sign-in of one's own every few guesses (a success only clears
    // that account's count, not the IP's).
    let mut last = 0;
    for i in 0..12 {
        if i % 3 == 2 {
            let ok = login(&s.edge, "bob", "bobs-password-123", None).await;
            if ok.status() == 429 {
                last = 429;
                break;
            }
            assert_eq!(ok.status(), 303);
        }
        last = login(&s.edge, &format!("nobody{i}"), "whatever-password", None)
            .await
            .status()
            .as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "spraying accounts from one IP is not throttled");
    s.edge
        .wait_log(|v| v["target"] == "auth" && v["message"] == "sign-in throttled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_idle_too_long_and_at_their_absolute_limit() {
    use std::time::{Duration, Instant};
    let s = stack_with("[auth]\nidle_timeout = \"4s\"\nabsolute_timeout = \"10s\"\n").await;
    let status = |cookie: String| {
        let url = s.edge.url("/app/x");
        async move {
            client()
                .get(url)
                .header("cookie", cookie)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Idle: in use every 500 ms for 5 s (longer than the idle limit) it lives;
    // then left alone for 5 s it is gone. (`last_seen` is written every
    // idle/4 = 1 s, so a busy session has 3 s of slack on a loaded machine.)
    let idle = sign_in_alice(&s.edge).await;
    let busy_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < busy_until {
        assert_eq!(
            status(idle.clone()).await,
            200,
            "a session in use timed out"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status(idle.clone()).await, 401, "the idle session lived on");
    // Absolute: in constant use, it still ends 10 s after sign-in.
    let signed_in = Instant::now();
    let busy = sign_in_alice(&s.edge).await;
    let mut last = 200;
    while signed_in.elapsed() < Duration::from_secs(15) {
        last = status(busy.clone()).await;
        if last != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(last, 401, "the session outlived its absolute limit");
    assert!(
        signed_in.elapsed() >= Duration::from_secs(9),
        "the session ended early, after {:?}",
        signed_in.elapsed()
    );
    // Both are gone for /auth/me too, and the store forgot them.
    for c in [idle, busy] {
        let r = get_as(&s.edge, "/auth/me", c).await;
        assert_eq!(r.status(), 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_and_revoke_sessions() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    let other = sign_in_alice(&s.edge).await;
    let cli = |args: &[&str]| {
        let out = Command::new(common::binary())
            .args(["--config", s.edge.config.to_str().unwrap(), "session"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["list"]);
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines.iter().all(|l| l.contains("\talice\t")));
    // Revoke one by its id prefix: exactly one of the two cookies dies.
    let id = lines[0].split('\t').next().unwrap();
    let (code, out, err) = cli(&["revoke", id]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ended 1 session"));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await; // the edge re-checks cached sessions every 3 s
    let alive = |c: String| {
        let url = s.edge.url("/auth/me");
        async move {
            client()
                .get(url)
                .header("cookie", c)
                .send()
                .await
                .unwrap()
                .status()
                == 200
        }
    };
    let (a, b) = (alive(cookie.clone()).await, alive(other.clone()).await);
    assert!(
        a ^ b,
        "revoking one session changed {} sessions",
        2 - u8::from(a) - u8::from(b)
    );
    let (code, out, _) = cli(&["revoke", "--user", "alice"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("ended 1 session"));
    tokio::time::sleep(std::time::Duration::from_secs(4)).await;
    assert!(!alive(cookie).await && !alive(other).await);
    let (code, _, err) = cli(&["revoke", "--user", "alice"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no such session"));
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

/// The value of the `Set-Cookie` for cookie `name` in `r`, whole (attributes too).
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Signs in as a browser that holds the device cookie `device`.
async fn login_on_device(
    edge: &Edge,
    user: &str,
    password: &str,
    device: &str,
) -> reqwest::Response {
    client()
        .post(edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .header("cookie", device)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// A client whose connections come from `127.0.0.<n>`: another client IP.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

/// A failed sign-in as `user` from `127.0.0.<n>`; returns the status.
async fn guess_from(edge: &Edge, n: u8, user: &str) -> u16 {
    client_from(n)
        .post(edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", "guess-guess-from")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `name=value` of a whole `Set-Cookie` value.
fn pair(set: &str) -> String {
    set.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_browser_signs_in_while_someone_else_keeps_failing() {
    use std::time::Duration;
    let s = stack().await;
    let first = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(first.status(), 303);
    let device = set_cookie(&first, "esprit_device").expect("a device cookie");
    for attr in ["Path=/auth/", "HttpOnly", "SameSite=Strict"] {
        assert!(device.contains(attr), "{attr} missing in {device}");
    }
    assert!(!device.contains("Secure"), "plain HTTP: {device}");
    let device = pair(&device);

    // Someone else fails on alice's account (and, from another IP, on bob's):
    // 5 free failures, then they wait out each backoff (1 s, 2 s, 4 s) so
    // both accounts end up with an 8 s wait.
    common::add_user(&s.edge, "bob", "bobs-password-123", &[]);
    for _ in 0..5 {
        assert_eq!(
            login(&s.edge, "alice", "guess-guess-1", None)
                .await
                .status(),
            401
        );
        assert_eq!(guess_from(&s.edge, 2, "bob").await, 401);
    }
    for wait in [1100, 2100, 4100] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert_eq!(
            login(&s.edge, "alice", "guess-guess-2", None)
                .await
                .status(),
            401
        );
        assert_eq!(guess_from(&s.edge, 2, "bob").await, 401);
    }
    // Even the right password from a new browser must wait now...
    let fresh = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(fresh.status(), 429, "the account is not throttled");
    // ...but the browser alice signed in with before gets in.
    let known = login_on_device(&s.edge, "alice", "correct-horse-battery", &device).await;
    assert_eq!(known.status(), 303, "a known device was kept out");
    let renewed = pair(&set_cookie(&known, "esprit_device").expect("a renewed device cookie"));
    assert_ne!(renewed, device, "the device cookie is renewed at sign-in");
    // The old cookie was replaced: it no longer lets anyone past the backoff.
    let old = login_on_device(&s.edge, "alice", "correct-horse-battery", &device).await;
    assert_eq!(old.status(), 429, "a replaced device cookie still counted");
    // A device cookie is worth nothing for another account.
    let other = login_on_device(&s.edge, "bob", "bobs-password-123", &renewed).await;
    assert_eq!(other.status(), 429, "alice's device opened bob's account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_sent_in_parallel_get_no_more_tries_than_guesses_sent_in_turn() {
    let s = stack().await;
    let count = |statuses: &[u16], want: u16| statuses.iter().filter(|&&c| c == want).count();
    // Twenty at once at one account: 5 are checked, 15 throttled.
    let burst = futures_util::future::join_all(
        (0..20).map(|_| login(&s.edge, "alice", "guess-guess-1", None)),
    )
    .await;
    let statuses: Vec<u16> = burst.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
    // Twenty at once at twenty accounts from the same IP: it has 10 failures
    // in all, 5 of them spent above.
    let names: Vec<String> = (0..20).map(|i| format!("nobody{i}")).collect();
    let burst = futures_util::future::join_all(
        names
            .iter()
            .map(|n| login(&s.edge, n, "guess-guess-1", None)),
    )
    .await;
    let statuses: Vec<u16> = burst.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_a_password_ends_the_users_sessions() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    common::add_user(&s.edge, "alice", "a-brand-new-password", &[]);
    wait_signed_out(&s.edge, &cookie, "a session outlived its password").await;
    assert_eq!(
        login(&s.edge, "alice", "correct-horse-battery", None)
            .await
            .status(),
        401
    );
    assert_eq!(
        login(&s.edge, "alice", "a-brand-new-password", None)
            .await
            .status(),
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_survive_a_restart_of_the_edge() {
    let mut s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    s.edge.signal("TERM");
    assert!(
        s.edge
            .wait_exit(std::time::Duration::from_secs(10))
            .is_some_and(|st| st.success()),
        "the edge did not stop cleanly"
    );
    s.edge.spawn(&[], &[]);
    let port = s.edge.port;
    s.edge.wait_listening(port);
    let me: Value = get_as(&s.edge, "/auth/me", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "alice", "the restart signed alice out: {me}");
    let r = get_as(&s.edge, "/app/x", &cookie).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_does_not_hold_up_the_proxy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // One password check at a time: 80 sign-ins (8 client IPs, 10 names each,
    // so no throttle cuts them short) queue for seconds.
    let s = stack_with("[auth]\nlogin_concurrency = 1\n").await;
    let cookie = sign_in_alice(&s.edge).await;
    let done = Arc::new(AtomicUsize::new(0));
    let url = s.edge.url("/auth/login");
    let flood: Vec<_> = (0..80u8)
        .map(|i| {
            let (done, url) = (done.clone(), url.clone());
            tokio::spawn(async move {
                let r = client_from(10 + i % 8)
                    .post(url)
                    .header("sec-fetch-site", "same-origin")
                    .form(&[
                        ("username", format!("flood{i}").as_str()),
                        ("password", "guess-guess-flood"),
                    ])
                    .send()
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                r.status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Proxied requests and health checks are answered while the sign-ins wait.
    for _ in 0..5 {
        let r = get_as(&s.edge, "/app/x", &cookie).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            client()
                .get(s.edge.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let finished = done.load(Ordering::SeqCst);
    assert!(
        finished < 80,
        "the proxy answered only after every sign-in ({finished} of 80 done)"
    );
    for t in flood {
        assert_eq!(t.await.unwrap(), 401, "a queued sign-in was not checked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_from_another_origin_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    for origin in [
        Some("http://evil.example"),
        Some("null"),
        Some("http://127.0.0.1:1"),
        None,
    ] {
        let mut req = format!("ws://127.0.0.1:{}/ws/chat", s.edge.port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{origin:?}")
            }
            other => panic!("cross-origin websocket {origin:?}: {other:?}"),
        }
    }
    assert_eq!(
        s.ws.hits(),
        0,
        "a cross-origin handshake reached the upstream"
    );
    // From the site's own page it opens.
    let _ws = open_ws(&s, &cookie).await;
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
    let s = stack_with("[auth]\nidle_timeout = \"3s\"\n").await;
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
