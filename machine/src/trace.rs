//! The fixed-column trace format: one line per input, action or event, the same in the
//! simulator, in snapshot tests and in drover's debug log.
//!
//! ```text
//!     12.500s  in  exited         pid=101 status=signal:9
//!     12.500s  ev  exited         w=0.1 status=signal:9 uptime=12.500s expected=no
//!     12.500s  do  spawn          w=0.2 gen=1
//! ```
//! Columns: time (right-aligned, 10 wide), direction (`in` input, `do` action for the
//! shell, `ev` event to log), kind (14 wide), then `key=value` fields.

use core::fmt;

use crate::io::*;
use crate::output::*;
use crate::time::{Instant, Secs};

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot, self.incarnation)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "code:{c}"),
            ExitStatus::Signaled(s) => write!(f, "signal:{s}"),
        }
    }
}

impl fmt::Display for SpawnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpawnError::Resources => f.write_str("resources"),
            SpawnError::Exec => f.write_str("exec"),
            SpawnError::Other(e) => write!(f, "errno:{e}"),
            SpawnError::Address(e) => write!(f, "address-errno:{e}"),
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Stopping => f.write_str("stopping"),
            Refusal::UpgradeInFlight => f.write_str("upgrade-in-flight"),
            Refusal::AwaitingHandover => f.write_str("awaiting-handover"),
            Refusal::OutOfBounds { min, max } => write!(f, "out-of-bounds:{min}..{max}"),
            Refusal::Invalid(e) => write!(f, "invalid:{}", e.field),
        }
    }
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RollbackReason::SuccessorFailedToStart => "successor-failed-to-start",
            RollbackReason::SuccessorExited => "successor-exited",
            RollbackReason::Timeout => "timeout",
            RollbackReason::Stopped => "stopped",
        })
    }
}

impl fmt::Display for Victim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Victim::Place => "place",
            Victim::Booting => "booting",
            Victim::Idle => "idle",
            Victim::Busy => "busy",
        })
    }
}

impl fmt::Display for RampReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RampReason::Grew => "grew",
            RampReason::Calm => "calm",
            RampReason::Full => "full",
            RampReason::Idle => "idle",
            RampReason::ForkFailed => "fork-failed",
            RampReason::Reload => "reload",
        })
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

