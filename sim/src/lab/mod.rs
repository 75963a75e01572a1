//! The policy lab: what an operator or a researcher uses to ask which pool policy serves a
//! load best, at what cost. It owns recorded traffic (`trace`), the pictures (`plot`), and
//! running several policies under the same load (compare, sweep). It must not decide
//! anything about the pool: every run drives the real machine through the world.

pub mod calibrate;
pub mod plot;
pub mod policies;
pub mod runs;
pub mod sweep;
pub mod trace;

use std::path::Path;

use plot::{CostPoint, RunSeries};
use policies::NamedPolicy;
use runs::{Figures, LabWorld};
use sweep::{Grid, Objective};

/// A comparison: every policy under `world`; the report (heading and table) and the
/// figures, in the order given. The same world and policies give the same report, byte
/// for byte, on any number of threads.
pub fn compare(world: &LabWorld, policies: &[NamedPolicy], jobs: usize) -> (String, Vec<Figures>) {
    let figures = runs::run_all(world, policies, jobs);
    let report = format!("{}\n{}", world.describe(), runs::table(&figures));
    (report, figures)
}

/// A sweep: the grid's points over `base` (a policy's text and the keys set over it) under
/// `world`; the report
/// (heading, table in grid order, verdict) and the figures of the valid points.
pub fn sweep(
    world: &LabWorld,
    base_name: &str,
    base: &(String, Vec<(String, drover_machine::Setting)>),
    grid: &Grid,
    objective: Option<&Objective>,
    jobs: usize,
) -> (String, Vec<Figures>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for p in sweep::policies(&base.0, &base.1, grid) {
        match p {
            Ok(p) => valid.push(p),
            Err(e) => invalid.push(e),
        }
    }
    let figures = runs::run_all(world, &valid, jobs);
    let report = format!(
        "{}\nsweep over {base_name}: {} points ({} valid)\n{}{}",
        world.describe(),
        valid.len() + invalid.len(),
        valid.len(),
        runs::table(&figures),
        sweep::verdict(&figures, &invalid, objective)
    );
    (report, figures)
}

/// The comparison's pictures into `dir`: `compare-timeline`, `compare-waits` and
/// `compare-cost`, one file per extension in `extensions` (`svg`, `png`). Returns the paths
/// written.
pub fn draw_comparison(
    figures: &[Figures],
    title: &str,
    dir: &Path,
    extensions: &[&str],
) -> Result<Vec<String>, String> {
    let series: Vec<RunSeries> = figures
        .iter()
        .map(|f| RunSeries {
            name: &f.name,
            samples: &f.samples,
            waits_us: &f.waits_us,
        })
        .collect();
    let pareto = sweep::pareto(figures);
    let labels = cost_labels(figures);
    let points = cost_points(figures, &labels, &pareto);
    let mut written = Vec::new();
    for ext in extensions {
        let path = |stem: &str| {
            dir.join(format!("{stem}.{ext}"))
                .to_string_lossy()
                .into_owned()
        };
        let p = path("compare-timeline");
        plot::compare_timeline(&series, &format!("{title}: pool and queue"), &p)?;
        written.push(p);
        let p = path("compare-waits");
        plot::wait_cdf(&series, &format!("{title}: queue waits"), &p)?;
        written.push(p);
        let p = path("compare-cost");
        plot::cost_vs_p99(&points, None, &format!("{title}: cost and tail wait"), &p)?;
        written.push(p);
    }
    Ok(written)
}

/// The sweep's cost chart into `dir` (`sweep-cost.EXT`), the objective's p99 bound drawn.
pub fn draw_sweep(
    figures: &[Figures],
    objective: Option<&Objective>,
    title: &str,
    dir: &Path,
    extensions: &[&str],
) -> Result<Vec<String>, String> {
    let pareto = sweep::pareto(figures);
    let labels = cost_labels(figures);
    let points = cost_points(figures, &labels, &pareto);
    let bound = objective.and_then(|o| {
        o.terms
            .iter()
            .find(|(m, _)| *m == sweep::Metric::P99)
            .map(|&(_, b)| b)
    });
    let mut written = Vec::new();
    for ext in extensions {
        let p = dir
            .join(format!("sweep-cost.{ext}"))
            .to_string_lossy()
            .into_owned();
        plot::cost_vs_p99(&points, bound, &format!("{title}: cost and tail wait"), &p)?;
        written.push(p);
    }
    Ok(written)
}

/// The runs' raw figures for other tools, into `dir`: `samples.csv` (the pool and the queue
/// over time, one row per policy and sample) and `waits.csv` (every served request's queue
/// wait). Returns the paths written.
pub fn write_csv(figures: &[Figures], dir: &Path) -> Result<Vec<String>, String> {
    use core::fmt::Write as _;
    let mut samples = String::from("policy,t_s,booting,idle,busy,stopping,queued,offered_per_s\n");
    let mut waits = String::from("policy,wait_us\n");
    for f in figures {
        // A policy name may hold commas (`max=16,max_spare=6`): quote it.
        let name = format!("\"{}\"", f.name.replace('"', "\"\""));
        for s in &f.samples {
            let _ = writeln!(
                samples,
                "{name},{:.3},{},{},{},{},{},{:.3}",
                s.t, s.booting, s.idle, s.busy, s.stopping, s.queued, s.load
            );
        }
        for w in &f.waits_us {
            let _ = writeln!(waits, "{name},{w}");
        }
    }
    let mut written = Vec::new();
    for (file, text) in [("samples.csv", samples), ("waits.csv", waits)] {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path.to_string_lossy().into_owned());
    }
    Ok(written)
}

/// The cost chart's labels: runs that land on the same point (a sweep's keys that change
/// nothing under this load) are drawn once, labelled with the first and how many more,
/// instead of as a pile of overprinted labels.
fn cost_labels(figures: &[Figures]) -> Vec<Option<String>> {
    let key = |f: &Figures| (f.worker_seconds.to_bits(), f.p99_ms().to_bits());
    figures
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if figures[..i].iter().any(|g| key(g) == key(f)) {
                return None; // drawn with the first run on its point
            }
            let alike = figures[i + 1..].iter().filter(|g| key(g) == key(f)).count();
            Some(match alike {
                0 => f.name.clone(),
                n => format!("{} (+{n} alike)", f.name),
            })
        })
        .collect()
}

fn cost_points<'a>(
    figures: &[Figures],
    labels: &'a [Option<String>],
    pareto: &[bool],
) -> Vec<CostPoint<'a>> {
    figures
        .iter()
        .zip(labels)
        .zip(pareto)
        .filter_map(|((f, label), &p)| {
            Some(CostPoint {
                name: label.as_deref()?,
                worker_seconds: f.worker_seconds,
                p99_ms: f.p99_ms(),
                pareto: p,
            })
        })
        .collect()
}
