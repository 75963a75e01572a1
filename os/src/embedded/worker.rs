//! The worker process, what runs in each forked child. It owns the [`Runtime`] the shell
//! forks (the hooks around a fork, the board slot's reset before it) and the worker's main
//! thread: it sets up the listeners and the stop handlers, starts the serving threads, then
//! reports to the supervisor (`READY=1`; heartbeats and load on the report board, or by
//! sd_notify datagrams without one) until a stop or the supervisor's death. It must not
//! serve connections (`threads` and `conn` do), and it judges its own health no further
//! than withholding the heartbeat: whether a worker is late, stuck or due to go is the
//! supervisor's call.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike};

use drover_machine::WorkerId;

use super::conn::Handler;
use super::parked::Parked;
use super::parts::{tune_listener, Hook, Tuning, WorkerInfo};
use super::signals::{install_stop_handlers, stop_level, unblock_signals, MAIN_FD, STOP_FD};
use super::thread_slot::ThreadSlot;
use super::threads::{accept_loop, Listener, Shared};
use crate::board::{Board, Report, DOORBELL};
use crate::notify::monotonic_usec;
use crate::spawn::{ForkedChild, ForkedWorker};

pub(super) struct Runtime<H> {
    pub(super) board: Option<Board>,
    pub(super) keep_fds: Vec<RawFd>,
    pub(super) handler: Arc<H>,
    pub(super) before_fork: Option<Box<dyn FnMut()>>,
    pub(super) after_fork: Option<Hook>,
    pub(super) on_worker_start: Option<Hook>,
    pub(super) on_worker_exit: Option<Hook>,
    pub(super) tuning: Tuning,
}

impl<H: Handler> ForkedWorker for Runtime<H> {
    fn keep_fds(&self) -> &[RawFd] {
        &self.keep_fds
    }

    fn before_fork(&mut self) {
        if let Some(f) = &mut self.before_fork {
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
        if let Some(f) = &mut self.after_fork {
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

/// How long a thread waits on a keep-alive connection for its next request before it parks
/// it: a client that keeps its connection busy sends the next request as soon as it has
/// the answer, well within this on loopback or a LAN, so the request costs a read and a
/// write and no trip through the poller; an idle client costs its thread no more than this.
const LINGER: Duration = Duration::from_millis(10);

/// How often the main thread reports while threads are busy or the load changes.
const REPORT_EVERY: Duration = Duration::from_millis(100);

/// Parked connections are descriptors: take the whole allowance the system grants.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn pipe_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
}

fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Busy threads, start of the oldest request in hand, requests served.
fn sum_load<H>(shared: &Shared<H>) -> (u32, Option<u64>, u64) {
    let (mut busy, mut oldest, mut requests) = (0u32, None, 0u64);
    for slot in &shared.slots {
        requests += slot.requests.load(Ordering::Relaxed);
        let since = slot.busy_since_usec.load(Ordering::Relaxed);
        if since != 0 {
            busy += 1;
            oldest = Some(oldest.map_or(since, |o: u64| o.min(since)));
        }
    }
    (busy, oldest, requests)
}

/// Whether every thread is waiting or in a request: none has been outside both longer than
/// `stale_usec` (a request in hand is the request timeout's business).
fn no_thread_stuck<H>(shared: &Shared<H>, now: u64, stale_usec: u64) -> bool {
    shared.slots.iter().all(|slot| {
        let outside = slot.outside_since_usec.load(Ordering::Relaxed);
        slot.busy_since_usec.load(Ordering::Relaxed) != 0
            || outside == 0
            || now.saturating_sub(outside) <= stale_usec
    })
}

/// sd_notify messages to the supervisor.
struct Notifier {
    sock: UnixDatagram,
    path: PathBuf,
}

impl Notifier {
    fn send(&self, msg: &str) -> bool {
        match self.sock.send_to(msg.as_bytes(), &self.path) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!("notify {:?}: {e}", msg.lines().next().unwrap_or(""));
                false
            }
        }
    }
}

impl<H: Handler> Runtime<H> {
    /// The worker's main thread: sets up, starts the threads, reports, waits for the stop.
    fn serve(&mut self, child: &ForkedChild<'_>, info: WorkerInfo) -> io::Result<i32> {
        let (stop_read, stop_write) = pipe_pair()?;
        let (main_read, main_write) = pipe_pair()?;
        let main_write = main_write.into_raw_fd();
        STOP_FD.store(stop_write.into_raw_fd(), Ordering::SeqCst);
        MAIN_FD.store(main_write, Ordering::SeqCst);
        install_stop_handlers()?;

        let mut listeners = Vec::with_capacity(child.listen_fds.len());
        for (i, &fd) in child.listen_fds.iter().enumerate() {
            // SAFETY: the listener fds stay open for the whole life of this process (the
            // supervisor opened them; nothing in the worker closes them).
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            // The open file is shared with the supervisor and every worker; all of them
            // are embedded workers, which all accept this way (the supervisor never accepts).
            set_nonblocking(borrowed)?;
            let unix = getsockname::<nix::sys::socket::SockaddrStorage>(fd)
                .is_ok_and(|a| a.family() == Some(AddressFamily::Unix));
            if !unix {
                tune_listener(fd, self.tuning.defer_accept);
            }
            listeners.push(Listener {
                fd,
                name: child
                    .listen_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("listen{i}")),
                tls: child
                    .tls
                    .config(child.listen_names.get(i).map_or("", String::as_str)),
                unix,
            });
        }
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(Duration::from_secs(1)))?;
        let notifier = Notifier {
            sock,
            path: child.notify_path.to_path_buf(),
        };
        let watchdog = child
            .watchdog_usec
            .map(Duration::from_micros)
            .filter(|d| !d.is_zero());
        raise_open_file_limit();

