//! Identity upstreams can verify (issue 13): the `X-Esprit-Jwt-Assertion`
//! a gated route sends, checked the way an upstream would, with only the
//! JWKS the edge publishes: by `jsonwebtoken` in verification mode here and
//! by Node's `jose` (tests/peers/verify-assertion.js), as Sim would.

use crate::common::config::{ConfigBuilder, Route};
use crate::common::{Edge, client, client_with_cookie, peers, run_binary, sign_in};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const ORIGIN: &str = "https://hub.example.test";

struct Stack {
    edge: Edge,
    _app: peers::Peer,
    cookie: String,
}

/// An edge with a gated route to the echo peer `app` (audience "app"), the
/// same upstream again with `assertion = false`, an open route, and the sign-in.
async fn stack() -> Stack {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .server("public_origin", ORIGIN)
            .upstream("app", app.address())
            .route(Route::prefix("/auth/").sign_in())
            .route(
                Route::prefix("/plain/")
                    .upstream("app")
                    .session()
                    .set("assertion", false),
            )
            .route(Route::prefix("/open/").upstream("app"))
            .route(Route::prefix("/app/").upstream("app").session()),
    );
    let cookie = sign_in(&edge).await;
    Stack {
        edge,
        _app: app,
        cookie,
    }
}

/// The headers the upstream saw for `path`, sent with `extra` headers.
async fn seen(s: &Stack, path: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut r = client_with_cookie(&s.cookie).get(s.edge.url(path));
    for (k, v) in extra {
        r = r.header(*k, *v);
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let v: Value = r.json().await.unwrap();
    serde_json::from_value(v["headers"].clone()).unwrap()
}

fn assertion_of(headers: &[(String, String)]) -> Vec<String> {
    headers
        .iter()
        .filter(|(k, _)| {
            k.replace('_', "-")
                .eq_ignore_ascii_case("x-esprit-jwt-assertion")
        })
        .map(|(_, v)| v.clone())
        .collect()
}

async fn jwks(edge: &Edge) -> JwkSet {
    let r = client()
        .get(edge.url("/auth/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    r.json().await.unwrap()
}

/// What an upstream does: find the key by `kid` in the JWKS, check the
/// signature, `iss`, `aud` and `exp`.
fn verify(set: &JwkSet, token: &str, audience: &str) -> Result<Value, String> {
    let kid = jsonwebtoken::decode_header(token)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = set.find(&kid).ok_or(format!("kid {kid} not published"))?;
    let key = DecodingKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[audience]);
    v.set_issuer(&[ORIGIN]);
    v.leeway = 0;
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_route_sends_an_assertion_the_upstream_can_verify() {
    let s = stack().await;
    let headers = seen(&s, "/app/x", &[]).await;
    let got = assertion_of(&headers);
    assert_eq!(got.len(), 1, "{headers:?}");
    let set = jwks(&s.edge).await;
    let claims = verify(&set, &got[0], "app").unwrap();
    assert_eq!(claims["iss"], ORIGIN);
    assert_eq!(claims["aud"], "app");
    assert_eq!(claims["sub"], "tester");
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    assert_eq!(exp - iat, 60, "default lifetime");
    // `sid` names the session without being it.
    let sid = claims["sid"].as_str().unwrap();
    let session_id = s.cookie.split_once('=').unwrap().1;
    assert!(sid.len() >= 16 && !session_id.contains(sid) && !sid.contains(session_id));
    // The JWKS is public: no session needed (fetched above without one).
    // An assertion for this upstream is worth nothing at another.
    let e = verify(&set, &got[0], "sim").unwrap_err();
    assert!(e.contains("InvalidAudience"), "{e}");
    // Forged: the same claims and kid, signed with a key the edge never had.
    let rng = ring::rand::SystemRandom::new();
    let other = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = jsonwebtoken::decode_header(&got[0]).unwrap().kid;
    let forged = jsonwebtoken::encode(
        &header,
        &json!({"iss": ORIGIN, "aud": "app", "sub": "admin", "sid": sid, "iat": iat, "exp": exp}),
        &EncodingKey::from_ed_der(other.as_ref()),
    )
    .unwrap();
    let e = verify(&set, &forged, "app").unwrap_err();
    assert!(e.contains("InvalidSignature"), "{e}");
    // Expired: jose judges it with a clock past `exp` (a_node_upstream_…).

    // The key file is the owner's only.
    let mode = std::fs::metadata(s.edge.dir.path().join("signing-keys.json"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sent_assertion_never_reaches_an_upstream() {
    let s = stack().await;
    let forged = [
        (
            "X-Esprit-Jwt-Assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        ),
        (
            "X_Esprit_Jwt_Assertion",
            "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
        ),
    ];
    // Gated: only the edge's own.
    let got = assertion_of(&seen(&s, "/app/x", &forged).await);
    assert_eq!(got.len(), 1);
    assert!(
        !got[0].contains("eyJzdWIiOiJhZG1pbiJ9"),
        "the client's copy went through"
    );
    assert!(verify(&jwks(&s.edge).await, &got[0], "app").is_ok());
    // Turned off on the route: none at all.
    assert!(assertion_of(&seen(&s, "/plain/x", &forged).await).is_empty());
    // Open route: none (nobody to assert), and never the client's.
    let r = client().get(s.edge.url("/open/x"));
    let r = forged
        .iter()
        .fold(r, |r, (k, v)| r.header(*k, *v))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(v["headers"].clone()).unwrap();
    assert!(assertion_of(&headers).is_empty(), "{headers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_assertion_is_reused_and_a_rotation_keeps_old_ones_valid() {
    let s = stack().await;
    let first = assertion_of(&seen(&s, "/app/a", &[]).await).remove(0);
    let again = assertion_of(&seen(&s, "/app/b", &[]).await).remove(0);
    assert_eq!(
        first, again,
        "signed once per session and audience, not per request"
    );
    let old_kid = jsonwebtoken::decode_header(&first).unwrap().kid.unwrap();

    let config = s.edge.config.to_str().unwrap().to_string();
    // A scheduled rotation: the new key is published at once and signs only
    // once upstreams that cache the JWKS can know it (90 s).
    let (status, out, err) = run_binary(&["--config", &config, "key", "rotate"], &[]);
    assert!(status.success(), "{out}{err}");
    let mut published = false;
    for _ in 0..40 {
        let kids: Vec<String> = jwks(&s.edge)
            .await
            .keys
            .into_iter()
            .filter_map(|k| k.common.key_id)
            .collect();
        if kids.len() == 2 && kids.contains(&old_kid) {
            published = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(published, "the new key was not published");
    let still = assertion_of(&seen(&s, "/app/c", &[]).await).remove(0);
    assert_eq!(
        jsonwebtoken::decode_header(&still).unwrap().kid.unwrap(),
        old_kid
    );
    // An immediate rotation (a compromised key): the running edge signs with
    // the newest key within a second or so.
    let (status, out, err) = run_binary(
        &["--config", &config, "key", "rotate", "--immediately"],
        &[],
    );
    assert!(status.success(), "{out}{err}");
    let mut newer = String::new();
    for _ in 0..40 {
        newer = assertion_of(&seen(&s, "/app/d", &[]).await).remove(0);
        if jsonwebtoken::decode_header(&newer).unwrap().kid.unwrap() != old_kid {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_kid = jsonwebtoken::decode_header(&newer).unwrap().kid.unwrap();
    assert_ne!(new_kid, old_kid, "the rotation was not picked up");
    assert!(
        out.contains(&new_kid) && out.contains("signing now"),
        "{out}"
    );
    let set = jwks(&s.edge).await;
    assert_eq!(
        set.keys.len(),
        3,
        "every key with live assertions stays published"
    );
    assert!(
        verify(&set, &first, "app").is_ok(),
        "an assertion signed before the rotations"
    );
    assert!(verify(&set, &newer, "app").is_ok());
    let (status, listed, _) = run_binary(&["--config", &config, "key", "list"], &[]);
    assert!(status.success());
    assert!(
        listed.contains(&old_kid) && listed.contains(&new_kid),
        "{listed}"
    );
    assert!(listed.contains("yes (signing)"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_upstream_verifies_it_with_jose() {
    let s = stack().await;
    let token = assertion_of(&seen(&s, "/app/x", &[]).await).remove(0);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/peers/verify-assertion.js"
    );
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new("node")
            .arg(script)
            .arg(s.edge.url("/auth/jwks.json"))
            .arg(&token)
            .arg("app")
            .arg(ORIGIN)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("node in time")
    .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["good"]["ok"]["sub"], "tester", "{v}");
    assert_eq!(
        v["wrongAudience"]["err"], "ERR_JWT_CLAIM_VALIDATION_FAILED",
        "{v}"
    );
    assert_eq!(v["expired"]["err"], "ERR_JWT_EXPIRED", "{v}");
    assert_eq!(
        v["tampered"]["err"], "ERR_JWS_SIGNATURE_VERIFICATION_FAILED",
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_public_origin_the_issuer_is_the_host_the_request_came_to() {
    let app = peers::echo("app").await;
    let edge = Edge::start(
        &ConfigBuilder::new()
            .upstream("app", app.address())
            .route(Route::prefix("/auth/").sign_in())
            .route(Route::prefix("/app/").upstream("app").session()),
    );
    let cookie = sign_in(&edge).await;
    let r = client_with_cookie(&cookie)
        .get(edge.url("/app/x"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let headers: Vec<(String, String)> = serde_json::from_value(v["headers"].clone()).unwrap();
    let token = assertion_of(&headers).remove(0);
    let set = jwks(&edge).await;
    let kid = jsonwebtoken::decode_header(&token).unwrap().kid.unwrap();
    let mut check = Validation::new(Algorithm::EdDSA);
    check.set_audience(&["app"]);
    check.set_issuer(&[format!("http://127.0.0.1:{}", edge.port)]);
    let key = DecodingKey::from_jwk(set.find(&kid).unwrap()).unwrap();
    assert!(jsonwebtoken::decode::<Value>(&token, &key, &check).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertion_settings_are_checked() {
    let (ok, out) = crate::common::check(
        &ConfigBuilder::new()
            .upstream("app", "127.0.0.1:9")
            .route(Route::prefix("/").upstream("app").set("assertion", true))
            .auth("assertion_ttl", "5s"),
    );
    assert!(!ok);
    assert!(
        out.contains("routes[0].assertion: applies to auth = \"session\" routes only"),
        "{out}"
    );
    assert!(
        out.contains("auth.assertion_ttl: out of range (10s to 1h)"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_key_file_stops_the_start_with_its_name() {
    let app = peers::echo("app").await;
    let config = ConfigBuilder::new()
        .upstream("app", app.address())
        .route(Route::prefix("/auth/").sign_in())
        .route(Route::prefix("/").upstream("app").session());
    let edge = Edge::create(move |dir, port| {
        std::fs::write(dir.join("signing-keys.json"), "{\"keys\": [}").unwrap();
        config.render(dir, port)
    });
    let (status, out, err) = run_binary(
        &["--config", edge.config.to_str().unwrap()],
        &[("ESPRIT_ADMIN_LISTEN", "off")],
    );
    assert!(!status.success());
    let text = format!("{out}{err}");
    assert!(text.contains("signing-keys.json: not a key file"), "{text}");
}
