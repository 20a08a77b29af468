//! The login endpoints under `/auth/` and the session lookup the gate uses.
//! Passwords are checked on the blocking pool behind a semaphore (a flood of
//! logins cannot starve the proxy), against a dummy hash for unknown users so
//! both failures take the same time and say the same thing.

use super::csrf;
use super::devices::Devices;
use super::page;
use super::redirect::safe_return_path;
use super::sessions::Sessions;
use super::throttle::Throttle;
use super::users::{self, Users};
use super::watch::StreamWatch;
use crate::config;
use crate::edge::respond::Reply;
use crate::hub::event::now_ms;
use arc_swap::ArcSwap;
use bytes::BytesMut;
use pingora::http::RequestHeader;
use pingora::proxy::Session;
use serde_json::json;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

/// How often the users file is looked at for changes.
const USERS_RECHECK: Duration = Duration::from_secs(1);

/// The cookie over plain HTTP.
pub const COOKIE: &str = "esprit_session";
/// The cookie over TLS: `__Host-` pins it to this host, path `/`, Secure.
pub const COOKIE_TLS: &str = "__Host-esprit_session";
/// The device cookie over plain HTTP (sent to `/auth/` only, see [`Devices`]).
pub const DEVICE_COOKIE: &str = "esprit_device";
/// The device cookie over TLS: `__Secure-` allows the `/auth/` path.
pub const DEVICE_COOKIE_TLS: &str = "__Secure-esprit_device";
/// How long a browser stays a known device of an account after signing in.
const DEVICE_TTL: Duration = Duration::from_secs(90 * 86_400);
/// One message for every failed login: which part was wrong is nobody's business.
const BAD_LOGIN: &str = "Wrong user name or password.";
const MAX_LOGIN_BODY: usize = 8 * 1024;

/// Whether a session is still live (see [`AuthService::liveness`]).
pub type SessionAlive = Arc<dyn Fn() -> bool + Send + Sync>;

/// Who a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Login name (`X-Forwarded-User`).
    pub user: String,
    /// Display name.
    pub name: Option<String>,
    /// `X-Forwarded-Email`.
    pub email: Option<String>,
    /// When the session ends at the latest (ms since epoch).
    pub expires: i64,
}

/// Users, sessions and the login.
pub struct AuthService {
    cfg: config::Auth,
    users: ArcSwap<Users>,
    users_seen: Mutex<Option<SystemTime>>,
    users_checked: Mutex<Instant>,
    sessions: Sessions,
    devices: Devices,
    limiter: Semaphore,
    dummy_hash: String,
    public_origin: Option<String>,
    per_ip: Throttle,
    per_account: Throttle,
    streams: Arc<StreamWatch>,
}

/// The session cookie's value in `req`; `secure` when the browser used
/// HTTPS (to the edge, or to a trusted proxy in front of it).
pub fn cookie_value(req: &RequestHeader, secure: bool) -> Option<&str> {
    cookie(req, if secure { COOKIE_TLS } else { COOKIE })
}

/// The first cookie called `name` in `req`.
fn cookie<'a>(req: &'a RequestHeader, name: &'a str) -> Option<&'a str> {
    named(req, name).next()
}

/// Every cookie called `name` in `req`.
fn named<'a>(req: &'a RequestHeader, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    req.headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The values of the first few cookies called `name`: a cookie planted by a
/// sibling host (same name, longer path, so sent first) must not hide the
/// browser's own device cookie.
fn cookies(req: &RequestHeader, name: &str) -> Vec<String> {
    named(req, name).take(4).map(str::to_string).collect()
}

