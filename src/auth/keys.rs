//! The keys that sign identity assertions: Ed25519, kept in one owner-only
//! JSON file (`auth.keys_file`, in `data_dir` by default). A rotated-in key
//! is published at once but signs only from [`PUBLISH_AHEAD_MS`] later, so
//! upstreams that cache the JWKS (for its `max-age`, or `jose`'s 30 s
//! cooldown) know it before they see it; the key it replaces signs until
//! then and stays published until the last assertion it signed has expired.
//! `esprit-edge key rotate` writes the file (`--immediately` for a key that
//! must stop signing now); a running edge re-reads it when it changes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::EncodingKey;
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Duration;

/// Clock difference an upstream may have: a retired key stays published
/// this much longer than its last assertion's lifetime.
const SKEW_MS: i64 = 60_000;

/// How long a new key is published before it signs: the JWKS `max-age`
/// (60 s) plus `jose`'s refetch cooldown (30 s).
pub const PUBLISH_AHEAD_MS: i64 = 90_000;

/// One key as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    /// The JWT header's `kid`.
    kid: String,
    /// When it was made (ms since epoch).
    created: i64,
    /// When a newer key replaced it (ms since epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retired: Option<i64>,
    /// When it starts signing (ms since epoch); absent: from `created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_from: Option<i64>,
    /// The private key, PKCS#8 DER, base64url.
    pkcs8: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<StoredKey>,
}

/// A key ready to use: its id, public half and signing form.
pub struct Key {
    /// The JWT header's `kid`.
    pub kid: String,
    /// When it was made (ms since epoch).
    pub created: i64,
    /// When a newer key replaced it (ms since epoch).
    pub retired: Option<i64>,
    /// When it starts signing (ms since epoch).
    pub active_from: i64,
    /// The raw 32-byte public key, base64url (the JWK's `x`).
    pub public: String,
    encoding: EncodingKey,
}

/// The keys of the file: the signing one and those still published.
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// Reads `path`; an absent, unreadable or malformed file is an error
    /// naming the file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let file: KeyFile = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a key file: {e}", path.display()))?;
        let keys = file
            .keys
            .iter()
            .map(|k| decode(k).map_err(|e| format!("{}: key {:?}: {e}", path.display(), k.kid)))
            .collect::<Result<Vec<_>, _>>()?;
        if !keys.iter().any(|k| k.retired.is_none()) {
            return Err(format!(
                "{}: no current key (all are retired)",
                path.display()
            ));
        }
        Ok(Self { keys })
    }

    /// Reads `path`, creating it with one new key (mode 0600) when absent.
    pub fn ensure(path: &Path, now_ms: i64) -> Result<Self, String> {
        if !path.exists() {
            let file = KeyFile {
                keys: vec![generate(now_ms)?],
            };
            // Edges sharing a data dir may start together: one key file.
            let mut text = serde_json::to_string_pretty(&file)
                .map_err(|e| format!("cannot encode keys: {e}"))?;
            text.push('\n');
            let created = crate::private_file::create_private(path, text.as_bytes())
                .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
            if created {
                tracing::info!(target: "auth", file = %path.display(), "created the assertion signing key");
            }
        }
        crate::private_file::make_private(path);
        Self::load(path)
    }

    /// The key that signs at `now_ms`: the newest one already active and
    /// not yet retired; failing that (a clock set back), the newest one not
    /// retired, which `load` guarantees exists.
    pub fn current(&self, now_ms: i64) -> &Key {
        let signing = |k: &&Key| k.active_from <= now_ms && k.retired.is_none_or(|r| r > now_ms);
        self.keys
            .iter()
            .filter(signing)
            .max_by_key(|k| k.created)
            .or_else(|| {
                self.keys
                    .iter()
                    .filter(|k| k.retired.is_none())
                    .max_by_key(|k| k.created)
            })
            .unwrap_or(&self.keys[0])
    }

    /// The signing form of the key current at `now_ms`.
    pub fn signing(&self, now_ms: i64) -> (&str, &EncodingKey) {
        let k = self.current(now_ms);
        (&k.kid, &k.encoding)
    }

    /// Every key, newest first, with whether it is still published.
    pub fn list(&self, now_ms: i64, ttl: Duration) -> Vec<(&Key, bool)> {
        let mut keys: Vec<_> = self
            .keys
            .iter()
            .map(|k| (k, published(k.retired, now_ms, ttl)))
            .collect();
        keys.sort_by_key(|(k, _)| std::cmp::Reverse(k.created));
        keys
    }

    /// The public keys upstreams verify against: the current one, and a
    /// retired one until its last assertion (`ttl` after it retired, plus
    /// clock skew) has expired.
    pub fn jwks(&self, now_ms: i64, ttl: Duration) -> JwkSet {
        let keys = self
            .list(now_ms, ttl)
            .into_iter()
            .filter(|(_, shown)| *shown)
            .map(|(k, _)| Jwk {
                common: CommonParameters {
                    public_key_use: Some(PublicKeyUse::Signature),
                    key_algorithm: Some(KeyAlgorithm::EdDSA),
                    key_id: Some(k.kid.clone()),
                    ..Default::default()
                },
                algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                    key_type: OctetKeyPairType::OctetKeyPair,
                    curve: EllipticCurve::Ed25519,
                    x: k.public.clone(),
                }),
            })
            .collect();
        JwkSet { keys }
    }
}

