//! The model OS of `machine_inputs`: a process table the `Driver` runs the supervisor on.
//! Its every decision inside a drain (a fork works, fails or blocks the loop; a signal is
//! obeyed, crashes the worker or is ignored; KILL acts now or at a later reap; a successor
//! starts, fails or starts and never gets ready) is read from the bytes. Its hooks hold
//! the checks; a failed one panics with the tail of the trace.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Config, Event, ExitStatus, Generation, Input, Instant, Os, Pid, RollbackReason, Signal,
    SpawnError, StopReason, Supervisor, UpgradeState, WorkerId,
};
use libfuzzer_sys::arbitrary::Unstructured;

use super::decode::{chance, int, millis};

/// Trace lines kept for a failure message (the tail of the run).
const TRACE_KEEP: usize = 400;
/// The longest a slow fork blocks the loop.
const SLOW_FORK_MAX_MS: u64 = 5_000;

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
pub(crate) enum Kind {
    Worker(WorkerId),
    Successor,
}

pub(crate) struct World<'a, 'b> {
    pub u: &'b mut Unstructured<'a>,
    pub now: Instant,
    next_pid: u32,
    /// Processes not yet reaped (alive or zombie), by kind.
    procs: BTreeMap<Pid, Kind>,
    /// Exits (`Exited`, `MainExited`) the next reaps find, in order.
    zombies: VecDeque<Input>,
    /// Pids whose exit is queued or delayed: no longer alive.
    dead: BTreeSet<Pid>,
    /// KILLed processes whose exit comes at a later step.
    delayed: Vec<Pid>,
    /// Pids reported `Exited`.
    reaped: BTreeSet<Pid>,
    /// Workers a `Spawn` was performed for.
    forked: BTreeSet<WorkerId>,
    /// Successors that start and never get ready.
    hanging: BTreeSet<Pid>,
    /// Worker messages sent and not read yet.
    pub reports: Vec<Input>,
    allowed_codes: BTreeSet<i32>,
    pub exited: Option<i32>,
    trace: VecDeque<Line>,
    /// Every trace line goes to stderr as well (`DROVER_FUZZ_TRACE=1`).
    print: bool,
}

impl<'a, 'b> World<'a, 'b> {
    pub fn new(u: &'b mut Unstructured<'a>, config: &Config, print: bool) -> World<'a, 'b> {
        let mut world = World {
            u,
            now: Instant::ZERO,
            next_pid: 100,
            procs: BTreeMap::new(),
            zombies: VecDeque::new(),
            dead: BTreeSet::new(),
            delayed: Vec::new(),
            reaped: BTreeSet::new(),
            forked: BTreeSet::new(),
            hanging: BTreeSet::new(),
            reports: Vec::new(),
            allowed_codes: BTreeSet::from([0]),
            exited: None,
            trace: VecDeque::new(),
            print,
        };
        world.allow_codes(config);
        world
    }

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
    pub fn fail(&self, msg: String) -> ! {
        let mut text = String::new();
        for line in &self.trace {
            let _ = writeln!(text, "{line}");
        }
        panic!(
            "{msg}\n--- last {} trace lines ---\n{text}",
            self.trace.len()
        );
    }

    /// Exit codes a config allows (a reload's too).
    pub fn allow_codes(&mut self, c: &Config) {
        self.allowed_codes.extend(c.exit_codes());
    }

    pub fn fresh_pid(&mut self) -> Pid {
        self.next_pid += 1;
        Pid(self.next_pid)
    }

    pub fn new_proc(&mut self, kind: Kind) -> Pid {
        let pid = self.fresh_pid();
        self.procs.insert(pid, kind);
        pid
    }

    fn alive(&self, pid: Pid) -> bool {
        self.procs.contains_key(&pid) && !self.dead.contains(&pid)
    }

