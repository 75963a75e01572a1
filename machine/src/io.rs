//! What goes into the machine (`Input`, `Command`), plus the small value types both sides
//! use; what comes out (`Action`, `Event`) is `output`'s. Display impls give the
//! fixed-column trace format (see `trace`).

use crate::config::Config;
use crate::time::Instant;

/// An operating-system process id. Only a handle to the outside world: identity is
/// [`WorkerId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pid(pub u32);

/// A worker: the slot it occupies plus how many times that slot has been filled. A message
/// from an earlier incarnation of the slot is recognised as stale instead of being applied
/// to its successor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId {
    /// Slot index, stable across restarts; exported to workers as `DROVER_WORKER_ID`.
    pub slot: u32,
    /// Spawn count of this slot, starting at 1.
    pub incarnation: u32,
}

/// The configuration generation: bumped by every rolling restart and worker-affecting
/// reload. Exported to workers as `DROVER_GENERATION`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Generation(pub u32);

/// The signals the machine may ask the shell to send. A closed set keeps the machine free of
/// libc; the shell maps each to its platform number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Signal {
    /// SIGTERM: the conventional request to shut down gracefully.
    Term,
    /// SIGINT: an interrupt, as from Ctrl-C.
    Int,
    /// SIGQUIT: graceful for nginx and unicorn, immediate for serverengine; programs differ.
    Quit,
    /// SIGHUP: commonly, reload the configuration or reopen logs.
    Hup,
    /// SIGUSR1: program-defined (commonly, reopen logs).
    Usr1,
    /// SIGUSR2: program-defined.
    Usr2,
    /// SIGABRT: abort, usually with a core dump.
    Abrt,
    /// SIGWINCH: program-defined for daemons (nginx and unicorn stop their workers gracefully).
    Winch,
    /// SIGKILL: cannot be caught; the last stage of every kill ladder.
    Kill,
}

impl Signal {
    /// Every signal, for parsing and for tests.
    pub const ALL: [Signal; 9] = [
        Signal::Term,
        Signal::Int,
        Signal::Quit,
        Signal::Hup,
        Signal::Usr1,
        Signal::Usr2,
        Signal::Abrt,
        Signal::Winch,
        Signal::Kill,
    ];

    /// The name without the `SIG` prefix, as the trace and config files write it (`TERM`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
            Signal::Quit => "QUIT",
            Signal::Hup => "HUP",
            Signal::Usr1 => "USR1",
            Signal::Usr2 => "USR2",
            Signal::Abrt => "ABRT",
            Signal::Winch => "WINCH",
            Signal::Kill => "KILL",
        }
    }

    /// Accepts `TERM`, `SIGTERM` and lower case, as operators write them in config files.
    pub fn from_name(name: &str) -> Option<Signal> {
        let upper = name.trim().to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        Signal::ALL.into_iter().find(|s| s.name() == bare)
    }
}

/// SIGKILL's number (Linux, every architecture).
pub const SIGKILL_NUMBER: i32 = 9;
/// SIGTERM's number (Linux, every architecture).
pub const SIGTERM_NUMBER: i32 = 15;

/// Why a worker's place is being refilled, as the restart policy tells deaths apart
/// (ARCHITECTURE §10, restart policy): only a failure of the program counts towards the
/// backoff and the crash-loop intensity; a worker killed from outside or one that retired
/// itself is replaced at once (within `restart.quick_restart_rate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeathCause {
    /// It never became Ready: a failed fork, a boot timeout, a death while booting.
    Boot,
    /// Killed by drover for a failure after it was Ready: its heartbeat or request timeout.
    Hung,
    /// It failed on its own after it was Ready: a non-zero exit, or a signal other than
    /// KILL and TERM (SEGV, ABRT, BUS, ILL, FPE… the program raised it itself).
    Crash,
    /// KILL or TERM that drover did not send, after it was Ready: the OOM killer, an
    /// operator, a container runtime.
    Killed,
    /// Exit code 0 on its own after it was Ready: the program retired itself.
    Retired,
}

impl DeathCause {
    /// Every cause, in declaration order (`ALL[c as usize] == c`).
    pub const ALL: [DeathCause; 5] = [
        DeathCause::Boot,
        DeathCause::Hung,
        DeathCause::Crash,
        DeathCause::Killed,
        DeathCause::Retired,
    ];

    /// Whether the death counts towards the backoff and the crash-loop intensity.
    pub fn counts(self) -> bool {
        matches!(
            self,
            DeathCause::Boot | DeathCause::Hung | DeathCause::Crash
        )
    }

