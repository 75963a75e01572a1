//! The `drover` shell: start-up (sockets, pid file, control socket, the group guard), and
//! the one [`Driver`] of drover-machine run over [`System`], this module's implementation of
//! the driver's `Os` trait with real syscalls. The run-loop contract (handle, bounded drain,
//! reap after the drain, worker reports first and together) is the driver's
//! (docs/ARCHITECTURE.md §2); this module must decide nothing of *when* or *whether*: it
//! maps OS events to inputs and actions to syscalls.
//!
//! Rooms: `run` (the poll loop and what wakes it), `system` (the `Os` implementation:
//! fork, signals, waitpid), `reports` (notify socket and report board), `signals` (signals
//! and reload), `handover` (live upgrade, both sides), `control` (the control socket),
//! `observe` (metrics, the dump and its ring of trace lines), `slot_ports` (the per-worker
//! sockets), `runtime_dir` (the notify socket's private directory).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use drover_machine::{Driver, Generation, Instant, Supervisor};
use signal_hook::consts::signal::*;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::board::Report;
use crate::control::{ConnId, ControlServer};
use crate::daemon::{self, Launcher};
use crate::guard::Guard;
use crate::listen::{self, Listener};
use crate::log::workers::WorkerOutput;
use crate::metrics::http::MetricsServer;
use crate::notify::{self, NotifySocket};
use crate::pidfile::PidFile;
use crate::sdnotify::Manager;
use crate::settings::{describe_config_error, RunArgs, Settings};
use crate::spawn::{ForkedWorker, Spawner, WorkerSpec};
use crate::upgrade::{self, Channel, Relaunch};
use runtime_dir::RuntimeDir;

mod control;
mod handover;
mod observe;
mod reports;
mod run;
mod runtime_dir;
mod signals;
mod slot_ports;
mod system;

/// How many reaped worker pids are remembered (see `System::reaped`).
const REAPED_KEPT: usize = 64;
/// How often drover looks whether a lingering worker's process group is empty, when no
/// exit of a child of its own tells it.
const LINGER_CHECK: Duration = Duration::from_secs(1);
/// Datagrams read from the notify socket per wake-up.
const NOTIFY_READ_MAX: usize = 1024;

/// Every signal an operator may map (`signal_table::CONFIGURABLE`), and CHLD.
const HANDLED_SIGNALS: [i32; 11] = [
    SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGHUP, SIGTTIN, SIGTTOU, SIGCONT, SIGWINCH,
    SIGCHLD,
];

/// `drover run`: returns the exit code (2 for bad usage or configuration).
pub fn run(args: RunArgs) -> i32 {
    run_with(args, None)
}

/// `drover run` with command workers, or with `forked` workers (the embedded runtime).
pub(crate) fn run_with(args: RunArgs, forked: Option<Box<dyn ForkedWorker>>) -> i32 {
    let settings = match Settings::load(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("drover: {e}");
            return 2;
        }
    };
    let (settings, forked) = if args.supervise {
        match crate::supervise::parent_settings(settings) {
            // The child runs the embedded workers; the parent only runs the child.
            Ok(s) => (s, None),
            Err(e) => {
                eprintln!("drover: {e}");
                return 2;
            }
        }
    } else {
        (settings, forked)
    };
    if let Some(path) = &settings.log.file {
        if let Err(e) = crate::log::open_file(path) {
            eprintln!("drover: {e}");
            return 2;
        }
    }
    let mut launcher = match daemon::wanted(&settings) {
        true => match daemon::daemonize(settings.log.file.as_deref()) {
            Ok(daemon::Side::Launcher(code)) => return code,
            Ok(daemon::Side::Daemon(launcher)) => Some(launcher),
            Err(e) => {
                eprintln!("drover: --daemonize: {e}");
                return 1;
            }
        },
        false => None,
    };
    // An embedded program may have installed its own subscriber: that one stays.
    crate::log::install_subscriber(settings.log_level, settings.log.format);
    // Two drovers share a log during a live upgrade or under --supervise: every line
    // names its drover.
    let _span = tracing::info_span!("drover", pid = std::process::id()).entered();
    match Shell::start(args, settings, forked, &mut launcher) {
        Ok(mut shell) => {
            let code = shell.run();
            if let Some(launcher) = shell.sys().launcher.take() {
                launcher.fail(
                    code.max(1),
                    &format!("drover exited (code {code}) before the pool was ready"),
                );
            }
            code
        }
        Err((code, msg)) => {
            eprintln!("drover: {msg}");
            if let Some(launcher) = launcher {
                launcher.fail(code, &msg);
            }
            code
        }
    }
}