    pub fn live_pids(&self, want: impl Fn(Kind) -> bool) -> Vec<Pid> {
        self.procs
            .iter()
            .filter(|(pid, kind)| want(**kind) && self.alive(**pid))
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// Whether the successor of the upgrade in flight is one that never gets ready.
    pub fn successor_hangs(&self, upgrade: UpgradeState) -> bool {
        matches!(upgrade, UpgradeState::Started { pid, .. } if self.hanging.contains(&pid))
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

    /// After every `handle` and every drain: deadlines in the future, and messages due
    /// within `now ..= now + heartbeat timeout` (at once with the watchdog off).
    fn check_timeout(&self, sup: &Supervisor, now: Instant) {
        if let Some(at) = sup.poll_timeout() {
            if at <= now {
                self.fail(format!("poll_timeout {at} <= now {now}"));
            }
        }
        let longest = sup.config().heartbeat_timeout.unwrap_or_default();
        for queue in [10, u32::MAX] {
            let due = sup.messages_due(queue);
            if due < now || due > now + longest {
                self.fail(format!(
                    "messages_due({queue}) {due} outside {now} ..= {now} + {longest:?}"
                ));
            }
        }
    }
}

impl Os for World<'_, '_> {
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
                "spawn of {worker:?} for {generation:?}, current {:?}",
                sup.generation()
            ));
        }
        // Not "a worker that is Spawning": a spawn queued early in a drain may name a worker
        // retired by a later input of the same drain; the machine kills what it starts.
        if !self.forked.insert(worker) {
            self.fail(format!("{worker:?} forked twice"));
        }
        // 0: the fork works (also once the bytes run out), 1: fails, 2: blocks the loop.
        match int(self.u, 0..=7u8) {
            0..=4 => Ok(self.new_proc(Kind::Worker(worker))),
            5 | 6 => Err([
                SpawnError::Resources,
                SpawnError::Exec,
                SpawnError::Other(1),
            ][int(self.u, 0..=2usize)]),
            _ => {
                // Time passes inside the drain; the fork may still fail.
                self.now = self.now + millis(int(self.u, 1..=SLOW_FORK_MAX_MS));
                if chance(self.u, 56) {
                    Err(SpawnError::Resources)
                } else {
                    Ok(self.new_proc(Kind::Worker(worker)))
                }
            }
        }
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
                self.delayed.push(pid);
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

    fn start_successor(&mut self, _: &Supervisor) -> Result<Pid, SpawnError> {
        match int(self.u, 0..=3u8) {
            0 | 1 => Ok(self.new_proc(Kind::Successor)),
            2 => Err(SpawnError::Exec),
            _ => {
                let pid = self.new_proc(Kind::Successor);
                self.hanging.insert(pid);
                Ok(pid)
            }
        }
    }

    fn kill_successor(&mut self, _: &Supervisor, pid: Pid, reason: RollbackReason) {
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

    fn exit(&mut self, _: &Supervisor, code: i32) {
        if !self.allowed_codes.contains(&code) {
            self.fail(format!(
                "Exit with code {code}, expected one of {:?}",
                self.allowed_codes
            ));
        }
        self.exited = Some(code);
    }

    fn event(&mut self, _: &Supervisor, _: Instant, _: Event) {}

    fn read_workers(&mut self, _: &Supervisor, now: Instant, into: &mut Vec<Input>) -> bool {
        if self.reports.is_empty() {
            // A wake-up with nothing to read ticks (an empty `handle_all`).
            self.log(Line::In(now, Input::Tick));
        }
        into.append(&mut self.reports);
        true
    }

    fn reap(&mut self, _: &Supervisor) -> Option<Input> {
        let input = self.zombies.pop_front()?;
        if let Input::Exited { pid, .. } = input {
            if !self.reaped.insert(pid) {
                self.fail(format!("driver error: pid {} reaped twice", pid.0));
            }
            self.procs.remove(&pid);
            self.dead.remove(&pid);
        }
        Some(input)
    }

    fn handling(&mut self, _: &Supervisor, now: Instant, input: &Input) {
        self.log(Line::In(now, input.clone()));
    }

    fn handled(&mut self, sup: &Supervisor, now: Instant) {
        if let Err(v) = sup.check_invariants() {
            self.fail(format!("invariant violated at {now}: {v}"));
        }
        self.check_timeout(sup, now);
    }

    fn performing(&mut self, _: &Supervisor, now: Instant, action: &Action) {
        self.log(Line::Do(now, action.clone()));
        if self.exited.is_some() && !matches!(action, Action::Event(_)) {
            self.fail(format!("{action:?} emitted after Exit"));
        }
    }

    fn drained(&mut self, sup: &Supervisor, now: Instant, _: bool) {
        self.check_timeout(sup, now);
    }
}
