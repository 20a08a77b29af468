//! Signed identity assertions (`X-Esprit-Jwt-Assertion`): what a gated
//! route tells its upstream about the user in a form the upstream can check
//! against `GET /auth/jwks.json`, as Cloudflare Access, IAP and Pomerium do.
//! `X-Forwarded-User` means something only while nothing but the edge can
//! reach the upstream; an assertion also holds on a misrouted port.
//!
//! One assertion per session and audience is signed and reused for the first
//! half of its lifetime, so signing costs one Ed25519 signature per session,
//! upstream and half-lifetime, not one per request.

use super::keys::KeyRing;
use crate::identity::Identity;
use crate::watched_file::{Reload, WatchedFile};
use http::HeaderValue;
use jsonwebtoken::{Algorithm, Header};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// The header upstreams read (and clients may never send).
pub const HEADER: &str = "x-esprit-jwt-assertion";

/// Cached assertions at most; past this, expired ones are dropped, and all
/// of them if that is not enough (they are re-signed on demand).
const CACHE_MAX: usize = 10_000;

/// The claims of an assertion.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    sid: &'a str,
    iat: i64,
    exp: i64,
}

struct Cached {
    audience: String,
    user: String,
    email: Option<String>,
    /// Ready to send: cloning it is a reference count, not a copy.
    token: HeaderValue,
    kid: String,
    issuer: String,
    /// Seconds since epoch.
    exp: i64,
}

/// Signs assertions with the current key of the key file, which it re-reads
/// (at most once a second) when `esprit-edge key rotate` changed it.
pub struct Assertions {
    keys: WatchedFile<KeyRing>,
    ttl: Duration,
    /// By session, then audience (a session reaches a handful of upstreams):
    /// a lookup borrows the request's strings and allocates nothing.
    cache: Mutex<HashMap<String, Vec<Cached>>>,
}

fn report_keys(path: &Path, what: Reload<'_, KeyRing>) {
    match what {
        Reload::Loaded(ring) => {
            tracing::info!(target: "auth", file = %path.display(), kid = %ring.current(crate::clock::now_ms()).kid, "assertion keys reloaded")
        }
        Reload::Rejected(why) => {
            tracing::error!(target: "auth", error = %why, "assertion key file rejected; keeping the last good keys")
        }
        Reload::Vanished => {
            tracing::error!(target: "auth", file = %path.display(), "assertion key file is gone; keeping the last good keys")
        }
    }
}

