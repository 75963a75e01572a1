//! The live upgrade, a small state machine of its own (`UpgradeState`): a successor is
//! requested, starts, becomes Ready (this supervisor hands over and drains) or fails, times
//! out or dies (rolled back). The other side too (`Succession`): a successor asks for the
//! handover once its pool is ready and is in charge from the takeover on; and who hears
//! that the pool is ready, when. This module owns the successor's progress and its deadline;
//! it must not touch the workers' slots except through `stop_all`, and it never decides
//! when the supervisor exits (`reconcile` does, once the successor it kills is gone).

use super::{Phase, Supervisor};
use crate::io::*;
use crate::output::*;
use crate::time::Instant;

/// Progress of a live upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum UpgradeState {
    /// No upgrade in flight.
    Idle,
    /// `StartSuccessor` emitted; waiting for `SuccessorStarted`.
    Requested {
        /// The successor must be Ready by then.
        deadline: Instant,
    },
    /// The successor runs and boots its workers.
    Started {
        /// The successor supervisor's pid.
        pid: Pid,
        /// It must be Ready by then.
        deadline: Instant,
    },
    /// The successor is Ready and serving; this supervisor drains.
    Succeeded {
        /// The successor supervisor's pid.
        pid: Pid,
    },
    /// Rolled back: the successor was killed; waiting for its exit.
    Killing {
        /// The successor supervisor's pid.
        pid: Pid,
    },
}

/// Whether this supervisor is in charge, or a live upgrade's successor waiting for its
/// predecessor to hand over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Succession {
    /// In charge: the pool's readiness goes to the service manager.
    InCharge,
    /// A successor before the takeover: its pool's readiness goes to the predecessor.
    Awaiting {
        /// The handover was asked for.
        asked: bool,
    },
}

impl Supervisor {
    /// Whether this supervisor is in charge or still waits for its predecessor.
    pub fn succession(&self) -> Succession {
        self.succession
    }

    /// Tells whoever waits that the pool is ready, once it is: the predecessor (once), or
    /// the service manager (once per run). O(workers) until told, O(1) after.
    pub(super) fn announce(&mut self) {
        let told = match self.succession {
            Succession::Awaiting { asked } => asked,
            Succession::InCharge => self.announced,
        };
        if told
            || self.phase != Phase::Running
            || self.upgrade != UpgradeState::Idle
            || !self.is_settled()
        {
            return;
        }
        self.started = true;
        match self.succession {
            Succession::Awaiting { .. } => {
                self.succession = Succession::Awaiting { asked: true };
                self.event(Event::AskHandover);
            }
            Succession::InCharge => {
                self.announced = true;
                self.event(Event::PoolReady {
                    ready: self.counts.ready,
                });
            }
        }
    }

    /// The predecessor handed over, or is gone: this supervisor is in charge, and the
    /// service manager hears of its ready pool (after the predecessor's word on the pid).
    pub(super) fn on_takeover(&mut self, predecessor_gone: bool) {
        if self.succession == Succession::InCharge {
            return self.event(Event::Ignored(Ignored::NoUpgrade));
        }
        self.succession = Succession::InCharge;
        self.announced = false;
        self.event(Event::TookOver { predecessor_gone });
    }

    /// An operator asked for a live upgrade: start a successor, unless one is in flight or
    /// this one is a successor not yet in charge.
    pub(super) fn request_upgrade(&mut self, command: &'static str) {
        if self.succession != Succession::InCharge {
            return self.refuse(command, Refusal::AwaitingHandover);
        }
        if self.upgrade != UpgradeState::Idle {
            return self.refuse(command, Refusal::UpgradeInFlight);
        }
        self.upgrade = UpgradeState::Requested {
            deadline: self.now
                + planted!(self, UpgradeTimeoutDouble =>
                    self.config.upgrade_timeout * 2,
                    self.config.upgrade_timeout),
        };
        self.queue.push_back(Action::StartSuccessor);
    }

