//! The pool's oracles: the rolling restart's bounds (`Oracle::RollingBounds`), scale-down
//! (`Oracle::ScaleDown`) and the spawn ramp (`Oracle::SpawnRamp`), judged by the judge's
//! process table (the fork answers and exits handed in), the signals, spawns and `Scaled` events the machine emits, and the inputs
//! the world handed in (load reports, commands); never by the machine's slots.
//!
//! Places, by the world's records: a worker process not yet reaped that the machine has not
//! asked to stop, or asked to stop for a failure (such a worker keeps its place until its
//! exit and backoff, ARCHITECTURE §10). Places with no process (a backoff, a place given up
//! on) are invisible to the world, so the world's count is never above the machine's, and
//! every bound below that says "at most" is judged on a count that can only be low.
//!
//! Ready, by the world's records: a place whose readiness was handed in (or that was forked
//! while readiness is at spawn), never signalled, and whose main process the supervisor has
//! not heard exit. A process that died unreaped still counts: the supervisor cannot know of
//! the death, so the shortfall it makes is not the machine's doing.
//!
//! The target (`Supervisor::target`) is used as what the operator and the scaling policy
//! asked for: the spawn ramp's and scale-down's own steps are judged from the `Scaled`
//! events, and the bounds are stated against the target by the rules themselves.

use drover_machine::{Action, Command, Event, Input, Instant, StopReason, Supervisor, WorkerId};

use super::{Judge, Oracle, Proc};

pub(super) struct PoolBooks {
    /// The highest target since the world's last step: a spawn decided by a timer may go
    /// out after a later timer of the same `handle` lowered the target.
    target_hi: Option<u32>,
    /// Target changes since the last flush, and whether a reload (any command that puts a
    /// config in force says `Reloaded` right after its `Scaled`) came with them.
    scaled: Vec<(u32, u32)>,
    reloaded: bool,
    /// An upper bound of the machine's spawn ramp: doubled by every growth the world saw,
    /// put back to 1 only when a calm tick certainly ran (see `judge_pool_step`).
    ramp: u32,
    /// When the last growth was seen; `None` when the next tick's instant is unknown (a
    /// reload, a handover, a stop: the machine's tick grid moved).
    last_growth: Option<Instant>,
    /// In this world step: a `handle` came at or after the last growth + the interval (so a
    /// tick ran in it), and a growth was seen.
    tick_due: bool,
    grew: bool,
    /// A restart-now was handed in; its drain has not ended. The machine's answer, a
    /// `Reloaded` with a new generation, comes in that drain (events are actions).
    restart_now_asked: bool,
    /// The restart-now was accepted, to this generation: by the end of its drain every
    /// process of an earlier generation must have been signalled.
    restart_now: Option<u32>,
}

impl Default for PoolBooks {
    fn default() -> PoolBooks {
        PoolBooks {
            target_hi: None,
            scaled: Vec::new(),
            reloaded: false,
            ramp: 1,
            last_growth: None,
            tick_due: false,
            grew: false,
            restart_now_asked: false,
            restart_now: None,
        }
    }
}

/// An input handed in.
pub(super) fn note_input(books: &mut PoolBooks, input: &Input) {
    match input {
        Input::Command(Command::Stop | Command::StopNow) => books.last_growth = None,
        Input::Command(Command::RestartNow) => books.restart_now_asked = true,
        _ => {}
    }
}

/// What the world knows of one process, for the pool's counts.
struct Seen {
    generation: u32,
    /// A place (see the module comment).
    place: bool,
    /// Ready by the world's records.
    ready: bool,
    busy: u32,
}

impl Judge {
    /// The world's view of every worker process not yet reaped, but `except`.
    fn seen(&self, except: Option<u64>) -> Vec<(u64, WorkerId, Seen)> {
        let tracks = &self.books.stops.tracks;
        self.table
            .procs
            .iter()
            .filter(|(serial, _)| Some(**serial) != except)
            .map(|(&serial, p): (&u64, &Proc)| {
                let worker = p.worker;
                let stopped = tracks.get(&serial).map(|t| t.reason);
                let place = stopped.is_none_or(StopReason::is_failure);
                let ready = stopped.is_none() && p.ready && !p.main_reaped;
                (
                    serial,
                    worker,
                    Seen {
                        generation: p.generation,
                        place,
                        ready,
                        busy: self.reported_busy(worker),
                    },
                )
            })
            .collect()
    }

    pub(super) fn judge_pool_event(&mut self, sup: &Supervisor, event: &Event) {
        let books = &mut self.books.pool;
        match *event {
            Event::Scaled { from, to } => {
                books.target_hi = Some(books.target_hi.unwrap_or(from).max(from));
                books.scaled.push((from, to));
                let max = sup.config().policy.max();
                if to > max {
                    let now = self.now;
                    self.complain(
                        Oracle::SpawnRamp,
                        format!("the target went from {from} to {to} at {now}, above the policy's max {max}"),
                    );
                }
            }
            // The machine's tick grid moved: whether a calm tick ran in this step is
            // unknown, so the ramp stays the upper bound it is.
            Event::Reloaded {
                generation,
                restart,
            } => {
                if restart && std::mem::take(&mut books.restart_now_asked) {
                    books.restart_now = Some(generation.0);
                }
                books.reloaded = true;
                books.last_growth = None;
                books.tick_due = false;
            }
            Event::UpgradeHandover => {
                books.last_growth = None;
                books.tick_due = false;
            }
            _ => {}
        }
    }

