//! The restart policy's oracles: the backoff before a dead worker's slot is refilled, and
//! the crash-loop declaration, judged by the judge's own record of the deaths the
//! supervisor was told of (exits handed in, failed forks), never by the machine's counts.
//!
//! A death counts (ARCHITECTURE §10, restart policy) when the supervisor learns, while the
//! pool runs, that a fork failed, that a worker not yet Ready died, that a Ready one it did
//! not ask to stop crashed (a non-zero exit, or a signal other than KILL and TERM; with an
//! unrecoverable code it is given up on instead and does not count), or that one it killed
//! for a failure (a timeout; its main process exiting) exited. A Ready worker killed from
//! outside (KILL, TERM) or one that exited 0 on its own does not count: its place is
//! refilled at once, at most `restart.quick_restart_rate` such refills in any second. Uptime counts from the fork's answer to the exit's handing.
//! Like the watchdogs, both bounds are exact: the refill must come at the first `handle`
//! at or after the backoff's end, and the supervisor must not sleep past that end; the
//! world's own lateness is then the only delay.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use drover_machine::{
    Action, DeathCause, Event, ExitStatus, Input, Instant, OnCrashLoop, Phase, SpawnError,
    Supervisor, WorkerId,
};

use super::{Judge, Oracle};

/// A slot waiting out its backoff.
#[derive(Clone, Debug)]
struct Backoff {
    died_at: Instant,
    until: Instant,
    delay: Duration,
    young_deaths: u32,
    crash_looping: bool,
    /// The dead worker's generation: a slot of an earlier generation than the one in force
    /// is not refilled for its own sake (a rolling restart replaces it at its pace).
    generation: u32,
}

#[derive(Debug, Default)]
pub(super) struct Restarts {
    /// Consecutive young deaths per slot: the backoff's exponent.
    young: BTreeMap<u32, u32>,
    /// The last death counted per slot: a backoff the machine schedules must follow one.
    died: BTreeMap<u32, Instant>,
    /// Slots given up on for an unrecoverable exit: a restart retries them afresh.
    gave_up: BTreeSet<u32>,
    /// The last `intensity_deaths + 1` deaths counted, oldest first.
    deaths: VecDeque<Instant>,
    /// The instants of the last `quick_restart_rate` quick refills booked, oldest first.
    quick: VecDeque<Instant>,
    /// Crash-looping by the judge's record.
    looping: bool,
    /// Slots in backoff whose refill is judged.
    backoffs: BTreeMap<u32, Backoff>,
    /// Every slot in backoff by the rule, judged or not, until its backoff ends or it is
    /// refilled: each holds a place.
    places: BTreeMap<u32, Instant>,
    /// Slots whose backoff a `handle` of this step saw end: each is owed its refill.
    refill_owed: BTreeMap<u32, (Instant, Backoff)>,
    /// `CrashLooping` is owed in this step: why.
    loop_owed: Option<String>,
    /// `CrashLoopEnded` is owed in this step: the window's end.
    end_owed: Option<Instant>,
    /// Consecutive failures to bind each slot's address (slot addresses), until a fork of
    /// the slot answers: the exponent of its retry delay.
    address_failures: BTreeMap<u32, u32>,
}

impl Restarts {
    /// Slots holding a place with no process: in backoff, or given up on.
    pub(super) fn empty_places(&self) -> impl Iterator<Item = u32> + '_ {
        self.places.keys().chain(self.gave_up.iter()).copied()
    }
}

/// The backoff after a slot's `young_deaths`-th consecutive young death: none for the
/// first, then `backoff_min` doubling up to `backoff_max`; `backoff_max` while crash-looping.
fn prescribed(sup: &Supervisor, young_deaths: u32, crash_looping: bool) -> Duration {
    let r = &sup.config().restart;
    if crash_looping {
        r.backoff_max
    } else if young_deaths <= 1 {
        Duration::ZERO
    } else {
        let doublings = (young_deaths - 2).min(31);
        r.backoff_min
            .saturating_mul(1u32 << doublings)
            .min(r.backoff_max)
    }
}

