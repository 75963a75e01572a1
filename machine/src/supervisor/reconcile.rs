//! Reconcile, spawn, retire and the kill ladder: `reconcile` compares the wanted pool (the
//! target, the generation, the surge and unavailability bounds) with the slots and queues
//! the next step; `retire` starts a worker's stop and `fire_ladder` sends its signals. This
//! module owns the `Spawn` actions, the ladder's `Signal`s and the `Exit`; it must not
//! decide how many workers the pool wants (`scaling`, `commands`) or that a worker failed
//! (`inputs`, `timers`): it only closes the gap between wanted and actual.

use super::index::{RetireKey, RANK_IDLE};
use super::slot::{SlotState, Stop, Worker};
use super::{Phase, Supervisor, UpgradeState};
use crate::config::Ladder;
use crate::io::*;
use crate::ladder::LadderPos;
use crate::output::*;
use crate::time::Instant;

impl Supervisor {
    /// Places the pool may fill now: the target, plus the surge while old generations are
    /// being replaced.
    fn wanted_places(&self) -> u32 {
        let rolling = self.counts.filled > self.counts.filled_current;
        self.target
            + if rolling {
                planted!(self, SurgePlusOne => self.config.max_surge + 1, self.config.max_surge)
            } else {
                0
            }
    }

    pub(super) fn wants_spawn(&self) -> bool {
        self.counts.filled_current < self.target && self.counts.filled < self.wanted_places()
    }

    /// Whether slot `i` may be filled now. Where each slot is an address, only below the
    /// target: a place above it would be a port the load balancer is not meant to use, and
    /// a worker replaced in a rollout waits for its own slot to empty.
    pub(super) fn may_fill(&self, i: usize) -> bool {
        !self.config.slot_addresses || (i as u32) < self.target
    }

    /// The lowest slot at or above the target whose address is open and whose place is
    /// empty: its address is no longer needed. O(slots draining above the target).
    fn releasable(&self) -> Option<u32> {
        let gone = |s: u32| matches!(self.slots[s as usize].state, SlotState::Empty);
        self.addressed
            .range(self.target..)
            .copied()
            .find(|&s| gone(s))
    }

    /// Compares wanted with actual state and queues the next step, if any.
    pub(super) fn reconcile(&mut self) {
        match self.phase {
            Phase::Running => {}
            Phase::Stopping { .. } | Phase::Handover => return self.exit_when_drained(),
            Phase::Exited => return,
        }
        if let Some(slot) = self.releasable() {
            self.addressed.remove(&slot);
            self.queue.push_back(Action::ReleaseSlot { slot });
            return;
        }
        if self.wants_spawn() {
            if let Some(&i) = self.free.first().filter(|&&i| self.may_fill(i as usize)) {
                return self.spawn(i as usize);
            }
        }
        // Replace an earlier generation: places with no process go at once (whichever
        // generation they are of); a Ready worker only while capacity stays above
        // target - max_unavailable. A place of the current generation given up on holds the
        // rollout: the old workers keep serving rather than be replaced by a release that
        // exits unrecoverably, until the next restart or reload retries it.
        if let Some(&(generation, slot)) = self.places.first() {
            if generation < self.generation {
                return self.retire(slot as usize, StopReason::Restart);
            }
        }
        if let Some(&key) = self.retire_order.first() {
            if key.generation < self.generation {
                let floor = self.target.saturating_sub(self.config.max_unavailable);
                if key.rank < RANK_IDLE {
                    return self.retire(key.slot as usize, StopReason::Restart);
                }
                if planted!(self, UnavailableIgnored => true, self.counts.ready > floor) {
                    self.rollout_held = false;
                    return self.retire(key.slot as usize, StopReason::Restart);
                }
                if !self.rollout_held {
                    self.rollout_held = true;
                    self.event(Event::RolloutHeld {
                        ready: self.counts.ready,
                        floor,
                        surge: self.counts.filled.saturating_sub(self.target),
                    });
                }
            }
        }
        // Where each slot is an address, every place of the current generation at or above
        // the target goes, even when the count is right: workers still draining in lower
        // slots (a stop that takes its ladder's time) leave room below, refilled there. A
        // surplus always holds such a place, so this is also the plain scale-down.
        if planted!(self, ScaleDownIgnoresSlots => false, self.config.slot_addresses) {
            if let Some(i) = self.highest_retirable_above_target() {
                self.scale_down_slot(i);
            }
            // Any surplus left is places that high not retirable yet: they are waited for,
            // never traded for a lower slot.
            return;
        }
        if self.counts.filled_current > self.target {
            let current = RetireKey {
                generation: self.generation,
                rank: 0,
                since: Instant::ZERO,
                slot: 0,
            };
            let victims = || self.retire_order.range(current..);
            if let Some(&key) = planted!(self, ScaleDownBusy =>
                victims().find(|k| k.rank == super::index::RANK_BUSY).or_else(|| victims().next()),
                victims().next())
            {
                self.event(Event::ScaleDownChose {
                    slot: key.slot,
                    victim: key.victim(),
                });
                self.retire(key.slot as usize, StopReason::ScaleDown);
            }
        }
    }

