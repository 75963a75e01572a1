//! The run loop, written once. [`Driver`] owns the run-loop contract (docs/ARCHITECTURE.md
//! §2): handle, drain, reap after the drain, batching of worker reports, and when to sleep
//! until. Everything it asks of the world goes through the [`Os`] trait, which the `drover`
//! shell implements with syscalls and the simulator, the property model, the fuzz target and
//! the scenario harness implement with models. Where production and a model must differ (a
//! slow fork, a fork that fails), the difference lives in the `Os` implementation only.
//!
//! The driver does no IO and reads no clock of its own: time comes from [`Os::now`]. It
//! decides nothing either: every *when* and *whether* is the [`Supervisor`]'s.

use crate::io::{Generation, Input, Pid, Signal, SpawnError, StopReason, WorkerId};
use crate::output::{Action, Event, RollbackReason};
use crate::supervisor::Supervisor;
use crate::time::Instant;

/// Reaps handed in per turn. Past it the rest wait for the next turn, which comes at once
/// ([`Driver::sleep`]), so a storm of exits cannot starve signals and the control socket.
pub const REAPS_PER_TURN_MAX: usize = 1024;

/// What a driver needs of its world. The shell implements it with syscalls; models with a
/// simulated process table. Every method is called from inside the run loop, with the
/// machine as it is at that moment (read only: inputs go back through the driver).
pub trait Os {
    /// Now, on a monotonic clock (nanoseconds since an epoch the `Os` chose). The driver
    /// reads it before every `handle`, so time moves during a drain when the world takes
    /// time (a fork does); an earlier value than the last one counts as the last one.
    fn now(&mut self) -> Instant;

    /// Starts the worker's process, synchronously, as `fork` does. The answer is fed back
    /// at once, inside the drain, as `Spawned` or `SpawnFailed`.
    fn spawn(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        generation: Generation,
    ) -> Result<Pid, SpawnError>;

    /// Sends `signal` to the worker (its process group). Its effect, an exit, comes back
    /// through [`Os::reap`].
    fn signal(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        pid: Pid,
        signal: Signal,
        reason: StopReason,
    );

    /// Starts a live upgrade's successor; fed back as `SuccessorStarted`/`SuccessorFailed`.
    fn start_successor(&mut self, sup: &Supervisor) -> Result<Pid, SpawnError>;

    /// Kills the successor (rollback). Its exit comes back through [`Os::reap`].
    fn kill_successor(&mut self, sup: &Supervisor, pid: Pid, reason: RollbackReason);

    /// Slot `slot`'s address (`Config::slot_addresses`) is no longer needed: close it.
    /// Only configs with slot addresses emit it, so a driver without them keeps the default.
    fn release_slot(&mut self, sup: &Supervisor, slot: u32) {
        let _ = (sup, slot);
    }

    /// The machine is done: the supervisor exits with `code` once the loop sees
    /// [`Driver::exit_code`]. Only events follow.
    fn exit(&mut self, sup: &Supervisor, code: i32);

    /// Something to log or act on; the machine's own state does not depend on it.
    fn event(&mut self, sup: &Supervisor, now: Instant, event: Event);

    /// Everything the workers reported since the last call: heartbeats (as `HeartbeatAt`,
    /// dated by their arrival), loads and readiness, from the notify socket and the report
    /// board. Called first on every wake-up; all of it goes into one `handle_all`, so no
    /// deadline fires between two workers' reports. Returns false if the read stopped at a
    /// bound with messages left: the driver then reads again at once instead of letting
    /// messages wait ([`Supervisor::messages_due`]).
    fn read_workers(&mut self, sup: &Supervisor, now: Instant, into: &mut Vec<Input>) -> bool;

    /// The next child reaped (`waitpid`), as `Exited` or `MainExited`; `None` when no
    /// exit is waiting. Called only after a complete drain: a zombie keeps its pid until
    /// reaped, so no signal of the drain can hit a recycled pid.
    fn reap(&mut self, sup: &Supervisor) -> Option<Input>;