/// A quick refill's delay: at most `rate` booked in any second, each at its own instant.
fn quick_delay(quick: &mut VecDeque<Instant>, rate: u32, now: Instant) -> Duration {
    let rate = rate.max(1) as usize;
    while quick.len() > rate {
        quick.pop_front();
    }
    let at = if quick.len() == rate {
        let oldest = quick.pop_front().expect("rate is at least 1");
        (oldest + Duration::from_secs(1)).max(now)
    } else {
        now
    };
    quick.push_back(at);
    at.saturating_since(now)
}

impl Judge {
    /// The pool holds fewer places than its target besides `besides` of its slots in
    /// backoff: only then is a slot whose backoff ends owed its refill.
    fn holds_less(&self, sup: &Supervisor, besides: usize) -> bool {
        self.holding().saturating_sub(besides) < sup.target() as usize
    }

    fn holds_more(&self, sup: &Supervisor) -> bool {
        self.holding() > sup.target() as usize
    }

    /// The places the pool holds by the judge's records: workers not asked to stop or
    /// killed for a failure (those keep their place until their backoff), slots in
    /// backoff, places given up on.
    fn holding(&self) -> usize {
        self.watch
            .workers
            .values()
            .filter(|t| t.retired.is_none_or(|r| r.is_failure()))
            .count()
            + self.restarts.places.len()
            + self.restarts.gave_up.len()
    }
}

impl Judge {
    pub(super) fn judge_restart_input(&mut self, sup: &Supervisor, input: &Input) {
        if sup.phase() == Phase::Exited {
            return;
        }
        match *input {
            Input::SpawnFailed {
                worker,
                error: SpawnError::Address(_),
            } => self.address_failed(sup, worker),
            Input::SpawnFailed { worker, .. } => {
                let generation = sup.generation().0;
                self.count_death(sup, worker, None, generation, DeathCause::Boot);
            }
            Input::Spawned { worker, .. } => {
                self.restarts.address_failures.remove(&worker.slot);
            }
            Input::Exited { pid, status } => {
                let watch = &self.watch;
                let Some(t) = watch.pids.get(&pid).and_then(|w| watch.workers.get(w)) else {
                    return;
                };
                let worker = watch.pids[&pid];
                let uptime = self.now.saturating_since(t.forked_at);
                let generation = t.generation;
                // A main process that exited on its own makes the exit a crash.
                let asked = t
                    .retired
                    .filter(|r| *r != drover_machine::StopReason::MainExited);
                let failed = asked.is_none_or(|r| r.is_failure());
                let restart = &sup.config().restart;
                if !failed || sup.phase() != Phase::Running {
                    if uptime >= restart.healthy_uptime {
                        self.restarts.young.insert(worker.slot, 0);
                    }
                    return;
                }
                let kept = worker.slot < sup.config().slot_count();
                let status = t.main_status.unwrap_or(status);
                let unrecoverable = matches!(status, ExitStatus::Code(c) if asked.is_none()
                    && restart.unrecoverable_exit_codes.contains(&c));
                if unrecoverable && kept {
                    self.note_start_failure(sup, worker.slot, "exited with an unrecoverable code");
                    // A place of an earlier generation is replaced by the rollout at once:
                    // emptied, it is retried afresh, as a restart retries one.
                    if generation < sup.generation().0 {
                        self.restarts.young.insert(worker.slot, 0);
                    } else {
                        self.restarts.gave_up.insert(worker.slot);
                    }
                    return;
                }
                let ready = t.ready_at.is_some();
                let cause = match asked {
                    None => DeathCause::of_exit(status, ready),
                    Some(_) if !ready => DeathCause::Boot,
                    Some(_) => DeathCause::Hung,
                };
                self.count_death(sup, worker, Some(uptime), generation, cause);
            }
            _ => {}
        }
    }

