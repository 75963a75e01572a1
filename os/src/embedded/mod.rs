//! The embedded runtime: a Rust handler served by forked worker processes with N threads
//! each, supervised by the same shell and machine as command workers (DESIGN.md §5).
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use drover_os::embedded::Server;
//!
//! fn main() {
//!     let code = Server::from_args() // the `drover run` flags, without `-- COMMAND`
//!         .on_worker_start(|w| eprintln!("worker {} (pid {}) starts", w.slot, w.pid))
//!         .run(|conn| {
//!             let mut buf = [0u8; 1024];
//!             while conn.read(&mut buf)? > 0 {
//!                 conn.begin_request();
//!                 conn.write_all(b"pong\n")?;
//!                 conn.end_request();
//!             }
//!             Ok(())
//!         });
//!     std::process::exit(code);
//! }
//! ```
//!
//! **Supervisor side**: `run` is `drover run` with this program as the worker: the same
//! flags, config file, signals and control socket. Instead of exec'ing a command, each spawn
//! forks this process (which must still be single-threaded: it is checked) and the child
//! runs the worker below. Readiness is `notify` unless `--readiness` says otherwise.
//!
//! **Worker side** (in the forked child): `after_fork`, then `on_worker_start`, then
//! `threads` threads accept on every listener (epoll with `EPOLLEXCLUSIVE`, so a connection
//! wakes one thread) and call the handler once per connection. The main thread reports to
//! the supervisor: `READY=1` over `NOTIFY_SOCKET` once the threads run; then, on the report
//! board (memory the supervisor mapped shared before its first fork, one slot per worker
//! slot), every 100 ms its heartbeat, stamped by the worker, but only while every idle
//! thread keeps coming back to its accept or keep-alive wait (a thread stuck outside a
//! request stops the heartbeat; a thread inside a request is the request timeout's
//! business), and its load: the busy threads, the start of the oldest running request and
//! the requests served. The supervisor reads the board whenever it wakes up, so heartbeats
//! cost it no wake-up: with the watchdog on, an idle pool wakes it about once per heartbeat
//! timeout, when the earliest deadline comes and one read renews every worker. A load
//! change must be seen sooner (scaling, `--max-requests`, the request timeout): the worker
//! that publishes one while the supervisor sleeps rings it once ([`Board`]'s doorbell, a
//! `X_DROVER_REPORTS=1` datagram). Without a board (it could not be mapped) the worker
//! sends `WATCHDOG=1` at a quarter of the timeout and `X_DROVER_LOAD` on each change.
//! TERM or INT: stop accepting, let each connection finish the request in hand, serve a
//! request that arrives within [`STOP_GRACE`] of the stop on an idle keep-alive connection
//! (the handler answers it with `Connection: close`), then close; run `on_worker_exit`,
//! exit 0. QUIT: exit 0 at once. The worker dies with the supervisor (`PR_SET_PDEATHSIG`,
//! and the death pipe's EOF).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockname, AddressFamily, SockaddrLike};

use drover_machine::WorkerId;

mod conn;
mod signals;
mod threads;

pub use conn::{Conn, STOP_GRACE};
use signals::{install_stop_handlers, stop_level, unblock_signals, MAIN_FD, STOP_FD};
use threads::{accept_loop, Listener, Shared, ThreadSlot};

use crate::board::{Board, Report, DOORBELL};
use crate::notify::monotonic_usec;
use crate::settings::{ReadinessArg, RunArgs};
use crate::spawn::{open_fds, thread_count, ForkedChild, ForkedWorker};

/// Who a worker is, for the hooks and the handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The slot, stable across restarts (`DROVER_WORKER_ID` of command workers).
    pub slot: u32,
    /// How many times this slot has been spawned, from 1.
    pub incarnation: u32,
    /// The configuration generation (`DROVER_GENERATION`).
    pub generation: u32,
    /// This worker's process id.
    pub pid: u32,
    /// Threads serving connections in this worker (`--threads`).
    pub threads: u32,
}

/// Serves one connection on a worker thread. Closures `Fn(&mut Conn) -> io::Result<()>`
/// are handlers too (see [`Server::run`]).
pub trait Handler: Send + Sync + 'static {
    /// Called once per accepted connection; the connection closes when it returns. An error
    /// or a panic ends only this connection.
    fn handle(&self, conn: &mut Conn<'_>) -> io::Result<()>;
}

struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(&mut Conn<'_>) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, conn: &mut Conn<'_>) -> io::Result<()> {
        (self.0)(conn)
    }
}

type Hook = Box<dyn FnMut(&WorkerInfo)>;

/// An embedded server: the `drover run` options plus hooks; [`Server::run`] serves.
pub struct Server {
    args: RunArgs,
    name: String,
    before_fork: Option<Box<dyn FnMut()>>,
    after_fork: Option<Hook>,
    on_worker_start: Option<Hook>,
    on_worker_exit: Option<Hook>,
}

#[derive(Parser)]
#[command(
    about = "An embedded drover server: a supervised pool of forked workers",
    after_help = "Signals: TERM/INT graceful stop (a second one: immediate), QUIT immediate stop, USR1 rolling restart, HUP reload the config file, TTIN/TTOU one worker more/fewer."
)]
struct EmbeddedCli {
    #[command(flatten)]
    run: RunArgs,
}

