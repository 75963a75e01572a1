//! Replay and shrinking. The machine is a pure function of its inputs, so a failing run's
//! recorded inputs replay it without the world; delta debugging (ddmin) then removes inputs
//! while the same kind of failure remains. Only failures the machine itself shows (an
//! invariant, a panic) shrink this way; ground-truth failures need the world and replay
//! by seed.

use std::panic::{catch_unwind, AssertUnwindSafe};

use drover_machine::{Config, Generation, Input, Instant, Supervisor};

/// Feeds `inputs` to a fresh machine (draining after each) and returns the first failure:
/// an invariant violation or a panic, with its message. The machine starts as the run's
/// did: fresh, or as the successor of a `predecessor` of that generation
/// (`Faults::predecessor`). Inputs that no longer make sense (a spawn answer for a spawn
/// that was shrunk away) are ignored by the machine as odd inputs, as in real life.
pub fn replay(
    config: &Config,
    predecessor: Option<Generation>,
    inputs: &[(Instant, Input)],
) -> Option<String> {
    let result = catch_unwind(AssertUnwindSafe(|| {
        let mut sup = match predecessor {
            Some(g) => Supervisor::succeeding(config.clone(), Instant::ZERO, g),
            None => Supervisor::new(config.clone(), Instant::ZERO),
        }
        .expect("config was valid");
        let mut now = Instant::ZERO;
        while sup.poll_action().is_some() {}
        for (at, input) in inputs {
            now = now.max(*at);
            sup.handle(now, input.clone());
            if let Err(v) = sup.check_invariants() {
                return Some(format!("invariant: {}", v.invariant));
            }
            let mut n = 0;
            while sup.poll_action().is_some() {
                n += 1;
                assert!(n < 1_000_000, "a drain did not end");
            }
        }
        None
    }));
    match result {
        Ok(outcome) => outcome,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_string()))
                .unwrap_or_default();
            // Keep only the kind of failure, not its numbers, so shrinking keeps the bug.
            let kind = msg.split(':').next().unwrap_or_default().to_string();
            Some(format!("panic: {kind}"))
        }
    }
}

/// Smallest input list found that still fails like `inputs` does.
pub fn shrink(
    config: &Config,
    predecessor: Option<Generation>,
    inputs: &[(Instant, Input)],
) -> Vec<(Instant, Input)> {
    ddmin(inputs, |candidate| replay(config, predecessor, candidate))
}

/// Delta debugging: removes chunks of `items` while `fails` reports the same failure as for
/// the whole list; returns the smallest list found (bounded number of tries).
pub fn ddmin<T: Clone>(items: &[T], mut fails: impl FnMut(&[T]) -> Option<String>) -> Vec<T> {
    let Some(failure) = fails(items) else {
        return items.to_vec();
    };
    let mut current = items.to_vec();
    let mut chunks = 2usize;
    for _ in 0..10_000 {
        if current.len() < 2 {
            break;
        }
        let size = current.len().div_ceil(chunks);
        let mut reduced = false;
        for start in (0..current.len()).step_by(size) {
            let candidate: Vec<T> = current[..start]
                .iter()
                .chain(current[(start + size).min(current.len())..].iter())
                .cloned()
                .collect();
            if fails(&candidate).as_deref() == Some(failure.as_str()) {
                current = candidate;
                chunks = (chunks - 1).max(2);
                reduced = true;
                break;
            }
        }
        if !reduced {
            if chunks >= current.len() {
                break;
            }
            chunks = (chunks * 2).min(current.len());
        }
    }
    current
}
