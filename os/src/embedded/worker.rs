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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike};

use drover_machine::WorkerId;

use super::server::{Handler, Hook, WorkerInfo};
use super::signals::{install_stop_handlers, stop_level, unblock_signals, MAIN_FD, STOP_FD};
use super::threads::{accept_loop, Listener, Shared, ThreadSlot};
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
        let info = WorkerInfo {
            slot: child.worker.slot,
            incarnation: child.worker.incarnation,
            generation: child.generation.0,
            pid: std::process::id(),
            threads: child.threads.max(1),
        };
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

/// The longest an idle thread waits without beating.
const TICK_MAX: Duration = Duration::from_millis(250);

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
            listeners.push(Listener {
                fd,
                name: child
                    .listen_names
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("listen{i}")),
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
        let tick = watchdog
            .map_or(TICK_MAX, |w| (w / 8).min(TICK_MAX))
            .max(Duration::from_millis(5));

        if let Some(f) = &mut self.on_worker_start {
            f(&info);
        }
        let threads = info.threads as usize;
        let shared = Arc::new(Shared {
            handler: self.handler.clone(),
            info: info.clone(),
            listeners,
            slots: (0..threads).map(|_| ThreadSlot::default()).collect(),
            stop_read,
            main_write,
            tick,
            live_threads: AtomicUsize::new(threads),
            setup_failed: AtomicBool::new(false),
        });
        for slot in &shared.slots {
            slot.beat();
        }
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
        let wait = shared.tick.min(Duration::from_millis(100));
        // An idle thread beats at least every tick; allow for scheduling delays.
        let stale_usec = (3 * shared.tick + Duration::from_millis(100)).as_micros() as u64;
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
            let timeout =
                PollTimeout::try_from(wait.as_millis() as i32).unwrap_or(PollTimeout::MAX);
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
            let (mut busy, mut oldest, mut requests, mut healthy) = (0u32, None, 0u64, true);
            for slot in &shared.slots {
                requests += slot.requests.load(Ordering::Relaxed);
                let since = slot.busy_since_usec.load(Ordering::Relaxed);
                if since != 0 {
                    busy += 1;
                    oldest = Some(oldest.map_or(since, |o: u64| o.min(since)));
                } else if now.saturating_sub(slot.beat_usec.load(Ordering::Relaxed)) > stale_usec {
                    healthy = false;
                }
            }
            let load = (busy, oldest, requests);
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
