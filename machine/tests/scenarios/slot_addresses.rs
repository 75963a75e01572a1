//! Slots as addresses (`Config::slot_addresses`, the shell's per-worker ports): slots stay
//! dense under rolling restarts, scale-downs and idle retirement; `ReleaseSlot` says when a
//! slot's port may close; a port that cannot be bound is no crash of the program.

use core::time::Duration;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Event, ExitStatus, Policy, Readiness, SpawnError, StopReason,
};

use crate::helpers::{events, retirements, retirements_ms, spawns_ms};

/// A dynamic pool of `min` that could grow to 8, so slots above the target exist: the
/// pool never scales by itself here (no spare threshold is crossed).
fn addressed(min: u32) -> Config {
    let mut config = Config::new(Policy::Dynamic {
        min,
        max: 8,
        start: min,
        min_spare: 1,
        max_spare: 8,
    });
    config.readiness = Readiness::Notify;
    config.slot_addresses = true;
    config.max_surge = 0;
    config.max_unavailable = 1;
    config
}

/// A static pool of `workers`: the scale commands move its target.
fn addressed_static(workers: u32) -> Config {
    let mut config = addressed(1);
    config.policy = Policy::Static { workers };
    config
}

fn released(h: &Harness) -> Vec<u32> {
    h.performed()
        .filter_map(|(_, a)| match a {
            Action::ReleaseSlot { slot } => Some(*slot),
            _ => None,
        })
        .collect()
}

fn all_ready(h: &mut Harness, slots: std::ops::Range<u32>) {
    for s in slots {
        h.ready(s);
    }
}

#[test]
fn a_surge_is_refused_where_slots_are_addresses() {
    let mut config = addressed(3);
    config.max_surge = 1;
    let err = config.validate().unwrap_err();
    assert_eq!(err.field, "max_surge");
    assert!(err.problem.contains("max_surge = 0"), "{err}");
}

#[test]
fn a_rolling_restart_replaces_each_worker_in_its_own_slot() {
    let mut h = Harness::new(addressed(3));
    h.at(0.1);
    all_ready(&mut h, 0..3);
    h.at(1.0).command(Command::Restart);
    // Bounded: three replacements, each a stop, an exit and a Ready.
    for _ in 0..3 {
        let (_, slot, reason) = *retirements(&h).last().expect("a worker retired");
        assert_eq!(reason, StopReason::Restart);
        h.advance(Duration::from_millis(100))
            .exit(slot, ExitStatus::Code(0));
        assert_eq!(
            spawns_ms(&h).last().map(|&(_, s)| s),
            Some(slot),
            "the replacement takes the slot it replaces"
        );
        h.advance(Duration::from_millis(100)).ready(slot);
    }
    assert!(h.sup().is_settled());
    assert!(
        spawns_ms(&h).iter().all(|&(_, s)| s < 3),
        "no spawn above the target: {:?}",
        spawns_ms(&h)
    );
    assert!(released(&h).is_empty(), "no slot left the pool");
}

#[test]
fn a_scale_down_retires_the_highest_slot_and_releases_it_after_the_exit() {
    let mut h = Harness::new(addressed_static(4));
    h.at(0.1);
    all_ready(&mut h, 0..4);
    // Slot 3 is busy, slot 0 idle the longest: without addresses slot 0 would go.
    h.at(1.0).load(3, 1, 1);
    h.command(Command::ScaleDown);
    assert_eq!(h.sup().target(), 3);
    let retired: Vec<u32> = retirements(&h).iter().map(|&(_, s, _)| s).collect();
    assert_eq!(retired, [3]);
    assert!(
        released(&h).is_empty(),
        "the port stays open while the worker drains"
    );
    h.at(2.0).exit(3, ExitStatus::Code(0));
    assert_eq!(released(&h), [3]);
    let dump = h.sup().dump();
    assert!(
        dump.contains("slot addresses: open for slots [0, 1, 2];"),
        "{dump}"
    );
}

#[test]
fn scaling_back_up_while_the_highest_slot_drains_waits_for_that_slot() {
    let mut h = Harness::new(addressed_static(4));
    h.at(0.1);
    all_ready(&mut h, 0..4);
    h.at(1.0).command(Command::ScaleDown);
    h.command(Command::ScaleUp);
    assert_eq!(h.sup().target(), 4);
    assert_eq!(
        spawns_ms(&h).len(),
        4,
        "no spawn in slot 4 around the draining slot 3"
    );
    h.at(2.0).exit(3, ExitStatus::Code(0));
    assert_eq!(spawns_ms(&h).last(), Some(&(2000, 3)));
    assert!(
        released(&h).is_empty(),
        "slot 3 is below the target again: its port stays"
    );
}

