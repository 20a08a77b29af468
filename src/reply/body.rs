//! The one way an in-process handler reads a request body: whole, up to a
//! cap, refusing early when `Content-Length` already says it is too large.

use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

/// The body was larger than the handler takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the body is larger than {cap} bytes")]
pub struct TooLarge {
    /// The cap that was exceeded.
    pub cap: usize,
}

/// Reads the request body up to `cap` bytes. Over the cap the connection is
/// not reused (the rest of the body is never read), and `Err(TooLarge)` lets
/// the handler say which limit applied.
pub async fn read_capped(
    session: &mut Session,
    cap: usize,
) -> pingora::Result<Result<Bytes, TooLarge>> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap as u64) {
        session.set_keepalive(None);
        return Ok(Err(TooLarge { cap }));
    }
    let mut buf = BytesMut::new();
    while let Some(chunk) = session.read_request_body().await? {
        if buf.len() + chunk.len() > cap {
            session.set_keepalive(None);
            return Ok(Err(TooLarge { cap }));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Ok(buf.freeze()))
}