    pub(super) fn judge_pool_action(&mut self, sup: &Supervisor, action: &Action) {
        match *action {
            Action::Spawn { worker, generation } => self.judge_surge(sup, worker, generation.0),
            Action::Signal { pid, reason, .. } => {
                let Some(&serial) = self.table.by_pid.get(&pid) else {
                    return;
                };
                // Only a stop's first signal is a retirement decision.
                if self.books.stops.tracks.contains_key(&serial) {
                    return;
                }
                match reason {
                    StopReason::Restart => self.judge_restart_retirement(sup, serial),
                    StopReason::ScaleDown => self.judge_scale_down(sup, serial),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    /// RollingBounds, immediate restart: once the drain of an accepted restart-now is
    /// complete, no process of an earlier generation is left unsignalled (each was retired
    /// at once, not one at a time). A process asked to stop before keeps its own ladder.
    pub(super) fn judge_restart_now_drained(&mut self, complete: bool) {
        if !complete {
            return;
        }
        // Refused (a stop drains, a successor awaits its handover): nothing was owed.
        self.books.pool.restart_now_asked = false;
        let Some(generation) = self.books.pool.restart_now.take() else {
            return;
        };
        let tracks = &self.books.stops.tracks;
        let left: Vec<String> = self
            .table
            .procs
            .iter()
            .filter(|(serial, p)| p.generation < generation && !tracks.contains_key(serial))
            .map(|(_, p)| format!("{} (generation {})", p.worker, p.generation))
            .collect();
        if !left.is_empty() {
            let now = self.now;
            self.complain(
                Oracle::RollingBounds,
                format!(
                    "restart-now to generation {generation} left {} unsignalled at the end of its drain ({now}): an immediate restart retires every earlier worker at once",
                    left.join(", ")
                ),
            );
        }
    }

    /// RollingBounds, surge: a spawn never takes the places past the target + `max_surge`.
    /// The machine's rule is tighter outside a rolling restart (the target alone), but a
    /// backoff place of an old generation, which the world cannot see, makes a restart of
    /// the machine's that the world cannot tell from none; target + surge holds always.
    fn judge_surge(&mut self, sup: &Supervisor, worker: WorkerId, generation: u32) {
        let places = self.seen(None).iter().filter(|(.., s)| s.place).count() as u32;
        let target = self.books.pool.target_hi.unwrap_or(0).max(sup.target());
        let surge = sup.config().max_surge;
        if places + 1 > target + surge {
            let now = self.now;
            self.complain(
                Oracle::RollingBounds,
                format!(
                    "{worker} (generation {generation}) was spawned at {now} while {places} places were filled: {} places, above target {target} + max_surge {surge}",
                    places + 1
                ),
            );
        }
    }

    /// RollingBounds, unavailability: a Ready worker retired for a rolling restart leaves at
    /// least target − `max_unavailable` Ready workers. This is the one way the machine can
    /// make the Ready count fall below that floor during a restart: at every instant, Ready
    /// workers fall only by the machine's retirements and by deaths it did not choose
    /// (crashes, a worker that hung and had to be killed, which the other oracles judge),
    /// and of the retirements only those for reason restart are the rollout's. Judging each
    /// at its instant is the "every instant" rule with the shortfall that is not the
    /// machine's doing left out. Booting workers of an old generation go at once by rule:
    /// they were not Ready.
    fn judge_restart_retirement(&mut self, sup: &Supervisor, serial: u64) {
        let proc = &self.table.procs[&serial];
        if !proc.ready || proc.main_reaped {
            return;
        }
        let worker = proc.worker;
        let ready = self
            .seen(Some(serial))
            .iter()
            .filter(|(.., s)| s.ready)
            .count() as u32;
        let target = sup.target();
        let unavailable = sup.config().max_unavailable;
        let floor = target.saturating_sub(unavailable);
        if ready < floor {
            let now = self.now;
            self.complain(
                Oracle::RollingBounds,
                format!(
                    "{worker}, Ready, was retired for restart at {now}, leaving {ready} Ready workers: below target {target} − max_unavailable {unavailable} = {floor}"
                ),
            );
        }
    }

    /// ScaleDown's choice of victim: the pool's surplus is of the generation in force
    /// (the victim's); a process goes only once no place without one is left (those are
    /// retired first and are invisible, so a victim taken while the world's places of its
    /// generation do not exceed the target means there was no surplus, or a place without
    /// a process was kept over it); a booting worker before a Ready one; an idle one (busy
    /// 0 by the last load report handed in) before a busy one.
    fn judge_scale_down(&mut self, sup: &Supervisor, serial: u64) {
        let proc = &self.table.procs[&serial];
        let (generation, ready, worker) = (proc.generation, proc.ready, proc.worker);
        let busy = self.reported_busy(worker);
        let others = self.seen(Some(serial));
        let mine = || others.iter().filter(|(.., s)| s.generation == generation);
        let mut places = mine().filter(|(.., s)| s.place).count() as u32 + 1;
        if sup.config().slot_addresses {
            // There the highest slot goes first, before a place with no process (a slot
            // waiting for its address or its backoff): count those the judge knows of.
            places += self.restarts.empty_places().count() as u32;
        }
        let target = sup.target();
        let booting = mine()
            .find(|(serial, _, s)| {
                s.place && !s.ready && !self.books.stops.tracks.contains_key(serial)
            })
            .map(|(_, w, _)| *w);
        let idle = mine()
            .find(|(.., s)| s.ready && s.busy == 0)
            .map(|(_, w, _)| *w);
        let now = self.now;
        // Where each slot is an address the victim is the highest slot whatever it holds
        // (`slots.rs` judges that); only the surplus rule stands.
        let by_kind = !sup.config().slot_addresses;
        let booting = booting.filter(|_| by_kind);
        let idle = idle.filter(|_| by_kind);
        // There a worker at or above the target goes without a surplus too: lower slots
        // still draining make the count right, but the slots in use must be 0..target.
        let above_target = !by_kind && worker.slot >= target;
        let what = if places <= target && !above_target {
            Some(format!(
                "only {places} places of generation {generation} are filled by the world's records, and the target is {target}: no surplus to retire, or an empty place was kept over a process"
            ))
        } else if let Some(b) = booting.filter(|_| ready) {
            Some(format!(
                "it was Ready while {b} of its generation was still booting: a booting worker goes first"
            ))
        } else {
            idle.filter(|_| ready && busy > 0).map(|i| {
                format!(
                    "it had {busy} busy threads by its last load report while {i} was idle: never a busy worker while an idle one exists"
                )
            })
        };
        if let Some(what) = what {
            self.complain(
                Oracle::ScaleDown,
                format!("{worker} was retired for scale-down at {now}: {what}"),
            );
        }
    }

    /// Before a `handle`'s inputs: the target changes of the drains before it, and whether
    /// this `handle` comes when a tick is due after the last growth.
    pub(super) fn judge_pool_handled(&mut self, sup: &Supervisor) {
        self.flush_scaled(sup);
        let books = &mut self.books.pool;
        let interval = sup.config().maintenance_interval;
        if books.last_growth.is_some_and(|t| self.now >= t + interval) {
            books.tick_due = true;
        }
    }

    /// The target changes seen since the last flush: a reload's (a command) are the
    /// operator's; the others are the maintenance tick's, or for an ondemand pool also the
    /// backlog's one at a time. A tick grows the target by at most the ramp, and shrinks it
    /// by exactly one (an idle retirement or a surplus of spares); either resets the ramp.
    fn flush_scaled(&mut self, sup: &Supervisor) {
        let books = &mut self.books.pool;
        if books.scaled.is_empty() {
            books.reloaded = false;
            return;
        }
        let cap = sup.config().max_spawn_rate.max(1);
        let scaled = std::mem::take(&mut books.scaled);
        let command = std::mem::take(&mut books.reloaded);
        let now = self.now;
        let mut wrong = Vec::new();
        for (from, to) in scaled {
            if to > from {
                let n = to - from;
                if !command && n > books.ramp {
                    wrong.push((
                        Oracle::SpawnRamp,
                        format!(
                            "the target grew from {from} to {to} in one tick by {now}: the ramp allowed at most {} (1, doubling per growing tick up to max_spawn_rate {cap})",
                            books.ramp
                        ),
                    ));
                }
                // A tick may have grown in a command's handle too: stay an upper bound.
                books.ramp = books.ramp.saturating_mul(2).min(cap);
                if !command {
                    books.last_growth = Some(now);
                    books.grew = true;
                }
            } else if to < from && !command {
                if from - to > 1 {
                    wrong.push((
                        Oracle::ScaleDown,
                        format!(
                            "a maintenance tick by {now} shrank the target from {from} to {to}: at most one worker per tick"
                        ),
                    ));
                }
                books.ramp = 1;
                books.last_growth = None;
            }
        }
        books.ramp = books.ramp.min(cap);
        for (oracle, what) in wrong {
            self.complain(oracle, what);
        }
    }

    /// After a world step: a tick was due after the last growth and none grew in this
    /// step, so a calm tick ran (with the ramp above 1 every tick is announced, and every
    /// `handle` at or after it runs it) and put the ramp back to 1.
    pub(super) fn judge_pool_step(&mut self, sup: &Supervisor) {
        self.flush_scaled(sup);
        let books = &mut self.books.pool;
        if books.tick_due && !books.grew {
            books.ramp = 1;
            books.last_growth = None;
        }
        books.tick_due = false;
        books.grew = false;
        books.target_hi = Some(sup.target());
    }
}
