//! The oracles: what the world knows and the machine must agree with. It owns the first
//! failure of the run and the bounds the checks use (the longest kill ladder in force so
//! far, the most slots, each stopping process's deadline), and checks, through the model
//! OS's hooks: no signal reaches a pid that is reaped or another worker's, every process
//! asked to stop is dead within its ladder's bound, worker processes never exceed
//! `max + max_surge`, a beating worker is never killed for a missed heartbeat, a running
//! worker whose main process exited is retired for it in the same drain and its exit is
//! judged a crash with the main's status, the machine never takes an exit, a message or a
//! fork's answer the shell hands it for unknown or stale, and it says the pool is ready
//! only when it is by the world's records (`pool_short`). It also counts the coverage
//! marks the machine's events show. It must not change the world or the machine: it only
//! looks and fails.

use core::time::Duration;
use std::collections::BTreeSet;

use drover_machine::{
    Config, Event, ExitStatus, Ignored, Instant, Pid, RampReason, RollbackReason, Signal,
    StopReason, Supervisor, Victim, WorkerId, WorkerState,
};

use super::os::SimOs;
use super::procs::Main;
use super::Outcome;
use crate::coverage::Mark;

/// Slack on top of a kill ladder for the oracle: late wake-up, signal latency, a delayed
/// KILL effect and the reap.
pub(super) const LADDER_SLACK: Duration = Duration::from_secs(8);

pub(super) struct Checks {
    pub(super) failure: Option<Outcome>,
    /// Processes asked to stop, by the deadline of their death.
    pub(super) stop_deadlines: BTreeSet<(Instant, u64)>,
    /// Longest kill ladder of any config in force so far (a stopping worker keeps its own).
    pub(super) ladder_max: Duration,
    pub(super) max_slots: u32,
    /// A `MainExited` of a worker the machine was not stopping is being fed: the drain must
    /// retire it for main-exited (worker, process serial).
    main_retire: Option<(WorkerId, u64)>,
    /// The `Exited` of a worker retired for main-exited is being fed: the machine must
    /// report it exited with its main process's status, as a crash.
    main_judge: Option<(WorkerId, ExitStatus)>,
    /// The machine announced a graceful stop: an immediate one now is its escalation.
    graceful_stop: bool,
    /// The machine handed over to its successor and has not rolled back since.
    handed_over: bool,
}

impl Checks {
    pub(super) fn new(config: &Config) -> Checks {
        Checks {
            failure: None,
            stop_deadlines: BTreeSet::new(),
            ladder_max: config.ladder.time_to_kill(0),
            max_slots: config.slot_count(),
            main_retire: None,
            main_judge: None,
            graceful_stop: false,
            handed_over: false,
        }
    }

    /// The bounds follow the config now in force.
    pub(super) fn widen(&mut self, config: &Config) {
        self.ladder_max = self.ladder_max.max(config.ladder.time_to_kill(0));
        self.max_slots = self.max_slots.max(config.slot_count());
    }
}

/// How long a healed pool may take to converge, from the config: a full ladder for every
/// slot (a draining worker holds its slot), the slowest boot, backoff and crash-loop
/// window, an upgrade timeout, and the ramp.
pub(super) fn liveness_bound(c: &Config, checks: &Checks) -> Duration {
    let per_wave = checks.ladder_max
        + c.boot_timeout
        + c.heartbeat_timeout.unwrap_or_default()
        + c.restart.backoff_max
        + LADDER_SLACK;
    per_wave * (checks.max_slots + 2)
        + c.restart.intensity_window
        + c.upgrade_timeout
        + c.maintenance_interval * (c.policy.max() + 10)
        + Duration::from_secs(120)
}

impl SimOs {
    pub(super) fn fail_safety(&mut self, what: String) {
        if self.checks.failure.is_none() {
            self.checks.failure = Some(Outcome::Safety(format!("at {}: {what}", self.now)));
        }
    }

