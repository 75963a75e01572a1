//! The judge: decision oracles. Where the simulator's safety checks (`world::oracles`)
//! check that the machine never does something impossible (a signal to a reaped pid, a
//! process that outlives its ladder), the judge checks that each decision is the one the
//! rules and the config prescribe, against its own record of what the supervisor was told
//! and when (each process's fork answer, READY=1, beats, load reports, exits, commands),
//! never against the machine's bookkeeping. Each rule is one `Oracle`; a complaint names it,
//! says what was decided and what the rule required.
//!
//! The judge is world-agnostic: any world that runs the machine through a `Driver` feeds it
//! from its `Os` hooks (`input` in `handling`, `handled`, `action` in `performing`, `event`)
//! and calls `step` at the end of each of its own steps ("it should have happened by now").
//! Its facts are only those every such world knows: the inputs handed in, with their
//! instant, and the actions and events the machine emitted. So the simulator and the
//! property tests (sim/tests/properties) judge the machine by the same rules. A world that
//! hands in facts the supervisor could never be told (a `Spawned` with no `Spawn` before
//! it, say) gets no judgement on them: the judge records a process only from a `Spawn`
//! performed and its answer.
//!
//! Each file holds the oracles of one family of rules. A file must not change the world or
//! the machine: it only looks and complains.

mod counters;
mod demand;
mod pool;
mod restarts;
mod slots;
mod start;
mod stops;
mod timeouts;
mod upgrade;

use core::time::Duration;
use std::collections::BTreeMap;

use drover_machine::{Action, Event, Input, Instant, Phase, Pid, Readiness, Supervisor, WorkerId};

/// What the pool, stop and upgrade oracles remember between hooks (`pool.rs`, `stops.rs`,
/// `upgrade.rs`): each file keeps its own part.
#[derive(Default)]
struct Books {
    /// The inputs of the `handle` in progress, with their instant, read at its end.
    inputs: Vec<(Instant, Input)>,
    counters: counters::CounterBooks,
    pool: pool::PoolBooks,
    demand: demand::DemandBooks,
    stops: stops::StopBooks,
    start: start::StartBooks,
    upgrade: upgrade::UpgradeBooks,
    slots: slots::SlotBooks,
}

/// One decision rule the judge holds the machine to. The name is what a complaint and
/// `--canary NAME`'s expectation use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Oracle {
    /// A boot-timeout kill comes at the fork's answer + `boot_timeout`, within the slack.
    BootTimeout,
    /// A heartbeat kill comes at the last beat + the timeout the worker was started with.
    HeartbeatTimeout,
    /// A request-timeout kill comes at the oldest request's start + `request_timeout`.
    RequestTimeout,
    /// `max_requests` retires at the limit, not before and not never.
    MaxRequests,
    /// Idle retirement never before `idle_timeout` of idleness.
    IdleTimeout,
    /// A respawn waits the backoff the restart policy prescribes for that death.
    RestartBackoff,
    /// A crash loop is declared exactly when the intensity rule says.
    CrashLoop,
    /// A rolling restart keeps Ready ≥ target − max_unavailable and places ≤ target +
    /// max_surge; an immediate restart retires every earlier worker at once.
    RollingBounds,
    /// Scale-down: one per tick, empty or booting before idle, never busy while idle exist.
    ScaleDown,
    /// A stop enters its ladder at the right stage and each signal comes at its stage time.
    StopLadder,
    /// The spawn ramp never exceeds its doubling bound or `max`.
    SpawnRamp,
    /// An upgrade rolls back by `upgrade_timeout` and never hands over before Ready; a
    /// successor that dies after the handover makes this supervisor resume.
    Upgrade,
    /// The target follows the policy's rule for the demand reported: ondemand answers a
    /// backlog at once; a tick shrinks only for idleness or a spare surplus.
    Demand,
    /// The machine's counters (for metrics) agree with the actions performed and the
    /// inputs handed in.
    Counters,
    /// With `fail_start`, a failure before the pool was first ready fails the start (once,
    /// at once) and the run exits 1; no other failure does.
    StartFailure,
    /// Where each slot is an address: spawns only below the target, the highest slot
    /// retired first, released exactly when emptied at or above the target, and a taken
    /// address never counted as the program's failure.
    SlotAddresses,
}

