//! A scripted driver for tests and examples: a tiny fake OS that answers spawns with pids,
//! turns KILL into an exit (reaped after the drain, as the shell does), follows the run-loop
//! contract, checks invariants after every step and records the trace.
//!
//! The simulator (`drover-sim`) has the full model OS; this is for hand-written scenarios.

use core::time::Duration;

use crate::io::*;
use crate::supervisor::{Supervisor, WorkerState};
use crate::time::Instant;
use crate::trace::{action_line, input_line};
use crate::Config;

pub struct Harness {
    pub sup: Supervisor,
    pub now: Instant,
    lines: Vec<String>,
    next_pid: u32,
    /// Answer the next this many spawns with `SpawnFailed`.
    pub fail_spawns: u32,
    /// Answer `StartSuccessor` with `SuccessorStarted` at once.
    pub auto_successor: bool,
    successor_pid: Option<Pid>,
    pending_exits: Vec<(Pid, ExitStatus)>,
    /// Every action performed, in order, events included.
    pub actions: Vec<(Instant, Action)>,
}

/// Steps a harness may take in one `advance_to` before it is considered a livelock.
const ADVANCE_LIMIT: usize = 1_000_000;

impl Harness {
    /// Starts a supervisor at time zero and performs its first actions.
    pub fn new(config: Config) -> Harness {
        let sup = Supervisor::new(config, Instant::ZERO).expect("test config must be valid");
        let mut h = Harness {
            lines: vec![format!(
                "{:>10}  in  {:<14} policy={} target={}",
                Instant::ZERO,
                "start",
                sup.config().policy.name(),
                sup.target()
            )],
            sup,
            now: Instant::ZERO,
            next_pid: 100,
            fail_spawns: 0,
            auto_successor: true,
            successor_pid: None,
            pending_exits: Vec::new(),
            actions: Vec::new(),
        };
        h.drain();
        h
    }

    /// Advances to `secs` seconds, ticking at every deadline on the way, as a driver that
    /// sleeps until `poll_timeout()` would.
    pub fn at(&mut self, secs: f64) -> &mut Harness {
        self.advance_to(Instant::from_secs_f64(secs))
    }

    pub fn advance_to(&mut self, t: Instant) -> &mut Harness {
        for _ in 0..ADVANCE_LIMIT {
            match self.sup.poll_timeout() {
                Some(deadline) if deadline <= t => {
                    self.now = self.now.max(deadline);
                    self.handle(Input::Tick);
                }
                _ => {
                    self.now = self.now.max(t);
                    return self;
                }
            }
        }
        panic!("advance_to({t}) did not settle in {ADVANCE_LIMIT} ticks: a timer livelock");
    }

    pub fn advance(&mut self, d: Duration) -> &mut Harness {
        self.advance_to(self.now + d)
    }

    /// Feeds one input at the current time and performs the resulting actions.
    pub fn input(&mut self, input: Input) -> &mut Harness {
        self.handle(input);
        self
    }

    /// Feeds inputs read together (`Supervisor::handle_all`) and performs the actions.
    pub fn inputs(&mut self, inputs: Vec<Input>) -> &mut Harness {
        for input in &inputs {
            self.lines.push(input_line(self.now, input));
        }
        self.sup.handle_all(self.now, inputs);
        if let Err(v) = self.sup.check_invariants() {
            panic!("invariant violated at {}: {v}\n{}", self.now, self.trace());
        }
        self.drain();
        self
    }

    pub fn command(&mut self, command: Command) -> &mut Harness {
        self.input(Input::Command(command))
    }

    /// The worker now in `slot` (any state).
    pub fn worker(&self, slot: u32) -> WorkerId {
        self.sup
            .workers()
            .find(|w| w.id.slot == slot)
            .unwrap_or_else(|| panic!("slot {slot} is empty"))
            .id
    }

    pub fn pid(&self, slot: u32) -> Pid {
        self.sup
            .workers()
            .find(|w| w.id.slot == slot)
            .and_then(|w| w.pid)
            .unwrap_or_else(|| panic!("slot {slot} has no process"))
    }

