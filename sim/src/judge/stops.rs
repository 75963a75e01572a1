//! The kill ladder's oracle (`Oracle::StopLadder`), judged from the `Signal` actions the
//! machine emits and the ladder data of the config (`Config::ladder`), never from the
//! machine's ladder positions. Each process the machine signals is followed from its first
//! signal: a stop enters its ladder at stage 0 unless it is immediate (a hung or wedged
//! worker: boot, heartbeat and request timeouts; a stop-now, or a second stop while one
//! drains), which enters at `immediate_from`; every later signal is the one of the stage in
//! force at its instant and comes at its nominal time: the k-th resend of a stage
//! `interval + k·increment` after the previous one (from the signal itself when the previous
//! came so late that the gap had passed, as the documented rule "after the previous one"
//! says), the next stage exactly at the stage's timeout, KILL exactly at the deadline and
//! nothing after it.
//!
//! Lateness needs no slack: the rule is judged against the machine's own wake-ups. A
//! signal due at `t` must go out in the drain of the first `handle` at or after `t`, for
//! every `handle` fires every due timer; when the world wakes the loop late (late wake-ups,
//! slow forks, clock jumps), that first `handle` is late with it, and the signal is judged
//! against it, not against `t`. Early is judged against `t` exactly: the machine's
//! arithmetic has no reason to round.

use core::time::Duration;
use std::collections::BTreeMap;
use std::sync::Arc;

use drover_machine::{
    Action, Command, Event, Input, Instant, Ladder, OnCrashLoop, Signal, StopReason, Supervisor,
};

use super::{Judge, Oracle};

/// Where the world expects a signalled process on its ladder.
pub(super) struct Track {
    pub(super) reason: StopReason,
    ladder: Arc<Ladder>,
    stage: usize,
    stage_start: Instant,
    sent: u32,
    /// When the next signal is due; `None` once KILL went out.
    next: Option<Instant>,
    /// How much earlier than they went out the stop and its signals may have been decided:
    /// the machine decides in a `handle` and the signal goes out in its drain, after slow
    /// forks queued before it have moved the clock on. The machine's schedule may run up to
    /// this much ahead of the one counted from the signals: the slow forks' lateness, the
    /// one slack the world injects that the machine's own wake-ups do not absorb.
    skew: Duration,
    /// An immediate stop was ordered after this process entered its ladder below the
    /// immediate stage: the drain of that command must move it there.
    escalation_owed: Option<Instant>,
}

#[derive(Default)]
pub(super) struct StopBooks {
    /// Every process the machine has signalled and the world has not reaped, by serial.
    pub(super) tracks: BTreeMap<u64, Track>,
    /// The stop the operator ordered, by the commands handed in: `Some(immediate)`. The
    /// machine never leaves a stop, so neither does this.
    pub(super) stop: Option<bool>,
    /// The instant of the last `handle`: every ladder timer due by then has fired.
    pub(super) last_handled: Option<Instant>,
    /// The instant of the outermost `handle` whose drain runs now (a fork's answer is
    /// handed in inside the drain: a nested `handle`), and whether the next `handle` is
    /// such a nested one.
    pub(super) drain_from: Option<Instant>,
    pub(super) nested: bool,
}

/// A command handed in.
pub(super) fn note_input(books: &mut StopBooks, at: Instant, input: &Input) {
    let Input::Command(command) = input else {
        return;
    };
    // As the machine's rule: a stop while a graceful stop drains escalates, a stop-now is
    // immediate, a first stop is graceful.
    let immediate = match (command, books.stop) {
        (Command::StopNow, _) | (Command::Stop, Some(_)) => true,
        (Command::Stop, None) => false,
        _ => return,
    };
    if immediate && books.stop != Some(true) {
        for track in books.tracks.values_mut() {
            if track.next.is_some() && track.stage < track.ladder.immediate_from {
                track.escalation_owed = Some(at);
            }
        }
    }
    books.stop = Some(books.stop.unwrap_or(false) || immediate);
}

impl Judge {
    /// The machine starts a graceful stop of its own when a crash loop or an unrecoverable
    /// exit code is configured to end the run (while running, not while handing over): a
    /// stop the operator sends after it escalates, as a second stop does.
    pub(super) fn judge_stop_event(&mut self, sup: &Supervisor, event: &Event) {
        let restart = &sup.config().restart;
        let stops = match event {
            Event::GaveUp { .. } => restart.stop_on_unrecoverable,
            Event::CrashLooping { .. } => matches!(restart.on_crash_loop, OnCrashLoop::Exit(_)),
            Event::StartFailed { .. } => true,
            _ => false,
        };
        let books = &mut self.books.stops;
        if stops && books.stop.is_none() && !self.books.upgrade.handed_over {
            books.stop = Some(false);
        }
    }

