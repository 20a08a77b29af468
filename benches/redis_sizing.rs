//! Redis memory per session, per trusted device and per retained hub event,
//! as the edge stores them (`[storage] backend = "redis"`), for the README's
//! sizing advice. Writes through the edge's own stores into a throwaway
//! `redis-server` and reads `INFO memory` before and after.
//!
//!   cargo bench --bench redis_sizing -- [sessions=20000] [events=20000]

use esprit_edge::auth::devices::Devices;
use esprit_edge::auth::redis_sessions::RedisSessions;
use esprit_edge::auth::sessions::Sessions;
use esprit_edge::config::RedisStorage;
use esprit_edge::hub::event::{EventType, NewEvent};
use esprit_edge::hub::ids::{Npc, RunId};
use esprit_edge::hub::redis_store::RedisStore;
use esprit_edge::hub::store::EventStore;
use esprit_edge::redis_link::RedisLink;
use std::process::{Command, Stdio};
use std::time::Duration;

fn used_memory(port: u16) -> i64 {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "memory"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let sessions: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let events: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let dir = tempfile::tempdir().expect("tmp");
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/setup installs it)");
    std::thread::sleep(Duration::from_millis(300));
    let link = RedisLink::new(&RedisStorage {
        url: format!("redis://127.0.0.1:{port}"),
        timeout: Duration::from_secs(2),
        offline_grace: Duration::from_secs(60),
        prefix: "esprit".into(),
    })
    .expect("link");
    let now = esprit_edge::clock::now_ms();
    let s = Sessions::with_store(
        Box::new(RedisSessions::new(link.clone())),
        Duration::from_secs(7200),
        Duration::from_secs(43_200),
        Duration::from_secs(60),
    )
    .expect("sessions");
    let base = used_memory(port);
    // Fifty users, as an office signs in.
    for i in 0..sessions {
        s.create(&format!("user{}", i % 50), now).expect("create");
    }
    let after_sessions = used_memory(port);
    let devices = Devices::shared(link.clone(), Duration::from_secs(30 * 86_400));
    for i in 0..sessions {
        devices
            .issue(&format!("user{}", i % 50), now)
            .expect("device");
    }
    let after_devices = used_memory(port);
    let store = RedisStore::new(link.clone(), 10_000);
    // A typical step event: a run of 10 on one of 20 channels, ~120 bytes of data.
    let batch: Vec<NewEvent> = (0..events)
        .map(|i| NewEvent {
            ts: now,
            npc: Npc::parse(&format!("agent-{}", i % 20)).expect("npc"),
            kind: if i % 10 == 0 {
                EventType::Started
            } else {
                EventType::Step
            },
            run_id: RunId::parse(&format!("run-{}", i / 10)),
            agent: None,
            data: serde_json::json!({"message": "x".repeat(100), "step": i % 10}),
        })
        .collect();
    for chunk in batch.chunks(500) {
        store.append(chunk).expect("append");
    }
    let after_events = used_memory(port);
    let per = |bytes: i64, n: usize| bytes as f64 / n.max(1) as f64;
    println!("# Redis 7 memory (INFO used_memory) as esprit-edge stores things");
    println!(
        "sessions: {sessions} ({} users): {:.0} bytes each",
        50.min(sessions),
        per(after_sessions - base, sessions)
    );
    println!(
        "trusted devices: {sessions}: {:.0} bytes each",
        per(after_devices - after_sessions, sessions)
    );
    println!(
        "hub events: {events} (20 channels, runs of 10, ~120 bytes of data each): {:.0} bytes each (both streams, the run index and the run's id list)",
        per(after_events - after_devices, events)
    );
    let _ = redis.kill();
    let _ = redis.wait();
}
