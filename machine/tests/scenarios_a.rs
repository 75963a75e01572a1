//! Scenario snapshots, part A: pool start, crashes and restarts, crash loops, the kill
//! ladder, boot timeouts and worker retirement (max requests, idle).
//!
//! Each test drives the scripted `Harness` (a fake OS), snapshots the fixed-column trace and
//! asserts the key facts by hand, so a blindly accepted snapshot still cannot hide a wrong
//! decision.

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Duration, Event, ExitStatus, Input, Instant, Ladder, OnCrashLoop,
    Phase, Readiness, Signal, StopReason, WorkerState,
};

// ------------------------------------------------------------------------- helpers

/// Milliseconds since the start: exact, and easy to compare with a schedule.
fn ms(t: Instant) -> u64 {
    t.as_nanos() / 1_000_000
}

/// Every signal sent to a worker: (time in ms, signal, reason).
fn signals(h: &Harness) -> Vec<(u64, Signal, StopReason)> {
    h.performed()
        .filter_map(|(t, a)| match a {
            Action::Signal { signal, reason, .. } => Some((ms(*t), *signal, *reason)),
            _ => None,
        })
        .collect()
}

/// Every spawn: (time in ms, slot).
fn spawns(h: &Harness) -> Vec<(u64, u32)> {
    h.performed()
        .filter_map(|(t, a)| match a {
            Action::Spawn { worker, .. } => Some((ms(*t), worker.slot)),
            _ => None,
        })
        .collect()
}

/// Every event with its time in ms.
fn events(h: &Harness) -> Vec<(u64, Event)> {
    h.actions()
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Event(e) => Some((ms(*t), e.clone())),
            _ => None,
        })
        .collect()
}

/// Restart delays scheduled, in ms, in order.
fn backoff_delays(h: &Harness) -> Vec<u64> {
    events(h)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::RestartScheduled { delay, .. } => Some(delay.as_millis() as u64),
            _ => None,
        })
        .collect()
}

