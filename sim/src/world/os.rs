//! The model OS: what the shell (os/src/shell.rs) does with syscalls, done to the simulated
//! world, behind the driver's [`Os`] trait. It owns the virtual clock and the queue of world
//! events, the notify socket (a 10-deep datagram queue, read at most `NOTIFY_READ_MAX` per
//! wake-up), the report board and its doorbell, `waitpid` over the process table (zombies,
//! main processes, lingering groups), fork (synchronous; slow and failing under faults) and
//! signal delivery, and the observation hooks through which the oracles, the trace and the
//! determinism hash see every input and action. It must not decide anything the machine or
//! the driver decides, and must model the shell's one behaviour wherever the shell has one.

use core::time::Duration;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use drover_machine::{
    Action, Config, Event, Generation, Input, Instant, Os, Pid, Readiness, RollbackReason, Signal,
    SpawnError, StopReason, Supervisor, UpgradeState, WorkerId,
};

use super::clients::{Clients, Replay};
use super::hash::Recorder;
use super::model::Model;
use super::oracles::Checks;
use super::procs::{Main, ProcState, Reported, Table};
use super::succession::Predecessor;
use super::{Ev, RunOptions, RunResult, Sample, Stats, NOTIFY_QUEUE};
use crate::coverage::{Coverage, Mark};
use crate::judge::Judge;
use crate::rng::{Rng, Stream};
use crate::swarm::{Faults, Load};

/// World events run while a slow fork blocks the loop, at most.
const BLOCKED_EVENTS_MAX: usize = 1_000_000;

/// Datagrams read from the notify socket per wake-up (os/src/shell.rs, `NOTIFY_READ_MAX`).
const NOTIFY_READ_MAX: usize = 1024;

/// What a worker sends over the notify socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Datagram {
    /// `READY=1`.
    Ready,
    /// `WATCHDOG=1`.
    Beat,
    /// `X_DROVER_LOAD=…`.
    Load(Reported),
    /// `X_DROVER_REPORTS=1`: the report board changed; only wakes the loop.
    Doorbell,
}

/// The notify socket.
#[derive(Debug, Default)]
pub(super) struct Notify {
    /// Datagrams not yet read: arrival, sender (process serial), content; oldest first.
    queue: VecDeque<(Instant, u64, Datagram)>,
    /// The loop watches the socket in its current sleep (`Sleep::watch_messages`).
    pub(super) watching: bool,
    /// When it does not, the deadline it sleeps until: it reads the socket then, unless its
    /// timer is late.
    pub(super) read_by: Option<Instant>,
    /// A datagram arrived while watched: the loop wakes at once.
    readable: bool,
}

/// A worker's slot of the shared-memory report board (`Faults::shm_reports`).
#[derive(Clone, Debug, Default)]
pub(super) struct Cell {
    /// The worker's own stamp of its last heartbeat.
    pub(super) beat: Option<Instant>,
    pub(super) load: Option<Reported>,
    /// What the supervisor last read.
    seen_beat: Option<Instant>,
    seen_load: Option<Reported>,
}

