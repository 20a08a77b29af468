//! TLS termination: HTTP/2 by ALPN, HTTP/1.1, certificate chains, redirect to
//! HTTPS, bad certificates refused at start-up, and reload on SIGHUP.

use crate::common;
use crate::common::certs::pki;
use crate::common::config::{ConfigBuilder, Route};
use crate::common::{Edge, client, free_port, peers, run_binary};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;

const HOST: &str = "edge.test";

struct TlsEdge {
    edge: Edge,
    tls_port: u16,
}

impl TlsEdge {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls_port))
    }
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.tls_port)
    }
}

fn start(pki: &common::certs::Pki, upstream: &str, redirect: bool) -> TlsEdge {
    let tls_port = free_port();
    let chain = pki.chain_pem.clone();
    let key = pki.key_pem.clone();
    let config = ConfigBuilder::new()
        .server("redirect_https", redirect)
        .upstream("app", upstream)
        .route(Route::prefix("/").upstream("app"))
        .route(Route::prefix("/app/").upstream("app").stream().session())
        .route(Route::prefix("/auth/").sign_in());
    let mut edge = Edge::start_with(
        move |dir, port| {
            std::fs::write(dir.join("cert.pem"), &chain).unwrap();
            std::fs::write(dir.join("key.pem"), &key).unwrap();
            config
                .clone()
                .tls(
                    &format!("127.0.0.1:{tls_port}"),
                    &dir.join("cert.pem").display().to_string(),
                    &dir.join("key.pem").display().to_string(),
                )
                .render(dir, port)
        },
        &[],
    );
    edge.wait_listening(tls_port);
    TlsEdge { edge, tls_port }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_by_alpn_through_a_chain_with_hsts() {
    let app = peers::echo("app").await;
    let p = pki(HOST);
    let e = start(&p, &app.address(), false);
    let c = p.client(HOST, e.addr()).build().unwrap();
    let r = c.get(e.url("/x?y=1")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["strict-transport-security"]
            .to_str()
            .unwrap()
            .starts_with("max-age=")
    );
    let echo: Value = r.json().await.unwrap();
    assert_eq!(echo["target"], "/x?y=1");
    assert_eq!(echo["version"], "HTTP/1.1", "upstreams speak HTTP/1.1");
    let headers = echo["headers"].as_array().unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .find(|h| h[0] == n)
            .map(|h| h[1].as_str().unwrap().to_string())
    };
    assert_eq!(get("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        get("host").as_deref(),
        Some(&*format!("{HOST}:{}", e.tls_port))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_tls12_clients_work_too() {
    let app = peers::echo("app").await;
    let p = pki(HOST);
    let e = start(&p, &app.address(), false);
    let c = p
        .client(HOST, e.addr())
        .http1_only()
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let r = c.get(e.url("/")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_client_handshake_fails_and_edge_keeps_serving() {
    let app = peers::echo("app").await;
    let p = pki(HOST);
    let e = start(&p, &app.address(), false);
    let stranger = pki(HOST); // another root the client trusts instead
    let err = stranger
        .client(HOST, e.addr())
        .build()
        .unwrap()
        .get(e.url("/"))
        .send()
        .await;
    assert!(err.is_err(), "handshake with an untrusted chain succeeded");
    let ok = p
        .client(HOST, e.addr())
        .build()
        .unwrap()
        .get(e.url("/"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_listener_redirects_to_https_but_serves_healthz() {
    let app = peers::echo("app").await;
    let p = pki(HOST);
    let e = start(&p, &app.address(), true);
    let r = client()
        .get(e.edge.url("/studio/x?y=1"))
        .header("host", format!("{HOST}:{}", e.edge.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://{HOST}:{}/studio/x?y=1", e.tls_port)
    );
    assert_eq!(
        client()
            .get(e.edge.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(app.hits(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_without_dropping_connections() {
    let app = peers::echo("app").await;
    let old = pki(HOST);
    let e = start(&old, &app.address(), false);
    let old_client = old
        .client(HOST, e.addr())
        .http1_only()
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    assert_eq!(
        old_client.get(e.url("/")).send().await.unwrap().status(),
        200
    );

    let new = pki(HOST);
    let new_client = new.client(HOST, e.addr()).build().unwrap();
    assert!(
        new_client.get(e.url("/")).send().await.is_err(),
        "new root trusted before reload"
    );

    // A broken file on SIGHUP keeps the old certificate and says why.
    std::fs::write(e.edge.dir.path().join("cert.pem"), "not a certificate").unwrap();
    e.edge.signal("HUP");
    let line = e
        .edge
        .wait_log(|v| v["target"] == "tls" && v["level"] == "ERROR");
    assert!(
        line["error"].as_str().unwrap().contains("cert.pem"),
        "{line}"
    );
    assert_eq!(
        old_client.get(e.url("/")).send().await.unwrap().status(),
        200
    );

    new.write(e.edge.dir.path());
    e.edge.signal("HUP");
    e.edge
        .wait_log(|v| v["target"] == "tls" && v["message"] == "certificate reloaded");
    assert_eq!(
        new_client.get(e.url("/")).send().await.unwrap().status(),
        200
    );
    // The kept-alive connection from before the reload still works.
    assert_eq!(
        old_client.get(e.url("/")).send().await.unwrap().status(),
        200
    );
}

fn tls_config(dir: &std::path::Path, cert: &str, key: &str) -> std::path::PathBuf {
    let path = dir.join("edge.toml");
    let config = ConfigBuilder::new()
        .tls(&format!("127.0.0.1:{}", free_port()), cert, key)
        .upstream("app", "127.0.0.1:9")
        .route(Route::prefix("/").upstream("app"));
    std::fs::write(&path, config.to_toml()).unwrap();
    path
}

#[test]
fn bad_certificates_are_start_up_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = pki(HOST);
    let other = pki(HOST);
    std::fs::write(d.join("garbage.pem"), "just some text\n").unwrap();
    std::fs::write(d.join("broken.pem"), "-----BEGIN CERTIFICATE-----\nxx\n").unwrap();
    std::fs::write(d.join("good.pem"), &good.chain_pem).unwrap();
    std::fs::write(d.join("good.key"), &good.key_pem).unwrap();
    std::fs::write(d.join("other.key"), &other.key_pem).unwrap();
    std::fs::write(d.join("empty.key"), "").unwrap();
    let g = |n: &str| d.join(n).display().to_string();
    let cases = [
        (
            g("garbage.pem"),
            g("good.key"),
            "garbage.pem: no certificate found",
        ),
        (
            g("broken.pem"),
            g("good.key"),
            "broken.pem: broken PEM: a CERTIFICATE section has no END line",
        ),
        (
            g("good.pem"),
            g("other.key"),
            "other.key: private key does not match the certificate",
        ),
        (
            g("good.pem"),
            g("empty.key"),
            "empty.key: no usable private key",
        ),
        (g("missing.pem"), g("good.key"), "tls.cert: cannot read"),
    ];
    for (cert, key, want) in cases {
        let cfg = tls_config(d, &cert, &key);
        let cfg = cfg.to_str().unwrap();
        for args in [vec!["check", "--config", cfg], vec!["--config", cfg]] {
            let (status, _out, err) = run_binary(&args, &[]);
            assert_eq!(status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(want), "{args:?}: wanted {want:?} in {err:?}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

/// Adds `alice` with the CLI and signs her in through `c` (a same-origin
/// form post over TLS); returns the 303.
async fn sign_in_alice(e: &TlsEdge, c: &reqwest::Client) -> reqwest::Response {
    common::add_user(&e.edge, "alice", "correct-horse-battery", &[]);
    let r = c
        .post(e.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "alice"), ("password", "correct-horse-battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_over_tls_is_host_prefixed_and_secure() {
    let app = peers::echo("app").await;
    let p = pki(HOST);
    let e = start(&p, &app.address(), false);
    let c = p.client(HOST, e.addr()).build().unwrap();
    let r = sign_in_alice(&e, &c).await;
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("__Host-esprit_session="), "{set}");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing: {set}");
    }
    assert!(
        !set.to_ascii_lowercase().contains("domain="),
        "__Host- cookies carry no Domain: {set}"
    );
    let device = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("__Secure-esprit_device="))
        .expect("the device cookie, __Secure- prefixed")
        .to_string();
    for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/auth/"] {
        assert!(device.contains(attr), "{attr} missing: {device}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let me = c
        .get(e.url("/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    // The TLS cookie means nothing on the plain listener.
    let plain = client()
        .get(e.edge.url("/auth/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_ends_a_proxied_event_stream_over_h2_and_only_that_stream() {
    use futures_util::StreamExt;
    let app = peers::echo("app").await;
    let p = pki(HOST);
    let e = start(&p, &app.address(), false);
    // One client: one HTTP/2 connection carries the sign-in, the stream, the
    // logout and what comes after.
    let c = p.client(HOST, e.addr()).build().unwrap();
    let r = sign_in_alice(&e, &c).await;
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let stream = c
        .get(e.url("/app/feed?mode=sse&ms=60000"))
        .header("cookie", &cookie)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.version(), reqwest::Version::HTTP_2);
    let mut body = stream.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(10), body.next())
        .await
        .expect("the first event")
        .expect("a chunk")
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("data: first"));
    assert!(
        !common::sse::ends_within(&mut body, 3).await,
        "the stream ended while the session was live"
    );
    let out = c
        .post(e.url("/auth/logout"))
        .header("cookie", &cookie)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        common::sse::ends_within(&mut body, 10).await,
        "the h2 stream outlived its session"
    );
    // The browser's connection itself lives on for its other requests.
    let after = c.get(e.url("/healthz")).send().await.unwrap();
    assert_eq!(after.status(), 200);
    assert_eq!(after.version(), reqwest::Version::HTTP_2);
    e.edge
        .wait_log(|v| v["target"] == "auth" && v["message"] == "session ended; closing its stream");
}