    pub(super) fn judge_stop_action(&mut self, sup: &Supervisor, action: &Action) {
        if matches!(action, Action::Spawn { .. } | Action::StartSuccessor) {
            self.books.stops.nested = true;
        }
        let &Action::Signal {
            worker,
            pid,
            signal,
            reason,
        } = action
        else {
            return;
        };
        // A signal to no process of that worker is the safety oracle's to fail.
        let Some(&serial) = self.table.by_pid.get(&pid) else {
            return;
        };
        if self.table.procs[&serial].worker != worker {
            return;
        }
        let now = self.now;
        let books = &mut self.books.stops;
        // Each signal may have been decided at any `handle` of this drain: when one went out
        // late and the next is counted from it, the machine counts from that decision.
        let skew = now.saturating_since(books.drain_from.unwrap_or(now));
        let what = if let Some(track) = books.tracks.get_mut(&serial) {
            track.skew = track.skew.max(skew);
            track.fire(signal, now)
        } else {
            let ladder = sup.config().ladder.clone();
            let immediate = reason.starts_immediate()
                || (reason == StopReason::Stop && books.stop == Some(true));
            let stage = if immediate { ladder.immediate_from } else { 0 };
            let mut track = Track {
                reason,
                ladder,
                stage,
                stage_start: now,
                sent: 0,
                next: Some(now),
                skew,
                escalation_owed: None,
            };
            let what = track.fire(signal, now).map(|w| {
                format!(
                    "{w}; a {} stop for {} enters its ladder at stage {stage}",
                    if immediate { "immediate" } else { "graceful" },
                    reason.name()
                )
            });
            books.tracks.insert(serial, track);
            what
        };
        if let Some(what) = what {
            self.complain(
                Oracle::StopLadder,
                format!(
                    "{} went to {worker} (pid {pid}, {}) at {now}: {what}",
                    signal.name(),
                    reason.name()
                ),
            );
        }
    }

    /// After a world step: every signal due by the last `handle` went out, and an immediate
    /// stop moved every process below the immediate stage to it in its drain.
    pub(super) fn judge_stop_step(&mut self) {
        let procs = &self.table.procs;
        let books = &mut self.books.stops;
        books.tracks.retain(|serial, _| procs.contains_key(serial));
        let Some(handled) = books.last_handled else {
            return;
        };
        let mut late = None;
        for (serial, track) in &mut books.tracks {
            let worker = procs[serial].worker;
            if let Some(at) = track.escalation_owed.take() {
                if track.next.is_some() && track.stage < track.ladder.immediate_from {
                    late = Some(format!(
                        "an immediate stop was ordered at {at}, and {worker} (stopping for {}) was left at stage {} of its ladder: it must move to the immediate stage {} at once",
                        track.reason.name(),
                        track.stage,
                        track.ladder.immediate_from
                    ));
                    break;
                }
            }
            if let Some(due) = track.next.filter(|&t| t <= handled) {
                late = Some(format!(
                    "{worker} (stopping for {}) was due its next signal at {due} (stage {}, {} sent in it), and none went out in the drain of the handle at {handled}",
                    track.reason.name(),
                    track.stage,
                    track.sent
                ));
                break;
            }
        }
        if let Some(what) = late {
            self.complain(Oracle::StopLadder, what);
        }
    }
}

impl Track {
    /// `signal` went out at `now`: what was wrong with it, if anything, and the position
    /// after it. An escalation owed is met by the immediate stage's signal at once.
    fn fire(&mut self, signal: Signal, now: Instant) -> Option<String> {
        let immediate = self.ladder.immediate_from;
        let due = self.next;
        let on_time = due.is_some_and(|t| t <= now);
        if self.escalation_owed.is_some() && !(on_time && self.expected(now) == signal) {
            // The machine catches a late ladder up first, then moves it up: an escalation
            // is the immediate stage entered now.
            self.escalation_owed = None;
            if self.stage < immediate {
                self.stage = immediate;
                self.stage_start = now;
                self.sent = 0;
                self.next = Some(now);
            }
        }
        let Some(due) = self.next else {
            return Some("its ladder had ended in KILL: nothing may follow it".into());
        };
        if now + self.skew < due {
            return Some(format!(
                "stage {} ({} sent in it) has its next signal due at {due}, not before (less {:?} the stop's decision may have preceded its first signal)",
                self.stage, self.sent, self.skew
            ));
        }
        // Judged at the instant in the machine's possible schedule that makes it right, if
        // any: `now`, or `now` + the skew.
        let ahead = now + self.skew;
        let now = if self.expected(now) != signal && self.expected(ahead) == signal {
            ahead
        } else {
            now.max(due)
        };
        let expected = self.expected(now);
        // Move to the stage in force at `now`, stage starts at their nominal instants.
        while self.ladder.stages[self.stage].signal != Signal::Kill {
            let end = self.stage_start + self.ladder.stages[self.stage].timeout;
            if now < end {
                break;
            }
            self.stage += 1;
            self.stage_start = end;
            self.sent = 0;
            self.next = Some(end);
        }
        if signal != expected {
            return Some(format!(
                "stage {} of the ladder (entered at {}) sends {}, not {}",
                self.stage,
                self.stage_start,
                expected.name(),
                signal.name()
            ));
        }
        let stage = &self.ladder.stages[self.stage];
        if stage.signal == Signal::Kill {
            self.next = None;
            return None;
        }
        let slot = self.next.expect("a stage below KILL has a next signal");
        let gap = stage
            .interval
            .saturating_add(stage.increment.saturating_mul(self.sent));
        self.sent = self.sent.saturating_add(1);
        let next = if slot + gap > now {
            slot + gap
        } else {
            now + gap
        };
        self.next = Some(next.min(self.stage_start + stage.timeout));
        None
    }

    /// The signal of the stage in force at `now`.
    fn expected(&self, now: Instant) -> Signal {
        let (mut stage, mut start) = (self.stage, self.stage_start);
        while self.ladder.stages[stage].signal != Signal::Kill {
            let end = start + self.ladder.stages[stage].timeout;
            if now < end {
                break;
            }
            stage += 1;
            start = end;
        }
        self.ladder.stages[stage].signal
    }
}
