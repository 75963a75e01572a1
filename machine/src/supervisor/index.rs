//! The incremental indexes: the counters (`Counts`), the timer set, the retirement order
//! (`RetireKey`), the places and idle sets and the free slots, each kept so that one input
//! costs O(log n) in the pool size. Every mutation of a slot is bracketed by `detach(i)` /
//! `attach(i)`, which remove and re-insert the slot's contribution. This module owns the
//! keys and their upkeep; it must not decide anything: what a slot's keys are follows from
//! its facts alone. `invariants` recomputes all of it from scratch and compares.

use core::ops::{AddAssign, SubAssign};
use std::collections::BTreeSet;

use super::slot::{Slot, SlotState};
use super::Supervisor;
use crate::io::*;
use crate::output::*;
use crate::time::Instant;

/// Order in which workers are retired: older generations first; then places with no
/// process, booting workers, the longest-idle worker, busy workers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RetireKey {
    pub(super) generation: Generation,
    pub(super) rank: u8,
    pub(super) since: Instant,
    pub(super) slot: u32,
}

const RANK_EMPTY_PLACE: u8 = 0;
const RANK_BOOTING: u8 = 1;
pub(super) const RANK_IDLE: u8 = 2;
pub(super) const RANK_BUSY: u8 = 3;

impl RetireKey {
    /// What the key's rank stands for, for the trace.
    pub(super) fn victim(&self) -> Victim {
        match self.rank {
            RANK_EMPTY_PLACE => Victim::Place,
            RANK_BOOTING => Victim::Booting,
            RANK_IDLE => Victim::Idle,
            _ => Victim::Busy,
        }
    }
}

/// Counters derived from the slots; kept incrementally.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Places of the pool (backoff, gave-up, spawning, booting, ready; not stopping).
    pub filled: u32,
    /// Of those, the current generation's.
    pub filled_current: u32,
    /// Ready and not stopping.
    pub ready: u32,
    /// Processes that exist (pid known), stopping or not.
    pub live: u32,
    /// Spawns in flight (no pid yet).
    pub spawning: u32,
    /// Idle thread slots: booting workers count whole (don't swamp the machine while they
    /// start), ready ones their idle threads.
    pub idle_threads: u64,
    /// Ready workers (not stopping) that never reported their load.
    pub unreported: u32,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, c: Counts) {
        self.filled += c.filled;
        self.filled_current += c.filled_current;
        self.ready += c.ready;
        self.live += c.live;
        self.spawning += c.spawning;
        self.idle_threads += c.idle_threads;
        self.unreported += c.unreported;
    }
}

impl SubAssign for Counts {
    fn sub_assign(&mut self, c: Counts) {
        self.filled -= c.filled;
        // A generation bump zeroes `filled_current` without detaching; older slots then
        // contribute 0 here because `slot_counts` compares with the current generation.
        self.filled_current -= c.filled_current;
        self.ready -= c.ready;
        self.live -= c.live;
        self.spawning -= c.spawning;
        self.idle_threads -= c.idle_threads;
        self.unreported -= c.unreported;
    }
}

/// Moves one entry of an ordered index from `old` to `new`; either may be absent.
fn rekey<K: Ord>(index: &mut BTreeSet<K>, old: Option<K>, new: Option<K>) {
    if let Some(old) = old {
        index.remove(&old);
    }
    if let Some(new) = new {
        index.insert(new);
    }
}

impl Supervisor {
    pub(crate) fn slot_counts(&self, slot: &Slot) -> Counts {
        let mut c = Counts::default();
        let current = |g: Generation| u32::from(g == self.generation);
        match &slot.state {
            SlotState::Empty => {}
            SlotState::Backoff { generation, .. } | SlotState::GaveUp { generation, .. } => {
                c.filled = 1;
                c.filled_current = current(*generation);
            }
            SlotState::Worker(w) => {
                c.live = u32::from(w.pid.is_some());
                c.spawning = u32::from(w.pid.is_none());
                if w.stop.as_ref().is_some_and(|s| s.reason.is_failure()) {
                    // A worker being killed for a failure keeps its place until it exits and
                    // its slot's backoff runs: replacing it at once would bypass the backoff.
                    c.filled = 1;
                    c.filled_current = current(w.generation);
                } else if w.stop.is_none() {
                    c.filled = 1;
                    c.filled_current = current(w.generation);
                    c.ready = u32::from(w.ready);
                    c.unreported = u32::from(w.ready && !w.load_seen);
                    let threads = u64::from(self.config.threads);
                    c.idle_threads = if w.ready {
                        threads.saturating_sub(u64::from(w.busy))
                    } else {
                        threads
                    };
                }
            }
        }
        c
    }

