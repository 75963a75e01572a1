//! The live upgrade from the successor's side (`Faults::successor_of`). It owns the modelled predecessor's end of the upgrade channel: once
//! the machine asks for the handover (`AskHandover`, which the shell sends as `ready`) the
//! predecessor answers `takeover` after a drawn delay, unless it vanishes first (the
//! channel's end of file); the shell hands either in as `Input::Takeover`, once, as
//! os/src/shell/handover.rs does. An impatient operator may ask for an upgrade before the
//! takeover (`Ev::EarlyUpgrade`). And it owns the oracles of that side, judged by the
//! world's own records: the successor's workers start at the generation after its
//! predecessor's; it asks once, only while the predecessor has not handed over, and only
//! when its pool is ready; no `PoolReady` before the takeover; an upgrade before the
//! takeover is refused; a takeover handed in is acknowledged (`TookOver`); and a settled
//! pool tells whoever waits (checked before the final stop). "Ready" is the world's
//! (`SimOs::pool_short`). It must not decide anything the machine decides, nor change the
//! machine: it answers as the predecessor and the shell would, and looks.

use core::time::Duration;

use drover_machine::{
    Command, Event, Generation, Input, Instant, Phase, Refusal, Supervisor, UpgradeState,
};

use super::os::SimOs;
use super::Ev;
use crate::coverage::Mark;
use crate::rng::Rng;

/// What the predecessor says on the upgrade channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Says {
    /// `takeover`: it handed over and drains.
    Takeover,
    /// Nothing more: it is gone (the channel's end of file).
    Gone,
}

/// The predecessor of a run that starts as a live upgrade's successor, and what the world
/// knows of the handover.
pub(super) struct Predecessor {
    /// Its workers' generation.
    generation: Generation,
    /// How long it takes to answer `takeover` once asked.
    answer_after: Duration,
    /// The channel is closed for the shell: it handed in a takeover (the shell then ignores
    /// the end of file), or the predecessor is gone.
    closed: bool,
    /// `AskHandover` events seen.
    asks: u32,
    /// The `Takeover` handed in (`predecessor_gone`), once it was.
    handed: Option<bool>,
    /// A `Takeover` is being handed in: its drain must say `TookOver` with this.
    took_over_due: Option<bool>,
    /// An upgrade is being handed in before the takeover: its drain must refuse it.
    refusal_due: bool,
    /// `PoolReady` was said since the takeover.
    ready_said: bool,
    /// The first worker was spawned.
    spawned: bool,
    /// The generation in force: the one after the predecessor's, one more for each rolling
    /// restart the machine announced.
    in_force: Generation,
}

impl Predecessor {
    /// The predecessor's behaviour, drawn from its own stream: when it answers once asked
    /// (1 ms to 30 s, log-uniform), and whether and when it vanishes (3 in 10 runs, within
    /// 20 s of the start: before or after it is asked, and sometimes after it answered).
    /// Also whether and when an impatient operator asks this new drover for an upgrade of
    /// its own early on (half the runs, within 10 s; sent only before the takeover).
    pub(super) fn draw(generation: Generation, rng: &mut Rng) -> (Predecessor, Vec<(Instant, Ev)>) {
        let answer_after = Duration::from_secs_f64(0.001 * 30_000f64.powf(rng.unit()));
        let mut within = |p: f64, secs: u64| {
            rng.chance(p)
                .then(|| Instant::ZERO + rng.duration(Duration::ZERO, Duration::from_secs(secs)))
        };
        let vanish_at = within(0.3, 20).map(|at| (at, Ev::Predecessor(Says::Gone)));
        let upgrade_at = within(0.5, 10).map(|at| (at, Ev::EarlyUpgrade));
        let predecessor = Predecessor {
            generation,
            answer_after,
            closed: false,
            asks: 0,
            handed: None,
            took_over_due: None,
            refusal_due: false,
            ready_said: false,
            spawned: false,
            in_force: Generation(generation.0.saturating_add(1)),
        };
        (
            predecessor,
            vanish_at.into_iter().chain(upgrade_at).collect(),
        )
    }
}

impl SimOs {
    /// The predecessor says something on the channel: the input the shell hands in for it,
    /// if the channel is still open for the shell.
    pub(super) fn predecessor_says(&mut self, says: Says) -> Option<Input> {
        let p = self.predecessor.as_mut()?;
        if std::mem::replace(&mut p.closed, true) {
            return None;
        }
        if says == Says::Gone {
            self.coverage.hit(Mark::PredecessorVanished);
        }
        Some(Input::Takeover {
            predecessor_gone: says == Says::Gone,
        })
    }

    /// A successor whose predecessor has not handed over yet.
    pub(super) fn awaiting_handover(&self) -> bool {
        self.predecessor
            .as_ref()
            .is_some_and(|p| p.handed.is_none())
    }

    /// An input is about to be handed in: what its drain must show.
    pub(super) fn succession_handling(&mut self, input: &Input) {
        let Some(p) = self.predecessor.as_mut() else {
            return;
        };
        match input {
            Input::Command(Command::Upgrade) if p.handed.is_none() => p.refusal_due = true,
            Input::Takeover { predecessor_gone } => {
                p.handed = Some(*predecessor_gone);
                p.took_over_due = Some(*predecessor_gone);
            }
            _ => {}
        }
    }

