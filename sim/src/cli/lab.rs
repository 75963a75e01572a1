//! The policy lab's command line: the traffic and model flags every mode shares
//! (`--load-trace`, `--speed`, `--boot-time`, ...), and the `compare` and `sweep`
//! subcommands, which turn flags into a `LabWorld`, print the report and write the pictures.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args as ClapArgs, Subcommand};
use drover_sim::lab::runs::{LabWorld, Traffic};
use drover_sim::lab::sweep::{Grid, Objective};
use drover_sim::lab::trace::{self, Trace, TraceFormat};
use drover_sim::lab::{self as lab_core, policies};
use drover_sim::world::model::{parse_duration, AcceptOrder, LoadReport};
use drover_sim::{Model, Spread};

use crate::*;

/// Where the clients come from, when not from `--load`.
#[derive(ClapArgs, Debug, Clone)]
pub(crate) struct TrafficArgs {
    /// Replay recorded traffic instead of a synthetic load.
    ///
    /// A CSV of `arrival_s,service_s[,key]`, or an access log that records each request's
    /// duration: nginx's combined format with `$request_time` last, Apache's with `%D`
    /// last. Each request arrives when it did and holds a thread for as long as it did.
    /// The run lasts the trace's span unless --minutes cuts it.
    #[arg(long, value_name = "FILE", conflicts_with = "load")]
    pub(crate) load_trace: Option<String>,
    /// The trace's format: auto (from its first line), csv, nginx or apache.
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = parse_trace_format, requires = "load_trace")]
    pub(crate) trace_format: TraceFormat,
    /// Replay the trace this many times faster (2: twice the traffic in half the time).
    #[arg(long, value_name = "X", value_parser = parse_speed, requires = "load_trace")]
    pub(crate) speed: Option<f64>,
}

/// What the world assumes of the program (docs/simulator.md, "The model").
#[derive(ClapArgs, Debug, Clone, Default)]
pub(crate) struct ModelArgs {
    /// From fork to ready: 500ms, 100ms..2s (uniform), exp:1s or lognormal:400ms,0.5
    /// [default: 1ms..3s].
    #[arg(long, value_name = "SPREAD", value_parser = parse_boot)]
    pub(crate) boot_time: Option<Spread>,
    /// How long a synthetic request holds a thread (a trace carries its own)
    /// [default: exp:200ms].
    #[arg(long, value_name = "SPREAD", value_parser = parse_service)]
    pub(crate) service_time: Option<Spread>,
    /// Connections the accept queue holds before it refuses one [default: 128].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) backlog: Option<u32>,
    /// How long each fork blocks the supervisor's loop [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = parse_spawn_cost)]
    pub(crate) spawn_cost: Option<Duration>,
    /// What a request costs its thread beyond its service time: the accept, read, write and
    /// close [default: 0].
    #[arg(long, value_name = "DURATION", value_parser = parse_request_cost)]
    pub(crate) request_cost: Option<Duration>,
    /// Which idle thread gets the next connection: lowest (the first forked with a thread
    /// free: EPOLLEXCLUSIVE waits, drover's embedded runtime) or fifo (the longest waiting:
    /// threads blocking in accept(2)) [default: lowest].
    #[arg(long, value_name = "ORDER", value_parser = ["lowest", "fifo"])]
    pub(crate) accept_order: Option<String>,
    /// When workers report their load: pace (at the heartbeat pace, at most every 2 s) or
    /// change (at every request's start and end, as drover's worker libraries do)
    /// [default: pace].
    #[arg(long, value_name = "WHEN", value_parser = ["pace", "change"])]
    pub(crate) load_report: Option<String>,
}

