//! The watchdogs' oracles: boot, heartbeat and request timeouts, `max_requests` and idle
//! retirement, judged by what the world told the supervisor about each worker process.
//!
//! The evidence is what the shell handed in, when: the fork's answer, the READY=1, each
//! heartbeat's stamp (its arrival in the notify socket, or the worker's own stamp on the
//! report board), each load report. A message the world delayed or held unread is no
//! evidence until it is handed in, so the oracles need no leniency for `msg_delay`: the
//! rule is about what the supervisor knew.
//!
//! Each rule is judged both ways, with no tolerance:
//! - not before: a retirement for a rule must come at a `handle` whose instant had reached
//!   the rule's deadline by the evidence handed in so far;
//! - not later: after every `handle` (whose timers run at its instant) no worker may be left
//!   unretired whose deadline that instant has reached, and the supervisor must never ask
//!   to sleep past the earliest deadline it owes (`poll_timeout`). Together these leave the
//!   world's own lateness as the only delay: a late wake-up, a clock jump, a blocked loop in
//!   a slow fork, a held SIGCHLD all move the first `handle` at or after the deadline, and
//!   the decision must come at that very `handle`. So the slack is exactly what the world
//!   injected, without the judge having to add it up.

use core::time::Duration;
use std::collections::BTreeMap;

use drover_machine::{
    Event, ExitStatus, Input, Instant, Phase, Pid, Readiness, StopReason, Supervisor, WorkerId,
    ABSENCE_MIN,
};

use super::{Judge, Oracle};

/// What the supervisor was told of one worker process, from its fork's answer to its exit.
#[derive(Clone, Debug)]
pub(super) struct Told {
    /// The fork's answer: the boot timeout and the uptime count from here.
    pub(super) forked_at: Instant,
    /// `DROVER_GENERATION` of the process.
    pub(super) generation: u32,
    /// The heartbeat timeout the process was started with (`WATCHDOG_USEC`).
    watchdog: Option<Duration>,
    /// READY=1 handed in (or the fork's answer, when readiness was at spawn).
    pub(super) ready_at: Option<Instant>,
    /// The latest heartbeat stamp handed in (never later than its handing).
    beat: Option<Instant>,
    /// When the supervisor last came back from an absence while this worker lived: its
    /// heartbeat window starts afresh there (ARCHITECTURE §10, heartbeat watchdog).
    back_at: Option<Instant>,
    /// Threads busy, and since when the oldest request runs, as last reported.
    busy: u32,
    busy_since: Option<Instant>,
    /// Since when it is idle by the reports: READY with nothing reported busy, or the first
    /// report of no busy thread after a busy one.
    pub(super) idle_since: Option<Instant>,
    /// Requests served, as last reported.
    requests: u64,
    /// `max_requests ..= max_requests + max_requests_jitter` in force at its spawn: the
    /// limit drawn for it lies in there.
    limit: Option<(u64, u64)>,
    /// The supervisor asked it to stop, for this reason.
    pub(super) retired: Option<StopReason>,
    /// Its main process's exit status, once handed in: the worker's exit is judged with
    /// it, as the machine counts it (a world may report the group's last status instead).
    pub(super) main_status: Option<ExitStatus>,
}

/// A decision a rule required at a `handle`: which rule, its deadline by the evidence then,
/// and what the rule saw.
#[derive(Clone, Debug)]
struct Due {
    oracle: Oracle,
    deadline: Instant,
    handled_at: Instant,
    why: String,
}

#[derive(Debug, Default)]
pub(super) struct Watch {
    pub(super) workers: BTreeMap<WorkerId, Told>,
    pub(super) pids: BTreeMap<Pid, WorkerId>,
    /// The rules whose deadline some `handle` of the current world step had reached, by
    /// worker: a retirement for such a rule in this step was not early. Kept for the whole
    /// step, because a decision taken at one `handle` is performed after any `handle` a
    /// slow fork queued before it in the same drain (whose newer evidence would acquit a
    /// worker the earlier one rightly condemned).
    due: BTreeMap<(WorkerId, Oracle), Due>,
    /// Workers a `handle` of this step had to retire and that no `Retiring` has named yet.
    owed: BTreeMap<WorkerId, Due>,
    /// The earliest deadline owed a wake-up, as of the last `handle` or retirement (only
    /// they change it): recomputed at the step's end when stale.
    earliest: Option<(Instant, WorkerId, Oracle)>,
    stale: bool,
}

