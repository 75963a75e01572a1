//! Simulator speed: seeds per second (10 simulated minutes of random faults each) and one
//! 16-worker static pool under steady load for 10 simulated minutes; the simulated/wall
//! ratio is printed from the same runs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use drover_sim::{run, Faults, Load, RunOptions};

fn seeds(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim");
    g.sample_size(20);
    g.throughput(Throughput::Elements(1));
    let mut seed = 0u64;
    g.bench_function("random_seed", |b| {
        b.iter(|| {
            seed += 1;
            run(RunOptions::seed(seed)).events
        })
    });
    let mut opts = RunOptions::seed(1);
    opts.faults = Some(Faults::none());
    opts.load = Some(Load::Steady);
    opts.config = Some(drover_sim::policy::parse("workers = 16\n").unwrap());
    let simulated = run(opts.clone()).sim_time;
    g.bench_function("static16_steady_10min", |b| {
        b.iter(|| run(opts.clone()).events)
    });
    g.finish();
    // criterion reports time per run; the ratio follows from it and the simulated time.
    println!(
        "static16_steady_10min simulates {:.0} s per run",
        simulated.as_secs_f64()
    );
}

criterion_group!(benches, seeds);
criterion_main!(benches);
