//! `check_invariants`: recomputes every derived index from the slots and checks the safety
//! properties of docs/ARCHITECTURE.md §4 that the machine alone can see. O(workers); runs after every
//! `handle` in debug builds and after every step of the simulator. This module only reads:
//! it must not repair what it finds (a violation is a bug to report) and must not allocate
//! on the passing path, as it runs on every step.

use core::fmt;

use super::index::Counts;
use super::slot::{Slot, SlotState, Worker};
use super::{Phase, Supervisor};
use crate::io::Pid;

/// A broken invariant: which one, and the state that broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// The state that broke it.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.detail)
    }
}

impl std::error::Error for Violation {}

fn check(
    ok: bool,
    invariant: &'static str,
    detail: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if ok {
        Ok(())
    } else {
        Err(Violation {
            invariant,
            detail: detail(),
        })
    }
}

fn index_holds(present: bool, index: &'static str, slot: usize) -> Result<(), Violation> {
    check(present, index, || format!("slot {slot}'s key is missing"))
}

/// How many entries each index should hold, as the slots give them: each index must hold
/// exactly the slots' keys, so every expected key present and no more entries than these.
/// Counted rather than collected, as this runs every step.
#[derive(Default)]
struct Expected {
    timers: usize,
    free: usize,
    retire: usize,
    idle: usize,
    places: usize,
    pids: usize,
}

