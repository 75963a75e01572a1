//! The embedded server's public API: [`Server`] (the `drover run` options, from the command
//! line or given, plus the lifecycle hooks), the [`Handler`] a worker thread calls once per
//! connection, and the [`WorkerInfo`] the hooks and the handler see. It owns starting the
//! pool: checking the usage and that the process is still single-threaded, naming this
//! program as the workers' command, mapping the report board before the first fork, and
//! handing the shell a worker [`Runtime`] to fork. It must not run worker code (that is
//! `worker`'s) nor decide anything about supervision: the shell's loop and the machine do.

use std::ffi::OsString;
use std::io;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{CommandFactory, FromArgMatches, Parser};

use super::byo::{Listeners, WorkerHandle};
use super::byo_worker::Serving;
use super::conn::{Conn, Handler};
use super::parts::{Hook, Hooks, Parts, Tuning, WorkerInfo};
use super::worker::Runtime;
use crate::board::Board;
use crate::forking::single_threaded;
use crate::settings::{ReadinessArg, RunArgs};
use crate::spawn::{open_fds, ForkedWorker};

struct FnHandler<F>(F);

impl<F> Handler for FnHandler<F>
where
    F: Fn(&mut Conn<'_>) -> io::Result<()> + Send + Sync + 'static,
{
    fn handle(&self, conn: &mut Conn<'_>) -> io::Result<()> {
        (self.0)(conn)
    }
}

/// An embedded server: the `drover run` options plus hooks; [`Server::run`] serves.
pub struct Server {
    args: RunArgs,
    name: String,
    before_fork: Option<Box<dyn FnMut()>>,
    after_fork: Option<Hook>,
    on_worker_start: Option<Hook>,
    on_worker_exit: Option<Hook>,
    tuning: Tuning,
}

/// Connections a worker keeps parked between requests, by default.
pub const MAX_PARKED_DEFAULT: usize = 1024;

#[derive(Parser)]
#[command(
    about = "An embedded drover server: a supervised pool of forked workers",
    after_help = "Signals (the default table; --signals serverengine|unicorn or the config file's [signals] change it): TERM/INT graceful stop (a second one: immediate), QUIT immediate stop, USR1 rolling restart, HUP reopen the log file and reload the config file, USR2 live upgrade, TTIN/TTOU one worker more/fewer."
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
            tuning: Tuning {
                max_parked: MAX_PARKED_DEFAULT,
                defer_accept: true,
            },
        }
    }

    /// How many connections each worker keeps parked between requests (default
    /// [`MAX_PARKED_DEFAULT`]); at the limit, parking one more closes the longest idle,
    /// with a warning in the log (at most one every 10 s). A parked connection costs a
    /// descriptor and no thread; workers raise their open-file limit to the hard limit.
    pub fn max_parked(mut self, n: usize) -> Server {
        self.tuning.max_parked = n.max(1);
        self
    }

    /// Whether TCP listeners hand a connection to a worker only once its client has sent
    /// something (`TCP_DEFER_ACCEPT`, default on: a thread is never woken for a connection
    /// with nothing to read). Turn it off for a protocol in which the server speaks first
    /// (SMTP, MySQL): there the client waits for the server, which would not see the
    /// connection until the kernel gives up deferring it.
    pub fn defer_accept(mut self, on: bool) -> Server {
        self.tuning.defer_accept = on;
        self
    }

    /// The ALPN protocols a TLS listener offers, most preferred first (default
    /// `["http/1.1"]`; none: no ALPN). A client that offers ALPN with none of these is
    /// refused during the handshake (RFC 7301), so a program that speaks another protocol
    /// names it here.
    pub fn tls_alpn(mut self, protocols: &[&str]) -> Server {
        self.args.tls.alpn = Some(protocols.iter().map(|p| p.as_bytes().to_vec()).collect());
        self
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
        self.start(true, |parts| {
            Box::new(Runtime {
                board: parts.board,
                keep_fds: parts.keep_fds,
                handler: Arc::new(handler),
                before_fork: parts.hooks.before_fork,
                after_fork: parts.hooks.after_fork,
                on_worker_start: parts.hooks.on_worker_start,
                on_worker_exit: parts.hooks.on_worker_exit,
                tuning: parts.tuning,
            })
        })
    }

    /// Supervises workers that each run `main`, the program's own server, instead of
    /// drover's threads: bring your own server (axum, hyper, any tokio service, plain
    /// threads). The supervisor side is [`Server::run`]'s: the same flags, config file,
    /// signals and control socket. In each forked worker, after `after_fork` and
    /// `on_worker_start`, `main` gets the inherited [`Listeners`] and a [`WorkerHandle`]
    /// (readiness, heartbeat, load, the stop signal; read its docs) and returns the
    /// worker's exit code (0 after a graceful stop); `on_worker_exit` runs after it
    /// returns. The worker may start threads and runtimes freely; the supervisor must not,
    /// so call `serve` before starting any thread (it is checked). Of the tuning,
    /// `defer_accept` applies (to the listeners handed over); `max_parked` is `run`'s.
    ///
    /// ```no_run
    /// use drover_os::embedded::Server;
    ///
    /// let code = Server::from_args().serve(|mut listeners, worker| {
    ///     let listener = listeners.take_tcp().expect("--listen HOST:PORT");
    ///     listener.set_nonblocking(false).unwrap(); // drover hands it non-blocking
    ///     worker.ready();
    ///     // ... accept and serve on threads, each request inside
    ///     // `let _r = worker.request_started();` ...
    ///     worker.wait_stop();
    ///     0
    /// });
    /// std::process::exit(code);
    /// ```
    pub fn serve<F>(self, main: F) -> i32
    where
        F: FnMut(Listeners, WorkerHandle) -> i32 + 'static,
    {
        self.start(false, |parts| Box::new(Serving::new(parts, main)))
    }

    /// Checks the usage, names this program as the workers' command, maps the report board
    /// and supervises the workers `runtime` forks; `serves_tls`: its workers are drover's
    /// threads, which serve the `--tls-*` flags (a program's own server would ignore them).
    fn start(self, serves_tls: bool, runtime: impl FnOnce(Parts) -> Box<dyn ForkedWorker>) -> i32 {
        let mut args = self.args;
        if !args.command.is_empty() {
            eprintln!(
                "{}: an embedded server takes no command; its workers run this program",
                self.name
            );
            return 2;
        }
        if let Err(why) = single_threaded() {
            eprintln!(
                "{}: {why}; an embedded server forks its workers, so it must be started before any thread",
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
        args.embedded = serves_tls;
        // Embedded workers always report READY=1 (after their threads run).
        args.readiness = args.readiness.or(Some(ReadinessArg::Notify));
        // Mapped before the first fork, so every worker shares it with the supervisor.
        let board = match Board::map(drover_machine::WORKERS_MAX as usize) {
            Ok(board) => Some(board),
            Err(e) => {
                eprintln!(
                    "{}: cannot map the report board ({e}); workers report by datagrams",
                    self.name
                );
                None
            }
        };
        let runtime = runtime(Parts {
            board,
            // What is open now is the program's: workers keep it. What the supervisor opens
            // from here on (sockets, pipes, the pid file) is closed in each worker, and so is
            // what it was handed by protocol and takes over (socket activation's fds, a live
            // upgrade's channel): once taken, their numbers may be reused for the
            // supervisor's own sockets, which no worker may hold.
            keep_fds: program_fds(&open_fds(), &protocol_fds()),
            hooks: Hooks {
                before_fork: self.before_fork,
                after_fork: self.after_fork,
                on_worker_start: self.on_worker_start,
                on_worker_exit: self.on_worker_exit,
            },
            tuning: self.tuning,
        });
        crate::shell::run_with(args, Some(runtime))
    }
}

/// The descriptors handed to this process by protocol, which the shell takes over.
fn protocol_fds() -> Vec<RawFd> {
    let upgrade = std::env::var_os(crate::upgrade::UPGRADE_FD_VAR);
    let upgrade = crate::upgrade::parse_upgrade_fd(upgrade.as_deref())
        .ok()
        .flatten();
    crate::listen::activation_fds()
        .into_iter()
        .chain(upgrade)
        .collect()
}

/// `open` without the `protocol` descriptors.
fn program_fds(open: &[RawFd], protocol: &[RawFd]) -> Vec<RawFd> {
    open.iter()
        .copied()
        .filter(|fd| !protocol.contains(fd))
        .collect()
}

#[cfg(test)]
mod fd_tests {
    use super::program_fds;

    #[test]
    fn the_program_keeps_its_descriptors_but_not_those_handed_over_by_protocol() {
        // Socket activation handed fds 3 and 4; the program opened 5 and 7 itself.
        assert_eq!(program_fds(&[3, 4, 5, 7], &[3, 4]), [5, 7]);
        assert_eq!(program_fds(&[5], &[]), [5]);
    }
}
