//! Scenario snapshots, part B: scaling under load, graceful and escalated stops, rolling
//! restart, reload and live upgrade. Each test pins the whole trace (insta) and asserts the
//! key facts by hand, so blindly accepting a changed snapshot still fails the test.

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Duration, Event, ExitStatus, Generation, Input, Instant, Ladder,
    Phase, Policy, Readiness, Signal, StopReason, UpgradeState, WorkerState,
};

// ----------------------------------------------------------------- helpers

fn t(secs: f64) -> Instant {
    Instant::from_secs_f64(secs)
}

/// Spawns performed at exactly `at`.
fn spawns_at(h: &Harness, at: Instant) -> usize {
    h.actions()
        .iter()
        .filter(|(when, a)| *when == at && matches!(a, Action::Spawn { .. }))
        .count()
}

/// Every retirement so far: (time, slot, reason).
fn retirements(h: &Harness) -> Vec<(Instant, u32, StopReason)> {
    h.actions()
        .iter()
        .filter_map(|(when, a)| match a {
            Action::Event(Event::Retiring { worker, reason }) => {
                Some((*when, worker.slot, *reason))
            }
            _ => None,
        })
        .collect()
}

/// Every signal sent to a worker so far: (time, slot, signal).
fn signals(h: &Harness) -> Vec<(Instant, u32, Signal)> {
    h.actions()
        .iter()
        .filter_map(|(when, a)| match a {
            Action::Signal { worker, signal, .. } => Some((*when, worker.slot, *signal)),
            _ => None,
        })
        .collect()
}

/// Every `Exit` action so far: (time, code).
fn exits(h: &Harness) -> Vec<(Instant, i32)> {
    h.actions()
        .iter()
        .filter_map(|(when, a)| match a {
            Action::Exit { code } => Some((*when, *code)),
            _ => None,
        })
        .collect()
}

fn count_actions(h: &Harness, pred: impl Fn(&Action) -> bool) -> usize {
    h.actions().iter().filter(|(_, a)| pred(a)).count()
}

/// Slots of Ready, not stopping workers, whatever their load.
fn ready_slots(h: &Harness) -> Vec<u32> {
    h.ready_slots()
}

/// Every worker asked to stop drains and exits cleanly now.
fn exit_stopping(h: &mut Harness) {
    let stopping: Vec<u32> = h
        .sup()
        .workers()
        .filter(|w| matches!(w.state, WorkerState::Stopping { .. }) && w.pid.is_some())
        .map(|w| w.id.slot)
        .collect();
    for slot in stopping {
        h.exit(slot, ExitStatus::Code(0));
    }
}

/// Reports every Ready worker as fully busy (threads = 1).
fn all_busy(h: &mut Harness, requests: u64) {
    for slot in ready_slots(h) {
        h.load(slot, 1, requests);
    }
}

// ----------------------------------------------------------------- 1. scale up / down

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
    assert!(signals(&h).iter().all(|s| s.2 == Signal::Term));
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

// ----------------------------------------------------------------- 2. graceful stop

// A graceful stop must wait for every worker to finish its requests: a fast worker exits at
// once, a slow one drains for 25 s (TERM is resent every 10 s meanwhile) and is never
// KILLed because it finishes within stop_timeout (30 s). Exit code 0 comes only after the
// last worker is gone; nothing is respawned while stopping.
#[test]
fn b2_graceful_stop_waits_for_a_slow_drainer() {
    let mut config = Config::static_pool(2);
    config.ladder = Arc::new(Ladder::for_any_program(Duration::from_secs(30)));
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Stop);
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: false });
    h.at(1.5).exit(0, ExitStatus::Code(0));
    h.at(25.0);
    assert!(exits(&h).is_empty(), "no Exit while a worker still drains");
    h.at(26.0).exit(1, ExitStatus::Code(0));
    h.at(100.0);

    assert_eq!(exits(&h), [(t(26.0), 0)]);
    assert!(
        matches!(h.actions().last(), Some((_, Action::Exit { code: 0 }))),
        "Exit is the last action"
    );
    assert_eq!(
        signals(&h),
        [
            (t(1.0), 0, Signal::Term),
            (t(1.0), 1, Signal::Term),
            (t(11.0), 1, Signal::Term),
            (t(21.0), 1, Signal::Term),
        ],
        "TERM resent every 10 s to the drainer only; no KILL"
    );
    assert_eq!(count_actions(&h, |a| matches!(a, Action::Spawn { .. })), 2);
    assert_eq!(h.sup().phase(), Phase::Exited);
    insta::assert_snapshot!(h.trace());
}

