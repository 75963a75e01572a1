//! A scripted world for hand-written scenarios: the one [`Driver`] over a tiny model OS that
//! answers spawns with fresh pids, turns KILL into an exit (reaped after the drain, as the
//! shell does), checks the machine's invariants after every `handle` and records the trace.
//! Time moves only when the scenario says so.
//!
//! The simulator (`drover-sim`) has the full model OS; this is for scenarios that pin a
//! trace or a rule.

use core::time::Duration;

use crate::driver::{Driver, Os};
use crate::io::*;
use crate::output::*;
use crate::supervisor::{Supervisor, WorkerState};
use crate::time::Instant;
use crate::trace::{action_line, input_line};
use crate::Config;

/// Steps a harness may take in one `advance_to` before it is considered a livelock.
const ADVANCE_STEPS_MAX: usize = 1_000_000;
/// The notify socket a scenario's driver would have (Linux's default queue).
const MESSAGES_QUEUE: u32 = 10;

/// The scenario's model OS: pids from a counter, exits on KILL only.
struct ScriptOs {
    now: Instant,
    lines: Vec<String>,
    next_pid: u32,
    fail_spawns: u32,
    spawn_error: SpawnError,
    successor_pid: Option<Pid>,
    /// Exits (`Exited`, `MainExited`) waiting to be reaped after the drain.
    zombies: Vec<Input>,
    /// Worker reports for the next turn's read (`Harness::inputs`).
    reports: Vec<Input>,
    actions: Vec<(Instant, Action)>,
}

impl ScriptOs {
    fn trace(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    fn fresh_pid(&mut self) -> Pid {
        self.next_pid += 1;
        Pid(self.next_pid)
    }
}

impl Os for ScriptOs {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn spawn(&mut self, _: &Supervisor, _: WorkerId, _: Generation) -> Result<Pid, SpawnError> {
        if self.fail_spawns > 0 {
            self.fail_spawns -= 1;
            return Err(self.spawn_error);
        }
        Ok(self.fresh_pid())
    }

    fn signal(&mut self, _: &Supervisor, _: WorkerId, pid: Pid, signal: Signal, _: StopReason) {
        if signal == Signal::Kill {
            self.zombies.push(killed(pid));
        }
    }

    fn start_successor(&mut self, _: &Supervisor) -> Result<Pid, SpawnError> {
        let pid = self.fresh_pid();
        self.successor_pid = Some(pid);
        Ok(pid)
    }

    fn kill_successor(&mut self, _: &Supervisor, pid: Pid, _: RollbackReason) {
        self.zombies.push(killed(pid));
    }

    fn exit(&mut self, _: &Supervisor, _: i32) {}

    fn event(&mut self, _: &Supervisor, _: Instant, _: Event) {}

    fn read_workers(&mut self, _: &Supervisor, _: Instant, into: &mut Vec<Input>) -> bool {
        into.append(&mut self.reports);
        true
    }

    fn reap(&mut self, _: &Supervisor) -> Option<Input> {
        (!self.zombies.is_empty()).then(|| self.zombies.remove(0))
    }

    fn handling(&mut self, _: &Supervisor, now: Instant, input: &Input) {
        if *input != Input::Tick {
            self.lines.push(input_line(now, input));
        }
    }

    fn handled(&mut self, sup: &Supervisor, now: Instant) {
        if let Err(v) = sup.check_invariants() {
            panic!("invariant violated at {now}: {v}\n{}", self.trace());
        }
    }

    fn performing(&mut self, _: &Supervisor, now: Instant, action: &Action) {
        self.lines.push(action_line(now, action));
        self.actions.push((now, action.clone()));
    }
}

fn killed(pid: Pid) -> Input {
    Input::Exited {
        pid,
        status: ExitStatus::Signaled(9),
    }
}

/// A scenario: a supervisor in the one driver over a scripted world.
pub struct Harness {
    driver: Driver<ScriptOs>,
}

impl Harness {
    /// Starts a supervisor at time zero and performs its first actions.
    pub fn new(config: Config) -> Harness {
        Harness::with(Supervisor::new(config, Instant::ZERO).expect("test config must be valid"))
    }

    /// Runs `sup`, built at time zero (a live upgrade's successor, say), and performs its
    /// first actions.
    pub fn with(sup: Supervisor) -> Harness {
        let os = ScriptOs {
            now: Instant::ZERO,
            lines: vec![format!(
                "{:>10}  in  {:<14} policy={} target={}",
                Instant::ZERO,
                "start",
                sup.config().policy.name(),
                sup.target()
            )],
            next_pid: 100,
            fail_spawns: 0,
            spawn_error: SpawnError::Resources,
            successor_pid: None,
            zombies: Vec::new(),
            reports: Vec::new(),
            actions: Vec::new(),
        };
        Harness {
            driver: Driver::new(sup, os, MESSAGES_QUEUE),
        }
    }

    /// The machine, to read its state.
    pub fn sup(&self) -> &Supervisor {
        self.driver.supervisor()
    }

    /// The machine, bypassing the driver: for tests that show what the run-loop contract
    /// prevents.
    pub fn sup_mut(&mut self) -> &mut Supervisor {
        self.driver.supervisor_mut()
    }

    /// The scenario's clock.
    pub fn now(&self) -> Instant {
        self.driver.os().now
    }

    /// Moves the clock to `t` without a wake-up on the way, as a suspended or overloaded
    /// host does: the next input arrives late and the timers due meanwhile run after it.
    pub fn set_now(&mut self, t: Instant) -> &mut Harness {
        let os = self.driver.os_mut();
        os.now = os.now.max(t);
        self
    }

