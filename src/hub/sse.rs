//! `GET /api/stream`: replay from the store, then live events, on one
//! response written straight to the client (no loopback hop).
//!
//! No gap, no duplicate: the subscription starts *before* the replay is read,
//! so anything committed meanwhile arrives live too, and live events at or
//! below the last replayed id are skipped.
//!
//! A reader that stops reading is cut off: every write gives up once the
//! subscriber fell a whole queue behind, or after the write stall limit, and
//! the connection is dropped (not finished, which would wait on it again).

use super::Hub;
use super::api::error;
use super::fanout::{Next, Subscription};
use super::store::Channels;
use crate::reply::handler::Handled;
use crate::reply::headers;
use crate::watch::{self, StreamGuard};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::time::Duration;

/// Events read from the store per page while replaying (bounded memory per client).
const PAGE: usize = 200;
/// How often a blocked write checks whether its reader fell a queue behind.
const LAG_CHECK: Duration = Duration::from_millis(100);
/// Longest a single write may wait on a reader before it is dropped.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// The error that drops a subscriber's connection: the client's fault, so it
/// is logged as a client that went away, not an edge failure.
fn too_slow() -> Box<Error> {
    crate::telemetry::metrics::metrics().hub_dropped.inc();
    Error::explain(ErrorType::WriteTimedout, "SSE subscriber too slow; dropped").into_down()
}

/// Writes `frame`, or drops the subscriber if it fell a queue behind meanwhile.
async fn write(session: &mut Session, frame: Bytes, sub: &Subscription, last: u64) -> Result<()> {
    let write = session.write_response_body(Some(frame), false);
    tokio::pin!(write);
    let mut check = tokio::time::interval(LAG_CHECK);
    check.reset();
    loop {
        tokio::select! {
            done = &mut write => return done,
            _ = check.tick() => if sub.lagging() {
                tracing::info!(target: "hub", last_id = last, "subscriber too slow; disconnected (it replays on reconnect)");
                return Err(too_slow());
            },
        }
    }
}

enum Step {
    Live(Next),
    Beat,
    Recheck,
    ClientGone,
}

/// Serves one SSE subscriber until it leaves, lags or the hub stops. A store
/// failure before anything was sent is a 503; after that it ends the stream.
pub async fn serve(
    hub: &Hub,
    session: &mut Session,
    channels: Channels,
    last_id: Option<u64>,
    hsts: bool,
    mut guard: Option<StreamGuard>,
) -> Result<Handled> {
    let head = session.req_header().method == http::Method::HEAD;
    let mut sub = hub.fanout.subscribe(&channels);
    // Checked after subscribing: once live, every event stored after the
    // read below reaches `sub`.
    if !hub.fanout.is_live() {
        return Ok(Handled::Reply(error(
            503,
            "live events are not available yet: the shared event store has not been reached since the edge started",
        )));
    }
    let ch = channels.clone();
    let (recent, max) = {
        let cfg = hub.cfg.load();
        (cfg.replay_recent, cfg.replay_max)
    };
    // A Last-Event-ID beyond the newest stored id (the store was reset) would
    // hide every live event: treat that client as new. One further behind
    // than `replay_max` events resumes at the newest `replay_max`, told so.
    let first = hub
        .read(move |s| {
            let newest = s.last_id()?;
            let Some(id) = last_id.filter(|id| *id <= newest) else {
                return s.recent(&ch, recent).map(|p| (None, None, p));
            };
            let page = s.after(&ch, id, PAGE)?;
            let cut = match page.first() {
                Some(first) => s.nth_newest_id(&ch, max)?.filter(|c| *c > first.id),
                None => None,
            };
            match cut {
                Some(c) => s
                    .after(&ch, c - 1, PAGE)
                    .map(|p| (Some(c - 1), Some(id), p)),
                None => Ok((Some(id), None, page)),
            }
        })
        .await;
    let (resume_from, missed_after, first) = match first {
        Ok(f) => f,
        Err(e) => return Ok(Handled::Reply(error(503, e.to_string()))),
    };
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header(
        http::header::CONTENT_TYPE,
        "text/event-stream; charset=utf-8",
    )?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-cache, no-transform")?;
    resp.insert_header("x-accel-buffering", "no")?;
    if !session.is_http2() && !head {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    headers::apply_edge(&mut resp, hsts)?;
    if head {
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(Handled::Streamed);
    }
    session.set_write_timeout(Some(WRITE_STALL));
    session.write_response_header(Box::new(resp), false).await?;
    // Tell EventSource how soon to come back after we end a stream.
    write(session, Bytes::from_static(b"retry: 2000\n\n"), &sub, 0).await?;
    if let (Some(after), Some(from)) = (missed_after, resume_from) {
        // Older events were skipped: say which, so a page can reload the run
        // list (`GET /api/runs`) instead of trusting a partial history.
        let marker =
            format!("event: missed\ndata: {{\"after\":{after},\"resumesAfter\":{from}}}\n\n");
        write(session, Bytes::from(marker), &sub, 0).await?;
    }

    let mut last = resume_from.unwrap_or(0);
    let mut page = first;
    loop {
        let full = resume_from.is_some() && page.len() == PAGE;
        for ev in page {
            last = last.max(ev.id);
            write(session, ev.sse_frame(), &sub, last).await?;
        }
        if !full {
            break;
        }
        let (ch, from) = (channels.clone(), last);
        page = hub
            .read(move |s| s.after(&ch, from, PAGE))
            .await
            .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?;
    }

    let mut beat = tokio::time::interval(hub.cfg.load().heartbeat);
    beat.reset();
    let mut recheck = tokio::time::interval(watch::RECHECK);
    recheck.reset();
    loop {
        let step = tokio::select! {
            next = sub.next() => Step::Live(next),
            _ = beat.tick() => Step::Beat,
            _ = recheck.tick() => Step::Recheck,
            _ = session.read_body_or_idle(true) => Step::ClientGone,
        };
        match step {
            Step::Live(Next::Event(ev)) => {
                if ev.id > last {
                    last = ev.id;
                    write(session, ev.frame.clone(), &sub, last).await?;
                    crate::telemetry::metrics::metrics().hub_delivered.inc();
                }
            }
            Step::Live(Next::Lagged) => {
                tracing::info!(target: "hub", last_id = last, "subscriber too slow; disconnected (it replays on reconnect)");
                return Err(too_slow());
            }
            Step::Live(Next::Closed) | Step::ClientGone => {
                session.set_keepalive(None);
                return Ok(Handled::Streamed);
            }
            Step::Beat => {
                write(session, Bytes::from_static(b": heartbeat\n\n"), &sub, last).await?
            }
            Step::Recheck => {
                let ended = match guard.as_mut() {
                    Some(g) => g.ended_now_off_thread().await,
                    None => false,
                };
                if ended {
                    tracing::info!(target: "hub", "session ended; closing its stream");
                    session.set_keepalive(None);
                    session.write_response_body(None, true).await?;
                    return Ok(Handled::Streamed);
                }
            }
        }
    }
}
