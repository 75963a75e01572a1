//! The slot-address oracle (`Oracle::SlotAddresses`): where each slot is an address
//! (`Config::slot_addresses`, the shell's per-worker ports), the slots in use stay dense,
//! judged by the judge's own records (the spawns performed and their answers, the exits
//! handed in, the retirements), never by the machine's slots (ARCHITECTURE §10, slot
//! addresses):
//!
//! - a spawn goes to a slot below the target (the highest target since the last complete
//!   drain: a spawn decided before a later timer of the same drain lowered it is no fault);
//! - a scale-down or an idle retirement takes the highest slot: no worker of the current
//!   generation that was not asked to stop lives in a higher one;
//! - after a complete drain of a running pool, no worker of the current generation that
//!   was not asked to stop lives at or above the target (the target can drop while lower
//!   slots drain: the count is then right, but the highest slot is still the one to go);
//! - `ReleaseSlot` names a slot at or above the target with no process and no fork in
//!   flight, and once the pool is settled every slot spawned in since its last release that
//!   is at or above the target and holds nothing has been released;
//! - a slot whose address could not be bound is no death of the program: no backoff by
//!   young deaths is scheduled for it (its retry delay is judged by `restarts.rs`).

use std::collections::BTreeSet;

use drover_machine::{
    Action, Event, Input, Phase, SpawnError, StopReason, Supervisor, UpgradeState, WorkerId,
};

use super::{Judge, Oracle};

#[derive(Debug, Default)]
pub(super) struct SlotBooks {
    /// Slots spawned in since their last `ReleaseSlot`: their address is open.
    opened: BTreeSet<u32>,
    /// The highest target since the last complete drain.
    target_hi: u32,
    /// Slots whose address failed in the `handle` whose drain is in progress.
    address_failed: BTreeSet<u32>,
}

impl Judge {
    fn slot_addresses(sup: &Supervisor) -> bool {
        sup.config().slot_addresses
    }

    /// A process or a fork in flight in `slot`, by the judge's records.
    fn slot_held(&self, slot: u32) -> bool {
        self.table.procs.values().any(|p| p.worker.slot == slot)
            || self.table.spawning.keys().any(|w| w.slot == slot)
    }

    pub(super) fn judge_slot_input(&mut self, sup: &Supervisor, input: &Input) {
        if let Input::SpawnFailed {
            worker,
            error: SpawnError::Address(_),
        } = *input
        {
            if Self::slot_addresses(sup) {
                self.books.slots.address_failed.insert(worker.slot);
            }
        }
    }

    pub(super) fn judge_slot_action(&mut self, sup: &Supervisor, action: &Action) {
        if !Self::slot_addresses(sup) {
            return;
        }
        let now = self.now;
        let target = sup.target();
        match *action {
            Action::Spawn { worker, .. } => {
                let books = &mut self.books.slots;
                books.opened.insert(worker.slot);
                // A new attempt: a failure of its own (a fork short of memory) may count.
                books.address_failed.remove(&worker.slot);
                let hi = books.target_hi.max(target);
                if worker.slot >= hi {
                    self.complain(
                        Oracle::SlotAddresses,
                        format!(
                            "{worker} was spawned at {now} in slot {}, at or above the target {hi}: where each slot is an address the pool fills only slots 0..target",
                            worker.slot
                        ),
                    );
                }
            }
            Action::ReleaseSlot { slot } => {
                self.books.slots.opened.remove(&slot);
                let why = if slot < target {
                    Some(format!("it is below the target {target}"))
                } else if self.slot_held(slot) {
                    Some("a process (or a fork in flight) is still in it".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    self.complain(
                        Oracle::SlotAddresses,
                        format!("slot {slot}'s address was released at {now}, but {why}"),
                    );
                }
            }
            _ => {}
        }
    }

    pub(super) fn judge_slot_event(&mut self, sup: &Supervisor, event: &Event) {
        if !Self::slot_addresses(sup) {
            return;
        }
        let now = self.now;
        match *event {
            Event::Retiring {
                worker,
                reason: reason @ (StopReason::ScaleDown | StopReason::Idle),
            } => {
                if let Some(higher) = self.higher_place(sup, worker) {
                    self.complain(
                        Oracle::SlotAddresses,
                        format!(
                            "{worker} was retired for {} at {now} while {higher}, of the current generation and not asked to stop, lives in a higher slot: where each slot is an address the highest slot goes first",
                            reason.name()
                        ),
                    );
                }
            }
            Event::RestartScheduled {
                slot,
                delay,
                young_deaths,
                ..
            } if self.books.slots.address_failed.contains(&slot) => {
                self.complain(
                    Oracle::SlotAddresses,
                    format!(
                        "slot {slot}'s address could not be bound at {now}, and a restart backoff of {delay:?} was scheduled for young death {young_deaths}: a taken port is not the program's failure and never counts towards a backoff or a crash loop"
                    ),
                );
            }
            _ => {}
        }
    }

    /// A worker of the current generation, not asked to stop, in a slot above `worker`'s.
    fn higher_place(&self, sup: &Supervisor, worker: WorkerId) -> Option<WorkerId> {
        let generation = sup.generation().0;
        self.watch
            .workers
            .iter()
            .find(|(w, t)| {
                w.slot > worker.slot && t.generation == generation && t.retired.is_none()
            })
            .map(|(w, _)| *w)
    }

    pub(super) fn judge_slot_handled(&mut self, sup: &Supervisor) {
        let books = &mut self.books.slots;
        books.target_hi = books.target_hi.max(sup.target());
    }

    pub(super) fn judge_slot_drained(&mut self, sup: &Supervisor, complete: bool) {
        let books = &mut self.books.slots;
        books.address_failed.clear();
        if complete {
            books.target_hi = sup.target();
        }
        if !complete || !Self::slot_addresses(sup) || self.done() || sup.phase() != Phase::Running {
            return;
        }
        let target = sup.target();
        let generation = sup.generation().0;
        let above =
            self.watch.workers.iter().find(|(w, t)| {
                w.slot >= target && t.generation == generation && t.retired.is_none()
            });
        if let Some((worker, _)) = above {
            let what = format!(
                "{worker} lives in slot {} at {}, at or above the target {target}, and was not asked to stop: where each slot is an address the slots in use are 0..target, so the highest goes even when workers draining below make the count right",
                worker.slot, self.now
            );
            self.complain(Oracle::SlotAddresses, what);
        }
    }

    /// After a world step, in a settled pool: every slot at or above the target that was
    /// spawned in and holds nothing has been released.
    pub(super) fn judge_slot_step(&mut self, sup: &Supervisor) {
        if !Self::slot_addresses(sup)
            || self.done()
            || sup.phase() != Phase::Running
            || sup.upgrade_state() != UpgradeState::Idle
            || !sup.is_settled()
        {
            return;
        }
        let target = sup.target();
        let kept = self
            .books
            .slots
            .opened
            .range(target..)
            .copied()
            .find(|&s| !self.slot_held(s));
        if let Some(slot) = kept {
            let now = self.now;
            self.complain(
                Oracle::SlotAddresses,
                format!(
                    "slot {slot} is at or above the target {target} and empty at {now} in a settled pool, but its address was never released"
                ),
            );
        }
    }
}
