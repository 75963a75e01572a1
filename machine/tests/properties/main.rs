//! Property tests: an arbitrary valid config and an arbitrary sequence of odd but possible
//! inputs, driven through the run-loop contract by a small model OS.
//!
//! The driver talks to `Supervisor` directly (not via `testing::Harness`) so that it can
//! inject faults inside the drain: failed and slow forks, workers that obey or ignore graceful
//! signals, KILL whose effect is delayed, successors that fail, hang or die. Time advances by
//! ticking at every `poll_timeout()` deadline, or now and then by a late wake-up (the input
//! arrives first, no tick on the way), as a loaded or suspended host does.
//!
//! Safety, after every `handle` (also inside a drain) and every drain:
//! - `check_invariants()` is Ok; no panic; `poll_timeout() > now`;
//! - no `Signal`/`KillSuccessor` aims at a reaped pid, a pid never spawned, or another
//!   worker's pid; spawns are of the current generation;
//! - once `Exit` is emitted only events follow; its code is 0 or a configured one;
//! - every signalled worker gets KILL by its first signal + the longest ladder in force;
//! - no orphan: a live worker process is tracked by the machine or was sent KILL.
//!
//! Liveness, once faults stop (spawns succeed, KILL acts at once, Ready and heartbeats are
//! sent): a Running pool converges, stably, to its target of Ready workers of the current
//! generation within a bound computed from the config; then it is taken down by Stop, by a
//! rolling restart (Ready capacity never below the floor) and Stop, or by a successful live
//! upgrade, and `Exit` must come within the longest ladder.
//!
//! `mod found` keeps the minimal inputs the property found as deterministic scenarios.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Command, Config, Duration, ExitStatus, Input, Instant, Ladder, OnCrashLoop, Phase, Pid,
    Policy, Readiness, Restart, Signal, SpawnError, Stage, Supervisor, UpgradeState, WorkerId,
    WorkerState, MAX_WORKERS,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

type Res = Result<(), TestCaseError>;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

// ------------------------------------------------------------------------- strategies

fn policy(threads: u32) -> BoxedStrategy<Policy> {
    prop_oneof![
        (1u32..=8).prop_map(|workers| Policy::Static { workers }),
        (1u32..=8, 0u32..=8, 0u32..=8, 1u32..=8, 0u32..=4).prop_map(
            move |(max, min, start, min_spare, extra)| {
                let min = min.min(max);
                Policy::Dynamic {
                    min,
                    max,
                    start: min + start % (max - min + 1),
                    min_spare,
                    max_spare: min_spare + threads - 1 + extra,
                }
            }
        ),
        (1u32..=8, 0u32..=8).prop_map(|(max, min)| Policy::Ondemand {
            min: min.min(max),
            max
        }),
    ]
    .boxed()
}

fn graceful_signal() -> impl Strategy<Value = Signal> {
    // Any signal a non-final ladder stage may use: all but KILL.
    prop::sample::select(
        Signal::ALL
            .into_iter()
            .filter(|s| *s != Signal::Kill)
            .collect::<Vec<_>>(),
    )
}

fn ladder() -> impl Strategy<Value = Ladder> {
    let custom = (
        prop::collection::vec((graceful_signal(), 1u64..=20, 0u64..=10, 1u64..=120), 0..=3),
        any::<usize>(),
    )
        .prop_map(|(stages, immediate)| {
            let mut stages: Vec<Stage> = stages
                .into_iter()
                .map(|(signal, interval, increment, timeout)| Stage {
                    signal,
                    interval: secs(interval),
                    increment: secs(increment),
                    timeout: secs(timeout),
                })
                .collect();
            stages.push(Stage::kill());
            let immediate_from = immediate % stages.len();
            Ladder {
                stages,
                immediate_from,
            }
        });
    prop_oneof![
        (1u64..=60).prop_map(|s| Ladder::for_any_program(secs(s))),
        Just(Ladder::serverengine()),
        custom,
    ]
}

fn restart() -> impl Strategy<Value = Restart> {
    (
        (100u64..=5_000, 0u64..=60_000, 1u64..=60),
        (1u32..=20, 1u64..=120),
        prop_oneof![
            3 => Just(OnCrashLoop::Backoff),
            1 => (3i32..=9).prop_map(OnCrashLoop::Exit)
        ],
        prop::collection::vec(1i32..=5, 0..=2),
        any::<bool>(),
    )
        .prop_map(
            |((min, extra, healthy), (deaths, window), on_crash_loop, codes, stop)| Restart {
                backoff_min: millis(min),
                backoff_max: millis(min + extra),
                healthy_uptime: secs(healthy),
                intensity_deaths: deaths,
                intensity_window: secs(window),
                on_crash_loop,
                stop_on_unrecoverable: stop && !codes.is_empty(),
                unrecoverable_exit_codes: codes,
            },
        )
}

fn config() -> impl Strategy<Value = Config> {
    (1u32..=4)
        .prop_flat_map(|threads| {
            (
                (Just(threads), policy(threads), 1u32..=32),
                (
                    prop::sample::select(vec![1u64, 2, 5]),
                    prop::option::of(1u64..=60),
                    prop::option::of(1u64..=500),
                    0u64..=50,
                    any::<u64>(),
                ),
                (
                    prop_oneof![Just(Readiness::AtSpawn), Just(Readiness::Notify)],
                    1u64..=120,
                    prop::option::of(1u64..=60),
                    prop::option::of(1u64..=120),
                ),
                (ladder(), restart()),
                (0u32..=3, 0u32..=2, 1u64..=120, 0u64..=2),
            )
        })
        .prop_map(
            |(
                (threads, policy, max_spawn_rate),
                (maintenance, idle, max_requests, jitter, seed),
                (readiness, boot, heartbeat, request),
                (ladder, restart),
                (max_surge, max_unavailable, upgrade, fingerprint),
            )| {
                let ondemand = matches!(policy, Policy::Ondemand { .. });
                let mut c = Config::new(policy);
                c.threads = threads;
                c.max_spawn_rate = max_spawn_rate;
                c.maintenance_interval = secs(maintenance);
                c.idle_timeout = idle.map(secs).or(ondemand.then(|| secs(10)));
                c.max_requests = max_requests;
                c.max_requests_jitter = if max_requests.is_some() { jitter } else { 0 };
                c.seed = seed;
                c.readiness = readiness;
                c.boot_timeout = secs(boot);
                c.heartbeat_timeout = heartbeat.map(secs);
                c.request_timeout = request.map(secs);
                c.ladder = Arc::new(ladder);
                c.restart = restart;
                c.max_surge = max_surge;
                c.max_unavailable = max_unavailable;
                c.upgrade_timeout = secs(upgrade);
                c.worker_fingerprint = fingerprint;
                c
            },
        )
        .prop_filter("config must validate", |c| c.validate().is_ok())
}