// ----------------------------------------------------------------- 3. second stop

// A second stop while draining escalates to the ladder's immediate stage at once: with the
// default ladder that is KILL, so the supervisor exits right away instead of waiting up to
// stop_timeout. A third stop changes nothing.
#[test]
fn b3a_second_stop_escalates_to_kill_with_default_ladder() {
    let mut config = Config::static_pool(2);
    config.ladder = Arc::new(Ladder::for_any_program(Duration::from_secs(30)));
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Stop);
    h.at(5.0).command(Command::Stop);
    h.at(6.0).command(Command::Stop);
    h.at(100.0);

    assert_eq!(
        signals(&h),
        [
            (t(1.0), 0, Signal::Term),
            (t(1.0), 1, Signal::Term),
            (t(5.0), 0, Signal::Kill),
            (t(5.0), 1, Signal::Kill),
        ]
    );
    assert_eq!(
        exits(&h),
        [(t(5.0), 0)],
        "exit as soon as the KILLed are reaped"
    );
    insta::assert_snapshot!(h.trace());
}

// With serverengine's ladder the immediate stage is QUIT (resent at +10, +30 s …) and KILL
// comes exactly 600 s after the escalation. A worker that ignores QUIT shows the end of the
// ladder; a third stop must not restart it (a ladder never resets).
#[test]
fn b3b_second_stop_escalates_to_quit_with_serverengine_ladder() {
    let mut config = Config::static_pool(2);
    config.ladder = Arc::new(Ladder::serverengine());
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Stop);
    h.at(5.0).command(Command::Stop);
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: true });
    h.at(6.0).exit(0, ExitStatus::Code(0));
    h.at(30.0).command(Command::Stop);
    h.at(2000.0);

    let sigs = signals(&h);
    assert_eq!(
        &sigs[..4],
        [
            (t(1.0), 0, Signal::Term),
            (t(1.0), 1, Signal::Term),
            (t(5.0), 0, Signal::Quit),
            (t(5.0), 1, Signal::Quit),
        ]
    );
    let quit_times: Vec<u64> = sigs
        .iter()
        .filter(|s| s.1 == 1 && s.2 == Signal::Quit)
        .map(|s| s.0.as_nanos() / 1_000_000_000)
        .collect();
    assert_eq!(
        quit_times,
        [5, 15, 35, 65, 105, 155, 215, 285, 365, 455, 555],
        "QUIT schedule from the escalation, untouched by the third stop"
    );
    assert_eq!(
        sigs.last(),
        Some(&(t(605.0), 1, Signal::Kill)),
        "KILL exactly 600 s after the escalation"
    );
    assert_eq!(sigs.iter().filter(|s| s.2 == Signal::Kill).count(), 1);
    assert_eq!(exits(&h), [(t(605.0), 0)]);
    insta::assert_snapshot!(h.trace());
}

