//! Counters: how often each decision was carried out over this supervisor's life, for
//! metrics (spawns, exits by reason, retirements, signals, restarts, upgrades…). Counting is
//! observation, not decision, but only the machine sees every decision with its reason, so
//! the counts live here. Actions and events are counted as `poll_action` hands them out
//! (what the driver performs: a spawn dropped from the queue before its fork is no spawn),
//! the facts of inputs where they are applied (a spawn failure, an exit, requests served).
//! Nothing here may change a decision; the counters only grow (saturating) and are indexed
//! by the closed enums' declaration order, never by a hash.

use crate::io::*;
use crate::output::*;

const STOPS: usize = StopReason::ALL.len();
const CAUSES: usize = DeathCause::ALL.len();
const SIGNALS: usize = Signal::ALL.len();
const ROLLBACKS: usize = RollbackReason::ALL.len();

/// Why a worker's process ended, as the exit counters tell exits apart: asked to stop
/// (the stop's reason), or not (the cause its death was judged to have).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitReason {
    /// Drover had asked it to stop for this reason (a kill for a timeout included).
    Asked(StopReason),
    /// It ended unasked: a crash, a kill from outside, its own exit 0, a death while
    /// booting.
    Unasked(DeathCause),
}

impl ExitReason {
    /// The label: the stop reason's name (`max-requests`, `heartbeat-timeout` …) or the
    /// death cause's (`crash`, `killed`, `retired`, `boot`); the two sets share no name.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Asked(r) => r.name(),
            ExitReason::Unasked(c) => c.name(),
        }
    }
}

/// Totals since the supervisor was created. Read with [`Supervisor::counters`]
/// (crate::Supervisor::counters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    spawns: u64,
    spawn_failures: u64,
    exits_asked: [u64; STOPS],
    exits_unasked: [u64; CAUSES],
    retirements: [u64; STOPS],
    signals: [[u64; SIGNALS]; STOPS],
    restarts: [u64; CAUSES],
    gave_up: u64,
    crash_loops: u64,
    came_back: u64,
    upgrades_started: u64,
    upgrades_handed_over: u64,
    rollbacks: [u64; ROLLBACKS],
    requests: u64,
}

fn bump(n: &mut u64) {
    *n = n.saturating_add(1);
}

impl Counters {
    /// Counts one action as it is handed to the driver.
    pub(super) fn count_action(&mut self, action: &Action) {
        match action {
            Action::Spawn { .. } => bump(&mut self.spawns),
            Action::Signal { signal, reason, .. } => {
                bump(&mut self.signals[*reason as usize][*signal as usize])
            }
            Action::StartSuccessor => bump(&mut self.upgrades_started),
            Action::Event(event) => match event {
                Event::Retiring { reason, .. } => bump(&mut self.retirements[*reason as usize]),
                Event::RestartScheduled { cause, .. } => bump(&mut self.restarts[*cause as usize]),
                Event::GaveUp { .. } => bump(&mut self.gave_up),
                Event::CrashLooping { .. } => bump(&mut self.crash_loops),
                Event::CameBack { .. } => bump(&mut self.came_back),
                Event::UpgradeHandover => bump(&mut self.upgrades_handed_over),
                Event::UpgradeRolledBack { reason } => bump(&mut self.rollbacks[*reason as usize]),
                _ => {}
            },
            Action::KillSuccessor { .. } | Action::ReleaseSlot { .. } | Action::Exit { .. } => {}
        }
    }

    pub(super) fn count_exit(&mut self, reason: ExitReason) {
        match reason {
            ExitReason::Asked(r) => bump(&mut self.exits_asked[r as usize]),
            ExitReason::Unasked(c) => bump(&mut self.exits_unasked[c as usize]),
        }
    }

    pub(super) fn count_spawn_failure(&mut self) {
        bump(&mut self.spawn_failures);
    }

    pub(super) fn count_requests(&mut self, served: u64) {
        self.requests = self.requests.saturating_add(served);
    }