/// Listeners whose unix socket files are removed at exit, unless another drover owns them
/// (a successor that took over, or the supervising parent).
struct Listeners {
    list: Vec<Listener>,
    owns_files: bool,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        if self.owns_files {
            listen::remove_unix_files(&self.list);
        }
    }
}

struct Control(ControlServer);

impl Drop for Control {
    fn drop(&mut self) {
        self.0.remove_file();
    }
}

/// How this drover came to be, which decides who owns the shared paths (pid file, control
/// socket, unix socket files) and who tells the service manager what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Started by an operator or a service manager: owns everything from the start.
    Primary,
    /// A live upgrade's successor before the predecessor handed over (the machine's
    /// `TookOver` makes it `Primary`).
    Successor,
    /// Run by `drover run --supervise`: the parent holds the pid file and the listeners'
    /// files and performs upgrades.
    Supervised,
}

/// The world as drover sees it: every descriptor, process table and file the shell holds.
/// Implements the driver's `Os` trait (`system.rs`); the rest of the shell changes it
/// between turns.
struct System {
    role: Role,
    /// The service manager (systemd, or a supervising drover), if drover runs under one.
    manager: Option<Manager>,
    announced_stopping: bool,
    next_watchdog: Option<std::time::Instant>,
    /// What a live upgrade starts, taken at start (see `Relaunch::current`).
    relaunch: Option<Relaunch>,
    /// The channel to a live upgrade's successor (its pid is the machine's `UpgradeState`).
    successor: Option<Channel>,
    /// Control clients of `drover upgrade`, answered at the handover or the rollback.
    upgrade_waiters: Vec<ConnId>,
    /// A successor's channel to its predecessor.
    predecessor: Option<Channel>,
    /// False while another drover answers on the control path (a successor before the
    /// takeover, a predecessor after the handover).
    serving_control: bool,
    /// Machine time is nanoseconds since this moment.
    epoch: std::time::Instant,
    args: RunArgs,
    settings: Settings,
    spawner: Spawner,
    signals: SignalDelivery<UnixStream, SignalOnly>,
    notify: NotifySocket,
    /// Kills the workers' process groups if drover is killed.
    guard: Option<Guard>,
    /// Workers whose first process was reaped while others of their process group still
    /// run: the worker exits when the group is empty (the machine keeps the main process's
    /// status from `MainExited` and judges the exit by it).
    lingering: BTreeSet<u32>,
    /// When the notify socket was last read empty: nothing still queued arrived earlier.
    notify_empty_at: Instant,
    control: Option<Control>,
    /// Live worker processes (spawned, not yet reaped).
    pids: BTreeMap<u32, drover_machine::WorkerId>,
    /// The last workers reaped, whose late datagrams are expected.
    reaped: VecDeque<u32>,
    /// Refusals seen in the current drain, reported back to a control client.
    refusals: Vec<String>,
    /// A reload waiting for the machine's answer: put in force at its `Reloaded` event,
    /// before the drain's first spawn, so new workers already run the new command.
    staged_reload: Option<StagedReload>,
    /// The accept-queue length last reported per listener.
    backlog_seen: Vec<Option<u32>>,
    /// What the process title shows now (`None` before the first).
    title_shown: Option<crate::title::SupervisorView>,
    /// Per slot: the report-board values last fed, and of which incarnation.
    reports_seen: BTreeMap<u32, (u32, Report)>,
    /// The workers' output pipes (`--worker-output log`).
    worker_output: WorkerOutput,
    /// `--daemonize`: the launching command waits on this for the pool's readiness.
    launcher: Option<Launcher>,
    /// `GET /metrics` on `--metrics-listen`; `None` without the flag (nothing polled).
    metrics: Option<crate::metrics::http::MetricsServer>,
    /// Turns of the poll loop, for the metrics.
    wakeups: u64,
    /// When this drover started, in seconds since the Unix epoch.
    started_unix: f64,
    /// The last trace lines, for a dump.
    trace_ring: observe::TraceRing,
    /// `--listen-per-worker`: each slot's own socket.
    slot_ports: slot_ports::SlotPorts,
    // Dropped last, in this order: sockets and files are removed at exit.
    listeners: Listeners,
    runtime_dir: RuntimeDir,
    pid_file: Option<PidFile>,
}

