//! The embedded store: SQLite in WAL mode (bundled, so no system library).
//! Chosen over redb because operators can inspect it with the `sqlite3` shell
//! and because runs are a query (group, latest status), not a key lookup.
//! `synchronous = FULL` makes each commit durable; the writer batches appends
//! into one commit (group commit), so durability does not cost throughput.

use super::event::{Event, EventType, NewEvent};
use super::store::{Channels, EventStore, RunSummary, StoreError};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params, params_from_iter};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    ts     INTEGER NOT NULL,
    npc    TEXT NOT NULL,
    type   TEXT NOT NULL,
    run_id TEXT,
    data   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_npc_id ON events(npc, id);
CREATE INDEX IF NOT EXISTS events_run_id ON events(run_id, id);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    npc        TEXT NOT NULL,
    agent      TEXT,
    status     TEXT NOT NULL,
    started_ts INTEGER NOT NULL,
    updated_ts INTEGER NOT NULL,
    ended_ts   INTEGER
);
CREATE INDEX IF NOT EXISTS runs_started ON runs(started_ts);
CREATE INDEX IF NOT EXISTS runs_npc_started ON runs(npc, started_ts);
";

/// SQLite-backed [`EventStore`]: one writer connection, a few readers.
pub struct SqliteStore {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

fn err(what: &'static str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store; an unwritable directory or a
    /// corrupt file is an error naming the file.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| err("cannot create the directory of", path, e))?;
        }
        let conn = Connection::open(path).map_err(|e| err("cannot open", path, e))?;
        crate::private_file::make_private(path);
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| err("cannot configure", path, e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(|e| err("not a usable SQLite database:", path, e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(err("cannot switch to WAL mode:", path, mode));
        }
        conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF;")
            .map_err(|e| err("cannot configure", path, e))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| err("cannot check", path, e))?;
        if check != "ok" {
            return Err(err("corrupt:", path, check));
        }
        conn.execute_batch(SCHEMA)
            .map_err(|e| err("cannot create the schema in", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = match self.readers.lock().ok().and_then(|mut v| v.pop()) {
            Some(c) => c,
            None => Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| err("cannot open a reader on", &self.path, e))?,
        };
        let out = f(&conn).map_err(|e| err("cannot read", &self.path, e));
        if let Ok(mut v) = self.readers.lock()
            && v.len() < 8
        {
            v.push(conn);
        }
        out
    }
}

fn row_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    let kind: String = r.get(3)?;
    let data: String = r.get(5)?;
    Ok(Event {
        id: r.get::<_, i64>(0)? as u64,
        ts: r.get(1)?,
        npc: r.get(2)?,
        kind: EventType::parse(&kind).unwrap_or(EventType::Step),
        run_id: r.get(4)?,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::Null),
    })
}

const COLS: &str = "id, ts, npc, type, run_id, data";

fn placeholders(n: usize) -> String {
    vec!["?"; n].join(",")
}

