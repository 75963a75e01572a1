//! The run loop of the property: the one `Driver` over the model OS ([`World`]), woken as
//! production wakes it (at `sleep().until`, on a worker message it watches for, on an exit,
//! on any other OS event), and the fault phase's steps.

use drover_machine::{
    Command, Config, Driver, ExitStatus, Generation, Input, Instant, Policy, SpawnError, WorkerId,
    WORKERS_MAX,
};
use proptest::test_runner::TestCaseError;

use crate::strategies::{Cmd, Faults, Op, Pick, Scale, Step};
use crate::world::{Dice, Kind, World};
use crate::{millis, Res};

/// Wake-ups one `advance_to` may take before it is called a timer livelock.
const WAKEUPS_MAX: usize = 200_000;

pub(crate) struct Model {
    pub driver: Driver<World>,
    reloads: Vec<Config>,
}

impl Model {
    pub fn new(
        config: Config,
        reloads: Vec<Config>,
        faults: Faults,
    ) -> Result<Model, TestCaseError> {
        let mut all = vec![config.clone()];
        all.extend(reloads.iter().cloned());
        let queue = faults.messages_queue;
        let successor = faults.successor;
        let world = World::new(&all, faults);
        let sup = match successor {
            true => drover_machine::Supervisor::succeeding(config, Instant::ZERO, Generation(1)),
            false => drover_machine::Supervisor::new(config, Instant::ZERO),
        }
        .map_err(|e| TestCaseError::fail(format!("valid config refused: {e}")))?;
        if let Err(v) = sup.check_invariants() {
            return Err(TestCaseError::fail(format!(
                "invariant violated at start: {v}"
            )));
        }
        let mut m = Model {
            driver: Driver::new(sup, world, queue),
            reloads,
        };
        m.check()?;
        Ok(m)
    }

    pub fn world(&self) -> &World {
        self.driver.os()
    }

    pub fn world_mut(&mut self) -> &mut World {
        self.driver.os_mut()
    }

    pub fn now(&self) -> Instant {
        self.world().now
    }

    pub fn fail<T>(&mut self, msg: String) -> Result<T, TestCaseError> {
        let world = self.world_mut();
        world.fail(msg);
        Err(TestCaseError::fail(
            world.failure.clone().unwrap_or_default(),
        ))
    }

    /// Ends the case on the first failed check of the model OS, or on a drain the driver
    /// had to cut (a machine that asked for more than `drain_max` actions in a row).
    pub fn check(&mut self) -> Res {
        // A wake-up is the model's world step: what should have happened by now.
        let (sup, world) = self.driver.parts();
        world.judge.step(sup, world.now);
        world.take_judgement();
        if let Some(failure) = &self.world().failure {
            return Err(TestCaseError::fail(failure.clone()));
        }
        if self.driver.drains_cut() > 0 {
            return Err(TestCaseError::fail(format!(
                "a drain did not end within {} actions",
                self.driver.drain_max()
            )));
        }
        Ok(())
    }

    /// A wake-up that brings `inputs` (signals, control requests, successor messages,
    /// accept-queue lengths), after the worker messages waiting and before the exits.
    pub fn turn(&mut self, inputs: Vec<Input>) -> Res {
        self.driver.turn(inputs);
        self.check()
    }

    /// A wake-up for an input about a process that comes to be only then (a fork answered
    /// late, a successor): it does not exist yet for the drains before the input.
    fn turn_with(&mut self, input: impl FnOnce(&mut World) -> Input) -> Res {
        self.driver.begin_turn();
        let input = input(self.world_mut());
        self.driver.feed(input);
        self.driver.end_turn();
        self.check()
    }

