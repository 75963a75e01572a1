//! The live upgrade's oracle (`Oracle::Upgrade`), judged by the actions and events the
//! machine emits and the successor's word as the world handed it in
//! (`Input::SuccessorReady`): a successor not Ready is rolled back for timeout by the first
//! `handle` at or after its request + `upgrade_timeout` (the config at the request), never
//! before that instant, and never once its Ready was handed in; the machine never hands
//! over (`UpgradeHandover`, or a drain for reason `upgrade`) before that Ready. A successor
//! that dies after the handover (its `Exited` handed in) leaves the pool to this supervisor
//! again: the `handle` that tells it rolls the upgrade back (`UpgradeRolledBack`), and the
//! supervisor then exits only for a stop (a `Stopping` event, before or after), never
//! because its drain for the dead successor ran out.
//!
//! The clock starts at the request's `handle` (the `StartSuccessor` goes out in its drain,
//! and the fork is synchronous, so "the successor started" is that instant). "No later
//! than" needs no slack: a late wake-up, a slow fork or a clock jump delays the first
//! `handle` past the deadline, and the rollback is judged against that `handle`.

use core::time::Duration;

use drover_machine::{Action, Event, Input, Instant, Pid, RollbackReason, StopReason, Supervisor};

use super::{Judge, Oracle};

/// An upgrade in flight, as the world saw it asked for and answered.
struct InFlight {
    requested: Instant,
    timeout: Duration,
    /// When the successor's Ready was handed in.
    ready: Option<Instant>,
    /// The fork's answer came: `SuccessorStarted` or `SuccessorFailed`. A second answer
    /// is a stray (the property tests hand some in), which the machine ignores.
    answered: bool,
    /// When its start was reported failed (`SuccessorFailed`): nothing is left to wait
    /// for, and the rollback is owed by the end of that `handle`.
    failed: Option<Instant>,
}

#[derive(Default)]
pub(super) struct UpgradeBooks {
    in_flight: Option<InFlight>,
    /// The machine handed over and drains for the successor (until a rollback).
    pub(super) handed_over: bool,
    /// The instant of the last `handle`.
    pub(super) last_handled: Option<Instant>,
    /// The successor's pid, from its fork's answer, until its exit is handed in.
    successor: Option<Pid>,
    /// When the successor's exit was handed in after the handover, until the rollback.
    resume_owed: Option<Instant>,
    /// This supervisor took its pool back from a dead successor and must serve on: no
    /// `Exit` unless a stop began (before or since: a stop is for good).
    resumed: bool,
    /// A stop began (a `Stopping` event).
    stop_begun: bool,
}

/// An input handed in.
pub(super) fn note_input(books: &mut UpgradeBooks, at: Instant, input: &Input) {
    match (input, &mut books.in_flight) {
        (Input::SuccessorReady, Some(up)) => {
            up.ready.get_or_insert(at);
        }
        (Input::SuccessorStarted { pid }, Some(up)) if !up.answered => {
            up.answered = true;
            books.successor = Some(*pid);
        }
        (Input::SuccessorStarted { .. }, Some(up)) => up.answered = true,
        (Input::Exited { pid, .. }, _) if books.successor == Some(*pid) => {
            books.successor = None;
            if books.handed_over {
                books.resume_owed = Some(at);
            }
        }
        (Input::SuccessorFailed { .. }, Some(up)) if !up.answered => {
            up.answered = true;
            up.failed = Some(at);
        }
        _ => {}
    }
}

impl Judge {
    /// The process was signalled before: it is on its ladder already (a rollback after the
    /// handover leaves its drain to run on).
    fn stopping(&self, pid: Pid) -> bool {
        self.table
            .by_pid
            .get(&pid)
            .is_some_and(|s| self.books.stops.tracks.contains_key(s))
    }

