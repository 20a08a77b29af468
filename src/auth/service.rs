//! The sign-in service: what the gate, the login and upkeep share (users,
//! sessions, known devices, throttles), opened once at start-up. Each concern
//! lives in its own module: `identify` (who a request is), `login` (the
//! `/auth/` handler), `gate` (the session gate of `auth = "session"`
//! routes), `cookies`, `upkeep`.

use super::devices::Devices;
use super::redis_sessions::{RedisSessions, RevocationListener};
use super::sessions::Sessions;
use super::users::{self, Users};
use crate::config;
use crate::limit::throttle::Throttle;
use crate::limit::work_queue::WorkQueue;
use crate::redis_link::RedisLink;
use crate::watched_file::{Reload, WatchedFile};
use pingora::http::RequestHeader;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Users, sessions and the login.
pub struct AuthService {
    pub(super) cfg: config::Auth,
    pub(super) users: WatchedFile<Users>,
    pub(super) sessions: Arc<Sessions>,
    pub(super) devices: Arc<Devices>,
    /// Password checks at once (each argon2 check takes 19 MiB), with a
    /// bounded line; known devices first.
    pub(super) checks: Arc<WorkQueue>,
    /// What unknown users are checked against: same work, same answer.
    pub(super) dummy_hash: String,
    pub(super) public_origin: Option<String>,
    pub(super) per_ip: Throttle,
    pub(super) per_account: Throttle,
    /// Signs the identity assertions gated routes send upstream.
    pub(super) assertions: super::assertion::Assertions,
}

/// Why the sign-in could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The session or device store.
    #[error(transparent)]
    Store(#[from] super::sessions::StoreError),
    /// The users file.
    #[error("{0}")]
    Users(String),
    /// No randomness for the dummy hash.
    #[error("no randomness: {0}")]
    Random(String),
    /// The assertion key file.
    #[error("{0}")]
    Keys(String),
}

/// Logs what a look at the users file found.
fn report_users(path: &Path, what: Reload<'_, Users>) {
    match what {
        Reload::Loaded(_) => {}
        Reload::Rejected(why) => {
            tracing::error!(target: "auth", error = %why, "users file rejected; keeping the last good list")
        }
        // An editor saving by delete-and-write, or a volume mounted late:
        // logging everybody out for it would be worse.
        Reload::Vanished => {
            tracing::error!(target: "auth", file = %path.display(), "users file is gone; keeping the last good list")
        }
    }
}

/// The session and device stores `config` names: the SQLite file under
/// `auth.sessions`, or the shared Redis when `link` is given. The CLI's
/// `session` and `user` commands use the same stores as the server.
pub fn open_stores(
    config: &config::Config,
    link: Option<&Arc<RedisLink>>,
) -> Result<(Sessions, Devices), super::store_error::StoreError> {
    let cfg = &config.auth;
    Ok(match link {
        None => (
            Sessions::open(&cfg.sessions, cfg.idle_timeout, cfg.absolute_timeout)?,
            Devices::open(&cfg.sessions, super::cookies::DEVICE_TTL)?,
        ),
        Some(link) => (
            Sessions::with_store(
                Box::new(RedisSessions::new(link.clone())),
                cfg.idle_timeout,
                cfg.absolute_timeout,
                link.settings().offline_grace,
            )?,
            Devices::shared(link.clone(), super::cookies::DEVICE_TTL),
        ),
    })
}

/// How to add the first user, for the log and the sign-in page.
pub const FIRST_USER_HINT: &str = "esprit-edge user add NAME --password-stdin";

