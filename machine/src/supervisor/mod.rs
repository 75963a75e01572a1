//! The supervisor: records facts in `handle`, derives the next step in `poll_action`.
//!
//! This module owns the [`Supervisor`] type, its construction and the run-loop surface:
//! `handle`/`handle_all` (inputs, then due timers), `poll_action`, `poll_timeout` and
//! `messages_due`. The work is done in the submodules, one concern each: `slot` (a place of
//! the pool and its states), `index` (the incremental counters and ordered indexes, checked
//! by `invariants`), `inputs`, `commands`, `upgrade`, `deaths`, `timers`, `scaling`,
//! `reconcile` and `queries`. Nothing here may perform IO, read a clock or hold state that
//! the slots and the few pool-wide facts of `Supervisor` do not imply (the indexes are
//! derived from them), and every effect leaves as an `Action`.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::config::{Config, ConfigError};
use crate::io::*;
use crate::output::*;
use crate::rng::SplitMix64;
use crate::time::Instant;

/// A planted bug at its rule (`drover_machine::Plant`, feature `planted`):
/// `planted!(self, Plant => planted, shipped)` is `shipped` in the shipped machine, and
/// `planted` instead when that plant is switched on. Without the feature only `shipped` is
/// compiled: the release machine is the source without the plants, not an optimizer's
/// folding of dead branches (which does not give the same code). Where a worker is
/// borrowed, `planted!(let on = self, Plant)` reads the switch first (nothing without the
/// feature) and `planted!(if on => planted, shipped)` picks. A plant that adds a step
/// instead of changing a value is a `#[cfg(feature = "planted")]` statement.
#[cfg(feature = "planted")]
macro_rules! planted {
    (let $on:ident = $sup:expr, $plant:ident) => {
        let $on = $sup.planted(crate::planted::Plant::$plant);
    };
    (if $on:ident => $planted:expr, $shipped:expr) => {
        if $on {
            $planted
        } else {
            $shipped
        }
    };
    ($sup:expr, $plant:ident => $planted:expr, $shipped:expr) => {
        if $sup.planted(crate::planted::Plant::$plant) {
            $planted
        } else {
            $shipped
        }
    };
}
#[cfg(not(feature = "planted"))]
macro_rules! planted {
    (let $on:ident = $sup:expr, $plant:ident) => {};
    (if $on:ident => $planted:expr, $shipped:expr) => {
        $shipped
    };
    ($sup:expr, $plant:ident => $planted:expr, $shipped:expr) => {
        $shipped
    };
}

/// How much later than the deadline it asked for the supervisor may wake before it counts
/// as having been away (`Event::CameBack`): far above a busy loop's lateness, far below
/// the heartbeat timeouts worth setting.
pub const ABSENCE_MIN: core::time::Duration = core::time::Duration::from_secs(1);

mod commands;
mod counters;
mod deaths;
mod dump;
mod index;
mod inputs;
mod invariants;
mod queries;
mod reconcile;
mod scaling;
mod slot;
mod timers;
mod upgrade;

pub use counters::{Counters, ExitReason};
pub use invariants::Violation;
pub use queries::{WorkerState, WorkerView};
pub use upgrade::{Succession, UpgradeState};

use index::{Counts, RetireKey};
use slot::{Slot, SlotState};
use timers::Timer;

/// The supervisor's overall state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Serving: the pool is kept at its target.
    Running,
    /// Draining every worker; `immediate` once escalated.
    Stopping {
        /// Every worker entered its ladder's immediate stage.
        immediate: bool,
    },
    /// A successor took over: draining every worker, then exit 0. Reverts to `Running` if
    /// the successor dies before the drain ends.
    Handover,
    /// `Exit` was emitted; inputs are ignored.
    Exited,
}

