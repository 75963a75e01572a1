//! Scaling and idle retirement: the maintenance tick of a dynamic or ondemand pool (grow by
//! the spawn ramp, shrink by one above `max_spare`), the idle timeout, and whether a tick is
//! worth a wake-up at all. This module owns the target and the spawn ramp; it must not
//! spawn or retire a worker itself except for the one idle retirement: it moves the target,
//! and `reconcile` derives the spawns and the scale-down victims from it.

use super::{Phase, Supervisor};
use crate::config::Policy;
use crate::io::*;
use crate::output::*;
use crate::time::Instant;

impl Supervisor {
    /// Keeps the maintenance grid while the policy has a tick (`poll_timeout` shows it only
    /// when the tick is useful). An operator command does not postpone a tick already due
    /// (a stream of commands must not starve scaling).
    pub(super) fn schedule_maintenance(&mut self) {
        let useful = !matches!(self.config.policy, Policy::Static { .. })
            || self.config.idle_timeout.is_some();
        self.next_maintenance = if useful && self.phase == Phase::Running {
            let next = self.now + self.config.maintenance_interval;
            Some(self.next_maintenance.map_or(next, |at| at.min(next)))
        } else {
            None
        };
    }

    /// The pool maintenance tick: at most one retirement, or one step of the spawn ramp.
    pub(super) fn maintain(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let (min, max) = (self.config.policy.min(), self.config.policy.max());
        if let Some((due, slot)) = self.idle_retirement() {
            if due <= self.now {
                self.set_spawn_rate(1, RampReason::Idle);
                self.set_target(self.target - 1);
                self.retire(slot as usize, StopReason::Idle);
                return;
            }
        }
        let threads = u64::from(self.config.threads);
        let idle = self.counts.idle_threads;
        let deficit = match self.config.policy {
            Policy::Static { .. } => 0,
            // Queued connections will take idle threads: each needs one on top of the spares.
            Policy::Dynamic { min_spare, .. } => {
                (u64::from(min_spare) + self.queued).saturating_sub(idle)
            }
            Policy::Ondemand { .. } => self.queued.saturating_sub(idle),
        };
        if deficit > 0 {
            let room = max.saturating_sub(self.target);
            if room == 0 {
                self.set_spawn_rate(1, RampReason::Full);
                return;
            }
            let workers = deficit.div_ceil(threads).min(u64::from(u32::MAX)) as u32;
            let n = self.spawn_rate.min(workers).min(room);
            self.set_target(self.target + n);
            let doubled = self
                .spawn_rate
                .saturating_mul(planted!(self, RampTriple => 3, 2))
                .min(self.config.max_spawn_rate);
            self.set_spawn_rate(doubled, RampReason::Grew);
            return;
        }
        self.set_spawn_rate(1, RampReason::Calm);
        if let Policy::Dynamic { max_spare, .. } = self.config.policy {
            let spare = idle.saturating_sub(self.queued);
            let surplus = planted!(self, SpareAtMax =>
                spare >= u64::from(max_spare),
                spare > u64::from(max_spare));
            if surplus && self.target > min {
                // reconcile retires the best victim: an empty place, a booting worker, else
                // the longest-idle one.
                self.set_target(planted!(self, ScaleDownTwo =>
                    self.target.saturating_sub(2).max(min),
                    self.target - 1));
            }
        }
    }

    /// The longest-idle worker and when the idle timeout retires it, if the pool may lose
    /// it: above `min`, and a dynamic pool keeps `min_spare` idle threads even when they
    /// idle past the timeout (retiring them would only make the next tick spawn again).
    ///
    /// Where each slot is an address, only the highest place may go (the ports in use stay
    /// dense): it retires once it has itself been idle for the timeout, whichever worker
    /// idled longest. O(slots above the highest place) then.
    fn idle_retirement(&self) -> Option<(Instant, u32)> {
        let timeout = self.config.idle_timeout?;
        let (since, slot) = if self.config.slot_addresses {
            let h = self.highest_current_place()?;
            (Supervisor::slot_idle_key(&self.slots[h])?, h as u32)
        } else {
            *self.idle.first()?
        };
        if self.target <= self.config.policy.min() {
            return None;
        }
        let spare_after = (self.counts.idle_threads.saturating_sub(self.queued))
            .saturating_sub(u64::from(self.config.threads));
        let keeps_spares = match self.config.policy {
            Policy::Dynamic { min_spare, .. } => spare_after >= u64::from(min_spare),
            _ => true,
        };
        keeps_spares.then_some((
            since
                + planted!(self, IdleHalf => timeout / 2,
                planted!(self, IdleDouble => timeout * 2, timeout)),
            slot,
        ))
    }