impl Server {
    /// The options of `drover run` (without `-- COMMAND`) from the command line. Prints the
    /// help, or a usage error and exits 2, like any command-line program.
    pub fn from_args() -> Server {
        match Server::try_from_args(std::env::args_os()) {
            Ok(server) => server,
            Err(e) => {
                let code = if e.use_stderr() { 2 } else { 0 };
                let _ = e.print();
                std::process::exit(code);
            }
        }
    }

    /// Like [`Server::from_args`] from any argument list (the first item is the program).
    pub fn try_from_args<I, T>(args: I) -> Result<Server, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let name = args
            .first()
            .map(PathBuf::from)
            .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "server".into());
        let mut cmd = EmbeddedCli::command()
            .bin_name(name.clone())
            .mut_arg("command", |a| a.hide(true));
        let matches = cmd.try_get_matches_from_mut(args)?;
        let cli = EmbeddedCli::from_arg_matches(&matches)?;
        if !cli.run.command.is_empty() {
            return Err(cmd.error(
                clap::error::ErrorKind::UnknownArgument,
                "an embedded server takes no `-- COMMAND`: its workers run this program",
            ));
        }
        let mut server = Server::new(cli.run);
        server.name = name;
        Ok(server)
    }

    /// A server with these options (`RunArgs::default()` is one worker, no listener).
    pub fn new(args: RunArgs) -> Server {
        Server {
            args,
            name: "server".into(),
            before_fork: None,
            after_fork: None,
            on_worker_start: None,
            on_worker_exit: None,
        }
    }

    /// Runs in the supervisor before every fork. It must not leave a thread running; what it
    /// opens stays in the supervisor (workers inherit the descriptors open when `run` starts).
    pub fn before_fork(mut self, f: impl FnMut() + 'static) -> Server {
        self.before_fork = Some(Box::new(f));
        self
    }

    /// Runs in a new worker right after the fork (reseed, reconnect, drop what the
    /// supervisor holds), before anything else.
    pub fn after_fork(mut self, f: impl FnMut(&WorkerInfo) + 'static) -> Server {
        self.after_fork = Some(Box::new(f));
        self
    }

    /// Runs in a worker once it is set up, before its threads accept. A panic here (or in
    /// `after_fork`) ends the worker with exit code 70; the supervisor restarts it.
    pub fn on_worker_start(mut self, f: impl FnMut(&WorkerInfo) + 'static) -> Server {
        self.on_worker_start = Some(Box::new(f));
        self
    }

    /// Runs in a worker on a graceful exit, after its last request.
    pub fn on_worker_exit(mut self, f: impl FnMut(&WorkerInfo) + 'static) -> Server {
        self.on_worker_exit = Some(Box::new(f));
        self
    }

    /// Supervises workers serving `handler` until stopped; returns the exit code (0 after
    /// a clean stop, 2 for bad usage). Call it before starting any thread.
    pub fn run<F>(self, handler: F) -> i32
    where
        F: Fn(&mut Conn<'_>) -> io::Result<()> + Send + Sync + 'static,
    {
        self.run_handler(FnHandler(handler))
    }

    /// [`Server::run`] with a [`Handler`].
    pub fn run_handler<H: Handler>(self, handler: H) -> i32 {
        let mut args = self.args;
        if !args.command.is_empty() {
            eprintln!(
                "{}: an embedded server takes no command; its workers run this program",
                self.name
            );
            return 2;
        }
        let threads = thread_count();
        if threads > 1 {
            eprintln!(
                "{}: {threads} threads are running; an embedded server forks its workers, so it must be started before any thread",
                self.name
            );
            return 2;
        }
        // The "command" is this program: it names the workers in logs and status, and is part
        // of the worker fingerprint. /proc/self/exe if the file has gone (a deploy).
        let exe = std::env::current_exe()
            .ok()
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        args.command = vec![exe.to_string_lossy().into_owned()];
        // Embedded workers always report READY=1 (after their threads run).
        args.readiness = args.readiness.or(Some(ReadinessArg::Notify));
        // Mapped before the first fork, so every worker shares it with the supervisor.
        let board = match Board::map(drover_machine::MAX_WORKERS as usize) {
            Ok(board) => Some(board),
            Err(e) => {
                eprintln!(
                    "{}: cannot map the report board ({e}); workers report by datagrams",
                    self.name
                );
                None
            }
        };
        let runtime = Runtime {
            board,
            // What is open now is the program's: workers keep it. What the supervisor opens
            // from here on (sockets, pipes, the pid file) is closed in each worker.
            keep_fds: open_fds(),
            handler: Arc::new(handler),
            before_fork: self.before_fork,
            after_fork: self.after_fork,
            on_worker_start: self.on_worker_start,
            on_worker_exit: self.on_worker_exit,
        };
        crate::shell::run_with(args, Some(Box::new(runtime)))
    }
}

// ---------------------------------------------------------------- the worker process

struct Runtime<H> {
    board: Option<Board>,
    keep_fds: Vec<RawFd>,
    handler: Arc<H>,
    before_fork: Option<Box<dyn FnMut()>>,
    after_fork: Option<Hook>,
    on_worker_start: Option<Hook>,
    on_worker_exit: Option<Hook>,
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
const MAX_TICK: Duration = Duration::from_millis(250);

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
            .map_or(MAX_TICK, |w| (w / 8).min(MAX_TICK))
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
