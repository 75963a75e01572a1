//! Signals to drover and the reload they (or the control socket) ask for: each signal's
//! actions come from the signal table (`signal_table`), a command for the machine or the
//! shell's own work (reload, upgrade, reopen the log, dump), HUP re-reads the config file and stages it for the
//! machine's answer, and the listener set of a reloaded config is opened before any old
//! socket closes. Whether a reload is accepted is the machine's answer (`Reloaded` or
//! `Refused`), never the shell's guess.

use std::os::fd::{AsFd, AsRawFd};

use drover_machine::{Command, Input};
use nix::sys::signal::{kill, Signal as NixSignal};
use signal_hook::consts::signal::*;

use super::{Shell, StagedReload, System};
use crate::listen::{self, Listener};
use crate::settings::listen::ListenAddr;
use crate::settings::Settings;
use crate::signal_table::{signal_name, SignalAction};
use crate::spawn::WorkerSpec;
use crate::upgrade::Relaunch;

impl Shell {
    /// Each pending signal's actions, as the signal table (`--signals`, `[signals]`) maps
    /// them, in the table's order (HUP's default reopens the log before the reload, so
    /// logrotate's `kill -HUP` finds the new file in use at once).
    pub(super) fn on_signals(&mut self) {
        let pending: Vec<i32> = self.sys().signals.pending().collect();
        for sig in pending {
            if sig == SIGCHLD {
                continue; // every turn reaps
            }
            let name = signal_name(sig);
            let actions = self.driver.os().settings.signals.actions(sig).to_vec();
            if actions.is_empty() {
                tracing::info!("signal {name}: no action in the signal table; ignored");
                continue;
            }
            if self.driver.os().args.supervise {
                self.on_signal_supervising(sig, &actions);
                continue;
            }
            for action in actions {
                self.perform(name, action);
            }
        }
    }

    /// One action signal `name` asked for, logged with what came of it (a signal has no
    /// one to answer).
    fn perform(&mut self, name: &str, action: SignalAction) {
        let command = match action {
            SignalAction::Stop => Command::Stop,
            SignalAction::StopNow => Command::StopNow,
            SignalAction::Restart => Command::Restart,
            SignalAction::RestartNow => Command::RestartNow,
            SignalAction::ScaleUp => Command::ScaleUp,
            SignalAction::ScaleDown => Command::ScaleDown,
            SignalAction::Reload => {
                tracing::info!("signal {name}: reloading the config file");
                if let Err(e) = self.reload() {
                    tracing::error!("reload failed, the running config stays: {e}");
                }
                return;
            }
            SignalAction::Upgrade => {
                tracing::info!("signal {name}: live upgrade");
                match self.request_upgrade() {
                    Ok(what) => tracing::info!("{what}"),
                    Err(e) => tracing::error!("{e}"),
                }
                return;
            }
            SignalAction::ReopenLogs => {
                match crate::log::reopen() {
                    Ok(what) => tracing::info!("signal {name}: {what}"),
                    Err(e) => tracing::error!("signal {name}: {e}"),
                }
                return;
            }
            SignalAction::Dump => {
                let (state, trace) = self.dump();
                tracing::info!(
                    "signal {name}: dump: the machine's state ({state} lines) and its last {trace} trace lines written to the log"
                );
                return;
            }
        };
        tracing::info!("signal {name}: {}", command.name());
        if matches!(command, Command::Restart | Command::RestartNow) {
            self.sys().reread_tls();
        }
        // A stop is always taken; the machine's refusal of another is logged as an event.
        self.driver.feed(Input::Command(command));
    }

    /// `--supervise`: the parent stops itself (and so its child, through the ladder) for a
    /// stop, replaces the supervised drover side by side for an upgrade, reopens its own
    /// log and dumps its own state; what concerns the workers (restart, reload, scaling,
    /// and the child's own log and dump) is passed on to the supervised drover as the same
    /// signal, which maps it through the same table.
    fn on_signal_supervising(&mut self, sig: i32, actions: &[SignalAction]) {
        let name = signal_name(sig);
        let mut pass_on = false;
        for &action in actions {
            match action {
                SignalAction::Stop | SignalAction::StopNow => self.perform(name, action),
                SignalAction::Upgrade => {
                    tracing::info!("signal {name}: replacing the supervised drover side by side");
                    if let Err(refusals) = self.command(Command::Restart) {
                        tracing::error!("{refusals}");
                    }
                }
                SignalAction::ReopenLogs | SignalAction::Dump => {
                    self.perform(name, action);
                    pass_on = true;
                }
                SignalAction::Restart
                | SignalAction::RestartNow
                | SignalAction::Reload
                | SignalAction::ScaleUp
                | SignalAction::ScaleDown => pass_on = true,
            }
        }
        if !pass_on {
            return;
        }
        let Ok(nix_sig) = NixSignal::try_from(sig) else {
            return;
        };
        for &pid in self.driver.os().pids.keys() {
            tracing::info!("signal {name}: passed on to the supervised drover pid {pid}");
            let _ = kill(nix::unistd::Pid::from_raw(pid as i32), nix_sig);
        }
    }

