//! The event loop: one thread, `poll(2)` on the signal self-pipe, the notify socket and the
//! control socket, with the machine's next deadline as the timeout.
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
    Action, Command, Event, ExitStatus, Input, Instant, Phase, Pid, Signal, SpawnError, Supervisor,
    WorkerId, WorkerState,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use serde_json::{json, Value};
use signal_hook::consts::signal::*;
use signal_hook::iterator::backend::SignalDelivery;
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::control::{self, ControlServer, Request};
use crate::listen::{self, Listener};
use crate::notify::{self, Notice, NotifySocket};
use crate::pidfile::PidFile;
use crate::settings::{describe_config_error, RunArgs, Settings};
use crate::spawn::{ForkedWorker, Spawner, WorkerSpec};

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
    // An embedded program may have installed its own subscriber: that one stays.
    let _ = tracing_subscriber::fmt()
        .with_max_level(settings.log_level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
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

/// Listeners whose unix socket files are removed at exit.
struct Listeners(Vec<Listener>);

impl Drop for Listeners {
    fn drop(&mut self) {
        listen::remove_unix_files(&self.0);
    }
}

struct Control(ControlServer);

impl Drop for Control {
    fn drop(&mut self) {
        self.0.remove_file();
    }
}

struct Shell {
    sup: Supervisor,
    /// Machine time is nanoseconds since this moment.
    epoch: std::time::Instant,
    args: RunArgs,
    settings: Settings,
    spawner: Spawner,
    signals: SignalDelivery<UnixStream, SignalOnly>,
    notify: NotifySocket,
    control: Option<Control>,
    /// Live worker processes (spawned, not yet reaped).
    pids: BTreeMap<u32, WorkerId>,
    /// Set by `Action::Exit`.
    exit: Option<i32>,
    /// Refusals seen in the current drain, reported back to a control client.
    refusals: Vec<String>,
    /// The accept-queue length last reported per listener.
    backlog_seen: Vec<Option<u32>>,
    // Dropped last, in this order: sockets and files are removed at exit.
    listeners: Listeners,
    _runtime_dir: RuntimeDir,
    _pid_file: Option<PidFile>,
}

impl Shell {
    fn start(
        args: RunArgs,
        settings: Settings,
        forked: Option<Box<dyn ForkedWorker>>,
    ) -> Result<Shell, (i32, String)> {
        mark_inherited_fds_cloexec();
        let (read, write) = UnixStream::pair().map_err(|e| (1, format!("socketpair: {e}")))?;
        let signals = SignalDelivery::with_pipe(read, write, SignalOnly, HANDLED_SIGNALS)
            .map_err(|e| (1, format!("signal handlers: {e}")))?;
        let pid_file = match &settings.pid_file {
            Some(path) => Some(PidFile::create(path).map_err(|e| (2, e))?),
            None => None,
        };
        let listeners = Listeners(
            listen::open_all(&settings.listen, settings.backlog, settings.unix_mode)
                .map_err(|e| (2, e))?,
        );
        for l in &listeners.0 {
            tracing::info!(name = %l.spec.name, "listening on {}", l.local);
        }
        let runtime_dir = RuntimeDir::create().map_err(|e| (1, e))?;
        let notify = NotifySocket::bind(&runtime_dir.0.join("notify")).map_err(|e| (1, e))?;
        let control = match &settings.control {
            Some(path) => Some(Control(ControlServer::bind(path).map_err(|e| (2, e))?)),
            None => None,
        };
        let spawner = Spawner::new(
            WorkerSpec::new(&settings),
            listeners.0.iter().map(|l| l.fd.as_raw_fd()).collect(),
            listeners.0.iter().map(|l| l.spec.name.clone()).collect(),
            &notify.path,
            forked,
        )
        .map_err(|e| (1, format!("spawner: {e}")))?;
        let epoch = std::time::Instant::now();
        let sup = Supervisor::new(settings.machine.clone(), Instant::ZERO)
            .map_err(|e| (2, describe_config_error(&e)))?;
        tracing::info!(
            pid = std::process::id(),
            policy = settings.machine.policy.name(),
            target = sup.target(),
            "drover started: {}",
            settings.command.join(" ")
        );
        Ok(Shell {
            sup,
            epoch,
            args,
            settings,
            spawner,
            signals,
            notify,
            control,
            pids: BTreeMap::new(),
            exit: None,
            refusals: Vec::new(),
            backlog_seen: Vec::new(),
            listeners,
            _runtime_dir: runtime_dir,
            _pid_file: pid_file,
        })
    }

    fn now(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn run(&mut self) -> i32 {
        self.drain();
        self.reap();
        loop {
            if let Some(code) = self.exit {
                tracing::info!(code, "drover exits");
                return code;
            }
            let ready = self.wait();
            if ready.signals {
                self.on_signals();
            }
            if ready.notify {
                self.on_notify();
            }
            self.on_control(ready.control_listener, &ready.control_conns);
            if self.sup.poll_timeout().is_some_and(|t| t <= self.now()) {
                self.sample_backlog();
                self.feed(Input::Tick);
            }
            self.reap();
        }
    }

    /// Reports each TCP listener's accept-queue length when it changed: the machine scales
    /// dynamic and ondemand pools on it (programs that report no load scale too). Sampled
    /// on timer wake-ups, which such pools have every maintenance interval.
    fn sample_backlog(&mut self) {
        for i in 0..self.listeners.0.len() {
            let Some(queued) = self.listeners.0[i].accept_queue() else {
                continue;
            };
            if self.backlog_seen.get(i).copied().flatten() != Some(queued) {
                self.backlog_seen.resize(self.listeners.0.len(), None);
                self.backlog_seen[i] = Some(queued);
                self.feed(Input::Backlog {
                    listener: i as u32,
                    queued,
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
            Input::Heartbeat { .. } | Input::Load { .. } | Input::Backlog { .. } => {
                tracing::debug!("{line}")
            }
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
                    self.handle(Input::Spawned { worker, pid });
                }
                Err(error) => self.handle(Input::SpawnFailed { worker, error }),
            },
            Action::Signal { pid, signal, .. } => send(pid, signal),
            Action::StartSuccessor => {
                // Never requested (no Command::Upgrade is sent yet); answer the protocol.
                self.handle(Input::SuccessorFailed {
                    error: SpawnError::Other(libc::ENOSYS),
                });
            }
            Action::KillSuccessor { pid, .. } => {
                let _ = kill(nix::unistd::Pid::from_raw(pid.0 as i32), NixSignal::SIGKILL);
            }
            Action::Exit { code } => self.exit = Some(code),
            Action::Event(Event::Refused { command, reason }) => {
                let why = match &reason {
                    drover_machine::Refusal::Invalid(e) => describe_config_error(e),
                    other => other.to_string(),
                };
                self.refusals.push(format!("{command} refused: {why}"));
            }
            Action::Event(_) => {}
        }
    }

    /// Reaps every exited child, after the drain (see the module docs).
    fn reap(&mut self) {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => return, // ECHILD: no children
            };
            let pid = pid.as_raw() as u32;
            self.pids.remove(&pid);
            self.feed(Input::Exited {
                pid: Pid(pid),
                status,
            });
        }
    }

    // ------------------------------------------------------------ waiting

    fn wait(&mut self) -> Ready {
        let now = std::time::Instant::now();
        let machine_deadline = self
            .sup
            .poll_timeout()
            .map(|t| self.epoch + Duration::from_nanos(t.as_nanos()));
        let control_deadline = self.control.as_ref().and_then(|c| c.0.deadline());
        let deadline = [machine_deadline, control_deadline]
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
        let control_fds: Vec<BorrowedFd<'_>> =
            self.control.as_ref().map(|c| c.0.fds()).unwrap_or_default();
        let mut fds = vec![
            PollFd::new(self.signals.get_read().as_fd(), PollFlags::POLLIN),
            PollFd::new(self.notify.fd.as_fd(), PollFlags::POLLIN),
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
            notify: readable(1),
            control_listener: fds.len() > 2 && readable(2),
            control_conns: (3..fds.len()).map(readable).collect(),
        }
    }

    // ------------------------------------------------------------ signals

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        for sig in pending {
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
                    tracing::warn!("SIGUSR2: live upgrade is not implemented yet; ignored");
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

    /// Re-reads the config file, applies the same flags on top, and hands the result to the
    /// machine. The listeners cannot change without a new process (a live upgrade).
    fn reload(&mut self) -> Result<(), String> {
        let new = Settings::load(&self.args).map_err(|e| e.0)?;
        if new.listen != self.settings.listen {
            return Err(
                "the listeners differ from the running ones; they cannot change on reload (restart drover)"
                    .into(),
            );
        }
        if new.pid_file != self.settings.pid_file || new.control != self.settings.control {
            tracing::warn!("reload: pid_file and control cannot change on reload; ignored");
        }
        let config = new.machine.clone();
        self.refusals.clear();
        self.handle(Input::Command(Command::Reload(Box::new(config.clone()))));
        // Accepted iff the machine now runs the new config; then the spawns of this very
        // drain already use the new command.
        if self.sup.config() == &config {
            self.spawner.spec = WorkerSpec::new(&new);
            self.settings.command = new.command;
            self.settings.program = new.program;
            self.settings.machine = new.machine;
        }
        self.drain();
        match self.refusals.is_empty() {
            true => Ok(()),
            false => Err(self.refusals.join("; ")),
        }
    }

    // ------------------------------------------------------------ notify

    fn on_notify(&mut self) {
        // Bounded per wake-up so a flood cannot starve signals and timers.
        for _ in 0..1024 {
            let Some(dgram) = self.notify.recv() else {
                return;
            };
            let Some(pid) = dgram.pid else {
                tracing::warn!("notify: message without sender credentials; ignored");
                continue;
            };
            let pids = &self.pids;
            let Some(worker) = notify::find_worker(pid, |p| pids.contains_key(&p))
                .and_then(|p| pids.get(&p).copied())
            else {
                tracing::warn!(
                    "notify: message from pid {pid}, which is no worker of this drover; ignored"
                );
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
            for notice in notices {
                match notice {
                    Notice::Ready => self.feed(Input::Ready { worker }),
                    Notice::Watchdog => self.feed(Input::Heartbeat { worker }),
                    Notice::Status(s) => tracing::info!("worker w={worker} pid={pid} status: {s}"),
                    Notice::Stopping => tracing::info!("worker w={worker} pid={pid} is stopping"),
                    Notice::Load {
                        busy,
                        requests,
                        busy_since_usec,
                    } => {
                        let now = self.now();
                        self.feed(Input::Load {
                            worker,
                            busy,
                            oldest_busy_since: busy_since_usec.map(|t| notify::busy_since(now, t)),
                            requests,
                        })
                    }
                    Notice::Other(s) => {
                        tracing::debug!("notify: w={worker} pid={pid} sent {s}; ignored")
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ control

    fn on_control(&mut self, listener_ready: bool, conns_ready: &[bool]) {
        let Some(control) = &mut self.control else {
            return;
        };
        // Read before accepting: `conns_ready` is indexed by the connections polled.
        let requests = control.0.read(conns_ready);
        if listener_ready {
            control.0.accept();
        }
        for (stream, request) in requests {
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
                    Ok(()) => json!({ "ok": true, "command": "reload" }),
                    Err(e) => control::error(&e),
                };
            }
            Request::Upgrade => return control::error("live upgrade is not implemented yet"),
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
            "command": self.settings.command,
            "listeners": self.listeners.0.iter().map(|l| json!({
                "name": l.spec.name,
                "address": l.local,
            })).collect::<Vec<_>>(),
            "workers": workers,
        })
    }
}

struct Ready {
    signals: bool,
    notify: bool,
    control_listener: bool,
    control_conns: Vec<bool>,
}

/// Sends `signal` to the worker's process group (the worker runs in its own group, so a
/// program behind `sh -c` gets it too), or to the pid if the group is gone.
fn send(pid: Pid, signal: Signal) {
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
    if kill(nix::unistd::Pid::from_raw(-raw), sig).is_err() {
        if let Err(e) = kill(nix::unistd::Pid::from_raw(raw), sig) {
            tracing::debug!("kill({raw}, {}): {e}", signal.name());
        }
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
