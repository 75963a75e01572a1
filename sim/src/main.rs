//! `drover-sim`: run one seed, a batch of seeds, the canary, or a policy report.

use std::process::ExitCode;

use drover_machine::trace::input_line;
use drover_sim::report::{self, WallClock};
use drover_sim::{shrink, world, Coverage, Faults, Load, Outcome, RunOptions, RunResult};

const USAGE: &str = "\
drover-sim: the deterministic simulator of drover's supervisor

usage:
  drover-sim --seed S [options]          run one seed (S: a number, or a 40-hex commit id)
  drover-sim --seeds N --from S [opts]   run seeds S..S+N, one summary line at the end

options:
  --trace                 print the full fixed-column trace
  --canary                plant a known bug (KILL is dropped); the run must fail
  --policy FILE.toml      run this machine config instead of a random one
  --load steady|burst|oscillating|idle
  --minutes M             simulated minutes of the fault phase (default 10)
  --no-faults             no faults: measure a policy under load alone
  --plot FILE.svg         draw pool size by state, queue length and load over time
  --report                print the policy report (queue waits, refused, broken, cost)
  --shrink                on a machine-invariant failure, print a minimal input list
  --check-determinism     run every seed twice and compare trace hashes
  --require-coverage      (batch) fail if some interesting situation was never reached
  --jobs J                (batch) seeds run on J threads (default 2)

exit codes: 0 passed, 2 usage, 3 safety violation, 4 liveness failure,
            5 non-determinism, 6 coverage gap";

const EXIT_USAGE: u8 = 2;
const EXIT_SAFETY: u8 = 3;
const EXIT_LIVENESS: u8 = 4;
const EXIT_NONDETERMINISM: u8 = 5;
const EXIT_COVERAGE: u8 = 6;

