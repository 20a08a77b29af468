//! The agents registry: `agents.json`, re-read when it changes on disk. A
//! broken file keeps the last good list (and says why in the log), so a typo
//! while editing never takes the cards away.

use super::ids::{Npc, RunId};
use crate::watched_file::{Reload, WatchedFile};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Entry {
    agent: String,
    npc: String,
    webhook_url: String,
    name: Option<String>,
    description: Option<String>,
}

/// One agent: a card in the UI and the Sim webhook that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The id in `/api/run/:agent`.
    pub agent: String,
    /// The channel its events go to.
    pub npc: Npc,
    /// Sim's webhook trigger: a secret, never shown to browsers.
    pub webhook: reqwest::Url,
    /// Display name.
    pub name: Option<String>,
    /// Display text.
    pub description: Option<String>,
}

/// Parses and checks the file's text; the error names the entry and the problem.
pub fn parse(text: &str) -> Result<Vec<Agent>, String> {
    let entries: Vec<Entry> =
        serde_json::from_str(text).map_err(|e| format!("not a list of agents: {e}"))?;
    let mut out: Vec<Agent> = Vec::with_capacity(entries.len());
    for (i, e) in entries.into_iter().enumerate() {
        let at = format!("entry {i} (agent {:?})", e.agent);
        if RunId::parse(&e.agent).is_none() {
            return Err(format!("{at}: agent ids use 1-64 of A-Z a-z 0-9 _ -"));
        }
        let Some(npc) = Npc::parse(&e.npc) else {
            return Err(format!("{at}: npc {:?} is not 1-64 of a-z 0-9 _ -", e.npc));
        };
        let webhook = reqwest::Url::parse(&e.webhook_url)
            .map_err(|err| format!("{at}: webhookUrl: {err}"))?;
        if webhook.scheme() == "builtin" {
            if webhook.as_str() != super::demo::WEBHOOK {
                return Err(format!(
                    "{at}: webhookUrl {:?} is no built-in flow (the one there is: {:?})",
                    webhook.as_str(),
                    super::demo::WEBHOOK
                ));
            }
        } else if !matches!(webhook.scheme(), "http" | "https") || webhook.host_str().is_none() {
            return Err(format!(
                "{at}: webhookUrl must be an http(s) URL with a host, or {:?}",
                super::demo::WEBHOOK
            ));
        }
        if out.iter().any(|a| a.agent == e.agent) {
            return Err(format!("{at}: listed twice"));
        }
        out.push(Agent {
            agent: e.agent,
            npc,
            webhook,
            name: e.name,
            description: e.description,
        });
    }
    Ok(out)
}

impl Agent {
    /// Whether the built-in demo flow runs this agent, not a Sim webhook.
    pub fn is_demo(&self) -> bool {
        self.webhook.scheme() == "builtin"
    }
}

/// Reads and checks the agents file.
fn load(path: &Path) -> Result<Vec<Agent>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    parse(&text)
}

/// Logs what a look at the agents file found.
fn report(path: &Path, what: Reload<'_, Vec<Agent>>) {
    match what {
        Reload::Loaded(list) => {
            tracing::info!(target: "hub", file = %path.display(), agents = list.len(), "agents loaded");
        }
        Reload::Rejected(why) => tracing::error!(
            target: "hub",
            file = %path.display(),
            error = %why,
            "agents file rejected; keeping the last good list"
        ),
        Reload::Vanished => tracing::error!(
            target: "hub",
            file = %path.display(),
            error = "the file is gone",
            "agents file rejected; keeping the last good list"
        ),
    }
}

/// The live list, re-read when the file changes.
pub struct Agents {
    file: WatchedFile<Vec<Agent>>,
}

impl Agents {
    /// Loads `path`; a missing or broken file starts with no agents (logged).
    pub fn open(path: &Path) -> Self {
        let initial = match load(path) {
            Ok(list) => {
                report(path, Reload::Loaded(&list));
                list
            }
            Err(why) => {
                report(path, Reload::Rejected(&why));
                Vec::new()
            }
        };
        Self {
            file: WatchedFile::new(path, initial, load, report),
        }
    }