fn published(retired: Option<i64>, now_ms: i64, ttl: Duration) -> bool {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    retired.is_none_or(|r| r.saturating_add(ttl_ms).saturating_add(SKEW_MS) > now_ms)
}

/// Adds a new key to `path` (creating the file if absent) that signs from
/// [`PUBLISH_AHEAD_MS`] on, or at once with `immediately` (a compromised
/// key); the keys it replaces retire then. Keys whose last assertion has
/// expired are dropped. Returns the new key's id. An exclusive lock on a
/// `.lock` file beside it keeps two rotations from losing each other's key.
pub fn rotate(
    path: &Path,
    now_ms: i64,
    ttl: Duration,
    immediately: bool,
) -> Result<String, String> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| {
            format!(
                "{}: cannot open: {e}",
                std::path::Path::new(&lock_path).display()
            )
        })?;
    lock.lock().map_err(|e| {
        format!(
            "{}: cannot lock: {e}",
            std::path::Path::new(&lock_path).display()
        )
    })?;
    let mut file = if path.exists() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a key file: {e}", path.display()))?
    } else {
        KeyFile::default()
    };
    let starts = if immediately || file.keys.is_empty() {
        now_ms
    } else {
        now_ms + PUBLISH_AHEAD_MS
    };
    for k in &mut file.keys {
        if k.retired.is_none_or(|r| r > starts) {
            k.retired = Some(starts);
        }
    }
    file.keys.retain(|k| published(k.retired, now_ms, ttl));
    let mut new = generate(now_ms)?;
    new.active_from = (starts != now_ms).then_some(starts);
    let kid = new.kid.clone();
    file.keys.push(new);
    write(path, &file)?;
    Ok(kid)
}

fn generate(now_ms: i64) -> Result<StoredKey, String> {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "no randomness for a new key")?;
    let mut id = [0u8; 6];
    getrandom::fill(&mut id).map_err(|e| format!("no randomness for a key id: {e}"))?;
    let kid = format!(
        "ed25519-{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    Ok(StoredKey {
        kid,
        created: now_ms,
        retired: None,
        active_from: None,
        pkcs8: URL_SAFE_NO_PAD.encode(pkcs8.as_ref()),
    })
}

fn decode(k: &StoredKey) -> Result<Key, String> {
    let der = URL_SAFE_NO_PAD
        .decode(&k.pkcs8)
        .map_err(|e| format!("pkcs8 is not base64url: {e}"))?;
    let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
        .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
    Ok(Key {
        kid: k.kid.clone(),
        created: k.created,
        retired: k.retired,
        active_from: k.active_from.unwrap_or(k.created),
        public: URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        encoding: EncodingKey::from_ed_der(&der),
    })
}

