//! Timers and deadlines: the deadline sources (`Timer`), every slot's deadline (backoff,
//! boot, heartbeat, request, ladder) derived from its facts and the config in force, and
//! `run_timers`, which fires whatever is due after an input, source by source. This module
//! owns what a deadline is and what firing it means; it must not keep a deadline of its own
//! that the facts do not imply (the timer index is only a cache of `slot_deadline`), so a
//! reload or a heartbeat moves every deadline at once.

use super::slot::{Slot, SlotState, Worker};
use super::{Phase, Supervisor};
use crate::config::Readiness;
use crate::io::*;
use crate::output::*;
use crate::time::Instant;

/// The supervisor's deadline sources. Each derives its deadline from the state, so nothing
/// is stored twice: `poll_timeout` shows the earliest of them, and `run_timers` serves them
/// in the order of [`Timer::ALL`]. The order is part of the behaviour: a slot's deadline may
/// record a death that starts a stop (rolling an upgrade back) or a crash loop, which the
/// sources served after it then see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// The earliest slot deadline (backoff, boot, heartbeat, request, ladder): the first
    /// key of the timer index.
    Slot,
    /// The live upgrade's deadline: a successor not Ready by then is rolled back.
    Upgrade,
    /// The end of the crash-loop window: the pool no longer counts as crash-looping.
    CrashLoopEnd,
    /// The pool maintenance tick, when it is worth a wake-up (`maintenance_wakeup`).
    Maintenance,
}

impl Timer {
    /// Every source, in the order `run_timers` serves them.
    pub(super) const ALL: [Timer; 4] = [
        Timer::Slot,
        Timer::Upgrade,
        Timer::CrashLoopEnd,
        Timer::Maintenance,
    ];
}

/// What a slot's deadline means when it fires.
enum Due {
    /// The backoff ended: refill the slot.
    Respawn,
    /// The next signal of a stopping worker's ladder.
    Ladder,
    /// Retired while spawning, and the spawn never answered.
    AbandonSpawn,
    /// The spawn never answered: a failed start.
    SpawnTimeout,
    /// A watchdog fired: retire the worker for this reason.
    Retire(StopReason),
}

