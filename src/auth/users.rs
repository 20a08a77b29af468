//! The users file (`users.toml` in the data dir): names and argon2id PHC hashes,
//! managed with `esprit-edge user add|remove|list`. Written atomically with
//! mode 0600 so a half-written or world-readable file never exists.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Shortest accepted password, in bytes.
pub const MIN_PASSWORD: usize = 8;
/// Longest accepted password, in bytes (argon2 cost does not depend on it,
/// but an unbounded input is still a needless risk).
pub const MAX_PASSWORD: usize = 1024;

/// One user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// argon2id PHC string (`$argon2id$v=19$m=19456,t=2,p=1$...`).
    pub hash: String,
    /// Shown in the UI's header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Passed upstream as `X-Forwarded-Email`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The whole file: users by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Users {
    /// Users by login name.
    #[serde(default)]
    pub users: BTreeMap<String, User>,
}

/// OWASP's argon2id parameters: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    // These constants are valid parameters; `Params::new` only rejects out-of-range ones.
    let params = Params::new(19 * 1024, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A login name: 1–64 of `A-Z a-z 0-9 . _ @ -`, checked once where it
/// enters (the CLI, a sign-in, the users file).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// `name` as a login name, if it can be one.
    pub fn parse(name: &str) -> Option<UserName> {
        let ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
        ok.then(|| UserName(name.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a new password's length.
pub fn check_password(password: &str) -> Result<(), String> {
    match password.len() {
        n if n < MIN_PASSWORD => Err(format!(
            "the password is too short ({n} bytes; at least {MIN_PASSWORD})"
        )),
        n if n > MAX_PASSWORD => Err(format!(
            "the password is too long ({n} bytes; at most {MAX_PASSWORD})"
        )),
        _ => Ok(()),
    }
}

/// An argon2id PHC hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

impl Users {
    /// Reads `path`; a missing file is an empty list, a broken one an error naming it.
    pub fn load(path: &Path) -> Result<Users, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Users::default()),
            Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
        };
        let users: Users =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        for (name, u) in &users.users {
            if UserName::parse(name).is_none() {
                return Err(format!(
                    "{}: users.{name}: not a valid login name",
                    path.display()
                ));
            }
            if PasswordHash::new(&u.hash).is_err() {
                return Err(format!(
                    "{}: users.{name}.hash: not a PHC password hash",
                    path.display()
                ));
            }
        }
        Ok(users)
    }

    /// Writes `path` atomically (temp file, fsync, rename), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        let text = toml::to_string_pretty(self).map_err(|e| format!("cannot encode users: {e}"))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("{}: cannot create: {e}", dir.display()))?;
        }
        let tmp = path.with_extension("toml.tmp");
        let write = || -> std::io::Result<()> {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(b"# esprit-edge users: manage with `esprit-edge user add|remove|list`.\n")?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| format!("{}: cannot write: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a hash"));
        assert_ne!(
            h,
            hash_password("correct horse").unwrap(),
            "salts must differ"
        );
    }

    #[test]
    fn names_and_lengths() {
        assert!(UserName::parse("alice.b@example-1").is_some());
        assert!(UserName::parse("").is_none());
        assert!(UserName::parse("a b").is_none());
        assert!(UserName::parse(&"a".repeat(65)).is_none());
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn save_and_load_round_trip_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.toml");
        assert_eq!(Users::load(&p).unwrap(), Users::default());
        let mut u = Users::default();
        u.users.insert(
            "alice".into(),
            User {
                hash: hash_password("password1").unwrap(),
                display_name: Some("Alice".into()),
                email: None,
            },
        );
        u.save(&p).unwrap();
        assert_eq!(Users::load(&p).unwrap(), u);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        std::fs::write(&p, "[users.bob]\nhash = \"plaintext\"\n").unwrap();
        assert!(
            Users::load(&p)
                .unwrap_err()
                .contains("users.bob.hash: not a PHC password hash")
        );
    }
}
