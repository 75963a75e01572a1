//! Bring your own server: the public types a program gets in each worker when it serves
//! with [`Server::serve`](super::Server::serve) instead of drover's threads: its inherited
//! [`Listeners`] as std sockets, and a [`WorkerHandle`] that reports readiness, heartbeats
//! and load to the supervisor and tells the program when to stop. It owns the load
//! accounting the program feeds ([`Load`]: requests in flight with their start times,
//! requests served) and the heartbeat's mode; sending to the supervisor is the report
//! thread's (`byo_worker`), waiting for the stop `stop`'s.

use std::io;
use std::net::TcpListener;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::parts::WorkerInfo;
use super::stop::{StopState, Stopped};
use crate::notify::monotonic_usec;

/// A listener drover opened (`--listen`, socket activation or a live upgrade's handover).
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// The TCP listener; an error naming the listener if it is a Unix socket.
    pub fn into_tcp(self) -> io::Result<TcpListener> {
        match self {
            Listener::Tcp(l) => Ok(l),
            Listener::Unix(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this listener is a Unix socket, not TCP (take it with into_unix)",
            )),
        }
    }

    /// The Unix listener; an error if it is TCP.
    pub fn into_unix(self) -> io::Result<UnixListener> {
        match self {
            Listener::Unix(l) => Ok(l),
            Listener::Tcp(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "this listener is TCP, not a Unix socket (take it with into_tcp)",
            )),
        }
    }
}

/// The worker's inherited listeners, in `--listen` order, each with its name (`--listen
/// NAME=ADDR`, else `listen0`, `listen1`, ...). Each can be taken once, by index or by name.
///
/// They come **non-blocking**, ready for `tokio::net::TcpListener::from_std` (which requires
/// it). The flag belongs to the open socket, which the supervisor and every worker share:
/// a program that wants blocking accepts (plain threads) may call `set_nonblocking(false)`,
/// and must then do so in every worker, as the same program does. TCP listeners also have
/// `TCP_NODELAY` (inherited by accepted connections) and, unless the builder's
/// `defer_accept(false)`, `TCP_DEFER_ACCEPT` set. Dropping a listener closes only this
/// worker's copy.
#[derive(Debug)]
pub struct Listeners {
    entries: Vec<(String, Option<Listener>)>,
}

impl Listeners {
    pub(super) fn new(entries: Vec<(String, Listener)>) -> Listeners {
        Listeners {
            entries: entries.into_iter().map(|(n, l)| (n, Some(l))).collect(),
        }
    }

    /// How many listeners drover handed over (taken ones included).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The names, in order (taken ones included).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Takes the listener at `index`; `None` if there is none or it was taken.
    pub fn take(&mut self, index: usize) -> Option<Listener> {
        self.entries.get_mut(index)?.1.take()
    }

    /// Takes the listener named `name`; `None` if there is none or it was taken.
    pub fn take_named(&mut self, name: &str) -> Option<Listener> {
        self.entries.iter_mut().find(|(n, _)| n == name)?.1.take()
    }

    /// The first TCP listener not taken yet, or an error saying there is none (the common
    /// case of a server on one `--listen` address).
    pub fn take_tcp(&mut self) -> io::Result<TcpListener> {
        let entry = self
            .entries
            .iter_mut()
            .find(|(_, l)| matches!(l, Some(Listener::Tcp(_))));
        match entry.and_then(|(_, l)| l.take()) {
            Some(l) => l.into_tcp(),
            None => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "no TCP listener left: pass one with --listen HOST:PORT",
            )),
        }
    }
}

impl IntoIterator for Listeners {
    type Item = (String, Listener);
    type IntoIter = std::vec::IntoIter<(String, Listener)>;

    /// The listeners not taken yet, with their names.
    fn into_iter(self) -> Self::IntoIter {
        let left: Vec<_> = self
            .entries
            .into_iter()
            .filter_map(|(n, l)| Some((n, l?)))
            .collect();
        left.into_iter()
    }
}

/// Requests whose start time is tracked for the request timeout; more in flight at once
/// still count as busy, and the oldest of the tracked ones stands for all.
pub(super) const TRACKED_MAX: usize = 1024;

/// Counter shards: each thread that starts requests uses one (assigned in turn), so the
/// program's threads do not bounce one cache line per request between them.
const SHARDS: usize = 16;

/// One shard's counters, a cache line of its own.
#[repr(align(64))]
#[derive(Default)]
struct Shard {
    busy: AtomicU32,
    requests: AtomicU64,
}

/// Where a request was counted: its shard, and its entry in `starts` if one was free.
#[derive(Clone, Copy, Debug)]
pub(super) struct Started {
    shard: usize,
    entry: Option<usize>,
}

