//! The run's record: the determinism hash (FNV-1a over every input with its instant and
//! every action), the trace lines (`--trace`, the golden snapshot) and the inputs kept for
//! replay and shrinking. It sees what the driver hands the machine and what the machine
//! asks, through the model OS's `handling`, `handled` and `performing` hooks, including the
//! tick an empty read of the workers' reports is. It must not look at the world: two runs
//! of one seed give one hash exactly when the machine saw and did the same.

use drover_machine::trace::{action_line, input_line};
use drover_machine::{Action, Command, ExitStatus, Input, Instant};

/// FNV-1a over numbers: the determinism fingerprint of a run.
pub(super) struct TraceHash(pub(super) u64);

impl TraceHash {
    pub(super) fn add(&mut self, x: u64) {
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

    fn input(&mut self, now: Instant, input: &Input) {
        self.add(now.as_nanos());
        let id = |w: &drover_machine::WorkerId| u64::from(w.slot) << 32 | u64::from(w.incarnation);
        match input {
            Input::Tick => self.add(1),
            Input::Spawned { worker, pid } => {
                self.add(2);
                self.add(id(worker));
                self.add(u64::from(pid.0));
            }
            Input::SpawnFailed { worker, .. } => {
                self.add(3);
                self.add(id(worker));
            }
            Input::Ready { worker } | Input::Heartbeat { worker } => {
                self.add(4);
                self.add(id(worker));
            }
            Input::Load {
                worker,
                busy,
                requests,
                oldest_busy_since,
            } => {
                self.add(5);
                self.add(id(worker));
                self.add(u64::from(*busy));
                self.add(*requests);
                self.add(oldest_busy_since.map_or(0, Instant::as_nanos));
            }
            Input::Backlog { queued, .. } => {
                self.add(6);
                self.add(u64::from(*queued));
            }
            Input::Exited { pid, status } | Input::MainExited { pid, status } => {
                self.add(if matches!(input, Input::Exited { .. }) {
                    7
                } else {
                    13
                });
                self.add(u64::from(pid.0));
                self.add(match status {
                    ExitStatus::Code(c) => *c as u64,
                    ExitStatus::Signaled(s) => 1000 + *s as u64,
                });
            }
            Input::Command(c) => {
                self.add(8);
                self.add_str(c.name());
                if let Command::Reload(config) = c {
                    self.add(config.worker_fingerprint);
                    self.add(u64::from(config.policy.max()));
                }
                if let Command::ScaleTo(n) = c {
                    self.add(u64::from(*n));
                }
            }
            Input::SuccessorStarted { pid } => {
                self.add(9);
                self.add(u64::from(pid.0));
            }
            Input::SuccessorFailed { .. } => self.add(10),
            Input::SuccessorReady => self.add(11),
            Input::Takeover { predecessor_gone } => {
                self.add(15);
                self.add(u64::from(*predecessor_gone));
            }
            Input::HeartbeatAt { worker, at } => {
                self.add(12);
                self.add(id(worker));
                self.add(at.as_nanos());
            }
            // An input this simulator does not know yet still counts, by its trace line.
            other => {
                self.add(16);
                self.add_str(&other.to_string());
            }
        }
    }

    fn action(&mut self, action: &Action) {
        match action {
            Action::Spawn { worker, generation } => {
                self.add(20);
                self.add(u64::from(worker.slot) << 32 | u64::from(worker.incarnation));
                self.add(u64::from(generation.0));
            }
            Action::Signal { pid, signal, .. } => {
                self.add(21);
                self.add(u64::from(pid.0));
                self.add_str(signal.name());
            }
            Action::StartSuccessor => self.add(22),
            Action::KillSuccessor { pid, .. } => {
                self.add(23);
                self.add(u64::from(pid.0));
            }
            Action::Exit { code } => {
                self.add(24);
                self.add(*code as u64);
            }
            Action::Event(_) => self.add(25),
            // An action this simulator does not know yet still counts, by its trace line.
            other => {
                self.add(26);
                self.add_str(&other.to_string());
            }
        }
    }
}

/// Everything the machine was handed and asked for.
pub(super) struct Recorder {
    pub(super) hash: TraceHash,
    /// Trace lines, kept only with `keep_trace`.
    pub(super) lines: Vec<String>,
    /// Every input with its instant, in order, as `shrink::replay` feeds them.
    pub(super) inputs: Vec<(Instant, Input)>,
    /// Inputs handled.
    pub(super) events: u64,
    keep_trace: bool,
    /// Inputs announced since the last `handled`: none means an empty `handle_all`.
    announced: u32,
}

impl Recorder {
    pub(super) fn new(keep_trace: bool) -> Recorder {
        Recorder {
            hash: TraceHash(0xcbf2_9ce4_8422_2325),
            lines: Vec::new(),
            inputs: Vec::new(),
            events: 0,
            keep_trace,
            announced: 0,
        }
    }

    /// A line of the world's own (an oracle's complaint), at the step it happened. Not
    /// hashed: the hash is what the machine saw and did.
    pub(super) fn note(&mut self, now: Instant, line: &str) {
        if self.keep_trace {
            self.lines.push(format!("{now:>10}  !!  {line}"));
        }
    }

    /// An input about to be handled (alone, or as one of a `handle_all`).
    pub(super) fn input(&mut self, now: Instant, input: &Input) {
        self.announced += 1;
        self.events += 1;
        self.hash.input(now, input);
        if self.keep_trace {
            self.lines.push(input_line(now, input));
        }
        self.inputs.push((now, input.clone()));
    }

    /// A `handle` or `handle_all` is done. One with no input was a tick (a wake-up with
    /// nothing reported): recorded as `Tick`, which is what the machine took it for.
    pub(super) fn handled(&mut self, now: Instant) {
        if self.announced == 0 {
            self.input(now, &Input::Tick);
        }
        self.announced = 0;
    }

    pub(super) fn action(&mut self, now: Instant, action: &Action) {
        self.hash.action(action);
        if self.keep_trace {
            self.lines.push(action_line(now, action));
        }
    }
}