    /// Re-reads the file when its modification time or size changed.
    pub fn reload_if_changed(&self) {
        self.file.refresh();
    }

    /// The agent with id `agent`.
    pub fn find(&self, agent: &str) -> Option<Agent> {
        self.file
            .current()
            .iter()
            .find(|a| a.agent == agent)
            .cloned()
    }

    /// Whether `npc` is some agent's own channel.
    pub fn has_npc(&self, npc: &Npc) -> bool {
        self.file.current().iter().any(|a| a.npc == *npc)
    }

    /// Whether `npc` is the channel of an agent the demo flow runs.
    pub fn is_demo_npc(&self, npc: &Npc) -> bool {
        self.file
            .current()
            .iter()
            .any(|a| a.npc == *npc && a.is_demo())
    }

    /// What `GET /api/agents` shows: never the webhook URLs.
    pub fn public_list(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .file
            .current()
            .iter()
            .map(|a| {
                let mut v = serde_json::json!({ "agent": a.agent, "npc": a.npc });
                if a.is_demo() {
                    v["demo"] = true.into();
                }
                if let Some(n) = &a.name {
                    v["name"] = n.clone().into();
                }
                if let Some(d) = &a.description {
                    v["description"] = d.clone().into();
                }
                v
            })
            .collect();
        serde_json::Value::Array(list)
    }

    /// Whether `url` points at the same scheme, host and port as some agent's
    /// webhook: the only places an approval may be relayed to.
    pub fn is_webhook_origin(&self, url: &reqwest::Url) -> bool {
        self.file.current().iter().any(|a| {
            a.webhook.scheme() == url.scheme()
                && a.webhook.host_str() == url.host_str()
                && a.webhook.port_or_known_default() == url.port_or_known_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"[{"agent":"research","npc":"researcher","webhookUrl":"http://sim:3000/api/webhooks/trigger/abc","name":"R"}]"#;

    #[test]
    fn parses_and_hides_webhooks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agents.json");
        std::fs::write(&p, GOOD).unwrap();
        let a = Agents::open(&p);
        assert_eq!(a.find("research").unwrap().npc.as_str(), "researcher");
        let shown = a.public_list().to_string();
        assert!(!shown.contains("webhook"), "{shown}");
        assert!(a.is_webhook_origin(&"http://sim:3000/api/resume/1".parse().unwrap()));
        assert!(!a.is_webhook_origin(&"http://sim:3001/x".parse().unwrap()));
        assert!(!a.is_webhook_origin(&"https://sim:3000/x".parse().unwrap()));
        assert!(!a.is_webhook_origin(&"http://evil/x".parse().unwrap()));
    }

    #[test]
    fn rejects_bad_entries_with_reasons() {
        assert!(parse("{}").unwrap_err().contains("not a list"));
        assert!(
            parse(r#"[{"agent":"a","npc":"Bad","webhookUrl":"http://x/"}]"#)
                .unwrap_err()
                .contains("npc \"Bad\"")
        );
        assert!(
            parse(r#"[{"agent":"a","npc":"a","webhookUrl":"ftp://x/"}]"#)
                .unwrap_err()
                .contains("http(s)")
        );
        let dup = r#"[{"agent":"a","npc":"a","webhookUrl":"http://x/"},{"agent":"a","npc":"b","webhookUrl":"http://x/"}]"#;
        assert!(parse(dup).unwrap_err().contains("listed twice"));
    }

    #[test]
    fn broken_edit_keeps_last_good_list() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agents.json");
        std::fs::write(&p, GOOD).unwrap();
        let a = Agents::open(&p);
        std::fs::write(&p, "[{oops").unwrap();
        a.reload_if_changed();
        assert!(a.find("research").is_some());
    }
}