    pub(super) fn fail_liveness(&mut self, what: String) {
        if self.checks.failure.is_none() {
            self.checks.failure = Some(Outcome::Liveness(format!("at {}: {what}", self.now)));
        }
    }

    /// The world stood still (a clock jump) or the supervisor's loop was blocked (a slow
    /// fork) for `d`: no ladder could move meanwhile.
    pub(super) fn postpone_stops(&mut self, d: Duration) {
        let deadlines = std::mem::take(&mut self.checks.stop_deadlines);
        for (deadline, serial) in deadlines {
            let deadline = deadline + d;
            self.table
                .procs
                .get_mut(&serial)
                .expect("tracked")
                .stop_deadline = Some(deadline);
            self.checks.stop_deadlines.insert((deadline, serial));
        }
    }

    /// Ground truth for a signal: the pid must still name that worker's process (alive, a
    /// zombie, or a lingering group). Starts the process's stop deadline. The process's
    /// serial if the signal may be delivered.
    pub(super) fn check_signal(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        pid: Pid,
        signal: Signal,
        reason: StopReason,
    ) -> Option<u64> {
        let target = self.table.by_pid.get(&pid).copied();
        let Some(serial) = target.filter(|s| self.table.procs[s].worker == Some(worker)) else {
            let what = match target {
                None => "no process (reaped)".to_string(),
                Some(s) => format!("another process ({:?})", self.table.procs[&s].worker),
            };
            self.fail_safety(format!(
                "{} for {worker} ({}) hit pid {pid}, which is {what}",
                signal.name(),
                reason.name()
            ));
            return None;
        };
        if signal == Signal::Kill {
            self.stats.kills += 1;
            self.coverage.hit(Mark::LadderKill);
        }
        // The ladder in force now is the one this stop uses (a reload may have just changed it).
        self.checks.ladder_max = self
            .checks
            .ladder_max
            .max(sup.config().ladder.time_to_kill(0));
        let proc = self.table.procs.get_mut(&serial).expect("checked above");
        if proc.stop_deadline.is_none() && proc.alive() {
            let deadline = self.now + self.checks.ladder_max + LADDER_SLACK;
            proc.stop_deadline = Some(deadline);
            self.checks.stop_deadlines.insert((deadline, serial));
        }
        Some(serial)
    }

    /// An event of the machine: oracles on its content, and coverage.
    pub(super) fn observe(&mut self, sup: &Supervisor, event: &Event) {
        self.count_decision(sup, event);
        match event {
            Event::PoolReady { .. } => {
                if let Some(short) = self.pool_short(sup) {
                    self.fail_safety(format!("pool-ready while {short}"));
                }
            }
            Event::Exited {
                worker,
                status,
                expected,
                ..
            } => {
                if let Some((judged, main)) = self.checks.main_judge.filter(|(w, _)| w == worker)
                {
                    self.checks.main_judge = None;
                    if *expected || *status != main {
                        self.fail_safety(format!(
                            "{judged}, retired because its main process exited ({main:?}), was reported exited with {status:?}, expected={expected}: it must count as a crash with the main process's status"
                        ));
                    }
                }
            }
            Event::Retiring {
                worker,
                reason: StopReason::MainExited,
            } => match self.checks.main_retire.take() {
                Some((w, serial)) if w == *worker => {
                    self.coverage.hit(Mark::MainExited);
                    if let Some(p) = self.table.procs.get_mut(&serial) {
                        p.main_retired = true;
                    }
                }
                _ => self.fail_safety(format!(
                    "{worker} was retired for main-exited, but no MainExited of a running worker of that id was just fed"
                )),
            },
            // The shell feeds only exits of its own children, messages of workers it has not
            // reaped, and the answer of the fork just done: the machine must know them all.
            Event::Ignored(
                ignored @ (Ignored::UnknownPid(_)
                | Ignored::StaleMessage(_)
                | Ignored::UnexpectedSpawnResult(_)),
            ) => self.fail_safety(format!(
                "the machine ignored {ignored:?}: it and the shell disagree on which processes exist"
            )),
            _ => {}
        }
    }

