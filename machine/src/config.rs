//! Configuration and its validation. Operator input: every problem is a `ConfigError` naming
//! the field and the fix, never a panic.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use crate::io::Signal;

/// The most workers (pool maximum plus surge) one supervisor manages.
pub const WORKERS_MAX: u32 = 100_000;

/// How many workers the pool wants.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Policy {
    /// Always `workers` workers.
    Static {
        /// The pool size.
        workers: u32,
    },
    /// Between `min` and `max` workers, keeping between `min_spare` and `max_spare` idle
    /// thread slots; starts with `start` workers.
    Dynamic {
        /// The fewest workers, however idle.
        min: u32,
        /// The most workers, however busy.
        max: u32,
        /// Workers at start-up.
        start: u32,
        /// Fewer idle threads than this grows the pool.
        min_spare: u32,
        /// More idle threads than this shrinks the pool.
        max_spare: u32,
    },
    /// `min` (often 0) up to `max` workers, spawned when connections wait with no idle slot,
    /// retired after `idle_timeout`.
    Ondemand {
        /// The fewest workers (often 0).
        min: u32,
        /// The most workers.
        max: u32,
    },
}

impl Policy {
    /// The policy's name in config files and status (`static`, `dynamic`, `ondemand`).
    pub fn name(&self) -> &'static str {
        match self {
            Policy::Static { .. } => "static",
            Policy::Dynamic { .. } => "dynamic",
            Policy::Ondemand { .. } => "ondemand",
        }
    }

    /// The fewest workers the policy allows.
    pub fn min(&self) -> u32 {
        match *self {
            Policy::Static { workers } => workers,
            Policy::Dynamic { min, .. } | Policy::Ondemand { min, .. } => min,
        }
    }

    /// The most workers the policy allows (not counting the surge of a rollout).
    pub fn max(&self) -> u32 {
        match *self {
            Policy::Static { workers } => workers,
            Policy::Dynamic { max, .. } | Policy::Ondemand { max, .. } => max,
        }
    }

    /// The target at start-up.
    pub fn start(&self) -> u32 {
        match *self {
            Policy::Static { workers } => workers,
            Policy::Dynamic { start, .. } => start,
            Policy::Ondemand { min, .. } => min,
        }
    }
}

/// One stage of the kill ladder: send `signal` at the stage's start, then again after
/// `interval`, `interval + increment`, `interval + 2·increment`, … until `timeout` after the
/// stage's start, when the next stage begins. The last stage is `KILL`, sent once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    /// The signal this stage sends.
    pub signal: Signal,
    /// The gap after the stage's first signal.
    pub interval: Duration,
    /// How much each further gap grows.
    pub increment: Duration,
    /// How long the stage lasts before the next begins.
    pub timeout: Duration,
}

impl Stage {
    /// The final stage: KILL, once.
    pub fn kill() -> Stage {
        Stage {
            signal: Signal::Kill,
            interval: Duration::ZERO,
            increment: Duration::ZERO,
            timeout: Duration::ZERO,
        }
    }
}

/// The kill ladder as data. Graceful stops enter at stage 0, immediate stops (and hung
/// workers) at `immediate_from`. A worker never moves back down its ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ladder {
    /// The stages in order; validation ends them in KILL.
    pub stages: Vec<Stage>,
    /// The stage where immediate stops and hung workers enter.
    pub immediate_from: usize,
}

impl Ladder {
    /// For any program: TERM, resent every 10 s, KILL at `stop_timeout`. An immediate stop
    /// is KILL at once.
    pub fn for_any_program(stop_timeout: Duration) -> Ladder {
        Ladder {
            stages: vec![
                Stage {
                    signal: Signal::Term,
                    interval: Duration::from_secs(10),
                    increment: Duration::ZERO,
                    timeout: stop_timeout,
                },
                Stage::kill(),
            ],
            immediate_from: 1,
        }
    }

