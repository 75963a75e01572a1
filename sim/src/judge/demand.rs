//! The demand oracle (`Oracle::Demand`): the target follows the policy's rule for the
//! demand the supervisor was told of, judged by the load reports and accept-queue samples
//! the world handed in, never by the machine's counters.
//!
//! - An ondemand pool answers a waiting connection at once: a `Backlog` sample that shows
//!   connections queued while no thread of the pool is idle, below `max`, grows the target
//!   by one in that same `handle` (php-fpm's ondemand forks on the connection, not at its
//!   next maintenance).
//!   It grows for nothing else: never while no connection is waiting.
//! - A maintenance tick shrinks the target (other than by a command) only to retire a worker
//!   idle past `idle_timeout` (a `Signal` for reason `idle` follows the `Scaled`), or, in a
//!   dynamic pool, when more than `max_spare` threads were idle beyond the queue.
//!
//! Idle threads, by the world's records: every worker process with a place that was not
//! asked to stop and whose main process the supervisor has not heard exit; a Ready one
//! counts its threads less its busy ones by its last load report (clamped to the threads,
//! as the protocol says), one not yet Ready counts all its threads (a booting worker will
//! take connections soon: ARCHITECTURE §10). A spawn decided but not yet handed out is a
//! place with idle threads the world cannot see, so both rules are judged only for a
//! `handle` that came after a complete drain (its queue empty, every fork answered): the
//! world then sees every place the machine counts threads in. A worker asked to stop by an
//! input of the same `handle` still looks idle to the world until its signal goes out, so
//! the world's idle count is then an upper bound: the shrink rule holds on it, and the
//! growth rule owes a growth only when even the upper bound is zero.
//!
//! A `handle` that carries a command or a word of the successor is not judged: it may
//! change the config, the phase or the target by rule of its own.
//!
//! A command that puts a config in force (a reload, a scale command) sets the target by
//! rule too: a static pool's `workers`; the new policy's `start` when the kind of policy
//! changed; otherwise the target as it was, clamped to the new `min..=max`.
//!
//! A dynamic pool above `min` with more than `max_spare` threads idle beyond the queue at
//! every reading for a whole `maintenance_interval` must have shrunk by then (read and
//! judged as idle retirement is, below).
//!
//! Idle retirement, not later (`Oracle::IdleTimeout`; `timeouts.rs` judges "not before"):
//! while the pool is above `min` and (dynamic) would keep `min_spare` threads spare without
//! it, the worker idle longest by its reports is retired by the first `handle` at least one
//! `maintenance_interval` after its `idle_timeout` ran out: the tick grid has a point in
//! every interval, and the machine wakes for the one at or after the deadline. The rule is
//! read after every `handle` and every complete drain; any reading where it does not hold
//! (the worker got busy, a connection queued, the target fell to `min`, a command came)
//! starts the interval anew, so a state the tick saw but the world only glimpsed cannot
//! make a false complaint.

use std::collections::BTreeMap;

use drover_machine::{
    Action, Command, Event, Input, Instant, Phase, Policy, StopReason, Supervisor, WorkerId,
};

use super::{Judge, Oracle};

