//! The hub's names, validated once where they enter (a request, the agents
//! file) and carried typed from there, so the store, the webhooks and the
//! fan-out never see an unchecked one.

use serde::Serialize;
use std::fmt;
use std::ops::Deref;

/// Whether every byte of `s` is allowed and it is 1 to 64 bytes long.
fn fits(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(allowed)
}

/// A channel (an npc of the UI): 1–64 of `[a-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Npc(String);

impl Npc {
    /// `s` as a channel name, if it is one.
    pub fn parse(s: &str) -> Option<Npc> {
        fits(s, |b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
        })
        .then(|| Npc(s.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A run id (and an agent id, which has the same form): 1–64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// `s` as a run id, if it is one.
    pub fn parse(s: &str) -> Option<RunId> {
        fits(s, |b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            .then(|| RunId(s.to_string()))
    }

    /// A fresh random id for a run the hub starts.
    pub fn generate() -> RunId {
        RunId(uuid::Uuid::new_v4().simple().to_string())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! as_text {
    ($t:ty) => {
        impl Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
as_text!(Npc);
as_text!(RunId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npcs() {
        assert!(Npc::parse("researcher-1_a").is_some());
        assert!(Npc::parse("").is_none());
        assert!(Npc::parse("Researcher").is_none());
        assert!(Npc::parse(&"a".repeat(65)).is_none());
        assert!(Npc::parse(&"a".repeat(64)).is_some());
        assert!(Npc::parse("a b").is_none());
    }

    #[test]
    fn run_ids() {
        assert!(RunId::parse("9f0c_A-1").is_some());
        assert!(RunId::parse("a/b").is_none());
        assert!(RunId::parse("").is_none());
        let fresh = RunId::generate();
        assert_eq!(RunId::parse(&fresh).as_ref(), Some(&fresh));
    }
}