// An immediate stop must reach a worker whose spawn is still in flight: when its pid
// arrives it enters the ladder at the immediate stage (KILL with the default ladder), not
// at graceful TERM with a 30 s wait. Drives the machine directly because the harness
// answers every spawn inside the drain (a slow fork, as the simulator models it).
#[test]
fn b3c_stop_now_reaches_a_worker_spawned_after_it() {
    use drover_machine::trace::{action_line, input_line};
    use drover_machine::{Pid, Supervisor};

    /// A bare run-loop driver that records the same trace lines as the harness.
    struct Driver {
        sup: Supervisor,
        lines: Vec<String>,
        performed: Vec<Action>,
    }
    impl Driver {
        fn feed(&mut self, now: Instant, input: Input) {
            self.lines.push(input_line(now, &input));
            self.sup.handle(now, input);
            self.sup.check_invariants().expect("invariants");
            self.drain(now);
        }
        fn drain(&mut self, now: Instant) {
            while let Some(a) = self.sup.poll_action() {
                self.lines.push(action_line(now, &a));
                self.performed.push(a);
            }
        }
    }

    let mut config = Config::static_pool(1);
    config.ladder = Arc::new(Ladder::for_any_program(Duration::from_secs(30)));
    let mut d = Driver {
        sup: Supervisor::new(config, Instant::ZERO).expect("valid config"),
        lines: Vec::new(),
        performed: Vec::new(),
    };
    d.drain(Instant::ZERO);
    let worker = match d.performed.first() {
        Some(Action::Spawn { worker, .. }) => *worker,
        other => panic!("expected a spawn, got {other:?}"),
    };
    // The fork is slow: StopNow arrives before its pid.
    d.feed(t(1.0), Input::Command(Command::StopNow));
    d.feed(
        t(1.2),
        Input::Spawned {
            worker,
            pid: Pid(500),
        },
    );
    let trace = d.lines.join("\n") + "\n";
    let sigs: Vec<Signal> = d
        .performed
        .iter()
        .filter_map(|a| match a {
            Action::Signal { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect();
    assert_eq!(
        sigs,
        [Signal::Kill],
        "an immediate stop sends the immediate stage at once\n{trace}"
    );
    assert_eq!(d.sup.phase(), Phase::Stopping { immediate: true });
    insta::assert_snapshot!(trace);
}

// ----------------------------------------------------------------- 4. rolling restart

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
    assert!(signals(&h).iter().all(|s| s.2 == Signal::Term));
    insta::assert_snapshot!(h.trace());
}

// ----------------------------------------------------------------- 5. reload

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

// ----------------------------------------------------------------- 6. upgrade success

// A live upgrade hands over only once the successor is Ready: until then the old workers
// serve untouched; then they drain gracefully (reason upgrade) and the old supervisor exits
// with code 0.
#[test]
fn b6_upgrade_hands_over_after_successor_ready() {
    let mut h = Harness::new(Config::static_pool(2));
    h.at(1.0).command(Command::Upgrade);
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::StartSuccessor)),
        1
    );
    let successor = h.successor_pid().expect("successor started");
    assert!(matches!(
        h.sup().upgrade_state(),
        UpgradeState::Started { pid, .. } if pid == successor
    ));
    h.at(4.9);
    assert!(signals(&h).is_empty(), "old workers serve until handover");
    assert_eq!(h.sup().ready_workers(), 2);

    h.at(5.0).input(Input::SuccessorReady);
    assert_eq!(h.sup().phase(), Phase::Handover);
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::Event(Event::UpgradeHandover))),
        1
    );
    assert_eq!(
        retirements(&h),
        [
            (t(5.0), 0, StopReason::Upgrade),
            (t(5.0), 1, StopReason::Upgrade)
        ]
    );
    h.at(5.5).exit(0, ExitStatus::Code(0));
    assert!(exits(&h).is_empty());
    h.at(6.0).exit(1, ExitStatus::Code(0));
    h.at(100.0);
    assert_eq!(exits(&h), [(t(6.0), 0)]);
    assert!(signals(&h).iter().all(|s| s.2 == Signal::Term));
    assert_eq!(count_actions(&h, |a| matches!(a, Action::Spawn { .. })), 2);
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::KillSuccessor { .. })),
        0
    );
    insta::assert_snapshot!(h.trace());
}