#[derive(Default)]
pub(super) struct DemandBooks {
    /// The last accept-queue sample of each listener.
    queued: BTreeMap<u32, u32>,
    /// The last drain was complete and no `handle` came since: the machine's queue is empty.
    at_rest: bool,
    /// Of the `handle` whose inputs are being handed in: it came after a complete drain,
    /// and none of its inputs so far was a command or the successor's.
    judged: bool,
    /// Growths the `handle` being handed in owes (ondemand backlog answers), and the
    /// target it started from.
    owing: u32,
    target_at_start: u32,
    /// The last `handle`'s: it is judged (its shrinks and growths are checked), the growths
    /// it owes and those seen since.
    last_judged: bool,
    /// The phase was `Running` at the end of the last drain.
    pub(super) last_phase_running: bool,
    owed: Option<Owed>,
    /// A tick's shrink not yet shown to be an idle retirement.
    shrink: Option<Shrink>,
    /// A command is being handled: the target and the policy before it, and the last
    /// target change since (the command's own comes right before its `Reloaded`).
    reload_from: Option<(u32, Policy)>,
    reload_to: Option<u32>,
    /// Of a `Reload` being handled: whether it must start a rolling restart.
    reload_rolls: Option<bool>,
    /// The worker an idle retirement is owed to, and since when the rule has held for it
    /// at every reading.
    idle_owed: Option<(WorkerId, Instant)>,
    /// Since when a dynamic pool's spare surplus has held at every reading.
    surplus_owed: Option<Instant>,
    /// Spawns performed since the last drain ended: their threads were not there when the
    /// tick of the drain's `handle` ran, unless the handle's own slot timers decided them.
    drain_spawns: u64,
}

struct Shrink {
    from: u32,
    to: u32,
    at: Instant,
    /// An upper bound of the threads idle beyond the queue at the tick.
    spare: u64,
    /// Of a dynamic pool.
    max_spare: Option<u64>,
}

struct Owed {
    growths: u32,
    grown: u32,
    what: String,
}

impl Judge {
    /// The threads of the pool idle by the world's records (see the module comment).
    fn idle_threads(&self, sup: &Supervisor) -> u64 {
        let threads = sup.config().threads;
        let tracks = &self.books.stops.tracks;
        let processes: u64 = self
            .table
            .procs
            .iter()
            .filter(|(serial, p)| !tracks.contains_key(serial) && !p.main_reaped)
            .map(|(_, p)| {
                if p.ready {
                    let b = self.reported_busy(p.worker).min(threads);
                    u64::from(threads - b)
                } else {
                    u64::from(threads)
                }
            })
            .sum();
        processes + self.table.spawning.len() as u64 * u64::from(threads)
    }

    fn queued(&self) -> u64 {
        self.books
            .demand
            .queued
            .values()
            .map(|&q| u64::from(q))
            .sum()
    }

    /// An input about to be handed in: the books, and an ondemand backlog answer owed.
    /// A `handle` begins (its first hook), with `target` as it finds it and whether the
    /// pool was running.
    pub(super) fn judge_demand_begin(&mut self, target: u32, running: bool) {
        let books = &mut self.books.demand;
        books.owing = 0;
        books.target_at_start = target;
        books.judged = books.at_rest && running;
    }

    pub(super) fn judge_demand_input(&mut self, sup: &Supervisor, input: &Input) {
        let judged = self.books.demand.judged;
        match *input {
            Input::Command(_) => {
                let books = &mut self.books.demand;
                books.judged = false;
                books.idle_owed = None;
                books.surplus_owed = None;
                books.reload_from = Some((sup.target(), sup.config().policy.clone()));
                books.reload_to = None;
                // A reload rolls the pool exactly when what a worker runs changed.
                books.reload_rolls = match input {
                    Input::Command(Command::Reload(config)) => Some(
                        config.worker_fingerprint != sup.config().worker_fingerprint
                            || config.threads != sup.config().threads,
                    ),
                    _ => None,
                };
            }
            Input::SuccessorReady
            | Input::SuccessorStarted { .. }
            | Input::SuccessorFailed { .. } => self.books.demand.judged = false,
            Input::Exited { pid, .. } if !self.table.by_pid.contains_key(&pid) => {
                // Not a worker of the pool's: the successor's exit, say.
                self.books.demand.judged = false;
            }
            Input::Backlog { listener, queued } => {
                self.books.demand.queued.insert(listener, queued);
                let Policy::Ondemand { max, .. } = sup.config().policy else {
                    return;
                };
                let books = &self.books.demand;
                let target = books.target_at_start + books.owing;
                if judged && self.queued() > 0 && target < max && self.idle_threads(sup) == 0 {
                    self.books.demand.owing += 1;
                }
            }
            _ => {}
        }
    }

