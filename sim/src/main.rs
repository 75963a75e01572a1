//! `drover-sim`: run one seed, a batch of seeds, a canary, every planted bug, or a policy
//! report.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{ArgGroup, ArgMatches, CommandFactory, FromArgMatches, Parser, ValueEnum};
use drover_machine::trace::input_line;
use drover_sim::canaries::{self, Canary};
use drover_sim::report::{self, WallClock};
use drover_sim::{shrink, world, Coverage, Faults, Load, Outcome, Plant, RunOptions, RunResult};

const EXIT_USAGE: u8 = 2;
const EXIT_SAFETY: u8 = 3;
const EXIT_LIVENESS: u8 = 4;
const EXIT_NONDETERMINISM: u8 = 5;
const EXIT_COVERAGE: u8 = 6;
const EXIT_CANARY_MISSED: u8 = 7;

const EXIT_CODES: &str = "\
Exit codes: 0 passed, 2 usage, 3 safety violation (or a wrong decision), 4 liveness failure,
5 non-determinism, 6 coverage gap, 7 (--canaries) a planted bug not caught by its own oracle.

A failing run ends with a repro line (drover-sim --seed S --trace ...): same binary, same
seed, same trace, and the trace hash proves it.";

/// The deterministic simulator of drover's supervisor.
///
/// One u64 seed draws the fault mix, the machine config, the load and every event of the
/// model world, so a seed reproduces a run exactly.
#[derive(Parser, Debug)]
#[command(
    name = "drover-sim",
    bin_name = "drover-sim",
    verbatim_doc_comment,
    override_usage = "drover-sim --seed S [OPTIONS]            run one seed\n       \
                      drover-sim --seeds N --from S [OPTIONS]  run seeds S..S+N\n       \
                      drover-sim --canaries --seeds N --from S  judge every planted bug",
    after_help = EXIT_CODES,
    // A repeated flag takes its last value, as a shell script overriding a default expects.
    args_override_self = true,
    group(ArgGroup::new("mode").required(true).args(["seed", "seeds"])),
)]
struct Args {
    /// Run one seed: a number, or a 40-hex commit id.
    ///
    /// A commit id seeds with its first 16 hex digits.
    #[arg(long, value_name = "S", value_parser = parse_seed, help_heading = "Mode")]
    seed: Option<u64>,
    /// Run N seeds, S..S+N (needs --from), and print one summary line at the end.
    #[arg(long, value_name = "N", value_parser = parse_count, requires = "from", help_heading = "Mode")]
    seeds: Option<u64>,
    /// The first seed of a batch (with --seeds): a number or a 40-hex commit id.
    #[arg(long, value_name = "S", value_parser = parse_seed, requires = "seeds", help_heading = "Mode")]
    from: Option<u64>,

