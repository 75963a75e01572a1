//! Queries: what the supervisor tells about itself for status reports, tests and the
//! simulator's checks (phase, target, counters, the workers as `WorkerView`s, whether the
//! pool is settled). This module only reads: nothing here may change the state, so a query
//! between two inputs never changes what the next `poll_action` or `poll_timeout` returns.

use super::slot::SlotState;
use super::{Counters, Phase, Supervisor, UpgradeState};
use crate::config::Config;
use crate::io::*;
use crate::time::Instant;

/// A worker as status reports show it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
    /// Its slot and incarnation.
    pub id: WorkerId,
    /// Its process, once spawned.
    pub pid: Option<Pid>,
    /// The configuration generation it was spawned for.
    pub generation: Generation,
    /// Where it stands.
    pub state: WorkerState,
    /// Requests served, as last reported.
    pub requests: u64,
    /// Unexpected deaths and failure kills over the slot's life.
    pub restarts: u32,
    /// Why the slot's last worker was stopped, if one was.
    pub last_stop: Option<StopReason>,
    /// When its process came to exist (its uptime counts from here), once spawned.
    pub spawned_at: Option<Instant>,
    /// Its last heartbeat, or when its watchdog started: set while it is Ready.
    pub last_heartbeat: Option<Instant>,
    /// It reported its load at least once: its busy threads and requests are its own
    /// report, not a default.
    pub reports_load: bool,
}

/// What a slot holds, as status reports show it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// Waiting out the restart backoff.
    Backoff {
        /// When the slot is refilled.
        until: Instant,
    },
    /// Left empty after an unrecoverable exit, until a restart or reload.
    GaveUp {
        /// The unrecoverable exit code.
        code: i32,
    },
    /// A `Spawn` was emitted; its answer has not come.
    Spawning,
    /// The process exists and is not Ready yet.
    Booting,
    /// Serving; idle when no thread is busy.
    Ready {
        /// Threads serving a request, as last reported.
        busy: u32,
    },
    /// Asked to stop; its kill ladder runs.
    Stopping {
        /// Why it is stopped.
        reason: StopReason,
    },
}

impl WorkerState {
    /// The state's name in status output (`idle` and `busy` for Ready).
    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Backoff { .. } => "backoff",
            WorkerState::GaveUp { .. } => "gave-up",
            WorkerState::Spawning => "spawning",
            WorkerState::Booting => "booting",
            WorkerState::Ready { busy: 0 } => "idle",
            WorkerState::Ready { .. } => "busy",
            WorkerState::Stopping { .. } => "stopping",
        }
    }
}

impl Supervisor {
    /// Running, stopping, handing over or exited.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The config in force (reloads and scale commands change it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current configuration generation.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// How many workers the pool wants now.
    pub fn target(&self) -> u32 {
        self.target
    }

    /// Where a live upgrade stands.
    pub fn upgrade_state(&self) -> UpgradeState {
        self.upgrade
    }

    /// Too many deaths within the restart intensity window.
    pub fn is_crash_looping(&self) -> bool {
        self.crash_looping
    }

    /// Processes that exist (spawned and not yet reaped).
    pub fn live_workers(&self) -> u32 {
        self.counts.live
    }

    /// Ready workers that are not stopping.
    pub fn ready_workers(&self) -> u32 {
        self.counts.ready
    }

    /// What was done so far: spawns, exits and retirements by reason, signals, restarts,
    /// upgrades, requests served (for metrics; no decision reads them).
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The time of the last input: what the supervisor's timers are measured against.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The current spawn ramp step (1, 2, 4 … up to `max_spawn_rate`).
    pub fn spawn_rate(&self) -> u32 {
        self.spawn_rate
    }

    /// The pool is where it wants to be: running, Ready workers of the current generation
    /// fill the target, and no earlier generation is left. A place given up on counts as
    /// filled (it is left empty on purpose); one of the current generation holds a rolling
    /// restart by design, and then Ready workers of any generation count. Workers draining
    /// after retirement do not matter. This is what "the pool is ready" means for a
    /// successor in a live upgrade and for a settled liveness check. O(workers).
    pub fn is_settled(&self) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        let held = self.slots.iter().any(|slot| {
            matches!(slot.state, SlotState::GaveUp { generation, .. } if generation == self.generation)
        });
        let mut filled = 0;
        for w in self.workers() {
            match w.state {
                WorkerState::Stopping { .. } => {}
                _ if w.generation < self.generation && !held => return false,
                WorkerState::Ready { .. } | WorkerState::GaveUp { .. } => filled += 1,
                _ => {}
            }
        }
        filled >= self.target
    }

    /// Every occupied slot, in slot order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerView> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, slot)| {
            let id = WorkerId {
                slot: i as u32,
                incarnation: slot.incarnation,
            };
            let (pid, generation, state, requests) = match &slot.state {
                SlotState::Empty => return None,
                SlotState::Backoff { generation, until } => {
                    (None, *generation, WorkerState::Backoff { until: *until }, 0)
                }
                SlotState::GaveUp { generation, code } => {
                    (None, *generation, WorkerState::GaveUp { code: *code }, 0)
                }
                SlotState::Worker(w) => {
                    let state = match (&w.stop, w.pid, w.ready) {
                        (Some(stop), _, _) => WorkerState::Stopping {
                            reason: stop.reason,
                        },
                        (None, None, _) => WorkerState::Spawning,
                        (None, Some(_), false) => WorkerState::Booting,
                        (None, Some(_), true) => WorkerState::Ready { busy: w.busy },
                    };
                    (w.pid, w.generation, state, w.requests)
                }
            };
            let process = match &slot.state {
                SlotState::Worker(w) if w.pid.is_some() => Some(w),
                _ => None,
            };
            Some(WorkerView {
                id,
                pid,
                generation,
                state,
                requests,
                restarts: slot.restarts,
                last_stop: slot.last_stop,
                spawned_at: process.map(|w| w.spawned_at),
                last_heartbeat: process.filter(|w| w.ready).map(|w| w.last_heartbeat),
                reports_load: process.is_some_and(|w| w.load_seen),
            })
        })
    }
}
