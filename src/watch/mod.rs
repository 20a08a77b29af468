//! A session's end ends its streams, in one place: proxied websockets,
//! proxied SSE and hub SSE each hold a [`StreamGuard`], which re-checks the
//! session as data flows and, for silent streams, keeps a socket on the
//! [`StreamWatch`] that a background sweep shuts when the session is gone.
//!
//! A stream outlives the check made when it opened, and Pingora only runs our
//! filters when data flows, so a quiet socket would keep talking to Sim
//! after its session was logged out, expired or revoked. Each stream on a
//! gated route registers a duplicate of a socket only it uses (the client's
//! over HTTP/1.1, the upstream's over HTTP/2); a sweep (every second, from a
//! background service) shuts down the sockets of sessions that are gone.
//! Pingora then sees that side close as usual and ends the stream.
//!
//! The duplicate descriptor is ours, so a sweep can never hit a descriptor
//! number the process has since reused for another connection.

use crate::identity::{Lookup, SessionAlive};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the watched sessions are checked. With the session cache's own
/// 3 s re-read, a revocation from the CLI closes its sockets within ~4 s; a
/// logout through this process within ~1 s.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How often a stream re-checks its session as data flows (and how often
/// the hub's SSE streams check it while idle).
pub const RECHECK: Duration = Duration::from_secs(1);

/// What a long stream of a signed-in user holds while it lives: its session
/// check, and (for streams that can fall silent) its place on the sweep.
/// Dropping it, with the request, takes the stream off the watch.
pub struct StreamGuard {
    alive: SessionAlive,
    checked: Instant,
    registration: Option<Registration>,
}

impl StreamGuard {
    /// A guard for a stream that lives while `alive` says so.
    pub fn new(alive: SessionAlive) -> Self {
        Self {
            alive,
            checked: Instant::now(),
            registration: None,
        }
    }

    /// Puts the socket `fd` (one only this stream uses) on `watch`'s sweep,
    /// so the stream ends with its session even if nothing flows. Without a
    /// spare descriptor it still ends on its next frame (logged).
    pub fn watch_socket(&mut self, watch: &Arc<StreamWatch>, fd: RawFd) {
        match watch.register(fd, self.alive.clone()) {
            Ok(r) => self.registration = Some(r),
            Err(e) => {
                tracing::warn!(target: "auth", error = %e, "cannot watch this stream; it ends on its next frame after the session");
            }
        }
    }

    /// Whether the session ended, checked at most every [`RECHECK`] and
    /// never waiting on a store ([`Lookup::Cached`]): cheap enough to call
    /// on every frame, on the worker thread that filters it.
    pub fn ended(&mut self) -> bool {
        if self.checked.elapsed() < RECHECK {
            return false;
        }
        self.checked = Instant::now();
        !(self.alive)(Lookup::Cached)
    }

    /// Whether the session ended, checked now.
    pub fn ended_now(&mut self) -> bool {
        self.checked = Instant::now();
        !(self.alive)(Lookup::Store)
    }

    /// As [`Self::ended_now`], on a blocking thread: with sessions in
    /// Redis the check may wait on the network, and a stream's task runs
    /// on a worker thread that serves other connections too.
    pub async fn ended_now_off_thread(&mut self) -> bool {
        self.checked = Instant::now();
        let alive = self.alive.clone();
        tokio::task::spawn_blocking(move || !alive(Lookup::Store))
            .await
            .unwrap_or(false)
    }
}

struct Watched {
    alive: SessionAlive,
    socket: TcpStream,
}

/// The silent-capable streams of gated routes and the sessions they belong to.
#[derive(Default)]
pub struct StreamWatch {
    streams: Mutex<HashMap<u64, Watched>>,
    next: AtomicU64,
}

/// Keeps a stream watched while it lives; dropping it (with the request's
/// context) stops the watch and closes the duplicate descriptor.
pub struct Registration {
    watch: Arc<StreamWatch>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut streams) = self.watch.streams.lock() {
            streams.remove(&self.id);
        }
    }
}

impl StreamWatch {
    /// Watches the socket `fd` until the returned guard drops.
    ///
    /// The caller must hold the connection that owns `fd` for the duration of
    /// this call (Pingora's session does, downstream and upstream), so the
    /// descriptor is open.
    pub fn register(
        self: &Arc<Self>,
        fd: RawFd,
        alive: SessionAlive,
    ) -> std::io::Result<Registration> {
        // SAFETY: `fd` belongs to the live downstream connection the caller holds
        // for the whole call; it is only borrowed to make our own duplicate.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let socket = TcpStream::from(owned);
        self.streams
            .lock()
            .map_err(|_| std::io::Error::other("stream watch poisoned"))?
            .insert(id, Watched { alive, socket });
        Ok(Registration {
            watch: self.clone(),
            id,
        })
    }

