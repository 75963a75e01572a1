//! `drover-sim`: run one seed, a batch of seeds, a canary, every planted bug, a policy
//! report, or the policy lab (`compare`, `sweep`).

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

mod cli;

use cli::*;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (
        &cli.args.command,
        cli.args.seed,
        cli.args.seeds,
        cli.args.from,
    ) {
        (Some(LabCommand::Compare(a)), ..) => run_compare(a),
        (Some(LabCommand::Sweep(a)), ..) => run_sweep(a),
        (Some(LabCommand::Calibrate(a)), ..) => run_calibrate(a),
        (None, seed, seeds, from) => run_mode(&cli, seed, seeds, from),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("drover-sim: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn run_mode(
    cli: &Cli,
    seed: Option<u64>,
    seeds: Option<u64>,
    from: Option<u64>,
) -> Result<u8, String> {
    match (seed, seeds, from) {
        (Some(seed), _, _) => run_one(cli, seed),
        (None, Some(count), Some(from)) if cli.args.canaries => run_canaries(cli, count, from),
        (None, Some(count), Some(from)) => run_batch(cli, count, from),
        // clap enforces one of --seed and --seeds, and --seeds with --from.
        _ => Err("give --seed S, or --seeds N --from S".into()),
    }
}
