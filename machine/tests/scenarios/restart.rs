//! Restarts after a death: the immediate first restart, exponential backoff and its reset
//! after a healthy uptime, crash loops, unrecoverable exit codes, and a main process that
//! exits before the rest of its group.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Duration, Event, ExitStatus, Input, Instant, OnCrashLoop, Phase,
    Signal, StopReason, WorkerId, WorkerState,
};

use crate::helpers::{
    backoff_delays, events, events_ms, exit_code, retirements_ms, signals, signals_ms, spawns_ms,
};

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
    assert_eq!(spawns_ms(&h), [(0, 0), (0, 1), (30_000, 0)]);
    assert_ne!(h.pid(0), old_pid);
    assert_eq!(h.worker(0).incarnation, old_worker.incarnation + 1);
    assert_eq!(h.ready_slots(), [0, 1]);
    assert!(
        events_ms(&h).iter().any(|(_, e)| matches!(
            e,
            Event::Exited {
                expected: false,
                ..
            }
        )),
        "a crash is an unexpected exit"
    );
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

fn crash_loop_config() -> Config {
    let mut config = Config::static_pool(1);
    config.restart.backoff_min = Duration::from_secs(1);
    config.restart.backoff_max = Duration::from_secs(8);
    config.restart.intensity_deaths = 6;
    config.restart.intensity_window = Duration::from_secs(60);
    config
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
    let deaths: Vec<u64> = events_ms(&h)
        .iter()
        .filter(|(_, e)| matches!(e, Event::Exited { .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        deaths,
        [100, 200, 1300, 3400, 7500, 15600, 23700, 31800],
        "each worker dies 0.1 s after its (backed-off) start"
    );
    let looping: Vec<u64> = events_ms(&h)
        .iter()
        .filter(|(_, e)| matches!(e, Event::CrashLooping { deaths: 7, .. }))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(looping, [23_700], "the 7th death in 60 s");
    let ended: Vec<u64> = events_ms(&h)
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
        signals_ms(&h),
        [(23_700, Signal::Term, StopReason::Stop)],
        "only the live worker is signalled"
    );
    // A worker that already exited is not "retiring": only slot 1 is asked to stop.
    assert_eq!(retirements_ms(&h), [(23_700, 1, StopReason::Stop)]);
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

/// The restart policy tells deaths apart (ARCHITECTURE §10): a Ready worker killed from
/// outside is no failure of the program, so five SIGKILLs in a row, each soon after the last
/// restart, are each replaced at once, and no crash loop is declared.
#[test]
fn a_worker_killed_from_outside_is_replaced_at_once_every_time() {
    let mut config = Config::static_pool(2);
    config.restart.intensity_deaths = 2;
    let mut h = Harness::new(config);
    for k in 0..5 {
        h.at(1.0 + 1.5 * f64::from(k))
            .exit(0, ExitStatus::Signaled(drover_machine::SIGKILL_NUMBER));
    }
    assert_eq!(backoff_delays(&h), [0; 5]);
    assert!(!h.sup().is_crash_looping());
    assert!(!events(&h)
        .iter()
        .any(|e| matches!(e, Event::CrashLooping { .. })));
    assert_eq!(h.ready_slots(), [0, 1]);
}

#[test]
fn a_worker_that_exits_zero_on_its_own_is_replaced_at_once_without_counting() {
    let mut h = Harness::new(Config::static_pool(1));
    h.at(1.0).exit(0, ExitStatus::Code(1)); // a crash: young 1
    h.at(2.0).exit(0, ExitStatus::Code(0)); // its own retirement: at once, streak kept
    h.at(3.0).exit(0, ExitStatus::Code(1)); // young 2: backoff_min
    let scheduled: Vec<(u64, u32, &'static str)> = events(&h)
        .into_iter()
        .filter_map(|e| match e {
            Event::RestartScheduled {
                delay,
                young_deaths,
                cause,
                ..
            } => Some((delay.as_millis() as u64, young_deaths, cause.name())),
            _ => None,
        })
        .collect();
    assert_eq!(
        scheduled,
        [(0, 1, "crash"), (0, 1, "retired"), (1_000, 2, "crash")]
    );
}

#[test]
fn a_kill_before_ready_and_a_segfault_count_as_failures() {
    let mut config = Config::static_pool(1);
    config.readiness = drover_machine::Readiness::Notify;
    let mut h = Harness::new(config);
    // Killed while booting: a boot failure, whoever sent it.
    h.at(1.0)
        .exit(0, ExitStatus::Signaled(drover_machine::SIGKILL_NUMBER));
    h.at(2.0)
        .exit(0, ExitStatus::Signaled(drover_machine::SIGKILL_NUMBER));
    h.at(3.5).ready(0);
    // SEGV after Ready: a crash.
    h.at(4.0).exit(0, ExitStatus::Signaled(11));
    assert_eq!(backoff_delays(&h), [0, 1_000, 2_000]);
}

#[test]
fn a_kill_storm_is_paced_at_the_quick_restart_rate() {
    let mut config = Config::static_pool(4);
    config.restart.quick_restart_rate = 2;
    let mut h = Harness::new(config);
    let kills = (0..4)
        .map(|slot| Input::Exited {
            pid: h.pid(slot),
            status: ExitStatus::Signaled(drover_machine::SIGTERM_NUMBER),
        })
        .collect();
    h.at(1.0).inputs(kills);
    // Two at once, the next two when the first two are a second old.
    assert_eq!(backoff_delays(&h), [0, 0, 1_000, 1_000]);
    h.at(2.0);
    assert_eq!(h.ready_slots(), [0, 1, 2, 3]);
}

/// A pool of `workers` whose start fails on a failure (`fail_start`), booting with
/// notify-readiness so that "before the pool was ready" lasts until the test says.
fn failing_start_pool(workers: u32) -> Config {
    let mut c = Config::static_pool(workers);
    c.readiness = drover_machine::Readiness::Notify;
    c.restart.fail_start = true;
    c
}

fn start_failures(h: &Harness) -> Vec<u32> {
    events(h)
        .into_iter()
        .filter_map(|e| match e {
            Event::StartFailed { slot } => Some(slot),
            _ => None,
        })
        .collect()
}

#[test]
fn fail_start_stops_the_pool_with_code_1_when_a_worker_dies_before_the_pool_is_ready() {
    // systemd's judgement of a start: slot 1's worker crashes while slot 0's has not yet
    // said READY. The pool stops (slot 0 gets TERM), nothing is restarted, and the run
    // ends with exit code 1, so `--daemonize`'s launcher can report the failure.
    let mut h = Harness::new(failing_start_pool(2));
    h.at(0.5).ready(0);
    h.at(1.0).exit(1, ExitStatus::Code(1));
    assert_eq!(start_failures(&h), [1]);
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: false });
    assert_eq!(
        backoff_delays(&h),
        Vec::<u64>::new(),
        "a failed start restarts nothing"
    );
    assert_eq!(retirements_ms(&h), [(1_000, 0, StopReason::Stop)]);
    h.exit(0, ExitStatus::Code(0));
    assert_eq!(exit_code(&h), Some(1));
}

#[test]
fn fail_start_counts_a_failed_fork_and_a_slot_given_up() {
    let mut h = Harness::new({
        let mut c = failing_start_pool(1);
        c.restart.unrecoverable_exit_codes = vec![2];
        c
    });
    h.at(0.1).exit(0, ExitStatus::Code(2));
    assert_eq!(
        start_failures(&h),
        [0],
        "a slot given up on fails the start"
    );
    assert_eq!(exit_code(&h), Some(1));

    // A fork that fails (Harness::new performs the first spawns: the pool grows by a
    // reload, whose fork fails).
    let mut h = Harness::new(failing_start_pool(1));
    h.fail_spawns(1);
    h.at(0.1)
        .command(Command::Reload(Box::new(failing_start_pool(2))));
    assert_eq!(start_failures(&h), [1], "a failed fork fails the start");

    // A worker killed before it was ready (whoever killed it) counts, as a boot failure.
    let mut h = Harness::new(failing_start_pool(1));
    h.at(0.1).exit(0, ExitStatus::Signaled(9));
    assert_eq!(start_failures(&h), [0]);
}

#[test]
fn fail_start_keeps_a_code_the_same_failure_chose() {
    // An unrecoverable exit with stop_on_unrecoverable already stops the pool with its own
    // code: the start is still declared failed (the launcher learns why), and the code
    // stays the worker's.
    let mut c = failing_start_pool(1);
    c.restart.unrecoverable_exit_codes = vec![3];
    c.restart.stop_on_unrecoverable = true;
    let mut h = Harness::new(c);
    h.at(0.1).exit(0, ExitStatus::Code(3));
    assert_eq!(start_failures(&h), [0]);
    assert_eq!(exit_code(&h), Some(3));
}

#[test]
fn fail_start_ends_once_the_pool_was_ready() {
    // After the first PoolReady, failures are the restart policy's: backoff, not a stop.
    // Not even a rolling restart's fresh readiness round brings the start back.
    let mut h = Harness::new(failing_start_pool(2));
    h.at(0.5).ready(0).ready(1);
    assert!(events(&h)
        .iter()
        .any(|e| matches!(e, Event::PoolReady { .. })));
    h.command(Command::Restart);
    h.at(1.0).exit(0, ExitStatus::Code(1));
    h.at(2.0).exit(1, ExitStatus::Code(1));
    assert_eq!(start_failures(&h), Vec::<u32>::new());
    assert_eq!(h.sup().phase(), Phase::Running);
    assert!(!backoff_delays(&h).is_empty(), "the deaths are restarted");
}

#[test]
fn without_fail_start_a_failure_before_ready_is_retried() {
    let mut c = failing_start_pool(1);
    c.restart.fail_start = false;
    let mut h = Harness::new(c);
    h.at(0.1).exit(0, ExitStatus::Code(1));
    assert_eq!(start_failures(&h), Vec::<u32>::new());
    assert_eq!(h.sup().phase(), Phase::Running);
    assert_eq!(backoff_delays(&h), [0]);
}
