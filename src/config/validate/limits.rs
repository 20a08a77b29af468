//! `[[limits]]`: rate rules, each a path prefix (and methods), a key, a rate
//! and a burst.

use super::super::defaults as d;
use super::super::error::Problems;
use super::super::file::LimitSection;
use super::super::model::{Limit, LimitKey};
use std::collections::HashSet;
use std::time::Duration;

/// Parses `"20/s"`, `"5/m"`, `"100/h"` into (count, period).
fn rate(s: &str) -> Result<(u32, Duration), String> {
    let bad = || format!("{s:?} is not a rate like \"20/s\", \"5/m\" or \"100/h\"");
    let (n, unit) = s.split_once('/').ok_or_else(bad)?;
    let n: u32 = n.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(bad()),
    };
    if n == 0 || n > 1_000_000 {
        return Err(format!("{s:?}: the count must be 1 to 1000000"));
    }
    Ok((n, per))
}

fn key(s: &str) -> Result<Vec<LimitKey>, String> {
    let mut out = Vec::new();
    for part in s.split('+').map(str::trim) {
        let k = match part {
            "ip" => LimitKey::Ip,
            "session" => LimitKey::Session,
            "user" => LimitKey::User,
            "token" => LimitKey::Token,
            other => {
                return Err(format!(
                    "{other:?} is not a key (ip, session, user, token, or several joined by +)"
                ));
            }
        };
        if out.contains(&k) {
            return Err(format!("{s:?} names {part:?} twice"));
        }
        out.push(k);
    }
    Ok(out)
}

pub(super) fn limits(raw: Vec<LimitSection>, p: &mut Problems) -> Vec<Limit> {
    let mut out = Vec::new();
    let mut names = HashSet::new();
    for (i, l) in raw.into_iter().enumerate() {
        let at = format!("limits[{i}]");
        let before = p.len();
        let name = l.name.clone().unwrap_or_else(|| format!("limits[{i}]"));
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'[' || b == b']')
        {
            p.add(format!("{at}.name"), "use only A-Z a-z 0-9 - _");
        }
        if !names.insert(name.clone()) {
            p.add(
                format!("{at}.name"),
                format!("{name:?} is used by another rule"),
            );
        }
        let prefix = l.prefix.unwrap_or_else(|| "/".to_string());
        if !prefix.starts_with('/') {
            p.add(
                format!("{at}.prefix"),
                format!("{prefix:?} must start with '/'"),
            );
        }
        let mut methods = Vec::new();
        for (j, m) in l.methods.iter().enumerate() {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(method) => methods.push(method),
                Err(_) => p.add(
                    format!("{at}.methods[{j}]"),
                    format!("{m:?} is not a method"),
                ),
            }
        }
        let key = match l.key.as_deref().map(key) {
            Some(Ok(k)) => k,
            Some(Err(why)) => {
                p.add(format!("{at}.key"), why);
                Vec::new()
            }
            None => {
                p.add(&at, "missing `key` (ip, session, user or token)");
                Vec::new()
            }
        };
        let (count, per) = match l.rate.as_deref().map(rate) {
            Some(Ok(r)) => r,
            Some(Err(why)) => {
                p.add(format!("{at}.rate"), why);
                (1, Duration::from_secs(1))
            }
            None => {
                p.add(&at, "missing `rate` (like \"20/s\")");
                (1, Duration::from_secs(1))
            }
        };
        let burst = l.burst.unwrap_or(count);
        if !(1..=1_000_000).contains(&burst) {
            p.add(format!("{at}.burst"), "out of range (1 to 1000000)");
        }
        // A shared rule costs a Redis round trip per request it counts:
        // worth it for the slow, security-minded rules (sign-ins, runs), not
        // for one that sees every request.
        let shared = l
            .shared
            .unwrap_or(per.as_secs_f64() / f64::from(count.max(1)) >= 1.0 / d::SHARED_RATE_UP_TO);
        if p.len() == before {
            out.push(Limit {
                shared,
                name,
                prefix,
                methods,
                key,
                count,
                per,
                burst,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_keys() {
        assert_eq!(rate("20/s"), Ok((20, Duration::from_secs(1))));
        assert_eq!(rate("5/m"), Ok((5, Duration::from_secs(60))));
        assert!(rate("0/s").is_err());
        assert!(rate("5/d").is_err());
        assert!(rate("five/s").is_err());
        assert_eq!(key("ip+user"), Ok(vec![LimitKey::Ip, LimitKey::User]));
        assert!(key("ip+ip").is_err());
        assert!(key("cookie").unwrap_err().contains("not a key"));
    }
}