    /// Before each input is handed in (logging, traces, recording). `sup` is as it was
    /// before the input.
    fn handling(&mut self, sup: &Supervisor, now: Instant, input: &Input) {
        let _ = (sup, now, input);
    }

    /// After each `handle` or `handle_all` (invariant checks).
    fn handled(&mut self, sup: &Supervisor, now: Instant) {
        let _ = (sup, now);
    }

    /// Before each action is performed (logging, traces).
    fn performing(&mut self, sup: &Supervisor, now: Instant, action: &Action) {
        let _ = (sup, now, action);
    }

    /// After each drain (checks of the world against the machine). `complete` is false
    /// when the drain stopped at [`Driver::drain_max`] with actions left for the next turn.
    fn drained(&mut self, sup: &Supervisor, now: Instant, complete: bool) {
        let _ = (sup, now, complete);
    }
}

/// When the loop should wake next if no OS event comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sleep {
    /// The deadline, or `None` for "only an OS event". May be now or past: wake at once.
    pub until: Option<Instant>,
    /// Watch the workers' message socket. False while the machine lets messages wait
    /// ([`Supervisor::messages_due`]): they are read at `until` at the latest.
    pub watch_messages: bool,
}

/// The one implementation of the run-loop contract, generic over the world it runs in.
///
/// A loop around it: wait for an OS event or [`Driver::sleep`]; [`Driver::begin_turn`];
/// [`Driver::feed`] each input the wake-up brought (signals, control requests, the
/// successor's messages, accept-queue lengths); [`Driver::end_turn`]. [`Driver::turn`] does
/// the three for a list of inputs.
pub struct Driver<O: Os> {
    sup: Supervisor,
    os: O,
    /// Datagrams the workers' message socket holds before a sender blocks.
    messages_queue: u32,
    /// The time of the last input: `Os::now` never moves the machine's clock back.
    now: Instant,
    /// The last `read_workers` stopped at its bound.
    messages_left: bool,
    /// The last drain stopped at its bound with actions left in the machine.
    drain_cut: bool,
    /// The last turn reaped `REAPS_PER_TURN_MAX` and may have left exits waiting.
    reaps_left: bool,
    drains_cut: u64,
    exit_code: Option<i32>,
    reports: Vec<Input>,
}

impl<O: Os> Driver<O> {
    /// Takes over a freshly built supervisor and performs its first actions (the first
    /// spawns). `messages_queue`: datagrams the workers' message socket holds before a
    /// sender blocks (Linux: `net.unix.max_dgram_qlen`; 0 never lets messages wait).
    /// `sup` was built at an instant no later than `os.now()`.
    pub fn new(sup: Supervisor, os: O, messages_queue: u32) -> Driver<O> {
        let mut driver = Driver {
            sup,
            os,
            messages_queue,
            now: Instant::ZERO,
            messages_left: false,
            drain_cut: false,
            reaps_left: false,
            drains_cut: 0,
            exit_code: None,
            reports: Vec::new(),
        };
        driver.drain();
        driver.reap();
        driver
    }

    /// The machine, to read its state (status, the pool's phase).
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// The machine itself, bypassing the contract: for tests that show what the contract
    /// prevents (inputs fed one by one instead of together). A driver never needs it.
    #[doc(hidden)]
    pub fn supervisor_mut(&mut self) -> &mut Supervisor {
        &mut self.sup
    }

    /// The supervisor to look at and the world to change, at once (a world's checks read
    /// the one while they record into the other).
    pub fn parts(&mut self) -> (&Supervisor, &mut O) {
        (&self.sup, &mut self.os)
    }

    /// The world.
    pub fn os(&self) -> &O {
        &self.os
    }

    /// The world, to change it between turns (a model's faults, the shell's sockets).
    pub fn os_mut(&mut self) -> &mut O {
        &mut self.os
    }

    /// The code of the `Exit` action, once the machine emitted it.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// Drains stopped at their bound so far (each one a machine that asked for more than
    /// `drain_max` actions in a row: a bug the simulator and the tests fail on).
    pub fn drains_cut(&self) -> u64 {
        self.drains_cut
    }

