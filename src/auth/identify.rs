//! Who a request is: the session behind its cookie, if live and its user
//! still exists, and the check long streams poll to learn that it ended.

use super::cookies;
use super::service::AuthService;
use super::users::Users;
use crate::clock::now_ms;
use crate::identity::{Identity, Lookup, SessionAlive};
use pingora::http::RequestHeader;
use std::sync::Arc;
use std::time::Duration;

/// How often the gate's path (every request) looks at the users file.
const USERS_RECHECK: Duration = Duration::from_secs(1);

impl AuthService {
    /// The users, re-read when the file changed (a broken or vanished file
    /// keeps the last good list), looked at no more than once a second.
    pub(super) fn users(&self) -> Arc<Users> {
        self.users.refresh_at_most(USERS_RECHECK)
    }

    /// The users as the file says now: a sign-in always looks.
    pub(super) fn users_now(&self) -> Arc<Users> {
        self.users.refresh()
    }

    /// The session token `req` presents. Of several session cookies only a
    /// live session counts, so a stale or planted junk value cannot hide the
    /// browser's own; two live sessions of different users are refused (a
    /// planted session must not silently sign the browser in as someone
    /// else, nor win over its own).
    pub fn session_token<'r>(&self, req: &'r RequestHeader, secure: bool) -> Option<&'r str> {
        let mut values = cookies::session_values(req, secure);
        let first = values.next()?;
        let Some(second) = values.next() else {
            return Some(first);
        };
        let now = now_ms();
        let mut chosen: Option<(&str, String)> = None;
        for v in [first, second].into_iter().chain(values) {
            let Some(rec) = self.sessions.peek(v, now) else {
                continue;
            };
            match &chosen {
                None => chosen = Some((v, rec.user)),
                Some((_, user)) if *user == rec.user => {}
                Some((_, user)) => {
                    tracing::warn!(target: "auth", first = %user, second = %rec.user, "two live session cookies of different users; treated as signed out");
                    return None;
                }
            }
        }
        chosen.map(|(v, _)| v)
    }

    /// The identity behind `req`'s session cookie, if the session is live and its user still exists.
    pub fn identify(&self, req: &RequestHeader, secure: bool) -> Option<Identity> {
        self.identify_checked(req, secure).ok().flatten()
    }

    /// The session cookies of `req` whose lookup would wait on Redis: the
    /// edge resolves them with [`Self::warm`] on a blocking thread before
    /// the gate, so a worker thread never waits on the network for them.
    pub fn to_warm(&self, req: &RequestHeader, secure: bool) -> Vec<String> {
        if !self.sessions.reads_ahead() {
            return Vec::new();
        }
        let now = now_ms();
        let values: Vec<&str> = cookies::session_values(req, secure).take(4).collect();
        // One cookie (the usual case) is the one the gate uses, so its use
        // is recorded here too; of several, the gate picks after reading.
        let touch = values.len() == 1;
        values
            .into_iter()
            .filter(|v| self.sessions.would_wait(v, now, touch))
            .map(str::to_string)
            .collect()
    }

    /// Reads `tokens` (from [`Self::to_warm`]) into the session cache; a
    /// single one counts as a use, as the gate would count it. Failures are
    /// the gate's to report.
    pub fn warm(&self, tokens: &[String]) {
        let now = now_ms();
        match tokens {
            [one] => {
                let _ = self.sessions.resolve_checked(one, now);
            }
            several => {
                for t in several {
                    let _ = self.sessions.peek(t, now);
                }
            }
        }
    }

    /// As [`Self::identify`], telling "the session store cannot be reached"
    /// (Redis down, and this session not cached within `offline_grace`)
    /// from "no session": the gate answers the first with 503, not with
    /// the sign-in page, which could not sign anyone in either.
    pub fn identify_checked(
        &self,
        req: &RequestHeader,
        secure: bool,
    ) -> Result<Option<Identity>, super::store_error::StoreError> {
        let Some(token) = self.session_token(req, secure) else {
            return Ok(None);
        };
        let Some(rec) = self.sessions.resolve_checked(token, now_ms())? else {
            return Ok(None);
        };
        Ok(self.identity_of(token, rec))
    }

    fn identity_of(&self, token: &str, rec: super::sessions::SessionRecord) -> Option<Identity> {
        let users = self.users();
        let Some(u) = users.users.get(&rec.user) else {
            // A user gone from this edge's users file. With a store of its
            // own the session goes too; a shared one is left to the edges
            // (and `user remove`, which ends it everywhere): one edge whose
            // users file lags must not sign the user out of all of them.
            if !self.sessions.shared() {
                self.sessions.revoke(token);
            }
            return None;
        };
        let (idle, absolute) = self.sessions.timeouts_ms();
        Some(Identity {
            user: rec.user,
            name: u.display_name.clone(),
            email: u.email.clone(),
            expires: (rec.last_seen.saturating_add(idle)).min(rec.created.saturating_add(absolute)),
            sid: rec.reference,
        })
    }

    /// A check that stays true while the session behind `req`'s cookie lives
    /// (see [`SessionAlive`]): a peek, not a use.
    pub fn liveness(self: &Arc<Self>, req: &RequestHeader, secure: bool) -> Option<SessionAlive> {
        let token = self.session_token(req, secure)?.to_string();
        let auth = self.clone();
        Some(Arc::new(move |lookup| {
            let now = now_ms();
            if lookup == Lookup::Cached && auth.sessions.would_wait(&token, now, false) {
                // Re-read on a blocking thread; this check counts it alive,
                // the next one (or the sweep) has the answer.
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    let (auth, token) = (auth.clone(), token.clone());
                    rt.spawn_blocking(move || auth.sessions.peek(&token, now_ms()));
                }
                return true;
            }
            auth.sessions
                .peek(&token, now)
                .is_some_and(|rec| auth.users().users.contains_key(&rec.user))
        }))
    }
}
