//! When a driver must wake up: the maintenance tick only while it could change something,
//! timer deadlines, and how long worker messages may wait unread (`poll_timeout`,
//! `messages_due`).

use drover_machine::testing::Harness;
use drover_machine::{
    Command, Config, Duration, Event, Input, Instant, Readiness, Signal, StopReason, WorkerId,
};

use crate::helpers::{events, signals};

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
