//! The simulated world: a model OS (pids with reuse, zombies until reaped, fork latency and
//! failure, signal delivery, SIGCHLD coalescing, a worker's process group outliving its main
//! process), worker processes with behaviours, clients with an accept queue, an operator,
//! and a clock that can wake late or jump. It drives the machine through the same run-loop
//! contract as the real shell and checks, after every step, the machine's invariants plus
//! its own ground truth.

use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Command, Config, Event, ExitStatus, Ignored, Input, Instant, Phase, Pid, Policy,
    Readiness, Signal, SpawnError, StopReason, Supervisor, WorkerId, WorkerState,
};

use crate::coverage::{Coverage, Mark};
use crate::rng::{Rng, Stream};
use crate::swarm::{self, Faults, Load};

/// Mean service time of one request.
const REQUEST_MEAN: Duration = Duration::from_millis(200);
/// Connections the listener's accept queue holds before refusing.
const BACKLOG: usize = 128;
/// Slack on top of a kill ladder for the oracle: late wake-up, signal latency, a delayed
/// KILL effect and the reap.
const LADDER_SLACK: Duration = Duration::from_secs(8);
/// Hard cap on simulator steps of one run: a run that needs more is stuck.
const STEPS_MAX: u64 = 50_000_000;
/// Datagrams the notify socket holds before a sender blocks: Linux's default
/// `net.unix.max_dgram_qlen`, what the shell passes to `messages_due`.
const NOTIFY_QUEUE: u32 = 10;

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
    /// Plant a known bug: the machine's KILLs are dropped.
    pub canary: bool,
    /// Keep every trace line (for `--trace` and snapshots).
    pub keep_trace: bool,
    /// Keep samples for a plot.
    pub keep_samples: bool,
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
            keep_trace: false,
            keep_samples: false,
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
}

impl Stats {
    /// Queue wait at percentile `p` (0..=100), in milliseconds.
    pub fn wait_percentile_ms(&self, p: f64) -> f64 {
        if self.queue_waits_us.is_empty() {
            return 0.0;
        }
        let mut waits = self.queue_waits_us.clone();
        waits.sort_unstable();
        let i = ((p / 100.0) * (waits.len() - 1) as f64).round() as usize;
        waits[i] as f64 / 1000.0
    }
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

#[derive(Clone, Debug)]
enum Ev {
    Wake,
    ForkDone {
        worker: WorkerId,
    },
    Booted(u64),
    Beat(u64),
    Crash(u64),
    Hang(u64),
    Signal(u64, Signal),
    Die(u64, ExitStatus),
    Reap,
    Deliver(Input),
    Arrival,
    RequestDone(u64, Instant),
    /// A worker's doorbell datagram (`Faults::shm_reports`): its load changed.
    Doorbell,
    Operator,
    SuccessorReady(u64),
    ClockJump,
    Heal,
    Check,
    Sample,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ProcState {
    Booting,
    Running,
    Zombie(ExitStatus),
    Reaped,
}

#[derive(Clone, Debug)]
struct Proc {
    pid: Pid,
    /// `None` for the successor supervisor of a live upgrade or an inherited child.
    worker: Option<WorkerId>,
    /// A child of a previous supervisor: this one never spawned it.
    inherited: bool,
    state: ProcState,
    accepting: bool,
    draining: bool,
    hung: bool,
    threads: u32,
    in_flight: Vec<Instant>,
    requests: u64,
    ignores_term: bool,
    drain_extra: Duration,
    kill_delay: Duration,
    crash_in_drain: bool,
    stop_deadline: Option<Instant>,
    /// The last heartbeat the process sent or published.
    last_beat: Option<Instant>,
    /// Forked so late that the machine gave up on the spawn: not one of its workers (it
    /// kills it on sight), so not counted against max + max_surge.
    stray: bool,
    /// The main process of this worker's process group exited on its own with this status
    /// (`Faults::main_exit`): the process lives on as the rest of the group, which serves
    /// the requests it holds but accepts no more, sends nothing, and obeys signals as
    /// before. Its pid (the group's id) stays taken until it is reaped, and its `Exited`
    /// carries this status, as the real shell reports the group leader's.
    main_gone: Option<ExitStatus>,
    /// The machine retired it for `MainExited` (its main process exited while it ran): its
    /// exit is a crash with the main process's status.
    main_retired: bool,
}

impl Proc {
    fn alive(&self) -> bool {
        matches!(self.state, ProcState::Booting | ProcState::Running)
    }
}

/// Busy threads, start of the oldest request, requests served.
type Reported = (u32, Option<Instant>, u64);

/// A worker's slot of the shared-memory report board (`Faults::shm_reports`).
#[derive(Clone, Debug, Default)]
struct Cell {
    /// The worker's own stamp of its last heartbeat.
    beat: Option<Instant>,
    load: Option<Reported>,
    /// The load the worker last rang the doorbell for.
    rung: Option<Reported>,
    /// What the supervisor last read and fed to the machine.
    fed_beat: Option<Instant>,
    fed_load: Option<Reported>,
}

/// FNV-1a over numbers: the determinism fingerprint of a run.
struct TraceHash(u64);

impl TraceHash {
    fn add(&mut self, x: u64) {
        for b in x.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn add_str(&mut self, s: &str) {
        for chunk in s.as_bytes().chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(b));
        }
    }
}

pub struct World {
    opts: RunOptions,
    sup: Supervisor,
    config: Config,
    now: Instant,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    payloads: BTreeMap<u64, Ev>,
    seq: u64,
    rng_proc: Rng,
    rng_os: Rng,
    rng_load: Rng,
    rng_op: Rng,
    rng_clock: Rng,
    faults: Faults,
    fault_draw: Faults,
    load: Load,
    procs: BTreeMap<u64, Proc>,
    by_pid: BTreeMap<Pid, u64>,
    /// Worker processes alive (not zombies), for worker-seconds.
    live_workers: u64,
    next_serial: u64,
    pid_space: u32,
    pid_cursor: u32,
    pid_ever: BTreeSet<Pid>,
    zombies: Vec<u64>,
    reap_scheduled: bool,
    wake_at: Option<Instant>,
    frozen_until: Instant,
    idle_procs: BTreeSet<u64>,
    backlog: VecDeque<Instant>,
    reported_backlog: u32,
    /// The report board, by process serial (`Faults::shm_reports`).
    board: BTreeMap<u64, Cell>,
    /// Worker messages left unread in the notify socket while `messages_due` is ahead, with
    /// their arrival times, oldest first.
    held: Vec<(Instant, Input)>,
    bad_generation: BTreeMap<u32, bool>,
    stop_deadlines: BTreeSet<(Instant, u64)>,
    /// Longest kill ladder of any config in force so far (a stopping worker keeps its own).
    ladder_max: Duration,
    max_slots: u32,
    exited: Option<i32>,
    healed: bool,
    healed_at: Option<Instant>,
    liveness_deadline: Option<Instant>,
    final_stop_deadline: Option<Instant>,
    beat_interval: Duration,
    last_time: Instant,
    stats: Stats,
    coverage: Coverage,
    hash: TraceHash,
    lines: Vec<String>,
    inputs: Vec<(Instant, Input)>,
    events: u64,
    steps: u64,
    samples: Vec<Sample>,
    sample_every: Duration,
    failure: Option<Outcome>,
    /// The worker a `MainExited` just fed must be retired for it (it was not stopping):
    /// cleared by the `Retiring { reason: MainExited }` event of the same drain.
    main_retire: Option<WorkerId>,
    /// The worker whose `Exited` is being fed, retired for `MainExited`, and the status its
    /// main process exited with: the machine's `Exited` event must report that status as a
    /// crash (not expected).
    main_judge: Option<(WorkerId, ExitStatus)>,
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
        let config = opts
            .config
            .clone()
            .unwrap_or_else(|| swarm::draw_config(&mut config_rng));
        if opts.canary {
            // The planted bug drops KILL; make sure some worker needs it.
            fault_draw.ignore_term = 1.0;
        }
        let sup = Supervisor::new(config.clone(), Instant::ZERO)
            .expect("the simulator only runs valid configs");
        let pid_space = if fault_draw.pid_reuse {
            config.slot_count() * 2 + 8
        } else {
            1 << 22
        };
        let beat_interval = config
            .heartbeat_timeout
            .map_or(Duration::from_secs(2), |t| {
                (t / 3).min(Duration::from_secs(2))
            });
        let minutes = opts.minutes.max(0.0);
        let sample_every = Duration::from_secs_f64((minutes * 60.0 / 400.0).max(0.25));
        let mut w = World {
            rng_proc: Rng::new(seed, Stream::Process),
            rng_os: Rng::new(seed, Stream::Os),
            rng_load: Rng::new(seed, Stream::Load),
            rng_op: Rng::new(seed, Stream::Operator),
            rng_clock: Rng::new(seed, Stream::Clock),
            faults: fault_draw.clone(),
            fault_draw,
            load,
            ladder_max: config.ladder.time_to_kill(0),
            max_slots: config.slot_count(),
            config,
            sup,
            opts,
            now: Instant::ZERO,
            heap: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            seq: 0,
            procs: BTreeMap::new(),
            by_pid: BTreeMap::new(),
            live_workers: 0,
            next_serial: 1,
            pid_space,
            pid_cursor: 1,
            pid_ever: BTreeSet::new(),
            zombies: Vec::new(),
            reap_scheduled: false,
            wake_at: None,
            frozen_until: Instant::ZERO,
            idle_procs: BTreeSet::new(),
            backlog: VecDeque::new(),
            reported_backlog: 0,
            board: BTreeMap::new(),
            held: Vec::new(),
            bad_generation: BTreeMap::new(),
            stop_deadlines: BTreeSet::new(),
            exited: None,
            healed: false,
            healed_at: None,
            liveness_deadline: None,
            final_stop_deadline: None,
            beat_interval,
            last_time: Instant::ZERO,
            stats: Stats::default(),
            coverage: Coverage::new(),
            hash: TraceHash(0xcbf2_9ce4_8422_2325),
            lines: Vec::new(),
            inputs: Vec::new(),
            events: 0,
            steps: 0,
            samples: Vec::new(),
            sample_every,
            failure: None,
            main_retire: None,
            main_judge: None,
        };
        w.hash.add(seed);
        let heal_at = Instant::ZERO + Duration::from_secs_f64(minutes * 60.0);
        w.schedule_at(heal_at, Ev::Heal);
        w.schedule(Duration::ZERO, Ev::Arrival);
        if w.faults.operator > 0.0 {
            let d = w.operator_gap();
            w.schedule(d, Ev::Operator);
        }
        if w.faults.clock_jump > 0.0 {
            let d = w
                .rng_clock
                .exp(Duration::from_secs_f64(60.0 / w.faults.clock_jump));
            w.schedule(d, Ev::ClockJump);
        }
        if w.opts.keep_samples {
            w.schedule(Duration::ZERO, Ev::Sample);
        }
        if w.opts.keep_trace {
            w.lines.push(format!("SEED={seed}"));
        }
        if w.faults.inherited {
            // Children of a previous supervisor (after an upgrade) that exit under this one:
            // their exits name pids the machine never knew.
            for _ in 0..w.rng_os.between(1, 3) {
                let serial = w.create_proc(None, 1);
                w.procs.get_mut(&serial).expect("just created").inherited = true;
                let d = w.rng_os.duration(Duration::ZERO, Duration::from_secs(60));
                w.schedule(d, Ev::Crash(serial));
            }
        }
        w.drain();
        w
    }

