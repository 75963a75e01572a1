//! "Sometimes" marks: interesting situations a batch of seeds must reach at least once, so a
//! green batch proves the faults really exercised the machine (Antithesis `sometimes`,
//! TigerBeetle coverage marks).

use core::fmt;

macro_rules! marks {
    ($($name:ident => $label:literal,)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Mark { $($name,)* }

        impl Mark {
            pub const ALL: &'static [Mark] = &[$(Mark::$name,)*];

            pub fn label(self) -> &'static str {
                match self { $(Mark::$name => $label,)* }
            }
        }
    };
}

marks! {
    LadderKill => "ladder-reached-kill",
    HeartbeatTimeout => "heartbeat-timeout",
    BootTimeout => "boot-timeout",
    RequestTimeout => "request-timeout",
    MaxRequests => "max-requests-retired",
    IdleRetired => "idle-retired",
    ScaleDown => "scaled-down",
    RampDoubled => "spawn-ramp-doubled",
    CrashLooping => "crash-looping",
    GaveUp => "unrecoverable-gave-up",
    ForkFailed => "fork-failed",
    SlowFork => "slow-fork",
    PidReused => "pid-reused",
    CoalescedReap => "sigchld-coalesced",
    RollingRestart => "rolling-restart",
    ReloadDuringReload => "reload-during-reload",
    UpgradeHandover => "upgrade-handover",
    UpgradeRolledBack => "upgrade-rolled-back",
    CommandRefused => "command-refused",
    StopEscalated => "stop-escalated",
    LateWakeup => "late-wakeup",
    ClockJump => "clock-jump",
    ConnectionRefused => "connection-refused",
    ConnectionBroken => "connection-broken",
    SampledHeartbeat => "sampled-heartbeat",
    TickSlept => "maintenance-tick-slept",
    HeldMessages => "messages-held",
    MainExited => "main-exited",
    HandoverAsked => "handover-asked",
    TookOver => "took-over",
    PredecessorVanished => "predecessor-vanished",
    RefusedAwaiting => "upgrade-refused-awaiting-handover",
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
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, mark) in Mark::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{}={}", mark.label(), self.count(*mark))?;
        }
        Ok(())
    }
}