    /// A slot's address could not be bound (ARCHITECTURE §10, slot addresses): no death of
    /// the program; the slot holds its place and is retried after `backoff_min`, doubling
    /// per consecutive failure up to `backoff_max`.
    fn address_failed(&mut self, sup: &Supervisor, worker: WorkerId) {
        let now = self.now;
        let c = sup.config();
        let j = &mut self.restarts;
        let failures = j.address_failures.entry(worker.slot).or_insert(0);
        *failures = failures.saturating_add(1);
        let delay = c
            .restart
            .backoff_min
            .saturating_mul(1u32 << (*failures - 1).min(31))
            .min(c.restart.backoff_max);
        if sup.phase() != Phase::Running || worker.slot >= c.slot_count() {
            return;
        }
        j.places.insert(worker.slot, now + delay);
        j.backoffs.insert(
            worker.slot,
            Backoff {
                died_at: now,
                until: now + delay,
                delay,
                young_deaths: 0,
                crash_looping: false,
                generation: sup.generation().0,
            },
        );
    }

    /// A death the supervisor learns of now: the slot's young deaths, the pool's death
    /// window, and the backoff the slot must wait.
    fn count_death(
        &mut self,
        sup: &Supervisor,
        worker: WorkerId,
        uptime: Option<Duration>,
        generation: u32,
        cause: DeathCause,
    ) {
        if cause.counts() {
            let what = format!("died ({})", cause.name());
            self.note_start_failure(sup, worker.slot, &what);
        }
        let now = self.now;
        let c = sup.config();
        let r = &c.restart;
        let j = &mut self.restarts;
        let young = uptime.is_none_or(|u| u < r.healthy_uptime);
        let counts = cause.counts();
        j.died.insert(worker.slot, now);
        let slot = j.young.entry(worker.slot).or_insert(0);
        *slot = match (counts, young) {
            (true, true) => slot.saturating_add(1),
            (true, false) => 1,
            (false, true) => *slot,
            (false, false) => 0,
        };
        let young_deaths = *slot;
        let limit = r.intensity_deaths as usize + 1;
        if counts {
            j.deaths.push_back(now);
        }
        while j.deaths.len() > limit {
            j.deaths.pop_front();
        }
        let mut declared = false;
        if counts && !j.looping && j.deaths.len() >= limit {
            let oldest = j.deaths[0];
            if now.saturating_since(oldest) < r.intensity_window {
                j.looping = true;
                declared = true;
                j.loop_owed = Some(format!(
                    "{limit} deaths from {oldest} to {now} fell within intensity_window {:?} (intensity_deaths {})",
                    r.intensity_window, r.intensity_deaths
                ));
            }
        }
        let running = sup.phase() == Phase::Running
            && !(declared && matches!(r.on_crash_loop, OnCrashLoop::Exit(_)));
        if !running || worker.slot >= c.slot_count() {
            return;
        }
        let delay = if counts {
            prescribed(sup, young_deaths, j.looping)
        } else {
            quick_delay(&mut j.quick, r.quick_restart_rate, now)
        };
        j.places.insert(worker.slot, now + delay);
        // A place of an earlier generation is replaced by the rolling restart at once,
        // whatever its backoff (ARCHITECTURE §10: places with no process go at once).
        if generation < sup.generation().0 {
            return;
        }
        j.backoffs.insert(
            worker.slot,
            Backoff {
                died_at: now,
                until: now + delay,
                delay,
                young_deaths,
                crash_looping: j.looping,
                generation,
            },
        );
    }

    pub(super) fn judge_restart_action(&mut self, _sup: &Supervisor, action: &Action) {
        let Action::Spawn { worker, .. } = *action else {
            return;
        };
        let j = &mut self.restarts;
        j.gave_up.remove(&worker.slot);
        j.places.remove(&worker.slot);
        j.refill_owed.remove(&worker.slot);
        let Some(b) = j.backoffs.remove(&worker.slot) else {
            return;
        };
        let looping = if b.crash_looping {
            ", crash-looping"
        } else {
            ""
        };
        let what = format!(
            "slot {} was refilled ({worker}) at {}, but its worker died at {} (young death {}{looping}) and the restart policy prescribes a backoff of {:?}: not before {}",
            worker.slot, self.now, b.died_at, b.young_deaths, b.delay, b.until
        );
        self.complain(Oracle::RestartBackoff, what);
    }