pub(super) struct SimOs {
    pub(super) now: Instant,
    /// Worker-seconds are counted up to here.
    last_time: Instant,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    payloads: BTreeMap<u64, Ev>,
    seq: u64,
    /// During a clock jump the world stands still until then.
    pub(super) frozen_until: Instant,
    pub(super) rng_proc: Rng,
    pub(super) rng_os: Rng,
    pub(super) rng_load: Rng,
    pub(super) rng_clock: Rng,
    pub(super) faults: Faults,
    pub(super) load: Load,
    /// What the synthetic load's rates are relative to: the first config's capacity, or the
    /// one a comparison gives every policy (so that they all meet the same clients).
    pub(super) load_capacity: f64,
    /// A recorded trace replayed instead of the synthetic load.
    pub(super) replay: Option<Replay>,
    pub(super) model: Model,
    /// No synthetic arrival from then on (`RunOptions::load_until`).
    pub(super) load_until: Option<Instant>,
    /// The machine config in force (a reload replaces it).
    pub(super) config: Config,
    pub(super) canary: bool,
    pub(super) healed: bool,
    pub(super) healed_at: Option<Instant>,
    /// How often a worker beats, and reports its load, under the config in force.
    pub(super) table: Table,
    pub(super) clients: Clients,
    pub(super) notify: Notify,
    /// The report board, by process serial (`Faults::shm_reports`).
    pub(super) board: BTreeMap<u64, Cell>,
    /// The board's doorbell is armed: the next load change rings it (once per read).
    pub(super) doorbell_armed: bool,
    /// The loop is blocked in a slow fork: it reads nothing, whatever it chose to watch.
    blocked: bool,
    /// A SIGCHLD wake-up is on its way.
    pub(super) sigchld_pending: bool,
    /// Which generations are bad releases.
    pub(super) bad_generation: BTreeMap<u32, bool>,
    /// The current turn was a timer wake-up.
    timer_wake: bool,
    /// Exits reaped in the current turn.
    reaped_in_turn: u32,
    /// A command was handled: the config in force may have changed (a reload, a scaling).
    commanded: bool,
    pub(super) checks: Checks,
    /// The decision oracles, fed from the driver's hooks below.
    pub(super) judge: Judge,
    /// The predecessor, when the run starts as a live upgrade's successor.
    pub(super) predecessor: Option<Predecessor>,
    pub(super) record: Recorder,
    pub(super) stats: Stats,
    pub(super) coverage: Coverage,
    pub(super) exited: Option<i32>,
}

impl SimOs {
    pub(super) fn new(opts: &RunOptions, config: Config, faults: Faults, load: Load) -> SimOs {
        let seed = opts.seed;
        let pid_space = if faults.pid_reuse {
            config.slot_count() * 2 + 8
        } else {
            1 << 22
        };
        let mut record = Recorder::new(opts.keep_trace);
        record.hash.add(seed);
        if opts.keep_trace {
            record.lines.push(format!("SEED={seed}"));
        }
        SimOs {
            now: Instant::ZERO,
            last_time: Instant::ZERO,
            heap: BinaryHeap::new(),
            payloads: BTreeMap::new(),
            seq: 0,
            frozen_until: Instant::ZERO,
            rng_proc: Rng::new(seed, Stream::Process),
            rng_os: Rng::new(seed, Stream::Os),
            rng_load: Rng::new(seed, Stream::Load),
            rng_clock: Rng::new(seed, Stream::Clock),
            faults,
            load,
            load_capacity: opts
                .load_capacity
                .unwrap_or_else(|| capacity(&config, &opts.model)),
            replay: opts.replay.clone().map(|trace| Replay { trace, next: 0 }),
            model: opts.model.clone(),
            load_until: opts.load_until.map(|d| Instant::ZERO + d),
            checks: Checks::new(&config),
            judge: Judge::new(),
            table: Table::new(pid_space),
            config,
            canary: opts.canary,
            healed: false,
            healed_at: None,
            clients: Clients::default(),
            notify: Notify::default(),
            board: BTreeMap::new(),
            // The shell arms the doorbell with its first read, before its first sleep.
            doorbell_armed: true,
            blocked: false,
            sigchld_pending: false,
            bad_generation: BTreeMap::new(),
            timer_wake: false,
            reaped_in_turn: 0,
            commanded: false,
            predecessor: None,
            record,
            stats: Stats::default(),
            coverage: Coverage::new(),
            exited: None,
        }
    }

    /// The judge's complaints, if any: each is a trace line at the step it happened, and
    /// the first fails the run.
    pub(super) fn take_judgement(&mut self) {
        for c in self.judge.take_complaints() {
            let line = format!("oracle {}: {}", c.oracle.name(), c.what);
            self.record.note(c.at, &line);
            if self.checks.failure.is_none() {
                self.checks.failure = Some(super::Outcome::Judged {
                    oracle: c.oracle,
                    what: format!("at {}: {line}", c.at),
                });
            }
        }
    }

