//! Running policies under one load: the world every policy of a comparison or a sweep meets
//! ([`LabWorld`]: seed, length, traffic, model, faults or none), one run per policy on as
//! many threads as asked (results in the order given, whatever the threads did), and the
//! figures a user compares them by ([`Figures`]) as one fixed-width table. It must not
//! judge the figures (`sweep` does, against an objective) nor draw them (`plot`).

use core::fmt::Write as _;
use core::time::Duration;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::lab::policies::NamedPolicy;
use crate::lab::trace::Trace;
use crate::swarm::{Faults, Load};
use crate::world::{self, Model, Outcome, RunOptions, Sample};

/// What clients come.
#[derive(Clone, Debug)]
pub enum Traffic {
    /// A synthetic load, its rates relative to the first policy's capacity.
    Synthetic(Load),
    /// A recorded trace; `label` says where from (the report's first line).
    Replay { trace: Arc<Trace>, label: String },
}

/// The world every policy meets: the same seed, clients, model and (if any) faults.
#[derive(Clone, Debug)]
pub struct LabWorld {
    pub seed: u64,
    /// Length of the measured load in minutes (a trace's own span unless given).
    pub minutes: f64,
    pub traffic: Traffic,
    pub model: Model,
    /// Draw the seed's swarm faults (the same for every policy); none by default: a
    /// comparison measures policies under load alone.
    pub faults: bool,
    /// Keep samples and waits for pictures.
    pub pictures: bool,
}

impl LabWorld {
    /// The report's heading: the traffic, its length, the model and the seed.
    pub fn describe(&self) -> String {
        let traffic = match &self.traffic {
            Traffic::Synthetic(l) => format!("synthetic load {}", l.name()),
            Traffic::Replay { trace, label } => format!(
                "trace {label} ({}, {} requests over {:.1} s)",
                trace.format,
                trace.requests.len(),
                trace.span().as_secs_f64()
            ),
        };
        let model = match &self.traffic {
            Traffic::Synthetic(_) => self.model.to_string(),
            // A replayed request holds its thread for its recorded time.
            Traffic::Replay { .. } => self.model.to_string().replace(
                &format!("service-time={}", self.model.service),
                "service-time=trace",
            ),
        };
        format!(
            "{traffic}; {:.1} min; seed {}; {}; model: {model}",
            self.minutes,
            self.seed,
            if self.faults {
                "swarm faults"
            } else {
                "no faults"
            },
        )
    }

    /// The options of one policy's run; `capacity`: what a synthetic load is relative to.
    fn options(&self, policy: &NamedPolicy, capacity: f64) -> RunOptions {
        let mut o = RunOptions::seed(self.seed);
        o.minutes = self.minutes;
        o.config = Some(policy.config.clone());
        o.model = self.model.clone();
        o.load_capacity = Some(capacity);
        o.load_until = Some(Duration::from_secs_f64(self.minutes * 60.0));
        o.keep_samples = self.pictures;
        match &self.traffic {
            Traffic::Synthetic(l) => o.load = Some(*l),
            Traffic::Replay { trace, .. } => {
                o.load = Some(Load::Idle); // no synthetic arrivals beside the trace
                o.replay = Some(trace.clone());
            }
        }
        if !self.faults {
            o.faults = Some(Faults::none());
        }
        o
    }
}

/// One policy's run, as the table and the pictures see it.
#[derive(Clone, Debug)]
pub struct Figures {
    pub name: String,
    pub outcome: Outcome,
    pub arrivals: u64,
    pub served: u64,
    pub refused: u64,
    pub broken: u64,
    /// Queue wait percentiles of served requests in ms: p50, p95, p99, max.
    pub wait_ms: [f64; 4],
    pub worker_seconds: f64,
    pub spawns: u64,
    pub kills: u64,
    pub seconds_at_max: f64,
    pub samples: Vec<Sample>,
    pub waits_us: Vec<u64>,
}

impl Figures {
    pub fn p99_ms(&self) -> f64 {
        self.wait_ms[2]
    }
}

/// Runs every policy in `world` on `jobs` threads; the figures come back in the order of
/// `policies`. A synthetic load's rates are relative to the first policy's capacity, so
/// every policy meets the same clients.
pub fn run_all(world: &LabWorld, policies: &[NamedPolicy], jobs: usize) -> Vec<Figures> {
    let Some(first) = policies.first() else {
        return Vec::new();
    };
    let capacity = world::capacity_of(&first.config, &world.model);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Figures>>> = Mutex::new(vec![None; policies.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.clamp(1, policies.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(policy) = policies.get(i) else {
                    break;
                };
                let figures = run_one(world, policy, capacity);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(figures);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|f| f.expect("every index was run"))
        .collect()
}

fn run_one(world: &LabWorld, policy: &NamedPolicy, capacity: f64) -> Figures {
    let r = world::run(world.options(policy, capacity));
    let s = &r.stats;
    let p = s.wait_percentiles_ms(&[50.0, 95.0, 99.0, 100.0]);
    Figures {
        name: policy.name.clone(),
        outcome: r.outcome.clone(),
        arrivals: s.arrivals,
        served: s.served,
        refused: s.refused,
        broken: s.broken,
        wait_ms: [p[0], p[1], p[2], p[3]],
        worker_seconds: s.worker_seconds,
        spawns: s.spawns,
        kills: s.kills,
        seconds_at_max: s.seconds_at_max,
        samples: if world.pictures {
            r.samples
        } else {
            Vec::new()
        },
        waits_us: if world.pictures {
            s.queue_waits_us.clone()
        } else {
            Vec::new()
        },
    }
}

/// The comparison table: one row per run, fixed columns, the same bytes for the same runs.
/// A run that broke a check of the simulator says so under the table (that is a bug of
/// drover's, worth a report with the seed).
pub fn table(figures: &[Figures]) -> String {
    let width = figures
        .iter()
        .map(|f| f.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:>8} {:>7} {:>6}  {:>9} {:>9} {:>9} {:>9}  {:>9} {:>6} {:>5} {:>8}",
        "policy",
        "served",
        "refused",
        "broken",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "worker-s",
        "spawns",
        "kills",
        "at max s"
    );
    for f in figures {
        let _ = writeln!(
            out,
            "{:<width$}  {:>8} {:>7} {:>6}  {:>9.1} {:>9.1} {:>9.1} {:>9.1}  {:>9.0} {:>6} {:>5} {:>8.0}",
            f.name,
            f.served,
            f.refused,
            f.broken,
            f.wait_ms[0],
            f.wait_ms[1],
            f.wait_ms[2],
            f.wait_ms[3],
            f.worker_seconds,
            f.spawns,
            f.kills,
            f.seconds_at_max
        );
    }
    for f in figures {
        if f.outcome != Outcome::Passed {
            let _ = writeln!(
                out,
                "{}: the run FAILED a check of the simulator: {:?}",
                f.name, f.outcome
            );
        }
    }
    out
}