    /// Whether a maintenance tick now would change anything (other than an idle
    /// retirement, which is a deadline of its own), or the listeners' accept queues must be
    /// sampled. Depends on the state only, never on the time: it is what `maintain` would
    /// do, read without doing it.
    pub(crate) fn maintenance_useful(&self) -> bool {
        if self.phase != Phase::Running {
            return false;
        }
        // A calm tick puts the ramp back to 1.
        if self.spawn_rate > 1 {
            return true;
        }
        let (min, max) = (self.config.policy.min(), self.config.policy.max());
        let idle = self.counts.idle_threads;
        let room = self.target < max;
        match self.config.policy {
            Policy::Static { .. } => false,
            Policy::Dynamic {
                min_spare,
                max_spare,
                ..
            } => {
                let short = u64::from(min_spare) + self.queued > idle;
                let surplus = idle.saturating_sub(self.queued) > u64::from(max_spare);
                (short && room) || (surplus && self.target > min) || self.demand_hidden(room)
            }
            Policy::Ondemand { .. } => (self.queued > idle && room) || self.demand_hidden(room),
        }
    }

    /// The shell learns of connections waiting in the accept queues only by sampling them
    /// when it wakes up (`Input::Backlog`), so a pool that may still grow keeps ticking
    /// while such a queue could be building unseen: when connections were queued at the
    /// last sample (until the queue is seen empty), when no thread is idle (nothing would
    /// take a new connection, so no load report would tell), or while a Ready worker has
    /// never reported its load (a program that reports none looks idle forever; the queue
    /// is then the only sign of demand). Otherwise every connection lands on an idle thread
    /// of a worker that reports its load, and that report is the input that wakes the pool.
    fn demand_hidden(&self, room: bool) -> bool {
        self.queued > 0 || (room && (self.counts.idle_threads == 0 || self.counts.unreported > 0))
    }

    /// The maintenance deadline to show the driver: the next tick on the grid if a tick
    /// could change anything, else the grid point of the next idle retirement, else none:
    /// an idle pool sleeps until an input (load, backlog, exit, readiness, a command)
    /// changes what a tick would do.
    #[inline]
    pub(crate) fn maintenance_wakeup(&self) -> Option<Instant> {
        let next = self.next_maintenance?;
        if self.maintenance_useful() {
            return Some(next);
        }
        let (due, _) = self.idle_retirement()?;
        Some(self.grid_at_or_after(next, due))
    }

    /// The first point of the maintenance grid through `next` at or after `t`.
    pub(super) fn grid_at_or_after(&self, next: Instant, t: Instant) -> Instant {
        if t <= next {
            return next;
        }
        let interval = u128::from(crate::time::duration_nanos(
            self.config.maintenance_interval,
        ));
        let steps = u128::from(t.as_nanos() - next.as_nanos()).div_ceil(interval.max(1));
        let nanos = u128::from(next.as_nanos()) + steps * interval;
        Instant::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Every change of the ramp goes through here, so the trace shows each one (and only
    /// changes: a tick that keeps the rate says nothing).
    pub(super) fn set_spawn_rate(&mut self, rate: u32, reason: RampReason) {
        if rate != self.spawn_rate {
            self.spawn_rate = rate;
            self.event(Event::SpawnRamp { rate, reason });
        }
    }

    pub(super) fn set_target(&mut self, to: u32) {
        if to != self.target {
            self.event(Event::Scaled {
                from: self.target,
                to,
            });
            self.target = to;
        }
    }
}
