//! The worker process of a bring-your-own-server pool ([`Server::serve`]): what runs in each
//! forked child. It owns the [`Serving`] runtime the shell forks and the worker's drover
//! side: the stop handlers, the listeners handed over as std types, and the report thread
//! (`drover-report`), which sends heartbeats and the load the program feeds (on the report
//! board, or by sd_notify datagrams without one) and turns a stop signal into the
//! program's stop ([`super::stop`]). The program's own code runs on the main thread, with
//! whatever threads and runtime it starts. It must not serve connections (the program
//! does) nor judge the worker's health beyond withholding the heartbeat.
//!
//! The report thread sleeps until a load change pokes it (the first request to start or
//! finish while it sleeps), a signal does, or a heartbeat is due (a quarter of the
//! watchdog timeout); while requests are in flight it looks every 100 ms, so the request
//! timeout sees a stuck request's start.
//!
//! [`Server::serve`]: super::Server::serve

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike};

use drover_machine::WorkerId;

use super::byo::{Health, Listener, Listeners, Load, Shared, WorkerHandle};
use super::parts::{tune_listener, Hooks, Parts, Tuning, WorkerInfo};
use super::signals::{install_stop_handlers, stop_level, unblock_signals, MAIN_FD, STOP_FD};
use super::stop::StopState;
use super::STOP_GRACE;
use crate::board::{Board, Report, DOORBELL};
use crate::notify::monotonic_usec;
use crate::spawn::{ForkedChild, ForkedWorker};

/// How often the report thread looks while requests are in flight or the load moves.
const REPORT_EVERY: Duration = Duration::from_millis(100);

type Main = Box<dyn FnMut(Listeners, WorkerHandle) -> i32>;

pub(super) struct Serving {
    board: Option<Board>,
    keep_fds: Vec<RawFd>,
    hooks: Hooks,
    tuning: Tuning,
    main: Main,
}

impl Serving {
    pub(super) fn new(
        parts: Parts,
        main: impl FnMut(Listeners, WorkerHandle) -> i32 + 'static,
    ) -> Serving {
        Serving {
            board: parts.board,
            keep_fds: parts.keep_fds,
            hooks: parts.hooks,
            tuning: parts.tuning,
            main: Box::new(main),
        }
    }
}

impl ForkedWorker for Serving {
    fn keep_fds(&self) -> &[RawFd] {
        &self.keep_fds
    }

    fn before_fork(&mut self) {
        if let Some(f) = &mut self.hooks.before_fork {
            f();
        }
    }

    fn prepare(&mut self, worker: WorkerId) {
        if let Some(board) = &self.board {
            board.reset(worker);
        }
    }

    fn board(&self) -> Option<&Board> {
        self.board.as_ref()
    }

    fn run(&mut self, child: ForkedChild<'_>) -> i32 {
        let info = WorkerInfo::of(&child);
        if let Some(f) = &mut self.hooks.after_fork {
            f(&info);
        }
        match self.serve(&child, info) {
            Ok(code) => code,
            Err(e) => {
                tracing::error!("worker w={}: {e}", child.worker);
                71 // EX_OSERR
            }
        }
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
}

/// The inherited listener fds as std listeners, non-blocking and tuned.
fn listeners(child: &ForkedChild<'_>, tuning: Tuning) -> io::Result<Listeners> {
    let mut entries = Vec::with_capacity(child.listen_fds.len());
    for (i, &fd) in child.listen_fds.iter().enumerate() {
        let name = child
            .listen_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| format!("listen{i}"));
        let unix = getsockname::<nix::sys::socket::SockaddrStorage>(fd)
            .is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
        // SAFETY: the listener fd is open in this worker (kept across the fork) and nothing
        // else in the worker owns it: the program gets the one owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = if unix {
            let l = UnixListener::from(owned);
            l.set_nonblocking(true)?;
            Listener::Unix(l)
        } else {
            tune_listener(fd, tuning.defer_accept);
            let l = TcpListener::from(owned);
            l.set_nonblocking(true)?;
            Listener::Tcp(l)
        };
        entries.push((name, listener));
    }
    Ok(Listeners::new(entries))
}

