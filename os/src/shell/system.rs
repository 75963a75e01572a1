//! The driver's `Os`, with real syscalls: fork/exec through the spawner, signals to process
//! groups, `waitpid` with the process-group rule, the successor's start and kill, and the
//! log line of every input and action. Decides nothing: the machine says what to do, and
//! the `Driver` says when to reap.

use drover_machine::trace::{action_line, input_line};
use drover_machine::{
    Action, Event, ExitStatus, Generation, Input, Instant, Os, Pid, Refusal, RollbackReason,
    Signal, SpawnError, StopReason, Supervisor, UpgradeState, WorkerId,
};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal as NixSignal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

use super::{System, REAPED_KEPT};
use crate::guard::{self, Guard};
use crate::settings::describe_config_error;
use crate::spawn::OwnSocket;

impl Os for System {
    fn now(&mut self) -> Instant {
        self.clock()
    }

    fn spawn(
        &mut self,
        _: &Supervisor,
        worker: WorkerId,
        generation: Generation,
    ) -> Result<Pid, SpawnError> {
        let own = self.own_socket(worker)?;
        let own = own.map(|(fd, port)| OwnSocket {
            fd,
            name: (self.settings.listen_per_worker.as_ref()).map_or("", |p| p.name.as_str()),
            port,
        });
        let pipes = self.worker_output.open_pipes().map_err(|e| {
            tracing::warn!("worker output pipes: {e}");
            SpawnError::Resources
        })?;
        let pid = self.spawner.spawn(
            worker,
            generation,
            pipes.as_ref().map(|p| p.child_fds()),
            own,
        )?;
        if let Some(pipes) = pipes {
            self.worker_output.attach(pipes, worker, generation, pid.0);
        }
        self.pids.insert(pid.0, worker);
        if let Some(guard) = &mut self.guard {
            guard.watch(pid.0);
        }
        Ok(pid)
    }

    fn signal(&mut self, _: &Supervisor, _: WorkerId, pid: Pid, signal: Signal, _: StopReason) {
        send(pid, signal, !self.lingering.contains(&pid.0));
    }

    fn start_successor(&mut self, sup: &Supervisor) -> Result<Pid, SpawnError> {
        self.start_successor(sup.generation())
    }

    fn kill_successor(&mut self, _: &Supervisor, pid: Pid, _: RollbackReason) {
        let _ = kill(nix::unistd::Pid::from_raw(pid.0 as i32), NixSignal::SIGKILL);
    }

    fn release_slot(&mut self, _: &Supervisor, slot: u32) {
        self.release_slot_port(slot);
    }

    fn exit(&mut self, _: &Supervisor, code: i32) {
        tracing::debug!(code, "the machine is done");
    }

    fn event(&mut self, sup: &Supervisor, _: Instant, event: Event) {
        match event {
            Event::UpgradeHandover => self.hand_over(sup),
            Event::PoolReady { ready } => {
                if let Some(m) = &self.manager {
                    m.ready(&format!("{ready} workers ready"));
                }
                if let Some(launcher) = self.launcher.take() {
                    launcher.ready();
                }
            }
            // `--daemonize` before the pool was ever ready: the launcher's answer names the
            // last worker exit should the start fail.
            Event::Exited {
                worker,
                status,
                expected: false,
                ..
            } => {
                if let Some(launcher) = &mut self.launcher {
                    launcher.worker_exited(format!(
                        "worker w={worker} exited ({})",
                        status_text(status)
                    ));
                }
            }
            // The machine stops the pool itself (`Restart::fail_start`, on while a launcher
            // waits): the launcher only hears why.
            Event::StartFailed { slot } => {
                if let Some(launcher) = self.launcher.take() {
                    launcher.start_failed(slot);
                }
            }
            Event::AskHandover => self.ask_handover(),
            Event::TookOver { predecessor_gone } => self.take_over(predecessor_gone),
            Event::UpgradeRolledBack { reason } => self.after_rollback(sup, reason),
            // The machine's answer to a reload: its new config is in force from here on,
            // before any spawn of this drain.
            Event::Reloaded { .. } => self.put_reload_in_force(),
            Event::Refused { command, reason } => {
                let why = refusal_text(sup, &reason);
                self.refusals.push(format!("{command} refused: {why}"));
            }
            _ => {}
        }
    }