/// The watchdog deadlines of one worker, in the order the machine's one slot deadline
/// serves them: a worker not yet Ready has only its boot timeout; a Ready one its
/// heartbeat, then its request timeout. Cheap: it runs for every worker after every step.
fn deadlines(sup: &Supervisor, t: &Told) -> [Option<(Oracle, Instant)>; 2] {
    let c = sup.config();
    let Some(ready_at) = t.ready_at else {
        return [
            Some((Oracle::BootTimeout, t.forked_at + c.boot_timeout)),
            None,
        ];
    };
    let heartbeat = t.watchdog.map(|timeout| {
        let (base, allowed) = heartbeat_rule(sup, t, ready_at, timeout);
        (Oracle::HeartbeatTimeout, base + allowed)
    });
    let request = c
        .request_timeout
        .zip(t.busy_since)
        .map(|(timeout, since)| (Oracle::RequestTimeout, since + timeout));
    [heartbeat, request]
}

/// The heartbeat watchdog's base and allowance: the last beat handed in (or the readiness,
/// which counts as one), and the timeout the worker was started with — but a worker ready
/// at spawn says nothing of the program being up, so its first beat may take a boot
/// (ARCHITECTURE §10, heartbeat watchdog).
fn heartbeat_rule(
    sup: &Supervisor,
    t: &Told,
    ready_at: Instant,
    timeout: Duration,
) -> (Instant, Duration) {
    let c = sup.config();
    let first_beat = t.beat.is_none() && c.readiness == Readiness::AtSpawn;
    let allowed = if first_beat {
        timeout.max(c.boot_timeout)
    } else {
        timeout
    };
    let base = t.beat.map_or(ready_at, |b| b.max(ready_at));
    (base.max(t.back_at.unwrap_or(base)), allowed)
}

/// What `oracle`'s rule saw of `t`, for a complaint.
fn evidence(sup: &Supervisor, t: &Told, oracle: Oracle) -> String {
    let c = sup.config();
    match (oracle, t.ready_at, t.watchdog) {
        (Oracle::BootTimeout, _, _) => format!(
            "it was forked at {}, told ready {:?}, boot_timeout is {:?}",
            t.forked_at, t.ready_at, c.boot_timeout
        ),
        (Oracle::HeartbeatTimeout, Some(ready_at), Some(timeout)) => {
            let (base, allowed) = heartbeat_rule(sup, t, ready_at, timeout);
            match t.beat {
                None => format!(
                    "it was told ready at {ready_at} with no beat handed in since, its watchdog is {timeout:?} (allowed {allowed:?})"
                ),
                Some(_) => format!(
                    "the last beat handed in was stamped {base}, its watchdog is {timeout:?}"
                ),
            }
        }
        (Oracle::HeartbeatTimeout, _, None) => "it was started without a watchdog".into(),
        (Oracle::RequestTimeout, _, _) => format!(
            "its oldest request as reported started at {:?}, request_timeout is {:?}",
            t.busy_since, c.request_timeout
        ),
        _ => format!(
            "ready {:?}, busy since {:?}, watchdog {:?}",
            t.ready_at, t.busy_since, t.watchdog
        ),
    }
}

impl Watch {
    /// The earliest deadline the supervisor owes a wake-up for.
    fn earliest(&self, sup: &Supervisor) -> Option<(Instant, WorkerId, Oracle)> {
        self.workers
            .iter()
            .filter(|(_, t)| t.retired.is_none())
            .flat_map(|(w, t)| {
                deadlines(sup, t)
                    .into_iter()
                    .flatten()
                    .map(move |(o, d)| (d, *w, o))
            })
            .min()
    }
}

impl Judge {
    /// Threads busy in `worker` by its last load report handed in (none: 0, as the
    /// machine counts a worker that never reported).
    pub(super) fn reported_busy(&self, worker: WorkerId) -> u32 {
        self.watch.workers.get(&worker).map_or(0, |t| t.busy)
    }

    /// The first hook of a `handle` at `now`, with `asked` the wake-up the supervisor had
    /// asked the driver for before it: woken more than `ABSENCE_MIN` after it, the
    /// supervisor was away, and every worker's heartbeat window starts afresh now.
    pub(super) fn judge_absence(&mut self, asked: Option<Instant>) {
        let now = self.now;
        if asked.is_some_and(|a| now > a + ABSENCE_MIN) {
            for t in self.watch.workers.values_mut() {
                t.back_at = Some(now);
            }
        }
    }