    /// The cause of the unasked death of a worker with `status`, `ready` or not.
    pub fn of_exit(status: ExitStatus, ready: bool) -> DeathCause {
        match status {
            _ if !ready => DeathCause::Boot,
            ExitStatus::Code(0) => DeathCause::Retired,
            ExitStatus::Signaled(SIGKILL_NUMBER | SIGTERM_NUMBER) => DeathCause::Killed,
            _ => DeathCause::Crash,
        }
    }

    /// The name in traces and logs.
    pub fn name(self) -> &'static str {
        match self {
            DeathCause::Boot => "boot",
            DeathCause::Hung => "hung",
            DeathCause::Crash => "crash",
            DeathCause::Killed => "killed",
            DeathCause::Retired => "retired",
        }
    }
}

/// How a process ended, as `waitpid` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number (platform numbering; the machine only prints it).
    Signaled(i32),
}

/// Why a fork/exec failed. The machine treats every kind the same (a failed start of that
/// slot); the kind is carried for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpawnError {
    /// EAGAIN/ENOMEM: the system is short of processes or memory.
    Resources,
    /// The program could not be executed (ENOENT, EACCES, ...).
    Exec,
    /// Any other error, with its errno.
    Other(i32),
    /// The slot's own address (its per-worker port) could not be bound, with the errno.
    /// Not the program's failure: the slot stays empty and is retried with a backoff, and
    /// it never counts towards a crash loop.
    Address(i32),
}

/// Operator requests: from signals, the control socket, or the simulator.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Command {
    /// Graceful stop; a second one escalates to immediate.
    Stop,
    /// Immediate stop: every worker jumps to the ladder's immediate stage.
    StopNow,
    /// Replace every worker, one at a time, readiness-gated.
    Restart,
    /// Replace every worker at once: each worker of an earlier generation enters its stop
    /// ladder at the immediate stage, and each place is filled anew as it empties
    /// (serverengine's immediate restart, HUP under `--signals serverengine`). Workers
    /// already stopping keep their ladder.
    RestartNow,
    /// Apply a new configuration (already validated by `Config::validate`).
    Reload(Box<Config>),
    /// Start a successor supervisor that takes over the listeners.
    Upgrade,
    /// Set the pool's base size (static: workers; dynamic/ondemand: min).
    ScaleTo(u32),
    /// One worker more (TTIN).
    ScaleUp,
    /// One worker fewer (TTOU).
    ScaleDown,
}

impl Command {
    /// The command's name in traces and refusals (`stop-now`, `scale-up` …).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Stop => "stop",
            Command::StopNow => "stop-now",
            Command::Restart => "restart",
            Command::RestartNow => "restart-now",
            Command::Reload(_) => "reload",
            Command::Upgrade => "upgrade",
            Command::ScaleTo(_) => "scale",
            Command::ScaleUp => "scale-up",
            Command::ScaleDown => "scale-down",
        }
    }
}

/// One fact from the outside world. See the crate docs for the run-loop contract.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Input {
    /// A deadline may have passed. Spurious ticks do nothing.
    Tick,
    /// The process for a `Spawn` action exists.
    Spawned {
        /// The worker the `Spawn` action named.
        worker: WorkerId,
        /// Its process (group leader).
        pid: Pid,
    },
    /// The `Spawn` action failed; no process exists.
    SpawnFailed {
        /// The worker the `Spawn` action named.
        worker: WorkerId,
        /// Why the fork or exec failed.
        error: SpawnError,
    },
    /// The worker finished booting (READY=1 or the embedded runtime's ready message).
    Ready {
        /// The worker that is ready.
        worker: WorkerId,
    },
    /// Liveness evidence for the watchdog, as of now (WATCHDOG=1).
    Heartbeat {
        /// The worker that is alive.
        worker: WorkerId,
    },
    /// Liveness evidence as of `at`: a heartbeat the worker stamped itself and the driver
    /// read later (the embedded runtime's shared memory, sampled on wake-ups). The watchdog
    /// counts from `at`, so reading late never stretches it; an `at` later than now counts
    /// as now, and one older than the last heartbeat changes nothing.
    HeartbeatAt {
        /// The worker that is alive.
        worker: WorkerId,
        /// When the worker stamped the heartbeat.
        at: Instant,
    },
    /// The worker's load: threads busy now, since when the longest-running request has
    /// run, and requests served in total. Per-thread busy-since times reduce to their
    /// minimum, which is all the request watchdog needs.
    Load {
        /// The worker reporting.
        worker: WorkerId,
        /// Threads serving a request now (more than the worker has is clamped).
        busy: u32,
        /// Since when the longest-running request has run; `None` when no thread is busy.
        oldest_busy_since: Option<Instant>,
        /// Requests served since the worker started.
        requests: u64,
    },
    /// Connections waiting in a listener's accept queue.
    Backlog {
        /// The driver's number for the listener.
        listener: u32,
        /// Connections waiting to be accepted, as last sampled.
        queued: u32,
    },
    /// The process the driver started for a worker exited while other processes of its
    /// process group (a program behind `sh -c`, the worker's own children) still run.
    /// `Exited` for the same pid follows once the group is empty: until then the worker
    /// lives on in them, and its pid names the group. The machine keeps `status`: that
    /// `Exited` is judged by it, whatever status it carries.
    MainExited {
        /// The worker's pid, which names its process group.
        pid: Pid,
        /// How the main process ended.
        status: ExitStatus,
    },
    /// `waitpid` reaped this pid (for a worker: the last of its process group is gone). It
    /// may be unknown (a child inherited across an upgrade).
    Exited {
        /// The reaped pid.
        pid: Pid,
        /// How the process ended.
        status: ExitStatus,
    },
    /// An operator command.
    Command(Command),
    /// The successor supervisor of a live upgrade was started.
    SuccessorStarted {
        /// The successor supervisor's pid.
        pid: Pid,
    },
    /// The successor could not be started.
    SuccessorFailed {
        /// Why the successor could not be started.
        error: SpawnError,
    },
    /// The successor reports its workers Ready: hand over.
    SuccessorReady,
    /// For a live upgrade's successor ([`Supervisor::succeeding`](crate::Supervisor::succeeding)):
    /// its predecessor handed over (`takeover` on the upgrade channel), or is gone before it
    /// did (the channel's end of file). Either way this supervisor is in charge from now on.
    Takeover {
        /// The predecessor vanished without handing over.
        predecessor_gone: bool,
    },
}

