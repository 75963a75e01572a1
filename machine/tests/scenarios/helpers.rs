//! Readers over a `Harness` run shared by the topic modules. Two clocks are in use: the
//! `_ms` readers give whole milliseconds since the start (exact, easy to compare with a
//! schedule), the others give `Instant`s.

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Event, ExitStatus, Instant, Refusal, Signal, StopReason, WorkerState,
};

/// An instant `secs` seconds after the start.
pub fn t(secs: f64) -> Instant {
    Instant::from_secs_f64(secs)
}

/// Milliseconds since the start.
pub fn ms(t: Instant) -> u64 {
    t.as_nanos() / 1_000_000
}

/// Every event, in order.
pub fn events(h: &Harness) -> Vec<Event> {
    h.actions()
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

/// Every event with its time in ms.
pub fn events_ms(h: &Harness) -> Vec<(u64, Event)> {
    h.actions()
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Event(e) => Some((ms(*t), e.clone())),
            _ => None,
        })
        .collect()
}

/// Every signal sent to a worker: (time, signal, reason).
pub fn signals(h: &Harness) -> Vec<(Instant, Signal, StopReason)> {
    h.performed()
        .filter_map(|(t, a)| match a {
            Action::Signal { signal, reason, .. } => Some((*t, *signal, *reason)),
            _ => None,
        })
        .collect()
}

/// Every signal sent to a worker: (time in ms, signal, reason).
pub fn signals_ms(h: &Harness) -> Vec<(u64, Signal, StopReason)> {
    h.performed()
        .filter_map(|(t, a)| match a {
            Action::Signal { signal, reason, .. } => Some((ms(*t), *signal, *reason)),
            _ => None,
        })
        .collect()
}

/// Every signal sent to a worker: (time, slot, signal).
pub fn slot_signals(h: &Harness) -> Vec<(Instant, u32, Signal)> {
    h.actions()
        .iter()
        .filter_map(|(when, a)| match a {
            Action::Signal { worker, signal, .. } => Some((*when, worker.slot, *signal)),
            _ => None,
        })
        .collect()
}

/// Every spawn: (time in ms, slot).
pub fn spawns_ms(h: &Harness) -> Vec<(u64, u32)> {
    h.performed()
        .filter_map(|(t, a)| match a {
            Action::Spawn { worker, .. } => Some((ms(*t), worker.slot)),
            _ => None,
        })
        .collect()
}

/// Spawns performed at exactly `at`.
pub fn spawns_at(h: &Harness, at: Instant) -> usize {
    h.actions()
        .iter()
        .filter(|(when, a)| *when == at && matches!(a, Action::Spawn { .. }))
        .count()
}

/// Restart delays scheduled, in ms, in order.
pub fn backoff_delays(h: &Harness) -> Vec<u64> {
    events_ms(h)
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::RestartScheduled { delay, .. } => Some(delay.as_millis() as u64),
            _ => None,
        })
        .collect()
}

/// Every retirement: (time, slot, reason).
pub fn retirements(h: &Harness) -> Vec<(Instant, u32, StopReason)> {
    h.actions()
        .iter()
        .filter_map(|(when, a)| match a {
            Action::Event(Event::Retiring { worker, reason }) => {
                Some((*when, worker.slot, *reason))
            }
            _ => None,
        })
        .collect()
}

/// Every retirement: (time in ms, slot, reason).
pub fn retirements_ms(h: &Harness) -> Vec<(u64, u32, StopReason)> {
    events_ms(h)
        .into_iter()
        .filter_map(|(t, e)| match e {
            Event::Retiring { worker, reason } => Some((t, worker.slot, reason)),
            _ => None,
        })
        .collect()
}

/// Every refused command's reason, in order.
pub fn refused(h: &Harness) -> Vec<Refusal> {
    events(h)
        .into_iter()
        .filter_map(|e| match e {
            Event::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

/// The code of the first `Exit` action.
pub fn exit_code(h: &Harness) -> Option<i32> {
    h.performed().find_map(|(_, a)| match a {
        Action::Exit { code } => Some(*code),
        _ => None,
    })
}

/// Every `Exit` action: (time, code).
pub fn exits(h: &Harness) -> Vec<(Instant, i32)> {
    h.actions()
        .iter()
        .filter_map(|(when, a)| match a {
            Action::Exit { code } => Some((*when, *code)),
            _ => None,
        })
        .collect()
}

pub fn count_actions(h: &Harness, pred: impl Fn(&Action) -> bool) -> usize {
    h.actions().iter().filter(|(_, a)| pred(a)).count()
}

/// Every worker asked to stop drains and exits cleanly now.
pub fn exit_stopping(h: &mut Harness) {
    let stopping: Vec<u32> = h
        .sup()
        .workers()
        .filter(|w| matches!(w.state, WorkerState::Stopping { .. }) && w.pid.is_some())
        .map(|w| w.id.slot)
        .collect();
    for slot in stopping {
        h.exit(slot, ExitStatus::Code(0));
    }
}
