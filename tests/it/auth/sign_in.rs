//! Signing in: the login page, cookie attributes, `/auth/me`, the user the
//! upstream hears of, the same answer for an unknown user and a wrong
//! password, a fresh session id at every login, logout, and return paths that
//! cannot leave the site.

use super::{client, get_as, login, logout, session_cookie, sign_in_alice, stack};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_then_reach_the_app_as_yourself() {
    let s = stack().await;
    // A browser navigation is sent to the login with its path.
    let r = client()
        .get(s.edge.url("/app/x?y=1"))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/auth/login?rd=%2Fapp%2Fx%3Fy%3D1");
    assert_eq!(s.app.hits(), 0);

    let page = client()
        .get(s.edge.url("/auth/login?rd=%2Fapp%2Fx"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("<form method=\"post\""));
    assert!(
        !html.contains("<script"),
        "the page must work without script"
    );

    let r = login(
        &s.edge,
        "alice",
        "correct-horse-battery",
        Some("%2Fapp%2Fx%3Fy%3D1"),
    )
    .await;
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/app/x?y=1");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["esprit_session=", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP cookie marked Secure: {set}"
    );
    let cookie = session_cookie(&r);

    let echo: Value = client()
        .get(s.edge.url("/app/x"))
        .header("cookie", format!("{cookie}; better-auth.session_token=sim"))
        .header("x-forwarded-user", "admin")
        .header("X_Forwarded_User", "admin")
        .header("remote-user", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(echo["headers"].clone()).unwrap();
    let get = |n: &str| {
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-forwarded-user"), ["alice"]);
    assert_eq!(get("x-forwarded-email"), ["alice@example.com"]);
    assert!(get("remote-user").is_empty() && get("x_forwarded_user").is_empty());
    assert_eq!(
        get("cookie"),
        ["better-auth.session_token=sim"],
        "the edge cookie reached the upstream"
    );

    let me: Value = get_as(&s.edge, "/auth/me", &cookie)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "alice");
    assert_eq!(me["name"], "Alice Liddell");
    assert_eq!(me["email"], "alice@example.com");
    assert!(me["expires"].as_i64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_unknown_user_look_the_same() {
    let s = stack().await;
    let a = login(&s.edge, "alice", "wrong-password-123", None).await;
    let b = login(&s.edge, "mallory", "wrong-password-123", None).await;
    assert_eq!(a.status(), 401);
    assert_eq!(b.status(), 401);
    assert!(a.headers().get("set-cookie").is_none());
    let (ta, tb) = (a.text().await.unwrap(), b.text().await.unwrap());
    assert!(ta.contains("Wrong user name or password."));
    assert_eq!(
        ta.replace("alice", "USER"),
        tb.replace("mallory", "USER"),
        "the answers differ"
    );
    let j = client()
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "alice", "password": "nope-nope-nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(j.status(), 401);
    assert_eq!(
        j.json::<Value>().await.unwrap()["error"],
        "Wrong user name or password."
    );
    let ok = client()
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"username": "alice", "password": "correct-horse-battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 303);
    // The admin listener counts them by outcome, not by who.
    let metrics = s.edge.metrics().await;
    assert!(
        metrics.contains("esprit_sign_ins_total{outcome=\"wrong_credentials\"} 3\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("esprit_sign_ins_total{outcome=\"signed_in\"} 1\n"),
        "{metrics}"
    );
    assert!(!metrics.contains("alice") && !metrics.contains("mallory"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_login_gets_a_new_id_and_logout_ends_it() {
    let s = stack().await;
    let c1 = sign_in_alice(&s.edge).await;
    let c2 = sign_in_alice(&s.edge).await;
    assert_ne!(c1, c2);
    let r = logout(&s.edge, &c1).await;
    assert_eq!(r.status(), 303);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let replay = client()
        .get(s.edge.url("/app/x"))
        .header("cookie", &c1)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "a logged-out cookie still worked");
    let other = get_as(&s.edge, "/app/x", &c2).await;
    assert_eq!(other.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn return_paths_cannot_leave_the_site() {
    let s = stack().await;
    for rd in [
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
        "https%3A%2F%2Fevil.example",
        "%2F%2509%2Fevil",
        "%2Fx%0D%0ASet-Cookie%3A%20a%3Db",
    ] {
        let r = login(&s.edge, "alice", "correct-horse-battery", Some(rd)).await;
        assert_eq!(r.status(), 303, "{rd}");
        assert_eq!(r.headers()["location"], "/", "{rd}");
    }
}
