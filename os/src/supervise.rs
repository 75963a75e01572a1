//! `drover run --supervise`: a parent drover whose pool is one worker, the real drover.
//!
//! No new mechanism: the parent is an ordinary drover shell running its own binary as a
//! command worker, so restarts with backoff, the kill ladder and the heartbeat watchdog are
//! the machine's (serverengine's supervisor mode, done with the same logic as any pool).
//! The parent opens the listeners and passes them down (the child adopts them as socket
//! activation), so a crashed drover's replacement serves the same sockets and connections
//! wait in the backlog meanwhile. The child says READY=1 once its pool is settled and
//! WATCHDOG=1 on the parent's notify socket, as it would to systemd.
//!
//! Signals to the parent: TERM/INT/QUIT stop the child through the ladder (it drains its
//! workers itself); USR2 replaces the child side by side (a rolling restart of the pool of
//! one: the new drover starts with the same sockets, the old one is stopped once the new
//! one is ready, a new drover that never gets ready leaves the old one serving); USR1, HUP,
//! TTIN, TTOU are passed on to the child.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use drover_machine::{Config, Ladder, Readiness, Signal, Stage};

use crate::settings::Settings;
use crate::upgrade::SUPERVISED_VAR;

/// A hung drover (its event loop stuck) is replaced after this long without a WATCHDOG=1.
const CHILD_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(30);
/// Time the child gets beyond its own stop ladder before the parent escalates.
const STOP_MARGIN: Duration = Duration::from_secs(10);

/// The parent's settings, from the settings the child will load itself.
pub fn parent_settings(mut settings: Settings) -> Result<Settings, String> {
    // The parent would have to hold every slot's port for the children it replaces side by
    // side; it holds only the shared listeners, so a new child could never bind the ports
    // its predecessor still holds.
    if let Some(p) = &settings.listen_per_worker {
        return Err(format!(
            "--listen-per-worker {} (config key `listen_per_worker`) does not work with --supervise: a replacement drover could not bind the ports its predecessor holds; drop --supervise (a live upgrade, USR2, hands the ports over) or the per-worker ports",
            p.text
        ));
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("--supervise: cannot find this program's binary: {e}"))?;
    let argv: Vec<OsString> = std::env::args_os().collect();
    let mut command = vec![exe.to_string_lossy().into_owned()];
    command.extend(
        child_args(&argv[1.min(argv.len())..])
            .iter()
            .map(|a| a.to_string_lossy().into_owned()),
    );
    let child = &settings.machine;
    let child_stop = child.ladder.time_to_kill(0);
    let mut config = Config::static_pool(1);
    config.readiness = Readiness::Notify;
    // A new drover is ready once its own pool is: give it the time an upgrade would get.
    config.boot_timeout = child.upgrade_timeout.max(child.boot_timeout);
    config.heartbeat_timeout = Some(CHILD_HEARTBEAT_TIMEOUT);
    config.max_surge = 1;
    config.max_unavailable = 0;
    // One TERM (a second one would make the child stop at once), then QUIT, then KILL.
    config.ladder = Arc::new(Ladder {
        stages: vec![
            Stage {
                signal: Signal::Term,
                interval: child_stop + STOP_MARGIN,
                increment: Duration::ZERO,
                timeout: child_stop + STOP_MARGIN,
            },
            Stage {
                signal: Signal::Quit,
                interval: STOP_MARGIN,
                increment: Duration::ZERO,
                timeout: STOP_MARGIN,
            },
            Stage::kill(),
        ],
        immediate_from: 1,
    });
    // Exit code 2 is bad configuration: restarting cannot help; the old drover keeps
    // serving if there is one.
    config.restart.unrecoverable_exit_codes = vec![2];
    config.upgrade_timeout = child.upgrade_timeout;
    config
        .validate()
        .map_err(|e| format!("--supervise: {}: {}", e.field, e.problem))?;
    settings.machine = config;
    settings.program = exe;
    settings.command = command;
    settings.control = None;
    // The child serves the metrics: it runs the pool they describe.
    settings.metrics_listen = None;
    settings.upgrade_command = None;
    settings.worker_env = vec![(SUPERVISED_VAR.to_string(), "1".to_string())];
    // The child drover starts as this one does and applies --user, --umask, --chdir and
    // --env to its own workers; once it drops its privileges it must still reach this
    // drover's notify socket (READY=1, WATCHDOG=1).
    let child = std::mem::take(&mut settings.process);
    settings.process.notify_owner = child.credentials.filter(|_| child.drop_privileges);
    settings.machine.worker_fingerprint = 0;
    // The child drover collects its own workers' output; its own log is its own.
    settings.log.worker_output = crate::log::WorkerOutputMode::Inherit;
    Ok(settings)
}

/// The child's arguments: the parent's, without `--supervise`, `--pid-file` (the parent
/// holds the pid file; operators signal the parent) and `--daemonize` (the parent is the
/// daemon). Only options before `--` are looked at.
pub fn child_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_str().unwrap_or("");
        if text == "--" {
            out.push(arg.clone());
            out.extend(iter.cloned());
            break;
        }
        if text == "--supervise" || text == "--daemonize" || text.starts_with("--pid-file=") {
            continue;
        }
        if text == "--pid-file" {
            iter.next();
            continue;
        }
        out.push(arg.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_child_gets_every_argument_but_supervise_and_the_pid_file() {
        assert_eq!(
            child_args(&args(&[
                "run",
                "--supervise",
                "--daemonize",
                "--listen",
                "127.0.0.1:0",
                "--pid-file",
                "/p",
                "--pid-file=/q",
                "--control",
                "/c",
                "--",
                "prog",
                "--supervise",
                "--pid-file",
                "x"
            ])),
            args(&[
                "run",
                "--listen",
                "127.0.0.1:0",
                "--control",
                "/c",
                "--",
                "prog",
                "--supervise",
                "--pid-file",
                "x"
            ])
        );
    }
}
