//! Live delivery: each event is rendered once and shared (`Arc`) by every
//! subscriber through bounded broadcast rings, one per channel plus one for
//! "every channel". A subscriber that falls a whole ring behind is told it
//! lagged and is disconnected; it reconnects and replays from the store, so
//! memory never grows with a slow reader.

use super::store::Channels;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// An event as delivered live: its id, channel and ready SSE frame.
#[derive(Debug)]
pub struct Live {
    /// Global id (for de-duplication against replay).
    pub id: u64,
    /// The channel.
    pub npc: String,
    /// The SSE frame.
    pub frame: Bytes,
}

/// The broadcast rings.
pub struct Fanout {
    capacity: usize,
    all: broadcast::Sender<Arc<Live>>,
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<Live>>>>,
    /// Whether every event stored from now on will be published here. The
    /// local journal publishes what it stores, so it starts true; a shared
    /// store's reader sets it once it knows where it follows from.
    live: std::sync::atomic::AtomicBool,
}

/// One subscriber's view.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Live>>,
    capacity: usize,
    /// Set when several channels share the "all" ring and need filtering.
    filter: Option<Vec<String>>,
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    /// An event for it.
    Event(Arc<Live>),
    /// It fell more than the ring behind: disconnect it.
    Lagged,
    /// The hub is gone.
    Closed,
}

impl Fanout {
    /// Rings hold `capacity` events: how far a subscriber may fall behind.
    pub fn new(capacity: usize) -> Self {
        let (all, _) = broadcast::channel(capacity);
        Self {
            capacity,
            all,
            channels: Mutex::new(HashMap::new()),
            live: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// A fan-out fed by a reader that is not following yet (Redis): until
    /// `set_live`, a new subscriber could miss events stored before the
    /// reader found its place, so streams are refused.
    pub fn awaiting_reader(capacity: usize) -> Self {
        let f = Self::new(capacity);
        f.live.store(false, std::sync::atomic::Ordering::Release);
        f
    }

    /// The reader follows the store from a known id on.
    pub fn set_live(&self) {
        self.live.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether a subscriber joining now gets every event stored after it
    /// read its starting point.
    pub fn is_live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Delivers to every subscriber of `ev.npc` and of every channel.
    pub fn publish(&self, ev: Arc<Live>) {
        if let Ok(map) = self.channels.lock()
            && let Some(tx) = map.get(&ev.npc)
        {
            let _ = tx.send(ev.clone());
        }
        let _ = self.all.send(ev);
    }

    /// Subscribes to `channels`: one channel gets its own ring; several share
    /// the "all" ring with a filter.
    pub fn subscribe(&self, channels: &Channels) -> Subscription {
        match channels {
            Channels::Some(list) if list.len() == 1 => match self.channels.lock() {
                Ok(mut map) => {
                    if !map.contains_key(&list[0]) {
                        // Rings for channels nobody listens to any more go, so
                        // made-up `?npc=` names cannot pile up memory.
                        map.retain(|_, tx| tx.receiver_count() > 0);
                    }
                    let rx = map
                        .entry(list[0].clone())
                        .or_insert_with(|| broadcast::channel(self.capacity).0)
                        .subscribe();
                    Subscription {
                        rx,
                        capacity: self.capacity,
                        filter: None,
                    }
                }
                Err(_) => Subscription {
                    rx: self.all.subscribe(),
                    capacity: self.capacity,
                    filter: Some(list.clone()),
                },
            },
            Channels::Some(list) => Subscription {
                rx: self.all.subscribe(),
                capacity: self.capacity,
                filter: Some(list.clone()),
            },
            Channels::All => Subscription {
                rx: self.all.subscribe(),
                capacity: self.capacity,
                filter: None,
            },
        }
    }

    /// Current subscribers, for logs and metrics.
    pub fn subscribers(&self) -> usize {
        let per_channel: usize = self
            .channels
            .lock()
            .map(|m| m.values().map(|s| s.receiver_count()).sum())
            .unwrap_or(0);
        per_channel + self.all.receiver_count()
    }
}

impl Subscription {
    /// Whether it has fallen a whole queue behind (checked while its writes are
    /// blocked, so a reader that stopped reading is cut off, not waited for).
    pub fn lagging(&self) -> bool {
        self.rx.len() >= self.capacity
    }

    /// Waits for the next event this subscriber wants.
    pub async fn next(&mut self) -> Next {
        loop {
            match self.rx.recv().await {
                Ok(ev) => {
                    if self
                        .filter
                        .as_ref()
                        .is_none_or(|f| f.iter().any(|n| *n == ev.npc))
                    {
                        return Next::Event(ev);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Next::Lagged,
                Err(broadcast::error::RecvError::Closed) => return Next::Closed,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: u64, npc: &str) -> Arc<Live> {
        Arc::new(Live {
            id,
            npc: npc.into(),
            frame: Bytes::from(format!("id: {id}\n\n")),
        })
    }

    #[tokio::test]
    async fn routes_by_channel_and_filters() {
        let f = Fanout::new(8);
        let mut a = f.subscribe(&Channels::Some(vec!["a".into()]));
        let mut ab = f.subscribe(&Channels::Some(vec!["a".into(), "b".into()]));
        let mut all = f.subscribe(&Channels::All);
        f.publish(live(1, "c"));
        f.publish(live(2, "b"));
        f.publish(live(3, "a"));
        assert!(matches!(a.next().await, Next::Event(e) if e.id == 3));
        assert!(matches!(ab.next().await, Next::Event(e) if e.id == 2));
        assert!(matches!(ab.next().await, Next::Event(e) if e.id == 3));
        assert!(matches!(all.next().await, Next::Event(e) if e.id == 1));
        assert_eq!(f.subscribers(), 3);
    }

    #[tokio::test]
    async fn a_reader_a_ring_behind_is_cut_off() {
        let f = Fanout::new(4);
        let mut slow = f.subscribe(&Channels::Some(vec!["a".into()]));
        for i in 0..10 {
            f.publish(live(i, "a"));
        }
        assert!(slow.lagging());
        assert!(matches!(slow.next().await, Next::Lagged));
    }
}