/// Workers retired: (time in ms, slot, reason).
fn retirements(h: &Harness) -> Vec<(u64, u32, StopReason)> {
    events(h)
        .into_iter()
        .filter_map(|(t, e)| match e {
            Event::Retiring { worker, reason } => Some((t, worker.slot, reason)),
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

/// The worker in `slot` waits out its backoff (if any), is respawned, and crashes 0.1 s
/// after its start with exit code 1: a death well under `healthy_uptime`.
fn die_young(h: &mut Harness, slot: u32) {
    if let Some(WorkerState::Backoff { until }) = h.state(slot) {
        h.advance_to(until);
    }
    assert!(
        matches!(h.state(slot), Some(WorkerState::Ready { .. })),
        "slot {slot} should hold a running worker, holds {:?}",
        h.state(slot)
    );
    h.advance(Duration::from_millis(100));
    h.exit(slot, ExitStatus::Code(1));
}

// ------------------------------------------------------------------------- 1. pool start

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
    assert!(retirements(&h).is_empty());

    insta::assert_snapshot!(h.trace());
    assert_eq!(
        spawns(&h),
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
    let retired: Vec<u32> = retirements(&h).iter().map(|r| r.1).collect();
    assert_eq!(
        retired,
        [0, 1],
        "4 idle workers, max_spare 2: the two idle longest retire, one per tick"
    );
    assert!(retirements(&h).iter().all(|r| r.2 == StopReason::ScaleDown));
}

// ------------------------------------------------------------------------- 2. crash

#[test]
fn crash_is_restarted_at_once_in_the_same_slot() {
    // A worker that ran healthily and then crashed (exit code 1) is restarted immediately
    // (the first restart has no backoff) in its own slot, so its slot history and backoff
    // state follow the restart. The other worker is untouched.
    let mut h = Harness::new(Config::static_pool(2));
    let old_pid = h.pid(0);
    let old_worker = h.worker(0);
    h.at(30.0).exit(0, ExitStatus::Code(1));
    insta::assert_snapshot!(h.trace());

    assert_eq!(backoff_delays(&h), [0]);
    assert_eq!(spawns(&h), [(0, 0), (0, 1), (30_000, 0)]);
    assert_ne!(h.pid(0), old_pid);
    assert_eq!(h.worker(0).incarnation, old_worker.incarnation + 1);
    assert_eq!(h.ready_slots(), [0, 1]);
    assert!(
        events(&h).iter().any(|(_, e)| matches!(
            e,
            Event::Exited {
                expected: false,
                ..
            }
        )),
        "a crash is an unexpected exit"
    );
}

// ------------------------------------------------------------------------- 3. crash loop

fn crash_loop_config() -> Config {
    let mut config = Config::static_pool(1);
    config.restart.backoff_min = Duration::from_secs(1);
    config.restart.backoff_max = Duration::from_secs(8);
    config.restart.intensity_deaths = 6;
    config.restart.intensity_window = Duration::from_secs(60);
    config
}

#[test]
fn crash_loop_backs_off_exponentially_to_the_cap_and_reports_crash_looping() {
    // A worker that dies 0.1 s after every start: the first restart is immediate, then the
    // slot backs off 1 s, 2 s, 4 s, 8 s and stays at the 8 s cap. The 7th death within 60 s
    // (more than intensity_deaths = 6) marks the pool crash-looping; with the default
    // OnCrashLoop::Backoff it keeps restarting at the cap. Once deaths stop, the crash loop
    // ends when the oldest counted death leaves the window.
    let mut h = Harness::new(crash_loop_config());
    for _ in 0..8 {
        die_young(&mut h, 0);
    }
    assert!(h.sup().is_crash_looping());
    // The worker finally stays up.
    if let Some(WorkerState::Backoff { until }) = h.state(0) {
        h.advance_to(until);
    }
    h.at(70.0);
    insta::assert_snapshot!(h.trace());

    assert_eq!(
        backoff_delays(&h),
        [0, 1000, 2000, 4000, 8000, 8000, 8000, 8000]
    );
    let deaths: Vec<u64> = events(&h)
        .iter()
        .filter(|(_, e)| matches!(e, Event::Exited { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        deaths,
        [100, 200, 1300, 3400, 7500, 15600, 23700, 31800],
        "each worker dies 0.1 s after its (backed-off) start"
    );
    let looping: Vec<u64> = events(&h)
        .iter()
        .filter(|(_, e)| matches!(e, Event::CrashLooping { deaths: 7, .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(looping, [23_700], "the 7th death in 60 s");
    let ended: Vec<u64> = events(&h)
        .iter()
        .filter(|(_, e)| matches!(e, Event::CrashLoopEnded))
        .map(|(t, _)| *t)
        .collect();
    // The last 7 deaths are kept: the oldest of them (0.2 s) leaves the window at 60.2 s.
    assert_eq!(ended, [60_200]);
    assert!(!h.sup().is_crash_looping());
    assert_eq!(h.ready_slots(), [0]);
    assert_eq!(exit_code(&h), None, "OnCrashLoop::Backoff never exits");
}

#[test]
fn crash_loop_with_on_crash_loop_exit_stops_the_pool_and_exits_with_the_code() {
    // The systemd/OTP-style escalation: OnCrashLoop::Exit(3). When slot 0 crash-loops, the
    // whole pool stops gracefully (the healthy worker in slot 1 gets TERM and drains) and
    // the supervisor exits with code 3, so the service manager sees the failure.
    let mut config = crash_loop_config();
    config.policy = drover_machine::Policy::Static { workers: 2 };
    config.restart.on_crash_loop = OnCrashLoop::Exit(3);
    let mut h = Harness::new(config);
    for _ in 0..7 {
        die_young(&mut h, 0);
    }
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: false });
    h.advance(Duration::from_secs(1));
    h.exit(1, ExitStatus::Code(0));
    insta::assert_snapshot!(h.trace());

    assert_eq!(h.sup().phase(), Phase::Exited);
    assert_eq!(exit_code(&h), Some(3));
    assert_eq!(
        backoff_delays(&h),
        [0, 1000, 2000, 4000, 8000, 8000],
        "the 7th death schedules no restart: the pool is stopping"
    );
    assert_eq!(
        signals(&h),
        [(23_700, Signal::Term, StopReason::Stop)],
        "only the live worker is signalled"
    );
    // A worker that already exited is not "retiring": only slot 1 is asked to stop.
    assert_eq!(retirements(&h), [(23_700, 1, StopReason::Stop)]);
}

// ------------------------------------------------------------------------- 4. kill ladder

fn serverengine(config: &mut Config) {
    config.ladder = Arc::new(Ladder::serverengine());
}

#[test]
fn hung_worker_walks_the_serverengine_immediate_ladder_to_kill_at_600s() {
    // A worker that beat once at start and then never again is hung: it gets no graceful
    // stage (it would not act on TERM) and enters serverengine's immediate stage: QUIT at
    // deadline +0, +10, +30, +60 …
    // +550 s, and KILL exactly 600 s after the deadline. Its place is kept (no replacement
    // beside it) until it is dead; then it is restarted at once (it lived long: no backoff).
    let mut config = Config::static_pool(1);
    serverengine(&mut config);
    config.heartbeat_timeout = Some(Duration::from_secs(10));
    let mut h = Harness::new(config);
    h.heartbeat(0);
    h.at(609.0);
    assert_eq!(
        spawns(&h).len(),
        1,
        "no replacement while the hung one lives"
    );
    assert!(matches!(
        h.state(0),
        Some(WorkerState::Stopping {
            reason: StopReason::HeartbeatTimeout
        })
    ));
    h.at(610.0);
    insta::assert_snapshot!(h.trace());

    let deadline = 10_000;
    let sent = signals(&h);
    let quits: Vec<u64> = sent
        .iter()
        .filter(|s| s.1 == Signal::Quit)
        .map(|s| (s.0 - deadline) / 1000)
        .collect();
    assert_eq!(quits, [0, 10, 30, 60, 100, 150, 210, 280, 360, 450, 550]);
    assert!(sent.iter().all(|s| s.2 == StopReason::HeartbeatTimeout));
    assert!(sent.iter().all(|s| s.1 != Signal::Term));
    assert_eq!(
        sent.last(),
        Some(&(
            deadline + 600_000,
            Signal::Kill,
            StopReason::HeartbeatTimeout
        ))
    );
    assert_eq!(spawns(&h), [(0, 0), (610_000, 0)]);
    assert_eq!(backoff_delays(&h), [0]);
}

#[test]
fn graceful_stop_under_serverengine_ladder_kills_at_exactly_1200s() {
    // An operator stop of a worker that ignores every signal, under serverengine's preset:
    // TERM at 0, 15, 40, 75 … 495 s, QUIT from 600 s with gaps 10, 20, 30 …, and KILL
    // exactly 1200 s after the stop; then the supervisor exits 0.
    let mut config = Config::static_pool(1);
    serverengine(&mut config);
    let mut h = Harness::new(config);
    h.at(10.0).command(Command::Stop);
    h.at(1209.0);
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: false });
    h.at(1210.0);
    insta::assert_snapshot!(h.trace());

    let stop = 10_000;
    let sent = signals(&h);
    let at = |sig: Signal| -> Vec<u64> {
        sent.iter()
            .filter(|s| s.1 == sig)
            .map(|s| (s.0 - stop) / 1000)
            .collect()
    };
    assert_eq!(
        at(Signal::Term),
        [0, 15, 40, 75, 120, 175, 240, 315, 400, 495]
    );
    assert_eq!(
        at(Signal::Quit),
        [600, 610, 630, 660, 700, 750, 810, 880, 960, 1050, 1150]
    );
    assert_eq!(at(Signal::Kill), [1200]);
    assert!(sent.iter().all(|s| s.2 == StopReason::Stop));
    assert_eq!(h.sup().phase(), Phase::Exited);
    assert_eq!(exit_code(&h), Some(0));
}

// ------------------------------------------------------------------------- 5. boot timeout

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
        signals(&h),
        [
            (5_000, Signal::Kill, StopReason::BootTimeout),
            (10_000, Signal::Kill, StopReason::BootTimeout),
            (16_000, Signal::Kill, StopReason::BootTimeout),
        ]
    );
    assert_eq!(backoff_delays(&h), [0, 1000, 2000]);
    assert_eq!(spawns(&h), [(0, 0), (5_000, 0), (11_000, 0), (18_000, 0)]);
    assert_eq!(h.ready_slots(), [0]);
}

// ------------------------------------------------------------------------- 6. max requests

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
    let r = retirements(&h);
    assert_eq!(r.len(), 2);
    assert!(r.iter().all(|x| x.2 == StopReason::MaxRequests));
    assert!(signals(&h)
        .iter()
        .all(|s| s.1 == Signal::Term && s.2 == StopReason::MaxRequests));
    assert!(backoff_delays(&h).is_empty(), "a retirement is not a death");
    // Each replacement spawns at the moment its predecessor retires, not after its drain.
    let replacements: Vec<u64> = spawns(&h)[2..].iter().map(|s| s.0).collect();
    assert_eq!(replacements, [r[0].0, r[1].0]);
    assert_eq!(h.ready_slots().len(), 2);
    assert_eq!(h.sup().live_workers(), 2);
}

// ------------------------------------------------------------------------- 7. idle

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
        retirements(&h),
        [
            (10_000, 0, StopReason::Idle),
            (11_000, 3, StopReason::Idle),
            (13_000, 1, StopReason::Idle),
        ]
    );
    assert_eq!(h.sup().target(), 1);
    assert_eq!(h.ready_slots(), [2]);
    assert_eq!(spawns(&h).len(), 4, "no replacement for an idle retirement");
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

    assert_eq!(spawns(&h), [(1_000, 0)]);
    assert_eq!(retirements(&h), [(14_000, 0, StopReason::Idle)]);
    assert_eq!(h.sup().target(), 0);
    assert_eq!(h.sup().live_workers(), 0);
}