    /// Plant a known bug: the run must fail.
    ///
    /// Bare (or `drop-kill`): the world canary. The machine's KILLs never reach a worker, and
    /// the load is steady so that workers exist at every stop (so no --load). The simulator
    /// must catch it (exit 3 or 4).
    ///
    /// NAME: a planted bug of the machine, a one-rule mistake (`boot-third`, ...; see
    /// docs/simulator.md), which the oracle naming that rule should catch. Needs a binary
    /// built with `--features planted`.
    #[arg(
        long,
        value_name = "NAME",
        num_args = 0..=1,
        default_missing_value = canaries::DROP_KILL,
        value_parser = Canary::from_name,
    )]
    canary: Option<Canary>,
    /// Run every planted bug over the seeds of --seeds/--from and judge it (exit 7 if one
    /// is not caught by its own oracle).
    ///
    /// Prints per plant the oracle expected to catch it, the seeds it caught, the seeds
    /// caught otherwise (another oracle, a safety check, liveness), the first seed it
    /// caught and the median seeds-to-catch. Needs a binary built with `--features planted`.
    #[arg(long, requires = "seeds", conflicts_with_all = ["canary", "require_coverage"], help_heading = "Mode")]
    canaries: bool,
    /// With --canaries: plants whose oracle has not landed yet, comma-separated.
    ///
    /// Missing them is reported but does not fail the run; catching one of them does (exit
    /// 7), so that the list shrinks as the oracles land instead of hiding a regression.
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        value_parser = Canary::from_name,
        requires = "canaries",
        help_heading = "Batch"
    )]
    expect_missed: Vec<Canary>,
    /// Run every seed twice and compare the trace hashes (exit 5 if they differ).
    #[arg(long)]
    check_determinism: bool,

    /// Run this machine config instead of a random one.
    ///
    /// A TOML file of the machine settings the `drover` shell reads (`workers`, `min`, `max`,
    /// `threads`, ...; tables join with `.`). Examples: sim/policies/.
    #[arg(long, value_name = "FILE.toml", help_heading = "World")]
    policy: Option<String>,
    /// The clients' load instead of a random one.
    #[arg(long, value_enum, value_name = "LOAD", help_heading = "World")]
    load: Option<LoadArg>,
    /// Simulated minutes of the fault phase, 0..1e6 [default: 10].
    ///
    /// The liveness phase follows: faults heal and the pool must converge, then stop.
    #[arg(long, value_name = "M", value_parser = parse_minutes, allow_negative_numbers = true, help_heading = "World")]
    minutes: Option<f64>,
    /// No faults: measure a policy under load alone.
    #[arg(long, help_heading = "World")]
    no_faults: bool,

    /// Print the full fixed-column trace: every input and action line.
    #[arg(long, conflicts_with = "seeds", help_heading = "One seed")]
    trace: bool,
    /// Print the policy report.
    ///
    /// Queue waits, requests served, refused and broken, worker-seconds and spawns.
    #[arg(long, conflicts_with = "seeds", help_heading = "One seed")]
    report: bool,
    /// Draw pool size by state, queue length and load over time into this SVG file.
    #[arg(
        long,
        value_name = "FILE.svg",
        conflicts_with = "seeds",
        help_heading = "One seed"
    )]
    plot: Option<String>,
    /// On a machine-invariant failure, print a minimal input list.
    ///
    /// The recorded inputs are replayed into a fresh machine and cut down (ddmin) to a list
    /// that still fails. Failures that need the world's ground truth replay by seed only.
    #[arg(long, conflicts_with = "seeds", help_heading = "One seed")]
    shrink: bool,

    /// Fail (exit 6) if some coverage mark was never reached.
    ///
    /// A mark is an interesting situation (ladder reached KILL, pid reused, ...) that the
    /// batch as a whole must reach at least once.
    #[arg(long, conflicts_with = "seed", help_heading = "Batch")]
    require_coverage: bool,
    /// Run the seeds on J threads, 1..256 [default: 2].
    ///
    /// The output does not depend on J: results are printed in seed order.
    #[arg(long, value_name = "J", value_parser = parse_jobs, conflicts_with = "seed", help_heading = "Batch")]
    jobs: Option<usize>,
}

/// `--load`: the names `Load::name` prints, with a line of help each.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LoadArg {
    /// Poisson arrivals at half the pool's capacity.
    Steady,
    /// A low base with bursts of three times capacity.
    Burst,
    /// A slow sine between a tenth and 1.2 times capacity.
    Oscillating,
    /// No clients.
    Idle,
}

impl From<LoadArg> for Load {
    fn from(l: LoadArg) -> Load {
        match l {
            LoadArg::Steady => Load::Steady,
            LoadArg::Burst => Load::Burst,
            LoadArg::Oscillating => Load::Oscillating,
            LoadArg::Idle => Load::Idle,
        }
    }
}

fn parse_seed(s: &str) -> Result<u64, String> {
    if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        return u64::from_str_radix(&s[..16], 16).map_err(|e| e.to_string());
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a seed: give a number or a 40-hex commit id"))
}