    /// serverengine's defaults: TERM at 0, 15, 40, 75 … s for 600 s; then QUIT at +0, +10,
    /// +30 … for 600 s; then KILL exactly at the end (serverengine waits for its next slot).
    pub fn serverengine() -> Ladder {
        Ladder {
            stages: vec![
                Stage {
                    signal: Signal::Term,
                    interval: Duration::from_secs(15),
                    increment: Duration::from_secs(10),
                    timeout: Duration::from_secs(600),
                },
                Stage {
                    signal: Signal::Quit,
                    interval: Duration::from_secs(10),
                    increment: Duration::from_secs(10),
                    timeout: Duration::from_secs(600),
                },
                Stage::kill(),
            ],
            immediate_from: 1,
        }
    }

    /// Time from entering `stage` until KILL is sent.
    pub fn time_to_kill(&self, stage: usize) -> Duration {
        self.stages[stage..]
            .iter()
            .fold(Duration::ZERO, |t, s| t.saturating_add(s.timeout))
    }
}

impl Default for Ladder {
    fn default() -> Ladder {
        Ladder::for_any_program(Duration::from_secs(30))
    }
}

/// When a spawned worker counts as Ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready as soon as the process exists (programs that never send READY=1).
    AtSpawn,
    /// Ready when the worker says so; `boot_timeout` applies.
    Notify,
}

/// What to do when the pool is crash-looping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCrashLoop {
    /// Keep restarting at the capped backoff.
    Backoff,
    /// Stop the pool and exit with this code (for systemd's StartLimit or an OTP-style
    /// escalation).
    Exit(i32),
}

/// Restart policy after a worker dies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    /// Delay before the second consecutive young restart; doubles per further young death.
    pub backoff_min: Duration,
    /// Cap of the delay; also the delay for every restart while crash-looping.
    pub backoff_max: Duration,
    /// A worker that lived this long was healthy: its slot's backoff resets.
    pub healthy_uptime: Duration,
    /// More than `intensity_deaths` deaths within `intensity_window` is crash-looping.
    pub intensity_deaths: u32,
    /// The window of the crash-loop count (see `intensity_deaths`).
    pub intensity_window: Duration,
    /// What a crash loop does to the pool.
    pub on_crash_loop: OnCrashLoop,
    /// Worker exit codes that are not restarted: the slot stays empty.
    pub unrecoverable_exit_codes: Vec<i32>,
    /// On an unrecoverable code, stop the pool and exit with the first such code.
    pub stop_on_unrecoverable: bool,
    /// Before the pool is first ready, a death that counts (`DeathCause::counts`: a failed
    /// fork, a crash, a worker killed for a failure) or a slot given up on fails the start:
    /// the pool stops and exits 1, as systemd fails a service whose start fails rather than
    /// retrying behind its operator's back. Off by default: the pool retries with backoff.
    /// `drover --daemonize` turns it on, so its launcher can report the failure.
    pub fail_start: bool,
    /// The most places refilled at once (deaths that do not count: a worker killed from
    /// outside, one that retired itself) within any second, pool-wide; more wait for the
    /// second to pass. A cap against a pathological kill storm spinning the CPU, far above
    /// what real storms need.
    pub quick_restart_rate: u32,
}

impl Default for Restart {
    fn default() -> Restart {
        Restart {
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(30),
            healthy_uptime: Duration::from_secs(10),
            intensity_deaths: 10,
            intensity_window: Duration::from_secs(60),
            on_crash_loop: OnCrashLoop::Backoff,
            unrecoverable_exit_codes: Vec::new(),
            stop_on_unrecoverable: false,
            fail_start: false,
            quick_restart_rate: 32,
        }
    }
}

