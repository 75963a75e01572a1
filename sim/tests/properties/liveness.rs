//! Liveness, once the faults stop: the pool converges and is taken down in time.

use drover_machine::{Command, Input, Instant, Phase, Succession, UpgradeState, WorkerState};

use crate::model::Model;
use crate::secs;
use crate::strategies::Ending;
use crate::Res;

const LISTENERS: u32 = 4;

impl Model {
    /// The workers do their part: Ready from every booting worker; heartbeats (and, with
    /// `load`, an idle load report) from every Ready worker.
    fn nurse(&mut self, load: bool) -> Res {
        let sup = self.driver.supervisor();
        let heartbeats = sup.config().heartbeat_timeout.is_some();
        let mut messages = Vec::new();
        for w in sup.workers() {
            match w.state {
                WorkerState::Booting => messages.push(Input::Ready { worker: w.id }),
                WorkerState::Ready { busy } => {
                    if load || busy > 0 {
                        messages.push(Input::Load {
                            worker: w.id,
                            busy: 0,
                            oldest_busy_since: None,
                            requests: w.requests,
                        });
                    }
                    if heartbeats {
                        messages.push(Input::Heartbeat { worker: w.id });
                    }
                }
                _ => {}
            }
        }
        if messages.is_empty() {
            return Ok(());
        }
        self.send(messages)
    }