    /// Runs to the end: the supervisor exited after the liveness phase, or a check failed.
    pub fn run(mut self) -> RunResult {
        while self.failure.is_none() && self.exited.is_none() {
            let Some(Reverse((at, seq))) = self.heap.pop() else {
                self.fail_liveness("no event left to run: the world went quiet".into());
                break;
            };
            let ev = self
                .payloads
                .remove(&seq)
                .expect("every heap entry has a payload");
            // A clock jump freezes the world: whatever was due during it happens at its end.
            let at = at.max(self.frozen_until).max(self.now);
            self.advance(at);
            self.steps += 1;
            if self.steps > STEPS_MAX {
                self.fail_liveness(format!("no end after {STEPS_MAX} steps"));
                break;
            }
            self.step(ev);
            self.check_world();
        }
        self.finish()
    }

    fn finish(self) -> RunResult {
        let outcome = self.failure.unwrap_or(Outcome::Passed);
        RunResult {
            outcome,
            seed: self.opts.seed,
            config: self.config,
            faults: self.fault_draw,
            load: self.load,
            trace_hash: self.hash.0,
            lines: self.lines,
            inputs: self.inputs,
            events: self.events,
            steps: self.steps,
            sim_time: self.now.saturating_since(Instant::ZERO),
            stats: self.stats,
            coverage: self.coverage,
            samples: self.samples,
            exit_code: self.exited,
        }
    }

    fn advance(&mut self, to: Instant) {
        let dt = to.saturating_since(self.last_time).as_secs_f64();
        self.stats.worker_seconds += dt * self.live_workers as f64;
        self.last_time = to;
        self.now = to;
    }

    // ------------------------------------------------------------- scheduling

    fn schedule(&mut self, after: Duration, ev: Ev) {
        self.schedule_at(self.now + after, ev);
    }

    fn schedule_at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    /// After a drain: make sure a wake-up is scheduled for the machine's next deadline,
    /// possibly late.
    fn schedule_wake(&mut self) {
        let config = self.sup.config();
        if !matches!(config.policy, Policy::Static { .. })
            && self.sup.phase() == Phase::Running
            && self
                .sup
                .poll_timeout()
                .is_none_or(|t| t > self.now + config.maintenance_interval)
        {
            self.coverage.hit(Mark::TickSlept);
        }
        // While messages wait unread, the shell also wakes when they are due.
        let due = (!self.held.is_empty()).then(|| self.sup.messages_due(NOTIFY_QUEUE));
        let Some(deadline) = self.sup.poll_timeout().into_iter().chain(due).min() else {
            return;
        };
        if self.wake_at.is_some_and(|w| w <= deadline) {
            return;
        }
        let mut at = deadline;
        if self.rng_clock.chance(self.faults.late_wakeup) {
            at = at
                + self
                    .rng_clock
                    .duration(Duration::from_millis(1), Duration::from_secs(2));
            self.coverage.hit(Mark::LateWakeup);
        }
        self.wake_at = Some(at);
        self.schedule_at(at, Ev::Wake);
    }

