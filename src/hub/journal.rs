//! The single writer in front of the store: appends queue here, are committed
//! in batches (one fsync for many events), and only then acknowledged and
//! broadcast, in id order. Nothing is acknowledged that is not on disk.

use super::event::{Event, NewEvent};
use super::fanout::{Fanout, Live};
use super::store::{EventStore, StoreError};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most events in one commit.
const MAX_BATCH: usize = 512;

struct Job {
    event: NewEvent,
    reply: oneshot::Sender<Result<Event, StoreError>>,
}

/// Handle for appending; cheap to share.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<Job>,
}

impl Journal {
    /// Starts the writer thread. It ends when every `Journal` is dropped.
    /// With `publish`, what it stores goes to `fanout` too; a shared store
    /// (Redis) publishes through its own reader instead, which sees every
    /// edge's events in one order.
    pub fn start(
        store: Arc<dyn EventStore>,
        fanout: Arc<Fanout>,
        publish: bool,
    ) -> std::io::Result<Self> {
        let (tx, mut rx) = mpsc::channel::<Job>(8192);
        std::thread::Builder::new()
            .name("esprit-edge-journal".into())
            .spawn(move || {
                let work = std::panic::AssertUnwindSafe(move || {
                let mut batch = Vec::with_capacity(MAX_BATCH);
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while batch.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    let events: Vec<NewEvent> = batch.iter().map(|j| j.event.clone()).collect();
                    match store.append(&events) {
                        Ok(stored) => {
                            for (job, ev) in batch.drain(..).zip(stored) {
                                if publish {
                                    fanout.publish(Arc::new(Live {
                                    id: ev.id,
                                    npc: ev.npc.clone(),
                                    frame: ev.sse_frame(),
                                    }));
                                }
                                let _ = job.reply.send(Ok(ev));
                            }
                        }
                        Err(e) => {
                            tracing::error!(target: "hub", error = %e, events = batch.len(), "append failed");
                            for job in batch.drain(..) {
                                let _ = job.reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
                });
                if std::panic::catch_unwind(work).is_err() {
                    // Without its writer the hub can only refuse events: let the
                    // supervisor (docker, systemd) restart the whole process.
                    tracing::error!(target: "hub", "the journal writer panicked; exiting so the process is restarted");
                    std::process::exit(70);
                }
            })?;
        Ok(Self { tx })
    }

    /// Stores `event` durably, then broadcasts it; returns it with its id.
    pub async fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { event, reply })
            .await
            .map_err(|_| StoreError::WriterStopped)?;
        let stored = rx.await.map_err(|_| StoreError::WriterStopped)?;
        if stored.is_ok() {
            crate::telemetry::metrics::metrics().hub_events.inc();
        }
        stored
    }
}
