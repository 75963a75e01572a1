//! The flags (clap), their checks across modes, and the run options and repro line they
//! make.

use crate::*;

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
                      drover-sim --canaries --seeds N --from S  judge every planted bug\n       \
                      drover-sim compare POLICY... [OPTIONS]    compare policies under one load\n       \
                      drover-sim sweep --policy P --grid KEYS   sweep a grid of config keys\n       \
                      drover-sim calibrate DROVER_LOG           read the model off a real run",
    after_help = EXIT_CODES,
    // A repeated flag takes its last value, as a shell script overriding a default expects.
    args_override_self = true,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true,
    group(ArgGroup::new("mode").required(true).args(["seed", "seeds"])),
)]
pub(crate) struct Args {
    /// The policy lab's subcommands.
    #[command(subcommand)]
    pub(crate) command: Option<LabCommand>,

    /// Run one seed: a number, or a 40-hex commit id.
    ///
    /// A commit id seeds with its first 16 hex digits.
    #[arg(long, value_name = "S", value_parser = parse_seed, help_heading = "Mode")]
    pub(crate) seed: Option<u64>,
    /// Run N seeds, S..S+N (needs --from), and print one summary line at the end.
    #[arg(long, value_name = "N", value_parser = parse_count, requires = "from", help_heading = "Mode")]
    pub(crate) seeds: Option<u64>,
    /// The first seed of a batch (with --seeds): a number or a 40-hex commit id.
    #[arg(long, value_name = "S", value_parser = parse_seed, requires = "seeds", help_heading = "Mode")]
    pub(crate) from: Option<u64>,

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
    pub(crate) canary: Option<Canary>,
    /// Run every planted bug over the seeds of --seeds/--from and judge it (exit 7 if one
    /// is not caught by its own oracle).
    ///
    /// Prints per plant the oracle expected to catch it, the seeds it caught, the seeds
    /// caught otherwise (another oracle, a safety check, liveness), the first seed it
    /// caught and the median seeds-to-catch. Needs a binary built with `--features planted`.
    #[arg(long, requires = "seeds", conflicts_with_all = ["canary", "require_coverage"], help_heading = "Mode")]
    pub(crate) canaries: bool,
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
    pub(crate) expect_missed: Vec<Canary>,
    /// Run every seed twice and compare the trace hashes (exit 5 if they differ).
    #[arg(long)]
    pub(crate) check_determinism: bool,

    /// Run this machine config instead of a random one.
    ///
    /// A TOML file of the machine settings the `drover` shell reads (`workers`, `min`, `max`,
    /// `threads`, ...; tables join with `.`). Examples: sim/policies/.
    #[arg(long, value_name = "FILE.toml", help_heading = "World")]
    pub(crate) policy: Option<String>,
    /// The clients' load instead of a random one.
    #[arg(long, value_enum, value_name = "LOAD", help_heading = "World")]
    pub(crate) load: Option<LoadArg>,
    /// Simulated minutes of the fault phase, 0..1e6 [default: 10].
    ///
    /// The liveness phase follows: faults heal and the pool must converge, then stop.
    #[arg(long, value_name = "M", value_parser = parse_minutes, allow_negative_numbers = true, help_heading = "World")]
    pub(crate) minutes: Option<f64>,
    /// No faults: measure a policy under load alone.
    #[arg(long, help_heading = "World")]
    pub(crate) no_faults: bool,
    #[command(flatten, next_help_heading = "World")]
    pub(crate) traffic: TrafficArgs,
    #[command(flatten, next_help_heading = "Model")]
    pub(crate) model: ModelArgs,

