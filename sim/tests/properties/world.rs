//! The model OS: a process table the `Driver` runs the supervisor on, with the case's
//! faults, and the safety checks of every `handle` and every drain.
//!
//! The `Os` methods cannot return an error, so the first failed check is kept in
//! `World::failure` (with the trace up to it) and the test ends with it after the driver
//! call in progress; the model never panics on its own account.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Config, Duration, Event, ExitStatus, Generation, Input, Instant, Os, Phase, Pid,
    RollbackReason, Signal, SpawnError, StopReason, Succession, Supervisor, UpgradeState, WorkerId,
};

use drover_sim::judge::Judge;

use crate::millis;
use crate::strategies::Faults;

/// The longest a slow fork blocks the loop.
const SLOW_FORK_MAX_MS: u64 = 5_000;
/// Trace lines a failure message shows (the tail of the run).
const TRACE_SHOWN: usize = 80;

/// The model OS's decisions, seeded per step (splitmix64).
pub(crate) struct Dice(pub u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn percent(&mut self) -> u64 {
        self.next() % 100
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Worker(WorkerId),
    Successor,
}

#[derive(Debug)]
pub(crate) struct Proc {
    pub kind: Kind,
    /// KILL (or KillSuccessor) was sent to it.
    killed: bool,
    /// Created after `Exit`: the driver would be gone; nobody owns it.
    after_exit: bool,
    /// A successor that starts but never gets ready.
    hangs: bool,
}

pub(crate) struct World {
    pub now: Instant,
    next_pid: u32,
    pub dice: Dice,
    pub faults: Faults,
    /// Faults stopped: every spawn succeeds at once, every KILL takes effect at once,
    /// graceful signals are obeyed or ignored as `faults.healed_obey` says.
    pub healed: bool,
    /// Processes not yet reaped (alive, or zombies awaiting `waitpid`).
    pub procs: BTreeMap<Pid, Proc>,
    /// Exits (`Exited`, `MainExited`) the next reaps find, in order.
    zombies: VecDeque<Input>,
    /// Pids whose exit is queued or delayed: no longer alive.
    dead: BTreeSet<Pid>,
    /// KILLed processes whose exit comes at a later step (`Op::FlushDelayed`).
    delayed: Vec<Pid>,
    reaped: BTreeSet<Pid>,
    /// Worker messages sent and not read yet.
    pub reports: Vec<Input>,
    /// First signal sent to a worker pid: the start of its ladder.
    first_signal: BTreeMap<Pid, Instant>,
    /// The longest time_to_kill(0) of every ladder that can be in force.
    pub max_ttk: Duration,
    allowed_codes: BTreeSet<i32>,
    pub exit: Option<(Instant, i32)>,
    /// The last time the phase left `Running`.
    pub stop_began: Option<Instant>,
    /// During a healed rolling restart: Ready workers at its start, lowered by every
    /// scale-down. Ready capacity may not drop below this - max_unavailable while Running.
    pub rollout_ready: Option<u32>,
    /// The phase before the input being handled (`handling` of the first input of a
    /// `handle_all`); an empty `handle_all` (a tick) has none and takes `last_phase`.
    phase_before: Option<Phase>,
    last_phase: Phase,
    /// Workers a `Spawn` was performed for.
    forked: BTreeSet<WorkerId>,
    trace: Vec<String>,
    pub failure: Option<String>,
    /// The simulator's decision oracles, fed from the hooks below and at the end of every
    /// wake-up (`Model::check`).
    pub judge: Judge,
    /// `AskHandover` events seen.
    pub handover_asked: u32,
    /// `PoolReady` events seen.
    pub pool_ready: u32,
    /// `TookOver` seen.
    pub took_over: bool,
}

impl World {
    pub fn new(all_configs: &[Config], faults: Faults) -> World {
        let max_ttk = all_configs
            .iter()
            .map(|c| c.ladder.time_to_kill(0))
            .max()
            .unwrap_or_default();
        let mut allowed_codes = BTreeSet::from([0]);
        for c in all_configs {
            allowed_codes.extend(c.exit_codes());
        }
        World {
            now: Instant::ZERO,
            next_pid: 100,
            dice: Dice(0),
            faults,
            healed: false,
            procs: BTreeMap::new(),
            zombies: VecDeque::new(),
            dead: BTreeSet::new(),
            delayed: Vec::new(),
            reaped: BTreeSet::new(),
            reports: Vec::new(),
            first_signal: BTreeMap::new(),
            max_ttk,
            allowed_codes,
            exit: None,
            stop_began: None,
            rollout_ready: None,
            phase_before: None,
            last_phase: Phase::Running,
            forked: BTreeSet::new(),
            trace: Vec::new(),
            failure: None,
            judge: Judge::new(),
            handover_asked: 0,
            pool_ready: 0,
            took_over: false,
        }
    }

    /// Keeps the first failure, with the tail of the trace up to it.
    pub fn fail(&mut self, msg: String) {
        if self.failure.is_none() {
            let from = self.trace.len().saturating_sub(TRACE_SHOWN);
            self.failure = Some(format!(
                "{msg}\n--- last trace lines ---\n{}",
                self.trace[from..].join("\n")
            ));
        }
    }

    /// The judge's complaints fail the case as the model's own checks do.
    pub fn take_judgement(&mut self) {
        for c in self.judge.take_complaints() {
            self.fail(format!(
                "WRONG DECISION at {}: oracle {}: {}",
                c.at,
                c.oracle.name(),
                c.what
            ));
        }
    }

    pub fn fresh_pid(&mut self) -> Pid {
        self.next_pid += 1;
        Pid(self.next_pid)
    }

    pub fn new_proc(&mut self, kind: Kind) -> Pid {
        let pid = self.fresh_pid();
        let after_exit = self.exit.is_some();
        self.procs.insert(
            pid,
            Proc {
                kind,
                killed: false,
                after_exit,
                hangs: false,
            },
        );
        pid
    }

    pub fn alive(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid) && !self.dead.contains(&pid)
    }

    /// Live worker processes, tracked or stray.
    pub fn live_workers(&self) -> Vec<Pid> {
        self.procs
            .iter()
            .filter(|(&pid, p)| matches!(p.kind, Kind::Worker(_)) && self.alive(pid))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Successors that have not exited yet (a KILLed one may still be on its way out).
    pub fn running_successors(&self) -> Vec<Pid> {
        self.procs
            .iter()
            .filter(|(&pid, p)| {
                p.kind == Kind::Successor && (self.alive(pid) || self.delayed.contains(&pid))
            })
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Whether the successor of the upgrade in flight is one that never gets ready.
    pub fn successor_hangs(&self, upgrade: UpgradeState) -> bool {
        match upgrade {
            UpgradeState::Started { pid, .. } => self.procs.get(&pid).is_some_and(|p| p.hangs),
            _ => false,
        }
    }

    /// The process ends: the next reap finds it. Also for a delayed KILL's exit.
    pub fn exits(&mut self, pid: Pid, status: ExitStatus) {
        self.delayed.retain(|d| *d != pid);
        self.dead.insert(pid);
        self.zombies.push_back(Input::Exited { pid, status });
    }

    /// Only the main process of the worker's group ends; the group runs on.
    pub fn main_exits(&mut self, pid: Pid, status: ExitStatus) {
        self.zombies.push_back(Input::MainExited { pid, status });
    }

    /// `waitpid` reports a pid the machine never saw (a child inherited across an upgrade).
    pub fn unknown_exits(&mut self) {
        let pid = self.fresh_pid();
        self.zombies.push_back(Input::Exited {
            pid,
            status: ExitStatus::Code(0),
        });
    }

    /// The delayed KILLs take effect. False if there were none.
    pub fn flush_delayed(&mut self) -> bool {
        let delayed = std::mem::take(&mut self.delayed);
        for &pid in &delayed {
            self.exits(pid, ExitStatus::Signaled(9));
        }
        !delayed.is_empty()
    }

    /// KILL (or KillSuccessor) reached a live process: it ends now, or at a later step.
    fn killed(&mut self, pid: Pid) {
        if !self.healed && self.dice.percent() < self.faults.kill_delay {
            self.dead.insert(pid);
            self.delayed.push(pid);
        } else {
            self.exits(pid, ExitStatus::Signaled(9));
        }
    }

    fn check_timeout(&mut self, sup: &Supervisor, now: Instant) {
        if let Some(at) = sup.poll_timeout() {
            if at <= now {
                self.fail(format!("poll_timeout {at} <= now {now}"));
            }
        }
    }
}

impl Os for World {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn spawn(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        generation: Generation,
    ) -> Result<Pid, SpawnError> {
        if generation != sup.generation() {
            self.fail(format!(
                "spawn of {worker:?} for generation {generation:?}, current {:?}",
                sup.generation()
            ));
        }
        // Not "a worker that is Spawning": a spawn queued early in a drain may name a worker
        // retired by a later input of the same drain (a failed fork that ends the pool, a
        // slow one past its boot timeout); the machine kills what it starts, which the
        // orphan check sees.
        if !self.forked.insert(worker) {
            self.fail(format!("{worker:?} forked twice"));
        }
        let r = self.dice.percent();
        if !self.healed && r < self.faults.spawn_fail {
            return Err(SpawnError::Resources);
        }
        if !self.healed && r < self.faults.spawn_fail + self.faults.slow_fork {
            // fork blocks the loop: time passes inside the drain; it may still fail.
            self.now = self.now + millis(1 + self.dice.next() % SLOW_FORK_MAX_MS);
            if self.dice.percent() < 20 {
                return Err(SpawnError::Resources);
            }
        }
        Ok(self.new_proc(Kind::Worker(worker)))
    }

    fn signal(
        &mut self,
        _: &Supervisor,
        worker: WorkerId,
        pid: Pid,
        signal: Signal,
        reason: StopReason,
    ) {
        if self.reaped.contains(&pid) {
            return self.fail(format!(
                "{signal} ({reason}) for {worker:?} aimed at pid {pid:?}, already reaped"
            ));
        }
        let Some(proc) = self.procs.get_mut(&pid) else {
            return self.fail(format!("{signal} aimed at pid {pid:?}, never spawned"));
        };
        if proc.kind != Kind::Worker(worker) {
            let kind = proc.kind;
            return self.fail(format!(
                "{signal} for {worker:?} aimed at pid {pid:?}, which is {kind:?}"
            ));
        }
        if signal == Signal::Kill {
            proc.killed = true;
        }
        self.first_signal.entry(pid).or_insert(self.now);
        if !self.alive(pid) {
            return;
        }
        if signal == Signal::Kill {
            self.killed(pid);
            return;
        }
        let r = self.dice.percent();
        if (!self.healed && r < self.faults.term_exit) || (self.healed && self.faults.healed_obey) {
            self.exits(pid, ExitStatus::Code(0));
        }
    }

    fn start_successor(&mut self, _: &Supervisor) -> Result<Pid, SpawnError> {
        let r = self.dice.percent();
        if !self.healed && r < self.faults.successor_fail {
            return Err(SpawnError::Exec);
        }
        let pid = self.new_proc(Kind::Successor);
        if !self.healed && r < self.faults.successor_fail + self.faults.successor_slow {
            if let Some(proc) = self.procs.get_mut(&pid) {
                proc.hangs = true;
            }
        }
        Ok(pid)
    }

    fn kill_successor(&mut self, _: &Supervisor, pid: Pid, reason: RollbackReason) {
        if self.reaped.contains(&pid) {
            return self.fail(format!(
                "KillSuccessor ({reason:?}) aimed at pid {pid:?}, already reaped"
            ));
        }
        let Some(proc) = self.procs.get_mut(&pid) else {
            return self.fail(format!("KillSuccessor aimed at pid {pid:?}, never started"));
        };
        if proc.kind != Kind::Successor {
            let kind = proc.kind;
            return self.fail(format!(
                "KillSuccessor aimed at pid {pid:?}, which is {kind:?}"
            ));
        }
        proc.killed = true;
        if self.alive(pid) {
            self.killed(pid);
        }
    }

    fn exit(&mut self, _: &Supervisor, code: i32) {
        if !self.allowed_codes.contains(&code) {
            self.fail(format!(
                "Exit with code {code}, expected one of {:?}",
                self.allowed_codes
            ));
        }
        self.exit = Some((self.now, code));
    }

    /// Readiness is told to the right party, once: a successor asks its predecessor for the
    /// handover (once, and never after the takeover); only a supervisor in charge tells the
    /// service manager.
    fn event(&mut self, sup: &Supervisor, now: Instant, event: Event) {
        match &event {
            Event::AskHandover => {
                self.handover_asked += 1;
                if self.handover_asked > 1 || self.took_over {
                    self.fail(format!(
                        "AskHandover at {now}: asked {} times, took over: {}",
                        self.handover_asked, self.took_over
                    ));
                }
            }
            Event::PoolReady { .. } => {
                self.pool_ready += 1;
                if sup.succession() != Succession::InCharge {
                    self.fail(format!("PoolReady at {now} from a successor not in charge"));
                }
            }
            Event::TookOver { .. } => self.took_over = true,
            _ => {}
        }
        self.judge.event(sup, now, &event);
        self.take_judgement();
    }

    fn read_workers(&mut self, _: &Supervisor, _: Instant, into: &mut Vec<Input>) -> bool {
        into.append(&mut self.reports);
        true
    }

    fn reap(&mut self, _: &Supervisor) -> Option<Input> {
        let input = self.zombies.pop_front()?;
        if let Input::Exited { pid, .. } = input {
            if !self.reaped.insert(pid) {
                self.fail(format!("model error: pid {pid:?} reaped twice"));
            }
            self.procs.remove(&pid);
            self.dead.remove(&pid);
            self.first_signal.remove(&pid);
        }
        Some(input)
    }

    fn handling(&mut self, sup: &Supervisor, now: Instant, input: &Input) {
        if *input != Input::Tick {
            self.trace.push(input_line(now, input));
        }
        self.phase_before.get_or_insert(sup.phase());
        self.judge.input(sup, now, input);
        self.take_judgement();
    }

    /// After every `handle` (also inside a drain): invariants, deadlines in the future, the
    /// stop's start, and a healed rolling restart's capacity floor.
    fn handled(&mut self, sup: &Supervisor, now: Instant) {
        self.judge.handled(sup, now);
        self.take_judgement();
        if let Err(v) = sup.check_invariants() {
            self.fail(format!("invariant violated at {now}: {v}"));
        }
        self.check_timeout(sup, now);
        let before = self.phase_before.take().unwrap_or(self.last_phase);
        let phase = sup.phase();
        self.last_phase = phase;
        if before == Phase::Running && matches!(phase, Phase::Stopping { .. } | Phase::Handover) {
            self.stop_began = Some(now);
        }
        if let (Some(at_start), Phase::Running) = (self.rollout_ready, phase) {
            // A scale-down lowers the floor for good; a scale-up does not raise it (the new
            // worker is not spawned yet).
            let wanted = at_start.min(sup.target());
            self.rollout_ready = Some(wanted);
            let floor = wanted.saturating_sub(sup.config().max_unavailable);
            let ready = sup.ready_workers();
            if ready < floor {
                self.fail(format!(
                    "rolling restart: {ready} Ready workers at {now}, below the floor {floor}"
                ));
            }
        }
    }

    fn performing(&mut self, sup: &Supervisor, now: Instant, action: &Action) {
        self.trace.push(action_line(now, action));
        self.judge.action(sup, now, action);
        self.take_judgement();
        if self.exit.is_some() && !matches!(action, Action::Event(_)) {
            self.fail(format!("{action:?} emitted after Exit"));
        }
    }

    /// After every drain: every worker asked to stop has KILL by the end of its ladder, and
    /// no live worker process is unknown to the machine unless it was KILLed.
    fn drained(&mut self, sup: &Supervisor, now: Instant, complete: bool) {
        self.judge.drained(sup, now, complete);
        self.take_judgement();
        self.check_timeout(sup, now);
        let unkilled = self.first_signal.iter().find(|(&pid, &t0)| {
            let killed = self.procs.get(&pid).is_none_or(|p| p.killed);
            !killed && self.alive(pid) && now >= t0 + self.max_ttk
        });
        if let Some((&pid, &t0)) = unkilled {
            let ttk = self.max_ttk;
            self.fail(format!(
                "pid {pid:?} first signalled at {t0} has no KILL at {now} (longest ladder {ttk:?})"
            ));
        }
        let orphan = self.procs.iter().find(|(&pid, proc)| {
            matches!(proc.kind, Kind::Worker(_))
                && !proc.killed
                && !proc.after_exit
                && self.alive(pid)
                && !sup.workers().any(|w| w.pid == Some(pid))
        });
        if let Some((&pid, proc)) = orphan {
            let kind = proc.kind;
            self.fail(format!(
                "orphan: pid {pid:?} of {kind:?} is alive, untracked and not killed"
            ));
        }
    }
}