impl Supervisor {
    /// Recomputes every counter and index from the slots and checks the safety invariants the
    /// machine alone can see; the first broken one is the error. O(workers). Runs after every
    /// `handle` in debug builds; the simulator calls it after every step.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let mut counts = Counts::default();
        let mut expected = Expected::default();
        for (i, slot) in self.slots.iter().enumerate() {
            counts += self.slot_counts(slot);
            self.check_slot_indexed(i, slot, &mut expected)?;
            if let SlotState::Worker(w) = &slot.state {
                self.check_worker(i, w, &mut expected)?;
            }
        }
        check(counts == self.counts, "counters match the slots", || {
            format!("stored {:?}, recomputed {counts:?}", self.counts)
        })?;
        self.check_index_sizes(&expected)?;
        self.check_bounds(&counts)?;
        self.check_phase(&counts)?;
        check(
            self.deaths.len() <= self.config.restart.intensity_deaths as usize + 1,
            "death window bounded",
            || format!("{} deaths kept", self.deaths.len()),
        )
    }

    /// Slot `i`'s keys are in the indexes, and its timer is keyed at its real deadline.
    fn check_slot_indexed(
        &self,
        i: usize,
        slot: &Slot,
        expected: &mut Expected,
    ) -> Result<(), Violation> {
        let deadline = self.slot_deadline(slot);
        let key = slot.deadline_key();
        if let Some(at) = key {
            expected.timers += 1;
            index_holds(self.timers.contains(&(at, i as u32)), "timer index", i)?;
        }
        check(key == deadline, "slot deadline indexed exactly", || {
            format!("slot {i}: due {deadline:?}, indexed {key:?}")
        })?;
        if let Some(key) = self.slot_retire_key(i, slot) {
            expected.retire += 1;
            index_holds(
                self.retire_order.contains(&key),
                "retirement order index",
                i,
            )?;
        }
        if let Some(generation) = Supervisor::slot_place_key(slot) {
            expected.places += 1;
            index_holds(
                self.places.contains(&(generation, i as u32)),
                "place index",
                i,
            )?;
        }
        if let Some(since) = Supervisor::slot_idle_key(slot) {
            expected.idle += 1;
            index_holds(self.idle.contains(&(since, i as u32)), "idle index", i)?;
        }
        if matches!(slot.state, SlotState::Empty) && i < self.slot_limit as usize {
            expected.free += 1;
            index_holds(self.free.contains(&(i as u32)), "free-slot index", i)?;
        }
        Ok(())
    }

    /// The worker in slot `i`: its generation, its pid's index entry, its ladder, its load.
    fn check_worker(&self, i: usize, w: &Worker, expected: &mut Expected) -> Result<(), Violation> {
        check(w.generation <= self.generation, "generation", || {
            format!(
                "slot {i} has generation {} above {}",
                w.generation.0, self.generation.0
            )
        })?;
        if let Some(pid) = w.pid {
            expected.pids += 1;
            check(
                self.pids.get(&pid) == Some(&(i as u32)),
                "pid index",
                || format!("slot {i} pid {pid} indexed as {:?}", self.pids.get(&pid)),
            )?;
        }
        if let Some(stop) = &w.stop {
            if let Some(pos) = &stop.pos {
                let kill_at = pos.kill_at(&stop.ladder);
                check(
                    pos.next.is_none_or(|n| n <= kill_at),
                    "ladder ends in KILL on time",
                    || {
                        format!(
                            "slot {i}: next signal {:?} after the KILL deadline {kill_at}",
                            pos.next
                        )
                    },
                )?;
            }
            check(
                w.pid.is_none() || stop.pos.is_some(),
                "ladder entered",
                || format!("slot {i} is stopping with a pid but no ladder position"),
            )?;
        }
        check(
            w.busy <= self.config.threads || w.generation < self.generation,
            "busy within threads",
            || {
                format!(
                    "slot {i} busy {} of {} threads",
                    w.busy, self.config.threads
                )
            },
        )
    }

    /// No index holds more entries than the slots give.
    fn check_index_sizes(&self, expected: &Expected) -> Result<(), Violation> {
        for (name, expected, held) in [
            ("timer index", expected.timers, self.timers.len()),
            ("free-slot index", expected.free, self.free.len()),
            (
                "retirement order index",
                expected.retire,
                self.retire_order.len(),
            ),
            ("idle index", expected.idle, self.idle.len()),
            ("place index", expected.places, self.places.len()),
        ] {
            check(expected == held, name, || {
                format!("holds {held} entries, the slots give {expected}")
            })?;
        }
        check(
            expected.pids == self.pids.len(),
            "pid index has no stale pid",
            || {
                let stale: Vec<&Pid> = self.pids.keys().collect();
                format!("{} live workers, index holds {stale:?}", expected.pids)
            },
        )?;
        Ok(())
    }

    /// The pool stays within its slots, and no deadline stays expired.
    fn check_bounds(&self, counts: &Counts) -> Result<(), Violation> {
        let above_limit = self.slots[self.slot_limit.min(self.slots.len() as u32) as usize..]
            .iter()
            .position(|slot| match &slot.state {
                SlotState::Empty => false,
                SlotState::Worker(w) => w.stop.is_none(),
                SlotState::Backoff { .. } | SlotState::GaveUp { .. } => true,
            });
        check(
            above_limit.is_none(),
            "slots above max + max_surge only drain",
            || {
                format!(
                    "slot {} is in use above the limit {}",
                    self.slot_limit as usize + above_limit.unwrap_or(0),
                    self.slot_limit
                )
            },
        )?;
        let working = counts.live + counts.spawning;
        check(
            counts.live <= self.slots.len() as u32 && working <= self.slots.len() as u32,
            "workers within max + max_surge",
            || format!("live {} in {} slots", counts.live, self.slots.len()),
        )?;
        if let Some(at) = self.poll_timeout() {
            check(at > self.now, "no timer stays expired", || {
                format!("poll_timeout {at} <= now {}", self.now)
            })?;
        }
        Ok(())
    }

    /// What the phase implies: the target and ramp within bounds while running, every
    /// worker stopping while stopping or handing over, none left after the exit.
    fn check_phase(&self, counts: &Counts) -> Result<(), Violation> {
        match self.phase {
            Phase::Running => {
                let (min, max) = (self.config.policy.min(), self.config.policy.max());
                check(
                    (min..=max).contains(&self.target),
                    "target within min..max",
                    || format!("target {} outside {min}..{max}", self.target),
                )?;
                check(
                    self.spawn_rate >= 1 && self.spawn_rate <= self.config.max_spawn_rate,
                    "spawn rate within 1..max_spawn_rate",
                    || format!("spawn rate {}", self.spawn_rate),
                )?;
            }
            Phase::Stopping { .. } | Phase::Handover => {
                let unstopped = self.slots.iter().position(|slot| match &slot.state {
                    SlotState::Empty => false,
                    SlotState::Worker(w) => w.stop.is_none(),
                    SlotState::Backoff { .. } | SlotState::GaveUp { .. } => true,
                });
                check(
                    unstopped.is_none(),
                    "a stopping pool keeps no worker running",
                    || format!("slot {unstopped:?} is not stopping"),
                )?;
            }
            Phase::Exited => {
                check(
                    counts.live == 0 && counts.spawning == 0,
                    "exit leaves no worker",
                    || {
                        format!(
                            "{} live, {} spawning after Exit",
                            counts.live, counts.spawning
                        )
                    },
                )?;
            }
        }
        Ok(())
    }
}