fn parse_count(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("`{s}` is not a count"))
}

fn parse_minutes(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|m: &f64| m.is_finite() && (0.0..=1e6).contains(m))
        .ok_or(format!("`{s}` is not a number of minutes (0..1e6)"))
}

fn parse_jobs(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|j| (1..=256).contains(j))
        .ok_or(format!("`{s}` is not a thread count (1..256)"))
}

/// The parsed flags, plus the flags that shape the world as given, for the repro line.
struct Cli {
    args: Args,
    repro_flags: Vec<String>,
}

impl Cli {
    /// Parses the command line; on a usage error clap prints it and exits with code 2.
    fn parse() -> Cli {
        let matches = Args::command().get_matches();
        let args = Args::from_arg_matches(&matches)
            .and_then(validate)
            .unwrap_or_else(|e| e.exit());
        let repro_flags = repro_flags(&matches);
        Cli { args, repro_flags }
    }
}

/// What clap's declarations cannot say: the world canary sets the load itself, and the
/// planted bugs need a binary built with them.
fn validate(args: Args) -> Result<Args, clap::Error> {
    let usage = |kind, msg: &str| Err(Args::command().error(kind, msg));
    if args.canary == Some(Canary::DropKill) && args.load.is_some() {
        return usage(
            ErrorKind::ArgumentConflict,
            "the world canary (--canary, --canary drop-kill) runs a steady load: drop --load",
        );
    }
    if args.expect_missed.contains(&Canary::DropKill) {
        return usage(
            ErrorKind::InvalidValue,
            "--expect-missed lists planted bugs of the machine; the world canary is not one",
        );
    }
    if args.canaries && !canaries::PLANTED {
        return usage(
            ErrorKind::InvalidValue,
            "--canaries runs the machine's planted bugs, which this binary lacks: build it \
             with `cargo build --release -p drover-sim --features planted`",
        );
    }
    Ok(args)
}

/// The flags that change what a seed runs, spelled as given and in the order given, with
/// `--canary` last: `--seed S --trace` plus these reproduce a run.
fn repro_flags(m: &ArgMatches) -> Vec<String> {
    let given = |id: &str| {
        (m.value_source(id) == Some(ValueSource::CommandLine))
            .then(|| m.index_of(id))
            .flatten()
    };
    let mut flags: Vec<(usize, String)> = ["policy", "load", "minutes"]
        .into_iter()
        .filter_map(|id| {
            let raw = m.get_raw(id)?.next_back()?.to_string_lossy();
            Some((given(id)?, format!("--{id} {raw}")))
        })
        .collect();
    if let Some(at) = given("no_faults") {
        flags.push((at, "--no-faults".into()));
    }
    flags.sort();
    let mut flags: Vec<String> = flags.into_iter().map(|(_, f)| f).collect();
    match m.get_one::<Canary>("canary") {
        None => {}
        Some(Canary::DropKill) => flags.push("--canary".into()),
        Some(c) => flags.push(format!("--canary {}", c.name())),
    }
    flags
}

fn options(a: &Args, seed: u64) -> Result<RunOptions, String> {
    let mut o = RunOptions::seed(seed);
    o.canary = a.canary == Some(Canary::DropKill);
    o.plant = match a.canary {
        Some(Canary::Plant(p)) => Some(p),
        _ => None,
    };
    o.keep_trace = a.trace;
    o.keep_samples = a.plot.is_some();
    o.load = a.load.map(Load::from);
    if o.canary {
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
        Outcome::Judged { .. } => EXIT_SAFETY,
    }
}

fn failure_line(outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Passed => None,
        Outcome::Safety(what) => Some(format!("SAFETY VIOLATION {what}")),
        Outcome::Liveness(what) => Some(format!("LIVENESS FAILURE {what}")),
        Outcome::Judged { what, .. } => Some(format!("WRONG DECISION {what}")),
    }
}