    /// The run is over: the supervisor exited or a check failed.
    pub(super) fn done(&self) -> bool {
        self.exited.is_some() || self.checks.failure.is_some()
    }

    pub(super) fn take_result(
        &mut self,
        seed: u64,
        config: Config,
        faults: Faults,
        steps: u64,
        samples: Vec<Sample>,
        exit_code: Option<i32>,
    ) -> RunResult {
        RunResult {
            outcome: self.checks.failure.take().unwrap_or(super::Outcome::Passed),
            seed,
            config,
            faults,
            load: self.load,
            trace_hash: self.record.hash.0,
            lines: std::mem::take(&mut self.record.lines),
            inputs: std::mem::take(&mut self.record.inputs),
            events: self.record.events,
            steps,
            sim_time: self.now.saturating_since(Instant::ZERO),
            stats: std::mem::take(&mut self.stats),
            coverage: std::mem::take(&mut self.coverage),
            samples,
            exit_code,
        }
    }

    // ------------------------------------------------------------- the clock

    pub(super) fn schedule(&mut self, after: Duration, ev: Ev) {
        self.schedule_at(self.now + after, ev);
    }

    pub(super) fn schedule_at(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.payloads.insert(self.seq, ev);
    }

    /// The next event due, in time order (ties in the order they were scheduled).
    pub(super) fn pop(&mut self) -> Option<(Instant, Ev)> {
        let Reverse((at, seq)) = self.heap.pop()?;
        let ev = self
            .payloads
            .remove(&seq)
            .expect("every heap entry has a payload");
        Some((at, ev))
    }

    /// Moves the clock to `to`, counting the worker-seconds on the way.
    pub(super) fn advance(&mut self, to: Instant) {
        let dt = to.saturating_since(self.last_time).as_secs_f64();
        self.stats.worker_seconds += dt * self.table.live_workers as f64;
        if self.table.live_workers >= u64::from(self.config.policy.max()) {
            self.stats.seconds_at_max += dt;
        }
        self.last_time = to;
        self.now = self.now.max(to);
    }

    /// The supervisor's loop is blocked for `d` (a slow fork): the clock moves on. The
    /// processes and clients live on meanwhile (a child may boot and say READY before its
    /// fork returns; datagrams land in the socket), while what would wake or command the
    /// loop, and a clock jump, runs late, as in a blocked real loop. The oracle's stop
    /// deadlines wait too: no ladder can move while the loop is blocked.
    pub(super) fn block(&mut self, d: Duration) {
        let to = self.now + d;
        self.blocked = true;
        let mut deferred = Vec::new();
        // Bounded: every process event moves a process on; the bound is far above what a
        // 2 s block of a pool of at most WORKERS_MAX workers can hold.
        for _ in 0..BLOCKED_EVENTS_MAX {
            let Some(&Reverse((at, seq))) = self.heap.peek() else {
                break;
            };
            if at.max(self.frozen_until) > to {
                break;
            }
            self.heap.pop();
            let ev = self
                .payloads
                .remove(&seq)
                .expect("every heap entry has a payload");
            if ev.is_process_event() {
                self.advance(at.max(self.frozen_until).max(self.now));
                self.step(ev);
            } else {
                deferred.push((at, seq, ev));
            }
        }
        for (at, seq, ev) in deferred {
            self.heap.push(Reverse((at, seq)));
            self.payloads.insert(seq, ev);
        }
        self.blocked = false;
        self.advance(to);
        self.postpone_stops(d);
    }

    // ------------------------------------------------------------- turns

    pub(super) fn turn_starts(&mut self, timer: bool) {
        self.timer_wake = timer;
        self.reaped_in_turn = 0;
    }

    pub(super) fn turn_ends(&mut self) {
        if self.reaped_in_turn > 1 {
            self.coverage.hit(Mark::CoalescedReap);
        }
    }

