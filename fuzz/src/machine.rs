//! `machine_inputs`: bytes → a valid `Config` and a sequence of (time advance, input), run
//! by the one `Driver` (the run loop production uses) over a small model OS ([`world`])
//! whose every decision inside a drain (a fork works, fails or blocks the loop for a while;
//! a signal is obeyed or ignored; KILL acts now or at a later reap; a successor starts,
//! fails or never gets ready) is also read from the bytes.
//!
//! Checked after every `handle` (also inside a drain) and every drain: `check_invariants()`
//! is Ok, `poll_timeout() > now`, `messages_due(queue)` within `now ..= now + heartbeat
//! timeout` (never a wait with the watchdog off). For every action: no `Signal` aims at a
//! pid already reported `Exited`, at a pid never spawned or at another worker's pid; no
//! `KillSuccessor` at a pid that is not a successor's; spawns are of the current generation
//! and no worker is forked twice; after `Exit` only events follow, and its code is 0 or one
//! a config allowed. No drain reaches the driver's bound. The loop wakes at
//! `sleep().until` (a bounded number of times per advance: more is a timer livelock), for a
//! worker message only while it watches them, and now and then late (the clock moves with
//! no wake-up on the way).
//!
//! The driver keeps the contract (`now` never decreases, exits are reaped after the drain);
//! the model reaps each pid once and never reuses one. Odd inputs are part of the mix:
//! unknown pids, stale and never-existing worker ids, duplicate `Ready`, heartbeats stamped
//! in the past or the future, `Spawned`/`SpawnFailed` for workers that are not spawning,
//! load above the thread count, every `Command` (`Reload` with another decoded config, or
//! an invalid one; scale requests out of bounds) and successor inputs with no upgrade in
//! flight.

mod decode;
mod world;

use drover_machine::{
    Command, Driver, Duration, ExitStatus, Input, Instant, SpawnError, Supervisor, WorkerId,
    WORKERS_MAX,
};
use libfuzzer_sys::arbitrary::Unstructured;

pub use decode::config;
use decode::{chance, int, millis};
use world::{Kind, World};

/// Wake-ups one advance may take before it is called a timer livelock.
const WAKEUPS_MAX: usize = 100_000;
/// The workers' message socket queue (Linux's default `net.unix.max_dgram_qlen`).
const MESSAGES_QUEUE: u32 = 10;

/// The run loop: the driver over the model OS, woken as production wakes it.
struct Run<'a, 'b> {
    driver: Driver<World<'a, 'b>>,
}

impl<'a, 'b> Run<'a, 'b> {
    fn world(&mut self) -> &mut World<'a, 'b> {
        self.driver.os_mut()
    }

