//! Rolling restart: replacing every worker without losing capacity.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, ExitStatus, Generation, Readiness, Signal, StopReason, WorkerState,
};

use crate::helpers::{count_actions, retirements, slot_signals, t};

// A rolling restart must never lose capacity: with max_surge 1 and max_unavailable 0 a
// replacement is started first and each old worker is retired only once its replacement
// has said Ready, so Ready workers never drop below 3 and processes never exceed 4.
#[test]
fn b4_rolling_restart_keeps_capacity() {
    let mut config = Config::static_pool(3);
    config.readiness = Readiness::Notify;
    config.max_surge = 1;
    config.max_unavailable = 0;
    let mut h = Harness::new(config);
    h.at(0.5);
    for slot in 0..3 {
        h.ready(slot);
    }
    let check = |h: &Harness, step: &str| {
        assert!(
            h.sup().ready_workers() >= 3,
            "{step}: ready {} < 3\n{}",
            h.sup().ready_workers(),
            h.trace()
        );
        assert!(
            h.sup().live_workers() <= 4,
            "{step}: live {} > 4\n{}",
            h.sup().live_workers(),
            h.trace()
        );
    };
    check(&h, "booted");

    h.at(1.0).command(Command::Restart);
    check(&h, "restart");
    assert_eq!(h.sup().generation(), Generation(2));
    assert_eq!(h.state(3), Some(WorkerState::Booting), "surge replacement");
    h.at(1.9);
    check(&h, "replacement booting");
    assert!(
        retirements(&h).is_empty(),
        "nothing retired before a replacement is Ready"
    );

    // Each round: the newest replacement says Ready, one old worker is retired, it drains,
    // and its slot takes the next replacement.
    let rounds = [(2.0, 3, 0), (3.5, 0, 1), (5.0, 1, 2)];
    for (i, &(at, new_slot, old_slot)) in rounds.iter().enumerate() {
        h.at(at).ready(new_slot);
        check(&h, "replacement ready");
        assert_eq!(
            retirements(&h).last(),
            Some(&(t(at), old_slot, StopReason::Restart)),
            "round {i}: the old worker goes only when its replacement is Ready"
        );
        assert_eq!(retirements(&h).len(), i + 1, "one at a time");
        h.at(at + 0.5).exit(old_slot, ExitStatus::Code(0));
        check(&h, "old worker exited");
        if i < 2 {
            assert_eq!(h.state(old_slot), Some(WorkerState::Booting));
            h.at(at + 1.0);
            check(&h, "next replacement booting");
        }
    }
    h.at(30.0);
    check(&h, "done");
    let gens: Vec<(u32, Generation)> = h
        .sup()
        .workers()
        .map(|w| (w.id.slot, w.generation))
        .collect();
    assert_eq!(
        gens,
        [(0, Generation(2)), (1, Generation(2)), (3, Generation(2))]
    );
    assert_eq!(h.sup().live_workers(), 3);
    assert_eq!(count_actions(&h, |a| matches!(a, Action::Spawn { .. })), 6);
    assert!(slot_signals(&h).iter().all(|s| s.2 == Signal::Term));
    insta::assert_snapshot!(h.trace());
}

// Emptying a place with no process queues no action; the drain must go on to the spawn
// that fills it and to the next such place, not end there and leave the rollout to the
// next input (here the backoffs' end, a second later).
#[test]
fn a_rolling_restart_replaces_every_place_in_backoff_in_one_drain() {
    let mut config = Config::static_pool(3);
    config.readiness = Readiness::Notify;
    config.max_surge = 0;
    config.max_unavailable = 1;
    let mut h = Harness::new(config);
    h.at(0.5);
    for slot in 0..3 {
        h.ready(slot);
    }
    // Two young deaths each: slots 0 and 1 wait out backoff_min (1 s) until 2.1 s.
    for at in [1.0, 1.1] {
        h.at(at)
            .exit(0, ExitStatus::Code(1))
            .exit(1, ExitStatus::Code(1));
    }
    assert!(matches!(h.state(0), Some(WorkerState::Backoff { .. })));
    assert!(matches!(h.state(1), Some(WorkerState::Backoff { .. })));

    h.at(1.2).command(Command::Restart);
    assert_eq!(
        crate::helpers::spawns_at(&h, t(1.2)),
        2,
        "both places of the old generation are replaced at once\n{}",
        h.trace()
    );
}

// An immediate restart (serverengine's HUP) does not wait for replacements: every worker of
// the old generation enters the ladder's immediate stage at once, and each place is filled
// anew as it empties. A worker already stopping keeps the ladder it is on.
#[test]
fn restart_now_retires_every_worker_at_once_through_the_immediate_stage() {
    let mut config = Config::static_pool(3);
    config.readiness = Readiness::Notify;
    config.max_surge = 1;
    config.max_unavailable = 0;
    let mut h = Harness::new(config);
    h.at(0.5);
    for slot in 0..3 {
        h.ready(slot);
    }
    h.at(1.0).command(Command::RestartNow);
    assert_eq!(h.sup().generation(), Generation(2));
    assert_eq!(
        retirements(&h),
        (0..3)
            .map(|slot| (t(1.0), slot, StopReason::RestartNow))
            .collect::<Vec<_>>(),
        "all three at once, whatever max_unavailable says"
    );
    let immediate = h.sup().config().ladder.stages[h.sup().config().ladder.immediate_from].signal;
    let first: Vec<Signal> = slot_signals(&h).iter().map(|s| s.2).collect();
    assert_eq!(first, vec![immediate; 3], "no graceful stage first");
    // Each exit frees its place for a worker of the new generation at once.
    h.at(1.2).exit(1, ExitStatus::Signaled(3));
    assert_eq!(h.state(1), Some(WorkerState::Booting));
    let gen_of = |h: &Harness, slot: u32| {
        h.sup()
            .workers()
            .find(|w| w.id.slot == slot)
            .map(|w| w.generation)
    };
    assert_eq!(gen_of(&h, 1), Some(Generation(2)));
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::Signal { .. })),
        3,
        "the new worker is not touched"
    );
}

// A restart-now while stopping is refused, as every command but a stop is.
#[test]
fn restart_now_is_refused_while_stopping() {
    let mut h = Harness::new(Config::static_pool(2));
    h.at(0.5).command(Command::Stop);
    h.at(0.6).command(Command::RestartNow);
    assert_eq!(h.sup().generation(), Generation(1));
    assert!(retirements(&h).iter().all(|r| r.2 == StopReason::Stop));
}