    /// The accept queue's length, if it changed since the machine last heard it: the shell
    /// samples it on every wake-up.
    pub(super) fn backlog_change(&mut self) -> Option<u32> {
        let queued = self.clients.queued();
        (queued != self.clients.reported).then(|| {
            self.clients.reported = queued;
            queued
        })
    }

    /// A datagram arrived while the loop watched the socket (since the last call).
    pub(super) fn take_readable(&mut self) -> bool {
        std::mem::take(&mut self.notify.readable)
    }

    /// Datagrams wait unread in the notify socket.
    pub(super) fn notify_waiting(&self) -> bool {
        !self.notify.queue.is_empty()
    }

    /// A SIGCHLD for the supervisor: one wake-up, however many children exit before it
    /// comes (`Faults::sigchld_coalesce` delays it).
    pub(super) fn sigchld(&mut self) {
        if self.sigchld_pending {
            return;
        }
        self.sigchld_pending = true;
        let d = if self.faults.sigchld_coalesce {
            self.rng_os
                .duration(Duration::from_millis(1), Duration::from_millis(1500))
        } else {
            Duration::ZERO
        };
        self.schedule(d, Ev::Sigchld);
    }

    // ------------------------------------------------------------- the notify socket

    /// A worker sends a datagram, possibly delayed (`Faults::msg_delay`).
    pub(super) fn send(&mut self, serial: u64, datagram: Datagram) {
        if self.rng_os.chance(self.faults.msg_delay) {
            let d = self
                .rng_os
                .duration(Duration::from_millis(1), Duration::from_millis(800));
            self.schedule(d, Ev::Arrive(serial, datagram));
        } else {
            self.arrive(serial, datagram);
        }
    }

    /// A datagram lands in the notify socket. A loop that watches the socket wakes at once;
    /// one that does not (the machine lets messages wait until `messages_due`) finds it at
    /// its next wake-up. A full socket blocks the sender in `sendto`: a failure if it comes
    /// before the deadline the loop sleeps until, for `messages_due` must leave room for
    /// every datagram until then. Past that deadline the loop is late (`late_wakeup`, a
    /// stalled host) or blocked in a slow fork, and the sender waits for its read, which is
    /// not the machine's doing.
    pub(super) fn arrive(&mut self, serial: u64, datagram: Datagram) {
        if self.done() {
            return;
        }
        let full = self.notify.queue.len() >= NOTIFY_QUEUE as usize;
        let on_time = self.notify.read_by.is_none_or(|t| self.now <= t);
        if !self.notify.watching && full && on_time && !self.blocked {
            let mut senders: BTreeMap<u64, u32> = BTreeMap::new();
            for (_, sender, d) in self
                .notify
                .queue
                .iter()
                .chain([&(self.now, serial, datagram)])
            {
                if matches!(d, Datagram::Beat | Datagram::Ready) {
                    *senders.entry(*sender).or_default() += 1;
                }
            }
            let first = self.notify.queue[0].0;
            let workers = self
                .table
                .procs
                .values()
                .filter(|p| p.worker.is_some())
                .count();
            return self.fail_safety(format!(
                "a worker would block in sendto: {} messages held unread since {first}, the notify socket holds {NOTIFY_QUEUE} ({} senders, at most {} from one, {workers} worker processes)",
                self.notify.queue.len() + 1,
                senders.len(),
                senders.values().max().copied().unwrap_or(0),
            ));
        }
        self.notify.queue.push_back((self.now, serial, datagram));
        if self.notify.watching {
            self.notify.readable = true;
        }
    }

