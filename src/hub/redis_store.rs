//! Hub events in Redis Streams, for several edges: one stream of every
//! event (`<prefix>:events`) and one per channel (`<prefix>:events:ch:<npc>`),
//! written together by one Lua script, which Redis runs atomically. The
//! script takes the next id from a counter and gives the entry that id in
//! both streams (`0-<id>`), so ids are small integers (safe as JSON numbers),
//! the same on every edge, and `Last-Event-ID` replays exactly across edges.
//! Runs are a hash each, indexed by start time; a run's event ids are a list.
//!
//! Retention: each channel stream is capped at `retention_per_channel` as it
//! is written (`MAXLEN ~`, which trims whole nodes, so a few more may stay);
//! age, and the all-channel stream's share of the count cap, are trimmed by
//! the hub's minute prune (`XTRIM MINID`).

use super::event::{Event, EventType, NewEvent};
use super::store::{Channels, EventStore, RunSummary, StoreError};
use crate::redis_link::RedisLink;
use std::collections::HashMap;
use std::sync::Arc;

/// Appends a batch of events, atomically: Redis runs a script whole, so a
/// batch is stored entirely or (a lost connection before it ran) not at
/// all, as a SQLite transaction is. Per event, 8 KEYS: seq, all, channel
/// stream, channels set, run hash, runs index, the npc's runs index, the
/// run's event list; 9 ARGV: payload, npc, per-channel cap, run id or '',
/// status, ts, agent or '', '1' when the run ends, a fixed id or ''
/// (migration). Returns the ids.
/// (EVAL with the source, not EVALSHA: a Redis restarted since the last
/// load would fail with NOSCRIPT; Redis caches the compiled script by its
/// hash either way.)
const APPEND: &str = r"local ids = {}
          for i = 0, #ARGV / 9 - 1 do
            local k, a = i * 8, i * 9
            if ARGV[a + 9] ~= '' then
              redis.call('SET', KEYS[k + 1], tonumber(ARGV[a + 9]) - 1)
            end
            local id = redis.call('INCR', KEYS[k + 1])
            local sid = '0-' .. id
            redis.call('XADD', KEYS[k + 2], sid, 'e', ARGV[a + 1])
            redis.call('XADD', KEYS[k + 3], 'MAXLEN', '~', ARGV[a + 3], sid, 'e', ARGV[a + 1])
            redis.call('SADD', KEYS[k + 4], ARGV[a + 2])
            if ARGV[a + 4] ~= '' then
              if redis.call('EXISTS', KEYS[k + 5]) == 0 then
                redis.call('HSET', KEYS[k + 5], 'npc', ARGV[a + 2], 'started', ARGV[a + 6])
                redis.call('ZADD', KEYS[k + 6], ARGV[a + 6], ARGV[a + 4])
                redis.call('ZADD', KEYS[k + 7], ARGV[a + 6], ARGV[a + 4])
              end
              redis.call('HSET', KEYS[k + 5], 'status', ARGV[a + 5], 'updated', ARGV[a + 6])
              if ARGV[a + 7] ~= '' and redis.call('HEXISTS', KEYS[k + 5], 'agent') == 0 then
                redis.call('HSET', KEYS[k + 5], 'agent', ARGV[a + 7])
              end
              if ARGV[a + 8] == '1' then redis.call('HSET', KEYS[k + 5], 'ended', ARGV[a + 6]) end
              redis.call('RPUSH', KEYS[k + 8], id)
              redis.call('LTRIM', KEYS[k + 8], -1000, -1)
            end
            ids[#ids + 1] = id
          end
          return ids";

/// The shared event store.
pub struct RedisStore {
    link: Arc<RedisLink>,
    /// `hub.retention_per_channel`, applied as events are written.
    keep_per_channel: usize,
}

/// The stream id of event `id`.
pub fn stream_id(id: u64) -> String {
    format!("0-{id}")
}

/// The event id of stream id `0-<id>`.
fn event_id(sid: &str) -> Option<u64> {
    sid.strip_prefix("0-")?.parse().ok()
}

/// What an entry holds besides its id.
#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    ts: i64,
    npc: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(rename = "runId", skip_serializing_if = "Option::is_none")]
    run_id: Option<String>,
    data: serde_json::Value,
}

/// One stream entry: its id and fields.
pub type Entry = (String, HashMap<String, String>);

/// An entry as `XRANGE` and `XREAD` give it, as an event.
pub fn decode_entry(entry: Entry) -> Option<Event> {
    decode(entry)
}

fn decode(entry: Entry) -> Option<Event> {
    let id = event_id(&entry.0)?;
    let p: Payload = serde_json::from_str(entry.1.get("e")?).ok()?;
    Some(Event {
        id,
        ts: p.ts,
        npc: p.npc,
        kind: EventType::parse(&p.kind).unwrap_or(EventType::Step),
        run_id: p.run_id,
        data: p.data,
    })
}