impl ModelArgs {
    pub(crate) fn model(&self) -> Model {
        let mut m = Model::default();
        if let Some(b) = self.boot_time {
            m.boot = b;
        }
        if let Some(s) = self.service_time {
            m.service = s;
        }
        if let Some(b) = self.backlog {
            m.backlog = b;
        }
        if let Some(c) = self.spawn_cost {
            m.spawn_cost = c;
        }
        if let Some(c) = self.request_cost {
            m.request_cost = c;
        }
        match self.accept_order.as_deref() {
            Some("fifo") => m.accept = AcceptOrder::Fifo,
            Some(_) => m.accept = AcceptOrder::Lowest,
            None => {}
        }
        match self.load_report.as_deref() {
            Some("change") => m.load_report = LoadReport::Change,
            Some(_) => m.load_report = LoadReport::Pace,
            None => {}
        }
        m
    }
}

fn parse_trace_format(s: &str) -> Result<TraceFormat, String> {
    TraceFormat::from_name(s).ok_or(format!("`{s}`: give auto, csv, nginx or apache"))
}

fn parse_speed(s: &str) -> Result<f64, String> {
    s.parse()
        .ok()
        .filter(|x: &f64| x.is_finite() && (0.001..=1000.0).contains(x))
        .ok_or(format!(
            "`{s}` is not a speed (0.001..1000; 2 doubles the traffic)"
        ))
}

fn parse_boot(s: &str) -> Result<Spread, String> {
    Spread::parse("--boot-time", s)
}

fn parse_service(s: &str) -> Result<Spread, String> {
    Spread::parse("--service-time", s)
}

fn parse_spawn_cost(s: &str) -> Result<Duration, String> {
    parse_duration("--spawn-cost", s)
}

fn parse_request_cost(s: &str) -> Result<Duration, String> {
    parse_duration("--request-cost", s)
}

/// Reads and parses `--load-trace`, time-scaled by `--speed`; errors name the file, the
/// line and the field.
pub(crate) fn load_trace(t: &TrafficArgs) -> Result<Option<(Arc<Trace>, String)>, String> {
    let Some(path) = &t.load_trace else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("--load-trace {path}: {e}"))?;
    let mut parsed =
        trace::parse(&text, t.trace_format).map_err(|e| format!("--load-trace {path}: {e}"))?;
    let mut label = path.clone();
    if let Some(speed) = t.speed {
        parsed = parsed.scaled(speed);
        label = format!("{path} at speed {speed}");
    }
    Ok(Some((Arc::new(parsed), label)))
}

