//! One focused test per rule that the snapshot scenarios do not already pin down. Each
//! asserts the decision itself (state, reason, timing), not a trace.

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::*;

fn events(h: &Harness) -> Vec<Event> {
    h.actions()
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn signals(h: &Harness) -> Vec<(Instant, Signal, StopReason)> {
    h.performed()
        .filter_map(|(t, a)| match a {
            Action::Signal { signal, reason, .. } => Some((*t, *signal, *reason)),
            _ => None,
        })
        .collect()
}

fn refused(h: &Harness) -> Vec<Refusal> {
    events(h)
        .into_iter()
        .filter_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

fn exit_code(h: &Harness) -> Option<i32> {
    h.performed().find_map(|(_, a)| match a {
        Action::Exit { code } => Some(*code),
        _ => None,
    })
}

#[test]
fn heartbeat_exactly_at_its_deadline_keeps_the_worker() {
    // DESIGN §1: timers fire after the input of the same handle.
    let mut c = Config::static_pool(1);
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    // At most the heartbeat timeout, so the first-beat grace (the boot timeout) is 5 s too.
    c.boot_timeout = Duration::from_secs(5);
    let mut h = Harness::new(c);
    h.advance_to(Instant::from_secs(5));
    // The tick at 5 s already fired: a heartbeat arriving at the deadline must be applied
    // before the timer — so feed it as the input of the deadline's own handle instead.
    let mut c = Config::static_pool(1);
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    // At most the heartbeat timeout, so the first-beat grace (the boot timeout) is 5 s too.
    c.boot_timeout = Duration::from_secs(5);
    let mut sup = Supervisor::new(c, Instant::ZERO).unwrap();
    let mut worker = None;
    while let Some(a) = sup.poll_action() {
        if let Action::Spawn { worker: w, .. } = a {
            worker = Some(w);
            sup.handle(
                Instant::ZERO,
                Input::Spawned {
                    worker: w,
                    pid: Pid(7),
                },
            );
        }
    }
    let worker = worker.unwrap();
    assert_eq!(sup.poll_timeout(), Some(Instant::from_secs(5)));
    sup.handle(Instant::from_secs(5), Input::Heartbeat { worker });
    let mut actions = Vec::new();
    while let Some(a) = sup.poll_action() {
        actions.push(a);
    }
    assert!(
        actions.is_empty(),
        "heartbeat at the deadline must win: {actions:?}"
    );
    assert_eq!(sup.poll_timeout(), Some(Instant::from_secs(10)));
    // And the harness run without heartbeats does kill at 5 s.
    assert_eq!(
        signals(&h),
        vec![(
            Instant::from_secs(5),
            Signal::Kill,
            StopReason::HeartbeatTimeout
        )]
    );
}

#[test]
fn spurious_ticks_do_nothing() {
    let mut h = Harness::new(Config::static_pool(2));
    let before = h.actions().len();
    for s in 1..50 {
        h.at(f64::from(s) * 0.37);
        h.input(Input::Tick);
    }
    assert_eq!(h.actions().len(), before);
    assert_eq!(
        h.sup().poll_timeout(),
        None,
        "a calm static pool sleeps until an input"
    );
}

#[test]
fn request_timeout_kills_the_worker_at_the_immediate_stage() {
    let mut c = Config::static_pool(1);
    c.request_timeout = Some(Duration::from_secs(30));
    let mut h = Harness::new(c);
    h.at(10.0).load(0, 1, 1); // a request started at 10 s
    h.at(39.9);
    assert!(signals(&h).is_empty());
    h.at(40.0);
    assert_eq!(
        signals(&h),
        vec![(
            Instant::from_secs(40),
            Signal::Kill,
            StopReason::RequestTimeout
        )]
    );
    // Its place is refilled at once (first young death: no backoff delay).
    assert_eq!(h.state(0), Some(WorkerState::Ready { busy: 0 }));
}

#[test]
fn a_request_finishing_in_time_disarms_the_request_timeout() {
    let mut c = Config::static_pool(1);
    c.request_timeout = Some(Duration::from_secs(30));
    let mut h = Harness::new(c);
    h.at(10.0).load(0, 1, 1);
    h.at(20.0).load(0, 0, 2);
    h.at(100.0);
    assert!(signals(&h).is_empty());
}

#[test]
fn unrecoverable_exit_code_leaves_the_place_empty() {
    let mut c = Config::static_pool(2);
    c.restart.unrecoverable_exit_codes = vec![2];
    let mut h = Harness::new(c);
    h.at(1.0).exit(0, ExitStatus::Code(2));
    h.at(60.0);
    assert_eq!(h.state(0), Some(WorkerState::GaveUp { code: 2 }));
    assert_eq!(
        h.sup().ready_workers(),
        1,
        "the slot is not refilled elsewhere either"
    );
    assert!(events(&h).contains(&Event::GaveUp {
        worker: WorkerId {
            slot: 0,
            incarnation: 1
        },
        code: 2
    }));
    // An operator restart retries the place.
    h.command(Command::Restart);
    h.at(61.0);
    assert_eq!(h.sup().ready_workers(), 2);
}

#[test]
fn stop_on_unrecoverable_exits_with_the_first_code() {
    let mut c = Config::static_pool(3);
    c.restart.unrecoverable_exit_codes = vec![2, 3];
    c.restart.stop_on_unrecoverable = true;
    let mut h = Harness::new(c);
    h.at(1.0).exit(1, ExitStatus::Code(3));
    // Another unrecoverable code during the drain does not change the exit code.
    h.exit(2, ExitStatus::Code(2));
    h.exit(0, ExitStatus::Code(0));
    assert_eq!(exit_code(&h), Some(3));
    assert_eq!(h.sup().phase(), Phase::Exited);
}

#[test]
fn a_signal_death_is_never_unrecoverable() {
    let mut c = Config::static_pool(1);
    c.restart.unrecoverable_exit_codes = vec![9];
    let mut h = Harness::new(c);
    h.at(1.0).exit(0, ExitStatus::Signaled(9));
    assert_eq!(h.state(0), Some(WorkerState::Ready { busy: 0 }));
}

#[test]
fn failed_spawn_backs_off_and_resets_the_ramp() {
    let mut h = Harness::new(Config::static_pool(1));
    h.fail_spawns(3);
    h.at(1.0).exit(0, ExitStatus::Code(1));
    // Death (young 1: immediate), then failed spawns: young 2 → 1 s, 3 → 2 s, 4 → 4 s.
    h.at(20.0);
    let spawns: Vec<Instant> = h
        .performed()
        .filter(|(_, a)| matches!(a, Action::Spawn { .. }))
        .map(|(t, _)| *t)
        .collect();
    let secs: Vec<u64> = spawns
        .iter()
        .map(|t| t.as_nanos() / 1_000_000_000)
        .collect();
    assert_eq!(secs, [0, 1, 2, 4, 8]);
    assert_eq!(h.sup().ready_workers(), 1);
    assert_eq!(h.sup().spawn_rate(), 1);
}

#[test]
fn healthy_uptime_resets_the_backoff() {
    let mut h = Harness::new(Config::static_pool(1));
    h.at(1.0).exit(0, ExitStatus::Code(1)); // young 1 → immediate
    h.at(2.0).exit(0, ExitStatus::Code(1)); // young 2 → 1 s
    h.at(3.0);
    assert_eq!(h.sup().ready_workers(), 1);
    h.at(20.0).exit(0, ExitStatus::Code(1)); // lived 17 s: healthy → immediate
    assert_eq!(h.sup().ready_workers(), 1);
    let last = events(&h).into_iter().rev().find_map(|e| match e {
        Event::RestartScheduled {
            delay,
            young_deaths,
            ..
        } => Some((delay, young_deaths)),
        _ => None,
    });
    assert_eq!(last, Some((Duration::ZERO, 1)));
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
fn stale_and_unknown_messages_are_ignored_not_fatal() {
    let mut c = Config::static_pool(1);
    c.readiness = Readiness::Notify;
    let mut h = Harness::new(c);
    let old = h.worker(0);
    h.ready(0);
    h.ready(0); // duplicate
    h.at(1.0).exit(0, ExitStatus::Code(1));
    h.input(Input::Heartbeat { worker: old }); // after exit
    h.input(Input::Exited {
        pid: Pid(99_999),
        status: ExitStatus::Code(0),
    });
    h.input(Input::Ready {
        worker: WorkerId {
            slot: 77,
            incarnation: 1,
        },
    });
    let ignored: Vec<Ignored> = events(&h)
        .into_iter()
        .filter_map(|e| match e {
            Event::Ignored(i) => Some(i),
            _ => None,
        })
        .collect();
    assert_eq!(
        ignored,
        vec![
            Ignored::DuplicateReady(old),
            Ignored::StaleMessage(old),
            Ignored::UnknownPid(Pid(99_999)),
            Ignored::StaleMessage(WorkerId {
                slot: 77,
                incarnation: 1
            }),
        ]
    );
}

#[test]
fn busy_above_threads_is_clamped_and_reported() {
    let mut c = Config::static_pool(1);
    c.threads = 4;
    let mut h = Harness::new(c);
    h.load(0, 9, 1);
    assert_eq!(h.state(0), Some(WorkerState::Ready { busy: 4 }));
    assert!(events(&h)
        .iter()
        .any(|e| matches!(e, Event::Ignored(Ignored::BusyClamped { busy: 9, .. }))));
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

#[test]
fn commands_while_stopping_are_refused() {
    let mut h = Harness::new(Config::static_pool(1));
    h.command(Command::Stop);
    h.command(Command::Restart);
    h.command(Command::Upgrade);
    h.command(Command::ScaleUp);
    assert_eq!(refused(&h), vec![Refusal::Stopping; 3]);
}

#[test]
fn stop_before_the_successor_is_ready_rolls_the_upgrade_back() {
    let mut h = Harness::new(Config::static_pool(1));
    h.command(Command::Upgrade);
    let successor = h.successor_pid().unwrap();
    h.at(1.0).command(Command::Stop);
    assert!(h.performed().any(|(_, a)| matches!(
        a,
        Action::KillSuccessor { pid, reason: RollbackReason::Stopped } if *pid == successor
    )));
    h.exit(0, ExitStatus::Code(0));
    assert_eq!(exit_code(&h), Some(0));
}

#[test]
fn successor_dying_during_handover_makes_the_old_pool_resume() {
    let mut c = Config::static_pool(2);
    c.readiness = Readiness::Notify;
    let mut h = Harness::new(c);
    h.ready(0).ready(1);
    h.command(Command::Upgrade).input(Input::SuccessorReady);
    assert_eq!(h.sup().phase(), Phase::Handover);
    let successor = h.successor_pid().unwrap();
    h.at(1.0).input(Input::Exited {
        pid: successor,
        status: ExitStatus::Signaled(11),
    });
    assert_eq!(h.sup().phase(), Phase::Running);
    // The draining workers are replaced as slots allow (max + max_surge = 3 processes);
    // nothing exits the supervisor.
    assert_eq!(h.sup().live_workers(), 3);
    h.exit(0, ExitStatus::Code(0)).exit(1, ExitStatus::Code(0));
    for slot in [0, 1, 2] {
        if h.state(slot) == Some(WorkerState::Booting) {
            h.ready(slot);
        }
    }
    assert_eq!(h.sup().ready_workers(), 2);
    assert_eq!(exit_code(&h), None);
}

#[test]
fn crash_loop_ends_once_the_window_is_calm() {
    let mut c = Config::static_pool(1);
    c.restart.intensity_deaths = 2;
    c.restart.intensity_window = Duration::from_secs(10);
    c.restart.backoff_max = Duration::from_secs(2);
    let mut h = Harness::new(c);
    for t in [1.0, 2.0, 5.0] {
        h.at(t).exit(0, ExitStatus::Code(1));
    }
    assert!(h.sup().is_crash_looping());
    h.at(100.0);
    assert!(!h.sup().is_crash_looping());
    assert!(events(&h).contains(&Event::CrashLoopEnded));
}

#[test]
fn a_hung_boot_under_the_serverengine_ladder_keeps_its_place() {
    // A worker killed for a failure is not replaced around its backoff: with the slow
    // serverengine immediate stage the place stays taken until the worker is gone.
    let mut c = Config::static_pool(1);
    c.readiness = Readiness::Notify;
    c.boot_timeout = Duration::from_secs(5);
    c.ladder = Arc::new(Ladder::serverengine());
    let mut h = Harness::new(c);
    h.at(5.0);
    assert_eq!(
        h.state(0),
        Some(WorkerState::Stopping {
            reason: StopReason::BootTimeout
        })
    );
    assert_eq!(
        h.sup().live_workers(),
        1,
        "no replacement while the hung worker lives"
    );
    h.at(6.0).exit(0, ExitStatus::Signaled(3));
    assert_eq!(h.state(0), Some(WorkerState::Booting));
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_going_backwards_is_a_driver_bug() {
    let mut sup = Supervisor::new(Config::static_pool(1), Instant::from_secs(10)).unwrap();
    sup.handle(Instant::from_secs(9), Input::Tick);
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

#[test]
fn a_worker_ready_at_spawn_gets_the_boot_timeout_for_its_first_heartbeat() {
    // AtSpawn readiness says nothing about the program being up: a program that takes 8 s
    // to start must not be killed by a 5 s watchdog before it could beat once. After its
    // first heartbeat the 5 s apply.
    let mut c = Config::static_pool(1);
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    c.boot_timeout = Duration::from_secs(20);
    let mut h = Harness::new(c);
    h.at(8.0).heartbeat(0);
    assert!(signals(&h).is_empty(), "no kill during the boot grace");
    h.at(12.9).heartbeat(0);
    h.at(30.0);
    assert_eq!(
        signals(&h),
        vec![(
            Instant::from_secs_f64(17.9),
            Signal::Kill,
            StopReason::HeartbeatTimeout
        )]
    );
    // A worker that never beats is killed at the boot timeout.
    let mut c = Config::static_pool(1);
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    c.boot_timeout = Duration::from_secs(20);
    let mut h = Harness::new(c);
    h.at(30.0);
    assert_eq!(
        signals(&h),
        vec![(
            Instant::from_secs(20),
            Signal::Kill,
            StopReason::HeartbeatTimeout
        )]
    );
}

#[test]
fn stop_now_sends_the_immediate_stage_first() {
    // An immediate stop enters every worker's ladder at `immediate_from`: under the
    // serverengine preset the first signal is QUIT, not TERM followed by QUIT.
    let mut c = Config::static_pool(2);
    c.ladder = Arc::new(Ladder::serverengine());
    let mut h = Harness::new(c);
    h.at(1.0).command(Command::StopNow);
    let first: Vec<Signal> = signals(&h).iter().map(|s| s.1).collect();
    assert_eq!(first, vec![Signal::Quit, Signal::Quit]);
}

/// The times a driver that sleeps until `poll_timeout()` wakes up, from now to `until`.
fn wakeups(h: &mut Harness, until: f64) -> Vec<Instant> {
    let end = Instant::from_secs_f64(until);
    let mut woke = Vec::new();
    while let Some(t) = h.sup().poll_timeout().filter(|&t| t <= end) {
        woke.push(t);
        h.advance_to(t);
    }
    h.advance_to(end);
    woke
}

#[test]
fn an_idle_dynamic_pool_sleeps_until_an_input_could_change_a_tick() {
    // 2 workers x 1 thread, spares 1..=3.
    let mut h = Harness::new(Config::dynamic(1, 8, 1, 3));
    assert_eq!(h.sup().target(), 2);
    // Ready at spawn but silent about their load: the accept queue is the only sign of
    // demand, so the pool keeps its tick (the shell samples the queue on it).
    assert_eq!(wakeups(&mut h, 3.5).len(), 3);
    h.load(0, 0, 0).load(1, 0, 0);
    assert_eq!(
        h.sup().poll_timeout(),
        None,
        "no tick could change anything"
    );
    assert!(wakeups(&mut h, 600.0).is_empty());
    // One thread busy: one idle is still min_spare.
    h.at(600.3).load(0, 1, 1);
    assert_eq!(h.sup().poll_timeout(), None);
    // No idle thread: short of spares. The tick is back, on its grid (not at once).
    h.at(600.5).load(1, 1, 1);
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs(601)));
    h.at(601.0);
    assert_eq!(h.sup().target(), 3);
    assert!(events(&h).contains(&Event::Scaled { from: 2, to: 3 }));
}

#[test]
fn a_pool_whose_workers_report_no_load_keeps_sampling_the_accept_queue() {
    let mut h = Harness::new(Config::dynamic(1, 8, 1, 3));
    assert_eq!(
        wakeups(&mut h, 30.5).len(),
        30,
        "one tick per maintenance interval"
    );
    h.input(Input::Backlog {
        listener: 0,
        queued: 5,
    });
    h.at(31.0);
    assert_eq!(
        h.sup().target(),
        3,
        "the queue seen on a tick scales the pool"
    );
}

#[test]
fn an_ondemand_pool_samples_while_no_thread_is_idle_then_sleeps_to_its_idle_retirement() {
    let mut h = Harness::new(Config::ondemand(4)); // idle_timeout 10 s
    assert_eq!(
        wakeups(&mut h, 5.5).len(),
        5,
        "no thread to take a connection: every tick samples the queue"
    );
    h.input(Input::Backlog {
        listener: 0,
        queued: 1,
    });
    assert_eq!(h.sup().live_workers(), 1);
    h.input(Input::Backlog {
        listener: 0,
        queued: 0,
    });
    h.load(0, 0, 1);
    // Idle since 5.5 s: it retires on the first tick at or after 15.5 s, and nothing can
    // happen before.
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs(16)));
    assert_eq!(wakeups(&mut h, 16.0), vec![Instant::from_secs(16)]);
    assert!(signals(&h)
        .iter()
        .any(|s| s.0 == Instant::from_secs(16) && s.2 == StopReason::Idle));
}

#[test]
fn a_static_pool_with_an_idle_timeout_never_ticks() {
    // A static pool never shrinks below its size: its maintenance tick can do nothing.
    let mut c = Config::static_pool(2);
    c.idle_timeout = Some(Duration::from_secs(5));
    let mut h = Harness::new(c);
    assert_eq!(h.sup().poll_timeout(), None);
    assert!(wakeups(&mut h, 100.0).is_empty());
}

#[test]
fn heartbeats_move_deadlines_exactly_so_no_wake_up_is_wasted() {
    let mut c = Config::static_pool(2);
    c.readiness = Readiness::Notify;
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    let mut h = Harness::new(c);
    h.at(0.5).ready(0).ready(1); // deadlines 5.5 s
    h.at(3.0).heartbeat(0);
    h.at(4.0).heartbeat(1);
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs(8)));
    assert!(
        wakeups(&mut h, 7.9).is_empty(),
        "no wake-up at the old 5.5 s"
    );
}

