//! Upstream health for `/readyz`: each upstream with a check configured is
//! checked on its own interval (a TCP connect, or a `GET` of its
//! `health_path`), and the last result is kept with its reason. One not
//! checked yet is not ready: an orchestrator should not send traffic to an
//! edge that has not seen its backends. Upstreams without a check are
//! listed and never hold readiness back.

use crate::config::Upstream;
use crate::telemetry::metrics::metrics;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Longest a single check may take, whatever the interval.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One upstream's last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// Whether it answered as expected.
    pub up: bool,
    /// What was seen: `HTTP 200`, `connected`, or why it failed.
    pub detail: String,
}

/// The last result of every upstream.
pub struct Health {
    upstreams: RwLock<Vec<Upstream>>,
    last: RwLock<BTreeMap<String, Status>>,
    /// Bumped by [`Health::replace`]: the checker starts over on the new list.
    generation: tokio::sync::watch::Sender<u64>,
}

impl Health {
    /// Health of `upstreams`, none checked yet.
    pub fn new(upstreams: impl IntoIterator<Item = Upstream>) -> Self {
        Self {
            upstreams: RwLock::new(upstreams.into_iter().collect()),
            last: RwLock::default(),
            generation: tokio::sync::watch::Sender::new(0),
        }
    }

    /// A reloaded config's upstreams: a removed one is forgotten, one whose
    /// address or check changed starts again as not checked, and the
    /// checker moves to the new list at once.
    pub fn replace(&self, upstreams: impl IntoIterator<Item = Upstream>) {
        let new: Vec<Upstream> = upstreams.into_iter().collect();
        {
            let mut list = self.upstreams.write().unwrap_or_else(|p| p.into_inner());
            let mut last = self.last.write().unwrap_or_else(|p| p.into_inner());
            last.retain(|name, _| {
                let before = list.iter().find(|u| &u.name == name);
                let after = new.iter().find(|u| &u.name == name);
                matches!((before, after), (Some(b), Some(a)) if a == b)
            });
            *list = new;
        }
        self.generation.send_modify(|g| *g += 1);
    }

    fn current(&self) -> Vec<Upstream> {
        self.upstreams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn record(&self, name: &str, status: Status) {
        metrics().upstream_up(name, status.up);
        let mut last = self.last.write().unwrap_or_else(|p| p.into_inner());
        if last.get(name).is_none_or(|s| s.up != status.up) {
            if status.up {
                tracing::info!(target: "admin", upstream = name, detail = %status.detail, "upstream healthy");
            } else {
                tracing::warn!(target: "admin", upstream = name, detail = %status.detail, "upstream unhealthy");
            }
        }
        last.insert(name.to_string(), status);
    }

    /// Every upstream's state, `None` for one not checked yet.
    pub fn snapshot(&self) -> Vec<(String, Option<Status>)> {
        let last = self.last.read().unwrap_or_else(|p| p.into_inner());
        self.current()
            .iter()
            .map(|u| {
                let status = match u.health_checked {
                    true => last.get(&u.name).cloned(),
                    false => Some(Status {
                        up: true,
                        detail: "not checked (no health_path or health_interval)".into(),
                    }),
                };
                (u.name.clone(), status)
            })
            .collect()
    }
}

/// A store's readiness probe: a cheap read through the store's own
/// connection, `Err` with what failed. It runs on a blocking thread.
pub type Probe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A store `/readyz` asks, by name (`hub`, `sessions`).
#[derive(Clone)]
pub struct Store {
    /// As it appears in the answer.
    pub name: String,
    /// The check.
    pub probe: Probe,
}

/// Probes every store now (each on a blocking thread, bounded by the check
/// timeout): a store is asked when readiness is asked, so the answer is never
/// staler than the request.
pub async fn check_stores(stores: &[Store]) -> Vec<(String, Status)> {
    let mut out = Vec::with_capacity(stores.len());
    for s in stores {
        let probe = s.probe.clone();
        let run = tokio::task::spawn_blocking(move || probe());
        let status = match tokio::time::timeout(CHECK_TIMEOUT, run).await {
            Err(_) => Status {
                up: false,
                detail: "did not answer in time".into(),
            },
            Ok(Err(e)) => Status {
                up: false,
                detail: format!("probe failed: {e}"),
            },
            Ok(Ok(Err(why))) => Status {
                up: false,
                detail: why,
            },
            Ok(Ok(Ok(()))) => Status {
                up: true,
                detail: "readable".into(),
            },
        };
        if !status.up {
            tracing::warn!(target: "admin", store = %s.name, detail = %status.detail, "store not ready");
        }
        out.push((s.name.clone(), status));
    }
    out
}

/// The `/readyz` answer: ready when every upstream and every store is up;
/// the JSON names each with what was seen.
pub fn readiness(
    snapshot: &[(String, Option<Status>)],
    stores: &[(String, Status)],
) -> (bool, serde_json::Value) {
    let mut ready = true;
    let mut upstreams = serde_json::Map::new();
    for (name, status) in snapshot {
        let (up, detail) = match status {
            Some(s) => (s.up, s.detail.as_str()),
            None => (false, "not checked yet"),
        };
        ready &= up;
        upstreams.insert(
            name.clone(),
            serde_json::json!({"up": up, "detail": detail}),
        );
    }
    let mut by_name = serde_json::Map::new();
    for (name, s) in stores {
        ready &= s.up;
        by_name.insert(
            name.clone(),
            serde_json::json!({"up": s.up, "detail": s.detail}),
        );
    }
    (
        ready,
        serde_json::json!({"ready": ready, "upstreams": upstreams, "stores": by_name}),
    )
}

/// Reads the status code from an HTTP/1 status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let mut parts = line.split(|b| *b == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// Checks one upstream once.
async fn check(u: &Upstream) -> Status {
    let down = |detail: String| Status { up: false, detail };
    let connect = TcpStream::connect((u.host.as_str(), u.port));
    let mut conn = match tokio::time::timeout(CHECK_TIMEOUT, connect).await {
        Err(_) => return down("connect timed out".into()),
        Ok(Err(e)) => return down(format!("connect failed: {e}")),
        Ok(Ok(c)) => c,
    };
    let Some(path) = &u.health_path else {
        return Status {
            up: true,
            detail: "connected".into(),
        };
    };
    let ask = async {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}:{}\r\nUser-Agent: esprit-edge-health\r\nConnection: close\r\n\r\n",
            u.host, u.port
        );
        conn.write_all(req.as_bytes()).await?;
        let mut head = Vec::with_capacity(256);
        let mut buf = [0u8; 256];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = conn.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(status_code(&head))
    };
    match tokio::time::timeout(CHECK_TIMEOUT, ask).await {
        Err(_) => down(format!("GET {path} timed out")),
        Ok(Err(e)) => down(format!("GET {path} failed: {e}")),
        Ok(Ok(None)) => down(format!("GET {path}: not an HTTP answer")),
        Ok(Ok(Some(code))) => Status {
            up: code < 500,
            detail: format!("HTTP {code}"),
        },
    }
}