    /// Forks handed to the driver (each answered by a process or a spawn failure).
    pub fn spawns(&self) -> u64 {
        self.spawns
    }

    /// Forks or execs that failed (`SpawnFailed`).
    pub fn spawn_failures(&self) -> u64 {
        self.spawn_failures
    }

    /// Worker exits by reason, every reason an exit can have (zeros included), asked ones
    /// first.
    pub fn exits(&self) -> impl Iterator<Item = (ExitReason, u64)> + '_ {
        let asked = StopReason::ALL
            .into_iter()
            .map(|r| (ExitReason::Asked(r), self.exits_asked[r as usize]));
        // A hung worker is killed by drover: its exit is an asked one, never unasked.
        let unasked = DeathCause::ALL
            .into_iter()
            .filter(|&c| c != DeathCause::Hung)
            .map(|c| (ExitReason::Unasked(c), self.exits_unasked[c as usize]));
        asked.chain(unasked)
    }

    /// Exits of every reason.
    pub fn exits_total(&self) -> u64 {
        self.exits().map(|(_, n)| n).fold(0, u64::saturating_add)
    }

    /// Workers asked to stop (`Retiring`), by reason, every reason.
    pub fn retirements(&self) -> impl Iterator<Item = (StopReason, u64)> + '_ {
        StopReason::ALL
            .into_iter()
            .map(|r| (r, self.retirements[r as usize]))
    }

    /// Signals sent to workers, by signal and reason: only the pairs sent at least once.
    pub fn signals(&self) -> impl Iterator<Item = (Signal, StopReason, u64)> + '_ {
        StopReason::ALL.into_iter().flat_map(move |r| {
            Signal::ALL
                .into_iter()
                .map(move |s| (s, r, self.signals[r as usize][s as usize]))
                .filter(|&(_, _, n)| n > 0)
        })
    }

    /// Places refilled after a death (`RestartScheduled`), by the death's cause.
    pub fn restarts(&self) -> impl Iterator<Item = (DeathCause, u64)> + '_ {
        DeathCause::ALL
            .into_iter()
            .map(|c| (c, self.restarts[c as usize]))
    }

    /// Places given up on after an unrecoverable exit code.
    pub fn gave_up(&self) -> u64 {
        self.gave_up
    }

    /// Times the pool entered a crash loop.
    pub fn crash_loops(&self) -> u64 {
        self.crash_loops
    }

    /// Times the supervisor came back from an absence (SIGSTOP, a frozen VM…).
    pub fn came_back(&self) -> u64 {
        self.came_back
    }

    /// Live upgrades begun (`StartSuccessor`).
    pub fn upgrades_started(&self) -> u64 {
        self.upgrades_started
    }

    /// Live upgrades that ended in a handover to the successor.
    pub fn upgrades_handed_over(&self) -> u64 {
        self.upgrades_handed_over
    }

    /// Live upgrades rolled back, by reason, every reason.
    pub fn rollbacks(&self) -> impl Iterator<Item = (RollbackReason, u64)> + '_ {
        RollbackReason::ALL
            .into_iter()
            .map(|r| (r, self.rollbacks[r as usize]))
    }

    /// Requests served, as the workers reported them (the growth of each worker's own
    /// total; workers that report no load add nothing).
    pub fn requests(&self) -> u64 {
        self.requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_all_lists_follow_declaration_order() {
        for (i, r) in StopReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
        for (i, c) in DeathCause::ALL.into_iter().enumerate() {
            assert_eq!(c as usize, i);
        }
        for (i, s) in Signal::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i);
        }
        for (i, r) in RollbackReason::ALL.into_iter().enumerate() {
            assert_eq!(r as usize, i);
        }
    }

    #[test]
    fn exit_reason_names_never_collide() {
        let c = Counters::default();
        let mut names: Vec<&str> = c.exits().map(|(r, _)| r.name()).collect();
        let all = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all);
    }
}