#[test]
fn a_stamped_heartbeat_counts_from_its_stamp_not_from_its_reading() {
    let mut c = Config::static_pool(1);
    c.readiness = Readiness::Notify;
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    let mut h = Harness::new(c);
    h.at(1.0).ready(0); // deadline 6 s
    let w = h.worker(0);
    let beat = |at: f64| Input::HeartbeatAt {
        worker: w,
        at: Instant::from_secs_f64(at),
    };
    // Read at 5.5 s, stamped at 2 s: the deadline is 7 s, not 10.5 s.
    h.at(5.5).input(beat(2.0));
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs(7)));
    // An older stamp changes nothing; a stamp from the future counts as now.
    h.input(beat(1.5));
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs(7)));
    h.at(6.0).input(beat(60.0));
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs(11)));
    // A driver that wakes late (no tick at 11 s) and reads a stamp of 5.9 s: the worker is
    // overdue since 10.9 s and is killed at once, after the input.
    h.set_now(Instant::from_secs(12));
    h.input(beat(5.9));
    assert_eq!(
        signals(&h),
        vec![(
            Instant::from_secs(12),
            Signal::Kill,
            StopReason::HeartbeatTimeout
        )]
    );
}

#[test]
fn reports_read_together_are_judged_together() {
    // Two workers due at the same deadline; the driver reads both fresh stamps at once.
    let config = || {
        let mut c = Config::static_pool(2);
        c.readiness = Readiness::Notify;
        c.heartbeat_timeout = Some(Duration::from_secs(5));
        c
    };
    let start = |c: Config| {
        let mut h = Harness::new(c);
        h.at(1.0).ready(0).ready(1); // both due at 6 s
        h
    };
    let stamps = |h: &Harness| {
        [0, 1].map(|slot| Input::HeartbeatAt {
            worker: h.worker(slot),
            at: Instant::from_secs_f64(5.9),
        })
    };
    // One `handle` for the batch: both renewed, nobody killed.
    let mut h = start(config());
    let batch = stamps(&h);
    h.sup_mut().handle_all(Instant::from_secs(6), batch);
    assert_eq!(h.sup().poll_timeout(), Some(Instant::from_secs_f64(10.9)));
    assert!(std::iter::from_fn(|| h.sup_mut().poll_action())
        .all(|a| !matches!(a, Action::Signal { .. })));
    // Fed one by one, the first one's timers would already kill the other worker.
    let mut h = start(config());
    let [a, b] = stamps(&h);
    h.sup_mut().handle(Instant::from_secs(6), a);
    let killed: Vec<Action> = std::iter::from_fn(|| h.sup_mut().poll_action())
        .filter(|a| matches!(a, Action::Signal { .. }))
        .collect();
    assert_eq!(killed.len(), 1, "{killed:?}");
    h.sup_mut().handle(Instant::from_secs(6), b);
}

