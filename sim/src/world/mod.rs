//! The simulated world and its event loop. [`World`] owns the one [`Driver`] of the machine
//! over the model OS (`os::SimOs`), the queue of scheduled world events, and the two
//! phases of a run: faults, then liveness (faults healed; the pool must converge and a final
//! stop must end in `Exit`). It decides when the supervisor wakes up, as the shell's `poll`
//! would, and makes every wake-up one driver turn: `begin_turn`, `feed` for the operator's
//! command, the successor's or the predecessor's message (a run may start as a live
//! upgrade's successor: `succession`) and the accept-queue length, `end_turn`. Once healed,
//! the final stop waits until a settled pool has told whoever waits that it is ready. It
//! must not hand the machine anything outside a turn, nor decide anything the driver
//! decides (what to read, when to drain or reap): a difference between the simulator and
//! the shell belongs in the model OS only.

mod clients;
mod hash;
pub mod model;
mod operator;
mod oracles;
mod os;
mod procs;
mod succession;

use core::time::Duration;

use drover_machine::{
    Command, Config, Driver, ExitStatus, Input, Instant, Phase, Policy, Signal, Supervisor,
    WorkerState,
};

use crate::canaries::Plant;
use crate::coverage::{Coverage, Mark};
pub use crate::judge::Oracle;
use crate::lab::trace::Trace;
use crate::rng::{Rng, Stream};
use crate::swarm::{self, Faults, Load};
pub use model::{Model, Spread};
use os::{Datagram, SimOs};
use std::sync::Arc;
use succession::{Predecessor, Says};

/// Hard cap on simulator steps of one run: a run that needs more is stuck.
const STEPS_MAX: u64 = 50_000_000;
/// Datagrams the notify socket holds before a sender blocks: Linux's default
/// `net.unix.max_dgram_qlen`, what the shell passes to `messages_due`.
const NOTIFY_QUEUE: u32 = 10;
/// How often the shell looks whether a lingering worker's process group is empty, when no
/// exit of a child of its own tells it (os/src/shell.rs, `LINGER_CHECK`).
const LINGER_CHECK: Duration = Duration::from_secs(1);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub seed: u64,
    /// Length of the fault phase in simulated minutes; the liveness phase follows.
    pub minutes: f64,
    /// Use this machine config instead of a random one.
    pub config: Option<Config>,
    pub load: Option<Load>,
    /// Use these faults instead of a swarm draw.
    pub faults: Option<Faults>,
    /// The world canary: the machine's KILLs are dropped.
    pub canary: bool,
    /// A planted bug of the machine, switched on at construction (`--canary NAME`).
    pub plant: Option<Plant>,
    /// Keep every trace line (for `--trace` and snapshots).
    pub keep_trace: bool,
    /// Keep samples for a plot.
    pub keep_samples: bool,
    /// The program and its clients, as the world assumes them.
    pub model: Model,
    /// Replay this recorded traffic instead of the synthetic load.
    pub replay: Option<Arc<Trace>>,
    /// What the synthetic load's rates are relative to, in requests per second (default:
    /// the config's capacity at the model's mean service time). A comparison gives every
    /// policy the same, so that they meet the same clients.
    pub load_capacity: Option<f64>,
    /// Samples per run, for plots (spread evenly over the run).
    pub samples: u32,
    /// No synthetic arrival after this (the lab measures a load of a given length; the
    /// fault tests keep clients coming through the liveness phase).
    pub load_until: Option<Duration>,
}

impl RunOptions {
    pub fn seed(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            minutes: 10.0,
            config: None,
            load: None,
            faults: None,
            canary: false,
            plant: None,
            keep_trace: false,
            keep_samples: false,
            model: Model::default(),
            replay: None,
            load_capacity: None,
            samples: 400,
            load_until: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    /// An invariant or ground-truth check failed: what, and when.
    Safety(String),
    /// After faults healed, the pool did not converge or a stop did not end in Exit.
    Liveness(String),
    /// A decision broke the rule `oracle` holds the machine to: what, and when.
    Judged {
        oracle: Oracle,
        what: String,
    },
}

/// Figures a user compares policies by.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub arrivals: u64,
    pub served: u64,
    pub refused: u64,
    pub broken: u64,
    pub queue_waits_us: Vec<u64>,
    pub worker_seconds: f64,
    pub spawns: u64,
    pub kills: u64,
    pub signals: u64,
    /// Seconds with as many live workers as the policy's `max` (or more, in a rollout).
    pub seconds_at_max: f64,
}

