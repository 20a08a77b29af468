//! `GET /api/stream`: replay from the store, then live events, on one
//! response written straight to the client (no loopback hop).
//!
//! No gap, no duplicate: the subscription starts *before* the replay is read,
//! so anything committed meanwhile arrives live too, and live events at or
//! below the last replayed id are skipped.

use super::api::error;
use super::fanout::{Next, Subscription};
use super::store::Channels;
use super::{Handled, Hub};
use crate::edge::headers::{self, EDGE_CSP, SecurityHeaders};
use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::{Error, ErrorType, Result};
use std::time::Duration;

/// Events read from the store per page while replaying.
const PAGE: usize = 1000;

/// How often a blocked write checks whether its reader fell a queue behind.
const LAG_CHECK: Duration = Duration::from_millis(100);

/// Writes `frame`; `Ok(false)` when the reader stopped reading long enough to
/// fall a whole queue behind (the write is abandoned and the stream must end).
async fn write_unless_lagging(
    session: &mut Session,
    frame: Bytes,
    sub: &Subscription,
) -> Result<bool> {
    let write = session.write_response_body(Some(frame), false);
    tokio::pin!(write);
    let mut check = tokio::time::interval(LAG_CHECK);
    check.reset();
    loop {
        tokio::select! {
            done = &mut write => return done.map(|()| true),
            _ = check.tick() => if sub.lagging() {
                return Ok(false);
            },
        }
    }
}

enum Step {
    Live(Next),
    Beat,
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
) -> Result<Handled> {
    let mut sub = hub.fanout.subscribe(&channels);
    let ch = channels.clone();
    let recent = hub.cfg.replay_recent;
    let first = match last_id {
        Some(id) => hub.read(move |s| s.after(&ch, id, PAGE)).await,
        None => hub.read(move |s| s.recent(&ch, recent)).await,
    };
    let first = match first {
        Ok(page) => page,
        Err(e) => return Ok(Handled::Reply(error(503, e.to_string()))),
    };
    let mut resp = ResponseHeader::build(200, Some(6))?;
    resp.insert_header(
        http::header::CONTENT_TYPE,
        "text/event-stream; charset=utf-8",
    )?;
    resp.insert_header(http::header::CACHE_CONTROL, "no-cache, no-transform")?;
    resp.insert_header("x-accel-buffering", "no")?;
    if !session.is_http2() {
        resp.insert_header(http::header::TRANSFER_ENCODING, "chunked")?;
    }
    headers::apply(
        &mut resp,
        &SecurityHeaders {
            csp: Some(EDGE_CSP),
            hsts,
        },
    )?;
    session.write_response_header(Box::new(resp), false).await?;
    // Tell EventSource how soon to come back after we end a stream.
    session
        .write_response_body(Some(Bytes::from_static(b"retry: 2000\n\n")), false)
        .await?;

    let mut last = last_id.unwrap_or(0);
    let mut page = first;
    loop {
        let full = last_id.is_some() && page.len() == PAGE;
        for ev in page {
            last = last.max(ev.id);
            session
                .write_response_body(Some(ev.sse_frame()), false)
                .await?;
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

    let mut beat = tokio::time::interval(hub.cfg.heartbeat);
    beat.reset();
    loop {
        let step = tokio::select! {
            next = sub.next() => Step::Live(next),
            _ = beat.tick() => Step::Beat,
            _ = session.read_body_or_idle(true) => Step::ClientGone,
        };
        match step {
            Step::Live(Next::Event(ev)) => {
                if ev.id > last {
                    last = ev.id;
                    if !write_unless_lagging(session, ev.frame.clone(), &sub).await? {
                        tracing::info!(target: "hub", last_id = last, "subscriber too slow; disconnected (it replays on reconnect)");
                        session.set_keepalive(None);
                        return Ok(Handled::Streamed);
                    }
                }
            }
            Step::Live(Next::Lagged) => {
                tracing::info!(target: "hub", last_id = last, "subscriber too slow; disconnected (it replays on reconnect)");
                session.set_keepalive(None);
                break;
            }
            Step::Live(Next::Closed) | Step::ClientGone => {
                session.set_keepalive(None);
                return Ok(Handled::Streamed);
            }
            Step::Beat => {
                session
                    .write_response_body(Some(Bytes::from_static(b": heartbeat\n\n")), false)
                    .await?;
            }
        }
    }
    session.write_response_body(None, true).await?;
    Ok(Handled::Streamed)
}