fn write(path: &Path, file: &KeyFile) -> Result<(), String> {
    let mut text =
        serde_json::to_string_pretty(file).map_err(|e| format!("cannot encode keys: {e}"))?;
    text.push('\n');
    crate::private_file::write_private(path, text.as_bytes())
        .map_err(|e| format!("{}: cannot write: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn a_missing_file_is_created_owner_only_with_one_current_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.json");
        let ring = KeyRing::ensure(&p, 1_000).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ring.jwks(1_000, TTL).keys.len(), 1);
        // A second start keeps the key.
        let again = KeyRing::ensure(&p, 2_000).unwrap();
        assert_eq!(again.current(2_000).kid, ring.current(1_000).kid);
    }

    #[test]
    fn a_rotated_in_key_is_published_before_it_signs_and_the_old_one_after() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.json");
        let first = KeyRing::ensure(&p, 0).unwrap().current(0).kid.clone();
        let second = rotate(&p, 10_000, TTL, false).unwrap();
        let ring = KeyRing::load(&p).unwrap();
        let shown = |now| -> Vec<String> {
            ring.jwks(now, TTL)
                .keys
                .into_iter()
                .filter_map(|k| k.common.key_id)
                .collect()
        };
        let switch = 10_000 + PUBLISH_AHEAD_MS;
        // Published at once, signing only from the switch on.
        assert_eq!(shown(10_000), vec![second.clone(), first.clone()]);
        assert_eq!(ring.current(switch - 1).kid, first);
        assert_eq!(ring.current(switch).kid, second);
        // The old key stays published until its last assertion expired.
        assert_eq!(
            shown(switch + 60_000 + SKEW_MS - 1),
            vec![second.clone(), first.clone()]
        );
        assert_eq!(shown(switch + 60_000 + SKEW_MS), vec![second.clone()]);
        // The next rotation drops what is no longer published.
        let third = rotate(&p, switch + 60_000 + SKEW_MS, TTL, false).unwrap();
        let kids: Vec<String> = KeyRing::load(&p)
            .unwrap()
            .list(0, TTL)
            .into_iter()
            .map(|(k, _)| k.kid.clone())
            .collect();
        assert_eq!(kids, vec![third, second]);
    }

    #[test]
    fn an_immediate_rotation_signs_with_the_new_key_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.json");
        let first = KeyRing::ensure(&p, 0).unwrap().current(0).kid.clone();
        let pending = rotate(&p, 1_000, TTL, false).unwrap();
        let urgent = rotate(&p, 2_000, TTL, true).unwrap();
        let ring = KeyRing::load(&p).unwrap();
        assert_eq!(ring.current(2_000).kid, urgent);
        // Both earlier keys stop signing now and stay published for their assertions.
        let shown: Vec<String> = ring
            .jwks(2_000, TTL)
            .keys
            .into_iter()
            .filter_map(|k| k.common.key_id)
            .collect();
        assert_eq!(shown, vec![urgent, pending, first]);
    }

    #[test]
    fn a_broken_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys.json");
        std::fs::write(
            &p,
            "{\"keys\": [{\"kid\": \"x\", \"created\": 1, \"pkcs8\": \"AAAA\"}]}",
        )
        .unwrap();
        let e = KeyRing::load(&p).err().unwrap();
        assert!(
            e.contains("keys.json") && e.contains("\"x\"") && e.contains("PKCS#8"),
            "{e}"
        );
        std::fs::write(&p, "not json").unwrap();
        assert!(KeyRing::load(&p).err().unwrap().contains("not a key file"));
        let retired = rotate(&dir.path().join("k2.json"), 0, TTL, false).unwrap();
        let mut text = std::fs::read_to_string(dir.path().join("k2.json")).unwrap();
        text = text.replace("\"created\"", "\"retired\": 5, \"created\"");
        std::fs::write(&p, text).unwrap();
        let e = KeyRing::load(&p).err().unwrap();
        assert!(e.contains("no current key"), "{e} ({retired})");
    }
}