    /// A `handle` ended: what it owes is judged once its drain has shown its events.
    pub(super) fn judge_demand_handled(&mut self, sup: &Supervisor) {
        self.read_idle_rule(sup, false);
        let books = &mut self.books.demand;
        let judged = std::mem::take(&mut books.judged);
        books.at_rest = false;
        books.last_judged = judged;
        let owing = std::mem::take(&mut books.owing);
        if judged && owing > 0 {
            books.owed = Some(Owed {
                growths: owing,
                grown: 0,
                what: format!(
                    "an ondemand pool was told of connections waiting (queued {}) while no thread of its {} places was idle, at {}",
                    books.queued.values().sum::<u32>(),
                    books.target_at_start,
                    self.now
                ),
            });
        }
    }

    pub(super) fn judge_demand_event(&mut self, sup: &Supervisor, event: &Event) {
        if let Event::Reloaded { restart, .. } = *event {
            if let Some(rolls) = self.books.demand.reload_rolls.take() {
                if rolls != restart {
                    let what = if rolls {
                        format!("a reload at {} changed the worker fingerprint or threads, and started no rolling restart: the running workers run the old program", self.now)
                    } else {
                        format!("a reload at {} changed neither the worker fingerprint nor threads, and restarted every worker", self.now)
                    };
                    self.complain(Oracle::RollingBounds, what);
                }
            }
            return self.judge_reload_target(sup);
        }
        let Event::Scaled { from, to } = *event else {
            return;
        };
        if to < from {
            // One shrink per tick: a surplus that remains is owed again from now.
            self.books.demand.surplus_owed = None;
        }
        if self.books.demand.reload_from.is_some() {
            self.books.demand.reload_to = Some(to);
        }
        if !self.books.demand.last_judged {
            return;
        }
        if to > from {
            if let Some(owed) = &mut self.books.demand.owed {
                owed.grown += to - from;
            }
            // An ondemand pool grows only for connections waiting (its deficit is the queue
            // less the idle threads); the world's queue is the machine's, sample for sample.
            if matches!(sup.config().policy, Policy::Ondemand { .. }) && self.queued() == 0 {
                let what = format!(
                    "an ondemand pool grew its target from {from} to {to} at {} while no connection was waiting by the last accept-queue samples",
                    self.now
                );
                self.complain(Oracle::Demand, what);
            }
            return;
        }
        let spare = self.idle_threads(sup).saturating_sub(self.queued());
        let max_spare = match sup.config().policy {
            Policy::Dynamic { max_spare, .. } => Some(u64::from(max_spare)),
            _ => None,
        };
        self.books.demand.shrink = Some(Shrink {
            from,
            to,
            at: self.now,
            spare,
            max_spare,
        });
    }

    pub(super) fn judge_demand_action(&mut self, sup: &Supervisor, action: &Action) {
        let books = &mut self.books.demand;
        match action {
            Action::Signal {
                reason: StopReason::Idle,
                ..
            } => books.shrink = None,
            // The slot timers of the tick's own `handle` run before the tick and may have
            // decided spawns that go out only now, after the tick's events: their threads
            // were idle to the machine, so the bound takes them in.
            Action::Spawn { .. } => {
                books.drain_spawns += 1;
                if let Some(shrink) = &mut books.shrink {
                    shrink.spare += u64::from(sup.config().threads);
                }
            }
            _ => {}
        }
    }

    /// A drain ended: complete, the machine's queue is empty.
    pub(super) fn judge_demand_drained(&mut self, sup: &Supervisor, complete: bool) {
        self.settle_demand();
        if complete {
            self.read_idle_rule(sup, true);
            self.judge_idle_owed(sup);
        }
        self.books.demand.drain_spawns = 0;
        let books = &mut self.books.demand;
        books.at_rest = complete;
        books.last_phase_running = sup.phase() == Phase::Running;
    }

