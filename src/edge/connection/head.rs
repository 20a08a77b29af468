//! The request-head guard: an HTTP/1 client must send a whole request head
//! within `server.header_timeout` (counted from the connection's start, or
//! from a keep-alive request's first byte) and in at most
//! `server.max_header_bytes`. Pingora times each read separately and reads up
//! to 1 MiB of head, so a client sending a byte every few seconds holds a
//! connection for ever; this wraps the connection's stream and cuts it off.
//!
//! The edge tells the guard where heads end: [`head_done`] when a request's
//! head was parsed, [`next_head`] when the request is over.

use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, IO, Peek, Shutdown, Ssl, Stream, UniqueID,
    UniqueIDType,
};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The limits a head must keep.
#[derive(Debug, Clone, Copy)]
pub struct HeadRules {
    /// The whole head within this.
    pub timeout: Duration,
    /// At most this many bytes of it (the read that crosses the cap is
    /// allowed; the edge then checks the parsed head exactly).
    pub max_bytes: usize,
}

/// Between requests: waiting for a keep-alive request's first byte (idle
/// time is Pingora's keep-alive timeout, not the head's).
const IDLE: u8 = 0;
/// Reading a head: the deadline runs.
const IN_HEAD: u8 = 1;
/// The head was parsed: body, response or tunnel follow.
const DONE: u8 = 2;

/// Why the guard cut a connection off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    Slow,
    TooLarge,
}

impl Cut {
    /// The answer written before closing (best effort: the client may not read).
    fn response(self) -> &'static [u8] {
        match self {
            Cut::Slow => {
                b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 41\r\nConnection: close\r\n\r\nthe request head did not arrive in time\r\n"
            }
            Cut::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: text/plain\r\nContent-Length: 30\r\nConnection: close\r\n\r\nthe request head is too large\n"
            }
        }
    }

    fn error(self) -> io::Error {
        match self {
            Cut::Slow => io::Error::new(io::ErrorKind::TimedOut, "request head timed out"),
            Cut::TooLarge => io::Error::new(io::ErrorKind::InvalidData, "request head too large"),
        }
    }
}

/// The connection's stream, guarded while a head arrives.
pub struct HeadGuard {
    inner: Stream,
    rules: HeadRules,
    phase: AtomicU8,
    /// Bytes read since the head began.
    head_bytes: usize,
    deadline: Pin<Box<Sleep>>,
    cut: Option<Cut>,
    peer: Option<IpAddr>,
}

impl std::fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .finish()
    }
}

impl HeadGuard {
    /// Guards `inner`, a new connection from `peer`: its first head's clock
    /// starts now (as nginx's `client_header_timeout` does at accept).
    pub fn new(inner: Stream, rules: HeadRules, peer: Option<IpAddr>) -> Self {
        Self {
            inner,
            rules,
            phase: AtomicU8::new(IN_HEAD),
            head_bytes: 0,
            deadline: Box::pin(tokio::time::sleep(rules.timeout)),
            cut: None,
            peer,
        }
    }

    fn cut_off(&mut self, cx: &mut Context<'_>, cut: Cut) -> Poll<io::Result<()>> {
        if self.cut.is_none() {
            self.cut = Some(cut);
            if self.head_bytes > 0 {
                // A client that said nothing gets nothing (browsers open
                // spare connections); one that began a request gets its
                // status. Best effort: a client that does not read is cut anyway.
                let inner = Pin::new(&mut *self.inner);
                let _ = inner.poll_write(cx, cut.response());
                let _ = Pin::new(&mut *self.inner).poll_flush(cx);
            }
            let client = self.peer.map(|p| p.to_string()).unwrap_or_default();
            match cut {
                Cut::Slow => {
                    tracing::info!(target: "limit", %client, bytes = self.head_bytes, timeout = ?self.rules.timeout, "request head not received in time; connection closed")
                }
                Cut::TooLarge => {
                    tracing::info!(target: "limit", %client, bytes = self.head_bytes, max = self.rules.max_bytes, "request head too large; connection closed")
                }
            }
        }
        Poll::Ready(Err(cut.error()))
    }
}

/// The guard of a session's client stream, when it has one (HTTP/1).
fn guard_of(stream: Option<&Stream>) -> Option<&HeadGuard> {
    let io: &dyn IO = &**stream?;
    io.as_any().downcast_ref::<HeadGuard>()
}

/// The request's head was read: its deadline no longer applies.
pub fn head_done(stream: Option<&Stream>) {
    if let Some(g) = guard_of(stream) {
        g.phase.store(DONE, Ordering::Release);
    }
}

