//! Test bed shared by the integration suites: the real `esprit-edge` binary on a
//! free loopback port, and real peers for it to talk to.

pub mod certs;
pub mod config;
pub mod peers;
pub mod redis;
pub mod sse;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use config::ConfigBuilder;

/// Whether an esprit-edge listens on `port`: `GET /healthz` answers 200 `ok`.
fn answers_as_edge(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    text.starts_with("HTTP/1.1 200")
        && text
            .split_once("\r\n\r\n")
            .is_some_and(|(_, b)| b.trim() == "ok")
}

/// A loopback port nobody is listening on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// The binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_esprit-edge")
}

/// A running esprit-edge process with its own temp dir, killed on drop.
pub struct Edge {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The admin listener's port (`ESPRIT_ADMIN_LISTEN`, set for every edge
    /// so parallel tests never share the default 9090).
    pub admin_port: u16,
    pub config: PathBuf,
}

impl Edge {
    /// Starts the edge with `config` (its `[server]` settings generated).
    pub fn start(config: &ConfigBuilder) -> Edge {
        Self::start_with(|dir, port| config.render(dir, port), &[])
    }

    /// Starts with a config built from the temp dir and port, plus extra env vars.
    /// `free_port` can lose its port to another test before the edge binds it;
    /// then the edge is started again on a new one (twice at most).
    pub fn start_with(make: impl Fn(&Path, u16) -> String, env: &[(&str, String)]) -> Edge {
        let mut attempt = 0;
        loop {
            let mut edge = Self::create(&make);
            edge.spawn(env, &[]);
            let port = edge.port;
            attempt += 1;
            if attempt < 3 && edge.lost_its_port(port) {
                continue;
            }
            edge.wait_listening(port);
            return edge;
        }
    }

