//! A real browser signs in: headless Chromium (Debian's `chromium`, driven by
//! `tests/peers/browser-login.js` through playwright-core) opens a gated page,
//! is sent to the edge's own login page, fills the form by its labels and
//! lands back on the page it asked for, as that user.
//!
//! The HTTP-level suites (the `auth` module) forge what a browser would send;
//! this one shows that an actual browser gets through: the script-free page
//! renders and submits under the strict CSP without a single console error,
//! Chromium's own `Sec-Fetch-Site` passes the CSRF check, the `rd` round trip
//! keeps path and query, and Chromium stores the session cookie as HttpOnly
//! and SameSite=Lax. Needs `scripts/setup` (chromium and playwright-core); the
//! tests fail, not skip, without them.

use crate::common;
use crate::common::Edge;
use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers::{self, Peer};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "correct-horse-battery";
/// The gated page the browser asks for first, and must end on.
const PAGE: &str = "/studio/some/page?x=1";
/// Where the edge sends a browser without a session to get `PAGE`.
const LOGIN: &str = "/auth/login?rd=%2Fstudio%2Fsome%2Fpage%3Fx%3D1";

/// One Chromium at a time, across the suites that drive one: two starting
/// together on a loaded 2-core machine can eat the scripts' own time limits.
pub static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The browser binary (`CHROMIUM` overrides Debian's).
pub fn chromium() -> PathBuf {
    PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()))
}

/// Fails the test, with how to fix it, when the browser or its driver is missing.
pub fn require_browser() {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "{} is missing: run scripts/setup (installs Debian's chromium) or set CHROMIUM",
        chromium.display()
    );
    assert!(
        common::peers_dir()
            .join("node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run scripts/setup (npm ci --prefix tests/peers)"
    );
}

struct Stack {
    edge: Edge,
    studio: Peer,
}

/// An open app on `/`, a session-gated studio on `/studio/`, the login on `/auth/`.
async fn stack() -> Stack {
    let app = peers::echo("app").await;
    let studio = peers::echo("studio").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .upstream("studio", studio.address())
            .route(Route::prefix("/").upstream("app"))
            .route(Route::prefix("/studio/").upstream("studio").session())
            .route(Route::prefix("/auth/").sign_in()),
    );
    common::add_user(&edge, USER, PASSWORD, &[]);
    Stack { edge, studio }
}

/// Runs `browser-login.js`: open `url`, submit the login form once per password
/// (stopping once the browser leaves the login page); returns its JSON report.
async fn browse(url: &str, user: &str, passwords: &[&str]) -> Value {
    require_browser();
    let _turn = ONE_BROWSER.lock().await;
    let script = common::peers_dir().join("browser-login.js");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .arg(url)
        .arg(user)
        .args(passwords)
        .env("CHROMIUM", chromium())
        .kill_on_drop(true)
        .output();
    let started = Instant::now();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("browser-login.js ran over 120 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser-login.js failed ({}) after {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status,
        started.elapsed()
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("browser-login.js printed {stdout:?} ({e}); stderr: {stderr}"))
}

/// Values of header `name` in the echo peer's answer, case-insensitively.
fn echoed_header(echo: &Value, name: &str) -> Vec<String> {
    let headers: Vec<(String, String)> =
        serde_json::from_value(echo["headers"].clone()).expect("echo headers");
    headers
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .collect()
}

/// Checks that the browser ended on `PAGE`, served by the studio upstream to `USER`.
fn assert_landed_as_alice(s: &Stack, report: &Value) {
    assert_eq!(report["finalUrl"], s.edge.url(PAGE), "{report:#}");
    assert_eq!(report["finalStatus"], 200, "{report:#}");
    let body = report["finalBody"].as_str().expect("final body");
    let echo: Value = serde_json::from_str(body)
        .unwrap_or_else(|_| panic!("the landing page is not the upstream's answer: {body}"));
    assert_eq!(echo["peer"], "studio");
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["target"], PAGE);
    assert_eq!(echoed_header(&echo, "x-forwarded-user"), [USER]);
    assert!(
        echoed_header(&echo, "cookie")
            .iter()
            .all(|c| !c.contains("esprit_session")),
        "the edge's session cookie reached the upstream: {echo}"
    );
    assert_eq!(
        s.studio.hits(),
        1,
        "only the signed-in request may reach the studio"
    );
}

