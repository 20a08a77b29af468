//! The in-process handlers by route kind, registered once at start-up
//! (`server.rs`); the edge finds a route's handler here and knows nothing
//! else about it.

use crate::config::HandlerKind;
use crate::reply::handler::Handler;
use std::sync::Arc;

/// The registered handlers.
#[derive(Default, Clone)]
pub struct Handlers {
    by_kind: Vec<(HandlerKind, Arc<dyn Handler>)>,
}

impl Handlers {
    /// Serves routes of `kind` with `handler` (a later registration replaces it).
    pub fn register(&mut self, kind: HandlerKind, handler: Arc<dyn Handler>) {
        self.by_kind.retain(|(k, _)| *k != kind);
        self.by_kind.push((kind, handler));
    }

    /// The handler of `kind`, when it is running.
    pub fn get(&self, kind: HandlerKind) -> Option<&Arc<dyn Handler>> {
        self.by_kind
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, h)| h)
    }

    /// Whether the handler of `kind` answers `path`. A kind that is not
    /// running claims everything under its route, which then answers 503
    /// rather than falling through to an upstream.
    pub fn claims(&self, kind: HandlerKind, path: &str) -> bool {
        self.get(kind).is_none_or(|h| h.claims(path))
    }
}