    fn read_workers(&mut self, _: &Supervisor, now: Instant, into: &mut Vec<Input>) -> bool {
        self.read_board(now, into);
        self.read_notify(now, into)
    }

    fn reap(&mut self, sup: &Supervisor) -> Option<Input> {
        self.reap_one(sup)
    }

    fn handling(&mut self, _: &Supervisor, now: Instant, input: &Input) {
        let line = input_line(now, input);
        match input {
            Input::Tick => tracing::trace!("{line}"),
            Input::Heartbeat { .. }
            | Input::HeartbeatAt { .. }
            | Input::Load { .. }
            | Input::Backlog { .. } => tracing::debug!("{line}"),
            _ => tracing::info!("{line}"),
        }
        if !matches!(input, Input::Tick) {
            self.trace_ring.push(line);
        }
    }

    fn performing(&mut self, _: &Supervisor, now: Instant, action: &Action) {
        let line = action_line(now, action);
        match action {
            Action::Event(Event::Ignored(_)) => tracing::debug!("{line}"),
            Action::Event(Event::Retiring { reason, .. }) if reason.is_failure() => {
                tracing::warn!("{line}")
            }
            Action::Event(Event::Exited {
                expected: false, ..
            })
            | Action::Event(Event::Refused { .. })
            | Action::Event(Event::GaveUp { .. }) => tracing::warn!("{line}"),
            Action::Event(Event::CrashLooping { .. }) => tracing::error!("{line}"),
            _ => tracing::info!("{line}"),
        }
        self.trace_ring.push(line);
    }
}

impl System {
    /// Machine time: the monotonic clock since start-up.
    pub(super) fn clock(&self) -> Instant {
        Instant::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    /// The next child reaped, as the machine's input (see the module docs of the shell).
    ///
    /// A worker is its process group, as a systemd service is its control group: when the
    /// process drover started exits while others of its group still run (a program behind
    /// `sh -c 'a; b'`, the worker's own children), the machine hears `MainExited` (and stops
    /// the rest unless it is stopping the worker already), the worker goes on — its
    /// messages count, the ladder signals the group — until the group is empty, and then
    /// `Exited` (the machine judges it by the main process's status). Drover is their
    /// subreaper, so each exit of them wakes it.
    ///
    /// Other children reaped here (such orphans, a live upgrade successor's orphaned
    /// workers) are no worker and are not the machine's business.
    fn reap_one(&mut self, sup: &Supervisor) -> Option<Input> {
        loop {
            let (pid, status) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitStatus::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitStatus::Signaled(sig as i32)),
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => break, // ECHILD: no children
            };
            let pid = pid.as_raw() as u32;
            if let Some(&worker) = self.pids.get(&pid) {
                if guard::group_alive(pid) {
                    tracing::info!(
                        "worker w={worker} pid={pid} exited ({}) while its process group still runs: the worker ends with the group",
                        status_text(status)
                    );
                    self.lingering.insert(pid);
                    return Some(Input::MainExited {
                        pid: Pid(pid),
                        status,
                    });
                }
                return Some(self.worker_exited(pid, status));
            }
            if self.guard.as_ref().is_some_and(|g| g.pid() == pid) {
                self.replace_guard();
                continue;
            }
            if let UpgradeState::Started { pid: s, .. }
            | UpgradeState::Succeeded { pid: s }
            | UpgradeState::Killing { pid: s } = sup.upgrade_state()
            {
                if s.0 == pid {
                    tracing::info!(pid, ?status, "the live upgrade's successor exited");
                    self.successor = None;
                    return Some(Input::Exited {
                        pid: Pid(pid),
                        status,
                    });
                }
            }
            tracing::debug!(
                "reaped pid {pid} ({}), no worker: a process a worker left behind",
                status_text(status)
            );
        }
        let emptied = self
            .lingering
            .iter()
            .copied()
            .find(|&pgid| !guard::group_alive(pgid))?;
        self.lingering.remove(&emptied);
        // The machine judges a lingering worker's exit by its main process's status
        // (`MainExited`); this one is the group's last word.
        Some(self.worker_exited(emptied, ExitStatus::Code(0)))
    }

    /// The group guard is gone (killed, or it died): a new one takes over every group still
    /// live, so a SIGKILL of drover later still takes its workers' processes with it.
    fn replace_guard(&mut self) {
        if let Some(guard) = &mut self.guard {
            guard.lost();
        }
        self.guard = Guard::start(&self.settings.title);
        if let Some(guard) = &mut self.guard {
            for &pgid in self.pids.keys() {
                guard.watch(pgid);
            }
            tracing::info!("a new group guard (pid {}) took over", guard.pid());
        }
    }

    /// The worker whose group `pid` leads is gone: forget it here, tell the machine.
    fn worker_exited(&mut self, pid: u32, status: ExitStatus) -> Input {
        self.pids.remove(&pid);
        if self.reaped.len() == REAPED_KEPT {
            self.reaped.pop_front();
        }
        self.reaped.push_back(pid);
        if let Some(guard) = &mut self.guard {
            guard.forget(pid);
        }
        self.worker_output.exited(pid);
        Input::Exited {
            pid: Pid(pid),
            status,
        }
    }
}

