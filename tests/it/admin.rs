//! The admin listener: `/metrics` read as Prometheus reads it (a real
//! parser), its values moving as requests are served and refused; nothing of
//! it on the public listener; a config that puts it on a public port refused.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{self, Edge, client};

/// The samples of one scrape.
async fn scrape(edge: &Edge) -> prometheus_parse::Scrape {
    let r = client()
        .get(format!("http://127.0.0.1:{}/metrics", edge.admin_port))
        .send()
        .await
        .expect("admin listener");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text"),
    );
    let text = r.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("a parsable exposition")
}

/// The value of `name` whose labels include every pair in `labels` (0 when absent).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_are_served_and_refused() {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .route(Route::prefix("/app/").upstream("app"))
            .raw("[[limits]]\nname = \"app-ip\"\nprefix = \"/app/\"\nkey = \"ip\"\nrate = \"3/m\"\nburst = 3\n"),
    );
    let before = scrape(&edge).await;
    assert_eq!(
        value(&before, "esprit_requests_total", &[("route", "/app/")]),
        0.0
    );
    assert_eq!(value(&before, "esprit_build_info", &[]), 1.0);
    for _ in 0..3 {
        let r = client().get(edge.url("/app/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client().post(edge.url("/app/x")).send().await.unwrap();
    assert_eq!(r.status(), 429);
    let r = client().get(edge.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(app.hits(), 3);
    // Counted in the logging phase, just after the response: give it a
    // moment. (The test bed's own /healthz probes count too, as route none.)
    let count = |s: &prometheus_parse::Scrape, route, method, status| {
        value(
            s,
            "esprit_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    let mut after = scrape(&edge).await;
    for _ in 0..50 {
        if count(&after, "/app/", "Read", "200") >= 3.0
            && count(&after, "/app/", "Write", "429") >= 1.0
            && count(&after, "none", "Read", "404") >= 1.0
            && value(
                &after,
                "esprit_request_duration_seconds_count",
                &[("route", "/app/")],
            ) >= 4.0
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = scrape(&edge).await;
    }
    let req = |route, method, status| count(&after, route, method, status);
    assert_eq!(req("/app/", "Read", "200"), 3.0);
    assert_eq!(req("/app/", "Write", "429"), 1.0);
    assert_eq!(req("none", "Read", "404"), 1.0);
    assert_eq!(
        value(&after, "esprit_limit_refusals_total", &[("rule", "app-ip")]),
        1.0
    );
    // The histogram counts every request of the route.
    assert_eq!(
        value(
            &after,
            "esprit_request_duration_seconds_count",
            &[("route", "/app/")]
        ),
        4.0
    );
    assert!(value(&after, "esprit_open_connections", &[]) >= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_listener_serves_no_metrics() {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .route(Route::prefix("/").upstream("app")),
    );
    let _ = client().get(edge.url("/metrics")).send().await.unwrap();
    // /metrics on the public port is just a path: it went to the app.
    assert_eq!(app.hits(), 1);
    let r = client()
        .get(format!("http://127.0.0.1:{}/api/agents", edge.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        404,
        "the admin listener serves only its own paths"
    );
    let r = client()
        .post(format!("http://127.0.0.1:{}/metrics", edge.admin_port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[test]
fn an_admin_listener_on_a_public_port_or_unparsable_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("edge.toml");
    std::fs::write(
        &conf,
        "[server]\nlisten = \"127.0.0.1:18080\"\n[admin]\nlisten = \"0.0.0.0:18080\"\n[[routes]]\nprefix = \"/\"\nto = \"/x\"\n",
    )
    .unwrap();
    let path = conf.to_str().unwrap();
    let (status, _, err) = common::run_binary(&["check", "--config", path], &[]);
    assert!(!status.success());
    assert!(
        err.contains("admin.listen") && err.contains("public listener"),
        "{err}"
    );
    let (status, _, err) = common::run_binary(
        &["check", "--config", path],
        &[("ESPRIT_ADMIN_LISTEN", "localhost")],
    );
    assert!(!status.success());
    assert!(
        err.contains("admin.listen (from ESPRIT_ADMIN_LISTEN)") && err.contains("not an IP:port"),
        "{err}"
    );
    let (status, out, err) = common::run_binary(
        &["check", "--config", path],
        &[("ESPRIT_ADMIN_LISTEN", "off")],
    );
    assert!(status.success(), "{out}{err}");
}

/// A bare HTTP upstream on `port` that answers every request 200 (or none,
/// once dropped): the port stays the same across restarts.
async fn health_peer(port: u16) -> tokio::task::JoinHandle<()> {
    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind health peer");
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf).await;
                let _ = c
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    })
}

/// `/readyz` status and body, polled until `want` (or 10 s).
async fn readyz_until(edge: &Edge, want: u16) -> (u16, serde_json::Value) {
    let url = format!("http://127.0.0.1:{}/readyz", edge.admin_port);
    let mut last = (0, serde_json::Value::Null);
    for _ in 0..100 {
        let r = client().get(&url).send().await.expect("admin listener");
        last = (r.status().as_u16(), r.json().await.expect("json"));
        if last.0 == want {
            return last;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_goes_503_when_an_upstream_dies_and_back_when_it_returns() {
    let port = common::free_port();
    let peer = health_peer(port).await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .raw(&format!(
                "[upstreams.app]\naddress = \"127.0.0.1:{port}\"\nhealth_path = \"/healthz\"\nhealth_interval = \"200ms\"\n"
            ))
            .route(Route::prefix("/").upstream("app")),
    );
    let (status, body) = readyz_until(&edge, 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstreams"]["app"]["detail"], "HTTP 200");
    let s = scrape(&edge).await;
    assert_eq!(value(&s, "esprit_upstream_up", &[("upstream", "app")]), 1.0);

    peer.abort();
    let (status, body) = readyz_until(&edge, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["ready"], false);
    let detail = body["upstreams"]["app"]["detail"].as_str().unwrap();
    assert!(detail.contains("connect failed"), "{detail}");
    let s = scrape(&edge).await;
    assert_eq!(value(&s, "esprit_upstream_up", &[("upstream", "app")]), 0.0);
    edge.wait_log(|v| {
        v["target"] == "admin" && v["message"] == "upstream unhealthy" && v["upstream"] == "app"
    });
    // /healthz on the public listener is liveness only: still ok.
    let r = client().get(edge.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let _back = health_peer(port).await;
    let (status, body) = readyz_until(&edge, 200).await;
    assert_eq!(status, 200, "{body}");
}

#[test]
fn bad_health_checks_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("edge.toml");
    std::fs::write(
        &conf,
        "[upstreams.app]\naddress = \"127.0.0.1:9\"\nhealth_path = \"healthz now\"\nhealth_interval = \"10ms\"\n[[routes]]\nprefix = \"/\"\nupstream = \"app\"\n",
    )
    .unwrap();
    let (status, _, err) = common::run_binary(&["check", "--config", conf.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(err.contains("upstreams.app.health_path"), "{err}");
    assert!(
        err.contains("upstreams.app.health_interval: out of range"),
        "{err}"
    );
    // An address override keeps the upstream's other keys.
    let (status, _, err) = common::run_binary(
        &["check", "--config", conf.to_str().unwrap()],
        &[("ESPRIT_UPSTREAM_APP", "127.0.0.1:10")],
    );
    assert!(!status.success());
    assert!(err.contains("upstreams.app.health_path"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_and_first_byte_times_are_counted_per_upstream() {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .upstream("dead", peers::dead_address())
            .route(Route::prefix("/app/").upstream("app"))
            .route(
                Route::prefix("/slow/")
                    .upstream("app")
                    .read_timeout("300ms"),
            )
            .route(Route::prefix("/dead/").upstream("dead")),
    );
    let status = |path: &'static str| {
        let url = edge.url(path);
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status("/app/x").await, 200);
    assert_eq!(status("/dead/x").await, 502);
    assert_eq!(status("/slow/x?mode=slow&ms=3000").await, 504);
    let failures = |s: &prometheus_parse::Scrape, upstream, kind| {
        value(
            s,
            "esprit_upstream_failures_total",
            &[("upstream", upstream), ("kind", kind)],
        )
    };
    let mut s = scrape(&edge).await;
    for _ in 0..50 {
        if failures(&s, "dead", "Connect") >= 1.0 && failures(&s, "app", "Timeout") >= 1.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        s = scrape(&edge).await;
    }
    assert_eq!(failures(&s, "dead", "Connect"), 1.0);
    assert_eq!(failures(&s, "app", "Timeout"), 1.0);
    assert_eq!(failures(&s, "app", "Connect"), 0.0);
    assert_eq!(
        value(
            &s,
            "esprit_upstream_first_byte_seconds_count",
            &[("upstream", "app")]
        ),
        1.0,
        "one response header came from app (the slow one never did)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_asks_the_stores_and_goes_503_when_one_breaks() {
    let edge = Edge::start(
        &ConfigBuilder::new()
            .route(Route::prefix("/api/").hub())
            .route(Route::prefix("/auth/").sign_in()),
    );
    let (status, body) = readyz_until(&edge, 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["stores"]["hub"]["up"], true, "{body}");
    assert_eq!(body["stores"]["sessions"]["up"], true, "{body}");

    // The event store's files vanish under the running edge (a data volume
    // unmounted or wiped): its open connections still work from their open
    // files, but a new reader would not; readiness says so, liveness stays.
    let store = edge.dir.path().join("data/hub.sqlite3");
    let store = if store.exists() {
        store
    } else {
        edge.dir.path().join("hub.sqlite3")
    };
    assert!(store.exists(), "no hub store at {}", store.display());
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", store.display()));
    }
    let (status, body) = readyz_until(&edge, 503).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["stores"]["hub"]["up"], false, "{body}");
    assert_eq!(body["stores"]["sessions"]["up"], true, "{body}");
    edge.wait_log(|v| v["message"] == "store not ready" && v["store"] == "hub");
    let r = client().get(edge.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_a_reloaded_config() {
    let port = common::free_port();
    let peer = health_peer(port).await;
    let checked = |address: String| {
        ConfigBuilder::new()
            .raw(&format!(
                "[upstreams.app]\naddress = \"{address}\"\nhealth_path = \"/healthz\"\nhealth_interval = \"200ms\"\n"
            ))
            .route(Route::prefix("/").upstream("app"))
    };
    let down = checked(peers::dead_address());
    let edge = Edge::start(&down);
    let (status, body) = readyz_until(&edge, 503).await;
    assert_eq!(status, 503, "{body}");

    // The operator points the upstream at where it really runs and reloads.
    let up = checked(format!("127.0.0.1:{port}"));
    std::fs::write(&edge.config, up.render(edge.dir.path(), edge.port)).unwrap();
    edge.signal("HUP");
    let (status, body) = readyz_until(&edge, 200).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["upstreams"]["app"]["detail"], "HTTP 200");

    // Removing an upstream that is down no longer holds readiness back.
    peer.abort();
    let gone = ConfigBuilder::new()
        .upstream("other", format!("127.0.0.1:{port}"))
        .route(Route::prefix("/").upstream("other"));
    std::fs::write(&edge.config, gone.render(edge.dir.path(), edge.port)).unwrap();
    edge.signal("HUP");
    // Readiness was 200 before this reload too: wait for the list to change.
    let mut last = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = readyz_until(&edge, 200).await;
        assert_eq!(status, 200, "{body}");
        if body["upstreams"].get("other").is_some() {
            assert!(body["upstreams"].get("app").is_none(), "{body}");
            return;
        }
        last = body;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("the reload never reached /readyz: {last}");
}
