//! The event loop: one thread, `poll(2)` on the signal self-pipe, the notify socket and the
//! control socket, with the machine's next deadline as the timeout. Every wake-up first
//! hands in what the workers reported (notify socket and report board) in one
//! `handle_all`; while `messages_due` lies ahead the notify socket is not watched at all,
//! so an idle pool's heartbeats are read in batches rather than each waking drover.
//!
//! Run-loop contract (DESIGN.md §1): every `handle` is followed by a full drain of
//! `poll_action`; children are reaped (`waitpid`) only after the drain, so no signal the
//! machine sends can hit a recycled pid.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Command, Event, ExitStatus, Generation, Input, Instant, Phase, Pid, RollbackReason,
    Signal, SpawnError, Supervisor, UpgradeState, WorkerId, WorkerState,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde_json::{json, Value};
use signal_hook::consts::signal::*;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::board::{Report, DOORBELL};
use crate::control::{self, ControlServer, Request};
use crate::guard::{self, Guard};
use crate::listen::{self, Listener};
use crate::notify::{self, Notice, NotifySocket};
use crate::pidfile::PidFile;
use crate::sdnotify::Manager;
use crate::settings::{describe_config_error, RunArgs, Settings};
use crate::spawn::{ForkedWorker, Spawner, WorkerSpec};
use crate::upgrade::{self, Channel, Message, Relaunch};

/// How many reaped worker pids are remembered (see `Shell::reaped`).
const REAPED_KEPT: usize = 64;
/// How often drover looks whether a lingering worker's process group is empty, when no
/// exit of a child of its own tells it.
const LINGER_CHECK: Duration = Duration::from_secs(1);
/// Datagrams read from the notify socket per wake-up.
const NOTIFY_READ_MAX: usize = 1024;

const HANDLED_SIGNALS: [i32; 9] = [
    SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGHUP, SIGTTIN, SIGTTOU, SIGCHLD,
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
    // An embedded program may have installed its own subscriber: that one stays.
    let _ = tracing_subscriber::fmt()
        .with_max_level(settings.log_level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    // Two drovers share a log during a live upgrade or under --supervise: every line
    // names its drover.
    let _span = tracing::info_span!("drover", pid = std::process::id()).entered();
    match Shell::start(args, settings, forked) {
        Ok(mut shell) => shell.run(),
        Err((code, msg)) => {
            eprintln!("drover: {msg}");
            code
        }
    }
}

/// A private directory for the notify socket, removed at exit.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    fn create() -> Result<RuntimeDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        RuntimeDir::remove_stale(&base);
        let mut last = None;
        for attempt in 0..100u32 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let dir = base.join(format!(
                "drover-{}-{:x}",
                std::process::id(),
                nanos ^ attempt
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(RuntimeDir(dir)),
                Err(e) => last = Some(e),
            }
        }
        Err(format!(
            "cannot create a runtime directory in {}: {}",
            base.display(),
            last.map_or_else(String::new, |e| e.to_string())
        ))
    }
}