impl AuthService {
    /// A reloaded config's `[auth]`: the idle and absolute timeouts apply
    /// from each session's next use; returns the settings that need a
    /// restart (files, the login queue), which keep their running values.
    pub fn apply(&self, new: &config::Auth) -> Vec<&'static str> {
        let old = &self.cfg;
        self.sessions
            .set_timeouts(new.idle_timeout, new.absolute_timeout);
        let mut fixed = Vec::new();
        if new.users_file != old.users_file {
            fixed.push("auth.users_file");
        }
        if new.sessions != old.sessions {
            fixed.push("auth.sessions");
        }
        if (new.login_concurrency, new.login_queue) != (old.login_concurrency, old.login_queue) {
            fixed.push("auth.login_concurrency / auth.login_queue");
        }
        if (&new.keys_file, new.assertion_ttl) != (&old.keys_file, old.assertion_ttl) {
            // The keys themselves change with `esprit-edge key rotate`, no restart.
            fixed.push("auth.keys_file / auth.assertion_ttl");
        }
        fixed
    }

    /// For `/readyz`: whether the session store answers.
    pub fn store_ready(&self) -> Result<(), String> {
        self.sessions.ping().map_err(|e| e.to_string())
    }

    /// Opens the session store (the SQLite file, or the shared Redis when
    /// `link` is given, listening for revocations by other edges) and reads
    /// the users file.
    pub fn open(
        config: &config::Config,
        link: Option<&Arc<RedisLink>>,
    ) -> Result<Arc<Self>, OpenError> {
        let cfg = config.auth.clone();
        let (sessions, devices) = open_stores(config, link)?;
        if let Some(link) = link {
            crate::redis_link::subscriber::start(
                link.clone(),
                "revocations",
                vec![RedisSessions::channel(link)],
                Arc::new(RevocationListener(sessions.revocations())),
            )
            .map_err(|e| OpenError::Users(format!("cannot start the revocation listener: {e}")))?;
        }
        let loaded = Users::load(&cfg.users_file).map_err(OpenError::Users)?;
        if loaded.users.is_empty() {
            // The command as this very binary and config would run it.
            let exe = std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "esprit-edge".into());
            tracing::warn!(
                target: "auth",
                file = %cfg.users_file.display(),
                hint = %format!(
                    "{exe} --config {} {}",
                    config.source.display(),
                    FIRST_USER_HINT.trim_start_matches("esprit-edge ")
                ),
                "no users yet: nobody can sign in until one is added (no restart needed)"
            );
        }
        let mut noise = [0u8; 24];
        getrandom::fill(&mut noise).map_err(|e| OpenError::Random(e.to_string()))?;
        let dummy_hash = users::hash_password(&format!("{noise:?}")).map_err(OpenError::Users)?;
        let assertions = super::assertion::Assertions::open(
            &cfg.keys_file,
            cfg.assertion_ttl,
            crate::clock::now_ms(),
        )
        .map_err(OpenError::Keys)?;
        Ok(Arc::new(Self {
            assertions,
            checks: WorkQueue::new(cfg.login_concurrency, cfg.login_queue),
            users: WatchedFile::new(&cfg.users_file, loaded, Users::load, report_users),
            cfg,
            sessions: Arc::new(sessions),
            devices: Arc::new(devices),
            dummy_hash,
            public_origin: config.server.public_origin.clone(),
            // A client IP gets 10 free failures, then waits grow to 15 min.
            per_ip: Throttle::new(10, Duration::from_secs(1), Duration::from_secs(900)),
            // An account: 5 free, then at most 30 s between guesses, so failing
            // on purpose cannot lock its owner out.
            per_account: Throttle::new(5, Duration::from_secs(1), Duration::from_secs(30)),
        }))
    }

    /// The signed identity assertion for `id` at upstream `audience`,
    /// issued by this edge's public origin: `server.public_origin`, else the
    /// scheme and authority the request reached (`Host`, or HTTP/2's
    /// `:authority`, as the edge normalised it).
    pub fn assertion(
        &self,
        id: &crate::identity::Identity,
        audience: &str,
        authority: Option<&str>,
        proto: &str,
    ) -> Option<http::HeaderValue> {
        let issuer = match &self.public_origin {
            Some(o) => std::borrow::Cow::Borrowed(o.as_str()),
            None => std::borrow::Cow::Owned(format!("{proto}://{}", authority.unwrap_or(""))),
        };
        self.assertions
            .assert(id, audience, &issuer, crate::clock::now_ms())
    }

    /// The origin the browser uses, for CSRF checks.
    pub fn origin_here(&self, req: &RequestHeader, proto: &str) -> std::borrow::Cow<'_, str> {
        match &self.public_origin {
            Some(o) => std::borrow::Cow::Borrowed(o),
            None => {
                // HTTP/2 carries the host as `:authority`, not `Host`.
                let host = req
                    .headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .or_else(|| req.uri.authority().map(|a| a.as_str()))
                    .unwrap_or("");
                std::borrow::Cow::Owned(format!("{proto}://{}", host.to_ascii_lowercase()))
            }
        }
    }
}
