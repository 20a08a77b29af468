//! Per-run event tokens: when the hub starts a run it hands the webhook an
//! `eventsToken` that posts events for that run's npc and run id only, and
//! only for a while (`hub.run_token_ttl`; each event it posts renews it). A
//! flow, or someone who read one flow's configuration, can then speak for
//! one run, not for every agent as the shared `events_token` can.
//!
//! The tokens are JWTs (HS256) signed with a secret of the hub's own, made on
//! first start in an owner-only file; no other part of the edge reads it.

use super::ids::{Npc, RunId};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// The audience every run token carries, so no other HS256 token made with
/// the same secret (none is) could be taken for one.
const AUDIENCE: &str = "esprit-hub-events";

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    aud: String,
    npc: String,
    run: String,
    iat: i64,
    exp: i64,
}

/// What a valid run token lets its bearer do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The one channel it posts for.
    pub npc: String,
    /// The one run it posts for.
    pub run: String,
    /// When it expires (seconds since epoch).
    pub exp: i64,
}

/// Why a run token was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    /// Past its `exp`.
    #[error("this run's events token has expired; the run's next start hands out a new one")]
    Expired,
    /// Bad signature, wrong audience, malformed.
    #[error("not a valid events token")]
    Invalid,
}

/// Issues and checks run tokens.
pub struct RunTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

impl RunTokens {
    /// Reads the secret at `key_file`, creating it (32 random bytes, mode
    /// 0600) when absent.
    pub fn open(key_file: &Path, ttl: Duration) -> Result<Self, String> {
        if !key_file.exists() {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret)
                .map_err(|e| format!("no randomness for the run token key: {e}"))?;
            // Another edge on the same data dir may create it at the same
            // moment: whichever is first, both read that one.
            crate::private_file::create_private(key_file, &secret)
                .map_err(|e| format!("{}: cannot write: {e}", key_file.display()))?;
        }
        crate::private_file::make_private(key_file);
        let secret = std::fs::read(key_file)
            .map_err(|e| format!("{}: cannot read: {e}", key_file.display()))?;
        if secret.len() < 32 {
            return Err(format!(
                "{}: {} bytes; a run token key needs at least 32 (delete it to make a new one)",
                key_file.display(),
                secret.len()
            ));
        }
        Ok(Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
            ttl,
        })
    }

    /// A token for `npc`'s run `run`, valid from `now_ms` for the configured time.
    pub fn issue(&self, npc: &Npc, run: &RunId, now_ms: i64) -> Option<String> {
        self.issue_for(npc.as_str(), run.as_str(), now_ms)
    }

    fn issue_for(&self, npc: &str, run: &str, now_ms: i64) -> Option<String> {
        let iat = now_ms.div_euclid(1000);
        let claims = Claims {
            aud: AUDIENCE.into(),
            npc: npc.into(),
            run: run.into(),
            iat,
            exp: iat + i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2),
        };
        match jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::error!(target: "hub", error = %e, "cannot sign a run token");
                None
            }
        }
    }

    /// The grant of `token` at `now_ms`.
    pub fn check(&self, token: &str, now_ms: i64) -> Result<Grant, Refused> {
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&[AUDIENCE]);
        v.set_required_spec_claims(&["exp", "aud"]);
        // Expiry is judged below against the caller's clock, to the second.
        v.validate_exp = false;
        v.leeway = 0;
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|_| Refused::Invalid)?
            .claims;
        if claims.exp <= now_ms.div_euclid(1000) {
            return Err(Refused::Expired);
        }
        Ok(Grant {
            npc: claims.npc,
            run: claims.run,
            exp: claims.exp,
        })
    }

    /// Whether `grant` is in the second half of its life, when an event of
    /// an active run earns a fresh token.
    pub fn due(&self, grant: &Grant, now_ms: i64) -> bool {
        let left = grant.exp - now_ms.div_euclid(1000);
        left < i64::try_from(self.ttl.as_secs() / 2).unwrap_or(i64::MAX)
    }

    /// The renewed token for `grant`'s run. It is issued at the start of the
    /// current half-lifetime window, so every renewal within one window is
    /// the same token (HS256 is deterministic): a run holds at most one live
    /// renewal per window, whatever its flow does, and a per-token rate rule
    /// keeps counting one bearer.
    pub fn renewal(&self, grant: &Grant, now_ms: i64) -> Option<String> {
        let half_ms = i64::try_from(self.ttl.as_millis() / 2)
            .unwrap_or(i64::MAX)
            .max(1000);
        let window_start = now_ms - now_ms.rem_euclid(half_ms);
        self.issue_for(&grant.npc, &grant.run, window_start)
    }
}

