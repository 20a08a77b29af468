//! The `/auth/` handler: the sign-in page, `POST /auth/login`, logout and
//! `/auth/me`. Passwords are checked on the blocking pool behind a semaphore
//! (a flood of logins cannot starve the proxy), against a dummy hash for
//! unknown users so both failures take the same time and say the same thing.

use super::cookies;
use super::csrf;
use super::page;
use super::redirect::safe_return_path;
use super::service::AuthService;
use super::store_error::StoreError;
use super::users;
use crate::clock::now_ms;
use crate::limit::throttle;
use crate::limit::work_queue::Priority;
use crate::reply::Reply;
use crate::reply::body::read_capped;
use crate::reply::error_body::wants_json;
use crate::reply::handler::{Call, Handled, Handler};
use async_trait::async_trait;
use pingora::proxy::Session;
use serde_json::json;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One message for every failed login: which part was wrong is nobody's business.
const BAD_LOGIN: &str = "Wrong user name or password.";
/// The largest sign-in form read.
const MAX_LOGIN_BODY: usize = 8 * 1024;

#[async_trait]
impl Handler for AuthService {
    /// Everything under the sign-in's route: unknown pages get 404 here.
    fn claims(&self, _path: &str) -> bool {
        true
    }

    async fn serve(&self, session: &mut Session, call: Call<'_>) -> pingora::Result<Handled> {
        let sign_in =
            call.path == "/auth/login" && session.req_header().method == http::Method::POST;
        let reply = self.answer(session, &call).await?;
        if sign_in {
            crate::telemetry::metrics::metrics().sign_in(sign_in_outcome(reply.status));
        }
        Ok(Handled::Reply(reply))
    }
}

/// A sign-in's outcome, as the metrics count it, from the status it got.
fn sign_in_outcome(status: u16) -> &'static str {
    match status {
        303 | 200 => "signed_in",
        401 => "wrong_credentials",
        429 => "throttled",
        503 => "busy",
        _ => "refused",
    }
}