/// The program's load, fed by [`WorkerHandle::request_started`] and the guards it returns,
/// read by the report thread.
pub(super) struct Load {
    /// Start (CLOCK_MONOTONIC µs) of a request in flight, 0 for a free entry. A shard
    /// looks for a free entry from its own stretch of the table first.
    starts: Box<[AtomicU64]>,
    shards: Box<[Shard]>,
}

thread_local! {
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS
    };
}

impl Load {
    pub(super) fn new() -> Load {
        Load {
            starts: (0..TRACKED_MAX).map(|_| AtomicU64::new(0)).collect(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }

    /// A request starts now.
    pub(super) fn start(&self, now_usec: u64) -> Started {
        let shard = SHARD.with(|s| *s);
        self.shards[shard].busy.fetch_add(1, Ordering::Relaxed);
        let first = shard * (TRACKED_MAX / SHARDS);
        let entry = (0..TRACKED_MAX)
            .map(|i| (first + i) % TRACKED_MAX)
            .find(|&i| {
                self.starts[i]
                    .compare_exchange(0, now_usec.max(1), Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            });
        Started { shard, entry }
    }

    /// The request `started` ends (on any thread: it is counted off its own shard).
    pub(super) fn finish(&self, started: Started) {
        if let Some(i) = started.entry {
            self.starts[i].store(0, Ordering::Relaxed);
        }
        let shard = &self.shards[started.shard];
        shard.busy.fetch_sub(1, Ordering::Relaxed);
        shard.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests in flight, the start of the oldest one, requests served.
    pub(super) fn snapshot(&self) -> (u32, Option<u64>, u64) {
        let (mut busy, mut requests) = (0u32, 0u64);
        for shard in self.shards.iter() {
            busy = busy.saturating_add(shard.busy.load(Ordering::Relaxed));
            requests += shard.requests.load(Ordering::Relaxed);
        }
        let oldest = if busy == 0 {
            None
        } else {
            self.starts
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .filter(|&s| s != 0)
                .min()
        };
        (busy, oldest, requests)
    }
}

/// How the report thread decides that the program is alive.
pub(super) enum Health {
    /// Beats while the process runs (the report thread is drover's; a stopped or killed
    /// process stops beating).
    Alive,
    /// Beats when the program's check says so.
    Check(Box<dyn Fn() -> bool + Send + Sync>),
    /// Beats only as the program calls [`WorkerHandle::heartbeat`].
    Manual,
}

/// What the program's threads share with the report thread.
pub(super) struct Shared {
    pub(super) info: WorkerInfo,
    pub(super) load: Load,
    pub(super) stop: Arc<StopState>,
    /// Raised [`STOP_GRACE`](super::STOP_GRACE) after `stop`.
    pub(super) grace: Arc<StopState>,
    pub(super) health: Mutex<Health>,
    /// The program's last [`WorkerHandle::heartbeat`] (µs), for [`Health::Manual`].
    pub(super) manual_beat_usec: AtomicU64,
    pub(super) ready: AtomicBool,
    /// Sends `READY=1`; the report thread has its own socket.
    pub(super) ready_sock: std::os::unix::net::UnixDatagram,
    pub(super) notify_path: std::path::PathBuf,
    /// The report thread sleeps until poked: the first load change pokes it.
    pub(super) reporter_idle: AtomicBool,
    /// The report thread's wake-up pipe (also the signal handler's `MAIN_FD`; never closed).
    pub(super) wake_write: OwnedFd,
}

impl Shared {
    /// For the life of the process: the report thread and every handle share it, and a
    /// worker ends in `_exit`, never dropping it.
    pub(super) fn leak(self) -> &'static Shared {
        Box::leak(Box::new(self))
    }

    fn wake_reporter(&self) {
        if self.reporter_idle.load(Ordering::Relaxed)
            && self.reporter_idle.swap(false, Ordering::AcqRel)
        {
            let _ = nix::unistd::write(&self.wake_write, b"w");
        }
    }
}

/// The worker's line to the supervisor, for a program that serves on its own (see
/// [`Server::serve`](super::Server::serve)). Cheap to clone; `Send + Sync`.
///
/// - **Readiness**: call [`ready`](Self::ready) once the program accepts connections. A
///   worker that never does is killed after `--boot-timeout` and replaced, as any worker
///   that never becomes ready (unless `--readiness` says another way).
/// - **Heartbeat**: automatic. A drover thread in the worker stamps it while the process
///   runs, so a stopped or killed process stops beating and, with `--heartbeat-timeout`,
///   the watchdog replaces it. Tie it to the program's own health with
///   [`set_health_check`](Self::set_health_check), or take it over with
///   [`use_manual_heartbeat`](Self::use_manual_heartbeat) and
///   [`heartbeat`](Self::heartbeat) (say, from a task on the program's runtime, so that a
///   wedged runtime stops the beat).
/// - **Load**: [`request_started`](Self::request_started) returns a guard; the request ends
///   when it drops. The supervisor sees requests in flight, the oldest one's start and the
///   requests served: load-aware scaling, `--max-requests` and the request timeout (`request_timeout`) work as
///   with drover's own threads. (The `tower` feature's `LoadLayer` does this per request.)
/// - **Stop**: [`stopped`](Self::stopped) (a future), [`wait_stop`](Self::wait_stop)
///   (blocking) or [`stop_fd`](Self::stop_fd) (readable once stopping). TERM and INT ask
///   for a graceful stop, and so does the supervisor when it retires the worker
///   (`--max-requests`, a rolling restart, an upgrade, a scale down): stop accepting, shut
///   the connections down gracefully at [`stop_grace_over`](Self::stop_grace_over),
///   finish the requests in flight, return from the serve function (exit code 0) before the
///   supervisor's stop ladder runs out (`--stop-timeout`). QUIT exits at once. The worker
///   also exits at once if the supervisor dies. Do not install handlers of your own for
///   TERM, INT or QUIT (say `tokio::signal`): they would replace drover's.
#[derive(Clone)]
pub struct WorkerHandle {
    /// Lives as long as the worker process (leaked once per worker, see `Shared::leak`):
    /// a clone is a pointer copy, and a request's guard touches no shared reference count.
    pub(super) shared: &'static Shared,
}

impl WorkerHandle {
    /// Who this worker is (slot, generation, pid, `--threads`).
    pub fn info(&self) -> &WorkerInfo {
        &self.shared.info
    }

    /// Tells the supervisor this worker serves (`READY=1`); later calls do nothing.
    pub fn ready(&self) {
        if self.shared.ready.swap(true, Ordering::SeqCst) {
            return;
        }
        let msg = b"READY=1\nSTATUS=serving";
        if let Err(e) = self
            .shared
            .ready_sock
            .send_to(msg, &self.shared.notify_path)
        {
            tracing::warn!("worker pid={}: READY=1: {e}", self.shared.info.pid);
        }
    }

    /// One request begins now; it ends when the guard drops (or is passed to
    /// [`request_finished`](Self::request_finished)).
    pub fn request_started(&self) -> RequestGuard {
        let entry = self.shared.load.start(monotonic_usec());
        self.shared.wake_reporter();
        RequestGuard {
            shared: self.shared,
            entry,
        }
    }

    /// Ends the request (the same as dropping its guard).
    pub fn request_finished(&self, request: RequestGuard) {
        drop(request);
    }

    /// Requests in flight now, and requests finished so far.
    pub fn load(&self) -> (u32, u64) {
        let (busy, _, requests) = self.shared.load.snapshot();
        (busy, requests)
    }

    /// A future that completes once the worker is asked to stop.
    pub fn stopped(&self) -> Stopped {
        self.shared.stop.future()
    }

    /// A future that completes [`STOP_GRACE`](super::STOP_GRACE) after the stop: the
    /// moment to shut the connections down (hyper's and axum's graceful shutdown). Stop
    /// accepting at [`stopped`](Self::stopped), but not the connections: hyper closes a
    /// connection whose first request it has not read yet, and one accepted just before
    /// the stop may not have been read; its client would see a reset. Within the grace
    /// those are read and answered (with `Connection: close` under `LoadLayer`), and busy
    /// keep-alive clients move to other workers. The examples show both steps.
    pub fn stop_grace_over(&self) -> Stopped {
        self.shared.grace.future()
    }

    /// Blocks until the worker is asked to stop.
    pub fn wait_stop(&self) {
        self.shared.stop.wait(None);
    }

    /// Blocks until the worker is asked to stop or `timeout` passes; true if stopping.
    pub fn wait_stop_timeout(&self, timeout: Duration) -> bool {
        self.shared.stop.wait(Some(timeout))
    }

    /// Whether the worker was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.shared.stop.is_stopping() || super::signals::stop_level() > 0
    }

    /// A descriptor that becomes readable (`POLLIN`) once the worker is asked to stop and
    /// stays so (never read from it). It lives as long as the process.
    pub fn stop_fd(&self) -> BorrowedFd<'_> {
        self.shared.stop.fd()
    }

    /// The heartbeat beats only while `check` returns true. It runs on drover's report
    /// thread at each beat (a quarter of `--heartbeat-timeout`), so it must answer quickly
    /// and must not block; a panic counts as unhealthy. Replaces the manual mode.
    pub fn set_health_check(&self, check: impl Fn() -> bool + Send + Sync + 'static) {
        *self.health() = Health::Check(Box::new(check));
    }

    /// The heartbeat beats only as the program calls [`heartbeat`](Self::heartbeat): call
    /// it more often than `--heartbeat-timeout` (a quarter of it is the usual pace).
    /// Counts from now: the first beat is this call.
    pub fn use_manual_heartbeat(&self) {
        self.heartbeat();
        *self.health() = Health::Manual;
    }

    /// A heartbeat, in the manual mode (ignored otherwise).
    pub fn heartbeat(&self) {
        self.shared
            .manual_beat_usec
            .store(monotonic_usec(), Ordering::Relaxed);
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.shared.health.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("info", &self.shared.info)
            .field("stopping", &self.is_stopping())
            .finish()
    }
}

/// A request in flight (from [`WorkerHandle::request_started`]); it ends when dropped.
#[must_use = "the request ends when the guard drops"]
pub struct RequestGuard {
    shared: &'static Shared,
    entry: Started,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.shared.load.finish(self.entry);
        self.shared.wake_reporter();
    }
}

