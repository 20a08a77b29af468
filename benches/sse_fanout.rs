//! SSE fan-out benchmark: N subscribers on one hub channel, events posted at a
//! steady rate; reports delivery latency (stamp in the event vs receipt),
//! deliveries/s, failed connections and memory per idle subscriber. Then
//! durable ingest (acknowledged `POST /api/events` per second), and memory per
//! proxied SSE stream for esprit-edge and nginx side by side.
//!
//! Run with `benches/sse.sh` (builds the release binary, installs nginx):
//!   cargo bench --bench sse_fanout -- [sizes=1000,5000,10000] [rate=10] [secs=10]
//! With `STORAGE=redis`, each fan-out and the ingest run twice: once on one
//! edge with SQLite, once on two edges sharing a real `redis-server`
//! (subscribers split over both, events posted to the first).
//! Everything runs on loopback; one process may open 20,000 files here, so the
//! nginx comparison uses fewer streams (each costs it two sockets).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOKEN: &str = "bench-only-token-0123456789";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port")
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// RSS of a process and its children (nginx master + workers).
fn tree_rss_kib(pid: u32) -> u64 {
    let children = Command::new("pgrep")
        .arg("-P")
        .arg(pid.to_string())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    rss_kib(pid)
        + children
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .map(rss_kib)
            .sum::<u64>()
}

struct Proc(Child);
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn edge_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/esprit-edge")
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

/// A throwaway `redis-server` on a free loopback port.
struct Redis {
    _proc: Proc,
    _dir: tempfile::TempDir,
    port: u16,
}

async fn start_redis() -> Redis {
    let dir = tempfile::tempdir().expect("tmp");
    let port = free_port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--appendfsync", "everysec"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/setup installs it)");
    wait_port(port).await;
    Redis {
        _proc: Proc(child),
        _dir: dir,
        port,
    }
}

fn storage_section(redis: Option<&Redis>) -> String {
    redis.map_or_else(String::new, |r| {
        format!("[storage]\nurl = \"redis://127.0.0.1:{}\"\n", r.port)
    })
}

async fn start_edge(dir: &Path, extra_routes: &str) -> (Proc, u16) {
    let port = free_port();
    let cfg = dir.join("edge.toml");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nthreads = 1\ndata_dir = \"{d}\"\nupgrade_sock = \"{d}/u.sock\"\npid_file = \"{d}/pid\"\n\
         max_connections = 100000\nmax_connections_per_ip = 100000\nmax_streams_per_ip = 100000\n\
         [hub]\nevents_token = \"{TOKEN}\"\nreplay_recent = 0\nsubscriber_queue = 4096\n\
         [upstreams.none]\naddress = \"127.0.0.1:9\"\n[[routes]]\nprefix = \"/api/\"\nkind = \"hub\"\n{extra_routes}",
        d = dir.display()
    );
    std::fs::write(&cfg, text).expect("config");
    let log = std::fs::File::create(dir.join("edge.log")).expect("log");
    let child = Command::new(edge_binary())
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(log)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("esprit-edge (build it with cargo build --release)");
    wait_port(port).await;
    (Proc(child), port)
}

/// Opens one raw SSE subscriber; returns the stream once the 200 arrived.
async fn subscribe(addr: SocketAddr, path: &str) -> Option<TcpStream> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .ok()?;
    let mut buf = [0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    buf[..n].starts_with(b"HTTP/1.1 200").then_some(s)
}