/// A re-read config file the machine has not answered yet.
struct StagedReload {
    settings: Settings,
    /// The listener set of the new config, when it changed.
    listeners: Option<Vec<Listener>>,
}

/// The shell: the machine in the one driver, over the real system.
struct Shell {
    driver: Driver<System>,
}

impl Shell {
    /// `launcher`: taken into the shell once nothing can fail any more (the first spawns,
    /// and with them the pool's readiness, may come before `start` returns).
    fn start(
        args: RunArgs,
        settings: Settings,
        forked: Option<Box<dyn ForkedWorker>>,
        launcher: &mut Option<Launcher>,
    ) -> Result<Shell, (i32, String)> {
        let role = if std::env::var_os(upgrade::SUPERVISED_VAR).is_some_and(|v| v == "1") {
            Role::Supervised
        } else {
            Role::Primary
        };
        let upgrade_fd =
            upgrade::parse_upgrade_fd(std::env::var_os(upgrade::UPGRADE_FD_VAR).as_deref())
                .map_err(|e| (2, e))?;
        let role = match upgrade_fd {
            Some(_) => Role::Successor,
            None => role,
        };
        let predecessor_generation = match role {
            Role::Successor => {
                upgrade::parse_generation(std::env::var_os(upgrade::GENERATION_VAR).as_deref())
                    .map_err(|e| (2, e))?
                    .map(Generation)
            }
            _ => None,
        };
        // Socket activation (systemd, a supervising drover, a live upgrade's predecessor):
        // taken before anything else opens a descriptor over them.
        let mut inherited = listen::inherited_from_env().map_err(|e| (2, e))?;
        let adopted_slots = slot_ports::SlotPorts::take_inherited(&settings, &mut inherited);
        let inherited_at: Vec<String> = inherited.iter().map(|i| i.local.clone()).collect();
        let predecessor = match upgrade_fd {
            Some(fd) => Some(
                Channel::inherited(fd)
                    .map_err(|e| (2, format!("{}={fd}: {e}", upgrade::UPGRADE_FD_VAR)))?,
            ),
            None => None,
        };
        mark_inherited_fds_cloexec();
        // A worker is its process group (see `System::reap`): its processes that outlive
        // their parent are re-parented to drover, and the guard kills what is left of the
        // groups if drover itself is killed. Forked first, so it inherits the fewest
        // descriptors.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                "PR_SET_CHILD_SUBREAPER: {}: a worker whose first process exits ends at once, though others of its group may run on",
                e.desc()
            );
        }
        if let Err(why) = crate::title::init() {
            tracing::debug!("no process titles: {why}");
        }
        let guard = Guard::start(&settings.title);
        let relaunch = match &settings.upgrade_command {
            Some(command) => Relaunch::command(command, &settings.upgrade_program),
            None => Relaunch::current(),
        };
        let (read, write) = UnixStream::pair().map_err(|e| (1, format!("socketpair: {e}")))?;
        let signals = SignalDelivery::with_pipe(read, write, SignalOnly, HANDLED_SIGNALS)
            .map_err(|e| (1, format!("signal handlers: {e}")))?;
        // A successor takes the pid file over at the handover; a supervised drover's parent
        // holds it.
        let pid_file = match (&settings.pid_file, role) {
            (Some(path), Role::Primary) => Some(PidFile::create(path).map_err(|e| (2, e))?),
            _ => None,
        };
        let listeners = open_listeners(&settings, role, inherited, &inherited_at)?;
        let runtime_dir = RuntimeDir::create().map_err(|e| (1, e))?;
        let notify = NotifySocket::bind(&runtime_dir.path.join("notify")).map_err(|e| (1, e))?;
        if let Some(owner) = settings
            .process
            .notify_owner
            .as_ref()
            .filter(|c| c.needed())
        {
            runtime_dir.hand_to(Some(owner)).map_err(|e| (1, e))?;
        }
        let control = match (&settings.control, role) {
            (Some(path), Role::Primary) => {
                Some(Control(ControlServer::bind(path).map_err(|e| (2, e))?))
            }
            // The path still answers for the drover in charge until this one takes over.
            (Some(path), _) => Some(Control(
                ControlServer::bind_beside(path).map_err(|e| (2, e))?,
            )),
            (None, _) => None,
        };
        let metrics = match (settings.metrics_listen, role) {
            (None, _) => None,
            (Some(addr), Role::Primary) => Some(MetricsServer::bind(addr).map_err(|e| (2, e))?),
            // Bound once the address is this drover's: at the takeover for a successor; a
            // supervised drover replacing another retries until the old one lets go.
            (Some(addr), _) => Some(MetricsServer::unbound(addr)),
        };
        if let Some(addr) = settings.metrics_listen.filter(|a| !a.ip().is_loopback()) {
            tracing::warn!(
                "--metrics-listen {addr} is not a loopback address: whoever reaches it reads the metrics (there is no authentication); prefer 127.0.0.1 and a firewall or proxy in front"
            );
        }
        let spawner = Spawner::new(
            WorkerSpec::new(&settings),
            listeners.list.iter().map(|l| l.fd.as_raw_fd()).collect(),
            listeners.list.iter().map(|l| l.spec.name.clone()).collect(),
            &notify.path,
            forked,
        )
        .map_err(|e| (1, format!("spawner: {e}")))?;
        let epoch = std::time::Instant::now();
        let config = daemon::machine_config(&settings.machine, launcher.as_ref());
        let sup = match predecessor_generation {
            Some(g) => Supervisor::succeeding(config, Instant::ZERO, g),
            None => Supervisor::new(config, Instant::ZERO),
        }
        .map_err(|e| (2, describe_config_error(&e)))?;
        let slot_ports =
            slot_ports::SlotPorts::bind_initial(&settings, sup.target(), adopted_slots)
                .map_err(|e| (2, e))?;
        tracing::info!(
            pid = std::process::id(),
            policy = settings.machine.policy.name(),
            target = sup.target(),
            "drover started{}: {}",
            match role {
                Role::Primary => "",
                Role::Successor => " as a live upgrade's successor",
                Role::Supervised => " under --supervise",
            },
            settings.command.join(" ")
        );
        log_signal_table(&settings.signals);
        let manager = Manager::from_env();
        let next_watchdog = manager
            .as_ref()
            .and_then(|m| m.watchdog_interval())
            .map(|i| std::time::Instant::now() + i);
        let collect_output = settings.log.worker_output == crate::log::WorkerOutputMode::Log;
        let mut system = System {
            role,
            manager,
            announced_stopping: false,
            next_watchdog,
            relaunch,
            successor: None,
            upgrade_waiters: Vec::new(),
            predecessor,
            serving_control: !matches!(role, Role::Successor),
            epoch,
            args,
            settings,
            spawner,
            signals,
            notify,
            guard,
            lingering: BTreeSet::new(),
            notify_empty_at: Instant::ZERO,
            control,
            pids: BTreeMap::new(),
            reaped: VecDeque::with_capacity(REAPED_KEPT),
            refusals: Vec::new(),
            staged_reload: None,
            backlog_seen: Vec::new(),
            reports_seen: BTreeMap::new(),
            title_shown: None,
            worker_output: WorkerOutput::new(collect_output),
            launcher: launcher.take(),
            metrics,
            wakeups: 0,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            trace_ring: observe::TraceRing::default(),
            slot_ports,
            listeners,
            runtime_dir,
            pid_file,
        };
        if role == Role::Supervised {
            system.install_control();
            system.serve_metrics();
        }
        // Last: a supervised drover's control socket is renamed into place above.
        if system.settings.process.drop_privileges && !system.args.supervise {
            drop_privileges(&system.settings, &mut system.spawner).map_err(|e| (1, e))?;
        }
        let driver = Driver::new(sup, system, notify::queue_capacity());
        Ok(Shell { driver })
    }

    fn sup(&self) -> &Supervisor {
        self.driver.supervisor()
    }

    fn sys(&mut self) -> &mut System {
        self.driver.os_mut()
    }
}

