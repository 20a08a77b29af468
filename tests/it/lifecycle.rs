//! Failure and process life: dead and slow upstreams, SIGTERM drain, SIGQUIT
//! hand-over to a new process, SIGHUP that never stops it.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{Edge, client};
use serde_json::Value;
use std::time::{Duration, Instant};

/// An app upstream on `/` (its `read_timeout` given), and a dead one on
/// `/api/` and `/down/`.
fn config(app: &str, dead: &str, read_timeout: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .upstream("app", app)
        .upstream("dead", dead)
        .route(
            Route::prefix("/")
                .upstream("app")
                .read_timeout(read_timeout),
        )
        .route(Route::prefix("/api/").upstream("dead"))
        .route(Route::prefix("/down/").upstream("dead"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_upstream_gives_502_in_the_clients_format_and_a_log_line() {
    let app = peers::echo("app").await;
    let edge = Edge::start(&config(&app.address(), &peers::dead_address(), "1s"));

    let r = client().get(edge.url("/api/run")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.headers()["content-type"], "application/json");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "upstream refused the connection");

    let r = client()
        .get(edge.url("/down/page"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    // A browser page says which upstream is missing, never where it lives.
    let page = r.text().await.unwrap();
    assert!(
        page.contains("is not answering") && page.contains("upstream refused the connection (502)"),
        "{page}"
    );
    assert!(!page.contains("127.0.0.1"), "{page}");

    let r = client()
        .get(edge.url("/down/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");

    let line = edge.wait_log(|v| v["target"] == "edge" && v["status"] == 502);
    assert_eq!(line["level"], "WARN");
    assert_eq!(line["route"], "/api/");
    assert_eq!(line["upstream"], "dead");
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{line}"
    );

    // Other routes are unaffected.
    assert_eq!(
        client()
            .get(edge.url("/fine"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_upstream_gives_502() {
    let edge = Edge::start(&config(
        "no-such-host.invalid:80",
        &peers::dead_address(),
        "1s",
    ));
    let r = client()
        .get(edge.url("/x"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let line = edge.wait_log(|v| v["target"] == "edge" && v["status"] == 502);
    assert!(
        line["error"]
            .as_str()
            .unwrap()
            .contains("cannot resolve upstream app"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gives_504() {
    let app = peers::echo("app").await;
    let edge = Edge::start(&config(&app.address(), &peers::dead_address(), "1s"));
    let r = client()
        .get(edge.url("/slow?mode=slow&ms=4000"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "upstream timed out");
    let line = edge.wait_log(|v| v["target"] == "edge" && v["status"] == 504);
    assert_eq!(line["upstream"], "app");
    // The same upstream still answers fast requests.
    assert_eq!(
        client()
            .get(edge.url("/quick"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let app = peers::echo("app").await;
    let mut edge = Edge::start(
        &config(&app.address(), &peers::dead_address(), "10s")
            .server("grace_period", "5s")
            .server("shutdown_timeout", "1s"),
    );
    // The request outlasts the time the edge needs to close its listener,
    // even on a loaded machine, and ends well inside the grace period.
    let url = edge.url("/drain?mode=drain&ms=2500");
    let inflight =
        tokio::spawn(async move { client().get(url).send().await.map(|r| r.status().as_u16()) });
    while app.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Instant::now();
    edge.signal("TERM");
    assert_eq!(
        inflight.await.unwrap().expect("in-flight request was cut"),
        200
    );
    // The listener is closed for new connections during the drain.
    assert!(
        std::net::TcpStream::connect(edge.addr()).is_err(),
        "still accepting after SIGTERM"
    );
    let status = tokio::task::spawn_blocking(move || {
        let s = edge.wait_exit(Duration::from_secs(15));
        (s, edge)
    })
    .await
    .unwrap();
    let (exit, edge) = status;
    let exit = exit.unwrap_or_else(|| panic!("still running after SIGTERM\n{}", edge.stdout()));
    assert!(exit.success(), "exit {exit:?}");
    eprintln!("SIGTERM to exit: {:?}", sent.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigquit_hands_the_listener_to_an_upgraded_process() {
    let app = peers::echo("app").await;
    // A generous read timeout: one slow echo on a loaded machine is not a
    // failed hand-over.
    let mut old = Edge::start(&config(&app.address(), &peers::dead_address(), "10s"));
    // The new process waits on the upgrade socket for the old one's listeners.
    let mut new = Edge::create(|_, _| String::new());
    new.config = old.config.clone();
    let sock_dir = old.dir.path().to_path_buf();
    new.spawn(&[], &["--upgrade"]);
    let upgrade_sock = sock_dir.join("upgrade.sock");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !upgrade_sock.exists() {
        assert!(
            Instant::now() < deadline,
            "new process never opened {}\n{}",
            upgrade_sock.display(),
            new.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Requests keep flowing while the old process hands over and drains.
    let url = old.url("/during");
    let load = tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        let until = Instant::now() + Duration::from_secs(4);
        while Instant::now() < until {
            match client().get(&url).send().await {
                Ok(r) if r.status() == 200 => ok += 1,
                _ => failed += 1,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (ok, failed)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    old.signal("QUIT");
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 0, "no request succeeded");
    assert_eq!(failed, 0, "requests failed during the hand-over");
    let exited = tokio::task::spawn_blocking(move || (old.wait_exit(Duration::from_secs(20)), old))
        .await
        .unwrap();
    assert!(
        exited.0.is_some_and(|s| s.success()),
        "old process did not exit cleanly\n{}",
        exited.1.stdout()
    );
    // The new process serves alone now.
    let r = client().get(exited.1.url("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The access line is written just after the response: poll for it.
    let new_log = new.dir.path().join("stdout.log");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&new_log).unwrap_or_default();
        if log.contains("\"path\":\"/after\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "request not served by the new process:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SIGHUP's default action ends a process, and operators send it out of
/// habit (`nginx -s reload`, log rotation, `systemctl reload`): on the
/// shipped config (no `[tls]`) it must change nothing, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_on_the_shipped_config_never_stops_the_edge() {
    let mut edge = crate::common::start_default(ConfigBuilder::new(), &[]);
    for n in 1..=3 {
        edge.signal("HUP");
        // Each HUP reloads the (unchanged) config once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while edge
            .stdout()
            .matches("\"message\":\"config reloaded\"")
            .count()
            < n
        {
            assert!(
                Instant::now() < deadline,
                "HUP {n} reloaded nothing\n{}",
                edge.stdout()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(
        edge.wait_exit(Duration::from_millis(500)),
        None,
        "SIGHUP stopped the edge\n{}",
        edge.stderr()
    );
    let r = client().get(edge.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
}

/// The stores hold session hashes, users and events: owner-only files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_files_the_edge_creates_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let edge = crate::common::start_default(ConfigBuilder::new(), &[]);
    crate::common::add_user(&edge, "owner", "owner-password-1", &[]);
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(edge.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.contains("sqlite3") || name == "users.toml" {
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name} is {mode:o}");
            seen.push(name);
        }
    }
    seen.sort();
    for want in ["hub.sqlite3", "sessions.sqlite3", "users.toml"] {
        assert!(
            seen.iter().any(|s| s == want),
            "{want} not found in {seen:?}"
        );
    }
}
