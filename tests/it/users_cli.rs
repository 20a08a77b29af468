//! `esprit-edge user add|remove|list`: the users file operators manage.

use crate::common;
use crate::common::config::{ConfigBuilder, Route};

use std::io::Write;
use std::process::{Command, Stdio};

fn config(dir: &std::path::Path) -> String {
    let p = dir.join("edge.toml");
    let config = ConfigBuilder::new()
        .server("data_dir", dir.display().to_string())
        .upstream("app", "127.0.0.1:9")
        .route(Route::prefix("/").upstream("app"));
    std::fs::write(&p, config.to_toml()).unwrap();
    p.display().to_string()
}

fn user(cfg: &str, args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(common::binary())
        .args(["--config", cfg, "user"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads stdin may exit first: a broken pipe
    // here is its answer, not a test failure.
    match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn add_list_replace_remove() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let (code, out, err) = user(
        &cfg,
        &[
            "add",
            "alice",
            "--password-stdin",
            "--display-name",
            "Alice A",
            "--email",
            "alice@example.com",
        ],
        "s3cret-passw0rd\n",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("added user alice"), "{out}");
    let file = std::fs::read_to_string(dir.path().join("users.toml")).unwrap();
    assert!(file.contains("$argon2id$v=19$m=19456,t=2,p=1$"), "{file}");
    assert!(!file.contains("s3cret"), "the password itself was stored");
    let first_hash = file.clone();

    let (code, out, _) = user(&cfg, &["list"], "");
    assert_eq!(code, 0);
    assert_eq!(out, "alice\tAlice A\talice@example.com\n");

    let (code, out, _) = user(
        &cfg,
        &["add", "alice", "--password-stdin"],
        "another-passw0rd\n",
    );
    assert_eq!(code, 0);
    assert!(out.contains("replaced user alice"));
    assert_ne!(
        std::fs::read_to_string(dir.path().join("users.toml")).unwrap(),
        first_hash
    );

    let (code, _, _) = user(&cfg, &["add", "bob", "--password-stdin"], "bobs-password");
    assert_eq!(code, 0);
    let (_, out, _) = user(&cfg, &["list"], "");
    assert_eq!(out, "alice\nbob\n");

    let (code, out, _) = user(&cfg, &["remove", "alice"], "");
    assert_eq!(code, 0, "{out}");
    let (_, out, _) = user(&cfg, &["list"], "");
    assert_eq!(out, "bob\n");
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let cases: [(&[&str], &str, &str); 5] = [
        (
            &["add", "alice", "--password-stdin"],
            "short\n",
            "too short",
        ),
        (
            &["add", "alice", "--password-stdin"],
            &"x".repeat(1100),
            "too long",
        ),
        (
            &["add", "bad name", "--password-stdin"],
            "long-enough-password\n",
            "not a login name",
        ),
        (&["remove", "nobody"], "", "no user named \"nobody\""),
        (
            &["add", "alice"],
            "long-enough-password\n",
            "--password-stdin",
        ),
    ];
    for (args, stdin, want) in cases {
        let (code, _, err) = user(&cfg, args, stdin);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in {err:?}");
    }
    assert!(
        !dir.path().join("users.toml").exists(),
        "a refused command wrote the users file"
    );
}