/// `--drop-privileges`: drover becomes the workers' user, its listeners, control socket, pid
/// file and runtime directory in hand. Its workers then inherit the identity (there is
/// nothing left to switch), and the parent-death signal a supervising drover set, which
/// a changed identity clears, is set again.
fn drop_privileges(settings: &Settings, spawner: &mut Spawner) -> Result<(), String> {
    let Some(creds) = settings.process.credentials.as_ref().filter(|c| c.needed()) else {
        return Ok(()); // already that user: a successor or restart of a dropped drover
    };
    let mut deathsig: libc::c_int = 0;
    // SAFETY: PR_GET_PDEATHSIG writes one int to the pointer given.
    unsafe { libc::prctl(libc::PR_GET_PDEATHSIG, &mut deathsig as *mut libc::c_int) };
    creds.switch()?;
    if deathsig != 0 {
        // SAFETY: prctl with plain integers.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, deathsig as libc::c_ulong, 0, 0, 0) };
    }
    tracing::info!("dropped privileges: drover runs as {}", creds.describe());
    spawner.spec = WorkerSpec::new(settings);
    Ok(())
}

/// The signal table in force, once at start and after a reload that changed it: an
/// operator reads here what `kill -HUP` will do.
fn log_signal_table(table: &crate::signal_table::SignalTable) {
    tracing::info!(preset = table.preset, "signals: {}", table.describe());
    if !table.stops() {
        tracing::warn!(
            "no signal stops drover (a service manager stops with TERM, then KILL): stop it with `drover stop`"
        );
    }
}

