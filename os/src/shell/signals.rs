//! Signals to drover and the reload they (or the control socket) ask for: each signal
//! becomes a command for the machine, HUP re-reads the config file and stages it for the
//! machine's answer, and the listener set of a reloaded config is opened before any old
//! socket closes. Whether a reload is accepted is the machine's answer (`Reloaded` or
//! `Refused`), never the shell's guess.

use std::os::fd::{AsFd, AsRawFd};

use drover_machine::{Command, Input};
use nix::sys::signal::{kill, Signal as NixSignal};
use signal_hook::consts::signal::*;

use super::{Shell, StagedReload, System};
use crate::listen::{self, Listener};
use crate::settings::Settings;
use crate::spawn::WorkerSpec;
use crate::upgrade::Relaunch;

impl Shell {
    pub(super) fn on_signals(&mut self) {
        let pending: Vec<i32> = self.sys().signals.pending().collect();
        for sig in pending {
            // Before the reload (or, under --supervise, before passing HUP on): logrotate's
            // `kill -HUP` must find the new file in use as soon as possible.
            if sig == SIGHUP {
                match crate::log::reopen() {
                    Ok(what) => tracing::info!("SIGHUP: {what}"),
                    Err(e) => tracing::error!("SIGHUP: {e}"),
                }
            }
            if self.driver.os().args.supervise && self.on_signal_supervising(sig) {
                continue;
            }
            let command = match sig {
                SIGTERM | SIGINT => Some(Command::Stop),
                SIGQUIT => Some(Command::StopNow),
                SIGUSR1 => Some(Command::Restart),
                SIGTTIN => Some(Command::ScaleUp),
                SIGTTOU => Some(Command::ScaleDown),
                SIGHUP => {
                    tracing::info!("SIGHUP: reloading the config file");
                    if let Err(e) = self.reload() {
                        tracing::error!("reload failed, the running config stays: {e}");
                    }
                    None
                }
                SIGUSR2 => {
                    tracing::info!("signal USR2: live upgrade");
                    match self.request_upgrade() {
                        Ok(what) => tracing::info!("{what}"),
                        Err(e) => tracing::error!("{e}"),
                    }
                    None
                }
                _ => None, // SIGCHLD: every turn reaps
            };
            if let Some(command) = command {
                tracing::info!("signal {}: {}", signal_name(sig), command.name());
                self.driver.feed(Input::Command(command));
            }
        }
    }

    /// `--supervise`: USR2 replaces the supervised drover side by side; what concerns its
    /// workers goes to it. Returns false for the signals handled as by any drover.
    fn on_signal_supervising(&mut self, sig: i32) -> bool {
        match sig {
            SIGUSR2 => {
                tracing::info!("signal USR2: replacing the supervised drover side by side");
                if let Err(refusals) = self.command(Command::Restart) {
                    tracing::error!("{refusals}");
                }
                true
            }
            SIGUSR1 | SIGHUP | SIGTTIN | SIGTTOU => {
                let sig = NixSignal::try_from(sig).expect("a handled signal");
                for &pid in self.driver.os().pids.keys() {
                    tracing::info!(
                        "signal {}: passed on to the supervised drover pid {pid}",
                        sig.as_str()
                    );
                    let _ = kill(nix::unistd::Pid::from_raw(pid as i32), sig);
                }
                true
            }
            _ => false,
        }
    }

    /// Feeds an operator command; the machine's refusals, if any, as one message.
    pub(super) fn command(&mut self, command: Command) -> Result<(), String> {
        self.sys().refusals.clear();
        self.driver.feed(Input::Command(command));
        match self.sys().refusals.is_empty() {
            true => Ok(()),
            false => Err(self.sys().refusals.join("; ")),
        }
    }

    /// Re-reads the config file, applies the same flags on top, and hands the result to the
    /// machine. New listeners are opened before any old one closes; the unchanged ones are
    /// the same sockets (no connection waiting in their queues is lost). Returns the
    /// warnings (an address that could not be bound keeps its running socket).
    pub(super) fn reload(&mut self) -> Result<Vec<String>, String> {
        let sys = self.sys();
        let new = Settings::load(&sys.args).map_err(|e| e.0)?;
        let (listeners, mut warnings) = match new.listen != sys.settings.listen {
            true => {
                let (list, warnings) = sys.open_new_listeners(&new)?;
                (Some(list), warnings)
            }
            false => (None, Vec::new()),
        };
        for warning in sys.settings.restart_only_changes(&new) {
            tracing::warn!("reload: {warning}");
            warnings.push(warning);
        }
        let config = new.machine.clone();
        sys.staged_reload = Some(StagedReload {
            settings: new,
            listeners,
        });
        let answer = self.command(Command::Reload(Box::new(config)));
        // Refused: the staged listeners were never used; their new socket files go.
        if let Some(staged) = self.sys().staged_reload.take() {
            let fresh: Vec<Listener> = staged
                .listeners
                .into_iter()
                .flatten()
                .filter(|l| {
                    !self
                        .driver
                        .os()
                        .listeners
                        .list
                        .iter()
                        .any(|o| o.unix_path == l.unix_path)
                })
                .collect();
            listen::remove_unix_files(&fresh);
        }
        answer.map(|()| warnings)
    }
}