    fn u(&mut self) -> &mut Unstructured<'a> {
        self.driver.os_mut().u
    }

    fn sup(&self) -> &Supervisor {
        self.driver.supervisor()
    }

    fn now(&self) -> Instant {
        self.driver.os().now
    }

    fn check_drains(&self) {
        if self.driver.drains_cut() > 0 {
            self.driver.os().fail(format!(
                "a drain did not end within {} actions",
                self.driver.drain_max()
            ));
        }
    }

    /// A wake-up that brings `inputs`, after the worker messages waiting and before the
    /// exits.
    fn turn(&mut self, inputs: Vec<Input>) {
        self.driver.turn(inputs);
        self.check_drains();
    }

    /// A wake-up for an input about a process that comes to be only then: it does not exist
    /// yet for the drains before the input.
    fn turn_with(&mut self, input: impl FnOnce(&mut World<'a, 'b>) -> Input) {
        self.driver.begin_turn();
        let input = input(self.world());
        self.driver.feed(input);
        self.driver.end_turn();
        self.check_drains();
    }

    /// Workers send `messages`. The loop wakes for them if it watches the socket; otherwise
    /// they wait for its next wake-up, heartbeats dated by their arrival.
    fn send(&mut self, messages: Vec<Input>) {
        let watching = self.driver.sleep().watch_messages;
        let now = self.now();
        for message in messages {
            self.world().reports.push(match message {
                Input::Heartbeat { worker } if !watching => Input::HeartbeatAt { worker, at: now },
                other => other,
            });
        }
        if watching {
            self.turn(Vec::new());
        }
    }

    /// Sleeps for `by`, waking at every `sleep().until` on the way; a late wake-up skips
    /// them (the next input arrives first).
    fn advance(&mut self, by: Duration, late: bool) {
        let t = self.now() + by;
        if late {
            self.world().now = t;
            return;
        }
        for _ in 0..WAKEUPS_MAX {
            // Past `Exit` the driver says "now" (the loop ends); the model goes on waking
            // at the machine's deadlines to check that only events follow.
            let until = match self.driver.exit_code() {
                Some(_) => self.sup().poll_timeout(),
                None => self.driver.sleep().until,
            };
            match until {
                Some(at) if at <= t => {
                    let world = self.world();
                    world.now = world.now.max(at);
                    self.turn(Vec::new());
                }
                _ => {
                    self.world().now = t;
                    return;
                }
            }
        }
        self.driver.os().fail(format!(
            "advancing to {t} took over {WAKEUPS_MAX} wake-ups: timer livelock"
        ));
    }

    /// A worker id for a message: a live one (most often), an earlier incarnation of one,
    /// or one that never existed.
    fn pick(&mut self) -> WorkerId {
        let kind = int(self.u(), 0..=9u8);
        let n: u32 = int(self.u(), 0..=u32::MAX);
        let workers: Vec<WorkerId> = self.sup().workers().map(|w| w.id).collect();
        match kind {
            8 if !workers.is_empty() => {
                let id = workers[n as usize % workers.len()];
                WorkerId {
                    slot: id.slot,
                    incarnation: id.incarnation.saturating_sub(1 + n % 2),
                }
            }
            9 if n & 1 == 0 => WorkerId {
                slot: 1_000 + n % 1_000,
                incarnation: 1,
            },
            9 => WorkerId {
                slot: n % 4,
                incarnation: 10_000 + n % 1_000,
            },
            _ if workers.is_empty() => WorkerId {
                slot: 0,
                incarnation: 0,
            },
            _ => workers[n as usize % workers.len()],
        }
    }

    fn command(&mut self) -> Command {
        match int(self.u(), 0..=11u8) {
            0 => Command::Stop,
            1 => Command::StopNow,
            2 => Command::Restart,
            3 => Command::RestartNow,
            4 => {
                let c = config(self.u());
                self.world().allow_codes(&c);
                Command::Reload(Box::new(c))
            }
            5 => {
                // The same config: a reload that changes nothing; or an invalid one.
                let mut c = self.sup().config().clone();
                if chance(self.u(), 128) {
                    c.threads = 0;
                }
                Command::Reload(Box::new(c))
            }
            6 | 7 => Command::Upgrade,
            8 => {
                let c = self.sup().config();
                let (surge, max) = (c.max_surge, c.policy.max());
                Command::ScaleTo(match int(self.u(), 0..=3u8) {
                    0 => u32::MAX,
                    1 => WORKERS_MAX - surge + 1,
                    2 => max + 1,
                    _ => int(self.u(), 0..=12),
                })
            }
            9 | 10 => Command::ScaleUp,
            _ => Command::ScaleDown,
        }
    }

    /// One step: a time advance, then one input.
    fn step(&mut self) {
        let advance = match int(self.u(), 0..=15u8) {
            0..=4 => Duration::ZERO,
            5..=11 => millis(int(self.u(), 0..=3_000)),
            12..=14 => millis(int(self.u(), 0..=120_000)),
            _ => millis(int(self.u(), 120_000..=1_800_000)),
        };
        let late = chance(self.u(), 38);
        self.advance(advance, late);
        let now = self.now();
        match int(self.u(), 0..=20u8) {
            0 => self.turn(Vec::new()),
            1 | 2 => {
                let worker = self.pick();
                self.send(vec![Input::Ready { worker }]);
            }
            3 | 4 => {
                let worker = self.pick();
                self.send(vec![Input::Heartbeat { worker }]);
            }
            5 | 6 => {
                let worker = self.pick();
                let busy = int(self.u(), 0..=6);
                let ago = int(self.u(), 0..=300_000u64);
                let oldest_busy_since = (busy > 0 || chance(self.u(), 64))
                    .then(|| Instant::from_nanos(now.as_nanos().saturating_sub(ago * 1_000_000)));
                let requests = int(self.u(), 0..=1_000);
                self.send(vec![Input::Load {
                    worker,
                    busy,
                    oldest_busy_since,
                    requests,
                }]);
            }
            7 | 8 => {
                // A live worker process (tracked or stray) exits by itself.
                let live = self.world().live_pids(|k| matches!(k, Kind::Worker(_)));
                let i = int(self.u(), 0..=255usize);
                let status = match int(self.u(), 0..=9u8) {
                    n @ 0..=5 => ExitStatus::Code(i32::from(n)),
                    n => ExitStatus::Signaled([6, 9, 11, 15][usize::from(n - 6)]),
                };
                match live.get(i % live.len().max(1)) {
                    // Or only its main process does, and the rest of its group runs on.
                    Some(&pid) if chance(self.u(), 64) => self.world().main_exits(pid, status),
                    Some(&pid) => self.world().exits(pid, status),
                    None => {}
                }
                self.turn(Vec::new());
            }
            9 => {
                self.world().unknown_exits();
                self.turn(Vec::new());
            }
            10 => {
                // A `Spawned` nobody asked for: forks are answered at once, inside the drain.
                let worker = self.pick();
                self.turn_with(|world| Input::Spawned {
                    worker,
                    pid: world.new_proc(Kind::Worker(worker)),
                });
            }
            11 => {
                let worker = self.pick();
                self.turn(vec![Input::SpawnFailed {
                    worker,
                    error: SpawnError::Other(11),
                }]);
            }
            12 | 13 => {
                // Heartbeats the workers stamped themselves (the embedded runtime's report
                // board), read together, some stamped in the past or ahead of now.
                let mut beats = Vec::new();
                for _ in 0..int(self.u(), 1..=4u8) {
                    let worker = self.pick();
                    let shift = millis(int(self.u(), 0..=60_000)).as_nanos() as u64;
                    let at = if chance(self.u(), 32) {
                        now.as_nanos().saturating_add(shift)
                    } else {
                        now.as_nanos().saturating_sub(shift)
                    };
                    beats.push(Input::HeartbeatAt {
                        worker,
                        at: Instant::from_nanos(at),
                    });
                }
                self.send(beats);
            }
            14 => {
                let listener = int(self.u(), 0..=3);
                let queued = match int(self.u(), 0..=7u8) {
                    7 => u32::MAX,
                    _ => int(self.u(), 0..=20),
                };
                self.turn(vec![Input::Backlog { listener, queued }]);
            }
            15 | 16 => {
                let command = self.command();
                self.turn(vec![Input::Command(command)]);
            }
            17 => {
                // Started with no upgrade in flight, or a second one.
                self.turn_with(|world| Input::SuccessorStarted {
                    pid: world.new_proc(Kind::Successor),
                });
            }
            18 => {
                if chance(self.u(), 128) {
                    self.turn(vec![Input::SuccessorFailed {
                        error: SpawnError::Resources,
                    }]);
                } else if self.driver.os().successor_hangs(self.sup().upgrade_state()) {
                    self.turn(Vec::new());
                } else {
                    self.turn(vec![Input::SuccessorReady]);
                }
            }
            19 => {
                let live = self.world().live_pids(|k| k == Kind::Successor);
                let i = int(self.u(), 0..=255usize);
                if let Some(&pid) = live.get(i % live.len().max(1)) {
                    self.world().exits(pid, ExitStatus::Code(1));
                }
                self.turn(Vec::new());
            }
            _ => {
                // Delayed KILLs take effect.
                if self.world().flush_delayed() {
                    self.turn(Vec::new());
                }
            }
        }
    }
}

/// The `machine_inputs` target.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let config = config(&mut u);
    let print = crate::tracing();
    if print {
        eprintln!("config: {config:?}");
    }
    let sup = match Supervisor::new(config.clone(), Instant::ZERO) {
        Ok(sup) => sup,
        Err(e) => panic!("a valid config was refused: {e}\n{config:?}"),
    };
    let world = World::new(&mut u, &config, print);
    if let Err(v) = sup.check_invariants() {
        world.fail(format!("invariant violated at start: {v}"));
    }
    let mut run = Run {
        driver: Driver::new(sup, world, MESSAGES_QUEUE),
    };
    run.check_drains();
    while !run.u().is_empty() {
        run.step();
    }
}
