//! Canaries: bugs planted on purpose, each of which a run must catch. The world canary
//! (`--canary`, or `--canary drop-kill`) is a fault of the model OS: the machine's KILLs
//! never arrive. The machine's planted bugs (`--canary NAME`, built with `--features
//! planted`) are one-rule mistakes in drover-machine (`drover_machine::Plant`), each
//! expected to be caught by the decision oracle that names the rule it breaks: a plant
//! caught only by something else (another oracle, an invariant, liveness) shows that its
//! own oracle is blind to it.

use drover_machine::Supervisor;

use crate::world::Oracle;

/// The world canary's name, for `--canary NAME`.
pub const DROP_KILL: &str = "drop-kill";

/// A machine planted bug (`drover_machine::Plant`).
#[cfg(feature = "planted")]
pub use drover_machine::Plant;

/// Without the `planted` feature there is no planted bug to name: the type is empty, so a
/// `Some(plant)` cannot be built and the simulator runs the shipped machine.
#[cfg(not(feature = "planted"))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plant {}

/// What `--canary` plants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Canary {
    /// The world canary: KILL is dropped by the model OS.
    DropKill,
    /// A planted bug of the machine.
    Plant(Plant),
}

impl Canary {
    /// Parses `--canary NAME`: `drop-kill`, or a plant's name.
    pub fn from_name(name: &str) -> Result<Canary, String> {
        if name == DROP_KILL {
            return Ok(Canary::DropKill);
        }
        plant_from_name(name).map(Canary::Plant)
    }

    /// The name as `--canary NAME` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Canary::DropKill => DROP_KILL,
            #[cfg(feature = "planted")]
            Canary::Plant(p) => p.name(),
            #[cfg(not(feature = "planted"))]
            Canary::Plant(p) => match p {},
        }
    }
}

#[cfg(feature = "planted")]
fn plant_from_name(name: &str) -> Result<Plant, String> {
    Plant::from_name(name).ok_or_else(|| {
        let names: Vec<&str> = std::iter::once(DROP_KILL)
            .chain(Plant::ALL.iter().map(|p| p.name()))
            .collect();
        format!(
            "`{name}` is no canary; the canaries are: {}",
            names.join(", ")
        )
    })
}

#[cfg(not(feature = "planted"))]
fn plant_from_name(name: &str) -> Result<Plant, String> {
    Err(format!(
        "`{name}` is not `{DROP_KILL}`, and the machine's planted bugs are not in this \
         binary: build it with `cargo build --release -p drover-sim --features planted`"
    ))
}

/// Whether this binary has the machine's planted bugs.
pub const PLANTED: bool = cfg!(feature = "planted");

/// Every plant this binary has, in the order a batch runs them.
#[cfg(feature = "planted")]
pub fn plants() -> &'static [Plant] {
    &Plant::ALL
}

#[cfg(not(feature = "planted"))]
pub fn plants() -> &'static [Plant] {
    &[]
}

/// Switches `plant` on in a machine about to run.
#[cfg(feature = "planted")]
pub fn plant(sup: &mut Supervisor, plant: Plant) {
    sup.plant(plant);
}

#[cfg(not(feature = "planted"))]
pub fn plant(_: &mut Supervisor, plant: Plant) {
    match plant {}
}

/// The oracle that must catch `plant`: the one naming the rule it breaks.
#[cfg(feature = "planted")]
pub fn expected(plant: Plant) -> Oracle {
    match plant {
        Plant::BootThird => Oracle::BootTimeout,
        Plant::WatchdogTriple | Plant::AbsenceIgnored => Oracle::HeartbeatTimeout,
        Plant::RequestHalf => Oracle::RequestTimeout,
        Plant::MaxRequestsEarly => Oracle::MaxRequests,
        Plant::IdleHalf | Plant::IdleDouble => Oracle::IdleTimeout,
        Plant::BackoffZero | Plant::BackoffNoDouble | Plant::KilledCounts => Oracle::RestartBackoff,
        Plant::CrashLoopEarly => Oracle::CrashLoop,
        Plant::SurgePlusOne | Plant::UnavailableIgnored | Plant::RestartNowRolling => {
            Oracle::RollingBounds
        }
        Plant::ScaleDownBusy | Plant::ScaleDownTwo => Oracle::ScaleDown,
        Plant::LadderSkipFirst | Plant::ImmediateGraceful => Oracle::StopLadder,
        Plant::RampTriple => Oracle::SpawnRamp,
        Plant::UpgradeTimeoutDouble | Plant::HandoverEarly | Plant::ResumeForgotten => {
            Oracle::Upgrade
        }
        Plant::BacklogAtTick | Plant::SpareAtMax => Oracle::Demand,
        Plant::RequestsTotal => Oracle::Counters,
        Plant::StartFailsAfterReady => Oracle::StartFailure,
        Plant::ScaleDownIgnoresSlots | Plant::AddressCounts => Oracle::SlotAddresses,
    }
}

#[cfg(not(feature = "planted"))]
pub fn expected(plant: Plant) -> Oracle {
    match plant {}
}

#[cfg(all(test, feature = "planted"))]
mod tests {
    use super::*;

    #[test]
    fn every_plant_is_named_once_and_parses_back() {
        for p in Plant::ALL {
            assert_eq!(Canary::from_name(p.name()), Ok(Canary::Plant(p)));
            assert_ne!(p.name(), DROP_KILL);
        }
        assert_eq!(Canary::from_name(DROP_KILL), Ok(Canary::DropKill));
        let e = Canary::from_name("boot-half").unwrap_err();
        assert!(e.contains("boot-third") && e.contains(DROP_KILL), "{e}");
    }

    #[test]
    fn every_oracle_is_expected_to_catch_some_plant() {
        for o in Oracle::ALL {
            assert!(
                Plant::ALL.into_iter().any(|p| expected(p) == o),
                "no plant tests oracle {}",
                o.name()
            );
        }
    }
}