impl std::fmt::Debug for RequestGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestGuard").finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A handle on a worker that is not one (no supervisor): for the unit tests here and
    /// in the tower layer.
    pub(crate) fn detached_handle() -> WorkerHandle {
        let stop = Arc::new(StopState::with_pipe().unwrap());
        let grace = Arc::new(StopState::with_pipe().unwrap());
        let (_r, wake_write) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .unwrap();
        WorkerHandle {
            shared: Shared::leak(Shared {
                info: WorkerInfo {
                    slot: 0,
                    incarnation: 1,
                    generation: 1,
                    pid: std::process::id(),
                    threads: 1,
                    port: None,
                },
                load: Load::new(),
                stop,
                grace,
                health: Mutex::new(Health::Alive),
                manual_beat_usec: AtomicU64::new(0),
                ready: AtomicBool::new(false),
                ready_sock: std::os::unix::net::UnixDatagram::unbound().unwrap(),
                notify_path: "/nonexistent/notify".into(),
                reporter_idle: AtomicBool::new(false),
                wake_write,
            }),
        }
    }

    #[test]
    fn the_handle_its_guards_and_futures_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<WorkerHandle>();
        send_sync::<RequestGuard>();
        send_sync::<Stopped>();
        send_sync::<Listeners>();
    }

    #[test]
    fn guards_count_requests_in_flight_and_served_with_the_oldest_start() {
        let load = Load::new();
        let a = load.start(100);
        let b = load.start(50);
        assert_eq!(load.snapshot(), (2, Some(50), 0));
        load.finish(b);
        assert_eq!(load.snapshot(), (1, Some(100), 1));
        load.finish(a);
        assert_eq!(load.snapshot(), (0, None, 2));
    }

    #[test]
    fn a_request_may_end_on_another_thread_than_its_start() {
        let load: &'static Load = Box::leak(Box::new(Load::new()));
        let started: Vec<_> = (0..8).map(|i| load.start(10 + i)).collect();
        let ender = std::thread::spawn(move || {
            let mine = load.start(5);
            for s in started {
                load.finish(s);
            }
            mine
        });
        let mine = ender.join().unwrap();
        assert_eq!(load.snapshot(), (1, Some(5), 8));
        load.finish(mine);
        assert_eq!(load.snapshot(), (0, None, 9));
    }

    #[test]
    fn requests_beyond_the_tracked_ones_still_count() {
        let load = Load::new();
        let entries: Vec<_> = (0..TRACKED_MAX as u64 + 3)
            .map(|i| load.start(1000 + i))
            .collect();
        assert_eq!(entries.iter().filter(|e| e.entry.is_none()).count(), 3);
        assert_eq!(load.snapshot(), (TRACKED_MAX as u32 + 3, Some(1000), 0));
        for e in entries {
            load.finish(e);
        }
        assert_eq!(load.snapshot(), (0, None, TRACKED_MAX as u64 + 3));
    }

    #[test]
    fn the_handle_s_guard_ends_its_request_on_drop() {
        let w = detached_handle();
        let g1 = w.request_started();
        let g2 = w.request_started();
        assert_eq!(w.load(), (2, 0));
        w.request_finished(g1);
        drop(g2);
        assert_eq!(w.load(), (0, 2));
        assert!(!w.is_stopping());
    }

    #[test]
    fn listeners_are_taken_once_by_index_or_name() {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let b = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut ls = Listeners::new(vec![
            ("api".into(), Listener::Tcp(a)),
            ("admin".into(), Listener::Tcp(b)),
        ]);
        assert_eq!(ls.names().collect::<Vec<_>>(), ["api", "admin"]);
        assert!(ls.take_named("admin").unwrap().into_tcp().is_ok());
        assert!(ls.take_named("admin").is_none(), "taken");
        assert!(ls.take_tcp().is_ok(), "api is the first TCP one left");
        assert!(ls.take(0).is_none());
        let err = ls.take_tcp().unwrap_err();
        assert!(err.to_string().contains("--listen"), "{err}");
        assert_eq!(ls.len(), 2);
        assert_eq!(ls.into_iter().count(), 0);
    }
}
