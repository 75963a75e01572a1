//! Worker inputs: the facts the driver reports about workers and listeners (`Spawned`,
//! `SpawnFailed`, `Ready`, `Heartbeat`/`HeartbeatAt`, `Load`, `Backlog`, `MainExited`,
//! `Exited`), and `apply`, which routes every input to its handler. This module records
//! facts; it must not run timers or derive spawns (`end` and `reconcile` do), and a message
//! about a worker that no longer exists changes nothing but a trace line.

use core::time::Duration;

use super::reconcile::entry_stage;
use super::slot::SlotState;
use super::{ExitReason, Phase, Supervisor};
use crate::config::{Policy, Readiness};
use crate::io::*;
use crate::ladder::LadderPos;
use crate::output::*;
use crate::time::Instant;

impl Supervisor {
    /// Records one input's facts at `self.now`; the timers run after.
    pub(super) fn apply(&mut self, input: Input) {
        let now = self.now;
        match input {
            Input::Tick => {}
            Input::Spawned { worker, pid } => self.on_spawned(worker, pid),
            Input::SpawnFailed { worker, error } => self.on_spawn_failed(worker, error),
            Input::Ready { worker } => self.on_ready(worker),
            Input::Heartbeat { worker } => self.on_heartbeat(worker, now),
            // A stamp from the future counts as now: the watchdog never runs ahead of the clock.
            Input::HeartbeatAt { worker, at } => self.on_heartbeat(worker, at.min(now)),
            Input::Load {
                worker,
                busy,
                oldest_busy_since,
                requests,
            } => self.on_load(worker, busy, oldest_busy_since, requests),
            Input::Backlog { listener, queued } => self.on_backlog(listener, queued),
            Input::MainExited { pid, status } => self.on_main_exited(pid, status),
            Input::Exited { pid, status } => self.on_exited(pid, status),
            Input::Command(command) => self.on_command(command),
            Input::SuccessorStarted { pid } => self.on_successor_started(pid),
            Input::SuccessorFailed { error: _ } => self.on_successor_failed(),
            Input::SuccessorReady => self.on_successor_ready(),
            Input::Takeover { predecessor_gone } => self.on_takeover(predecessor_gone),
        }
    }

    /// A heartbeat sent at `at`. An older stamp than the last one changes nothing (reports
    /// read together may come in any order).
    fn on_heartbeat(&mut self, worker: WorkerId, at: Instant) {
        let Some(i) = self.live_slot(worker) else {
            return;
        };
        self.detach(i);
        let w = self.worker_mut(i);
        if at > w.last_heartbeat {
            if w.beat_seen {
                let gap = at.saturating_since(w.last_heartbeat);
                w.beat_pace = w.beat_gap.map(|g| g.min(gap));
                w.beat_gap = Some(gap);
            }
            w.last_heartbeat = at;
        }
        w.beat_seen = true;
        self.attach(i);
    }

    fn on_spawned(&mut self, worker: WorkerId, pid: Pid) {
        let Some(i) = self.slot_of(worker) else {
            return self.stray_spawn(worker, pid);
        };
        let pending = matches!(&self.slots[i].state, SlotState::Worker(w) if w.pid.is_none());
        if !pending {
            return self.stray_spawn(worker, pid);
        }
        self.detach(i);
        let now = self.now;
        let at_spawn = self.config.readiness == Readiness::AtSpawn;
        // The slot's address was bound (where slots are addresses): its retries start over.
        self.slots[i].address_failures = 0;
        let w = self.worker_mut(i);
        w.pid = Some(pid);
        w.spawned_at = now;
        if at_spawn {
            w.ready = true;
            w.last_heartbeat = now;
            w.idle_since = Some(now);
        }
        if let Some(stop) = &mut w.stop {
            // Retired before its pid was known: the ladder starts now.
            let stage = entry_stage(stop.reason, stop.immediate, &stop.ladder);
            stop.pos = Some(LadderPos::enter(stage, now));
        }
        self.pids.insert(pid, i as u32);
        self.attach(i);
        #[cfg(feature = "planted")]
        self.plant_ladder_entry(i);
        self.fire_ladder(i);
    }

