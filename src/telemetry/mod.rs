//! Logs: JSON lines on stdout, one access line per request, Pingora's own `log`
//! output bridged into the same stream; [`metrics`], what the admin listener
//! exposes.

pub mod batch;
pub mod metrics;

use batch::BatchWriter;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The log's buffer, for the access line (written without the JSON
/// formatter of `tracing`, which cost about a seventh of a proxied request).
static ACCESS_WRITER: OnceLock<BatchWriter> = OnceLock::new();

/// Keeps the log flusher alive; dropping it writes what is buffered.
pub type LogGuard = batch::Guard;

/// Installs the JSON subscriber. `RUST_LOG` overrides the default `info` level.
/// Lines are buffered and written in batches ([`batch`]): formatting stays
/// on the worker, the write system calls come every 50 ms at most, not per
/// line. Nothing is dropped.
pub fn init() -> LogGuard {
    let (writer, guard) = batch::start(Box::new(std::io::stdout()));
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(writer.clone())
        .try_init();
    let _ = ACCESS_WRITER.set(writer);
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
    /// The request's id, as passed upstream.
    pub request_id: &'a str,
    /// Why the request failed or was refused.
    pub error: Option<String>,
}

/// Writes the access-log line: the same JSON object, fields and order as the
/// `tracing` formatter would write, formatted here in one buffer and queued
/// to the log thread in one piece. `RUST_LOG` still decides whether it is written.
pub fn access(a: &Access<'_>) {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    let Some(writer) = ACCESS_WRITER.get() else {
        // No subscriber of ours (library use, tests): go through `tracing`.
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
            request_id = a.request_id,
            error = a.error.as_deref().unwrap_or(""),
        );
        return;
    };
    let line = access_line(a, SystemTime::now());
    if let Err(e) = writer.clone().write_all(line.as_bytes()) {
        tracing::warn!(target: "edge", error = %e, "access line not written");
    }
}

/// The access line as JSON, newline-terminated.
fn access_line(a: &Access<'_>, now: SystemTime) -> String {
    let mut out = String::with_capacity(320);
    let mut num = itoa::Buffer::new();
    out.push_str("{\"timestamp\":\"");
    push_timestamp(&mut out, now);
    out.push_str("\",\"level\":\"INFO\",\"client\":\"");
    if let Some(c) = a.client {
        push_ip(&mut out, c);
    }
    out.push_str("\",\"method\":");
    json_str(&mut out, a.method);
    out.push_str(",\"path\":");
    json_str(&mut out, a.path);
    out.push_str(",\"status\":");
    out.push_str(num.format(a.status));
    out.push_str(",\"bytes\":");
    out.push_str(num.format(a.bytes));
    let _ = write!(
        out,
        ",\"duration_ms\":{},\"route\":",
        serde_json::Value::from(a.duration.as_secs_f64() * 1000.0)
    );
    json_str(&mut out, a.route.unwrap_or(""));
    out.push_str(",\"upstream\":");
    json_str(&mut out, a.upstream.unwrap_or(""));
    out.push_str(",\"proto\":");
    json_str(&mut out, a.proto);
    out.push_str(",\"request_id\":");
    json_str(&mut out, a.request_id);
    out.push_str(",\"error\":");
    json_str(&mut out, a.error.as_deref().unwrap_or(""));
    out.push_str(",\"target\":\"access\"}\n");
    out
}

/// Appends `ip` as `Display` writes it; an IPv4 address without `core::fmt`
/// (the access line and the forwarding headers write one per request).
pub fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let mut num = itoa::Buffer::new();
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                out.push_str(num.format(octet));
            }
        }
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Appends `now` as RFC 3339 with microseconds, as `humantime` writes it;
/// the part up to the seconds is formatted once per second per thread,
/// not once per access line (issue 12).
fn push_timestamp(out: &mut String, now: SystemTime) {
    use std::cell::RefCell;
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs {
            let whole = humantime::format_rfc3339_seconds(
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            )
            .to_string();
            // "2026-11-18T11:06:40Z": everything but the zone.
            cached.1 = whole.trim_end_matches('Z').to_string();
            cached.0 = secs;
        }
        out.push_str(&cached.1);
    });
    out.push('.');
    let mut num = itoa::Buffer::new();
    let micros = num.format(since.subsec_micros());
    for _ in micros.len()..6 {
        out.push('0');
    }
    out.push_str(micros);
    out.push('Z');
}

/// Appends `s` as a JSON string; the common case (nothing to escape) is one copy.
fn json_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f)
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_line_is_one_json_object_with_every_field() {
        let a = Access {
            client: Some("203.0.113.7".parse().unwrap()),
            method: "GET",
            path: "/studio/\"x\"\u{7f}\\",
            status: 200,
            bytes: 5120,
            duration: Duration::from_micros(2500),
            route: Some("/studio/"),
            upstream: Some("sim"),
            proto: "https",
            request_id: "abc-1",
            error: Some("line\nbreak".into()),
        };
        let line = access_line(
            &a,
            SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_000_000_123_456),
        );
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1, "one line: {line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["timestamp"], "2026-11-18T11:06:40.123456Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["client"], "203.0.113.7");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/studio/\"x\"\u{7f}\\");
        assert_eq!(v["status"], 200);
        assert_eq!(v["bytes"], 5120);
        assert_eq!(v["duration_ms"], 2.5);
        assert_eq!(v["route"], "/studio/");
        assert_eq!(v["upstream"], "sim");
        assert_eq!(v["proto"], "https");
        assert_eq!(v["request_id"], "abc-1");
        assert_eq!(v["error"], "line\nbreak");
        assert_eq!(v["target"], "access");
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 14);
        // The cached per-second part and the microseconds, against humantime's whole format.
        for micros in [
            0u64,
            7,
            999_999,
            1_795_000_000_000_001,
            1_795_000_001_100_000,
        ] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_micros(micros);
            let mut got = String::new();
            push_timestamp(&mut got, t);
            assert_eq!(got, humantime::format_rfc3339_micros(t).to_string());
        }

        let none = Access {
            client: None,
            route: None,
            upstream: None,
            error: None,
            ..a
        };
        let v: serde_json::Value =
            serde_json::from_str(&access_line(&none, SystemTime::now())).unwrap();
        assert_eq!(v["client"], "");
        assert_eq!(v["route"], "");
        assert_eq!(v["error"], "");
    }
}