    /// The shell's read of the notify socket: every datagram as an input, a heartbeat as
    /// `HeartbeatAt` its arrival. A datagram is the worker's whose pid sent it; one from a
    /// process already reaped is dropped, as the shell drops a message from a pid it no
    /// longer knows. Stops at `NOTIFY_READ_MAX`; true if the socket is empty.
    fn read_notify(&mut self, into: &mut Vec<Input>) -> bool {
        let mut beats = 0;
        for _ in 0..NOTIFY_READ_MAX {
            let Some((arrived, sender, datagram)) = self.notify.queue.pop_front() else {
                break;
            };
            let Some(proc) = self.table.procs.get_mut(&sender) else {
                continue;
            };
            let Some(worker) = proc.worker else {
                continue;
            };
            into.push(match datagram {
                Datagram::Ready => {
                    proc.ready_told = true;
                    Input::Ready { worker }
                }
                Datagram::Beat => {
                    beats += 1;
                    Input::HeartbeatAt {
                        worker,
                        at: arrived,
                    }
                }
                Datagram::Load((busy, oldest_busy_since, requests)) => Input::Load {
                    worker,
                    busy,
                    oldest_busy_since,
                    requests,
                },
                // It only woke the loop, which reads the board first thing.
                Datagram::Doorbell => continue,
            });
        }
        if self.timer_wake && beats >= 2 {
            self.coverage.hit(Mark::HeldMessages);
        }
        self.notify.queue.is_empty()
    }

    /// The shell's read of the report board, before the socket's: a newer heartbeat stamp
    /// as `HeartbeatAt` (watchdog on or off: a worker is held to the watchdog it was started
    /// with, whatever the config in force says), a changed load as `Load`, for every worker
    /// not yet reaped. Arms the doorbell.
    fn read_board(&mut self, into: &mut Vec<Input>) {
        self.doorbell_armed = true;
        let mut sampled = false;
        for (serial, cell) in &mut self.board {
            let Some(worker) = self.table.procs.get(serial).and_then(|p| p.worker) else {
                continue;
            };
            if let Some(at) = cell.beat.filter(|b| cell.seen_beat != Some(*b)) {
                into.push(Input::HeartbeatAt { worker, at });
                sampled = true;
            }
            if let Some((busy, oldest_busy_since, requests)) =
                cell.load.filter(|l| cell.seen_load != Some(*l))
            {
                into.push(Input::Load {
                    worker,
                    busy,
                    oldest_busy_since,
                    requests,
                });
            }
            cell.seen_beat = cell.beat;
            cell.seen_load = cell.load;
        }
        if self.timer_wake && sampled {
            self.coverage.hit(Mark::SampledHeartbeat);
        }
    }

    /// The end of the fault phase: every fault stops; the ways of reporting stay.
    pub(super) fn heal(&mut self) {
        self.healed = true;
        self.healed_at = Some(self.now);
        let mut healed = Faults::none();
        healed.shm_reports = self.faults.shm_reports;
        healed.load_silent = self.faults.load_silent;
        healed.slot_addresses = self.faults.slot_addresses;
        if self.canary {
            healed.ignore_term = 1.0;
        }
        self.faults = healed;
        self.frozen_until = self.frozen_until.min(self.now);
    }

    // ------------------------------------------------------------- the config in force

    /// After a command: new workers' paces and the oracle's bounds follow the config now
    /// in force (a stopping worker keeps its ladder, so the bounds only widen; a running
    /// one keeps the watchdog it was started with).
    fn note_config(&mut self, sup: &Supervisor) {
        let c = sup.config();
        self.checks.widen(c);
        if c != &self.config {
            self.config = c.clone();
        }
    }
}

/// Linux's EADDRINUSE, the errno of a taken port.
const EADDRINUSE: i32 = 98;

impl Os for SimOs {
    fn now(&mut self) -> Instant {
        self.now
    }

