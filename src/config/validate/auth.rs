//! `[auth]`: the users file, the session store and its timeouts.

use super::super::defaults as d;
use super::super::error::Problems;
use super::super::file::AuthSection;
use super::super::model::Auth;
use std::path::Path;
use std::time::Duration;

pub(super) fn auth(a: AuthSection, data_dir: &Path, p: &mut Problems) -> Auth {
    let auth = Auth {
        users_file: a.users_file.unwrap_or_else(|| data_dir.join("users.toml")),
        sessions: a
            .sessions
            .unwrap_or_else(|| data_dir.join("sessions.sqlite3")),
        idle_timeout: a.idle_timeout.unwrap_or(d::IDLE_TIMEOUT),
        absolute_timeout: a.absolute_timeout.unwrap_or(d::ABSOLUTE_TIMEOUT),
        login_concurrency: a.login_concurrency.unwrap_or(d::LOGIN_CONCURRENCY),
        login_queue: a.login_queue.unwrap_or(d::LOGIN_QUEUE),
        keys_file: a
            .keys_file
            .unwrap_or_else(|| data_dir.join("signing-keys.json")),
        assertion_ttl: a.assertion_ttl.unwrap_or(d::ASSERTION_TTL),
    };
    if !(Duration::from_secs(10)..=Duration::from_secs(3600)).contains(&auth.assertion_ttl) {
        p.add("auth.assertion_ttl", "out of range (10s to 1h)");
    }
    if auth.idle_timeout < Duration::from_secs(1) {
        p.add("auth.idle_timeout", "must be at least 1s");
    }
    if auth.absolute_timeout < auth.idle_timeout {
        p.add(
            "auth.absolute_timeout",
            "must not be shorter than auth.idle_timeout",
        );
    }
    if !(1..=64).contains(&auth.login_concurrency) {
        p.add("auth.login_concurrency", "out of range (1 to 64)");
    }
    if auth.login_queue > 10_000 {
        p.add("auth.login_queue", "out of range (0 to 10000)");
    }
    auth
}
