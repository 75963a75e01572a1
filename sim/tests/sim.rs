//! The simulator's own checks: a fixed batch of seeds passes, a seed reproduces its run
//! exactly, the canary is caught, and one seed's full trace is pinned as a snapshot so a
//! change of behaviour or of the random streams shows up in review.

use drover_sim::{run, Faults, Load, Mark, Outcome, RunOptions};

fn quick(seed: u64) -> RunOptions {
    let mut o = RunOptions::seed(seed);
    o.minutes = 3.0;
    o
}

#[test]
fn a_fixed_batch_of_seeds_passes() {
    let mut failures = Vec::new();
    let mut coverage = drover_sim::Coverage::new();
    // DROVER_SIM_SEEDS widens the batch when it is the test command of a mutation run
    // (docs/simulator.md); the default keeps `cargo test` quick.
    let seeds: u64 = std::env::var("DROVER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    for seed in 0..seeds {
        let r = run(quick(seed));
        coverage.merge(&r.coverage);
        if r.outcome != Outcome::Passed {
            failures.push(format!("seed {seed}: {:?}", r.outcome));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // The batch is meant to exercise the ladder, crashes and pid reuse; if it stops doing
    // so the simulator lost its teeth.
    for mark in [
        Mark::LadderKill,
        Mark::CrashLooping,
        Mark::PidReused,
        Mark::ForkFailed,
    ] {
        assert!(coverage.count(mark) > 0, "{} never reached", mark.label());
    }
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [3, 17, 4242] {
        let a = run(quick(seed));
        let b = run(quick(seed));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.inputs.len(), b.inputs.len());
    }
    assert_ne!(run(quick(3)).trace_hash, run(quick(4)).trace_hash);
}

#[test]
fn the_canary_is_caught() {
    for seed in 0..10 {
        let mut o = quick(seed);
        o.canary = true;
        o.load = Some(Load::Steady);
        let r = run(o);
        match r.outcome {
            Outcome::Safety(what) => assert!(what.contains("ladder bound"), "{what}"),
            other => panic!("seed {seed}: the planted bug went unnoticed: {other:?}"),
        }
    }
}

#[test]
fn a_calm_pool_serves_everything() {
    // No faults, steady load at half capacity, a static pool: nothing refused or broken.
    let mut o = quick(1);
    o.faults = Some(Faults::none());
    o.load = Some(Load::Steady);
    o.config = Some(drover_sim::policy::parse("workers = 8\nthreads = 2\n").unwrap());
    let r = run(o);
    assert_eq!(r.outcome, Outcome::Passed);
    assert!(r.stats.served > 1000, "{:?}", r.stats.served);
    assert_eq!(r.stats.refused, 0);
    assert_eq!(r.stats.broken, 0);
    assert_eq!(r.exit_code, Some(0));
}

#[test]
fn golden_trace_of_one_seed() {
    let mut o = RunOptions::seed(7);
    o.minutes = 0.5;
    o.keep_trace = true;
    o.load = Some(Load::Idle);
    o.config = Some(
        drover_sim::policy::parse(
            "workers = 2\nreadiness = \"notify\"\nheartbeat_timeout = 5\nstop_timeout = 6\n",
        )
        .unwrap(),
    );
    let r = run(o);
    assert_eq!(r.outcome, Outcome::Passed);
    let mut trace = format!("{}\nswarm: {}\n", r.lines[0], r.faults);
    trace.push_str(&r.lines[1..].join("\n"));
    insta::assert_snapshot!(trace);
}

#[test]
fn shrinking_keeps_the_failing_inputs_and_drops_the_rest() {
    // ddmin against a failure that needs two particular inputs among 200.
    let items: Vec<u32> = (0..200).collect();
    let fails = |c: &[u32]| (c.contains(&17) && c.contains(&150)).then(|| "bug".to_string());
    assert_eq!(drover_sim::shrink::ddmin(&items, fails), vec![17, 150]);
    // A list that does not fail is returned whole.
    assert_eq!(drover_sim::shrink::ddmin(&items, |_| None).len(), 200);
}

#[test]
fn recorded_inputs_replay_clean_for_a_passing_run() {
    // The machine is a pure function of its inputs: replaying a passing run's inputs into a
    // fresh machine breaks no invariant.
    let mut o = quick(11);
    o.load = Some(Load::Steady);
    let r = run(o);
    assert_eq!(r.outcome, Outcome::Passed);
    assert!(r.inputs.len() > 100);
    let predecessor = r.faults.predecessor();
    assert_eq!(
        drover_sim::shrink::replay(&r.config, predecessor, &r.inputs),
        None
    );
}

#[test]
fn heartbeat_only_workers_are_read_in_batches() {
    // Workers that send heartbeats and no load (`load_silent`): once their pace is known
    // the supervisor leaves their messages in the socket and reads them at `messages_due`
    // or a deadline, several at a time, and still kills no beating worker.
    let mut faults = Faults::none();
    faults.load_silent = true;
    let mut o = quick(5);
    o.faults = Some(faults);
    o.load = Some(Load::Steady);
    o.config = Some(
        drover_sim::policy::parse("workers = 3\nreadiness = \"notify\"\nheartbeat_timeout = 6\n")
            .unwrap(),
    );
    let r = run(o);
    assert_eq!(r.outcome, Outcome::Passed);
    assert!(r.coverage.count(Mark::HeldMessages) > 10, "{}", r.coverage);
    // Beats are read together, each dated by its arrival: over two per read (three workers),
    // most of them read after they came (the rest came at the instant of their read).
    use drover_machine::Input;
    let beats: Vec<(drover_machine::Instant, bool)> = r
        .inputs
        .iter()
        .filter_map(|(read, i)| match i {
            Input::HeartbeatAt { at, .. } => Some((*read, at < read)),
            _ => None,
        })
        .collect();
    let mut reads: Vec<_> = beats.iter().map(|(read, _)| *read).collect();
    reads.dedup();
    let late = beats.iter().filter(|(_, late)| *late).count();
    assert!(
        beats.len() > 2 * reads.len(),
        "{} beats in {} reads",
        beats.len(),
        reads.len()
    );
    assert!(
        2 * late > beats.len(),
        "{late} of {} beats read late",
        beats.len()
    );
    assert!(!r
        .inputs
        .iter()
        .any(|(_, i)| matches!(i, Input::Load { .. } | Input::Heartbeat { .. })));
}

#[test]
fn a_worker_whose_main_process_exits_is_retired_and_judged_by_it() {
    // Crashes become main-process exits half the time; the rest of the group serves on
    // until the ladder ends it. The shell's `Exited` for that pid carries the main
    // process's status, and some main processes die while their worker already drains.
    use drover_machine::Input;
    let mut faults = Faults::none();
    faults.crash_ready = 0.5;
    faults.crash_drain = 0.5;
    faults.ignore_term = 0.3;
    faults.pid_reuse = true;
    faults.main_exit = 0.5;
    let (mut fed, mut retired) = (0, 0);
    for seed in 0..6 {
        let mut o = quick(seed);
        o.faults = Some(faults.clone());
        o.load = Some(Load::Steady);
        let r = run(o);
        assert_eq!(r.outcome, Outcome::Passed, "seed {seed}");
        retired += r.coverage.count(Mark::MainExited);
        for (i, (_, input)) in r.inputs.iter().enumerate() {
            let Input::MainExited { pid, status } = input else {
                continue;
            };
            fed += 1;
            let exited = r.inputs[i + 1..].iter().find_map(|(_, later)| match later {
                Input::Exited { pid: p, status } if p == pid => Some(*status),
                Input::MainExited { pid: p, .. } if p == pid => {
                    panic!("seed {seed}: a second MainExited for pid {pid} before its Exited")
                }
                _ => None,
            });
            if let Some(exited) = exited {
                assert_eq!(exited, *status, "seed {seed}: pid {pid}");
            }
        }
    }
    assert!(retired > 5, "{retired} workers retired for main-exited");
    assert!(
        fed > retired,
        "no main process exited while its worker stopped"
    );
}

#[test]
fn a_successor_asks_once_its_pool_is_ready_and_takes_over() {
    // Runs that start as a live upgrade's successor (no faults): workers start at the
    // generation after the predecessor's, the successor asks once, the predecessor's
    // takeover (or its end of file) is handed in once, and the oracles see the rest.
    use drover_machine::Input;
    let mut faults = Faults::none();
    faults.successor_of = 3;
    faults.operator = 1.0;
    let mut coverage = drover_sim::Coverage::new();
    for seed in 0..12 {
        let mut o = quick(seed);
        o.faults = Some(faults.clone());
        o.load = Some(Load::Steady);
        let r = run(o);
        assert_eq!(r.outcome, Outcome::Passed, "seed {seed}");
        coverage.merge(&r.coverage);
        let takeovers = r
            .inputs
            .iter()
            .filter(|(_, i)| matches!(i, Input::Takeover { .. }))
            .count();
        assert!(
            takeovers <= 1,
            "seed {seed}: {takeovers} takeovers handed in"
        );
    }
    assert!(coverage.count(Mark::HandoverAsked) >= 10, "{coverage}");
    assert!(coverage.count(Mark::TookOver) >= 10, "{coverage}");
    assert!(coverage.count(Mark::RefusedAwaiting) > 0, "{coverage}");
}
