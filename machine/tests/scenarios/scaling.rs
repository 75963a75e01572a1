//! Pool size: dynamic pools following spare capacity and ramping under a burst, ondemand
//! pools spawning on waiting connections and scaling to zero, and the scale commands.

use drover_machine::testing::Harness;
use drover_machine::{
    Command, Config, ExitStatus, Input, Instant, Policy, Readiness, Refusal, Signal, StopReason,
};

use crate::helpers::{
    exit_stopping, refused, retirements, retirements_ms, signals, slot_signals, spawns_at,
    spawns_ms,
};

#[test]
fn dynamic_pool_starts_boots_and_follows_spare_capacity() {
    // A dynamic pool starts with php-fpm's start size (halfway between the spares: 3), each
    // worker boots until it says READY; then the pool grows by one when busy workers eat the
    // spares and shrinks by one (the longest-idle worker) when spares exceed max_spare. This
    // is the everyday life of every dynamic deployment, so its trace must read right.
    let mut config = Config::dynamic(2, 8, 2, 4);
    config.readiness = Readiness::Notify;
    let mut h = Harness::new(config);
    assert_eq!(h.sup().target(), 3);
    assert_eq!(h.sup().live_workers(), 3);
    assert_eq!(
        h.sup().ready_workers(),
        0,
        "booting workers are not Ready yet"
    );

    h.at(0.2).ready(0);
    h.at(0.3).ready(1);
    h.at(0.4).ready(2);
    assert_eq!(h.ready_slots(), [0, 1, 2]);

    // Two of three workers turn busy: one spare left, below min_spare = 2.
    h.at(2.5).load(0, 1, 1);
    h.load(1, 1, 1);
    h.at(3.0); // the maintenance tick spawns one worker
    assert_eq!(h.sup().target(), 4);
    h.at(3.5).ready(3);
    assert_eq!(h.ready_slots(), [0, 1, 2, 3]);

    // Both go idle again: 4 idle workers is exactly max_spare = 4, so nobody retires.
    h.at(5.5).load(0, 0, 7);
    h.load(1, 0, 9);
    h.at(10.0);
    assert_eq!(h.sup().target(), 4, "4 spares is within max_spare = 4");
    assert!(retirements_ms(&h).is_empty());

    insta::assert_snapshot!(h.trace());
    assert_eq!(
        spawns_ms(&h),
        [(0, 0), (0, 1), (0, 2), (3000, 3)],
        "3 workers at start, one more at the first tick short of spares"
    );
}

#[test]
fn dynamic_pool_retires_longest_idle_worker_above_max_spare() {
    // The other half of the spare-capacity rule: with more than max_spare idle workers the
    // pool retires one per maintenance tick, gracefully, the longest-idle first, and never
    // below min.
    let mut config = Config::dynamic(1, 8, 1, 2);
    config.readiness = Readiness::Notify;
    // start = (1 + 2) / 2 = 1; scale to 4 workers by hand so there are 4 spares.
    let mut h = Harness::new(config);
    h.at(0.1).ready(0);
    h.command(Command::ScaleTo(4));
    h.at(0.2).ready(1).ready(2).ready(3);
    // Worker 2 serves a request until 0.5 s: it has been idle for the shortest time.
    h.at(0.3).load(2, 1, 1);
    h.at(0.5).load(2, 0, 1);
    h.command(Command::ScaleTo(1));
    h.at(1.0);
    h.at(2.0);
    h.at(3.0);
    // The retired workers finish their drain.
    h.at(3.5).exit(0, ExitStatus::Code(0));
    h.exit(1, ExitStatus::Code(0));
    h.at(5.0);
    insta::assert_snapshot!(h.trace());
    assert_eq!(h.sup().target(), 2);
    assert_eq!(h.ready_slots(), [2, 3]);
    let retired: Vec<u32> = retirements_ms(&h).iter().map(|r| r.1).collect();
    assert_eq!(
        retired,
        [0, 1],
        "4 idle workers, max_spare 2: the two idle longest retire, one per tick"
    );
    assert!(retirements_ms(&h)
        .iter()
        .all(|r| r.2 == StopReason::ScaleDown));
}