impl AuthService {
    /// Opens the session store and reads the users file.
    pub fn open(config: &config::Config) -> Result<Arc<Self>, String> {
        let cfg = config.auth.clone();
        let sessions = Sessions::open(&cfg.sessions, cfg.idle_timeout, cfg.absolute_timeout)?;
        let devices = Devices::open(&cfg.sessions, DEVICE_TTL)?;
        let loaded = Users::load(&cfg.users_file)?;
        let mut noise = [0u8; 24];
        getrandom::fill(&mut noise).map_err(|e| format!("no randomness: {e}"))?;
        let dummy_hash = users::hash_password(&format!("{noise:?}"))?;
        Ok(Arc::new(Self {
            limiter: Semaphore::new(cfg.login_concurrency),
            users: ArcSwap::from_pointee(loaded),
            users_seen: Mutex::new(
                std::fs::metadata(&cfg.users_file)
                    .and_then(|m| m.modified())
                    .ok(),
            ),
            users_checked: Mutex::new(Instant::now()),
            cfg,
            sessions,
            devices,
            dummy_hash,
            public_origin: config.server.public_origin.clone(),
            // A client IP gets 10 free failures, then waits grow to 15 min.
            per_ip: Throttle::new(10, Duration::from_secs(1), Duration::from_secs(900)),
            // An account: 5 free, then at most 30 s between guesses, so failing
            // on purpose cannot lock its owner out.
            per_account: Throttle::new(5, Duration::from_secs(1), Duration::from_secs(30)),
            streams: Arc::new(StreamWatch::default()),
        }))
    }

    /// The users, re-read when the file changed (a broken file keeps the old list).
    /// On the gate's path (every request) the file is looked at no more than
    /// once a second; a sign-in (`force`) always looks.
    fn users(&self) -> Arc<Users> {
        self.users_fresh(false)
    }

    fn users_fresh(&self, force: bool) -> Arc<Users> {
        let due = self.users_checked.lock().is_ok_and(|mut at| {
            let due = force || at.elapsed() >= USERS_RECHECK;
            if due {
                *at = Instant::now();
            }
            due
        });
        if !due {
            return self.users.load_full();
        }
        let stamp = std::fs::metadata(&self.cfg.users_file)
            .and_then(|m| m.modified())
            .ok();
        if let Ok(mut seen) = self.users_seen.lock()
            && *seen != stamp
        {
            let vanished = stamp.is_none() && seen.is_some();
            *seen = stamp;
            if vanished {
                // An editor saving by delete-and-write, or a volume mounted
                // late: logging everybody out for it would be worse.
                tracing::error!(target: "auth", file = %self.cfg.users_file.display(), "users file is gone; keeping the last good list");
                return self.users.load_full();
            }
            match Users::load(&self.cfg.users_file) {
                Ok(u) => self.users.store(Arc::new(u)),
                Err(e) => {
                    tracing::error!(target: "auth", error = %e, "users file rejected; keeping the last good list")
                }
            }
        }
        self.users.load_full()
    }

    /// The identity behind `req`'s session cookie, if the session is live and its user still exists.
    pub fn identify(&self, req: &RequestHeader, secure: bool) -> Option<Identity> {
        let token = cookie_value(req, secure)?;
        let rec = self.sessions.resolve(token, now_ms())?;
        let users = self.users();
        let Some(u) = users.users.get(&rec.user) else {
            self.sessions.revoke(token);
            return None;
        };
        let idle = i64::try_from(self.cfg.idle_timeout.as_millis()).unwrap_or(i64::MAX);
        let absolute = i64::try_from(self.cfg.absolute_timeout.as_millis()).unwrap_or(i64::MAX);
        Some(Identity {
            user: rec.user,
            name: u.display_name.clone(),
            email: u.email.clone(),
            expires: (rec.last_seen.saturating_add(idle)).min(rec.created.saturating_add(absolute)),
        })
    }

    /// A check that stays true while the session behind `req`'s cookie lives:
    /// long streams poll it so a logout, expiry or revocation ends them. It
    /// does not count as use, so an open stream alone never keeps a session
    /// from going idle.
    pub fn liveness(self: &Arc<Self>, req: &RequestHeader, secure: bool) -> Option<SessionAlive> {
        let token = cookie_value(req, secure)?.to_string();
        let auth = self.clone();
        Some(Arc::new(move || {
            auth.sessions
                .peek(&token, now_ms())
                .is_some_and(|rec| auth.users().users.contains_key(&rec.user))
        }))
    }

    /// The upgraded streams of gated routes, closed when their session ends
    /// (swept by [`super::watch::Sweeper`]).
    pub fn streams(&self) -> &Arc<StreamWatch> {
        &self.streams
    }

