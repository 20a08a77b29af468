//! `[storage]`: the backend, and for Redis a URL the client can use, a
//! timeout and grace that make sense, a key prefix that cannot collide.

use super::super::defaults as d;
use super::super::env::Overrides;
use super::super::error::Problems;
use super::super::file::StorageSection;
use super::super::model::{RedisStorage, Storage, redact_url};
use std::time::Duration;

pub(super) fn storage(s: StorageSection, env: &Overrides, p: &mut Problems) -> Storage {
    let url_key = env.label("storage.url");
    // A URL alone (ESPRIT_REDIS_URL in compose) means Redis.
    let backend = s.backend.clone().unwrap_or_else(|| {
        if s.url.is_some() {
            "redis"
        } else {
            d::STORAGE_BACKEND
        }
        .into()
    });
    match backend.as_str() {
        "sqlite" => {
            if s.url.is_some() {
                p.add(
                    url_key,
                    "is set but storage.backend is \"sqlite\": set backend = \"redis\" or remove the url",
                );
            }
            for (key, set) in [
                ("storage.timeout", s.timeout.is_some()),
                ("storage.offline_grace", s.offline_grace.is_some()),
                ("storage.prefix", s.prefix.is_some()),
            ] {
                if set {
                    p.add(key, "applies only to backend = \"redis\"");
                }
            }
            Storage::Sqlite
        }
        "redis" => {
            let url = s.url.unwrap_or_default();
            if url.is_empty() {
                p.add(
                    url_key,
                    "is required with backend = \"redis\" (like redis://redis:6379, or set ESPRIT_REDIS_URL)",
                );
            } else if let Err(why) = redis_url(&url) {
                p.add(url_key, why);
            }
            let timeout = s.timeout.unwrap_or(d::STORAGE_TIMEOUT);
            if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&timeout) {
                p.add(
                    "storage.timeout",
                    format!("{timeout:?} is outside 10ms..10s"),
                );
            }
            let offline_grace = s.offline_grace.unwrap_or(d::OFFLINE_GRACE);
            if offline_grace > Duration::from_secs(3600) {
                p.add(
                    "storage.offline_grace",
                    format!(
                        "{offline_grace:?} is more than 1h: revocations on other edges go unseen that long"
                    ),
                );
            }
            let prefix = s.prefix.unwrap_or_else(|| d::STORAGE_PREFIX.into());
            if prefix.is_empty()
                || prefix.len() > 64
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                p.add(
                    "storage.prefix",
                    format!("{prefix:?} must be 1-64 of a-z A-Z 0-9 . _ -"),
                );
            }
            Storage::Redis(RedisStorage {
                url,
                timeout,
                offline_grace,
                prefix,
            })
        }
        other => {
            p.add(
                "storage.backend",
                format!("{other:?} is not \"sqlite\" or \"redis\""),
            );
            Storage::Sqlite
        }
    }
}

/// Whether the Redis client can use `url`; the message never shows its password.
fn redis_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    if url.starts_with("rediss://") {
        return Err(format!(
            "{shown:?}: TLS to Redis (rediss://) is not built in; reach Redis over a private network, or a TLS tunnel on loopback"
        ));
    }
    if !(url.starts_with("redis://")
        || url.starts_with("redis+unix://")
        || url.starts_with("unix://"))
    {
        return Err(format!(
            "{shown:?} is not a redis:// URL (like redis://redis:6379 or redis://:password@redis:6379/0)"
        ));
    }
    redis::Client::open(url).map(|_| ()).map_err(|e| {
        format!(
            "{shown:?} is not a usable Redis URL: {}",
            e.to_string().replace(url, &shown)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(s: StorageSection) -> (Storage, Vec<String>) {
        let file = std::path::Path::new("t.toml");
        let mut p = Problems::new(file);
        let out = storage(s, &Overrides::default(), &mut p);
        let messages = match p.finish(()) {
            Ok(()) => vec![],
            Err(e) => {
                e.0.iter()
                    .map(|e| format!("{}: {}", e.key, e.problem))
                    .collect()
            }
        };
        (out, messages)
    }

    #[test]
    fn default_is_sqlite_and_a_url_alone_means_redis() {
        assert_eq!(run(StorageSection::default()), (Storage::Sqlite, vec![]));
        let (s, problems) = run(StorageSection {
            url: Some("redis://:pw@redis:6379/2".into()),
            ..Default::default()
        });
        assert!(problems.is_empty(), "{problems:?}");
        let Storage::Redis(r) = s else {
            panic!("not redis")
        };
        assert_eq!(r.prefix, "esprit");
        assert_eq!(r.timeout, d::STORAGE_TIMEOUT);
        assert!(!format!("{r:?}").contains("pw"), "password in Debug");
    }

    #[test]
    fn bad_settings_are_named() {
        let (_, problems) = run(StorageSection {
            backend: Some("redis".into()),
            ..Default::default()
        });
        assert!(problems[0].contains("storage.url") && problems[0].contains("required"));
        let (_, problems) = run(StorageSection {
            backend: Some("sqlite".into()),
            url: Some("redis://x".into()),
            prefix: Some("p".into()),
            ..Default::default()
        });
        assert_eq!(problems.len(), 2, "{problems:?}");
        let (_, problems) = run(StorageSection {
            url: Some("rediss://:secret@x:6380".into()),
            timeout: Some(Duration::from_secs(60)),
            prefix: Some("a b".into()),
            ..Default::default()
        });
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems.iter().all(|m| !m.contains("secret")),
            "{problems:?}"
        );
        let (_, problems) = run(StorageSection {
            url: Some("http://x".into()),
            ..Default::default()
        });
        assert!(problems[0].contains("not a redis:// URL"), "{problems:?}");
        let (_, problems) = run(StorageSection {
            backend: Some("etcd".into()),
            ..Default::default()
        });
        assert!(problems[0].contains("storage.backend"), "{problems:?}");
    }
}