/// Which worker a message names.
#[derive(Clone, Debug)]
enum Pick {
    /// One of `Supervisor::workers()` (any state).
    Live(usize),
    /// An earlier incarnation of an occupied slot.
    Stale(usize),
    /// A slot or incarnation that never existed.
    Never(u32),
}

fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        8 => any::<usize>().prop_map(Pick::Live),
        1 => any::<usize>().prop_map(Pick::Stale),
        1 => any::<u32>().prop_map(Pick::Never),
    ]
}

#[derive(Clone, Debug)]
enum Scale {
    Small(u32),
    /// One above the pool's scale bound.
    JustAbove,
    Huge,
}

#[derive(Clone, Debug)]
enum Cmd {
    Stop,
    StopNow,
    Restart,
    Reload(usize),
    ReloadInvalid,
    Upgrade,
    ScaleTo(Scale),
    ScaleUp,
    ScaleDown,
}

fn cmd() -> impl Strategy<Value = Cmd> {
    // Stops are rare: they end the interesting part of a case.
    prop_oneof![
        1 => Just(Cmd::Stop),
        1 => Just(Cmd::StopNow),
        20 => Just(Cmd::Restart),
        20 => any::<usize>().prop_map(Cmd::Reload),
        5 => Just(Cmd::ReloadInvalid),
        20 => Just(Cmd::Upgrade),
        15 => (0u32..=16).prop_map(|n| Cmd::ScaleTo(Scale::Small(n))),
        5 => Just(Cmd::ScaleTo(Scale::JustAbove)),
        5 => Just(Cmd::ScaleTo(Scale::Huge)),
        15 => Just(Cmd::ScaleUp),
        15 => Just(Cmd::ScaleDown),
    ]
}

#[derive(Clone, Debug)]
enum Op {
    Tick,
    Ready(Pick),
    Heartbeat(Pick),
    /// Heartbeats stamped `ago_ms` before now (after now when negative), read late and
    /// together (`handle_all`), as the shell reads the embedded runtime's report board.
    Reports(Vec<(Pick, i64)>),
    Load {
        pick: Pick,
        busy: u32,
        since_ago_ms: Option<u64>,
        requests: u64,
    },
    /// A live worker process (tracked or stray) exits on its own.
    Crash {
        idx: usize,
        status: ExitStatus,
    },
    /// Only its main process does: the rest of its group runs on (`MainExited`).
    MainExit {
        idx: usize,
        status: ExitStatus,
    },
    ExitUnknown,
    /// `Spawned` for an arbitrary worker (usually one that is not spawning).
    StraySpawned(Pick),
    StraySpawnFailed(Pick),
    /// A slow fork finally answers.
    AnswerSpawn {
        idx: usize,
        ok: bool,
    },
    Backlog {
        listener: u32,
        queued: u32,
    },
    Command(Cmd),
    SuccessorStarted,
    SuccessorFailed,
    SuccessorReady,
    SuccessorExit(usize),
    /// Delayed KILL effects arrive.
    FlushDelayed,
}

fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        (0i32..=5).prop_map(ExitStatus::Code),
        prop::sample::select(vec![6, 9, 11, 15]).prop_map(ExitStatus::Signaled),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Tick),
        8 => pick().prop_map(Op::Ready),
        8 => pick().prop_map(Op::Heartbeat),
        4 => prop::collection::vec((pick(), -2_000i64..=60_000), 1..=4).prop_map(Op::Reports),
        8 => (pick(), 0u32..=6, prop::option::of(0u64..=300_000), 0u64..=1_000).prop_map(
            |(pick, busy, since_ago_ms, requests)| Op::Load { pick, busy, since_ago_ms, requests }
        ),
        6 => (any::<usize>(), exit_status()).prop_map(|(idx, status)| Op::Crash { idx, status }),
        2 => (any::<usize>(), exit_status()).prop_map(|(idx, status)| Op::MainExit { idx, status }),
        2 => Just(Op::ExitUnknown),
        2 => pick().prop_map(Op::StraySpawned),
        2 => pick().prop_map(Op::StraySpawnFailed),
        4 => (any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(idx, ok)| Op::AnswerSpawn { idx, ok }),
        4 => (0u32..=3, 0u32..=20).prop_map(|(listener, queued)| Op::Backlog { listener, queued }),
        8 => cmd().prop_map(Op::Command),
        2 => Just(Op::SuccessorStarted),
        1 => Just(Op::SuccessorFailed),
        2 => Just(Op::SuccessorReady),
        2 => any::<usize>().prop_map(Op::SuccessorExit),
        3 => Just(Op::FlushDelayed),
    ]
}

#[derive(Clone, Debug)]
struct Step {
    advance: Duration,
    /// A late wake-up: no tick at the deadlines on the way; the input arrives first.
    late: bool,
    op: Op,
    /// Seed of the model OS's decisions inside this step's drains.
    dice: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            3 => Just(0u64),
            10 => 0u64..3_000,
            5 => 0u64..120_000,
            1 => 120_000u64..1_800_000,
        ],
        prop::bool::weighted(0.15),
        op(),
        any::<u64>(),
    )
        .prop_map(|(ms, late, op, dice)| Step {
            advance: millis(ms),
            late,
            op,
            dice,
        })
}

/// Fault rates of one case, in percent (swarm testing: some cases have none of a kind).
#[derive(Clone, Debug)]
struct Faults {
    spawn_fail: u64,
    slow_fork: u64,
    /// A graceful signal makes the worker exit.
    term_exit: u64,
    /// A KILL takes effect only at a later step.
    kill_delay: u64,
    successor_fail: u64,
    successor_slow: u64,
    /// Once healed, workers exit on their first graceful signal; otherwise only KILL ends
    /// them (the worst case for the ladder bound).
    healed_obey: bool,
    /// How the converged pool is taken down.
    ending: Ending,
}

#[derive(Clone, Copy, Debug)]
enum Ending {
    Stop,
    /// A rolling restart first (capacity checked throughout), then Stop.
    RestartThenStop,
    /// A live upgrade that succeeds: the pool drains and exits 0.
    Upgrade,
}

fn faults() -> impl Strategy<Value = Faults> {
    let rate = |max: u64| prop_oneof![Just(0u64), 0..=max];
    (
        rate(40),
        rate(20),
        rate(100),
        rate(40),
        rate(50),
        rate(50),
        any::<bool>(),
        prop_oneof![
            Just(Ending::Stop),
            Just(Ending::RestartThenStop),
            Just(Ending::Upgrade)
        ],
    )
        .prop_map(
            |(
                spawn_fail,
                slow_fork,
                term_exit,
                kill_delay,
                successor_fail,
                successor_slow,
                healed_obey,
                ending,
            )| Faults {
                spawn_fail,
                slow_fork,
                term_exit,
                kill_delay,
                successor_fail,
                successor_slow,
                healed_obey,
                ending,
            },
        )
}