    /// Deletes expired sessions and devices from the store.
    pub fn prune(&self) {
        let now = now_ms();
        for (what, result) in [
            ("sessions", self.sessions.prune(now)),
            ("devices", self.devices.prune(now)),
        ] {
            match result {
                Ok(0) => {}
                Ok(n) => {
                    tracing::debug!(target: "auth", what, pruned = n, "expired entries deleted")
                }
                Err(e) => tracing::warn!(target: "auth", what, error = %e, "pruning failed"),
            }
        }
    }

    /// The origin the browser uses, for CSRF checks.
    pub fn origin_here(&self, req: &RequestHeader, proto: &str) -> String {
        match &self.public_origin {
            Some(o) => o.clone(),
            None => {
                let host = req
                    .headers
                    .get(http::header::HOST)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                format!("{proto}://{}", host.to_ascii_lowercase())
            }
        }
    }

    fn session_cookie(&self, token: &str, secure: bool) -> String {
        let max_age = self.cfg.absolute_timeout.as_secs();
        if secure {
            format!(
                "{COOKIE_TLS}={token}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"
            )
        } else {
            format!("{COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax")
        }
    }

    fn clear_cookie(secure: bool) -> String {
        if secure {
            format!("{COOKIE_TLS}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax")
        } else {
            format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax")
        }
    }

    /// Only ever sent back to the sign-in (`Path=/auth/`), never upstream.
    fn device_cookie(token: &str, secure: bool) -> String {
        let max_age = DEVICE_TTL.as_secs();
        if secure {
            format!(
                "{DEVICE_COOKIE_TLS}={token}; Path=/auth/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Strict"
            )
        } else {
            format!(
                "{DEVICE_COOKIE}={token}; Path=/auth/; Max-Age={max_age}; HttpOnly; SameSite=Strict"
            )
        }
    }

