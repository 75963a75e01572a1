//! The watchdogs that kill a stuck worker: boot timeout, heartbeat timeout (with stamped and
//! batched heartbeats) and request timeout.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Config, Duration, Event, Input, Instant, Pid, Readiness, Signal, StopReason,
    Supervisor, WorkerState,
};

use crate::helpers::{backoff_delays, events, retirements_ms, signals, signals_ms, spawns_ms};

#[test]
fn boot_timeout_kills_the_worker_and_restarts_with_backoff() {
    // A worker that must say READY (readiness Notify) within boot_timeout = 5 s and never
    // does is killed with reason boot-timeout (KILL at once: a wedged boot gets no graceful
    // stage) and counted as a failure: restarts go 0 s, 1 s, 2 s … like any young death.
    // The third replacement boots in time and stays.
    let mut config = Config::static_pool(1);
    config.readiness = Readiness::Notify;
    config.boot_timeout = Duration::from_secs(5);
    let mut h = Harness::new(config);
    h.at(18.0);
    assert_eq!(h.state(0), Some(WorkerState::Booting));
    h.at(19.0).ready(0);
    h.at(40.0);
    insta::assert_snapshot!(h.trace());

    assert_eq!(
        signals_ms(&h),
        [
            (5_000, Signal::Kill, StopReason::BootTimeout),
            (10_000, Signal::Kill, StopReason::BootTimeout),
            (16_000, Signal::Kill, StopReason::BootTimeout),
        ]
    );
    assert_eq!(backoff_delays(&h), [0, 1000, 2000]);
    assert_eq!(
        spawns_ms(&h),
        [(0, 0), (5_000, 0), (11_000, 0), (18_000, 0)]
    );
    assert_eq!(h.ready_slots(), [0]);
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
fn heartbeat_exactly_at_its_deadline_keeps_the_worker() {
    // docs/ARCHITECTURE.md §2: timers fire after the input of the same handle.
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

/// A supervisor that was stopped (SIGSTOP, a frozen cgroup, a paused VM) cannot know
/// whether its workers beat meanwhile: coming back more than `ABSENCE_MIN` after the
/// wake-up it asked for, it gives every worker a fresh heartbeat window.
#[test]
fn a_supervisor_back_from_an_absence_gives_every_worker_a_fresh_window() {
    let mut config = Config::static_pool(2);
    config.heartbeat_timeout = Some(Duration::from_secs(2));
    let mut h = Harness::new(config);
    h.at(1.0).heartbeat(0).heartbeat(1);
    // Asked to wake at 3 s; runs again at 9 s. Worker 1's beats got through, worker 0's
    // did not (its datagrams waited behind a full socket).
    h.set_now(Instant::from_secs_f64(9.0)).heartbeat(1);
    assert!(events(&h)
        .iter()
        .any(|e| matches!(e, Event::CameBack { late } if *late == Duration::from_secs(6))));
    assert_eq!(h.ready_slots(), [0, 1], "nobody killed on coming back");
    h.at(10.5).heartbeat(0);
    h.at(14.0);
    assert_eq!(
        retirements_ms(&h)
            .iter()
            .filter(|r| r.2 == StopReason::HeartbeatTimeout)
            .map(|r| r.0)
            .collect::<Vec<_>>(),
        [11_000, 12_500],
        "then each is judged from its last beat again (worker 0 would have died at 9 s)"
    );
}
