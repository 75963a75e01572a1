//! What a run's outcome prints and exits with: the config line, the failure line, the
//! repro line, and a planted bug's verdict.

use crate::*;

pub(crate) fn describe(r: &RunResult) -> String {
    let c = &r.config;
    format!(
        "config: policy={} min={} max={} threads={} readiness={:?} boot={:?} heartbeat={:?} request={:?} ladder-kill-after={:?} surge={} unavailable={}",
        c.policy.name(),
        c.policy.min(),
        c.policy.max(),
        c.threads,
        c.readiness,
        c.boot_timeout,
        c.heartbeat_timeout,
        c.request_timeout,
        c.ladder.time_to_kill(0),
        c.max_surge,
        c.max_unavailable
    )
}

pub(crate) fn exit_for(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Passed => 0,
        Outcome::Safety(_) => EXIT_SAFETY,
        Outcome::Liveness(_) => EXIT_LIVENESS,
        Outcome::Judged { .. } => EXIT_SAFETY,
    }
}

pub(crate) fn failure_line(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Passed => None,
        Outcome::Safety(what) => Some(format!("SAFETY VIOLATION {what}")),
        Outcome::Liveness(what) => Some(format!("LIVENESS FAILURE {what}")),
        Outcome::Judged { what, .. } => Some(format!("WRONG DECISION {what}")),
    }
}

/// Whether one run caught `plant`, and by what.
pub(crate) fn plant_verdict(plant: Plant, outcome: &Outcome) -> String {
    let expected = canaries::expected(plant).name();
    let name = Canary::Plant(plant).name();
    match outcome {
        Outcome::Judged { oracle, .. } if oracle.name() == expected => {
            format!("canary {name}: caught by {expected}, its own oracle")
        }
        Outcome::Passed => format!("canary {name}: not caught (expected {expected})"),
        other => format!(
            "canary {name}: caught otherwise, by {} (expected {expected})",
            caught_by(other)
        ),
    }
}

/// What a failing outcome was caught by: an oracle's name, `safety` or `liveness`.
pub(crate) fn caught_by(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "nothing",
        Outcome::Safety(_) => "safety",
        Outcome::Liveness(_) => "liveness",
        Outcome::Judged { oracle, .. } => oracle.name(),
    }
}

pub(crate) fn repro(cli: &Cli, seed: u64) -> String {
    let mut s = format!("repro: drover-sim --seed {seed} --trace");
    for flag in &cli.repro_flags {
        s.push(' ');
        s.push_str(flag);
    }
    s
}