    /// Faults stop (spawns succeed at once, KILL acts at once, the workers send Ready and
    /// heartbeats): a Running pool converges, stably, to its target of Ready workers of the
    /// current generation within a bound computed from the config; then it is taken down by
    /// the case's ending, and `Exit` comes within the longest ladder.
    pub fn liveness(&mut self) -> Res {
        if self.world().exit.is_some() {
            return Ok(());
        }
        let start = self.now();
        self.world_mut().healed = true;
        if self.world_mut().flush_delayed() {
            self.sigchld()?;
        }
        let idle_queues = (0..LISTENERS)
            .map(|listener| Input::Backlog {
                listener,
                queued: 0,
            })
            .collect();
        self.turn(idle_queues)?;
        self.nurse(true)?;

        // A draining worker holds its slot until it exits: with workers that ignore graceful
        // signals, every wave of replacements (rolling restart, scale-down, a worker killed
        // for a failure, then its backoff) may wait for a whole ladder, and there are at most
        // as many waves as places. An upgrade in flight resolves within its timeout; scaling
        // moves one worker per maintenance tick. Ten minutes covers the rest.
        let sup = self.driver.supervisor();
        let c = sup.config();
        let max_ttk = self.world().max_ttk;
        let places = sup.workers().count() as u32 + c.slot_count() + 1;
        let wave = max_ttk + c.restart.backoff_max + c.boot_timeout;
        let converge_bound =
            secs(600) + wave * places + c.upgrade_timeout + c.restart.intensity_window;
        let mut converge_by = start + converge_bound;
        // Converged must hold this long: a pool that spawns and retires in a cycle is not
        // converged even if it passes through the target.
        let stable_for = c.maintenance_interval * 3 + c.idle_timeout.unwrap_or_default() + secs(1);
        let beat = c
            .heartbeat_timeout
            .map_or(secs(5), |h| (h / 2).min(secs(5)));
        let ending = self.world().faults.ending;
        let mut converged_since: Option<Instant> = None;
        let mut stop_sent = false;
        let mut restarted = false;
        loop {
            let world = self.world();
            if let Some((at, code)) = world.exit {
                let Some(began) = world.stop_began else {
                    return self.fail("Exit without a stop or handover".into());
                };
                let by = began.max(start) + max_ttk;
                if stop_sent && matches!(ending, Ending::Upgrade) && code != 0 {
                    return self.fail(format!("Exit code {code} after a handover"));
                }
                if at > by {
                    return self.fail(format!(
                        "Exit at {at}, after the ladder bound {by} (stop at {began}, heal at {start})"
                    ));
                }
                return Ok(());
            }
            let now = self.now();
            let sup = self.driver.supervisor();
            if !sup.is_settled() {
                converged_since = None;
            } else if converged_since.is_none() {
                converged_since = Some(now);
            }
            let stable = converged_since.is_some_and(|t| now >= t + stable_for);
            let idle = sup.upgrade_state() == UpgradeState::Idle;
            let ready = sup.ready_workers();
            match sup.phase() {
                Phase::Running if stable && idle => {
                    if stop_sent {
                        return self.fail("still Running after a Stop or handover".into());
                    }
                    // A settled pool has been told: a successor asked for the handover, a
                    // supervisor in charge told its service manager. The healed predecessor
                    // of a successor then hands over.
                    if let Succession::Awaiting { .. } = sup.succession() {
                        if self.world().handover_asked != 1 {
                            return self
                                .fail("a settled successor did not ask for the handover".into());
                        }
                        self.turn(vec![Input::Takeover {
                            predecessor_gone: false,
                        }])?;
                        if self.world().pool_ready == 0 {
                            return self
                                .fail("no PoolReady after the takeover of a settled pool".into());
                        }
                        continue;
                    }
                    if self.world().pool_ready == 0 {
                        return self
                            .fail("a settled pool in charge never told it was ready".into());
                    }
                    match ending {
                        Ending::RestartThenStop if !restarted => {
                            restarted = true;
                            self.world_mut().rollout_ready = Some(ready);
                            converged_since = None;
                            converge_by = now + converge_bound;
                            self.turn(vec![Input::Command(Command::Restart)])?;
                            self.nurse(false)?;
                        }
                        Ending::Stop | Ending::RestartThenStop => {
                            stop_sent = true;
                            self.world_mut().rollout_ready = None;
                            self.turn(vec![Input::Command(Command::Stop)])?;
                        }
                        Ending::Upgrade => {
                            stop_sent = true;
                            self.turn(vec![Input::Command(Command::Upgrade)])?;
                            let upgrade = self.driver.supervisor().upgrade_state();
                            if !matches!(upgrade, UpgradeState::Started { .. }) {
                                return self.fail(format!("upgrade not started: {upgrade:?}"));
                            }
                            self.turn(vec![Input::SuccessorReady])?;
                            let phase = self.driver.supervisor().phase();
                            if phase != Phase::Handover && self.world().exit.is_none() {
                                return self
                                    .fail(format!("no handover after SuccessorReady: {phase:?}"));
                            }
                        }
                    }
                    continue;
                }
                Phase::Running => {
                    if now > converge_by {
                        let sup = self.driver.supervisor();
                        let since = converged_since.map(|t| format!(" (converged since {t})"));
                        let states: Vec<String> = sup
                            .workers()
                            .map(|w| format!("{:?} {:?} {:?}", w.id, w.generation, w.state))
                            .collect();
                        let msg = format!(
                            "no stable convergence within {converge_bound:?} of healing at \
                             {start}{}: ready {}, target {}, generation {:?}, workers {states:?}",
                            since.unwrap_or_default(),
                            ready,
                            sup.target(),
                            sup.generation()
                        );
                        return self.fail(msg);
                    }
                }
                Phase::Stopping { .. } | Phase::Handover => {
                    let began = self.world().stop_began.unwrap_or(start).max(start);
                    if now > began + max_ttk {
                        return self.fail(format!(
                            "no Exit by {now} (stop at {began} + longest ladder {max_ttk:?})"
                        ));
                    }
                }
                Phase::Exited => return self.fail("Exited without an Exit action".into()),
                other => {
                    return self.fail(format!("a phase this property does not know: {other:?}"))
                }
            }
            // The loop sleeps until its deadline; the workers beat meanwhile, which wakes it
            // only while it watches their messages.
            let beat_at = now + beat;
            match self.driver.sleep().until {
                Some(until) if until <= beat_at => {
                    self.world_mut().now = until.max(now);
                    self.turn(Vec::new())?;
                }
                _ => self.world_mut().now = beat_at,
            }
            self.nurse(false)?;
        }
    }
}
