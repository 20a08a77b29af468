//! Cross-site writes and cross-origin websocket handshakes are refused, even
//! with a valid session.

use super::{client, open_ws, sign_in_alice, stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_writes_are_refused() {
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    for (method, headers) in [
        ("POST", vec![("sec-fetch-site", "cross-site")]),
        ("PUT", vec![("sec-fetch-site", "same-site")]),
        ("DELETE", vec![("origin", "https://evil.example")]),
        ("POST", vec![("origin", "null")]),
        ("POST", vec![]),
    ] {
        let mut req = client()
            .request(method.parse().unwrap(), s.edge.url("/app/x"))
            .header("cookie", &cookie);
        for (k, v) in &headers {
            req = req.header(*k, *v);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            403,
            "{method} {headers:?}"
        );
    }
    assert_eq!(s.app.hits(), 0);
    let ok = client()
        .post(s.edge.url("/app/x"))
        .header("cookie", &cookie)
        .header("origin", format!("http://127.0.0.1:{}", s.edge.port))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    // The login form itself is protected the same way.
    let r = client()
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "cross-site")
        .form(&[("username", "alice"), ("password", "correct-horse-battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_handshake_from_another_origin_is_refused() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let s = stack().await;
    let cookie = sign_in_alice(&s.edge).await;
    for origin in [
        Some("http://evil.example"),
        Some("null"),
        Some("http://127.0.0.1:1"),
        None,
    ] {
        let mut req = format!("ws://127.0.0.1:{}/ws/chat", s.edge.port)
            .into_client_request()
            .unwrap();
        req.headers_mut().insert("cookie", cookie.parse().unwrap());
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 403, "{origin:?}")
            }
            other => panic!("cross-origin websocket {origin:?}: {other:?}"),
        }
    }
    assert_eq!(
        s.ws.hits(),
        0,
        "a cross-origin handshake reached the upstream"
    );
    // From the site's own page it opens.
    let _ws = open_ws(&s, &cookie).await;
}
