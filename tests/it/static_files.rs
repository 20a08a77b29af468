//! `kind = "static"`: a Vite build served by the real binary over real
//! sockets: MIME types, validators and 304, precompressed siblings, ranges,
//! HEAD, the SPA fallback, and every way out of the root refused.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::{Edge, check, client, raw_exchange as raw};
use std::path::Path;

const CSP: &str = "default-src 'self'";

/// What `vite build` leaves in `dist/`, plus a secret beside it.
fn write_site(dir: &Path) {
    let root = dir.join("site");
    std::fs::create_dir_all(root.join("assets")).unwrap();
    std::fs::write(
        root.join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::write(root.join("assets/index-BXk3Qw9a.js"), "console.log('app')").unwrap();
    std::fs::write(root.join("assets/index-BXk3Qw9a.js.br"), "BROTLI").unwrap();
    std::fs::write(root.join("assets/index-BXk3Qw9a.js.gz"), "GZIP").unwrap();
    std::fs::write(root.join("assets/style-a1b2c3d4.css"), "body{}").unwrap();
    std::fs::write(root.join("favicon.svg"), "<svg/>").unwrap();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), big).unwrap();
    std::fs::write(root.join(".env"), "SECRET=dotfile").unwrap();
    std::fs::write(dir.join("secret.txt"), "SECRET=outside").unwrap();
    let _ = std::os::unix::fs::symlink(dir.join("secret.txt"), root.join("leak.txt"));
    let _ = std::os::unix::fs::symlink(dir, root.join("up"));
}

fn start() -> Edge {
    Edge::start_with(
        |dir, port| {
            write_site(dir);
            ConfigBuilder::new()
                .route(Route::prefix("/").files(&dir.join("site")).csp(CSP))
                .render(dir, port)
        },
        &[],
    )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

#[tokio::test]
async fn index_assets_and_mime_types() {
    let edge = start();
    let c = client();
    let r = c.get(edge.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert_eq!(header(&r, "content-security-policy"), CSP);
    assert_eq!(header(&r, "x-content-type-options"), "nosniff");
    assert!(!header(&r, "etag").is_empty() && !header(&r, "last-modified").is_empty());
    assert!(r.text().await.unwrap().contains("id=root"));

    let r = c
        .get(edge.url("/assets/style-a1b2c3d4.css"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "content-type"), "text/css; charset=utf-8");
    assert_eq!(
        header(&r, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    let r = c.get(edge.url("/favicon.svg")).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "image/svg+xml; charset=utf-8");
    assert_eq!(header(&r, "cache-control"), "no-cache");

    // A file larger than one read chunk arrives whole and in order.
    let r = c.get(edge.url("/big.bin")).send().await.unwrap();
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), 300_000);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

#[tokio::test]
async fn validators_answer_304() {
    let edge = start();
    let c = client();
    let r = c.get(edge.url("/")).send().await.unwrap();
    let etag = header(&r, "etag").to_string();
    let modified = header(&r, "last-modified").to_string();
    let r = c
        .get(edge.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = c
        .get(edge.url("/"))
        .header("if-modified-since", &modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = c
        .get(edge.url("/"))
        .header("if-none-match", "\"stale\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A changed file gets a new tag, so the old one no longer matches.
    std::fs::write(
        edge.dir.path().join("site/index.html"),
        "<!doctype html>v2, longer",
    )
    .unwrap();
    let r = c
        .get(edge.url("/"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(header(&r, "etag"), etag);
    assert!(r.text().await.unwrap().contains("v2"));
}

#[tokio::test]
async fn precompressed_siblings_by_accept_encoding() {
    let edge = start();
    let c = client();
    let js = edge.url("/assets/index-BXk3Qw9a.js");
    for (accept, encoding, body) in [
        (Some("gzip, deflate, br"), "br", "BROTLI"),
        (Some("gzip"), "gzip", "GZIP"),
        (Some("br;q=0, gzip;q=0.5"), "gzip", "GZIP"),
        (None, "", "console.log('app')"),
        (Some("identity"), "", "console.log('app')"),
    ] {
        let mut req = c.get(&js);
        if let Some(a) = accept {
            req = req.header("accept-encoding", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "content-encoding"), encoding, "{accept:?}");
        assert_eq!(header(&r, "vary"), "Accept-Encoding");
        assert_eq!(header(&r, "content-type"), "text/javascript; charset=utf-8");
        assert_eq!(r.text().await.unwrap(), body, "{accept:?}");
    }
}

#[tokio::test]
async fn byte_ranges_and_head() {
    let edge = start();
    let c = client();
    let r = c
        .get(edge.url("/big.bin"))
        .header("range", "bytes=1000-1009")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 1000-1009/300000");
    let want: Vec<u8> = (1000..1010u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(r.bytes().await.unwrap().to_vec(), want);
    let r = c
        .get(edge.url("/big.bin"))
        .header("range", "bytes=299990-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 10);
    let r = c
        .get(edge.url("/big.bin"))
        .header("range", "bytes=400000-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */300000");
    // A range of a precompressed file counts bytes of the plain file.
    let r = c
        .get(edge.url("/assets/index-BXk3Qw9a.js"))
        .header("range", "bytes=0-6")
        .header("accept-encoding", "br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-encoding"), "");
    assert_eq!(r.text().await.unwrap(), "console");

    let (status, text) = raw(
        edge.port,
        "HEAD /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    assert!(
        text.to_ascii_lowercase().contains("content-length: 300000"),
        "{text}"
    );
    assert!(
        text.ends_with("\r\n\r\n"),
        "HEAD must carry no body: {text:?}"
    );
}

#[tokio::test]
async fn spa_fallback_and_misses() {
    let edge = start();
    let c = client();
    let r = c.get(edge.url("/rooms/42")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "cache-control"), "no-cache");
    assert!(r.text().await.unwrap().contains("id=root"));
    let r = c
        .get(edge.url("/assets/gone-DEADbeef.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A directory without its slash: 301 to it, query kept (as nginx).
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(edge.url("/assets?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(header(&r, "location"), "/assets/?x=1");
    let r = c.post(edge.url("/")).body("x").send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET, HEAD");
}

#[tokio::test]
async fn no_way_out_of_the_root() {
    let edge = start();
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/..%5c..%5csecret.txt",
        "/.%2e/secret.txt",
        "/x%00.txt",
    ] {
        let (status, text) = raw(
            edge.port,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 400, "{target}: {text}");
        assert!(!text.contains("SECRET"), "{target}");
    }
    // Symlinks that leave the root and hidden files: not found, nothing leaked.
    for target in ["/leak.txt", "/up/secret.txt", "/.env", "/%2eenv"] {
        let (status, text) = raw(
            edge.port,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 404, "{target}: {text}");
        assert!(!text.contains("SECRET"), "{target}");
    }
    let log = edge.wait_log(|l| l["message"] == "refused: a symlink leads out of the static root");
    assert_eq!(log["level"], "WARN");
}

#[test]
fn a_missing_root_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, err) =
        check(&ConfigBuilder::new().route(Route::prefix("/").files(&dir.path().join("dist"))));
    assert!(!ok);
    assert!(err.contains("routes[0].root"), "{err}");
    assert!(err.contains("dist"), "{err}");
    let (ok, err) = check(
        &ConfigBuilder::new().route(Route::prefix("/").files(dir.path()).set("upstream", "x")),
    );
    assert!(!ok);
    assert!(
        err.contains("routes[0].upstream") && err.contains("static"),
        "{err}"
    );
}
