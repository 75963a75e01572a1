//! Inputs that carry no decision: spurious ticks, stale, duplicate and unknown messages,
//! out-of-range load reports; and the one driver bug the machine refuses, time going
//! backwards.

use drover_machine::testing::Harness;
use drover_machine::{
    Config, Event, ExitStatus, Ignored, Input, Instant, Pid, Readiness, Supervisor, WorkerId,
    WorkerState,
};

use crate::helpers::events;

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
#[should_panic(expected = "time went backwards")]
fn time_going_backwards_is_a_driver_bug() {
    let mut sup = Supervisor::new(Config::static_pool(1), Instant::from_secs(10)).unwrap();
    sup.handle(Instant::from_secs(9), Input::Tick);
}