        if let Some(f) = &mut self.on_worker_start {
            f(&info);
        }
        let threads = info.threads as usize;
        let shared = Arc::new(Shared {
            handler: self.handler.clone(),
            info: info.clone(),
            listeners,
            slots: (0..threads).map(|_| ThreadSlot::default()).collect(),
            parked: Parked::new(self.tuning.max_parked, info.pid)?,
            linger: LINGER,
            handshake_timeout: child.tls.handshake_timeout,
            stop_read,
            main_write,
            main_idle: AtomicBool::new(false),
            grace_until_usec: AtomicU64::new(0),
            live_threads: AtomicUsize::new(threads),
            setup_failed: AtomicBool::new(false),
        });
        // The threads inherit the blocked mask: stop signals land on the main thread only.
        let started = Arc::new(Barrier::new(threads + 1));
        let mut handles = Vec::with_capacity(threads);
        for t in 0..threads {
            let (shared, started) = (shared.clone(), started.clone());
            let handle = std::thread::Builder::new()
                .name(format!("w{}-t{t}", info.slot))
                .spawn(move || accept_loop(&shared, t, &started))?;
            handles.push(handle);
        }
        started.wait();
        unblock_signals();
        if shared.setup_failed.load(Ordering::SeqCst) {
            return Err(io::Error::other("a worker thread could not start"));
        }
        notifier.send("READY=1\nSTATUS=serving");
        tracing::debug!(
            "worker w={}.{} pid={} serves with {threads} thread(s)",
            info.slot,
            info.incarnation,
            info.pid
        );

