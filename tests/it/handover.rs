//! `scripts/handover`: the SIGQUIT hand-over to a new process on a new config,
//! as an operator runs it, with clients making requests all along. Real
//! binary, real sockets; the new process is not a child of the test, so
//! [`Reaper`] ends whatever still names the test's temp dir.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::{Edge, free_port, peers};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/handover")
}

/// `/` proxied to the upstream `app` at `address`.
fn config(address: &str) -> ConfigBuilder {
    ConfigBuilder::new()
        .upstream("app", address)
        .route(Route::prefix("/").upstream("app").read_timeout("10s"))
}

/// The processes whose command line names `dir` (the old edge, the new one,
/// a script still running).
fn processes_naming(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .filter(|&pid| alive(pid))
        .collect()
}

/// Whether `pid` runs (a zombie has exited).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X'))
    })
}

/// Kills, on drop, every process whose command line names the test's temp
/// dir: the new edge belongs to no one once the script has exited.
struct Reaper(PathBuf);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in processes_naming(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// One request: when it started, when it ended, and how.
#[derive(Debug, Clone)]
struct Sample {
    start: Instant,
    end: Instant,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Status and the upstream peer that answered.
    Answered(u16, String),
    /// The TCP connect was refused: nothing listens there.
    Refused,
    /// Anything else: a reset, a cut response, a timeout.
    Failed(String),
}

/// A client that opens a new connection for every request, so each one
/// meets the listener (a kept-alive connection would hide a closed one).
fn fresh_connections() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

async fn request(client: &reqwest::Client, url: &str) -> Sample {
    let start = Instant::now();
    let outcome = match client.get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            match r.text().await {
                Ok(body) => {
                    let peer = serde_json::from_str::<Value>(&body)
                        .ok()
                        .and_then(|v| v["peer"].as_str().map(str::to_string))
                        .unwrap_or_default();
                    Outcome::Answered(status, peer)
                }
                Err(e) => Outcome::Failed(format!("body cut: {e:?}")),
            }
        }
        Err(e) if e.is_connect() && format!("{e:?}").contains("ConnectionRefused") => {
            Outcome::Refused
        }
        Err(e) => Outcome::Failed(format!("{e:?}")),
    };
    Sample {
        start,
        end: Instant::now(),
        outcome,
    }
}

/// Requests `url` one after another, `pause` apart, until `stop`.
fn load(
    url: String,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let client = fresh_connections();
        let mut samples = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            samples.push(request(&client, &url).await);
            tokio::time::sleep(pause).await;
        }
        samples
    })
}

/// Starts a request to `url` every `every` until `stop`, without waiting for
/// the earlier ones: slow requests overlap, some are in flight at any time.
fn overlapping(
    url: String,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    tokio::spawn(async move {
        let client = fresh_connections();
        let mut running = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let (client, url) = (client.clone(), url.clone());
            running.push(tokio::spawn(async move { request(&client, &url).await }));
            tokio::time::sleep(every).await;
        }
        let mut samples = Vec::new();
        for r in running {
            samples.push(r.await.expect("request task"));
        }
        samples
    })
}

/// Runs the script as an operator would; returns status, stdout, stderr.
async fn handover(args: &[&str]) -> (std::process::ExitStatus, String, String) {
    let out = tokio::process::Command::new(script())
        .args(args)
        .env_remove("ESPRIT_CONFIG")
        .env_remove("ESPRIT_LISTEN")
        .env_remove("ESPRIT_ADMIN_LISTEN")
        .stdin(std::process::Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out)
        .await
        .expect("scripts/handover did not finish in 120 s")
        .expect("run scripts/handover");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!(
        "scripts/handover {args:?}: {}\n{stderr}{stdout}",
        out.status
    );
    (out.status, stdout, stderr)
}

/// The pid the script printed last on stdout.
fn printed_pid(stdout: &str) -> u32 {
    stdout
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid on stdout: {stdout:?}"))
}