    /// A process the machine does not wait for (its spawn timed out or was abandoned). It is
    /// live and unknown: kill it so it cannot serve outside the pool's accounting.
    fn stray_spawn(&mut self, worker: WorkerId, pid: Pid) {
        self.event(Event::Ignored(Ignored::UnexpectedSpawnResult(worker)));
        self.queue.push_back(Action::Signal {
            worker,
            pid,
            signal: Signal::Kill,
            reason: StopReason::BootTimeout,
        });
    }

    fn on_spawn_failed(&mut self, worker: WorkerId, error: SpawnError) {
        let pending = self
            .slot_of(worker)
            .filter(|&i| matches!(&self.slots[i].state, SlotState::Worker(w) if w.pid.is_none()));
        let Some(i) = pending else {
            return self.event(Event::Ignored(Ignored::UnexpectedSpawnResult(worker)));
        };
        self.counters.count_spawn_failure();
        if let SpawnError::Address(errno) = error {
            if planted!(self, AddressCounts => false, true) {
                return self.address_failed(i, errno);
            }
        }
        // A fork failure says the system is short: stop ramping.
        self.set_spawn_rate(1, RampReason::ForkFailed);
        self.failed_start(i, None, DeathCause::Boot);
    }

    /// The slot's address could not be bound (a port taken by another program): the
    /// place waits, empty, for a retry after `backoff_min` doubling up to `backoff_max`.
    /// The program never ran, so nothing counts towards its backoff or a crash loop, and
    /// the other slots are not held up: the place counts as filled, as any backoff does.
    fn address_failed(&mut self, i: usize, errno: i32) {
        let generation = self.worker(i).generation;
        if self.phase != Phase::Running || i >= self.slot_limit as usize {
            self.detach(i);
            self.slots[i].state = SlotState::Empty;
            return self.attach(i);
        }
        let failures = self.slots[i].address_failures.saturating_add(1);
        let restart = &self.config.restart;
        let retry_in = restart
            .backoff_min
            .saturating_mul(1u32 << (failures - 1).min(31))
            .min(restart.backoff_max);
        self.detach(i);
        self.slots[i].address_failures = failures;
        self.slots[i].state = SlotState::Backoff {
            generation,
            until: self.now + retry_in,
        };
        self.attach(i);
        self.event(Event::AddressUnavailable {
            slot: i as u32,
            errno,
            retry_in,
        });
    }

    fn on_ready(&mut self, worker: WorkerId) {
        let Some(i) = self.live_slot(worker) else {
            return;
        };
        if self.worker(i).ready {
            return self.event(Event::Ignored(Ignored::DuplicateReady(worker)));
        }
        self.detach(i);
        let now = self.now;
        let w = self.worker_mut(i);
        w.ready = true;
        w.last_heartbeat = now;
        if w.busy == 0 {
            w.idle_since = Some(now);
        }
        self.attach(i);
    }

    fn on_load(&mut self, worker: WorkerId, busy: u32, since: Option<Instant>, requests: u64) {
        let Some(i) = self.live_slot(worker) else {
            return;
        };
        let threads = self.config.threads;
        if busy > threads {
            self.event(Event::Ignored(Ignored::BusyClamped { worker, busy }));
        }
        let busy = busy.min(threads);
        planted!(let early = self, MaxRequestsEarly);
        self.detach(i);
        let now = self.now;
        let w = self.worker_mut(i);
        w.busy = busy;
        // A busy worker without a start time would dodge the request watchdog: assume now.
        w.oldest_busy_since = if busy > 0 {
            Some(since.unwrap_or(now).min(now))
        } else {
            None
        };
        // A worker that served requests since its last report was not idle then, even if
        // each report caught it between two: its idle time starts at this report.
        let served = requests > w.requests;
        let grown = requests.saturating_sub(w.requests);
        if busy > 0 {
            w.idle_since = None;
        } else if w.ready && (served || w.idle_since.is_none()) {
            w.idle_since = Some(now);
        }
        w.requests = requests;
        w.load_seen = true;
        let over_limit = w.stop.is_none()
            && w.request_limit
                .is_some_and(|l| requests >= planted!(if early => l.saturating_sub(1), l));
        self.attach(i);
        self.counters
            .count_requests(planted!(self, RequestsTotal => requests, grown));
        if over_limit {
            self.retire(i, StopReason::MaxRequests);
        }
    }

