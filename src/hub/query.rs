//! Query-string and header parsing for the hub endpoints: pure functions,
//! each bad value a clear message.

use super::ids::Npc;
use super::store::Channels;

/// `npc` parameters (repeatable; none means every channel), deduplicated.
pub fn channels(query: Option<&str>) -> Result<Channels, String> {
    let mut list: Vec<String> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        if k != "npc" {
            continue;
        }
        for npc in v.split(',').filter(|s| !s.is_empty()) {
            if Npc::parse(npc).is_none() {
                return Err(format!("npc {npc:?} is not 1-64 of a-z 0-9 _ -"));
            }
            if !list.iter().any(|n| n == npc) {
                list.push(npc.to_string());
            }
        }
    }
    if list.len() > 64 {
        return Err("at most 64 npc channels per stream".into());
    }
    Ok(if list.is_empty() {
        Channels::All
    } else {
        Channels::Some(list)
    })
}

/// A single query parameter's value.
pub fn param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// `limit` in 1..=max, default `default`.
pub fn limit(query: Option<&str>, default: usize, max: usize) -> Result<usize, String> {
    match param(query, "limit") {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(format!("limit must be a whole number from 1 to {max}")),
        },
    }
}

/// `Last-Event-ID` (header, or `lastEventId` query for EventSource polyfills).
pub fn last_event_id(header: Option<&str>, query: Option<&str>) -> Result<Option<u64>, String> {
    let raw = header
        .map(str::to_string)
        .or_else(|| param(query, "lastEventId"));
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("Last-Event-ID {v:?} is not an event id")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists() {
        assert_eq!(channels(None).unwrap(), Channels::All);
        assert_eq!(
            channels(Some("npc=a&npc=b&npc=a")).unwrap(),
            Channels::Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            channels(Some("npc=a,b")).unwrap(),
            Channels::Some(vec!["a".into(), "b".into()])
        );
        assert!(channels(Some("npc=A")).is_err());
        assert!(channels(Some("npc=%2e%2e")).is_err());
    }

    #[test]
    fn ids_limits_tokens() {
        assert_eq!(last_event_id(Some("42"), None).unwrap(), Some(42));
        assert_eq!(last_event_id(None, Some("lastEventId=7")).unwrap(), Some(7));
        assert!(last_event_id(Some("x"), None).is_err());
        assert_eq!(limit(Some("limit=5"), 50, 500).unwrap(), 5);
        assert!(limit(Some("limit=0"), 50, 500).is_err());
    }
}