    /// The highest slot at or above the target holding a place of the current generation
    /// that can be asked to stop now, where each slot is an address: the ports in use stay
    /// `base..base+target`. A place whose worker is still spawning (retirable on `Spawned`)
    /// or already stopping for a failure (its place goes with its exit) is passed over:
    /// every place that high goes, so a lower one is no wrong choice. O(slots above the
    /// target).
    fn highest_retirable_above_target(&self) -> Option<usize> {
        (self.target as usize..self.slots.len()).rev().find(|&i| {
            self.slots[i].retire_key.is_some()
                && self.slot_counts(&self.slots[i]).filled_current == 1
        })
    }

    /// Retires the place in slot `i` for a scale-down, one at a time (`reconcile` runs
    /// again after each step).
    fn scale_down_slot(&mut self, i: usize) {
        let key = self.slots[i].retire_key.expect("a retirable slot");
        self.event(Event::ScaleDownChose {
            slot: key.slot,
            victim: key.victim(),
        });
        self.retire(i, StopReason::ScaleDown);
    }

    /// The highest slot holding a place of the current generation.
    pub(super) fn highest_current_place(&self) -> Option<usize> {
        (0..self.slots.len())
            .rev()
            .find(|&i| self.slot_counts(&self.slots[i]).filled_current == 1)
    }

    /// Exits once no worker process is left and no successor being killed is awaited.
    fn exit_when_drained(&mut self) {
        let waiting_successor = matches!(self.upgrade, UpgradeState::Killing { .. });
        if self.counts.live == 0 && self.counts.spawning == 0 && !waiting_successor {
            self.phase = Phase::Exited;
            self.next_maintenance = None;
            let code = self.exit_code.unwrap_or(0);
            self.queue.push_back(Action::Exit { code });
        }
    }

    pub(super) fn spawn(&mut self, i: usize) {
        debug_assert!(i < self.slot_limit as usize, "spawn above the slot limit");
        let limit = self.config.max_requests.map(|max| {
            let jitter = match self.config.max_requests_jitter {
                0 => 0,
                j => self.rng.below(j + 1),
            };
            max.saturating_add(jitter)
        });
        self.detach(i);
        let slot = &mut self.slots[i];
        slot.incarnation += 1;
        slot.state = SlotState::Worker(Box::new(Worker {
            generation: self.generation,
            pid: None,
            fork_handed_out: false,
            spawned_at: self.now,
            ready: false,
            last_heartbeat: self.now,
            heartbeat_timeout: self.config.heartbeat_timeout,
            beat_seen: false,
            beat_gap: None,
            beat_pace: None,
            busy: 0,
            load_seen: false,
            oldest_busy_since: None,
            idle_since: None,
            requests: 0,
            request_limit: limit,
            stop: None,
            main_status: None,
        }));
        self.attach(i);
        if self.config.slot_addresses {
            self.addressed.insert(i as u32);
        }
        self.queue.push_back(Action::Spawn {
            worker: self.id_of(i),
            generation: self.generation,
        });
    }

    /// Asks the worker in slot `i` to stop for `reason`, or empties a place with no process.
    /// A worker already stopping keeps its ladder (a stop never resets it).
    pub(super) fn retire(&mut self, i: usize, reason: StopReason) {
        self.retire_with(i, reason, false);
    }