impl Stats {
    /// Queue wait at percentile `p` (0..=100), in milliseconds.
    pub fn wait_percentile_ms(&self, p: f64) -> f64 {
        let mut waits = self.queue_waits_us.clone();
        waits.sort_unstable();
        percentile_ms(&waits, p)
    }

    /// Queue waits at several percentiles at once (one sort), in milliseconds.
    pub fn wait_percentiles_ms(&self, ps: &[f64]) -> Vec<f64> {
        let mut waits = self.queue_waits_us.clone();
        waits.sort_unstable();
        ps.iter().map(|&p| percentile_ms(&waits, p)).collect()
    }
}

/// The nearest-rank percentile `p` (0..=100) of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted_us.len() - 1) as f64).round() as usize;
    sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0
}

/// The pool at one instant, for plots.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    pub t: f64,
    pub booting: u32,
    pub idle: u32,
    pub busy: u32,
    pub stopping: u32,
    pub queued: u32,
    /// Offered load: arrivals per second since the sample before.
    pub load: f64,
}

pub struct RunResult {
    pub outcome: Outcome,
    pub seed: u64,
    pub config: Config,
    pub faults: Faults,
    pub load: Load,
    /// Hash of every input and action: equal for equal runs.
    pub trace_hash: u64,
    pub lines: Vec<String>,
    /// Every input given to the machine, for replay and shrinking.
    pub inputs: Vec<(Instant, Input)>,
    /// Machine inputs handled.
    pub events: u64,
    /// Simulator steps (every scheduled event).
    pub steps: u64,
    pub sim_time: Duration,
    pub stats: Stats,
    pub coverage: Coverage,
    pub samples: Vec<Sample>,
    pub exit_code: Option<i32>,
}

/// Something scheduled to happen in the world at an instant.
#[derive(Clone, Debug)]
enum Ev {
    /// The supervisor's timer: its sleep ends. Stale unless it carries the current token
    /// (every turn sets the timer anew, as every `poll` of the shell takes a new timeout).
    Wake(u64),
    /// SIGCHLD reaches the supervisor: a wake-up.
    Sigchld,
    Booted(u64),
    /// The worker sends or publishes its heartbeat.
    Beat(u64),
    /// The worker reports its load if it changed.
    Report(u64),
    Crash(u64),
    Hang(u64),
    Signal(u64, Signal),
    Die(u64, ExitStatus),
    /// A worker's datagram lands in the notify socket (after `Faults::msg_delay`).
    Arrive(u64, Datagram),
    Arrival,
    RequestDone(u64, Instant),
    Operator,
    SuccessorReady(u64),
    /// The predecessor of a successor's run speaks on the upgrade channel.
    Predecessor(Says),
    /// An impatient operator asks a successor for an upgrade before it took over.
    EarlyUpgrade,
    ClockJump,
    /// The supervisor alone is stopped for a while (SIGSTOP, a debugger, heavy swapping):
    /// its workers live on.
    Pause,
    Heal,
    Check,
    Sample,
}

impl Ev {
    /// A process's or a client's own doing, which goes on while the supervisor's loop is
    /// blocked; the rest wakes, commands or checks the loop, or stops the world's clock.
    fn is_process_event(&self) -> bool {
        matches!(
            self,
            Ev::Booted(_)
                | Ev::Beat(_)
                | Ev::Report(_)
                | Ev::Crash(_)
                | Ev::Hang(_)
                | Ev::Signal(..)
                | Ev::Die(..)
                | Ev::Arrive(..)
                | Ev::Arrival
                | Ev::RequestDone(..)
        )
    }
}

pub struct World {
    driver: Driver<SimOs>,
    rng_op: Rng,
    /// The deadline the supervisor's timer is set to (before any lateness), and the token
    /// of its `Ev::Wake`.
    timer: Option<Instant>,
    timer_token: u64,
    liveness_deadline: Option<Instant>,
    final_stop_deadline: Option<Instant>,
    steps: u64,
    samples: Vec<Sample>,
    sample_every: Duration,
    /// Arrivals counted at the last sample, and when it was taken: the offered load since.
    sampled: (u64, f64),
    seed: u64,
    fault_draw: Faults,
}

