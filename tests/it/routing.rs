//! The default config's routing table, forwarding headers, path tricks and
//! request limits, against the real binary and real upstream peers.

use crate::common;
use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers::{self, Peer};
use crate::common::{Edge, client};
use serde_json::Value;

struct Stack {
    edge: Edge,
    /// The session cookie of a signed-in user: the default config gates Sim and the API.
    cookie: String,
    skyoffice: Peer,
    sim: Peer,
    realtime: Peer,
}

async fn default_stack() -> Stack {
    default_stack_with(ConfigBuilder::new()).await
}

/// The default stack with `[server]` settings of the test's own.
async fn default_stack_with(server: ConfigBuilder) -> Stack {
    let skyoffice = peers::echo("skyoffice").await;
    let sim = peers::echo("sim").await;
    let realtime = peers::echo("realtime").await;
    let edge = common::start_default(
        server,
        &[
            ("ESPRIT_UPSTREAM_SKYOFFICE", skyoffice.address()),
            ("ESPRIT_UPSTREAM_SIM", sim.address()),
            ("ESPRIT_UPSTREAM_REALTIME", realtime.address()),
        ],
    );
    let cookie = common::sign_in(&edge).await;
    Stack {
        edge,
        cookie,
        skyoffice,
        sim,
        realtime,
    }
}

impl Stack {
    fn client(&self) -> reqwest::Client {
        common::client_with_cookie(&self.cookie)
    }
}

async fn get_json(s: &Stack, path: &str) -> (u16, Value) {
    let r = s.client().get(s.edge.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn header<'a>(echo: &'a Value, name: &str) -> Vec<&'a str> {
    echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h[0].as_str().unwrap().eq_ignore_ascii_case(name))
        .map(|h| h[1].as_str().unwrap())
        .collect()
}

/// Sends raw bytes (for requests no client library would produce) and returns (status, body).
fn raw(port: u16, request: &str) -> (u16, String) {
    let (status, _, body) = raw_response(port, request);
    (status, body)
}

/// Sends raw bytes and returns (status, head, body).
fn raw_response(port: u16, request: &str) -> (u16, String, String) {
    let (status, text) = common::raw_exchange(port, request);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (status, head.to_string(), body.to_string())
}

/// A raw GET as the signed-in user.
fn get_raw(s: &Stack, target: &str, headers: &str) -> (u16, String) {
    raw(
        s.edge.port,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: hub.local\r\nCookie: {}\r\n{headers}Connection: close\r\n\r\n",
            s.cookie
        ),
    )
}

/// A raw GET without any session.
fn get_anonymous(s: &Stack, target: &str, headers: &str) -> (u16, String) {
    raw(
        s.edge.port,
        &format!("GET {target} HTTP/1.1\r\nHost: hub.local\r\n{headers}Connection: close\r\n\r\n"),
    )
}