    pub(super) fn on_successor_started(&mut self, pid: Pid) {
        match self.upgrade {
            UpgradeState::Requested { deadline } => {
                self.upgrade = UpgradeState::Started { pid, deadline };
                // READY=1 again once the upgrade is decided (rolled back: this pool).
                self.announced = false;
                #[cfg(feature = "planted")]
                if self.planted(crate::planted::Plant::HandoverEarly) {
                    self.on_successor_ready();
                }
            }
            other => {
                // A successor nobody waits for (rolled back before it started): stop it. Wait
                // for its exit only if no other successor is tracked.
                self.event(Event::Ignored(Ignored::NoUpgrade));
                if other == UpgradeState::Idle {
                    self.upgrade = UpgradeState::Killing { pid };
                }
                self.queue.push_back(Action::KillSuccessor {
                    pid,
                    reason: RollbackReason::Timeout,
                });
            }
        }
    }

    pub(super) fn on_successor_failed(&mut self) {
        match self.upgrade {
            UpgradeState::Requested { .. } => {
                self.upgrade = UpgradeState::Idle;
                self.announced = false;
                self.event(Event::UpgradeRolledBack {
                    reason: RollbackReason::SuccessorFailedToStart,
                });
            }
            _ => self.event(Event::Ignored(Ignored::NoUpgrade)),
        }
    }

    pub(super) fn on_successor_ready(&mut self) {
        let UpgradeState::Started { pid, .. } = self.upgrade else {
            return self.event(Event::Ignored(Ignored::NoUpgrade));
        };
        self.upgrade = UpgradeState::Succeeded { pid };
        if self.phase == Phase::Running {
            self.phase = Phase::Handover;
            self.next_maintenance = None;
            self.event(Event::UpgradeHandover);
            self.stop_all(StopReason::Upgrade, false);
        }
    }

    pub(super) fn on_successor_exited(&mut self) {
        let resumes = planted!(self, ResumeForgotten => false, true);
        match self.upgrade {
            UpgradeState::Killing { .. } => self.upgrade = UpgradeState::Idle,
            UpgradeState::Started { .. } => {
                self.upgrade = UpgradeState::Idle;
                self.announced = false;
                self.event(Event::UpgradeRolledBack {
                    reason: RollbackReason::SuccessorExited,
                });
            }
            UpgradeState::Succeeded { .. } if resumes => {
                self.upgrade = UpgradeState::Idle;
                // The successor died while this supervisor drained: keep serving. Draining
                // workers finish; reconcile refills the pool.
                if self.phase == Phase::Handover {
                    self.phase = Phase::Running;
                    self.schedule_maintenance();
                }
                self.announced = false;
                self.event(Event::UpgradeRolledBack {
                    reason: RollbackReason::SuccessorExited,
                });
            }
            _ => {}
        }
    }

    pub(super) fn rollback(&mut self, reason: RollbackReason) {
        match self.upgrade {
            UpgradeState::Started { pid, .. } => {
                self.upgrade = UpgradeState::Killing { pid };
                self.queue.push_back(Action::KillSuccessor { pid, reason });
            }
            // No pid yet: a late SuccessorStarted is killed on arrival.
            UpgradeState::Requested { .. } => self.upgrade = UpgradeState::Idle,
            _ => return,
        }
        self.announced = false;
        self.event(Event::UpgradeRolledBack { reason });
    }

    /// The pid of the successor this supervisor knows of, if one runs or is being killed.
    pub(super) fn successor_pid(&self) -> Option<Pid> {
        match self.upgrade {
            UpgradeState::Started { pid, .. }
            | UpgradeState::Succeeded { pid }
            | UpgradeState::Killing { pid } => Some(pid),
            UpgradeState::Idle | UpgradeState::Requested { .. } => None,
        }
    }

    pub(super) fn upgrade_deadline(&self) -> Option<Instant> {
        match self.upgrade {
            UpgradeState::Requested { deadline } | UpgradeState::Started { deadline, .. } => {
                Some(deadline)
            }
            _ => None,
        }
    }
}