impl Serving {
    fn serve(&mut self, child: &ForkedChild<'_>, info: WorkerInfo) -> io::Result<i32> {
        let (stop_read, stop_write) = pipe_pair()?;
        let (wake_read, wake_write) = pipe_pair()?;
        let (grace_read, grace_write) = pipe_pair()?;
        // The signal handler writes to both until the process exits: they are never closed
        // (`StopState` and `Shared` live in an `Arc` the report thread holds for ever).
        STOP_FD.store(stop_write.as_raw_fd(), Ordering::SeqCst);
        MAIN_FD.store(wake_write.as_raw_fd(), Ordering::SeqCst);
        install_stop_handlers()?;
        let listeners = listeners(child, self.tuning)?;
        let ready_sock = UnixDatagram::unbound()?;
        ready_sock.set_write_timeout(Some(Duration::from_secs(1)))?;
        let report_sock = UnixDatagram::unbound()?;
        report_sock.set_write_timeout(Some(Duration::from_secs(1)))?;

        if let Some(f) = &mut self.hooks.on_worker_start {
            f(&info);
        }
        let shared = Shared::leak(Shared {
            info: info.clone(),
            load: Load::new(),
            stop: Arc::new(StopState::new(stop_read, stop_write)),
            grace: Arc::new(StopState::new(grace_read, grace_write)),
            health: Mutex::new(Health::Alive),
            manual_beat_usec: AtomicU64::new(0),
            ready: AtomicBool::new(false),
            ready_sock,
            notify_path: child.notify_path.to_path_buf(),
            reporter_idle: AtomicBool::new(false),
            wake_write,
        });
        let reporter = Reporter {
            shared,
            // SAFETY: the board stays mapped for the life of this process: the `Serving` that
            // owns it is dropped only after `_exit` (never), like the shell that holds it.
            board: self
                .board
                .as_ref()
                .filter(|b| b.holds(child.worker))
                .map(|b| unsafe { &*(b as *const Board) }),
            worker: child.worker,
            watchdog: child
                .watchdog_usec
                .map(Duration::from_micros)
                .filter(|d| !d.is_zero()),
            sock: report_sock,
            wake_read,
            death: child.death_read,
        };
        // Spawned with every signal blocked (inherited): TERM, INT and QUIT land on the
        // program's threads, whose handler only pokes pipes.
        std::thread::Builder::new()
            .name("drover-report".into())
            .spawn(move || reporter.run())?;
        unblock_signals();

        let code = (self.main)(listeners, WorkerHandle { shared });
        if let Some(f) = &mut self.hooks.on_worker_exit {
            f(&info);
        }
        Ok(code)
    }
}

/// The heartbeat to publish now: `now` if the program is healthy, its own last beat in the
/// manual mode, `None` to withhold it.
fn beat(shared: &Shared, now: u64) -> Option<u64> {
    let health = shared.health.lock().unwrap_or_else(|p| p.into_inner());
    match &*health {
        Health::Alive => Some(now),
        Health::Manual => Some(shared.manual_beat_usec.load(Ordering::Relaxed)),
        Health::Check(check) => {
            let run = std::panic::AssertUnwindSafe(check);
            match std::panic::catch_unwind(run) {
                Ok(true) => Some(now),
                Ok(false) => None,
                Err(_) => {
                    tracing::warn!(
                        "worker pid={}: the health check panicked; withholding the heartbeat",
                        shared.info.pid
                    );
                    None
                }
            }
        }
    }
}

/// The report thread: heartbeats, load and the stop, until the process exits.
struct Reporter {
    shared: &'static Shared,
    board: Option<&'static Board>,
    worker: WorkerId,
    watchdog: Option<Duration>,
    sock: UnixDatagram,
    wake_read: OwnedFd,
    /// The death pipe's read end: EOF once the supervisor is gone.
    death: RawFd,
}

/// Ends the worker at once (QUIT, or the supervisor died): no unwinding into the program's
/// threads, no exit handlers.
fn exit_now() -> ! {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process; nothing runs after it.
    unsafe { libc::_exit(0) }
}

