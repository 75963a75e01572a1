//! Operator commands: stop and stop-now, rolling restart, reload, scale and upgrade (the
//! latter handed to `upgrade`). This module owns how a command changes the config in force,
//! the generation or the phase; it must not spawn or signal a worker itself: it retires
//! slots and moves the target, and `reconcile` derives the spawns and signals from that.

use super::slot::SlotState;
use super::{Phase, Supervisor, UpgradeState};
use crate::config::{Config, Policy, WORKERS_MAX};
use crate::io::*;
use crate::output::*;

impl Supervisor {
    pub(super) fn on_command(&mut self, command: Command) {
        let name = command.name();
        let stopping = !matches!(self.phase, Phase::Running);
        match command {
            Command::Stop => match self.phase {
                Phase::Stopping { immediate: false } => self.begin_stop(true),
                Phase::Stopping { immediate: true } => {}
                _ => self.begin_stop(false),
            },
            Command::StopNow => self.begin_stop(true),
            _ if stopping => self.refuse(name, Refusal::Stopping),
            Command::Restart => {
                self.new_generation();
            }
            Command::RestartNow => {
                self.new_generation();
                // Every place empties at once and `reconcile` fills each as it empties, at
                // the spawn rate: no readiness gate, no max_unavailable.
                let places =
                    planted!(self, RestartNowRolling => self.slots.len().min(1), self.slots.len());
                for i in 0..places {
                    self.retire(i, StopReason::RestartNow);
                }
            }
            Command::Reload(config) => self.reload(*config),
            Command::Upgrade => self.request_upgrade(name),
            Command::ScaleTo(n) => self.scale_base(name, Some(n)),
            Command::ScaleUp => self.scale_base(name, self.config.policy.min().checked_add(1)),
            Command::ScaleDown => self.scale_base(name, self.config.policy.min().checked_sub(1)),
        }
    }

    pub(super) fn refuse(&mut self, command: &'static str, reason: Refusal) {
        self.event(Event::Refused { command, reason });
    }

    /// Bounds of the base size a scale command may set: a static pool from 1 up to the
    /// worker limit, a dynamic or ondemand pool's `min` from 0 up to its `max`.
    fn scale_bounds(&self) -> (u32, u32) {
        match self.config.policy {
            Policy::Static { .. } => (1, WORKERS_MAX - self.config.max_surge),
            Policy::Dynamic { max, .. } | Policy::Ondemand { max, .. } => (0, max),
        }
    }

    /// Moves the pool's base size: a static pool's `workers`, a dynamic or ondemand pool's
    /// `min` (the maximum stays as configured).
    fn scale_base(&mut self, name: &'static str, n: Option<u32>) {
        let (min, max) = self.scale_bounds();
        let Some(n) = n.filter(|n| (min..=max).contains(n)) else {
            return self.refuse(name, Refusal::OutOfBounds { min, max });
        };
        let mut config = self.config.clone();
        match &mut config.policy {
            Policy::Static { workers } => *workers = n,
            Policy::Dynamic { min, start, .. } => {
                *min = n;
                *start = (*start).max(n);
            }
            Policy::Ondemand { min, .. } => *min = n,
        }
        if let Err(e) = config.validate() {
            return self.refuse(name, Refusal::Invalid(e));
        }
        self.apply_config(config, false);
    }

    fn reload(&mut self, config: Config) {
        if let Err(e) = config.validate() {
            return self.refuse("reload", Refusal::Invalid(e));
        }
        let restart = config.worker_fingerprint != self.config.worker_fingerprint
            || config.threads != self.config.threads;
        self.apply_config(config, restart);
        // systemd's notify-reload protocol: READY=1 again once the new config settles.
        self.announced = false;
    }

    /// Puts a validated config in force: sizes and timeouts at once (every slot re-attaches
    /// so its deadlines follow the new timeouts), worker-shaping changes by rolling restart.
    fn apply_config(&mut self, config: Config, restart: bool) {
        let kind_changed =
            core::mem::discriminant(&config.policy) != core::mem::discriminant(&self.config.policy);
        let old_slots = self.slots.len();
        for i in 0..old_slots {
            self.detach(i);
        }
        self.config = config;
        let rate = self.spawn_rate.min(self.config.max_spawn_rate);
        self.set_spawn_rate(rate, RampReason::Reload);
        let (min, max) = (self.config.policy.min(), self.config.policy.max());
        let target = match self.config.policy {
            Policy::Static { workers } => workers,
            _ if kind_changed => self.config.policy.start(),
            _ => self.target.clamp(min, max),
        };
        self.slot_limit = self.config.slot_count();
        for i in 0..old_slots {
            self.attach(i);
        }
        self.grow_slots(self.slot_limit);
        let limit = self.deaths_limit();
        while self.deaths.len() > limit {
            self.deaths.pop_front();
        }
        self.schedule_maintenance();
        self.set_target(target);
        // Places above the new limit empty out; their replacements go to lower slots.
        for i in self.slot_limit as usize..self.slots.len() {
            self.retire(i, StopReason::Reload);
        }
        if restart {
            self.new_generation();
        } else {
            self.event(Event::Reloaded {
                generation: self.generation,
                restart: false,
            });
        }
    }

    /// Starts a rolling restart: every worker of an earlier generation is replaced, readiness
    /// gated, within `max_surge` / `max_unavailable` (see `reconcile`).
    fn new_generation(&mut self) {
        self.generation = Generation(self.generation.0 + 1);
        self.rollout_held = false;
        // Nobody has the new generation yet.
        self.counts.filled_current = 0;
        // An operator restart is the moment to retry places given up on.
        for i in 0..self.slots.len() {
            if matches!(self.slots[i].state, SlotState::GaveUp { .. }) {
                self.detach(i);
                self.slots[i].state = SlotState::Empty;
                self.slots[i].young_deaths = 0;
                self.attach(i);
            }
        }
        self.event(Event::Reloaded {
            generation: self.generation,
            restart: true,
        });
    }

    pub(super) fn begin_stop(&mut self, immediate: bool) {
        let phase = Phase::Stopping { immediate };
        if self.phase != phase {
            self.event(Event::Stopping { immediate });
        }
        self.phase = phase;
        self.next_maintenance = None;
        if let UpgradeState::Requested { .. } | UpgradeState::Started { .. } = self.upgrade {
            self.rollback(RollbackReason::Stopped);
        }
        self.stop_all(StopReason::Stop, immediate);
    }

    pub(super) fn stop_all(&mut self, reason: StopReason, immediate: bool) {
        for i in 0..self.slots.len() {
            self.retire_with(i, reason, immediate);
            if immediate {
                self.escalate(i);
            }
        }
    }
}
