//! The whole state as text, for the post-mortem of a stuck pool (`drover dump`, as
//! serverengine's sigdump): the pool-wide facts, every deadline source, the death and
//! quick-restart windows, the upgrade, then every slot with its worker, ladder and
//! deadline. Times are machine instants (seconds since the driver's epoch, as in the
//! trace), so a dump reads beside the trace lines before it. Only reads.

use core::fmt::Write;

use super::slot::SlotState;
use super::timers::Timer;
use super::Supervisor;
use crate::time::Secs;

impl Supervisor {
    /// A readable multi-line rendering of the whole state: one `key: value` line per fact,
    /// a `slot N:` block per slot (empty slots in one line). O(slots).
    pub fn dump(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.dump_into(&mut out);
        out
    }

    fn dump_into(&self, out: &mut String) -> core::fmt::Result {
        let c = &self.config;
        writeln!(out, "now: {}", self.now)?;
        writeln!(out, "phase: {:?}", self.phase)?;
        writeln!(out, "generation: {}", self.generation.0)?;
        writeln!(out, "policy: {:?}", c.policy)?;
        writeln!(
            out,
            "target: {}  ready: {}  live: {}  spawning: {}  idle threads: {}",
            self.target,
            self.counts.ready,
            self.counts.live,
            self.counts.spawning,
            self.counts.idle_threads
        )?;
        writeln!(
            out,
            "slots: {} (refilled below {})",
            self.slots.len(),
            self.slot_limit
        )?;
        if c.slot_addresses {
            let open: Vec<String> = self.addressed.iter().map(u32::to_string).collect();
            writeln!(
                out,
                "slot addresses: open for slots [{}]; released when empty at or above the target",
                open.join(", ")
            )?;
        }
        writeln!(out, "spawn ramp: {}", self.spawn_rate)?;
        writeln!(out, "upgrade: {:?}", self.upgrade)?;
        writeln!(out, "succession: {:?}", self.succession)?;
        writeln!(out, "pool ready announced: {}", self.announced)?;
        writeln!(out, "exit code: {:?}", self.exit_code)?;
        writeln!(out, "crash looping: {}", self.crash_looping)?;
        let deaths: Vec<String> = self.deaths.iter().map(|t| t.to_string()).collect();
        writeln!(
            out,
            "death window ({} deaths in {} count): [{}]",
            c.restart.intensity_deaths,
            Secs(c.restart.intensity_window),
            deaths.join(", ")
        )?;
        let quick: Vec<String> = self.quick.iter().map(|t| t.to_string()).collect();
        writeln!(
            out,
            "quick refills booked (at most {} a second): [{}]",
            c.restart.quick_restart_rate,
            quick.join(", ")
        )?;
        writeln!(out, "back from an absence at: {}", self.back_at)?;
        let backlog: Vec<String> = self
            .backlog
            .iter()
            .map(|(l, q)| format!("listener {l}: {q}"))
            .collect();
        writeln!(out, "accept queues: [{}]", backlog.join(", "))?;
        writeln!(out, "rollout held: {}", self.rollout_held)?;
        for timer in Timer::ALL {
            match self.deadline(timer) {
                Some(at) => writeln!(out, "timer {timer:?}: {at}")?,
                None => writeln!(out, "timer {timer:?}: off")?,
            }
        }
        match self.next_maintenance {
            Some(at) => writeln!(out, "maintenance grid: next at {at}")?,
            None => writeln!(out, "maintenance grid: off")?,
        }
        writeln!(
            out,
            "next wake-up: {:?}",
            self.poll_timeout().map(|t| t.to_string())
        )?;
        writeln!(out, "queued actions: {}", self.queue.len())?;
        for (i, slot) in self.slots.iter().enumerate() {
            let common = format!(
                "incarnation {}, young deaths {}, restarts {}, last stop {}, deadline {}",
                slot.incarnation,
                slot.young_deaths,
                slot.restarts,
                slot.last_stop.map_or("-", |r| r.name()),
                slot.deadline
                    .map_or_else(|| "-".to_string(), |d| d.to_string()),
            );
            match &slot.state {
                SlotState::Empty => writeln!(out, "slot {i}: empty; {common}")?,
                SlotState::Backoff { generation, until } => writeln!(
                    out,
                    "slot {i}: backoff until {until} (generation {}); {common}",
                    generation.0
                )?,
                SlotState::GaveUp { generation, code } => writeln!(
                    out,
                    "slot {i}: gave up after exit code {code} (generation {}); {common}",
                    generation.0
                )?,
                SlotState::Worker(w) => {
                    writeln!(out, "slot {i}: worker; {common}")?;
                    writeln!(
                        out,
                        "  pid {}, generation {}, fork handed out {}, spawned at {}, ready {}",
                        w.pid.map_or_else(|| "-".to_string(), |p| p.0.to_string()),
                        w.generation.0,
                        w.fork_handed_out,
                        w.spawned_at,
                        w.ready
                    )?;
                    writeln!(
                        out,
                        "  heartbeat: last {}, seen {}, timeout {}, gap {}, pace {}",
                        w.last_heartbeat,
                        w.beat_seen,
                        w.heartbeat_timeout
                            .map_or_else(|| "off".to_string(), |d| Secs(d).to_string()),
                        w.beat_gap
                            .map_or_else(|| "-".to_string(), |d| Secs(d).to_string()),
                        w.beat_pace
                            .map_or_else(|| "-".to_string(), |d| Secs(d).to_string()),
                    )?;
                    writeln!(
                        out,
                        "  load: reported {}, busy {}, oldest busy since {}, idle since {}, requests {} (limit {})",
                        w.load_seen,
                        w.busy,
                        w.oldest_busy_since.map_or_else(|| "-".to_string(), |t| t.to_string()),
                        w.idle_since.map_or_else(|| "-".to_string(), |t| t.to_string()),
                        w.requests,
                        w.request_limit.map_or_else(|| "none".to_string(), |l| l.to_string()),
                    )?;
                    if let Some(status) = w.main_status {
                        writeln!(out, "  main process exited: {status}")?;
                    }
                    if let Some(stop) = &w.stop {
                        let pos = match &stop.pos {
                            Some(p) => format!(
                                "stage {} since {}, {} sent, next {}, KILL at {}",
                                p.stage,
                                p.stage_start,
                                p.sent,
                                p.next.map_or_else(|| "-".to_string(), |t| t.to_string()),
                                p.kill_at(&stop.ladder)
                            ),
                            None => "not entered (no pid yet)".to_string(),
                        };
                        writeln!(
                            out,
                            "  stopping: {}, immediate {}, ladder {pos}",
                            stop.reason, stop.immediate
                        )?;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, Input, Instant, Pid, Supervisor};

    #[test]
    fn a_dump_names_every_slot_and_its_worker() {
        let mut sup = Supervisor::new(Config::static_pool(2), Instant::ZERO).unwrap();
        let mut pid = 100;
        while let Some(action) = sup.poll_action() {
            if let crate::Action::Spawn { worker, .. } = action {
                pid += 1;
                sup.handle(
                    Instant::ZERO,
                    Input::Spawned {
                        worker,
                        pid: Pid(pid),
                    },
                );
            }
        }
        let dump = sup.dump();
        assert!(dump.contains("phase: Running"), "{dump}");
        assert!(dump.contains("slot 0: worker"), "{dump}");
        assert!(dump.contains("pid 101, generation 1"), "{dump}");
        assert!(dump.contains("slot 2: empty"), "{dump}");
        assert!(dump.contains("timer Slot:"), "{dump}");
    }
}