    /// A command put a config in force (`Reloaded`): the target is the new static size, the
    /// new policy's start when the kind of policy changed, else the target as it was,
    /// clamped to the new bounds. A scale command is a reload of the base size.
    fn judge_reload_target(&mut self, sup: &Supervisor) {
        let books = &mut self.books.demand;
        let Some((before, old_policy)) = books.reload_from.take() else {
            return;
        };
        let after = books.reload_to.take().unwrap_or(before);
        let policy = &sup.config().policy;
        let kind_changed = core::mem::discriminant(policy) != core::mem::discriminant(&old_policy);
        let (wanted, rule) = match *policy {
            Policy::Static { workers } => (workers, "a static pool's workers".to_string()),
            _ if kind_changed => (
                policy.start(),
                format!("the new {} policy's start", policy.name()),
            ),
            _ => (
                before.clamp(policy.min(), policy.max()),
                format!(
                    "the target {before} as it was, clamped to the new {}..={}",
                    policy.min(),
                    policy.max()
                ),
            ),
        };
        if after != wanted {
            let what = format!(
                "a command put a config in force at {} and set the target from {before} to {after}; the rule wants {wanted}: {rule}",
                self.now
            );
            self.complain(Oracle::Demand, what);
        }
    }

    /// The worker idle longest by its reports, if the idle rule holds for it now: its
    /// deadline has passed, the pool is above `min`, and a dynamic pool keeps `min_spare`
    /// spare threads without it.
    fn idle_rule(&self, sup: &Supervisor, idle: u64) -> Option<(WorkerId, Instant)> {
        let c = sup.config();
        let timeout = c.idle_timeout?;
        if sup.phase() != Phase::Running || sup.target() <= c.policy.min() {
            return None;
        }
        let (worker, since) = if c.slot_addresses {
            self.highest_place_idle(sup)?
        } else {
            self.watch
                .workers
                .iter()
                .filter(|(_, t)| t.retired.is_none() && t.main_status.is_none())
                .filter_map(|(w, t)| t.idle_since.map(|since| (*w, since)))
                .min_by_key(|&(w, since)| (since, w.slot))?
        };
        if since + timeout > self.now {
            return None;
        }
        if let Policy::Dynamic { min_spare, .. } = c.policy {
            let spare_after = idle
                .saturating_sub(self.queued())
                .saturating_sub(u64::from(c.threads));
            if spare_after < u64::from(min_spare) {
                return None;
            }
        }
        Some((worker, since + timeout))
    }

    /// Where each slot is an address only the highest place may retire for idleness
    /// (ARCHITECTURE §10, slot addresses): its worker and since when it idles, if the
    /// highest place by the judge's records (workers of the current generation not asked to
    /// stop or stopped for a failure, forks in flight, places in backoff or given up on) is
    /// an idle worker.
    fn highest_place_idle(&self, sup: &Supervisor) -> Option<(WorkerId, Instant)> {
        let generation = sup.generation().0;
        let workers = (self.watch.workers.iter())
            .filter(|(_, t)| t.generation == generation && t.retired.is_none_or(|r| r.is_failure()))
            .map(|(w, _)| w.slot);
        let forks = self.table.spawning.keys().map(|w| w.slot);
        let places = self.restarts.empty_places();
        let highest = workers.chain(forks).chain(places).max()?;
        let (worker, t) = self.watch.workers.iter().find(|(w, t)| {
            w.slot == highest && t.generation == generation && t.retired.is_none()
        })?;
        if t.main_status.is_some() {
            return None;
        }
        t.idle_since.map(|since| (*worker, since))
    }

    /// Whether a dynamic pool above `min` has more than `max_spare` threads idle beyond
    /// the queue, by the world's records.
    fn surplus_rule(&self, sup: &Supervisor, idle: u64) -> bool {
        let c = sup.config();
        let Policy::Dynamic { min, max_spare, .. } = c.policy else {
            return false;
        };
        sup.phase() == Phase::Running
            && sup.target() > min
            && idle.saturating_sub(self.queued()) > u64::from(max_spare)
    }

