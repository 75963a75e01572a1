//! Retiring healthy workers: after max requests (with per-worker jitter) and after an idle
//! timeout.

use drover_machine::testing::Harness;
use drover_machine::{Config, Duration, ExitStatus, Input, Signal, StopReason, WorkerState};

use crate::helpers::{backoff_delays, retirements_ms, signals_ms, spawns_ms};

#[test]
fn max_requests_retires_each_worker_at_its_own_jittered_limit() {
    // Each worker retires after max_requests + a per-worker jitter in 0..=20 (so a pool does
    // not retire all at once), gracefully with reason max-requests; its replacement starts at
    // once beside it (a retirement is not a failure: no backoff, no death counted).
    let mut config = Config::static_pool(2);
    config.max_requests = Some(100);
    config.max_requests_jitter = 20;
    config.seed = 7;
    let mut h = Harness::new(config);

    // The two original workers serve 4 requests a second from 96 on and report their
    // totals; a retired worker finishes its drain 1 s after its TERM.
    let originals = [h.worker(0), h.worker(1)];
    let mut at_retire = Vec::new();
    for step in 0..7u64 {
        h.at(10.0 + step as f64);
        let draining: Vec<_> = h
            .sup()
            .workers()
            .filter(|w| matches!(w.state, WorkerState::Stopping { .. }))
            .filter_map(|w| w.pid)
            .collect();
        for pid in draining {
            h.input(Input::Exited {
                pid,
                status: ExitStatus::Code(0),
            });
        }
        let requests = 96 + 4 * step;
        for worker in originals {
            if h.sup()
                .workers()
                .any(|w| w.id == worker && matches!(w.state, WorkerState::Ready { .. }))
            {
                h.input(Input::Load {
                    worker,
                    busy: 0,
                    oldest_busy_since: None,
                    requests,
                });
                if h.sup()
                    .workers()
                    .any(|w| w.id == worker && matches!(w.state, WorkerState::Stopping { .. }))
                {
                    at_retire.push((worker.slot, requests));
                }
            }
        }
    }
    insta::assert_snapshot!(h.trace());

    assert_eq!(at_retire.len(), 2, "both workers reach their limit");
    assert_ne!(
        at_retire[0].1, at_retire[1].1,
        "jitter spreads the retirements (seed 7)"
    );
    for (_, n) in &at_retire {
        assert!((100..=124).contains(n), "retired at {n} requests");
    }
    let r = retirements_ms(&h);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|x| x.2 == StopReason::MaxRequests));
    assert!(signals_ms(&h)
        .iter()
        .all(|s| s.1 == Signal::Term && s.2 == StopReason::MaxRequests));
    assert!(backoff_delays(&h).is_empty(), "a retirement is not a death");
    // Each replacement spawns at the moment its predecessor retires, not after its drain.
    let replacements: Vec<u64> = spawns_ms(&h)[2..].iter().map(|s| s.0).collect();
    assert_eq!(replacements, [r[0].0, r[1].0]);
    assert_eq!(h.ready_slots().len(), 2);
    assert_eq!(h.sup().live_workers(), 2);
}

#[test]
fn jitter_is_reproducible_from_the_seed() {
    let limits = |seed| {
        let mut c = Config::static_pool(4);
        c.max_requests = Some(100);
        c.max_requests_jitter = 50;
        c.seed = seed;
        let mut h = Harness::new(c);
        let mut retired_at = Vec::new();
        for slot in 0..4 {
            for n in (100..=150).step_by(1) {
                h.load(slot, 0, n);
                if matches!(h.state(slot), Some(WorkerState::Stopping { .. })) {
                    retired_at.push(n);
                    break;
                }
            }
        }
        retired_at
    };
    let a = limits(1);
    assert_eq!(a, limits(1));
    assert_eq!(a.len(), 4);
    assert!(a.iter().all(|n| (100..=150).contains(n)));
    assert_ne!(a, limits(2), "another seed draws other limits");
}

/// A worker whose reports each catch it between two requests (busy 0) but whose request
/// count grows was serving all along: its idle time starts at its last report, so the idle
/// timeout does not retire it for the requests it served between reports.
#[test]
fn a_worker_that_served_between_its_reports_is_not_idle() {
    let mut config = Config::dynamic(1, 8, 1, 8);
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut h = Harness::new(config);
    assert_eq!(h.sup().target(), 4);
    // Worker 1 reports busy 0 every 2 s, each time with more requests served, until 12 s.
    for i in 0..=6u32 {
        let t = 2.0 * f64::from(i);
        h.at(t).load(1, 0, u64::from(10 * (i + 1)));
    }
    h.at(12.5);
    // The others, idle since the start, went one per tick from 10 s; worker 1 stays (and,
    // the pool at min = 1, is the one kept).
    assert_eq!(
        retirements_ms(&h),
        [
            (10_000, 0, StopReason::Idle),
            (11_000, 2, StopReason::Idle),
            (12_000, 3, StopReason::Idle),
        ]
    );
}

#[test]
fn idle_workers_retire_one_per_tick_down_to_min() {
    // With idle_timeout, a worker idle longer than the timeout retires, one per maintenance
    // tick, the longest-idle first, and never below min. Workers 1 and 2 served requests
    // until 3 s and 5 s, so they become retirable later than 0 and 3 (idle since start);
    // the pool stops shrinking at min = 1, keeping the most recently busy worker.
    let mut config = Config::dynamic(1, 8, 1, 8);
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut h = Harness::new(config);
    assert_eq!(h.sup().target(), 4);
    h.at(0.5).load(1, 1, 1).load(2, 1, 1);
    h.at(3.0).load(1, 0, 5);
    h.at(5.0).load(2, 0, 9);
    // Each retired worker finishes its drain 0.5 s after its TERM.
    h.at(10.5).exit(0, ExitStatus::Code(0));
    h.at(11.5).exit(3, ExitStatus::Code(0));
    h.at(12.5);
    assert_eq!(h.sup().live_workers(), 2, "worker 1 is idle for 9.5 s only");
    h.at(13.5).exit(1, ExitStatus::Code(0));
    h.at(30.0);
    insta::assert_snapshot!(h.trace());

    assert_eq!(
        retirements_ms(&h),
        [
            (10_000, 0, StopReason::Idle),
            (11_000, 3, StopReason::Idle),
            (13_000, 1, StopReason::Idle),
        ]
    );
    assert_eq!(h.sup().target(), 1);
    assert_eq!(h.ready_slots(), [2]);
    assert_eq!(
        spawns_ms(&h).len(),
        4,
        "no replacement for an idle retirement"
    );
}