/// Checks the cookies Chromium holds after signing in: the edge session for
/// the whole site, and the device cookie that only the sign-in ever sees.
fn assert_session_cookie(cookies: &Value) {
    let mut cookies = cookies.as_array().expect("cookie list").clone();
    cookies.sort_by_key(|c| c["name"].as_str().unwrap_or("").to_string());
    assert_eq!(
        Value::Array(cookies),
        json!([
            {
                "name": "esprit_device",
                "path": "/auth/",
                "httpOnly": true,
                "sameSite": "Strict",
                "secure": false,
                "session": false,
            },
            {
                "name": "esprit_session",
                "path": "/",
                "httpOnly": true,
                "sameSite": "Lax",
                "secure": false,
                "session": false,
            }
        ]),
        "the browser's cookies after signing in"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_on_the_login_page_and_lands_on_rd() {
    require_browser();
    let s = stack().await;
    // The strict CSP is really on the page the browser is about to use, so
    // "no console error" below means the page works under it.
    let page = common::client()
        .get(s.edge.url(LOGIN))
        .send()
        .await
        .expect("login page");
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    let started = Instant::now();
    let report = browse(&s.edge.url(PAGE), USER, &[PASSWORD]).await;
    eprintln!("browser run took {:?}", started.elapsed());

    assert_eq!(report["loginUrl"], s.edge.url(LOGIN), "{report:#}");
    assert_eq!(report["loginStatus"], 200);
    assert_eq!(report["loginTitle"], "Sign in · Esprit-Hub");
    assert_eq!(report["attempts"].as_array().map(Vec::len), Some(1));
    // Every document the browser loaded: no session -> login -> 303 to rd -> the page.
    assert_eq!(
        report["navigations"],
        json!([
            {"method": "GET", "url": s.edge.url(PAGE), "status": 302},
            {"method": "GET", "url": s.edge.url(LOGIN), "status": 200},
            {"method": "POST", "url": s.edge.url(LOGIN), "status": 303},
            {"method": "GET", "url": s.edge.url(PAGE), "status": 200},
        ]),
        "{report:#}"
    );
    assert_landed_as_alice(&s, &report);
    assert_eq!(
        report["consoleErrors"],
        json!([]),
        "script or CSP errors in the browser"
    );
    assert_session_cookie(&report["cookies"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_wrong_password_stays_on_the_login_page_then_signs_in() {
    require_browser();
    let s = stack().await;
    let report = browse(&s.edge.url(PAGE), USER, &["wrong-password-123", PASSWORD]).await;

    assert_eq!(report["loginUrl"], s.edge.url(LOGIN), "{report:#}");
    let attempts = report["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{report:#}");
    let wrong = &attempts[0];
    assert_eq!(
        wrong["url"],
        s.edge.url(LOGIN),
        "a wrong password must keep the login page and its rd"
    );
    assert_eq!(wrong["status"], 401);
    assert_eq!(wrong["errorText"], "Wrong user name or password.");
    assert_eq!(
        wrong["userField"], USER,
        "the user name is kept for the retry"
    );
    assert_eq!(wrong["cookies"], json!([]), "a wrong password set a cookie");

    // The retry from that page still goes back to the page first asked for.
    assert_eq!(attempts[1]["url"], s.edge.url(PAGE), "{report:#}");
    assert_landed_as_alice(&s, &report);
    assert_session_cookie(&report["cookies"]);
    // Chromium logs the 401 document itself as a failed load; nothing else
    // (no CSP violation, no script error) may appear.
    let unexpected: Vec<&Value> = report["consoleErrors"]
        .as_array()
        .expect("console errors")
        .iter()
        .filter(|e| {
            e["text"]
                != "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "script or CSP errors in the browser: {unexpected:#?}"
    );
}