fn notify_pool(workers: u32) -> Config {
    let mut c = Config::static_pool(workers);
    c.readiness = Readiness::Notify;
    c.heartbeat_timeout = Some(Duration::from_secs(10));
    c
}

#[test]
fn messages_may_wait_only_while_none_could_change_a_decision() {
    let secs = Instant::from_secs_f64;
    let mut h = Harness::new(notify_pool(4));
    h.at(1.0).ready(0).ready(1).ready(2);
    assert_eq!(
        h.sup().messages_due(10),
        secs(1.0),
        "a booting worker's READY=1"
    );
    h.ready(3);
    for t in [6.0, 11.0] {
        h.at(t);
        for slot in 0..4 {
            h.heartbeat(slot);
        }
    }
    assert_eq!(
        h.sup().messages_due(10),
        secs(11.0),
        "the pace takes two gaps"
    );
    h.at(16.0);
    for slot in 0..4 {
        h.heartbeat(slot);
    }
    // A beat every 5 s from 4 workers in step: half of a 10-datagram queue holds one each.
    assert_eq!(h.sup().messages_due(10), secs(21.0));
    assert_eq!(
        h.sup().messages_due(512),
        secs(26.0),
        "never beyond the timeout"
    );
    assert_eq!(
        h.sup().messages_due(6),
        secs(16.0),
        "more workers than half the queue"
    );

    // Any worker that reports its load makes every message prompt again.
    h.load(2, 0, 0);
    assert_eq!(h.sup().messages_due(10), secs(16.0));

    // The pace is the shorter of the last two gaps: one stall does not stretch the wait.
    let mut h = Harness::new(notify_pool(2));
    h.at(1.0).ready(0).ready(1);
    for t in [3.0, 5.0, 7.0] {
        h.at(t).heartbeat(0).heartbeat(1);
    }
    assert_eq!(h.sup().messages_due(10), secs(11.0)); // 2 paces of 2 s each
    h.at(16.0).heartbeat(0).heartbeat(1);
    assert_eq!(
        h.sup().messages_due(10),
        secs(20.0),
        "a 9 s gap is not the pace"
    );
    h.command(Command::Restart);
    assert_eq!(h.sup().messages_due(10), secs(16.0), "a rolling restart");

    let mut c = notify_pool(1);
    c.heartbeat_timeout = None;
    let mut h = Harness::new(c);
    h.at(1.0).ready(0);
    assert_eq!(
        h.sup().messages_due(10),
        secs(1.0),
        "no watchdog: nothing to batch"
    );
}

