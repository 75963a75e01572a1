//! `machine_inputs`: bytes → a valid `Config` and a sequence of (time advance, input),
//! driven through the run-loop contract by a small model OS whose every decision inside a
//! drain (fork succeeds, fails or is slow; a signal is obeyed or ignored; KILL acts now or
//! later; a successor starts, fails or hangs) is also read from the bytes.
//!
//! Checked after every `handle` (also inside a drain): `check_invariants()` is Ok,
//! `poll_timeout() > now`, `messages_due(queue)` within `now ..= now + heartbeat timeout`
//! (never a wait with the watchdog off). For every action: no `Signal` aims at a pid already reported
//! `Exited`, at a pid never spawned or at another worker's pid; no `KillSuccessor` at a pid
//! that is not a live successor's; spawns are of the current generation and not of a worker
//! already waiting for its fork; after `Exit` only events follow, and its code is 0 or one a
//! config allowed. Advancing time ticks at every `poll_timeout()` deadline (a bounded number
//! of ticks: more is a timer livelock).
//!
//! The driver obeys the contract: `now` never decreases, `Exited` is fed only after the
//! drain, each pid is reaped once and never reused. Odd inputs are part of the mix: unknown
//! pids, stale and never-existing worker ids, duplicate `Ready`, `Spawned`/`SpawnFailed` for
//! workers that are not spawning, load above the thread count, every `Command` (`Reload`
//! with another decoded config, or an invalid one; scale requests out of bounds) and
//! successor inputs with no upgrade in flight.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Command, Config, Duration, ExitStatus, Input, Instant, Ladder, OnCrashLoop, Pid,
    Policy, Readiness, Restart, Signal, SpawnError, Stage, Supervisor, WorkerId, MAX_WORKERS,
};
use libfuzzer_sys::arbitrary::{unstructured::Int, Unstructured};

/// Ticks one advance may take before it is called a timer livelock.
const TICK_LIMIT: usize = 100_000;
/// Actions one drain may produce before it is called endless.
const DRAIN_LIMIT: usize = 100_000;
/// Trace lines kept for a failure message (the tail of the run).
const TRACE_KEEP: usize = 400;

/// An integer in `range`; the low end once the bytes run out.
fn int<T: Int>(u: &mut Unstructured, range: std::ops::RangeInclusive<T>) -> T {
    let low = *range.start();
    u.int_in_range(range).unwrap_or(low)
}

fn byte(u: &mut Unstructured) -> u8 {
    int(u, 0..=u8::MAX)
}

