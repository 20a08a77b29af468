//! Logs: JSON lines on stdout, one access line per request, Pingora's own `log`
//! output bridged into the same stream.

use std::net::IpAddr;
use std::time::Duration;

/// Keeps the log writer thread alive; dropping it flushes what is queued.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Installs the JSON subscriber. `RUST_LOG` overrides the default `info` level.
/// Lines are written by a dedicated thread in batches (formatting stays on the
/// worker, the write syscalls do not): per-line writes to stdout cost about a
/// fifth of the proxy's throughput. Nothing is dropped: a full queue waits.
pub fn init() -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("esprit-edge-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
}

/// One finished request, as the access log records it.
#[derive(Debug)]
pub struct Access<'a> {
    /// Client address as the edge determined it.
    pub client: Option<IpAddr>,
    /// Request method.
    pub method: &'a str,
    /// Normalised path (raw when it was refused), without the query.
    pub path: &'a str,
    /// Status sent; 0 when the client left before any response.
    pub status: u16,
    /// Response body bytes sent.
    pub bytes: usize,
    /// From the start of the request to the end of the response.
    pub duration: Duration,
    /// The matched route's pattern.
    pub route: Option<&'a str>,
    /// The upstream name, for proxied requests.
    pub upstream: Option<&'a str>,
    /// `http` or `https` as the browser used it.
    pub proto: &'a str,
    /// Why the request failed or was refused.
    pub error: Option<String>,
}

/// Writes the access-log line.
pub fn access(a: &Access<'_>) {
    tracing::info!(
        target: "access",
        client = a.client.map(|c| c.to_string()).unwrap_or_default(),
        method = a.method,
        path = a.path,
        status = a.status,
        bytes = a.bytes,
        duration_ms = a.duration.as_secs_f64() * 1000.0,
        route = a.route.unwrap_or(""),
        upstream = a.upstream.unwrap_or(""),
        proto = a.proto,
        error = a.error.as_deref().unwrap_or(""),
    );
}
