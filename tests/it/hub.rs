//! The hub against the real binary: runs and their webhooks, events with a
//! bearer token, SSE replay without gap or duplicate (across restarts and
//! `kill -9`), agents.json reloads, slow consumers, and a thousand subscribers.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::sse::{SseClient, SseEvent};
use crate::common::{Edge, client, get_json};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "test-only-token-0123456789";
const WAIT: Duration = Duration::from_secs(10);

fn agents_json(hooks: &[(&str, &str, String)]) -> String {
    let list: Vec<Value> = hooks
        .iter()
        .map(|(agent, npc, url)| json!({"agent": agent, "npc": npc, "webhookUrl": url, "name": format!("Agent {agent}")}))
        .collect();
    Value::Array(list).to_string()
}

/// An edge with only the hub route (Sim is a dead address), its data in the
/// temp dir; `config` has the test's own `[hub]` settings.
fn start(agents: &str, config: ConfigBuilder) -> Edge {
    let agents = agents.to_string();
    let config = config.hub("events_token", TOKEN);
    Edge::start_with(
        move |dir, port| {
            std::fs::write(dir.join("agents.json"), &agents).unwrap();
            config
                .clone()
                .upstream("sim", peers::dead_address())
                .route(Route::prefix("/api/").hub().fallback("sim").stream())
                .render(dir, port)
        },
        &[],
    )
}