/// A driver that reads the notify socket only when `messages_due` has passed or a deadline
/// wakes it: four workers beating every 5 s at staggered times are never misjudged, one
/// that hangs is killed exactly at its deadline, and the driver wakes twice per 10 s
/// instead of eight times (reading at most one beat per worker, half the queue, each time).
#[test]
fn held_heartbeats_read_at_deadlines_keep_every_beating_worker() {
    let mut h = Harness::new(notify_pool(4));
    h.at(0.5);
    for slot in 0..4 {
        h.ready(slot);
    }
    let ids: Vec<WorkerId> = (0..4).map(|s| h.worker(s)).collect();
    // Worker s beats at 1 + 1.3 s + 5 k; worker 3 hangs after its beat at 49.9 s.
    let mut beats: Vec<(Instant, u32)> = (0..4u32)
        .flat_map(|s| (0..12).map(move |k| (s, k)))
        .map(|(s, k)| {
            (
                Instant::from_secs_f64(1.0 + 1.3 * f64::from(s) + 5.0 * f64::from(k)),
                s,
            )
        })
        .filter(|&(t, s)| s != 3 || t <= Instant::from_secs(50))
        .collect();
    beats.sort();
    let mut beats = beats.into_iter().peekable();
    let end = Instant::from_secs(60);
    let (mut wakes, mut held_max) = (0, 0);
    for _ in 0..10_000 {
        let due = h.sup().messages_due(10);
        let deadline = h.sup().poll_timeout().expect("the watchdog is on");
        // Prompt: the next message wakes the driver. Held: only the deadline or `due` does.
        let next_beat = beats.peek().map_or(end + Duration::from_secs(1), |b| b.0);
        let wake = if due <= h.now() {
            next_beat.min(deadline)
        } else {
            deadline.min(due)
        };
        if wake > end {
            break;
        }
        let mut read = Vec::new();
        while let Some(&(t, s)) = beats.peek().filter(|(t, _)| *t <= wake) {
            read.push(Input::HeartbeatAt {
                worker: ids[s as usize],
                at: t,
            });
            beats.next();
        }
        held_max = held_max.max(read.len());
        h.set_now(wake);
        h.inputs(read);
        if wake > Instant::from_secs(15) {
            wakes += 1;
        }
    }
    let kills: Vec<_> = signals(&h)
        .into_iter()
        .filter(|s| s.2 == StopReason::HeartbeatTimeout)
        .collect();
    assert_eq!(
        kills,
        vec![(
            Instant::from_secs_f64(59.9),
            Signal::Kill,
            StopReason::HeartbeatTimeout
        )],
        "only the hung worker, exactly 10 s after its last beat"
    );
    assert!(held_max <= 4, "one beat per worker held: {held_max}");
    // From 15 s (the beats' pace known) to the kill: two wake-ups per 10 s.
    assert!(wakes <= 10, "{wakes} wake-ups in 45 s");
}

