//! Stopping the pool: a graceful stop that waits for drainers, a second stop that escalates,
//! an immediate stop, and commands refused while stopping.

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Duration, ExitStatus, Input, Instant, Ladder, Phase, Refusal, Signal,
};

use crate::helpers::{count_actions, exits, refused, signals, slot_signals, t};

// A graceful stop must wait for every worker to finish its requests: a fast worker exits at
// once, a slow one drains for 25 s (TERM is resent every 10 s meanwhile) and is never
// KILLed because it finishes within stop_timeout (30 s). Exit code 0 comes only after the
// last worker is gone; nothing is respawned while stopping.
#[test]
fn b2_graceful_stop_waits_for_a_slow_drainer() {
    let mut config = Config::static_pool(2);
    config.ladder = Arc::new(Ladder::for_any_program(Duration::from_secs(30)));
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Stop);
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: false });
    h.at(1.5).exit(0, ExitStatus::Code(0));
    h.at(25.0);
    assert!(exits(&h).is_empty(), "no Exit while a worker still drains");
    h.at(26.0).exit(1, ExitStatus::Code(0));
    h.at(100.0);

    assert_eq!(exits(&h), [(t(26.0), 0)]);
    assert!(
        matches!(h.actions().last(), Some((_, Action::Exit { code: 0 }))),
        "Exit is the last action"
    );
    assert_eq!(
        slot_signals(&h),
        [
            (t(1.0), 0, Signal::Term),
            (t(1.0), 1, Signal::Term),
            (t(11.0), 1, Signal::Term),
            (t(21.0), 1, Signal::Term),
        ],
        "TERM resent every 10 s to the drainer only; no KILL"
    );
    assert_eq!(count_actions(&h, |a| matches!(a, Action::Spawn { .. })), 2);
    assert_eq!(h.sup().phase(), Phase::Exited);
    insta::assert_snapshot!(h.trace());
}

// A second stop while draining escalates to the ladder's immediate stage at once: with the
// default ladder that is KILL, so the supervisor exits right away instead of waiting up to
// stop_timeout. A third stop changes nothing.
#[test]
fn b3a_second_stop_escalates_to_kill_with_default_ladder() {
    let mut config = Config::static_pool(2);
    config.ladder = Arc::new(Ladder::for_any_program(Duration::from_secs(30)));
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Stop);
    h.at(5.0).command(Command::Stop);
    h.at(6.0).command(Command::Stop);
    h.at(100.0);

    assert_eq!(
        slot_signals(&h),
        [
            (t(1.0), 0, Signal::Term),
            (t(1.0), 1, Signal::Term),
            (t(5.0), 0, Signal::Kill),
            (t(5.0), 1, Signal::Kill),
        ]
    );
    assert_eq!(
        exits(&h),
        [(t(5.0), 0)],
        "exit as soon as the KILLed are reaped"
    );
    insta::assert_snapshot!(h.trace());
}

// With serverengine's ladder the immediate stage is QUIT (resent at +10, +30 s …) and KILL
// comes exactly 600 s after the escalation. A worker that ignores QUIT shows the end of the
// ladder; a third stop must not restart it (a ladder never resets).
#[test]
fn b3b_second_stop_escalates_to_quit_with_serverengine_ladder() {
    let mut config = Config::static_pool(2);
    config.ladder = Arc::new(Ladder::serverengine());
    let mut h = Harness::new(config);
    h.at(1.0).command(Command::Stop);
    h.at(5.0).command(Command::Stop);
    assert_eq!(h.sup().phase(), Phase::Stopping { immediate: true });
    h.at(6.0).exit(0, ExitStatus::Code(0));
    h.at(30.0).command(Command::Stop);
    h.at(2000.0);

    let sigs = slot_signals(&h);
    assert_eq!(
        &sigs[..4],
        [
            (t(1.0), 0, Signal::Term),
            (t(1.0), 1, Signal::Term),
            (t(5.0), 0, Signal::Quit),
            (t(5.0), 1, Signal::Quit),
        ]
    );
    let quit_times: Vec<u64> = sigs
        .iter()
        .filter(|s| s.1 == 1 && s.2 == Signal::Quit)
        .map(|s| s.0.as_nanos() / 1_000_000_000)
        .collect();
    assert_eq!(
        quit_times,
        [5, 15, 35, 65, 105, 155, 215, 285, 365, 455, 555],
        "QUIT schedule from the escalation, untouched by the third stop"
    );
    assert_eq!(
        sigs.last(),
        Some(&(t(605.0), 1, Signal::Kill)),
        "KILL exactly 600 s after the escalation"
    );
    assert_eq!(sigs.iter().filter(|s| s.2 == Signal::Kill).count(), 1);
    assert_eq!(exits(&h), [(t(605.0), 0)]);
    insta::assert_snapshot!(h.trace());
}