// ------------------------------------------------------------------------- model OS

struct Dice(u64);

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
enum Kind {
    Worker(WorkerId),
    Successor,
}

#[derive(Debug)]
struct Proc {
    kind: Kind,
    /// KILL (or KillSuccessor) was sent to it.
    killed: bool,
    /// Created after `Exit`: the driver would be gone; nobody owns it.
    after_exit: bool,
}

/// Steps one `advance_to` may tick before it is called a timer livelock.
const TICK_LIMIT: usize = 200_000;
/// Actions one drain may produce before it is called endless.
const DRAIN_LIMIT: usize = 100_000;
const LISTENERS: u32 = 4;

struct Model {
    sup: Supervisor,
    now: Instant,
    next_pid: u32,
    dice: Dice,
    faults: Faults,
    /// Faults stopped: every spawn succeeds, every KILL takes effect at once, graceful
    /// signals are obeyed or ignored as `faults.healed_obey` says.
    healed: bool,
    reloads: Vec<Config>,
    /// Processes not yet reaped (alive, or zombies awaiting `waitpid`).
    procs: BTreeMap<Pid, Proc>,
    /// Exited, awaiting reap after the drain.
    zombies: BTreeSet<Pid>,
    pending_exits: Vec<(Pid, ExitStatus)>,
    /// KILLed processes whose exit comes at a later step.
    delayed: Vec<(Pid, ExitStatus)>,
    reaped: BTreeSet<Pid>,
    /// Spawns not answered yet (slow fork).
    pending_spawns: Vec<WorkerId>,
    /// First signal sent to a worker pid: the start of its ladder.
    first_signal: BTreeMap<Pid, Instant>,
    /// The longest time_to_kill(0) of every ladder that can be in force.
    max_ttk: Duration,
    allowed_codes: BTreeSet<i32>,
    exit: Option<(Instant, i32)>,
    /// The last time the phase left `Running`.
    stop_began: Option<Instant>,
    /// During a healed rolling restart: Ready workers at its start, lowered by every
    /// scale-down. Ready capacity may not drop below this - max_unavailable while Running.
    rollout_ready: Option<u32>,
    trace: Vec<String>,
}

impl Model {
    fn new(config: Config, reloads: Vec<Config>, faults: Faults) -> Result<Model, TestCaseError> {
        let mut all = vec![config.clone()];
        all.extend(reloads.iter().cloned());
        let max_ttk = all
            .iter()
            .map(|c| c.ladder.time_to_kill(0))
            .max()
            .unwrap_or_default();
        let mut allowed_codes = BTreeSet::from([0]);
        for c in &all {
            if let OnCrashLoop::Exit(code) = c.restart.on_crash_loop {
                allowed_codes.insert(code);
            }
            if c.restart.stop_on_unrecoverable {
                allowed_codes.extend(c.restart.unrecoverable_exit_codes.iter().copied());
            }
        }
        let sup = Supervisor::new(config, Instant::ZERO)
            .map_err(|e| TestCaseError::fail(format!("valid config refused: {e}")))?;
        let mut m = Model {
            sup,
            now: Instant::ZERO,
            next_pid: 100,
            dice: Dice(0),
            faults,
            healed: false,
            reloads,
            procs: BTreeMap::new(),
            zombies: BTreeSet::new(),
            pending_exits: Vec::new(),
            delayed: Vec::new(),
            reaped: BTreeSet::new(),
            pending_spawns: Vec::new(),
            first_signal: BTreeMap::new(),
            max_ttk,
            allowed_codes,
            exit: None,
            stop_began: None,
            rollout_ready: None,
            trace: Vec::new(),
        };
        m.check_after_handle(Phase::Running)?;
        m.drain()?;
        Ok(m)
    }

    fn fail<T>(&self, msg: String) -> Result<T, TestCaseError> {
        let from = self.trace.len().saturating_sub(80);
        Err(TestCaseError::fail(format!(
            "{msg}\n--- last trace lines ---\n{}",
            self.trace[from..].join("\n")
        )))
    }

    fn fresh_pid(&mut self) -> Pid {
        self.next_pid += 1;
        Pid(self.next_pid)
    }

    fn new_proc(&mut self, kind: Kind) -> Pid {
        let pid = self.fresh_pid();
        let after_exit = self.exit.is_some();
        self.procs.insert(
            pid,
            Proc {
                kind,
                killed: false,
                after_exit,
            },
        );
        pid
    }

