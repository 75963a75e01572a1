//! The counters' oracle (`Oracle::Counters`): what the machine counts for metrics
//! (`Supervisor::counters`) is what the driver was asked to do and what the workers
//! reported, recounted here from the actions performed and the inputs handed in: spawns,
//! signals by signal and reason, retirements by reason, restarts by cause, exits of the
//! pool's processes, and requests served as the growth of each process's reported total
//! (a process's first report adds its whole total, a repeated total adds nothing). Judged
//! after every drain, when every action the machine counted has been performed.

use std::collections::BTreeMap;

use drover_machine::{Action, Event, Input, Supervisor};

use super::{Judge, Oracle};

#[derive(Default)]
pub(super) struct CounterBooks {
    spawns: u64,
    /// By (signal, reason) name.
    signals: BTreeMap<(&'static str, &'static str), u64>,
    retirements: BTreeMap<&'static str, u64>,
    restarts: BTreeMap<&'static str, u64>,
    exits: u64,
    requests: u64,
    /// Each live process's last reported request total, by serial.
    reported: BTreeMap<u64, u64>,
}

impl Judge {
    /// Before the process table notes the input: an exit is counted for a process the
    /// supervisor was told of, a load report for a live one.
    pub(super) fn judge_counter_input(&mut self, input: &Input) {
        let books = &mut self.books.counters;
        match *input {
            Input::Exited { pid, .. } => {
                if let Some(serial) = self.table.by_pid.get(&pid) {
                    books.exits += 1;
                    books.reported.remove(serial);
                }
            }
            Input::Load {
                worker, requests, ..
            } => {
                let live = self.table.procs.iter().find(|(_, p)| p.worker == worker);
                if let Some((&serial, _)) = live {
                    let last = books.reported.insert(serial, requests).unwrap_or(0);
                    books.requests += requests.saturating_sub(last);
                }
            }
            _ => {}
        }
    }

    pub(super) fn judge_counter_action(&mut self, action: &Action) {
        let books = &mut self.books.counters;
        match action {
            Action::Spawn { .. } => books.spawns += 1,
            Action::Signal { signal, reason, .. } => {
                *books
                    .signals
                    .entry((signal.name(), reason.name()))
                    .or_default() += 1;
            }
            Action::Event(Event::Retiring { reason, .. }) => {
                *books.retirements.entry(reason.name()).or_default() += 1;
            }
            Action::Event(Event::RestartScheduled { cause, .. }) => {
                *books.restarts.entry(cause.name()).or_default() += 1;
            }
            _ => {}
        }
    }

    /// After a drain: every counter agrees with the recount.
    pub(super) fn judge_counters_drained(&mut self, sup: &Supervisor) {
        if self.done() {
            return;
        }
        let c = sup.counters();
        let books = &self.books.counters;
        let mut wrong = Vec::new();
        if c.spawns() != books.spawns {
            wrong.push(format!(
                "spawns {} (performed {})",
                c.spawns(),
                books.spawns
            ));
        }
        let signals: BTreeMap<_, _> = c
            .signals()
            .map(|(s, r, n)| ((s.name(), r.name()), n))
            .collect();
        if signals != books.signals {
            wrong.push(format!(
                "signals {signals:?} (performed {:?})",
                books.signals
            ));
        }
        let nonzero = |m: BTreeMap<&'static str, u64>| -> BTreeMap<&'static str, u64> {
            m.into_iter().filter(|&(_, n)| n > 0).collect()
        };
        let retirements = nonzero(c.retirements().map(|(r, n)| (r.name(), n)).collect());
        if retirements != books.retirements {
            wrong.push(format!(
                "retirements {retirements:?} (events {:?})",
                books.retirements
            ));
        }
        let restarts = nonzero(c.restarts().map(|(r, n)| (r.name(), n)).collect());
        if restarts != books.restarts {
            wrong.push(format!(
                "restarts {restarts:?} (events {:?})",
                books.restarts
            ));
        }
        if c.exits_total() != books.exits {
            wrong.push(format!(
                "exits {} (handed in {})",
                c.exits_total(),
                books.exits
            ));
        }
        if c.requests() != books.requests {
            wrong.push(format!(
                "requests {} (reported {})",
                c.requests(),
                books.requests
            ));
        }
        if !wrong.is_empty() {
            self.complain(
                Oracle::Counters,
                format!("the machine's counters disagree: {}", wrong.join("; ")),
            );
        }
    }
}