/// The background service that keeps [`Health`] current.
pub struct Checker(pub Arc<Health>);

#[async_trait::async_trait]
impl BackgroundService for Checker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut reloaded = self.0.generation.subscribe();
        loop {
            let mut tasks = tokio::task::JoinSet::new();
            for u in self.0.current().into_iter().filter(|u| u.health_checked) {
                let health = self.0.clone();
                tasks.spawn(async move {
                    let mut tick = tokio::time::interval(u.health_interval);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let status = check(&u).await;
                        // A check that began before a reload must not speak for the new list.
                        if health.current().contains(&u) {
                            health.record(&u.name, status);
                        }
                    }
                });
            }
            reloaded.borrow_and_update();
            tokio::select! {
                _ = shutdown.changed() => {
                    tasks.abort_all();
                    return;
                }
                _ = reloaded.changed() => tasks.abort_all(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_upstream_is_up() {
        let up = Some(Status {
            up: true,
            detail: "HTTP 200".into(),
        });
        let (ready, body) = readiness(&[("sim".into(), up.clone())], &[]);
        assert!(ready);
        assert_eq!(body["upstreams"]["sim"]["detail"], "HTTP 200");
        let (ready, body) = readiness(
            &[("sim".into(), up.clone()), ("realtime".into(), None)],
            &[],
        );
        assert!(!ready);
        assert_eq!(body["ready"], false);
        assert_eq!(body["upstreams"]["realtime"]["detail"], "not checked yet");
        assert!(readiness(&[], &[]).0, "no upstreams: nothing to wait for");
        let broken = Status {
            up: false,
            detail: "cannot read".into(),
        };
        let (ready, body) = readiness(&[("sim".into(), up)], &[("hub".into(), broken)]);
        assert!(!ready, "a broken store holds readiness back");
        assert_eq!(body["stores"]["hub"]["detail"], "cannot read");
    }

    fn upstream(name: &str, port: u16) -> Upstream {
        Upstream {
            name: name.into(),
            host: "127.0.0.1".into(),
            port,
            health_path: None,
            health_interval: Duration::from_secs(5),
            health_checked: true,
        }
    }

    #[test]
    fn a_reload_forgets_removed_and_changed_upstreams() {
        let h = Health::new([upstream("a", 1), upstream("b", 2), upstream("c", 3)]);
        for n in ["a", "b", "c"] {
            h.record(
                n,
                Status {
                    up: false,
                    detail: "down".into(),
                },
            );
        }
        h.replace([upstream("a", 1), upstream("b", 20), upstream("d", 4)]);
        let snap = h.snapshot();
        let names: Vec<&str> = snap.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b", "d"], "c is gone");
        assert!(snap[0].1.is_some(), "a kept its result");
        assert!(snap[1].1.is_none(), "b moved: not checked yet");
        assert!(snap[2].1.is_none());
    }

    #[tokio::test]
    async fn stores_are_probed_when_asked() {
        let ok: Probe = Arc::new(|| Ok(()));
        let bad: Probe = Arc::new(|| Err("disk I/O error".into()));
        let got = check_stores(&[
            Store {
                name: "hub".into(),
                probe: ok,
            },
            Store {
                name: "sessions".into(),
                probe: bad,
            },
        ])
        .await;
        assert!(got[0].1.up);
        assert_eq!(
            got[1].1,
            Status {
                up: false,
                detail: "disk I/O error".into()
            }
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(status_code(b"HTTP/1.0 503 x\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b""), None);
    }
}
