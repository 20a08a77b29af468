//! `esprit-edge migrate --to redis`: copies this edge's SQLite state into the
//! Redis the config names, so an operator can move to several edges without
//! logging everyone out or losing the hub's history. Sessions and devices
//! keep their keys (the cookies in browsers stay valid) and their times;
//! hub events keep their ids (a client's `Last-Event-ID` stays exact), and
//! the Redis id counter continues after the last of them.
//!
//! Run it with the edge stopped (or before the first Redis edge starts):
//! events posted meanwhile to the SQLite edge would not be copied. Copying
//! sessions and devices again overwrites them with the same values; events
//! are copied only into a Redis that holds none, so ids stay unique.

use crate::auth::devices::Devices;
use crate::auth::service::open_stores;
use crate::auth::sessions::Sessions;
use crate::config::{Config, Storage};
use crate::hub::redis_store::RedisStore;
use crate::hub::sqlite::SqliteStore;
use crate::hub::store::{Channels, EventStore};
use crate::redis_link::RedisLink;
use std::collections::HashMap;
use std::sync::Arc;

/// What was copied.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Copied {
    /// Live sessions.
    pub sessions: usize,
    /// Trusted devices.
    pub devices: usize,
    /// Retained hub events.
    pub events: usize,
    /// Why events were not copied, when they were not.
    pub events_skipped: Option<String>,
}

/// Copies the SQLite stores `config` names into its `[storage]` Redis.
pub fn to_redis(config: &Config, now: i64) -> Result<Copied, String> {
    let Storage::Redis(settings) = &config.storage else {
        return Err(format!(
            "{}: [storage] must name the target: backend = \"redis\" and url (or ESPRIT_REDIS_URL)",
            config.source.display()
        ));
    };
    let link = RedisLink::new(settings).map_err(|e| e.to_string())?;
    link.ping().map_err(|e| e.to_string())?;
    let mut copied = Copied::default();
    let a = &config.auth;
    if a.sessions.exists() {
        let from = Sessions::open(&a.sessions, a.idle_timeout, a.absolute_timeout)
            .map_err(|e| e.to_string())?;
        let (to, devices_to) = open_stores(config, Some(&link)).map_err(|e| e.to_string())?;
        let (idle, absolute) = from.timeouts_ms();
        for (key, s) in from.export().map_err(|e| e.to_string())? {
            // Expired ones stay behind: nobody may present them again.
            if now - s.last_seen > idle || now - s.created > absolute {
                continue;
            }
            to.import(&key, &s).map_err(|e| e.to_string())?;
            copied.sessions += 1;
        }
        let devices_from = Devices::open(&a.sessions, crate::auth::cookies::DEVICE_TTL)
            .map_err(|e| e.to_string())?;
        for (key, user, issued, failures) in devices_from.export(now).map_err(|e| e.to_string())? {
            devices_to
                .import(&key, &user, issued, failures)
                .map_err(|e| e.to_string())?;
            copied.devices += 1;
        }
    }
    if config.hub.store.exists() {
        copy_events(config, &link, &mut copied)?;
    }
    Ok(copied)
}

fn copy_events(config: &Config, link: &Arc<RedisLink>, copied: &mut Copied) -> Result<(), String> {
    let from = SqliteStore::open(&config.hub.store).map_err(|e| e.to_string())?;
    let to = RedisStore::new(link.clone(), config.hub.retention_per_channel);
    let present = to.last_id().map_err(|e| e.to_string())?;
    if present > 0 {
        copied.events_skipped = Some(format!(
            "Redis already holds hub events (newest id {present}); events are copied only into an empty store"
        ));
        return Ok(());
    }
    let agents: HashMap<String, String> = from
        .runs(None, usize::MAX >> 1)
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter_map(|r| Some((r.run_id, r.agent?)))
        .collect();
    let mut after = 0;
    loop {
        let page = from
            .after(&Channels::All, after, 1000)
            .map_err(|e| e.to_string())?;
        let Some(last) = page.last() else {
            break;
        };
        after = last.id;
        to.import(&page, &agents).map_err(|e| e.to_string())?;
        copied.events += page.len();
    }
    Ok(())
}