    pub(super) fn judge_timeout_input(&mut self, sup: &Supervisor, input: &Input) {
        if sup.phase() == Phase::Exited {
            return;
        }
        let now = self.now;
        let c = sup.config();
        let watch = &mut self.watch;
        match *input {
            Input::Spawned { worker, pid } => {
                // Only the answer to a `Spawn` performed is a process of the pool.
                let Some(proc) = self
                    .table
                    .by_pid
                    .get(&pid)
                    .map(|s| &self.table.procs[s])
                    .filter(|p| p.worker == worker)
                else {
                    return;
                };
                let at_spawn = c.readiness == Readiness::AtSpawn;
                watch.pids.insert(pid, worker);
                watch.workers.insert(
                    worker,
                    Told {
                        // The fork's answer is its handing: now.
                        forked_at: now,
                        generation: proc.generation,
                        watchdog: proc.watchdog,
                        ready_at: at_spawn.then_some(now),
                        beat: None,
                        back_at: None,
                        busy: 0,
                        busy_since: None,
                        idle_since: at_spawn.then_some(now),
                        requests: 0,
                        limit: c
                            .max_requests
                            .map(|m| (m, m.saturating_add(c.max_requests_jitter))),
                        retired: None,
                        main_status: None,
                    },
                );
            }
            Input::Ready { worker } => {
                if let Some(t) = watch.workers.get_mut(&worker) {
                    if t.ready_at.is_none() {
                        t.ready_at = Some(now);
                        if t.busy == 0 {
                            t.idle_since = Some(now);
                        }
                    }
                }
            }
            Input::Heartbeat { worker } | Input::HeartbeatAt { worker, at: _ } => {
                let at = match *input {
                    Input::HeartbeatAt { at, .. } => at.min(now),
                    _ => now,
                };
                if let Some(t) = watch.workers.get_mut(&worker) {
                    t.beat = Some(t.beat.map_or(at, |b| b.max(at)));
                }
            }
            Input::Load {
                worker,
                busy,
                oldest_busy_since,
                requests,
            } => {
                if let Some(t) = watch.workers.get_mut(&worker) {
                    t.busy = busy;
                    if busy > 0 {
                        // A busy report without a start counts from its handing.
                        t.busy_since = Some(oldest_busy_since.unwrap_or(now).min(now));
                        t.idle_since = None;
                    } else {
                        t.busy_since = None;
                        // Requests served since the report before: idle from this one.
                        let served = requests > t.requests;
                        if t.ready_at.is_some() && (served || t.idle_since.is_none()) {
                            t.idle_since = Some(now);
                        }
                    }
                    t.requests = requests;
                }
            }
            Input::MainExited { pid, status } => {
                if let Some(t) = watch.pids.get(&pid).and_then(|w| watch.workers.get_mut(w)) {
                    t.main_status.get_or_insert(status);
                }
            }
            Input::Exited { pid, .. } => {
                if let Some(worker) = watch.pids.remove(&pid) {
                    watch.workers.remove(&worker);
                    watch.owed.remove(&worker);
                }
            }
            _ => {}
        }
    }

    /// After a `handle`: its timers have run at its instant, so every rule whose deadline
    /// that instant reached is due now, and owed unless the worker is stopping already.
    pub(super) fn judge_timeout_handled(&mut self, sup: &Supervisor) {
        if sup.phase() == Phase::Exited {
            return;
        }
        let now = self.now;
        let c = sup.config();
        let watch = &mut self.watch;
        watch.stale = true;
        for (&worker, t) in &watch.workers {
            if t.retired.is_some() {
                continue;
            }
            let mut owed: Option<Due> = None;
            for (oracle, deadline) in deadlines(sup, t).into_iter().flatten() {
                if deadline <= now {
                    let due = Due {
                        oracle,
                        deadline,
                        handled_at: now,
                        why: evidence(sup, t, oracle),
                    };
                    watch
                        .due
                        .entry((worker, oracle))
                        .or_insert_with(|| due.clone());
                    owed.get_or_insert(due);
                }
            }
            if let Some((lo, hi)) = t.limit {
                if t.requests >= lo {
                    let due = Due {
                        oracle: Oracle::MaxRequests,
                        deadline: now,
                        handled_at: now,
                        why: format!(
                            "it reported {} requests served, its limit lies in {lo}..={hi}",
                            t.requests
                        ),
                    };
                    watch
                        .due
                        .entry((worker, Oracle::MaxRequests))
                        .or_insert_with(|| due.clone());
                    // The report that reaches the limit retires it, ahead of the timers.
                    if t.requests >= hi {
                        owed = Some(due);
                    }
                }
            }
            if let (Some(timeout), Some(since)) = (c.idle_timeout, t.idle_since) {
                // Idle retirement is the tick's choice among the idle: never owed, only
                // allowed.
                if since + timeout <= now {
                    watch
                        .due
                        .entry((worker, Oracle::IdleTimeout))
                        .or_insert(Due {
                            oracle: Oracle::IdleTimeout,
                            deadline: since + timeout,
                            handled_at: now,
                            why: String::new(),
                        });
                }
            }
            if let Some(due) = owed {
                watch.owed.entry(worker).or_insert(due);
            }
        }
    }

