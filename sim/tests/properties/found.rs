//! The minimal inputs the property found, as deterministic scenarios (one bug each).

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, ExitStatus, Input, Instant, Ladder, Policy, Signal, StopReason,
};

use crate::secs;

/// A worker whose main process exited alone is stopping as a failure and keeps its
/// place; a reload then shrank the slot range below it. Its exit carried an
/// unrecoverable code, and the give-up kept a place above the new range.
#[test]
fn an_unrecoverable_main_exit_above_a_shrunk_slot_range_keeps_no_place() {
    let mut c = Config::static_pool(1);
    c.max_surge = 0;
    c.max_unavailable = 1;
    let mut reload = c.clone();
    reload.restart.unrecoverable_exit_codes = vec![2];
    let mut h = Harness::new(c);
    h.command(Command::ScaleTo(2));
    let pid = h.pid(1);
    h.input(Input::MainExited {
        pid,
        status: ExitStatus::Code(2),
    });
    h.command(Command::Reload(Box::new(reload)));
    h.input(Input::Exited {
        pid,
        status: ExitStatus::Signaled(15),
    });
    assert_eq!(h.state(1), None, "slot 1 is beyond the pool now");
}

fn spawns(h: &Harness) -> usize {
    h.performed()
        .filter(|(_, a)| matches!(a, Action::Spawn { .. }))
        .count()
}

fn stale_workers(h: &Harness) -> Vec<String> {
    let generation = h.sup().generation();
    h.sup()
        .workers()
        .filter(|w| w.generation < generation)
        .map(|w| format!("{:?} {:?} {:?}", w.id, w.generation, w.state))
        .collect()
}

/// A crash at once refilled (first restart has no backoff) leaves the slot spawning in
/// the same `handle`: the pool must keep its invariants.
#[test]
fn immediate_respawn_keeps_invariants() {
    let mut c = Config::static_pool(2);
    c.max_surge = 0;
    c.max_unavailable = 1;
    let mut h = Harness::new(c);
    h.exit(0, ExitStatus::Code(1));
    assert_eq!(h.sup().live_workers(), 2, "{}", h.trace());
}

/// A reload that lowers max_spawn_rate below the current ramp step.
#[test]
fn reload_lowering_max_spawn_rate_keeps_the_ramp_in_bounds() {
    let mut c = Config::new(Policy::Dynamic {
        min: 0,
        max: 4,
        start: 0,
        min_spare: 2,
        max_spare: 3,
    });
    c.max_spawn_rate = 4;
    let mut h = Harness::new(c.clone());
    h.at(1.0);
    assert_eq!(h.sup().spawn_rate(), 2);
    c.max_spawn_rate = 1;
    h.command(Command::Reload(Box::new(c)));
    assert!(h.sup().spawn_rate() <= 1, "{}", h.trace());
}

/// Idle retirement in a dynamic pool may not take the pool below min_spare idle threads:
/// otherwise it spawns and retires a worker every other tick, forever (and with workers
/// slow to drain, every slot ends up draining and nothing is Ready).
#[test]
fn idle_retirement_keeps_min_spare() {
    let mut c = Config::new(Policy::Dynamic {
        min: 0,
        max: 5,
        start: 0,
        min_spare: 1,
        max_spare: 1,
    });
    c.idle_timeout = Some(secs(1));
    let mut h = Harness::new(c);
    h.at(20.0);
    assert_eq!(spawns(&h), 1, "{}", h.trace());
    assert_eq!(h.sup().ready_workers(), 1, "{}", h.trace());
}

/// A worker of the new generation exits with an unrecoverable code during a rolling
/// restart: the rollout holds, the old workers keep serving (a release that exits
/// unrecoverably must not replace them), and the next restart retries.
#[test]
fn a_new_generation_giving_up_holds_the_rollout_until_the_next_restart() {
    let mut c = Config::static_pool(3);
    c.restart.unrecoverable_exit_codes = vec![2];
    let mut h = Harness::new(c);
    h.command(Command::Restart);
    h.exit(3, ExitStatus::Code(2));
    h.at(5000.0);
    assert_eq!(h.sup().ready_workers(), 3, "{}", h.trace());
    // One old worker was replaced before the new one gave up; the other two stay.
    assert_eq!(stale_workers(&h).len(), 2, "{}", h.trace());
    h.command(Command::Restart);
    h.at(10_000.0);
    assert_eq!(stale_workers(&h), Vec::<String>::new(), "{}", h.trace());
    assert_eq!(h.sup().ready_workers(), 3, "{}", h.trace());
}

/// Same with the gave-up place in an intermediate generation: the old-generation place
/// must be released so that the rollout can go on.
#[test]
fn rolling_restart_completes_around_an_old_gave_up_place() {
    let mut c = Config::static_pool(2);
    c.restart.unrecoverable_exit_codes = vec![1];
    let mut h = Harness::new(c);
    h.command(Command::Restart);
    h.command(Command::Restart);
    h.exit(2, ExitStatus::Code(1));
    h.at(5000.0);
    assert_eq!(stale_workers(&h), Vec::<String>::new(), "{}", h.trace());
}

/// A second stop that arrives on a late wake-up (before the ladder's timer ran) must not
/// restart the ladder: KILL still goes out at the first stop + time_to_kill(0).
#[test]
fn repeated_stop_after_a_late_wakeup_keeps_the_kill_deadline() {
    let mut c = Config::static_pool(1);
    c.ladder = Arc::new(Ladder::serverengine());
    let mut h = Harness::new(c);
    h.command(Command::Stop);
    h.set_now(Instant::from_secs(1000));
    h.command(Command::Stop);
    h.at(2000.0);
    let kill_at = h
        .performed()
        .find(|(_, a)| {
            matches!(
                a,
                Action::Signal {
                    signal: Signal::Kill,
                    reason: StopReason::Stop,
                    ..
                }
            )
        })
        .map(|(t, _)| *t);
    assert_eq!(kill_at, Some(Instant::from_secs(1200)), "{}", h.trace());
    assert!(h
        .actions()
        .iter()
        .any(|(_, a)| matches!(a, Action::Exit { code: 0 })));
}