async fn post_event(edge: &Edge, body: Value) -> (u16, Value) {
    let r = client()
        .post(edge.url("/api/events"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn emit(edge: &Edge, npc: &str, kind: &str, n: u64) -> u64 {
    let (status, v) = post_event(edge, json!({"npc": npc, "type": kind, "data": {"n": n}})).await;
    assert_eq!(status, 202, "{v}");
    v["id"].as_u64().unwrap()
}

fn ids(events: &[SseEvent]) -> Vec<u64> {
    events.iter().map(|e| e.id.unwrap()).collect()
}

fn restart(edge: &mut Edge, hard: bool) {
    if hard {
        let mut child = edge.child.take().unwrap();
        child.kill().unwrap(); // SIGKILL: no chance to flush anything
        child.wait().unwrap();
    } else {
        edge.signal("TERM");
        assert!(
            edge.wait_exit(Duration::from_secs(15))
                .is_some_and(|s| s.success())
        );
        edge.child = None;
    }
    edge.spawn(&[], &[]);
    let port = edge.port;
    edge.wait_listening(port);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_calls_the_webhook_and_streams_started() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(
        &agents_json(&[(
            "research",
            "researcher",
            hook.url("/api/webhooks/trigger/abc"),
        )]),
        ConfigBuilder::new(),
    );
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=researcher"), None).await;
    assert_eq!(sse.status, 200);

    // The existing UI posts {payload} and only checks for a 2xx.
    let r = client()
        .post(edge.url("/api/run/research"))
        .json(&json!({"payload": {"q": "hello"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], true);
    let run_id = v["runId"].as_str().unwrap().to_string();

    let mut got = hook.received();
    assert_eq!(got.len(), 1);
    // The run's own events token comes with it (tested in run_tokens_…).
    let token = got[0]
        .as_object_mut()
        .unwrap()
        .remove("eventsToken")
        .expect("eventsToken");
    assert!(token.as_str().unwrap().starts_with("eyJ"));
    assert_eq!(
        got[0],
        json!({"runId": run_id, "agent": "research", "npc": "researcher", "payload": {"q": "hello"}})
    );

    let ev = sse.next(WAIT).await.expect("started event");
    assert_eq!(ev.event, "started");
    assert_eq!(ev.data["runId"], run_id.as_str());
    assert_eq!(ev.data["npc"], "researcher");
    assert!(ev.data["ts"].as_i64().unwrap() > 1_600_000_000_000);
    assert_eq!(ev.data["id"].as_u64(), ev.id);

    // The flow reports progress; the stream and the runs view follow.
    emit_run(&edge, "researcher", "step", &run_id).await;
    emit_run(&edge, "researcher", "done", &run_id).await;
    let evs = sse.take(2, WAIT).await;
    assert_eq!(
        evs.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(),
        ["step", "done"]
    );
    let runs: Value = get_json(edge.url("/api/runs?npc=researcher")).await;
    assert_eq!(runs["runs"][0]["runId"], run_id.as_str());
    assert_eq!(runs["runs"][0]["status"], "done");
    assert_eq!(runs["runs"][0]["agent"], "research");
    assert!(runs["runs"][0]["endedAt"].is_i64());
    let one: Value = get_json(edge.url(&format!("/api/runs/{run_id}"))).await;
    assert_eq!(one["events"].as_array().unwrap().len(), 3);

    // Unknown agent: 404, webhook untouched.
    let r = client()
        .post(edge.url("/api/run/nobody"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(hook.received().len(), 1);
}

async fn emit_run(edge: &Edge, npc: &str, kind: &str, run: &str) -> u64 {
    let (status, v) = post_event(
        edge,
        json!({"npc": npc, "type": kind, "runId": run, "data": {}}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    v["id"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_failures_become_error_events_and_502() {
    let failing = peers::webhook(500, Duration::ZERO).await;
    let slow = peers::webhook(200, Duration::from_secs(10)).await;
    let edge = start(
        &agents_json(&[
            ("fails", "a", failing.url("/hook")),
            (
                "refused",
                "a",
                format!("http://{}/hook", peers::dead_address()),
            ),
            ("slow", "a", slow.url("/hook")),
        ]),
        // Long enough that the hooks in this process answer in time on a
        // loaded machine, well short of the slow one's 10 s.
        ConfigBuilder::new().hub("webhook_timeout", "3s"),
    );
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), None).await;
    for (agent, reason) in [
        ("fails", "webhook answered 500"),
        ("refused", "webhook unreachable"),
        ("slow", "webhook timed out"),
    ] {
        let r = client()
            .post(edge.url(&format!("/api/run/{agent}")))
            .json(&json!({"payload": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502, "{agent}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().unwrap().contains(reason),
            "{agent}: {v}"
        );
        assert!(
            !v["error"].as_str().unwrap().contains("/hook"),
            "the webhook URL leaked: {v}"
        );
        let run_id = v["runId"].as_str().unwrap().to_string();
        let evs = sse.take(2, WAIT).await;
        assert_eq!(evs[0].event, "started", "{agent}");
        assert_eq!(evs[1].event, "error", "{agent}");
        assert_eq!(evs[1].data["runId"], run_id.as_str());
        assert!(
            evs[1].data["data"]["error"]
                .as_str()
                .unwrap()
                .contains(reason)
        );
    }
    // One attempt each: no blind retry of a non-idempotent call.
    assert_eq!(failing.received().len(), 1);
    assert_eq!(slow.received().len(), 1);
    let runs: Value = get_json(edge.url("/api/runs")).await;
    assert!(
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "error")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_need_the_bearer_token_and_valid_fields() {
    let edge = start("[]", ConfigBuilder::new().hub("max_event_bytes", 1024));
    let url = edge.url("/api/events");
    let body = json!({"npc": "a", "type": "step", "data": {"x": 1}});
    let r = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = client()
        .post(&url)
        .bearer_auth("wrong-token-wrong-token")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(&url)
        .header("authorization", format!("Basic {TOKEN}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    let bad: [(Value, &str); 8] = [
        (json!({"type": "step"}), "npc is required"),
        (
            json!({"npc": "Not Valid", "type": "step"}),
            "npc \"Not Valid\"",
        ),
        (
            json!({"npc": "a".repeat(65), "type": "step"}),
            "is not 1-64",
        ),
        (json!({"npc": "a", "type": "finished"}), "type \"finished\""),
        (json!({"npc": "a"}), "type is required"),
        (
            json!({"npc": "a", "type": "step", "runId": "../x"}),
            "runId",
        ),
        (json!(["npc", "a"]), "JSON object"),
        (
            json!({"npc": "a", "type": "step", "data": "x".repeat(2000)}),
            "larger than 1024",
        ),
    ];
    for (body, want) in bad {
        let (status, v) = post_event(&edge, body.clone()).await;
        assert!(status == 400 || status == 413, "{body}: {status}");
        assert!(v["error"].as_str().unwrap().contains(want), "{body}: {v}");
    }
    let r = client()
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Only the one valid event was stored.
    let (status, v) = post_event(&edge, body).await;
    assert_eq!(status, 202);
    let id = v["id"].as_u64().unwrap();
    let mut sse = SseClient::open(&edge.url("/api/stream"), Some(0)).await;
    assert_eq!(ids(&sse.take(1, WAIT).await), [id]);
    assert!(
        sse.next(Duration::from_millis(300)).await.is_none(),
        "an invalid event was stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_endpoint_is_disabled_without_a_token() {
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("sim", "127.0.0.1:9")
            .route(Route::prefix("/api/").hub()),
    );
    let r = client()
        .post(edge.url("/api/events"))
        .bearer_auth(TOKEN)
        .json(&json!({"npc": "a", "type": "step"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("ESPRIT_EVENTS_TOKEN"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_replays_exactly_what_was_missed_then_goes_live() {
    let edge = start("[]", ConfigBuilder::new());
    let mut posted = Vec::new();
    for n in 0..5 {
        posted.push(emit(&edge, "a", "step", n).await);
        emit(&edge, "other", "step", n).await;
    }
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(posted[1])).await;
    let replayed = sse.take(3, WAIT).await;
    assert_eq!(ids(&replayed), posted[2..]);
    let live = [
        emit(&edge, "a", "done", 9).await,
        emit(&edge, "a", "step", 10).await,
    ];
    let got = sse.take(2, WAIT).await;
    assert_eq!(ids(&got), live);
    assert!(
        sse.next(Duration::from_millis(300)).await.is_none(),
        "an extra event arrived"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_while_events_flow_leaves_no_gap_and_no_duplicate() {
    let edge = start("[]", ConfigBuilder::new().hub("replay_recent", 0));
    let first = emit(&edge, "a", "step", 0).await;
    let url = edge.url("/api/events");
    let writer = tokio::spawn(async move {
        let mut ids = Vec::new();
        for n in 1..=200u64 {
            let v: Value = client()
                .post(&url)
                .bearer_auth(TOKEN)
                .json(&json!({"npc": "a", "type": "step", "data": {"n": n}}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ids.push(v["id"].as_u64().unwrap());
        }
        ids
    });
    // Connect in the middle of the flow, asking for everything after the first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(first)).await;
    let posted = writer.await.unwrap();
    let got = sse.take(posted.len(), WAIT).await;
    assert_eq!(ids(&got), posted, "gap, duplicate or reordering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_stream_opens_with_recent_events() {
    let edge = start("[]", ConfigBuilder::new().hub("replay_recent", 3));
    let mut all = Vec::new();
    for n in 0..6 {
        all.push(emit(&edge, "a", "step", n).await);
    }
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), None).await;
    assert_eq!(ids(&sse.take(3, WAIT).await), all[3..]);
    assert!(sse.next(Duration::from_millis(300)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_survives_a_graceful_restart() {
    let mut edge = start("[]", ConfigBuilder::new());
    let before: Vec<u64> =
        futures_util::future::join_all((0..3).map(|n| emit(&edge, "a", "step", n))).await;
    let mut sorted = before.clone();
    sorted.sort();
    restart(&mut edge, false);
    let after = emit(&edge, "a", "done", 3).await;
    assert!(after > *sorted.last().unwrap(), "ids restarted");
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(sorted[0])).await;
    let mut want = sorted[1..].to_vec();
    want.push(after);
    assert_eq!(ids(&sse.take(want.len(), WAIT).await), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_kill_9() {
    let mut edge = start("[]", ConfigBuilder::new());
    let mut acked = Vec::new();
    for n in 0..50 {
        acked.push(emit(&edge, "a", "step", n).await);
    }
    restart(&mut edge, true);
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(0)).await;
    assert_eq!(ids(&sse.take(acked.len(), WAIT).await), acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_file_is_reloaded_and_a_broken_edit_keeps_the_last_good_list() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(
        &agents_json(&[("first", "a", hook.url("/h"))]),
        ConfigBuilder::new(),
    );
    let list = || async {
        let v: Value = get_json(edge.url("/api/agents")).await;
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a["agent"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list().await, ["first"]);
    let shown: Value = get_json(edge.url("/api/agents")).await;
    assert_eq!(
        shown[0],
        json!({"agent": "first", "npc": "a", "name": "Agent first"}),
        "webhook URLs must stay secret"
    );

    let file = edge.dir.path().join("agents.json");
    write_changed(
        &file,
        &agents_json(&[
            ("first", "a", hook.url("/h")),
            ("second", "b", hook.url("/h2")),
        ]),
    );
    wait_for(|| async { list().await == ["first", "second"] }).await;
    let r = client()
        .post(edge.url("/api/run/second"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);

    write_changed(&file, "[{\"agent\": ");
    edge.wait_log(|v| {
        v["target"] == "hub"
            && v["level"] == "ERROR"
            && v["message"]
                .as_str()
                .unwrap_or("")
                .contains("keeping the last good list")
    });
    assert_eq!(list().await, ["first", "second"]);
}

/// Writes `text` so that the modification time or size visibly changes.
fn write_changed(path: &Path, text: &str) {
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(path, text).unwrap();
}

async fn wait_for<F, Fut>(cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond().await {
        assert!(Instant::now() < deadline, "condition never held");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_cut_off_while_others_keep_up() {
    use tokio::io::AsyncWriteExt;
    let edge = start(
        "[]",
        ConfigBuilder::new()
            .hub("subscriber_queue", 16)
            .hub("replay_recent", 0),
    );
    // The slow one: a raw socket that subscribes and then never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut slow = sock.connect(edge.addr()).await.unwrap();
    slow.write_all(
        b"GET /api/stream?npc=a HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await
    .unwrap();
    let mut fast = SseClient::open(&edge.url("/api/stream?npc=a"), None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Enough to fill the kernel's socket buffers (several MiB on loopback),
    // so the slow reader's writes block and it falls a queue behind.
    let big = "x".repeat(16_000);
    let c = client();
    let (mut posted, mut got) = (Vec::new(), Vec::new());
    for n in 0..600 {
        let v: Value = c
            .post(edge.url("/api/events"))
            .bearer_auth(TOKEN)
            .json(&json!({"npc": "a", "type": "step", "data": {"n": n, "pad": big}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        posted.push(v["id"].as_u64().unwrap());
        // The writer waits for the fast reader to be within 8 events (half
        // its queue) of the head, however loaded the machine; the slow one
        // falls hundreds behind.
        while got.len() + 8 < posted.len() {
            match fast.next(WAIT).await {
                Some(e) => got.push(e),
                None => break,
            }
        }
    }
    got.extend(fast.take(posted.len() - got.len(), WAIT).await);
    assert_eq!(ids(&got), posted, "the fast subscriber missed events");
    edge.wait_log(|v| {
        v["target"] == "hub" && v["message"].as_str().unwrap_or("").contains("too slow")
    });
    // And its connection is really closed (after what the kernel had buffered).
    let mut sink = vec![0u8; 1 << 16];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        loop {
            match slow.read(&mut sink).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert_eq!(
        closed,
        Ok(true),
        "the slow subscriber's connection stayed open"
    );
    // It can come back and replay what it missed.
    let mut again = SseClient::open(&edge.url("/api/stream?npc=a"), Some(posted[0])).await;
    assert_eq!(ids(&again.take(599, WAIT).await), posted[1..]);
    // The admin listener saw it all: 600 stored, one subscriber dropped, and
    // at least the fast one's 600 live deliveries.
    assert_eq!(edge.metric("esprit_hub_events_total").await, 600.0);
    assert_eq!(
        edge.metric("esprit_hub_slow_subscribers_dropped_total")
            .await,
        1.0
    );
    assert!(edge.metric("esprit_hub_deliveries_total").await >= 600.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_all_receive_a_broadcast() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // One test client is a thousand browsers: lift the per-client caps.
    let edge = start(
        "[]",
        ConfigBuilder::new()
            .hub("replay_recent", 0)
            .server("max_connections_per_ip", 2000)
            .server("max_streams_per_ip", 2000),
    );
    let mut socks = Vec::new();
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(edge.addr()).await.unwrap();
        s.write_all(b"GET /api/stream?npc=crowd HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        socks.push(s);
    }
    // Every subscriber has its response header before the event is sent.
    for s in socks.iter_mut() {
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    }
    let id = emit(&edge, "crowd", "done", 1).await;
    let needle = format!("id: {id}\n");
    let mut tasks = Vec::new();
    for mut s in socks {
        let needle = needle.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = String::new();
            let mut buf = vec![0u8; 4096];
            let deadline = tokio::time::Instant::now() + WAIT;
            while !seen.contains(&needle) {
                match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                    _ => return false,
                }
            }
            true
        }));
    }
    let mut delivered = 0;
    for t in tasks {
        delivered += usize::from(t.await.unwrap());
    }
    assert_eq!(delivered, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_headers_head_and_a_stale_last_event_id() {
    let edge = start("[]", ConfigBuilder::new().hub("replay_recent", 2));
    let ids_posted = [
        emit(&edge, "a", "step", 1).await,
        emit(&edge, "a", "step", 2).await,
        emit(&edge, "a", "step", 3).await,
    ];
    let r = client()
        .head(edge.url("/api/stream?npc=a"))
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
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().get("content-security-policy").is_some());
    assert_eq!(r.headers()["cache-control"], "no-cache, no-transform");

    // An id from a store that was since reset: treated as a new client.
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(1_000_000)).await;
    assert_eq!(ids(&sse.take(2, WAIT).await), ids_posted[1..]);
    let live = emit(&edge, "a", "done", 4).await;
    assert_eq!(ids(&sse.take(1, WAIT).await), [live]);

    let r = client()
        .get(edge.url("/api/stream?npc=Bad!"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(edge.url("/api/stream"))
        .header("last-event-id", "abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_channels_replay_and_stream_together() {
    let edge = start("[]", ConfigBuilder::new().hub("replay_recent", 0));
    let a1 = emit(&edge, "a", "step", 1).await;
    let b1 = emit(&edge, "b", "step", 1).await;
    emit(&edge, "c", "step", 1).await;
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a&npc=b"), Some(0)).await;
    assert_eq!(ids(&sse.take(2, WAIT).await), [a1, b1]);
    emit(&edge, "c", "step", 2).await;
    let b2 = emit(&edge, "b", "done", 2).await;
    assert_eq!(ids(&sse.take(1, WAIT).await), [b2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_relay_only_to_agent_hosts_and_only_once() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let elsewhere = peers::webhook(200, Duration::ZERO).await;
    let edge = start(
        &agents_json(&[("approve", "boss", hook.url("/api/webhooks/trigger/x"))]),
        ConfigBuilder::new(),
    );
    let v: Value = client()
        .post(edge.url("/api/run/approve"))
        .json(&json!({"payload": 1, "npc": "boss-2"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = v["runId"].as_str().unwrap().to_string();
    assert_eq!(hook.received()[0]["npc"], "boss-2", "npc override");
    let respond = |run: String| {
        let url = edge.url(&format!("/api/runs/{run}/respond"));
        async move {
            let r = client()
                .post(url)
                .json(&json!({"approved": true}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    assert_eq!(respond(run.clone()).await.0, 409, "not awaiting yet");
    assert_eq!(respond("no-such-run".into()).await.0, 404);

    // A resume URL on a host no agent lives on: refused, nothing relayed.
    let (s, _) = post_event(&edge, json!({"npc": "boss-2", "type": "awaiting", "runId": run, "data": {"resumeUrl": format!("http://localhost:{}/resume", elsewhere.port)}})).await;
    assert_eq!(s, 202);
    let (status, v) = respond(run.clone()).await;
    assert_eq!(status, 403, "{v}");
    assert!(elsewhere.received().is_empty());

    let (s, _) = post_event(&edge, json!({"npc": "boss-2", "type": "awaiting", "runId": run, "data": {"resumeUrl": hook.url("/api/resume/1")}})).await;
    assert_eq!(s, 202);
    let (status, v) = respond(run.clone()).await;
    assert_eq!(status, 202, "{v}");
    assert_eq!(hook.received().last().unwrap(), &json!({"approved": true}));
    // Answered once: the run no longer awaits.
    assert_eq!(respond(run.clone()).await.0, 409);
    let events: Value = get_json(edge.url(&format!("/api/runs/{run}"))).await;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["type"], "step");
    assert_eq!(last["data"]["response"], json!({"approved": true}));

    let (s, _) = post_event(
        &edge,
        json!({"npc": "boss-2", "type": "awaiting", "runId": run, "data": {}}),
    )
    .await;
    assert_eq!(s, 202);
    assert_eq!(respond(run.clone()).await.0, 409, "no resumeUrl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_per_channel() {
    let mut edge = start("[]", ConfigBuilder::new().hub("retention_per_channel", 3));
    let mut posted = Vec::new();
    for n in 0..8 {
        posted.push(emit(&edge, "a", "step", n).await);
    }
    // Pruning runs at start-up and every minute: restart to see it now.
    restart(&mut edge, false);
    edge.wait_log(|v| v["target"] == "hub" && v["message"] == "pruned old events");
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(0)).await;
    assert_eq!(ids(&sse.take(3, WAIT).await), posted[5..]);
    assert!(
        sse.next(Duration::from_millis(300)).await.is_none(),
        "pruned events were replayed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_urls_never_reach_logs_or_events() {
    let secret_path = "/api/webhooks/trigger/SECRET-abc123";
    let edge = start(
        &agents_json(&[(
            "leaky",
            "a",
            format!("http://{}{secret_path}", peers::dead_address()),
        )]),
        ConfigBuilder::new(),
    );
    let r = client()
        .post(edge.url("/api/run/leaky"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(!body.contains("SECRET"), "{body}");
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=a"), Some(0)).await;
    let evs = sse.take(2, WAIT).await;
    assert!(evs.iter().all(|e| !e.data.to_string().contains("SECRET")));
    edge.wait_log(|v| v["message"] == "run webhook failed");
    assert!(
        !edge.settled_stdout().contains("SECRET"),
        "the webhook URL reached the log"
    );
}

/// A `Last-Event-ID` far behind gets at most `hub.replay_max` events: a
/// `missed` marker, the newest ones, then live events (a ~120-byte request
/// with `Last-Event-ID: 0` once streamed the whole store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_far_behind_is_bounded_and_says_what_was_missed() {
    let edge = start("[]", ConfigBuilder::new().hub("replay_max", 5));
    let mut sent = Vec::new();
    for n in 0..12 {
        sent.push(emit(&edge, "far", "step", n).await);
    }
    let mut stream = SseClient::open(&edge.url("/api/stream?npc=far"), Some(sent[1])).await;
    assert_eq!(stream.status, 200);
    let marker = stream.next(Duration::from_secs(10)).await.expect("marker");
    assert_eq!(marker.event, "missed");
    assert_eq!(marker.id, None, "the marker does not move Last-Event-ID");
    assert_eq!(marker.data["after"], sent[1]);
    assert_eq!(marker.data["resumesAfter"], sent[6]);
    let replay = stream.take(5, Duration::from_secs(10)).await;
    assert_eq!(
        ids(&replay),
        sent[7..].to_vec(),
        "the newest replay_max, in order"
    );
    let live = emit(&edge, "far", "done", 99).await;
    let next = stream
        .next(Duration::from_secs(10))
        .await
        .expect("live event");
    assert_eq!(next.id, Some(live));
    // A client within the bound gets its whole gap and no marker.
    let mut near = SseClient::open(&edge.url("/api/stream?npc=far"), Some(sent[9])).await;
    let got = near.take(3, Duration::from_secs(10)).await;
    assert_eq!(ids(&got), vec![sent[10], sent[11], live]);
}

/// Channels (npc values) are bounded: beyond `hub.max_channels` a new one
/// gets 429 and nothing is stored; known channels and the agents' own
/// still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_channels_stop_at_the_bound() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(
        &agents_json(&[("research", "researcher", hook.url("/h"))]),
        ConfigBuilder::new().hub("max_channels", 2),
    );
    emit(&edge, "one", "step", 1).await;
    emit(&edge, "two", "step", 2).await;
    let (status, v) = post_event(&edge, json!({"npc": "three", "type": "step"})).await;
    assert_eq!(status, 429, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("hub.max_channels"),
        "{v}"
    );
    // A run may not open one either.
    let r = client()
        .post(edge.url("/api/run/research"))
        .json(&json!({"npc": "four"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(
        hook.received().is_empty(),
        "a refused run starts no workflow"
    );
    // Known channels and the agent's own keep working.
    emit(&edge, "one", "done", 3).await;
    emit(&edge, "researcher", "step", 4).await;
    let r = client()
        .post(edge.url("/api/run/research"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let runs = get_json(edge.url("/api/runs?npc=three")).await;
    assert_eq!(
        runs["runs"],
        json!([]),
        "nothing was stored for the refused channel"
    );
}

/// Posts `body` with `token` as the bearer.
async fn post_with(edge: &Edge, token: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(edge.url("/api/events"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A run token for npc `researcher`'s run `run`, signed in the test with the
/// hub's own key (read from its data dir), issued and expiring at these
/// offsets from now in seconds: a token of any age without waiting.
fn run_token_signed_here(edge: &Edge, run: &str, iat: i64, exp: i64) -> String {
    let secret = std::fs::read(edge.dir.path().join("run-token.key")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"aud": "esprit-hub-events", "npc": "researcher", "run": run, "iat": now + iat, "exp": now + exp}),
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap()
}

/// Posts an event of `kind` for npc `researcher`'s run `run` with `token`.
async fn post_in_run(edge: &Edge, token: &str, kind: &str, run: &str) -> (u16, Value) {
    post_with(
        edge,
        token,
        json!({"npc": "researcher", "type": kind, "runId": run}),
    )
    .await
}

/// Starts a run of `agent`; returns its run id and the `eventsToken` the
/// webhook got.
async fn start_run(edge: &Edge, hook: &peers::Hook, agent: &str) -> (String, String) {
    let r = client()
        .post(edge.url(&format!("/api/run/{agent}")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    let run_id = v["runId"].as_str().unwrap().to_string();
    assert!(
        v.get("eventsToken").is_none(),
        "the browser never sees a run token: {v}"
    );
    let call = hook
        .received()
        .into_iter()
        .find(|c| c["runId"] == run_id.as_str())
        .expect("webhook call");
    (run_id, call["eventsToken"].as_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_tokens_post_only_for_their_run_and_npc() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(
        &agents_json(&[
            ("research", "researcher", hook.url("/hook/a")),
            ("writer", "scribe", hook.url("/hook/b")),
        ]),
        ConfigBuilder::new(),
    );
    let (run, token) = start_run(&edge, &hook, "research").await;
    let (other_run, _) = start_run(&edge, &hook, "research").await;
    let mut sse = SseClient::open(&edge.url("/api/stream?npc=researcher,scribe"), Some(0)).await;
    let before = sse.take(2, WAIT).await; // the two `started`
    assert_eq!(before.len(), 2);

    let (status, v) = post_with(
        &edge,
        &token,
        json!({"npc": "researcher", "type": "step", "runId": run}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
    assert!(v.get("eventsToken").is_none(), "renewed at once: {v}");
    let stored = v["id"].as_u64().unwrap();

    for (body, why) in [
        (
            json!({"npc": "scribe", "type": "step", "runId": run}),
            "another npc",
        ),
        (
            json!({"npc": "researcher", "type": "step", "runId": other_run}),
            "another run",
        ),
        (json!({"npc": "researcher", "type": "done"}), "no runId"),
    ] {
        let (status, v) = post_with(&edge, &token, body).await;
        assert_eq!(status, 403, "{why}: {v}");
        let e = v["error"].as_str().unwrap();
        assert!(e.contains("researcher") && e.contains(&run), "{why}: {e}");
    }
    // Tampered: the claims of another run under the same signature.
    let parts: Vec<&str> = token.split('.').collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.replace(&run, &other_run)),
        parts[2]
    );
    let (status, v) = post_with(
        &edge,
        &tampered,
        json!({"npc": "researcher", "type": "step", "runId": other_run}),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert_eq!(v["error"], "not a valid events token");
    // Expired: signed with the hub's own key (the test can read its data
    // dir), with an `exp` in the past.
    let mode = std::fs::metadata(edge.dir.path().join("run-token.key"))
        .unwrap()
        .permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.mode() & 0o777, 0o600);
    let expired = run_token_signed_here(&edge, &run, -7200, -3600);
    let (status, v) = post_with(
        &edge,
        &expired,
        json!({"npc": "researcher", "type": "step", "runId": run}),
    )
    .await;
    assert_eq!(status, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("expired"), "{v}");
    // The shared token still posts for anyone (until turned off).
    let (status, _) = post_with(&edge, TOKEN, json!({"npc": "scribe", "type": "step"})).await;
    assert_eq!(status, 202);

    // Only the two accepted events reached the stream, and no token ever
    // shows in an event or in /api/runs.
    let evs = sse.take(2, WAIT).await;
    assert_eq!(evs[0].id, Some(stored));
    assert_eq!(evs[1].data["npc"], "scribe");
    assert!(
        sse.next(Duration::from_millis(300)).await.is_none(),
        "a refused event was stored"
    );
    for e in before.iter().chain(&evs) {
        assert!(!e.data.to_string().contains(&token), "token in an event");
    }
    let runs = client()
        .get(edge.url("/api/runs?npc=researcher"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let one = client()
        .get(edge.url(&format!("/api/runs/{run}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!runs.contains(&token) && !one.contains(&token) && !runs.contains("eventsToken"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_token_can_be_turned_off_while_run_tokens_keep_working() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    let edge = start(
        &agents_json(&[("research", "researcher", hook.url("/hook/a"))]),
        ConfigBuilder::new().hub("accept_shared_token", false),
    );
    let (status, v) = post_with(&edge, TOKEN, json!({"npc": "researcher", "type": "step"})).await;
    assert_eq!(status, 401, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("accept_shared_token"),
        "{v}"
    );
    let (run, token) = start_run(&edge, &hook, "research").await;
    let (status, v) = post_with(
        &edge,
        &token,
        json!({"npc": "researcher", "type": "done", "runId": run}),
    )
    .await;
    assert_eq!(status, 202, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_run_s_token_is_renewed_by_its_events() {
    let hook = peers::webhook(200, Duration::ZERO).await;
    // A minute's token: past 30 s it comes back renewed. The test signs one
    // that is 40 s old with the hub's key rather than waiting.
    let edge = start(
        &agents_json(&[("research", "researcher", hook.url("/hook/a"))]),
        ConfigBuilder::new().hub("run_token_ttl", "1m"),
    );
    let (run, _) = start_run(&edge, &hook, "research").await;
    let aging = run_token_signed_here(&edge, &run, -40, 20);
    let (status, v) = post_in_run(&edge, &aging, "step", &run).await;
    assert_eq!(status, 202, "{v}");
    let fresh = v["eventsToken"]
        .as_str()
        .expect("renewed token")
        .to_string();
    let (status, v) = post_in_run(&edge, &fresh, "step", &run).await;
    assert_eq!(status, 202, "{v}");
    assert!(
        v.get("eventsToken").is_none(),
        "a fresh token is not renewed again: {v}"
    );
    // Renewed within one window: the same token, not one more.
    let (_, again) = post_in_run(&edge, &aging, "step", &run).await;
    assert_eq!(again["eventsToken"].as_str(), Some(fresh.as_str()));
    // The run's last event earns none, and neither does anything after it.
    let (status, v) = post_in_run(&edge, &aging, "done", &run).await;
    assert_eq!(status, 202, "{v}");
    assert!(
        v.get("eventsToken").is_none(),
        "renewed by the run's last event: {v}"
    );
    let (status, v) = post_in_run(&edge, &aging, "step", &run).await;
    assert_eq!(status, 202, "{v}");
    assert!(
        v.get("eventsToken").is_none(),
        "renewed after the run ended: {v}"
    );
}