/// systemd's rule for a service whose main process exits while others of its control group
/// run on: they are stopped (TERM, then the rest of the ladder), and the exit counts as the
/// main process's, a crash.
#[test]
fn a_main_process_exiting_alone_stops_the_rest_of_its_group_and_counts_as_a_crash() {
    let mut c = Config::static_pool(1);
    c.restart.unrecoverable_exit_codes = vec![2];
    let mut h = Harness::new(c);
    let pid = h.pid(0);
    let main_exit = |pid, code| Input::MainExited {
        pid,
        status: ExitStatus::Code(code),
    };
    h.at(1.0).input(main_exit(pid, 1));
    assert_eq!(
        signals(&h),
        vec![(Instant::from_secs(1), Signal::Term, StopReason::MainExited)],
        "TERM first: what is left may drain"
    );
    assert_eq!(
        h.sup().live_workers(),
        1,
        "no replacement beside the rest of the group"
    );
    h.at(1.5).input(Input::Exited {
        pid,
        status: ExitStatus::Signaled(15),
    });
    assert!(events(&h).contains(&Event::Exited {
        worker: WorkerId {
            slot: 0,
            incarnation: 1
        },
        status: ExitStatus::Code(1),
        uptime: Duration::from_millis(1500),
        expected: false,
    }));
    h.at(1.6);
    assert_eq!(h.worker(0).incarnation, 2, "restarted as after a crash");
    assert_eq!(h.sup().workers().next().unwrap().restarts, 1);

    // The main process's exit code is the one judged unrecoverable.
    let pid = h.pid(0);
    h.at(2.0).input(main_exit(pid, 2)).input(Input::Exited {
        pid,
        status: ExitStatus::Signaled(15),
    });
    h.at(30.0);
    assert_eq!(h.state(0), Some(WorkerState::GaveUp { code: 2 }));
}

