//! The sim-to-real benchmark's judge (benches/system/simreal.sh): puts one policy's real run
//! (drover's log, `replay_client`'s CSV) beside drover-sim's run of the same trace
//! (`compare --csv DIR` and its table) and prints them side by side with the issue's goals.
//!
//! ```sh
//! simreal_report spawn-cost --log drover.log
//! simreal_report compare --label static --log drover.log --client client.csv \
//!     --sim-dir simcsv/ --sim-table sim.txt [--series pool.csv] [--row rows.md] [--every 10]
//! ```
//!
//! `spawn-cost`: the median time drover's loop spent in a spawn (from `do spawn` to `in
//! spawned` of the same worker, which includes the fork, the exec and the wait for the
//! exec's status), in µs: what `drover-sim --spawn-cost` takes.
//!
//! `compare`: the real pool size is the number of worker processes spawned and not yet
//! reaped (`in spawned … pid=P` and `in exited pid=P` of drover's info log, dated by the
//! log's wall-clock stamps), on the client's time base (its `t0_realtime_ns`); the
//! simulated one is `booting + idle + busy + stopping` of `samples.csv`. Both are compared
//! at the simulator's sample instants before the trace's last arrival (the simulator's
//! pool is exact there, the real one is exact everywhere), and the RMS of the difference is
//! the pool-size error. Waits are nearest-rank percentiles of served requests, as
//! drover-sim computes them. Goals (issue 15): served within 5 %, p50 and p99 waits within
//! 20 % or 10 ms, pool-size RMS difference at most 1 worker.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

const USAGE: &str = "usage: simreal_report spawn-cost --log FILE\n       simreal_report compare --label NAME --log FILE --client FILE --sim-dir DIR --sim-table FILE [--series FILE] [--row FILE] [--every SECS]";

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = match run(&argv) {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprintln!("simreal_report: {e}\n{USAGE}");
            2
        }
        Err(Failure::Input(e)) => {
            eprintln!("simreal_report: {e}");
            2
        }
    };
    std::process::exit(code);
}

#[derive(Debug)]
enum Failure {
    /// A bad command line (exit 2).
    Usage(String),
    /// A file that cannot be read or makes no sense (exit 2 too: bad input either way,
    /// only the usage line is left out).
    Input(String),
}

#[derive(Debug, PartialEq)]
enum Command {
    SpawnCost {
        log: String,
    },
    Compare {
        label: String,
        log: String,
        client: String,
        sim_dir: String,
        sim_table: String,
        series: Option<String>,
        row: Option<String>,
        every: f64,
    },
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some(sub) = args.first() else {
        return Err("want a command: spawn-cost or compare".into());
    };
    let known: &[&str] = match sub.as_str() {
        "spawn-cost" => &["--log"],
        "compare" => &[
            "--label",
            "--log",
            "--client",
            "--sim-dir",
            "--sim-table",
            "--series",
            "--row",
            "--every",
        ],
        _ => return Err(format!("unknown command {sub}: want spawn-cost or compare")),
    };
    let mut flags: BTreeMap<&str, String> = BTreeMap::new();
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let Some(&name) = known.iter().find(|&&k| k == flag) else {
            return Err(format!("{sub}: unknown argument {flag}"));
        };
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        flags.insert(name, v.clone());
    }
    let mut need = |k: &str| {
        flags
            .remove(k)
            .ok_or_else(|| format!("{sub}: {k} is required"))
    };
    if sub == "spawn-cost" {
        return Ok(Command::SpawnCost {
            log: need("--log")?,
        });
    }
    let (label, log, client) = (need("--label")?, need("--log")?, need("--client")?);
    let (sim_dir, sim_table) = (need("--sim-dir")?, need("--sim-table")?);
    let every = match flags.get("--every") {
        None => 10.0,
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x.is_finite() && (0.1..=3600.0).contains(&x) => x,
            _ => return Err(format!("--every {v}: want seconds, 0.1..=3600")),
        },
    };
    Ok(Command::Compare {
        label,
        log,
        client,
        sim_dir,
        sim_table,
        series: flags.remove("--series"),
        row: flags.remove("--row"),
        every,
    })
}

