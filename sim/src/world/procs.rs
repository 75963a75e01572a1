//! Worker processes and the process table. It owns every simulated process (workers, the
//! live upgrade's successor, children inherited from a previous supervisor), pid allocation
//! with reuse, and what a process does on its own: boot, beat and report its load, crash,
//! hang, obey or ignore signals, drain and die, and a worker's main process exiting while
//! the rest of its process group runs on. A death makes a zombie and a SIGCHLD; the model
//! OS (`os.rs`) reaps. It must not talk to the machine: a process reaches the supervisor
//! only through the notify socket, the report board and its exit.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use drover_machine::{Config, ExitStatus, Generation, Instant, Pid, Readiness, Signal, WorkerId};

use super::os::{Datagram, SimOs};
use super::Ev;
use crate::coverage::Mark;

/// Busy threads, start of the oldest request, requests served.
pub(super) type Reported = (u32, Option<Instant>, u64);

/// The pace of a worker under `config`: its heartbeat at half the heartbeat timeout (the
/// documented contract: `WATCHDOG=1` at least every half of `WATCHDOG_USEC`), its load
/// reports at the program's own pace (a third of the timeout, at most 2 s), sent only when
/// the load changed. Without a watchdog both are every 2 s.
pub(super) fn paces(config: &Config) -> (Duration, Duration) {
    let fallback = Duration::from_secs(2);
    match config.heartbeat_timeout {
        Some(t) => (t / 2, (t / 3).min(fallback)),
        None => (fallback, fallback),
    }
}

/// The process group: alive, or exited and not yet reaped (a reaped process leaves the
/// table).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ProcState {
    Booting,
    Running,
    Zombie(ExitStatus),
}

/// The main process of a worker's group, the one the shell forked (`Faults::main_exit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Main {
    /// Runs, or exited together with its group.
    Running,
    /// Exited on its own with this status while the rest of the group runs on; not yet
    /// reaped.
    Exited(ExitStatus),
    /// Reaped (the machine heard `MainExited`): the group lingers until it is empty.
    Reaped(ExitStatus),
}

#[derive(Clone, Debug)]
pub(super) struct Proc {
    pub(super) pid: Pid,
    /// `None` for the successor supervisor of a live upgrade or an inherited child.
    pub(super) worker: Option<WorkerId>,
    /// A child of a previous supervisor: this one never spawned it.
    pub(super) inherited: bool,
    pub(super) state: ProcState,
    /// Whether the group's main process still runs. Once it does not, the rest of the group
    /// serves the requests it holds but accepts no more, sends nothing, and obeys signals as
    /// before; its pid (the group's id) stays taken until the worker's `Exited`, which
    /// carries the main process's status, as the shell reports the group leader's.
    pub(super) main: Main,
    pub(super) accepting: bool,
    pub(super) draining: bool,
    pub(super) hung: bool,
    pub(super) threads: u32,
    pub(super) in_flight: Vec<Instant>,
    pub(super) requests: u64,
    ignores_term: bool,
    drain_extra: Duration,
    kill_delay: Duration,
    crash_in_drain: bool,
    /// The oracle's bound for its death, once it was asked to stop.
    pub(super) stop_deadline: Option<Instant>,
    /// The last heartbeat the process sent or published.
    pub(super) last_beat: Option<Instant>,
    /// Its heartbeat and load-report paces (`paces` of the config at its spawn).
    pub(super) beat_every: Duration,
    pub(super) report_every: Duration,
    /// The load it last sent over the notify socket or published on the board.
    reported: Option<Reported>,
    /// The machine retired it for `MainExited`: its exit is a crash with the main
    /// process's status.
    pub(super) main_retired: bool,
    /// The generation it was spawned for (`DROVER_GENERATION`); 0 for a process that is no
    /// worker.
    pub(super) generation: u32,
    /// The supervisor was told it is ready: its READY=1 was handed in, or it was spawned
    /// while readiness was at spawn.
    pub(super) ready_told: bool,
}

impl Proc {
    /// The group runs (the main process may have exited).
    pub(super) fn alive(&self) -> bool {
        matches!(self.state, ProcState::Booting | ProcState::Running)
    }

    /// The main process runs: it can boot, beat and report.
    fn main_runs(&self) -> bool {
        self.alive() && self.main == Main::Running
    }

    fn load(&self) -> Reported {
        (
            self.in_flight.len() as u32,
            self.in_flight.iter().min().copied(),
            self.requests,
        )
    }
}

