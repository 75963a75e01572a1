//! A batch of seeds on worker threads, printed in seed order, and its coverage gap.

use crate::*;

/// What a batch keeps of one seed's run.
pub(crate) struct SeedResult {
    pub(crate) seed: u64,
    pub(crate) outcome: Outcome,
    pub(crate) deterministic: bool,
    pub(crate) events: u64,
    pub(crate) steps: u64,
    pub(crate) sim_time: core::time::Duration,
    pub(crate) coverage: Coverage,
}

pub(crate) fn run_seed(opts0: &RunOptions, seed: u64, check_determinism: bool) -> SeedResult {
    let mut o = opts0.clone();
    o.seed = seed;
    let r = world::run(o.clone());
    let deterministic = !check_determinism || world::run(o).trace_hash == r.trace_hash;
    SeedResult {
        seed,
        outcome: r.outcome,
        deterministic,
        events: r.events,
        steps: r.steps,
        sim_time: r.sim_time,
        coverage: r.coverage,
    }
}

/// Runs seeds from..from+count on `jobs` threads, each taking every jobs-th seed; the results
/// come back in seed order, so the output does not depend on thread timing.
pub(crate) fn run_seeds(
    opts0: &RunOptions,
    from: u64,
    count: u64,
    jobs: usize,
    check: bool,
) -> Vec<SeedResult> {
    let jobs = jobs.max(1) as u64;
    let mut results: Vec<SeedResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                scope.spawn(move || {
                    (j..count)
                        .step_by(jobs as usize)
                        .map(|k| run_seed(opts0, from.wrapping_add(k), check))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a simulator thread panicked"))
            .collect()
    });
    results.sort_by_key(|r| r.seed);
    results
}

pub(crate) fn run_batch(cli: &Cli, count: u64, from: u64) -> Result<u8, String> {
    let a = &cli.args;
    println!("SEEDS={from}..{}", from.saturating_add(count));
    let opts0 = options(a, from)?;
    let wall = WallClock::start();
    let results = run_seeds(
        &opts0,
        from,
        count,
        a.jobs.unwrap_or(2),
        a.check_determinism,
    );
    let elapsed = wall.elapsed();
    let mut coverage = Coverage::new();
    let (mut passed, mut failed, mut events, mut steps, mut sim) =
        (0u64, 0u64, 0u64, 0u64, core::time::Duration::ZERO);
    let mut code = 0u8;
    for r in &results {
        coverage.merge(&r.coverage);
        events += r.events;
        steps += r.steps;
        sim += r.sim_time;
        if !r.deterministic {
            println!(
                "seed={} NON-DETERMINISM: two runs gave different trace hashes",
                r.seed
            );
            code = code.max(EXIT_NONDETERMINISM);
        }
        match failure_line(&r.outcome) {
            None if r.deterministic => passed += 1,
            None => failed += 1,
            Some(what) => {
                failed += 1;
                println!("seed={} {what}", r.seed);
                println!("  {}", repro(cli, r.seed));
                code = code.max(exit_for(&r.outcome));
            }
        }
    }
    println!("{coverage}");
    if a.require_coverage {
        let gap = coverage_gap(&coverage);
        if code == 0 {
            code = gap;
        }
    }
    println!(
        "seeds={count} passed={passed} failed={failed} events={events} {}",
        report::speed(sim, elapsed, events, steps)
    );
    Ok(code)
}

/// Prints the coverage marks never reached; `EXIT_COVERAGE` if there are any.
pub(crate) fn coverage_gap(coverage: &Coverage) -> u8 {
    let missing = coverage.missing();
    if missing.is_empty() {
        return 0;
    }
    let names: Vec<&str> = missing.iter().map(|m| m.label()).collect();
    println!("COVERAGE GAP: never reached: {}", names.join(", "));
    EXIT_COVERAGE
}