    /// Answers `/auth/login`, `/auth/logout` and `/auth/me`. `secure`: the
    /// browser used HTTPS, so cookies get `Secure` and their prefixes.
    pub async fn serve(
        &self,
        session: &mut Session,
        path: &str,
        secure: bool,
        proto: &str,
        client: Option<IpAddr>,
    ) -> pingora::Result<Reply> {
        let req = session.req_header();
        let method = req.method.clone();
        let rd = req
            .uri
            .query()
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "rd")
                    .map(|(_, v)| v.into_owned())
            })
            .and_then(|rd| safe_return_path(&rd).map(str::to_string));
        let json_client = req
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json"))
            || crate::edge::errors::wants_json(
                "/x",
                req.headers
                    .get(http::header::ACCEPT)
                    .and_then(|v| v.to_str().ok()),
            );
        let refuse = Refusal {
            json: json_client,
            rd: rd.as_deref(),
        };
        let csrf = csrf::check(
            &method,
            req.headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok()),
            req.headers
                .get(http::header::ORIGIN)
                .and_then(|v| v.to_str().ok()),
            &self.origin_here(req, proto),
        );
        match (path, method.as_str()) {
            ("/auth/login", "GET" | "HEAD") => Ok(Reply::html(
                200,
                page::login(rd.as_deref(), None, ""),
                "login page",
            )),
            ("/auth/login", "POST") => {
                if let Err(e) = csrf {
                    return Ok(refuse.reply(403, e.message(), "", "csrf"));
                }
                let devices = cookies(
                    session.req_header(),
                    if secure {
                        DEVICE_COOKIE_TLS
                    } else {
                        DEVICE_COOKIE
                    },
                );
                let old = cookie_value(session.req_header(), secure).map(str::to_string);
                let body = match read_small(session, MAX_LOGIN_BODY).await? {
                    Some(b) => b,
                    None => {
                        return Ok(refuse.reply(
                            413,
                            "The sign-in form was too large.",
                            "",
                            "login body too large",
                        ));
                    }
                };
                let (username, password) = credentials(&body, json_client);
                let attempt = Attempt {
                    username,
                    password,
                    devices,
                    old,
                    client,
                };
                self.login(attempt, secure, refuse).await
            }
            ("/auth/logout", "POST") => {
                if let Err(e) = csrf {
                    return Ok(Reply::json(403, &json!({ "error": e.to_string() }), "csrf"));
                }
                if let Some(token) = cookie_value(session.req_header(), secure) {
                    self.sessions.revoke(token);
                }
                let mut r = Reply::redirect(303, "/auth/login".into());
                r.set_cookies.push(Self::clear_cookie(secure));
                Ok(r)
            }
            ("/auth/me", "GET" | "HEAD") => Ok(match self.identify(session.req_header(), secure) {
                Some(id) => {
                    let mut me = json!({ "user": id.user, "expires": id.expires });
                    if let Some(name) = id.name {
                        me["name"] = json!(name);
                    }
                    if let Some(email) = id.email {
                        me["email"] = json!(email);
                    }
                    Reply::json(200, &me, "me")
                }
                None => Reply::json(401, &json!({ "error": "not signed in" }), "not signed in"),
            }),
            ("/auth/login" | "/auth/me", _) | ("/auth/logout", _) => {
                let mut r = Reply::json(
                    405,
                    &json!({ "error": "method not allowed" }),
                    "method not allowed",
                );
                r.allow = Some(if path == "/auth/logout" {
                    "POST"
                } else {
                    "GET, POST"
                });
                Ok(r)
            }
            _ => Ok(Reply::json(
                404,
                &json!({ "error": "no such page" }),
                "not found",
            )),
        }
    }

    /// Whether this attempt may go ahead; `Err(wait)` when it is throttled,
    /// else whether it came from a known device of the account. A known device of the
    /// account skips the per-IP and per-account counts (someone failing on
    /// purpose cannot keep its owner out) and spends one of its own few
    /// attempts instead. Every attempt is counted before its password is
    /// checked, so a burst sent in parallel is held to the same few guesses
    /// as one sent in turn.
    fn admit(&self, a: &Attempt, ip_key: &str, account_key: &str) -> Result<bool, Duration> {
        let now_wall = now_ms();
        if a.devices
            .iter()
            .any(|d| self.devices.admit(d, &a.username, now_wall))
        {
            return Ok(true);
        }
        let now = Instant::now();
        self.per_ip.attempt(ip_key, now)?;
        if let Err(wait) = self.per_account.attempt(account_key, now) {
            self.per_ip.refund(ip_key);
            return Err(wait);
        }
        Ok(false)
    }

    async fn login(&self, a: Attempt, secure: bool, refuse: Refusal<'_>) -> pingora::Result<Reply> {
        let ip_key = a.client.map_or_else(|| "unknown".to_string(), throttle_key);
        // Names that cannot exist share one key, so junk names cannot grow the map.
        let account_key = if users::valid_name(&a.username) {
            a.username.as_str()
        } else {
            "\0invalid"
        };
        let trusted_device = match self.admit(&a, &ip_key, account_key) {
            Ok(trusted) => trusted,
            Err(wait) => {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                tracing::info!(target: "auth", user = %a.username, client = %ip_key, retry_after = secs, "sign-in throttled");
                let mut r = refuse.reply(
                    429,
                    "Too many failed sign-ins; try again later.",
                    &a.username,
                    "sign-in throttled",
                );
                r.retry_after = Some(secs);
                return Ok(r);
            }
        };
        let users = self.users_fresh(true);
        let user = users.users.get(&a.username).cloned();
        let acceptable =
            users::valid_name(&a.username) && users::check_password(&a.password).is_ok();
        // Unknown users are checked against a dummy hash: same work, same answer.
        let hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.hash.clone());
        let ok = {
            let _permit = self.limiter.acquire().await;
            let pw = a.password.clone();
            tokio::task::spawn_blocking(move || users::verify_password(&pw, &hash))
                .await
                .unwrap_or(false)
        };
        // The password may have been replaced (and the user's sessions ended)
        // while this check waited its turn: it must be checked against the
        // hash that is current now.
        let still_current = || {
            user.as_ref().is_some_and(|u| {
                self.users_fresh(true)
                    .users
                    .get(&a.username)
                    .is_some_and(|now| now.hash == u.hash)
            })
        };
        if !(ok && acceptable && still_current()) {
            tracing::info!(target: "auth", user = %a.username, client = %ip_key, "login failed");
            return Ok(refuse.reply(401, BAD_LOGIN, &a.username, "login failed"));
        }
        if !trusted_device {
            // The account's count is cleared; the IP only gets this attempt
            // back: clearing it would let anyone with one valid account reset
            // it between guesses at others.
            self.per_account.succeed(account_key);
            self.per_ip.refund(&ip_key);
        }
        let token = self
            .sessions
            .create(&a.username, now_ms())
            .map_err(|e| pingora::Error::explain(pingora::ErrorType::InternalError, e))?;
        // The session the browser held before (if any) ends here: one browser, one session.
        if let Some(old) = &a.old {
            self.sessions.revoke(old);
        }
        let mut r = Reply::redirect(303, refuse.rd.unwrap_or("/").to_string());
        r.set_cookies.push(self.session_cookie(&token, secure));
        for d in &a.devices {
            self.devices.forget(d);
        }
        match self.devices.issue(&a.username, now_ms()) {
            Ok(d) => r.set_cookies.push(Self::device_cookie(&d, secure)),
            Err(e) => tracing::warn!(target: "auth", error = %e, "no device cookie issued"),
        }
        tracing::info!(target: "auth", user = %a.username, client = %ip_key, "login");
        Ok(r)
    }
}

