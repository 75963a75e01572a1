//! The kill ladder: the signals and their times between the first request to stop a worker
//! and its KILL, and a worker keeping its place while it walks the ladder.

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::{
    Command, Config, Duration, ExitStatus, Input, Ladder, Phase, Readiness, Signal, StopReason,
    WorkerState,
};

use crate::helpers::{backoff_delays, exit_code, signals, signals_ms, spawns_ms};

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
        spawns_ms(&h).len(),
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
    let sent = signals_ms(&h);
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
    assert_eq!(spawns_ms(&h), [(0, 0), (610_000, 0)]);
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
    let sent = signals_ms(&h);
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
