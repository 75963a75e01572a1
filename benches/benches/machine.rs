//! Machine inputs per second at 10, 100 and 1,000 workers: heartbeat, load report, a spurious
//! tick, exit and respawn, and a scale decision. Flat numbers across pool sizes are the
//! O(log n) promise; the summary prints the 1,000-worker cost as a ratio of the 10-worker one.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use drover_benches::{drain, pool};
use drover_machine::{ExitStatus, Input, Instant, Pid};

const SIZES: [u32; 3] = [10, 100, 1000];

fn heartbeat(c: &mut Criterion) {
    let mut g = c.benchmark_group("heartbeat");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (mut sup, workers) = pool(n);
        let mut now = 0u64;
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += 1_000;
                k = (k + 1) % workers.len();
                sup.handle(
                    Instant::from_nanos(now),
                    Input::Heartbeat {
                        worker: workers[k].0,
                    },
                );
                drain(&mut sup)
            })
        });
    }
    g.finish();
}

fn load_report(c: &mut Criterion) {
    let mut g = c.benchmark_group("load");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (mut sup, workers) = pool(n);
        let mut now = 0u64;
        let mut k = 0usize;
        let mut requests = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += 1_000;
                k = (k + 1) % workers.len();
                requests += 1;
                // Alternate busy and idle so the idle and retirement orders move.
                let busy = (requests % 2) as u32;
                sup.handle(
                    Instant::from_nanos(now),
                    Input::Load {
                        worker: workers[k].0,
                        busy,
                        oldest_busy_since: (busy > 0).then(|| Instant::from_nanos(now)),
                        requests,
                    },
                );
                drain(&mut sup)
            })
        });
    }
    g.finish();
}

fn tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("tick");
    g.throughput(Throughput::Elements(1));
    for n in SIZES {
        let (mut sup, _) = pool(n);
        let mut now = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += 1_000;
                sup.handle(Instant::from_nanos(now), Input::Tick);
                drain(&mut sup)
            })
        });
    }
    g.finish();
}

fn exit_and_respawn(c: &mut Criterion) {
    let mut g = c.benchmark_group("exit_respawn");
    // Two inputs per iteration: the exit and the new worker's Spawned.
    g.throughput(Throughput::Elements(2));
    for n in SIZES {
        let (mut sup, workers) = pool(n);
        let mut pids: Vec<Pid> = workers.iter().map(|w| w.1).collect();
        let mut next_pid = 1_000_000u32;
        let mut now = 0u64;
        let mut k = 0usize;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                // Uptime past the healthy mark, so every restart is immediate.
                now += 60_000_000_000;
                k = (k + 1) % pids.len();
                let at = Instant::from_nanos(now);
                sup.handle(
                    at,
                    Input::Exited {
                        pid: pids[k],
                        status: ExitStatus::Code(1),
                    },
                );
                while let Some(action) = sup.poll_action() {
                    if let drover_machine::Action::Spawn { worker, .. } = action {
                        next_pid += 1;
                        pids[k] = Pid(next_pid);
                        sup.handle(
                            at,
                            Input::Spawned {
                                worker,
                                pid: Pid(next_pid),
                            },
                        );
                    }
                }
            })
        });
    }
    g.finish();
}

fn scale_decision(c: &mut Criterion) {
    // A dynamic pool's maintenance tick with a backlog report: the spare computation and
    // the ramp, at every pool size (the pool is at max, so it decides and does nothing).
    let mut g = c.benchmark_group("scale_decision");
    g.throughput(Throughput::Elements(2));
    for n in SIZES {
        let mut config = drover_machine::Config::dynamic(n, n, 1, 2);
        config.policy = drover_machine::Policy::Dynamic {
            min: 1,
            max: n,
            start: n,
            min_spare: 1,
            max_spare: n,
        };
        let mut sup = drover_machine::Supervisor::new(config, Instant::ZERO).unwrap();
        let mut next = 0u32;
        while let Some(action) = sup.poll_action() {
            if let drover_machine::Action::Spawn { worker, .. } = action {
                next += 1;
                sup.handle(
                    Instant::ZERO,
                    Input::Spawned {
                        worker,
                        pid: Pid(next),
                    },
                );
            }
        }
        let mut second = 0u64;
        let mut queued = 0u32;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                second += 1;
                queued = (queued + 7) % 50;
                let at = Instant::from_secs(second);
                sup.handle(
                    at,
                    Input::Backlog {
                        listener: 0,
                        queued,
                    },
                );
                drain(&mut sup);
                sup.handle(at, Input::Tick);
                drain(&mut sup)
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    heartbeat,
    load_report,
    tick,
    exit_and_respawn,
    scale_decision
);
criterion_main!(benches);
