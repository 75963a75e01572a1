//! What comes out of the machine: [`Action`]s for the driver to perform and the
//! [`Event`]s among them to log, with the reasons they carry. What goes in, and the value
//! types both sides use, are `io`'s.

use core::time::Duration;

use crate::config::ConfigError;
use crate::io::{DeathCause, ExitStatus, Generation, Pid, Signal, StopReason, WorkerId};

/// Why a command was not carried out.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// The supervisor is stopping: only stop commands are taken.
    Stopping,
    /// A live upgrade is in progress already.
    UpgradeInFlight,
    /// This supervisor is a live upgrade's successor its predecessor has not handed over
    /// to yet.
    AwaitingHandover,
    /// A scale request outside the pool's bounds.
    OutOfBounds {
        /// The lowest base size allowed.
        min: u32,
        /// The highest base size allowed.
        max: u32,
    },
    /// The new configuration (reload, or the one a scale request implies) is invalid.
    Invalid(ConfigError),
}

/// Why a live upgrade was abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RollbackReason {
    /// The successor could not be started.
    SuccessorFailedToStart,
    /// The successor exited before or after it took over.
    SuccessorExited,
    /// The successor was not Ready within `upgrade_timeout` (or started when none was awaited).
    Timeout,
    /// An operator stop arrived before the successor was ready.
    Stopped,
}

impl RollbackReason {
    /// Every reason, in declaration order (`ALL[r as usize] == r`).
    pub const ALL: [RollbackReason; 4] = [
        RollbackReason::SuccessorFailedToStart,
        RollbackReason::SuccessorExited,
        RollbackReason::Timeout,
        RollbackReason::Stopped,
    ];
}

/// Things the shell should log; they change nothing outside the machine.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A worker was asked to stop (its signals follow as `Signal` actions).
    Retiring {
        /// The worker asked to stop.
        worker: WorkerId,
        /// Why it is stopped.
        reason: StopReason,
    },
    /// A worker's process ended. `expected` is false for a crash.
    Exited {
        /// The worker whose process ended.
        worker: WorkerId,
        /// How it ended (its main process's status if that exited first).
        status: ExitStatus,
        /// Time since its spawn.
        uptime: Duration,
        /// The machine had asked it to stop.
        expected: bool,
    },
    /// The supervisor woke more than `ABSENCE_MIN` after the deadline it asked for: every
    /// worker's heartbeat window starts afresh now.
    CameBack {
        /// How late it woke.
        late: Duration,
    },
    /// The slot will be refilled after `delay` (restart backoff).
    RestartScheduled {
        /// The slot to refill.
        slot: u32,
        /// The backoff before the respawn.
        delay: Duration,
        /// Consecutive deaths of the slot younger than `healthy_uptime`: the backoff exponent.
        young_deaths: u32,
        /// Why the place is refilled: a death that does not count is refilled at once.
        cause: DeathCause,
    },
    /// The slot is left empty: the worker exited with an unrecoverable code.
    GaveUp {
        /// The worker that exited.
        worker: WorkerId,
        /// Its unrecoverable exit code.
        code: i32,
    },
    /// The start failed (`Restart::fail_start`): a worker died in a way that counts, or a
    /// slot was given up on, before the pool was first ready. The pool stops and exits 1
    /// (unless another stop chose its code first). Once per run.
    StartFailed {
        /// The slot whose worker failed.
        slot: u32,
    },
    /// More than `intensity_deaths` deaths within `intensity_window`: restarts wait the maximum
    /// backoff, or the pool exits (`OnCrashLoop`).
    CrashLooping {
        /// The deaths counted.
        deaths: u32,
        /// The time they fell within.
        window: Duration,
    },
    /// The crash-loop window passed without enough deaths: restarts use the normal backoff again.
    CrashLoopEnded,
    /// The pool's wanted size changed.
    Scaled {
        /// The previous target.
        from: u32,
        /// The new target.
        to: u32,
    },
    /// An odd but possible input that was ignored.
    Ignored(Ignored),
    /// An operator command was not carried out.
    Refused {
        /// The command's name (`Command::name`).
        command: &'static str,
        /// Why it was refused.
        reason: Refusal,
    },
    /// The successor took over; this supervisor drains and exits.
    UpgradeHandover,
    /// The pool is ready and this supervisor is in charge: tell the service manager
    /// (READY=1). Once per run: again after an accepted reload, a live upgrade started or
    /// rolled back, or a successor's takeover.
    PoolReady {
        /// Ready workers now.
        ready: u32,
    },
    /// A live upgrade's successor whose pool is ready: ask the predecessor to hand over.
    /// Once.
    AskHandover,
    /// A successor is in charge from now on (`Input::Takeover`): the shared paths (pid
    /// file, control socket, socket files) are its own.
    TookOver {
        /// The predecessor vanished without handing over.
        predecessor_gone: bool,
    },
    /// A live upgrade was abandoned; this supervisor keeps serving.
    UpgradeRolledBack {
        /// Why it was abandoned.
        reason: RollbackReason,
    },
    /// A new configuration is in force.
    Reloaded {
        /// The generation in force.
        generation: Generation,
        /// Workers are replaced by a rolling restart.
        restart: bool,
    },
    /// The supervisor began to stop (a stop command, a crash loop or an unrecoverable exit
    /// configured to end the pool), or escalated its graceful stop: again with `immediate`
    /// when a second stop or a stop-now arrives while it drains.
    Stopping {
        /// Every worker enters its ladder at the immediate stage.
        immediate: bool,
    },
    /// A rolling restart stopped replacing Ready workers of an earlier generation: one more
    /// would leave fewer than `floor` Ready. Once per hold; it goes on when a replacement
    /// is Ready.
    RolloutHeld {
        /// Ready workers now.
        ready: u32,
        /// The fewest Ready workers the rollout keeps: `target - max_unavailable`.
        floor: u32,
        /// Places taken above the target meanwhile (at most `max_surge`).
        surge: u32,
    },
    /// The pool's target shrank below its current generation's places: this one goes
    /// first (a `Retiring` follows for a worker).
    ScaleDownChose {
        /// The slot chosen.
        slot: u32,
        /// What it held, which is why it was chosen before the others.
        victim: Victim,
    },
    /// The slot's address (per-worker port) could not be bound: the slot stays empty
    /// until the retry. Not counted as the program's failure.
    AddressUnavailable {
        /// The slot whose address failed.
        slot: u32,
        /// The bind's errno.
        errno: i32,
        /// When the slot is tried again.
        retry_in: Duration,
    },
    /// The spawn ramp (workers one maintenance tick may add at once) changed.
    SpawnRamp {
        /// Workers the next growing tick may add.
        rate: u32,
        /// Why it changed.
        reason: RampReason,
    },
}

