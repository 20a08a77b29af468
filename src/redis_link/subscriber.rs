//! One thread per edge listening on Redis pub/sub channels (revocations),
//! reconnecting by itself. A message missed while disconnected cannot be
//! replayed, so every (re)connection is reported: the listener then drops
//! what it cached, as if told that everything changed.

use super::RedisLink;
use std::sync::Arc;
use std::time::Duration;

/// What a subscriber is told.
pub trait Listener: Send + Sync + 'static {
    /// Subscribed (first time or again): messages may have been missed.
    fn connected(&self);
    /// A message on `channel`.
    fn message(&self, channel: &str, payload: &[u8]);
}

/// Waits between reconnection attempts.
const RETRY: Duration = Duration::from_millis(500);

/// Starts the thread listening on `channels` for `listener`.
pub fn start(
    link: Arc<RedisLink>,
    name: &str,
    channels: Vec<String>,
    listener: Arc<dyn Listener>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("esprit-edge-{name}"))
        .spawn(move || {
            loop {
                if let Err(e) = listen(&link, &channels, listener.as_ref()) {
                    tracing::debug!(target: "storage", error = %e, "subscriber disconnected; reconnecting");
                }
                std::thread::sleep(RETRY);
            }
        })
        .map(|_| ())
}

fn listen(link: &RedisLink, channels: &[String], listener: &dyn Listener) -> Result<(), String> {
    let mut conn = link.dedicated().map_err(|e| e.to_string())?;
    let mut ps = conn.as_pubsub();
    // A read timeout, set first so a Redis that accepts but never answers
    // cannot hold the SUBSCRIBE forever, and so a silently dead peer is
    // noticed by the PING below.
    ps.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    for c in channels {
        ps.subscribe(c).map_err(|e| e.to_string())?;
    }
    listener.connected();
    loop {
        match ps.get_message() {
            Ok(msg) => listener.message(msg.get_channel_name(), msg.get_payload_bytes()),
            Err(e) if e.is_timeout() => {
                // Quiet for 5 s: make sure the connection still works.
                ps.ping::<String>().map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
