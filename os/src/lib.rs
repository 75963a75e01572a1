//! drover-os: the OS shell of drover. The `drover` binary runs any program as a supervised
//! prefork pool (docs/ARCHITECTURE.md §6): it maps OS events to machine inputs and machine
//! actions to system calls, through drover-machine's one `Driver` (§3). Every decision
//! (when to spawn, kill, restart, drain) is the machine's.
//! [`embedded`] runs a Rust handler in forked workers under the same shell.
//!
//! Modules: `settings` (flags + TOML → `Config`), `listen` (listening sockets, opened or
//! adopted), `spawn` (fork/exec with systemd conventions, or fork alone for embedded
//! workers), `notify` (the workers' sd_notify socket), `sdnotify` (drover's own messages to
//! its service manager), `control` (the JSON control socket), `pidfile`, `upgrade` (the
//! live-upgrade channel), `supervise` (`--supervise`), `log` (drover's log file and format,
//! the workers' output in log mode), `daemon` (`--daemonize`), `guard` (kills the workers'
//! groups if drover is killed), `board` (the embedded workers' shared-memory report board),
//! `process` and `identity` (what shapes a worker process: user and groups, umask,
//! directory, environment), `title` (the process titles `ps` and `top` show),
//! `metrics` (the Prometheus text format and the `--metrics-listen` endpoint),
//! `status_table` (`drover status` for people),
//! `shell` (start-up, the poll loop and the driver's `Os`), and `embedded` (the embedded
//! runtime, public).

mod allow;
mod board;
mod control;
mod daemon;
pub mod embedded;
mod forking;
mod guard;
mod identity;
mod listen;
mod log;
mod metrics;
mod notify;
mod pidfile;
mod process;
mod sdnotify;
mod settings;
mod shell;
mod signal_table;
mod spawn;
mod status_table;
mod supervise;
mod title;
mod tls;
mod upgrade;

use clap::{Parser, Subcommand};
use serde_json::json;

pub use settings::RunArgs;

/// The parsers of untrusted input, public for the fuzz targets in `fuzz/` (not a stable
/// API): the config file's text, sd_notify datagrams, control-socket requests.
#[doc(hidden)]
pub mod parse {
    pub use crate::control::{parse_request as control_request, Request};
    pub use crate::notify::{parse as notify_message, Notice};
    pub use crate::settings::parse_config_text as config_text;
}

#[derive(Parser, Debug)]
#[command(
    name = "drover",
    version,
    about = "Runs any program as a supervised prefork pool",
    after_help = "Signals to a running drover (the default table; --signals serverengine|unicorn or the config file's [signals] change it): TERM/INT graceful stop (a second one: immediate), QUIT immediate stop, USR1 rolling restart, HUP reopen the log file and reload the config file, USR2 live upgrade, TTIN/TTOU one worker more/fewer."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Debug)]
struct ControlArgs {
    /// The control socket of the running drover (its --control).
    #[arg(long, value_name = "PATH")]
    control: std::path::PathBuf,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run COMMAND as a pool of workers: drover run [OPTIONS] -- COMMAND [ARGS...]
    Run(Box<RunArgs>),
    /// Print the pool and its workers as a table (--json: as JSON).
    Status {
        /// Print the control socket's JSON answer, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Print the metrics in the Prometheus text format.
    Metrics(ControlArgs),
    /// Write the machine's whole state and its last trace lines to drover's log.
    Dump(ControlArgs),
    /// Graceful stop (a second one stops at once).
    Stop(ControlArgs),
    /// Rolling restart of the workers (--now: all at once, through the immediate stop).
    Restart {
        /// Replace every worker at once: each gets the stop ladder's immediate stage and
        /// its place is refilled as it exits (serverengine's immediate restart).
        #[arg(long)]
        now: bool,
        #[command(flatten)]
        control: ControlArgs,
    },
    /// Reload the config file.
    Reload(ControlArgs),
    /// Live upgrade: start the successor, wait until it took over (exit 0) or rolled back (exit 1).
    Upgrade(ControlArgs),
    /// Reopen drover's --log-file (after logrotate renamed it).
    ReopenLogs(ControlArgs),
    /// Set the pool's size (static: workers; dynamic: min).
    Scale {
        /// The new size.
        n: u32,
        #[command(flatten)]
        control: ControlArgs,
    },
}

/// The `drover` command line; returns the process exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let request = |cmd: &str| json!({ "cmd": cmd });
    match cli.cmd {
        Cmd::Run(args) => shell::run(*args),
        Cmd::Status {
            json: true,
            control,
        } => control::client(&control.control, request("status")),
        Cmd::Status {
            json: false,
            control,
        } => control::client_showing(&control.control, request("status"), status_table::render),
        Cmd::Metrics(c) => control::client_showing(&c.control, request("metrics"), |answer| {
            answer["text"].as_str().unwrap_or_default().to_string()
        }),
        Cmd::Dump(c) => control::client_showing(&c.control, request("dump"), |answer| {
            answer["message"].as_str().unwrap_or_default().to_string()
        }),
        Cmd::Stop(c) => control::client(&c.control, request("stop")),
        Cmd::Restart { now, control } => control::client(
            &control.control,
            request(if now { "restart-now" } else { "restart" }),
        ),
        Cmd::Reload(c) => control::client(&c.control, request("reload")),
        Cmd::Upgrade(c) => control::client(&c.control, request("upgrade")),
        Cmd::ReopenLogs(c) => control::client(&c.control, request("reopen-logs")),
        Cmd::Scale { n, control } => {
            control::client(&control.control, json!({ "cmd": "scale", "n": n }))
        }
    }
}
