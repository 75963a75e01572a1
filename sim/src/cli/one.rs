//! One seed: the run, its trace, report, plot, shrinking and determinism check.

use crate::*;

pub(crate) fn write_plot(r: &RunResult, seed: u64, path: &str) -> Result<(), String> {
    let title = format!(
        "drover-sim seed {seed}: {} pool, {} load",
        r.config.policy.name(),
        r.load.name()
    );
    drover_sim::lab::plot::ImageFormat::from_path(path).map_err(|e| format!("--plot {e}"))?;
    drover_sim::lab::plot::run_timeline(&r.samples, &title, path)
        .map_err(|e| format!("--plot {e}"))?;
    println!("plot: {path}");
    Ok(())
}

/// Runs the seed again; `EXIT_NONDETERMINISM` if the trace differs.
pub(crate) fn check_determinism(r: &RunResult, opts: RunOptions) -> u8 {
    let again = world::run(opts);
    if again.trace_hash == r.trace_hash {
        return 0;
    }
    println!(
        "NON-DETERMINISM: trace hash {:016x} then {:016x}",
        r.trace_hash, again.trace_hash
    );
    EXIT_NONDETERMINISM
}

pub(crate) fn print_shrunk(r: &RunResult) {
    // ddmin replays inputs that make the machine panic; those panics are expected, not news.
    std::panic::set_hook(Box::new(|_| {}));
    let predecessor = r.faults.predecessor();
    let minimal = shrink::shrink(&r.config, predecessor, &r.inputs);
    let _ = std::panic::take_hook();
    match shrink::replay(&r.config, predecessor, &minimal) {
        Some(failure) => {
            println!(
                "shrunk to {} of {} inputs ({failure}):",
                minimal.len(),
                r.inputs.len()
            );
            for (at, input) in &minimal {
                println!("{}", input_line(*at, input));
            }
        }
        None => {
            println!("shrink: this failure needs the world (ground truth); replay it by seed")
        }
    }
}

pub(crate) fn run_one(cli: &Cli, seed: u64) -> Result<u8, String> {
    let a = &cli.args;
    println!("SEED={seed}");
    let opts = options(a, seed)?;
    let plant = opts.plant;
    let wall = WallClock::start();
    let r = world::run(opts.clone());
    let elapsed = wall.elapsed();
    println!("swarm: {}", r.faults);
    println!("load: {}", r.load.name());
    println!("{}", describe(&r));
    for line in r.lines.iter().skip(1) {
        println!("{line}");
    }
    if a.report {
        print!("{}", report::policy_report(&r));
    }
    if let Some(path) = &a.plot {
        write_plot(&r, seed, path)?;
    }
    let mut code = exit_for(&r.outcome);
    match failure_line(&r.outcome) {
        None => println!("PASSED exit-code={:?}", r.exit_code),
        Some(line) => println!("{line}"),
    }
    if let Some(plant) = plant {
        println!("{}", plant_verdict(plant, &r.outcome));
    }
    if a.check_determinism {
        code = code.max(check_determinism(&r, opts));
    }
    if a.shrink && matches!(r.outcome, Outcome::Safety(_)) {
        if plant.is_some() {
            // The replay builds a fresh, shipped machine: it would shrink the wrong one.
            println!("shrink: a planted bug's failure replays by seed (--canary NAME)");
        } else {
            print_shrunk(&r);
        }
    }
    println!("{}", r.coverage);
    println!(
        "trace-hash={:016x} steps={} events={} {}",
        r.trace_hash,
        r.steps,
        r.events,
        report::speed(r.sim_time, elapsed, r.events, r.steps)
    );
    if code != 0 {
        println!("{}", repro(cli, seed));
    }
    Ok(code)
}