/// Why a worker is being stopped, and why a signal is sent. Carried into every log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StopReason {
    /// No heartbeat within the heartbeat timeout: the worker is hung.
    HeartbeatTimeout,
    /// Not Ready within the boot timeout (or its spawn never answered).
    BootTimeout,
    /// A request ran longer than the request timeout.
    RequestTimeout,
    /// The worker served its request limit (`max_requests` plus jitter).
    MaxRequests,
    /// Idle for `idle_timeout` while the pool was above its minimum.
    Idle,
    /// The pool's target shrank (spare threads, a scale command).
    ScaleDown,
    /// The supervisor is stopping.
    Stop,
    /// Replaced by a worker of a newer generation (rolling restart).
    Restart,
    /// Replaced by a worker of a newer generation, all at once (`Command::RestartNow`).
    RestartNow,
    /// A live upgrade's successor took over.
    Upgrade,
    /// Stopped as part of rolling back a live upgrade.
    Rollback,
    /// A reload shrank the pool's slot range below this worker's slot.
    Reload,
    /// Its main process exited on its own while others of its group run on: they are
    /// stopped as systemd stops what is left of a service whose main process exited.
    MainExited,
}

// A reason added after the last one without a place in `ALL` fails to compile here, not
// at the first counter indexed by it.
const _: () = assert!(StopReason::ALL.len() == StopReason::MainExited as usize + 1);

impl StopReason {
    /// Every reason, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [StopReason; 13] = [
        StopReason::HeartbeatTimeout,
        StopReason::BootTimeout,
        StopReason::RequestTimeout,
        StopReason::MaxRequests,
        StopReason::Idle,
        StopReason::ScaleDown,
        StopReason::Stop,
        StopReason::Restart,
        StopReason::RestartNow,
        StopReason::Upgrade,
        StopReason::Rollback,
        StopReason::Reload,
        StopReason::MainExited,
    ];

    /// The reason's name in traces and status (`heartbeat-timeout` …).
    pub fn name(self) -> &'static str {
        match self {
            StopReason::HeartbeatTimeout => "heartbeat-timeout",
            StopReason::BootTimeout => "boot-timeout",
            StopReason::RequestTimeout => "request-timeout",
            StopReason::MaxRequests => "max-requests",
            StopReason::Idle => "idle",
            StopReason::ScaleDown => "scale-down",
            StopReason::Stop => "stop",
            StopReason::Restart => "restart",
            StopReason::RestartNow => "restart-now",
            StopReason::Upgrade => "upgrade",
            StopReason::Rollback => "rollback",
            StopReason::Reload => "reload",
            StopReason::MainExited => "main-exited",
        }
    }

    /// Failures count as deaths for backoff and restart intensity; retirements do not.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            StopReason::HeartbeatTimeout
                | StopReason::BootTimeout
                | StopReason::RequestTimeout
                | StopReason::MainExited
        )
    }

    /// A hung or wedged worker gets no graceful stage: it would not act on it. What is left
    /// of a worker whose main process exited may well drain, so it gets TERM first. An
    /// immediate restart is asked to skip the graceful stages.
    pub fn starts_immediate(self) -> bool {
        (self.is_failure() && self != StopReason::MainExited) || self == StopReason::RestartNow
    }
}