    /// Feeds an operator command; the machine's refusals, if any, as one message.
    pub(super) fn command(&mut self, command: Command) -> Result<(), String> {
        if matches!(command, Command::Restart | Command::RestartNow) {
            self.sys().reread_tls();
        }
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
        // The open per-worker sockets and the machine's slot rules (no surge) go together:
        // one cannot change under running workers.
        if new.listen_per_worker != sys.settings.listen_per_worker {
            return Err(
                "reload refused: `listen_per_worker` changed, which takes effect only when drover itself restarts (a stop and start, or a live upgrade); put the running value back to reload the rest".into(),
            );
        }
        // A changed allow-list is put on the running sockets here (open_all_with adopts
        // them); a refused reload puts the running list back below.
        let (listeners, mut warnings) =
            match new.listen != sys.settings.listen || new.allow != sys.settings.allow {
                true => match sys.open_new_listeners(&new) {
                    Ok((list, warnings)) => (Some(list), warnings),
                    Err(e) => {
                        sys.put_running_allow_back();
                        return Err(e);
                    }
                },
                false => (None, Vec::new()),
            };
        for warning in sys.settings.restart_only_changes(&new) {
            tracing::warn!("reload: {warning}");
            warnings.push(warning);
        }
        let config = crate::daemon::machine_config(&new.machine, sys.launcher.as_ref());
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
            self.driver.os().put_running_allow_back();
        }
        answer.map(|()| warnings)
    }
}

impl System {
    /// A rolling restart's new workers serve the TLS files as they are now: they are read
    /// again (certificates renewed in place, as certbot does). A file that cannot be read
    /// or does not fit leaves the running certificates in force, with the reason logged.
    fn reread_tls(&mut self) {
        // A `--supervise` parent's only worker is a drover, which reads its own files.
        if self.settings.tls.listeners.is_empty() || self.args.supervise {
            return;
        }
        match self.settings.tls.reread() {
            Ok(fresh) => {
                if fresh.digest() != self.settings.tls.digest() {
                    tracing::info!("restart: TLS files changed; new workers serve them");
                }
                self.spawner.spec.tls = fresh.for_workers();
                self.settings.tls = fresh;
            }
            Err(e) => tracing::error!(
                "restart: {e}; the workers keep serving the certificates read before"
            ),
        }
    }

    /// A reload that failed or was refused may have put its new `--allow` list on running
    /// sockets already: the running list goes back on.
    fn put_running_allow_back(&self) {
        let tcp = self.listeners.list.iter();
        for l in tcp.filter(|l| matches!(l.spec.addr, ListenAddr::Tcp(_))) {
            if let Err(e) = crate::allow::apply(l.fd.as_fd(), &self.settings.allow) {
                tracing::error!(
                    "reload: the running --allow list could not be put back on {}: {e}",
                    l.local
                );
            }
        }
    }

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
        // What a rolling restart reads again (`reread_tls`): the files the config now names.
        self.settings.tls = new.tls;
        if new.allow != self.settings.allow {
            if new.allow.is_empty() {
                tracing::info!("--allow: no list any more, every source is served");
            }
            super::log_allow_list(&new.allow);
            self.slot_ports.apply_allow(&new.allow);
            self.settings.allow = new.allow;
        }
        self.settings.command = new.command;
        self.settings.program = new.program;
        self.settings.title = new.title;
        self.settings.machine = new.machine;
        if new.signals != self.settings.signals {
            super::log_signal_table(&new.signals);
            self.settings.signals = new.signals;
        }
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
        let opened =
            listen::open_all_with(&new.listen, new.backlog, new.unix_mode, &new.allow, current)?;
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