    /// The decision marks an event shows. Only the event and the machine's own state at
    /// that moment count: a decision mark proves the machine decided, whatever the world
    /// did to get there.
    fn count_decision(&mut self, sup: &Supervisor, event: &Event) {
        let mark = match event {
            Event::Retiring { reason, .. } => match reason {
                StopReason::BootTimeout => Mark::BootTimeout,
                StopReason::HeartbeatTimeout => Mark::HeartbeatTimeout,
                StopReason::RequestTimeout => Mark::RequestTimeout,
                StopReason::MaxRequests => Mark::MaxRequests,
                StopReason::Idle => Mark::IdleRetired,
                StopReason::RestartNow => Mark::RestartNow,
                // Main-exited is counted by its oracle, once it agreed.
                _ => return,
            },
            Event::CameBack { .. } => Mark::CameBack,
            Event::RestartScheduled { delay, cause, .. } if !cause.counts() => {
                if delay.is_zero() {
                    Mark::QuickRestart
                } else {
                    Mark::QuickRestartPaced
                }
            }
            Event::RestartScheduled {
                delay,
                young_deaths,
                ..
            } => {
                // The machine's formula, read back: the delay is backoff_min doubled once
                // per young death past the second, capped at backoff_max (a crash loop
                // serves the cap whatever the count, so only the count proves doublings).
                let restart = &sup.config().restart;
                let doublings = young_deaths.saturating_sub(2).min(31);
                let doubled = restart.backoff_min.saturating_mul(1 << doublings);
                if *young_deaths >= 3 && doubled >= restart.backoff_max {
                    if *delay == restart.backoff_max && restart.backoff_max > restart.backoff_min {
                        self.coverage.hit(Mark::BackoffCapped);
                    }
                    return;
                }
                if doublings < 2 || *delay != doubled {
                    return;
                }
                Mark::BackoffDoubled
            }
            Event::CrashLooping { .. } => Mark::CrashLooping,
            Event::CrashLoopEnded => Mark::CrashLoopEnded,
            Event::GaveUp { .. } => Mark::GaveUp,
            Event::StartFailed { .. } => Mark::StartFailed,
            Event::SpawnRamp { reason, .. } => match reason {
                RampReason::Grew => Mark::RampDoubled,
                RampReason::ForkFailed => Mark::RampResetByForkFailure,
                _ => return,
            },
            Event::ScaleDownChose { victim, .. } => match victim {
                Victim::Place => Mark::ScaleDownPlace,
                Victim::Booting => Mark::ScaleDownBooting,
                // Only a choice when a busy worker could have been taken instead.
                Victim::Idle if busy_current(sup) => Mark::ScaleDownIdleOverBusy,
                _ => return,
            },
            Event::Reloaded { restart: true, .. } => Mark::RollingRestart,
            Event::RolloutHeld { surge, .. } => {
                if *surge > 0 {
                    self.coverage.hit(Mark::RolloutHeldSurging);
                }
                Mark::RolloutHeld
            }
            Event::UpgradeHandover => {
                self.checks.handed_over = true;
                Mark::UpgradeHandover
            }
            Event::UpgradeRolledBack { reason } => match reason {
                RollbackReason::Timeout => Mark::RolledBackTimeout,
                RollbackReason::SuccessorExited if std::mem::take(&mut self.checks.handed_over) => {
                    self.coverage.hit(Mark::ResumedAfterHandover);
                    Mark::RolledBackSuccessorExited
                }
                RollbackReason::SuccessorExited => Mark::RolledBackSuccessorExited,
                _ => return,
            },
            Event::Refused { .. } => Mark::CommandRefused,
            Event::AddressUnavailable { .. } => Mark::AddressRetried,
            Event::Stopping { immediate: false } => {
                self.checks.graceful_stop = true;
                return;
            }
            Event::Stopping { immediate: true } if self.checks.graceful_stop => Mark::StopEscalated,
            Event::Stopping { immediate: true } => Mark::StopImmediate,
            _ => return,
        };
        self.coverage.hit(mark);
    }