fn read(flag: &str, path: &str) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| Failure::Input(format!("{flag} {path}: {e}")))
}

fn run(argv: &[String]) -> Result<(), Failure> {
    match parse_args(argv).map_err(Failure::Usage)? {
        Command::SpawnCost { log } => {
            let events = parse_log(&read("--log", &log)?);
            match spawn_cost_us(&events) {
                Some(us) => println!("{us}"),
                None => return Err(Failure::Input(format!("--log {log}: no spawn in it"))),
            }
            Ok(())
        }
        Command::Compare {
            label,
            log,
            client,
            sim_dir,
            sim_table,
            series,
            row,
            every,
        } => {
            let events = parse_log(&read("--log", &log)?);
            let client = parse_client(&read("--client", &client)?)
                .map_err(|e| Failure::Input(format!("--client {client}: {e}")))?;
            let dir = std::path::Path::new(&sim_dir);
            let samples_path = dir.join("samples.csv").to_string_lossy().into_owned();
            let waits_path = dir.join("waits.csv").to_string_lossy().into_owned();
            let samples = parse_samples(&read("--sim-dir", &samples_path)?)
                .map_err(|e| Failure::Input(format!("{samples_path}: {e}")))?;
            let sim_waits = parse_waits(&read("--sim-dir", &waits_path)?)
                .map_err(|e| Failure::Input(format!("{waits_path}: {e}")))?;
            let table = parse_sim_table(&read("--sim-table", &sim_table)?)
                .map_err(|e| Failure::Input(format!("--sim-table {sim_table}: {e}")))?;
            let c = Comparison::new(&label, &events, &client, &samples, sim_waits, &table);
            print!("{}", c.markdown(every));
            if let Some(path) = series {
                std::fs::write(&path, c.series_csv())
                    .map_err(|e| Failure::Input(format!("--series {path}: {e}")))?;
            }
            if let Some(path) = row {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| Failure::Input(format!("--row {path}: {e}")))?;
                f.write_all(c.summary_row().as_bytes())
                    .map_err(|e| Failure::Input(format!("--row {path}: {e}")))?;
            }
            Ok(())
        }
    }
}

// ------------------------------------------------------------------ drover's log

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    /// `do spawn w=S.I`: the machine decided a spawn.
    Decided { worker: String },
    /// `in spawned w=S.I pid=P`: the spawn call returned (after the exec).
    Spawned { worker: String, pid: u32 },
    /// `in exited pid=P`: reaped.
    Exited { pid: u32 },
    /// `drover started`: the first line of a run.
    Started,
}

#[derive(Clone, Debug, PartialEq)]
struct Event {
    /// Wall-clock stamp of the line, ns since the Unix epoch.
    real_ns: i128,
    kind: Kind,
}

/// Drops ANSI colour sequences (a log written to a terminal has them).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn field<'a>(words: &[&'a str], key: &str) -> Option<&'a str> {
    words
        .iter()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

/// The events of drover's log that make the pool; any other line (a worker's own output,
/// other events) is skipped.
fn parse_log(text: &str) -> Vec<Event> {
    let mut events = Vec::new();
    for raw in text.lines() {
        let line = strip_ansi(raw);
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(real_ns) = words
            .first()
            .and_then(|w| drover_sim::lab::trace::utc_stamp_ns(w))
        else {
            continue;
        };
        if line.contains(": drover started: ") {
            events.push(Event {
                real_ns,
                kind: Kind::Started,
            });
            continue;
        }
        // `… drover{pid=N}:  12.345s  in  spawned  w=0.1 pid=1629`
        let Some(at) = words.iter().position(|w| {
            w.strip_suffix('s')
                .is_some_and(|n| !n.is_empty() && n.parse::<f64>().is_ok())
        }) else {
            continue;
        };
        let rest = &words[at + 1..];
        let kind = match rest {
            ["do", "spawn", kv @ ..] => field(kv, "w").map(|w| Kind::Decided {
                worker: w.to_string(),
            }),
            ["in", "spawned", kv @ ..] => match (field(kv, "w"), field(kv, "pid")) {
                (Some(w), Some(pid)) => pid.parse().ok().map(|pid| Kind::Spawned {
                    worker: w.to_string(),
                    pid,
                }),
                _ => None,
            },
            ["in", "exited", kv @ ..] => field(kv, "pid")
                .and_then(|p| p.parse().ok())
                .map(|pid| Kind::Exited { pid }),
            _ => None,
        };
        if let Some(kind) = kind {
            events.push(Event { real_ns, kind });
        }
    }
    events
}