    // ------------------------------------------------------------- the machine

    /// Hands one input to the machine and performs what it asks. Like the shell, which
    /// reads the messages left in the notify socket and the report board first thing on
    /// every wake-up (a deadline that an input's timers would fire may have been met by a
    /// held heartbeat or on the board).
    fn feed(&mut self, input: Input) {
        self.read_held(false);
        if self.faults.shm_reports {
            self.read_reports(false);
        }
        self.handle(input);
        self.drain();
    }

    /// Hands one input to the machine without draining: for results of an action, fed back
    /// from inside the drain (run-loop contract, step 2).
    fn handle(&mut self, input: Input) {
        if self.exited.is_some() || self.failure.is_some() {
            return;
        }
        self.events += 1;
        self.hash_input(&input);
        if self.opts.keep_trace {
            self.lines.push(input_line(self.now, &input));
        }
        self.inputs.push((self.now, input.clone()));
        self.sup.handle(self.now, input);
        if let Err(v) = self.sup.check_invariants() {
            self.fail_safety(format!("machine invariant: {v}"));
        }
    }

    fn drain(&mut self) {
        let limit = 64 * self.max_slots as usize + 1024;
        for _ in 0..limit {
            if self.failure.is_some() {
                return;
            }
            let Some(action) = self.sup.poll_action() else {
                self.schedule_wake();
                return;
            };
            self.hash_action(&action);
            if self.opts.keep_trace {
                self.lines.push(action_line(self.now, &action));
            }
            self.perform(action);
        }
        self.fail_safety(format!("a drain did not end within {limit} actions"));
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Spawn { worker, .. } => {
                self.stats.spawns += 1;
                if self.exited.is_some() {
                    return self.fail_safety("spawn after exit".into());
                }
                if self.rng_os.chance(self.faults.fork_fail) {
                    self.coverage.hit(Mark::ForkFailed);
                    self.handle(Input::SpawnFailed {
                        worker,
                        error: SpawnError::Resources,
                    });
                } else if self.rng_os.chance(self.faults.fork_slow) {
                    self.coverage.hit(Mark::SlowFork);
                    let d = self
                        .rng_os
                        .duration(Duration::from_millis(10), Duration::from_secs(2));
                    self.schedule(d, Ev::ForkDone { worker });
                } else {
                    let pid = self.create_worker(worker);
                    self.handle(Input::Spawned { worker, pid });
                }
            }
            Action::Signal {
                worker,
                pid,
                signal,
                reason,
            } => self.perform_signal(worker, pid, signal, reason),
            Action::StartSuccessor => {
                if self.rng_os.chance(self.faults.successor_fail) && self.rng_os.chance(0.3) {
                    self.handle(Input::SuccessorFailed {
                        error: SpawnError::Exec,
                    });
                    return;
                }
                let serial = self.create_proc(None, 1);
                let pid = self.procs[&serial].pid;
                self.handle(Input::SuccessorStarted { pid });
                let d = self
                    .rng_os
                    .duration(Duration::from_millis(100), Duration::from_secs(5));
                if self.rng_os.chance(self.faults.successor_fail) {
                    if self.rng_os.chance(0.5) {
                        self.schedule(d, Ev::Crash(serial));
                    } // else: it hangs and never becomes ready
                } else {
                    self.schedule(d, Ev::SuccessorReady(serial));
                }
            }
            Action::KillSuccessor { pid, .. } => {
                let Some(&serial) = self.by_pid.get(&pid) else {
                    return self.fail_safety(format!("kill-successor aimed at unknown pid {pid}"));
                };
                let p = &self.procs[&serial];
                if p.worker.is_some() || p.inherited {
                    return self.fail_safety(format!(
                        "kill-successor aimed at pid {pid}, not the successor"
                    ));
                }
                self.schedule(Duration::from_millis(1), Ev::Signal(serial, Signal::Kill));
            }
            Action::Exit { code } => {
                let left: Vec<Pid> = self
                    .procs
                    .values()
                    .filter(|p| p.worker.is_some() && !p.stray && p.state != ProcState::Reaped)
                    .map(|p| p.pid)
                    .collect();
                if !left.is_empty() {
                    return self.fail_safety(format!(
                        "exit code {code} while worker processes remain: {left:?}"
                    ));
                }
                self.exited = Some(code);
            }
            Action::Event(event) => self.observe(&event),
        }
    }

    fn perform_signal(&mut self, worker: WorkerId, pid: Pid, signal: Signal, reason: StopReason) {
        self.stats.signals += 1;
        // Ground truth: the pid must still name that worker's process (alive or a zombie).
        let target = self.by_pid.get(&pid).copied();
        let ok = target.is_some_and(|s| {
            let p = &self.procs[&s];
            p.worker == Some(worker) && p.state != ProcState::Reaped
        });
        if !ok {
            let what = match target {
                None => "no process (reaped)".to_string(),
                Some(s) => format!("another process ({:?})", self.procs[&s].worker),
            };
            return self.fail_safety(format!(
                "{} for {worker} ({}) hit pid {pid}, which is {what}",
                signal.name(),
                reason.name()
            ));
        }
        let serial = target.expect("checked above");
        match reason {
            StopReason::HeartbeatTimeout => self.coverage.hit(Mark::HeartbeatTimeout),
            StopReason::BootTimeout => self.coverage.hit(Mark::BootTimeout),
            StopReason::RequestTimeout => self.coverage.hit(Mark::RequestTimeout),
            StopReason::MaxRequests => self.coverage.hit(Mark::MaxRequests),
            StopReason::Idle => self.coverage.hit(Mark::IdleRetired),
            StopReason::ScaleDown => self.coverage.hit(Mark::ScaleDown),
            _ => {}
        }
        if signal == Signal::Kill {
            self.stats.kills += 1;
            self.coverage.hit(Mark::LadderKill);
        }
        // The ladder in force now is the one this stop uses (a reload may have just changed it).
        self.ladder_max = self
            .ladder_max
            .max(self.sup.config().ladder.time_to_kill(0));
        let proc = self.procs.get_mut(&serial).expect("checked above");
        if proc.stop_deadline.is_none() && proc.alive() {
            let deadline = self.now + self.ladder_max + LADDER_SLACK;
            proc.stop_deadline = Some(deadline);
            self.stop_deadlines.insert((deadline, serial));
        }
        if self.opts.canary && signal == Signal::Kill {
            // The planted bug: the machine "forgets" its last stage.
            return;
        }
        let latency = Duration::from_micros(self.rng_os.between(0, 5000));
        self.schedule(latency, Ev::Signal(serial, signal));
    }

    fn observe(&mut self, event: &Event) {
        if let Event::Exited {
            worker,
            status,
            expected,
            ..
        } = event
        {
            if let Some((judged, main)) = self.main_judge.filter(|(w, _)| w == worker) {
                self.main_judge = None;
                if *expected || *status != main {
                    return self.fail_safety(format!(
                        "{judged}, retired because its main process exited ({main:?}), was reported exited with {status:?}, expected={expected}: it must count as a crash with the main process's status"
                    ));
                }
            }
        }
        if let Event::Retiring {
            worker,
            reason: StopReason::MainExited,
        } = event
        {
            if self.main_retire.take() == Some(*worker) {
                self.coverage.hit(Mark::MainExited);
            } else {
                return self.fail_safety(format!(
                    "{worker} was retired for main-exited, but no MainExited of a running worker of that id was just fed"
                ));
            }
        }
        if let Event::Retiring {
            worker,
            reason: StopReason::HeartbeatTimeout,
        } = event
        {
            self.check_heartbeat_kill(*worker);
        }
        match event {
            Event::CrashLooping { .. } => self.coverage.hit(Mark::CrashLooping),
            Event::GaveUp { .. } => self.coverage.hit(Mark::GaveUp),
            Event::UpgradeHandover => self.coverage.hit(Mark::UpgradeHandover),
            Event::UpgradeRolledBack { .. } => self.coverage.hit(Mark::UpgradeRolledBack),
            Event::Refused { .. } => self.coverage.hit(Mark::CommandRefused),
            Event::Ignored(Ignored::StaleMessage(_)) => self.coverage.hit(Mark::StaleMessage),
            Event::Ignored(Ignored::UnknownPid(_)) => self.coverage.hit(Mark::UnknownPid),
            Event::Scaled { from, to } if *to >= from + 2 => self.coverage.hit(Mark::RampDoubled),
            Event::Reloaded { restart: true, .. } => self.coverage.hit(Mark::RollingRestart),
            _ => {}
        }
    }

    /// Unless messages are delayed, a worker that keeps beating is never killed by the watchdog before its timeout has passed since
    /// its last beat: the supervisor must not lose or misdate a heartbeat. Beats left unread
    /// in the notify socket (`arrive`) are no delay: the shell reads them at the deadline at
    /// the latest, dated by their arrival, so the check stays strict for them.
    fn check_heartbeat_kill(&mut self, worker: WorkerId) {
        let Some(timeout) = self.sup.config().heartbeat_timeout else {
            return;
        };
        // Delayed messages make the supervisor see beats late: only runs without them, or
        // once the last delayed one has landed after the heal.
        let calm = self.fault_draw.msg_delay == 0.0
            || self
                .healed_at
                .is_some_and(|t| self.now >= t + Duration::from_secs(2));
        if !calm {
            return;
        }
        let beating = self.procs.values().find(|p| {
            p.worker == Some(worker) && p.state == ProcState::Running && !p.hung && !p.stray
        });
        if let Some(beat) = beating.and_then(|p| p.last_beat) {
            if self.now < beat + timeout {
                self.fail_safety(format!(
                    "{worker} was killed for a missed heartbeat, but it beat at {beat} and its timeout is {:?}",
                    timeout
                ));
            }
        }
    }

    // ------------------------------------------------------------- processes

    fn alloc_pid(&mut self) -> Pid {
        // Like Linux: the next free number after the last one handed out, wrapping.
        for _ in 0..=self.pid_space {
            self.pid_cursor = self.pid_cursor % self.pid_space + 1;
            let pid = Pid(self.pid_cursor + 1);
            if !self.by_pid.contains_key(&pid) {
                if !self.pid_ever.insert(pid) {
                    self.coverage.hit(Mark::PidReused);
                }
                return pid;
            }
        }
        // Every pid is taken (reloads grew the pool past the small space): widen it, as an
        // administrator raising pid_max would.
        self.pid_space *= 2;
        self.alloc_pid()
    }

    fn create_proc(&mut self, worker: Option<WorkerId>, threads: u32) -> u64 {
        let pid = self.alloc_pid();
        let serial = self.next_serial;
        self.next_serial += 1;
        let f = &self.faults;
        let (ignore_term, slow_drain, kill_delay, crash_drain) =
            (f.ignore_term, f.slow_drain, f.kill_delay, f.crash_drain);
        let rng = &mut self.rng_proc;
        let proc = Proc {
            pid,
            worker,
            state: ProcState::Booting,
            accepting: false,
            draining: false,
            hung: false,
            threads,
            in_flight: Vec::new(),
            requests: 0,
            ignores_term: rng.chance(ignore_term),
            drain_extra: if rng.chance(slow_drain) {
                rng.duration(Duration::from_secs(1), Duration::from_secs(90))
            } else {
                Duration::from_millis(rng.between(0, 50))
            },
            kill_delay: if rng.chance(kill_delay) {
                rng.duration(Duration::from_millis(10), Duration::from_secs(3))
            } else {
                Duration::ZERO
            },
            crash_in_drain: rng.chance(crash_drain),
            stop_deadline: None,
            last_beat: None,
            stray: false,
            inherited: false,
            main_gone: None,
            main_retired: false,
        };
        self.by_pid.insert(pid, serial);
        self.live_workers += u64::from(worker.is_some());
        self.procs.insert(serial, proc);
        serial
    }

    fn create_worker(&mut self, worker: WorkerId) -> Pid {
        let generation = self.sup.generation().0;
        let serial = self.create_proc(Some(worker), self.config.threads);
        let bad = if self.healed {
            false
        } else {
            let p = self.faults.bad_release;
            *self
                .bad_generation
                .entry(generation)
                .or_insert_with(|| self.rng_proc.chance(p))
        };
        let f = &self.faults;
        let (crash_boot, crash_ready, hang) = (f.crash_boot, f.crash_ready, f.hang);
        let rng = &mut self.rng_proc;
        let boot = rng.duration(Duration::from_millis(1), Duration::from_secs(3));
        if bad || rng.chance(crash_boot) {
            let at = rng.duration(Duration::ZERO, boot);
            self.schedule(at, Ev::Crash(serial));
        } else {
            self.schedule(boot, Ev::Booted(serial));
            if self.rng_proc.chance(crash_ready) {
                let at = boot + self.rng_proc.exp(Duration::from_secs(60));
                self.schedule(at, Ev::Crash(serial));
            }
            if self.rng_proc.chance(hang) {
                let at = boot + self.rng_proc.exp(Duration::from_secs(30));
                self.schedule(at, Ev::Hang(serial));
            }
        }
        self.procs[&serial].pid
    }

    /// A message from a worker to the supervisor, possibly delayed past the worker's exit.
    /// True if it arrived and was left unread (`arrive`).
    fn send(&mut self, input: Input) -> bool {
        if self.rng_os.chance(self.faults.msg_delay) {
            let d = self
                .rng_os
                .duration(Duration::from_millis(1), Duration::from_millis(800));
            self.schedule(d, Ev::Deliver(input));
            false
        } else {
            self.arrive(input)
        }
    }

    /// A message lands in the notify socket. While `messages_due` is ahead the shell does
    /// not watch the socket: the message waits there (true) for the next wake-up, at
    /// `messages_due` at the latest, or later if the timer is late (messages already waiting:
    /// the shell has not woken since it stopped watching). Otherwise it wakes and reads it.
    fn arrive(&mut self, input: Input) -> bool {
        if self.exited.is_some() || self.failure.is_some() {
            return false;
        }
        if !self.held.is_empty() || self.sup.messages_due(NOTIFY_QUEUE) > self.now {
            if self.held.len() >= NOTIFY_QUEUE as usize {
                let mut senders: BTreeMap<WorkerId, u32> = BTreeMap::new();
                for (_, i) in self.held.iter().chain([&(self.now, input)]) {
                    if let Input::Heartbeat { worker } | Input::Ready { worker } = i {
                        *senders.entry(*worker).or_default() += 1;
                    }
                }
                self.fail_safety(format!(
                    "a worker would block in sendto: {} messages held unread since {}, the notify socket holds {NOTIFY_QUEUE} (messages_due {}; {} senders, at most {} from one, {} workers)",
                    self.held.len() + 1,
                    self.held[0].0,
                    self.sup.messages_due(NOTIFY_QUEUE),
                    senders.len(),
                    senders.values().max().copied().unwrap_or(0),
                    self.sup.workers().count(),
                ));
                return true;
            }
            self.held.push((self.now, input));
            self.schedule_wake();
            return true;
        }
        self.feed(input);
        false
    }

    fn die(&mut self, serial: u64, status: ExitStatus) {
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        if !p.alive() {
            return;
        }
        // What is left of a group whose main process exited: the shell reports the main's
        // status when the group is empty.
        let status = p.main_gone.unwrap_or(status);
        self.live_workers -= u64::from(p.worker.is_some());
        let broken = p.in_flight.len() as u64;
        p.in_flight.clear();
        p.state = ProcState::Zombie(status);
        p.accepting = false;
        self.stats.broken += broken;
        if broken > 0 {
            self.coverage.hit(Mark::ConnectionBroken);
        }
        self.idle_procs.remove(&serial);
        self.zombies.push(serial);
        if !self.reap_scheduled {
            self.reap_scheduled = true;
            let d = if self.faults.sigchld_coalesce {
                self.rng_os
                    .duration(Duration::from_millis(1), Duration::from_millis(1500))
            } else {
                Duration::ZERO
            };
            self.schedule(d, Ev::Reap);
        }
    }

    fn reap(&mut self) {
        self.reap_scheduled = false;
        // The wake-up's socket and board reads come before `waitpid`: between a reap and its
        // `Exited` no other input may run (an action could aim at the reaped pid).
        self.read_held(false);
        if self.faults.shm_reports {
            self.read_reports(false);
        }
        let zombies = std::mem::take(&mut self.zombies);
        if zombies.len() > 1 {
            self.coverage.hit(Mark::CoalescedReap);
        }
        // The shell reaps in a waitpid loop after the drain; each exit is its own input.
        for serial in zombies {
            let p = self
                .procs
                .get_mut(&serial)
                .expect("zombies are known processes");
            let ProcState::Zombie(status) = p.state else {
                unreachable!("only zombies are queued for reaping")
            };
            p.state = ProcState::Reaped;
            let pid = p.pid;
            if let Some(d) = p.stop_deadline.take() {
                self.stop_deadlines.remove(&(d, serial));
            }
            self.by_pid.remove(&pid);
            // The shell stops reading a slot once its worker is reaped.
            self.board.remove(&serial);
            self.main_judge = p
                .main_retired
                .then(|| (p.worker.expect("a worker"), status));
            self.handle(Input::Exited { pid, status });
            self.drain();
            if let Some((worker, _)) = self.main_judge.take() {
                if self.exited.is_none() {
                    self.fail_safety(format!(
                        "{worker} (pid {pid}) was reaped, and the supervisor reported no exit of it"
                    ));
                }
            }
            // Keep the table small: a reaped process can no longer be named by anyone.
            self.procs.remove(&serial);
        }
    }

    /// A worker's main process exits on its own while the rest of its group runs on
    /// (`Faults::main_exit`). The shell reaps the leader and, the group not empty, feeds
    /// `MainExited`; the machine must retire a worker it was not already stopping.
    fn main_exited(&mut self, serial: u64, status: ExitStatus) {
        let p = self.procs.get_mut(&serial).expect("caller checked");
        p.main_gone = Some(status);
        p.accepting = false;
        let pid = p.pid;
        self.idle_procs.remove(&serial);
        // As at any reap: the wake-up's socket and board reads come before `waitpid`.
        self.read_held(false);
        if self.faults.shm_reports {
            self.read_reports(false);
        }
        if self.exited.is_some() || self.failure.is_some() {
            return;
        }
        // Ground truth for "not stopping": the machine never signalled it (a stop of a
        // worker whose pid is known signals at once). A stray is no worker of the machine.
        let p = &self.procs[&serial];
        self.main_retire = if p.stray || p.stop_deadline.is_some() {
            None
        } else {
            p.worker
        };
        let expected = self.main_retire.is_some();
        self.handle(Input::MainExited { pid, status });
        self.drain();
        if let Some(worker) = self.main_retire.take() {
            if self.exited.is_none() {
                self.fail_safety(format!(
                    "the main process of {worker} (pid {pid}) exited ({status:?}) while it ran, and the supervisor did not retire it"
                ));
            }
        } else if expected {
            self.procs
                .get_mut(&serial)
                .expect("not reaped")
                .main_retired = true;
        }
    }

    fn start_requests(&mut self, serial: u64) {
        while let Some(p) = self.procs.get(&serial) {
            if !(p.accepting && !p.hung && (p.in_flight.len() as u32) < p.threads) {
                break;
            }
            let Some(arrived) = self.backlog.pop_front() else {
                break;
            };
            self.begin_request(serial, arrived);
        }
        self.update_idle(serial);
    }

    fn begin_request(&mut self, serial: u64, arrived: Instant) {
        let now = self.now;
        let wait = now.saturating_since(arrived);
        self.stats.queue_waits_us.push(wait.as_micros() as u64);
        let d = self.rng_load.exp(REQUEST_MEAN);
        let p = self.procs.get_mut(&serial).expect("caller checked");
        p.in_flight.push(now);
        self.schedule(d, Ev::RequestDone(serial, now));
    }

    fn update_idle(&mut self, serial: u64) {
        let idle = self.procs.get(&serial).is_some_and(|p| {
            p.alive() && p.accepting && !p.hung && (p.in_flight.len() as u32) < p.threads
        });
        if idle {
            self.idle_procs.insert(serial);
        } else {
            self.idle_procs.remove(&serial);
        }
    }

    /// TERM/INT/QUIT: stop accepting, finish in-flight requests, exit 0 (after the drain).
    fn begin_drain(&mut self, serial: u64) {
        let p = self.procs.get_mut(&serial).expect("caller checked");
        if p.draining {
            return;
        }
        p.draining = true;
        p.accepting = false;
        let (crash, busy, extra) = (p.crash_in_drain, p.in_flight.len(), p.drain_extra);
        self.idle_procs.remove(&serial);
        if crash {
            let d = self.rng_proc.duration(Duration::ZERO, extra);
            self.schedule(d, Ev::Crash(serial));
        }
        if busy == 0 {
            self.schedule(extra, Ev::Die(serial, ExitStatus::Code(0)));
        }
    }

    // ------------------------------------------------------------- events

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Wake => {
                if self.wake_at == Some(self.now) || self.wake_at.is_some_and(|w| w <= self.now) {
                    self.wake_at = None;
                    // As the shell: read what the workers sent and published and the accept
                    // queue, then the timers.
                    self.read_held(true);
                    self.read_reports(true);
                    self.read_backlog();
                    self.feed(Input::Tick);
                }
            }
            Ev::ForkDone { worker } => {
                let awaited = self.sup.workers().any(|w| {
                    w.id == worker
                        && w.pid.is_none()
                        && matches!(
                            w.state,
                            WorkerState::Spawning | WorkerState::Stopping { .. }
                        )
                });
                let pid = self.create_worker(worker);
                if !awaited {
                    let serial = self.by_pid[&pid];
                    self.procs.get_mut(&serial).expect("just created").stray = true;
                }
                self.feed(Input::Spawned { worker, pid });
            }
            Ev::Booted(serial) => {
                let Some(p) = self.procs.get_mut(&serial) else {
                    return;
                };
                if p.state != ProcState::Booting || p.hung || p.main_gone.is_some() {
                    return;
                }
                p.state = ProcState::Running;
                p.accepting = !p.draining;
                let worker = p.worker.expect("only workers boot");
                if self.config.readiness == Readiness::Notify {
                    self.send(Input::Ready { worker });
                }
                self.start_requests(serial);
                self.schedule(self.beat_interval, Ev::Beat(serial));
            }
            Ev::Beat(serial) => {
                let Some(p) = self.procs.get(&serial) else {
                    return;
                };
                if !p.alive() || p.hung || p.main_gone.is_some() {
                    return;
                }
                let worker = p.worker.expect("only workers beat");
                let now = self.now;
                if let Some(p) = self.procs.get_mut(&serial) {
                    p.last_beat = Some(now);
                }
                let p = &self.procs[&serial];
                let reported = (
                    p.in_flight.len() as u32,
                    p.in_flight.iter().min().copied(),
                    p.requests,
                );
                self.schedule(self.beat_interval, Ev::Beat(serial));
                if self.faults.shm_reports {
                    // Published, not sent: read on the supervisor's next wake-up. A load
                    // change rings the doorbell (a datagram: delayed like any message).
                    let now = self.now;
                    let cell = self.board.entry(serial).or_default();
                    cell.beat = Some(now);
                    cell.load = Some(reported);
                    if cell.rung != Some(reported) {
                        cell.rung = Some(reported);
                        if self.rng_os.chance(self.faults.msg_delay) {
                            let d = self
                                .rng_os
                                .duration(Duration::from_millis(1), Duration::from_millis(800));
                            self.schedule(d, Ev::Doorbell);
                        } else {
                            self.read_held(false);
                            self.read_reports(false);
                            self.read_backlog();
                        }
                    }
                    return;
                }
                let (busy, oldest_busy_since, requests) = reported;
                let mut held = self.send(Input::Heartbeat { worker });
                if !self.faults.silent_load() {
                    held |= self.send(Input::Load {
                        worker,
                        busy,
                        oldest_busy_since,
                        requests,
                    });
                }
                // A message left unread wakes nobody: no sampling of the accept queue then.
                if !held {
                    self.read_backlog();
                }
            }
            Ev::Crash(serial) => {
                let unrecoverable = !self.config.restart.unrecoverable_exit_codes.is_empty()
                    && self.rng_proc.chance(self.faults.unrecoverable);
                let status = if unrecoverable {
                    ExitStatus::Code(self.config.restart.unrecoverable_exit_codes[0])
                } else if self.rng_proc.chance(0.5) {
                    ExitStatus::Code(1)
                } else {
                    ExitStatus::Signaled(11)
                };
                let main_exits = self
                    .procs
                    .get(&serial)
                    .is_some_and(|p| p.alive() && p.worker.is_some() && p.main_gone.is_none())
                    && self.rng_proc.chance(self.faults.main_exit);
                if main_exits {
                    self.main_exited(serial, status);
                } else {
                    self.die(serial, status);
                }
            }
            Ev::Hang(serial) => {
                if let Some(p) = self.procs.get_mut(&serial) {
                    if p.alive() {
                        p.hung = true;
                        p.accepting = false;
                        self.idle_procs.remove(&serial);
                    }
                }
            }
            Ev::Signal(serial, signal) => {
                let Some(p) = self.procs.get(&serial) else {
                    return;
                };
                if !p.alive() {
                    return;
                }
                match signal {
                    Signal::Kill => {
                        let d = p.kill_delay;
                        self.schedule(d, Ev::Die(serial, ExitStatus::Signaled(9)));
                    }
                    Signal::Term | Signal::Int | Signal::Quit if !(p.hung || p.ignores_term) => {
                        self.begin_drain(serial);
                    }
                    _ => {}
                }
            }
            Ev::Die(serial, status) => self.die(serial, status),
            Ev::Reap => self.reap(),
            Ev::Deliver(input) => {
                if !self.arrive(input) {
                    self.read_backlog();
                }
            }
            Ev::Doorbell => {
                self.read_held(false);
                self.read_reports(false);
                self.read_backlog();
            }
            Ev::Arrival => self.on_arrival(),
            Ev::RequestDone(serial, started) => self.on_request_done(serial, started),
            Ev::Operator => {
                if !self.healed {
                    self.operator_command();
                    let d = self.operator_gap();
                    self.schedule(d, Ev::Operator);
                }
            }
            Ev::SuccessorReady(serial) => {
                if self.procs.get(&serial).is_some_and(Proc::alive) {
                    self.feed(Input::SuccessorReady);
                }
            }
            Ev::ClockJump => {
                if !self.healed {
                    let jump = self
                        .rng_clock
                        .duration(Duration::from_secs(1), Duration::from_secs(120));
                    self.coverage.hit(Mark::ClockJump);
                    self.frozen_until = self.now + jump;
                    // The oracle's deadlines are in world time: a suspend pauses them too.
                    let deadlines = std::mem::take(&mut self.stop_deadlines);
                    for (d, serial) in deadlines {
                        let d = d + jump;
                        self.procs.get_mut(&serial).expect("tracked").stop_deadline = Some(d);
                        self.stop_deadlines.insert((d, serial));
                    }
                    let gap = self
                        .rng_clock
                        .exp(Duration::from_secs_f64(60.0 / self.faults.clock_jump));
                    self.schedule(jump + gap, Ev::ClockJump);
                }
            }
            Ev::Heal => self.heal(),
            Ev::Check => {}
            Ev::Sample => {
                self.sample();
                self.schedule(self.sample_every, Ev::Sample);
            }
        }
    }

    /// The shell samples the listener's accept queue on each wake-up and reports a change.
    fn read_backlog(&mut self) {
        let queued = self.backlog.len() as u32;
        if queued != self.reported_backlog {
            self.reported_backlog = queued;
            self.feed(Input::Backlog {
                listener: 0,
                queued,
            });
        }
    }

    /// The shell reads the report board on each wake-up: a newer heartbeat stamp becomes
    /// `HeartbeatAt`, a changed load `Load`, for every worker not yet reaped, all in one
    /// `handle_all` (so no deadline fires between two of them).
    fn read_reports(&mut self, timer: bool) {
        let mut inputs = Vec::new();
        for (serial, cell) in &mut self.board {
            let Some(worker) = self.procs.get(serial).and_then(|p| p.worker) else {
                continue;
            };
            if let Some(at) = cell.beat.filter(|b| cell.fed_beat != Some(*b)) {
                inputs.push(Input::HeartbeatAt { worker, at });
            }
            if let Some((busy, oldest_busy_since, requests)) =
                cell.load.filter(|l| cell.fed_load != Some(*l))
            {
                inputs.push(Input::Load {
                    worker,
                    busy,
                    oldest_busy_since,
                    requests,
                });
            }
            cell.fed_beat = cell.beat;
            cell.fed_load = cell.load;
        }
        if inputs.is_empty() {
            return;
        }
        if timer
            && inputs
                .iter()
                .any(|i| matches!(i, Input::HeartbeatAt { .. }))
        {
            self.coverage.hit(Mark::SampledHeartbeat);
        }
        self.handle_batch(inputs);
    }

    /// The shell reads every message left in the notify socket (`arrive`) on each wake-up,
    /// all in one `handle_all`; a heartbeat becomes `HeartbeatAt` its arrival time.
    /// `timer`: a timer wake-up (`messages_due` or a deadline).
    fn read_held(&mut self, timer: bool) {
        if self.held.is_empty() {
            return;
        }
        let inputs: Vec<Input> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|(at, input)| match input {
                Input::Heartbeat { worker } => Input::HeartbeatAt { worker, at },
                other => other,
            })
            .collect();
        let beats = inputs
            .iter()
            .filter(|i| matches!(i, Input::HeartbeatAt { .. }))
            .count();
        if timer && beats >= 2 {
            self.coverage.hit(Mark::HeldMessages);
        }
        self.handle_batch(inputs);
    }

    /// Hands inputs read together to the machine in one `handle_all` and performs what it
    /// asks. Recorded one by one for replay, as `shrink::replay` feeds them.
    fn handle_batch(&mut self, inputs: Vec<Input>) {
        if self.exited.is_some() || self.failure.is_some() {
            return;
        }
        for input in &inputs {
            self.events += 1;
            self.hash_input(input);
            if self.opts.keep_trace {
                self.lines.push(input_line(self.now, input));
            }
            self.inputs.push((self.now, input.clone()));
        }
        self.sup.handle_all(self.now, inputs);
        if let Err(v) = self.sup.check_invariants() {
            self.fail_safety(format!("machine invariant: {v}"));
        }
        self.drain();
    }

    fn capacity(&self) -> f64 {
        f64::from(self.config.policy.max()) * f64::from(self.config.threads)
            / REQUEST_MEAN.as_secs_f64()
    }

    fn on_arrival(&mut self) {
        let t = self.now.saturating_since(Instant::ZERO).as_secs_f64();
        let rate = self.load.rate(t, self.capacity());
        if rate <= 0.0 {
            self.schedule(Duration::from_secs(1), Ev::Arrival);
            return;
        }
        // Re-drawn at every arrival, so a changing rate is followed closely enough.
        let gap = self.rng_load.exp(Duration::from_secs_f64(1.0 / rate));
        self.schedule(gap.min(Duration::from_secs(1)), Ev::Arrival);
        if gap > Duration::from_secs(1) {
            return; // no arrival this time: the rate is re-evaluated in a second
        }
        self.stats.arrivals += 1;
        if let Some(&serial) = self.idle_procs.first() {
            self.begin_request(serial, self.now);
            self.update_idle(serial);
        } else if self.backlog.len() < BACKLOG {
            self.backlog.push_back(self.now);
        } else {
            self.stats.refused += 1;
            self.coverage.hit(Mark::ConnectionRefused);
        }
    }

    fn on_request_done(&mut self, serial: u64, started: Instant) {
        let Some(p) = self.procs.get_mut(&serial) else {
            return;
        };
        if !p.alive() || p.hung {
            return; // broken (counted at death) or stuck forever
        }
        let Some(i) = p.in_flight.iter().position(|&s| s == started) else {
            return;
        };
        p.in_flight.swap_remove(i);
        p.requests += 1;
        self.stats.served += 1;
        if p.draining {
            if p.in_flight.is_empty() {
                let extra = p.drain_extra;
                self.schedule(extra, Ev::Die(serial, ExitStatus::Code(0)));
            }
            return;
        }
        self.start_requests(serial);
    }

    fn operator_gap(&mut self) -> Duration {
        self.rng_op.exp(Duration::from_secs_f64(
            60.0 / self.faults.operator.max(1e-9),
        ))
    }

    fn operator_command(&mut self) {
        let rolling = {
            let generation = self.sup.generation();
            self.sup.workers().any(|w| w.generation < generation)
        };
        // An accepted upgrade or stop ends the run early (this supervisor exits), so they
        // are rarer than the commands that keep it running.
        let second_stop = matches!(self.sup.phase(), Phase::Stopping { immediate: false })
            && self.rng_op.chance(0.5);
        let command = match self.rng_op.below(100) {
            // An impatient operator sends a second TERM (serverengine, uninterruptible).
            _ if second_stop => Command::Stop,
            0..=21 => Command::Restart,
            22..=49 => {
                let next = swarm::draw_reload(&mut self.rng_op, self.sup.config());
                Command::Reload(Box::new(next))
            }
            50..=61 => Command::ScaleUp,
            62..=73 => Command::ScaleDown,
            74..=85 => Command::ScaleTo(self.rng_op.between(0, 20) as u32),
            86..=95 => Command::Upgrade,
            96..=98 => Command::Stop,
            _ => Command::StopNow,
        };
        if rolling && matches!(command, Command::Restart | Command::Reload(_)) {
            self.coverage.hit(Mark::ReloadDuringReload);
        }
        if matches!(command, Command::Stop | Command::StopNow)
            && matches!(self.sup.phase(), Phase::Stopping { immediate: false })
        {
            self.coverage.hit(Mark::StopEscalated);
        }
        self.feed(Input::Command(command));
        self.note_config();
    }

    /// After a command: widen the oracle's bounds to the config now in force.
    fn note_config(&mut self) {
        let c = self.sup.config();
        self.ladder_max = self.ladder_max.max(c.ladder.time_to_kill(0));
        self.max_slots = self.max_slots.max(c.slot_count());
        if c != &self.config {
            self.config = c.clone();
            self.beat_interval = self
                .config
                .heartbeat_timeout
                .map_or(Duration::from_secs(2), |t| {
                    (t / 3).min(Duration::from_secs(2))
                });
        }
    }

    // ------------------------------------------------------------- phases and oracles

    fn heal(&mut self) {
        self.healed = true;
        self.healed_at = Some(self.now);
        let mut healed = Faults::none();
        healed.shm_reports = self.faults.shm_reports;
        healed.load_silent = self.faults.load_silent;
        if self.opts.canary {
            healed.ignore_term = 1.0;
        }
        self.faults = healed;
        self.frozen_until = self.frozen_until.min(self.now);
        let bound = self.liveness_bound();
        let deadline = self.now + bound;
        self.liveness_deadline = Some(deadline);
        self.schedule_at(deadline, Ev::Check);
    }

    /// How long a healed pool may take to converge, from the config: a full ladder for
    /// every slot (a draining worker holds its slot), the slowest boot, backoff and
    /// crash-loop window, an upgrade timeout, and the ramp.
    fn liveness_bound(&self) -> Duration {
        let c = &self.config;
        let per_wave = self.ladder_max
            + c.boot_timeout
            + c.heartbeat_timeout.unwrap_or_default()
            + c.restart.backoff_max
            + LADDER_SLACK;
        per_wave * (self.max_slots + 2)
            + c.restart.intensity_window
            + c.upgrade_timeout
            + c.maintenance_interval * (c.policy.max() + 10)
            + Duration::from_secs(120)
    }

    fn check_world(&mut self) {
        if self.failure.is_some() || self.exited.is_some() {
            return;
        }
        if let Some(&(deadline, serial)) = self.stop_deadlines.first() {
            if self.now > deadline {
                let p = &self.procs[&serial];
                return self.fail_safety(format!(
                    "{:?} (pid {}) was asked to stop and still lives past its ladder bound {}",
                    p.worker, p.pid, deadline
                ));
            }
        }
        let live = self
            .procs
            .values()
            .filter(|p| p.worker.is_some() && !p.stray && p.state != ProcState::Reaped)
            .count() as u32;
        if live > self.max_slots {
            return self.fail_safety(format!(
                "{live} worker processes exist, above max + max_surge = {}",
                self.max_slots
            ));
        }
        if !self.healed {
            return;
        }
        if let Some(deadline) = self.final_stop_deadline {
            if self.now > deadline {
                let phase = self.sup.phase();
                self.fail_liveness(format!(
                    "the final stop did not end in Exit by {deadline} (phase {phase:?}, {} live)",
                    self.sup.live_workers()
                ));
            }
            return;
        }
        if self.sup.is_settled() {
            self.feed(Input::Command(Command::Stop));
            let deadline = self.now + self.ladder_max + LADDER_SLACK + Duration::from_secs(2);
            self.final_stop_deadline = Some(deadline);
            self.schedule_at(deadline, Ev::Check);
            return;
        }
        if self.liveness_deadline.is_some_and(|d| self.now > d) {
            let phase = self.sup.phase();
            let states: Vec<String> = self
                .sup
                .workers()
                .map(|w| format!("{}:{}", w.id, w.state.name()))
                .collect();
            self.fail_liveness(format!(
                "no convergence within the bound: phase {phase:?}, target {}, ready {}, workers [{}]",
                self.sup.target(),
                self.sup.ready_workers(),
                states.join(" ")
            ));
        }
    }

    fn sample(&mut self) {
        let mut s = Sample {
            t: self.now.saturating_since(Instant::ZERO).as_secs_f64(),
            queued: self.backlog.len() as u32,
            load: self.load.rate(
                self.now.saturating_since(Instant::ZERO).as_secs_f64(),
                self.capacity(),
            ),
            ..Sample::default()
        };
        for w in self.sup.workers() {
            match w.state {
                WorkerState::Spawning | WorkerState::Booting => s.booting += 1,
                WorkerState::Ready { busy: 0 } => s.idle += 1,
                WorkerState::Ready { .. } => s.busy += 1,
                WorkerState::Stopping { .. } => s.stopping += 1,
                WorkerState::Backoff { .. } | WorkerState::GaveUp { .. } => {}
            }
        }
        self.samples.push(s);
    }

    fn fail_safety(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(Outcome::Safety(format!("at {}: {what}", self.now)));
        }
    }

    fn fail_liveness(&mut self, what: String) {
        if self.failure.is_none() {
            self.failure = Some(Outcome::Liveness(format!("at {}: {what}", self.now)));
        }
    }

    // ------------------------------------------------------------- determinism hash

    fn hash_input(&mut self, input: &Input) {
        let h = &mut self.hash;
        h.add(self.now.as_nanos());
        match input {
            Input::Tick => h.add(1),
            Input::Spawned { worker, pid } => {
                h.add(2);
                h.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
                h.add(u64::from(pid.0));
            }
            Input::SpawnFailed { worker, .. } => {
                h.add(3);
                h.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
            }
            Input::Ready { worker } | Input::Heartbeat { worker } => {
                h.add(4);
                h.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
            }
            Input::Load {
                worker,
                busy,
                requests,
                oldest_busy_since,
            } => {
                h.add(5);
                h.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
                h.add(u64::from(*busy));
                h.add(*requests);
                h.add(oldest_busy_since.map_or(0, Instant::as_nanos));
            }
            Input::Backlog { queued, .. } => {
                h.add(6);
                h.add(u64::from(*queued));
            }
            Input::Exited { pid, status } | Input::MainExited { pid, status } => {
                h.add(if matches!(input, Input::Exited { .. }) {
                    7
                } else {
                    13
                });
                h.add(u64::from(pid.0));
                h.add(match status {
                    ExitStatus::Code(c) => *c as u64,
                    ExitStatus::Signaled(s) => 1000 + *s as u64,
                });
            }
            Input::Command(c) => {
                h.add(8);
                h.add_str(c.name());
                if let Command::Reload(config) = c {
                    h.add(config.worker_fingerprint);
                    h.add(u64::from(config.policy.max()));
                }
                if let Command::ScaleTo(n) = c {
                    h.add(u64::from(*n));
                }
            }
            Input::SuccessorStarted { pid } => {
                h.add(9);
                h.add(u64::from(pid.0));
            }
            Input::SuccessorFailed { .. } => h.add(10),
            Input::SuccessorReady => h.add(11),
            Input::Takeover { predecessor_gone } => {
                h.add(15);
                h.add(u64::from(*predecessor_gone));
            }
            Input::HeartbeatAt { worker, at } => {
                h.add(12);
                h.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
                h.add(at.as_nanos());
            }
        }
    }

    fn hash_action(&mut self, action: &Action) {
        let h = &mut self.hash;
        match action {
            Action::Spawn { worker, generation } => {
                h.add(20);
                h.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
                h.add(u64::from(generation.0));
            }
            Action::Signal { pid, signal, .. } => {
                h.add(21);
                h.add(u64::from(pid.0));
                h.add_str(signal.name());
            }
            Action::StartSuccessor => h.add(22),
            Action::KillSuccessor { pid, .. } => {
                h.add(23);
                h.add(u64::from(pid.0));
            }
            Action::Exit { code } => {
                h.add(24);
                h.add(*code as u64);
            }
            Action::Event(_) => h.add(25),
        }
    }
}

/// Runs one seed.
pub fn run(opts: RunOptions) -> RunResult {
    World::new(opts).run()
}