impl Supervisor {
    /// When `timer` fires next, as the driver is shown it; `None` if it is not armed.
    pub(super) fn deadline(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Slot => self.timers.first().map(|t| t.0),
            Timer::Upgrade => self.upgrade_deadline(),
            Timer::CrashLoopEnd => self.crash_loop_end(),
            Timer::Maintenance => self.maintenance_wakeup(),
        }
    }

    /// Fires every deadline due at `now`, source by source. `announced` is the maintenance
    /// deadline `poll_timeout` showed before this input.
    pub(super) fn run_timers(&mut self, announced: Option<Instant>) {
        for timer in Timer::ALL {
            match timer {
                Timer::Slot => self.run_slot_timers(),
                Timer::Upgrade => {
                    if self.is_due(Timer::Upgrade) {
                        self.rollback(RollbackReason::Timeout);
                    }
                }
                Timer::CrashLoopEnd => {
                    if self.is_due(Timer::CrashLoopEnd) {
                        self.crash_looping = false;
                        self.event(Event::CrashLoopEnded);
                    }
                }
                Timer::Maintenance => self.run_maintenance_timer(announced),
            }
        }
    }

    fn is_due(&self, timer: Timer) -> bool {
        self.deadline(timer).is_some_and(|d| d <= self.now)
    }

    /// Fires every slot deadline due at `now`.
    fn run_slot_timers(&mut self) {
        // Bounded: a slot fires at most three times at one instant (spawn timeout, zero
        // backoff, respawn) and then re-arms strictly later.
        let limit = 3 * self.slots.len() + 8;
        for _ in 0..limit {
            let Some(&(at, i)) = self.timers.first().filter(|t| t.0 <= self.now) else {
                break;
            };
            let i = i as usize;
            self.timers.remove(&(at, i as u32));
            self.slots[i].deadline = None;
            if self
                .slot_deadline(&self.slots[i])
                .is_some_and(|d| d <= self.now)
            {
                self.on_slot_deadline(i);
            }
            self.rearm(i);
        }
        debug_assert!(
            self.timers.first().is_none_or(|t| t.0 > self.now),
            "a slot timer stayed expired after the timer pass"
        );
    }

    /// Runs the maintenance tick if one is due. Judged by the grid (`next_maintenance`), not
    /// by `deadline(Timer::Maintenance)`: a tick hidden from the driver is still on the grid.
    fn run_maintenance_timer(&mut self, announced: Option<Instant>) {
        let Some(next) = self.next_maintenance.filter(|&d| d <= self.now) else {
            return;
        };
        // Announced and due (the driver may wake late): tick now, as always. Not
        // announced: no tick on the grid since `next` could have changed anything, so
        // each was a no-op; only one falling exactly now runs (after the input, like
        // every timer), else the grid moves to its next point.
        let tick_now = announced.is_some_and(|a| a <= self.now)
            || self.grid_at_or_after(next, self.now) == self.now;
        if tick_now {
            self.next_maintenance = None;
            self.maintain();
            self.schedule_maintenance();
        } else {
            self.next_maintenance = Some(self.grid_at_or_after(next, self.now));
        }
    }

    /// Fires slot `i`'s deadline, which is due.
    fn on_slot_deadline(&mut self, i: usize) {
        match self.slot_due(i) {
            Due::Respawn => {
                // Refill this very slot so its backoff history follows the restart.
                self.detach(i);
                self.slots[i].state = SlotState::Empty;
                self.attach(i);
                if self.phase == Phase::Running
                    && i < self.slot_limit as usize
                    && self.may_fill(i)
                    && self.wants_spawn()
                {
                    self.spawn(i);
                }
            }
            Due::Ladder => self.fire_ladder(i),
            Due::AbandonSpawn => {
                self.detach(i);
                self.slots[i].state = SlotState::Empty;
                self.attach(i);
            }
            Due::SpawnTimeout => {
                // The fork never answered: a failed start. A late `Spawned` is killed.
                self.slots[i].last_stop = Some(StopReason::BootTimeout);
                self.failed_start(i, None, DeathCause::Boot);
            }
            Due::Retire(reason) => self.retire(i, reason),
        }
    }

    /// What slot `i`'s due deadline means, read from its state.
    fn slot_due(&self, i: usize) -> Due {
        let now = self.now;
        match &self.slots[i].state {
            SlotState::Backoff { .. } => Due::Respawn,
            SlotState::Worker(w) => match (&w.stop, w.pid) {
                // Retired while spawning and the spawn never answered.
                (Some(_), None) => Due::AbandonSpawn,
                (Some(_), Some(_)) => Due::Ladder,
                (None, None) => Due::SpawnTimeout,
                (None, Some(_)) if !w.ready => Due::Retire(StopReason::BootTimeout),
                (None, Some(_)) if self.heartbeat_deadline(w).is_some_and(|d| d <= now) => {
                    Due::Retire(StopReason::HeartbeatTimeout)
                }
                (None, Some(_)) => {
                    debug_assert!(self.request_deadline(w).is_some_and(|d| d <= now));
                    Due::Retire(StopReason::RequestTimeout)
                }
            },
            other => unreachable!("slot {i} timer fired in state {other:?}"),
        }
    }

    /// The slot's next deadline, derived from its facts and the config in force.
    pub(crate) fn slot_deadline(&self, slot: &Slot) -> Option<Instant> {
        match &slot.state {
            SlotState::Empty | SlotState::GaveUp { .. } => None,
            SlotState::Backoff { until, .. } => Some(*until),
            SlotState::Worker(w) => match &w.stop {
                Some(stop) => match (w.pid, &stop.pos) {
                    (Some(_), Some(pos)) => pos.next,
                    // Still spawning: wait for the spawn to answer, within the boot timeout.
                    _ if w.fork_handed_out => Some(self.boot_deadline(w)),
                    _ => None,
                },
                None if w.pid.is_none() && !w.fork_handed_out => None,
                None if w.pid.is_none() || !w.ready => Some(self.boot_deadline(w)),
                None => [self.heartbeat_deadline(w), self.request_deadline(w)]
                    .into_iter()
                    .flatten()
                    .min(),
            },
        }
    }

    pub(crate) fn boot_deadline(&self, w: &Worker) -> Instant {
        w.spawned_at
            + planted!(self, BootThird => self.config.boot_timeout / 3, self.config.boot_timeout)
    }

    pub(crate) fn heartbeat_deadline(&self, w: &Worker) -> Option<Instant> {
        let timeout = w.heartbeat_timeout?;
        if !(w.ready && w.pid.is_some()) {
            return None;
        }
        // Ready at spawn says nothing about the program being up (AtSpawn readiness): its
        // first heartbeat may take as long as a boot. After that, or after a real READY, the
        // heartbeat timeout applies.
        let first_beat_grace = !w.beat_seen && self.config.readiness == Readiness::AtSpawn;
        let allowed = if first_beat_grace {
            timeout.max(self.config.boot_timeout)
        } else {
            timeout
        };
        let since = planted!(self, AbsenceIgnored =>
            w.last_heartbeat,
            w.last_heartbeat.max(self.back_at));
        Some(since + planted!(self, WatchdogTriple => allowed * 3, allowed))
    }

    pub(crate) fn request_deadline(&self, w: &Worker) -> Option<Instant> {
        let timeout = self.config.request_timeout?;
        Some(w.oldest_busy_since? + planted!(self, RequestHalf => timeout / 2, timeout))
    }
}
