//! The live upgrade, both sides. As the predecessor: start the successor with the
//! listeners and a channel, and on the machine's `UpgradeHandover` give it the shared paths
//! (pid file, control socket, socket files) and `MAINPID=`; on a rollback take them back.
//! As the successor: say `ready` once settled, take the paths over at `takeover` (or when
//! the predecessor is gone). When to hand over or roll back is the machine's decision.

use std::os::fd::AsRawFd;

use drover_machine::{
    Command, Generation, Input, Pid, RollbackReason, SpawnError, Supervisor, UpgradeState,
};
use nix::sys::signal::{kill, Signal as NixSignal};
use serde_json::json;

use super::{Control, Role, Shell, System};
use crate::control::{self, ControlServer};
use crate::pidfile::PidFile;
use crate::upgrade::{self, Channel, Message};

impl Shell {
    /// USR2 or `drover upgrade`. Returns what happens now, for the log or the client.
    pub(super) fn request_upgrade(&mut self) -> Result<String, String> {
        match self.driver.os().role {
            Role::Supervised => {
                // The parent holds the sockets and replaces this drover side by side; a
                // successor of our own would look like our exit to it.
                let parent = nix::unistd::getppid();
                kill(parent, NixSignal::SIGUSR2).map_err(|e| {
                    format!(
                        "upgrade refused: cannot signal the supervising drover (pid {parent}): {e}"
                    )
                })?;
                Ok(format!(
                    "delegated to the supervising drover (pid {parent}): it starts a new drover and retires this one once the new one is ready"
                ))
            }
            Role::Primary | Role::Successor => {
                self.command(Command::Upgrade)?;
                match self.sup().upgrade_state() {
                    UpgradeState::Started { pid, .. } => Ok(format!(
                        "successor pid {pid} started; it takes over once its workers are ready"
                    )),
                    _ => Err("upgrade failed: the successor could not be started; this drover keeps serving".into()),
                }
            }
        }
    }

    pub(super) fn on_upgrade_channel(&mut self) {
        let sys = self.sys();
        if let Some(channel) = &mut sys.successor {
            let got = channel.receive();
            for line in &got.garbage {
                tracing::warn!("upgrade channel: the successor sent {line:?}; ignored");
            }
            if got.closed {
                // Its exit arrives through waitpid; stop polling a closed socket.
                sys.successor = None;
            }
            for message in got.messages {
                match message {
                    Message::Ready => self.driver.feed(Input::SuccessorReady),
                    Message::Takeover => {
                        tracing::warn!("upgrade channel: the successor sent takeover; ignored")
                    }
                }
            }
        } else if let Some(channel) = &mut sys.predecessor {
            let got = channel.receive();
            for line in &got.garbage {
                tracing::warn!("upgrade channel: the predecessor sent {line:?}; ignored");
            }
            let takeover = got.messages.contains(&Message::Takeover);
            if got.closed {
                sys.predecessor = None;
            }
            if takeover || (got.closed && matches!(sys.role, Role::Successor)) {
                self.driver.feed(Input::Takeover {
                    predecessor_gone: !takeover,
                });
            }
        }
    }
}

impl System {
    /// The machine's `AskHandover`: this successor's pool is ready.
    pub(super) fn ask_handover(&mut self) {
        tracing::info!("pool ready: asking the predecessor to hand over");
        if let Some(channel) = &mut self.predecessor {
            channel.send(Message::Ready);
        }
    }

    pub(super) fn start_successor(&mut self, generation: Generation) -> Result<Pid, SpawnError> {
        let Some(relaunch) = &self.relaunch else {
            tracing::error!("live upgrade: cannot tell which program to start (no path to this binary); set upgrade_command");
            return Err(SpawnError::Exec);
        };
        let errno = |e: std::io::Error| SpawnError::Other(e.raw_os_error().unwrap_or(libc::EIO));
        let (channel, theirs) = Channel::pair().map_err(errno)?;
        // The per-worker ports go along, named NAME.SLOT: the successor's workers accept on
        // the very sockets, so no connection to a slot's port is refused meanwhile.
        let slot_sockets = self.slot_ports.handed_over(&self.settings);
        let at = 3 + self.listeners.list.len() + slot_sockets.len();
        let started = self.spawner.spawn_successor(
            &relaunch.program,
            &relaunch.argv,
            &[
                (upgrade::UPGRADE_FD_VAR, at.to_string()),
                (upgrade::GENERATION_VAR, generation.0.to_string()),
            ],
            &slot_sockets,
            theirs.as_raw_fd(),
        );
        match started {
            Ok(pid) => {
                tracing::info!(
                    "live upgrade: started successor pid {pid}: {}",
                    relaunch.describe()
                );
                self.successor = Some(channel);
                if let Some(m) = &self.manager {
                    m.reloading(&format!("live upgrade: successor pid {pid} starting"));
                }
                Ok(pid)
            }
            Err(e) => {
                tracing::error!("live upgrade: cannot start {}: {e:?}", relaunch.describe());
                Err(e)
            }
        }
    }

