//! Clients: arrivals (Poisson at the synthetic load's rate, or a recorded trace replayed
//! request by request), the listener's accept queue (`Model::backlog` deep), and requests
//! served by worker threads for their service time, counted as served, refused (queue full)
//! or broken (the worker died mid-request, counted in `procs.rs`). A request's service time
//! is drawn when it arrives, so every policy run on the same seed and load meets the same
//! clients. It owns the accept queue, the replay's place in its trace, the set of workers
//! with an idle thread, and the queue length the machine last heard. It must not talk to the
//! machine: the shell samples the queue's length on every wake-up
//! (`SimOs::backlog_change`), and workers report their own load.

use core::time::Duration;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use drover_machine::Instant;

use super::model::{AcceptOrder, LoadReport};
use super::os::SimOs;
use super::Ev;
use crate::coverage::Mark;
use crate::lab::trace::Trace;

#[derive(Debug, Default)]
pub(super) struct Clients {
    /// The connections waiting in the accept queue, oldest first: when each arrived, and
    /// how long it will hold a thread.
    backlog: VecDeque<(Instant, Duration)>,
    /// Processes accepting with a thread free, by serial.
    idle: BTreeSet<u64>,
    /// The same, by when each last got a thread free (`AcceptOrder::Fifo`).
    idle_order: BTreeSet<(Instant, u64)>,
    idle_at: BTreeMap<u64, Instant>,
    /// The queue length the machine last heard (`Input::Backlog`).
    pub(super) reported: u32,
}

impl Clients {
    pub(super) fn queued(&self) -> u32 {
        self.backlog.len() as u32
    }

    /// The process whose thread takes the next connection, if one has a thread free.
    fn taker(&self, order: AcceptOrder) -> Option<u64> {
        match order {
            AcceptOrder::Lowest => self.idle.first().copied(),
            AcceptOrder::Fifo => self.idle_order.first().map(|&(_, serial)| serial),
        }
    }

    fn set_idle(&mut self, serial: u64, idle: bool, now: Instant) {
        if idle && self.idle.insert(serial) {
            self.idle_order.insert((now, serial));
            self.idle_at.insert(serial, now);
        } else if !idle {
            self.forget(serial);
        }
    }

    /// The process takes no more connections (dead, stopped, hung, draining).
    pub(super) fn forget(&mut self, serial: u64) {
        if self.idle.remove(&serial) {
            if let Some(at) = self.idle_at.remove(&serial) {
                self.idle_order.remove(&(at, serial));
            }
        }
    }
}

/// A recorded trace being replayed: the next request to arrive.
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) trace: Arc<Trace>,
    pub(super) next: usize,
}

impl SimOs {
    pub(super) fn on_arrival(&mut self) {
        let service = match &mut self.replay {
            Some(replay) => {
                let Some(request) = replay.trace.requests.get(replay.next) else {
                    return; // the trace is over: no more clients
                };
                let service = request.service;
                replay.next += 1;
                if let Some(following) = replay.trace.requests.get(replay.next) {
                    let at = Instant::ZERO + following.arrival;
                    self.schedule_at(at, Ev::Arrival);
                }
                service
            }
            None => {
                if self.load_until.is_some_and(|end| self.now >= end) {
                    return; // the measured load is over
                }
                let t = self.now.saturating_since(Instant::ZERO).as_secs_f64();
                let rate = self.load.rate(t, self.load_capacity);
                if rate <= 0.0 {
                    self.schedule(Duration::from_secs(1), Ev::Arrival);
                    return;
                }
                // Re-drawn at every arrival, so a changing rate is followed closely enough.
                let gap = self.rng_load.exp(Duration::from_secs_f64(1.0 / rate));
                self.schedule(gap.min(Duration::from_secs(1)), Ev::Arrival);
                if gap > Duration::from_secs(1) {
                    return; // no arrival this time: the rate is re-evaluated in a second
                }
                self.model.service.draw(&mut self.rng_load)
            }
        };
        let service = service + self.model.request_cost;
        self.stats.arrivals += 1;
        if let Some(serial) = self.clients.taker(self.model.accept) {
            self.begin_request(serial, self.now, service);
            self.update_idle(serial);
        } else if self.clients.backlog.len() < self.model.backlog as usize {
            self.clients.backlog.push_back((self.now, service));
        } else {
            self.stats.refused += 1;
            self.coverage.hit(Mark::ConnectionRefused);
        }
    }

    /// A process takes connections from the queue while it has threads free.
    pub(super) fn start_requests(&mut self, serial: u64) {
        while let Some(p) = self.table.procs.get(&serial) {
            if !(p.accepting && !p.hung && (p.in_flight.len() as u32) < p.threads) {
                break;
            }
            let Some((arrived, service)) = self.clients.backlog.pop_front() else {
                break;
            };
            self.begin_request(serial, arrived, service);
        }
        self.update_idle(serial);
    }

    fn begin_request(&mut self, serial: u64, arrived: Instant, service: Duration) {
        let now = self.now;
        let wait = now.saturating_since(arrived);
        self.stats.queue_waits_us.push(wait.as_micros() as u64);
        let p = self.table.procs.get_mut(&serial).expect("caller checked");
        p.in_flight.push(now);
        self.schedule(service, Ev::RequestDone(serial, now));
        if self.model.load_report == LoadReport::Change {
            self.publish_load(serial);
        }
    }

    fn update_idle(&mut self, serial: u64) {
        let idle = self.table.procs.get(&serial).is_some_and(|p| {
            p.alive() && p.accepting && !p.hung && (p.in_flight.len() as u32) < p.threads
        });
        self.clients.set_idle(serial, idle, self.now);
    }

    pub(super) fn on_request_done(&mut self, serial: u64, started: Instant) {
        let Some(p) = self.table.procs.get_mut(&serial) else {
            return;
        };
        if !p.alive() || p.hung {
            return; // broken (counted at death) or stuck forever
        }
        let Some(i) = p.in_flight.iter().position(|&s| s == started) else {
            return;
        };
        p.in_flight.swap_remove(i);
        p.requests += 1;
        let (draining, drained) = (p.draining, p.in_flight.is_empty());
        self.stats.served += 1;
        if draining {
            if drained {
                self.drained_out(serial);
            }
            return;
        }
        self.start_requests(serial);
        // After the next request is taken, as a worker tells its load once it has settled.
        if self.model.load_report == LoadReport::Change {
            self.publish_load(serial);
        }
    }
}