/// What an operator reads for a refused command.
fn refusal_text(sup: &Supervisor, reason: &Refusal) -> String {
    match reason {
        Refusal::Invalid(e) => describe_config_error(e),
        Refusal::Stopping => "drover is stopping".into(),
        Refusal::UpgradeInFlight => match sup.upgrade_state() {
            UpgradeState::Started { pid, .. } | UpgradeState::Succeeded { pid } => format!(
                "a live upgrade is already in flight (successor pid {pid}); wait until it takes over or rolls back"
            ),
            _ => "a live upgrade is already in flight; wait until it takes over or rolls back"
                .into(),
        },
        Refusal::AwaitingHandover => "this drover is a live upgrade's successor still waiting for its predecessor to hand over".into(),
        Refusal::OutOfBounds { min, max } => {
            format!("the pool size must stay within {min}..={max}")
        }
        other => other.to_string(),
    }
}

/// Sends `signal` to the worker's process group (the worker runs in its own group, so a
/// program behind `sh -c` gets it too), or to the pid if the group is gone and the process
/// is not yet reaped (a program that moved to a group of its own).
fn send(pid: Pid, signal: Signal, unreaped: bool) {
    let sig = match signal {
        Signal::Term => NixSignal::SIGTERM,
        Signal::Int => NixSignal::SIGINT,
        Signal::Quit => NixSignal::SIGQUIT,
        Signal::Hup => NixSignal::SIGHUP,
        Signal::Usr1 => NixSignal::SIGUSR1,
        Signal::Usr2 => NixSignal::SIGUSR2,
        Signal::Abrt => NixSignal::SIGABRT,
        Signal::Winch => NixSignal::SIGWINCH,
        Signal::Kill => NixSignal::SIGKILL,
    };
    let raw = pid.0 as i32;
    // While the main process is unreaped it holds the group's number; after that, the group
    // may have emptied unseen and its number gone to a stranger (`guard::group_alive`).
    if !unreaped && !guard::group_alive(pid.0) {
        tracing::debug!(
            "group {raw} has no process of drover's left: {} not sent",
            signal.name()
        );
        return;
    }
    if kill(nix::unistd::Pid::from_raw(-raw), sig).is_err() && unreaped {
        if let Err(e) = kill(nix::unistd::Pid::from_raw(raw), sig) {
            tracing::debug!("kill({raw}, {}): {e}", signal.name());
        }
    }
}

pub(super) fn status_text(status: ExitStatus) -> String {
    match status {
        ExitStatus::Code(c) => format!("exit code {c}"),
        ExitStatus::Signaled(s) => format!("signal {s}"),
    }
}