    /// fork: synchronous. A slow fork blocks the loop (`Faults::fork_slow`); a failing one
    /// is EAGAIN (`Faults::fork_fail`).
    fn spawn(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        generation: Generation,
    ) -> Result<Pid, SpawnError> {
        self.stats.spawns += 1;
        if self.exited.is_some() {
            self.fail_safety("spawn after exit".into());
            return Err(SpawnError::Resources);
        }
        if self.rng_os.chance(self.faults.fork_fail) {
            self.coverage.hit(Mark::ForkFailed);
            return Err(SpawnError::Resources);
        }
        // Drawn only where slots are addresses, so that other runs keep their stream.
        if sup.config().slot_addresses && self.rng_os.chance(self.faults.address_fail) {
            self.coverage.hit(Mark::AddressFailed);
            return Err(SpawnError::Address(EADDRINUSE));
        }
        let slow = self.rng_os.chance(self.faults.fork_slow);
        self.check_spawn_generation(generation);
        // The child runs from the start of the fork; the loop hears of it at the end.
        let pid = self.create_worker(worker, generation, sup.config().threads);
        let mut blocked = self.model.spawn_cost;
        if slow {
            self.coverage.hit(Mark::SlowFork);
            blocked += self
                .rng_os
                .duration(Duration::from_millis(10), Duration::from_secs(2));
        }
        if !blocked.is_zero() {
            self.block(blocked);
        }
        if sup.config().readiness == Readiness::AtSpawn {
            // The machine counts it ready on the answer to this fork.
            let serial = self.table.by_pid[&pid];
            self.table
                .procs
                .get_mut(&serial)
                .expect("just forked")
                .ready_told = true;
        }
        Ok(pid)
    }

    fn signal(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        pid: Pid,
        signal: Signal,
        reason: StopReason,
    ) {
        self.stats.signals += 1;
        let Some(serial) = self.check_signal(sup, worker, pid, signal, reason) else {
            return;
        };
        if self.canary && signal == Signal::Kill {
            // The planted bug: the machine "forgets" its last stage.
            return;
        }
        let latency = Duration::from_micros(self.rng_os.between(0, 5000));
        self.schedule(latency, Ev::Signal(serial, signal));
    }

    fn start_successor(&mut self, _: &Supervisor) -> Result<Pid, SpawnError> {
        self.check_successor_start();
        if self.rng_os.chance(self.faults.successor_fail) && self.rng_os.chance(0.3) {
            return Err(SpawnError::Exec);
        }
        let serial = self.create_proc(None, 1);
        let pid = self.table.procs[&serial].pid;
        let d = self
            .rng_os
            .duration(Duration::from_millis(100), Duration::from_secs(5));
        if self.rng_os.chance(self.faults.successor_fail) {
            if self.rng_os.chance(0.5) {
                self.schedule(d, Ev::Crash(serial));
            } // else: it hangs and never becomes ready
        } else {
            self.schedule(d, Ev::SuccessorReady(serial));
            // A successor that dies after it said Ready, while this supervisor drains for
            // it: the pool is this supervisor's again.
            if self.rng_os.chance(self.faults.successor_fail) {
                let after = self
                    .rng_os
                    .duration(Duration::from_micros(100), Duration::from_millis(300));
                self.schedule(d + after, Ev::Crash(serial));
            }
        }
        Ok(pid)
    }

    fn kill_successor(&mut self, _: &Supervisor, pid: Pid, _: RollbackReason) {
        let Some(&serial) = self.table.by_pid.get(&pid) else {
            return self.fail_safety(format!("kill-successor aimed at unknown pid {pid}"));
        };
        let p = &self.table.procs[&serial];
        if p.worker.is_some() || p.inherited {
            return self.fail_safety(format!(
                "kill-successor aimed at pid {pid}, not the successor"
            ));
        }
        self.schedule(Duration::from_millis(1), Ev::Signal(serial, Signal::Kill));
    }

    fn exit(&mut self, _: &Supervisor, code: i32) {
        let left: Vec<Pid> = self
            .table
            .procs
            .values()
            .filter(|p| p.worker.is_some())
            .map(|p| p.pid)
            .collect();
        if !left.is_empty() {
            return self.fail_safety(format!(
                "exit code {code} while worker processes remain: {left:?}"
            ));
        }
        self.exited = Some(code);
    }

    fn event(&mut self, sup: &Supervisor, _: Instant, event: Event) {
        self.observe(sup, &event);
        self.judge.event(sup, self.now, &event);
        self.take_judgement();
        self.observe_succession(sup, &event);
    }

    fn read_workers(&mut self, _: &Supervisor, _: Instant, into: &mut Vec<Input>) -> bool {
        if self.faults.shm_reports {
            self.read_board(into);
        }
        self.read_notify(into)
    }