    /// Workers send `messages`. The loop wakes for them if it watches the socket; otherwise
    /// they wait for its next wake-up, heartbeats dated by their arrival as the shell dates
    /// them.
    pub fn send(&mut self, messages: Vec<Input>) -> Res {
        let watching = self.driver.sleep().watch_messages;
        let now = self.now();
        let world = self.world_mut();
        for message in messages {
            world.reports.push(match message {
                Input::Heartbeat { worker } if !watching => Input::HeartbeatAt { worker, at: now },
                other => other,
            });
        }
        if watching {
            self.turn(Vec::new())
        } else {
            Ok(())
        }
    }

    /// SIGCHLD: a wake-up whose exits are reaped after its drains.
    pub fn sigchld(&mut self) -> Res {
        self.turn(Vec::new())
    }

    /// Sleeps until `t`, waking at every `sleep().until` on the way.
    pub fn advance_to(&mut self, t: Instant) -> Res {
        for _ in 0..WAKEUPS_MAX {
            // Past `Exit` the driver says "now" (the loop ends); the model goes on waking
            // at the machine's deadlines to check that only events follow.
            let until = match self.driver.exit_code() {
                Some(_) => self.driver.supervisor().poll_timeout(),
                None => self.driver.sleep().until,
            };
            match until {
                Some(at) if at <= t => {
                    let world = self.world_mut();
                    world.now = world.now.max(at);
                    self.turn(Vec::new())?;
                }
                _ => {
                    let world = self.world_mut();
                    world.now = world.now.max(t);
                    return Ok(());
                }
            }
        }
        self.fail(format!("advance_to({t}) did not settle: timer livelock"))
    }

    fn resolve(&self, pick: &Pick) -> WorkerId {
        let workers: Vec<WorkerId> = self.driver.supervisor().workers().map(|w| w.id).collect();
        match *pick {
            Pick::Never(n) => {
                if n % 2 == 0 {
                    WorkerId {
                        slot: 1_000 + n % 1_000,
                        incarnation: 1,
                    }
                } else {
                    WorkerId {
                        slot: n % 4,
                        incarnation: 10_000 + n % 1_000,
                    }
                }
            }
            _ if workers.is_empty() => WorkerId {
                slot: 0,
                incarnation: 0,
            },
            Pick::Live(i) => workers[i % workers.len()],
            Pick::Stale(i) => {
                let id = workers[i % workers.len()];
                WorkerId {
                    slot: id.slot,
                    incarnation: id.incarnation.saturating_sub(1),
                }
            }
        }
    }

