//! Rate rules (`[[limits]]`): GCRA per key, from the `governor` crate, with
//! nginx `limit_req burst=N nodelay` semantics: up to `burst` requests at
//! once, then one every `per / count`. Over the limit a request gets 429
//! with `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` headers.
//!
//! Keys that need only the client IP are checked before the session gate
//! (a flood is refused before it costs a session lookup); keys that need the
//! session, the user or a bearer token after it. Keys expire once their
//! state is back to fresh (a background prune every few seconds), so an
//! attacker rotating keys costs memory only for as long as each key is
//! remembered anyway.

use crate::config::{Limit, LimitKey};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

type Keyed<C> =
    RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// When a rule is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before the session gate: rules keyed by the client IP alone.
    Peer,
    /// After the gate: rules whose key needs the session, the user or a token.
    Identity,
}

/// Who a request comes from, as far as the edge knows at the stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    /// The client IP.
    pub ip: Option<IpAddr>,
    /// The session cookie of a signed-in request.
    pub session: Option<&'a str>,
    /// The signed-in user.
    pub user: Option<&'a str>,
    /// The bearer token of the request.
    pub token: Option<&'a str>,
}

/// A request over a rule's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    /// The rule's name.
    pub rule: String,
    /// Whole seconds until the next request of this key is allowed (at least 1).
    pub retry_after: u64,
    /// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers).
    pub policy: String,
    /// `RateLimit`: nothing left, and when there will be.
    pub state: String,
}

struct Rule<C: Clock> {
    limit: Limit,
    /// One request every this long (for the shared count).
    interval: Duration,
    stage: Stage,
    limiter: Keyed<C>,
    /// One log line per key per second at most.
    logged: Keyed<C>,
    /// `RateLimit-Policy`, built once.
    policy: String,
}

/// A shared rule a request is within locally, still to be counted in
/// Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    rule: usize,
    key: String,
}

/// Every rate rule of the config.
pub struct RateRules<C: Clock = DefaultClock> {
    rules: Vec<Rule<C>>,
    clock: C,
    /// The counters every edge shares, for `shared` rules (Redis backend).
    shared: Option<super::shared_rate::SharedRates>,
}

impl RateRules<DefaultClock> {
    /// Builds the rules of a validated config; with `link`, `shared` rules
    /// are also counted in the Redis every edge shares.
    pub fn new(limits: &[Limit], link: Option<Arc<crate::redis_link::RedisLink>>) -> Self {
        let mut rules = Self::with_clock(limits, DefaultClock::default());
        rules.shared = link.map(super::shared_rate::SharedRates::new);
        rules
    }
}