#[derive(Default)]
struct Args {
    seed: Option<u64>,
    seeds: Option<u64>,
    from: Option<u64>,
    trace: bool,
    canary: bool,
    policy: Option<String>,
    load: Option<Load>,
    minutes: Option<f64>,
    no_faults: bool,
    plot: Option<String>,
    report: bool,
    shrink: bool,
    check_determinism: bool,
    require_coverage: bool,
    jobs: Option<usize>,
    /// The arguments as given, for the repro line.
    echo: Vec<String>,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        return u64::from_str_radix(&s[..16], 16).map_err(|e| e.to_string());
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a seed: give a number or a 40-hex commit id"))
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match flag.as_str() {
            "--seed" => a.seed = Some(parse_seed(&value("--seed")?)?),
            "--seeds" => {
                let v = value("--seeds")?;
                a.seeds = Some(
                    v.parse()
                        .map_err(|_| format!("--seeds: `{v}` is not a count"))?,
                );
            }
            "--from" => a.from = Some(parse_seed(&value("--from")?)?),
            "--trace" => a.trace = true,
            "--canary" => a.canary = true,
            "--policy" => {
                let v = value("--policy")?;
                a.echo.push(format!("--policy {v}"));
                a.policy = Some(v);
            }
            "--load" => {
                let v = value("--load")?;
                a.load = Some(Load::from_name(&v).ok_or(format!(
                    "--load: `{v}` is not a load; use steady, burst, oscillating or idle"
                ))?);
                a.echo.push(format!("--load {v}"));
            }
            "--minutes" => {
                let v = value("--minutes")?;
                let m: f64 = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m >= 0.0 && *m <= 1e6)
                    .ok_or(format!(
                        "--minutes: `{v}` is not a number of minutes (0..1e6)"
                    ))?;
                a.minutes = Some(m);
                a.echo.push(format!("--minutes {v}"));
            }
            "--no-faults" => {
                a.no_faults = true;
                a.echo.push(flag.clone());
            }
            "--plot" => a.plot = Some(value("--plot")?),
            "--report" => a.report = true,
            "--shrink" => a.shrink = true,
            "--check-determinism" => a.check_determinism = true,
            "--require-coverage" => a.require_coverage = true,
            "--jobs" => {
                let v = value("--jobs")?;
                a.jobs = Some(
                    v.parse()
                        .ok()
                        .filter(|j| (1..=256).contains(j))
                        .ok_or(format!("--jobs: `{v}` is not a thread count (1..256)"))?,
                );
            }
            "--help" | "-h" => return Err(String::new()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.canary {
        a.echo.push("--canary".into());
    }
    match (a.seed, a.seeds, a.from) {
        (Some(_), None, None) | (None, Some(_), Some(_)) => Ok(a),
        (None, Some(_), None) => Err(
            "--seeds N needs --from S, the first seed of the batch (e.g. --seeds 200 --from 1)"
                .into(),
        ),
        (None, None, _) => Err("give --seed S, or --seeds N --from S".into()),
        _ => Err("--seed and --seeds cannot be combined".into()),
    }
}

fn options(a: &Args, seed: u64) -> Result<RunOptions, String> {
    let mut o = RunOptions::seed(seed);
    o.canary = a.canary;
    o.keep_trace = a.trace;
    o.keep_samples = a.plot.is_some();
    o.load = a.load;
    if a.canary {
        // Workers must exist at every stop for the dropped KILL to matter.
        o.load = Some(Load::Steady);
    }
    if let Some(m) = a.minutes {
        o.minutes = m;
    }
    if a.no_faults {
        o.faults = Some(Faults::none());
    }
    if let Some(path) = &a.policy {
        let text = std::fs::read_to_string(path).map_err(|e| format!("--policy {path}: {e}"))?;
        o.config =
            Some(drover_sim::policy::parse(&text).map_err(|e| format!("--policy {path}: {e}"))?);
    }
    Ok(o)
}

fn describe(r: &RunResult) -> String {
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

fn exit_for(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Passed => 0,
        Outcome::Safety(_) => EXIT_SAFETY,
        Outcome::Liveness(_) => EXIT_LIVENESS,
    }
}

fn repro(a: &Args, seed: u64) -> String {
    let mut s = format!("repro: drover-sim --seed {seed} --trace");
    for e in &a.echo {
        s.push(' ');
        s.push_str(e);
    }
    s
}

fn run_one(a: &Args) -> Result<u8, String> {
    let seed = a.seed.expect("checked by parse_args");
    println!("SEED={seed}");
    let opts = options(a, seed)?;
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
        let title = format!(
            "drover-sim seed {seed}: {} pool, {} load",
            r.config.policy.name(),
            r.load.name()
        );
        std::fs::write(path, report::plot_svg(&r.samples, &title))
            .map_err(|e| format!("--plot {path}: {e}"))?;
        println!("plot: {path}");
    }
    let mut code = exit_for(&r.outcome);
    match &r.outcome {
        Outcome::Passed => println!("PASSED exit-code={:?}", r.exit_code),
        Outcome::Safety(what) => println!("SAFETY VIOLATION {what}"),
        Outcome::Liveness(what) => println!("LIVENESS FAILURE {what}"),
    }
    if a.check_determinism {
        let again = world::run(opts);
        if again.trace_hash != r.trace_hash {
            println!(
                "NON-DETERMINISM: trace hash {:016x} then {:016x}",
                r.trace_hash, again.trace_hash
            );
            code = EXIT_NONDETERMINISM;
        }
    }
    if a.shrink && matches!(r.outcome, Outcome::Safety(_)) {
        std::panic::set_hook(Box::new(|_| {}));
        let minimal = shrink::shrink(&r.config, &r.inputs);
        let _ = std::panic::take_hook();
        match shrink::replay(&r.config, &minimal) {
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
    println!("coverage: {}", r.coverage);
    println!(
        "trace-hash={:016x} steps={} events={} {}",
        r.trace_hash,
        r.steps,
        r.events,
        report::speed(r.sim_time, elapsed, r.events, r.steps)
    );
    if code != 0 {
        println!("{}", repro(a, seed));
    }
    Ok(code)
}

fn run_batch(a: &Args) -> Result<u8, String> {
    let (count, from) = (a.seeds.expect("checked"), a.from.expect("checked"));
    println!("SEEDS={from}..{}", from.saturating_add(count));
    let jobs = a.jobs.unwrap_or(2).max(1);
    let opts0 = options(a, from)?;
    let wall = WallClock::start();
    // Each thread takes every jobs-th seed; results are merged in seed order afterwards, so
    // the output does not depend on thread timing.
    let mut results: Vec<(u64, Outcome, bool, u64, u64, core::time::Duration, Coverage)> =
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..jobs as u64)
                .map(|j| {
                    let opts0 = &opts0;
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        let mut k = j;
                        while k < count {
                            let seed = from.wrapping_add(k);
                            let mut o = opts0.clone();
                            o.seed = seed;
                            let r = world::run(o.clone());
                            let deterministic =
                                !a.check_determinism || world::run(o).trace_hash == r.trace_hash;
                            out.push((
                                seed,
                                r.outcome,
                                deterministic,
                                r.events,
                                r.steps,
                                r.sim_time,
                                r.coverage,
                            ));
                            k += jobs as u64;
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a simulator thread panicked"))
                .collect()
        });
    results.sort_by_key(|r| r.0);
    let elapsed = wall.elapsed();
    let mut coverage = Coverage::new();
    let (mut passed, mut failed, mut events, mut steps, mut sim) =
        (0u64, 0u64, 0u64, 0u64, core::time::Duration::ZERO);
    let mut code = 0u8;
    for (seed, outcome, deterministic, ev, st, sim_time, cov) in &results {
        coverage.merge(cov);
        events += ev;
        steps += st;
        sim += *sim_time;
        if !deterministic {
            println!("seed={seed} NON-DETERMINISM: two runs gave different trace hashes");
            code = code.max(EXIT_NONDETERMINISM);
        }
        match outcome {
            Outcome::Passed if *deterministic => passed += 1,
            Outcome::Passed => failed += 1,
            other => {
                failed += 1;
                let what = match other {
                    Outcome::Safety(w) => format!("SAFETY VIOLATION {w}"),
                    Outcome::Liveness(w) => format!("LIVENESS FAILURE {w}"),
                    Outcome::Passed => unreachable!(),
                };
                println!("seed={seed} {what}");
                println!("  {}", repro(a, *seed));
                code = code.max(exit_for(other));
            }
        }
    }
    println!("coverage: {coverage}");
    let missing = coverage.missing();
    if a.require_coverage && !missing.is_empty() {
        let names: Vec<&str> = missing.iter().map(|m| m.label()).collect();
        println!("COVERAGE GAP: never reached: {}", names.join(", "));
        if code == 0 {
            code = EXIT_COVERAGE;
        }
    }
    println!(
        "seeds={count} passed={passed} failed={failed} events={events} {}",
        report::speed(sim, elapsed, events, steps)
    );
    Ok(code)
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("drover-sim: {e}\n\n{USAGE}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let result = if args.seed.is_some() {
        run_one(&args)
    } else {
        run_batch(&args)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("drover-sim: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