#[test]
fn a_worker_above_the_target_goes_even_when_a_lower_slot_draining_makes_the_count_right() {
    // A dynamic pool of 5, every worker busy. Slot 1 reaches --max-requests and drains
    // (its replacement waits for its exit); then two workers go idle, leaving more spare
    // threads than max_spare, and a tick shrinks the target to 4. Four workers are not stopping: the
    // count is right, but slot 4 is at the target, a port the load balancer is not meant
    // to use. It goes, busy or not, and slot 1 is refilled once its worker has exited: the
    // ports in use end as 0..4.
    let mut config = addressed(1);
    // Two threads each, one busy: 5 spare threads, within 1..=5.
    config.policy = Policy::Dynamic {
        min: 1,
        max: 8,
        start: 5,
        min_spare: 1,
        max_spare: 5,
    };
    config.threads = 2;
    config.max_requests = Some(100);
    let mut h = Harness::new(config);
    h.at(0.1);
    all_ready(&mut h, 0..5);
    for slot in 0..5 {
        h.load(slot, 1, 1);
    }
    h.at(0.2).load(1, 0, 100);
    assert_eq!(
        retirements_ms(&h),
        [(200, 1, StopReason::MaxRequests)],
        "slot 1 drains"
    );
    // Slot 1's threads no longer count (4 spare); two more go idle: 6 spare, above 5.
    h.at(0.3).load(0, 0, 2).load(2, 0, 2);
    h.at(5.0);
    assert_eq!(h.sup().target(), 4, "the spare threads shrank the pool");
    let retired: Vec<(u32, StopReason)> = retirements(&h).iter().map(|&(_, s, r)| (s, r)).collect();
    assert_eq!(
        retired,
        [(1, StopReason::MaxRequests), (4, StopReason::ScaleDown)],
        "slot 4 goes though only four workers were not stopping"
    );
    h.at(5.5).exit(1, ExitStatus::Code(0));
    assert_eq!(spawns_ms(&h).last(), Some(&(5500, 1)), "slot 1 is refilled");
    h.at(6.0).exit(4, ExitStatus::Code(0));
    assert_eq!(released(&h), [4]);
}

#[test]
fn idle_retirement_gives_up_the_highest_slot() {
    let mut config = addressed(1);
    config.policy = Policy::Ondemand { min: 1, max: 8 };
    config.idle_timeout = Some(Duration::from_secs(10));
    let mut h = Harness::new(config);
    h.at(0.1).ready(0);
    h.command(Command::ScaleTo(3));
    h.at(0.2).ready(1).ready(2);
    h.command(Command::ScaleTo(1));
    // The pool is at min 1 with target 3 above it; slot 0 has idled the longest.
    h.at(1.0).load(2, 1, 1).load(2, 0, 2);
    h.at(30.0);
    let slots: Vec<u32> = retirements(&h).iter().map(|&(_, s, _)| s).collect();
    assert_eq!(
        slots,
        [2, 1],
        "the highest slot goes first, whichever idled longest"
    );
}

#[test]
fn an_address_failure_leaves_the_slot_empty_and_retries_without_counting_a_death() {
    let mut config = addressed_static(2);
    config.restart.intensity_deaths = 2;
    // Ready at spawn: the one worker that finally starts is not left to its boot timeout.
    config.readiness = Readiness::AtSpawn;
    let mut h = Harness::new(config);
    h.at(0.1);
    all_ready(&mut h, 0..2);
    // Slot 2's port is taken: its spawn fails ten times in a row.
    h.fail_spawns_with(10, SpawnError::Address(98));
    h.at(1.0).command(Command::ScaleUp);
    h.at(2000.0);
    let failures: Vec<(u32, i32, u64)> = events(&h)
        .into_iter()
        .filter_map(|e| match e {
            Event::AddressUnavailable {
                slot,
                errno,
                retry_in,
            } => Some((slot, errno, retry_in.as_millis() as u64)),
            _ => None,
        })
        .collect();
    assert_eq!(failures.len(), 10);
    assert!(failures.iter().all(|&(s, e, _)| s == 2 && e == 98));
    let delays: Vec<u64> = failures.iter().map(|&(_, _, d)| d).collect();
    let restart = &h.sup().config().restart;
    let (min, max) = (
        restart.backoff_min.as_millis() as u64,
        restart.backoff_max.as_millis() as u64,
    );
    assert_eq!(delays[0], min, "the first retry waits backoff_min");
    assert_eq!(delays[1], 2 * min, "then doubles");
    assert_eq!(*delays.last().unwrap(), max, "up to backoff_max");
    assert!(!h.sup().is_crash_looping());
    assert!(
        !events(&h).iter().any(|e| matches!(
            e,
            Event::RestartScheduled { .. } | Event::CrashLooping { .. }
        )),
        "a busy port is not the program's failure"
    );
    // The eleventh try binds: the slot is filled, the others never stopped.
    assert_eq!(h.sup().live_workers(), 3);
    assert!(retirements(&h).is_empty());
}

#[test]
fn a_slot_waiting_for_its_address_is_released_by_a_scale_down() {
    let mut h = Harness::new(addressed_static(2));
    h.at(0.1);
    all_ready(&mut h, 0..2);
    h.fail_spawns_with(1, SpawnError::Address(98));
    h.at(1.0).command(Command::ScaleUp);
    h.command(Command::ScaleDown);
    assert_eq!(released(&h), [2]);
    h.at(100.0);
    assert_eq!(
        spawns_ms(&h).len(),
        3,
        "no retry for a slot the pool gave up"
    );
}