/// The request is over: the next head's clock starts at its first byte.
pub fn next_head(stream: Option<&Stream>) {
    if let Some(g) = guard_of(stream) {
        g.phase.store(IDLE, Ordering::Release);
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(cut) = this.cut {
            return Poll::Ready(Err(cut.error()));
        }
        let phase = this.phase.load(Ordering::Acquire);
        if phase == IN_HEAD {
            if this.deadline.as_mut().poll(cx).is_ready() {
                return this.cut_off(cx, Cut::Slow);
            }
            if this.head_bytes >= this.rules.max_bytes {
                return this.cut_off(cx, Cut::TooLarge);
            }
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut *this.inner).poll_read(cx, buf))?;
        let n = buf.filled().len() - before;
        if n > 0 {
            match phase {
                IDLE => {
                    this.phase.store(IN_HEAD, Ordering::Release);
                    this.head_bytes = n;
                    let at = Instant::now() + this.rules.timeout;
                    this.deadline.as_mut().reset(at);
                }
                IN_HEAD => this.head_bytes += n,
                _ => {}
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait::async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&pingora::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<std::sync::Arc<pingora::protocols::tls::SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<pingora::protocols::ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<pingora::protocols::TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(
        &self,
    ) -> Option<std::sync::Arc<pingora::protocols::raw_connect::ProxyDigest>> {
        self.inner.get_proxy_digest()
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<std::sync::Arc<pingora::protocols::SocketDigest>> {
        self.inner.get_socket_digest()
    }
}

#[async_trait::async_trait]
impl Peek for HeadGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, duplex};

    fn guarded(rules: HeadRules) -> (HeadGuard, DuplexStream) {
        let (ours, theirs) = duplex(4096);
        (HeadGuard::new(Box::new(ours), rules, None), theirs)
    }

    const RULES: HeadRules = HeadRules {
        timeout: Duration::from_secs(10),
        max_bytes: 64,
    };

    #[tokio::test(start_paused = true)]
    async fn a_head_that_dribbles_in_is_cut_off_with_408() {
        let (mut g, mut client) = guarded(RULES);
        let mut buf = [0u8; 64];
        for _ in 0..4 {
            client.write_all(b"G").await.unwrap();
            assert_eq!(g.read(&mut buf).await.unwrap(), 1);
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        // 8 s gone; the next byte takes 3 s more.
        let e = tokio::select! {
            r = g.read(&mut buf) => r.unwrap_err(),
            _ = async { tokio::time::sleep(Duration::from_secs(3)).await; client.write_all(b"E").await.unwrap(); std::future::pending::<()>().await } => unreachable!(),
        };
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let mut answer = vec![0u8; 64];
        let n = client.read(&mut answer).await.unwrap();
        assert!(
            answer[..n].starts_with(b"HTTP/1.1 408 "),
            "{:?}",
            String::from_utf8_lossy(&answer[..n])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_time_between_requests_is_not_counted() {
        let (mut g, mut client) = guarded(RULES);
        let mut buf = [0u8; 64];
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 18);
        let stream: Stream = Box::new(g);
        head_done(Some(&stream));
        next_head(Some(&stream));
        let mut g = stream;
        // A keep-alive connection idle for longer than the head timeout...
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"GET /2 HTTP/1.1\r\n\r\n").await.unwrap();
        // ...still gets its next head read.
        assert!(g.read(&mut buf).await.unwrap() > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_done_head_is_not_timed_and_its_body_not_counted() {
        let (mut g, mut client) = guarded(RULES);
        client.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 4096];
        assert_eq!(g.read(&mut buf).await.unwrap(), 19);
        let stream: Stream = Box::new(g);
        head_done(Some(&stream));
        let mut g = stream;
        tokio::time::advance(Duration::from_secs(60)).await;
        client.write_all(&[b'x'; 1000]).await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 1000);
    }

    #[tokio::test]
    async fn an_oversized_head_gets_431() {
        let (mut g, mut client) = guarded(RULES);
        let mut buf = [0u8; 40];
        client.write_all(&[b'a'; 80]).await.unwrap();
        assert_eq!(g.read(&mut buf).await.unwrap(), 40);
        assert_eq!(g.read(&mut buf).await.unwrap(), 40);
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        let mut answer = vec![0u8; 200];
        let n = client.read(&mut answer).await.unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 431 "));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_new_connection_is_closed_without_an_answer() {
        let (mut g, mut client) = guarded(RULES);
        let mut buf = [0u8; 8];
        let e = g.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        drop(g);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