#[test]
fn stop_now_sends_the_immediate_stage_first() {
    // An immediate stop enters every worker's ladder at `immediate_from`: under the
    // serverengine preset the first signal is QUIT, not TERM followed by QUIT.
    let mut c = Config::static_pool(2);
    c.ladder = Arc::new(Ladder::serverengine());
    let mut h = Harness::new(c);
    h.at(1.0).command(Command::StopNow);
    let first: Vec<Signal> = signals(&h).iter().map(|s| s.1).collect();
    assert_eq!(first, vec![Signal::Quit, Signal::Quit]);
}

// An immediate stop must reach a worker whose spawn is still in flight: when its pid
// arrives it enters the ladder at the immediate stage (KILL with the default ladder), not
// at graceful TERM with a 30 s wait. Drives the machine directly because the harness
// answers every spawn inside the drain (a slow fork, as the simulator models it).
#[test]
fn b3c_stop_now_reaches_a_worker_spawned_after_it() {
    use drover_machine::trace::{action_line, input_line};
    use drover_machine::{Pid, Supervisor};

    /// A bare run-loop driver that records the same trace lines as the harness.
    struct Driver {
        sup: Supervisor,
        lines: Vec<String>,
        performed: Vec<Action>,
    }
    impl Driver {
        fn feed(&mut self, now: Instant, input: Input) {
            self.lines.push(input_line(now, &input));
            self.sup.handle(now, input);
            self.sup.check_invariants().expect("invariants");
            self.drain(now);
        }
        fn drain(&mut self, now: Instant) {
            while let Some(a) = self.sup.poll_action() {
                self.lines.push(action_line(now, &a));
                self.performed.push(a);
            }
        }
    }

    let mut config = Config::static_pool(1);
    config.ladder = Arc::new(Ladder::for_any_program(Duration::from_secs(30)));
    let mut d = Driver {
        sup: Supervisor::new(config, Instant::ZERO).expect("valid config"),
        lines: Vec::new(),
        performed: Vec::new(),
    };
    d.drain(Instant::ZERO);
    let worker = match d.performed.first() {
        Some(Action::Spawn { worker, .. }) => *worker,
        other => panic!("expected a spawn, got {other:?}"),
    };
    // The fork is slow: StopNow arrives before its pid.
    d.feed(t(1.0), Input::Command(Command::StopNow));
    d.feed(
        t(1.2),
        Input::Spawned {
            worker,
            pid: Pid(500),
        },
    );
    let trace = d.lines.join("\n") + "\n";
    let sigs: Vec<Signal> = d
        .performed
        .iter()
        .filter_map(|a| match a {
            Action::Signal { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect();
    assert_eq!(
        sigs,
        [Signal::Kill],
        "an immediate stop sends the immediate stage at once\n{trace}"
    );
    assert_eq!(d.sup.phase(), Phase::Stopping { immediate: true });
    insta::assert_snapshot!(trace);
}

#[test]
fn commands_while_stopping_are_refused() {
    let mut h = Harness::new(Config::static_pool(1));
    h.command(Command::Stop);
    h.command(Command::Restart);
    h.command(Command::Upgrade);
    h.command(Command::ScaleUp);
    assert_eq!(refused(&h), vec![Refusal::Stopping; 3]);
}