impl Assertions {
    /// Opens `keys_file`, creating a first key when it is absent.
    pub fn open(keys_file: &Path, ttl: Duration, now_ms: i64) -> Result<Self, String> {
        let ring = KeyRing::ensure(keys_file, now_ms)?;
        Ok(Self {
            keys: WatchedFile::new(keys_file, ring, KeyRing::load, report_keys),
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The assertion for `id` at upstream `audience`, issued by `issuer`
    /// (the public origin): a cached one with at least half its lifetime
    /// left, or a new one.
    pub fn assert(
        &self,
        id: &Identity,
        audience: &str,
        issuer: &str,
        now_ms: i64,
    ) -> Option<HeaderValue> {
        let ring = self.keys.refresh_at_most(Duration::from_secs(1));
        let (kid, key) = ring.signing(now_ms);
        let now = now_ms.div_euclid(1000);
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1);
        if let Ok(cache) = self.cache.lock()
            && let Some(c) = cache
                .get(&id.sid)
                .and_then(|v| v.iter().find(|c| c.audience == audience))
            && c.kid == kid
            && c.issuer == issuer
            && c.user == id.user
            && c.email == id.email
            && c.exp <= id.expires.div_euclid(1000)
            && c.exp - now > ttl / 2
        {
            return Some(c.token.clone());
        }
        // Never past the session's own end.
        let exp = (now + ttl).min(id.expires.div_euclid(1000)).max(now + 1);
        let claims = Claims {
            iss: issuer,
            aud: audience,
            sub: &id.user,
            email: id.email.as_deref(),
            sid: &id.sid,
            iat: now,
            exp,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_string());
        let token = match jsonwebtoken::encode(&header, &claims, key)
            .map_err(|e| e.to_string())
            .and_then(|t| HeaderValue::try_from(t).map_err(|e| e.to_string()))
        {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(target: "auth", error = %e, kid, "cannot sign an identity assertion");
                return None;
            }
        };
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.retain(|_, v| {
                    v.retain(|c| c.exp > now);
                    !v.is_empty()
                });
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
            }
            let fresh = Cached {
                audience: audience.to_string(),
                user: id.user.clone(),
                email: id.email.clone(),
                token: token.clone(),
                kid: kid.to_string(),
                issuer: issuer.to_string(),
                exp,
            };
            let entries = cache.entry(id.sid.clone()).or_default();
            entries.retain(|c| c.audience != audience);
            entries.push(fresh);
        }
        Some(token)
    }

    /// The published keys as a JWKS document.
    pub fn jwks(&self, now_ms: i64) -> serde_json::Value {
        let ring = self.keys.refresh_at_most(Duration::from_secs(1));
        serde_json::to_value(ring.jwks(now_ms, self.ttl))
            .unwrap_or_else(|_| serde_json::json!({ "keys": [] }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};

    fn id(sid: &str) -> Identity {
        Identity {
            user: "ada".into(),
            name: None,
            email: Some("ada@example.com".into()),
            expires: 10_000_000_000_000,
            sid: sid.into(),
        }
    }

    fn verify(
        jwks: &serde_json::Value,
        token: &str,
        aud: &str,
    ) -> jsonwebtoken::errors::Result<serde_json::Value> {
        let set: JwkSet = serde_json::from_value(jwks.clone()).unwrap();
        let kid = jsonwebtoken::decode_header(token)?.kid.unwrap();
        let jwk = set.find(&kid).expect("kid published");
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&[aud]);
        v.set_issuer(&["https://hub.example.com"]);
        Ok(
            jsonwebtoken::decode::<serde_json::Value>(token, &DecodingKey::from_jwk(jwk)?, &v)?
                .claims,
        )
    }

    #[test]
    fn assertions_verify_against_the_jwks_for_their_audience_only() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::now_ms();
        let a = Assertions::open(&dir.path().join("k.json"), Duration::from_secs(60), now).unwrap();
        let t = a
            .assert(&id("s1"), "sim", "https://hub.example.com", now)
            .unwrap();
        let t = t.to_str().unwrap();
        let claims = verify(&a.jwks(now), t, "sim").unwrap();
        assert_eq!(claims["sub"], "ada");
        assert_eq!(claims["email"], "ada@example.com");
        assert_eq!(claims["sid"], "s1");
        assert_eq!(
            claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
            60
        );
        assert!(verify(&a.jwks(now), t, "skyoffice").is_err());
    }

    #[test]
    fn one_signature_serves_a_session_and_audience_for_half_its_life() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000;
        let a = Assertions::open(&dir.path().join("k.json"), Duration::from_secs(60), now).unwrap();
        let iss = "https://hub.example.com";
        let first = a.assert(&id("s1"), "sim", iss, now).unwrap();
        assert_eq!(
            a.assert(&id("s1"), "sim", iss, now + 29_000).unwrap(),
            first
        );
        assert_ne!(
            a.assert(&id("s1"), "sim", iss, now + 31_000).unwrap(),
            first
        );
        assert_ne!(a.assert(&id("s2"), "sim", iss, now).unwrap(), first);
        assert_ne!(a.assert(&id("s1"), "skyoffice", iss, now).unwrap(), first);
    }

    #[test]
    fn an_assertion_never_outlives_its_session() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000_000;
        let a = Assertions::open(&dir.path().join("k.json"), Duration::from_secs(60), now).unwrap();
        let mut who = id("s1");
        who.expires = now + 10_000;
        let t = a
            .assert(&who, "sim", "https://hub.example.com", now)
            .unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                t.to_str().unwrap().split('.').nth(1).unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["exp"].as_i64().unwrap(), (now + 10_000) / 1000);
    }
}