    pub fn run_step(&mut self, step: &Step) -> Res {
        self.world_mut().dice = Dice(step.dice);
        let t = self.now() + step.advance;
        if step.late {
            let world = self.world_mut();
            world.now = world.now.max(t);
        } else {
            self.advance_to(t)?;
        }
        let now = self.now();
        match &step.op {
            Op::Tick => self.turn(Vec::new()),
            Op::Ready(p) => {
                let worker = self.resolve(p);
                self.send(vec![Input::Ready { worker }])
            }
            Op::Heartbeat(p) => {
                let worker = self.resolve(p);
                self.send(vec![Input::Heartbeat { worker }])
            }
            Op::Reports(beats) => {
                let inputs = beats
                    .iter()
                    .map(|(pick, ago_ms)| {
                        let shift = millis(ago_ms.unsigned_abs()).as_nanos() as u64;
                        let at = Instant::from_nanos(if *ago_ms >= 0 {
                            now.as_nanos().saturating_sub(shift)
                        } else {
                            now.as_nanos().saturating_add(shift)
                        });
                        Input::HeartbeatAt {
                            worker: self.resolve(pick),
                            at,
                        }
                    })
                    .collect();
                self.send(inputs)
            }
            Op::Load {
                pick,
                busy,
                since_ago_ms,
                requests,
            } => {
                let worker = self.resolve(pick);
                let oldest_busy_since = since_ago_ms.map(|ms| {
                    Instant::from_nanos(now.as_nanos().saturating_sub(millis(ms).as_nanos() as u64))
                });
                self.send(vec![Input::Load {
                    worker,
                    busy: *busy,
                    oldest_busy_since,
                    requests: *requests,
                }])
            }
            Op::Crash { idx, status } | Op::MainExit { idx, status } => {
                let live = self.world().live_workers();
                let main_only = matches!(step.op, Op::MainExit { .. });
                let world = self.world_mut();
                match live.get(idx % live.len().max(1)) {
                    // The group lives on in the model: signals still reach it, KILL ends it.
                    Some(&pid) if main_only => world.main_exits(pid, *status),
                    Some(&pid) => world.exits(pid, *status),
                    None => {}
                }
                self.sigchld()
            }
            Op::ExitUnknown => {
                self.world_mut().unknown_exits();
                self.sigchld()
            }
            Op::StraySpawned(p) => {
                let worker = self.resolve(p);
                self.turn_with(|world| Input::Spawned {
                    worker,
                    pid: world.new_proc(Kind::Worker(worker)),
                })
            }
            Op::StraySpawnFailed(p) => {
                let worker = self.resolve(p);
                self.turn(vec![Input::SpawnFailed {
                    worker,
                    error: SpawnError::Other(11),
                }])
            }
            Op::Backlog { listener, queued } => self.turn(vec![Input::Backlog {
                listener: *listener,
                queued: *queued,
            }]),
            Op::Command(c) => {
                let command = self.command(c);
                self.turn(vec![Input::Command(command)])
            }
            Op::SuccessorStarted => self.turn_with(|world| Input::SuccessorStarted {
                pid: world.new_proc(Kind::Successor),
            }),
            Op::SuccessorFailed => self.turn(vec![Input::SuccessorFailed {
                error: SpawnError::Resources,
            }]),
            Op::SuccessorReady => {
                let upgrade = self.driver.supervisor().upgrade_state();
                if self.world().successor_hangs(upgrade) {
                    self.turn(Vec::new())
                } else {
                    self.turn(vec![Input::SuccessorReady])
                }
            }
            Op::SuccessorExit(idx) => {
                let running = self.world().running_successors();
                if let Some(&pid) = running.get(idx % running.len().max(1)) {
                    self.world_mut().exits(pid, ExitStatus::Code(1));
                }
                self.sigchld()
            }
            Op::Takeover { predecessor_gone } => self.turn(vec![Input::Takeover {
                predecessor_gone: *predecessor_gone,
            }]),
            Op::FlushDelayed => {
                if self.world_mut().flush_delayed() {
                    self.sigchld()
                } else {
                    Ok(())
                }
            }
        }
    }

    fn command(&self, c: &Cmd) -> Command {
        let sup = self.driver.supervisor();
        match c {
            Cmd::Stop => Command::Stop,
            Cmd::StopNow => Command::StopNow,
            Cmd::Restart => Command::Restart,
            Cmd::RestartNow => Command::RestartNow,
            Cmd::Reload(i) if !self.reloads.is_empty() => {
                Command::Reload(Box::new(self.reloads[i % self.reloads.len()].clone()))
            }
            Cmd::Reload(_) => Command::Reload(Box::new(sup.config().clone())),
            Cmd::ReloadInvalid => {
                let mut c = sup.config().clone();
                c.threads = 0;
                Command::Reload(Box::new(c))
            }
            Cmd::Upgrade => Command::Upgrade,
            Cmd::ScaleTo(Scale::Small(n)) => Command::ScaleTo(*n),
            Cmd::ScaleTo(Scale::Huge) => Command::ScaleTo(u32::MAX),
            Cmd::ScaleTo(Scale::JustAbove) => {
                let c = sup.config();
                Command::ScaleTo(match c.policy {
                    Policy::Static { .. } => WORKERS_MAX - c.max_surge + 1,
                    _ => c.policy.max() + 1,
                })
            }
            Cmd::ScaleUp => Command::ScaleUp,
            Cmd::ScaleDown => Command::ScaleDown,
        }
    }
}