impl Oracle {
    pub const ALL: [Oracle; 16] = [
        Oracle::BootTimeout,
        Oracle::HeartbeatTimeout,
        Oracle::RequestTimeout,
        Oracle::MaxRequests,
        Oracle::IdleTimeout,
        Oracle::RestartBackoff,
        Oracle::CrashLoop,
        Oracle::RollingBounds,
        Oracle::ScaleDown,
        Oracle::StopLadder,
        Oracle::SpawnRamp,
        Oracle::Upgrade,
        Oracle::Demand,
        Oracle::Counters,
        Oracle::StartFailure,
        Oracle::SlotAddresses,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Oracle::BootTimeout => "boot-timeout",
            Oracle::HeartbeatTimeout => "heartbeat-timeout",
            Oracle::RequestTimeout => "request-timeout",
            Oracle::MaxRequests => "max-requests",
            Oracle::IdleTimeout => "idle-timeout",
            Oracle::RestartBackoff => "restart-backoff",
            Oracle::CrashLoop => "crash-loop",
            Oracle::RollingBounds => "rolling-bounds",
            Oracle::ScaleDown => "scale-down",
            Oracle::StopLadder => "stop-ladder",
            Oracle::SpawnRamp => "spawn-ramp",
            Oracle::Upgrade => "upgrade",
            Oracle::Demand => "demand",
            Oracle::Counters => "counters",
            Oracle::StartFailure => "start-failure",
            Oracle::SlotAddresses => "slot-addresses",
        }
    }

    pub fn from_name(name: &str) -> Option<Oracle> {
        Oracle::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// One decision the judge found wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complaint {
    pub oracle: Oracle,
    /// The instant of the hook that found it.
    pub at: Instant,
    pub what: String,
}

/// One worker process as the supervisor was told of it: from its fork's answer (a
/// `Spawned` that answers a `Spawn` performed) to its `Exited` handed in. A process that
/// died unreaped is still here: the supervisor cannot know of the death.
struct Proc {
    worker: WorkerId,
    /// The generation of its `Spawn` (`DROVER_GENERATION`).
    generation: u32,
    /// The heartbeat timeout in force when its `Spawn` was performed (`WATCHDOG_USEC`).
    watchdog: Option<Duration>,
    /// READY=1 was handed in, or it was forked while readiness was at spawn.
    ready: bool,
    /// Its main process's exit (`MainExited`) was handed in.
    main_reaped: bool,
}

/// The judge's process table: by serial, so that iteration is in fork order and a pid
/// reused after its `Exited` names a new process.
#[derive(Default)]
struct Table {
    procs: BTreeMap<u64, Proc>,
    by_pid: BTreeMap<Pid, u64>,
    serial: u64,
    /// `Spawn`s performed and not yet answered: their generation and the heartbeat timeout
    /// in force (`WATCHDOG_USEC` of the child).
    spawning: BTreeMap<WorkerId, (u32, Option<Duration>)>,
}

/// The decision oracles and all they remember between hooks. See the module comment.
#[derive(Default)]
pub struct Judge {
    /// The instant of the hook being judged.
    now: Instant,
    table: Table,
    watch: timeouts::Watch,
    restarts: restarts::Restarts,
    books: Books,
    complaints: Vec<Complaint>,
    /// A complaint was made: what should have happened by now is no longer judged (one
    /// wrong decision makes the rest of the run unjudgeable, as it ends a sim run).
    failed: bool,
    /// The machine performed `Exit`.
    exited: bool,
    /// Inputs of a `handle` are being handed in (its first hook has come).
    in_handle: bool,
    /// The wake-up the supervisor asked for at the end of the last drain.
    asked_at_rest: Option<Instant>,
}

impl Judge {
    pub fn new() -> Judge {
        Judge::default()
    }

    /// The complaints since the last call, oldest first.
    pub fn take_complaints(&mut self) -> Vec<Complaint> {
        std::mem::take(&mut self.complaints)
    }

    /// The machine decided against `oracle`'s rule.
    fn complain(&mut self, oracle: Oracle, what: String) {
        self.failed = true;
        self.complaints.push(Complaint {
            oracle,
            at: self.now,
            what,
        });
    }

    fn done(&self) -> bool {
        self.failed || self.exited
    }

    /// An event of the machine.
    pub fn event(&mut self, sup: &Supervisor, now: Instant, event: &Event) {
        self.now = now;
        // First: a backoff scheduled for a taken address is this rule's to name.
        self.judge_slot_event(sup, event);
        self.judge_timeout_event(sup, event);
        self.judge_restart_event(sup, event);
        // Before the stop books: which stop chose the exit code is read from them.
        self.judge_start_event(sup, event);
        self.judge_pool_event(sup, event);
        self.judge_stop_event(sup, event);
        self.judge_upgrade_event(event);
        self.judge_demand_event(sup, event);
    }

    /// An input the driver hands the supervisor at `now`, before it is handled: what the
    /// supervisor is told is the evidence its decisions are judged by.
    pub fn input(&mut self, sup: &Supervisor, now: Instant, input: &Input) {
        self.now = now;
        if !std::mem::replace(&mut self.in_handle, true) {
            // The state is as the supervisor's `handle` will find it.
            self.judge_absence(sup.poll_timeout());
            self.judge_demand_begin(sup.target(), sup.phase() == Phase::Running);
        }
        // A fork's answer with no `Spawn` performed before it is no fact of the pool's: the
        // machine ignores it, and so must the books (only a world that hands in strays,
        // as the property tests do, sends one).
        let stray = match *input {
            Input::Spawned { worker, .. } | Input::SpawnFailed { worker, .. } => {
                !self.table.spawning.contains_key(&worker)
            }
            _ => false,
        };
        // Before the process table forgets an exited pid: whose exit it was matters.
        self.judge_demand_input(sup, input);
        self.judge_counter_input(input);
        self.note_process(sup, input);
        if stray {
            return;
        }
        self.judge_slot_input(sup, input);
        // The restart records read the worker's record before the exit drops it.
        self.judge_restart_input(sup, input);
        self.judge_timeout_input(sup, input);
        self.books.inputs.push((now, input.clone()));
    }