/// Reports every Ready worker as fully busy (threads = 1).
fn all_busy(h: &mut Harness, requests: u64) {
    for slot in h.ready_slots() {
        h.load(slot, 1, requests);
    }
}

// A burst makes every worker busy at every maintenance tick: the dynamic pool must ramp its
// spawns 1, 2, 4, 8, 8 (doubling, capped by max_spawn_rate) instead of forking the whole
// deficit at once or crawling one per second; when the load is gone it must shrink one idle
// worker per tick, longest idle first, and stop at max_spare idle workers. (min_spare is 8
// so that the spare deficit never caps a ramp step below the rate.)
#[test]
fn b1_dynamic_burst_ramps_up_then_scales_down_longest_idle_first() {
    let mut config = Config::new(Policy::Dynamic {
        min: 1,
        max: 40,
        start: 1,
        min_spare: 8,
        max_spare: 12,
    });
    config.threads = 1;
    config.max_spawn_rate = 8;
    let mut h = Harness::new(config);
    assert_eq!(h.sup().ready_workers(), 1);

    // Burst: before each maintenance tick every worker reports busy.
    for tick in 1..=5u32 {
        h.at(f64::from(tick) - 0.5);
        all_busy(&mut h, u64::from(tick));
        h.at(f64::from(tick));
    }
    let ramp: Vec<usize> = (1..=5)
        .map(|s| spawns_at(&h, Instant::from_secs(s)))
        .collect();
    assert_eq!(ramp, [1, 2, 4, 8, 8], "spawn ramp per maintenance tick");
    assert_eq!(h.sup().target(), 24);
    assert_eq!(h.sup().ready_workers(), 24);
    assert_eq!(
        h.sup().spawn_rate(),
        8,
        "the ramp stays capped at max_spawn_rate"
    );
    assert!(retirements(&h).is_empty());

    // Still busy at 5.25; then the load drops, worker by worker, highest slot first, so
    // the longest idle worker is the one with the highest slot.
    h.at(5.25);
    all_busy(&mut h, 6);
    for (k, slot) in (0..24u32).rev().enumerate() {
        h.at(5.5 + 0.01 * k as f64);
        h.load(slot, 0, 7);
    }
    // Every retired worker drains in 100 ms.
    for tick in 6..=25u32 {
        h.at(f64::from(tick) + 0.1);
        exit_stopping(&mut h);
    }
    let retired = retirements(&h);
    let order: Vec<u32> = retired.iter().map(|r| r.1).collect();
    assert_eq!(
        order,
        (12..24u32).rev().collect::<Vec<_>>(),
        "longest idle first"
    );
    for (i, (when, _, reason)) in retired.iter().enumerate() {
        assert_eq!(*reason, StopReason::ScaleDown);
        assert_eq!(
            *when,
            Instant::from_secs(6 + i as u64),
            "one retirement per maintenance tick"
        );
    }
    assert_eq!(
        h.sup().target(),
        12,
        "idle (12) <= max_spare (12): scaling stops"
    );
    assert_eq!(h.sup().ready_workers(), 12);
    assert_eq!(h.sup().live_workers(), 12);
    assert_eq!(spawns_at(&h, Instant::from_secs(6)), 0);
    assert_eq!(h.sup().spawn_rate(), 1, "a calm tick resets the ramp");
    assert!(slot_signals(&h).iter().all(|s| s.2 == Signal::Term));
    insta::assert_snapshot!(h.trace());
}

// The same burst as the shell sees it with a small min_spare (php-fpm-like 2..6): every
// worker busy and 50 connections waiting in the accept queue. Queued connections are not
// spare (they will take idle threads), so the pool is short by min_spare + queued - idle
// and must ramp 1, 2, 4, 8, 8, not stall at min_spare (2) new workers per tick while
// connections pile up.
#[test]
fn b1b_dynamic_burst_with_backlog_ramps_past_min_spare() {
    let mut config = Config::dynamic(1, 40, 2, 6);
    config.threads = 1;
    config.max_spawn_rate = 8;
    let mut h = Harness::new(config);
    let start = h.sup().target();
    for tick in 1..=5u32 {
        h.at(f64::from(tick) - 0.5);
        all_busy(&mut h, u64::from(tick));
        h.input(Input::Backlog {
            listener: 0,
            queued: 50,
        });
        h.at(f64::from(tick));
    }
    let ramp: Vec<usize> = (1..=5)
        .map(|s| spawns_at(&h, Instant::from_secs(s)))
        .collect();
    assert_eq!(
        ramp,
        [1, 2, 4, 8, 8],
        "spawn ramp per maintenance tick with 50 queued\n{}",
        h.trace()
    );
    assert_eq!(h.sup().target(), start + 23);
    insta::assert_snapshot!(h.trace());
}

