//! The policy lab: reports are the same bytes for the same inputs on any number of threads,
//! every replayed request is accounted for, the figures agree with what a trace and a
//! config imply, and bad input gets an error naming the line and the field.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use drover_sim::lab::policies::{self, NamedPolicy};
use drover_sim::lab::runs::{LabWorld, Traffic};
use drover_sim::lab::sweep::{Grid, Objective};
use drover_sim::lab::trace::{self, Request, Trace, TraceFormat};
use drover_sim::{lab, Load, Model, Spread};

const EXAMPLE: &str = include_str!("../traces/example.csv");

fn example_world(pictures: bool) -> LabWorld {
    let trace = trace::parse(EXAMPLE, TraceFormat::Auto).unwrap();
    LabWorld {
        seed: 1,
        minutes: 5.0,
        traffic: Traffic::Replay {
            trace: Arc::new(trace),
            label: "example.csv".into(),
        },
        model: Model {
            boot: Spread::Fixed(Duration::from_millis(300)),
            ..Model::default()
        },
        faults: false,
        pictures,
    }
}

fn presets(specs: &[&str]) -> Vec<NamedPolicy> {
    specs
        .iter()
        .map(|s| policies::resolve(s).unwrap())
        .collect()
}

#[test]
fn a_comparison_is_the_same_bytes_on_any_number_of_threads() {
    let ps = presets(&[
        "apache-prefork:max=16",
        "php-fpm-ondemand:max=16",
        "parallel-server:max=16",
        "unicorn:workers=16",
    ]);
    let (one, figures) = lab::compare(&example_world(false), &ps, 1);
    let (four, _) = lab::compare(&example_world(false), &ps, 4);
    assert_eq!(one, four);
    assert_eq!(figures.len(), 4);
    for f in &figures {
        assert_eq!(f.outcome, drover_sim::Outcome::Passed, "{}", f.name);
        // Every replayed request arrives once and is served or refused.
        assert_eq!(f.arrivals, 2984, "{}", f.name);
        assert_eq!(f.served + f.refused + f.broken, f.arrivals, "{}", f.name);
    }
}

#[test]
fn a_sweep_is_the_same_bytes_on_any_number_of_threads_and_judges_its_points() {
    let base = policies::source("sim/policies/dynamic-2-16.toml")
        .or_else(|_| policies::source("policies/dynamic-2-16.toml"))
        .unwrap();
    let grid = Grid::parse(&["min=1..2 max=4,16 max_spare=2,6".into()]).unwrap();
    let objective = Objective::parse("p99<=300ms,refused<=0").unwrap();
    let world = example_world(false);
    let (one, figures) = lab::sweep(&world, "dynamic-2-16", &base, &grid, Some(&objective), 1);
    let (three, _) = lab::sweep(&world, "dynamic-2-16", &base, &grid, Some(&objective), 3);
    assert_eq!(one, three);
    // max=4 is below the base's min_spare + min... every point is valid here.
    assert_eq!(figures.len(), 8, "{one}");
    assert!(
        one.contains("objective p99<=300ms,refused<=0: met by"),
        "{one}"
    );
    assert!(one.contains("pareto front"), "{one}");
    // A bigger pool never costs less in this world: max=16 with 6 spares is the dearest.
    let dearest = figures
        .iter()
        .max_by(|a, b| a.worker_seconds.total_cmp(&b.worker_seconds))
        .unwrap();
    assert!(dearest.name.contains("max_spare=6"), "{one}");
}

/// A static pool big enough for a trace's peak serves every request without a wait once
/// booted, and costs exactly its size times the run: the figures follow from the trace and
/// the config.
#[test]
fn a_static_pool_above_the_peak_waits_only_for_its_boot() {
    // Ten requests a second, each 50 ms, for 60 s: at most one in flight.
    let requests = (0..600)
        .map(|i| Request {
            arrival: Duration::from_millis(1000 + 100 * i),
            service: Duration::from_millis(50),
            key: None,
        })
        .collect();
    let mut trace = Trace {
        requests,
        format: "csv",
    };
    let first = trace.requests[0].arrival;
    for r in &mut trace.requests {
        r.arrival -= first;
    }
    let world = LabWorld {
        seed: 3,
        minutes: 1.0,
        traffic: Traffic::Replay {
            trace: Arc::new(trace),
            label: "regular".into(),
        },
        model: Model {
            boot: Spread::Fixed(Duration::from_millis(500)),
            ..Model::default()
        },
        faults: false,
        pictures: true,
    };
    let (report, figures) = lab::compare(&world, &presets(&["unicorn:workers=2"]), 1);
    let f = &figures[0];
    assert_eq!((f.served, f.refused), (600, 0), "{report}");
    // Only the requests that came while the pool booted waited (or queued behind them for
    // the first second), and none longer than the boot.
    assert!(f.wait_ms[3] <= 500.0, "{report}");
    let waited = f.waits_us.iter().filter(|&&w| w > 0).count();
    assert!((5..=10).contains(&waited), "{waited} waited: {report}");
    assert_eq!(f.spawns, 2, "{report}");
    // Two workers for the minute of load (the final stop adds at most a few seconds).
    assert!(
        (120.0..130.0).contains(&f.worker_seconds),
        "{}",
        f.worker_seconds
    );
    assert!(f.samples.len() > 100 && f.waits_us.len() == 600);
}

