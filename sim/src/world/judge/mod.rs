//! The judge: decision oracles. Where `oracles.rs` checks that the machine never does
//! something impossible (a signal to a reaped pid, a process that outlives its ladder),
//! the judge checks that each decision is the one the rules and the config prescribe,
//! against the world's own records (`procs::Proc`: when each process was forked, told it
//! ready, beat, served and idled, as the world saw it happen) and never against the
//! machine's bookkeeping. Each rule is one `Oracle`; a complaint names it, says what was
//! decided and what the rule required, and appears in the trace at the step it happened.
//!
//! Each file holds the oracles of one family of rules and is reached from the model OS's
//! hooks through the four entry points here: an event, an action about to be performed,
//! an input handled, and the end of every world step (for "it should have happened by
//! now"). A file must not change the world or the machine: it only looks and complains.

mod pool;
mod restarts;
mod stops;
mod timeouts;
mod upgrade;

use drover_machine::{Action, Event, Input, Supervisor};

use super::os::SimOs;
use super::Outcome;

/// What the pool, stop and upgrade oracles remember between hooks (`pool.rs`, `stops.rs`,
/// `upgrade.rs`): each file keeps its own part.
#[derive(Default)]
pub(super) struct Books {
    /// How many of the recorded inputs (`Recorder::inputs`) these oracles have read.
    inputs_read: usize,
    pool: pool::PoolBooks,
    stops: stops::StopBooks,
    upgrade: upgrade::UpgradeBooks,
}

/// One decision rule the judge holds the machine to. The name is what a complaint and
/// `--canary NAME`'s expectation use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Oracle {
    /// A boot-timeout kill comes at the fork's answer + `boot_timeout`, within the slack.
    BootTimeout,
    /// A heartbeat kill comes at the last beat + the timeout the worker was started with.
    HeartbeatTimeout,
    /// A request-timeout kill comes at the oldest request's start + `request_timeout`.
    RequestTimeout,
    /// `max_requests` retires at the limit, not before and not never.
    MaxRequests,
    /// Idle retirement never before `idle_timeout` of idleness.
    IdleTimeout,
    /// A respawn waits the backoff the restart policy prescribes for that death.
    RestartBackoff,
    /// A crash loop is declared exactly when the intensity rule says.
    CrashLoop,
    /// A rolling restart keeps Ready ≥ target − max_unavailable and places ≤ target +
    /// max_surge.
    RollingBounds,
    /// Scale-down: one per tick, empty or booting before idle, never busy while idle exist.
    ScaleDown,
    /// A stop enters its ladder at the right stage and each signal comes at its stage time.
    StopLadder,
    /// The spawn ramp never exceeds its doubling bound or `max`.
    SpawnRamp,
    /// An upgrade rolls back by `upgrade_timeout` and never hands over before Ready.
    Upgrade,
}

impl Oracle {
    pub const ALL: [Oracle; 12] = [
        Oracle::BootTimeout,
        Oracle::HeartbeatTimeout,
        Oracle::RequestTimeout,
        Oracle::MaxRequests,
        Oracle::IdleTimeout,
        Oracle::RestartBackoff,
        Oracle::CrashLoop,
        Oracle::RollingBounds,
        Oracle::ScaleDown,
        Oracle::StopLadder,
        Oracle::SpawnRamp,
        Oracle::Upgrade,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Oracle::BootTimeout => "boot-timeout",
            Oracle::HeartbeatTimeout => "heartbeat-timeout",
            Oracle::RequestTimeout => "request-timeout",
            Oracle::MaxRequests => "max-requests",
            Oracle::IdleTimeout => "idle-timeout",
            Oracle::RestartBackoff => "restart-backoff",
            Oracle::CrashLoop => "crash-loop",
            Oracle::RollingBounds => "rolling-bounds",
            Oracle::ScaleDown => "scale-down",
            Oracle::StopLadder => "stop-ladder",
            Oracle::SpawnRamp => "spawn-ramp",
            Oracle::Upgrade => "upgrade",
        }
    }

    pub fn from_name(name: &str) -> Option<Oracle> {
        Oracle::ALL.into_iter().find(|o| o.name() == name)
    }
}

/// What the judge remembers between hooks: each family's own records, derived from what
/// the world told the supervisor and what the supervisor decided.
#[derive(Debug, Default)]
pub(super) struct Judge {
    watch: timeouts::Watch,
    restarts: restarts::Restarts,
}

impl SimOs {
    /// The machine decided against `oracle`'s rule. The first complaint fails the run; it
    /// is a trace line at the step it happened.
    pub(super) fn complain(&mut self, oracle: Oracle, what: String) {
        let line = format!("oracle {}: {what}", oracle.name());
        self.record.note(self.now, &line);
        if self.checks.failure.is_none() {
            self.checks.failure = Some(Outcome::Judged {
                oracle,
                what: format!("at {}: {line}", self.now),
            });
        }
    }

    /// An event of the machine.
    pub(super) fn judge_event(&mut self, sup: &Supervisor, event: &Event) {
        self.judge_timeout_event(sup, event);
        self.judge_restart_event(sup, event);
        self.judge_pool_event(sup, event);
        self.judge_stop_event(sup, event);
        self.judge_upgrade_event(event);
    }

    /// An input the shell hands the supervisor, before it is handled: what the supervisor
    /// is told is the evidence its decisions are judged by.
    pub(super) fn judge_input(&mut self, sup: &Supervisor, input: &Input) {
        // The restart records read the worker's record before the exit drops it.
        self.judge_restart_input(sup, input);
        self.judge_timeout_input(sup, input);
    }

    /// An action the driver is about to perform.
    pub(super) fn judge_action(&mut self, sup: &Supervisor, action: &Action) {
        self.judge_restart_action(sup, action);
        // Pool before stops: the pool's counts exclude the process being signalled, which
        // the stop books then start to track.
        self.judge_pool_action(sup, action);
        self.judge_stop_action(sup, action);
        self.judge_upgrade_action(sup, action);
    }

    /// After every `handle`/`handle_all` and its timers.
    pub(super) fn judge_handled(&mut self, sup: &Supervisor) {
        self.judge_timeout_handled(sup);
        self.judge_restart_handled(sup);
        self.judge_pool_handled(sup);
        // The inputs of this handle, as the world handed them in (the record keeps them all
        // for replay): commands, load reports, the successor's word.
        let start = self.books.inputs_read;
        self.books.inputs_read = self.record.inputs.len();
        for i in start..self.books.inputs_read {
            let (at, input) = &self.record.inputs[i];
            pool::note_input(&mut self.books.pool, input);
            stops::note_input(&mut self.books.stops, *at, input);
            upgrade::note_input(&mut self.books.upgrade, *at, input);
        }
        let stops = &mut self.books.stops;
        stops.last_handled = Some(self.now);
        if !std::mem::take(&mut stops.nested) {
            stops.drain_from = Some(self.now);
        }
        self.books.upgrade.last_handled = Some(self.now);
    }

    /// After every world step: what should have happened by now.
    pub(super) fn judge_step(&mut self, sup: &Supervisor) {
        self.judge_timeout_step(sup);
        self.judge_restart_step(sup);
        self.judge_pool_step(sup);
        self.judge_stop_step();
        self.judge_upgrade_step();
    }
}