    pub(super) fn judge_restart_handled(&mut self, sup: &Supervisor) {
        let phase = sup.phase();
        if phase == Phase::Exited {
            return;
        }
        let now = self.now;
        let c = sup.config();
        let generation = sup.generation().0;
        let j = &mut self.restarts;
        // A reload may have shortened the window of deaths kept.
        let limit = c.restart.intensity_deaths as usize + 1;
        while j.deaths.len() > limit {
            j.deaths.pop_front();
        }
        if j.looping {
            if let Some(&oldest) = j.deaths.front() {
                let end = oldest + c.restart.intensity_window;
                if end <= now {
                    j.looping = false;
                    j.end_owed = Some(end);
                }
            }
        }
        if phase != Phase::Running {
            // A stopping pool refills nothing.
            j.backoffs.clear();
            j.places.clear();
            return;
        }
        let ended: Vec<u32> = j
            .backoffs
            .iter()
            .filter(|(_, b)| b.until <= now)
            .map(|(s, _)| *s)
            .collect();
        // Counted before the places whose backoff ended now leave: those are what the
        // refill decision weighs.
        let short = self.holds_less(sup, ended.len());
        let more = self.holds_more(sup);
        let j = &mut self.restarts;
        // A place whose backoff ended is refilled or emptied now.
        j.places.retain(|_, until| *until > now);
        if more {
            // The pool holds more places than its target: its scale-down empties a place
            // in backoff first (ARCHITECTURE §10, scale down), silently, and may refill
            // that slot as a new place. Which one is the pool's choice, so no backoff is
            // judged through it.
            j.backoffs.clear();
            return;
        }
        for slot in ended {
            let b = j.backoffs.remove(&slot).expect("listed");
            if b.generation >= generation && short {
                j.refill_owed.insert(slot, (now, b));
            }
        }
    }

