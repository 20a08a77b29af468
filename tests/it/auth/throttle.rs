//! Sign-in throttling: per account and per IP, guesses in parallel counted as
//! in turn, known devices getting in while the account is throttled, and a
//! flood of sign-ins not holding up the proxy, and a bounded line for the
//! password checks that a known device jumps.

use super::{client, get_as, login, sign_in_alice, stack, stack_with};
use crate::common::config::ConfigBuilder;
use crate::common::{self, Edge};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_are_throttled_with_retry_after() {
    let s = stack().await;
    // Per account: 5 free failures, then a 1 s wait (doubling with each
    // further failure). The right password sent straight after the fifth
    // failure lands inside that wait: one local round trip, not a second.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(
            login(&s.edge, "alice", "not-the-password", None)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401; 5]);
    let r = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(r.status(), 429, "the account is not throttled");
    // A person at the form gets the page again, saying why.
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&wait), "{wait}");
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins; try again later.")
    );
    // Another account from the same IP is not blocked yet (IP allows 10).
    common::add_user(&s.edge, "bob", "bobs-password-123", &[]);
    assert_eq!(
        login(&s.edge, "bob", "bobs-password-123", None)
            .await
            .status(),
        303
    );
    // Per IP: spraying many accounts runs into the IP limit, even with a
    // valid sign-in of one's own every few guesses (a success only clears
    // that account's count, not the IP's).
    let mut last = 0;
    for i in 0..12 {
        if i % 3 == 2 {
            let ok = login(&s.edge, "bob", "bobs-password-123", None).await;
            if ok.status() == 429 {
                last = 429;
                break;
            }
            assert_eq!(ok.status(), 303);
        }
        last = login(&s.edge, &format!("nobody{i}"), "whatever-password", None)
            .await
            .status()
            .as_u16();
        if last == 429 {
            break;
        }
    }
    assert_eq!(last, 429, "spraying accounts from one IP is not throttled");
    s.edge
        .wait_log(|v| v["target"] == "auth" && v["message"] == "sign-in throttled");
}

/// The value of the `Set-Cookie` for cookie `name` in `r`, whole (attributes too).
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_string)
}

