//! The slot and its states: one place of the pool (`Slot`), what it holds (`SlotState`), the
//! worker process in it (`Worker`) and a stop in progress (`Stop`), plus the lookups from a
//! `WorkerId` to its slot. This module owns the data and the plain accessors; it decides
//! nothing: a slot's state changes only where an input, a timer or a command is handled,
//! each change bracketed by `detach`/`attach` (see `index`).

use core::time::Duration;
use std::sync::Arc;

use super::index::RetireKey;
use super::Supervisor;
use crate::config::Ladder;
use crate::io::*;
use crate::ladder::LadderPos;
use crate::output::*;
use crate::time::Instant;

/// A stop in progress for one worker.
#[derive(Clone, Debug)]
pub(crate) struct Stop {
    pub reason: StopReason,
    /// The ladder in force when the stop began: a reload does not change a running ladder.
    pub ladder: Arc<Ladder>,
    /// Where the worker stands; entered when its pid is known.
    pub pos: Option<LadderPos>,
    /// Escalated before its pid was known: the ladder starts at the immediate stage.
    pub immediate: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct Worker {
    pub generation: Generation,
    /// `None` while the spawn is in flight.
    pub pid: Option<Pid>,
    /// Its `Spawn` was handed to the driver. Until then it waits in the action queue behind
    /// other forks and has no boot deadline: the queue is the machine's own delay, not the
    /// worker's, and the driver drains it before it sleeps.
    pub fork_handed_out: bool,
    /// When the spawn was decided, and from its answer on, when the process came to exist:
    /// the boot timeout and the uptime count from the fork, not from a queue it waited in
    /// behind other (slow) forks.
    pub spawned_at: Instant,
    pub ready: bool,
    /// The last heartbeat, or when the watchdog started (Ready).
    pub last_heartbeat: Instant,
    /// The heartbeat timeout in force when the worker was spawned: the one it was told
    /// (`WATCHDOG_USEC`) and beats for. A reload that turns the watchdog on or shortens it
    /// rolls the workers (it changes the worker fingerprint); until replaced, each is held
    /// to its own.
    pub heartbeat_timeout: Option<Duration>,
    /// A heartbeat arrived: the program is up. Until then a worker Ready at spawn gets the
    /// boot timeout for its first heartbeat, as it may still be starting.
    pub beat_seen: bool,
    /// The time between its last two heartbeats.
    pub beat_gap: Option<Duration>,
    /// The shorter of its last two `beat_gap`s (so three beats are needed): the pace of the
    /// worker's messages, which bounds how long they may wait unread (`messages_due`). Two
    /// gaps, so that one stall (a pause, a suspend) does not pass for the pace.
    pub beat_pace: Option<Duration>,
    pub busy: u32,
    /// A load report arrived: the worker tells its busy threads, so a connection taken by
    /// one of its idle threads will show up as a load input (see `demand_hidden`).
    pub load_seen: bool,
    pub oldest_busy_since: Option<Instant>,
    /// Since when every thread is idle (None while busy or booting).
    pub idle_since: Option<Instant>,
    pub requests: u64,
    pub request_limit: Option<u64>,
    pub stop: Option<Stop>,
    /// How the main process exited while the rest of its group ran on (`MainExited`): the
    /// worker's exit status once the group is empty, whatever the driver reports then.
    pub main_status: Option<ExitStatus>,
}

#[derive(Clone, Debug)]
pub(crate) enum SlotState {
    Empty,
    /// Waiting to restart. Counts as a filled place of the pool so that no other slot is
    /// spawned around the backoff.
    Backoff {
        generation: Generation,
        until: Instant,
    },
    /// The last worker exited with an unrecoverable code; the place stays empty until a
    /// restart or reload.
    GaveUp {
        generation: Generation,
        code: i32,
    },
    Worker(Box<Worker>),
}

#[derive(Clone, Debug)]
pub(crate) struct Slot {
    pub incarnation: u32,
    pub state: SlotState,
    /// Consecutive deaths younger than `healthy_uptime`: the backoff exponent.
    pub young_deaths: u32,
    /// Unexpected deaths and failure kills over the slot's life, for status.
    pub restarts: u32,
    pub last_stop: Option<StopReason>,
    /// Consecutive failures to bind the slot's address: the exponent of its retry delay.
    pub address_failures: u32,
    /// The slot's key in `timers`: its real deadline (see `rearm`).
    pub(super) deadline: Option<Instant>,
    pub(super) retire_key: Option<RetireKey>,
    pub(super) place_key: Option<Generation>,
    pub(super) idle_key: Option<Instant>,
    pub(super) free: bool,
}

impl Slot {
    pub(crate) fn deadline_key(&self) -> Option<Instant> {
        self.deadline
    }
}

impl Supervisor {
    pub(super) fn grow_slots(&mut self, count: u32) {
        while self.slots.len() < count as usize {
            self.slots.push(Slot {
                incarnation: 0,
                state: SlotState::Empty,
                young_deaths: 0,
                restarts: 0,
                last_stop: None,
                address_failures: 0,
                deadline: None,
                retire_key: None,
                place_key: None,
                idle_key: None,
                free: false,
            });
            self.attach(self.slots.len() - 1);
        }
    }