impl World {
    pub fn new(opts: RunOptions) -> World {
        let seed = opts.seed;
        let mut swarm_rng = Rng::new(seed, Stream::Swarm);
        let mut config_rng = Rng::new(seed, Stream::Config);
        let mut fault_draw = opts
            .faults
            .clone()
            .unwrap_or_else(|| Faults::draw(&mut swarm_rng));
        let load = opts.load.unwrap_or_else(|| *swarm_rng.pick(&Load::ALL));
        if opts.faults.is_none() {
            fault_draw.draw_late(&mut swarm_rng);
        }
        let config = match opts.config.clone() {
            Some(config) => config,
            None => fault_draw.shape(swarm::draw_config(&mut config_rng)),
        };
        // A config given (a policy file, a repro) decides; the swarm line says what runs.
        if !config.slot_addresses {
            fault_draw.slot_addresses = false;
            fault_draw.address_fail = 0.0;
        }
        if opts.canary {
            // The planted bug drops KILL; make sure some worker needs it.
            fault_draw.ignore_term = 1.0;
        }
        let predecessor = fault_draw.predecessor();
        let mut sup = match predecessor {
            Some(g) => Supervisor::succeeding(config.clone(), Instant::ZERO, g),
            None => Supervisor::new(config.clone(), Instant::ZERO),
        }
        .expect("the simulator only runs valid configs");
        if let Some(plant) = opts.plant {
            crate::canaries::plant(&mut sup, plant);
        }
        let minutes = opts.minutes.max(0.0);
        let sample_every =
            Duration::from_secs_f64((minutes * 60.0 / f64::from(opts.samples.max(1))).max(0.25));
        let mut os = SimOs::new(&opts, config, fault_draw.clone(), load);
        let mut rng_op = Rng::new(seed, Stream::Operator);
        os.schedule_at(
            Instant::ZERO + Duration::from_secs_f64(minutes * 60.0),
            Ev::Heal,
        );
        os.schedule(Duration::ZERO, Ev::Arrival);
        if os.faults.operator > 0.0 {
            let d = operator::gap(&mut rng_op, os.faults.operator);
            os.schedule(d, Ev::Operator);
        }
        if os.faults.clock_jump > 0.0 {
            let d = os
                .rng_clock
                .exp(Duration::from_secs_f64(60.0 / os.faults.clock_jump));
            os.schedule(d, Ev::ClockJump);
        }
        if os.faults.pause > 0.0 {
            let d = os
                .rng_clock
                .exp(Duration::from_secs_f64(60.0 / os.faults.pause));
            os.schedule(d, Ev::Pause);
        }
        if opts.keep_samples {
            os.schedule(Duration::ZERO, Ev::Sample);
        }
        if os.faults.inherited {
            os.inherit_children();
        }
        if let Some(g) = predecessor {
            let mut rng = Rng::new(seed, Stream::Predecessor);
            let (predecessor, events) = Predecessor::draw(g, &mut rng);
            os.predecessor = Some(predecessor);
            for (at, ev) in events {
                os.schedule_at(at, ev);
            }
        }
        let mut w = World {
            driver: Driver::new(sup, os, NOTIFY_QUEUE),
            rng_op,
            timer: None,
            timer_token: 0,
            liveness_deadline: None,
            final_stop_deadline: None,
            steps: 0,
            samples: Vec::new(),
            sample_every,
            sampled: (0, 0.0),
            seed,
            fault_draw,
        };
        // As the shell before its first sleep: the first drain and reap are done (by
        // `Driver::new`); now the sleep.
        w.after_turns();
        w
    }

    fn os(&mut self) -> &mut SimOs {
        self.driver.os_mut()
    }

    fn done(&self) -> bool {
        self.driver.os().done()
    }

    /// Runs to the end: the supervisor exited after the liveness phase, or a check failed.
    pub fn run(mut self) -> RunResult {
        while !self.done() {
            let os = self.os();
            let Some((at, ev)) = os.pop() else {
                os.fail_liveness("no event left to run: the world went quiet".into());
                break;
            };
            // A clock jump freezes the world: whatever was due during it happens at its end.
            // A blocked loop (a slow fork) has moved the clock on: what was due runs late.
            let at = at.max(os.frozen_until).max(os.now);
            os.advance(at);
            self.steps += 1;
            if self.steps > STEPS_MAX {
                self.os()
                    .fail_liveness(format!("no end after {STEPS_MAX} steps"));
                break;
            }
            self.step(ev);
            if self.os().take_readable() {
                // A datagram came while the loop watched the socket: it wakes at once.
                self.turn(false, None);
            }
            self.check_world();
        }
        self.finish()
    }