    /// A worker is spawned: a successor's workers are of the generation in force, which
    /// starts at the one after its predecessor's.
    pub(super) fn check_spawn_generation(&mut self, generation: Generation) {
        let Some(p) = self.predecessor.as_mut() else {
            return;
        };
        let first = !std::mem::replace(&mut p.spawned, true);
        if generation != p.in_force {
            let which = if first {
                "its first worker"
            } else {
                "a worker"
            };
            let what = format!(
                "a successor of generation {} spawned {which} at generation {}: the generation in force is {} ({} restarts after the predecessor's)",
                p.generation.0,
                generation.0,
                p.in_force.0,
                p.in_force.0.saturating_sub(p.generation.0.saturating_add(1))
            );
            self.fail_safety(what);
        }
    }

    /// The machine starts a successor of its own: only once it is in charge.
    pub(super) fn check_successor_start(&mut self) {
        if self.awaiting_handover() {
            self.fail_safety(
                "a successor started a successor before its predecessor handed over".into(),
            );
        }
    }

    /// An event of the machine about the handover or the pool's readiness.
    pub(super) fn observe_succession(&mut self, sup: &Supervisor, event: &Event) {
        match event {
            Event::AskHandover => self.on_ask(sup),
            Event::PoolReady { .. } => {
                if let Some(p) = &mut self.predecessor {
                    if p.handed.is_none() {
                        return self.fail_safety(
                            "pool-ready while the predecessor has not handed over: the service manager would hear of two drovers".into(),
                        );
                    }
                    p.ready_said = true;
                }
            }
            Event::TookOver { predecessor_gone } => {
                let due = self
                    .predecessor
                    .as_mut()
                    .and_then(|p| p.took_over_due.take());
                if due != Some(*predecessor_gone) {
                    return self.fail_safety(format!(
                        "took-over (predecessor gone: {predecessor_gone}) but the takeover handed in was {due:?}"
                    ));
                }
                self.coverage.hit(Mark::TookOver);
            }
            Event::Reloaded {
                generation,
                restart,
            } => {
                let Some(p) = &mut self.predecessor else {
                    return;
                };
                if *restart {
                    p.in_force = Generation(p.in_force.0.saturating_add(1));
                }
                if *generation != p.in_force {
                    let what = format!(
                        "reloaded (restart: {restart}) to generation {}, but a successor of generation {} is at {} now",
                        generation.0, p.generation.0, p.in_force.0
                    );
                    self.fail_safety(what);
                }
            }
            Event::Refused { command, reason } if *command == "upgrade" => {
                let due = self.predecessor.as_mut().is_some_and(|p| p.refusal_due);
                // Stopping, or draining after its own handover.
                let stopping = sup.phase() != Phase::Running;
                let fine = match reason {
                    Refusal::AwaitingHandover => due,
                    Refusal::Stopping => stopping,
                    _ => !due,
                };
                if !fine {
                    return self.fail_safety(format!(
                        "upgrade refused ({reason:?}), but the world says: before the takeover {due}, stopping {stopping}"
                    ));
                }
                if let Some(p) = &mut self.predecessor {
                    p.refusal_due = false;
                }
                if *reason == Refusal::AwaitingHandover {
                    self.coverage.hit(Mark::RefusedAwaiting);
                }
            }
            _ => {}
        }
    }

    fn on_ask(&mut self, sup: &Supervisor) {
        let Some(p) = self.predecessor.as_mut() else {
            return self.fail_safety("ask-handover from a supervisor that succeeds nobody".into());
        };
        p.asks += 1;
        let (asks, handed, answer_after) = (p.asks, p.handed, p.answer_after);
        if asks > 1 {
            return self.fail_safety(format!(
                "ask-handover {asks} times: the successor asks once"
            ));
        }
        if let Some(gone) = handed {
            return self.fail_safety(format!(
                "ask-handover after the takeover (predecessor gone: {gone})"
            ));
        }
        if let Some(short) = self.pool_short(sup) {
            return self.fail_safety(format!("ask-handover while {short}"));
        }
        self.coverage.hit(Mark::HandoverAsked);
        self.schedule(answer_after, Ev::Predecessor(Says::Takeover));
    }

    /// After a drain: what the inputs handed in before it were owed happened.
    pub(super) fn check_succession_drain(&mut self, sup: &Supervisor) {
        let Some(p) = self.predecessor.as_mut() else {
            return;
        };
        let refusal = std::mem::take(&mut p.refusal_due);
        let took_over = p.took_over_due.take();
        if sup.phase() == Phase::Exited {
            return;
        }
        // An upgrade handed in while stopping is refused for that (checked on the event).
        if refusal {
            self.fail_safety("an upgrade before the takeover was not refused".into());
        } else if let Some(gone) = took_over {
            self.fail_safety(format!(
                "a takeover (predecessor gone: {gone}) was handed in and the machine did not take over"
            ));
        }
    }

    /// Whom a settled pool still owes the word that it is ready, if anyone: a successor
    /// owes its predecessor the request to hand over, and, once in charge, the service
    /// manager its `PoolReady`. Only while the pool runs with no upgrade of its own in flight
    /// (then the word waits, by design).
    pub(super) fn readiness_owed(&self, sup: &Supervisor) -> Option<&'static str> {
        let p = self.predecessor.as_ref()?;
        if sup.phase() != Phase::Running || sup.upgrade_state() != UpgradeState::Idle {
            return None;
        }
        match p.handed {
            None if p.asks == 0 => Some("the successor never asked its predecessor to hand over"),
            Some(_) if !p.ready_said => Some("the successor took over and never said pool-ready"),
            _ => None,
        }
    }
}