    /// `retire`, entering the ladder at its immediate stage when `immediate` (a stop-now
    /// sends the immediate stage's signal first, not TERM then QUIT in one breath).
    pub(super) fn retire_with(&mut self, i: usize, reason: StopReason, immediate: bool) {
        match &self.slots[i].state {
            SlotState::Empty => return,
            SlotState::Backoff { .. } | SlotState::GaveUp { .. } => {
                // A place given up on that the pool empties (a rollout replacing it, a
                // scale-down) is retried afresh when next filled, as a restart retries it.
                if matches!(self.slots[i].state, SlotState::GaveUp { .. }) {
                    self.slots[i].young_deaths = 0;
                }
                self.detach(i);
                self.slots[i].state = SlotState::Empty;
                self.attach(i);
                return;
            }
            SlotState::Worker(w) if w.stop.is_some() => return,
            SlotState::Worker(_) => {}
        }
        let id = self.id_of(i);
        self.event(Event::Retiring { worker: id, reason });
        self.detach(i);
        self.slots[i].last_stop = Some(reason);
        let now = self.now;
        let ladder = self.config.ladder.clone();
        let w = self.worker_mut(i);
        let pos = w
            .pid
            .map(|_| LadderPos::enter(entry_stage(reason, immediate, &ladder), now));
        w.stop = Some(Stop {
            reason,
            ladder,
            pos,
            immediate,
        });
        self.attach(i);
        #[cfg(feature = "planted")]
        self.plant_ladder_entry(i);
        self.fire_ladder(i);
    }

    /// Planted bugs of where a stop enters its ladder (`LadderSkipFirst`,
    /// `ImmediateGraceful`): the ladder just entered by `entry_stage` is entered again at
    /// the wrong stage before its first signal, a step of its own so that the shipped
    /// `retire_with` and `on_spawned` stay as they are.
    #[cfg(feature = "planted")]
    pub(super) fn plant_ladder_entry(&mut self, i: usize) {
        use crate::planted::Plant;
        let skip_first = self.planted(Plant::LadderSkipFirst);
        let immediate_graceful = self.planted(Plant::ImmediateGraceful);
        let now = self.now;
        self.detach(i);
        if let Some(stop) = &mut self.worker_mut(i).stop {
            let last = stop.ladder.stages.len() - 1;
            let stage = match stop.immediate || stop.reason.starts_immediate() {
                true if immediate_graceful => Some(0),
                false if skip_first => Some(1.min(last)),
                _ => None,
            };
            if let (Some(pos), Some(stage)) = (&mut stop.pos, stage) {
                *pos = LadderPos::enter(stage, now);
            }
        }
        self.attach(i);
    }

    /// Moves a stopping worker to its ladder's immediate stage.
    pub(super) fn escalate(&mut self, i: usize) {
        // On a late wake-up the ladder may be behind: catch up first, so a worker already
        // past the immediate stage's start is not sent back to it (which would delay KILL).
        self.fire_ladder(i);
        let now = self.now;
        let SlotState::Worker(w) = &mut self.slots[i].state else {
            return;
        };
        let Some(stop) = &mut w.stop else { return };
        let stage = stop.ladder.immediate_from;
        let Some(pos) = &stop.pos else {
            // No pid yet: remember, so the ladder starts at the immediate stage on `Spawned`.
            stop.immediate = true;
            return;
        };
        if pos.stage >= stage {
            return;
        }
        self.detach(i);
        let w = self.worker_mut(i);
        let stop = w.stop.as_mut().expect("checked above");
        stop.pos
            .as_mut()
            .expect("checked above")
            .escalate(stage, now);
        self.attach(i);
        self.fire_ladder(i);
    }

    /// Sends the ladder's signal if one is due now.
    pub(super) fn fire_ladder(&mut self, i: usize) {
        let now = self.now;
        let id = self.id_of(i);
        let SlotState::Worker(w) = &self.slots[i].state else {
            return;
        };
        let (Some(pid), Some(stop)) = (w.pid, &w.stop) else {
            return;
        };
        if stop
            .pos
            .as_ref()
            .and_then(|p| p.next)
            .is_none_or(|t| t > now)
        {
            return;
        }
        self.detach(i);
        let stop = self.worker_mut(i).stop.as_mut().expect("checked above");
        let reason = stop.reason;
        let pos = stop.pos.as_mut().expect("checked above");
        let signal = pos.fire(&stop.ladder, now);
        self.attach(i);
        if let Some(signal) = signal {
            self.queue.push_back(Action::Signal {
                worker: id,
                pid,
                signal,
                reason,
            });
        }
    }
}

/// Where on its ladder a stop for `reason` begins.
pub(super) fn entry_stage(reason: StopReason, immediate: bool, ladder: &Ladder) -> usize {
    if immediate || reason.starts_immediate() {
        ladder.immediate_from
    } else {
        0
    }
}