/// The trace cut to `minutes`, and the run's length: the trace's span (whole seconds,
/// rounded up) unless given.
pub(crate) fn trace_minutes(trace: Arc<Trace>, minutes: Option<f64>) -> (Arc<Trace>, f64) {
    match minutes {
        None => {
            let secs = trace.span().as_secs_f64().ceil().max(1.0);
            (trace, secs / 60.0)
        }
        Some(m) => {
            let end = Duration::from_secs_f64(m * 60.0);
            if trace.span() <= end {
                return (trace, m);
            }
            let mut cut = (*trace).clone();
            cut.requests.retain(|r| r.arrival <= end);
            (Arc::new(cut), m)
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum LabCommand {
    /// Run several policies under the same seeded load and compare them: one table and
    /// three pictures.
    ///
    /// POLICY is a preset (apache-prefork, php-fpm-dynamic, php-fpm-ondemand,
    /// parallel-server, unicorn, serverengine) or a policy file (.toml), either followed
    /// by `:key=value,...` to set keys over it (unicorn:workers=8).
    Compare(CompareArgs),
    /// Run a grid of config keys over a base policy, in parallel, and report which points
    /// meet an objective at the least cost, and the Pareto front.
    Sweep(SweepArgs),
    /// Read the model off a real run: boot times and the cost of a fork from drover's log,
    /// service times from an access log or trace; prints the flags that make the
    /// simulator's world match.
    Calibrate(CalibrateArgs),
}

#[derive(ClapArgs, Debug)]
pub(crate) struct CalibrateArgs {
    /// drover's own log (what it writes to stderr), from a run with `--readiness notify`.
    #[arg(value_name = "DROVER_LOG")]
    pub(crate) log: String,
    /// An access log or trace of the same run, for the service times (see --load-trace).
    #[arg(long, value_name = "FILE")]
    pub(crate) access_log: Option<String>,
    /// The access log's format: auto, csv, nginx or apache.
    #[arg(long, value_name = "FORMAT", default_value = "auto", value_parser = parse_trace_format, requires = "access_log")]
    pub(crate) trace_format: TraceFormat,
}

/// `drover-sim calibrate`.
pub(crate) fn run_calibrate(a: &CalibrateArgs) -> Result<u8, String> {
    use drover_sim::lab::calibrate;
    let text = std::fs::read_to_string(&a.log).map_err(|e| format!("{}: {e}", a.log))?;
    let measured = calibrate::read_log(&text).map_err(|e| format!("{}: {e}", a.log))?;
    let services = match &a.access_log {
        None => None,
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--access-log {path}: {e}"))?;
            let t = trace::parse(&text, a.trace_format)
                .map_err(|e| format!("--access-log {path}: {e}"))?;
            Some((
                path.as_str(),
                t.requests.iter().map(|r| r.service).collect::<Vec<_>>(),
            ))
        }
    };
    print!(
        "{}",
        calibrate::report(
            &measured,
            services.as_ref().map(|(p, s)| (*p, s.as_slice()))
        )
    );
    Ok(0)
}

/// What every lab run shares.
#[derive(ClapArgs, Debug)]
pub(crate) struct LabArgs {
    /// The seed of the load and the world (the same for every policy).
    #[arg(long, value_name = "S", value_parser = parse_seed, default_value = "1")]
    pub(crate) seed: u64,
    /// Minutes of load [default: a trace's span, else 10].
    #[arg(long, value_name = "M", value_parser = parse_minutes)]
    pub(crate) minutes: Option<f64>,
    /// A synthetic load, relative to the first policy's capacity [default: burst].
    #[arg(long, value_enum, value_name = "LOAD")]
    pub(crate) load: Option<LoadArg>,
    #[command(flatten)]
    pub(crate) traffic: TrafficArgs,
    #[command(flatten)]
    pub(crate) model: ModelArgs,
    /// Also draw the seed's swarm faults (the same for every policy).
    #[arg(long)]
    pub(crate) faults: bool,
    /// Write the pictures into this directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) out: Option<String>,
    /// Also write the raw figures (samples.csv: the pool and the queue over time; waits.csv:
    /// every served request's queue wait) into this directory.
    #[arg(long, value_name = "DIR")]
    pub(crate) csv: Option<String>,
    /// Picture formats, comma-separated: svg, png.
    #[arg(long, value_name = "FORMATS", value_delimiter = ',', default_value = "svg", value_parser = ["svg", "png"])]
    pub(crate) image: Vec<String>,
    /// Runs at once, 1..256 [default: the machine's cores]. The report does not depend on it.
    #[arg(long, value_name = "J", value_parser = parse_jobs)]
    pub(crate) jobs: Option<usize>,
}

#[derive(ClapArgs, Debug)]
pub(crate) struct CompareArgs {
    /// The policies to compare.
    #[arg(value_name = "POLICY", required = true)]
    pub(crate) policies: Vec<String>,
    #[command(flatten)]
    pub(crate) lab: LabArgs,
}

#[derive(ClapArgs, Debug)]
pub(crate) struct SweepArgs {
    /// The base policy the grid's keys are set over: a preset or a .toml file.
    #[arg(long, value_name = "POLICY")]
    pub(crate) policy: String,
    /// `key=a..b` (whole numbers) or `key=a,b,c`; several per flag, space-separated, or
    /// several flags.
    #[arg(long, value_name = "KEY=VALUES", required = true)]
    pub(crate) grid: Vec<String>,
    /// Bounds a point must keep, comma-separated: p50, p95, p99, max (queue waits) and
    /// refused, broken (counts), e.g. `p99<=200ms,refused<=0`. The least worker-seconds
    /// among the points that keep them is the best.
    #[arg(long, value_name = "BOUNDS", value_parser = Objective::parse)]
    pub(crate) objective: Option<Objective>,
    #[command(flatten)]
    pub(crate) lab: LabArgs,
}

impl LabArgs {
    fn world(&self) -> Result<LabWorld, String> {
        let (traffic, minutes) = match load_trace(&self.traffic)? {
            Some((trace, label)) => {
                let (trace, minutes) = trace_minutes(trace, self.minutes);
                (Traffic::Replay { trace, label }, minutes)
            }
            None => (
                Traffic::Synthetic(self.load.map_or(Load::Burst, Load::from)),
                self.minutes.unwrap_or(10.0),
            ),
        };
        Ok(LabWorld {
            seed: self.seed,
            minutes,
            traffic,
            model: self.model.model(),
            faults: self.faults,
            pictures: self.out.is_some() || self.csv.is_some(),
        })
    }

    fn jobs(&self) -> usize {
        self.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
        })
    }

    fn out_dir(&self) -> Result<Option<std::path::PathBuf>, String> {
        make_dir("--out", self.out.as_deref())
    }

    /// Writes `--csv`'s files, if asked, and says where.
    fn write_csv(&self, figures: &[lab_core::runs::Figures]) -> Result<(), String> {
        if let Some(dir) = make_dir("--csv", self.csv.as_deref())? {
            for path in lab_core::write_csv(figures, &dir)? {
                println!("figures: {path}");
            }
        }
        Ok(())
    }
}

