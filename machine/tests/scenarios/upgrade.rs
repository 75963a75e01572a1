//! Live upgrade: handover once the successor is ready, rollback when it dies or times out,
//! and the successor numbering its generations on from its predecessor.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Duration, Event, ExitStatus, Generation, Input, Instant, Phase,
    Readiness, Refusal, RollbackReason, Signal, StopReason, Succession, Supervisor, UpgradeState,
    WorkerState,
};

use crate::helpers::{count_actions, exit_code, exits, retirements, slot_signals, t};

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
    assert!(
        slot_signals(&h).is_empty(),
        "old workers serve until handover"
    );
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
    assert!(slot_signals(&h).iter().all(|s| s.2 == Signal::Term));
    assert_eq!(count_actions(&h, |a| matches!(a, Action::Spawn { .. })), 2);
    assert_eq!(
        count_actions(&h, |a| matches!(a, Action::KillSuccessor { .. })),
        0
    );
    insta::assert_snapshot!(h.trace());
}

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
    assert!(slot_signals(&h).is_empty(), "workers untouched");
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
    assert!(slot_signals(&h).is_empty(), "workers untouched");
    assert_eq!(h.sup().ready_workers(), 2);
    // A late SuccessorReady from the killed successor is ignored, not a handover.
    h.at(101.0).input(Input::SuccessorReady);
    assert_eq!(h.sup().phase(), Phase::Running);
    assert!(retirements(&h).is_empty());
    insta::assert_snapshot!(h.trace());
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

/// The events that tell the outside world about readiness and the handover, in order.
fn announcements(h: &Harness) -> Vec<String> {
    h.actions()
        .iter()
        .filter_map(|(at, a)| match a {
            Action::Event(Event::PoolReady { ready }) => Some(format!("{at} pool-ready {ready}")),
            Action::Event(Event::AskHandover) => Some(format!("{at} ask-handover")),
            Action::Event(Event::TookOver { predecessor_gone }) => {
                Some(format!("{at} took-over gone={predecessor_gone}"))
            }
            _ => None,
        })
        .collect()
}

// A successor asks its predecessor to hand over once its pool is ready, and only once; it
// refuses an upgrade of its own until the takeover; from the takeover on it is in charge and
// the service manager hears of its ready pool.
#[test]
fn a_successor_asks_for_the_handover_once_ready_and_is_in_charge_from_the_takeover() {
    let mut c = Config::static_pool(2);
    c.readiness = Readiness::Notify;
    let sup = Supervisor::succeeding(c, Instant::ZERO, Generation(1)).unwrap();
    let mut h = Harness::with(sup);
    assert_eq!(h.sup().succession(), Succession::Awaiting { asked: false });
    h.at(1.0).ready(0);
    assert!(
        announcements(&h).is_empty(),
        "one worker of two is no ready pool"
    );
    h.ready(1);
    assert_eq!(announcements(&h), ["1.000s ask-handover"]);
    h.at(2.0).exit(0, ExitStatus::Signaled(9)).at(3.0).ready(0);
    assert_eq!(announcements(&h), ["1.000s ask-handover"], "asked once");
    h.command(Command::Upgrade);
    assert!(h.actions().iter().any(|(_, a)| matches!(
        a,
        Action::Event(Event::Refused {
            reason: Refusal::AwaitingHandover,
            ..
        })
    )));
    h.at(4.0).input(Input::Takeover {
        predecessor_gone: false,
    });
    assert_eq!(h.sup().succession(), Succession::InCharge);
    assert_eq!(
        announcements(&h),
        [
            "1.000s ask-handover",
            "4.000s took-over gone=false",
            "4.000s pool-ready 2"
        ]
    );
    h.input(Input::Takeover {
        predecessor_gone: true,
    });
    assert_eq!(
        announcements(&h).len(),
        3,
        "a second takeover changes nothing"
    );
}

// READY=1 is told once per run: again after an accepted reload and after an upgrade that
// rolled back, not after a refused reload or a scale command.
#[test]
fn the_pool_is_announced_ready_once_per_run() {
    let mut c = Config::static_pool(2);
    c.readiness = Readiness::Notify;
    let mut h = Harness::new(c.clone());
    h.at(1.0).ready(0).ready(1);
    assert_eq!(announcements(&h), ["1.000s pool-ready 2"]);
    h.at(2.0).command(Command::ScaleTo(2)).heartbeat(0);
    assert_eq!(announcements(&h).len(), 1, "no new run");
    let mut bad = c.clone();
    bad.threads = 0;
    h.command(Command::Reload(Box::new(bad)));
    assert_eq!(announcements(&h).len(), 1, "a refused reload is no new run");
    h.at(3.0).command(Command::Reload(Box::new(c)));
    assert_eq!(announcements(&h)[1], "3.000s pool-ready 2");
    h.at(4.0).command(Command::Upgrade);
    let successor = h.successor_pid().unwrap();
    h.at(5.0).input(Input::Exited {
        pid: successor,
        status: ExitStatus::Code(1),
    });
    assert_eq!(announcements(&h).len(), 3, "{:?}", announcements(&h));
    assert_eq!(announcements(&h)[2], "5.000s pool-ready 2");
}