    fn alive(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid)
            && !self.zombies.contains(&pid)
            && !self.delayed.iter().any(|d| d.0 == pid)
    }

    // --------------------------------------------------------------- run loop

    /// `handle` only, with the checks due after every `handle` (also inside a drain).
    fn handle_raw(&mut self, input: Input) -> Res {
        if input != Input::Tick {
            self.trace.push(input_line(self.now, &input));
        }
        let before = self.sup.phase();
        self.sup.handle(self.now, input);
        self.check_after_handle(before)
    }

    /// One run-loop iteration: handle, then drain (and reap after the drain).
    fn input(&mut self, input: Input) -> Res {
        self.handle_raw(input)?;
        self.drain()
    }

    /// `waitpid` reaped `pid`: tell the machine, then drain.
    fn reap(&mut self, pid: Pid, status: ExitStatus) -> Res {
        if self.reaped.contains(&pid) {
            return self.fail(format!("model error: pid {pid:?} reaped twice"));
        }
        self.procs.remove(&pid);
        self.zombies.remove(&pid);
        self.delayed.retain(|d| d.0 != pid);
        self.first_signal.remove(&pid);
        self.reaped.insert(pid);
        self.input(Input::Exited { pid, status })
    }

    fn check_after_handle(&mut self, before: Phase) -> Res {
        if let Err(v) = self.sup.check_invariants() {
            return self.fail(format!("invariant violated at {}: {v}", self.now));
        }
        self.check_timeout()?;
        let phase = self.sup.phase();
        if before == Phase::Running && matches!(phase, Phase::Stopping { .. } | Phase::Handover) {
            self.stop_began = Some(self.now);
        }
        if let (Some(at_start), Phase::Running) = (self.rollout_ready, phase) {
            // A scale-down lowers the floor for good; a scale-up does not raise it (the new
            // worker is not spawned yet).
            let wanted = at_start.min(self.sup.target());
            self.rollout_ready = Some(wanted);
            let floor = wanted.saturating_sub(self.sup.config().max_unavailable);
            let ready = self.sup.ready_workers();
            if ready < floor {
                return self.fail(format!(
                    "rolling restart: {ready} Ready workers at {}, below the floor {floor}",
                    self.now
                ));
            }
        }
        Ok(())
    }

    fn check_timeout(&self) -> Res {
        if let Some(at) = self.sup.poll_timeout() {
            if at <= self.now {
                return self.fail(format!("poll_timeout {at} <= now {}", self.now));
            }
        }
        Ok(())
    }

    fn drain(&mut self) -> Res {
        let mut actions = 0;
        loop {
            while let Some(action) = self.sup.poll_action() {
                actions += 1;
                if actions > DRAIN_LIMIT {
                    return self.fail(format!("a drain did not end in {DRAIN_LIMIT} actions"));
                }
                self.trace.push(action_line(self.now, &action));
                self.perform(action)?;
            }
            self.check_timeout()?;
            // Reap only after the drain: zombies hold their pids until now.
            if self.pending_exits.is_empty() {
                break;
            }
            let (pid, status) = self.pending_exits.remove(0);
            self.reap_in_drain(pid, status)?;
        }
        self.check_after_drain()
    }

    fn reap_in_drain(&mut self, pid: Pid, status: ExitStatus) -> Res {
        if self.reaped.contains(&pid) {
            return self.fail(format!("model error: pid {pid:?} reaped twice"));
        }
        self.procs.remove(&pid);
        self.zombies.remove(&pid);
        self.first_signal.remove(&pid);
        self.reaped.insert(pid);
        self.handle_raw(Input::Exited { pid, status })
    }

    fn perform(&mut self, action: Action) -> Res {
        if self.exit.is_some() && !matches!(action, Action::Event(_)) {
            return self.fail(format!("{action:?} emitted after Exit"));
        }
        match action {
            Action::Event(_) => Ok(()),
            Action::Spawn { worker, generation } => {
                if generation != self.sup.generation() {
                    return self.fail(format!(
                        "spawn of {worker:?} for generation {generation:?}, current {:?}",
                        self.sup.generation()
                    ));
                }
                if self.pending_spawns.contains(&worker) {
                    return self.fail(format!("{worker:?} spawned twice"));
                }
                let r = self.dice.percent();
                if !self.healed && r < self.faults.spawn_fail {
                    self.handle_raw(Input::SpawnFailed {
                        worker,
                        error: SpawnError::Resources,
                    })
                } else if !self.healed && r < self.faults.spawn_fail + self.faults.slow_fork {
                    self.pending_spawns.push(worker);
                    Ok(())
                } else {
                    let pid = self.new_proc(Kind::Worker(worker));
                    self.handle_raw(Input::Spawned { worker, pid })
                }
            }
            Action::Signal {
                worker,
                pid,
                signal,
                reason,
            } => {
                if self.reaped.contains(&pid) {
                    return self.fail(format!(
                        "{signal} ({reason}) for {worker:?} aimed at pid {pid:?}, already reaped"
                    ));
                }
                let Some(kind) = self.procs.get(&pid).map(|p| p.kind) else {
                    return self.fail(format!("{signal} aimed at pid {pid:?}, never spawned"));
                };
                if kind != Kind::Worker(worker) {
                    return self.fail(format!(
                        "{signal} for {worker:?} aimed at pid {pid:?}, which is {kind:?}"
                    ));
                }
                if signal == Signal::Kill {
                    self.procs.get_mut(&pid).expect("checked").killed = true;
                }
                self.first_signal.entry(pid).or_insert(self.now);
                if !self.alive(pid) {
                    return Ok(());
                }
                let r = self.dice.percent();
                if signal == Signal::Kill {
                    if !self.healed && r < self.faults.kill_delay {
                        self.delayed.push((pid, ExitStatus::Signaled(9)));
                    } else {
                        self.zombies.insert(pid);
                        self.pending_exits.push((pid, ExitStatus::Signaled(9)));
                    }
                } else if (!self.healed && r < self.faults.term_exit)
                    || (self.healed && self.faults.healed_obey)
                {
                    self.zombies.insert(pid);
                    self.pending_exits.push((pid, ExitStatus::Code(0)));
                }
                Ok(())
            }
            Action::StartSuccessor => {
                let r = self.dice.percent();
                if !self.healed && r < self.faults.successor_fail {
                    self.handle_raw(Input::SuccessorFailed {
                        error: SpawnError::Exec,
                    })
                } else if !self.healed
                    && r < self.faults.successor_fail + self.faults.successor_slow
                {
                    Ok(())
                } else {
                    let pid = self.new_proc(Kind::Successor);
                    self.handle_raw(Input::SuccessorStarted { pid })
                }
            }
            Action::KillSuccessor { pid, reason } => {
                if self.reaped.contains(&pid) {
                    return self.fail(format!(
                        "KillSuccessor ({reason:?}) aimed at pid {pid:?}, already reaped"
                    ));
                }
                let Some(kind) = self.procs.get(&pid).map(|p| p.kind) else {
                    return self.fail(format!("KillSuccessor aimed at pid {pid:?}, never started"));
                };
                if kind != Kind::Successor {
                    return self.fail(format!(
                        "KillSuccessor aimed at pid {pid:?}, which is {kind:?}"
                    ));
                }
                self.procs.get_mut(&pid).expect("checked").killed = true;
                if self.alive(pid) {
                    if !self.healed && self.dice.percent() < self.faults.kill_delay {
                        self.delayed.push((pid, ExitStatus::Signaled(9)));
                    } else {
                        self.zombies.insert(pid);
                        self.pending_exits.push((pid, ExitStatus::Signaled(9)));
                    }
                }
                Ok(())
            }
            Action::Exit { code } => {
                if !self.allowed_codes.contains(&code) {
                    return self.fail(format!(
                        "Exit with code {code}, expected one of {:?}",
                        self.allowed_codes
                    ));
                }
                self.exit = Some((self.now, code));
                Ok(())
            }
        }
    }

    /// Safety checks on the model's view, once a drain (and its reaps) is complete.
    fn check_after_drain(&self) -> Res {
        // Every worker asked to stop gets KILL by the end of its ladder.
        for (&pid, &t0) in &self.first_signal {
            let killed = self.procs.get(&pid).is_none_or(|p| p.killed);
            if !killed && self.alive(pid) && self.now >= t0 + self.max_ttk {
                return self.fail(format!(
                    "pid {pid:?} first signalled at {t0} has no KILL at {} (longest ladder {:?})",
                    self.now, self.max_ttk
                ));
            }
        }
        // No orphan: a live worker process is tracked by the machine or was KILLed.
        for (&pid, proc) in &self.procs {
            if let Kind::Worker(worker) = proc.kind {
                if proc.killed || proc.after_exit || !self.alive(pid) {
                    continue;
                }
                if !self.sup.workers().any(|w| w.pid == Some(pid)) {
                    return self.fail(format!(
                        "orphan: pid {pid:?} of {worker:?} is alive, untracked and not killed"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sleeps until `t`, ticking at every deadline on the way.
    fn advance_to(&mut self, t: Instant) -> Res {
        for _ in 0..TICK_LIMIT {
            match self.sup.poll_timeout() {
                Some(deadline) if deadline <= t => {
                    self.now = self.now.max(deadline);
                    self.input(Input::Tick)?;
                }
                _ => {
                    self.now = self.now.max(t);
                    return Ok(());
                }
            }
        }
        self.fail(format!("advance_to({t}) did not settle: timer livelock"))
    }

    // --------------------------------------------------------------- fault phase

    fn resolve(&self, pick: &Pick) -> WorkerId {
        let workers: Vec<WorkerId> = self.sup.workers().map(|w| w.id).collect();
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

    fn run_step(&mut self, step: &Step) -> Res {
        self.dice = Dice(step.dice);
        let t = self.now + step.advance;
        if step.late {
            self.now = t;
        } else {
            self.advance_to(t)?;
        }
        match &step.op {
            Op::Tick => self.input(Input::Tick),
            Op::Ready(p) => {
                let worker = self.resolve(p);
                self.input(Input::Ready { worker })
            }
            Op::Heartbeat(p) => {
                let worker = self.resolve(p);
                self.input(Input::Heartbeat { worker })
            }
            Op::Reports(beats) => {
                let now = self.now.as_nanos();
                let inputs: Vec<Input> = beats
                    .iter()
                    .map(|(pick, ago_ms)| {
                        let shift = millis(ago_ms.unsigned_abs()).as_nanos() as u64;
                        let at = Instant::from_nanos(if *ago_ms >= 0 {
                            now.saturating_sub(shift)
                        } else {
                            now.saturating_add(shift)
                        });
                        Input::HeartbeatAt {
                            worker: self.resolve(pick),
                            at,
                        }
                    })
                    .collect();
                for input in &inputs {
                    self.trace.push(input_line(self.now, input));
                }
                let before = self.sup.phase();
                self.sup.handle_all(self.now, inputs);
                self.check_after_handle(before)?;
                self.drain()
            }
            Op::Load {
                pick,
                busy,
                since_ago_ms,
                requests,
            } => {
                let worker = self.resolve(pick);
                let oldest_busy_since = since_ago_ms.map(|ms| {
                    Instant::from_nanos(
                        self.now
                            .as_nanos()
                            .saturating_sub(millis(ms).as_nanos() as u64),
                    )
                });
                self.input(Input::Load {
                    worker,
                    busy: *busy,
                    oldest_busy_since,
                    requests: *requests,
                })
            }
            Op::Crash { idx, status } | Op::MainExit { idx, status } => {
                let live: Vec<Pid> = self
                    .procs
                    .iter()
                    .filter(|(&pid, p)| matches!(p.kind, Kind::Worker(_)) && self.alive(pid))
                    .map(|(&pid, _)| pid)
                    .collect();
                match live.get(idx % live.len().max(1)) {
                    // The group lives on in the model: signals still reach it, KILL ends it.
                    Some(&pid) if matches!(step.op, Op::MainExit { .. }) => {
                        self.input(Input::MainExited {
                            pid,
                            status: *status,
                        })
                    }
                    Some(&pid) => self.reap(pid, *status),
                    None => self.input(Input::Tick),
                }
            }
            Op::ExitUnknown => {
                let pid = self.fresh_pid();
                self.reaped.insert(pid);
                self.input(Input::Exited {
                    pid,
                    status: ExitStatus::Code(0),
                })
            }
            Op::StraySpawned(p) => {
                let worker = self.resolve(p);
                self.pending_spawns.retain(|w| *w != worker);
                let pid = self.new_proc(Kind::Worker(worker));
                self.input(Input::Spawned { worker, pid })
            }
            Op::StraySpawnFailed(p) => {
                let worker = self.resolve(p);
                self.pending_spawns.retain(|w| *w != worker);
                self.input(Input::SpawnFailed {
                    worker,
                    error: SpawnError::Other(11),
                })
            }
            Op::AnswerSpawn { idx, ok } => {
                if self.pending_spawns.is_empty() {
                    return self.input(Input::Tick);
                }
                let worker = self.pending_spawns.remove(idx % self.pending_spawns.len());
                if *ok {
                    let pid = self.new_proc(Kind::Worker(worker));
                    self.input(Input::Spawned { worker, pid })
                } else {
                    self.input(Input::SpawnFailed {
                        worker,
                        error: SpawnError::Resources,
                    })
                }
            }
            Op::Backlog { listener, queued } => self.input(Input::Backlog {
                listener: *listener,
                queued: *queued,
            }),
            Op::Command(c) => {
                let command = self.command(c);
                self.input(Input::Command(command))
            }
            Op::SuccessorStarted => {
                let pid = self.new_proc(Kind::Successor);
                self.input(Input::SuccessorStarted { pid })
            }
            Op::SuccessorFailed => self.input(Input::SuccessorFailed {
                error: SpawnError::Resources,
            }),
            Op::SuccessorReady => self.input(Input::SuccessorReady),
            Op::SuccessorExit(idx) => {
                let live: Vec<Pid> = self
                    .procs
                    .iter()
                    .filter(|(&pid, p)| {
                        p.kind == Kind::Successor
                            && !self.zombies.contains(&pid)
                            && !self.reaped.contains(&pid)
                    })
                    .map(|(&pid, _)| pid)
                    .collect();
                match live.get(idx % live.len().max(1)) {
                    Some(&pid) => self.reap(pid, ExitStatus::Code(1)),
                    None => self.input(Input::Tick),
                }
            }
            Op::FlushDelayed => self.flush_delayed(),
        }
    }

    fn flush_delayed(&mut self) -> Res {
        while let Some((pid, status)) = self.delayed.first().copied() {
            self.reap(pid, status)?;
        }
        Ok(())
    }

    fn command(&self, c: &Cmd) -> Command {
        match c {
            Cmd::Stop => Command::Stop,
            Cmd::StopNow => Command::StopNow,
            Cmd::Restart => Command::Restart,
            Cmd::Reload(i) if !self.reloads.is_empty() => {
                Command::Reload(Box::new(self.reloads[i % self.reloads.len()].clone()))
            }
            Cmd::Reload(_) => Command::Reload(Box::new(self.sup.config().clone())),
            Cmd::ReloadInvalid => {
                let mut c = self.sup.config().clone();
                c.threads = 0;
                Command::Reload(Box::new(c))
            }
            Cmd::Upgrade => Command::Upgrade,
            Cmd::ScaleTo(Scale::Small(n)) => Command::ScaleTo(*n),
            Cmd::ScaleTo(Scale::Huge) => Command::ScaleTo(u32::MAX),
            Cmd::ScaleTo(Scale::JustAbove) => {
                let c = self.sup.config();
                Command::ScaleTo(match c.policy {
                    Policy::Static { .. } => MAX_WORKERS - c.max_surge + 1,
                    _ => c.policy.max() + 1,
                })
            }
            Cmd::ScaleUp => Command::ScaleUp,
            Cmd::ScaleDown => Command::ScaleDown,
        }
    }

    // --------------------------------------------------------------- liveness phase

    /// Ready for every booting worker; heartbeats (and, with `load`, an idle load report)
    /// for every Ready worker.
    fn nurse(&mut self, load: bool) -> Res {
        let heartbeats = self.sup.config().heartbeat_timeout.is_some();
        let workers: Vec<_> = self.sup.workers().collect();
        for w in workers {
            match w.state {
                WorkerState::Booting => self.input(Input::Ready { worker: w.id })?,
                WorkerState::Ready { busy } => {
                    if load || busy > 0 {
                        self.input(Input::Load {
                            worker: w.id,
                            busy: 0,
                            oldest_busy_since: None,
                            requests: w.requests,
                        })?;
                    }
                    if heartbeats {
                        self.input(Input::Heartbeat { worker: w.id })?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn converged(&self) -> bool {
        self.sup.is_settled()
    }

    fn liveness(&mut self) -> Res {
        if self.exit.is_some() {
            return Ok(());
        }
        let start = self.now;
        self.healed = true;
        self.flush_delayed()?;
        for worker in std::mem::take(&mut self.pending_spawns) {
            let pid = self.new_proc(Kind::Worker(worker));
            self.input(Input::Spawned { worker, pid })?;
        }
        for listener in 0..LISTENERS {
            self.input(Input::Backlog {
                listener,
                queued: 0,
            })?;
        }
        self.nurse(true)?;

        // A draining worker holds its slot until it exits: with workers that ignore graceful
        // signals, every wave of replacements (rolling restart, scale-down, a worker killed
        // for a failure, then its backoff) may wait for a whole ladder, and there are at most
        // as many waves as places. An upgrade in flight resolves within its timeout; scaling
        // moves one worker per maintenance tick. Ten minutes covers the rest.
        let c = self.sup.config();
        let places = self.sup.workers().count() as u32 + c.slot_count() + 1;
        let wave = self.max_ttk + c.restart.backoff_max + c.boot_timeout;
        let converge_bound =
            secs(600) + wave * places + c.upgrade_timeout + c.restart.intensity_window;
        let mut converge_by = start + converge_bound;
        // Converged must hold this long: a pool that spawns and retires in a cycle is not
        // converged even if it passes through the target.
        let stable_for = c.maintenance_interval * 3 + c.idle_timeout.unwrap_or_default() + secs(1);
        let mut converged_since: Option<Instant> = None;
        let beat = c
            .heartbeat_timeout
            .map_or(secs(5), |h| (h / 2).min(secs(5)));
        let mut stop_sent = false;
        let mut restarted = false;
        loop {
            if let Some((at, code)) = self.exit {
                let Some(began) = self.stop_began else {
                    return self.fail("Exit without a stop or handover".into());
                };
                let by = began.max(start) + self.max_ttk;
                if stop_sent && matches!(self.faults.ending, Ending::Upgrade) && code != 0 {
                    return self.fail(format!("Exit code {code} after a handover"));
                }
                if at > by {
                    return self.fail(format!(
                        "Exit at {at}, after the ladder bound {by} (stop at {began}, heal at {start})"
                    ));
                }
                return Ok(());
            }
            if !self.converged() {
                converged_since = None;
            } else if converged_since.is_none() {
                converged_since = Some(self.now);
            }
            let stable = converged_since.is_some_and(|t| self.now >= t + stable_for);
            match self.sup.phase() {
                Phase::Running if stable && self.sup.upgrade_state() == UpgradeState::Idle => {
                    if stop_sent {
                        return self.fail("still Running after a Stop or handover".into());
                    }
                    match self.faults.ending {
                        Ending::RestartThenStop if !restarted => {
                            restarted = true;
                            self.rollout_ready = Some(self.sup.ready_workers());
                            converged_since = None;
                            converge_by = self.now + converge_bound;
                            self.input(Input::Command(Command::Restart))?;
                            self.nurse(false)?;
                        }
                        Ending::Stop | Ending::RestartThenStop => {
                            stop_sent = true;
                            self.rollout_ready = None;
                            self.input(Input::Command(Command::Stop))?;
                        }
                        Ending::Upgrade => {
                            stop_sent = true;
                            self.input(Input::Command(Command::Upgrade))?;
                            if !matches!(self.sup.upgrade_state(), UpgradeState::Started { .. }) {
                                return self.fail(format!(
                                    "upgrade not started: {:?}",
                                    self.sup.upgrade_state()
                                ));
                            }
                            self.input(Input::SuccessorReady)?;
                            if self.sup.phase() != Phase::Handover && self.exit.is_none() {
                                return self.fail(format!(
                                    "no handover after SuccessorReady: {:?}",
                                    self.sup.phase()
                                ));
                            }
                        }
                    }
                    continue;
                }
                Phase::Running => {
                    if self.now > converge_by {
                        let since = converged_since.map(|t| format!(" (converged since {t})"));
                        let ready = self.sup.ready_workers();
                        let target = self.sup.target();
                        let states: Vec<String> = self
                            .sup
                            .workers()
                            .map(|w| format!("{:?} {:?} {:?}", w.id, w.generation, w.state))
                            .collect();
                        return self.fail(format!(
                            "no stable convergence within {converge_bound:?} of healing at \
                             {start}{}: ready {ready}, target {target}, generation {:?}, \
                             workers {states:?}",
                            since.unwrap_or_default(),
                            self.sup.generation()
                        ));
                    }
                }
                Phase::Stopping { .. } | Phase::Handover => {
                    let began = self.stop_began.unwrap_or(start).max(start);
                    if self.now > began + self.max_ttk {
                        return self.fail(format!(
                            "no Exit by {} (stop at {began} + longest ladder {:?})",
                            self.now, self.max_ttk
                        ));
                    }
                }
                Phase::Exited => return self.fail("Exited without an Exit action".into()),
            }
            let next = self
                .sup
                .poll_timeout()
                .map_or(self.now + beat, |t| t.min(self.now + beat));
            self.now = next;
            self.input(Input::Tick)?;
            self.nurse(false)?;
        }
    }
}

fn run(config: Config, reloads: Vec<Config>, faults: Faults, steps: &[Step]) -> Res {
    let mut m = Model::new(config, reloads, faults)?;
    for step in steps {
        m.run_step(step)?;
    }
    m.liveness()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        max_shrink_iters: 20_000,
        // Failures print their minimal input; no regression file is written.
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn supervisor_stays_safe_and_live_under_arbitrary_inputs(
        config in config(),
        reloads in prop::collection::vec(config(), 0..=2),
        faults in faults(),
        steps in prop::collection::vec(step(), 1..200),
    ) {
        run(config, reloads, faults, &steps)?;
    }
}

/// The maintenance tick sleeps while it could change nothing (`poll_timeout` hides it). The
/// proof that it loses nothing: a driver that also ticks at every point of the maintenance
/// grid must see exactly the actions of one that sleeps until `poll_timeout()`, for
/// dynamic and ondemand pools under arbitrary load, queue, readiness, exit and scale
/// inputs. A tick hidden while it would have acted shows up as a difference.
mod hidden_ticks {
    use super::*;

    #[derive(Clone, Debug)]
    enum TwinOp {
        Load {
            pick: usize,
            busy: u32,
            requests: u64,
        },
        Backlog(u32),
        Ready(usize),
        Exit(usize),
        ScaleTo(u32),
    }

    fn twin_op() -> impl Strategy<Value = TwinOp> {
        prop_oneof![
            8 => (any::<usize>(), 0u32..=4, 0u64..=50)
                .prop_map(|(pick, busy, requests)| TwinOp::Load { pick, busy, requests }),
            4 => (0u32..=12).prop_map(TwinOp::Backlog),
            3 => any::<usize>().prop_map(TwinOp::Ready),
            2 => any::<usize>().prop_map(TwinOp::Exit),
            1 => (0u32..=8).prop_map(TwinOp::ScaleTo),
        ]
    }

    fn twin_config() -> impl Strategy<Value = Config> {
        (1u32..=3)
            .prop_flat_map(|threads| {
                (
                    Just(threads),
                    policy(threads),
                    1u32..=8,
                    prop::sample::select(vec![1u64, 2, 5]),
                    prop::option::of(1u64..=30),
                    prop_oneof![Just(Readiness::AtSpawn), Just(Readiness::Notify)],
                )
            })
            .prop_filter("dynamic or ondemand", |(_, policy, ..)| {
                !matches!(policy, Policy::Static { .. })
            })
            .prop_map(|(threads, policy, rate, interval, idle, readiness)| {
                let ondemand = matches!(policy, Policy::Ondemand { .. });
                let mut c = Config::new(policy);
                c.threads = threads;
                c.max_spawn_rate = rate;
                c.maintenance_interval = secs(interval);
                c.idle_timeout = idle.map(secs).or(ondemand.then(|| secs(10)));
                c.readiness = readiness;
                c.boot_timeout = secs(600);
                c
            })
            .prop_filter("config must validate", |c| c.validate().is_ok())
    }

    /// One driver: pids in spawn order, every signal ends its process (reaped after the
    /// drain), the trace of every action.
    struct Twin {
        sup: Supervisor,
        now: Instant,
        next_pid: u32,
        signalled: Vec<Pid>,
        gone: BTreeSet<Pid>,
        actions: Vec<String>,
        /// Tick at every grid point too (multiples of the interval: no reload, stop or
        /// late wake-up moves the grid here).
        grid: Option<Duration>,
    }

    impl Twin {
        fn new(config: &Config, grid: bool) -> Twin {
            let interval = config.maintenance_interval;
            let mut t = Twin {
                sup: Supervisor::new(config.clone(), Instant::ZERO).unwrap(),
                now: Instant::ZERO,
                next_pid: 100,
                signalled: Vec::new(),
                gone: BTreeSet::new(),
                actions: Vec::new(),
                grid: grid.then_some(interval),
            };
            t.drain();
            t
        }

        fn input(&mut self, input: Input) {
            self.sup.handle(self.now, input);
            self.drain();
        }

        fn drain(&mut self) {
            loop {
                while let Some(action) = self.sup.poll_action() {
                    self.actions.push(action_line(self.now, &action));
                    match action {
                        Action::Spawn { worker, .. } => {
                            self.next_pid += 1;
                            let pid = Pid(self.next_pid);
                            self.sup.handle(self.now, Input::Spawned { worker, pid });
                        }
                        Action::Signal { pid, .. } if !self.gone.contains(&pid) => {
                            self.gone.insert(pid);
                            self.signalled.push(pid);
                        }
                        _ => {}
                    }
                }
                if self.signalled.is_empty() {
                    return;
                }
                let pid = self.signalled.remove(0);
                self.sup.handle(
                    self.now,
                    Input::Exited {
                        pid,
                        status: ExitStatus::Code(0),
                    },
                );
            }
        }

        /// Ticks at every deadline up to `t` and, for the ticking twin, at every grid point
        /// before `t`: a grid point at `t` itself ticks after the input at `t`
        /// (`tick_on_grid`), as the machine runs every timer due at an input's time after
        /// the input.
        fn advance_to(&mut self, t: Instant) {
            for _ in 0..100_000 {
                let grid = self.grid.map(|d| {
                    let d = d.as_nanos() as u64;
                    Instant::from_nanos((self.now.as_nanos() / d + 1) * d)
                });
                let next = [self.sup.poll_timeout(), grid.filter(|&g| g < t)]
                    .into_iter()
                    .flatten()
                    .min();
                match next {
                    Some(at) if at <= t => {
                        self.now = at;
                        self.input(Input::Tick);
                    }
                    _ => {
                        self.now = t;
                        return;
                    }
                }
            }
            panic!("timer livelock");
        }

        /// The ticking twin's tick on a grid point that falls exactly now, after the input.
        fn tick_on_grid(&mut self) {
            if let Some(d) = self.grid {
                if self.now.as_nanos() % (d.as_nanos() as u64) == 0 {
                    self.input(Input::Tick);
                }
            }
        }

        fn apply(&mut self, op: &TwinOp) {
            let workers: Vec<WorkerId> = self
                .sup
                .workers()
                .filter(|w| w.pid.is_some())
                .map(|w| w.id)
                .collect();
            let pick = |i: usize| workers.get(i % workers.len().max(1)).copied();
            match *op {
                TwinOp::Load {
                    pick: i,
                    busy,
                    requests,
                } => {
                    if let Some(worker) = pick(i) {
                        self.input(Input::Load {
                            worker,
                            busy,
                            oldest_busy_since: (busy > 0).then_some(self.now),
                            requests,
                        });
                    }
                }
                TwinOp::Backlog(queued) => self.input(Input::Backlog {
                    listener: 0,
                    queued,
                }),
                TwinOp::Ready(i) => {
                    if let Some(worker) = pick(i) {
                        self.input(Input::Ready { worker });
                    }
                }
                TwinOp::Exit(i) => {
                    let pid = pick(i)
                        .and_then(|w| self.sup.workers().find(|v| v.id == w).and_then(|v| v.pid));
                    if let Some(pid) = pid.filter(|p| !self.gone.contains(p)) {
                        self.gone.insert(pid);
                        self.input(Input::Exited {
                            pid,
                            status: ExitStatus::Code(1),
                        });
                    }
                }
                TwinOp::ScaleTo(n) => self.input(Input::Command(Command::ScaleTo(n))),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn hidden_maintenance_ticks_would_have_done_nothing(
            config in twin_config(),
            steps in prop::collection::vec((0u64..20_000, twin_op()), 1..80),
        ) {
            let mut sleeper = Twin::new(&config, false);
            let mut ticker = Twin::new(&config, true);
            for (ms, op) in &steps {
                let t = sleeper.now + millis(*ms);
                sleeper.advance_to(t);
                ticker.advance_to(t);
                sleeper.apply(op);
                ticker.apply(op);
                ticker.tick_on_grid();
                prop_assert_eq!(
                    &sleeper.actions,
                    &ticker.actions,
                    "a tick the sleeping driver skipped would have acted (config {:?})",
                    config
                );
                // A calm tick acts without an action: it puts the spawn ramp back to 1.
                prop_assert_eq!(sleeper.sup.spawn_rate(), ticker.sup.spawn_rate());
            }
            let end = sleeper.now + secs(120);
            sleeper.advance_to(end);
            ticker.advance_to(end);
            prop_assert_eq!(&sleeper.actions, &ticker.actions);
        }
    }
}

/// The minimal inputs the property found, as deterministic scenarios (one bug each).
mod found {
    use super::*;
    use drover_machine::testing::Harness;
    use drover_machine::StopReason;

    /// A worker whose main process exited alone is stopping as a failure and keeps its
    /// place; a reload then shrank the slot range below it. Its exit carried an
    /// unrecoverable code, and the give-up kept a place above the new range.
    #[test]
    fn an_unrecoverable_main_exit_above_a_shrunk_slot_range_keeps_no_place() {
        let mut c = Config::static_pool(1);
        c.max_surge = 0;
        c.max_unavailable = 1;
        let mut reload = c.clone();
        reload.restart.unrecoverable_exit_codes = vec![2];
        let mut h = Harness::new(c);
        h.command(Command::ScaleTo(2));
        let pid = h.pid(1);
        h.input(Input::MainExited {
            pid,
            status: ExitStatus::Code(2),
        });
        h.command(Command::Reload(Box::new(reload)));
        h.input(Input::Exited {
            pid,
            status: ExitStatus::Signaled(15),
        });
        assert_eq!(h.state(1), None, "slot 1 is beyond the pool now");
    }

    fn spawns(h: &Harness) -> usize {
        h.performed()
            .filter(|(_, a)| matches!(a, Action::Spawn { .. }))
            .count()
    }

    fn stale_workers(h: &Harness) -> Vec<String> {
        let generation = h.sup().generation();
        h.sup()
            .workers()
            .filter(|w| w.generation < generation)
            .map(|w| format!("{:?} {:?} {:?}", w.id, w.generation, w.state))
            .collect()
    }

    /// A crash at once refilled (first restart has no backoff) leaves the slot spawning in
    /// the same `handle`: the pool must keep its invariants.
    #[test]
    fn immediate_respawn_keeps_invariants() {
        let mut c = Config::static_pool(2);
        c.max_surge = 0;
        c.max_unavailable = 1;
        let mut h = Harness::new(c);
        h.exit(0, ExitStatus::Code(1));
        assert_eq!(h.sup().live_workers(), 2, "{}", h.trace());
    }

    /// A reload that lowers max_spawn_rate below the current ramp step.
    #[test]
    fn reload_lowering_max_spawn_rate_keeps_the_ramp_in_bounds() {
        let mut c = Config::new(Policy::Dynamic {
            min: 0,
            max: 4,
            start: 0,
            min_spare: 2,
            max_spare: 3,
        });
        c.max_spawn_rate = 4;
        let mut h = Harness::new(c.clone());
        h.at(1.0);
        assert_eq!(h.sup().spawn_rate(), 2);
        c.max_spawn_rate = 1;
        h.command(Command::Reload(Box::new(c)));
        assert!(h.sup().spawn_rate() <= 1, "{}", h.trace());
    }

    /// Idle retirement in a dynamic pool may not take the pool below min_spare idle threads:
    /// otherwise it spawns and retires a worker every other tick, forever (and with workers
    /// slow to drain, every slot ends up draining and nothing is Ready).
    #[test]
    fn idle_retirement_keeps_min_spare() {
        let mut c = Config::new(Policy::Dynamic {
            min: 0,
            max: 5,
            start: 0,
            min_spare: 1,
            max_spare: 1,
        });
        c.idle_timeout = Some(secs(1));
        let mut h = Harness::new(c);
        h.at(20.0);
        assert_eq!(spawns(&h), 1, "{}", h.trace());
        assert_eq!(h.sup().ready_workers(), 1, "{}", h.trace());
    }

    /// A worker of the new generation exits with an unrecoverable code during a rolling
    /// restart: the rollout holds, the old workers keep serving (a release that exits
    /// unrecoverably must not replace them), and the next restart retries.
    #[test]
    fn a_new_generation_giving_up_holds_the_rollout_until_the_next_restart() {
        let mut c = Config::static_pool(3);
        c.restart.unrecoverable_exit_codes = vec![2];
        let mut h = Harness::new(c);
        h.command(Command::Restart);
        h.exit(3, ExitStatus::Code(2));
        h.at(5000.0);
        assert_eq!(h.sup().ready_workers(), 3, "{}", h.trace());
        // One old worker was replaced before the new one gave up; the other two stay.
        assert_eq!(stale_workers(&h).len(), 2, "{}", h.trace());
        h.command(Command::Restart);
        h.at(10_000.0);
        assert_eq!(stale_workers(&h), Vec::<String>::new(), "{}", h.trace());
        assert_eq!(h.sup().ready_workers(), 3, "{}", h.trace());
    }

    /// Same with the gave-up place in an intermediate generation: the old-generation place
    /// must be released so that the rollout can go on.
    #[test]
    fn rolling_restart_completes_around_an_old_gave_up_place() {
        let mut c = Config::static_pool(2);
        c.restart.unrecoverable_exit_codes = vec![1];
        let mut h = Harness::new(c);
        h.command(Command::Restart);
        h.command(Command::Restart);
        h.exit(2, ExitStatus::Code(1));
        h.at(5000.0);
        assert_eq!(stale_workers(&h), Vec::<String>::new(), "{}", h.trace());
    }

    /// A second stop that arrives on a late wake-up (before the ladder's timer ran) must not
    /// restart the ladder: KILL still goes out at the first stop + time_to_kill(0).
    #[test]
    fn repeated_stop_after_a_late_wakeup_keeps_the_kill_deadline() {
        let mut c = Config::static_pool(1);
        c.ladder = Arc::new(Ladder::serverengine());
        let mut h = Harness::new(c);
        h.command(Command::Stop);
        h.set_now(Instant::from_secs(1000));
        h.command(Command::Stop);
        h.at(2000.0);
        let kill_at = h
            .performed()
            .find(|(_, a)| {
                matches!(
                    a,
                    Action::Signal {
                        signal: Signal::Kill,
                        reason: StopReason::Stop,
                        ..
                    }
                )
            })
            .map(|(t, _)| *t);
        assert_eq!(kill_at, Some(Instant::from_secs(1200)), "{}", h.trace());
        assert!(h
            .actions()
            .iter()
            .any(|(_, a)| matches!(a, Action::Exit { code: 0 })));
    }
}