/// True with probability `n` in 256 (false once the bytes run out).
fn chance(u: &mut Unstructured, n: u8) -> bool {
    !u.is_empty() && byte(u) < n
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const GRACEFUL: [Signal; 8] = [
    Signal::Term,
    Signal::Int,
    Signal::Quit,
    Signal::Hup,
    Signal::Usr1,
    Signal::Usr2,
    Signal::Abrt,
    Signal::Winch,
];

// ------------------------------------------------------------------------- configs

/// A valid config from the bytes: a one-byte preset (static, dynamic, ondemand, each sized
/// by the next bytes) or, for preset 0, every field decoded. Falls back to a static pool of
/// two if the decoded fields do not validate (a decoder bug, not the machine's).
pub fn config(u: &mut Unstructured) -> Config {
    let c = match int(u, 0..=4u8) {
        0 => detailed_config(u),
        1 => {
            let mut c = Config::static_pool(int(u, 1..=8));
            quick_flags(u, &mut c);
            c
        }
        2 => {
            let max = int(u, 1..=8);
            let min = int(u, 0..=max);
            let min_spare = int(u, 1..=4);
            let mut c = Config::dynamic(min, max, min_spare, min_spare + int(u, 2..=4));
            quick_flags(u, &mut c);
            c
        }
        3 => {
            let mut c = Config::ondemand(int(u, 1..=8));
            quick_flags(u, &mut c);
            c
        }
        _ => {
            let mut c = Config::static_pool(int(u, 1..=4));
            c.ladder = Arc::new(Ladder::serverengine());
            quick_flags(u, &mut c);
            c
        }
    };
    if c.validate().is_ok() {
        c
    } else {
        Config::static_pool(2)
    }
}

/// One byte of flags for a preset: readiness, watchdog, request timeout, max requests,
/// crash-loop exit, unrecoverable code 3, a short stop timeout.
fn quick_flags(u: &mut Unstructured, c: &mut Config) {
    let flags = byte(u);
    if flags & 1 != 0 {
        c.readiness = Readiness::Notify;
        c.boot_timeout = secs(5);
    }
    if flags & 2 != 0 {
        c.heartbeat_timeout = Some(secs(3));
    }
    if flags & 4 != 0 {
        c.request_timeout = Some(secs(10));
    }
    if flags & 8 != 0 {
        c.max_requests = Some(5);
        c.max_requests_jitter = 2;
    }
    if flags & 16 != 0 {
        c.restart.on_crash_loop = OnCrashLoop::Exit(7);
        c.restart.intensity_deaths = 3;
    }
    if flags & 32 != 0 {
        c.restart.unrecoverable_exit_codes = vec![3];
        c.restart.stop_on_unrecoverable = flags & 64 != 0;
    }
    if flags & 128 != 0 && c.ladder.stages.len() == 2 {
        c.ladder = Arc::new(Ladder::for_any_program(secs(2)));
    }
}

fn detailed_config(u: &mut Unstructured) -> Config {
    let threads = int(u, 1..=4u32);
    let policy = match int(u, 0..=2u8) {
        0 => Policy::Static {
            workers: int(u, 1..=8),
        },
        1 => {
            let max = int(u, 1..=8);
            let min = int(u, 0..=max);
            let start = int(u, min..=max);
            let min_spare = int(u, 1..=8);
            Policy::Dynamic {
                min,
                max,
                start,
                min_spare,
                max_spare: min_spare + threads - 1 + int(u, 0..=4),
            }
        }
        _ => {
            let max = int(u, 1..=8);
            Policy::Ondemand {
                min: int(u, 0..=max),
                max,
            }
        }
    };
    let ondemand = matches!(policy, Policy::Ondemand { .. });
    let mut c = Config::new(policy);
    c.threads = threads;
    c.max_spawn_rate = [1, 2, 4, 32][int(u, 0..=3usize)];
    c.maintenance_interval = [millis(250), secs(1), secs(2), secs(5)][int(u, 0..=3usize)];
    c.idle_timeout = match int(u, 0..=60u64) {
        0 if !ondemand => None,
        n => Some(secs(n.max(1))),
    };
    c.max_requests = match int(u, 0..=500u64) {
        0 => None,
        n => Some(n),
    };
    c.max_requests_jitter = if c.max_requests.is_some() {
        int(u, 0..=50)
    } else {
        0
    };
    c.seed = u.arbitrary().unwrap_or(0);
    c.readiness = if chance(u, 128) {
        Readiness::Notify
    } else {
        Readiness::AtSpawn
    };
    c.boot_timeout = secs(int(u, 1..=120));
    c.heartbeat_timeout = Some(int(u, 0..=60)).filter(|s| *s > 0).map(secs);
    c.request_timeout = Some(int(u, 0..=120)).filter(|s| *s > 0).map(secs);
    c.ladder = Arc::new(ladder(u));
    c.restart = restart(u);
    c.max_surge = int(u, 0..=3);
    c.max_unavailable = int(u, 0..=2);
    if c.max_surge == 0 && c.max_unavailable == 0 {
        c.max_surge = 1;
    }
    c.upgrade_timeout = secs(int(u, 1..=120));
    c.worker_fingerprint = int(u, 0..=2);
    c
}

fn ladder(u: &mut Unstructured) -> Ladder {
    match int(u, 0..=2u8) {
        0 => Ladder::for_any_program(secs(int(u, 1..=60))),
        1 => Ladder::serverengine(),
        _ => {
            let mut stages: Vec<Stage> = (0..int(u, 0..=3usize))
                .map(|_| Stage {
                    signal: GRACEFUL[int(u, 0..=7usize)],
                    interval: secs(int(u, 1..=20)),
                    increment: secs(int(u, 0..=10)),
                    timeout: secs(int(u, 1..=120)),
                })
                .collect();
            stages.push(Stage::kill());
            let immediate_from = int(u, 0..=stages.len() - 1);
            Ladder {
                stages,
                immediate_from,
            }
        }
    }
}

fn restart(u: &mut Unstructured) -> Restart {
    let backoff_min = int(u, 100..=5_000u64);
    let codes: Vec<i32> = (0..int(u, 0..=2usize)).map(|_| int(u, 1..=5)).collect();
    Restart {
        backoff_min: millis(backoff_min),
        backoff_max: millis(backoff_min + int(u, 0..=60_000)),
        healthy_uptime: secs(int(u, 1..=60)),
        intensity_deaths: int(u, 1..=20),
        intensity_window: secs(int(u, 1..=120)),
        on_crash_loop: if chance(u, 64) {
            OnCrashLoop::Exit(int(u, 3..=9))
        } else {
            OnCrashLoop::Backoff
        },
        stop_on_unrecoverable: !codes.is_empty() && chance(u, 128),
        unrecoverable_exit_codes: codes,
    }
}

// ------------------------------------------------------------------------- model OS

/// One trace line: an input or an action, at its time.
enum Line {
    In(Instant, Input),
    Do(Instant, Action),
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Line::In(now, input) => f.write_str(&input_line(*now, input)),
            Line::Do(now, action) => f.write_str(&action_line(*now, action)),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Worker(WorkerId),
    Successor,
}

/// The driver: a model OS around one `Supervisor`.
struct Model<'a, 'b> {
    u: &'b mut Unstructured<'a>,
    sup: Supervisor,
    now: Instant,
    next_pid: u32,
    /// Processes not yet reaped (alive or zombie), by kind.
    procs: BTreeMap<Pid, Kind>,
    /// Exited, to be reaped after the drain.
    pending_exits: Vec<(Pid, ExitStatus)>,
    /// Pids whose exit is queued (zombies) or delayed: no longer alive.
    dead: BTreeSet<Pid>,
    /// KILLed processes whose exit comes at a later step.
    delayed: Vec<(Pid, ExitStatus)>,
    /// Pids reported `Exited`.
    reaped: BTreeSet<Pid>,
    /// Spawns not answered yet (slow fork).
    pending_spawns: Vec<WorkerId>,
    allowed_codes: BTreeSet<i32>,
    exited: Option<i32>,
    trace: VecDeque<Line>,
    /// Every trace line goes to stderr as well (`DROVER_FUZZ_TRACE=1`).
    print: bool,
}

impl<'a, 'b> Model<'a, 'b> {
    /// Keeps the tail of the run for a failure message; formatted only when needed.
    fn log(&mut self, line: Line) {
        if self.print {
            eprintln!("{line}");
        }
        self.trace.push_back(line);
        if self.trace.len() > TRACE_KEEP {
            self.trace.pop_front();
        }
    }

    #[track_caller]
    fn fail(&self, msg: String) -> ! {
        let mut text = String::new();
        for line in &self.trace {
            let _ = writeln!(text, "{line}");
        }
        panic!(
            "{msg}\n--- last {} trace lines ---\n{text}",
            self.trace.len()
        );
    }

    fn allow_codes(&mut self, c: &Config) {
        if let OnCrashLoop::Exit(code) = c.restart.on_crash_loop {
            self.allowed_codes.insert(code);
        }
        if c.restart.stop_on_unrecoverable {
            self.allowed_codes
                .extend(c.restart.unrecoverable_exit_codes.iter().copied());
        }
    }

    fn fresh_pid(&mut self) -> Pid {
        self.next_pid += 1;
        Pid(self.next_pid)
    }

    fn new_proc(&mut self, kind: Kind) -> Pid {
        let pid = self.fresh_pid();
        self.procs.insert(pid, kind);
        pid
    }

    fn alive(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid) && !self.dead.contains(&pid)
    }

    // --------------------------------------------------------------- run loop

    fn handle(&mut self, input: Input) {
        self.log(Line::In(self.now, input.clone()));
        self.sup.handle(self.now, input);
        self.check_after_handle();
    }

    fn check_after_handle(&self) {
        if let Err(v) = self.sup.check_invariants() {
            self.fail(format!("invariant violated at {}: {v}", self.now));
        }
        self.check_timeout();
    }

    fn check_timeout(&self) {
        if let Some(at) = self.sup.poll_timeout() {
            if at <= self.now {
                self.fail(format!("poll_timeout {at} <= now {}", self.now));
            }
        }
        let longest = self.sup.config().heartbeat_timeout.unwrap_or_default();
        for queue in [10, u32::MAX] {
            let due = self.sup.messages_due(queue);
            if due < self.now || due > self.now + longest {
                self.fail(format!(
                    "messages_due({queue}) {due} outside {} ..= {} + {longest:?}",
                    self.now, self.now
                ));
            }
        }
    }

    /// One run-loop iteration: handle, drain, then reap (each reap is its own iteration).
    fn input(&mut self, input: Input) {
        self.handle(input);
        self.drain();
    }

    fn drain(&mut self) {
        let mut actions = 0;
        loop {
            while let Some(action) = self.sup.poll_action() {
                actions += 1;
                if actions > DRAIN_LIMIT {
                    self.fail(format!("a drain did not end in {DRAIN_LIMIT} actions"));
                }
                self.log(Line::Do(self.now, action.clone()));
                self.perform(action);
            }
            self.check_timeout();
            // Reap only after the drain: zombies hold their pids until now.
            if self.pending_exits.is_empty() {
                return;
            }
            let (pid, status) = self.pending_exits.remove(0);
            self.mark_reaped(pid);
            self.handle(Input::Exited { pid, status });
        }
    }

    fn mark_reaped(&mut self, pid: Pid) {
        if !self.reaped.insert(pid) {
            self.fail(format!("driver error: pid {} reaped twice", pid.0));
        }
        self.procs.remove(&pid);
        self.dead.remove(&pid);
        self.delayed.retain(|d| d.0 != pid);
    }

    /// `waitpid` reaped `pid` outside a drain: a run-loop iteration of its own.
    fn reap(&mut self, pid: Pid, status: ExitStatus) {
        self.mark_reaped(pid);
        self.input(Input::Exited { pid, status });
    }

    /// The process exits; its exit is reaped after the drain.
    fn exits(&mut self, pid: Pid, status: ExitStatus) {
        self.dead.insert(pid);
        self.pending_exits.push((pid, status));
    }

    fn perform(&mut self, action: Action) {
        if self.exited.is_some() && !matches!(action, Action::Event(_)) {
            self.fail(format!("{action:?} emitted after Exit"));
        }
        match action {
            Action::Event(_) => {}
            Action::Spawn { worker, generation } => {
                if generation != self.sup.generation() {
                    self.fail(format!(
                        "spawn of {worker:?} for {generation:?}, current {:?}",
                        self.sup.generation()
                    ));
                }
                if self.pending_spawns.contains(&worker) {
                    self.fail(format!("{worker:?} spawned while its fork is pending"));
                }
                // 0: the fork works (also once the bytes run out), 1: fails, 2: slow.
                match int(self.u, 0..=7u8) {
                    0..=4 => {
                        let pid = self.new_proc(Kind::Worker(worker));
                        self.handle(Input::Spawned { worker, pid });
                    }
                    5 | 6 => {
                        let error = [
                            SpawnError::Resources,
                            SpawnError::Exec,
                            SpawnError::Other(1),
                        ][int(self.u, 0..=2usize)];
                        self.handle(Input::SpawnFailed { worker, error });
                    }
                    _ => self.pending_spawns.push(worker),
                }
            }
            Action::Signal {
                worker,
                pid,
                signal,
                reason,
            } => {
                if self.reaped.contains(&pid) {
                    self.fail(format!(
                        "{} ({}) for {worker:?} aimed at pid {}, already reported Exited",
                        signal.name(),
                        reason.name(),
                        pid.0
                    ));
                }
                match self.procs.get(&pid) {
                    None => self.fail(format!(
                        "{} for {worker:?} aimed at pid {}, never spawned",
                        signal.name(),
                        pid.0
                    )),
                    Some(&kind) if kind != Kind::Worker(worker) => self.fail(format!(
                        "{} for {worker:?} aimed at pid {}, which is {kind:?}",
                        signal.name(),
                        pid.0
                    )),
                    Some(_) => {}
                }
                if !self.alive(pid) {
                    return;
                }
                if signal == Signal::Kill {
                    // KILL always acts, now or (a loaded host) at a later step.
                    if chance(self.u, 48) {
                        self.dead.insert(pid);
                        self.delayed.push((pid, ExitStatus::Signaled(9)));
                    } else {
                        self.exits(pid, ExitStatus::Signaled(9));
                    }
                } else {
                    // Obeyed (exit 0), crashed on it, or ignored.
                    match int(self.u, 0..=3u8) {
                        0 | 1 => self.exits(pid, ExitStatus::Code(0)),
                        2 => self.exits(pid, ExitStatus::Code(1)),
                        _ => {}
                    }
                }
            }
            Action::StartSuccessor => match int(self.u, 0..=3u8) {
                0 | 1 => {
                    let pid = self.new_proc(Kind::Successor);
                    self.handle(Input::SuccessorStarted { pid });
                }
                2 => self.handle(Input::SuccessorFailed {
                    error: SpawnError::Exec,
                }),
                _ => {} // slow: the answer may come as a later step, or never
            },
            Action::KillSuccessor { pid, reason } => {
                if self.reaped.contains(&pid) {
                    self.fail(format!(
                        "KillSuccessor ({reason:?}) aimed at pid {}, already reported Exited",
                        pid.0
                    ));
                }
                match self.procs.get(&pid) {
                    Some(Kind::Successor) => {}
                    other => self.fail(format!(
                        "KillSuccessor aimed at pid {}, which is {other:?}",
                        pid.0
                    )),
                }
                if self.alive(pid) {
                    self.exits(pid, ExitStatus::Signaled(9));
                }
            }
            Action::Exit { code } => {
                if !self.allowed_codes.contains(&code) {
                    self.fail(format!(
                        "Exit with code {code}, expected one of {:?}",
                        self.allowed_codes
                    ));
                }
                self.exited = Some(code);
            }
        }
    }

    /// Sleeps until `t`, ticking at every deadline on the way; a late wake-up skips the
    /// ticks (the next input arrives first).
    fn advance(&mut self, by: Duration, late: bool) {
        let t = self.now + by;
        if late {
            self.now = t;
            return;
        }
        for _ in 0..TICK_LIMIT {
            match self.sup.poll_timeout() {
                Some(deadline) if deadline <= t => {
                    self.now = self.now.max(deadline);
                    self.input(Input::Tick);
                }
                _ => {
                    self.now = t;
                    return;
                }
            }
        }
        self.fail(format!(
            "advancing to {t} took over {TICK_LIMIT} ticks: timer livelock"
        ));
    }

    // --------------------------------------------------------------- inputs

    /// A worker id for a message: a live one (most often), an earlier incarnation of one,
    /// or one that never existed.
    fn pick(&mut self) -> WorkerId {
        let kind = int(self.u, 0..=9u8);
        let n: u32 = int(self.u, 0..=u32::MAX);
        let workers: Vec<WorkerId> = self.sup.workers().map(|w| w.id).collect();
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

    fn live_pids(&self, want: impl Fn(Kind) -> bool) -> Vec<Pid> {
        self.procs
            .iter()
            .filter(|(pid, kind)| want(**kind) && self.alive(**pid))
            .map(|(pid, _)| *pid)
            .collect()
    }

    fn command(&mut self) -> Command {
        match int(self.u, 0..=11u8) {
            0 => Command::Stop,
            1 => Command::StopNow,
            2 | 3 => Command::Restart,
            4 => {
                let c = config(self.u);
                self.allow_codes(&c);
                Command::Reload(Box::new(c))
            }
            5 => {
                // The same config: a reload that changes nothing; or an invalid one.
                let mut c = self.sup.config().clone();
                if chance(self.u, 128) {
                    c.threads = 0;
                }
                Command::Reload(Box::new(c))
            }
            6 | 7 => Command::Upgrade,
            8 => Command::ScaleTo(match int(self.u, 0..=3u8) {
                0 => u32::MAX,
                1 => MAX_WORKERS - self.sup.config().max_surge + 1,
                2 => self.sup.config().policy.max() + 1,
                _ => int(self.u, 0..=12),
            }),
            9 | 10 => Command::ScaleUp,
            _ => Command::ScaleDown,
        }
    }

    /// One step: a time advance, then one input.
    fn step(&mut self) {
        let advance = match int(self.u, 0..=15u8) {
            0..=4 => Duration::ZERO,
            5..=11 => millis(int(self.u, 0..=3_000)),
            12..=14 => millis(int(self.u, 0..=120_000)),
            _ => millis(int(self.u, 120_000..=1_800_000)),
        };
        let late = chance(self.u, 38);
        self.advance(advance, late);
        match int(self.u, 0..=20u8) {
            0 => self.input(Input::Tick),
            1 | 2 => {
                let worker = self.pick();
                self.input(Input::Ready { worker });
            }
            3 | 4 => {
                let worker = self.pick();
                self.input(Input::Heartbeat { worker });
            }
            5 | 6 => {
                let worker = self.pick();
                let busy = int(self.u, 0..=6);
                let ago = int(self.u, 0..=300_000u64);
                let oldest_busy_since = (busy > 0 || chance(self.u, 64)).then(|| {
                    Instant::from_nanos(self.now.as_nanos().saturating_sub(ago * 1_000_000))
                });
                let requests = int(self.u, 0..=1_000);
                self.input(Input::Load {
                    worker,
                    busy,
                    oldest_busy_since,
                    requests,
                });
            }
            7 | 8 => {
                // A live worker process (tracked or stray) exits by itself.
                let live = self.live_pids(|k| matches!(k, Kind::Worker(_)));
                let i = int(self.u, 0..=255usize);
                let status = match int(self.u, 0..=9u8) {
                    n @ 0..=5 => ExitStatus::Code(i32::from(n)),
                    n => ExitStatus::Signaled([6, 9, 11, 15][usize::from(n - 6)]),
                };
                match live.get(i % live.len().max(1)) {
                    // Or only its main process does, and the rest of its group runs on.
                    Some(&pid) if chance(self.u, 64) => {
                        self.input(Input::MainExited { pid, status })
                    }
                    Some(&pid) => self.reap(pid, status),
                    None => self.input(Input::Tick),
                }
            }
            9 => {
                // `waitpid` reports a pid the machine never saw (a child inherited across
                // an upgrade).
                let pid = self.fresh_pid();
                self.reaped.insert(pid);
                self.input(Input::Exited {
                    pid,
                    status: ExitStatus::Code(0),
                });
            }
            10 => {
                // A `Spawned` nobody asked for (or a slow fork's answer for a worker the
                // model had given up on).
                let worker = self.pick();
                self.pending_spawns.retain(|w| *w != worker);
                let pid = self.new_proc(Kind::Worker(worker));
                self.input(Input::Spawned { worker, pid });
            }
            11 => {
                let worker = self.pick();
                self.pending_spawns.retain(|w| *w != worker);
                self.input(Input::SpawnFailed {
                    worker,
                    error: SpawnError::Other(11),
                });
            }
            12 | 13 => {
                // A slow fork answers.
                if self.pending_spawns.is_empty() {
                    return self.input(Input::Tick);
                }
                let i = int(self.u, 0..=255usize) % self.pending_spawns.len();
                let worker = self.pending_spawns.remove(i);
                if chance(self.u, 200) {
                    let pid = self.new_proc(Kind::Worker(worker));
                    self.input(Input::Spawned { worker, pid });
                } else {
                    self.input(Input::SpawnFailed {
                        worker,
                        error: SpawnError::Resources,
                    });
                }
            }
            14 => {
                let listener = int(self.u, 0..=3);
                let queued = match int(self.u, 0..=7u8) {
                    7 => u32::MAX,
                    _ => int(self.u, 0..=20),
                };
                self.input(Input::Backlog { listener, queued });
            }
            15 | 16 => {
                let command = self.command();
                self.input(Input::Command(command));
            }
            17 => {
                // Started: a slow start's answer, or one with no upgrade in flight.
                let pid = self.new_proc(Kind::Successor);
                self.input(Input::SuccessorStarted { pid });
            }
            18 => {
                if chance(self.u, 128) {
                    self.input(Input::SuccessorFailed {
                        error: SpawnError::Resources,
                    });
                } else {
                    self.input(Input::SuccessorReady);
                }
            }
            19 => {
                let live = self.live_pids(|k| k == Kind::Successor);
                let i = int(self.u, 0..=255usize);
                match live.get(i % live.len().max(1)) {
                    Some(&pid) => self.reap(pid, ExitStatus::Code(1)),
                    None => self.input(Input::Tick),
                }
            }
            _ => {
                // Delayed KILLs take effect.
                while let Some((pid, status)) = self.delayed.first().copied() {
                    self.reap(pid, status);
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
    let mut m = Model {
        u: &mut u,
        sup,
        now: Instant::ZERO,
        next_pid: 100,
        procs: BTreeMap::new(),
        pending_exits: Vec::new(),
        dead: BTreeSet::new(),
        delayed: Vec::new(),
        reaped: BTreeSet::new(),
        pending_spawns: Vec::new(),
        allowed_codes: BTreeSet::from([0]),
        exited: None,
        trace: VecDeque::new(),
        print,
    };
    m.allow_codes(&config);
    m.check_after_handle();
    m.drain();
    while !m.u.is_empty() {
        m.step();
    }
}