/// Every process not yet reaped, and the kernel's view of them for `waitpid`.
pub(super) struct Table {
    pub(super) procs: BTreeMap<u64, Proc>,
    pub(super) by_pid: BTreeMap<Pid, u64>,
    /// Worker processes alive (not zombies), for worker-seconds.
    pub(super) live_workers: u64,
    next_serial: u64,
    pid_space: u32,
    pid_cursor: u32,
    pid_ever: BTreeSet<Pid>,
    /// What `waitpid` returns, in the order it happened: processes that exited, and main
    /// processes that exited while their group runs on.
    pub(super) zombies: VecDeque<u64>,
    /// Lingering groups whose last process exited: the shell finds them empty at its next
    /// reap.
    pub(super) emptied: VecDeque<u64>,
    /// Groups whose main process was reaped and whose `Exited` is not fed yet: the shell
    /// looks at them every `LINGER_CHECK`.
    pub(super) lingering: u32,
}

impl Table {
    pub(super) fn new(pid_space: u32) -> Table {
        Table {
            procs: BTreeMap::new(),
            by_pid: BTreeMap::new(),
            live_workers: 0,
            next_serial: 1,
            pid_space,
            pid_cursor: 1,
            pid_ever: BTreeSet::new(),
            zombies: VecDeque::new(),
            emptied: VecDeque::new(),
            lingering: 0,
        }
    }
}

impl SimOs {
    /// Like Linux: the next free number after the last one handed out, wrapping.
    fn alloc_pid(&mut self) -> Pid {
        let t = &mut self.table;
        loop {
            for _ in 0..=t.pid_space {
                t.pid_cursor = t.pid_cursor % t.pid_space + 1;
                let pid = Pid(t.pid_cursor + 1);
                if !t.by_pid.contains_key(&pid) {
                    if !t.pid_ever.insert(pid) {
                        self.coverage.hit(Mark::PidReused);
                    }
                    return pid;
                }
            }
            // Every pid is taken (reloads grew the pool past the small space): widen it, as
            // an administrator raising pid_max would.
            t.pid_space *= 2;
        }
    }

    pub(super) fn create_proc(&mut self, worker: Option<WorkerId>, threads: u32) -> u64 {
        let pid = self.alloc_pid();
        let serial = self.table.next_serial;
        self.table.next_serial += 1;
        let (beat_every, report_every) = paces(&self.config);
        let f = &self.faults;
        let rng = &mut self.rng_proc;
        let proc = Proc {
            pid,
            worker,
            inherited: false,
            state: ProcState::Booting,
            main: Main::Running,
            accepting: false,
            draining: false,
            hung: false,
            threads,
            in_flight: Vec::new(),
            requests: 0,
            ignores_term: rng.chance(f.ignore_term),
            drain_extra: if rng.chance(f.slow_drain) {
                rng.duration(Duration::from_secs(1), Duration::from_secs(90))
            } else {
                Duration::from_millis(rng.between(0, 50))
            },
            kill_delay: if rng.chance(f.kill_delay) {
                rng.duration(Duration::from_millis(10), Duration::from_secs(3))
            } else {
                Duration::ZERO
            },
            crash_in_drain: rng.chance(f.crash_drain),
            stop_deadline: None,
            last_beat: None,
            beat_every,
            report_every,
            reported: None,
            main_retired: false,
            generation: 0,
            ready_told: false,
        };
        self.table.by_pid.insert(pid, serial);
        self.table.live_workers += u64::from(worker.is_some());
        self.table.procs.insert(serial, proc);
        serial
    }

    /// A worker process, just forked: how it will boot, crash or hang is drawn now.
    pub(super) fn create_worker(
        &mut self,
        worker: WorkerId,
        generation: Generation,
        threads: u32,
    ) -> Pid {
        let serial = self.create_proc(Some(worker), threads);
        self.table
            .procs
            .get_mut(&serial)
            .expect("just created")
            .generation = generation.0;
        let bad = if self.healed {
            false
        } else {
            let p = self.faults.bad_release;
            *self
                .bad_generation
                .entry(generation.0)
                .or_insert_with(|| self.rng_proc.chance(p))
        };
        let f = &self.faults;
        let (crash_boot, crash_ready, hang) = (f.crash_boot, f.crash_ready, f.hang);
        let rng = &mut self.rng_proc;
        let boot = self.model.boot.draw(rng);
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
        self.table.procs[&serial].pid
    }

    /// Children of a previous supervisor (after an upgrade) that exit under this one.
    pub(super) fn inherit_children(&mut self) {
        for _ in 0..self.rng_os.between(1, 3) {
            let serial = self.create_proc(None, 1);
            self.table
                .procs
                .get_mut(&serial)
                .expect("just created")
                .inherited = true;
            let d = self
                .rng_os
                .duration(Duration::ZERO, Duration::from_secs(60));
            self.schedule(d, Ev::Crash(serial));
        }
    }

    pub(super) fn is_alive(&self, serial: u64) -> bool {
        self.table.procs.get(&serial).is_some_and(Proc::alive)
    }

