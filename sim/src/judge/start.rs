//! The failed start's oracle (`Oracle::StartFailure`), for `Restart::fail_start`: the start
//! fails exactly when, while the pool runs and before it was first ready (`PoolReady`, or a
//! successor's `AskHandover`), the supervisor learns of a death that counts or gives a slot
//! up; it is declared once (`Event::StartFailed`) in the `handle` that learnt it, and the run
//! ends with exit code 1, unless the same failure already chose a code of its own (a crash
//! loop configured to exit, an unrecoverable exit with `stop_on_unrecoverable`). Which deaths
//! count is the restart oracle's record (`restarts.rs`), told here through
//! `note_start_failure`; never the machine's counts.

use drover_machine::{Action, Event, OnCrashLoop, Phase, Supervisor};

use super::{Judge, Oracle};

#[derive(Debug, Default)]
pub(super) struct StartBooks {
    /// The pool was ready once: failures no longer fail the start.
    started: bool,
    /// `StartFailed` went out.
    declared: bool,
    /// A failure in this `handle` failed the start: `StartFailed` is owed, with why.
    owed: Option<String>,
    /// The exit code the run must end with, once a stop chose one: the first of the crash
    /// loop's, the unrecoverable exit's and the failed start's.
    exit_code: Option<i32>,
}

impl Judge {
    /// A failure of `slot` the supervisor learns of now (`what` says which): with
    /// `fail_start`, before the pool was ready and while it runs, it fails the start.
    pub(super) fn note_start_failure(&mut self, sup: &Supervisor, slot: u32, what: &str) {
        let books = &mut self.books.start;
        if !sup.config().restart.fail_start
            || books.started
            || books.declared
            || books.owed.is_some()
            || sup.phase() != Phase::Running
        {
            return;
        }
        books.owed = Some(format!(
            "slot {slot}'s worker {what} at {} before the pool was ever ready, with fail_start on",
            self.now
        ));
    }

    pub(super) fn judge_start_event(&mut self, sup: &Supervisor, event: &Event) {
        let restart = &sup.config().restart;
        // Only a stop that begins now chooses the code: the stop books still hold the state
        // before this event (they are written after this hook).
        let stopped = self.books.stops.stop.is_some() || self.books.upgrade.handed_over;
        let books = &mut self.books.start;
        match *event {
            Event::PoolReady { .. } | Event::AskHandover => books.started = true,
            Event::CrashLooping { .. } if !stopped => {
                if let OnCrashLoop::Exit(code) = restart.on_crash_loop {
                    books.exit_code.get_or_insert(code);
                }
            }
            Event::GaveUp { code, .. } if !stopped && restart.stop_on_unrecoverable => {
                books.exit_code.get_or_insert(code);
            }
            Event::StartFailed { slot } => {
                let first = !std::mem::replace(&mut books.declared, true);
                if books.owed.take().is_none() || !first {
                    let what = format!(
                        "the start was declared failed at {} for slot {slot}, but by the judge's record no failure fails it now (fail_start {}, pool ready before: {}, declared before: {})",
                        self.now,
                        restart.fail_start,
                        books.started,
                        !first
                    );
                    return self.complain(Oracle::StartFailure, what);
                }
                if !stopped {
                    books.exit_code.get_or_insert(1);
                }
            }
            _ => {}
        }
    }

    pub(super) fn judge_start_action(&mut self, action: &Action) {
        let &Action::Exit { code } = action else {
            return;
        };
        let books = &self.books.start;
        if let Some(expected) = books.exit_code.filter(|_| books.declared) {
            if code != expected {
                let what = format!(
                    "the run ended with exit code {code} after its start failed; the failure's stop chose {expected}"
                );
                self.complain(Oracle::StartFailure, what);
            }
        }
    }

    /// After a world step: a start failed in a `handle` of it was declared there.
    pub(super) fn judge_start_step(&mut self) {
        if let Some(why) = self.books.start.owed.take() {
            let what = format!("the start was not declared failed by {}: {why}", self.now);
            self.complain(Oracle::StartFailure, what);
        }
    }
}
