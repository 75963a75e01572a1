//! The watchdogs' oracles: boot, heartbeat and request timeouts, `max_requests` and idle
//! retirement, judged by the world's records of each process.

use drover_machine::{Event, StopReason, Supervisor, WorkerId};

use super::Oracle;
use crate::world::os::SimOs;
use crate::world::procs::Proc;

impl SimOs {
    pub(super) fn judge_timeout_event(&mut self, sup: &Supervisor, event: &Event) {
        if let Event::Retiring {
            worker,
            reason: StopReason::BootTimeout,
        } = event
        {
            self.judge_boot_kill(sup, *worker);
        }
    }

    /// The live process of `worker`, by the world's table.
    fn live_proc(&self, worker: WorkerId) -> Option<&Proc> {
        self.table
            .procs
            .values()
            .find(|p| p.worker == Some(worker) && p.alive())
    }

    /// A boot-timeout kill never comes before the fork's answer + `boot_timeout` (the config
    /// in force: the machine reads it so, and a reload may change it).
    fn judge_boot_kill(&mut self, sup: &Supervisor, worker: WorkerId) {
        let Some(proc) = self.live_proc(worker) else {
            return;
        };
        let boot = sup.config().boot_timeout;
        let deadline = proc.forked_at + boot;
        if self.now < deadline {
            let forked = proc.forked_at;
            self.complain(
                Oracle::BootTimeout,
                format!(
                    "{worker} was killed for boot-timeout at {}, but it was forked at {forked} and boot_timeout is {boot:?}: not before {deadline}",
                    self.now
                ),
            );
        }
    }
}
