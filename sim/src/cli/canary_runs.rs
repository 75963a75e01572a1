//! `--canaries`: every planted machine bug over a seed budget, tallied by the oracle that
//! caught it.

use crate::*;

/// How one plant fared over a batch of seeds.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PlantTally {
    /// Seeds whose run its own oracle failed, in seed order.
    pub(crate) own: Vec<u64>,
    /// Seeds caught by another oracle, a safety check or liveness, in seed order.
    pub(crate) other_oracle: Vec<u64>,
    pub(crate) safety: Vec<u64>,
    pub(crate) liveness: Vec<u64>,
}

impl PlantTally {
    fn of(plant: Plant, results: &[SeedResult]) -> PlantTally {
        let expected = canaries::expected(plant);
        let mut t = PlantTally::default();
        for r in results {
            match &r.outcome {
                Outcome::Passed => {}
                Outcome::Judged { oracle, .. } if *oracle == expected => t.own.push(r.seed),
                Outcome::Judged { .. } => t.other_oracle.push(r.seed),
                Outcome::Safety(_) => t.safety.push(r.seed),
                Outcome::Liveness(_) => t.liveness.push(r.seed),
            }
        }
        t
    }

    fn otherwise(&self) -> usize {
        self.other_oracle.len() + self.safety.len() + self.liveness.len()
    }
}

/// The median number of seeds run, in seed order from `from`, from one catch to the next:
/// the gaps are `c1 - from + 1, c2 - c1, ...` over the seeds `c1 < c2 < ...` that caught
/// the plant, and the median of those gaps (the lower middle one of an even count) is how
/// many seeds a search typically runs to catch it once more. `None` without a catch. Seeds
/// after the last catch are not a gap: within the budget they say only that the next catch
/// is further off, which the count of catches already tells.
pub(crate) fn median_seeds_to_catch(from: u64, caught: &[u64]) -> Option<u64> {
    let mut gaps: Vec<u64> = caught
        .iter()
        .scan(from.wrapping_sub(1), |last, &c| {
            let gap = c.wrapping_sub(*last);
            *last = c;
            Some(gap)
        })
        .collect();
    gaps.sort_unstable();
    gaps.get(gaps.len().saturating_sub(1) / 2).copied()
}

/// `--canaries`: every planted bug over seeds from..from+count, one line each; exit 7 if
/// one is not caught by its own oracle within the budget.
pub(crate) fn run_canaries(cli: &Cli, count: u64, from: u64) -> Result<u8, String> {
    let a = &cli.args;
    let plants = canaries::plants();
    println!(
        "CANARIES seeds={from}..{} plants={}",
        from.saturating_add(count),
        plants.len()
    );
    println!(
        "{:<24} {:<18} {:>6}  {:<22} {:>6} {:>6}  verdict",
        "plant", "its oracle", "caught", "otherwise (oracle/s/l)", "first", "median"
    );
    let wall = WallClock::start();
    let mut missed = Vec::new();
    let mut stale = Vec::new();
    let mut repros = Vec::new();
    let (mut events, mut steps, mut sim) = (0u64, 0u64, core::time::Duration::ZERO);
    for &plant in plants {
        let mut opts0 = options(a, from)?;
        opts0.plant = Some(plant);
        let results = run_seeds(
            &opts0,
            from,
            count,
            a.jobs.unwrap_or(2),
            a.check_determinism,
        );
        for r in &results {
            events += r.events;
            steps += r.steps;
            sim += r.sim_time;
            if !r.deterministic {
                return Err(format!(
                    "seed {} with --canary {} gave two trace hashes: non-determinism",
                    r.seed,
                    Canary::Plant(plant).name()
                ));
            }
        }
        let t = PlantTally::of(plant, &results);
        let name = Canary::Plant(plant).name();
        let dash = || "-".to_string();
        let pending = a.expect_missed.contains(&Canary::Plant(plant));
        let verdict = match (t.own.is_empty(), pending) {
            (false, false) => "ok",
            (true, false) => "MISSED",
            (true, true) => "missed (oracle pending)",
            (false, true) => "CAUGHT: drop it from --expect-missed",
        };
        let otherwise = format!(
            "{} ({}/{}/{})",
            t.otherwise(),
            t.other_oracle.len(),
            t.safety.len(),
            t.liveness.len()
        );
        println!(
            "{:<24} {:<18} {:>6}  {:<22} {:>6} {:>6}  {verdict}",
            name,
            canaries::expected(plant).name(),
            t.own.len(),
            otherwise,
            t.own.first().map_or_else(dash, u64::to_string),
            median_seeds_to_catch(from, &t.own).map_or_else(dash, |m| m.to_string()),
        );
        match (t.own.is_empty(), pending) {
            (true, false) => missed.push(name),
            (false, true) => stale.push(name),
            _ => {}
        }
        let first = t.own.first().or(t.other_oracle.first());
        let first = first.or(t.safety.first()).or(t.liveness.first());
        if let Some(&seed) = first {
            repros.push(format!("  {} --canary {name}", repro(cli, seed)));
        }
    }
    let elapsed = wall.elapsed();
    println!("first catch of each plant (its own oracle's if any):");
    for line in &repros {
        println!("{line}");
    }
    println!(
        "runs={} events={events} {}",
        count.saturating_mul(plants.len() as u64),
        report::speed(sim, elapsed, events, steps)
    );
    if missed.is_empty() && stale.is_empty() {
        match a.expect_missed.len() {
            0 => println!("every plant was caught by its own oracle"),
            n => println!(
                "every plant was caught by its own oracle but the {n} of --expect-missed (oracle pending)"
            ),
        }
        return Ok(0);
    }
    if !missed.is_empty() {
        println!(
            "NOT CAUGHT by its own oracle within {count} seeds: {}",
            missed.join(", ")
        );
    }
    if !stale.is_empty() {
        println!(
            "CAUGHT though listed in --expect-missed (drop them from the list): {}",
            stale.join(", ")
        );
    }
    Ok(EXIT_CANARY_MISSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_seeds_to_catch_is_the_median_gap_between_catches() {
        assert_eq!(median_seeds_to_catch(0, &[]), None);
        // Caught at the first seed: one seed to catch it.
        assert_eq!(median_seeds_to_catch(10, &[10]), Some(1));
        // Gaps 4, 2, 10: median 4.
        assert_eq!(median_seeds_to_catch(0, &[3, 5, 15]), Some(4));
        // Gaps 1, 1, 8, 8: the lower middle.
        assert_eq!(median_seeds_to_catch(0, &[0, 1, 9, 17]), Some(1));
    }
}