    /// `waitpid`, as the shell does it: first the children that exited (a worker whose
    /// main process exited while its group lives is `MainExited`, the group now lingering;
    /// one whose group is gone too is `Exited` with the main's status), then the lingering
    /// groups found empty, `Exited` with the main's status. Only workers' and the
    /// successor's exits are the machine's business; other children (inherited from a
    /// previous supervisor) are reaped and not fed, as the shell does.
    fn reap(&mut self, sup: &Supervisor) -> Option<Input> {
        if self.done() {
            return None;
        }
        while let Some(serial) = self.table.zombies.pop_front() {
            let p = self
                .table
                .procs
                .get_mut(&serial)
                .expect("zombies are known processes");
            if let (Main::Exited(status), true) = (p.main, p.alive()) {
                p.main = Main::Reaped(status);
                self.table.lingering += 1;
                let pid = p.pid;
                self.expect_main_retire(serial);
                self.reaped_in_turn += 1;
                return Some(Input::MainExited { pid, status });
            }
            let ProcState::Zombie(status) = p.state else {
                unreachable!("a process queued for waitpid is a zombie or has lost its main")
            };
            let pid = p.pid;
            self.judge_exit(serial, status);
            let p = &self.table.procs[&serial];
            let fed = match p.worker {
                Some(_) => true,
                // The successor's exit is fed while the machine still waits on it.
                None => !p.inherited && successor_named(sup, pid),
            };
            self.forget(serial);
            if fed {
                self.reaped_in_turn += 1;
                return Some(Input::Exited { pid, status });
            }
        }
        let serial = self.table.emptied.pop_front()?;
        let p = &self.table.procs[&serial];
        let (Main::Reaped(status), ProcState::Zombie(_)) = (p.main, p.state) else {
            unreachable!("an emptied group is a lingering one whose last process exited")
        };
        let pid = p.pid;
        self.table.lingering -= 1;
        self.judge_exit(serial, status);
        self.forget(serial);
        self.reaped_in_turn += 1;
        Some(Input::Exited { pid, status })
    }

    fn handling(&mut self, sup: &Supervisor, now: Instant, input: &Input) {
        if matches!(input, Input::Command(_)) {
            self.commanded = true;
        }
        self.succession_handling(input);
        self.judge.input(sup, self.now, input);
        self.take_judgement();
        self.record.input(now, input);
    }

    fn handled(&mut self, sup: &Supervisor, now: Instant) {
        self.record.handled(now);
        self.judge.handled(sup, self.now);
        self.take_judgement();
        if std::mem::take(&mut self.commanded) {
            self.note_config(sup);
        }
        if let Err(v) = sup.check_invariants() {
            self.fail_safety(format!("machine invariant: {v}"));
        }
    }

    fn performing(&mut self, sup: &Supervisor, now: Instant, action: &Action) {
        if matches!(action, Action::ReleaseSlot { .. }) {
            self.coverage.hit(Mark::SlotReleased);
        }
        self.record.action(now, action);
        self.judge.action(sup, self.now, action);
        self.take_judgement();
    }

    fn drained(&mut self, sup: &Supervisor, now: Instant, complete: bool) {
        self.judge.drained(sup, now, complete);
        self.take_judgement();
        self.check_main_exit(sup);
        self.check_succession_drain(sup);
    }
}

/// The machine still waits on this successor (the shell feeds its exit only then).
fn successor_named(sup: &Supervisor, pid: Pid) -> bool {
    matches!(
        sup.upgrade_state(),
        UpgradeState::Started { pid: s, .. } | UpgradeState::Succeeded { pid: s } | UpgradeState::Killing { pid: s }
            if s == pid
    )
}

/// Requests per second the pool serves at its largest, at the model's mean service time.
pub(super) fn capacity(config: &Config, model: &Model) -> f64 {
    f64::from(config.policy.max()) * f64::from(config.threads)
        / model.service.mean().as_secs_f64().max(1e-6)
}
