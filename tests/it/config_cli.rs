//! The operator contract for config: `check`, start-up refusal with precise
//! messages, `ESPRIT_CONFIG` and the environment overrides.

use crate::common;
use crate::common::config::ConfigBuilder;
use crate::common::{free_port, run_binary};
use std::path::Path;

const BASE: &str = r#"
[upstreams.app]
address = "127.0.0.1:9"
[[routes]]
prefix = "/"
upstream = "app"
"#;

fn write(dir: &Path, text: &str) -> String {
    let p = dir.join("edge.toml");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn expect_rejected(text: &str, want: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    // `check` and a real start must refuse alike, exit 2, and say where and what.
    let port = free_port();
    for args in [vec!["check", "--config", &path], vec!["--config", &path]] {
        let listen = format!("127.0.0.1:{port}");
        let (status, out, err) = run_binary(&args, &[("ESPRIT_LISTEN", &listen)]);
        assert_eq!(status.code(), Some(2), "{args:?} stdout={out} stderr={err}");
        assert!(err.contains(&path), "message does not name the file: {err}");
        for w in want {
            assert!(err.contains(w), "{args:?}: wanted {w:?} in:\n{err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[test]
fn shipped_config_checks_ok() {
    let (status, out, err) = run_binary(
        &[
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/conf/esprit-edge.toml"),
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("ok (19 routes, 3 upstreams)"), "{out}");
}

#[test]
fn esprit_config_names_the_file_when_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), BASE);
    let (status, out, _) = run_binary(&["check"], &[("ESPRIT_CONFIG", &path)]);
    assert!(status.success());
    assert!(out.starts_with(&path), "{out}");
    let (status, _, err) = run_binary(&["check"], &[("ESPRIT_CONFIG", "/nonexistent/edge.toml")]);
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("/nonexistent/edge.toml: cannot read the config file"),
        "{err}"
    );
}

#[test]
fn unknown_key() {
    expect_rejected(
        &format!("[server]\nlisten_port = 80\n{BASE}"),
        &["line 2", "unknown field `listen_port`"],
    );
}

#[test]
fn toml_syntax_error() {
    expect_rejected(&format!("{BASE}\n[[routes]\n"), &["line 8", "expected `]`"]);
}

#[test]
fn undefined_upstream() {
    expect_rejected(
        &BASE.replace("upstream = \"app\"", "upstream = \"simm\""),
        &["routes[0].upstream: no upstream named \"simm\" (defined: app)"],
    );
}

#[test]
fn duplicate_prefix() {
    expect_rejected(
        &format!("{BASE}[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n"),
        &["routes[1]: matches the same host and path as routes[0]"],
    );
}

#[test]
fn bad_addresses() {
    expect_rejected(
        &BASE.replace("127.0.0.1:9", "app"),
        &["upstreams.app.address: \"app\" is not host:port"],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), BASE);
    let (status, _, err) = run_binary(
        &["check", "--config", &path],
        &[("ESPRIT_LISTEN", "localhost:80:80")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("server.listen (from ESPRIT_LISTEN): \"localhost:80:80\" is not an IP:port"),
        "{err}"
    );
    let (status, _, err) = run_binary(
        &["check", "--config", &path],
        &[("ESPRIT_UPSTREAM_NOPE", "a:1")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("ESPRIT_UPSTREAM_NOPE: no upstream named \"nope\""),
        "{err}"
    );
}

#[test]
fn unreadable_certificate_files() {
    expect_rejected(
        &format!(
            "[tls]\nlisten = \"127.0.0.1:0\"\ncert = \"/nonexistent/edge.crt\"\nkey = \"/nonexistent/edge.key\"\n{BASE}"
        ),
        &[
            "tls.cert: cannot read /nonexistent/edge.crt",
            "tls.key: cannot read /nonexistent/edge.key",
        ],
    );
}

#[test]
fn several_problems_are_reported_together() {
    let text = r#"
[server]
trusted_proxies = ["10.0.0.0/33"]
public_origin = "hub.example.com"
redirect_https = true
[upstreams.app]
address = "x:1"
[[routes]]
prefix = "studio/"
upstream = "app"
[[routes]]
exact = "/a"
kind = "redirect"
to = "/b"
status = 200
"#;
    expect_rejected(
        text,
        &[
            "server.trusted_proxies[0]: \"10.0.0.0/33\" is not an IP address or CIDR",
            "server.public_origin: \"hub.example.com\" is not an origin",
            "server.redirect_https: is true but there is no [tls] listener",
            "routes[0].prefix: \"studio/\" must start with '/'",
            "routes[1].status: 200 is not a redirect status",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_overrides_apply_to_the_running_server() {
    let app = common::peers::echo("from-env").await;
    let mut edge =
        common::Edge::create(|dir, port| ConfigBuilder::new().raw(BASE).render(dir, port));
    let port = free_port();
    edge.spawn(
        &[
            ("ESPRIT_LISTEN", format!("127.0.0.1:{port}")),
            ("ESPRIT_UPSTREAM_APP", app.address()),
        ],
        &[],
    );
    edge.wait_listening(port);
    let body: serde_json::Value = common::get_json(format!("http://127.0.0.1:{port}/x")).await;
    assert_eq!(body["peer"], "from-env");
}

/// A config from before `auth = "token"`: its session-gated hub route covers
/// `/api/events`, where Sim flows post without a cookie. It still loads, and
/// `check` says what to add.
#[test]
fn check_warns_when_the_events_endpoint_needs_a_session() {
    let dir = tempfile::tempdir().unwrap();
    let gated = "[[routes]]\nprefix = \"/api/\"\nkind = \"hub\"\nauth = \"session\"\n";
    let path = write(dir.path(), &format!("{BASE}{gated}"));
    let (status, out, err) = run_binary(&["check", "--config", &path], &[]);
    assert!(status.success(), "{err}");
    assert!(out.contains("ok (2 routes"), "{out}");
    assert!(
        err.contains("warning:")
            && err.contains("routes[1] (/api/) asks for a session on /api/events")
            && err.contains("exact = \"/api/events\", kind = \"hub\", auth = \"token\""),
        "{err}"
    );
    let token = "[[routes]]\nexact = \"/api/events\"\nkind = \"hub\"\nauth = \"token\"\n";
    let path = write(dir.path(), &format!("{BASE}{gated}{token}"));
    let (status, _, err) = run_binary(&["check", "--config", &path], &[]);
    assert!(status.success());
    assert!(!err.contains("warning"), "{err}");
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/esprit-edge.toml");
    let (_, _, err) = run_binary(&["check", "--config", shipped], &[]);
    assert!(
        !err.contains("warning"),
        "the shipped config needs no advice: {err}"
    );
}