/// Everything the machine decides by. Build with `Config::new(policy)` and adjust fields;
/// `Supervisor::new` validates.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How many workers the pool wants.
    pub policy: Policy,
    /// Threads (accepting slots) per worker.
    pub threads: u32,
    /// Cap of the spawn ramp 1, 2, 4 … per maintenance tick.
    pub max_spawn_rate: u32,
    /// Period of the pool maintenance tick (scale up/down, idle retirement).
    pub maintenance_interval: Duration,
    /// A worker idle this long retires while the pool is above its minimum.
    pub idle_timeout: Option<Duration>,
    /// Retire a worker after this many requests, plus a per-worker jitter.
    pub max_requests: Option<u64>,
    /// Upper bound of the uniform jitter added to `max_requests`.
    pub max_requests_jitter: u64,
    /// Seed of the machine's own random stream (jitter). Same seed, same decisions.
    pub seed: u64,
    /// When a spawned worker counts as Ready.
    pub readiness: Readiness,
    /// From spawn until Ready (or until the process exists, with `Readiness::AtSpawn`).
    pub boot_timeout: Duration,
    /// A Ready worker silent this long is hung and killed; `None` turns the watchdog off.
    pub heartbeat_timeout: Option<Duration>,
    /// A request running this long gets its worker killed; `None` for no limit.
    pub request_timeout: Option<Duration>,
    /// The kill ladder of every stop that starts while this config is in force.
    pub ladder: Arc<Ladder>,
    /// What happens after a worker dies.
    pub restart: Restart,
    /// Extra workers allowed during a rolling restart.
    pub max_surge: u32,
    /// Ready workers that may be missing during a rolling restart.
    pub max_unavailable: u32,
    /// A live upgrade's successor must be Ready within this.
    pub upgrade_timeout: Duration,
    /// A digest of everything that shapes a worker process (command, env, threads …),
    /// computed by the shell. A reload that changes it restarts workers (rolling).
    pub worker_fingerprint: u64,
    /// Each slot is an address (the shell's per-worker port): slots stay dense. A rolling
    /// restart replaces each worker in its own slot (`max_surge` must be 0), a scale-down
    /// retires the highest slots first, spawns go only to free slots below the target, and
    /// `Action::ReleaseSlot` tells the driver when a slot at or above the target emptied.
    pub slot_addresses: bool,
}

impl Config {
    /// The defaults for `policy`: one thread, readiness at spawn, a 60 s boot timeout, no
    /// watchdogs, TERM then KILL after 30 s; an ondemand pool retires workers idle 10 s.
    pub fn new(policy: Policy) -> Config {
        let idle_timeout = match policy {
            Policy::Ondemand { .. } => Some(Duration::from_secs(10)),
            _ => None,
        };
        Config {
            policy,
            threads: 1,
            max_spawn_rate: 32,
            maintenance_interval: Duration::from_secs(1),
            idle_timeout,
            max_requests: None,
            max_requests_jitter: 0,
            seed: 0,
            readiness: Readiness::AtSpawn,
            boot_timeout: Duration::from_secs(60),
            heartbeat_timeout: None,
            request_timeout: None,
            ladder: Arc::new(Ladder::default()),
            restart: Restart::default(),
            max_surge: 1,
            max_unavailable: 0,
            upgrade_timeout: Duration::from_secs(60),
            worker_fingerprint: 0,
            slot_addresses: false,
        }
    }

    /// A static pool of `workers` workers, other settings at their defaults.
    pub fn static_pool(workers: u32) -> Config {
        Config::new(Policy::Static { workers })
    }

    /// A dynamic pool with php-fpm's default start size: halfway between the spares.
    pub fn dynamic(min: u32, max: u32, min_spare: u32, max_spare: u32) -> Config {
        let start = min_spare.midpoint(max_spare).clamp(min, max.max(min));
        Config::new(Policy::Dynamic {
            min,
            max,
            start,
            min_spare,
            max_spare,
        })
    }

    /// An ondemand pool of up to `max` workers and none while idle.
    pub fn ondemand(max: u32) -> Config {
        Config::new(Policy::Ondemand { min: 0, max })
    }

