//! The log's writer: lines are appended to a shared buffer under a mutex
//! (no system call on the request path) and written to stdout by a flusher
//! thread every [`FLUSH_EVERY`], or at once when the buffer passes
//! [`FLUSH_AT`], like nginx `access_log … buffer=64k flush=50ms`. The
//! queue-and-wake writer it replaces cost a futex wake, four
//! `sched_yield`s and a `write` per request (`strace -c`,
//! `benches/per_request.sh`). Nothing is dropped: a writer that finds the
//! buffer over [`HARD_CAP`] writes it out itself. A `kill -9` loses at most
//! the last [`FLUSH_EVERY`] of lines; a normal exit flushes them
//! ([`Guard`]).

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Longest a line waits before it reaches stdout.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// A buffer this full is written without waiting for the timer.
pub const FLUSH_AT: usize = 64 * 1024;
/// A buffer this full is written by the writer itself (the flusher is behind).
pub const HARD_CAP: usize = 4 * 1024 * 1024;

struct Shared {
    buf: Mutex<Vec<u8>>,
    wake: Condvar,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Shared {
    /// Takes what is buffered and writes it out (outside the buffer's lock).
    fn flush_now(&self) {
        let pending = {
            let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut *buf)
        };
        if pending.is_empty() {
            return;
        }
        let mut out = self.out.lock().unwrap_or_else(|p| p.into_inner());
        // Nowhere to report a failing stdout but stderr.
        if let Err(e) = out.write_all(&pending).and_then(|()| out.flush()) {
            eprintln!("esprit-edge: log lines not written: {e}");
        }
    }
}

/// A cheap handle to the shared buffer: `io::Write` for the JSON
/// formatter and the access line.
#[derive(Clone)]
pub struct BatchWriter(Arc<Shared>);

/// Flushes what is buffered when dropped (at exit) and stops the flusher.
pub struct Guard(Arc<Shared>, Arc<std::sync::atomic::AtomicBool>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.1.store(true, std::sync::atomic::Ordering::Relaxed);
        self.0.wake.notify_one();
        self.0.flush_now();
    }
}

/// A writer to `out` and its flusher thread.
pub fn start(out: Box<dyn Write + Send>) -> (BatchWriter, Guard) {
    let shared = Arc::new(Shared {
        buf: Mutex::new(Vec::with_capacity(FLUSH_AT * 2)),
        wake: Condvar::new(),
        out: Mutex::new(out),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, done) = (shared.clone(), stop.clone());
    let spawned = std::thread::Builder::new()
        .name("esprit-edge-log".into())
        .spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                {
                    let buf = s.buf.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = s
                        .wake
                        .wait_timeout_while(buf, FLUSH_EVERY, |b| b.len() < FLUSH_AT);
                }
                s.flush_now();
            }
        });
    if let Err(e) = spawned {
        eprintln!("esprit-edge: no log flusher thread ({e}); lines are written as they come");
    }
    (BatchWriter(shared.clone()), Guard(shared, stop))
}

impl Write for BatchWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let len = {
            let mut buf = self.0.buf.lock().unwrap_or_else(|p| p.into_inner());
            buf.extend_from_slice(data);
            buf.len()
        };
        if len >= HARD_CAP {
            self.0.flush_now();
        } else if len >= FLUSH_AT && len - data.len() < FLUSH_AT {
            // Crossed the mark with this line: wake the flusher once.
            self.0.wake.notify_one();
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for BatchWriter {
    type Writer = BatchWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, d: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(d);
            Ok(d.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_none_is_lost_at_exit() {
        let sink = Sink::default();
        let (w, guard) = start(Box::new(sink.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..5000 {
                        w.write_all(format!("{t}:{i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 20_000, "every line, once");
        for t in 0..4 {
            let mine: Vec<usize> = lines
                .iter()
                .filter_map(|l| l.strip_prefix(&format!("{t}:")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(
                mine,
                (0..5000).collect::<Vec<_>>(),
                "thread {t}'s lines in order"
            );
        }
    }

    #[test]
    fn the_timer_flushes_a_quiet_buffer() {
        let sink = Sink::default();
        let (mut w, _guard) = start(Box::new(sink.clone()));
        w.write_all(b"one line\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.0.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(&*sink.0.lock().unwrap(), b"one line\n");
    }
}