/// Signs in as a browser that holds the device cookie `device`.
async fn login_on_device(
    edge: &Edge,
    user: &str,
    password: &str,
    device: &str,
) -> reqwest::Response {
    client()
        .post(edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .header("cookie", device)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// A client whose connections come from `127.0.0.<n>`: another client IP.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(60))
        .local_address(std::net::IpAddr::from([127, 0, 0, n]))
        .build()
        .unwrap()
}

/// A failed sign-in as `user` from `127.0.0.<n>`; returns the status.
async fn guess_from(edge: &Edge, n: u8, user: &str) -> u16 {
    client_from(n)
        .post(edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", user), ("password", "guess-guess-from")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// `name=value` of a whole `Set-Cookie` value.
fn pair(set: &str) -> String {
    set.split(';').next().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_browser_signs_in_while_someone_else_keeps_failing() {
    use std::time::Duration;
    let s = stack().await;
    let first = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(first.status(), 303);
    let device = set_cookie(&first, "esprit_device").expect("a device cookie");
    for attr in ["Path=/auth/", "HttpOnly", "SameSite=Strict"] {
        assert!(device.contains(attr), "{attr} missing in {device}");
    }
    assert!(!device.contains("Secure"), "plain HTTP: {device}");
    let device = pair(&device);

    // Someone else fails on alice's account (and, from another IP, on bob's):
    // 5 free failures, then they wait out each backoff (1 s, 2 s, 4 s) so
    // both accounts end up with an 8 s wait.
    common::add_user(&s.edge, "bob", "bobs-password-123", &[]);
    for _ in 0..5 {
        assert_eq!(
            login(&s.edge, "alice", "guess-guess-1", None)
                .await
                .status(),
            401
        );
        assert_eq!(guess_from(&s.edge, 2, "bob").await, 401);
    }
    for wait in [1100, 2100, 4100] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        assert_eq!(
            login(&s.edge, "alice", "guess-guess-2", None)
                .await
                .status(),
            401
        );
        assert_eq!(guess_from(&s.edge, 2, "bob").await, 401);
    }
    // Even the right password from a new browser must wait now...
    let fresh = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(fresh.status(), 429, "the account is not throttled");
    // ...but the browser alice signed in with before gets in.
    let known = login_on_device(&s.edge, "alice", "correct-horse-battery", &device).await;
    assert_eq!(known.status(), 303, "a known device was kept out");
    let renewed = pair(&set_cookie(&known, "esprit_device").expect("a renewed device cookie"));
    assert_ne!(renewed, device, "the device cookie is renewed at sign-in");
    // The old cookie was replaced: it no longer lets anyone past the backoff.
    let old = login_on_device(&s.edge, "alice", "correct-horse-battery", &device).await;
    assert_eq!(old.status(), 429, "a replaced device cookie still counted");
    // A device cookie is worth nothing for another account.
    let other = login_on_device(&s.edge, "bob", "bobs-password-123", &renewed).await;
    assert_eq!(other.status(), 429, "alice's device opened bob's account");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_sent_in_parallel_get_no_more_tries_than_guesses_sent_in_turn() {
    let s = stack().await;
    let count = |statuses: &[u16], want: u16| statuses.iter().filter(|&&c| c == want).count();
    // Twenty at once at one account: 5 are checked, 15 throttled.
    let burst = futures_util::future::join_all(
        (0..20).map(|_| login(&s.edge, "alice", "guess-guess-1", None)),
    )
    .await;
    let statuses: Vec<u16> = burst.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
    // Twenty at once at twenty accounts from the same IP: it has 10 failures
    // in all, 5 of them spent above.
    let names: Vec<String> = (0..20).map(|i| format!("nobody{i}")).collect();
    let burst = futures_util::future::join_all(
        names
            .iter()
            .map(|n| login(&s.edge, n, "guess-guess-1", None)),
    )
    .await;
    let statuses: Vec<u16> = burst.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_does_not_hold_up_the_proxy() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    // One password check at a time: 80 sign-ins (8 client IPs, 10 names each,
    // so no throttle cuts them short) queue for seconds (the line is long
    // enough for all of them here).
    let s = stack_with(
        ConfigBuilder::new()
            .auth("login_concurrency", 1)
            .auth("login_queue", 100),
    )
    .await;
    let cookie = sign_in_alice(&s.edge).await;
    let done = Arc::new(AtomicUsize::new(0));
    let url = s.edge.url("/auth/login");
    let flood: Vec<_> = (0..80u8)
        .map(|i| {
            let (done, url) = (done.clone(), url.clone());
            tokio::spawn(async move {
                let r = client_from(10 + i % 8)
                    .post(url)
                    .header("sec-fetch-site", "same-origin")
                    .form(&[
                        ("username", format!("flood{i}").as_str()),
                        ("password", "guess-guess-flood"),
                    ])
                    .send()
                    .await
                    .unwrap();
                done.fetch_add(1, Ordering::SeqCst);
                r.status().as_u16()
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Proxied requests and health checks are answered while the sign-ins wait.
    for _ in 0..5 {
        let r = get_as(&s.edge, "/app/x", &cookie).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            client()
                .get(s.edge.url("/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let finished = done.load(Ordering::SeqCst);
    assert!(
        finished < 80,
        "the proxy answered only after every sign-in ({finished} of 80 done)"
    );
    for t in flood {
        assert_eq!(t.await.unwrap(), 401, "a queued sign-in was not checked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sign_in_line_answers_503_at_once_and_a_known_device_goes_first() {
    // One check at a time, two waiting: a flood of 60 sign-ins from 6 client
    // IPs (distinct names, so no throttle cuts them short) overflows the line.
    let s = stack_with(
        ConfigBuilder::new()
            .auth("login_concurrency", 1)
            .auth("login_queue", 2),
    )
    .await;
    let first = login(&s.edge, "alice", "correct-horse-battery", None).await;
    assert_eq!(first.status(), 303);
    let device = pair(&set_cookie(&first, "esprit_device").expect("a device cookie"));
    let url = s.edge.url("/auth/login");
    let flood: Vec<_> = (0..60u8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let r = client_from(20 + i % 6)
                    .post(url)
                    .header("sec-fetch-site", "same-origin")
                    .header("accept", "application/json")
                    .form(&[
                        ("username", format!("flood{i}").as_str()),
                        ("password", "guess-guess-flood"),
                    ])
                    .send()
                    .await
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                (r.status().as_u16(), retry)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    // The anonymous line is full; the known device has its own, served first.
    let known = login_on_device(&s.edge, "alice", "correct-horse-battery", &device).await;
    assert_eq!(
        known.status(),
        303,
        "a known device was refused by the flood"
    );
    let mut busy = 0;
    for t in flood {
        match t.await.unwrap() {
            (503, retry) => {
                assert_eq!(retry.as_deref(), Some("1"));
                busy += 1;
            }
            (401, _) => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(busy > 0, "no sign-in was refused: the line is not bounded");
    s.edge.wait_log(|v| {
        v["target"] == "auth" && v["message"] == "sign-in refused: password checks are saturated"
    });
    // A refused attempt is not the client's failure: the flood's IPs were not
    // throttled for it, so a right password from one of them still works.
    let r = client_from(20)
        .post(s.edge.url("/auth/login"))
        .header("sec-fetch-site", "same-origin")
        .form(&[("username", "alice"), ("password", "correct-horse-battery")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}