    /// The time of the last input handed to the machine.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Starts a turn (a wake-up): what the workers reported, in one `handle_all` (an empty
    /// one is a tick), then the drain.
    pub fn begin_turn(&mut self) {
        self.handle_with_reports(None);
        self.drain();
    }

    /// One input of the turn (a command, a successor's message, an accept-queue length):
    /// handle, then drain.
    pub fn feed(&mut self, input: Input) {
        self.handle(input);
        self.drain();
    }

    /// Ends the turn: a tick if a deadline has passed, then the children that exited, each
    /// handed in and drained on its own.
    pub fn end_turn(&mut self) {
        if self
            .sup
            .poll_timeout()
            .is_some_and(|t| t <= self.peek_clock())
        {
            self.feed(Input::Tick);
        }
        self.reap();
    }

    /// A whole turn whose wake-up brought `inputs`.
    pub fn turn(&mut self, inputs: impl IntoIterator<Item = Input>) {
        self.begin_turn();
        for input in inputs {
            self.feed(input);
        }
        self.end_turn();
    }

    /// Until when the loop may sleep, and whether it must watch the workers' messages
    /// meanwhile. Work left over from a bounded drain, read or reap makes it now.
    pub fn sleep(&self) -> Sleep {
        if self.drain_cut || self.reaps_left || self.exit_code.is_some() {
            return Sleep {
                until: Some(self.now),
                watch_messages: true,
            };
        }
        let due = self.sup.messages_due(self.messages_queue);
        let hold = due > self.now && !self.messages_left;
        let until = [self.sup.poll_timeout(), hold.then_some(due)]
            .into_iter()
            .flatten()
            .min();
        Sleep {
            until,
            watch_messages: !hold,
        }
    }

    /// Actions one drain may perform: far above what any input asks for (a reload that
    /// replaces every slot asks for a few per slot), so only a machine bug reaches it.
    pub fn drain_max(&self) -> usize {
        64 * self.sup.config().slot_count() as usize + 1024
    }

    fn clock(&mut self) -> Instant {
        self.now = self.os.now().max(self.now);
        self.now
    }

    fn peek_clock(&mut self) -> Instant {
        self.os.now().max(self.now)
    }

    /// `input` (a fork's answer), and then what the workers reported, in one `handle_all`.
    /// The answer goes first: a child that reports before the fork returns to the loop (an
    /// embedded worker is ready in microseconds) must not be taken for a stranger.
    fn handle_with_reports(&mut self, input: Option<Input>) {
        let now = self.clock();
        let mut inputs = std::mem::take(&mut self.reports);
        inputs.extend(input);
        self.messages_left = !self.os.read_workers(&self.sup, now, &mut inputs);
        for input in &inputs {
            self.os.handling(&self.sup, now, input);
        }
        self.sup.handle_all(now, inputs.drain(..));
        self.os.handled(&self.sup, now);
        self.reports = inputs;
    }

    fn handle(&mut self, input: Input) {
        let now = self.clock();
        self.os.handling(&self.sup, now, &input);
        self.sup.handle(now, input);
        self.os.handled(&self.sup, now);
    }

    /// Performs the machine's actions until it has none; results of an action go back in
    /// at once. Bounded: past `drain_max` the rest waits for the next turn.
    fn drain(&mut self) {
        let max = self.drain_max();
        self.drain_cut = false;
        for _ in 0..max {
            let Some(action) = self.sup.poll_action() else {
                self.os.drained(&self.sup, self.now, true);
                return;
            };
            self.perform(action);
        }
        self.drain_cut = true;
        self.drains_cut += 1;
        self.os.drained(&self.sup, self.now, false);
    }