/// Waits (off the runtime's workers) for the old edge's exit status.
async fn exit_of(mut edge: Edge, limit: Duration) -> (Option<std::process::ExitStatus>, Edge) {
    tokio::task::spawn_blocking(move || (edge.wait_exit(limit), edge))
        .await
        .expect("wait task")
}

fn count(samples: &[Sample], pred: impl Fn(&Outcome) -> bool) -> usize {
    samples.iter().filter(|s| pred(&s.outcome)).count()
}

/// Every request that did not get a 200: refused, failed or another status.
fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples
        .iter()
        .filter(|s| !matches!(s.outcome, Outcome::Answered(200, _)))
        .collect()
}

/// A new listen address: the old one keeps answering until the old process
/// stops accepting (about 5 s after SIGQUIT), and requests in flight there
/// finish; the new one answers from the moment the new process has the
/// sockets, so both answer for a while and a client moving over finds no gap.
/// Once the old process exited the old address is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_moves_the_edge_to_a_new_listen_address() {
    let app = peers::echo("one").await;
    // Grace outlasts the slow requests in flight when the old address closes.
    let cfg = config(&app.address())
        .server("grace_period", "3s")
        .server("shutdown_timeout", "1s");
    let old = Edge::start(&cfg);
    let _reaper = Reaper(old.dir.path().to_path_buf());
    let dir = old.dir.path().to_path_buf();
    let port_b = free_port();
    let moved = dir.join("moved.toml");
    std::fs::write(&moved, cfg.render(&dir, port_b)).expect("write config");
    let new_log = dir.join("new.log");

    let stop = Arc::new(AtomicBool::new(false));
    let url_b = |path: &str| format!("http://127.0.0.1:{port_b}{path}");
    let on_a = load(old.url("/a"), Duration::from_millis(20), stop.clone());
    let on_b = load(url_b("/b"), Duration::from_millis(20), stop.clone());
    let slow_on_a = overlapping(
        old.url("/slow?mode=drain&ms=1500"),
        Duration::from_millis(200),
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    let old_pid = old.pid().to_string();
    let (status, stdout, stderr) = handover(&[
        "--pid",
        &old_pid,
        "--config",
        moved.to_str().expect("path"),
        "--log",
        new_log.to_str().expect("path"),
    ])
    .await;
    assert!(status.success(), "scripts/handover failed: {stderr}");
    let new_pid = printed_pid(&stdout);
    assert_ne!(new_pid.to_string(), old_pid);
    assert!(alive(new_pid), "the new edge {new_pid} is not running");
    // The script returns once the old process has exited.
    let (exit, old) = exit_of(old, Duration::from_secs(5)).await;
    assert!(
        exit.is_some_and(|s| s.success()),
        "old edge: {exit:?}\n{}",
        old.stdout()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    let (a, b, slow) = (
        on_a.await.unwrap(),
        on_b.await.unwrap(),
        slow_on_a.await.unwrap(),
    );

    // The old address: answers, then refuses, and nothing in between.
    let bad: Vec<_> = a
        .iter()
        .filter(|s| !matches!(s.outcome, Outcome::Answered(200, _) | Outcome::Refused))
        .collect();
    assert!(
        bad.is_empty(),
        "requests to the old address failed: {bad:?}"
    );
    let closed_at = a
        .iter()
        .find(|s| s.outcome == Outcome::Refused)
        .map(|s| s.start)
        .expect("the old address never closed");
    let last_a = a
        .iter()
        .filter(|s| matches!(s.outcome, Outcome::Answered(..)))
        .map(|s| s.start)
        .max()
        .expect("the old address never answered");
    assert!(
        last_a < closed_at,
        "the old address answered again after it had refused"
    );
    assert!(
        std::net::TcpStream::connect(old.addr()).is_err(),
        "the old address still accepts after the old process exited"
    );
    // The new address: refuses until the new process binds it, then answers.
    let bad: Vec<_> = b
        .iter()
        .filter(|s| !matches!(s.outcome, Outcome::Answered(200, _) | Outcome::Refused))
        .collect();
    assert!(
        bad.is_empty(),
        "requests to the new address failed: {bad:?}"
    );
    let opened_at = b
        .iter()
        .find(|s| matches!(s.outcome, Outcome::Answered(..)))
        .map(|s| s.start)
        .expect("the new address never answered");
    assert!(
        b.iter()
            .all(|s| s.outcome != Outcome::Refused || s.start < opened_at),
        "the new address refused after it had answered"
    );
    // Both answered at once for a while: no moment with neither.
    assert!(
        opened_at < last_a,
        "the old address closed before the new one answered"
    );
    eprintln!(
        "both addresses answered for {:?}; old: {} answered, {} refused; new: {} answered",
        last_a - opened_at,
        count(&a, |o| matches!(o, Outcome::Answered(..))),
        count(&a, |o| *o == Outcome::Refused),
        count(&b, |o| matches!(o, Outcome::Answered(..))),
    );
    // Slow requests: accepted ones all finish, also those in flight when the
    // old address closed; the rest were refused at connect, never cut. One
    // exception the kernel makes: a connection still in the old listener's
    // backlog (connected, never accepted) at the instant the listener closes
    // is reset. Only a request that began around that instant may fail so.
    let margin = std::time::Duration::from_millis(100);
    let at_close = |s: &&Sample| s.start + margin >= last_a && s.start <= closed_at + margin;
    let bad: Vec<_> = slow
        .iter()
        .filter(|s| !matches!(s.outcome, Outcome::Answered(200, _) | Outcome::Refused))
        .filter(|s| !(matches!(s.outcome, Outcome::Failed(_)) && at_close(s)))
        .collect();
    assert!(bad.is_empty(), "slow requests were cut: {bad:?}");
    assert!(
        slow.iter().any(|s| s.start < closed_at
            && s.end > closed_at
            && matches!(s.outcome, Outcome::Answered(200, _))),
        "no slow request was in flight when the old address closed"
    );

    // The new process serves the new address and logs where it was told.
    let r = fresh_connections()
        .get(url_b("/after"))
        .send()
        .await
        .expect("new address");
    assert_eq!(r.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(&new_log).unwrap_or_default();
        if log.contains("\"path\":\"/after\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/after not in the new process's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recorded = std::fs::read_to_string(dir.join("edge.pid")).expect("pid_file");
    assert_eq!(recorded.trim(), new_pid.to_string());
}

/// The same address with a changed route: the listening socket itself is
/// handed over, so not one connection is refused, and the new route serves
/// once the hand-over is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_on_the_same_address_refuses_nothing_and_applies_the_new_config() {
    let one = peers::echo("one").await;
    let two = peers::echo("two").await;
    let old = Edge::start(&config(&one.address()));
    let _reaper = Reaper(old.dir.path().to_path_buf());
    let dir = old.dir.path().to_path_buf();
    let changed = dir.join("changed.toml");
    std::fs::write(&changed, config(&two.address()).render(&dir, old.port)).expect("config");

    let stop = Arc::new(AtomicBool::new(false));
    let on_a = load(old.url("/during"), Duration::from_millis(10), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_pid = old.pid().to_string();
    // No --log: the old edge's stdout is a file it appends to, so the new
    // process's log goes on in the same file.
    let (status, stdout, stderr) = handover(&[
        "--pid",
        &old_pid,
        "--config",
        changed.to_str().expect("path"),
    ])
    .await;
    let returned = Instant::now();
    assert!(status.success(), "scripts/handover failed: {stderr}");
    let new_pid = printed_pid(&stdout);
    assert!(alive(new_pid), "the new edge {new_pid} is not running");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let a = on_a.await.unwrap();

    let bad = failures(&a);
    assert!(
        bad.is_empty(),
        "{} of {} requests failed during the hand-over: {bad:?}",
        bad.len(),
        a.len()
    );
    let by = |peer: &str| count(&a, |o| *o == Outcome::Answered(200, peer.to_string()));
    eprintln!(
        "{} requests, {} by the old config, {} by the new",
        a.len(),
        by("one"),
        by("two")
    );
    assert!(by("one") > 0, "the old config served nothing");
    let after: Vec<_> = a.iter().filter(|s| s.start > returned).collect();
    assert!(!after.is_empty(), "no request after the hand-over");
    assert!(
        after
            .iter()
            .all(|s| s.outcome == Outcome::Answered(200, "two".to_string())),
        "the old route answered after the hand-over: {after:?}"
    );
    let (exit, old) = exit_of(old, Duration::from_secs(5)).await;
    assert!(exit.is_some_and(|s| s.success()), "old edge: {exit:?}");
    assert_eq!(
        old.settled_stdout()
            .matches("\"message\":\"listening\"")
            .count(),
        2,
        "the new process did not log into the old one's stdout file"
    );
    let recorded = std::fs::read_to_string(dir.join("edge.pid")).expect("pid_file");
    assert_eq!(recorded.trim(), new_pid.to_string());
}

/// Nothing started, nothing signalled: the old process and its listeners
/// as they were, and no process left on the new config.
async fn assert_untouched(old: &mut Edge, new_config: &Path, stderr: &str) {
    assert_eq!(
        old.wait_exit(Duration::from_millis(300)),
        None,
        "the running edge stopped\n{stderr}"
    );
    let r = fresh_connections()
        .get(old.url("/still"))
        .send()
        .await
        .expect("the running edge stopped answering");
    assert_eq!(r.status(), 200);
    assert!(
        !old.settled_stdout().contains("SIGQUIT"),
        "the running edge was signalled:\n{}",
        old.stdout()
    );
    let leftover = processes_naming(new_config);
    assert!(leftover.is_empty(), "processes left running: {leftover:?}");
    assert!(!old.dir.path().join("upgrade.sock").exists());
    assert!(!old.dir.path().join("edge.pid").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_refuses_an_invalid_config_and_leaves_the_edge_serving() {
    let app = peers::echo("one").await;
    let mut old = Edge::start(&config(&app.address()));
    let _reaper = Reaper(old.dir.path().to_path_buf());
    let broken = old.dir.path().join("broken.toml");
    let text = config(&app.address())
        .route(Route::prefix("/x/").upstream("missing"))
        .render(old.dir.path(), free_port());
    std::fs::write(&broken, text).expect("config");

    let stop = Arc::new(AtomicBool::new(false));
    let on_a = load(old.url("/during"), Duration::from_millis(20), stop.clone());
    let old_pid = old.pid().to_string();
    let (status, stdout, stderr) = handover(&[
        "--pid",
        &old_pid,
        "--config",
        broken.to_str().expect("path"),
    ])
    .await;
    stop.store(true, Ordering::SeqCst);
    let a = on_a.await.unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "printed a pid: {stdout}");
    assert!(
        stderr.contains("no upstream named \"missing\""),
        "the check's problem is not shown: {stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(failures(&a).is_empty(), "{:?}", failures(&a));
    assert_untouched(&mut old, &broken, &stderr).await;
}

/// A new address another process listens on would leave the new edge unable
/// to bind it after it took the sockets: refused before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_refuses_a_new_address_another_process_holds() {
    let app = peers::echo("one").await;
    let mut old = Edge::start(&config(&app.address()));
    let _reaper = Reaper(old.dir.path().to_path_buf());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let moved = old.dir.path().join("moved.toml");
    std::fs::write(&moved, config(&app.address()).render(old.dir.path(), port)).expect("config");

    let old_pid = old.pid().to_string();
    let (status, stdout, stderr) =
        handover(&["--pid", &old_pid, "--config", moved.to_str().expect("path")]).await;
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "printed a pid: {stdout}");
    assert!(
        stderr.contains(&format!("port {port} is in use by another process")),
        "{stderr}"
    );
    assert_untouched(&mut old, &moved, &stderr).await;
    drop(taken);
}