    /// The process table, from the inputs: a process is the answer to a `Spawn` performed.
    fn note_process(&mut self, sup: &Supervisor, input: &Input) {
        let t = &mut self.table;
        match *input {
            Input::Spawned { worker, pid } => {
                let Some((generation, watchdog)) = t.spawning.remove(&worker) else {
                    return;
                };
                if t.by_pid.contains_key(&pid) {
                    return;
                }
                t.serial += 1;
                t.by_pid.insert(pid, t.serial);
                t.procs.insert(
                    t.serial,
                    Proc {
                        worker,
                        generation,
                        watchdog,
                        ready: sup.config().readiness == Readiness::AtSpawn,
                        main_reaped: false,
                    },
                );
            }
            Input::SpawnFailed { worker, .. } => {
                t.spawning.remove(&worker);
            }
            Input::Ready { worker } => {
                if let Some(p) = t.procs.values_mut().find(|p| p.worker == worker) {
                    p.ready = true;
                }
            }
            Input::MainExited { pid, .. } => {
                if let Some(p) = t.by_pid.get(&pid).and_then(|s| t.procs.get_mut(s)) {
                    p.main_reaped = true;
                }
            }
            Input::Exited { pid, .. } => {
                if let Some(serial) = t.by_pid.remove(&pid) {
                    t.procs.remove(&serial);
                }
            }
            _ => {}
        }
    }

    /// An action the driver is about to perform at `now`.
    pub fn action(&mut self, sup: &Supervisor, now: Instant, action: &Action) {
        self.now = now;
        match *action {
            Action::Spawn { worker, generation } => {
                let watchdog = sup.config().heartbeat_timeout;
                self.table.spawning.insert(worker, (generation.0, watchdog));
            }
            Action::Exit { .. } => self.exited = true,
            _ => {}
        }
        self.judge_restart_action(sup, action);
        self.judge_start_action(action);
        self.judge_counter_action(action);
        // Pool before stops: the pool's counts exclude the process being signalled, which
        // the stop books then start to track.
        self.judge_pool_action(sup, action);
        // Upgrade before stops: a stop's later signals are no new decision to hand over.
        self.judge_upgrade_action(sup, action);
        self.judge_stop_action(sup, action);
        self.judge_demand_action(sup, action);
        self.judge_slot_action(sup, action);
    }

    /// After every `handle`/`handle_all` (at `now`) and its timers.
    pub fn handled(&mut self, sup: &Supervisor, now: Instant) {
        self.now = now;
        if !std::mem::take(&mut self.in_handle) {
            // A `handle` with no input (a tick) comes after a drain, as it left the state.
            self.judge_absence(self.asked_at_rest);
            let running = self.books.demand.last_phase_running;
            self.judge_demand_begin(sup.target(), running);
        }
        self.judge_timeout_handled(sup);
        self.judge_restart_handled(sup);
        self.judge_pool_handled(sup);
        self.judge_demand_handled(sup);
        self.judge_slot_handled(sup);
        // The inputs of this handle, as the world handed them in: commands, load reports,
        // the successor's word.
        for (at, input) in std::mem::take(&mut self.books.inputs) {
            pool::note_input(&mut self.books.pool, &input);
            stops::note_input(&mut self.books.stops, at, &input);
            upgrade::note_input(&mut self.books.upgrade, at, &input);
        }
        let stops = &mut self.books.stops;
        stops.last_handled = Some(now);
        if !std::mem::take(&mut stops.nested) {
            stops.drain_from = Some(now);
        }
        self.books.upgrade.last_handled = Some(now);
    }

    /// After every drain of the driver's (at `now`); `complete` when no action was left.
    pub fn drained(&mut self, sup: &Supervisor, now: Instant, complete: bool) {
        self.now = now;
        self.asked_at_rest = sup.poll_timeout();
        self.judge_demand_drained(sup, complete);
        self.judge_restart_now_drained(complete);
        self.judge_counters_drained(sup);
        self.judge_slot_drained(sup, complete);
    }

    /// After every step of the world (at `now`): what should have happened by now.
    pub fn step(&mut self, sup: &Supervisor, now: Instant) {
        self.now = now;
        self.judge_timeout_step(sup);
        self.judge_restart_step(sup);
        self.judge_start_step();
        self.judge_pool_step(sup);
        self.judge_stop_step();
        self.judge_upgrade_step();
        self.judge_demand_step();
        self.judge_slot_step(sup);
    }
}