impl Reporter {
    fn send(&self, msg: &str) -> bool {
        match self.sock.send_to(msg.as_bytes(), &self.shared.notify_path) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("notify {:?}: {e}", msg.lines().next().unwrap_or(""));
                false
            }
        }
    }

    fn run(mut self) {
        let pid = self.shared.info.pid;
        let beat_every = self.watchdog.map(|w| w / 4);
        // SAFETY: the death pipe's read end stays open for the life of the process (the
        // fork kept it; nothing in the worker closes it).
        let death = unsafe { BorrowedFd::borrow_raw(self.death) };
        // Nothing changed at the last look and nothing is in flight: sleep until the next
        // heartbeat is due (for ever without a watchdog) or a request or signal pokes.
        let mut quiet = false;
        let mut announced = false;
        let mut beat_usec = 0u64;
        let mut last_watchdog = 0u64;
        let mut last_load: Option<(u32, Option<u64>, u64)> = None;
        let mut unhealthy_logged = false;
        let mut msg = String::with_capacity(128);
        let mut drain = [0u8; 64];
        loop {
            let mut fds = [
                PollFd::new(self.wake_read.as_fd(), PollFlags::POLLIN),
                PollFd::new(death, PollFlags::POLLIN),
            ];
            let wait = if quiet {
                beat_every
            } else {
                Some(REPORT_EVERY)
            };
            let timeout = wait.map_or(PollTimeout::NONE, |w| {
                PollTimeout::try_from(w.as_millis().clamp(1, i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            });
            let _ = nix::poll::poll(&mut fds, timeout);
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                tracing::warn!("worker pid={pid}: the supervisor is gone; exiting");
                exit_now();
            }
            let wake: BorrowedFd<'_> = self.wake_read.as_fd();
            while nix::unistd::read(wake, &mut drain).is_ok_and(|n| n > 0) {}
            match stop_level() {
                0 => {}
                1 => {
                    if !announced {
                        announced = true;
                        self.send("STOPPING=1");
                        self.shared.stop.trigger();
                        let grace = self.shared.grace.clone();
                        let timer = std::thread::Builder::new()
                            .name("drover-grace".into())
                            .spawn(move || {
                                std::thread::sleep(STOP_GRACE);
                                grace.trigger();
                            });
                        if let Err(e) = timer {
                            // Without the timer the program's connections close at once.
                            tracing::warn!("worker pid={pid}: stop grace timer: {e}");
                            self.shared.grace.trigger();
                        }
                    }
                }
                _ => exit_now(),
            }

            let now = monotonic_usec();
            let load = self.shared.load.snapshot();
            let (in_flight, oldest, requests) = load;
            quiet = in_flight == 0 && last_load == Some(load);
            // The supervisor counts a worker's capacity in `--threads`: an async program
            // with more requests in flight than threads is fully busy, no more.
            let busy = in_flight.min(self.shared.info.threads);
            if quiet {
                // Then looked at again: a request that started between the snapshot and
                // this store saw the thread awake and did not poke it.
                self.shared.reporter_idle.store(true, Ordering::SeqCst);
                if self.shared.load.snapshot() != load {
                    self.shared.reporter_idle.store(false, Ordering::SeqCst);
                    quiet = false;
                }
            }
            // A stopping worker beats no more: the stop ladder is its deadline now.
            let beat = if announced {
                None
            } else {
                beat(self.shared, now)
            };
            if beat.is_some() {
                unhealthy_logged = false;
            } else if !announced && self.watchdog.is_some() && !unhealthy_logged {
                unhealthy_logged = true;
                tracing::warn!(
                    "worker pid={pid}: the program is not healthy; withholding the heartbeat"
                );
            }
            if let Some(b) = self.board {
                if let Some(t) = beat {
                    beat_usec = t;
                }
                let report = Report {
                    beat_usec,
                    busy,
                    busy_since_usec: oldest,
                    requests,
                };
                if b.publish(self.worker, &report) {
                    if last_load != Some(load) {
                        last_load = Some(load);
                        if b.ring() {
                            self.send(DOORBELL);
                        }
                    }
                    continue;
                }
                tracing::error!(
                    "worker pid={pid}: its report-board slot was taken over; reporting by datagrams"
                );
                self.board = None;
                last_load = None;
            }
            msg.clear();
            // Without a board the beat is a datagram; in the manual mode only a beat newer
            // than the last one sent counts.
            let fresh = beat.is_some_and(|t| t > last_watchdog);
            let due = beat_every
                .is_some_and(|b| now.saturating_sub(last_watchdog) >= b.as_micros() as u64);
            if due && fresh {
                msg.push_str("WATCHDOG=1\n");
            }
            if last_load != Some(load) {
                use std::fmt::Write as _;
                let _ = write!(msg, "X_DROVER_LOAD=busy={busy},requests={requests}");
                if let Some(t) = oldest {
                    let _ = write!(msg, ",busy_since_usec={t}");
                }
            }
            if !msg.is_empty() && self.send(&msg) {
                if msg.starts_with("WATCHDOG=1") {
                    last_watchdog = now;
                }
                last_load = Some(load);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::byo::tests::detached_handle;
    use std::sync::atomic::AtomicBool;

    #[test]
    fn the_heartbeat_follows_the_mode_the_program_chose() {
        let w = detached_handle();
        assert_eq!(
            beat(w.shared, 500),
            Some(500),
            "automatic: alive is healthy"
        );

        let healthy = Arc::new(AtomicBool::new(false));
        let flag = healthy.clone();
        w.set_health_check(move || flag.load(Ordering::SeqCst));
        assert_eq!(beat(w.shared, 600), None, "the check says no: withheld");
        healthy.store(true, Ordering::SeqCst);
        assert_eq!(beat(w.shared, 700), Some(700));
        w.set_health_check(|| panic!("a broken check"));
        assert_eq!(beat(w.shared, 800), None, "a panicking check is unhealthy");

        w.use_manual_heartbeat();
        let first = beat(w.shared, u64::MAX).expect("the switch is a beat");
        assert!(
            first > 0 && first < u64::MAX,
            "the program's own stamp: {first}"
        );
        assert_eq!(
            beat(w.shared, u64::MAX),
            Some(first),
            "no new beat, same stamp"
        );
        std::thread::sleep(Duration::from_millis(2));
        w.heartbeat();
        assert!(beat(w.shared, u64::MAX).unwrap() > first);
    }
}
