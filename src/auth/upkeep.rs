//! Background upkeep of the sign-in: expired sessions and devices are
//! deleted from the store every minute.

use super::service::AuthService;
use crate::clock::now_ms;
use std::sync::Arc;
use std::time::Duration;

/// How often expired sessions and devices are deleted from the store.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

impl AuthService {
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
}

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