    /// Whether `port` was taken before the process could bind it (Pingora
    /// then logs "is in use, will try again" and keeps retrying).
    fn lost_its_port(&mut self, port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // The usual thief is some test's outgoing connection, which
            // accepts nothing: the bind fails and logs. A port taken by
            // another listener is not told apart here.
            if self.stdout().contains("is in use, will try again") {
                return true;
            }
            let exited = matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(Some(_))));
            // A listener that accepts is not proof: another test's peer may
            // hold the port for a moment. Only the edge answers /healthz so.
            if exited || answers_as_edge(port) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Writes the config into a fresh temp dir without starting anything.
    pub fn create(make: impl FnOnce(&Path, u16) -> String) -> Edge {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = dir.path().join("edge.toml");
        std::fs::write(&config, make(dir.path(), port)).expect("write config");
        Edge {
            child: None,
            dir,
            port,
            admin_port: free_port(),
            config,
        }
    }

    /// Starts the process (stdout and stderr to files in the temp dir).
    pub fn spawn(&mut self, env: &[(&str, String)], extra_args: &[&str]) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .expect("log");
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("log");
        let mut cmd = Command::new(binary());
        cmd.arg("--config")
            .arg(&self.config)
            .args(extra_args)
            .env_remove("ESPRIT_CONFIG")
            .env_remove("ESPRIT_LISTEN")
            .env(
                "ESPRIT_ADMIN_LISTEN",
                format!("127.0.0.1:{}", self.admin_port),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("spawn esprit-edge"));
    }

    /// Blocks until `port` accepts connections; panics with the logs if the process dies first.
    pub fn wait_listening(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "esprit-edge exited with {status} before listening\nstderr:\n{}\nstdout:\n{}",
                    self.stderr(),
                    self.stdout()
                );
            }
            assert!(
                Instant::now() < deadline,
                "esprit-edge did not listen on {port}\n{}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        client()
            .get(format!("http://127.0.0.1:{}/metrics", self.admin_port))
            .send()
            .await
            .expect("admin listener")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series (`name` or `name{labels}`) in the admin
    /// listener's `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stdout once the edge's log buffer has been written out (it flushes
    /// every 50 ms): for checks that a line is absent, or of how many there are.
    pub fn settled_stdout(&self) -> String {
        std::thread::sleep(Duration::from_millis(200));
        self.stdout()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Sends a signal by name (`TERM`, `QUIT`, `HUP`).
    pub fn signal(&self, sig: &str) {
        signal(self.pid(), sig);
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until a log line satisfying `pred` appears (logs are written after the response).
    pub fn wait_log(&self, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self
                .stdout()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|v| pred(v));
            if let Some(v) = found {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no matching log line in:\n{}",
                self.stdout()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill")
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Runs the binary to completion with `args`; returns status, stdout, stderr.
pub fn run_binary(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(binary());
    cmd.args(args)
        .env_remove("ESPRIT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("esprit-edge {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().map(|mut s| s.read_to_string(&mut out));
    child.stderr.take().map(|mut s| s.read_to_string(&mut err));
    (status, out, err)
}

/// An HTTP client that never follows redirects and trusts `extra_root` if given.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// The shipped `conf/esprit-edge.toml` with its `[server]` block replaced (test
/// port and sockets, plus the `[server]` settings in `server`) and upstreams
/// set through the operator's `ESPRIT_UPSTREAM_<NAME>` overrides, as docker
/// compose would.
pub fn start_default(server: ConfigBuilder, env: &[(&str, String)]) -> Edge {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/conf/esprit-edge.toml"
    ))
    .expect("shipped config");
    let rest = shipped
        .split_once("[upstreams.skyoffice]")
        .map(|(_, r)| r)
        .expect("shipped config has [upstreams.skyoffice]");
    let config = server.raw(&format!("\n[upstreams.skyoffice]{rest}"));
    Edge::start_with(move |dir, port| config.render(dir, port), env)
}

/// Adds (or replaces) a user with `esprit-edge user add`, as an operator would.
pub fn add_user(edge: &Edge, name: &str, password: &str, extra: &[&str]) {
    use std::io::Write;
    let mut child = Command::new(binary())
        .args([
            "--config",
            edge.config.to_str().expect("path"),
            "user",
            "add",
            name,
            "--password-stdin",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("user add");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(password.as_bytes())
        .expect("password");
    assert!(
        child.wait().expect("user add").success(),
        "user add {name} failed"
    );
}

/// Adds user `tester` with the CLI and signs in over HTTP; returns the
/// `Cookie` header value for the session.
pub async fn sign_in(edge: &Edge) -> String {
    add_user(edge, "tester", "tester-password-1", &[]);
    sign_in_as(edge, "tester", "tester-password-1").await
}

/// Signs in over HTTP as an existing user; returns the session cookie (`name=value`).
pub async fn sign_in_as(edge: &Edge, user: &str, password: &str) -> String {
    let r = client()
        .post(edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 303, "login failed");
    let set = r.headers()["set-cookie"]
        .to_str()
        .expect("cookie")
        .to_string();
    set.split(';').next().expect("cookie").to_string()
}

/// A client that sends `cookie` with every request, as a signed-in browser
/// on the same origin does (with `Sec-Fetch-Site: same-origin`).
pub fn client_with_cookie(cookie: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::COOKIE, cookie.parse().expect("cookie"));
    headers.insert(
        "sec-fetch-site",
        reqwest::header::HeaderValue::from_static("same-origin"),
    );
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .default_headers(headers)
        .build()
        .expect("client")
}

/// GETs `url` with [`client`] and parses the answer as JSON.
pub async fn get_json(url: String) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("a JSON body")
}

/// A client without an overall timeout, for long-lived streams.
pub fn client_no_timeout() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// Path of the node test peers (socket.io), installed by `scripts/setup`.
pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers")
}

/// Sends `request` as raw bytes on a new connection and reads until the edge
/// closes it: (status, the whole answer as text).
pub fn raw_exchange(port: u16, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// `esprit-edge check` on `config` exactly as built (no generated settings),
/// written to a throwaway file: whether it passed, and its stderr.
pub fn check(config: &config::ConfigBuilder) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, config.to_toml()).expect("write config");
    let (status, _out, err) = run_binary(&["check", "--config", path.to_str().expect("path")], &[]);
    (status.success(), err)
}