/// Median µs from a spawn's decision to its return, over every spawn in the log.
fn spawn_cost_us(events: &[Event]) -> Option<u64> {
    let mut decided: BTreeMap<&str, i128> = BTreeMap::new();
    let mut costs = Vec::new();
    for e in events {
        match &e.kind {
            Kind::Decided { worker } => {
                decided.insert(worker, e.real_ns);
            }
            Kind::Spawned { worker, .. } => {
                if let Some(at) = decided.remove(worker.as_str()) {
                    costs.push(((e.real_ns - at).max(0) / 1000) as u64);
                }
            }
            _ => {}
        }
    }
    costs.sort_unstable();
    costs.get(costs.len().saturating_sub(1) / 2).copied()
}

/// The pool size as a step function: (seconds since `t0_real_ns`, live workers from then on).
fn pool_steps(events: &[Event], t0_real_ns: i128) -> Vec<(f64, i64)> {
    let mut live = std::collections::BTreeSet::new();
    let mut steps = Vec::new();
    for e in events {
        let changed = match e.kind {
            Kind::Spawned { pid, .. } => live.insert(pid),
            // Only workers: drover's group guard is reaped too, but was never `spawned`.
            Kind::Exited { pid } => live.remove(&pid),
            _ => false,
        };
        if changed {
            let t = (e.real_ns - t0_real_ns) as f64 / 1e9;
            steps.push((t, live.len() as i64));
        }
    }
    steps
}

/// The value of a step function at `t` (0 before its first step).
fn at<T: Copy + Default>(steps: &[(f64, T)], t: f64) -> T {
    let i = steps.partition_point(|&(s, _)| s <= t);
    if i == 0 {
        T::default()
    } else {
        steps[i - 1].1
    }
}

// ------------------------------------------------------------------ the client's CSV

#[derive(Debug, Default)]
struct Client {
    t0_real_ns: i128,
    /// Per request: arrival (s since t0), wait (µs) if served, outcome.
    rows: Vec<(f64, Option<u64>, String)>,
    late_us: Vec<u64>,
    connect_us: Vec<u64>,
    /// Requests served, by worker pid.
    per_worker: BTreeMap<u32, u64>,
    /// Per served request: its time from connect to answer less its wait and its service
    /// time, what the simulator takes to be zero.
    extra_us: Vec<i64>,
}

fn parse_client(text: &str) -> Result<Client, String> {
    let mut c = Client::default();
    let mut lines = text.lines().enumerate();
    let first = lines.next().map(|(_, l)| l).unwrap_or("");
    c.t0_real_ns = first
        .strip_prefix("# ")
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix("t0_realtime_ns="))
        })
        .and_then(|v| v.parse().ok())
        .ok_or("line 1: want `# t0_realtime_ns=… …` (replay_client's first line)")?;
    for (i, line) in lines {
        if line.starts_with("arrival_s") || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let bad = |what: &str| format!("line {}: {what}: {line:?}", i + 1);
        if f.len() != 8 {
            return Err(bad(
                "want arrival_s,wait_us,outcome,late_us,connect_us,pid,service_us,total_us",
            ));
        }
        let arrival: f64 = f[0].parse().map_err(|_| bad("arrival_s"))?;
        let wait = if f[1].is_empty() {
            None
        } else {
            Some(f[1].parse::<u64>().map_err(|_| bad("wait_us"))?)
        };
        if (f[2] == "served") != wait.is_some() {
            return Err(bad("a wait is given exactly for a served request"));
        }
        c.rows.push((arrival, wait, f[2].to_string()));
        c.late_us.push(f[3].parse().map_err(|_| bad("late_us"))?);
        c.connect_us
            .push(f[4].parse().map_err(|_| bad("connect_us"))?);
        if !f[5].is_empty() {
            let pid = f[5].parse().map_err(|_| bad("pid"))?;
            *c.per_worker.entry(pid).or_insert(0) += 1;
        }
        let service: i64 = f[6].parse().map_err(|_| bad("service_us"))?;
        if let (Some(w), false) = (wait, f[7].is_empty()) {
            let total: i64 = f[7].parse().map_err(|_| bad("total_us"))?;
            c.extra_us.push(total - w as i64 - service);
        }
    }
    if c.rows.is_empty() {
        return Err("no requests".into());
    }
    Ok(c)
}

