//! A bounded queue in front of costly work (argon2 password checks): at
//! most `running` at once, at most `waiting` more per class in line, and
//! the rest refused at once rather than left to wait without bound. Known
//! devices have their own line, served first, so a flood of anonymous
//! attempts cannot keep a returning user out.
//!
//! A place is handed from one holder to the next waiter as a value through a
//! oneshot channel: a waiter that gave up simply drops it, which passes it on.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// Who is asking: known devices go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A device that signed in to this account before.
    Known,
    /// Anyone else.
    Anonymous,
}

/// The line is full: the caller should answer at once (503, `Retry-After`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the queue is full")]
pub struct Full;

#[derive(Default)]
struct Lines {
    running: usize,
    known: VecDeque<oneshot::Sender<Place>>,
    anonymous: VecDeque<oneshot::Sender<Place>>,
}

/// The queue.
pub struct WorkQueue {
    running: usize,
    waiting: usize,
    lines: Mutex<Lines>,
}

impl WorkQueue {
    /// At most `running` at once and `waiting` in each line.
    pub fn new(running: usize, waiting: usize) -> Arc<Self> {
        Arc::new(Self {
            running: running.max(1),
            waiting,
            lines: Mutex::new(Lines::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Lines> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a place, or refuses at once when the line is full.
    pub async fn enter(self: &Arc<Self>, who: Priority) -> Result<Place, Full> {
        let rx = {
            let mut lines = self.lock();
            if lines.running < self.running {
                lines.running += 1;
                return Ok(Place {
                    queue: Some(self.clone()),
                });
            }
            let line = match who {
                Priority::Known => &mut lines.known,
                Priority::Anonymous => &mut lines.anonymous,
            };
            // Waiters that gave up do not hold places in line.
            line.retain(|tx| !tx.is_closed());
            if line.len() >= self.waiting {
                return Err(Full);
            }
            let (tx, rx) = oneshot::channel();
            line.push_back(tx);
            rx
        };
        // A sender is dropped only by `hand_on` after a send, so this is
        // the place; `Full` would only mean the queue itself is gone.
        rx.await.map_err(|_| Full)
    }

    /// Passes a freed place to the first waiter, known devices first.
    fn hand_on(self: &Arc<Self>) {
        let mut lines = self.lock();
        loop {
            let next = lines
                .known
                .pop_front()
                .or_else(|| lines.anonymous.pop_front());
            let Some(tx) = next else {
                lines.running -= 1;
                return;
            };
            let place = Place {
                queue: Some(self.clone()),
            };
            match tx.send(place) {
                Ok(()) => return,
                // That waiter gave up: defuse the returned place, try the next.
                Err(mut place) => place.queue = None,
            }
        }
    }

    /// Running and waiting (known, anonymous), for tests and metrics.
    pub fn load(&self) -> (usize, usize, usize) {
        let l = self.lock();
        (l.running, l.known.len(), l.anonymous.len())
    }
}

/// One running piece of work; its drop lets the next one in.
pub struct Place {
    queue: Option<Arc<WorkQueue>>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(q) = self.queue.take() {
            q.hand_on();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_line_is_bounded_and_refuses_at_once() {
        let q = WorkQueue::new(1, 2);
        let running = q.enter(Priority::Anonymous).await.unwrap();
        let a = tokio::spawn({
            let q = q.clone();
            async move { q.enter(Priority::Anonymous).await.map(drop) }
        });
        let b = tokio::spawn({
            let q = q.clone();
            async move { q.enter(Priority::Anonymous).await.map(drop) }
        });
        while q.load().2 < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(q.enter(Priority::Anonymous).await.err(), Some(Full));
        drop(running);
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
        assert_eq!(q.load(), (0, 0, 0));
    }

    #[tokio::test]
    async fn known_devices_go_first_and_have_their_own_line() {
        let q = WorkQueue::new(1, 1);
        let running = q.enter(Priority::Anonymous).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |who: Priority, name: &'static str| {
            let q = q.clone();
            let order = order.clone();
            tokio::spawn(async move {
                let place = q.enter(who).await.unwrap();
                order.lock().unwrap().push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
                drop(place);
            })
        };
        let anon = spawn(Priority::Anonymous, "anonymous");
        while q.load().2 < 1 {
            tokio::task::yield_now().await;
        }
        // The anonymous line is full; the known one is not.
        assert_eq!(q.enter(Priority::Anonymous).await.err(), Some(Full));
        let known = spawn(Priority::Known, "known");
        while q.load().1 < 1 {
            tokio::task::yield_now().await;
        }
        drop(running);
        anon.await.unwrap();
        known.await.unwrap();
        assert_eq!(*order.lock().unwrap(), ["known", "anonymous"]);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_passes_its_place_on() {
        let q = WorkQueue::new(1, 4);
        let running = q.enter(Priority::Anonymous).await.unwrap();
        let quitter = tokio::spawn({
            let q = q.clone();
            async move { q.enter(Priority::Anonymous).await.map(drop) }
        });
        while q.load().2 < 1 {
            tokio::task::yield_now().await;
        }
        quitter.abort();
        let _ = quitter.await;
        drop(running);
        // The place was not lost with the quitter.
        let again = tokio::time::timeout(Duration::from_secs(1), q.enter(Priority::Anonymous))
            .await
            .expect("the place came back")
            .unwrap();
        drop(again);
        assert_eq!(q.load(), (0, 0, 0));
    }
}