async fn subscribe_many(addr: SocketAddr, path: &str, n: usize) -> (Vec<TcpStream>, usize) {
    let mut ok = Vec::with_capacity(n);
    let mut failed = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(250) {
        let batch: Vec<_> = chunk.iter().map(|_| subscribe(addr, path)).collect();
        for r in futures_util::future::join_all(batch).await {
            match r {
                Some(s) => ok.push(s),
                None => failed += 1,
            }
        }
    }
    (ok, failed)
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn fanout_run(n: usize, rate: u64, secs: u64, redis: Option<&Redis>) {
    let dir = tempfile::tempdir().expect("tmp");
    let (edge, port) = start_edge(dir.path(), &storage_section(redis)).await;
    // With Redis, a second edge holds half the subscribers.
    let other_dir = tempfile::tempdir().expect("tmp");
    let other = match redis {
        Some(_) => Some(start_edge(other_dir.path(), &storage_section(redis)).await),
        None => None,
    };
    let pids: Vec<u32> = std::iter::once(edge.0.id())
        .chain(other.as_ref().map(|(p, _)| p.0.id()))
        .collect();
    let ports: Vec<u16> = std::iter::once(port)
        .chain(other.as_ref().map(|(_, p)| *p))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss0: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let mut socks = Vec::new();
    let mut failed = 0;
    for (i, p) in ports.iter().enumerate() {
        let share = n / ports.len() + usize::from(i < n % ports.len());
        let addr = SocketAddr::from(([127, 0, 0, 1], *p));
        let (s, f) = subscribe_many(addr, "/api/stream?npc=bench", share).await;
        socks.extend(s);
        failed += f;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss1: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let connected = socks.len();

    let latencies = Arc::new(Mutex::new(Vec::<u64>::with_capacity(
        connected * (rate * secs) as usize,
    )));
    let delivered = Arc::new(AtomicU64::new(0));
    let last_delivery = Arc::new(AtomicU64::new(0));
    let expected = rate * secs;
    let mut readers = Vec::new();
    for mut s in socks {
        let (lat, del, last) = (latencies.clone(), delivered.clone(), last_delivery.clone());
        readers.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut carry = String::new();
            let mut mine = Vec::new();
            let mut got = 0u64;
            while got < expected {
                let n = match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await
                {
                    Ok(Ok(n)) if n > 0 => n,
                    _ => break,
                };
                let at = now_us();
                carry.push_str(&String::from_utf8_lossy(&buf[..n]));
                while let Some(i) = carry.find("\"sent_us\":") {
                    let rest = &carry[i + 10..];
                    let end = rest
                        .find(|c: char| !c.is_ascii_digit())
                        .unwrap_or(rest.len());
                    if end == rest.len() {
                        break; // number split across reads
                    }
                    if let Ok(sent) = rest[..end].parse::<u64>() {
                        mine.push(at.saturating_sub(sent));
                        got += 1;
                    }
                    carry.drain(..i + 10 + end);
                }
                if carry.len() > 64 * 1024 {
                    carry.clear();
                }
            }
            del.fetch_add(got, Ordering::Relaxed);
            last.fetch_max(now_us(), Ordering::Relaxed);
            lat.lock().expect("lat").extend(mine);
        }));
    }

    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/api/events");
    let start_us = now_us();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let mut post_failures = 0;
    for i in 0..expected {
        tick.tick().await;
        let body = serde_json::json!({"npc": "bench", "type": "step", "data": {"i": i, "sent_us": now_us()}});
        match client
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
        {
            Ok(r) if r.status() == 202 => {}
            _ => post_failures += 1,
        }
    }
    for r in readers {
        let _ = r.await;
    }
    let mut lat = std::mem::take(&mut *latencies.lock().expect("lat"));
    lat.sort_unstable();
    let total = delivered.load(Ordering::Relaxed);
    let span = (last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(start_us)) as f64
        / 1e6;
    let setup = match redis {
        Some(_) => "2 edges, redis ",
        None => "1 edge, sqlite ",
    };
    println!(
        "{setup}{n:>6} subs | connected {connected:>6} failed {failed:>4} | {expected} events @ {rate}/s, post failures {post_failures} | delivered {total:>8} of {:>8} | {:>8.0} deliveries/s | latency p50 {:>7.2} ms p99 {:>7.2} ms max {:>7.2} ms | idle RSS {:>6.2} KiB/subscriber",
        expected * connected as u64,
        total as f64 / span.max(0.001),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
        (rss1.saturating_sub(rss0)) as f64 / connected.max(1) as f64,
    );
    drop(edge);
    drop(other);
}

