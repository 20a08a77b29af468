//! A real SSE client for the tests: reads a streaming response and yields
//! parsed events (comments and `retry:` lines skipped).

use futures_util::StreamExt;
use std::time::Duration;

/// One SSE event.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<u64>,
    pub event: String,
    pub data: serde_json::Value,
}

/// An open stream.
pub struct SseClient {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    pub status: u16,
}

impl SseClient {
    /// Opens `url` with an optional `Last-Event-ID`.
    pub async fn open(url: &str, last_event_id: Option<u64>) -> SseClient {
        let mut req = super::client_no_timeout()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id.to_string());
        }
        let resp = req.send().await.expect("SSE request");
        let status = resp.status().as_u16();
        SseClient {
            body: Box::pin(resp.bytes_stream()),
            buf: String::new(),
            status,
        }
    }

    /// The next event, or `None` when the stream ended or nothing came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(pos) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..pos + 2).collect();
                if let Some(ev) = parse_block(&block) {
                    return Some(ev);
                }
                continue;
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            self.buf.push_str(&String::from_utf8_lossy(&chunk.ok()?));
        }
    }

    /// Collects events until `n` arrived or `wait` passed between two of them.
    pub async fn take(&mut self, n: usize, wait: Duration) -> Vec<SseEvent> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.next(wait).await {
                Some(e) => out.push(e),
                None => break,
            }
        }
        out
    }
}

/// One event block (up to its blank line) as an event; `None` for comments.
pub fn parse_block(block: &str) -> Option<SseEvent> {
    let mut id = None;
    let mut event = String::from("message");
    let mut data = String::new();
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.parse().ok();
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    if data.is_empty() {
        return None;
    }
    Some(SseEvent {
        id,
        event,
        data: serde_json::from_str(&data).unwrap_or(serde_json::Value::String(data)),
    })
}

/// Whether the response body `body` ends within `secs` (what comes is read
/// and dropped): a stream closed by the edge ends, a live one does not.
pub async fn ends_within(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    secs: u64,
) -> bool {
    tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(Ok(_)) = body.next().await {}
    })
    .await
    .is_ok()
}