/// What a scale-down took, in the order it is taken: a place with no process before a
/// booting worker, before the longest-idle worker, before a busy one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Victim {
    /// A place with no process (a backoff, a place given up on): nothing to stop.
    Place,
    /// A worker not Ready yet: it serves nobody.
    Booting,
    /// The worker idle the longest.
    Idle,
    /// A busy worker: every worker was busy.
    Busy,
}

/// Why the spawn ramp changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RampReason {
    /// A tick grew the pool: the next may add twice as many (up to `max_spawn_rate`).
    Grew,
    /// A tick found no shortage: back to one.
    Calm,
    /// The pool is at its maximum: back to one.
    Full,
    /// A worker was retired for idleness: back to one.
    Idle,
    /// A fork failed: the system is short of processes or memory, back to one.
    ForkFailed,
    /// A reload lowered `max_spawn_rate` below it.
    Reload,
}

/// Inputs the machine ignored, and why. Never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Ignored {
    /// An exit for a pid the machine does not know (e.g. a child inherited across an upgrade).
    UnknownPid(Pid),
    /// A message for an incarnation that is no longer live (e.g. a heartbeat after exit).
    StaleMessage(WorkerId),
    /// A second `Ready` for a worker that is Ready already.
    DuplicateReady(WorkerId),
    /// A load report claiming more busy threads than the worker has; clamped, not ignored.
    BusyClamped {
        /// The worker reporting.
        worker: WorkerId,
        /// The busy count it claimed.
        busy: u32,
    },
    /// `Spawned`/`SpawnFailed` for a worker the machine is not spawning.
    UnexpectedSpawnResult(WorkerId),
    /// Successor input with no upgrade in flight.
    NoUpgrade,
}

/// One thing for the driver to do.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Start a worker process for this slot. Answer with `Spawned` or `SpawnFailed`.
    Spawn {
        /// The worker to start; exported to it as `DROVER_WORKER_ID`.
        worker: WorkerId,
        /// Its generation; exported as `DROVER_GENERATION`.
        generation: Generation,
    },
    /// Send `signal` to the worker's process.
    Signal {
        /// The worker to signal.
        worker: WorkerId,
        /// Its process (group).
        pid: Pid,
        /// The signal to send.
        signal: Signal,
        /// Why the worker is stopped.
        reason: StopReason,
    },
    /// Start the successor supervisor of a live upgrade, handing it the listeners. Answer
    /// with `SuccessorStarted` or `SuccessorFailed`.
    StartSuccessor,
    /// Kill the successor (rollback). Its exit arrives as `Exited`.
    KillSuccessor {
        /// The successor supervisor's pid.
        pid: Pid,
        /// Why the upgrade is rolled back.
        reason: RollbackReason,
    },
    /// The slot's address (per-worker port, `Config::slot_addresses`) is no longer needed:
    /// the slot is empty and at or above the target. The driver closes its socket; a later
    /// `Spawn` in the slot opens it again.
    ReleaseSlot {
        /// The slot whose address to close.
        slot: u32,
    },
    /// Stop the supervisor with this exit code. The last action the machine emits.
    Exit {
        /// The process exit code.
        code: i32,
    },
    /// Something to log; changes nothing outside the machine.
    Event(Event),
}