/// The quota of a validated rule (its numbers are non-zero).
fn quota(l: &Limit) -> Quota {
    let every = l.per / l.count.max(1);
    let burst = NonZeroU32::new(l.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(every.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl<C: Clock + Clone> RateRules<C> {
    /// As [`RateRules::new`], on `clock` (tests use a fake one).
    pub fn with_clock(limits: &[Limit], clock: C) -> Self {
        let rules = limits
            .iter()
            .map(|l| {
                let q = quota(l);
                let window = q.burst_size_replenished_in().as_secs().max(1);
                Rule {
                    stage: if l.key == [LimitKey::Ip] {
                        Stage::Peer
                    } else {
                        Stage::Identity
                    },
                    limiter: RateLimiter::new(q, DefaultKeyedStateStore::default(), clock.clone()),
                    logged: RateLimiter::new(
                        Quota::per_second(NonZeroU32::MIN),
                        DefaultKeyedStateStore::default(),
                        clock.clone(),
                    ),
                    policy: format!("\"{}\";q={};w={window}", l.name, l.burst),
                    interval: (l.per / l.count.max(1)).max(Duration::from_nanos(1)),
                    limit: l.clone(),
                }
            })
            .collect();
        Self {
            rules,
            clock,
            shared: None,
        }
    }

    /// Whether there are rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether any rule is checked at `stage` (the edge skips building the
    /// request's subject when none is).
    pub fn has(&self, stage: Stage) -> bool {
        self.rules.iter().any(|r| r.stage == stage)
    }

    /// Counts the request against every rule of `stage` that matches it;
    /// the first rule it is over refuses it.
    pub fn check(
        &self,
        stage: Stage,
        method: &http::Method,
        path: &str,
        who: &Subject<'_>,
    ) -> Result<(), Exceeded> {
        let pending = self.check_local(stage, method, path, who)?;
        self.check_shared(&pending)
    }

    /// This edge's own count, which never waits: the first rule the request
    /// is over refuses it; the shared rules it is within are returned, for
    /// [`Self::check_shared`] to ask Redis about (the edge does that on a
    /// blocking thread).
    pub fn check_local(
        &self,
        stage: Stage,
        method: &http::Method,
        path: &str,
        who: &Subject<'_>,
    ) -> Result<Vec<Pending>, Exceeded> {
        let mut pending = Vec::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let l = &rule.limit;
            if rule.stage != stage
                || !path.starts_with(&l.prefix)
                || !(l.methods.is_empty() || l.methods.contains(method))
            {
                continue;
            }
            let Some(key) = key_of(&l.key, who) else {
                continue;
            };
            if let Err(not_until) = rule.limiter.check_key(&key) {
                return Err(self.exceeded(rule, &key, not_until.wait_time_from(self.clock.now())));
            }
            // Within this edge's count: the count of every edge decides.
            if l.shared && self.shared.is_some() {
                pending.push(Pending { rule: index, key });
            }
        }
        Ok(pending)
    }

    /// The count every edge shares, for the rules [`Self::check_local`]
    /// left: one Redis round trip each (bounded by `storage.timeout`; while
    /// Redis is away the local answer stands).
    pub fn check_shared(&self, pending: &[Pending]) -> Result<(), Exceeded> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        for p in pending {
            let Some(rule) = self.rules.get(p.rule) else {
                continue;
            };
            let l = &rule.limit;
            if let super::shared_rate::Verdict::Wait(w) =
                shared.check(&l.name, &p.key, rule.interval, l.burst)
            {
                return Err(self.exceeded(rule, &p.key, w));
            }
        }
        Ok(())
    }

    fn exceeded(&self, rule: &Rule<C>, key: &str, wait: Duration) -> Exceeded {
        let l = &rule.limit;
        let retry_after = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        if rule.logged.check_key(&key.to_string()).is_ok() {
            tracing::warn!(target: "limit", rule = %l.name, key = %redacted(key), retry_after, "rate limit exceeded");
        }
        Exceeded {
            rule: l.name.clone(),
            retry_after,
            policy: rule.policy.clone(),
            state: format!("\"{}\";r=0;t={retry_after}", l.name),
        }
    }

    /// Forgets keys whose state is back to fresh; returns how many are left.
    pub fn prune(&self) -> usize {
        self.rules
            .iter()
            .map(|r| {
                r.limiter.retain_recent();
                r.limiter.shrink_to_fit();
                r.logged.retain_recent();
                r.logged.shrink_to_fit();
                r.limiter.len()
            })
            .sum()
    }

    /// Keys remembered now, over every rule.
    pub fn keys(&self) -> usize {
        self.rules.iter().map(|r| r.limiter.len()).sum()
    }
}

/// The rule's key for `who`; `None` when a part is missing.
fn key_of(parts: &[LimitKey], who: &Subject<'_>) -> Option<String> {
    let mut key = String::new();
    for part in parts {
        if !key.is_empty() {
            key.push('|');
        }
        match part {
            LimitKey::Ip => key.push_str(&super::throttle::ip_key(who.ip?)),
            LimitKey::Session => key.push_str(who.session?),
            LimitKey::User => key.push_str(who.user?),
            LimitKey::Token => key.push_str(who.token?),
        }
    }
    Some(key)
}

/// A key as logged: secrets (session ids, tokens) shortened to a prefix.
fn redacted(key: &str) -> String {
    key.split('|')
        .map(|p| {
            if p.len() > 24 {
                format!("{}…", &p[..8])
            } else {
                p.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// How often keys that are fresh again are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(10);

/// The background service that prunes the rules' keys.
pub struct Prune(pub Arc<arc_swap::ArcSwap<RateRules>>);

#[async_trait::async_trait]
impl pingora::services::background::BackgroundService for Prune {
    async fn start(&self, mut shutdown: pingora::server::ShutdownWatch) {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let rules = self.0.load_full();
                    let _ = tokio::task::spawn_blocking(move || rules.prune()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(key: Vec<LimitKey>, count: u32, per: u64, burst: u32) -> Limit {
        Limit {
            name: "test".into(),
            prefix: "/api/".into(),
            methods: vec![http::Method::POST],
            key,
            count,
            per: Duration::from_secs(per),
            burst,
            shared: false,
        }
    }

    fn ip(s: &str) -> Subject<'_> {
        Subject {
            ip: Some(s.parse().unwrap()),
            ..Subject::default()
        }
    }

    #[test]
    fn a_burst_then_one_per_interval_like_limit_req_nodelay() {
        let clock = FakeRelativeClock::default();
        let rules = RateRules::with_clock(&[limit(vec![LimitKey::Ip], 1, 2, 3)], clock.clone());
        let post = http::Method::POST;
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert!(rules.check(Stage::Peer, &post, "/api/x", &a).is_ok());
        }
        let e = rules.check(Stage::Peer, &post, "/api/x", &a).unwrap_err();
        assert_eq!(e.retry_after, 2);
        assert_eq!(e.policy, "\"test\";q=3;w=6");
        assert_eq!(e.state, "\"test\";r=0;t=2");
        // Another client, another method, another path, another stage: not counted.
        assert!(
            rules
                .check(Stage::Peer, &post, "/api/x", &ip("192.0.2.2"))
                .is_ok()
        );
        assert!(
            rules
                .check(Stage::Peer, &http::Method::GET, "/api/x", &a)
                .is_ok()
        );
        assert!(rules.check(Stage::Peer, &post, "/other", &a).is_ok());
        assert!(rules.check(Stage::Identity, &post, "/api/x", &a).is_ok());
        clock.advance(Duration::from_secs(2));
        assert!(rules.check(Stage::Peer, &post, "/api/x", &a).is_ok());
        assert!(rules.check(Stage::Peer, &post, "/api/x", &a).is_err());
    }

    #[test]
    fn identity_keys_skip_requests_without_them() {
        let rules = RateRules::with_clock(
            &[limit(vec![LimitKey::User], 1, 60, 1)],
            FakeRelativeClock::default(),
        );
        let post = http::Method::POST;
        let anonymous = ip("192.0.2.1");
        for _ in 0..5 {
            assert!(
                rules
                    .check(Stage::Identity, &post, "/api/run/a", &anonymous)
                    .is_ok()
            );
        }
        let alice = Subject {
            user: Some("alice"),
            ..anonymous
        };
        assert!(
            rules
                .check(Stage::Identity, &post, "/api/run/a", &alice)
                .is_ok()
        );
        assert!(
            rules
                .check(Stage::Identity, &post, "/api/run/a", &alice)
                .is_err()
        );
    }

    #[test]
    fn keys_are_forgotten_once_fresh_so_rotating_them_stays_bounded() {
        let clock = FakeRelativeClock::default();
        let rules = RateRules::with_clock(&[limit(vec![LimitKey::Ip], 10, 1, 10)], clock.clone());
        let post = http::Method::POST;
        for i in 0..100_000u32 {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let who = Subject {
                ip: Some(addr),
                ..Subject::default()
            };
            assert!(rules.check(Stage::Peer, &post, "/api/x", &who).is_ok());
        }
        assert_eq!(rules.keys(), 100_000);
        clock.advance(Duration::from_secs(2));
        assert_eq!(rules.prune(), 0, "every key is fresh again and forgotten");
    }

    #[test]
    fn secrets_in_keys_are_not_logged_whole() {
        let token = "a".repeat(64);
        assert_eq!(
            redacted(&format!("192.0.2.1|{token}")),
            "192.0.2.1|aaaaaaaa…"
        );
    }
}
