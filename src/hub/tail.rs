//! The live half of the Redis backend: one reader per edge follows the
//! all-channel stream (`XREAD BLOCK`) and hands each event to this edge's
//! fan-out, whichever edge wrote it. Subscribers share it: an edge holds one
//! Redis connection for live events, not one per subscriber.
//!
//! It resumes after the last id it delivered, so a Redis restart or a
//! dropped connection costs a delay, never an event; a subscriber that
//! replayed past an id meanwhile skips it (see `sse`).

use super::fanout::{Fanout, Live};
use super::redis_store::{RedisStore, stream_id};
use super::store::EventStore;
use crate::redis_link::RedisLink;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How long one `XREAD` waits for new entries.
const BLOCK: Duration = Duration::from_secs(1);
/// Entries per read.
const COUNT: usize = 512;

/// Starts the reader thread for `store`'s all-channel stream.
pub fn start(
    link: Arc<RedisLink>,
    store: Arc<RedisStore>,
    fanout: Arc<Fanout>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("esprit-edge-tail".into())
        .spawn(move || {
            let stream = RedisStore::all_key(&link);
            // Where to resume: the newest stored id once Redis answers.
            let mut last: Option<u64> = None;
            loop {
                if last.is_none() {
                    match store.last_id() {
                        Ok(id) => {
                            // From here on nothing stored is missed, so
                            // streams may start (they were refused).
                            last = Some(id);
                            fanout.set_live();
                        }
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(500));
                            continue;
                        }
                    }
                }
                if let Err(e) = follow(&link, &stream, &mut last, &fanout) {
                    tracing::debug!(target: "hub", error = %e, "live reader disconnected; resuming");
                    std::thread::sleep(Duration::from_millis(500));
                    // A Redis that came back without its data (no
                    // persistence) starts ids again: follow it from there,
                    // or no live event would be newer than `last`.
                    if let (Ok(newest), Some(seen)) = (store.last_id(), last)
                        && newest < seen
                    {
                        tracing::error!(target: "hub", newest, seen, "Redis lost hub events (restarted without persistence?); following from its newest");
                        last = Some(newest);
                    }
                }
            }
        })
        .map(|_| ())
}

type Reply = Vec<(String, Vec<(String, HashMap<String, String>)>)>;

fn follow(
    link: &RedisLink,
    stream: &str,
    last: &mut Option<u64>,
    fanout: &Fanout,
) -> Result<(), String> {
    let mut conn = link.dedicated().map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(
        BLOCK + link.settings().timeout + Duration::from_secs(1),
    ))
    .map_err(|e| e.to_string())?;
    loop {
        let from = stream_id(last.unwrap_or(0));
        let reply: Option<Reply> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(COUNT)
            .arg("BLOCK")
            .arg(BLOCK.as_millis() as u64)
            .arg("STREAMS")
            .arg(stream)
            .arg(&from)
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        for (_, entries) in reply.unwrap_or_default() {
            for entry in entries {
                let Some(ev) = super::redis_store::decode_entry(entry) else {
                    continue;
                };
                *last = Some(ev.id);
                fanout.publish(Arc::new(Live {
                    id: ev.id,
                    npc: ev.npc.clone(),
                    frame: ev.sse_frame(),
                }));
            }
        }
    }
}