impl fmt::Display for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Input::Tick => write!(f, "{:<14}", "tick"),
            Input::Spawned { worker, pid } => write!(f, "{:<14} w={worker} pid={pid}", "spawned"),
            Input::SpawnFailed { worker, error } => {
                write!(f, "{:<14} w={worker} error={error}", "spawn-failed")
            }
            Input::Ready { worker } => write!(f, "{:<14} w={worker}", "ready"),
            Input::Heartbeat { worker } => write!(f, "{:<14} w={worker}", "heartbeat"),
            Input::HeartbeatAt { worker, at } => {
                write!(f, "{:<14} w={worker} at={at}", "heartbeat-at")
            }
            Input::Load {
                worker,
                busy,
                oldest_busy_since,
                requests,
            } => {
                write!(
                    f,
                    "{:<14} w={worker} busy={busy} requests={requests}",
                    "load"
                )?;
                match oldest_busy_since {
                    Some(t) => write!(f, " since={t}"),
                    None => Ok(()),
                }
            }
            Input::Backlog { listener, queued } => {
                write!(f, "{:<14} listener={listener} queued={queued}", "backlog")
            }
            Input::MainExited { pid, status } => {
                write!(f, "{:<14} pid={pid} status={status}", "main-exited")
            }
            Input::Exited { pid, status } => {
                write!(f, "{:<14} pid={pid} status={status}", "exited")
            }
            Input::Command(Command::ScaleTo(n)) => write!(f, "{:<14} scale={n}", "command"),
            Input::Command(c) => write!(f, "{:<14} {}", "command", c.name()),
            Input::SuccessorStarted { pid } => write!(f, "{:<14} pid={pid}", "successor-up"),
            Input::SuccessorFailed { error } => {
                write!(f, "{:<14} error={error}", "successor-fail")
            }
            Input::SuccessorReady => write!(f, "{:<14}", "successor-rdy"),
            Input::Takeover { predecessor_gone } => write!(
                f,
                "{:<14} predecessor-gone={}",
                "takeover",
                yes_no(*predecessor_gone)
            ),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Retiring { worker, reason } => {
                write!(f, "{:<14} w={worker} reason={reason}", "retiring")
            }
            Event::Exited {
                worker,
                status,
                uptime,
                expected,
            } => write!(
                f,
                "{:<14} w={worker} status={status} uptime={} expected={}",
                "exited",
                Secs(*uptime),
                yes_no(*expected)
            ),
            Event::CameBack { late } => write!(f, "{:<14} late={}", "came-back", Secs(*late)),
            Event::RestartScheduled {
                slot,
                delay,
                young_deaths,
                cause,
            } => write!(
                f,
                "{:<14} slot={slot} delay={} young-deaths={young_deaths} cause={}",
                "backoff",
                Secs(*delay),
                cause.name()
            ),
            Event::GaveUp { worker, code } => write!(f, "{:<14} w={worker} code={code}", "gave-up"),
            Event::CrashLooping { deaths, window } => write!(
                f,
                "{:<14} deaths={deaths} window={}",
                "crash-looping",
                Secs(*window)
            ),
            Event::StartFailed { slot } => write!(f, "{:<14} slot={slot}", "start-failed"),
            Event::CrashLoopEnded => write!(f, "{:<14}", "crash-loop-end"),
            Event::Scaled { from, to } => write!(f, "{:<14} from={from} to={to}", "scaled"),
            Event::Ignored(i) => {
                write!(f, "{:<14} ", "ignored")?;
                match i {
                    Ignored::UnknownPid(pid) => write!(f, "unknown-pid pid={pid}"),
                    Ignored::StaleMessage(w) => write!(f, "stale-message w={w}"),
                    Ignored::DuplicateReady(w) => write!(f, "duplicate-ready w={w}"),
                    Ignored::BusyClamped { worker, busy } => {
                        write!(f, "busy-clamped w={worker} busy={busy}")
                    }
                    Ignored::UnexpectedSpawnResult(w) => write!(f, "unexpected-spawn w={w}"),
                    Ignored::NoUpgrade => write!(f, "no-upgrade"),
                }
            }
            Event::Refused { command, reason } => {
                write!(f, "{:<14} command={command} reason={reason}", "refused")
            }
            Event::UpgradeHandover => write!(f, "{:<14}", "handover"),
            Event::PoolReady { ready } => write!(f, "{:<14} ready={ready}", "pool-ready"),
            Event::AskHandover => write!(f, "{:<14}", "ask-handover"),
            Event::TookOver { predecessor_gone } => write!(
                f,
                "{:<14} predecessor-gone={}",
                "took-over",
                yes_no(*predecessor_gone)
            ),
            Event::UpgradeRolledBack { reason } => {
                write!(f, "{:<14} reason={reason}", "rollback")
            }
            Event::Reloaded {
                generation,
                restart,
            } => write!(
                f,
                "{:<14} gen={} rolling-restart={}",
                "reloaded",
                generation.0,
                yes_no(*restart)
            ),
            Event::Stopping { immediate } => {
                write!(f, "{:<14} immediate={}", "stopping", yes_no(*immediate))
            }
            Event::RolloutHeld {
                ready,
                floor,
                surge,
            } => write!(
                f,
                "{:<14} ready={ready} floor={floor} surge={surge}",
                "rollout-held"
            ),
            Event::ScaleDownChose { slot, victim } => {
                write!(f, "{:<14} slot={slot} victim={victim}", "scale-down")
            }
            Event::AddressUnavailable {
                slot,
                errno,
                retry_in,
            } => write!(
                f,
                "{:<14} slot={slot} errno={errno} retry-in={}",
                "address-failed",
                Secs(*retry_in)
            ),
            Event::SpawnRamp { rate, reason } => {
                write!(f, "{:<14} rate={rate} reason={reason}", "spawn-ramp")
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Spawn { worker, generation } => {
                write!(f, "{:<14} w={worker} gen={}", "spawn", generation.0)
            }
            Action::Signal {
                worker,
                pid,
                signal,
                reason,
            } => write!(
                f,
                "{:<14} w={worker} pid={pid} sig={signal} reason={reason}",
                "signal"
            ),
            Action::StartSuccessor => write!(f, "{:<14}", "start-successor"),
            Action::KillSuccessor { pid, reason } => {
                write!(f, "{:<14} pid={pid} reason={reason}", "kill-successor")
            }
            Action::ReleaseSlot { slot } => write!(f, "{:<14} slot={slot}", "release-slot"),
            Action::Exit { code } => write!(f, "{:<14} code={code}", "exit"),
            Action::Event(e) => e.fmt(f),
        }
    }
}

/// One trace line for an input.
pub fn input_line(now: Instant, input: &Input) -> String {
    format!("{now:>10}  in  {input}").trim_end().to_string()
}

/// One trace line for an action or event.
pub fn action_line(now: Instant, action: &Action) -> String {
    let dir = if matches!(action, Action::Event(_)) {
        "ev"
    } else {
        "do"
    };
    format!("{now:>10}  {dir}  {action}").trim_end().to_string()
}
