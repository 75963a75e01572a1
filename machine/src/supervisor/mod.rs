//! The supervisor: records facts in `handle`, derives the next step in `poll_action`.
//!
//! Bookkeeping is incremental so that one input costs O(log n) in the pool size: every
//! mutation of a slot is bracketed by `detach(i)` / `attach(i)`, which remove and re-insert
//! the slot's contribution to the counters, the timer set, the retirement order and the idle
//! set. `check_invariants` recomputes all of it from scratch and compares.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::{Config, ConfigError, Ladder, Policy, Readiness};
use crate::io::*;
use crate::ladder::LadderPos;
use crate::rng::SplitMix64;
use crate::time::Instant;

mod commands;
mod deaths;
mod index;
mod inputs;
mod invariants;
mod slot;
mod upgrade;

pub use invariants::Violation;
pub use upgrade::UpgradeState;

use index::{Counts, RetireKey, RANK_IDLE};
use slot::{Slot, SlotState, Stop, Worker};

/// The supervisor's overall state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Draining every worker; `immediate` once escalated.
    Stopping {
        immediate: bool,
    },
    /// A successor took over: draining every worker, then exit 0. Reverts to `Running` if
    /// the successor dies before the drain ends.
    Handover,
    /// `Exit` was emitted; inputs are ignored.
    Exited,
}

pub struct Supervisor {
    pub(crate) config: Config,
    pub(crate) now: Instant,
    pub(crate) phase: Phase,
    pub(crate) generation: Generation,
    pub(crate) target: u32,
    pub(crate) slots: Vec<Slot>,
    /// Slots at or above this index are not refilled (a reload shrank the pool).
    pub(crate) slot_limit: u32,
    pub(crate) pids: BTreeMap<Pid, u32>,
    pub(crate) timers: BTreeSet<(Instant, u32)>,
    pub(crate) free: BTreeSet<u32>,
    pub(crate) retire_order: BTreeSet<RetireKey>,
    /// Places with no process (backoff, gave up), oldest generation first.
    pub(crate) places: BTreeSet<(Generation, u32)>,
    pub(crate) idle: BTreeSet<(Instant, u32)>,
    pub(crate) counts: Counts,
    pub(crate) queue: VecDeque<Action>,
    pub(crate) spawn_rate: u32,
    /// The maintenance tick's grid: ticks fall every `maintenance_interval` from here on.
    /// Always set while the policy ticks and the pool runs; `poll_timeout` shows it only
    /// when a tick could change something (`maintenance_wakeup`), and ticks skipped while it
    /// was hidden are no-ops by definition (`run_timers` moves the grid past them).
    pub(crate) next_maintenance: Option<Instant>,
    /// The last `intensity_deaths + 1` deaths, oldest first.
    pub(crate) deaths: VecDeque<Instant>,
    pub(crate) crash_looping: bool,
    pub(crate) backlog: BTreeMap<u32, u32>,
    pub(crate) queued: u64,
    pub(crate) upgrade: UpgradeState,
    pub(crate) exit_code: Option<i32>,
    rng: SplitMix64,
}

/// A worker as status reports show it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerView {
    pub id: WorkerId,
    pub pid: Option<Pid>,
    pub generation: Generation,
    pub state: WorkerState,
    pub requests: u64,
    pub restarts: u32,
    pub last_stop: Option<StopReason>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    Backoff { until: Instant },
    GaveUp { code: i32 },
    Spawning,
    Booting,
    Ready { busy: u32 },
    Stopping { reason: StopReason },
}

impl WorkerState {
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

/// The bound on one drain: every action is about one slot or a one-shot, so a drain longer
/// than this is a bug (TigerStyle: put a limit on everything).
fn drain_limit(slots: usize) -> usize {
    4 * slots + 64
}

impl Supervisor {
    /// Validates `config` and starts the pool at `now`. The first actions (spawns) are ready
    /// to poll.
    pub fn new(config: Config, now: Instant) -> Result<Supervisor, ConfigError> {
        config.validate()?;
        let slot_count = config.slot_count();
        let mut s = Supervisor {
            rng: SplitMix64::new(config.seed),
            target: config.policy.start(),
            slot_limit: slot_count,
            config,
            now,
            phase: Phase::Running,
            generation: Generation(1),
            slots: Vec::new(),
            pids: BTreeMap::new(),
            timers: BTreeSet::new(),
            free: BTreeSet::new(),
            retire_order: BTreeSet::new(),
            places: BTreeSet::new(),
            idle: BTreeSet::new(),
            counts: Counts::default(),
            queue: VecDeque::new(),
            spawn_rate: 1,
            next_maintenance: None,
            deaths: VecDeque::new(),
            crash_looping: false,
            backlog: BTreeMap::new(),
            queued: 0,
            upgrade: UpgradeState::Idle,
            exit_code: None,
        };
        s.grow_slots(slot_count);
        s.schedule_maintenance();
        Ok(s)
    }