/// The per-IP throttle's key: an IPv4 address, or the /64 an IPv6 address
/// is in (one host usually holds a whole /64, so single addresses would
/// give it endless fresh keys).
fn throttle_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let net = std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1));
                format!("{net}/64")
            }
        },
    }
}

/// How often expired sessions and devices are deleted from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The background service that prunes the session store.
pub struct Upkeep(pub Arc<AuthService>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Upkeep {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let auth = self.0.clone();
                    let _ = tokio::task::spawn_blocking(move || auth.prune()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// One sign-in attempt as read from the request.
struct Attempt {
    username: String,
    password: String,
    /// The device cookies the browser sent (normally none or one).
    devices: Vec<String>,
    /// The session cookie the browser sent, if any.
    old: Option<String>,
    client: Option<IpAddr>,
}

/// How a refused sign-in is answered: JSON for scripts, the page again (with
/// the message) for a person at a form.
#[derive(Clone, Copy)]
struct Refusal<'a> {
    json: bool,
    rd: Option<&'a str>,
}

impl Refusal<'_> {
    fn reply(&self, status: u16, message: &str, username: &str, reason: &'static str) -> Reply {
        if self.json {
            Reply::json(status, &json!({ "error": message }), reason)
        } else {
            Reply::html(
                status,
                page::login(self.rd, Some(message), username),
                reason,
            )
        }
    }
}

/// `username` and `password` from a form or JSON body (empty when absent).
fn credentials(body: &[u8], json: bool) -> (String, String) {
    if json && let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        return (get("username"), get("password"));
    }
    let mut user = String::new();
    let mut pass = String::new();
    for (k, v) in form_urlencoded::parse(body) {
        match k.as_ref() {
            "username" => user = v.into_owned(),
            "password" => pass = v.into_owned(),
            _ => {}
        }
    }
    (user, pass)
}

/// Reads a small request body; `None` when it exceeds `cap`.
async fn read_small(session: &mut Session, cap: usize) -> pingora::Result<Option<bytes::Bytes>> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > cap {
            session.set_keepalive(None);
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_form_and_json() {
        assert_eq!(
            credentials(b"username=al%20ice&password=p%26w", false),
            ("al ice".into(), "p&w".into())
        );
        assert_eq!(
            credentials(br#"{"username":"a","password":"b"}"#, true),
            ("a".into(), "b".into())
        );
        assert_eq!(
            credentials(b"garbage", true),
            (String::new(), String::new())
        );
    }

    #[test]
    fn an_ipv6_host_is_throttled_by_its_64() {
        let key = |s: &str| throttle_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::9"));
        assert_eq!(key("2001:db8:1:2::1"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn every_cookie_of_a_name_is_seen() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header("cookie", "esprit_device=planted; a=1")
            .unwrap();
        r.append_header("cookie", "esprit_device=mine").unwrap();
        assert_eq!(cookies(&r, DEVICE_COOKIE), ["planted", "mine"]);
        assert_eq!(cookie(&r, DEVICE_COOKIE), Some("planted"));
    }

    #[test]
    fn cookie_lookup_by_transport() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.append_header(
            "cookie",
            "a=1; esprit_session=plain; __Host-esprit_session=tls",
        )
        .unwrap();
        assert_eq!(cookie_value(&r, false), Some("plain"));
        assert_eq!(cookie_value(&r, true), Some("tls"));
    }
}