/// A prefork supervisor as a pure state machine: it holds the pool's state and decides
/// every spawn, signal and exit, but performs none of them. A driver (the `drover-os` shell,
/// the `drover-sim` simulator, a test harness) hands in facts stamped with the time and
/// carries out the actions that come back.
///
/// The methods fall into four groups:
///
/// - **Construction.** [`new`](Self::new) validates a [`Config`] and starts the pool at a
///   given time; [`succeeding`](Self::succeeding) does the same for the successor of a live
///   upgrade. The first spawns are ready to poll at once.
/// - **Inputs.** [`handle`](Self::handle) applies one [`Input`] at `now`, then fires every
///   timer due at `now`. [`handle_all`](Self::handle_all) applies several facts read
///   together (every worker's heartbeat and load from shared memory) as one input, so that
///   no deadline fires between two of them.
/// - **Outputs.** [`poll_action`](Self::poll_action) returns the next [`Action`] to
///   perform; [`poll_timeout`](Self::poll_timeout) when the machine next needs an
///   [`Input::Tick`]; [`messages_due`](Self::messages_due) how long worker messages may
///   wait unread.
/// - **Queries.** [`phase`](Self::phase), [`target`](Self::target),
///   [`workers`](Self::workers), [`is_settled`](Self::is_settled) and the other getters
///   read the state for status reports and checks and change nothing;
///   [`check_invariants`](Self::check_invariants) recomputes the derived state and
///   compares.
///
/// # Call order
///
/// The run-loop contract (the [crate] documentation has the details and an example):
///
/// 1. `handle` or `handle_all`, with a `now` that never decreases.
/// 2. `poll_action` until it returns `None`, performing each action. The results of an
///    action (`Spawned`, `SpawnFailed`, `SuccessorStarted`) may be handed in with `handle`
///    within the drain.
/// 3. Only after the drain, reap exited children and hand each in as [`Input::Exited`]
///    (then drain again): a zombie keeps its pid until reaped, so no signal of the drain can
///    reach a recycled pid.
/// 4. Wait for the next OS event or until `poll_timeout` (then `Input::Tick`), reading
///    worker messages no later than `messages_due`; go to 1.
///
/// `poll_timeout` and `messages_due` change only through `handle` and `poll_action`, so
/// they are read after the drain. Queries may be called at any point.
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
    /// Slots whose address the driver holds open (`Config::slot_addresses`): spawned in
    /// since their last `ReleaseSlot`.
    pub(crate) addressed: BTreeSet<u32>,
    pub(crate) counts: Counts,
    pub(crate) queue: VecDeque<Action>,
    pub(crate) spawn_rate: u32,
    /// A rolling restart step is held by `max_unavailable` and `RolloutHeld` said so: the
    /// trace tells a hold once, not at every reconcile while it lasts.
    pub(crate) rollout_held: bool,
    /// The maintenance tick's grid: ticks fall every `maintenance_interval` from here on.
    /// Always set while the policy ticks and the pool runs; `poll_timeout` shows it only
    /// when a tick could change something (`maintenance_wakeup`), and ticks skipped while it
    /// was hidden are no-ops by definition (`run_timers` moves the grid past them).
    pub(crate) next_maintenance: Option<Instant>,
    /// The last `intensity_deaths + 1` deaths, oldest first.
    pub(crate) deaths: VecDeque<Instant>,
    /// When the last `quick_restart_rate` quick refills were scheduled, oldest first.
    pub(crate) quick: VecDeque<Instant>,
    pub(crate) crash_looping: bool,
    /// The last instant this supervisor came back from an absence (a wake-up more than
    /// `ABSENCE_MIN` past the deadline it asked for): no worker's heartbeat is judged
    /// from before it.
    pub(crate) back_at: Instant,
    pub(crate) backlog: BTreeMap<u32, u32>,
    pub(crate) queued: u64,
    pub(crate) upgrade: UpgradeState,
    /// Who hears that the pool is ready: the service manager, or (a successor before the
    /// handover) the predecessor.
    pub(crate) succession: Succession,
    /// The pool's readiness was told for the current run.
    pub(crate) announced: bool,
    /// The pool was ready once (told to the service manager or, in a successor, to the
    /// predecessor): its start is over, and `Restart::fail_start` no longer applies.
    pub(crate) started: bool,
    /// `Event::StartFailed` went out.
    pub(crate) start_failed: bool,
    pub(crate) exit_code: Option<i32>,
    /// What was done so far, for metrics: observation only, read by no decision.
    pub(crate) counters: Counters,
    rng: SplitMix64,
    #[cfg(feature = "planted")]
    plant: Option<crate::planted::Plant>,
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
            addressed: BTreeSet::new(),
            counts: Counts::default(),
            queue: VecDeque::new(),
            spawn_rate: 1,
            rollout_held: false,
            next_maintenance: None,
            deaths: VecDeque::new(),
            quick: VecDeque::new(),
            crash_looping: false,
            back_at: now,
            backlog: BTreeMap::new(),
            queued: 0,
            upgrade: UpgradeState::Idle,
            succession: Succession::InCharge,
            announced: false,
            started: false,
            start_failed: false,
            exit_code: None,
            counters: Counters::default(),
            #[cfg(feature = "planted")]
            plant: None,
        };
        s.grow_slots(slot_count);
        s.schedule_maintenance();
        Ok(s)
    }

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
        s.succession = Succession::Awaiting { asked: false };
        Ok(s)
    }

    /// Switches planted bug `plant` on, in place of any other (test builds only: the
    /// simulator's `--canary NAME`). Call it before the first input.
    #[cfg(feature = "planted")]
    #[doc(hidden)]
    pub fn plant(&mut self, plant: crate::planted::Plant) {
        self.plant = Some(plant);
    }

    #[cfg(feature = "planted")]
    fn planted(&self, plant: crate::planted::Plant) -> bool {
        self.plant == Some(plant)
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

    /// Coming back later than it meant to (a SIGSTOP, a cgroup freeze, a VM pause, heavy
    /// swapping): the supervisor was not watching, so it cannot know whether its workers
    /// beat meanwhile, and their beats may wait unsent behind a full socket. Every worker's
    /// heartbeat window starts afresh now, before any timer of this `handle` runs.
    fn came_back(&mut self, asked: Instant) {
        self.back_at = self.now;
        self.event(Event::CameBack {
            late: self.now.saturating_since(asked),
        });
        for i in 0..self.slots.len() {
            self.detach(i);
            self.attach(i);
        }
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
        let asked = self.poll_timeout();
        self.now = now;
        if let Some(asked) = asked.filter(|&a| now > a + ABSENCE_MIN && self.phase != Phase::Exited)
        {
            self.came_back(asked);
        }
        (self.phase != Phase::Exited).then_some(announced)
    }

    /// After the inputs: every timer due at `now`.
    #[inline]
    fn end(&mut self, announced: Option<Instant>) {
        self.run_timers(announced);
        self.announce();
        #[cfg(debug_assertions)]
        if let Err(v) = self.check_invariants() {
            panic!("invariant violated after handle: {v}");
        }
    }

    /// The next action to perform, or `None` when there is nothing to do until the next
    /// input or `poll_timeout()`. Spawns and retirements are derived here from wanted vs
    /// actual state, so they are never stale.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        // Bounded: each turn of the loop drops one queued action.
        loop {
            if self.queue.is_empty() {
                self.reconcile_until_queued();
                // A step of reconcile (emptying an old generation's place) may settle the
                // pool with no input to follow: say so now, not at the next input.
                if self.queue.is_empty() {
                    self.announce();
                }
            }
            // Forks take time, and their answers go in at a later instant. Whatever else a
            // decision queued (signals, events) goes out first, at the instant it was
            // decided: a hung worker's KILL does not wait behind a batch of slow forks, and
            // an event is never reported after facts that arrived once it was made.
            let at = self
                .queue
                .iter()
                .position(|a| !matches!(a, Action::Spawn { .. } | Action::StartSuccessor))
                .unwrap_or(0);
            let action = self.queue.remove(at)?;
            // A spawn queued in a batch waits for the forks before it, which take time; if
            // the worker gave up meanwhile (its boot timed out while others forked), the
            // fork would only make a stray to kill.
            if let Action::Spawn { worker, .. } = action {
                if !self.awaits_fork(worker) {
                    continue;
                }
                self.hand_out_fork(worker);
            }
            self.counters.count_action(&action);
            return Some(action);
        }
    }

    /// Reconciles until a step queues an action or changes nothing. Emptying a place with
    /// no process (an old generation's backoff in a rolling restart) queues nothing, and
    /// the spawn it makes room for must not wait for the next input.
    fn reconcile_until_queued(&mut self) {
        // Bounded: each silent step empties one place.
        for _ in 0..=self.slots.len() {
            let before = self.counts;
            self.reconcile();
            if !self.queue.is_empty() || self.counts == before {
                return;
            }
        }
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
        Timer::ALL
            .into_iter()
            .filter_map(|timer| self.deadline(timer))
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

    fn event(&mut self, event: Event) {
        self.queue.push_back(Action::Event(event));
        debug_assert!(
            self.queue.len() <= drain_limit(self.slots.len()) * 4,
            "the action queue grew without bound: the driver is not draining poll_action"
        );
    }
}