    /// Reads the idle and surplus rules. After a `handle` (before its drain) the world
    /// still counts the workers that handle stopped and lacks the spawns its timers decided,
    /// so that reading may only end a rule's interval. After a complete drain, the spawns
    /// of the drain are left out (the tick ran before them), which is the tick's view or
    /// less; only that reading may begin or continue an interval.
    fn read_idle_rule(&mut self, sup: &Supervisor, after_drain: bool) {
        let now = self.now;
        let threads = u64::from(sup.config().threads);
        let idle = self.idle_threads(sup);
        let idle = if after_drain {
            idle.saturating_sub(self.books.demand.drain_spawns * threads)
        } else {
            idle
        };
        let surplus = self.surplus_rule(sup, idle);
        let rule = self.idle_rule(sup, idle);
        let books = &mut self.books.demand;
        books.surplus_owed = match (surplus, after_drain) {
            (false, _) => None,
            (true, true) => Some(books.surplus_owed.unwrap_or(now)),
            (true, false) => books.surplus_owed,
        };
        books.idle_owed = match (rule, books.idle_owed, after_drain) {
            (None, ..) => None,
            (Some((w, _)), Some((o, from)), _) if w == o => Some((o, from)),
            (Some((w, _)), _, true) => Some((w, now)),
            (Some(_), _, false) => None,
        };
    }

    /// After a complete drain: a tick has run since the rule began to hold, and still no
    /// idle retirement.
    fn judge_idle_owed(&mut self, sup: &Supervisor) {
        let interval = sup.config().maintenance_interval;
        if let Some(from) = self.books.demand.surplus_owed {
            if !self.exited && self.now >= from + interval {
                let what = format!(
                    "a dynamic pool above its min has had more than max_spare threads idle beyond the queue at every reading since {from}, and the handle at {} is a maintenance interval ({interval:?}) later: a tick has run, and the target did not shrink",
                    self.now
                );
                self.books.demand.surplus_owed = None;
                return self.complain(Oracle::Demand, what);
            }
        }
        let Some((worker, from)) = self.books.demand.idle_owed else {
            return;
        };
        if self.exited || self.now < from + interval {
            return;
        }
        let since = self.watch.workers[&worker].idle_since;
        let what = format!(
            "{worker}, idle since {since:?} by its reports (idle_timeout {:?}), was owed idle retirement from {from} (the pool above min {}, its spares kept), and the handle at {} is a maintenance interval ({interval:?}) later: a tick has run, and retired nobody for idleness",
            sup.config().idle_timeout.unwrap_or_default(),
            sup.config().policy.min(),
            self.now
        );
        self.books.demand.idle_owed = None;
        self.complain(Oracle::IdleTimeout, what);
    }

    /// After a world step: the last drain has ended.
    pub(super) fn judge_demand_step(&mut self) {
        self.settle_demand();
    }

    /// The last `handle`'s drain has shown what it decided: judge it.
    fn settle_demand(&mut self) {
        let books = &mut self.books.demand;
        let owed = books.owed.take().filter(|o| o.grown < o.growths);
        let shrink = books
            .shrink
            .take()
            .filter(|s| s.max_spare.is_none_or(|max| s.spare <= max));
        if self.exited {
            return;
        }
        if let Some(owed) = owed {
            let what = format!(
                "{}: the target grew by {} in that handle, and {} growths were owed, one per such sample, at once",
                owed.what, owed.grown, owed.growths
            );
            self.complain(Oracle::Demand, what);
        }
        if let Some(s) = shrink {
            let rule = match s.max_spare {
                Some(max) => format!(
                    "at most {} threads were idle beyond the queue by the world's records (with the spawns that went out after it), not above max_spare {max}",
                    s.spare
                ),
                None => "this policy shrinks only by idle retirement".to_string(),
            };
            let what = format!(
                "the target shrank from {} to {} at {} with no worker retired for idleness: {rule}",
                s.from, s.to, s.at
            );
            self.complain(Oracle::Demand, what);
        }
    }
}