    fn perform(&mut self, action: Action) {
        let now = self.now;
        self.os.performing(&self.sup, now, &action);
        match action {
            // A fork takes time, and the clock is read anew for its answer: what the
            // workers reported meanwhile goes in with it, so no deadline fires for a worker
            // whose heartbeat waits unread while the loop was blocked in the fork.
            Action::Spawn { worker, generation } => {
                let input = match self.os.spawn(&self.sup, worker, generation) {
                    Ok(pid) => Input::Spawned { worker, pid },
                    Err(error) => Input::SpawnFailed { worker, error },
                };
                self.handle_with_reports(Some(input));
            }
            Action::Signal {
                worker,
                pid,
                signal,
                reason,
            } => self.os.signal(&self.sup, worker, pid, signal, reason),
            Action::StartSuccessor => {
                let input = match self.os.start_successor(&self.sup) {
                    Ok(pid) => Input::SuccessorStarted { pid },
                    Err(error) => Input::SuccessorFailed { error },
                };
                self.handle_with_reports(Some(input));
            }
            Action::KillSuccessor { pid, reason } => self.os.kill_successor(&self.sup, pid, reason),
            Action::ReleaseSlot { slot } => self.os.release_slot(&self.sup, slot),
            Action::Exit { code } => {
                self.exit_code = Some(code);
                self.os.exit(&self.sup, code);
            }
            Action::Event(event) => self.os.event(&self.sup, now, event),
        }
    }

    /// Hands in the children that exited, each with its own drain; never while a drain
    /// left actions undone (one of them may name the pid a reap would free).
    fn reap(&mut self) {
        self.reaps_left = false;
        for _ in 0..REAPS_PER_TURN_MAX {
            if self.drain_cut {
                return;
            }
            let Some(input) = self.os.reap(&self.sup) else {
                return;
            };
            self.feed(input);
        }
        self.reaps_left = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, ExitStatus, Readiness, Supervisor};
    use core::time::Duration;

    /// Forks that take `fork` each; worker messages that arrive meanwhile wait in `socket`
    /// with their arrival time, as datagrams do, until the driver reads them.
    struct SlowForks {
        now: Instant,
        fork: Duration,
        next_pid: u32,
        /// (arrival, message): in the socket once the clock has passed the arrival.
        socket: Vec<(Instant, Input)>,
        retired_for_heartbeat: Vec<WorkerId>,
        ignored: Vec<crate::Ignored>,
        /// Children that exited, for `reap`.
        exited: Vec<Input>,
        restarts_scheduled: u32,
    }

    impl SlowForks {
        fn new() -> SlowForks {
            SlowForks {
                now: Instant::ZERO,
                fork: Duration::ZERO,
                next_pid: 100,
                socket: Vec::new(),
                retired_for_heartbeat: Vec::new(),
                ignored: Vec::new(),
                exited: Vec::new(),
                restarts_scheduled: 0,
            }
        }
    }

    impl Os for SlowForks {
        fn now(&mut self) -> Instant {
            self.now
        }
        fn spawn(&mut self, _: &Supervisor, _: WorkerId, _: Generation) -> Result<Pid, SpawnError> {
            self.now = self.now + self.fork;
            self.next_pid += 1;
            Ok(Pid(self.next_pid))
        }
        fn signal(&mut self, _: &Supervisor, _: WorkerId, _: Pid, _: Signal, _: StopReason) {}
        fn start_successor(&mut self, _: &Supervisor) -> Result<Pid, SpawnError> {
            Err(SpawnError::Exec)
        }
        fn kill_successor(&mut self, _: &Supervisor, _: Pid, _: RollbackReason) {}
        fn exit(&mut self, _: &Supervisor, _: i32) {}
        fn event(&mut self, _: &Supervisor, _: Instant, event: Event) {
            if let Event::Retiring {
                worker,
                reason: StopReason::HeartbeatTimeout,
            } = event
            {
                self.retired_for_heartbeat.push(worker);
            }
            if let Event::Ignored(ignored) = event {
                self.ignored.push(ignored);
            }
            if let Event::RestartScheduled { .. } = event {
                self.restarts_scheduled += 1;
            }
        }
        fn read_workers(&mut self, _: &Supervisor, now: Instant, into: &mut Vec<Input>) -> bool {
            let (arrived, waiting) = self.socket.drain(..).partition(|(at, _)| *at <= now);
            self.socket = waiting;
            into.extend(arrived.into_iter().map(|(_, input)| input));
            true
        }
        fn reap(&mut self, _: &Supervisor) -> Option<Input> {
            self.exited.pop()
        }
    }