    pub(super) fn judge_timeout_event(&mut self, sup: &Supervisor, event: &Event) {
        let Event::Retiring { worker, reason } = *event else {
            return;
        };
        let watch = &mut self.watch;
        watch.owed.remove(&worker);
        watch.stale = true;
        let Some(t) = watch.workers.get_mut(&worker) else {
            return; // retired before its fork answered: no process to judge
        };
        t.retired = Some(reason);
        let oracle = match reason {
            StopReason::BootTimeout => Oracle::BootTimeout,
            StopReason::HeartbeatTimeout => Oracle::HeartbeatTimeout,
            StopReason::RequestTimeout => Oracle::RequestTimeout,
            StopReason::MaxRequests => Oracle::MaxRequests,
            StopReason::Idle => Oracle::IdleTimeout,
            _ => return,
        };
        if watch.due.contains_key(&(worker, oracle)) {
            return;
        }
        let t = t.clone();
        let what = self.early_retirement(sup, worker, &t, oracle);
        self.complain(oracle, what);
    }

    /// What the rule said of a retirement no `handle` of this step had made due.
    fn early_retirement(
        &self,
        sup: &Supervisor,
        worker: WorkerId,
        t: &Told,
        oracle: Oracle,
    ) -> String {
        let now = self.now;
        let name = oracle.name();
        let rule = deadlines(sup, t)
            .into_iter()
            .flatten()
            .find(|(o, _)| *o == oracle)
            .map(|(o, d)| (o, d, evidence(sup, t, o)));
        match oracle {
            Oracle::MaxRequests => match t.limit {
                Some((lo, hi)) => format!(
                    "{worker} was retired for max-requests at {now}, but it reported {} requests served and its limit lies in {lo}..={hi}: not before {lo}",
                    t.requests
                ),
                None => format!("{worker} was retired for max-requests at {now}, but it was spawned with no max_requests"),
            },
            Oracle::IdleTimeout => match (sup.config().idle_timeout, t.idle_since) {
                (Some(timeout), Some(since)) => format!(
                    "{worker} was retired for idle at {now}, but it is idle since {since} by its reports and idle_timeout is {timeout:?}: not before {}",
                    since + timeout
                ),
                (None, _) => format!("{worker} was retired for idle at {now}, but no idle_timeout is in force"),
                (_, None) => format!(
                    "{worker} was retired for idle at {now}, but by its reports it is not idle ({} busy, ready {:?})",
                    t.busy, t.ready_at
                ),
            },
            _ => match rule {
                Some((_, deadline, why)) => format!(
                    "{worker} was killed for {name} at {now}, but {why}: not before {deadline}"
                ),
                None if oracle == Oracle::HeartbeatTimeout && t.watchdog.is_none() => format!(
                    "{worker} was killed for {name} at {now}, but it was started without a watchdog"
                ),
                None => format!(
                    "{worker} was killed for {name} at {now}, but the rule does not apply to it (ready {:?}, busy since {:?})",
                    t.ready_at, t.busy_since
                ),
            },
        }
    }

    /// After a world step: every retirement a `handle` owed came, and the supervisor sleeps
    /// no later than the earliest deadline it owes.
    pub(super) fn judge_timeout_step(&mut self, sup: &Supervisor) {
        let owed = std::mem::take(&mut self.watch.owed);
        self.watch.due.clear();
        for (worker, due) in owed {
            let Due {
                oracle,
                deadline,
                handled_at,
                why,
            } = due;
            let name = oracle.name();
            let what = if oracle == Oracle::MaxRequests {
                format!(
                    "{worker} was not retired for max-requests when handled at {handled_at}: {why}"
                )
            } else {
                format!(
                    "{worker} was not retired when handled at {handled_at}: {why}, so {name} was due at {deadline}"
                )
            };
            self.complain(oracle, what);
        }
        if sup.phase() == Phase::Exited || self.done() {
            return;
        }
        let watch = &mut self.watch;
        if std::mem::take(&mut watch.stale) {
            watch.earliest = watch.earliest(sup);
        }
        let Some((deadline, worker, oracle)) = watch.earliest else {
            return;
        };
        if sup.poll_timeout().is_none_or(|t| t > deadline) {
            let name = oracle.name();
            let what = format!(
                "the supervisor sleeps until {:?}, past {worker}'s {name} deadline {deadline}",
                sup.poll_timeout()
            );
            self.complain(oracle, what);
        }
    }
}
