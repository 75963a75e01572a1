//! Clients: Poisson arrivals at the load model's rate, the listener's 128-deep accept queue,
//! and requests served by worker threads (200 ms mean), counted as served, refused (queue
//! full) or broken (the worker died mid-request, counted in `procs.rs`). It owns the
//! accept queue, the set of workers with an idle thread, and the queue length the machine
//! last heard. It must not talk to the machine: the shell samples the queue's length on
//! every wake-up (`SimOs::backlog_change`), and workers report their own load.

use core::time::Duration;
use std::collections::{BTreeSet, VecDeque};

use drover_machine::Instant;

use super::os::SimOs;
use super::Ev;
use crate::coverage::Mark;

/// Mean service time of one request.
pub(super) const REQUEST_MEAN: Duration = Duration::from_millis(200);
/// Connections the listener's accept queue holds before refusing.
const BACKLOG: usize = 128;

#[derive(Debug, Default)]
pub(super) struct Clients {
    /// Arrival times of the connections waiting in the accept queue, oldest first.
    backlog: VecDeque<Instant>,
    /// Processes accepting with a thread free, by serial (the lowest takes the next client).
    pub(super) idle: BTreeSet<u64>,
    /// The queue length the machine last heard (`Input::Backlog`).
    pub(super) reported: u32,
}

impl Clients {
    pub(super) fn queued(&self) -> u32 {
        self.backlog.len() as u32
    }
}

impl SimOs {
    /// Requests per second the pool serves at its largest.
    pub(super) fn capacity(&self) -> f64 {
        f64::from(self.config.policy.max()) * f64::from(self.config.threads)
            / REQUEST_MEAN.as_secs_f64()
    }

    pub(super) fn on_arrival(&mut self) {
        let t = self.now.saturating_since(Instant::ZERO).as_secs_f64();
        let rate = self.load.rate(t, self.capacity());
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
        self.stats.arrivals += 1;
        if let Some(&serial) = self.clients.idle.first() {
            self.begin_request(serial, self.now);
            self.update_idle(serial);
        } else if self.clients.backlog.len() < BACKLOG {
            self.clients.backlog.push_back(self.now);
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
            let Some(arrived) = self.clients.backlog.pop_front() else {
                break;
            };
            self.begin_request(serial, arrived);
        }
        self.update_idle(serial);
    }

    fn begin_request(&mut self, serial: u64, arrived: Instant) {
        let now = self.now;
        let wait = now.saturating_since(arrived);
        self.stats.queue_waits_us.push(wait.as_micros() as u64);
        let d = self.rng_load.exp(REQUEST_MEAN);
        let p = self.table.procs.get_mut(&serial).expect("caller checked");
        p.in_flight.push(now);
        self.schedule(d, Ev::RequestDone(serial, now));
    }

    fn update_idle(&mut self, serial: u64) {
        let idle = self.table.procs.get(&serial).is_some_and(|p| {
            p.alive() && p.accepting && !p.hung && (p.in_flight.len() as u32) < p.threads
        });
        if idle {
            self.clients.idle.insert(serial);
        } else {
            self.clients.idle.remove(&serial);
        }
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
        self.stats.served += 1;
        if p.draining {
            if p.in_flight.is_empty() {
                self.drained_out(serial);
            }
            return;
        }
        self.start_requests(serial);
    }
}