/// Whether `token` has a JWT's shape (three base64url parts), so it is
/// checked as a run token rather than compared with the shared one.
pub fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ")
        && token.split('.').count() == 3
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const NOW: i64 = 1_800_000_000_000;

    /// A token for npc `alice`'s run `r`, issued at `NOW`.
    fn alice_run(t: &RunTokens) -> String {
        t.issue(
            &Npc::parse("alice").unwrap(),
            &RunId::parse("r").unwrap(),
            NOW,
        )
        .unwrap()
    }

    fn tokens(dir: &Path) -> RunTokens {
        RunTokens::open(&dir.join("run.key"), Duration::from_secs(3600)).unwrap()
    }

    #[test]
    fn a_token_grants_its_npc_and_run_until_it_expires() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let npc = Npc::parse("alice").unwrap();
        let run = RunId::parse("run-1").unwrap();
        let tok = t.issue(&npc, &run, NOW).unwrap();
        assert!(looks_like_jwt(&tok));
        let g = t.check(&tok, NOW + 1000).unwrap();
        assert_eq!((g.npc.as_str(), g.run.as_str()), ("alice", "run-1"));
        assert_eq!(t.check(&tok, NOW + 3_600_000), Err(Refused::Expired));
        let mode = std::fs::metadata(dir.path().join("run.key"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn tampered_and_foreign_tokens_are_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let tok = alice_run(&t);
        // Another npc in the payload, same signature.
        let mut parts: Vec<String> = tok.split('.').map(str::to_string).collect();
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let claims = String::from_utf8(b64.decode(&parts[1]).unwrap()).unwrap();
        parts[1] = b64.encode(claims.replace("alice", "bobby"));
        assert_eq!(t.check(&parts.join("."), NOW), Err(Refused::Invalid));
        // Signed by another hub's secret.
        let other = tempfile::tempdir().unwrap();
        let foreign = alice_run(&tokens(other.path()));
        assert_eq!(t.check(&foreign, NOW), Err(Refused::Invalid));
        assert_eq!(
            t.check("eyJhbGciOiJub25lIn0.e30.", NOW),
            Err(Refused::Invalid)
        );
    }

    #[test]
    fn renewal_comes_in_the_second_half_of_a_token_s_life() {
        let dir = tempfile::tempdir().unwrap();
        let t = tokens(dir.path());
        let tok = alice_run(&t);
        let g = t.check(&tok, NOW).unwrap();
        assert!(!t.due(&g, NOW + 1_000_000));
        assert!(t.due(&g, NOW + 2_000_000));
        let fresh = t.renewal(&g, NOW + 2_000_000).unwrap();
        assert!(t.check(&fresh, NOW + 3_700_000).is_ok());
        // One renewal per half-lifetime window, however often it is asked.
        assert_eq!(t.renewal(&g, NOW + 2_000_001).unwrap(), fresh);
        let renewed = t.check(&fresh, NOW + 2_000_000).unwrap();
        assert!(
            !t.due(&renewed, NOW + 2_000_000),
            "a renewal is good for at least half a life"
        );
    }

    #[test]
    fn a_short_key_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("run.key"), b"short").unwrap();
        let e = RunTokens::open(&dir.path().join("run.key"), Duration::from_secs(60))
            .err()
            .unwrap();
        assert!(e.contains("run.key") && e.contains("at least 32"), "{e}");
    }
}