impl RedisStore {
    /// The store on `link`, capping channels at `keep_per_channel`.
    pub fn new(link: Arc<RedisLink>, keep_per_channel: usize) -> Self {
        Self {
            link,
            keep_per_channel: keep_per_channel.max(1),
        }
    }

    /// The all-channel stream (the edges' live readers follow it).
    pub fn all_key(link: &RedisLink) -> String {
        link.key(&["events"])
    }

    fn channel_key(&self, npc: &str) -> String {
        self.link.key(&["events", "ch", npc])
    }

    fn run<T>(
        &self,
        f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        self.link
            .run(f)
            .map_err(|e| StoreError::Shared(e.to_string()))
    }

    fn streams(&self, channels: &Channels) -> Vec<String> {
        match channels {
            Channels::All => vec![Self::all_key(&self.link)],
            Channels::Some(npcs) => npcs.iter().map(|n| self.channel_key(n)).collect(),
        }
    }

    /// `XRANGE` (or `XREVRANGE`) over each stream, merged by id.
    fn range(
        &self,
        channels: &Channels,
        rev: bool,
        from: &str,
        to: &str,
        count: usize,
    ) -> Result<Vec<Event>, StoreError> {
        let keys = self.streams(channels);
        let pages: Vec<Vec<Entry>> = self.run(|c| {
            let mut p = redis::pipe();
            for k in &keys {
                p.cmd(if rev { "XREVRANGE" } else { "XRANGE" })
                    .arg(k)
                    .arg(from)
                    .arg(to)
                    .arg("COUNT")
                    .arg(count);
            }
            p.query(c)
        })?;
        let mut events: Vec<Event> = pages.into_iter().flatten().filter_map(decode).collect();
        events.sort_by_key(|e| e.id);
        if rev {
            events.reverse();
        }
        events.truncate(count);
        Ok(events)
    }

    /// Appends events read from another store under their own ids (for
    /// `esprit-edge migrate`), oldest first, into an empty store, and moves
    /// the id counter past them.
    pub fn import(
        &self,
        events: &[Event],
        agents: &HashMap<String, String>,
    ) -> Result<(), StoreError> {
        for chunk in events.chunks(500) {
            let batch: Vec<(&Event, Option<&str>, Option<u64>)> = chunk
                .iter()
                .map(|ev| {
                    let agent = ev.run_id.as_ref().and_then(|r| agents.get(r));
                    (ev, agent.map(String::as_str), Some(ev.id))
                })
                .collect();
            let cmd = self.append_cmd(&batch);
            self.run(|c| cmd.query::<Vec<u64>>(c))?;
        }
        Ok(())
    }

    /// The one script call that appends `events` (each with its run's
    /// agent and, migrating, its fixed id).
    fn append_cmd(&self, events: &[(&Event, Option<&str>, Option<u64>)]) -> redis::Cmd {
        let mut keys: Vec<String> = Vec::with_capacity(events.len() * 8);
        let mut argv: Vec<String> = Vec::with_capacity(events.len() * 9);
        let seq = self.link.key(&["events", "seq"]);
        let all = Self::all_key(&self.link);
        let channels = self.link.key(&["channels"]);
        let runs = self.link.key(&["runs"]);
        for (ev, agent, fixed_id) in events {
            let payload = Payload {
                ts: ev.ts,
                npc: ev.npc.clone(),
                kind: ev.kind.as_str().to_string(),
                run_id: ev.run_id.clone(),
                data: ev.data.clone(),
            };
            let run = ev.run_id.clone().unwrap_or_default();
            let ends = matches!(ev.kind, EventType::Done | EventType::Error);
            keys.extend([
                seq.clone(),
                all.clone(),
                self.channel_key(&ev.npc),
                channels.clone(),
                self.link.key(&["run", &run]),
                runs.clone(),
                self.link.key(&["runs", "npc", &ev.npc]),
                self.link.key(&["run-events", &run]),
            ]);
            argv.extend([
                serde_json::to_string(&payload).unwrap_or_default(),
                ev.npc.clone(),
                self.keep_per_channel.to_string(),
                run,
                ev.kind.run_status().to_string(),
                ev.ts.to_string(),
                agent.unwrap_or("").to_string(),
                if ends { "1" } else { "0" }.to_string(),
                fixed_id.map(|i| i.to_string()).unwrap_or_default(),
            ]);
        }
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPEND).arg(keys.len()).arg(keys).arg(argv);
        cmd
    }
}