/// A browser navigation to `target` without a session: (status, `Location`).
fn navigate_anonymous(s: &Stack, target: &str) -> (u16, Option<String>) {
    let (status, head, _) = raw_response(
        s.edge.port,
        &format!(
            "GET {target} HTTP/1.1\r\nHost: hub.local\r\nSec-Fetch-Mode: navigate\r\nConnection: close\r\n\r\n"
        ),
    );
    let loc = head.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("location"))
            .map(|(_, v)| v.trim().to_string())
    });
    (status, loc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_session_the_default_config_lets_nothing_gated_through() {
    let s = default_stack().await;
    // Every gated row of the table: 401 (JSON under /api/) for scripts, the
    // login (with the way back) for a browser navigation.
    for path in [
        "/studio/",
        "/studio/w/1?tab=2",
        "/sim/x",
        "/_next/static/chunks/main.js",
        "/api/workflows/1",
        "/api/auth/get-session",
        "/api/agents",
        "/api/runs",
        "/api/stream?npc=a",
        "/socket.io/?EIO=4&transport=polling",
    ] {
        let (status, body) = get_anonymous(&s, path, "Accept: application/json\r\n");
        assert_eq!(status, 401, "{path}: {body}");
        let (status, loc) = navigate_anonymous(&s, path);
        assert_eq!(status, 302, "{path}");
        let rd: String = form_urlencoded_byte_serialize(path);
        assert_eq!(
            loc.as_deref(),
            Some(format!("/auth/login?rd={rd}").as_str()),
            "{path}"
        );
    }
    // Writes too, websocket upgrades included.
    let (status, _) = raw(
        s.edge.port,
        "POST /api/run/research HTTP/1.1\r\nHost: hub.local\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert_eq!(status, 401);
    let (status, _) = get_anonymous(
        &s,
        "/socket.io/?EIO=4&transport=websocket",
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://hub.local\r\n",
    );
    assert_eq!(status, 401);
    // Path tricks that try to reach a gated route through an open one.
    for target in [
        "/auth/../api/run/x",
        "/auth/%2e%2e/api/agents",
        "/%2E%2E/studio/",
        "/auth%2F..%2Fstudio%2F",
        "/healthz/../studio/",
        "/api/webhooks/../workflows/1",
        "/api/webhooks/%2e%2e/workflows/1",
    ] {
        let (status, body) = get_anonymous(&s, target, "Accept: application/json\r\n");
        assert_eq!(status, 400, "{target}: {body}");
    }
    // Merged slashes reach the gated route, and its gate; case is not folded
    // (/API/ and /Studio/ are SkyOffice's, not the API's or Sim's).
    assert_eq!(get_anonymous(&s, "//api/agents", "").0, 401);
    assert_eq!(get_anonymous(&s, "//studio//", "").0, 401);
    assert_eq!(get_anonymous(&s, "/api//workflows", "").0, 401);
    for target in ["/API/run/x", "/Studio/"] {
        let (status, body) = get_anonymous(&s, target, "");
        assert_eq!(status, 200, "{target}");
        assert!(body.contains("\"peer\":\"skyoffice\""), "{target}: {body}");
    }
    assert_eq!(
        s.sim.hits(),
        0,
        "a gated Sim path was reached without a session"
    );
    assert_eq!(
        s.realtime.hits(),
        0,
        "realtime was reached without a session"
    );
    // The open rows stay open: the UI, Sim's webhook triggers, the health check.
    let (status, body) = get_anonymous(&s, "/api/webhooks/trigger/abc", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"peer\":\"sim\""), "{body}");
    assert_eq!(get_anonymous(&s, "/", "").0, 200);
    assert_eq!(get_anonymous(&s, "/healthz", "").0, 200);
}

/// `rd` as the gate writes it: the path and query, form-encoded.
fn form_urlencoded_byte_serialize(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_routing_table_proxies_each_row() {
    let s = default_stack().await;
    let rows = [
        ("/", "skyoffice", "/"),
        ("/index.html?v=2", "skyoffice", "/index.html?v=2"),
        ("/studio/", "sim", "/"),
        (
            "/studio/workspace/w1/w/f2?tab=logs",
            "sim",
            "/workspace/w1/w/f2?tab=logs",
        ),
        ("/sim/", "sim", "/"),
        ("/sim/api/x", "sim", "/api/x"),
        (
            "/_next/static/chunks/main.js",
            "sim",
            "/_next/static/chunks/main.js",
        ),
        ("/api/workflows/123", "sim", "/api/workflows/123"),
        ("/api/auth/get-session", "sim", "/api/auth/get-session"),
        (
            "/api/webhooks/trigger/abc",
            "sim",
            "/api/webhooks/trigger/abc",
        ),
        (
            "/socket.io/?EIO=4&transport=polling",
            "realtime",
            "/socket.io/?EIO=4&transport=polling",
        ),
    ];
    for (path, peer, target) in rows {
        let (status, echo) = get_json(&s, path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(echo["peer"], peer, "{path}");
        assert_eq!(echo["target"], target, "{path}");
    }
    assert!(s.skyoffice.hits() >= 2 && s.sim.hits() >= 8 && s.realtime.hits() == 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_redirects_carry_path_and_query() {
    let s = default_stack().await;
    let rows = [
        ("/studio", 308, "/studio/"),
        ("/studio?x=1", 308, "/studio/?x=1"),
        ("/sim", 308, "/sim/"),
        ("/login", 302, "/studio/login"),
        (
            "/login?callbackUrl=%2Fworkspace",
            302,
            "/studio/login?callbackUrl=%2Fworkspace",
        ),
        ("/signup", 302, "/studio/signup"),
        ("/verify?token=t", 302, "/studio/verify?token=t"),
        ("/forgot-password", 302, "/studio/forgot-password"),
        (
            "/reset-password?token=t",
            302,
            "/studio/reset-password?token=t",
        ),
        ("/workspace/abc/w/def", 302, "/studio/workspace/abc/w/def"),
    ];
    for (path, status, location) in rows {
        let r = s.client().get(s.edge.url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(r.headers()["location"], location, "{path}");
    }
    // Segment boundary: /loginx is not /login.
    let (_, echo) = get_json(&s, "/loginx").await;
    assert_eq!(echo["peer"], "skyoffice");
    assert_eq!(s.sim.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_endpoints_are_answered_in_process_and_never_reach_sim() {
    let s = default_stack().await;
    let cases = [
        ("POST", "/api/run/research", 404),
        // No bearer token: 401 (a run's own token works even without a
        // shared one, so the endpoint is never off).
        ("POST", "/api/events", 401),
        ("GET", "/api/agents", 200),
        ("GET", "/api/runs", 200),
        ("GET", "/api/runs/nope", 404),
        ("GET", "/api/run/research", 405),
    ];
    for (method, path, status) in cases {
        let r = s
            .client()
            .request(method.parse().unwrap(), s.edge.url(path))
            .header("accept", "text/html")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        assert_eq!(r.headers()["content-type"], "application/json", "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
        let v: Value = r.json().await.unwrap();
        if status >= 400 {
            assert!(v["error"].is_string(), "{path}: {v}");
        }
    }
    let r = s
        .client()
        .get(s.edge.url("/api/stream?npc=a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    drop(r);
    assert_eq!(s.sim.hits(), 0, "a hub path leaked to Sim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_body_pass_through_unchanged() {
    let s = default_stack().await;
    let body = "x".repeat(100_000);
    let r = s
        .client()
        .post(s.edge.url("/api/workflows/1/execute"))
        .header("host", "hub.example.com:8080")
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], 100_000);
    assert_eq!(header(&echo, "host"), ["hub.example.com:8080"]);
    // As the browser sent it, port kept: Next.js builds absolute URLs from it.
    assert_eq!(header(&echo, "x-forwarded-host"), ["hub.example.com:8080"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarding_and_identity_headers_never_reach_upstream() {
    let s = default_stack().await;
    let forged = "X-Forwarded-For: 6.6.6.6\r\n\
        x_forwarded_for: 6.6.6.6\r\n\
        X-FORWARDED-USER: admin\r\n\
        X_Forwarded_User: admin\r\n\
        x-forwarded-email: admin@evil\r\n\
        X-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: evil.example\r\n\
        Forwarded: for=6.6.6.6;proto=https\r\n\
        X-Real-IP: 6.6.6.6\r\n\
        X-Auth-Request-User: admin\r\n\
        Remote-User: admin\r\n\
        REMOTE_USER: admin\r\n\
        Remote-Email: admin@evil\r\n\
        X-Original-URL: /admin\r\n\
        X-Keep-Me: yes\r\n";
    let (status, body) = get_raw(&s, "/studio/x", forged);
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    let names: Vec<String> = echo["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap().to_ascii_lowercase())
        .collect();
    for bad in [
        "x_forwarded_for",
        "x_forwarded_user",
        "x-forwarded-email",
        "forwarded",
        "x-auth-request-user",
        "remote-user",
        "remote_user",
        "remote-email",
        "x-original-url",
    ] {
        assert!(
            !names.contains(&bad.to_string()),
            "{bad} reached the upstream: {names:?}"
        );
    }
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    // The only user the upstream hears of is the one who signed in.
    assert_eq!(header(&echo, "x-forwarded-user"), ["tester"]);
    assert_eq!(header(&echo, "x-real-ip"), ["127.0.0.1"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(header(&echo, "x-forwarded-host"), ["hub.local"]);
    assert_eq!(header(&echo, "x-keep-me"), ["yes"]);
    // On the open rows (no session, so the edge sets no user) the forged
    // identity must not pass either.
    for target in ["/", "/api/webhooks/trigger/abc"] {
        let (status, body) = get_anonymous(&s, target, forged);
        assert_eq!(status, 200, "{target}: {body}");
        let echo: Value = serde_json::from_str(&body).unwrap();
        for bad in [
            "x-forwarded-user",
            "x_forwarded_user",
            "x-forwarded-email",
            "remote-user",
            "remote_user",
            "x-auth-request-user",
        ] {
            assert!(header(&echo, bad).is_empty(), "{bad} reached {target}");
        }
        assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_proxy_xff_is_walked_right_to_left() {
    let s = default_stack_with(ConfigBuilder::new().server("trusted_proxies", vec!["127.0.0.0/8"]))
        .await;
    // The browser speaks HTTPS to the TLS proxy in front: signing in through
    // it gives the Secure, __Host- cookie, and that is the one that counts.
    let login = client()
        .post(s.edge.url("/auth/login"))
        .header("x-forwarded-proto", "https")
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "tester"), ("password", "tester-password-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let set = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.starts_with("__Host-esprit_session=") && set.contains("; Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let r = common::client_with_cookie(&cookie)
        .get(s.edge.url("/studio/"))
        .header("x-forwarded-for", "6.6.6.6, 198.51.100.7, 127.0.0.9")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "lb-7f3a.42")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(header(&echo, "x-forwarded-for"), ["198.51.100.7"]);
    assert_eq!(header(&echo, "x-forwarded-proto"), ["https"]);
    // The trusted proxy's request id spans both hops.
    assert_eq!(header(&echo, "x-request-id"), ["lb-7f3a.42"]);
    let line = s
        .edge
        .wait_log(|v| v["target"] == "access" && v["path"] == "/studio/");
    assert_eq!(line["client"], "198.51.100.7");
    assert_eq!(line["request_id"], "lb-7f3a.42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_peer_cannot_claim_another_ip() {
    let s = default_stack().await;
    let r = s
        .client()
        .get(s.edge.url("/studio/"))
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-request-id", "chosen-by-the-client")
        .send()
        .await
        .unwrap();
    let echo: Value = r.json().await.unwrap();
    assert_eq!(header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    // A client's own request id is replaced; the upstream and the log see the edge's.
    let id = header(&echo, "x-request-id");
    assert_eq!(id.len(), 1);
    assert_ne!(id[0], "chosen-by-the-client");
    assert_eq!(id[0].len(), 24, "{id:?}");
    let line = s
        .edge
        .wait_log(|v| v["target"] == "access" && v["path"] == "/studio/");
    assert_eq!(line["client"], "127.0.0.1");
    assert_eq!(line["request_id"], id[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_are_refused_before_any_upstream() {
    let s = default_stack().await;
    let long = format!("/{}", "a".repeat(9000));
    let cases: [(&str, u16); 10] = [
        ("/auth/../api/run/x", 400),
        ("/auth/%2e%2e/api/run/x", 400),
        ("/studio/%2E%2E/api/run/x", 400),
        ("/api%2Frun%2Fx", 400),
        ("/studio%2f..%2fapi", 400),
        ("/a%5c..%5capi", 400),
        ("/a\\..\\api", 400),
        ("/a%00b", 400),
        ("/a%0d%0aSet-Cookie:%20x=1", 400),
        (long.as_str(), 414),
    ];
    for (target, want) in cases {
        let (status, body) = get_raw(&s, target, "Accept: application/json\r\n");
        assert_eq!(status, want, "{target}: {body}");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{target}: not JSON: {body}"));
        assert!(v["error"].is_string());
    }
    // Merged slashes and case: //api/ is /api/ (hub), /API/ is not the API.
    // GET on the hub's run endpoint: 405 from the hub proves //api/ reached it.
    assert_eq!(get_raw(&s, "//api/run/x", "").0, 405);
    let (status, body) = get_raw(&s, "/API/run/x", "");
    assert_eq!(status, 200);
    assert!(body.contains("\"peer\":\"skyoffice\""), "{body}");
    assert_eq!(s.sim.hits(), 0);
    assert_eq!(s.skyoffice.hits(), 1);
    let line = s
        .edge
        .wait_log(|v| v["target"] == "access" && v["status"] == 414);
    assert_eq!(line["error"], "request target too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_reach_nothing() {
    let s = default_stack().await;
    for req in [
        "GARBAGE\r\n\r\n",
        "GET /studio/ HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        "GET /studio/ HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello",
    ] {
        let (status, _) = raw(s.edge.port, req);
        assert!(status == 400 || status == 0, "{req:?} got {status}");
    }
    assert_eq!(s.sim.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_with_413() {
    let s = default_stack_with(ConfigBuilder::new().server("max_body_bytes", 1024)).await;
    let r = s
        .client()
        .post(s.edge.url("/studio/upload"))
        .body("y".repeat(2048))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.sim.hits(), 0, "an oversized declared body reached Sim");
    // A chunked body (no Content-Length) is counted as it streams.
    let chunks = futures_util::stream::iter(
        (0..4).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 512]))),
    );
    let r = s
        .client()
        .post(s.edge.url("/studio/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // Either the 413 arrives or the connection is cut mid-body; what matters is
    // that Sim never received the whole oversized body.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }
    assert_eq!(
        s.sim.bodies(),
        0,
        "an oversized chunked body reached Sim whole"
    );
    let ok = s
        .client()
        .post(s.edge.url("/studio/upload"))
        .body("y".repeat(1000))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_and_upstream_csp() {
    let s = default_stack().await;
    let r = s.client().get(s.edge.url("/")).send().await.unwrap();
    let h = r.headers();
    assert!(h.get("server").is_none());
    assert!(h.get("x-powered-by").is_none());
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    // Sim sets its own CSP: the edge must not replace it.
    let r = s
        .client()
        .get(s.edge.url("/studio/?mode=csp"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-security-policy"],
        "script-src 'nonce-peer'"
    );
    // In-process answers carry the same headers.
    let r = s.client().get(s.edge.url("/studio")).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().get("content-security-policy").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_needs_no_upstream() {
    let edge = common::start_default(
        ConfigBuilder::new(),
        &[
            ("ESPRIT_UPSTREAM_SKYOFFICE", peers::dead_address()),
            ("ESPRIT_UPSTREAM_SIM", peers::dead_address()),
            ("ESPRIT_UPSTREAM_REALTIME", peers::dead_address()),
        ],
    );
    let r = client().get(edge.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    assert_eq!(
        client().get(edge.url("/")).send().await.unwrap().status(),
        502
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_is_one_json_line_per_request() {
    let s = default_stack().await;
    s.client()
        .get(s.edge.url("/studio/a?b=1"))
        .send()
        .await
        .unwrap();
    let line = s
        .edge
        .wait_log(|v| v["target"] == "access" && v["path"] == "/studio/a");
    for key in [
        "timestamp",
        "client",
        "method",
        "path",
        "status",
        "bytes",
        "duration_ms",
        "route",
        "upstream",
    ] {
        assert!(!line[key].is_null(), "access log lacks {key}: {line}");
    }
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "/studio/");
    assert_eq!(line["upstream"], "sim");
    assert_eq!(line["method"], "GET");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_reused() {
    let s = default_stack().await;
    let c = s.client();
    for _ in 0..20 {
        let r = c.get(s.edge.url("/studio/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // Read to the end, so the client keeps its connection to the edge:
        // the next request then waits for the edge to have pooled the
        // upstream connection, instead of racing it on a new one.
        r.bytes().await.unwrap();
    }
    assert_eq!(s.sim.hits(), 20);
    assert!(
        s.sim.conns() <= 2,
        "{} upstream connections for 20 sequential requests",
        s.sim.conns()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_websocket_upgrades_reach_an_upstream() {
    let s = default_stack().await;
    let (status, body) = get_raw(
        &s,
        "/studio/x",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert!(
        header(&echo, "upgrade").is_empty(),
        "h2c upgrade reached the upstream: {echo}"
    );
    assert!(header(&echo, "http2-settings").is_empty());
    assert!(
        header(&echo, "connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("upgrade"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_named_in_connection_are_dropped_but_host_is_kept() {
    let s = default_stack().await;
    let (status, body) = get_raw(
        &s,
        "/studio/x",
        "Connection: X-Internal-Token\r\nX-Internal-Token: secret\r\n",
    );
    assert_eq!(status, 200, "{body}");
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert!(header(&echo, "x-internal-token").is_empty());
    assert_eq!(header(&echo, "host"), ["hub.local"]);
    // Naming Host in Connection is refused outright (Pingora's own check).
    let (status, _) = get_raw(&s, "/studio/x", "Connection: host\r\n");
    assert_eq!(status, 400);
    assert_eq!(s.sim.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_or_bogus_host_is_400() {
    let s = default_stack().await;
    let (status, _) = raw(
        s.edge.port,
        "GET /studio/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    let (status, _) = raw(
        s.edge.port,
        "GET /studio/ HTTP/1.1\r\nHost: evil.example/x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 400);
    assert_eq!(s.sim.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes_and_a_hub_without_fallback() {
    let main = peers::echo("main").await;
    let admin = peers::echo("admin").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("main", main.address())
            .upstream("admin", admin.address())
            .route(Route::prefix("/").upstream("main"))
            .route(
                Route::prefix("/")
                    .host("admin.example.com")
                    .upstream("admin"),
            )
            .route(Route::prefix("/api/").hub()),
    );
    let peer_for = |host: &'static str| {
        let url = edge.url("/x");
        async move {
            let v: Value = client()
                .get(url)
                .header("host", host)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["peer"].as_str().unwrap().to_string()
        }
    };
    assert_eq!(peer_for("admin.example.com").await, "admin");
    assert_eq!(peer_for("ADMIN.example.com.:8080").await, "admin");
    assert_eq!(peer_for("other.example.com").await, "main");
    let r = client()
        .get(edge.url("/api/workflows"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(main.hits() + admin.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_and_more_identity_headers_never_reach_upstream() {
    let s = default_stack().await;
    // x-middleware-subrequest lets a client skip Next.js middleware
    // (CVE-2025-29927); the others are identity headers some apps believe.
    let forged = "x-middleware-subrequest: middleware:middleware:middleware\r\n\
        X_Middleware_Subrequest: src/middleware\r\n\
        x-invoke-path: /admin\r\n\
        X-Remote-Addr: 6.6.6.6\r\n\
        X-Authenticated-User: admin\r\n\
        X-Webauth-User: admin\r\n\
        X-Email: admin@evil\r\n\
        Client-IP: 6.6.6.6\r\n\
        X-Originating-IP: 6.6.6.6\r\n\
        x-nextjs-data: 1\r\n";
    for target in ["/", "/api/webhooks/trigger/abc"] {
        let (status, body) = get_anonymous(&s, target, forged);
        assert_eq!(status, 200, "{target}: {body}");
        let echo: Value = serde_json::from_str(&body).unwrap();
        for bad in [
            "x-middleware-subrequest",
            "x_middleware_subrequest",
            "x-invoke-path",
            "x-remote-addr",
            "x-authenticated-user",
            "x-webauth-user",
            "x-email",
            "client-ip",
            "x-originating-ip",
        ] {
            assert!(header(&echo, bad).is_empty(), "{bad} reached {target}");
        }
        // Next's own client sends this one; it passes.
        assert_eq!(header(&echo, "x-nextjs-data"), ["1"], "{target}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cannot_set_or_clear_the_edges_cookies() {
    let s = default_stack().await;
    for target in ["/?mode=cookies", "/studio/x?mode=cookies"] {
        let r = s.client().get(s.edge.url(target)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{target}");
        let cookies: Vec<&str> = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["app=kept; Path=/"], "{target}");
    }
    let line = s.edge.wait_log(|v| {
        v["target"] == "edge"
            && v["message"] == "upstream tried to set the edge's own cookies; dropped"
    });
    assert_eq!(line["dropped"], 4);
    // The signed-in session is untouched.
    let r = s.client().get(s.edge.url("/auth/me")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// Requests an intermediary could frame differently from the upstream
/// (request smuggling) are refused with 400, never forwarded, and the
/// connection is closed (RFC 9112 §3.2, §6.1, §6.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_gets_400_closes_and_reaches_nothing() {
    let s = default_stack().await;
    let cases = [
        ("no Host", "GET / HTTP/1.1\r\n\r\n"),
        ("empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n"),
        (
            "CL list",
            "POST / HTTP/1.1\r\nHost: hub.local\r\nContent-Length: 3, 3\r\n\r\nabc",
        ),
        (
            "two CL",
            "POST / HTTP/1.1\r\nHost: hub.local\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
        ),
        (
            "CL with _",
            "POST / HTTP/1.1\r\nHost: hub.local\r\nContent_Length: 3\r\n\r\nabc",
        ),
        (
            "TE with _",
            "POST / HTTP/1.1\r\nHost: hub.local\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "CL with a sign",
            "POST / HTTP/1.1\r\nHost: hub.local\r\nContent-Length: +3\r\n\r\nabc",
        ),
        (
            "Host and target disagree",
            "GET http://elsewhere.example/ HTTP/1.1\r\nHost: hub.local\r\n\r\n",
        ),
    ];
    for (why, request) in cases {
        let (status, head, _) = raw_response(s.edge.port, request);
        assert_eq!(status, 400, "{why}: {head}");
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{why}: the connection must not be reused: {head}"
        );
    }
    assert_eq!(
        s.skyoffice.hits(),
        0,
        "an ambiguous request reached the upstream"
    );
    // Content-Length with Transfer-Encoding: Pingora frames the body by
    // Transfer-Encoding, drops Content-Length before anything sees it and
    // closes the connection afterwards (RFC 9112 §6.1, §6.3), so the
    // upstream gets one unambiguous framing.
    let (status, head, body) = raw_response(
        s.edge.port,
        "POST / HTTP/1.1\r\nHost: hub.local\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let echo: Value = serde_json::from_str(&body).unwrap();
    assert!(header(&echo, "content-length").is_empty(), "{echo}");
    assert_eq!(echo["body"], "abc");
    assert_eq!(s.skyoffice.hits(), 1);
    // HTTP/1.0 may omit Host.
    let (status, body) = raw(s.edge.port, "GET / HTTP/1.0\r\n\r\n");
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.skyoffice.hits(), 2);
}
