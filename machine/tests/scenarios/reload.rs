//! Reload: new pool sizes applied at once, a changed worker fingerprint rolled out, and an
//! invalid configuration refused.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Duration, Event, Generation, Policy, Readiness, Refusal, StopReason,
};

use crate::helpers::{count_actions, exit_stopping, refused, retirements, spawns_at, t};

// A reload applies pool sizes at once without touching running workers (same
// worker_fingerprint: no rolling restart, same generation): 2 → 4 spawns two, 4 → 2 retires
// two gracefully. A changed worker_fingerprint replaces every worker by rolling restart.
#[test]
fn b5_reload_resizes_and_fingerprint_change_rolls() {
    let mut h = Harness::new(Config::static_pool(2));
    h.at(1.0)
        .command(Command::Reload(Box::new(Config::static_pool(4))));
    assert_eq!(h.sup().target(), 4);
    assert_eq!(h.sup().ready_workers(), 4);
    assert_eq!(spawns_at(&h, t(1.0)), 2);
    assert_eq!(h.sup().generation(), Generation(1), "no rolling restart");
    assert!(retirements(&h).is_empty());

    h.at(2.0)
        .command(Command::Reload(Box::new(Config::static_pool(2))));
    assert_eq!(h.sup().target(), 2);
    assert_eq!(h.sup().ready_workers(), 2);
    assert_eq!(h.sup().generation(), Generation(1), "no rolling restart");
    let shrink = retirements(&h);
    assert_eq!(shrink.len(), 2, "exactly the two extra workers retire");
    assert!(shrink
        .iter()
        .all(|r| r.0 == t(2.0) && matches!(r.2, StopReason::Reload | StopReason::ScaleDown)));
    assert_eq!(spawns_at(&h, t(2.0)), 0);
    h.at(2.5);
    exit_stopping(&mut h);
    assert_eq!(h.sup().live_workers(), 2);
    h.at(2.9);
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::Spawn { .. })),
        4,
        "the shrink respawns nothing"
    );

    let mut changed = Config::static_pool(2);
    changed.worker_fingerprint = 7;
    h.at(3.0).command(Command::Reload(Box::new(changed)));
    assert_eq!(h.sup().generation(), Generation(2), "rolling restart");
    for k in 0..4 {
        h.at(3.5 + f64::from(k) * 0.5);
        exit_stopping(&mut h);
        assert!(h.sup().ready_workers() >= 2, "capacity kept\n{}", h.trace());
        assert!(h.sup().live_workers() <= 3, "within surge\n{}", h.trace());
    }
    h.at(10.0);
    let roll: Vec<StopReason> = retirements(&h)[2..].iter().map(|r| r.2).collect();
    assert_eq!(roll, [StopReason::Restart, StopReason::Restart]);
    assert!(h.sup().workers().all(|w| w.generation == Generation(2)));
    assert_eq!(h.sup().ready_workers(), 2);
    assert_eq!(h.sup().live_workers(), 2);
    let reloaded: Vec<(Generation, bool)> = h
        .actions()
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Event(Event::Reloaded {
                generation,
                restart,
            }) => Some((*generation, *restart)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reloaded,
        [
            (Generation(1), false),
            (Generation(1), false),
            (Generation(2), true)
        ]
    );
    insta::assert_snapshot!(h.trace());
}

#[test]
fn invalid_reload_is_refused_and_changes_nothing() {
    let mut h = Harness::new(Config::static_pool(2));
    let mut bad = Config::dynamic(1, 3, 1, 2);
    bad.policy = Policy::Dynamic {
        min: 5,
        max: 3,
        start: 3,
        min_spare: 1,
        max_spare: 2,
    };
    h.command(Command::Reload(Box::new(bad)));
    match refused(&h).as_slice() {
        [Refusal::Invalid(e)] => assert_eq!(e.field, "min"),
        other => panic!("expected one invalid-config refusal, got {other:?}"),
    }
    assert_eq!(h.sup().config().policy, Policy::Static { workers: 2 });
}

#[test]
fn reload_shrinking_the_slot_range_moves_workers_down() {
    let mut h = Harness::new(Config::static_pool(4));
    let mut small = Config::static_pool(1);
    small.max_surge = 0;
    small.max_unavailable = 1;
    h.command(Command::Reload(Box::new(small)));
    h.at(40.0);
    let slots: Vec<u32> = h.sup().workers().map(|w| w.id.slot).collect();
    assert_eq!(slots, [0], "only slot 0 is inside max + max_surge = 1");
}

// A reload that turns the heartbeat watchdog on rolls the workers (the timeout is part of
// what a worker is told, so of its fingerprint), and until each is replaced it is held to
// the watchdog it was started with: none. Found by the simulator once it modelled the
// shell's board reads: every old worker was killed at once for a missed heartbeat.
#[test]
fn a_reload_that_turns_the_watchdog_on_kills_no_worker_started_without_it() {
    let mut c = Config::static_pool(2);
    c.readiness = Readiness::Notify;
    c.worker_fingerprint = 1;
    let mut h = Harness::new(c.clone());
    h.at(1.0).ready(0).ready(1).at(60.0);
    let mut on = c;
    on.heartbeat_timeout = Some(Duration::from_secs(16));
    on.worker_fingerprint = 2;
    h.command(Command::Reload(Box::new(on)));
    // The new worker (generation 2) becomes Ready and never beats; the old ones never did.
    h.at(61.0).ready(2).at(100.0);
    let watchdog_kills: Vec<u32> = h
        .actions()
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Event(Event::Retiring {
                worker,
                reason: StopReason::HeartbeatTimeout,
            }) => Some(worker.slot),
            _ => None,
        })
        .collect();
    assert_eq!(
        watchdog_kills,
        [2],
        "only the worker told of the watchdog is held to it:\n{}",
        h.trace()
    );
}