    // ----------------------------------------------------------------- getters

    /// `new` for a live upgrade's successor: its workers start at the generation after its
    /// predecessor's, so no two workers that run at once (the predecessor's draining, the
    /// successor's booting) share a slot and a generation.
    pub fn succeeding(
        config: Config,
        now: Instant,
        predecessor: Generation,
    ) -> Result<Supervisor, ConfigError> {
        let mut s = Supervisor::new(config, now)?;
        s.generation = Generation(predecessor.0.saturating_add(1));
        Ok(s)
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// How many workers the pool wants now.
    pub fn target(&self) -> u32 {
        self.target
    }

    pub fn upgrade_state(&self) -> UpgradeState {
        self.upgrade
    }

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
            Some(WorkerView {
                id,
                pid,
                generation,
                state,
                requests,
                restarts: slot.restarts,
                last_stop: slot.last_stop,
            })
        })
    }

    // ----------------------------------------------------------------- outputs

    /// The next action to perform, or `None` when there is nothing to do until the next
    /// input or `poll_timeout()`. Spawns and retirements are derived here from wanted vs
    /// actual state, so they are never stale.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        if let Some(action) = self.queue.pop_front() {
            return Some(action);
        }
        self.reconcile();
        self.queue.pop_front()
    }

    /// The earliest deadline, or `None` if nothing will happen without an input. A
    /// maintenance tick that could change nothing is no deadline: a calm dynamic or ondemand
    /// pool sleeps until an input, or until its next idle retirement (see
    /// `maintenance_wakeup`). Changes only through `handle` and `poll_action`.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Exited {
            return None;
        }
        [
            self.timers.first().map(|t| t.0),
            self.maintenance_wakeup(),
            self.upgrade_deadline(),
            self.crash_loop_end(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Until when the driver may leave worker messages (sd_notify datagrams) unread, given
    /// `queue`, how many datagrams its socket holds before a sender blocks (Linux:
    /// `net.unix.max_dgram_qlen`). A driver that stops watching the socket until then, and
    /// hands each heartbeat in as `HeartbeatAt` with its arrival time, sleeps through an
    /// idle pool's heartbeats instead of waking for every one, and misjudges nothing: a
    /// heartbeat that would meet a deadline is read at that deadline, which is a wake-up of
    /// its own (`poll_timeout`), and all read together go in one `handle_all`.
    ///
    /// Messages may wait only while none of them could change a decision sooner: the pool
    /// runs with no upgrade in flight, the watchdog is on, and every worker is Ready, not
    /// stopping, has a known pace (three beats) and has never reported its load. A booting
    /// worker's READY=1 must be seen at once, and load reports drive scaling and the request
    /// watchdog and come at the program's pace, from which no queue bound follows. The wait
    /// is a whole number of the fastest pace seen: as many as fit every worker's beats into
    /// half the queue, counting each worker as beating once per pace and all of them in step
    /// (workers forked together stay in step), so none at all while the workers outnumber
    /// half the queue. The other half is for an irregular beat or a STATUS= line. Never
    /// longer than the heartbeat timeout. Otherwise the answer is the time of the last
    /// input: messages are read as they come. O(workers).
    #[must_use]
    pub fn messages_due(&self, queue: u32) -> Instant {
        let prompt = self.now;
        let Some(timeout) = self.config.heartbeat_timeout else {
            return prompt;
        };
        if self.phase != Phase::Running || self.upgrade != UpgradeState::Idle {
            return prompt;
        }
        let mut workers: u64 = 0;
        let mut fastest = timeout;
        for slot in &self.slots {
            let SlotState::Worker(w) = &slot.state else {
                continue;
            };
            let quiet = w.ready && w.stop.is_none() && !w.load_seen;
            let Some(pace) = w.beat_pace.filter(|_| quiet) else {
                return prompt;
            };
            workers += 1;
            fastest = fastest.min(pace);
        }
        let room = u64::from(queue / 2);
        if workers == 0 {
            return prompt;
        }
        // A window of k paces holds at most k beats of a worker beating at that pace.
        let paces = room / workers;
        let hold = crate::time::duration_nanos(fastest).saturating_mul(paces);
        prompt.saturating_add(Duration::from_nanos(hold).min(timeout))
    }

    /// Applies one input at `now`, then every timer due at `now`.
    ///
    /// Panics if `now` is earlier than the previous call's: the driver broke the contract.
    pub fn handle(&mut self, now: Instant, input: Input) {
        let Some(announced) = self.begin(now) else {
            return;
        };
        self.apply(input);
        self.end(announced);
    }

    /// Applies several inputs at `now` as one `handle`: each in turn, then every timer due
    /// at `now`, once. For facts the driver reads together, such as the heartbeats and
    /// loads of every worker read from shared memory on a wake-up: a deadline that one of
    /// them meets must not fire while an earlier one is applied (fed one by one, the first
    /// report would let the timers kill a worker whose own fresh report comes next). No
    /// input is the same as `Input::Tick`.
    ///
    /// Panics if `now` is earlier than the previous call's: the driver broke the contract.
    pub fn handle_all(&mut self, now: Instant, inputs: impl IntoIterator<Item = Input>) {
        let Some(announced) = self.begin(now) else {
            return;
        };
        for input in inputs {
            self.apply(input);
        }
        self.end(announced);
    }

    /// Moves the clock to `now`. Returns the maintenance deadline the driver was shown
    /// before (the state has not changed since its last drain: whether a due tick was
    /// announced or skipped while hidden), or `None` once exited (inputs are ignored).
    #[inline]
    fn begin(&mut self, now: Instant) -> Option<Option<Instant>> {
        assert!(
            now >= self.now,
            "time went backwards: {now} after {}; the driver must pass a monotonic clock",
            self.now
        );
        let announced = self.maintenance_wakeup();
        self.now = now;
        (self.phase != Phase::Exited).then_some(announced)
    }

    /// After the inputs: every timer due at `now`.
    #[inline]
    fn end(&mut self, announced: Option<Instant>) {
        self.run_timers(announced);
        #[cfg(debug_assertions)]
        if let Err(v) = self.check_invariants() {
            panic!("invariant violated after handle: {v}");
        }
    }

    // ----------------------------------------------------------------- timers

    /// Fires every deadline due at `now`. `announced` is the maintenance deadline
    /// `poll_timeout` showed before this input.
    fn run_timers(&mut self, announced: Option<Instant>) {
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
        if self.upgrade_deadline().is_some_and(|d| d <= self.now) {
            self.rollback(RollbackReason::Timeout);
        }
        if self.crash_loop_end().is_some_and(|d| d <= self.now) {
            self.crash_looping = false;
            self.event(Event::CrashLoopEnded);
        }
        if let Some(next) = self.next_maintenance.filter(|&d| d <= self.now) {
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
    }

    fn on_slot_deadline(&mut self, i: usize) {
        enum Due {
            Respawn,
            Ladder,
            AbandonSpawn,
            SpawnTimeout,
            Retire(StopReason),
        }
        let now = self.now;
        let due = match &self.slots[i].state {
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
        };
        match due {
            Due::Respawn => {
                // Refill this very slot so its backoff history follows the restart.
                self.detach(i);
                self.slots[i].state = SlotState::Empty;
                self.attach(i);
                if self.phase == Phase::Running
                    && i < self.slot_limit as usize
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
                self.failed_start(i, None);
            }
            Due::Retire(reason) => self.retire(i, reason),
        }
    }

    /// Keeps the maintenance grid while the policy has a tick (`poll_timeout` shows it only
    /// when the tick is useful). An operator command does not postpone a tick already due
    /// (a stream of commands must not starve scaling).
    fn schedule_maintenance(&mut self) {
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
    fn maintain(&mut self) {
        if self.phase != Phase::Running {
            return;
        }
        let (min, max) = (self.config.policy.min(), self.config.policy.max());
        if let Some((due, slot)) = self.idle_retirement() {
            if due <= self.now {
                self.spawn_rate = 1;
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
                self.spawn_rate = 1;
                return;
            }
            let workers = deficit.div_ceil(threads).min(u64::from(u32::MAX)) as u32;
            let n = self.spawn_rate.min(workers).min(room);
            self.set_target(self.target + n);
            self.spawn_rate = self
                .spawn_rate
                .saturating_mul(2)
                .min(self.config.max_spawn_rate);
            return;
        }
        self.spawn_rate = 1;
        if let Policy::Dynamic { max_spare, .. } = self.config.policy {
            let spare = idle.saturating_sub(self.queued);
            if spare > u64::from(max_spare) && self.target > min {
                // reconcile retires the best victim: an empty place, a booting worker, else
                // the longest-idle one.
                self.set_target(self.target - 1);
            }
        }
    }

    /// The longest-idle worker and when the idle timeout retires it, if the pool may lose
    /// it: above `min`, and a dynamic pool keeps `min_spare` idle threads even when they
    /// idle past the timeout (retiring them would only make the next tick spawn again).
    fn idle_retirement(&self) -> Option<(Instant, u32)> {
        let timeout = self.config.idle_timeout?;
        let &(since, slot) = self.idle.first()?;
        if self.target <= self.config.policy.min() {
            return None;
        }
        let spare_after = (self.counts.idle_threads.saturating_sub(self.queued))
            .saturating_sub(u64::from(self.config.threads));
        let keeps_spares = match self.config.policy {
            Policy::Dynamic { min_spare, .. } => spare_after >= u64::from(min_spare),
            _ => true,
        };
        keeps_spares.then_some((since + timeout, slot))
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
    fn grid_at_or_after(&self, next: Instant, t: Instant) -> Instant {
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

    fn set_target(&mut self, to: u32) {
        if to != self.target {
            self.event(Event::Scaled {
                from: self.target,
                to,
            });
            self.target = to;
        }
    }

    // ----------------------------------------------------------------- reconcile

    /// Places the pool may fill now: the target, plus the surge while old generations are
    /// being replaced.
    fn wanted_places(&self) -> u32 {
        let rolling = self.counts.filled > self.counts.filled_current;
        self.target + if rolling { self.config.max_surge } else { 0 }
    }

    fn wants_spawn(&self) -> bool {
        self.counts.filled_current < self.target && self.counts.filled < self.wanted_places()
    }

    /// Compares wanted with actual state and queues the next step, if any.
    fn reconcile(&mut self) {
        match self.phase {
            Phase::Running => {}
            Phase::Stopping { .. } | Phase::Handover => {
                let waiting_successor = matches!(self.upgrade, UpgradeState::Killing { .. });
                if self.counts.live == 0 && self.counts.spawning == 0 && !waiting_successor {
                    self.phase = Phase::Exited;
                    self.next_maintenance = None;
                    let code = self.exit_code.unwrap_or(0);
                    self.queue.push_back(Action::Exit { code });
                }
                return;
            }
            Phase::Exited => return,
        }
        if self.wants_spawn() {
            if let Some(&i) = self.free.first() {
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
                if key.rank < RANK_IDLE || self.counts.ready > floor {
                    return self.retire(key.slot as usize, StopReason::Restart);
                }
            }
        }
        if self.counts.filled_current > self.target {
            let current = RetireKey {
                generation: self.generation,
                rank: 0,
                since: Instant::ZERO,
                slot: 0,
            };
            if let Some(&key) = self.retire_order.range(current..).next() {
                self.retire(key.slot as usize, StopReason::ScaleDown);
            }
        }
    }

    fn spawn(&mut self, i: usize) {
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
            spawned_at: self.now,
            ready: false,
            last_heartbeat: self.now,
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
        self.queue.push_back(Action::Spawn {
            worker: self.id_of(i),
            generation: self.generation,
        });
    }

    /// Asks the worker in slot `i` to stop for `reason`, or empties a place with no process.
    /// A worker already stopping keeps its ladder (a stop never resets it).
    fn retire(&mut self, i: usize, reason: StopReason) {
        self.retire_with(i, reason, false);
    }

    /// `retire`, entering the ladder at its immediate stage when `immediate` (a stop-now
    /// sends the immediate stage's signal first, not TERM then QUIT in one breath).
    fn retire_with(&mut self, i: usize, reason: StopReason, immediate: bool) {
        match &self.slots[i].state {
            SlotState::Empty => return,
            SlotState::Backoff { .. } | SlotState::GaveUp { .. } => {
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
        self.fire_ladder(i);
    }

    /// Moves a stopping worker to its ladder's immediate stage.
    fn escalate(&mut self, i: usize) {
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
    fn fire_ladder(&mut self, i: usize) {
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

    // ----------------------------------------------------------------- bookkeeping

    pub(crate) fn boot_deadline(&self, w: &Worker) -> Instant {
        w.spawned_at + self.config.boot_timeout
    }

    pub(crate) fn heartbeat_deadline(&self, w: &Worker) -> Option<Instant> {
        let timeout = self.config.heartbeat_timeout?;
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
        Some(w.last_heartbeat + allowed)
    }

    pub(crate) fn request_deadline(&self, w: &Worker) -> Option<Instant> {
        let timeout = self.config.request_timeout?;
        Some(w.oldest_busy_since? + timeout)
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
                    _ => Some(self.boot_deadline(w)),
                },
                None if w.pid.is_none() || !w.ready => Some(self.boot_deadline(w)),
                None => [self.heartbeat_deadline(w), self.request_deadline(w)]
                    .into_iter()
                    .flatten()
                    .min(),
            },
        }
    }

    fn event(&mut self, event: Event) {
        self.queue.push_back(Action::Event(event));
        debug_assert!(
            self.queue.len() <= drain_limit(self.slots.len()) * 4,
            "the action queue grew without bound: the driver is not draining poll_action"
        );
    }
}

/// Where on its ladder a stop for `reason` begins.
fn entry_stage(reason: StopReason, immediate: bool, ladder: &Ladder) -> usize {
    if immediate || reason.starts_immediate() {
        ladder.immediate_from
    } else {
        0
    }
}
