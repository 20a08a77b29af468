//! Session life: removed users and replaced passwords end sessions, idle and
//! absolute limits, operators listing and revoking sessions, and sessions
//! surviving a restart of the edge.

use super::{client, get_as, login, session_cookie, sign_in_alice, stack, stack_with};
use crate::common::config::ConfigBuilder;
use crate::common::{self, Edge};
use serde_json::Value;
use std::process::Command;

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
async fn sessions_end_when_idle_too_long_and_at_their_absolute_limit() {
    use std::time::{Duration, Instant};
    let s = stack_with(
        ConfigBuilder::new()
            .auth("idle_timeout", "4s")
            .auth("absolute_timeout", "10s"),
    )
    .await;
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