fn make_dir(flag: &str, dir: Option<&str>) -> Result<Option<std::path::PathBuf>, String> {
    let Some(dir) = dir else {
        return Ok(None);
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("{flag} {dir}: {e}"))?;
    Ok(Some(dir.into()))
}

impl LabArgs {}

fn extensions(lab: &LabArgs) -> Vec<&str> {
    lab.image.iter().map(String::as_str).collect()
}

/// `drover-sim compare`: exit 0, or 3 if a run broke a check of the simulator.
pub(crate) fn run_compare(a: &CompareArgs) -> Result<u8, String> {
    let policies = a
        .policies
        .iter()
        .map(|spec| policies::resolve(spec))
        .collect::<Result<Vec<_>, _>>()?;
    let world = a.lab.world()?;
    let dir = a.lab.out_dir()?;
    let (report, figures) = lab_core::compare(&world, &policies, a.lab.jobs());
    print!("{report}");
    a.lab.write_csv(&figures)?;
    if let Some(dir) = dir {
        let title = format!("drover-sim compare, seed {}", world.seed);
        for path in lab_core::draw_comparison(&figures, &title, &dir, &extensions(&a.lab))? {
            println!("picture: {path}");
        }
    }
    Ok(exit_of(&figures))
}

/// `drover-sim sweep`: exit 0, or 3 if a run broke a check of the simulator.
pub(crate) fn run_sweep(a: &SweepArgs) -> Result<u8, String> {
    let base = policies::resolve(&a.policy)?;
    let base_source = policies::source(&a.policy)?;
    let grid = Grid::parse(&a.grid)?;
    let world = a.lab.world()?;
    let dir = a.lab.out_dir()?;
    let (report, figures) = lab_core::sweep(
        &world,
        &base.name,
        &base_source,
        &grid,
        a.objective.as_ref(),
        a.lab.jobs(),
    );
    print!("{report}");
    a.lab.write_csv(&figures)?;
    if let Some(dir) = dir {
        let title = format!("drover-sim sweep over {}, seed {}", base.name, world.seed);
        for path in lab_core::draw_sweep(
            &figures,
            a.objective.as_ref(),
            &title,
            &dir,
            &extensions(&a.lab),
        )? {
            println!("picture: {path}");
        }
    }
    Ok(exit_of(&figures))
}

fn exit_of(figures: &[lab_core::runs::Figures]) -> u8 {
    if figures.iter().all(|f| f.outcome == Outcome::Passed) {
        0
    } else {
        EXIT_SAFETY
    }
}