#[test]
fn a_stopping_workers_main_exit_leaves_the_ladder_to_the_group() {
    let mut h = Harness::new(Config::static_pool(1));
    let pid = h.pid(0);
    h.at(1.0).command(Command::Stop);
    // A shell dies of the TERM at once; the program behind it drains, then hangs.
    h.input(Input::MainExited {
        pid,
        status: ExitStatus::Signaled(15),
    });
    h.at(600.0);
    let sent = signals(&h);
    assert!(
        sent.iter().all(|s| s.2 == StopReason::Stop),
        "still the stop's ladder: {sent:?}"
    );
    assert_eq!(sent.first().map(|s| s.1), Some(Signal::Term));
    assert_eq!(sent.last().map(|s| s.1), Some(Signal::Kill));
    assert_eq!(exit_code(&h), Some(0));
}

#[test]
fn a_successor_numbers_its_generations_on_from_its_predecessor() {
    let mut sup =
        Supervisor::succeeding(Config::static_pool(2), Instant::ZERO, Generation(4)).unwrap();
    assert_eq!(sup.generation(), Generation(5));
    let spawned: Vec<Generation> = std::iter::from_fn(|| sup.poll_action())
        .filter_map(|a| match a {
            Action::Spawn { generation, .. } => Some(generation),
            _ => None,
        })
        .collect();
    assert_eq!(spawned, vec![Generation(5), Generation(5)]);
    let top = Generation(u32::MAX);
    let sup = Supervisor::succeeding(Config::static_pool(1), Instant::ZERO, top).unwrap();
    assert_eq!(sup.generation(), top, "saturates");
}