    /// The successor's side of the handover (the machine's `TookOver`): the shared paths
    /// are ours from now on.
    pub(super) fn take_over(&mut self, predecessor_gone: bool) {
        if predecessor_gone {
            tracing::warn!("the predecessor is gone before it handed over; taking over");
        } else {
            tracing::info!("the predecessor handed over: this drover is in charge");
        }
        self.role = Role::Primary;
        self.listeners.owns_files = true;
        if let Some(path) = &self.settings.pid_file {
            match PidFile::take_over(path) {
                Ok(file) => self.pid_file = Some(file),
                Err(e) => tracing::error!("cannot take the pid file over: {e}"),
            }
        }
        self.install_control();
        self.serve_metrics();
    }

    pub(super) fn install_control(&mut self) {
        if let Some(control) = &mut self.control {
            if let Err(e) = control.0.install() {
                tracing::error!("{e}; the control socket stays where it was bound");
            }
        }
        self.serving_control = true;
    }

    /// The predecessor's side: the successor is Ready; from now on it answers on every
    /// shared path while this drover drains its workers and exits.
    pub(super) fn hand_over(&mut self, sup: &Supervisor) {
        let UpgradeState::Succeeded { pid } = sup.upgrade_state() else {
            return;
        };
        tracing::info!("live upgrade: successor pid {pid} is ready; handing over and draining");
        if let Some(m) = &self.manager {
            m.main_pid(pid.0);
        }
        self.listeners.owns_files = false;
        self.serving_control = false;
        // A predecessor whose workers drain fast could exit before the successor renames
        // its socket onto the path: removing ours then would leave no socket at all.
        if let Some(control) = &mut self.control {
            control.0.disown();
        }
        // Before the successor hears it: it binds the metrics address at its takeover.
        if let Some(metrics) = &mut self.metrics {
            metrics.stop_listening();
        }
        // Before the successor hears it: if it cannot make a pid file of its own, it takes
        // this one over in place.
        if let Some(file) = self.pid_file.take() {
            file.release();
        }
        if let Some(channel) = &mut self.successor {
            channel.send(Message::Takeover);
        }
        let answer = json!({
            "ok": true,
            "command": "upgrade",
            "successor_pid": pid.0,
            "message": format!(
                "successor pid {pid} took over; drover pid {} drains its workers and exits",
                std::process::id()
            ),
        });
        for waiter in std::mem::take(&mut self.upgrade_waiters) {
            self.answer_control(waiter, &answer);
        }
    }

    /// The upgrade was abandoned (the machine says why in its event line); if the handover
    /// had happened, the shared paths come back to this drover.
    pub(super) fn after_rollback(&mut self, sup: &Supervisor, reason: RollbackReason) {
        let why = match reason {
            RollbackReason::SuccessorFailedToStart => "the successor could not be started".into(),
            RollbackReason::SuccessorExited if !self.serving_control => {
                "the successor exited during the handover".into()
            }
            RollbackReason::SuccessorExited => "the successor exited before it was ready".into(),
            RollbackReason::Timeout => format!(
                "the successor was not ready within upgrade_timeout ({} s) and was killed",
                sup.config().upgrade_timeout.as_secs_f64()
            ),
            RollbackReason::Stopped => {
                "a stop was requested during the upgrade; the successor was killed".into()
            }
            other => other.to_string(),
        };
        let message = format!(
            "live upgrade rolled back: {why}; drover pid {} keeps serving with its workers",
            std::process::id()
        );
        tracing::error!("{message}");
        for waiter in std::mem::take(&mut self.upgrade_waiters) {
            self.answer_control(waiter, &control::error(&message));
        }
        if !self.serving_control {
            self.take_paths_back();
        }
    }

    /// After a rollback past the handover: pid file, socket files and control socket are
    /// this drover's again, and the service manager hears our pid.
    fn take_paths_back(&mut self) {
        self.listeners.owns_files = true;
        if let Some(path) = &self.settings.pid_file {
            match PidFile::take_over(path) {
                Ok(file) => self.pid_file = Some(file),
                Err(e) => tracing::error!("cannot take the pid file back: {e}"),
            }
        }
        if let Some(path) = self.control.as_ref().map(|c| c.0.path.clone()) {
            match ControlServer::bind_beside(&path) {
                Ok(server) => self.control = Some(Control(server)),
                Err(e) => tracing::error!("cannot rebind the control socket: {e}"),
            }
        }
        self.install_control();
        self.serve_metrics();
        if let Some(m) = &self.manager {
            m.main_pid(std::process::id());
        }
    }
}