// ----------------------------------------------------------------- 7. upgrade rollback

// A successor that dies before it is Ready must not take the pool down with it: the upgrade
// rolls back and the old workers keep serving, untouched. A later upgrade may be tried again.
#[test]
fn b7a_upgrade_rolls_back_when_successor_exits_before_ready() {
    let mut h = Harness::new(Config::static_pool(2));
    let pids_before = (h.pid(0), h.pid(1));
    h.at(1.0).command(Command::Upgrade);
    let successor = h.successor_pid().expect("successor started");
    h.at(3.0).input(Input::Exited {
        pid: successor,
        status: ExitStatus::Code(1),
    });
    assert_eq!(h.sup().upgrade_state(), UpgradeState::Idle);
    assert_eq!(h.sup().phase(), Phase::Running);
    assert_eq!(
        count_actions(&h, |a| matches!(
            a,
            Action::Event(Event::UpgradeRolledBack {
                reason: drover_machine::RollbackReason::SuccessorExited
            })
        )),
        1
    );
    h.at(100.0);
    assert!(signals(&h).is_empty(), "workers untouched");
    assert!(retirements(&h).is_empty());
    assert_eq!((h.pid(0), h.pid(1)), pids_before);
    assert_eq!(h.sup().ready_workers(), 2);
    assert_eq!(count_actions(&h, |a| matches!(a, Action::Spawn { .. })), 2);
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::KillSuccessor { .. })),
        0,
        "the successor is already gone"
    );
    // Rolled back: a new upgrade is accepted.
    h.at(101.0).command(Command::Upgrade);
    assert!(matches!(
        h.sup().upgrade_state(),
        UpgradeState::Started { .. }
    ));
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::StartSuccessor)),
        2
    );
    insta::assert_snapshot!(h.trace());
}

// A successor that never reports Ready is killed at upgrade_timeout (reason timeout) and the
// old pool keeps serving; a second upgrade while one is in flight is refused, not queued or
// restarted (it would start a second successor on the same sockets).
#[test]
fn b7b_upgrade_times_out_and_a_second_upgrade_is_refused() {
    let mut config = Config::static_pool(2);
    config.upgrade_timeout = Duration::from_secs(20);
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Upgrade);
    let successor = h.successor_pid().expect("successor started");
    h.at(2.0).command(Command::Upgrade);
    assert_eq!(
        count_actions(&h, |a| matches!(
            a,
            Action::Event(Event::Refused {
                command: "upgrade",
                reason: drover_machine::Refusal::UpgradeInFlight
            })
        )),
        1
    );
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::StartSuccessor)),
        1
    );
    h.at(20.9);
    assert!(matches!(
        h.sup().upgrade_state(),
        UpgradeState::Started { .. }
    ));
    h.at(100.0);
    let kills: Vec<(Instant, Action)> = h
        .actions()
        .iter()
        .filter(|(_, a)| matches!(a, Action::KillSuccessor { .. }))
        .cloned()
        .collect();
    assert_eq!(
        kills,
        [(
            t(21.0),
            Action::KillSuccessor {
                pid: successor,
                reason: drover_machine::RollbackReason::Timeout
            }
        )]
    );
    assert_eq!(
        h.sup().upgrade_state(),
        UpgradeState::Idle,
        "successor reaped"
    );
    assert_eq!(h.sup().phase(), Phase::Running);
    assert!(signals(&h).is_empty(), "workers untouched");
    assert_eq!(h.sup().ready_workers(), 2);
    // A late SuccessorReady from the killed successor is ignored, not a handover.
    h.at(101.0).input(Input::SuccessorReady);
    assert_eq!(h.sup().phase(), Phase::Running);
    assert!(retirements(&h).is_empty());
    insta::assert_snapshot!(h.trace());
}