    /// A process reaped and fed (or reaped and not the machine's business): gone from the
    /// table, its pid free, its board slot no longer read.
    pub(super) fn forget(&mut self, serial: u64) {
        let Some(p) = self.table.procs.remove(&serial) else {
            return;
        };
        self.table.by_pid.remove(&p.pid);
        self.board.remove(&serial);
        if let Some(d) = p.stop_deadline {
            self.checks.stop_deadlines.remove(&(d, serial));
        }
    }

    /// What a process does on its own.
    pub(super) fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Booted(serial) => self.booted(serial),
            Ev::Beat(serial) => self.beat(serial),
            Ev::Report(serial) => self.report(serial),
            Ev::Crash(serial) => self.crash(serial),
            Ev::Hang(serial) => {
                if let Some(p) = self.table.procs.get_mut(&serial) {
                    if p.alive() {
                        p.hung = true;
                        p.accepting = false;
                        self.clients.forget(serial);
                    }
                }
            }
            Ev::Signal(serial, signal) => self.deliver(serial, signal),
            Ev::Die(serial, status) => self.die(serial, status),
            Ev::Arrive(serial, datagram) => self.arrive(serial, datagram),
            Ev::Arrival => self.on_arrival(),
            Ev::RequestDone(serial, started) => self.on_request_done(serial, started),
            Ev::ClockJump => self.clock_jump(),
            Ev::Pause => self.pause(),
            Ev::Wake(_)
            | Ev::Sigchld
            | Ev::Operator
            | Ev::SuccessorReady(_)
            | Ev::Predecessor(_)
            | Ev::EarlyUpgrade
            | Ev::Heal
            | Ev::Check
            | Ev::Sample => unreachable!("the world's own events are not the processes'"),
        }
    }

    fn booted(&mut self, serial: u64) {
        let Some(p) = self.table.procs.get_mut(&serial) else {
            return;
        };
        if p.state != ProcState::Booting || p.hung || p.main != Main::Running {
            return;
        }
        p.state = ProcState::Running;
        p.accepting = !p.draining;
        let (beat_every, report_every) = (p.beat_every, p.report_every);
        if self.config.readiness == Readiness::Notify {
            self.send(serial, Datagram::Ready);
        }
        self.start_requests(serial);
        self.schedule(beat_every, Ev::Beat(serial));
        // A program that reports no load sends none (`Faults::load_silent`).
        if self.faults.shm_reports || !self.faults.silent_load() {
            self.schedule(report_every, Ev::Report(serial));
        }
    }

    /// `WATCHDOG=1`, or a fresh stamp on the board.
    fn beat(&mut self, serial: u64) {
        let now = self.now;
        let Some(p) = self.table.procs.get_mut(&serial) else {
            return;
        };
        if !p.main_runs() || p.hung {
            return;
        }
        p.last_beat = Some(now);
        let every = p.beat_every;
        self.schedule(every, Ev::Beat(serial));
        if self.faults.shm_reports {
            // Published, not sent: read at the supervisor's next wake-up.
            self.board.entry(serial).or_default().beat = Some(now);
        } else {
            self.send(serial, Datagram::Beat);
        }
    }

    /// `X_DROVER_LOAD=…` when the load changed, or the board's load with its doorbell,
    /// rung once per read of the board.
    fn report(&mut self, serial: u64) {
        let Some(p) = self.table.procs.get_mut(&serial) else {
            return;
        };
        if !p.main_runs() || p.hung {
            return;
        }
        let every = p.report_every;
        self.schedule(every, Ev::Report(serial));
        self.publish_load(serial);
    }

    /// Tells the supervisor the process's load if it changed since it last told.
    pub(super) fn publish_load(&mut self, serial: u64) {
        let Some(p) = self.table.procs.get_mut(&serial) else {
            return;
        };
        if !p.main_runs() || p.hung {
            return;
        }
        let load = p.load();
        let changed = p.reported != Some(load);
        p.reported = Some(load);
        if self.faults.shm_reports {
            self.board.entry(serial).or_default().load = Some(load);
            if changed && std::mem::take(&mut self.doorbell_armed) {
                self.send(serial, Datagram::Doorbell);
            }
        } else if changed {
            self.send(serial, Datagram::Load(load));
        }
    }

    fn crash(&mut self, serial: u64) {
        let codes = &self.config.restart.unrecoverable_exit_codes;
        let unrecoverable = !codes.is_empty() && self.rng_proc.chance(self.faults.unrecoverable);
        let status = if unrecoverable {
            ExitStatus::Code(codes[0])
        } else if self.faults.outside_kill > 0.0 && self.rng_proc.chance(self.faults.outside_kill) {
            self.coverage.hit(Mark::OutsideKill);
            match self.rng_proc.between(0, 2) {
                0 => ExitStatus::Signaled(9),
                1 => ExitStatus::Signaled(15),
                _ => ExitStatus::Code(0),
            }
        } else if self.rng_proc.chance(0.5) {
            ExitStatus::Code(1)
        } else {
            ExitStatus::Signaled(11)
        };
        let main_exits = self
            .table
            .procs
            .get(&serial)
            .is_some_and(|p| p.main_runs() && p.worker.is_some())
            && self.rng_proc.chance(self.faults.main_exit);
        if main_exits {
            self.main_exits(serial, status);
        } else {
            self.die(serial, status);
        }
    }

    /// A signal reaches the process group.
    fn deliver(&mut self, serial: u64, signal: Signal) {
        let Some(p) = self.table.procs.get(&serial) else {
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

    /// TERM/INT/QUIT: stop accepting, finish in-flight requests, exit 0 (after the drain).
    fn begin_drain(&mut self, serial: u64) {
        let p = self.table.procs.get_mut(&serial).expect("caller checked");
        if p.draining {
            return;
        }
        p.draining = true;
        p.accepting = false;
        let (crash, busy, extra) = (p.crash_in_drain, p.in_flight.len(), p.drain_extra);
        self.clients.forget(serial);
        if crash {
            let d = self.rng_proc.duration(Duration::ZERO, extra);
            self.schedule(d, Ev::Crash(serial));
        }
        if busy == 0 {
            self.schedule(extra, Ev::Die(serial, ExitStatus::Code(0)));
        }
    }

    /// A worker done draining exits once its last request is served.
    pub(super) fn drained_out(&mut self, serial: u64) {
        let extra = self.table.procs[&serial].drain_extra;
        self.schedule(extra, Ev::Die(serial, ExitStatus::Code(0)));
    }

    /// The last process of the group exits (the whole of it, if the main process still
    /// ran). A worker whose main process exited reports the main's status.
    fn die(&mut self, serial: u64, status: ExitStatus) {
        let Some(p) = self.table.procs.get_mut(&serial) else {
            return;
        };
        if !p.alive() {
            return;
        }
        let status = match p.main {
            Main::Running => status,
            Main::Exited(main) | Main::Reaped(main) => main,
        };
        self.table.live_workers -= u64::from(p.worker.is_some());
        let broken = p.in_flight.len() as u64;
        p.in_flight.clear();
        p.state = ProcState::Zombie(status);
        p.accepting = false;
        let main = p.main;
        self.stats.broken += broken;
        if broken > 0 {
            self.coverage.hit(Mark::ConnectionBroken);
        }
        self.clients.forget(serial);
        match main {
            Main::Running => {
                self.table.zombies.push_back(serial);
                self.sigchld();
            }
            // The leader's zombie waits for `waitpid` already; reaped, the group is gone.
            Main::Exited(_) => {}
            Main::Reaped(_) => {
                self.table.emptied.push_back(serial);
                // The last process was drover's child (it is their subreaper): its exit
                // wakes drover. Otherwise drover finds the group empty at its next look.
                if self.rng_os.chance(0.5) {
                    self.sigchld();
                }
            }
        }
    }

    /// A worker's main process exits on its own while the rest of its group runs on
    /// (`Faults::main_exit`): a zombie for `waitpid`, which the shell turns into
    /// `MainExited`.
    fn main_exits(&mut self, serial: u64, status: ExitStatus) {
        let p = self.table.procs.get_mut(&serial).expect("caller checked");
        p.main = Main::Exited(status);
        p.accepting = false;
        self.clients.forget(serial);
        self.table.zombies.push_back(serial);
        self.sigchld();
    }

    /// The supervisor alone stops for 1–10 s while its workers beat on: their datagrams
    /// wait in the socket, and it must come back without taking its own absence for
    /// theirs.
    fn pause(&mut self) {
        if self.healed {
            return;
        }
        let d = self
            .rng_clock
            .duration(Duration::from_secs(1), Duration::from_secs(10));
        self.coverage.hit(Mark::Paused);
        self.block(d);
        let gap = self
            .rng_clock
            .exp(Duration::from_secs_f64(60.0 / self.faults.pause));
        self.schedule(gap, Ev::Pause);
    }

    /// Suspend and resume: the world stands still for the jump, the clock does not.
    fn clock_jump(&mut self) {
        if self.healed {
            return;
        }
        let jump = self
            .rng_clock
            .duration(Duration::from_secs(1), Duration::from_secs(120));
        self.coverage.hit(Mark::ClockJump);
        self.frozen_until = self.now + jump;
        // The oracle's deadlines are in world time: a suspend pauses them too.
        self.postpone_stops(jump);
        let gap = self
            .rng_clock
            .exp(Duration::from_secs_f64(60.0 / self.faults.clock_jump));
        self.schedule(jump + gap, Ev::ClockJump);
    }
}