    /// A worker's heartbeat that arrives while the loop is blocked in a slow fork, before
    /// the worker's deadline, is read with the fork's answer: the deadline, which has passed
    /// by the time the fork returns, does not fire.
    #[test]
    fn a_heartbeat_that_arrives_during_a_slow_fork_keeps_its_worker() {
        let mut config = Config::static_pool(1);
        config.readiness = Readiness::Notify;
        config.heartbeat_timeout = Some(Duration::from_secs(10));
        let sup = Supervisor::new(config, Instant::ZERO).unwrap();
        let os = SlowForks::new();
        let mut d = Driver::new(sup, os, 0);
        let w = d.supervisor().workers().next().unwrap().id;
        d.os_mut().now = Instant::from_secs(1);
        d.os_mut()
            .socket
            .push((Instant::from_secs(1), Input::Ready { worker: w }));
        d.turn([]);
        // The heartbeat deadline is 11 s. At 10.5 s an operator asks for one worker more;
        // its fork blocks the loop for 2 s, and the first worker's beat lands at 10.9 s.
        d.os_mut().now = Instant::from_secs_f64(10.5);
        d.os_mut().fork = Duration::from_secs(2);
        let beat = Input::HeartbeatAt {
            worker: w,
            at: Instant::from_secs_f64(10.9),
        };
        d.os_mut().socket.push((Instant::from_secs_f64(10.9), beat));
        d.turn([Input::Command(crate::Command::ScaleUp)]);
        assert_eq!(d.supervisor().live_workers(), 2);
        assert_eq!(d.os().retired_for_heartbeat, []);
    }

    /// Workers that crash together come back together: their backoffs end at one tick and
    /// their spawns are queued at once, each waiting for the forks before it. The wait is
    /// the machine's own queue, not the worker's boot: no worker is given up on before its
    /// fork (a death nobody died, a backoff for nothing), and each death fed is counted once.
    #[test]
    fn spawns_queued_behind_slow_forks_keep_their_boot_time() {
        let mut config = Config::static_pool(4);
        config.readiness = Readiness::Notify;
        config.boot_timeout = Duration::from_secs(1);
        let sup = Supervisor::new(config, Instant::ZERO).unwrap();
        let mut d = Driver::new(sup, SlowForks::new(), 0);
        d.turn([]);
        d.os_mut().fork = Duration::from_millis(700);
        let mut deaths = 0;
        for tenth in 1..600 {
            d.os_mut().now = Instant::ZERO + Duration::from_millis(tenth * 100);
            // Every process crashes as soon as it runs: all at once, so all back off alike.
            let pids: Vec<Pid> = d.supervisor().workers().filter_map(|w| w.pid).collect();
            for pid in pids {
                deaths += 1;
                let status = ExitStatus::Code(1);
                d.os_mut().exited.push(Input::Exited { pid, status });
            }
            d.turn([]);
        }
        assert_eq!(d.os().ignored, [], "a fork nobody waited for");
        assert_eq!(
            d.os().restarts_scheduled,
            deaths,
            "a backoff for a worker that never ran"
        );
    }

    /// A child fast enough to report before its fork returns (an embedded worker is ready
    /// in microseconds) is known by the time its report is handled: its `Ready` counts.
    #[test]
    fn a_child_that_reports_before_its_fork_returns_is_ready() {
        let mut config = Config::static_pool(1);
        config.readiness = Readiness::Notify;
        let sup = Supervisor::new(config, Instant::ZERO).unwrap();
        // The first worker, whose spawn the first drain performs.
        let w = WorkerId {
            slot: 0,
            incarnation: 1,
        };
        let mut os = SlowForks::new();
        // The fork takes 1 ms; the child is ready after 0.1 ms of it.
        os.fork = Duration::from_millis(1);
        let ready_at = Instant::ZERO + Duration::from_micros(100);
        os.socket.push((ready_at, Input::Ready { worker: w }));
        let d = Driver::new(sup, os, 0);
        assert_eq!(
            d.os().ignored,
            [],
            "the child's report was taken for a stranger's"
        );
        assert_eq!(d.supervisor().ready_workers(), 1);
    }
}