async fn ingest_run(secs: u64, writers: usize, redis: Option<&Redis>) {
    let dir = tempfile::tempdir().expect("tmp");
    let (edge, port) = start_edge(dir.path(), &storage_section(redis)).await;
    let url = format!("http://127.0.0.1:{port}/api/events");
    let acked = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (url, acked) = (url.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let body =
                    serde_json::json!({"npc": format!("w{w}"), "type": "step", "data": {"i": i}});
                if let Ok(r) = c.post(&url).bearer_auth(TOKEN).json(&body).send().await
                    && r.status() == 202
                {
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let n = acked.load(Ordering::Relaxed);
    println!(
        "durable ingest ({}): {writers} concurrent writers for {secs} s: {n} acknowledged events = {:.0} events/s (each accepted by the store before its 202)",
        if redis.is_some() {
            "redis, appendfsync everysec"
        } else {
            "sqlite"
        },
        n as f64 / secs as f64
    );
    drop(edge);
}

/// A minimal SSE origin: answers every request with an open event stream.
async fn sse_origin() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().expect("addr").port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n: open\n\n").await;
                let _ = s.read(&mut buf).await; // hold until the proxy closes
            });
        }
    });
    port
}

async fn proxied_stream_memory(streams: usize) {
    let origin = sse_origin().await;
    let dir = tempfile::tempdir().expect("tmp");
    let route = format!(
        "[upstreams.origin]\naddress = \"127.0.0.1:{origin}\"\n[[routes]]\nprefix = \"/sse/\"\nupstream = \"origin\"\nstream = true\n"
    );
    let (edge, eport) = start_edge(dir.path(), &route).await;

    let nport = free_port();
    let ndir = dir.path().join("nginx");
    std::fs::create_dir_all(&ndir).expect("dir");
    let conf = ndir.join("nginx.conf");
    let mut f = std::fs::File::create(&conf).expect("conf");
    write!(
        f,
        "worker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\nevents {{ worker_connections 16000; }}\n\
         http {{ access_log off; proxy_read_timeout 600s; server {{ listen 127.0.0.1:{nport}; location /sse/ {{ proxy_pass http://127.0.0.1:{origin}; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }} }} }}\n",
        d = ndir.display()
    )
    .expect("write");
    let nginx = Proc(
        Command::new("nginx")
            .arg("-p")
            .arg(&ndir)
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;")
            .spawn()
            .expect("nginx (scripts/setup --bench installs nginx-light)"),
    );
    wait_port(nport).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    for (name, pid, port) in [
        ("esprit-edge", edge.0.id(), eport),
        ("nginx", nginx.0.id(), nport),
    ] {
        let before = tree_rss_kib(pid);
        let (socks, failed) =
            subscribe_many(SocketAddr::from(([127, 0, 0, 1], port)), "/sse/x", streams).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = tree_rss_kib(pid);
        println!(
            "proxied SSE streams via {name:<11}: {} open, {failed} failed, {:.2} KiB RSS per idle stream",
            socks.len(),
            after.saturating_sub(before) as f64 / socks.len().max(1) as f64
        );
        drop(socks);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let sizes: Vec<usize> = args.first().map_or(vec![1000, 5000, 10000], |s| {
        s.split(',').filter_map(|n| n.parse().ok()).collect()
    });
    let rate: u64 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(10);
    let secs: u64 = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(10);
    assert!(
        edge_binary().exists(),
        "build the release binary first: cargo build --release"
    );
    println!(
        "# SSE fan-out: one channel, {rate} events/s for {secs} s, esprit-edge release, 1 worker thread"
    );
    let redis = match std::env::var("STORAGE").as_deref() {
        Ok("redis") => Some(start_redis().await),
        _ => None,
    };
    for n in sizes {
        fanout_run(n, rate, secs, None).await;
        if let Some(r) = &redis {
            fanout_run(n, rate, secs, Some(r)).await;
        }
    }
    ingest_run(5, 16, None).await;
    if let Some(r) = &redis {
        ingest_run(5, 16, Some(r)).await;
    }
    proxied_stream_memory(2000).await;
}