impl AuthService {
    /// Answers `/auth/login`, `/auth/logout` and `/auth/me`. `call.secure()`:
    /// the browser used HTTPS, so cookies get `Secure` and their prefixes.
    async fn answer(&self, session: &mut Session, call: &Call<'_>) -> pingora::Result<Reply> {
        let (path, secure) = (call.path, call.secure());
        let req = session.req_header();
        let method = req.method.clone();
        let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
        let rd = req
            .uri
            .query()
            .and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "rd")
                    .map(|(_, v)| v.into_owned())
            })
            .and_then(|rd| safe_return_path(&rd).map(str::to_string));
        let json_client = header("content-type")
            .is_some_and(|ct| ct.starts_with("application/json"))
            || wants_json("/x", header("accept"));
        let refuse = Refusal {
            json: json_client,
            rd: rd.as_deref(),
        };
        let csrf = csrf::check(
            &method,
            header("sec-fetch-site"),
            header("origin"),
            &self.origin_here(req, call.proto),
        );
        match (path, method.as_str()) {
            ("/auth/login", "GET" | "HEAD") => Ok(Reply::html(
                200,
                page::login(rd.as_deref(), None, "", self.users_now().users.is_empty()),
                "login page",
            )),
            ("/auth/login", "POST") => {
                if let Err(e) = csrf {
                    return Ok(refuse.reply(403, e.message(), "", "csrf"));
                }
                let devices = cookies::all_named(req, cookies::device_name(secure));
                let old = self.session_token(req, secure).map(str::to_string);
                let Ok(body) = read_capped(session, MAX_LOGIN_BODY).await? else {
                    return Ok(refuse.reply(
                        413,
                        "The sign-in form was too large.",
                        "",
                        "login body too large",
                    ));
                };
                let (username, password) = credentials(&body, json_client);
                let attempt = Attempt {
                    username,
                    password,
                    devices,
                    old,
                    client: call.client_ip,
                };
                self.login(attempt, secure, refuse).await
            }
            ("/auth/logout", "POST") => {
                if let Err(e) = csrf {
                    return Ok(Reply::json(403, &json!({ "error": e.to_string() }), "csrf"));
                }
                let ended = match self.session_token(req, secure) {
                    Some(token) => {
                        let (sessions, token) = (self.sessions.clone(), token.to_string());
                        tokio::task::spawn_blocking(move || sessions.revoke_checked(&token))
                            .await
                            .unwrap_or(Err(StoreError::Poisoned("session")))
                    }
                    None => Ok(()),
                };
                if let Err(e) = ended {
                    // Signed out here but not where the store is shared:
                    // saying "signed out" would leave it alive elsewhere.
                    tracing::error!(target: "auth", error = %e, "sign-out failed: the session store did not take it");
                    let mut r = Reply::json(
                        503,
                        &json!({ "error": "cannot sign out now: the session store cannot be reached; try again" }),
                        "sign-out failed",
                    );
                    r.retry_after = Some(5);
                    return Ok(r);
                }
                let mut r = Reply::redirect(303, "/auth/login".into());
                r.set_cookies.push(cookies::clear_session(secure));
                Ok(r)
            }
            // Upstreams fetch it to verify assertions: open, and cacheable
            // for a minute (a verifier refetches on an unknown `kid`).
            ("/auth/jwks.json", "GET" | "HEAD") => {
                let mut r = Reply::json(200, &self.assertions.jwks(now_ms()), "jwks");
                r.cache_control = Some("public, max-age=60");
                Ok(r)
            }
            ("/auth/jwks.json", _) => {
                let mut r = Reply::json(
                    405,
                    &json!({ "error": "method not allowed" }),
                    "method not allowed",
                );
                r.allow = Some("GET, HEAD");
                Ok(r)
            }
            ("/auth/me", "GET" | "HEAD") => Ok(match self.identify(req, secure) {
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
    fn admit(&self, known: bool, ip_key: &str, account_key: &str) -> Result<bool, Duration> {
        if known {
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

    /// Whether one of the attempt's device cookies is a known device of
    /// the account (spending one of its attempts), asked on a blocking
    /// thread: the device store is a file or a Redis round trip away.
    async fn known_device(&self, a: &Attempt) -> bool {
        if a.devices.is_empty() {
            return false;
        }
        let devices = self.devices.clone();
        let (cookies, user) = (a.devices.clone(), a.username.clone());
        let now = now_ms();
        tokio::task::spawn_blocking(move || cookies.iter().any(|d| devices.admit(d, &user, now)))
            .await
            .unwrap_or(false)
    }

    async fn login(&self, a: Attempt, secure: bool, refuse: Refusal<'_>) -> pingora::Result<Reply> {
        let ip_key = a
            .client
            .map_or_else(|| "unknown".to_string(), throttle::ip_key);
        let name = users::UserName::parse(&a.username);
        // Names that cannot exist share one key, so junk names cannot grow the map.
        let account_key = name.as_ref().map_or("\0invalid", users::UserName::as_str);
        let known = self.known_device(&a).await;
        let trusted_device = match self.admit(known, &ip_key, account_key) {
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
        let users = self.users_now();
        let user = users.users.get(&a.username).cloned();
        let acceptable = name.is_some() && users::check_password(&a.password).is_ok();
        // Unknown users are checked against a dummy hash: same work, same answer.
        let hash = user
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |u| u.hash.clone());
        let who = if trusted_device {
            Priority::Known
        } else {
            Priority::Anonymous
        };
        let ok = {
            let Ok(_place) = self.checks.enter(who).await else {
                if !trusted_device {
                    // Not the client's failure: give the attempt back.
                    self.per_ip.refund(&ip_key);
                    self.per_account.refund(account_key);
                }
                tracing::warn!(target: "auth", user = %a.username, client = %ip_key, "sign-in refused: password checks are saturated");
                let mut r = refuse.reply(
                    503,
                    "Sign-in is busy; try again in a moment.",
                    &a.username,
                    "sign-in busy",
                );
                r.retry_after = Some(1);
                return Ok(r);
            };
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
                self.users_now()
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
        // The new session, the end of the one the browser held before (one
        // browser, one session) and the device cookie, on a blocking thread:
        // with Redis they are round trips.
        let (sessions, devices) = (self.sessions.clone(), self.devices.clone());
        let (user, old, spent) = (a.username.clone(), a.old.clone(), a.devices.clone());
        let stored = tokio::task::spawn_blocking(move || {
            let token = sessions.create(&user, now_ms())?;
            if let Some(old) = &old {
                sessions.revoke(old);
            }
            for d in &spent {
                devices.forget(d);
            }
            Ok::<_, StoreError>((token, devices.issue(&user, now_ms())))
        })
        .await
        .unwrap_or(Err(StoreError::Poisoned("session")));
        let (token, device) = match stored {
            Ok(t) => t,
            Err(e) if e.unreachable() => {
                tracing::error!(target: "auth", user = %a.username, error = %e, "sign-in refused: the session store is unreachable");
                let mut r = refuse.reply(
                    503,
                    "Sign-in is unavailable: the session store cannot be reached. Try again in a moment.",
                    &a.username,
                    "session store unreachable",
                );
                r.retry_after = Some(5);
                return Ok(r);
            }
            Err(e) => {
                return Err(pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    e.to_string(),
                ));
            }
        };
        let mut r = Reply::redirect(303, refuse.rd.unwrap_or("/").to_string());
        r.set_cookies.push(cookies::session(
            &token,
            u64::try_from(self.sessions.timeouts_ms().1 / 1000).unwrap_or(0),
            secure,
        ));
        match device {
            Ok(d) => r.set_cookies.push(cookies::device(&d, secure)),
            Err(e) => tracing::warn!(target: "auth", error = %e, "no device cookie issued"),
        }
        tracing::info!(target: "auth", user = %a.username, client = %ip_key, "login");
        Ok(r)
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
                page::login(self.rd, Some(message), username, false),
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
}