impl EventStore for RedisStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.link
            .ping()
            .map_err(|e| StoreError::Shared(e.to_string()))
    }

    /// The id counter, not the newest entry: retention may have emptied
    /// the streams, and the script takes an id and writes its entries in
    /// one step, so no event at or below the counter can appear later.
    fn last_id(&self) -> Result<u64, StoreError> {
        let seq = self.link.key(&["events", "seq"]);
        let last: Option<u64> = self.run(|c| redis::cmd("GET").arg(&seq).query(c))?;
        Ok(last.unwrap_or(0))
    }

    fn append(&self, batch: &[NewEvent]) -> Result<Vec<Event>, StoreError> {
        let events: Vec<(Event, Option<String>)> = batch
            .iter()
            .map(|ev| {
                (
                    Event {
                        id: 0,
                        ts: ev.ts,
                        npc: ev.npc.to_string(),
                        kind: ev.kind,
                        run_id: ev.run_id.as_ref().map(ToString::to_string),
                        data: ev.data.clone(),
                    },
                    ev.agent.clone(),
                )
            })
            .collect();
        let batch: Vec<(&Event, Option<&str>, Option<u64>)> = events
            .iter()
            .map(|(ev, agent)| (ev, agent.as_deref(), None))
            .collect();
        let cmd = self.append_cmd(&batch);
        let ids: Vec<u64> = self.run(|c| cmd.query(c))?;
        if ids.len() != events.len() {
            return Err(StoreError::Shared(format!(
                "Redis answered {} ids for {} events",
                ids.len(),
                events.len()
            )));
        }
        Ok(events
            .into_iter()
            .zip(ids)
            .map(|((mut ev, _), id)| {
                ev.id = id;
                ev
            })
            .collect())
    }

    fn after(
        &self,
        channels: &Channels,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.range(
            channels,
            false,
            &format!("({}", stream_id(after_id)),
            "+",
            limit,
        )
    }

    fn recent(&self, channels: &Channels, limit: usize) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut events = self.range(channels, true, "+", "-", limit)?;
        events.reverse();
        Ok(events)
    }

    fn nth_newest_id(&self, channels: &Channels, n: usize) -> Result<Option<u64>, StoreError> {
        if n == 0 {
            return Ok(None);
        }
        let events = self.range(channels, true, "+", "-", n)?;
        Ok(events.get(n - 1).map(|e| e.id))
    }

    fn channels(&self) -> Result<Vec<String>, StoreError> {
        let key = self.link.key(&["channels"]);
        self.run(|c| redis::cmd("SMEMBERS").arg(&key).query(c))
    }

    fn runs(&self, npc: Option<&str>, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let index = match npc {
            Some(n) => self.link.key(&["runs", "npc", n]),
            None => self.link.key(&["runs"]),
        };
        let ids: Vec<String> = self.run(|c| {
            redis::cmd("ZREVRANGE")
                .arg(&index)
                .arg(0)
                .arg(limit - 1)
                .query(c)
        })?;
        let rows: Vec<HashMap<String, String>> = self.run(|c| {
            let mut p = redis::pipe();
            for id in &ids {
                p.cmd("HGETALL").arg(self.link.key(&["run", id]));
            }
            p.query(c)
        })?;
        let num =
            |h: &HashMap<String, String>, k: &str| h.get(k).and_then(|v| v.parse::<i64>().ok());
        Ok(ids
            .into_iter()
            .zip(rows)
            .filter_map(|(run_id, h)| {
                Some(RunSummary {
                    npc: h.get("npc")?.clone(),
                    agent: h.get("agent").cloned(),
                    status: h.get("status")?.clone(),
                    started_at: num(&h, "started")?,
                    updated_at: num(&h, "updated")?,
                    ended_at: num(&h, "ended"),
                    run_id,
                })
            })
            .collect())
    }

    /// From the run's own channel stream, which keeps as many events as
    /// SQLite keeps per channel (the all-channel stream may have lost a
    /// quiet channel's events to a busy one's).
    fn run_events(&self, run_id: &str) -> Result<Vec<Event>, StoreError> {
        let list = self.link.key(&["run-events", run_id]);
        let run = self.link.key(&["run", run_id]);
        let (npc, ids): (Option<String>, Vec<u64>) = self.run(|c| {
            redis::pipe()
                .cmd("HGET")
                .arg(&run)
                .arg("npc")
                .cmd("LRANGE")
                .arg(&list)
                .arg(0)
                .arg(-1)
                .query(c)
        })?;
        let Some(npc) = npc else {
            return Ok(Vec::new());
        };
        let stream = self.channel_key(&npc);
        let pages: Vec<Vec<Entry>> = self.run(|c| {
            let mut p = redis::pipe();
            for id in &ids {
                let sid = stream_id(*id);
                p.cmd("XRANGE").arg(&stream).arg(&sid).arg(&sid);
            }
            p.query(c)
        })?;
        Ok(pages.into_iter().flatten().filter_map(decode).collect())
    }

    fn prune(&self, before_ts: i64, keep_per_channel: usize) -> Result<u64, StoreError> {
        let all = Self::all_key(&self.link);
        // The oldest event young enough to keep: every id below it goes.
        let mut cutoff: Option<u64> = None;
        let mut from = "-".to_string();
        'scan: loop {
            let page: Vec<Entry> = self.run(|c| {
                redis::cmd("XRANGE")
                    .arg(&all)
                    .arg(&from)
                    .arg("+")
                    .arg("COUNT")
                    .arg(1000)
                    .query(c)
            })?;
            let Some(last) = page.last().map(|e| e.0.clone()) else {
                break;
            };
            for ev in page.into_iter().filter_map(decode) {
                if ev.ts >= before_ts {
                    cutoff = Some(ev.id);
                    break 'scan;
                }
            }
            from = format!("({last}");
        }
        let channels = self.channels()?;
        let minid = match cutoff {
            Some(id) => stream_id(id),
            // Everything is older: nothing below the counter stays.
            None => stream_id(self.last_id()? + 1),
        };
        let removed: Vec<u64> = self.run(|c| {
            let mut p = redis::pipe();
            p.cmd("XTRIM").arg(&all).arg("MINID").arg(&minid);
            for n in &channels {
                p.cmd("XTRIM")
                    .arg(self.channel_key(n))
                    .arg("MINID")
                    .arg(&minid);
                p.cmd("XTRIM")
                    .arg(self.channel_key(n))
                    .arg("MAXLEN")
                    .arg(keep_per_channel);
            }
            // The all-channel stream keeps no more than the channels do together.
            p.cmd("XTRIM")
                .arg(&all)
                .arg("MAXLEN")
                .arg(keep_per_channel.saturating_mul(channels.len().max(1)));
            p.query(c)
        })?;
        // Channels and runs that retention emptied.
        let lens: Vec<u64> = self.run(|c| {
            let mut p = redis::pipe();
            for n in &channels {
                p.cmd("XLEN").arg(self.channel_key(n));
            }
            p.query(c)
        })?;
        let empty: Vec<&String> = channels
            .iter()
            .zip(lens)
            .filter(|(_, l)| *l == 0)
            .map(|(n, _)| n)
            .collect();
        if !empty.is_empty() {
            let key = self.link.key(&["channels"]);
            self.run(|c| redis::cmd("SREM").arg(&key).arg(&empty).query::<()>(c))?;
        }
        let runs = self.link.key(&["runs"]);
        let old: Vec<String> = self.run(|c| {
            redis::cmd("ZRANGEBYSCORE")
                .arg(&runs)
                .arg("-inf")
                .arg(format!("({before_ts}"))
                .query(c)
        })?;
        if !old.is_empty() {
            self.run(|c| {
                let mut p = redis::pipe();
                for id in &old {
                    let run = self.link.key(&["run", id]);
                    if let Ok(npc) = redis::cmd("HGET").arg(&run).arg("npc").query::<String>(c) {
                        p.cmd("ZREM")
                            .arg(self.link.key(&["runs", "npc", &npc]))
                            .arg(id)
                            .ignore();
                    }
                    p.cmd("DEL").arg(&run).ignore();
                    p.cmd("DEL")
                        .arg(self.link.key(&["run-events", id]))
                        .ignore();
                    p.cmd("ZREM").arg(&runs).arg(id).ignore();
                }
                p.query::<()>(c)
            })?;
        }
        // Entries removed from the all-channel stream: each event once.
        Ok(removed.first().copied().unwrap_or(0) + removed.last().copied().unwrap_or(0))
    }

    fn claim(&self, awaiting_id: u64) -> Result<bool, StoreError> {
        let key = self.link.key(&["answered", &awaiting_id.to_string()]);
        // Kept a day: long after any person could click again.
        let set: Option<String> = self.run(|c| {
            redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(86_400)
                .query(c)
        })?;
        Ok(set.is_some())
    }

    fn release(&self, awaiting_id: u64) {
        let key = self.link.key(&["answered", &awaiting_id.to_string()]);
        let _ = self.run(|c| redis::cmd("DEL").arg(&key).query::<i64>(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_map_to_stream_ids_and_back() {
        assert_eq!(stream_id(42), "0-42");
        assert_eq!(event_id("0-42"), Some(42));
        assert_eq!(event_id("1700000000000-0"), None);
        let payload = r#"{"ts":5,"npc":"a","type":"done","runId":"r","data":{"x":1}}"#;
        let ev = decode(("0-7".into(), HashMap::from([("e".into(), payload.into())]))).unwrap();
        assert_eq!(
            (ev.id, ev.kind, ev.run_id.as_deref()),
            (7, EventType::Done, Some("r"))
        );
    }
}
