//! "Sometimes" marks: interesting situations a batch of seeds must reach at least once, so a
//! green batch proves the run really exercised the machine (Antithesis `sometimes`,
//! TigerBeetle coverage marks). Two kinds, kept apart because they prove different things:
//! a fault mark says the world made a situation (a fork failed, a pid was reused), which
//! shows the swarm's reach but not that the machine answered it; a decision mark says the
//! machine made a decision (a boot timeout fired, a rolling restart was held), counted only
//! from what the machine itself emitted (its events, and for the ladder its KILL), so a
//! code path that stops deciding shows up as a gap.

use core::fmt;

/// Where a mark is counted from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The machine's own output: a decision it made.
    Decision,
    /// The world's doing: a fault it injected or a situation it made.
    Fault,
}

macro_rules! marks {
    (
        decisions { $($d:ident => $dl:literal,)* }
        faults { $($f:ident => $fl:literal,)* }
    ) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Mark { $($d,)* $($f,)* }

        impl Mark {
            pub const ALL: &'static [Mark] = &[$(Mark::$d,)* $(Mark::$f,)*];

            pub fn label(self) -> &'static str {
                match self { $(Mark::$d => $dl,)* $(Mark::$f => $fl,)* }
            }

            pub fn kind(self) -> Kind {
                match self { $(Mark::$d => Kind::Decision,)* $(Mark::$f => Kind::Fault,)* }
            }
        }
    };
}

marks! {
    decisions {
        BootTimeout => "boot-timeout",
        HeartbeatTimeout => "heartbeat-timeout",
        RequestTimeout => "request-timeout",
        MainExited => "main-exited",
        MaxRequests => "max-requests-retired",
        IdleRetired => "idle-retired",
        LadderKill => "ladder-reached-kill",
        BackoffDoubled => "backoff-doubled-twice",
        BackoffCapped => "backoff-capped",
        CrashLooping => "crash-looping",
        CrashLoopEnded => "crash-loop-ended",
        GaveUp => "unrecoverable-gave-up",
        StartFailed => "start-failed",
        RampDoubled => "spawn-ramp-doubled",
        RampResetByForkFailure => "spawn-ramp-reset-by-fork-failure",
        ScaleDownPlace => "scale-down-took-place",
        ScaleDownBooting => "scale-down-took-booting",
        ScaleDownIdleOverBusy => "scale-down-took-idle-over-busy",
        RollingRestart => "rolling-restart",
        RestartNow => "restart-now",
        RolloutHeld => "rolling-restart-held",
        RolloutHeldSurging => "rolling-restart-held-with-surge",
        UpgradeHandover => "upgrade-handover",
        RolledBackTimeout => "upgrade-rolled-back-timeout",
        RolledBackSuccessorExited => "upgrade-rolled-back-successor-exited",
        ResumedAfterHandover => "resumed-after-successor-died",
        QuickRestart => "killed-restarted-at-once",
        QuickRestartPaced => "quick-restart-paced",
        CameBack => "came-back",
        CommandRefused => "command-refused",
        StopImmediate => "stop-immediate",
        StopEscalated => "stop-escalated",
        HandoverAsked => "handover-asked",
        TookOver => "took-over",
        RefusedAwaiting => "upgrade-refused-awaiting-handover",
        SlotReleased => "slot-address-released",
        AddressRetried => "address-failure-retried",
    }
    faults {
        ForkFailed => "fork-failed",
        SlowFork => "slow-fork",
        PidReused => "pid-reused",
        CoalescedReap => "sigchld-coalesced",
        ReloadDuringReload => "reload-during-reload",
        SecondStop => "second-stop",
        LateWakeup => "late-wakeup",
        ClockJump => "clock-jump",
        ConnectionRefused => "connection-refused",
        ConnectionBroken => "connection-broken",
        SampledHeartbeat => "sampled-heartbeat",
        TickSlept => "maintenance-tick-slept",
        HeldMessages => "messages-held",
        PredecessorVanished => "predecessor-vanished",
        OutsideKill => "killed-from-outside",
        Paused => "supervisor-paused",
        AddressFailed => "address-failed",
    }
}

/// How often each mark was hit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    hits: Vec<u64>,
}

impl Coverage {
    pub fn new() -> Coverage {
        Coverage {
            hits: vec![0; Mark::ALL.len()],
        }
    }

    pub fn hit(&mut self, mark: Mark) {
        self.hits[mark as usize] += 1;
    }

    pub fn count(&self, mark: Mark) -> u64 {
        self.hits[mark as usize]
    }

    pub fn merge(&mut self, other: &Coverage) {
        for (a, b) in self.hits.iter_mut().zip(&other.hits) {
            *a += b;
        }
    }

    /// Marks never hit.
    pub fn missing(&self) -> Vec<Mark> {
        Mark::ALL
            .iter()
            .copied()
            .filter(|m| self.count(*m) == 0)
            .collect()
    }

    /// The marks of one kind, `label=count` separated by spaces.
    pub fn of(&self, kind: Kind) -> Group<'_> {
        Group {
            coverage: self,
            kind,
        }
    }
}

/// One kind's marks, for printing.
pub struct Group<'a> {
    coverage: &'a Coverage,
    kind: Kind,
}

impl fmt::Display for Group<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let marks = Mark::ALL.iter().filter(|m| m.kind() == self.kind);
        for (i, mark) in marks.enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", mark.label(), self.coverage.count(*mark))?;
        }
        Ok(())
    }
}

/// Two lines: `coverage:` with the world's faults and situations, `decisions:` with the
/// machine's decisions.
impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "coverage: {}", self.of(Kind::Fault))?;
        write!(f, "decisions: {}", self.of(Kind::Decision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_unique_and_each_kind_prints_on_its_own_line() {
        let mut labels: Vec<&str> = Mark::ALL.iter().map(|m| m.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Mark::ALL.len(), "a label names two marks");
        let mut c = Coverage::new();
        c.hit(Mark::BootTimeout);
        c.hit(Mark::ForkFailed);
        let text = c.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("coverage: ") && lines[0].contains("fork-failed=1"));
        assert!(!lines[0].contains("boot-timeout"), "{text}");
        assert!(lines[1].starts_with("decisions: ") && lines[1].contains("boot-timeout=1"));
    }
}
