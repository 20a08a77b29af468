//! The event store behind a small trait, so a distributed backend (Redis
//! Streams, for several edge instances) can replace the embedded one.

use super::event::{Event, NewEvent};

/// Which channels a reader wants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channels {
    /// Every channel.
    All,
    /// These npcs (deduplicated, non-empty).
    Some(Vec<String>),
}

impl Channels {
    /// Whether `npc` is wanted.
    pub fn contains(&self, npc: &str) -> bool {
        match self {
            Channels::All => true,
            Channels::Some(list) => list.iter().any(|n| n == npc),
        }
    }
}

/// One run as derived from its events.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The run id.
    pub run_id: String,
    /// The channel it reports on.
    pub npc: String,
    /// The agent that started it, when the hub started it.
    pub agent: Option<String>,
    /// running, awaiting, done or error.
    pub status: String,
    /// First event time (ms since epoch).
    pub started_at: i64,
    /// Last event time.
    pub updated_at: i64,
    /// Time of the `done` or `error` event.
    pub ended_at: Option<i64>,
}

/// A store failure, with what was being done: callers can tell a backend
/// that refused (busy, full, corrupt) from a hub that is shutting down.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend refused or failed an operation on `path`.
    #[error("event store: {what} {}: {detail}", path.display())]
    Backend {
        /// What was being done ("cannot write to").
        what: &'static str,
        /// The store's file.
        path: std::path::PathBuf,
        /// The backend's own message.
        detail: String,
    },
    /// The shared Redis did not answer or refused (its message says which).
    #[error("event store: {0}")]
    Shared(String),
    /// A thread panicked while writing; nothing more is trusted.
    #[error("event store: writer lock poisoned")]
    Poisoned,
    /// The journal writer is gone (the hub is stopping).
    #[error("event store: the journal writer stopped")]
    WriterStopped,
    /// A blocking read could not run (the runtime is shutting down).
    #[error("event store: store reader failed: {0}")]
    ReaderFailed(String),
}

/// Durable, ordered event storage. Calls block; callers run them off the
/// async workers. `append` is called from one writer only.
pub trait EventStore: Send + Sync {
    /// The newest stored id (0 when empty).
    fn last_id(&self) -> Result<u64, StoreError>;
    /// Whether the store answers as a new reader would find it now (for
    /// `/readyz`); a backend without a cheaper check reads the newest id.
    fn ping(&self) -> Result<(), StoreError> {
        self.last_id().map(|_| ())
    }
    /// Stores `batch` in one durable commit; returns the events with their ids, in order.
    fn append(&self, batch: &[NewEvent]) -> Result<Vec<Event>, StoreError>;
    /// Events after `after_id` on `channels`, oldest first, at most `limit`.
    fn after(
        &self,
        channels: &Channels,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError>;
    /// The most recent `limit` events of the wanted channels together, oldest first.
    fn recent(&self, channels: &Channels, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// The id of the `n`-th most recent event of the wanted channels (1: the
    /// newest); `None` when there are fewer. Bounds a replay without reading it.
    fn nth_newest_id(&self, channels: &Channels, n: usize) -> Result<Option<u64>, StoreError>;
    /// Every channel (npc) with stored events.
    fn channels(&self) -> Result<Vec<String>, StoreError>;
    /// Newest runs first.
    fn runs(&self, npc: Option<&str>, limit: usize) -> Result<Vec<RunSummary>, StoreError>;
    /// One run's events, oldest first (at most its last 1000).
    fn run_events(&self, run_id: &str) -> Result<Vec<Event>, StoreError>;
    /// Deletes events older than `before_ts` and beyond `keep_per_channel` per channel; returns how many.
    fn prune(&self, before_ts: i64, keep_per_channel: usize) -> Result<u64, StoreError>;
    /// Claims the answer to awaiting event `awaiting_id` for this caller:
    /// true once, for one caller, across every edge that shares the store,
    /// until [`Self::release`]. A store only this process uses needs no
    /// claim beyond the hub's own lock.
    fn claim(&self, _awaiting_id: u64) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Gives a claim back (the relay failed; the person may try again).
    fn release(&self, _awaiting_id: u64) {}
}