    pub(crate) fn id_of(&self, i: usize) -> WorkerId {
        WorkerId {
            slot: i as u32,
            incarnation: self.slots[i].incarnation,
        }
    }

    pub(super) fn slot_of(&self, worker: WorkerId) -> Option<usize> {
        let i = worker.slot as usize;
        (self.slots.get(i)?.incarnation == worker.incarnation).then_some(i)
    }

    /// The worker is live and has no process yet: its `Spawn` is still to be performed.
    /// One retired while its `Spawn` waited in the queue (a stop, a scale-down) leaves its
    /// place empty instead: forking it would only start a process to stop.
    pub(super) fn awaits_fork(&mut self, worker: WorkerId) -> bool {
        let Some(i) = self.slot_of(worker) else {
            return false;
        };
        match &self.slots[i].state {
            SlotState::Worker(w) if w.pid.is_none() && w.stop.is_none() => true,
            SlotState::Worker(w) if w.pid.is_none() && !w.fork_handed_out => {
                self.detach(i);
                self.slots[i].state = SlotState::Empty;
                self.attach(i);
                false
            }
            _ => false,
        }
    }

    /// The worker's `Spawn` goes to the driver now: its boot timeout starts, counted from
    /// this instant, not from when the spawn was queued.
    pub(super) fn hand_out_fork(&mut self, worker: WorkerId) {
        let Some(i) = self.slot_of(worker) else {
            return;
        };
        self.detach(i);
        let now = self.now;
        let w = self.worker_mut(i);
        w.fork_handed_out = true;
        w.spawned_at = now;
        self.attach(i);
    }

    /// The slot of a worker whose process exists, or `None` (traced) for a stale message.
    pub(super) fn live_slot(&mut self, worker: WorkerId) -> Option<usize> {
        let live = self
            .slot_of(worker)
            .filter(|&i| matches!(&self.slots[i].state, SlotState::Worker(w) if w.pid.is_some()));
        if live.is_none() {
            self.event(Event::Ignored(Ignored::StaleMessage(worker)));
        }
        live
    }

    pub(super) fn worker(&self, i: usize) -> &Worker {
        match &self.slots[i].state {
            SlotState::Worker(w) => w,
            other => unreachable!("slot {i} holds no worker: {other:?}"),
        }
    }

    pub(super) fn worker_mut(&mut self, i: usize) -> &mut Worker {
        match &mut self.slots[i].state {
            SlotState::Worker(w) => w,
            other => unreachable!("slot {i} holds no worker: {other:?}"),
        }
    }
}
