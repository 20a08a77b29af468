//! Hub events: what Sim flows post, what the store keeps and what SSE sends.
//! Validation lives here so every entry point (HTTP, runs, approvals) applies
//! the same rules.

use super::ids::{Npc, RunId};
use bytes::Bytes;
use serde::Serialize;
use std::fmt;

/// The lifecycle steps the SkyOffice UI listens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    /// A run began.
    Started,
    /// Progress inside a run.
    Step,
    /// The flow waits for a person (approvals).
    Awaiting,
    /// The run finished.
    Done,
    /// The run failed (also: its webhook failed).
    Error,
}

impl EventType {
    /// Parses the wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "started" => Self::Started,
            "step" => Self::Step,
            "awaiting" => Self::Awaiting,
            "done" => Self::Done,
            "error" => Self::Error,
            _ => return None,
        })
    }

    /// The wire name (SSE `event:` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Step => "step",
            Self::Awaiting => "awaiting",
            Self::Done => "done",
            Self::Error => "error",
        }
    }

    /// The run status this event leaves behind.
    pub fn run_status(self) -> &'static str {
        match self {
            Self::Started | Self::Step => "running",
            Self::Awaiting => "awaiting",
            Self::Done => "done",
            Self::Error => "error",
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event before the store gave it an id.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The channel.
    pub npc: Npc,
    /// Lifecycle step.
    pub kind: EventType,
    /// The run it belongs to, if any.
    pub run_id: Option<RunId>,
    /// The agent, for `started` events of runs the hub began.
    pub agent: Option<String>,
    /// Free-form JSON from the flow.
    pub data: serde_json::Value,
}

/// A stored event: what replay and live delivery send.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Global, strictly increasing.
    pub id: u64,
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    /// The channel.
    pub npc: String,
    /// Lifecycle step.
    pub kind: EventType,
    /// The run it belongs to, if any.
    pub run_id: Option<String>,
    /// Free-form JSON.
    pub data: serde_json::Value,
}

#[derive(Serialize)]
struct Wire<'a> {
    id: u64,
    ts: i64,
    npc: &'a str,
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(rename = "runId", skip_serializing_if = "Option::is_none")]
    run_id: Option<&'a str>,
    data: &'a serde_json::Value,
}

impl Event {
    /// `{id, ts, npc, type, runId?, data}` as one line of JSON.
    pub fn json(&self) -> String {
        let wire = Wire {
            id: self.id,
            ts: self.ts,
            npc: &self.npc,
            kind: self.kind,
            run_id: self.run_id.as_deref(),
            data: &self.data,
        };
        // Serialising a Value and plain fields cannot fail.
        serde_json::to_string(&wire).unwrap_or_default()
    }

    /// The SSE frame, rendered once and shared by every subscriber.
    pub fn sse_frame(&self) -> Bytes {
        Bytes::from(format!(
            "id: {}\nevent: {}\ndata: {}\n\n",
            self.id,
            self.kind,
            self.json()
        ))
    }

    /// The JSON value (for `GET /api/runs/:id`).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.json()).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(EventType::parse("awaiting"), Some(EventType::Awaiting));
        assert_eq!(EventType::parse("Done"), None);
    }

    #[test]
    fn frame_is_one_sse_event_with_one_data_line() {
        let e = Event {
            id: 7,
            ts: 1700000000000,
            npc: "r".into(),
            kind: EventType::Step,
            run_id: Some("run1".into()),
            data: serde_json::json!({"text": "line1\nline2"}),
        };
        let f = String::from_utf8(e.sse_frame().to_vec()).unwrap();
        assert_eq!(f.lines().count(), 4, "{f}");
        assert!(f.starts_with("id: 7\nevent: step\ndata: {"));
        assert!(f.ends_with("}\n\n"));
        let v: serde_json::Value =
            serde_json::from_str(f.lines().nth(2).unwrap().strip_prefix("data: ").unwrap())
                .unwrap();
        assert_eq!(v["runId"], "run1");
        assert_eq!(v["type"], "step");
        assert_eq!(v["ts"], 1700000000000i64);
        assert_eq!(v["data"]["text"], "line1\nline2");
    }
}