    /// Print the full fixed-column trace: every input and action line.
    #[arg(long, conflicts_with = "seeds", help_heading = "One seed")]
    pub(crate) trace: bool,
    /// Print the policy report.
    ///
    /// Queue waits, requests served, refused and broken, worker-seconds and spawns.
    #[arg(long, conflicts_with = "seeds", help_heading = "One seed")]
    pub(crate) report: bool,
    /// Draw pool size by state, queue length and load over time into this file (.svg or
    /// .png).
    #[arg(
        long,
        value_name = "FILE.svg|png",
        conflicts_with = "seeds",
        help_heading = "One seed"
    )]
    pub(crate) plot: Option<String>,
    /// On a machine-invariant failure, print a minimal input list.
    ///
    /// The recorded inputs are replayed into a fresh machine and cut down (ddmin) to a list
    /// that still fails. Failures that need the world's ground truth replay by seed only.
    #[arg(long, conflicts_with = "seeds", help_heading = "One seed")]
    pub(crate) shrink: bool,

    /// Fail (exit 6) if some coverage mark was never reached.
    ///
    /// A mark is an interesting situation (ladder reached KILL, pid reused, ...) that the
    /// batch as a whole must reach at least once.
    #[arg(long, conflicts_with = "seed", help_heading = "Batch")]
    pub(crate) require_coverage: bool,
    /// Run the seeds on J threads, 1..256 [default: 2].
    ///
    /// The output does not depend on J: results are printed in seed order.
    #[arg(long, value_name = "J", value_parser = parse_jobs, conflicts_with = "seed", help_heading = "Batch")]
    pub(crate) jobs: Option<usize>,
}

/// `--load`: the names `Load::name` prints, with a line of help each.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum LoadArg {
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

pub(crate) fn parse_seed(s: &str) -> Result<u64, String> {
    if s.len() == 40 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        return u64::from_str_radix(&s[..16], 16).map_err(|e| e.to_string());
    }
    s.parse()
        .map_err(|_| format!("`{s}` is not a seed: give a number or a 40-hex commit id"))
}

pub(crate) fn parse_count(s: &str) -> Result<u64, String> {
    s.parse().map_err(|_| format!("`{s}` is not a count"))
}

pub(crate) fn parse_minutes(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|m: &f64| m.is_finite() && (0.0..=1e6).contains(m))
        .ok_or(format!("`{s}` is not a number of minutes (0..1e6)"))
}

pub(crate) fn parse_jobs(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|j| (1..=256).contains(j))
        .ok_or(format!("`{s}` is not a thread count (1..256)"))
}

/// The parsed flags, plus the flags that shape the world as given, for the repro line.
pub(crate) struct Cli {
    pub(crate) args: Args,
    pub(crate) repro_flags: Vec<String>,
}

impl Cli {
    /// Parses the command line; on a usage error clap prints it and exits with code 2.
    pub(crate) fn parse() -> Cli {
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
pub(crate) fn validate(args: Args) -> Result<Args, clap::Error> {
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
pub(crate) fn repro_flags(m: &ArgMatches) -> Vec<String> {
    let given = |id: &str| {
        (m.value_source(id) == Some(ValueSource::CommandLine))
            .then(|| m.index_of(id))
            .flatten()
    };
    let mut flags: Vec<(usize, String)> = [
        "policy",
        "load",
        "minutes",
        "load_trace",
        "trace_format",
        "speed",
        "boot_time",
        "service_time",
        "backlog",
        "spawn_cost",
        "request_cost",
        "accept_order",
        "load_report",
    ]
    .into_iter()
    .filter_map(|id| {
        let raw = m.get_raw(id)?.next_back()?.to_string_lossy();
        Some((given(id)?, format!("--{} {raw}", id.replace('_', "-"))))
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

pub(crate) fn options(a: &Args, seed: u64) -> Result<RunOptions, String> {
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
    o.model = a.model.model();
    if let Some((trace, _)) = load_trace(&a.traffic)? {
        let (trace, minutes) = trace_minutes(trace, a.minutes);
        o.minutes = minutes;
        o.load_until = Some(std::time::Duration::from_secs_f64(minutes * 60.0));
        o.load = Some(Load::Idle);
        o.replay = Some(trace);
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
            "--seed 1 --load-trace t.csv --speed 2 --boot-time 300ms --service-time lognormal:80ms,1",
            "compare apache-prefork unicorn:workers=8 --load-trace t.log --trace-format nginx --out d",
            "compare p.toml --load steady --minutes 5 --image svg,png --jobs 2",
            "sweep --policy p.toml --grid min=1..4 --grid max=8,16 --objective p99<=200ms",
            "calibrate drover.log --access-log access.log --trace-format nginx",
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
            "--seed 1 --load burst --load-trace t.csv",
            "--seed 1 --speed 2",
            "compare",
            "compare unicorn --seeds 3",
            "sweep --grid min=1..2",
            "--seed 1 compare unicorn",
        ] {
            assert_usage_error(line);
        }
    }
}