    /// A `MainExited` is about to be fed for this process. Ground truth for "not
    /// stopping": the machine never signalled it (a stop of a worker whose pid is known
    /// signals at once); such a worker must be retired for main-exited in this drain.
    pub(super) fn expect_main_retire(&mut self, serial: u64) {
        let p = &self.table.procs[&serial];
        self.checks.main_retire = match p.worker {
            Some(worker) if p.stop_deadline.is_none() => Some((worker, serial)),
            _ => None,
        };
    }

    /// An `Exited` is about to be fed for this process.
    pub(super) fn judge_exit(&mut self, serial: u64, status: ExitStatus) {
        let p = &self.table.procs[&serial];
        self.checks.main_judge = p
            .main_retired
            .then(|| (p.worker.expect("only workers are retired"), status));
    }

    /// After a drain: what the main-exit oracles expected of it happened.
    pub(super) fn check_main_exit(&mut self, sup: &Supervisor) {
        let exited = sup.phase() == drover_machine::Phase::Exited;
        if let Some((worker, serial)) = self.checks.main_retire.take() {
            if !exited {
                let pid = self.table.procs.get(&serial).map(|p| p.pid);
                self.fail_safety(format!(
                    "the main process of {worker} (pid {pid:?}) exited while it ran, and the supervisor did not retire it"
                ));
            }
        }
        if let Some((worker, _)) = self.checks.main_judge.take() {
            if !exited {
                self.fail_safety(format!(
                    "{worker} was reaped, and the supervisor reported no exit of it"
                ));
            }
        }
    }

    /// After every step: no process outlives its stop deadline, and worker processes never
    /// exceed `max + max_surge` of the largest config in force.
    pub(super) fn check_processes(&mut self) {
        if let Some(&(deadline, serial)) = self.checks.stop_deadlines.first() {
            if self.now > deadline {
                let p = &self.table.procs[&serial];
                let what = format!(
                    "{:?} (pid {}) was asked to stop and still lives past its ladder bound {}",
                    p.worker, p.pid, deadline
                );
                return self.fail_safety(what);
            }
        }
        let live = self
            .table
            .procs
            .values()
            .filter(|p| p.worker.is_some())
            .count() as u32;
        if live > self.checks.max_slots {
            let max = self.checks.max_slots;
            self.fail_safety(format!(
                "{live} worker processes exist, above max + max_surge = {max}"
            ));
        }
    }

    /// Why the pool is not ready by the world's records, if it is not: fewer workers of the
    /// generation in force than the target (places given up on count, as the machine leaves
    /// them empty on purpose; with one of the current generation, ready workers of any
    /// generation count) have had their readiness told, still run as far as the supervisor
    /// was told, and were never signalled. A process that ended unreaped counts: the
    /// supervisor cannot know of it yet.
    pub(super) fn pool_short(&self, sup: &Supervisor) -> Option<String> {
        let generation = sup.generation();
        let (mut gave_up, mut held) = (0u32, false);
        for w in sup.workers() {
            if let WorkerState::GaveUp { .. } = w.state {
                gave_up += 1;
                held |= w.generation == generation;
            }
        }
        let ready = self
            .table
            .procs
            .values()
            .filter(|p| {
                p.worker.is_some()
                    && p.ready_told
                    && !matches!(p.main, Main::Reaped(_))
                    && p.stop_deadline.is_none()
                    && (held || p.generation == generation.0)
            })
            .count() as u32;
        let target = sup.target();
        (ready + gave_up < target).then(|| {
            format!(
                "only {ready} workers of generation {} are ready by the world's records ({gave_up} places given up on), target {target}",
                generation.0
            )
        })
    }
}

/// A Ready worker of the generation in force serves a request and is not stopping: one a
/// scale-down could have taken.
fn busy_current(sup: &Supervisor) -> bool {
    let generation = sup.generation();
    sup.workers().any(|w| {
        w.generation == generation && matches!(w.state, WorkerState::Ready { busy } if busy > 0)
    })
}
