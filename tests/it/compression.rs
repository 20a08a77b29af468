//! `compress = true`: proxied responses compressed on the fly when the
//! client takes it, and never an event stream (whose events would wait in
//! the compressor), announced by the client or not.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::peers;
use crate::common::{Edge, client};
use futures_util::StreamExt;
use std::io::Read;
use std::time::Duration;

async fn start() -> (Edge, peers::Peer) {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .route(Route::prefix("/z/").upstream("app").set("compress", true))
            .upstream("dead", peers::dead_address())
            .route(
                Route::prefix("/dead/")
                    .upstream("dead")
                    .set("compress", true),
            )
            .route(Route::prefix("/plain/").upstream("app")),
    );
    (edge, app)
}

#[tokio::test]
async fn proxied_answers_are_gzipped_when_the_client_takes_it() {
    let (edge, _app) = start().await;
    let r = client()
        .get(edge.url("/z/page"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    assert!(
        r.headers()["vary"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase()
            .contains("accept-encoding")
    );
    let zipped = r.bytes().await.unwrap();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped[..])
        .read_to_string(&mut text)
        .expect("a real gzip body");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["peer"], "app");
    assert_eq!(v["target"], "/z/page");

    // Without Accept-Encoding, or on a route without `compress`: as the upstream sent it.
    let r = client().get(edge.url("/z/page")).send().await.unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    let r = client()
        .get(edge.url("/plain/page"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("content-encoding").is_none());
    assert!(r.text().await.unwrap().starts_with('{'));
}

#[tokio::test]
async fn the_edges_own_error_page_is_not_compressed() {
    let (edge, _app) = start().await;
    let r = client()
        .get(edge.url("/dead/page"))
        .header("accept", "text/html")
        .header("accept-encoding", "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.headers().get("content-encoding").is_none());
    assert!(r.text().await.unwrap().contains("is not answering"));
}

#[tokio::test]
async fn event_streams_are_never_compressed() {
    let (edge, _app) = start().await;
    for announced in [true, false] {
        let mut req = client()
            .get(edge.url("/z/events?mode=sse&ms=60000"))
            .header("accept-encoding", "gzip, br, zstd");
        if announced {
            req = req.header("accept", "text/event-stream");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers().get("content-encoding").is_none(),
            "announced: {announced}"
        );
        // The first event arrives while the upstream holds the second back a minute.
        let mut body = r.bytes_stream();
        let first = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("the first event was held back")
            .unwrap()
            .unwrap();
        assert_eq!(
            &first[..],
            b"id: 1\ndata: first\n\n",
            "announced: {announced}"
        );
    }
}

#[test]
fn compress_is_refused_on_a_stream_route() {
    let (ok, err) = crate::common::check(
        &ConfigBuilder::new().upstream("app", "127.0.0.1:9").route(
            Route::prefix("/")
                .upstream("app")
                .stream()
                .set("compress", true),
        ),
    );
    assert!(!ok);
    assert!(
        err.contains("routes[0].compress") && err.contains("stream = true"),
        "{err}"
    );
}