#[test]
fn a_synthetic_load_is_the_same_clients_for_every_policy() {
    let world = LabWorld {
        seed: 9,
        minutes: 3.0,
        traffic: Traffic::Synthetic(Load::Burst),
        model: Model::default(),
        faults: false,
        pictures: false,
    };
    let (report, figures) = lab::compare(
        &world,
        &presets(&[
            "unicorn:workers=8",
            "php-fpm-dynamic:max=8",
            "unicorn:workers=2",
        ]),
        2,
    );
    // The arrivals are drawn from the seed and the first policy's capacity, not from the
    // policy each run has.
    assert_eq!(figures[0].arrivals, figures[1].arrivals, "{report}");
    assert_eq!(figures[0].arrivals, figures[2].arrivals, "{report}");
    assert!(figures[2].wait_ms[2] > figures[0].wait_ms[2], "{report}");
}

#[test]
fn the_cli_names_the_line_and_field_of_a_bad_trace_and_exits_2() {
    let dir = std::env::temp_dir().join(format!("drover-sim-lab-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.csv");
    std::fs::write(&bad, "arrival_s,service_s\n0.1,0.2\n0.5,abc\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drover-sim"))
        .args(["compare", "unicorn", "--load-trace"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("line 3") && err.contains("service_s") && err.contains("abc"),
        "{err}"
    );
    for (args, says) in [
        (vec!["compare", "no-such-preset"], "no such preset"),
        (vec!["compare", "unicorn", "--speed", "0"], "not a speed"),
        (
            vec!["compare", "unicorn", "--boot-time", "soon"],
            "--boot-time",
        ),
        (
            vec!["sweep", "--policy", "unicorn", "--grid", "workers=3..1"],
            "backwards",
        ),
        (
            vec![
                "sweep",
                "--policy",
                "unicorn",
                "--grid",
                "workers=1",
                "--objective",
                "p99<1s",
            ],
            "metric<=bound",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_drover-sim"))
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    // A good run writes its pictures where asked and says so.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/traces/example.csv");
    let out = Command::new(env!("CARGO_BIN_EXE_drover-sim"))
        .args([
            "compare",
            "unicorn:workers=4",
            "apache-prefork:max=8",
            "--load-trace",
            example,
            "--out",
        ])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    for name in [
        "compare-timeline.svg",
        "compare-waits.svg",
        "compare-cost.svg",
    ] {
        assert!(dir.join(name).exists(), "{name}: {stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The accept order decides whether an ondemand pool ever shrinks under a light steady load:
/// with `fifo` the idle workers take turns and none idles for the idle timeout; with `lowest`
/// the first one takes nearly everything and the others retire. A request cost shows in the
/// waits of a saturated pool.
#[test]
fn the_model_s_accept_order_and_request_cost_change_what_a_pool_does() {
    use drover_sim::world::model::{AcceptOrder, LoadReport};
    let run = |accept: AcceptOrder, cost: Duration, spec: &str| {
        let world = LabWorld {
            seed: 2,
            minutes: 3.0,
            traffic: Traffic::Synthetic(Load::Steady),
            model: Model {
                boot: Spread::Fixed(Duration::from_millis(300)),
                accept,
                request_cost: cost,
                load_report: LoadReport::Change,
                ..Model::default()
            },
            faults: false,
            pictures: false,
        };
        lab::compare(&world, &presets(&[spec]), 1).1.remove(0)
    };
    let lowest = run(
        AcceptOrder::Lowest,
        Duration::ZERO,
        "php-fpm-ondemand:max=16",
    );
    let fifo = run(AcceptOrder::Fifo, Duration::ZERO, "php-fpm-ondemand:max=16");
    assert_eq!(lowest.arrivals, fifo.arrivals, "the same clients");
    assert!(
        fifo.worker_seconds > lowest.worker_seconds,
        "fifo {} against lowest {} worker-seconds",
        fifo.worker_seconds,
        lowest.worker_seconds
    );
    let cheap = run(AcceptOrder::Fifo, Duration::ZERO, "unicorn:workers=4");
    let dear = run(
        AcceptOrder::Fifo,
        Duration::from_millis(20),
        "unicorn:workers=4",
    );
    assert!(
        dear.wait_ms[2] > cheap.wait_ms[2],
        "{:?} {:?}",
        dear.wait_ms,
        cheap.wait_ms
    );
}