/// Whether one run caught `plant`, and by what.
fn plant_verdict(plant: Plant, outcome: &Outcome) -> String {
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
fn caught_by(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Passed => "nothing",
        Outcome::Safety(_) => "safety",
        Outcome::Liveness(_) => "liveness",
        Outcome::Judged { oracle, .. } => oracle.name(),
    }
}

fn repro(cli: &Cli, seed: u64) -> String {
    let mut s = format!("repro: drover-sim --seed {seed} --trace");
    for flag in &cli.repro_flags {
        s.push(' ');
        s.push_str(flag);
    }
    s
}

fn write_plot(r: &RunResult, seed: u64, path: &str) -> Result<(), String> {
    let title = format!(
        "drover-sim seed {seed}: {} pool, {} load",
        r.config.policy.name(),
        r.load.name()
    );
    std::fs::write(path, report::plot_svg(&r.samples, &title))
        .map_err(|e| format!("--plot {path}: {e}"))?;
    println!("plot: {path}");
    Ok(())
}

/// Runs the seed again; `EXIT_NONDETERMINISM` if the trace differs.
fn check_determinism(r: &RunResult, opts: RunOptions) -> u8 {
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

fn print_shrunk(r: &RunResult) {
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

fn run_one(cli: &Cli, seed: u64) -> Result<u8, String> {
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

/// What a batch keeps of one seed's run.
struct SeedResult {
    seed: u64,
    outcome: Outcome,
    deterministic: bool,
    events: u64,
    steps: u64,
    sim_time: core::time::Duration,
    coverage: Coverage,
}

fn run_seed(opts0: &RunOptions, seed: u64, check_determinism: bool) -> SeedResult {
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
fn run_seeds(
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

fn run_batch(cli: &Cli, count: u64, from: u64) -> Result<u8, String> {
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

/// How one plant fared over a batch of seeds.
#[derive(Debug, Default, PartialEq)]
struct PlantTally {
    /// Seeds whose run its own oracle failed, in seed order.
    own: Vec<u64>,
    /// Seeds caught by another oracle, a safety check or liveness, in seed order.
    other_oracle: Vec<u64>,
    safety: Vec<u64>,
    liveness: Vec<u64>,
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
fn median_seeds_to_catch(from: u64, caught: &[u64]) -> Option<u64> {
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
fn run_canaries(cli: &Cli, count: u64, from: u64) -> Result<u8, String> {
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

/// Prints the coverage marks never reached; `EXIT_COVERAGE` if there are any.
fn coverage_gap(coverage: &Coverage) -> u8 {
    let missing = coverage.missing();
    if missing.is_empty() {
        return 0;
    }
    let names: Vec<&str> = missing.iter().map(|m| m.label()).collect();
    println!("COVERAGE GAP: never reached: {}", names.join(", "));
    EXIT_COVERAGE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.args.seed, cli.args.seeds, cli.args.from) {
        (Some(seed), _, _) => run_one(&cli, seed),
        (None, Some(count), Some(from)) if cli.args.canaries => run_canaries(&cli, count, from),
        (None, Some(count), Some(from)) => run_batch(&cli, count, from),
        // clap enforces one of --seed and --seeds, and --seeds with --from.
        _ => Err("give --seed S, or --seeds N --from S".into()),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("drover-sim: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<(Args, Vec<String>), clap::Error> {
        let argv = std::iter::once("drover-sim").chain(line.split_whitespace());
        let matches = Args::command().try_get_matches_from(argv)?;
        let args = Args::from_arg_matches(&matches).and_then(validate)?;
        Ok((args, repro_flags(&matches)))
    }

    #[test]
    fn the_command_is_well_formed() {
        Args::command().debug_assert();
    }

    #[test]
    fn the_ci_and_readme_invocations_parse() {
        for line in [
            "--seeds 1000 --from 1 --check-determinism --require-coverage",
            "--seed 1 --canary",
            "--seed 1 --canary drop-kill",
            "--canary --seed 7 --shrink",
            "--seed 104971 --trace",
            "--seeds 200 --from 1 --jobs 4",
            "--seed 1 --policy p.toml --load burst --no-faults --minutes 30 --report --plot p.svg",
        ] {
            if let Err(e) = parse(line) {
                panic!("`{line}` does not parse: {e}");
            }
        }
    }

    #[test]
    fn the_repro_line_keeps_the_order_given_and_puts_canary_last() {
        let (_, flags) =
            parse("--canary --minutes 3 --seed 1 --no-faults --policy p.toml").expect("parses");
        assert_eq!(
            flags,
            ["--minutes 3", "--no-faults", "--policy p.toml", "--canary"]
        );
    }

    #[test]
    fn the_world_canary_is_drop_kill_and_repro_spells_it_bare() {
        for line in ["--seed 1 --canary", "--seed 1 --canary drop-kill"] {
            let (args, flags) = parse(line).expect("parses");
            assert_eq!(args.canary, Some(Canary::DropKill), "{line}");
            assert_eq!(flags, ["--canary"], "{line}");
        }
    }

    #[test]
    fn an_unknown_canary_is_a_usage_error_that_says_what_to_do() {
        let e = parse("--seed 1 --canary no-such-bug").expect_err("unknown canary");
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE));
        let msg = e.to_string();
        if canaries::PLANTED {
            assert!(
                msg.contains("boot-third") && msg.contains("drop-kill"),
                "{msg}"
            );
        } else {
            assert!(msg.contains("--features planted"), "{msg}");
        }
    }

    #[cfg(feature = "planted")]
    #[test]
    fn a_planted_canary_is_named_in_the_repro_line() {
        let (args, flags) = parse("--canary boot-third --seed 4 --minutes 2").expect("parses");
        assert_eq!(args.canary, Some(Canary::Plant(Plant::BootThird)));
        assert_eq!(flags, ["--minutes 2", "--canary boot-third"]);
        let (args, _) = parse("--canaries --seeds 300 --from 0").expect("parses");
        assert!(args.canaries);
        let (args, _) =
            parse("--canaries --seeds 3 --from 0 --expect-missed idle-half,ramp-triple")
                .expect("parses");
        let pending = [Plant::IdleHalf, Plant::RampTriple].map(Canary::Plant);
        assert_eq!(args.expect_missed, pending);
        for line in [
            "--canaries --seeds 3 --from 0 --expect-missed drop-kill",
            "--canaries --seeds 3 --from 0 --expect-missed no-such-bug",
            "--seeds 3 --from 0 --expect-missed idle-half",
        ] {
            assert_usage_error(line);
        }
    }

    #[cfg(not(feature = "planted"))]
    #[test]
    fn without_the_feature_canaries_says_how_to_build_it() {
        let e = parse("--canaries --seeds 300 --from 0").expect_err("needs the feature");
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE));
        assert!(e.to_string().contains("--features planted"), "{e}");
    }

    fn assert_usage_error(line: &str) {
        let e = parse(line)
            .err()
            .unwrap_or_else(|| panic!("`{line}` parses"));
        assert_eq!(e.exit_code(), i32::from(EXIT_USAGE), "{line}");
    }

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

    #[test]
    fn flags_of_the_other_mode_are_usage_errors() {
        for line in [
            "--seed 1 --seeds 2 --from 1",
            "--seeds 2",
            "--from 1",
            "--seeds 2 --from 1 --trace",
            "--seed 1 --jobs 2",
            "--seed 1 --canary --load idle",
            "--seed 1 --canary drop-kill --load idle",
            "--seed 1 --canaries",
            "--canaries --seeds 2 --from 1 --canary",
            "--canaries --seeds 2 --from 1 --require-coverage",
            "--seed 1 --minutes -1",
        ] {
            assert_usage_error(line);
        }
    }
}