        let graceful = self.report(&shared, &notifier, main_read.as_fd(), child, watchdog);
        if !graceful {
            return Ok(0);
        }
        for h in handles {
            let _ = h.join();
        }
        if let Some(f) = &mut self.on_worker_exit {
            f(&info);
        }
        Ok(0)
    }

    /// The main thread's loop: heartbeats and load reports (on the board, or by datagrams
    /// without one) until the threads have finished a graceful stop (true) or an immediate
    /// stop or the supervisor's death (false).
    fn report(
        &self,
        shared: &Shared<H>,
        notifier: &Notifier,
        main_read: BorrowedFd<'_>,
        child: &ForkedChild<'_>,
        watchdog: Option<Duration>,
    ) -> bool {
        // SAFETY: the death pipe's read end stays open for the life of the process.
        let death = unsafe { BorrowedFd::borrow_raw(child.death_read) };
        let beat_every = watchdog.map(|w| w / 4);
        // A thread outside both its waits and a request this long is stuck (a request in
        // hand is the request timeout's business): the worker stops beating.
        let stale_usec = watchdog.map_or(u64::MAX, |w| {
            (w / 4)
                .clamp(Duration::from_millis(100), Duration::from_secs(1))
                .as_micros() as u64
        });
        // Nothing changed at the last look and no thread is busy: sleep until the next
        // heartbeat is due (for ever without a watchdog) or a thread finds work.
        let mut quiet = false;
        let mut last_watchdog = 0u64;
        let mut board = self.board.as_ref().filter(|b| b.holds(child.worker));
        let mut beat_usec = 0u64;
        let mut last_load: Option<(u32, Option<u64>, u64)> = None;
        let mut announced = false;
        let mut unhealthy_logged = false;
        let mut msg = String::with_capacity(128);
        let mut drain = [0u8; 64];
        loop {
            let mut fds = [
                PollFd::new(main_read, PollFlags::POLLIN),
                PollFd::new(death, PollFlags::POLLIN),
            ];
            let wait = if quiet {
                beat_every
            } else {
                Some(REPORT_EVERY)
            };
            let timeout = wait.map_or(PollTimeout::NONE, |w| {
                PollTimeout::try_from(w.as_millis().max(1).min(i32::MAX as u128) as i32)
                    .unwrap_or(PollTimeout::MAX)
            });
            let _ = nix::poll::poll(&mut fds, timeout);
            if fds[1].revents().is_some_and(|r| !r.is_empty()) {
                tracing::warn!(
                    "worker pid={}: the supervisor is gone; exiting",
                    shared.info.pid
                );
                return false;
            }
            while nix::unistd::read(main_read, &mut drain).is_ok_and(|n| n > 0) {}
            match stop_level() {
                0 => {}
                1 => {
                    if !announced {
                        announced = true;
                        notifier.send("STOPPING=1");
                    }
                }
                _ => return false,
            }
            if shared.live_threads.load(Ordering::SeqCst) == 0 {
                return true;
            }

            let now = monotonic_usec();
            let load = sum_load(shared);
            let (busy, oldest, requests) = load;
            let healthy = no_thread_stuck(shared, now, stale_usec);
            // Decided before publishing: a change seen now is reported now, and the next
            // wait is short while anything moves.
            quiet = busy == 0 && last_load == Some(load) && !announced;
            if quiet {
                // Then looked at again: a thread that found work between the sums and this
                // store saw the main thread awake and did not poke it.
                shared.main_idle.store(true, Ordering::SeqCst);
                if sum_load(shared) != load {
                    shared.main_idle.store(false, Ordering::SeqCst);
                    quiet = false;
                }
            }
            if let Some(b) = board {
                if !announced && healthy {
                    beat_usec = now;
                    unhealthy_logged = false;
                } else if !announced && watchdog.is_some() && !unhealthy_logged {
                    unhealthy_logged = true;
                    tracing::warn!(
                        "worker pid={}: an idle thread has not come back to its wait; withholding the heartbeat",
                        shared.info.pid
                    );
                }
                let report = Report {
                    beat_usec,
                    busy,
                    busy_since_usec: oldest,
                    requests,
                };
                if b.publish(child.worker, &report) {
                    if last_load != Some(load) {
                        last_load = Some(load);
                        if b.ring() {
                            notifier.send(DOORBELL);
                        }
                    }
                    continue;
                }
                // Never while this worker lives (its slot is reset only for its successor);
                // if it happens anyway, the datagrams still work.
                tracing::error!(
                    "worker pid={}: its report-board slot was taken over; reporting by datagrams",
                    shared.info.pid
                );
                board = None;
                last_load = None;
            }
            msg.clear();
            let watchdog_due = beat_every
                .is_some_and(|b| now.saturating_sub(last_watchdog) >= b.as_micros() as u64);
            if watchdog_due && !announced {
                if healthy {
                    msg.push_str("WATCHDOG=1\n");
                    unhealthy_logged = false;
                } else if !unhealthy_logged {
                    unhealthy_logged = true;
                    tracing::warn!(
                        "worker pid={}: an idle thread has not come back to its wait; withholding the heartbeat",
                        shared.info.pid
                    );
                }
            }
            if last_load != Some(load) {
                use std::fmt::Write as _;
                let _ = write!(msg, "X_DROVER_LOAD=busy={busy},requests={requests}");
                if let Some(t) = oldest {
                    let _ = write!(msg, ",busy_since_usec={t}");
                }
            }
            if !msg.is_empty() && notifier.send(&msg) {
                if msg.starts_with("WATCHDOG=1") {
                    last_watchdog = now;
                }
                last_load = Some(load);
            }
        }
    }
}