// ------------------------------------------------------------------ drover-sim's output

/// `samples.csv` rows: (t_s, booting + idle + busy + stopping).
fn parse_samples(text: &str) -> Result<Vec<(f64, i64)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        // The policy name is quoted and may hold commas: the figures are the last 7 fields.
        let f: Vec<&str> = line.rsplitn(8, ',').collect();
        let bad = || {
            format!("line {}: want policy,t_s,booting,idle,busy,stopping,queued,offered_per_s: {line:?}", i + 1)
        };
        if f.len() != 8 {
            return Err(bad());
        }
        let t: f64 = f[6].parse().map_err(|_| bad())?;
        let mut pool = 0;
        for v in &f[2..6] {
            pool += v.parse::<i64>().map_err(|_| bad())?;
        }
        out.push((t, pool));
    }
    if out.is_empty() {
        return Err("no samples".into());
    }
    Ok(out)
}

fn parse_waits(text: &str) -> Result<Vec<u64>, String> {
    text.lines()
        .enumerate()
        .skip(1)
        .map(|(i, line)| {
            line.rsplit(',')
                .next()
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("line {}: want policy,wait_us: {line:?}", i + 1))
        })
        .collect()
}

/// The one row of `drover-sim compare`'s table: served, refused, broken, spawns.
#[derive(Debug, PartialEq)]
struct SimRow {
    served: u64,
    refused: u64,
    broken: u64,
    spawns: u64,
}

fn parse_sim_table(text: &str) -> Result<SimRow, String> {
    let mut lines = text.lines().skip_while(|l| {
        let w: Vec<&str> = l.split_whitespace().take(2).collect();
        w != ["policy", "served"]
    });
    lines.next().ok_or("no `policy served …` header")?;
    let row = lines.next().ok_or("no row under the header")?;
    let w: Vec<&str> = row.split_whitespace().collect();
    // name (any words), then served refused broken p50 p95 p99 max worker-s spawns kills at-max
    if w.len() < 12 {
        return Err(format!("the row has too few columns: {row:?}"));
    }
    let n = |i: usize| -> Result<u64, String> {
        w[w.len() - 11 + i]
            .parse()
            .map_err(|_| format!("column {} of {row:?} is no count", w.len() - 11 + i + 1))
    };
    Ok(SimRow {
        served: n(0)?,
        refused: n(1)?,
        broken: n(2)?,
        spawns: n(8)?,
    })
}

// ------------------------------------------------------------------ the comparison

/// The nearest-rank percentile of sorted µs in ms (drover-sim's `percentile_ms`).
fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// The issue's wait goal: within 20 % of the real figure, or within 10 ms.
fn wait_close(sim: f64, real: f64) -> bool {
    (sim - real).abs() <= (0.2 * real).max(10.0)
}

fn served_close(sim: u64, real: u64) -> bool {
    (sim as f64 - real as f64).abs() <= 0.05 * real as f64
}