/// Which clients the TCP listeners serve, when a list limits them: at start and after a
/// reload that changed it.
fn log_allow_list(allow: &[crate::allow::Cidr]) {
    if !allow.is_empty() {
        let list: Vec<String> = allow.iter().map(ToString::to_string).collect();
        tracing::info!(
            "--allow: TCP listeners drop connections from any source outside {}",
            list.join(", ")
        );
    }
}

/// The listeners of the config: inherited sockets where they match, new ones for the rest.
fn open_listeners(
    settings: &Settings,
    role: Role,
    inherited: Vec<listen::Inherited>,
    inherited_at: &[String],
) -> Result<Listeners, (i32, String)> {
    let opened = listen::open_all_with(
        &settings.listen,
        settings.backlog,
        settings.unix_mode,
        &settings.allow,
        inherited,
    )
    .map_err(|e| (2, e))?;
    for warning in &opened.warnings {
        tracing::warn!("{warning}");
    }
    for unused in &opened.unused {
        tracing::warn!(
            "inherited socket {} ({}) matches no --listen; closed",
            unused.local,
            if unused.name.is_empty() {
                "unnamed"
            } else {
                &unused.name
            }
        );
    }
    drop(opened.unused);
    let mut list = opened.listeners;
    if role == Role::Primary {
        // Socket files systemd created are systemd's to remove, not ours.
        for l in list.iter_mut().filter(|l| inherited_at.contains(&l.local)) {
            l.unix_path = None;
        }
    }
    for l in &list {
        tracing::info!(name = %l.spec.name, "listening on {}", l.local);
    }
    log_allow_list(&settings.allow);
    Ok(Listeners {
        list,
        owns_files: role == Role::Primary,
    })
}

/// Every fd drover inherited beyond stdio becomes close-on-exec, so workers get only their
/// listeners and stdio (e.g. a build tool's jobserver pipe does not leak into workers).
fn mark_inherited_fds_cloexec() {
    let Ok(entries) = std::fs::read_dir(Path::new("/proc/self/fd")) else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_GETFD/F_SETFD only change the descriptor's flags; an fd that is not open
        // (the directory handle above, closed by now) just fails with EBADF.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}