impl System {
    /// The machine accepted the staged reload (its `Reloaded` event, which comes before
    /// the drain's first spawn): new workers run the new command on the new listeners, and
    /// the service manager hears RELOADING=1 now (and READY=1 when the machine says the pool
    /// is ready again).
    pub(super) fn put_reload_in_force(&mut self) {
        let Some(staged) = self.staged_reload.take() else {
            return; // a rolling restart or a scale command: nothing staged
        };
        if let Some(m) = &self.manager {
            m.reloading("reloading the config file");
        }
        let new = staged.settings;
        self.spawner.spec = WorkerSpec::new(&new);
        if let Some(list) = staged.listeners {
            self.swap_listeners(list);
        }
        if new.process.notify_owner != self.settings.process.notify_owner {
            let owner = new.process.notify_owner.as_ref();
            if let Err(e) = self.runtime_dir.hand_to(owner.filter(|c| c.needed())) {
                tracing::error!("reload: {e}; workers of the new --user cannot send notifications");
            }
        }
        // drop_privileges stays as it was (a restart-only key).
        let dropped = self.settings.process.drop_privileges;
        self.settings.process = new.process;
        self.settings.process.drop_privileges = dropped;
        self.settings.listen = new.listen;
        self.settings.command = new.command;
        self.settings.program = new.program;
        self.settings.title = new.title;
        self.settings.machine = new.machine;
        // The next live upgrade starts the program the config now names.
        if new.upgrade_command != self.settings.upgrade_command
            || new.upgrade_program != self.settings.upgrade_program
        {
            self.relaunch = match &new.upgrade_command {
                Some(command) => Relaunch::command(command, &new.upgrade_program),
                None => Relaunch::current(),
            };
            self.settings.upgrade_command = new.upgrade_command;
            self.settings.upgrade_program = new.upgrade_program;
        }
    }

    /// The listeners of a reloaded config: the running sockets where the name or address
    /// is the same, new ones for the rest, and a running one kept (with a warning) where
    /// its new address cannot be bound.
    fn open_new_listeners(&self, new: &Settings) -> Result<(Vec<Listener>, Vec<String>), String> {
        let current = self
            .listeners
            .list
            .iter()
            .filter_map(|l| {
                let (local, addr) = listen::describe_listener(l.fd.as_fd()).ok()?;
                Some(listen::Inherited {
                    fd: l.fd.try_clone().ok()?,
                    name: l.spec.name.clone(),
                    local,
                    addr,
                })
            })
            .collect();
        let opened = listen::open_all_with(&new.listen, new.backlog, new.unix_mode, current)?;
        for warning in &opened.warnings {
            tracing::warn!("reload: {warning}");
        }
        let mut list = opened.listeners;
        for l in list.iter_mut() {
            // A socket file someone else owns (systemd's) stays theirs.
            if let Some(old) = self.listeners.list.iter().find(|o| o.local == l.local) {
                l.unix_path.clone_from(&old.unix_path);
            }
        }
        Ok((list, opened.warnings))
    }

    fn swap_listeners(&mut self, list: Vec<Listener>) {
        let old = std::mem::replace(&mut self.listeners.list, list);
        for l in &self.listeners.list {
            tracing::info!(name = %l.spec.name, "listening on {}", l.local);
        }
        for l in &old {
            if self.listeners.list.iter().all(|n| n.local != l.local) {
                tracing::info!(
                    name = %l.spec.name,
                    "no longer listening on {} (workers still holding it finish with it)",
                    l.local
                );
                if self.listeners.owns_files {
                    listen::remove_unix_files(std::slice::from_ref(l));
                }
            }
        }
        self.spawner.set_listeners(
            self.listeners
                .list
                .iter()
                .map(|l| l.fd.as_raw_fd())
                .collect(),
            self.listeners
                .list
                .iter()
                .map(|l| l.spec.name.clone())
                .collect(),
        );
        self.backlog_seen.clear();
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGTERM => "TERM",
        SIGINT => "INT",
        SIGQUIT => "QUIT",
        SIGUSR1 => "USR1",
        SIGUSR2 => "USR2",
        SIGHUP => "HUP",
        SIGTTIN => "TTIN",
        SIGTTOU => "TTOU",
        _ => "?",
    }
}