impl EventStore for SqliteStore {
    /// A fresh read-only connection, not a pooled one: a pooled reader's
    /// cache can hide a file that was replaced or damaged on disk.
    fn ping(&self) -> Result<(), StoreError> {
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err("cannot open a reader on", &self.path, e))?;
        // A writer's checkpoint may hold a lock for a moment: not "not ready".
        c.busy_timeout(std::time::Duration::from_millis(500))
            .map_err(|e| err("cannot open a reader on", &self.path, e))?;
        c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |_| Ok(()))
            .map_err(|e| err("cannot read", &self.path, e))
    }

    fn last_id(&self) -> Result<u64, StoreError> {
        self.read(|c| {
            c.query_row("SELECT COALESCE(MAX(id), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
        })
        .map(|id| id as u64)
    }

    fn append(&self, batch: &[NewEvent]) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn
            .transaction()
            .map_err(|e| err("cannot begin a write on", &self.path, e))?;
        let mut out = Vec::with_capacity(batch.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (ts, npc, type, run_id, data) VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(|e| err("cannot prepare a write on", &self.path, e))?;
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO runs (run_id, npc, agent, status, started_ts, updated_ts, ended_ts)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6)
                     ON CONFLICT(run_id) DO UPDATE SET
                        status = excluded.status,
                        updated_ts = excluded.updated_ts,
                        agent = COALESCE(runs.agent, excluded.agent),
                        ended_ts = COALESCE(excluded.ended_ts, runs.ended_ts)",
                )
                .map_err(|e| err("cannot prepare a write on", &self.path, e))?;
            for ev in batch {
                let data = ev.data.to_string();
                insert
                    .execute(params![
                        ev.ts,
                        ev.npc.as_str(),
                        ev.kind.as_str(),
                        ev.run_id.as_deref(),
                        data
                    ])
                    .map_err(|e| err("cannot write to", &self.path, e))?;
                let id = tx.last_insert_rowid() as u64;
                if let Some(run) = &ev.run_id {
                    let ended =
                        matches!(ev.kind, EventType::Done | EventType::Error).then_some(ev.ts);
                    upsert
                        .execute(params![
                            run.as_str(),
                            ev.npc.as_str(),
                            ev.agent,
                            ev.kind.run_status(),
                            ev.ts,
                            ended
                        ])
                        .map_err(|e| err("cannot write to", &self.path, e))?;
                }
                out.push(Event {
                    id,
                    ts: ev.ts,
                    npc: ev.npc.to_string(),
                    kind: ev.kind,
                    run_id: ev.run_id.as_ref().map(ToString::to_string),
                    data: ev.data.clone(),
                });
            }
        }
        tx.commit()
            .map_err(|e| err("cannot commit to", &self.path, e))?;
        Ok(out)
    }

    fn after(
        &self,
        channels: &Channels,
        after_id: u64,
        limit: usize,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(|c| match channels {
            Channels::All => {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {COLS} FROM events WHERE id > ?1 ORDER BY id LIMIT ?2"
                ))?;
                st.query_map(params![after_id as i64, limit as i64], row_event)?
                    .collect()
            }
            Channels::Some(npcs) => {
                let sql = format!(
                    "SELECT {COLS} FROM events WHERE npc IN ({}) AND id > ? ORDER BY id LIMIT ?",
                    placeholders(npcs.len())
                );
                let mut st = c.prepare(&sql)?;
                let mut args: Vec<rusqlite::types::Value> =
                    npcs.iter().map(|n| n.clone().into()).collect();
                args.push((after_id as i64).into());
                args.push((limit as i64).into());
                st.query_map(params_from_iter(args), row_event)?.collect()
            }
        })
    }

    fn recent(&self, channels: &Channels, limit: usize) -> Result<Vec<Event>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut events = self.read(|c| match channels {
            Channels::All => {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {COLS} FROM events ORDER BY id DESC LIMIT ?1"
                ))?;
                st.query_map(params![limit as i64], row_event)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
            Channels::Some(npcs) => {
                let sql = format!(
                    "SELECT {COLS} FROM events WHERE npc IN ({}) ORDER BY id DESC LIMIT ?",
                    placeholders(npcs.len())
                );
                let mut st = c.prepare(&sql)?;
                let mut args: Vec<rusqlite::types::Value> =
                    npcs.iter().map(|n| n.clone().into()).collect();
                args.push((limit as i64).into());
                st.query_map(params_from_iter(args), row_event)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            }
        })?;
        events.reverse();
        Ok(events)
    }

    fn channels(&self) -> Result<Vec<String>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached("SELECT DISTINCT npc FROM events")?;
            st.query_map([], |r| r.get(0))?.collect()
        })
    }

    fn nth_newest_id(&self, channels: &Channels, n: usize) -> Result<Option<u64>, StoreError> {
        if n == 0 {
            return Ok(None);
        }
        let offset = (n - 1) as i64;
        let id: Option<i64> = self.read(|c| match channels {
            Channels::All => c
                .query_row(
                    "SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1",
                    params![offset],
                    |r| r.get(0),
                )
                .optional(),
            Channels::Some(npcs) => {
                let sql = format!(
                    "SELECT id FROM events WHERE npc IN ({}) ORDER BY id DESC LIMIT 1 OFFSET ?",
                    placeholders(npcs.len())
                );
                let mut args: Vec<rusqlite::types::Value> =
                    npcs.iter().map(|n| n.clone().into()).collect();
                args.push(offset.into());
                c.query_row(&sql, params_from_iter(args), |r| r.get(0))
                    .optional()
            }
        })?;
        Ok(id.map(|i| i as u64))
    }

    fn runs(&self, npc: Option<&str>, limit: usize) -> Result<Vec<RunSummary>, StoreError> {
        let row = |r: &rusqlite::Row<'_>| {
            Ok(RunSummary {
                run_id: r.get(0)?,
                npc: r.get(1)?,
                agent: r.get(2)?,
                status: r.get(3)?,
                started_at: r.get(4)?,
                updated_at: r.get(5)?,
                ended_at: r.get(6)?,
            })
        };
        const RUN_COLS: &str = "run_id, npc, agent, status, started_ts, updated_ts, ended_ts";
        self.read(|c| match npc {
            Some(n) => {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {RUN_COLS} FROM runs WHERE npc = ?1 ORDER BY started_ts DESC, run_id LIMIT ?2"
                ))?;
                st.query_map(params![n, limit as i64], row)?.collect()
            }
            None => {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {RUN_COLS} FROM runs ORDER BY started_ts DESC, run_id LIMIT ?1"
                ))?;
                st.query_map(params![limit as i64], row)?.collect()
            }
        })
    }

    fn run_events(&self, run_id: &str) -> Result<Vec<Event>, StoreError> {
        self.read(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {COLS} FROM events WHERE run_id = ?1 ORDER BY id DESC LIMIT 1000"
            ))?;
            let mut evs = st
                .query_map(params![run_id], row_event)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            evs.reverse();
            Ok(evs)
        })
    }

    fn prune(&self, before_ts: i64, keep_per_channel: usize) -> Result<u64, StoreError> {
        let mut guard = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        // One transaction: one fsync, and appends wait for one short commit.
        let conn = guard
            .transaction()
            .map_err(|e| err("cannot prune", &self.path, e))?;
        let mut removed = conn
            .execute("DELETE FROM events WHERE ts < ?1", params![before_ts])
            .map_err(|e| err("cannot prune", &self.path, e))? as u64;
        let npcs: Vec<String> = {
            let mut st = conn
                .prepare("SELECT npc FROM events GROUP BY npc HAVING COUNT(*) > ?1")
                .map_err(|e| err("cannot prune", &self.path, e))?;
            st.query_map(params![keep_per_channel as i64], |r| r.get(0))
                .and_then(|rows| rows.collect())
                .map_err(|e| err("cannot prune", &self.path, e))?
        };
        for npc in npcs {
            let cutoff: Option<i64> = conn
                .query_row(
                    "SELECT id FROM events WHERE npc = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2",
                    params![npc, keep_per_channel as i64 - 1],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| err("cannot prune", &self.path, e))?;
            if let Some(cutoff) = cutoff {
                removed +=
                    conn.execute(
                        "DELETE FROM events WHERE npc = ?1 AND id < ?2",
                        params![npc, cutoff],
                    )
                    .map_err(|e| err("cannot prune", &self.path, e))? as u64;
            }
        }
        conn.execute(
            "DELETE FROM runs WHERE NOT EXISTS (SELECT 1 FROM events WHERE events.run_id = runs.run_id)",
            [],
        )
        .map_err(|e| err("cannot prune", &self.path, e))?;
        conn.commit()
            .map_err(|e| err("cannot prune", &self.path, e))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::ids::{Npc, RunId};

    fn ev(npc: &str, kind: EventType, run: Option<&str>, ts: i64) -> NewEvent {
        NewEvent {
            ts,
            npc: Npc::parse(npc).unwrap(),
            kind,
            run_id: run.map(|r| RunId::parse(r).unwrap()),
            agent: None,
            data: serde_json::json!({"n": ts}),
        }
    }

    #[test]
    fn append_replay_runs_and_prune() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("hub.sqlite3")).unwrap();
        let stored = s
            .append(&[
                ev("a", EventType::Started, Some("r1"), 1),
                ev("b", EventType::Step, None, 2),
                ev("a", EventType::Done, Some("r1"), 3),
            ])
            .unwrap();
        let ids: Vec<u64> = stored.iter().map(|e| e.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let only_a = s.after(&Channels::Some(vec!["a".into()]), 0, 100).unwrap();
        assert_eq!(only_a.len(), 2);
        assert_eq!(s.after(&Channels::All, ids[0], 100).unwrap().len(), 2);
        assert_eq!(
            s.recent(&Channels::All, 2)
                .unwrap()
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            &ids[1..]
        );
        let runs = s.runs(None, 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, "done");
        assert_eq!(runs[0].ended_at, Some(3));
        assert_eq!(s.run_events("r1").unwrap().len(), 2);

        s.append(
            &(0..5)
                .map(|i| ev("c", EventType::Step, None, 100 + i))
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert_eq!(s.prune(2, 3).unwrap(), 1 + 2);
        assert_eq!(
            s.after(&Channels::Some(vec!["c".into()]), 0, 100)
                .unwrap()
                .len(),
            3
        );
        // Ids are never reused after a prune.
        let next = s.append(&[ev("a", EventType::Step, None, 200)]).unwrap();
        assert!(next[0].id > *ids.last().unwrap() + 5);
    }

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("hub.sqlite3");
        std::fs::write(&p, vec![b'x'; 8192]).unwrap();
        let e = SqliteStore::open(&p).err().unwrap().to_string();
        assert!(e.contains("hub.sqlite3"), "{e}");
    }
}
