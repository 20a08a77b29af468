//! The set of channels (npc values) the hub holds events for, bounded: a
//! client cannot create channels without end (200 runs with made-up npcs
//! once grew the store from 0.27 MB to 16.5 MB in 2 s). Agents' own npcs are
//! always allowed; beyond them, at most `hub.max_channels` channels exist.

use super::ids::Npc;
use std::collections::HashSet;
use std::sync::Mutex;

/// The channels known so far.
pub struct ChannelSet {
    known: Mutex<HashSet<String>>,
    max: usize,
}

/// A new channel was refused: `max` exist already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the hub already has {max} channels (hub.max_channels); use an agent's npc")]
pub struct TooManyChannels {
    /// The bound.
    pub max: usize,
}

impl ChannelSet {
    /// Starts with the channels the store already holds.
    pub fn new(existing: impl IntoIterator<Item = String>, max: usize) -> Self {
        Self {
            known: Mutex::new(existing.into_iter().collect()),
            max,
        }
    }

    /// Admits `npc` as a channel: a known one, an agent's (`is_agents`), or a
    /// new one while fewer than `max` exist.
    pub fn admit(&self, npc: &Npc, is_agents: bool) -> Result<(), TooManyChannels> {
        let Ok(mut known) = self.known.lock() else {
            return Ok(());
        };
        if known.contains(npc.as_str()) {
            return Ok(());
        }
        if !is_agents && known.len() >= self.max {
            return Err(TooManyChannels { max: self.max });
        }
        known.insert(npc.to_string());
        Ok(())
    }

    /// Forgets channels that retention emptied (`still` are those left).
    pub fn retain(&self, still: impl IntoIterator<Item = String>) {
        if let Ok(mut known) = self.known.lock() {
            *known = still.into_iter().collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_channels_stop_at_the_bound_but_agents_and_known_ones_pass() {
        let set = ChannelSet::new(["old".to_string()], 2);
        let npc = |s: &str| Npc::parse(s).unwrap();
        assert!(set.admit(&npc("old"), false).is_ok());
        assert!(set.admit(&npc("second"), false).is_ok());
        assert_eq!(
            set.admit(&npc("third"), false),
            Err(TooManyChannels { max: 2 })
        );
        assert!(set.admit(&npc("second"), false).is_ok(), "known");
        assert!(set.admit(&npc("agents"), true).is_ok(), "an agent's npc");
        set.retain(["old".to_string()]);
        assert!(
            set.admit(&npc("third"), false).is_ok(),
            "room again after retention"
        );
    }
}