#[test]
fn ondemand_pool_spawns_on_backlog_and_retires_to_zero_when_idle() {
    // ondemand: no worker until a connection waits; then one worker per queued connection
    // without an idle slot; after idle_timeout (10 s by default) they retire, one per tick,
    // down to zero.
    let mut h = Harness::new(Config::ondemand(4));
    assert_eq!(h.sup().live_workers(), 0);
    h.at(1.0).input(Input::Backlog {
        listener: 0,
        queued: 1,
    });
    // The worker takes the connection and serves it for 2 s.
    h.at(1.1)
        .input(Input::Backlog {
            listener: 0,
            queued: 0,
        })
        .load(0, 1, 0);
    h.at(3.1).load(0, 0, 1);
    h.at(13.0);
    assert_eq!(h.sup().live_workers(), 1, "idle for 9.9 s only");
    h.at(14.0);
    h.exit(0, ExitStatus::Code(0));
    h.at(20.0);
    insta::assert_snapshot!(h.trace());

    assert_eq!(spawns_ms(&h), [(1_000, 0)]);
    assert_eq!(retirements_ms(&h), [(14_000, 0, StopReason::Idle)]);
    assert_eq!(h.sup().target(), 0);
    assert_eq!(h.sup().live_workers(), 0);
}

#[test]
fn ondemand_spawns_on_waiting_connections_and_scales_to_zero() {
    let mut h = Harness::new(Config::ondemand(4));
    assert_eq!(h.sup().live_workers(), 0);
    h.at(1.0).input(Input::Backlog {
        listener: 0,
        queued: 3,
    });
    assert_eq!(
        h.sup().live_workers(),
        1,
        "one worker at once, php-fpm style"
    );
    // The new worker is idle: more queue reports do not snowball.
    h.input(Input::Backlog {
        listener: 0,
        queued: 3,
    });
    assert_eq!(h.sup().live_workers(), 1);
    h.load(0, 1, 1);
    h.input(Input::Backlog {
        listener: 0,
        queued: 0,
    });
    h.at(5.0).load(0, 0, 5);
    // Idle timeout 10 s: retired at the first tick at or after 15 s.
    h.at(14.9);
    assert_eq!(h.sup().live_workers(), 1);
    h.at(15.0);
    assert!(signals(&h).iter().any(|s| s.2 == StopReason::Idle));
    h.exit(0, ExitStatus::Code(0));
    assert_eq!(h.sup().live_workers(), 0);
    assert_eq!(h.sup().target(), 0);
}

#[test]
fn scale_commands_move_the_base_size_within_bounds() {
    let mut h = Harness::new(Config::static_pool(2));
    h.command(Command::ScaleUp);
    assert_eq!(h.sup().ready_workers(), 3);
    h.command(Command::ScaleTo(1));
    h.at(40.0); // retired workers drain within the default ladder
    assert_eq!(h.sup().target(), 1);
    h.command(Command::ScaleDown);
    h.command(Command::ScaleTo(0));
    assert_eq!(
        refused(&h).len(),
        2,
        "a static pool keeps at least one worker"
    );

    let mut h = Harness::new(Config::dynamic(1, 3, 1, 2));
    h.command(Command::ScaleTo(4));
    assert_eq!(refused(&h), vec![Refusal::OutOfBounds { min: 0, max: 3 }]);
    h.command(Command::ScaleTo(3));
    assert_eq!(h.sup().config().policy.min(), 3);
    assert_eq!(h.sup().ready_workers(), 3);
}