    pub(super) fn judge_upgrade_action(&mut self, sup: &Supervisor, action: &Action) {
        let stopping = match action {
            Action::Signal { pid, .. } => self.stopping(*pid),
            _ => false,
        };
        let books = &mut self.books.upgrade;
        match action {
            Action::StartSuccessor => {
                books.in_flight = Some(InFlight {
                    requested: books.last_handled.unwrap_or(self.now),
                    timeout: sup.config().upgrade_timeout,
                    ready: None,
                    answered: false,
                    failed: None,
                });
            }
            Action::Signal {
                worker,
                reason: StopReason::Upgrade,
                ..
            } if !books.handed_over && !stopping => {
                let what = format!(
                    "{worker} was stopped for upgrade at {}, but the machine never handed over to a successor that said Ready",
                    self.now
                );
                self.complain(Oracle::Upgrade, what);
            }
            Action::Exit { code } if books.resumed && !books.stop_begun => {
                let what = format!(
                    "the supervisor exited (code {code}) at {}, after it took its pool back from a successor that died after the handover, with no stop begun: it must serve on",
                    self.now
                );
                self.complain(Oracle::Upgrade, what);
            }
            _ => {}
        }
    }

    pub(super) fn judge_upgrade_event(&mut self, event: &Event) {
        let now = self.now;
        let books = &mut self.books.upgrade;
        let what = match event {
            Event::UpgradeHandover => {
                books.handed_over = true;
                books.resumed = false;
                match books.in_flight.take() {
                    Some(InFlight {
                        ready: Some(_), ..
                    }) => None,
                    Some(up) => Some(format!(
                        "the machine handed over at {now} to the successor requested at {}, whose Ready was never handed in",
                        up.requested
                    )),
                    None => Some(format!(
                        "the machine handed over at {now} with no upgrade requested"
                    )),
                }
            }
            Event::Stopping { .. } => {
                books.stop_begun = true;
                None
            }
            Event::UpgradeRolledBack { reason } => {
                books.resumed = std::mem::take(&mut books.handed_over);
                books.resume_owed = None;
                let up = books.in_flight.take();
                match (reason, up) {
                    (RollbackReason::Timeout, Some(up)) => {
                        let deadline = up.requested + up.timeout;
                        if let Some(ready) = up.ready {
                            Some(format!(
                                "the upgrade requested at {} was rolled back for timeout at {now}, but the successor's Ready was handed in at {ready}",
                                up.requested
                            ))
                        } else if now < deadline {
                            Some(format!(
                                "the upgrade requested at {} was rolled back for timeout at {now}, before upgrade_timeout {:?} ran out at {deadline}",
                                up.requested, up.timeout
                            ))
                        } else {
                            None
                        }
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(what) = what {
            self.complain(Oracle::Upgrade, what);
        }
    }

    /// After a world step: a successor not Ready by its deadline was rolled back by the
    /// first `handle` at or after it.
    pub(super) fn judge_upgrade_step(&mut self) {
        let books = &self.books.upgrade;
        // Once exited, the supervisor is told nothing more: a successor's exit handed in
        // after that is no fact it could act on.
        if let (Some(died), true, false) = (books.resume_owed, books.handed_over, self.exited) {
            let what = format!(
                "the successor died at {died}, after the handover, and this supervisor did not take its pool back (no rollback by the end of that step): it would drain and exit with nobody serving"
            );
            return self.complain(Oracle::Upgrade, what);
        }
        let (Some(up), Some(handled)) = (&books.in_flight, books.last_handled) else {
            return;
        };
        if let Some(failed) = up.failed.filter(|f| *f <= handled) {
            let what = format!(
                "the successor requested at {} failed to start at {failed}, and the upgrade was not rolled back by the handle at {handled}: the old pool must resume at once, not wait for upgrade_timeout",
                up.requested
            );
            return self.complain(Oracle::Upgrade, what);
        }
        let deadline = up.requested + up.timeout;
        if up.ready.is_none() && handled >= deadline {
            let what = format!(
                "the successor requested at {} was not Ready by {deadline} (upgrade_timeout {:?}), and the handle at {handled} did not roll it back",
                up.requested, up.timeout
            );
            self.complain(Oracle::Upgrade, what);
        }
    }
}
