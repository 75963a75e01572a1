//! What the shell tells about the pool without changing it: the metrics (`drover metrics`,
//! `GET /metrics` on `--metrics-listen`), the dump of the machine's whole state with the
//! last trace lines (`drover dump`), and the ring of trace lines kept for it. Owns no
//! decision: the counters are the machine's, and serving a scrape never blocks the loop
//! (see `metrics::http`).

use std::collections::VecDeque;

use super::{Role, Shell, System};
use crate::metrics::{self, ShellFacts};

/// Trace lines kept for a dump: a few minutes of a busy pool's decisions, a few hundred
/// KiB at most.
pub(super) const TRACE_KEPT: usize = 500;

/// The last `TRACE_KEPT` machine trace lines (inputs and actions; ticks left out), kept
/// whatever the log level.
#[derive(Default)]
pub(super) struct TraceRing {
    lines: VecDeque<String>,
}

impl TraceRing {
    pub(super) fn push(&mut self, line: String) {
        if self.lines.len() == TRACE_KEPT {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
}

impl Shell {
    /// One turn of the metrics endpoint: what the poll found ready, then the text for the
    /// scrapes that asked (rendered once for all of them).
    pub(super) fn on_metrics(&mut self, ready: &[bool]) {
        let Some(server) = self.sys().metrics.as_mut() else {
            return;
        };
        if server.service(ready) {
            let text = self.metrics_text();
            if let Some(server) = self.sys().metrics.as_mut() {
                server.answer(&text);
            }
        }
    }

    /// The Prometheus text exposition of the pool now.
    pub(super) fn metrics_text(&self) -> String {
        let sys = self.driver.os();
        let facts = ShellFacts {
            accept_queues: sys
                .listeners
                .list
                .iter()
                .map(|l| {
                    let name = if l.spec.name.is_empty() {
                        l.local.clone()
                    } else {
                        l.spec.name.clone()
                    };
                    (name, l.accept_queue())
                })
                .collect(),
            wakeups: sys.wakeups,
            started_unix: sys.started_unix,
            role: match sys.role {
                Role::Primary => "primary",
                Role::Successor => "successor",
                Role::Supervised => "supervised",
            },
            worker_ports: sys.slot_ports.open_ports(&sys.settings).collect(),
        };
        metrics::render(self.sup(), &facts)
    }

    /// Writes the machine's whole state and the kept trace lines to drover's log (at warn
    /// level, one log line each, prefixed `dump:`), for the post-mortem of a stuck pool.
    /// Returns how many state and trace lines were written.
    pub(super) fn dump(&mut self) -> (usize, usize) {
        let state = self.sup().dump();
        let sys = self.driver.os();
        let trace = &sys.trace_ring.lines;
        tracing::warn!(
            "dump: the machine's state ({} lines), then its last {} trace lines",
            state.lines().count(),
            trace.len()
        );
        for line in state.lines() {
            tracing::warn!("dump: {line}");
        }
        tracing::warn!("dump: last {} trace lines, oldest first", trace.len());
        for line in trace {
            tracing::warn!("dump: {line}");
        }
        tracing::warn!("dump: end");
        (state.lines().count(), trace.len())
    }
}

impl System {
    /// Binds the metrics address when this drover comes to serve it: at start for a
    /// primary or supervised drover, at the takeover for a successor, after a rollback past
    /// the handover for a predecessor.
    pub(super) fn serve_metrics(&mut self) {
        if let Some(server) = &mut self.metrics {
            server.start_listening();
        }
    }
}