    pub(super) fn judge_restart_event(&mut self, sup: &Supervisor, event: &Event) {
        let j = &mut self.restarts;
        match *event {
            // The pool wants fewer places, or new ones: whether a slot in backoff is still
            // wanted is the pool's choice, not the restart policy's.
            Event::Scaled { from, to } if to < from => {
                j.backoffs.clear();
                j.refill_owed.clear();
            }
            // Every fork here answers at once, so a backoff follows a death handed in (an
            // exit, a failed fork) in the same handle. One without is a start declared
            // failed before its process existed: a boot timeout counted from before the
            // fork.
            Event::RestartScheduled { slot, delay, .. } if j.died.get(&slot) != Some(&self.now) => {
                let what = format!(
                    "slot {slot} was given a backoff of {delay:?} at {}, but no death of its worker was handed in: its start was declared failed before its fork answered, while boot_timeout {:?} counts from the fork",
                    self.now,
                    sup.config().boot_timeout
                );
                self.complain(Oracle::BootTimeout, what);
            }
            // A place given up on or in backoff, emptied by the pool's scale-down: it owes no
            // refill; one given up on is retried afresh when next filled, one in backoff
            // keeps its death count.
            // A stopping pool refills nothing: a refill owed at this very instant, whose
            // spawn was still queued, is dropped with the stop.
            // A stop or a handover retires every place, the given-up ones included: one
            // the pool refills later (after a rollback) is retried afresh.
            Event::Stopping { .. } | Event::UpgradeHandover => {
                j.backoffs.clear();
                j.refill_owed.clear();
                for slot in std::mem::take(&mut j.gave_up) {
                    j.young.insert(slot, 0);
                }
            }
            Event::ScaleDownChose { slot, .. } => {
                if j.gave_up.remove(&slot) {
                    j.young.insert(slot, 0);
                }
                j.backoffs.remove(&slot);
                j.refill_owed.remove(&slot);
            }
            Event::Reloaded { restart, .. } => {
                j.backoffs.clear();
                j.refill_owed.clear();
                // Places beyond a shrunk pool are emptied first; one given up on is retried
                // afresh if the pool grows back to it.
                let slots = sup.config().slot_count();
                for slot in j.gave_up.split_off(&slots) {
                    j.young.insert(slot, 0);
                }
                if restart {
                    // A restart retries the places given up on, afresh.
                    for slot in std::mem::take(&mut j.gave_up) {
                        j.young.insert(slot, 0);
                    }
                }
            }
            Event::CrashLooping { deaths, window } => {
                let owed = j.loop_owed.take();
                if owed.is_none() {
                    let record: Vec<String> = j.deaths.iter().map(|d| d.to_string()).collect();
                    let r = &sup.config().restart;
                    let what = format!(
                        "crash-looping was declared at {} ({deaths} deaths within {window:?}), but by the world's record the last deaths were [{}]: more than intensity_deaths {} within intensity_window {:?} are needed",
                        self.now,
                        record.join(", "),
                        r.intensity_deaths,
                        r.intensity_window
                    );
                    self.complain(Oracle::CrashLoop, what);
                }
            }
            Event::CrashLoopEnded => {
                let owed = j.end_owed.take();
                if owed.is_none() {
                    let oldest = j.deaths.front().copied();
                    let what = format!(
                        "the crash loop was declared ended at {}, but its window has not passed: the oldest death kept is at {oldest:?}, intensity_window {:?}",
                        self.now,
                        sup.config().restart.intensity_window
                    );
                    self.complain(Oracle::CrashLoop, what);
                }
            }
            _ => {}
        }
    }

    pub(super) fn judge_restart_step(&mut self, sup: &Supervisor) {
        let j = &mut self.restarts;
        let refills = std::mem::take(&mut j.refill_owed);
        let declare = j.loop_owed.take();
        let end = j.end_owed.take();
        for (slot, (handled_at, b)) in refills {
            let what = format!(
                "slot {slot} was not refilled when handled at {handled_at}: its worker died at {} (young death {}) and its backoff of {:?} ended at {}",
                b.died_at, b.young_deaths, b.delay, b.until
            );
            self.complain(Oracle::RestartBackoff, what);
        }
        if let Some(why) = declare {
            self.complain(
                Oracle::CrashLoop,
                format!("crash-looping was not declared by {}: {why}", self.now),
            );
        }
        if let Some(end) = end {
            self.complain(
                Oracle::CrashLoop,
                format!(
                    "the crash loop was not declared ended by {}: its window ended at {end}",
                    self.now
                ),
            );
        }
        if sup.phase() != Phase::Running || self.done() {
            return;
        }
        let j = &self.restarts;
        let earliest = j
            .backoffs
            .iter()
            .map(|(s, b)| (b.until, *s))
            .min()
            .filter(|_| self.holds_less(sup, 1));
        let crash_end = j
            .looping
            .then(|| j.deaths.front().copied())
            .flatten()
            .map(|o| o + sup.config().restart.intensity_window);
        if let Some((until, slot)) = earliest {
            if sup.poll_timeout().is_none_or(|t| t > until) {
                let what = format!(
                    "the supervisor sleeps until {:?}, past slot {slot}'s backoff end {until}",
                    sup.poll_timeout()
                );
                self.complain(Oracle::RestartBackoff, what);
            }
        }
        if let Some(end) = crash_end {
            if sup.poll_timeout().is_none_or(|t| t > end) {
                let what = format!(
                    "the supervisor sleeps until {:?}, past the crash loop's window end {end}",
                    sup.poll_timeout()
                );
                self.complain(Oracle::CrashLoop, what);
            }
        }
    }
}