    fn on_backlog(&mut self, listener: u32, queued: u32) {
        let old = self.backlog.insert(listener, queued).unwrap_or(0);
        self.queued = self.queued - u64::from(old) + u64::from(queued);
        // ondemand answers waiting connections at once, one worker at a time (the booting
        // worker counts as idle until it is Ready, so this does not snowball).
        if let Policy::Ondemand { max, .. } = self.config.policy {
            let at_once = planted!(self, BacklogAtTick => false, true);
            if at_once
                && self.phase == Phase::Running
                && self.queued > 0
                && self.counts.idle_threads == 0
                && self.target < max
            {
                self.set_target(self.target + 1);
            }
        }
    }

    /// The rest of the worker's group is stopped through the ladder, as a failure (the
    /// main process died unasked), unless the worker is stopping already: then its ladder
    /// goes on for the group. The main process's status is kept here, the one place that
    /// knows it: the final `Exited` is judged and reported by it.
    fn on_main_exited(&mut self, pid: Pid, status: ExitStatus) {
        let Some(&i) = self.pids.get(&pid) else {
            return self.event(Event::Ignored(Ignored::UnknownPid(pid)));
        };
        let i = i as usize;
        let w = self.worker_mut(i);
        // A main process exits once: a second report for the pid (a driver's mistake) does
        // not rewrite how the worker will be judged.
        w.main_status.get_or_insert(status);
        if w.stop.is_none() {
            self.retire(i, StopReason::MainExited);
        }
    }

    fn on_exited(&mut self, pid: Pid, status: ExitStatus) {
        if self.successor_pid() == Some(pid) {
            return self.on_successor_exited();
        }
        let Some(i) = self.pids.remove(&pid).map(|i| i as usize) else {
            return self.event(Event::Ignored(Ignored::UnknownPid(pid)));
        };
        let id = self.id_of(i);
        let w = self.worker(i);
        let uptime = self.now.saturating_since(w.spawned_at);
        // A main process that exited on its own is what the exit is judged by: unasked, a
        // crash; during a stop already under way, the stop's end.
        let status = w.main_status.unwrap_or(status);
        let stop_reason = w
            .stop
            .as_ref()
            .map(|s| s.reason)
            .filter(|r| *r != StopReason::MainExited);
        let exit = match stop_reason {
            Some(r) => ExitReason::Asked(r),
            None => ExitReason::Unasked(DeathCause::of_exit(status, w.ready)),
        };
        self.counters.count_exit(exit);
        self.event(Event::Exited {
            worker: id,
            status,
            uptime,
            expected: stop_reason.is_some(),
        });
        self.detach(i);
        // The pid is gone from `pids` already; the slot's process no longer exists.
        self.worker_mut(i).pid = None;
        self.judge_exit(i, status, stop_reason, uptime);
    }

    /// Empties slot `i` after its worker's exit (detached, its pid gone), or schedules its
    /// restart if the exit was a failure of a running pool. `stop_reason` is `None` for an
    /// exit nobody asked for.
    fn judge_exit(
        &mut self,
        i: usize,
        status: ExitStatus,
        stop_reason: Option<StopReason>,
        uptime: Duration,
    ) {
        let failed = stop_reason.is_none_or(StopReason::is_failure);
        if !failed || self.phase != Phase::Running {
            if uptime >= self.config.restart.healthy_uptime {
                self.slots[i].young_deaths = 0;
            }
            self.slots[i].state = SlotState::Empty;
            self.attach(i);
            return;
        }
        self.attach(i);
        let code = match status {
            ExitStatus::Code(c) if stop_reason.is_none() => Some(c),
            _ => None,
        };
        // A place beyond a shrunk slot range is not kept, not even as given up.
        let kept = i < self.slot_limit as usize;
        if let Some(code) = code
            .filter(|c| self.config.restart.unrecoverable_exit_codes.contains(c))
            .filter(|_| kept)
        {
            return self.give_up(i, code);
        }
        let cause = match stop_reason {
            None => DeathCause::of_exit(status, self.worker(i).ready),
            Some(_) if !self.worker(i).ready => DeathCause::Boot,
            Some(_) => DeathCause::Hung,
        };
        self.failed_start(i, Some(uptime), cause);
    }
}