    /// Answers the next `n` spawns with `SpawnFailed` (`SpawnError::Resources`).
    pub fn fail_spawns(&mut self, n: u32) -> &mut Harness {
        self.fail_spawns_with(n, SpawnError::Resources)
    }

    /// Answers the next `n` spawns with `SpawnFailed { error }`.
    pub fn fail_spawns_with(&mut self, n: u32, error: SpawnError) -> &mut Harness {
        let os = self.driver.os_mut();
        os.fail_spawns = n;
        os.spawn_error = error;
        self
    }

    /// Advances to `secs` seconds, ticking at every deadline on the way, as a driver that
    /// sleeps until `poll_timeout()` would.
    pub fn at(&mut self, secs: f64) -> &mut Harness {
        self.advance_to(Instant::from_secs_f64(secs))
    }

    /// Advances to `t`, waking at every deadline on the way.
    pub fn advance_to(&mut self, t: Instant) -> &mut Harness {
        for _ in 0..ADVANCE_STEPS_MAX {
            match self.driver.supervisor().poll_timeout() {
                Some(deadline) if deadline <= t => {
                    self.set_now(deadline);
                    self.driver.turn([]);
                }
                _ => {
                    self.set_now(t);
                    return self;
                }
            }
        }
        panic!("advance_to({t}) did not settle in {ADVANCE_STEPS_MAX} ticks: a timer livelock");
    }

    /// Advances by `d`.
    pub fn advance(&mut self, d: Duration) -> &mut Harness {
        self.advance_to(self.now() + d)
    }

    /// A wake-up that brings one input at the current time, by the path it takes in
    /// production: a worker's message is read with the reports first thing, an exit is
    /// reaped after the drain, anything else is fed in between.
    pub fn input(&mut self, input: Input) -> &mut Harness {
        match input {
            Input::Ready { .. }
            | Input::Heartbeat { .. }
            | Input::HeartbeatAt { .. }
            | Input::Load { .. } => return self.inputs(vec![input]),
            Input::Exited { .. } | Input::MainExited { .. } => {
                self.driver.os_mut().zombies.push(input);
                self.driver.turn([]);
            }
            other => self.driver.turn([other]),
        }
        self.check_drains();
        self
    }

    /// A wake-up that reads these worker reports together (one `handle_all`).
    pub fn inputs(&mut self, inputs: Vec<Input>) -> &mut Harness {
        self.driver.os_mut().reports = inputs;
        self.driver.turn([]);
        self.check_drains();
        self
    }

    /// An operator command.
    pub fn command(&mut self, command: Command) -> &mut Harness {
        self.input(Input::Command(command))
    }

    /// The worker now in `slot` (any state).
    pub fn worker(&self, slot: u32) -> WorkerId {
        self.sup()
            .workers()
            .find(|w| w.id.slot == slot)
            .unwrap_or_else(|| panic!("slot {slot} is empty"))
            .id
    }

    /// The process of the worker in `slot`.
    pub fn pid(&self, slot: u32) -> Pid {
        self.sup()
            .workers()
            .find(|w| w.id.slot == slot)
            .and_then(|w| w.pid)
            .unwrap_or_else(|| panic!("slot {slot} has no process"))
    }

    /// The state of the worker in `slot`, if any.
    pub fn state(&self, slot: u32) -> Option<WorkerState> {
        self.sup()
            .workers()
            .find(|w| w.id.slot == slot)
            .map(|w| w.state)
    }

    /// The process in `slot` exits (crash, or the end of a drain).
    pub fn exit(&mut self, slot: u32, status: ExitStatus) -> &mut Harness {
        let pid = self.pid(slot);
        self.input(Input::Exited { pid, status })
    }

    /// The worker in `slot` says READY=1.
    pub fn ready(&mut self, slot: u32) -> &mut Harness {
        let worker = self.worker(slot);
        self.input(Input::Ready { worker })
    }

    /// The worker in `slot` beats, as of now.
    pub fn heartbeat(&mut self, slot: u32) -> &mut Harness {
        let worker = self.worker(slot);
        self.input(Input::Heartbeat { worker })
    }

    /// The worker in `slot` reports its load; a busy one busy since now.
    pub fn load(&mut self, slot: u32, busy: u32, requests: u64) -> &mut Harness {
        let worker = self.worker(slot);
        let oldest_busy_since = (busy > 0).then_some(self.now());
        self.input(Input::Load {
            worker,
            busy,
            oldest_busy_since,
            requests,
        })
    }

    /// Slots of workers that are Ready and not stopping.
    pub fn ready_slots(&self) -> Vec<u32> {
        self.sup()
            .workers()
            .filter(|w| matches!(w.state, WorkerState::Ready { .. }))
            .map(|w| w.id.slot)
            .collect()
    }

    /// The last successor started.
    pub fn successor_pid(&self) -> Option<Pid> {
        self.driver.os().successor_pid
    }

    /// The whole trace so far, one line per input (ticks omitted), action and event.
    pub fn trace(&self) -> String {
        self.driver.os().trace()
    }

    /// Every action performed, in order, events included.
    pub fn actions(&self) -> &[(Instant, Action)] {
        &self.driver.os().actions
    }

    /// Actions (not events) performed so far.
    pub fn performed(&self) -> impl Iterator<Item = &(Instant, Action)> {
        self.actions()
            .iter()
            .filter(|(_, a)| !matches!(a, Action::Event(_)))
    }

    fn check_drains(&self) {
        assert_eq!(
            self.driver.drains_cut(),
            0,
            "a drain did not end within {} actions:\n{}",
            self.driver.drain_max(),
            self.trace()
        );
    }
}