impl RuntimeDir {
    /// Removes `drover-<pid>-<hex>` directories of ours whose drover is gone (killed with
    /// -9: nothing ran its cleanup). A recycled pid only postpones a removal.
    fn remove_stale(base: &Path) {
        use std::os::unix::fs::MetadataExt;
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        let me = nix::unistd::geteuid().as_raw();
        for entry in entries.flatten().take(10_000) {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("drover-")) else {
                continue;
            };
            let Some((pid, tag)) = rest.split_once('-') else {
                continue;
            };
            let ours = entry
                .metadata()
                .is_ok_and(|m| m.is_dir() && m.uid() == me && m.mode() & 0o777 == 0o700);
            let dead = pid.parse::<u32>().is_ok_and(|pid| {
                pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
            });
            if ours && dead && !tag.is_empty() && tag.chars().all(|c| c.is_ascii_hexdigit()) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
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
    /// A live upgrade's successor before the predecessor handed over.
    Successor { ready_sent: bool },
    /// Run by `drover run --supervise`: the parent holds the pid file and the listeners'
    /// files and performs upgrades.
    Supervised,
}

struct Shell {
    sup: Supervisor,
    role: Role,
    /// The service manager (systemd, or a supervising drover), if drover runs under one.
    manager: Option<Manager>,
    /// READY=1 sent for the current run (again after a reload or a rollback).
    announced_ready: bool,
    announced_stopping: bool,
    next_watchdog: Option<std::time::Instant>,
    /// What a live upgrade starts, taken at start (see `Relaunch::current`).
    relaunch: Option<Relaunch>,
    /// The channel to a live upgrade's successor (its pid is the machine's `UpgradeState`).
    successor: Option<Channel>,
    /// Control clients of `drover upgrade`, answered at the handover or the rollback.
    upgrade_waiters: Vec<UnixStream>,
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
    /// run, with its status: the worker exits when the group is empty.
    lingering: BTreeMap<u32, ExitStatus>,
    /// Datagrams the notify socket queues before a sender blocks (`messages_due`).
    notify_queue: u32,
    /// When the notify socket was last read empty: nothing still queued arrived earlier.
    notify_empty_at: Instant,
    /// The last read stopped at its bound with datagrams left: poll the socket.
    notify_left: bool,
    control: Option<Control>,
    /// Live worker processes (spawned, not yet reaped).
    pids: BTreeMap<u32, WorkerId>,
    /// The last workers reaped, whose late datagrams are expected.
    reaped: std::collections::VecDeque<u32>,
    /// Set by `Action::Exit`.
    exit: Option<i32>,
    /// Refusals seen in the current drain, reported back to a control client.
    refusals: Vec<String>,
    /// The accept-queue length last reported per listener.
    backlog_seen: Vec<Option<u32>>,
    /// Per slot: the report-board values last fed, and of which incarnation.
    reports_seen: BTreeMap<u32, (u32, Report)>,
    // Dropped last, in this order: sockets and files are removed at exit.
    listeners: Listeners,
    _runtime_dir: RuntimeDir,
    pid_file: Option<PidFile>,
}

impl Shell {
    fn start(
        args: RunArgs,
        settings: Settings,
        forked: Option<Box<dyn ForkedWorker>>,
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
            Some(_) => Role::Successor { ready_sent: false },
            None => role,
        };
        let predecessor_generation = match role {
            Role::Successor { .. } => {
                upgrade::parse_generation(std::env::var_os(upgrade::GENERATION_VAR).as_deref())
                    .map_err(|e| (2, e))?
                    .map(Generation)
            }
            _ => None,
        };
        // Socket activation (systemd, a supervising drover, a live upgrade's predecessor):
        // taken before anything else opens a descriptor over them.
        let inherited = listen::inherited_from_env().map_err(|e| (2, e))?;
        let inherited_at: Vec<String> = inherited.iter().map(|i| i.local.clone()).collect();
        let predecessor = match upgrade_fd {
            Some(fd) => Some(
                Channel::inherited(fd)
                    .map_err(|e| (2, format!("{}={fd}: {e}", upgrade::UPGRADE_FD_VAR)))?,
            ),
            None => None,
        };
        mark_inherited_fds_cloexec();
        // A worker is its process group (see `reap`): its processes that outlive their
        // parent are re-parented to drover, and the guard kills what is left of the groups
        // if drover itself is killed. Forked first, so it inherits the fewest descriptors.
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(
                "PR_SET_CHILD_SUBREAPER: {}: a worker whose first process exits ends at once, though others of its group may run on",
                e.desc()
            );
        }
        let guard = Guard::start();
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
        let opened = listen::open_all_with(
            &settings.listen,
            settings.backlog,
            settings.unix_mode,
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
        let listeners = Listeners {
            list,
            owns_files: role == Role::Primary,
        };
        for l in &listeners.list {
            tracing::info!(name = %l.spec.name, "listening on {}", l.local);
        }
        let runtime_dir = RuntimeDir::create().map_err(|e| (1, e))?;
        let notify = NotifySocket::bind(&runtime_dir.0.join("notify")).map_err(|e| (1, e))?;
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
        let spawner = Spawner::new(
            WorkerSpec::new(&settings),
            listeners.list.iter().map(|l| l.fd.as_raw_fd()).collect(),
            listeners.list.iter().map(|l| l.spec.name.clone()).collect(),
            &notify.path,
            forked,
        )
        .map_err(|e| (1, format!("spawner: {e}")))?;
        let epoch = std::time::Instant::now();
        let sup = match predecessor_generation {
            Some(g) => Supervisor::succeeding(settings.machine.clone(), Instant::ZERO, g),
            None => Supervisor::new(settings.machine.clone(), Instant::ZERO),
        }
        .map_err(|e| (2, describe_config_error(&e)))?;
        tracing::info!(
            pid = std::process::id(),
            policy = settings.machine.policy.name(),
            target = sup.target(),
            "drover started{}: {}",
            match role {
                Role::Primary => "",
                Role::Successor { .. } => " as a live upgrade's successor",
                Role::Supervised => " under --supervise",
            },
            settings.command.join(" ")
        );
        let manager = Manager::from_env();
        let next_watchdog = manager
            .as_ref()
            .and_then(|m| m.watchdog_interval())
            .map(|i| std::time::Instant::now() + i);
        let mut shell = Shell {
            sup,
            role,
            manager,
            announced_ready: false,
            announced_stopping: false,
            next_watchdog,
            relaunch,
            successor: None,
            upgrade_waiters: Vec::new(),
            predecessor,
            serving_control: !matches!(role, Role::Successor { .. }),
            epoch,
            args,
            settings,
            spawner,
            signals,
            notify,
            guard,
            lingering: BTreeMap::new(),
            notify_queue: notify::queue_capacity(),
            notify_empty_at: Instant::ZERO,
            notify_left: false,
            control,
            pids: BTreeMap::new(),
            reaped: std::collections::VecDeque::with_capacity(REAPED_KEPT),
            exit: None,
            refusals: Vec::new(),
            backlog_seen: Vec::new(),
            reports_seen: BTreeMap::new(),
            listeners,
            _runtime_dir: runtime_dir,
            pid_file,
        };
        if role == Role::Supervised {
            shell.install_control();
        }
        Ok(shell)
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn run(&mut self) -> i32 {
        self.drain();
        self.reap();
        // Arms the report board's doorbell before the first sleep.
        self.read_workers();
        loop {
            self.tell_manager();
            if let Some(code) = self.exit {
                tracing::info!(code, "drover exits");
                return code;
            }
            let ready = self.wait();
            // First thing on every wake-up: everything the workers reported since the last
            // one (a deadline that the next input's timers would fire may have been met by
            // a report the socket or the board holds).
            self.read_workers();
            if ready.signals {
                self.on_signals();
            }
            if ready.upgrade {
                self.on_upgrade_channel();
            }
            self.on_control(ready.control_listener, &ready.control_conns);
            if let Some(at) = self.next_watchdog {
                if at <= std::time::Instant::now() {
                    if let Some(m) = &self.manager {
                        // Until the handover the predecessor is the main process; the
                        // manager would refuse (and log) a successor's beat.
                        if !matches!(self.role, Role::Successor { .. }) {
                            m.watchdog();
                        }
                        self.next_watchdog = m.watchdog_interval().map(|i| at + i);
                    }
                }
            }
            self.sample_backlog();
            if self.sup.poll_timeout().is_some_and(|t| t <= self.now()) {
                self.feed(Input::Tick);
            }
            self.reap();
        }
    }

    /// What the service manager (and a waiting predecessor) should hear after this turn:
    /// READY=1 once the pool is settled (again after a reload or a rolled-back upgrade),
    /// STOPPING=1 once a stop begins. A successor says `ready` to its predecessor instead.
    fn tell_manager(&mut self) {
        let settled = self.sup.phase() == Phase::Running
            && self.sup.upgrade_state() == UpgradeState::Idle
            && self.sup.is_settled();
        match self.role {
            Role::Successor { ready_sent: false } if settled => {
                tracing::info!("pool ready: asking the predecessor to hand over");
                if let Some(channel) = &mut self.predecessor {
                    channel.send(Message::Ready);
                }
                self.role = Role::Successor { ready_sent: true };
            }
            Role::Primary | Role::Supervised if settled && !self.announced_ready => {
                self.announced_ready = true;
                if let Some(m) = &self.manager {
                    m.ready(&format!("{} workers ready", self.sup.ready_workers()));
                }
            }
            _ => {}
        }
        if matches!(self.sup.phase(), Phase::Stopping { .. }) && !self.announced_stopping {
            self.announced_stopping = true;
            if let Some(m) = &self.manager {
                m.stopping("stopping: draining workers");
            }
        }
    }

    /// Reports each TCP listener's accept-queue length when it changed: the machine scales
    /// dynamic and ondemand pools on it (programs that report no load scale too). Sampled
    /// on every wake-up; while a queue could build up unseen, the machine keeps a tick every
    /// maintenance interval for it (`Supervisor::poll_timeout`).
    fn sample_backlog(&mut self) {
        for i in 0..self.listeners.list.len() {
            let Some(queued) = self.listeners.list[i].accept_queue() else {
                continue;
            };
            if self.backlog_seen.get(i).copied().flatten() != Some(queued) {
                self.backlog_seen.resize(self.listeners.list.len(), None);
                self.backlog_seen[i] = Some(queued);
                self.feed(Input::Backlog {
                    listener: i as u32,
                    queued,
                });
            }
        }
    }

    /// Hands in everything the workers reported since the last wake-up, in one
    /// `handle_all` (no deadline fires between two workers' reports; none at all is a
    /// tick, which moves `messages_due` on): the report board, then the notify socket.
    fn read_workers(&mut self) {
        let now = self.now();
        let mut inputs = Vec::new();
        self.read_board(now, &mut inputs);
        self.read_notify(now, &mut inputs);
        for input in &inputs {
            match input {
                Input::HeartbeatAt { .. } | Input::Load { .. } => {
                    tracing::debug!("{}", input_line(now, input))
                }
                _ => tracing::info!("{}", input_line(now, input)),
            }
        }
        self.sup.handle_all(now, inputs);
        self.drain();
    }

    /// What embedded workers published on the report board since the last read: a newer
    /// heartbeat stamp as `HeartbeatAt` (the watchdog counts from the stamp), a changed
    /// load as `Load`. Arms the doorbell first, so a load change published after this read
    /// wakes the next sleep.
    fn read_board(&mut self, now: Instant, inputs: &mut Vec<Input>) {
        let Some(board) = self.spawner.board() else {
            return;
        };
        board.arm();
        let watchdog = self.sup.config().heartbeat_timeout.is_some();
        for &worker in self.pids.values() {
            let Some(report) = board.read(worker) else {
                continue;
            };
            let seen = self
                .reports_seen
                .get(&worker.slot)
                .filter(|(incarnation, _)| *incarnation == worker.incarnation)
                .map(|(_, r)| *r);
            if seen == Some(report) {
                continue;
            }
            self.reports_seen
                .insert(worker.slot, (worker.incarnation, report));
            let new_beat = seen.is_none_or(|s| s.beat_usec != report.beat_usec);
            if watchdog && report.beat_usec != 0 && new_beat {
                inputs.push(Input::HeartbeatAt {
                    worker,
                    at: notify::busy_since(now, report.beat_usec),
                });
            }
            let load = |r: &Report| (r.busy, r.busy_since_usec, r.requests);
            if seen.is_none_or(|s| load(&s) != load(&report)) {
                inputs.push(Input::Load {
                    worker,
                    busy: report.busy,
                    oldest_busy_since: report.busy_since_usec.map(|t| notify::busy_since(now, t)),
                    requests: report.requests,
                });
            }
        }
    }

    // ------------------------------------------------------------ machine plumbing

    /// One input, then the full drain.
    fn feed(&mut self, input: Input) {
        self.handle(input);
        self.drain();
    }

    fn handle(&mut self, input: Input) {
        let now = self.now();
        let line = input_line(now, &input);
        match input {
            Input::Tick => tracing::trace!("{line}"),
            Input::Heartbeat { .. }
            | Input::HeartbeatAt { .. }
            | Input::Load { .. }
            | Input::Backlog { .. } => tracing::debug!("{line}"),
            _ => tracing::info!("{line}"),
        }
        self.sup.handle(now, input);
    }

    fn drain(&mut self) {
        while let Some(action) = self.sup.poll_action() {
            self.perform(action);
        }
    }

    fn perform(&mut self, action: Action) {
        let now = self.now();
        let line = action_line(now, &action);
        match &action {
            Action::Event(Event::Ignored(_)) => tracing::debug!("{line}"),
            Action::Event(Event::Retiring { reason, .. }) if reason.is_failure() => {
                tracing::warn!("{line}")
            }
            Action::Event(Event::Exited {
                expected: false, ..
            })
            | Action::Event(Event::Refused { .. })
            | Action::Event(Event::GaveUp { .. }) => tracing::warn!("{line}"),
            Action::Event(Event::CrashLooping { .. }) => tracing::error!("{line}"),
            _ => tracing::info!("{line}"),
        }
        match action {
            Action::Spawn { worker, generation } => match self.spawner.spawn(worker, generation) {
                Ok(pid) => {
                    self.pids.insert(pid.0, worker);
                    if let Some(guard) = &mut self.guard {
                        guard.watch(pid.0);
                    }
                    self.handle(Input::Spawned { worker, pid });
                }
                Err(error) => self.handle(Input::SpawnFailed { worker, error }),
            },
            Action::Signal { pid, signal, .. } => {
                send(pid, signal, !self.lingering.contains_key(&pid.0))
            }
            Action::StartSuccessor => match self.start_successor() {
                Ok(pid) => self.handle(Input::SuccessorStarted { pid }),
                Err(error) => self.handle(Input::SuccessorFailed { error }),
            },
            Action::KillSuccessor { pid, .. } => {
                let _ = kill(nix::unistd::Pid::from_raw(pid.0 as i32), NixSignal::SIGKILL);
            }
            Action::Exit { code } => self.exit = Some(code),
            Action::Event(Event::UpgradeHandover) => self.hand_over(),
            Action::Event(Event::UpgradeRolledBack { reason }) => self.after_rollback(reason),
            Action::Event(Event::Refused { command, reason }) => {
                use drover_machine::Refusal;
                let why = match &reason {
                    Refusal::Invalid(e) => describe_config_error(e),
                    Refusal::Stopping => "drover is stopping".into(),
                    Refusal::UpgradeInFlight => match self.sup.upgrade_state() {
                        UpgradeState::Started { pid, .. } | UpgradeState::Succeeded { pid } => format!(
                            "a live upgrade is already in flight (successor pid {pid}); wait until it takes over or rolls back"
                        ),
                        _ => "a live upgrade is already in flight; wait until it takes over or rolls back".into(),
                    },
                    Refusal::OutOfBounds { min, max } => {
                        format!("the pool size must stay within {min}..={max}")
                    }
                };
                self.refusals.push(format!("{command} refused: {why}"));
            }
            Action::Event(_) => {}
        }
    }

    /// Reaps every exited child, after the drain (see the module docs).
    ///
    /// A worker is its process group, as a systemd service is its control group: when the
    /// process drover started exits while others of its group still run (a program behind
    /// `sh -c 'a; b'`, the worker's own children), the machine hears `MainExited` (and stops
    /// the rest unless it is stopping the worker already), the worker goes on — its
    /// messages count, the ladder signals the group — until the group is empty, and then
    /// `Exited` with its first process's status. Drover is their subreaper, so each exit
    /// of them wakes it.
    ///
    /// Other children reaped here (such orphans, a live upgrade successor's orphaned
    /// workers) are no worker and are not the machine's business.
    fn reap(&mut self) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => break, // ECHILD: no children
            };
            let pid = pid.as_raw() as u32;
            if let Some(&worker) = self.pids.get(&pid) {
                if guard::group_alive(pid) {
                    tracing::info!(
                        "worker w={worker} pid={pid} exited ({}) while its process group still runs: the worker ends with the group",
                        status_text(status)
                    );
                    self.lingering.insert(pid, status);
                    self.feed(Input::MainExited {
                        pid: Pid(pid),
                        status,
                    });
                } else {
                    self.worker_exited(pid, status);
                }
                continue;
            }
            if self.guard.as_ref().is_some_and(|g| g.pid() == pid) {
                if let Some(guard) = &mut self.guard {
                    guard.lost();
                }
                continue;
            }
            if let UpgradeState::Started { pid: s, .. }
            | UpgradeState::Succeeded { pid: s }
            | UpgradeState::Killing { pid: s } = self.sup.upgrade_state()
            {
                if s.0 == pid {
                    tracing::info!(pid, ?status, "the live upgrade's successor exited");
                    self.successor = None;
                    self.feed(Input::Exited {
                        pid: Pid(pid),
                        status,
                    });
                    continue;
                }
            }
            tracing::debug!(
                "reaped pid {pid} ({}), no worker: a process a worker left behind",
                status_text(status)
            );
        }
        let emptied: Vec<u32> = self
            .lingering
            .keys()
            .copied()
            .filter(|&pgid| !guard::group_alive(pgid))
            .collect();
        for pid in emptied {
            let status = self.lingering.remove(&pid).expect("listed just now");
            self.worker_exited(pid, status);
        }
    }

    /// The worker whose group `pid` leads is gone: the machine hears of it now.
    fn worker_exited(&mut self, pid: u32, status: ExitStatus) {
        self.pids.remove(&pid);
        if self.reaped.len() == REAPED_KEPT {
            self.reaped.pop_front();
        }
        self.reaped.push_back(pid);
        if let Some(guard) = &mut self.guard {
            guard.forget(pid);
        }
        self.feed(Input::Exited {
            pid: Pid(pid),
            status,
        });
    }

    // ------------------------------------------------------------ waiting

    fn wait(&mut self) -> Ready {
        let now = std::time::Instant::now();
        let machine_deadline = self
            .sup
            .poll_timeout()
            .map(|t| self.epoch + Duration::from_nanos(t.as_nanos()));
        let control_deadline = self
            .control
            .as_ref()
            .filter(|_| self.serving_control)
            .and_then(|c| c.0.deadline());
        // While the machine lets worker messages wait, the socket is not watched: they are
        // read at the next wake-up, at `messages_due` at the latest.
        let due = self.sup.messages_due(self.notify_queue);
        let hold = due > self.now() && !self.notify_left;
        let hold_deadline = hold.then(|| self.epoch + Duration::from_nanos(due.as_nanos()));
        // The last process of a lingering group is normally drover's child (re-parented)
        // and its exit wakes drover; one whose parent left the group does not.
        let linger_deadline = (!self.lingering.is_empty()).then(|| now + LINGER_CHECK);
        let deadline = [
            machine_deadline,
            control_deadline,
            self.next_watchdog,
            hold_deadline,
            linger_deadline,
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up: waking before the deadline would only spin.
                let nanos = d.saturating_duration_since(now).as_nanos();
                let millis = nanos.div_ceil(1_000_000).min(i32::MAX as u128);
                PollTimeout::try_from(millis as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        let control_fds: Vec<BorrowedFd<'_>> = self
            .control
            .as_ref()
            .filter(|_| self.serving_control)
            .map(|c| c.0.fds())
            .unwrap_or_default();
        let upgrade = self.successor.as_ref().or(self.predecessor.as_ref());
        // The upgrade channel is always polled (a never-readable stand-in when there is
        // none), so the control fds keep their places at 3 and onwards.
        let mut fds = vec![
            PollFd::new(self.signals.get_read().as_fd(), PollFlags::POLLIN),
            PollFd::new(
                self.notify.fd.as_fd(),
                if hold {
                    PollFlags::empty()
                } else {
                    PollFlags::POLLIN
                },
            ),
            PollFd::new(
                upgrade.map_or(self.notify.fd.as_fd(), |c| c.fd()),
                if upgrade.is_some() {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ),
        ];
        fds.extend(
            control_fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        let polled = nix::poll::poll(&mut fds, timeout);
        let readable = |i: usize| -> bool {
            polled.is_ok()
                && fds[i].revents().is_some_and(|r| {
                    r.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                })
        };
        Ready {
            signals: readable(0),
            upgrade: upgrade.is_some() && readable(2),
            control_listener: fds.len() > 3 && readable(3),
            control_conns: (4..fds.len()).map(readable).collect(),
        }
    }

    // ------------------------------------------------------------ signals

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
            if self.args.supervise && self.on_signal_supervising(sig) {
                continue;
            }
            let command = match sig {
                SIGTERM | SIGINT => Some(Command::Stop),
                SIGQUIT => Some(Command::StopNow),
                SIGUSR1 => Some(Command::Restart),
                SIGTTIN => Some(Command::ScaleUp),
                SIGTTOU => Some(Command::ScaleDown),
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the config file");
                    if let Err(e) = self.reload() {
                        tracing::error!("reload failed, the running config stays: {e}");
                    }
                    None
                }
                SIGUSR2 => {
                    tracing::info!("signal USR2: live upgrade");
                    match self.request_upgrade() {
                        Ok(what) => tracing::info!("{what}"),
                        Err(e) => tracing::error!("{e}"),
                    }
                    None
                }
                _ => None, // SIGCHLD: every loop turn reaps
            };
            if let Some(command) = command {
                tracing::info!("signal {}: {}", signal_name(sig), command.name());
                self.feed(Input::Command(command));
            }
        }
    }

    /// `--supervise`: USR2 replaces the supervised drover side by side; what concerns its
    /// workers goes to it. Returns false for the signals handled as by any drover.
    fn on_signal_supervising(&mut self, sig: i32) -> bool {
        match sig {
            SIGUSR2 => {
                tracing::info!("signal USR2: replacing the supervised drover side by side");
                self.refusals.clear();
                self.feed(Input::Command(Command::Restart));
                for refusal in &self.refusals {
                    tracing::error!("{refusal}");
                }
                true
            }
            SIGUSR1 | SIGHUP | SIGTTIN | SIGTTOU => {
                let sig = NixSignal::try_from(sig).expect("a handled signal");
                for &pid in self.pids.keys() {
                    tracing::info!(
                        "signal {}: passed on to the supervised drover pid {pid}",
                        sig.as_str()
                    );
                    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), sig);
                }
                true
            }
            _ => false,
        }
    }

    /// Re-reads the config file, applies the same flags on top, and hands the result to the
    /// machine. The listeners cannot change without a new process (a live upgrade).
    fn reload(&mut self) -> Result<Vec<String>, String> {
        let new = Settings::load(&self.args).map_err(|e| e.0)?;
        if new.pid_file != self.settings.pid_file || new.control != self.settings.control {
            tracing::warn!("reload: pid_file and control cannot change on reload; ignored");
        }
        // New listeners are opened before any old one closes; the unchanged ones are the
        // same sockets (no connection waiting in their queues is lost).
        let (listeners, warnings) = match new.listen != self.settings.listen {
            true => {
                let (list, warnings) = self.open_new_listeners(&new)?;
                (Some(list), warnings)
            }
            false => (None, Vec::new()),
        };
        let config = new.machine.clone();
        self.refusals.clear();
        self.handle(Input::Command(Command::Reload(Box::new(config.clone()))));
        // Accepted iff the machine now runs the new config; then the spawns of this very
        // drain already use the new command and listeners (a changed listener set changes
        // the worker fingerprint: the machine replaces the workers one by one).
        if self.sup.config() == &config {
            // systemd's notify-reload protocol: RELOADING=1 now, READY=1 once settled again.
            if let Some(m) = &self.manager {
                m.reloading("reloading the config file");
            }
            self.announced_ready = false;
            self.spawner.spec = WorkerSpec::new(&new);
            if let Some(list) = listeners {
                self.swap_listeners(list);
            }
            self.settings.listen = new.listen;
            self.settings.command = new.command;
            self.settings.program = new.program;
            self.settings.machine = new.machine;
        } else if let Some(list) = listeners {
            let fresh: Vec<Listener> = list
                .into_iter()
                .filter(|l| {
                    !self
                        .listeners
                        .list
                        .iter()
                        .any(|o| o.unix_path == l.unix_path)
                })
                .collect();
            listen::remove_unix_files(&fresh);
        }
        self.drain();
        match self.refusals.is_empty() {
            true => Ok(warnings),
            false => Err(self.refusals.join("; ")),
        }
    }

    /// The listeners of a reloaded config: the running sockets where the name or address
    /// is the same, new ones for the rest, and a running one kept (with a warning) where
    /// its new address cannot be bound.
    fn open_new_listeners(&self, new: &Settings) -> Result<(Vec<Listener>, Vec<String>), String> {
        let current = self
            .listeners
            .list
            .iter()
            .filter_map(|l| {
                let (local, addr) = listen::describe_listener(l.fd.as_fd()).ok()?;
                Some(listen::Inherited {
                    fd: l.fd.try_clone().ok()?,
                    name: l.spec.name.clone(),
                    local,
                    addr,
                })
            })
            .collect();
        let opened = listen::open_all_with(&new.listen, new.backlog, new.unix_mode, current)?;
        for warning in &opened.warnings {
            tracing::warn!("reload: {warning}");
        }
        let mut list = opened.listeners;
        for l in list.iter_mut() {
            // A socket file someone else owns (systemd's) stays theirs.
            if let Some(old) = self.listeners.list.iter().find(|o| o.local == l.local) {
                l.unix_path.clone_from(&old.unix_path);
            }
        }
        Ok((list, opened.warnings))
    }

    fn swap_listeners(&mut self, list: Vec<Listener>) {
        let old = std::mem::replace(&mut self.listeners.list, list);
        for l in &self.listeners.list {
            tracing::info!(name = %l.spec.name, "listening on {}", l.local);
        }
        for l in &old {
            if self.listeners.list.iter().all(|n| n.local != l.local) {
                tracing::info!(
                    name = %l.spec.name,
                    "no longer listening on {} (workers still holding it finish with it)",
                    l.local
                );
                if self.listeners.owns_files {
                    listen::remove_unix_files(std::slice::from_ref(l));
                }
            }
        }
        self.spawner.set_listeners(
            self.listeners
                .list
                .iter()
                .map(|l| l.fd.as_raw_fd())
                .collect(),
            self.listeners
                .list
                .iter()
                .map(|l| l.spec.name.clone())
                .collect(),
        );
        self.backlog_seen.clear();
    }

    // ------------------------------------------------------------ live upgrade

    /// USR2 or `drover upgrade`. Returns what happens now, for the log or the client.
    fn request_upgrade(&mut self) -> Result<String, String> {
        match self.role {
            Role::Supervised => {
                // The parent holds the sockets and replaces this drover side by side; a
                // successor of our own would look like our exit to it.
                let parent = nix::unistd::getppid();
                kill(parent, NixSignal::SIGUSR2).map_err(|e| {
                    format!("upgrade refused: cannot signal the supervising drover (pid {parent}): {e}")
                })?;
                Ok(format!(
                    "delegated to the supervising drover (pid {parent}): it starts a new drover and retires this one once the new one is ready"
                ))
            }
            Role::Successor { .. } => Err(
                "upgrade refused: this drover is a live upgrade's successor still waiting for its predecessor to hand over".into(),
            ),
            Role::Primary => {
                self.refusals.clear();
                self.feed(Input::Command(Command::Upgrade));
                if !self.refusals.is_empty() {
                    return Err(self.refusals.join("; "));
                }
                match self.sup.upgrade_state() {
                    UpgradeState::Started { pid, .. } => Ok(format!(
                        "successor pid {pid} started; it takes over once its workers are ready"
                    )),
                    _ => Err("upgrade failed: the successor could not be started; this drover keeps serving".into()),
                }
            }
        }
    }

    fn start_successor(&mut self) -> Result<Pid, SpawnError> {
        let Some(relaunch) = &self.relaunch else {
            tracing::error!("live upgrade: cannot tell which program to start (no path to this binary); set upgrade_command");
            return Err(SpawnError::Exec);
        };
        let errno = |e: std::io::Error| SpawnError::Other(e.raw_os_error().unwrap_or(libc::EIO));
        let (channel, theirs) = Channel::pair().map_err(errno)?;
        let at = 3 + self.listeners.list.len();
        let started = self.spawner.spawn_successor(
            &relaunch.program,
            &relaunch.argv,
            &[
                (upgrade::UPGRADE_FD_VAR, at.to_string()),
                (upgrade::GENERATION_VAR, self.sup.generation().0.to_string()),
            ],
            theirs.as_raw_fd(),
        );
        match started {
            Ok(pid) => {
                tracing::info!(
                    "live upgrade: started successor pid {pid}: {}",
                    relaunch.describe()
                );
                self.successor = Some(channel);
                if let Some(m) = &self.manager {
                    m.reloading(&format!("live upgrade: successor pid {pid} starting"));
                }
                self.announced_ready = false;
                Ok(pid)
            }
            Err(e) => {
                tracing::error!("live upgrade: cannot start {}: {e:?}", relaunch.describe());
                Err(e)
            }
        }
    }

    fn on_upgrade_channel(&mut self) {
        if let Some(channel) = &mut self.successor {
            let got = channel.receive();
            for line in &got.garbage {
                tracing::warn!("upgrade channel: the successor sent {line:?}; ignored");
            }
            if got.closed {
                // Its exit arrives through waitpid; stop polling a closed socket.
                self.successor = None;
            }
            for message in got.messages {
                match message {
                    Message::Ready => self.feed(Input::SuccessorReady),
                    Message::Takeover => {
                        tracing::warn!("upgrade channel: the successor sent takeover; ignored")
                    }
                }
            }
        } else if let Some(channel) = &mut self.predecessor {
            let got = channel.receive();
            for line in &got.garbage {
                tracing::warn!("upgrade channel: the predecessor sent {line:?}; ignored");
            }
            let takeover = got.messages.contains(&Message::Takeover);
            if got.closed {
                self.predecessor = None;
            }
            if takeover || (got.closed && matches!(self.role, Role::Successor { .. })) {
                self.take_over(!takeover);
            }
        }
    }

    /// The successor's side of the handover: the shared paths are ours from now on.
    fn take_over(&mut self, predecessor_gone: bool) {
        if !matches!(self.role, Role::Successor { .. }) {
            return;
        }
        if predecessor_gone {
            tracing::warn!("the predecessor is gone before it handed over; taking over");
        } else {
            tracing::info!("the predecessor handed over: this drover is in charge");
        }
        self.role = Role::Primary;
        self.listeners.owns_files = true;
        if let Some(path) = &self.settings.pid_file {
            match PidFile::replace(path) {
                Ok(file) => self.pid_file = Some(file),
                Err(e) => tracing::error!("cannot take the pid file over: {e}"),
            }
        }
        self.install_control();
        // READY=1 (after the predecessor's MAINPID=) once settled, which it is by now.
        self.announced_ready = false;
    }

    fn install_control(&mut self) {
        if let Some(control) = &mut self.control {
            if let Err(e) = control.0.install() {
                tracing::error!("{e}; the control socket stays where it was bound");
            }
        }
        self.serving_control = true;
    }

    /// The predecessor's side: the successor is Ready; from now on it answers on every
    /// shared path while this drover drains its workers and exits.
    fn hand_over(&mut self) {
        let UpgradeState::Succeeded { pid } = self.sup.upgrade_state() else {
            return;
        };
        tracing::info!("live upgrade: successor pid {pid} is ready; handing over and draining");
        if let Some(m) = &self.manager {
            m.main_pid(pid.0);
        }
        self.listeners.owns_files = false;
        self.serving_control = false;
        if let Some(channel) = &mut self.successor {
            channel.send(Message::Takeover);
        }
        let answer = json!({
            "ok": true,
            "command": "upgrade",
            "successor_pid": pid.0,
            "message": format!(
                "successor pid {pid} took over; drover pid {} drains its workers and exits",
                std::process::id()
            ),
        });
        for waiter in self.upgrade_waiters.drain(..) {
            control::respond(waiter, &answer);
        }
    }

    /// The upgrade was abandoned (the machine says why in its event line); if the handover
    /// had happened, the shared paths come back to this drover.
    fn after_rollback(&mut self, reason: RollbackReason) {
        let why = match reason {
            RollbackReason::SuccessorFailedToStart => "the successor could not be started".into(),
            RollbackReason::SuccessorExited if !self.serving_control => {
                "the successor exited during the handover".into()
            }
            RollbackReason::SuccessorExited => "the successor exited before it was ready".into(),
            RollbackReason::Timeout => format!(
                "the successor was not ready within upgrade_timeout ({} s) and was killed",
                self.sup.config().upgrade_timeout.as_secs_f64()
            ),
            RollbackReason::Stopped => {
                "a stop was requested during the upgrade; the successor was killed".into()
            }
        };
        let message = format!(
            "live upgrade rolled back: {why}; drover pid {} keeps serving with its workers",
            std::process::id()
        );
        tracing::error!("{message}");
        for waiter in self.upgrade_waiters.drain(..) {
            control::respond(waiter, &control::error(&message));
        }
        if !self.serving_control {
            self.listeners.owns_files = true;
            if let Some(path) = &self.settings.pid_file {
                match PidFile::replace(path) {
                    Ok(file) => self.pid_file = Some(file),
                    Err(e) => tracing::error!("cannot take the pid file back: {e}"),
                }
            }
            if let Some(path) = self.control.as_ref().map(|c| c.0.path.clone()) {
                match ControlServer::bind_beside(&path) {
                    Ok(server) => self.control = Some(Control(server)),
                    Err(e) => tracing::error!("cannot rebind the control socket: {e}"),
                }
            }
            self.install_control();
            if let Some(m) = &self.manager {
                m.main_pid(std::process::id());
            }
        }
        self.announced_ready = false;
    }

    // ------------------------------------------------------------ notify

    /// The datagrams queued on the notify socket, as inputs. A heartbeat counts from its
    /// arrival (the kernel's stamp), which may be well before now while the machine lets
    /// messages wait (`messages_due`); clamped to when the socket was last read empty, so a
    /// wall-clock step cannot date a beat earlier than it can have come.
    fn read_notify(&mut self, now: Instant, inputs: &mut Vec<Input>) {
        // Bounded per wake-up so a flood cannot starve signals and timers.
        self.notify_left = true;
        for _ in 0..NOTIFY_READ_MAX {
            let Some(dgram) = self.notify.recv() else {
                self.notify_left = false;
                break;
            };
            let Some(pid) = dgram.pid else {
                tracing::warn!("notify: message without sender credentials; ignored");
                continue;
            };
            let pids = &self.pids;
            let Some(worker) = notify::find_worker(pid, |p| pids.contains_key(&p))
                .and_then(|p| pids.get(&p).copied())
            else {
                // A worker's last words (STOPPING=1) often arrive after it was reaped.
                if self.reaped.contains(&pid) {
                    tracing::debug!(
                        "notify: message from pid {pid}, a worker already reaped; ignored"
                    );
                } else {
                    tracing::warn!(
                        "notify: message from pid {pid}, which is no worker of this drover; ignored"
                    );
                }
                continue;
            };
            let notices = match dgram.text.and_then(|t| notify::parse(&t)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(
                        "notify: malformed message from w={worker} pid={pid}: {e}; ignored"
                    );
                    continue;
                }
            };
            let arrived = Instant::from_nanos(
                now.as_nanos()
                    .saturating_sub(u64::try_from(dgram.age.as_nanos()).unwrap_or(u64::MAX)),
            )
            .max(self.notify_empty_at);
            for notice in notices {
                match notice {
                    Notice::Ready => inputs.push(Input::Ready { worker }),
                    Notice::Watchdog => inputs.push(Input::HeartbeatAt {
                        worker,
                        at: arrived,
                    }),
                    Notice::Status(s) => tracing::info!("worker w={worker} pid={pid} status: {s}"),
                    Notice::Stopping => tracing::info!("worker w={worker} pid={pid} is stopping"),
                    Notice::Load {
                        busy,
                        requests,
                        busy_since_usec,
                    } => inputs.push(Input::Load {
                        worker,
                        busy,
                        oldest_busy_since: busy_since_usec.map(|t| notify::busy_since(now, t)),
                        requests,
                    }),
                    // The board's doorbell only wakes the loop up, which reads the board
                    // first thing (the worker published before it rang).
                    Notice::Other(s) if s == DOORBELL => {}
                    Notice::Other(s) => {
                        tracing::debug!("notify: w={worker} pid={pid} sent {s}; ignored")
                    }
                }
            }
        }
        if !self.notify_left {
            self.notify_empty_at = now;
        }
    }

    // ------------------------------------------------------------ control

    fn on_control(&mut self, listener_ready: bool, conns_ready: &[bool]) {
        let Some(control) = self.control.as_mut().filter(|_| self.serving_control) else {
            return;
        };
        // Read before accepting: `conns_ready` is indexed by the connections polled.
        let requests = control.0.read(conns_ready);
        if listener_ready {
            control.0.accept();
        }
        for (stream, request) in requests {
            // Answered once the upgrade is decided: handed over or rolled back.
            if matches!(request, Ok(Request::Upgrade)) {
                tracing::info!("control: upgrade");
                match self.request_upgrade() {
                    Ok(what)
                        if matches!(self.sup.upgrade_state(), UpgradeState::Started { .. }) =>
                    {
                        tracing::info!("{what}");
                        self.upgrade_waiters.push(stream);
                    }
                    Ok(what) => control::respond(
                        stream,
                        &json!({ "ok": true, "command": "upgrade", "message": what }),
                    ),
                    Err(e) => control::respond(stream, &control::error(&e)),
                }
                continue;
            }
            let answer = match request {
                Ok(request) => self.answer(request),
                Err(e) => {
                    tracing::warn!("control: {e}");
                    control::error(&e)
                }
            };
            control::respond(stream, &answer);
        }
    }

    fn answer(&mut self, request: Request) -> Value {
        let command = match request {
            Request::Status => return self.status(),
            Request::Reload => {
                tracing::info!("control: reload");
                return match self.reload() {
                    Ok(warnings) if warnings.is_empty() => {
                        json!({ "ok": true, "command": "reload" })
                    }
                    Ok(warnings) => {
                        json!({ "ok": true, "command": "reload", "warnings": warnings })
                    }
                    Err(e) => control::error(&e),
                };
            }
            // `on_control` answers upgrades once decided; this is the immediate answer.
            Request::Upgrade => {
                return match self.request_upgrade() {
                    Ok(what) => json!({ "ok": true, "command": "upgrade", "message": what }),
                    Err(e) => control::error(&e),
                };
            }
            // A supervised drover that stopped alone would only be restarted by its parent:
            // the stop is the parent's, which stops this drover through its ladder.
            Request::Stop | Request::StopNow if self.role == Role::Supervised => {
                let (sig, name) = match request {
                    Request::Stop => (NixSignal::SIGTERM, "stop"),
                    _ => (NixSignal::SIGQUIT, "stop-now"),
                };
                let parent = nix::unistd::getppid();
                tracing::info!("control: {name}, passed to the supervising drover pid {parent}");
                return match kill(parent, sig) {
                    Ok(()) => json!({
                        "ok": true,
                        "command": name,
                        "message": format!("the supervising drover (pid {parent}) stops, and this drover with it"),
                    }),
                    Err(e) => control::error(&format!(
                        "cannot signal the supervising drover (pid {parent}): {e}"
                    )),
                };
            }
            Request::Stop => Command::Stop,
            Request::StopNow => Command::StopNow,
            Request::Restart => Command::Restart,
            Request::Scale { n } => Command::ScaleTo(n),
            Request::ScaleUp => Command::ScaleUp,
            Request::ScaleDown => Command::ScaleDown,
        };
        let name = command.name();
        tracing::info!("control: {name}");
        self.refusals.clear();
        self.feed(Input::Command(command));
        if self.refusals.is_empty() {
            json!({ "ok": true, "command": name })
        } else {
            control::error(&self.refusals.join("; "))
        }
    }

    fn status(&self) -> Value {
        let now = self.now();
        let workers: Vec<Value> = self
            .sup
            .workers()
            .map(|w| {
                let mut v = json!({
                    "slot": w.id.slot,
                    "incarnation": w.id.incarnation,
                    "pid": w.pid.map(|p| p.0),
                    "state": w.state.name(),
                    "generation": w.generation.0,
                    "requests": w.requests,
                    "restarts": w.restarts,
                    "last_stop": w.last_stop.map(|r| r.name()),
                });
                match w.state {
                    WorkerState::Stopping { reason } => v["stop_reason"] = json!(reason.name()),
                    WorkerState::Backoff { until } => {
                        v["restart_in_secs"] = json!(until.saturating_since(now).as_secs_f64())
                    }
                    WorkerState::GaveUp { code } => v["exit_code"] = json!(code),
                    WorkerState::Ready { busy } => v["busy"] = json!(busy),
                    _ => {}
                }
                v
            })
            .collect();
        let phase = match self.sup.phase() {
            Phase::Running => "running",
            Phase::Stopping { immediate: false } => "stopping",
            Phase::Stopping { immediate: true } => "stopping-now",
            Phase::Handover => "handover",
            Phase::Exited => "exited",
        };
        json!({
            "ok": true,
            "pid": std::process::id(),
            "phase": phase,
            "policy": self.settings.machine.policy.name(),
            "target": self.sup.target(),
            "generation": self.sup.generation().0,
            "ready": self.sup.ready_workers(),
            "live": self.sup.live_workers(),
            "crash_looping": self.sup.is_crash_looping(),
            "role": match self.role {
                Role::Primary => "primary",
                Role::Successor { .. } => "successor",
                Role::Supervised => "supervised",
            },
            "upgrade": match self.sup.upgrade_state() {
                UpgradeState::Idle => json!({ "state": "idle" }),
                UpgradeState::Requested { .. } => json!({ "state": "requested" }),
                UpgradeState::Started { pid, .. } => json!({ "state": "started", "successor_pid": pid.0 }),
                UpgradeState::Succeeded { pid } => json!({ "state": "handed-over", "successor_pid": pid.0 }),
                UpgradeState::Killing { pid } => json!({ "state": "rolling-back", "successor_pid": pid.0 }),
            },
            "command": self.settings.command,
            "listeners": self.listeners.list.iter().map(|l| json!({
                "name": l.spec.name,
                "address": l.local,
            })).collect::<Vec<_>>(),
            "workers": workers,
        })
    }
}