    pub fn state(&self, slot: u32) -> Option<WorkerState> {
        self.sup
            .workers()
            .find(|w| w.id.slot == slot)
            .map(|w| w.state)
    }

    /// The process in `slot` exits (crash, or the end of a drain).
    pub fn exit(&mut self, slot: u32, status: ExitStatus) -> &mut Harness {
        let pid = self.pid(slot);
        self.input(Input::Exited { pid, status })
    }

    pub fn ready(&mut self, slot: u32) -> &mut Harness {
        let worker = self.worker(slot);
        self.input(Input::Ready { worker })
    }

    pub fn heartbeat(&mut self, slot: u32) -> &mut Harness {
        let worker = self.worker(slot);
        self.input(Input::Heartbeat { worker })
    }

    pub fn load(&mut self, slot: u32, busy: u32, requests: u64) -> &mut Harness {
        let worker = self.worker(slot);
        let oldest_busy_since = (busy > 0).then_some(self.now);
        self.input(Input::Load {
            worker,
            busy,
            oldest_busy_since,
            requests,
        })
    }

    /// Slots of workers that are Ready and not stopping.
    pub fn ready_slots(&self) -> Vec<u32> {
        self.sup
            .workers()
            .filter(|w| matches!(w.state, WorkerState::Ready { .. }))
            .map(|w| w.id.slot)
            .collect()
    }

    pub fn successor_pid(&self) -> Option<Pid> {
        self.successor_pid
    }

    /// The whole trace so far, one line per input (ticks omitted), action and event.
    pub fn trace(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    /// Actions (not events) performed so far.
    pub fn performed(&self) -> impl Iterator<Item = &(Instant, Action)> {
        self.actions
            .iter()
            .filter(|(_, a)| !matches!(a, Action::Event(_)))
    }

    fn handle(&mut self, input: Input) {
        if input != Input::Tick {
            self.lines.push(input_line(self.now, &input));
        }
        self.sup.handle(self.now, input);
        if let Err(v) = self.sup.check_invariants() {
            panic!("invariant violated at {}: {v}\n{}", self.now, self.trace());
        }
        self.drain();
    }

    fn drain(&mut self) {
        let limit = 16 * self.sup.config().slot_count() as usize + 256;
        for _ in 0..limit {
            let Some(action) = self.sup.poll_action() else {
                // The shell reaps only after every action is performed: no signal can hit a
                // recycled pid.
                let exits = std::mem::take(&mut self.pending_exits);
                for (pid, status) in exits {
                    self.handle(Input::Exited { pid, status });
                }
                return;
            };
            self.lines.push(action_line(self.now, &action));
            self.actions.push((self.now, action.clone()));
            match action {
                Action::Spawn { worker, .. } => {
                    if self.fail_spawns > 0 {
                        self.fail_spawns -= 1;
                        self.handle(Input::SpawnFailed {
                            worker,
                            error: SpawnError::Resources,
                        });
                    } else {
                        self.next_pid += 1;
                        let pid = Pid(self.next_pid);
                        self.handle(Input::Spawned { worker, pid });
                    }
                }
                Action::Signal {
                    pid,
                    signal: Signal::Kill,
                    ..
                } => self.pending_exits.push((pid, ExitStatus::Signaled(9))),
                Action::Signal { .. } | Action::Event(_) | Action::Exit { .. } => {}
                Action::StartSuccessor => {
                    if self.auto_successor {
                        self.next_pid += 1;
                        let pid = Pid(self.next_pid);
                        self.successor_pid = Some(pid);
                        self.handle(Input::SuccessorStarted { pid });
                    }
                }
                Action::KillSuccessor { pid, .. } => {
                    self.pending_exits.push((pid, ExitStatus::Signaled(9)));
                }
            }
        }
        panic!(
            "a drain did not end within {limit} actions:\n{}",
            self.trace()
        );
    }
}
