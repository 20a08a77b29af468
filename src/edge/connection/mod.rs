//! The client connection before and around its requests: the accept-time
//! caps (`limit::connections`), and the request-head deadline and size cap
//! ([`head`]), which Pingora's HTTP/1 reader does not have (it times each
//! read, not the head, and buffers up to 1 MiB of it).

pub mod head;

use crate::limit::connections::{ConnectionCaps, Refused};
use async_trait::async_trait;
use head::{HeadGuard, HeadRules};
use pingora::apps::ServerApp;
use pingora::listeners::{ALPN, ConnectionFilter};
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Pingora's accept-time hook: a connection over a cap is closed before
/// its TLS handshake, and costs nothing more.
#[derive(Clone)]
pub struct AcceptFilter(pub Arc<ConnectionCaps>);

impl std::fmt::Debug for AcceptFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AcceptFilter")
    }
}

#[async_trait]
impl ConnectionFilter for AcceptFilter {
    async fn should_accept(&self, addr: Option<&SocketAddr>) -> bool {
        let Some(peer) = addr else {
            return true;
        };
        match self.0.admit(*peer, Instant::now()) {
            Ok(()) => true,
            Err(why) => {
                crate::telemetry::metrics::metrics().refused(match why {
                    Refused::Total(_) => "connections",
                    Refused::PerIp(_) => "connections-per-ip",
                });
                log_refusal(&self.0, why);
                false
            }
        }
    }
}

/// One line per second under a flood, with the count since the last one.
fn log_refusal(caps: &ConnectionCaps, why: Refused) {
    if let Some(n) = caps.refusals_to_log(u64::try_from(crate::clock::now_ms() / 1000).unwrap_or(0))
    {
        tracing::warn!(target: "limit", refused = n, reason = %why, "connections refused at accept");
    }
}

/// Wraps Pingora's HTTP app: holds the connection's place in the caps for
/// as long as it is served, and guards each HTTP/1 request head.
pub struct Served<A> {
    app: Arc<A>,
    caps: Arc<ConnectionCaps>,
    head: HeadRules,
}

impl<A> Served<A> {
    /// `app` served under `caps`, its HTTP/1 heads under `head`.
    pub fn new(app: A, caps: Arc<ConnectionCaps>, head: HeadRules) -> Self {
        Self {
            app: Arc::new(app),
            caps,
            head,
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Served<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let _place = peer.map(|p| self.caps.open(p));
        // HTTP/2 frames its own heads (and Pingora bounds them); only an
        // HTTP/1 connection reads heads byte by byte.
        let stream: Stream = if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            stream
        } else {
            Box::new(HeadGuard::new(stream, self.head, peer.map(|p| p.ip())))
        };
        self.app.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.app.cleanup().await
    }
}
