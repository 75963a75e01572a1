//! Planted bugs: each a plausible one-rule mistake in one decision rule, switched on at run
//! time by `Supervisor::plant`, so that the simulator can show that the oracle naming the
//! rule catches it (`drover-sim --canary NAME`). Compiled only with the `planted` feature;
//! without it `planted!` keeps only each rule's shipped expression, so the machine is the
//! one that ships.

/// One planted bug. Its name is what `drover-sim --canary NAME` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Plant {
    /// The boot timeout is a third of the configured one.
    BootThird,
    /// The heartbeat deadline is three times the timeout.
    WatchdogTriple,
    /// A supervisor that comes back from an absence judges heartbeats from before it.
    AbsenceIgnored,
    /// The request timeout is half the configured one.
    RequestHalf,
    /// `max_requests` retires one request early.
    MaxRequestsEarly,
    /// Idle retirement comes after half of `idle_timeout`.
    IdleHalf,
    /// Idle retirement comes after twice `idle_timeout`.
    IdleDouble,
    /// The restart backoff is always zero.
    BackoffZero,
    /// The restart backoff never doubles: always `backoff_min`.
    BackoffNoDouble,
    /// A worker killed from outside after Ready counts as a crash (backoff, intensity).
    KilledCounts,
    /// A crash loop is declared at `intensity_deaths` deaths in the window, not more.
    CrashLoopEarly,
    /// A rolling restart places up to `max_surge + 1` above the target.
    SurgePlusOne,
    /// A rolling restart retires Ready workers regardless of `max_unavailable`.
    UnavailableIgnored,
    /// Scale-down retires a busy worker while an idle one exists.
    ScaleDownBusy,
    /// Scale-down retires two workers per tick.
    ScaleDownTwo,
    /// A graceful stop enters its ladder at the second stage.
    LadderSkipFirst,
    /// An immediate stop enters its ladder at the first (graceful) stage.
    ImmediateGraceful,
    /// The spawn ramp triples instead of doubling.
    RampTriple,
    /// An upgrade is rolled back at twice `upgrade_timeout`.
    UpgradeTimeoutDouble,
    /// The pool hands over when the successor started, not when it is Ready.
    HandoverEarly,
    /// An ondemand pool answers a backlog only at its next maintenance tick.
    BacklogAtTick,
    /// A dynamic pool shrinks with `max_spare` threads spare, not only above it.
    SpareAtMax,
    /// A successor that dies after the handover is forgotten: the old pool drains on.
    ResumeForgotten,
    /// An immediate restart retires only the first place; the rest roll one at a time.
    RestartNowRolling,
    /// Requests served are counted as each load report's total, not its growth.
    RequestsTotal,
    /// `fail_start` still fails the start after the pool was ready once.
    StartFailsAfterReady,
    /// Where each slot is an address, a scale-down takes the usual victim (an empty place,
    /// a booting worker, the longest idle) instead of the highest slot.
    ScaleDownIgnoresSlots,
    /// A slot whose address could not be bound counts as a failed start of the program
    /// (backoff by young deaths, the crash-loop window).
    AddressCounts,
}

impl Plant {
    /// Every plant, in the order a batch runs them.
    pub const ALL: [Plant; 28] = [
        Plant::BootThird,
        Plant::WatchdogTriple,
        Plant::AbsenceIgnored,
        Plant::RequestHalf,
        Plant::MaxRequestsEarly,
        Plant::IdleHalf,
        Plant::IdleDouble,
        Plant::BackoffZero,
        Plant::BackoffNoDouble,
        Plant::KilledCounts,
        Plant::CrashLoopEarly,
        Plant::SurgePlusOne,
        Plant::UnavailableIgnored,
        Plant::ScaleDownBusy,
        Plant::ScaleDownTwo,
        Plant::LadderSkipFirst,
        Plant::ImmediateGraceful,
        Plant::RampTriple,
        Plant::UpgradeTimeoutDouble,
        Plant::HandoverEarly,
        Plant::BacklogAtTick,
        Plant::SpareAtMax,
        Plant::ResumeForgotten,
        Plant::RestartNowRolling,
        Plant::RequestsTotal,
        Plant::StartFailsAfterReady,
        Plant::ScaleDownIgnoresSlots,
        Plant::AddressCounts,
    ];

    /// The name `--canary NAME` takes.
    pub fn name(self) -> &'static str {
        match self {
            Plant::BootThird => "boot-third",
            Plant::WatchdogTriple => "watchdog-triple",
            Plant::AbsenceIgnored => "absence-ignored",
            Plant::RequestHalf => "request-half",
            Plant::MaxRequestsEarly => "max-requests-early",
            Plant::IdleHalf => "idle-half",
            Plant::IdleDouble => "idle-double",
            Plant::BackoffZero => "backoff-zero",
            Plant::BackoffNoDouble => "backoff-no-double",
            Plant::KilledCounts => "killed-counts",
            Plant::CrashLoopEarly => "crash-loop-early",
            Plant::SurgePlusOne => "surge-plus-one",
            Plant::UnavailableIgnored => "unavailable-ignored",
            Plant::ScaleDownBusy => "scale-down-busy",
            Plant::ScaleDownTwo => "scale-down-two",
            Plant::LadderSkipFirst => "ladder-skip-first",
            Plant::ImmediateGraceful => "immediate-graceful",
            Plant::RampTriple => "ramp-triple",
            Plant::UpgradeTimeoutDouble => "upgrade-timeout-double",
            Plant::HandoverEarly => "handover-early",
            Plant::BacklogAtTick => "backlog-at-tick",
            Plant::SpareAtMax => "spare-at-max",
            Plant::ResumeForgotten => "resume-forgotten",
            Plant::RestartNowRolling => "restart-now-rolling",
            Plant::RequestsTotal => "requests-total",
            Plant::StartFailsAfterReady => "start-fails-after-ready",
            Plant::ScaleDownIgnoresSlots => "scale-down-ignores-slots",
            Plant::AddressCounts => "address-counts",
        }
    }

    /// The plant named `name`, if any.
    pub fn from_name(name: &str) -> Option<Plant> {
        Plant::ALL.into_iter().find(|p| p.name() == name)
    }
}
