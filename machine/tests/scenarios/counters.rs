//! The counters (`Supervisor::counters`, for metrics) agree with what the driver was asked
//! to do and with what the workers reported: spawns, exits and retirements by reason,
//! signals, restarts by cause, requests served as the growth of each worker's own total.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, DeathCause, Duration, Event, ExitReason, ExitStatus, Signal,
    StopReason,
};

fn exits(h: &Harness, reason: ExitReason) -> u64 {
    h.sup()
        .counters()
        .exits()
        .find(|(r, _)| *r == reason)
        .map_or(0, |(_, n)| n)
}

fn restarts(h: &Harness, cause: DeathCause) -> u64 {
    h.sup()
        .counters()
        .restarts()
        .find(|(c, _)| *c == cause)
        .map_or(0, |(_, n)| n)
}

/// Every counter of performed actions equals a recount of the harness's record.
fn assert_agree_with_the_record(h: &Harness) {
    let c = h.sup().counters();
    let spawns = h
        .performed()
        .filter(|(_, a)| matches!(a, Action::Spawn { .. }))
        .count() as u64;
    assert_eq!(c.spawns(), spawns, "{}", h.trace());
    let signals = h
        .performed()
        .filter(|(_, a)| matches!(a, Action::Signal { .. }))
        .count() as u64;
    assert_eq!(c.signals().map(|(_, _, n)| n).sum::<u64>(), signals);
    let exited = h
        .actions()
        .iter()
        .filter(|(_, a)| matches!(a, Action::Event(Event::Exited { .. })))
        .count() as u64;
    assert_eq!(c.exits_total(), exited);
    let retiring = h
        .actions()
        .iter()
        .filter(|(_, a)| matches!(a, Action::Event(Event::Retiring { .. })))
        .count() as u64;
    assert_eq!(c.retirements().map(|(_, n)| n).sum::<u64>(), retiring);
}

#[test]
fn crashes_kills_and_stops_are_counted_by_reason() {
    let mut c = Config::static_pool(2);
    c.heartbeat_timeout = Some(Duration::from_secs(5));
    let mut h = Harness::new(c);
    assert_eq!(h.sup().counters().spawns(), 2);
    // Slot 0 crashes; slot 1 beats, then goes silent and is killed for it.
    h.at(1.0).heartbeat(1).exit(0, ExitStatus::Code(1));
    assert_eq!(exits(&h, ExitReason::Unasked(DeathCause::Crash)), 1);
    assert_eq!(restarts(&h, DeathCause::Crash), 1);
    h.at(2.0).heartbeat(0).at(5.5).heartbeat(0).at(7.0);
    assert_eq!(
        exits(&h, ExitReason::Asked(StopReason::HeartbeatTimeout)),
        1,
        "{}",
        h.trace()
    );
    let kills: Vec<_> = h
        .sup()
        .counters()
        .signals()
        .filter(|(_, r, _)| *r == StopReason::HeartbeatTimeout)
        .collect();
    assert_eq!(kills, [(Signal::Kill, StopReason::HeartbeatTimeout, 1)]);
    assert_eq!(restarts(&h, DeathCause::Hung), 1);
    // Killed from outside (the OOM killer): counted, and not as drover's kill.
    h.at(30.0)
        .heartbeat(0)
        .heartbeat(1)
        .exit(0, ExitStatus::Signaled(9));
    assert_eq!(exits(&h, ExitReason::Unasked(DeathCause::Killed)), 1);
    h.at(31.0).command(Command::Stop);
    let c = h.sup().counters();
    assert_eq!(
        c.retirements()
            .find(|(r, _)| *r == StopReason::Stop)
            .map(|(_, n)| n),
        Some(2)
    );
    assert_agree_with_the_record(&h);
}

#[test]
fn requests_count_what_each_worker_served_once() {
    let mut c = Config::static_pool(1);
    c.max_requests = Some(100);
    let mut h = Harness::new(c);
    h.at(1.0)
        .load(0, 1, 10)
        .at(2.0)
        .load(0, 0, 25)
        .at(3.0)
        .load(0, 0, 25);
    assert_eq!(
        h.sup().counters().requests(),
        25,
        "a repeated total adds nothing"
    );
    h.at(4.0).load(0, 0, 100);
    assert_eq!(h.sup().counters().requests(), 100);
    h.at(4.5).exit(0, ExitStatus::Code(0));
    assert_eq!(
        exits(&h, ExitReason::Asked(StopReason::MaxRequests)),
        1,
        "{}",
        h.trace()
    );
    // The replacement (in the surge slot) starts from zero: its first report adds its own
    // total.
    h.at(5.0).load(1, 0, 7);
    assert_eq!(h.sup().counters().requests(), 107);
    assert_agree_with_the_record(&h);
}

#[test]
fn failed_forks_count_as_spawn_failures_and_boot_restarts() {
    let mut h = Harness::new(Config::static_pool(1));
    h.fail_spawns(2).at(1.0).exit(0, ExitStatus::Code(1));
    h.at(60.0);
    let c = h.sup().counters();
    assert_eq!(c.spawn_failures(), 2, "{}", h.trace());
    assert_eq!(restarts(&h, DeathCause::Boot), 2);
    assert_agree_with_the_record(&h);
}