    /// Every exit code besides 0 a run under this config may end with: the crash loop's
    /// (`OnCrashLoop::Exit`), the unrecoverable worker codes with `stop_on_unrecoverable`,
    /// and 1 for a failed start (`fail_start`). One list for every world that checks the
    /// machine's `Exit`, so that a new way to stop cannot be missed in one of them.
    pub fn exit_codes(&self) -> Vec<i32> {
        let r = &self.restart;
        let mut codes = Vec::new();
        if let OnCrashLoop::Exit(code) = r.on_crash_loop {
            codes.push(code);
        }
        if r.stop_on_unrecoverable {
            codes.extend(r.unrecoverable_exit_codes.iter().copied());
        }
        if r.fail_start {
            codes.push(1);
        }
        codes
    }

    /// Slots the machine may fill at once: the pool maximum plus the surge of a rollout.
    pub fn slot_count(&self) -> u32 {
        self.policy.max().saturating_add(self.max_surge)
    }

    /// Checks every field and combination; the error names the field and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, problem: String| Err(ConfigError { field, problem });
        match self.policy {
            Policy::Static { workers } => {
                if workers == 0 {
                    return err("workers", "must be at least 1 for a static pool; use an ondemand pool to scale to zero".into());
                }
            }
            Policy::Dynamic {
                min,
                max,
                start,
                min_spare,
                max_spare,
            } => {
                if max == 0 {
                    return err("max", "must be at least 1".into());
                }
                if min > max {
                    return err("min", format!("is {min}, above max {max}; set min <= max"));
                }
                if !(min..=max).contains(&start) {
                    return err(
                        "start",
                        format!("is {start}, outside min..max ({min}..{max})"),
                    );
                }
                if min_spare == 0 {
                    return err("min_spare", "must be at least 1, or the pool never grows; use a static pool for a fixed size".into());
                }
                if min_spare > max_spare {
                    return err(
                        "min_spare",
                        format!("is {min_spare}, above max_spare {max_spare}; set min_spare <= max_spare"),
                    );
                }
                // One new worker adds `threads` idle slots; if that can jump from below
                // min_spare to above max_spare the pool would spawn and retire forever.
                if u64::from(max_spare) + 1 < u64::from(min_spare) + u64::from(self.threads) {
                    return err("max_spare", format!("is {max_spare}: it must be at least min_spare + threads - 1 ({}) or the pool oscillates; raise max_spare", u64::from(min_spare) + u64::from(self.threads) - 1));
                }
            }
            Policy::Ondemand { min, max } => {
                if max == 0 {
                    return err("max", "must be at least 1".into());
                }
                if min > max {
                    return err("min", format!("is {min}, above max {max}; set min <= max"));
                }
                if self.idle_timeout.is_none() {
                    return err(
                        "idle_timeout",
                        "is required for an ondemand pool (workers retire after it)".into(),
                    );
                }
            }
        }
        if self.slot_count() > WORKERS_MAX {
            return err(
                "max",
                format!(
                    "max + max_surge is {}, above the limit of {WORKERS_MAX} workers",
                    self.slot_count()
                ),
            );
        }
        if self.threads == 0 {
            return err("threads", "must be at least 1".into());
        }
        if self.max_spawn_rate == 0 {
            return err("max_spawn_rate", "must be at least 1".into());
        }
        if self.maintenance_interval.is_zero() {
            return err("maintenance_interval", "must be above zero".into());
        }
        if self.idle_timeout.is_some_and(|d| d.is_zero()) {
            return err(
                "idle_timeout",
                "must be above zero; omit it to disable idle retirement".into(),
            );
        }
        if self.max_requests == Some(0) {
            return err(
                "max_requests",
                "must be at least 1; omit it for no limit".into(),
            );
        }
        if self.max_requests.is_none() && self.max_requests_jitter > 0 {
            return err(
                "max_requests_jitter",
                "is set without max_requests; set max_requests too".into(),
            );
        }
        if self.boot_timeout.is_zero() {
            return err("boot_timeout", "must be above zero".into());
        }
        if self.heartbeat_timeout.is_some_and(|d| d.is_zero()) {
            return err(
                "heartbeat_timeout",
                "must be above zero; omit it to disable the watchdog".into(),
            );
        }
        if self.request_timeout.is_some_and(|d| d.is_zero()) {
            return err(
                "request_timeout",
                "must be above zero; omit it to disable".into(),
            );
        }
        self.validate_ladder()?;
        let r = &self.restart;
        if r.backoff_min.is_zero() {
            return err("restart.backoff_min", "must be above zero".into());
        }
        if r.backoff_max < r.backoff_min {
            return err(
                "restart.backoff_max",
                "is below restart.backoff_min; raise it".into(),
            );
        }
        if r.intensity_deaths == 0 {
            return err("restart.intensity_deaths", "must be at least 1".into());
        }
        if r.quick_restart_rate == 0 {
            return err(
                "restart.quick_restart_rate",
                "must be at least 1 (restarts per second)".into(),
            );
        }
        if r.intensity_window.is_zero() {
            return err("restart.intensity_window", "must be above zero".into());
        }
        if r.stop_on_unrecoverable && r.unrecoverable_exit_codes.is_empty() {
            return err(
                "restart.stop_on_unrecoverable",
                "is set but restart.unrecoverable_exit_codes is empty; list the codes".into(),
            );
        }
        if self.slot_addresses && self.max_surge > 0 {
            return err("max_surge", format!("is {} but each slot is an address (per-worker ports): a rolling restart must replace each worker in its own slot; set max_surge = 0 and max_unavailable >= 1", self.max_surge));
        }
        if self.max_surge == 0 && self.max_unavailable == 0 {
            return err("max_surge", "and max_unavailable are both 0: a rolling restart could never make progress; set max_surge >= 1".into());
        }
        if self.upgrade_timeout.is_zero() {
            return err("upgrade_timeout", "must be above zero".into());
        }
        Ok(())
    }

    fn validate_ladder(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, problem: String| Err(ConfigError { field, problem });
        let stages = &self.ladder.stages;
        let Some(last) = stages.last() else {
            return err(
                "ladder",
                "has no stages; it must end with a KILL stage".into(),
            );
        };
        if last.signal != Signal::Kill {
            return err(
                "ladder",
                format!(
                    "ends with {}, not KILL: every stop must end in KILL; add a KILL stage",
                    last.signal.name()
                ),
            );
        }
        const STAGES_MAX: usize = 16;
        if stages.len() > STAGES_MAX {
            return err(
                "ladder",
                format!(
                    "has {} stages, above the limit of {STAGES_MAX}",
                    stages.len()
                ),
            );
        }
        for (i, stage) in stages[..stages.len() - 1].iter().enumerate() {
            if stage.signal == Signal::Kill {
                return err(
                    "ladder",
                    format!("stage {i} is KILL but not last: KILL ends the ladder"),
                );
            }
            if stage.timeout.is_zero() {
                return err(
                    "ladder",
                    format!(
                        "stage {i} ({}) has timeout 0; give it time or remove it",
                        stage.signal.name()
                    ),
                );
            }
            if stage.interval.is_zero() {
                return err(
                    "ladder",
                    format!(
                        "stage {i} ({}) has interval 0; the signal would repeat without pause",
                        stage.signal.name()
                    ),
                );
            }
        }
        if self.ladder.immediate_from >= stages.len() {
            return err(
                "ladder.immediate_from",
                format!(
                    "is {}, past the last stage {}",
                    self.ladder.immediate_from,
                    stages.len() - 1
                ),
            );
        }
        Ok(())
    }
}

/// A configuration problem: `field` and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The config field (or settings key) at fault.
    pub field: &'static str,
    /// What is wrong with it and how to fix it.
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {} {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}