/// What woke the loop (the notify socket and the report board are read on every wake-up).
struct Ready {
    signals: bool,
    upgrade: bool,
    control_listener: bool,
    control_conns: Vec<bool>,
}

/// Sends `signal` to the worker's process group (the worker runs in its own group, so a
/// program behind `sh -c` gets it too), or to the pid if the group is gone and the process
/// is not yet reaped (a program that moved to a group of its own).
fn send(pid: Pid, signal: Signal, unreaped: bool) {
    let sig = match signal {
        Signal::Term => NixSignal::SIGTERM,
        Signal::Int => NixSignal::SIGINT,
        Signal::Quit => NixSignal::SIGQUIT,
        Signal::Hup => NixSignal::SIGHUP,
        Signal::Usr1 => NixSignal::SIGUSR1,
        Signal::Usr2 => NixSignal::SIGUSR2,
        Signal::Abrt => NixSignal::SIGABRT,
        Signal::Winch => NixSignal::SIGWINCH,
        Signal::Kill => NixSignal::SIGKILL,
    };
    let raw = pid.0 as i32;
    if kill(nix::unistd::Pid::from_raw(-raw), sig).is_err() && unreaped {
        if let Err(e) = kill(nix::unistd::Pid::from_raw(raw), sig) {
            tracing::debug!("kill({raw}, {}): {e}", signal.name());
        }
    }
}

fn status_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signaled(s) => format!("signal {s}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "TERM",
        SIGINT => "INT",
        SIGQUIT => "QUIT",
        SIGUSR1 => "USR1",
        SIGUSR2 => "USR2",
        SIGHUP => "HUP",
        SIGTTIN => "TTIN",
        SIGTTOU => "TTOU",
        _ => "?",
    }
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