    /// How many streams are watched now.
    pub fn len(&self) -> usize {
        self.streams.lock().map_or(0, |s| s.len())
    }

    /// Whether no stream is watched.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Checks every watched stream's session and shuts down the sockets of
    /// those that ended; returns how many were closed. Session checks run
    /// outside the lock (they may read the session store).
    pub fn sweep(&self) -> usize {
        let checks: Vec<(u64, SessionAlive)> = match self.streams.lock() {
            Ok(s) => s.iter().map(|(id, w)| (*id, w.alive.clone())).collect(),
            Err(_) => return 0,
        };
        let ended: Vec<u64> = checks
            .into_iter()
            .filter(|(_, alive)| !alive(Lookup::Store))
            .map(|(id, _)| id)
            .collect();
        if ended.is_empty() {
            return 0;
        }
        let Ok(mut streams) = self.streams.lock() else {
            return 0;
        };
        let mut closed = 0;
        for id in ended {
            if let Some(w) = streams.remove(&id) {
                // Both directions: the client sees the close, and Pingora's read
                // of it ends, which ends the upstream half too.
                if let Err(e) = w.socket.shutdown(Shutdown::Both) {
                    tracing::debug!(target: "auth", error = %e, "stream already closed");
                }
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::info!(target: "auth", closed, "session ended; closing its stream");
        }
        closed
    }
}

/// The background service that sweeps a [`StreamWatch`] every second.
pub struct Sweeper(pub Arc<StreamWatch>);

#[async_trait]
impl BackgroundService for Sweeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if self.0.is_empty() {
                        continue;
                    }
                    let watch = self.0.clone();
                    // Session checks may read SQLite: off the async workers.
                    let _ = tokio::task::spawn_blocking(move || watch.sweep()).await;
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::AtomicBool;

    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (server, _) = l.accept().unwrap();
        (client, server)
    }

    #[test]
    fn a_sweep_closes_only_the_streams_whose_session_ended() {
        let watch = Arc::new(StreamWatch::default());
        let (mut c1, s1) = pair();
        let (c2, s2) = pair();
        let live1 = Arc::new(AtomicBool::new(true));
        let l1 = live1.clone();
        let r1 = watch
            .register(s1.as_raw_fd(), Arc::new(move |_| l1.load(Ordering::SeqCst)))
            .unwrap();
        let _r2 = watch.register(s2.as_raw_fd(), Arc::new(|_| true)).unwrap();
        assert_eq!(watch.sweep(), 0);
        assert_eq!(watch.len(), 2);

        live1.store(false, Ordering::SeqCst);
        assert_eq!(watch.sweep(), 1);
        assert_eq!(watch.len(), 1);
        // The client of the ended session reads end-of-stream; the other stays open.
        c1.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(c1.read(&mut buf).unwrap(), 0);
        c2.set_nonblocking(true).unwrap();
        let mut c2r = &c2;
        assert_eq!(
            c2r.read(&mut buf).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        drop(r1);
        assert_eq!(watch.len(), 1);
    }

    #[test]
    fn dropping_the_registration_stops_the_watch_and_releases_the_duplicate() {
        let watch = Arc::new(StreamWatch::default());
        let (mut client, server) = pair();
        let reg = watch
            .register(server.as_raw_fd(), Arc::new(|_| false))
            .unwrap();
        drop(reg);
        assert!(watch.is_empty());
        assert_eq!(watch.sweep(), 0, "nothing left to close");
        // Closing the original now really closes the socket (no duplicate keeps it open).
        drop(server);
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_guard_rechecks_at_most_every_interval_but_can_check_now() {
        let live = Arc::new(AtomicBool::new(true));
        let l = live.clone();
        let mut guard = StreamGuard::new(Arc::new(move |_| l.load(Ordering::SeqCst)));
        assert!(!guard.ended_now());
        live.store(false, Ordering::SeqCst);
        assert!(!guard.ended(), "checked just now: not again before RECHECK");
        assert!(guard.ended_now());
    }

    #[test]
    fn a_guard_puts_its_socket_on_the_watch_until_dropped() {
        let watch = Arc::new(StreamWatch::default());
        let (_client, server) = pair();
        let mut guard = StreamGuard::new(Arc::new(|_| true));
        guard.watch_socket(&watch, server.as_raw_fd());
        assert_eq!(watch.len(), 1);
        drop(guard);
        assert!(watch.is_empty());
    }
}