/// RMS of sim − real at the given instants.
fn rms(pairs: &[(f64, i64, i64)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    let sum: f64 = pairs
        .iter()
        .map(|&(_, s, r)| ((s - r) as f64).powi(2))
        .sum();
    (sum / pairs.len() as f64).sqrt()
}

struct Comparison {
    label: String,
    requests: usize,
    served: (u64, u64),
    refused: (u64, u64),
    /// The real run's failures by kind.
    failures: BTreeMap<String, u64>,
    /// p50, p95, p99, max in ms: sim, real.
    waits: [(f64, f64); 4],
    spawns: (u64, u64),
    /// (t, sim pool, real pool) at the simulator's samples before the last arrival.
    pool: Vec<(f64, i64, i64)>,
    rms: f64,
    /// Seconds from drover's start to the client's time zero.
    drover_lead_s: Option<f64>,
    late_p99_ms: f64,
    late_over_10ms: usize,
    slow_connects: usize,
    /// Requests served per real worker, sorted.
    per_worker: Vec<u64>,
    /// p50, p99 of the real requests' cost beyond their service time, ms.
    extra_ms: (f64, f64),
}

impl Comparison {
    fn new(
        label: &str,
        events: &[Event],
        client: &Client,
        samples: &[(f64, i64)],
        mut sim_waits: Vec<u64>,
        sim: &SimRow,
    ) -> Comparison {
        let mut real_waits: Vec<u64> = client.rows.iter().filter_map(|r| r.1).collect();
        real_waits.sort_unstable();
        sim_waits.sort_unstable();
        let ps = [50.0, 95.0, 99.0, 100.0];
        let waits = ps.map(|p| (percentile_ms(&sim_waits, p), percentile_ms(&real_waits, p)));
        let mut failures = BTreeMap::new();
        for (_, _, outcome) in &client.rows {
            if outcome != "served" {
                *failures.entry(outcome.clone()).or_insert(0) += 1;
            }
        }
        let served_real = real_waits.len() as u64;
        let span = client.rows.iter().map(|r| r.0).fold(0.0, f64::max);
        let steps = pool_steps(events, client.t0_real_ns);
        let pool: Vec<(f64, i64, i64)> = samples
            .iter()
            .filter(|&&(t, _)| t < span)
            .map(|&(t, s)| (t, s, at(&steps, t)))
            .collect();
        let spawns_real = events
            .iter()
            .filter(|e| matches!(e.kind, Kind::Spawned { .. }))
            .count() as u64;
        let drover_lead_s = events
            .iter()
            .find(|e| e.kind == Kind::Started)
            .map(|e| (client.t0_real_ns - e.real_ns) as f64 / 1e9);
        let mut late = client.late_us.clone();
        late.sort_unstable();
        Comparison {
            label: label.to_string(),
            requests: client.rows.len(),
            served: (sim.served, served_real),
            refused: (
                sim.refused + sim.broken,
                client.rows.len() as u64 - served_real,
            ),
            failures,
            waits,
            spawns: (sim.spawns, spawns_real),
            rms: rms(&pool),
            pool,
            drover_lead_s,
            late_p99_ms: percentile_ms(&late, 99.0),
            late_over_10ms: late.iter().filter(|&&l| l > 10_000).count(),
            slow_connects: client.connect_us.iter().filter(|&&c| c > 500_000).count(),
            extra_ms: {
                let mut v: Vec<u64> = client.extra_us.iter().map(|&e| e.max(0) as u64).collect();
                v.sort_unstable();
                (percentile_ms(&v, 50.0), percentile_ms(&v, 99.0))
            },
            per_worker: {
                let mut v: Vec<u64> = client.per_worker.values().copied().collect();
                v.sort_unstable();
                v
            },
        }
    }

    fn goals(&self) -> [bool; 4] {
        [
            served_close(self.served.0, self.served.1),
            wait_close(self.waits[0].0, self.waits[0].1),
            wait_close(self.waits[2].0, self.waits[2].1),
            self.rms <= 1.0,
        ]
    }

    fn markdown(&self, every: f64) -> String {
        let yes = |b: bool| if b { "met" } else { "**not met**" };
        let pct = |s: f64, r: f64| {
            if r == 0.0 {
                if s == 0.0 {
                    "0".to_string()
                } else {
                    "—".to_string()
                }
            } else {
                format!("{:+.1} %", 100.0 * (s - r) / r)
            }
        };
        let g = self.goals();
        let mut o = String::new();
        let _ = writeln!(o, "### {}\n", self.label);
        let _ = writeln!(o, "| measure | sim | real | sim − real | goal | |");
        let _ = writeln!(o, "|---|---|---|---|---|---|");
        let (ss, sr) = self.served;
        let _ = writeln!(
            o,
            "| served of {} | {ss} | {sr} | {} | within 5 % | {} |",
            self.requests,
            pct(ss as f64, sr as f64),
            yes(g[0])
        );
        let kinds: Vec<String> = self
            .failures
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(
            o,
            "| refused (real: {}) | {} | {} | | | |",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(", ")
            },
            self.refused.0,
            self.refused.1
        );
        for (i, name) in ["p50", "p95", "p99", "max"].iter().enumerate() {
            let (s, r) = self.waits[i];
            let goal = match i {
                0 => format!("within 20 % or 10 ms | {}", yes(g[1])),
                2 => format!("within 20 % or 10 ms | {}", yes(g[2])),
                _ => " | ".to_string(),
            };
            let _ = writeln!(
                o,
                "| queue wait {name}, ms | {s:.1} | {r:.1} | {:+.1} ms | {goal} |",
                s - r
            );
        }
        let _ = writeln!(
            o,
            "| spawns | {} | {} | {:+} | | |",
            self.spawns.0,
            self.spawns.1,
            self.spawns.0 as i64 - self.spawns.1 as i64
        );
        let mean = |f: fn(&(f64, i64, i64)) -> i64| {
            self.pool.iter().map(|p| f(p) as f64).sum::<f64>() / self.pool.len().max(1) as f64
        };
        let _ = writeln!(
            o,
            "| pool size, mean | {:.2} | {:.2} | RMS {:.2} over {} instants | RMS ≤ 1 | {} |",
            mean(|p| p.1),
            mean(|p| p.2),
            self.rms,
            self.pool.len(),
            yes(g[3])
        );
        let _ = writeln!(o);
        let lead = self
            .drover_lead_s
            .map_or("unknown".to_string(), |s| format!("{:.3} s", s));
        let _ = writeln!(
            o,
            "drover started {lead} before the client's time zero; client late: p99 {:.2} ms, {} requests over 10 ms; {} connects over 500 ms (SYN retries).\n",
            self.late_p99_ms, self.late_over_10ms, self.slow_connects
        );
        if let (Some(lo), Some(hi)) = (self.per_worker.first(), self.per_worker.last()) {
            let _ = writeln!(
                o,
                "Real requests per worker process: {} processes served; fewest {lo}, median {}, most {hi}. A real request took beyond its wait and service time (connect, accept, the sleep's overshoot, answer): p50 {:.2} ms, p99 {:.2} ms.\n",
                self.per_worker.len(),
                self.per_worker[(self.per_worker.len() - 1) / 2],
                self.extra_ms.0,
                self.extra_ms.1
            );
        }
        // The pool over time, one row per `every` seconds: the latest sample at or before.
        let _ = writeln!(o, "| t (s) | pool sim | pool real |");
        let _ = writeln!(o, "|---|---|---|");
        let mut next = 0.0;
        for &(t, s, r) in &self.pool {
            if t + 1e-9 >= next {
                let _ = writeln!(o, "| {t:.1} | {s} | {r} |");
                next = ((t / every).floor() + 1.0) * every;
            }
        }
        let _ = writeln!(o);
        o
    }

    fn series_csv(&self) -> String {
        let mut o = String::from("t_s,pool_sim,pool_real\n");
        for &(t, s, r) in &self.pool {
            let _ = writeln!(o, "{t:.3},{s},{r}");
        }
        o
    }

    /// `| policy | served | refused | p50 | p95 | p99 | RMS | goals |`, sim / real.
    fn summary_row(&self) -> String {
        let g = self.goals();
        let names = ["served", "p50", "p99", "pool"];
        let missed: Vec<&str> = names
            .iter()
            .zip(g)
            .filter(|(_, ok)| !ok)
            .map(|(n, _)| *n)
            .collect();
        let verdict = if missed.is_empty() {
            "all met".to_string()
        } else {
            format!("not met: {}", missed.join(", "))
        };
        format!(
            "| {} | {} / {} | {} / {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.2} | {} |\n",
            self.label,
            self.served.0,
            self.served.1,
            self.refused.0,
            self.refused.1,
            self.waits[0].0,
            self.waits[0].1,
            self.waits[1].0,
            self.waits[1].1,
            self.waits[2].0,
            self.waits[2].1,
            self.rms,
            verdict
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
2026-12-07T07:00:33.910066Z  INFO drover{pid=1627}: listening on 127.0.0.1:19555 name=listen0
2026-12-07T07:00:33.910453Z  INFO drover{pid=1627}: drover started: sleep 1 pid=1627 policy=\"static\" target=2
2026-12-07T07:00:33.910487Z  INFO drover{pid=1627}:     0.000s  do  spawn          w=0.1 gen=1
2026-12-07T07:00:33.911634Z  INFO drover{pid=1627}:     0.001s  in  spawned        w=0.1 pid=1629
2026-12-07T07:00:33.911653Z  INFO drover{pid=1627}:     0.001s  do  spawn          w=1.1 gen=1
2026-12-07T07:00:33.912589Z  INFO drover{pid=1627}:     0.002s  in  spawned        w=1.1 pid=1630
a worker's own line, ignored
2026-12-07T07:00:33.912601Z  INFO drover{pid=1627}:     0.002s  ev  pool-ready     ready=2
2026-12-07T07:00:34.911994Z  INFO drover{pid=1627}:     1.001s  in  exited         pid=1629 status=code:0
2026-12-07T07:00:34.912040Z  WARN drover{pid=1627}:     1.001s  ev  exited         w=0.1 status=code:0 uptime=1.000s expected=no
2026-12-07T07:00:34.950000Z  INFO drover{pid=1627}:     1.040s  in  exited         pid=1631 status=code:0
\u{1b}[2m2026-12-07T07:00:35.911634Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m drover{pid=1627}:     2.001s  in  spawned        w=0.2 pid=1640
";

    #[test]
    fn the_log_gives_spawns_and_exits() {
        let ev = parse_log(LOG);
        let kinds: Vec<&Kind> = ev.iter().map(|e| &e.kind).collect();
        assert_eq!(
            kinds,
            [
                &Kind::Started,
                &Kind::Decided {
                    worker: "0.1".into()
                },
                &Kind::Spawned {
                    worker: "0.1".into(),
                    pid: 1629
                },
                &Kind::Decided {
                    worker: "1.1".into()
                },
                &Kind::Spawned {
                    worker: "1.1".into(),
                    pid: 1630
                },
                &Kind::Exited { pid: 1629 },
                &Kind::Exited { pid: 1631 },
                &Kind::Spawned {
                    worker: "0.2".into(),
                    pid: 1640
                },
            ]
        );
        // 1147 µs and 936 µs: the median of two is the lower one.
        assert_eq!(spawn_cost_us(&ev), Some(936));
        let t0 = drover_sim::lab::trace::utc_stamp_ns("2026-12-07T07:00:33.910487Z").unwrap();
        let steps = pool_steps(&ev, t0);
        // pid 1631 was never spawned (drover's group guard, say): no step.
        let counts: Vec<i64> = steps.iter().map(|s| s.1).collect();
        assert_eq!(counts, [1, 2, 1, 2]);
        assert_eq!(at(&steps, -1.0), 0);
        assert_eq!(at(&steps, 0.0015), 1);
        assert_eq!(at(&steps, 0.5), 2);
        assert_eq!(at(&steps, 1.5), 1);
        assert_eq!(at(&steps, 3.0), 2);
    }

    #[test]
    fn client_csv_and_sim_output_parse() {
        let c = parse_client(
            "# t0_realtime_ns=5 t0_monotonic_ns=9 speed=2 requests=3\narrival_s,wait_us,outcome,late_us,connect_us,pid,service_us,total_us\n0.000000,120,served,40,30,77,1000,1200\n0.500000,,refused,10,20,,5,\n1.000000,7,served,0,0,77,10,100\n",
        )
        .unwrap();
        assert_eq!(c.t0_real_ns, 5);
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.rows[1], (0.5, None, "refused".into()));
        assert_eq!(c.per_worker, BTreeMap::from([(77, 2)]));
        assert_eq!(c.extra_us, [80, 83]);
        for bad in [
            "",
            "arrival_s,wait_us\n",
            "# t0_realtime_ns=5\n0.1,x,served,0,0,1,1,1\n",
            "# t0_realtime_ns=5\n0.1,,served,0,0,1,1,1\n",
            "# t0_realtime_ns=5\n0.1,5,refused,0,0,,1,\n",
            "# t0_realtime_ns=5\n0.1,5,served,0,0,1,1\n",
            "# t0_realtime_ns=5\n0.1,5,served,0,0,x,1,1\n",
            "# t0_realtime_ns=5\n0.1,5,served,0,0,1,1,x\n",
            "# t0_realtime_ns=5\n",
        ] {
            assert!(parse_client(bad).is_err(), "{bad:?}");
        }
        let s = parse_samples("policy,t_s,booting,idle,busy,stopping,queued,offered_per_s\n\"a,b\",0.375,1,2,3,4,0,5.3\n").unwrap();
        assert_eq!(s, [(0.375, 10)]);
        assert!(parse_samples("h\n\"p\",x,1,2,3,4,0,0\n").is_err());
        assert_eq!(
            parse_waits("policy,wait_us\n\"p\",5\n\"q,r\",7\n").unwrap(),
            [5, 7]
        );
        assert!(parse_waits("policy,wait_us\n\"p\",\n").is_err());
        let table = "trace x (csv, 3 requests over 1.0 s); …\npolicy    served refused broken     p50 ms    p95 ms    p99 ms    max ms   worker-s spawns kills at max s\nmy policy   2984       3      1      697.5    4453.0    4794.5    5025.5       1200      8     0      150\n";
        assert_eq!(
            parse_sim_table(table).unwrap(),
            SimRow {
                served: 2984,
                refused: 3,
                broken: 1,
                spawns: 8
            }
        );
        assert!(parse_sim_table("policy served\nshort 1 2\n").is_err());
        assert!(parse_sim_table("nothing here\n").is_err());
    }

    #[test]
    fn goals_and_rms() {
        assert!(wait_close(105.0, 100.0) && wait_close(119.0, 100.0));
        assert!(!wait_close(121.0, 100.0));
        assert!(wait_close(9.0, 0.0) && !wait_close(11.0, 0.0));
        assert!(served_close(95, 100) && !served_close(94, 100));
        assert_eq!(rms(&[(0.0, 3, 1), (1.0, 1, 1)]), 2f64.sqrt());
        assert_eq!(rms(&[]), 0.0);
    }

    #[test]
    fn bad_command_lines_name_the_flag() {
        let args = |s: &str| -> Vec<String> { s.split_whitespace().map(String::from).collect() };
        assert_eq!(
            parse_args(&args("spawn-cost --log x")).unwrap(),
            Command::SpawnCost { log: "x".into() }
        );
        let ok = "compare --label a --log l --client c --sim-dir d --sim-table t";
        assert!(matches!(
            parse_args(&args(ok)).unwrap(),
            Command::Compare { every, .. } if every == 10.0
        ));
        for (bad, says) in [
            ("", "want a command"),
            ("plot", "unknown command plot"),
            ("spawn-cost", "--log is required"),
            ("spawn-cost --log", "--log needs a value"),
            ("spawn-cost --label x", "unknown argument --label"),
            (
                "compare --label a --log l --client c --sim-dir d",
                "--sim-table is required",
            ),
        ] {
            let e = parse_args(&args(bad)).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        let e = parse_args(&args(&format!("{ok} --every 0"))).unwrap_err();
        assert!(e.contains("--every 0"), "{e}");
    }
}