    fn finish(self) -> RunResult {
        let samples = self.samples;
        let steps = self.steps;
        let seed = self.seed;
        let faults = self.fault_draw;
        let exit_code = self.driver.os().exited;
        let config = self.driver.supervisor().config().clone();
        let mut driver = self.driver;
        driver
            .os_mut()
            .take_result(seed, config, faults, steps, samples, exit_code)
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Wake(token) => {
                if token == self.timer_token {
                    self.timer = None;
                    self.turn(true, None);
                }
            }
            Ev::Sigchld => {
                self.os().sigchld_pending = false;
                self.turn(false, None);
            }
            Ev::Operator => {
                if !self.os().healed {
                    let command = self.operator_command();
                    self.turn(false, Some(Input::Command(command)));
                    let rate = self.os().faults.operator;
                    let d = operator::gap(&mut self.rng_op, rate);
                    self.os().schedule(d, Ev::Operator);
                }
            }
            Ev::SuccessorReady(serial) => {
                if self.os().is_alive(serial) {
                    self.turn(false, Some(Input::SuccessorReady));
                }
            }
            Ev::Predecessor(says) => {
                if let Some(input) = self.os().predecessor_says(says) {
                    self.turn(false, Some(input));
                }
            }
            Ev::EarlyUpgrade => {
                // Only to see it refused: once in charge an upgrade would end the run early.
                if !self.os().healed && self.os().awaiting_handover() {
                    self.turn(false, Some(Input::Command(Command::Upgrade)));
                }
            }
            Ev::Heal => self.heal(),
            Ev::Check => {}
            Ev::Sample => {
                self.sample();
                let every = self.sample_every;
                self.os().schedule(every, Ev::Sample);
            }
            model => self.os().step(model),
        }
    }

    /// A wake-up of the supervisor, one driver turn: what the workers reported, then the
    /// wake-up's own input (an operator command, the successor's or predecessor's message), the accept
    /// queue if its length changed, and the end of the turn (a due tick, the reaps). If the
    /// loop should find the notify socket readable at once (a read stopped at its bound,
    /// or the machine watches the socket again and messages wait), another turn follows.
    /// `timer`: the supervisor's timer woke it.
    fn turn(&mut self, timer: bool, input: Option<Input>) {
        let mut timer = timer;
        let mut input = input;
        loop {
            if self.done() {
                return;
            }
            self.os().turn_starts(timer);
            self.driver.begin_turn();
            // Once the run is over (an exit, a failure) the rest of the turn is moot.
            if let Some(input) = input.take().filter(|_| !self.done()) {
                self.driver.feed(input);
            }
            if !self.done() {
                if let Some(queued) = self.os().backlog_change() {
                    self.driver.feed(Input::Backlog {
                        listener: 0,
                        queued,
                    });
                }
            }
            if !self.done() {
                self.driver.end_turn();
            }
            self.os().turn_ends();
            let drains_cut = self.driver.drains_cut();
            if drains_cut > 0 {
                let max = self.driver.drain_max();
                self.os()
                    .fail_safety(format!("a drain did not end within {max} actions"));
            }
            let watch = self.driver.sleep().watch_messages;
            if !(watch && self.os().notify_waiting()) {
                break;
            }
            timer = false;
        }
        self.after_turns();
    }

    /// The sleep after a turn, as the shell's `wait`: the socket watched or not, and the
    /// timer at the driver's deadline, or sooner while a lingering group is polled.
    fn after_turns(&mut self) {
        if self.done() {
            return;
        }
        let sleep = self.driver.sleep();
        let sup = self.driver.supervisor();
        let config = sup.config();
        let now = self.driver.os().now;
        let slept = !matches!(config.policy, Policy::Static { .. })
            && sup.phase() == Phase::Running
            && sup
                .poll_timeout()
                .is_none_or(|t| t > now + config.maintenance_interval);
        let os = self.driver.os_mut();
        if slept {
            os.coverage.hit(Mark::TickSlept);
        }
        os.notify.watching = sleep.watch_messages;
        os.notify.read_by = sleep.until.filter(|_| !sleep.watch_messages);
        let linger = (os.table.lingering > 0).then(|| now + LINGER_CHECK);
        let deadline = sleep.until.into_iter().chain(linger).min();
        if deadline == self.timer {
            return; // the same timer: its wake-up stands
        }
        self.timer = deadline;
        self.timer_token += 1;
        let Some(mut at) = deadline else {
            return;
        };
        if os.rng_clock.chance(os.faults.late_wakeup) {
            at = at
                + os.rng_clock
                    .duration(Duration::from_millis(1), Duration::from_secs(2));
            os.coverage.hit(Mark::LateWakeup);
        }
        os.schedule_at(at, Ev::Wake(self.timer_token));
    }

    // ------------------------------------------------------------- phases and liveness

    fn heal(&mut self) {
        self.os().heal();
        let bound =
            oracles::liveness_bound(self.driver.supervisor().config(), &self.driver.os().checks);
        let deadline = self.os().now + bound;
        self.liveness_deadline = Some(deadline);
        self.os().schedule_at(deadline, Ev::Check);
    }

    /// After every step: the world's ground truth, then, once healed, convergence and the
    /// final stop.
    fn check_world(&mut self) {
        if self.done() {
            return;
        }
        self.os().check_processes();
        if !self.done() {
            let (sup, os) = self.driver.parts();
            os.judge.step(sup, os.now);
            os.take_judgement();
        }
        if self.done() || !self.driver.os().healed {
            return;
        }
        let now = self.driver.os().now;
        let sup = self.driver.supervisor();
        if let Some(deadline) = self.final_stop_deadline {
            if now > deadline {
                let what = format!(
                    "the final stop did not end in Exit by {deadline} (phase {:?}, {} live)",
                    sup.phase(),
                    sup.live_workers()
                );
                self.os().fail_liveness(what);
            }
            return;
        }
        let owed = self.driver.os().readiness_owed(sup);
        if sup.is_settled() && owed.is_none() {
            let ladder = self.driver.os().checks.ladder_max;
            let deadline = now + ladder + oracles::LADDER_SLACK + Duration::from_secs(2);
            self.final_stop_deadline = Some(deadline);
            self.os().schedule_at(deadline, Ev::Check);
            self.turn(false, Some(Input::Command(Command::Stop)));
            return;
        }
        if self.liveness_deadline.is_some_and(|d| now > d) {
            if let Some(owed) = owed.filter(|_| sup.is_settled()) {
                return self
                    .os()
                    .fail_liveness(format!("the pool settled and {owed}"));
            }
            let states: Vec<String> = sup
                .workers()
                .map(|w| format!("{}:{}", w.id, w.state.name()))
                .collect();
            let what = format!(
                "no convergence within the bound: phase {:?}, target {}, ready {}, workers [{}]",
                sup.phase(),
                sup.target(),
                sup.ready_workers(),
                states.join(" ")
            );
            self.os().fail_liveness(what);
        }
    }

    fn sample(&mut self) {
        let sup = self.driver.supervisor();
        let os = self.driver.os();
        let t = os.now.saturating_since(Instant::ZERO).as_secs_f64();
        let (arrivals_before, t_before) = self.sampled;
        let load = if t > t_before {
            (os.stats.arrivals - arrivals_before) as f64 / (t - t_before)
        } else {
            0.0
        };
        self.sampled = (os.stats.arrivals, t);
        let mut s = Sample {
            t,
            queued: os.clients.queued(),
            load,
            ..Sample::default()
        };
        for w in sup.workers() {
            match w.state {
                WorkerState::Spawning | WorkerState::Booting => s.booting += 1,
                WorkerState::Ready { busy: 0 } => s.idle += 1,
                WorkerState::Ready { .. } => s.busy += 1,
                WorkerState::Stopping { .. } => s.stopping += 1,
                WorkerState::Backoff { .. } | WorkerState::GaveUp { .. } => {}
                // A state this plot does not know yet is drawn as none of the above.
                _ => {}
            }
        }
        self.samples.push(s);
    }
}

/// Requests per second a config's pool serves at its largest, at the model's mean service
/// time: what a synthetic load's rates are relative to.
pub fn capacity_of(config: &Config, model: &Model) -> f64 {
    os::capacity(config, model)
}

/// Runs one seed.
pub fn run(opts: RunOptions) -> RunResult {
    World::new(opts).run()
}
