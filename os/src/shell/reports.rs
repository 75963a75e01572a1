//! What the workers report, read on every wake-up for the driver's one `handle_all`: the
//! embedded workers' shared-memory report board and the notify socket's datagrams
//! (sd_notify `READY=1`, `WATCHDOG=1`, `X_DROVER_LOAD=`). Turns them into inputs dated as
//! the kernel or the worker dated them; never judges them (a late heartbeat is the
//! machine's business).

use drover_machine::{Input, Instant};

use super::{System, NOTIFY_READ_MAX};
use crate::board::{Report, DOORBELL};
use crate::notify::{self, Notice};

impl System {
    /// What embedded workers published on the report board since the last read: a newer
    /// heartbeat stamp as `HeartbeatAt` (the watchdog counts from the stamp), a changed
    /// load as `Load`. Arms the doorbell first, so a load change published after this read
    /// wakes the next sleep.
    pub(super) fn read_board(&mut self, now: Instant, inputs: &mut Vec<Input>) {
        let Some(board) = self.spawner.board() else {
            return;
        };
        board.arm();
        for &worker in self.pids.values() {
            let Some(report) = board.read(worker) else {
                continue;
            };
            let seen = self
                .reports_seen
                .get(&worker.slot)
                .filter(|(incarnation, _)| *incarnation == worker.incarnation)
                .map(|(_, r)| *r);
            if seen == Some(report) {
                continue;
            }
            self.reports_seen
                .insert(worker.slot, (worker.incarnation, report));
            let new_beat = seen.is_none_or(|s| s.beat_usec != report.beat_usec);
            // Fed whether or not the config in force has a watchdog: each worker is held to
            // the one it was started with (a reload may have turned it off or on since).
            if report.beat_usec != 0 && new_beat {
                inputs.push(Input::HeartbeatAt {
                    worker,
                    at: notify::busy_since(now, report.beat_usec),
                });
            }
            let load = |r: &Report| (r.busy, r.busy_since_usec, r.requests);
            if seen.is_none_or(|s| load(&s) != load(&report)) {
                inputs.push(Input::Load {
                    worker,
                    busy: report.busy,
                    oldest_busy_since: report.busy_since_usec.map(|t| notify::busy_since(now, t)),
                    requests: report.requests,
                });
            }
        }
    }

    /// The datagrams queued on the notify socket, as inputs; false if the read stopped at
    /// its bound with datagrams left. A heartbeat counts from its arrival (the kernel's
    /// stamp), which may be well before now while the machine lets messages wait
    /// (`messages_due`); clamped to when the socket was last read empty, so a wall-clock
    /// step cannot date a beat earlier than it can have come.
    pub(super) fn read_notify(&mut self, now: Instant, inputs: &mut Vec<Input>) -> bool {
        // Bounded per wake-up so a flood cannot starve signals and timers.
        for _ in 0..NOTIFY_READ_MAX {
            let Some(dgram) = self.notify.recv() else {
                self.notify_empty_at = now;
                return true;
            };
            let Some(pid) = dgram.pid else {
                tracing::warn!("notify: message without sender credentials; ignored");
                continue;
            };
            let pids = &self.pids;
            let Some(worker) = notify::find_worker(pid, |p| pids.contains_key(&p))
                .and_then(|p| pids.get(&p).copied())
            else {
                // A worker's last words (STOPPING=1) often arrive after it was reaped.
                if self.reaped.contains(&pid) {
                    tracing::debug!(
                        "notify: message from pid {pid}, a worker already reaped; ignored"
                    );
                } else {
                    tracing::warn!(
                        "notify: message from pid {pid}, which is no worker of this drover; ignored"
                    );
                }
                continue;
            };
            let notices = match dgram.text.and_then(|t| notify::parse(&t)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(
                        "notify: malformed message from w={worker} pid={pid}: {e}; ignored"
                    );
                    continue;
                }
            };
            let arrived = Instant::from_nanos(
                now.as_nanos()
                    .saturating_sub(u64::try_from(dgram.age.as_nanos()).unwrap_or(u64::MAX)),
            )
            .max(self.notify_empty_at);
            for notice in notices {
                match notice {
                    Notice::Ready => inputs.push(Input::Ready { worker }),
                    Notice::Watchdog => inputs.push(Input::HeartbeatAt {
                        worker,
                        at: arrived,
                    }),
                    Notice::Status(s) => tracing::info!("worker w={worker} pid={pid} status: {s}"),
                    Notice::Stopping => tracing::info!("worker w={worker} pid={pid} is stopping"),
                    Notice::Load {
                        busy,
                        requests,
                        busy_since_usec,
                    } => inputs.push(Input::Load {
                        worker,
                        busy,
                        oldest_busy_since: busy_since_usec.map(|t| notify::busy_since(now, t)),
                        requests,
                    }),
                    // The board's doorbell only wakes the loop up, which reads the board
                    // first thing (the worker published before it rang).
                    Notice::Other(s) if s == DOORBELL => {}
                    Notice::Other(s) => {
                        tracing::debug!("notify: w={worker} pid={pid} sent {s}; ignored")
                    }
                }
            }
        }
        false
    }
}