    pub(crate) fn slot_retire_key(&self, i: usize, slot: &Slot) -> Option<RetireKey> {
        let (generation, rank, since) = match &slot.state {
            SlotState::Empty => return None,
            SlotState::Backoff { generation, .. } | SlotState::GaveUp { generation, .. } => {
                (*generation, RANK_EMPTY_PLACE, Instant::ZERO)
            }
            // A spawn in flight has no pid to signal yet; it becomes retirable on `Spawned`.
            SlotState::Worker(w) if w.stop.is_some() || w.pid.is_none() => return None,
            SlotState::Worker(w) if !w.ready => (w.generation, RANK_BOOTING, Instant::ZERO),
            SlotState::Worker(w) => match w.idle_since {
                Some(since) if w.busy == 0 => (w.generation, RANK_IDLE, since),
                _ => (w.generation, RANK_BUSY, Instant::ZERO),
            },
        };
        Some(RetireKey {
            generation,
            rank,
            since,
            slot: i as u32,
        })
    }

    pub(crate) fn slot_place_key(slot: &Slot) -> Option<Generation> {
        match &slot.state {
            SlotState::Backoff { generation, .. } | SlotState::GaveUp { generation, .. } => {
                Some(*generation)
            }
            _ => None,
        }
    }

    pub(crate) fn slot_idle_key(slot: &Slot) -> Option<Instant> {
        match &slot.state {
            SlotState::Worker(w) if w.stop.is_none() && w.ready && w.busy == 0 => w.idle_since,
            _ => None,
        }
    }

    /// Removes slot `i`'s contribution to the counters, before it changes. The ordered
    /// indexes are brought up to date by `attach`, which touches only what changed.
    pub(super) fn detach(&mut self, i: usize) {
        self.counts -= self.slot_counts(&self.slots[i]);
    }

    /// Adds slot `i`'s contribution to the counters and re-keys it in the ordered indexes,
    /// after it changed.
    pub(super) fn attach(&mut self, i: usize) {
        self.counts += self.slot_counts(&self.slots[i]);
        self.rearm(i);
        self.reindex(i);
    }

    /// Re-keys slot `i` in the retirement order and the place, idle and free-slot indexes,
    /// wherever its key changed.
    fn reindex(&mut self, i: usize) {
        let retire_key = self.slot_retire_key(i, &self.slots[i]);
        let place_key = Self::slot_place_key(&self.slots[i]);
        let idle_key = Self::slot_idle_key(&self.slots[i]);
        let is_free =
            matches!(self.slots[i].state, SlotState::Empty) && i < self.slot_limit as usize;
        let at = i as u32;
        let slot = &mut self.slots[i];
        if slot.retire_key != retire_key {
            rekey(&mut self.retire_order, slot.retire_key, retire_key);
            slot.retire_key = retire_key;
        }
        if slot.place_key != place_key {
            let entry = |generation| (generation, at);
            rekey(
                &mut self.places,
                slot.place_key.map(entry),
                place_key.map(entry),
            );
            slot.place_key = place_key;
        }
        if slot.idle_key != idle_key {
            let entry = |since| (since, at);
            rekey(
                &mut self.idle,
                slot.idle_key.map(entry),
                idle_key.map(entry),
            );
            slot.idle_key = idle_key;
        }
        if slot.free != is_free {
            rekey(
                &mut self.free,
                slot.free.then_some(at),
                is_free.then_some(at),
            );
            slot.free = is_free;
        }
    }

    /// Keys the slot's timer at its real deadline. Exact, so the driver never wakes for a
    /// deadline that a heartbeat has moved (an early key would cost a wake-up per worker and
    /// heartbeat interval, and would keep deadlines that a shared-memory sample aligns from
    /// waking the supervisor together); a heartbeat that moves a deadline costs one tree
    /// update, O(log n).
    pub(super) fn rearm(&mut self, i: usize) {
        let deadline = self.slot_deadline(&self.slots[i]);
        let slot = &mut self.slots[i];
        if slot.deadline != deadline {
            let entry = |at| (at, i as u32);
            rekey(
                &mut self.timers,
                slot.deadline.map(entry),
                deadline.map(entry),
            );
            slot.deadline = deadline;
        }
    }
}
