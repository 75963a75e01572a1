//! The `drover run` options, from flags and an optional TOML file, turned into the machine's
//! `Config` plus what the shell itself needs (listeners, command, paths).
//!
//! Precedence: a flag beats the same key in the file, which beats the default. The file is
//! re-read on reload (HUP or `drover reload`), with the same flags applied on top.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use drover_machine::{Config, ConfigError, Setting};

use crate::signal_table::SignalTable;

// Below everything that reads its own keys (log, process, listen, metrics): they import
// these two, never this module, which composes them.
pub(crate) mod file;
pub(crate) mod listen;
pub(crate) mod per_worker;
pub(crate) mod tls;

use file::{read_file, usage, SHELL_KEYS};
pub(crate) use file::{FileConfig, UsageError};
use listen::ListenSpec;
use listen::{parse_listen, resolve_program};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReadinessArg {
    /// Ready as soon as the process exists.
    Spawn,
    /// Ready when the worker sends READY=1 on NOTIFY_SOCKET (boot timeout applies).
    Notify,
}

/// Flags of `drover run`. Every option is optional so that the config file can supply it.
#[derive(Args, Clone, Debug, Default)]
pub struct RunArgs {
    /// Listening socket, repeatable: `host:port`, `[v6]:port`, `unix:/path`, optionally
    /// named `NAME=ADDR` (the name goes to LISTEN_FDNAMES).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<String>,
    /// Serve only clients whose address is in this network, repeatable: `10.0.0.0/8`,
    /// `192.0.2.7`, `fd00::/8` (a socket filter on every TCP listener; others are dropped).
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<String>,
    /// Give the worker in slot i its own TCP listening socket on PORT+i, kept across that
    /// slot's restarts (one port per worker behind a load balancer): `[NAME=]HOST:PORT`;
    /// the name goes to LISTEN_FDNAMES (default `worker`).
    #[arg(long = "listen-per-worker", value_name = "[NAME=]HOST:PORT")]
    pub listen_per_worker: Option<String>,
    /// A static pool of N workers (default 1).
    #[arg(long, value_name = "N", conflicts_with_all = ["min", "max"])]
    pub workers: Option<u32>,
    /// A dynamic pool: at least N workers (needs --max).
    #[arg(long, value_name = "N")]
    pub min: Option<u32>,
    /// A dynamic pool: at most N workers (needs --min).
    #[arg(long, value_name = "N")]
    pub max: Option<u32>,
    /// Dynamic pool: keep at least N idle thread slots (default 1).
    #[arg(long, value_name = "N")]
    pub min_spare: Option<u32>,
    /// Dynamic pool: keep at most N idle thread slots (default min_spare + max(threads, 3) - 1).
    #[arg(long, value_name = "N")]
    pub max_spare: Option<u32>,
    /// Threads (accepting slots) per worker (default 1).
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,
    /// Kill a Ready worker that sent no WATCHDOG=1 for SECS (sets WATCHDOG_USEC).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub heartbeat_timeout: Option<f64>,
    /// Kill a worker not Ready within SECS of its spawn (default 60).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub boot_timeout: Option<f64>,
    /// Graceful stop: TERM (resent every 10 s), then KILL at SECS (default 30).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    pub stop_timeout: Option<f64>,
    /// Retire a worker after N requests (workers that report load only).
    #[arg(long, value_name = "N")]
    pub max_requests: Option<u64>,
    /// When a worker counts as Ready (default spawn).
    #[arg(long, value_enum, value_name = "WHEN")]
    pub readiness: Option<ReadinessArg>,
    /// Listen backlog of every listener (default 1024).
    #[arg(long, value_name = "N")]
    pub backlog: Option<u32>,
    /// File mode of unix listening sockets, octal (default 666).
    #[arg(long, value_name = "OCTAL")]
    pub unix_mode: Option<String>,
    /// Write drover's pid here, locked: a second drover on the same file refuses to start.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Control socket for `drover status|stop|restart|reload|scale`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// TOML file with the same options (snake_case keys, plus `command = [...]`).
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Log level: error, warn, info, debug (machine trace lines), trace.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// The workers' user, groups, umask, directory and environment.
    #[command(flatten)]
    pub process: crate::process::ProcessArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics from the supervisor: PORT (on
    /// 127.0.0.1), HOST:PORT or [IPv6]:PORT.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// Which action each signal asks for: drover (default), serverengine or unicorn; the
    /// config file's `[signals]` table changes single signals on top.
    #[arg(long, value_name = "PRESET")]
    pub signals: Option<String>,
    /// Run a small parent that restarts this drover if it crashes (with backoff), holds
    /// the listening sockets and the pid file across restarts, forwards signals, and
    /// performs live upgrades (USR2) by starting a new drover beside the old one.
    #[arg(long)]
    pub supervise: bool,
    /// drover's log, the workers' output and daemon mode.
    #[command(flatten)]
    pub log: crate::log::LogArgs,
    /// TLS on the embedded runtime's listeners.
    #[command(flatten)]
    pub tls: tls::TlsArgs,
    /// Set by the embedded runtime's `Server::run`: its workers are drover's threads, which
    /// serve TLS; a command's workers and a program's own server (`Server::serve`) accept
    /// connections themselves and cannot.
    #[arg(skip)]
    pub embedded: bool,
    /// The worker program and its arguments.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!(
            "'{s}' is not a number of seconds between 0 and 1e9"
        ));
    }
    Ok(v)
}

/// Machine keys that together choose the pool: flags that set any of them replace all of
/// them from the file, so `--workers 2` over a file's dynamic pool gives a static pool.
const POLICY_KEYS: &[&str] = &[
    "policy",
    "workers",
    "min",
    "max",
    "start",
    "min_spare",
    "max_spare",
];

/// What one `drover run` does, fully resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: Vec<ListenSpec>,
    /// `--allow`: the networks every TCP listener serves; empty, no filter at all.
    pub allow: Vec<crate::allow::Cidr>,
    /// `--listen-per-worker`: each slot's own port, if any.
    pub listen_per_worker: Option<per_worker::PerWorker>,
    pub backlog: u32,
    pub unix_mode: u32,
    pub pid_file: Option<PathBuf>,
    pub control: Option<PathBuf>,
    pub log_level: tracing::Level,
    /// Where `GET /metrics` is served (`--metrics-listen`), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// The command as given; `program` is its first word resolved through PATH.
    pub command: Vec<String>,
    pub program: PathBuf,
    /// What a live upgrade starts instead of drover's own binary and arguments, resolved
    /// like `command` into `upgrade_program`.
    pub upgrade_command: Option<Vec<String>>,
    pub upgrade_program: PathBuf,
    /// The program's name in process titles (a `--supervise` parent's: its child's).
    pub title: String,
    /// Variables drover itself adds to every worker's environment.
    pub worker_env: Vec<(String, String)>,
    /// The workers' user, groups, umask, directory and environment.
    pub process: crate::process::ProcessSettings,
    /// drover's log, the workers' output, daemon mode.
    pub log: crate::log::LogSettings,
    /// What each signal to drover asks for.
    pub signals: SignalTable,
    /// TLS on the embedded runtime's listeners, the files read.
    pub tls: tls::TlsSettings,
    pub machine: Config,
}

/// The flag that sets a machine config field, for error messages.
fn flag_of(field: &str) -> &'static str {
    match field {
        "workers" => "--workers",
        "min" => "--min",
        "max" => "--max",
        "start" => "--min/--max",
        "min_spare" => "--min-spare",
        "max_spare" => "--max-spare",
        "threads" => "--threads",
        "boot_timeout" => "--boot-timeout",
        "heartbeat_timeout" => "--heartbeat-timeout",
        "max_requests" => "--max-requests",
        "readiness" => "--readiness",
        "stop_timeout" | "ladder" | "ladder.immediate_from" => "--stop-timeout",
        _ => "the config file",
    }
}

/// `invalid --workers (config key `workers`): must be at least 1 ...`, or for keys with no
/// flag `invalid config key `restart.backoff_max`: ...`.
pub fn describe_config_error(e: &ConfigError) -> String {
    match flag_of(e.field) {
        "the config file" => format!("invalid config key `{}`: {}", e.field, e.problem),
        flag => format!("invalid {flag} (config key `{}`): {}", e.field, e.problem),
    }
}

impl Settings {
    /// Reads the config file (if any) and merges the flags over it.
    pub fn load(args: &RunArgs) -> Result<Settings, UsageError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Settings::merge(args, file)
    }

    /// The settings a reload cannot apply to a running drover, each changed one as a warning
    /// for the reload's answer and the log: the pid file and control socket are held open,
    /// the running listeners keep the backlog and mode they were created with, and the log
    /// level is set once at start. A restart of drover (or a live upgrade) applies them.
    pub fn restart_only_changes(&self, new: &Settings) -> Vec<String> {
        let old = self;
        let mut changed = Vec::new();
        let mut check = |key: &str, differs: bool| {
            if differs {
                changed.push(format!(
                    "`{key}` changed, but it takes effect only when drover itself restarts (a stop and start, or a live upgrade); the running value stays"
                ));
            }
        };
        check("pid_file", old.pid_file != new.pid_file);
        check("control", old.control != new.control);
        check("backlog", old.backlog != new.backlog);
        check("unix_mode", old.unix_mode != new.unix_mode);
        check("log_level", old.log_level != new.log_level);
        check(
            "drop_privileges",
            old.process.drop_privileges != new.process.drop_privileges,
        );
        for key in old.log.restart_only_changes(&new.log) {
            check(key, true);
        }
        check("metrics_listen", old.metrics_listen != new.metrics_listen);
        changed
    }

    fn merge(args: &RunArgs, file: FileConfig) -> Result<Settings, UsageError> {
        // Flags as machine settings; a flag beats the same key from the file, and any pool
        // flag replaces the file's whole pool choice.
        let mut flags: Vec<(String, Setting)> = Vec::new();
        let mut flag = |key: &str, value: Option<Setting>| {
            if let Some(v) = value {
                flags.push((key.to_string(), v));
            }
        };
        let int = |n: Option<u32>| n.map(|n| Setting::Int(i64::from(n)));
        let float = |v: Option<f64>| v.map(Setting::Float);
        flag("workers", int(args.workers));
        flag("min", int(args.min));
        flag("max", int(args.max));
        flag("min_spare", int(args.min_spare));
        flag("max_spare", int(args.max_spare));
        flag("threads", int(args.threads));
        flag("heartbeat_timeout", float(args.heartbeat_timeout));
        flag("boot_timeout", float(args.boot_timeout));
        flag("stop_timeout", float(args.stop_timeout));
        flag(
            "max_requests",
            args.max_requests
                .map(|n| Setting::Int(i64::try_from(n).unwrap_or(i64::MAX))),
        );
        flag(
            "readiness",
            args.readiness.map(|r| {
                Setting::Str(match r {
                    ReadinessArg::Spawn => "spawn".into(),
                    ReadinessArg::Notify => "notify".into(),
                })
            }),
        );
        if args.min.is_some() != args.max.is_some() && args.workers.is_none() {
            let (given, missing) = if args.min.is_some() {
                ("--min", "--max")
            } else {
                ("--max", "--min")
            };
            return Err(usage(format!("{given} needs {missing} (a dynamic pool)")));
        }
        let cli_policy = args.workers.is_some() || args.min.is_some() || args.max.is_some();
        let mut merged: Vec<(String, Setting)> = file
            .machine
            .iter()
            .filter(|(k, _)| !(cli_policy && POLICY_KEYS.contains(&k.as_str())))
            .filter(|(k, _)| !flags.iter().any(|(f, _)| f == k))
            .cloned()
            .collect();
        if file.machine.iter().any(|(k, _)| k == "workers")
            && file.machine.iter().any(|(k, _)| k == "min" || k == "max")
            && !cli_policy
        {
            return Err(usage(
                "config file: `workers` (static pool) and `min`/`max` (dynamic pool) exclude each other; keep one",
            ));
        }
        if let Some((key, _)) = file
            .machine
            .iter()
            .find(|(k, _)| !drover_machine::SETTING_KEYS.contains(&k.as_str()))
        {
            let mut known: Vec<&str> = SHELL_KEYS.to_vec();
            known.extend(drover_machine::SETTING_KEYS);
            return Err(usage(format!(
                "config file: unknown key `{key}`; known keys: {}",
                known.join(", ")
            )));
        }
        merged.extend(flags);
        let listen_per_worker = per_worker::load(args.listen_per_worker.as_ref(), &file)?;
        if listen_per_worker.is_some() {
            per_worker::adjust_machine(&mut merged)?;
        }
        let mut machine = Config::from_settings(merged.iter().map(|(k, v)| (k.as_str(), v)))
            .map_err(|e| usage(describe_config_error(&e)))?;
        machine.slot_addresses = listen_per_worker.is_some();
        if let Some(p) = &listen_per_worker {
            per_worker::check_ports(p, machine.slot_count())?;
        }

        let command = if args.command.is_empty() {
            file.strings("command")?.unwrap_or_default()
        } else {
            args.command.clone()
        };
        if command.is_empty() || command[0].is_empty() {
            return Err(usage(
                "missing command: drover run [OPTIONS] -- COMMAND [ARGS...] (or `command = [...]` in the config file)",
            ));
        }
        if command.iter().any(|a| a.contains('\0')) {
            return Err(usage("invalid command: an argument contains a NUL byte"));
        }
        let process = crate::process::ProcessSettings::load(&args.process, &file.shell)?;
        // Workers start in --chdir: a relative program path means drover's directory.
        let program = std::path::absolute(resolve_program(&command[0])?)
            .map_err(|e| usage(format!("command {}: {e}", command[0])))?;
        let upgrade_command = file.strings("upgrade_command")?;
        let upgrade_program = match &upgrade_command {
            Some(c) if c.is_empty() || c[0].is_empty() => {
                return Err(usage(
                    "config file: `upgrade_command` is empty; remove it (a live upgrade then restarts drover's own binary) or give the program and its arguments",
                ))
            }
            Some(c) if c.iter().any(|a| a.contains('\0')) => {
                return Err(usage("invalid upgrade_command: an argument contains a NUL byte"))
            }
            Some(c) => resolve_program(&c[0])?,
            None => PathBuf::new(),
        };

        let listen_text = if !args.listen.is_empty() {
            args.listen.clone()
        } else if let Some(listen) = file.strings("listen")? {
            listen
        } else {
            listen_from_port(std::env::var("PORT").ok().as_deref())?
        };
        let listen = listen_text
            .iter()
            .enumerate()
            .map(|(i, text)| parse_listen(i, text))
            .collect::<Result<Vec<_>, _>>()?;
        let allow_text = if args.allow.is_empty() {
            file.strings("allow")?.unwrap_or_default()
        } else {
            args.allow.clone()
        };
        let allow = crate::allow::parse_list(&allow_text).map_err(usage)?;
        if let Some(unix) = listen
            .iter()
            .find(|l| matches!(l.addr, listen::ListenAddr::Unix(_)))
            .filter(|_| !allow.is_empty())
        {
            return Err(usage(format!(
                "--allow (config key `allow`) filters TCP clients by address, and --listen {} is a unix socket, which has no client address: remove --allow, or listen on TCP only (per-listener lists are not built)",
                unix.text
            )));
        }
        // The per-worker sockets serve TLS as any TCP listener does: a bare --tls-cert covers
        // them, `NAME=` names them by their LISTEN_FDNAMES name.
        let mut tls_listeners = listen.clone();
        if let Some(p) = &listen_per_worker {
            tls_listeners.push(listen::ListenSpec {
                name: p.name.clone(),
                addr: listen::ListenAddr::Tcp(p.base),
                text: p.text.clone(),
            });
        }
        let tls = tls::TlsSettings::resolve(&args.tls, &file, &tls_listeners, args.embedded)?;
        let backlog = match args.backlog {
            Some(n) => i64::from(n),
            None => file.int("backlog")?.unwrap_or(1024),
        };
        if !(1..=i64::from(i32::MAX)).contains(&backlog) {
            return Err(usage("invalid --backlog: must be at least 1"));
        }
        let backlog = backlog as u32;
        let file_mode = file.string("unix_mode")?;
        let unix_mode = match args.unix_mode.as_ref().or(file_mode.as_ref()) {
            Some(text) => u32::from_str_radix(text.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    usage(format!(
                        "invalid --unix-mode '{text}': an octal mode like 660"
                    ))
                })?,
            None => 0o666,
        };
        let level_text = match args.log_level.clone() {
            Some(level) => level,
            None => file.string("log_level")?.unwrap_or_else(|| "info".into()),
        };
        let log_level = level_text.parse().map_err(|_| {
            usage(format!(
                "invalid --log-level '{level_text}': one of error, warn, info, debug, trace"
            ))
        })?;

        let metrics_text = match &args.metrics_listen {
            Some(text) => Some(text.clone()),
            None => match file.shell.get("metrics_listen") {
                None => None,
                Some(toml::Value::String(text)) => Some(text.clone()),
                Some(toml::Value::Integer(port)) => Some(port.to_string()),
                Some(_) => {
                    return Err(usage(
                        "config file: `metrics_listen` must be a port or an address string, e.g. 9100 or \"127.0.0.1:9100\"",
                    ))
                }
            },
        };
        let metrics_listen = match metrics_text {
            Some(text) => Some(crate::metrics::http::parse_addr(&text).map_err(usage)?),
            None => None,
        };

        let signals =
            SignalTable::from_settings(args.signals.as_deref(), file.shell.get("signals"))
                .map_err(usage)?;
        let mut settings = Settings {
            listen,
            allow,
            listen_per_worker,
            backlog,
            unix_mode,
            pid_file: match &args.pid_file {
                Some(p) => Some(p.clone()),
                None => file.string("pid_file")?.map(PathBuf::from),
            },
            control: match &args.control {
                Some(p) => Some(p.clone()),
                None => file.string("control")?.map(PathBuf::from),
            },
            log_level,
            metrics_listen,
            command,
            title: crate::title::app_name(&program),
            program,
            upgrade_command,
            upgrade_program,
            worker_env: Vec::new(),
            process,
            log: crate::log::LogSettings::resolve(&args.log, &file)?,
            signals,
            tls,
            machine,
        };
        settings.machine.worker_fingerprint = settings.fingerprint();
        settings
            .machine
            .validate()
            .map_err(|e| usage(describe_config_error(&e)))?;
        Ok(settings)
    }

    /// A digest of everything that shapes a worker process: a reload that changes it rolls
    /// the workers (the machine decides that by comparing fingerprints).
    fn fingerprint(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.command.hash(&mut h);
        self.program.hash(&mut h);
        // The listeners a worker gets at fd 3 onwards.
        for l in &self.listen {
            l.name.hash(&mut h);
            l.text.hash(&mut h);
        }
        self.machine.heartbeat_timeout.hash(&mut h); // WATCHDOG_USEC
        self.process.hash(&mut h);
        // New certificates reach the connections through new workers.
        self.tls.digest().hash(&mut h);
        h.finish()
    }

    /// WATCHDOG_USEC for workers, if a heartbeat timeout is set.
    pub fn watchdog_usec(&self) -> Option<u64> {
        self.machine
            .heartbeat_timeout
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1))
    }
}

/// The listener when neither `--listen` nor the file's `listen` names one: `$PORT` on every
/// IPv4 address, as Heroku-style platforms and uninterruptible expect; none without it.
fn listen_from_port(port: Option<&str>) -> Result<Vec<String>, UsageError> {
    let Some(text) = port else {
        return Ok(Vec::new());
    };
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(vec![format!("0.0.0.0:{port}")]),
        _ => Err(usage(format!(
            "invalid PORT '{text}' in the environment (the default listener when no --listen or `listen` is given): a port from 1 to 65535; unset it or give --listen"
        ))),
    }
}

/// The machine config a config file's text gives `drover run --config FILE` with no other
/// flags, or the message drover would print. The file's `listen` and `command` are not
/// looked at (no DNS, no PATH search): `/bin/sh` and a loopback listener stand in. For the
/// fuzz targets (`drover_os::parse::config_text`).
pub fn parse_config_text(text: &str) -> Result<Config, String> {
    let file = FileConfig::parse(text)?;
    let args = RunArgs {
        listen: vec!["127.0.0.1:0".into()],
        command: vec!["/bin/sh".into()],
        ..RunArgs::default()
    };
    Settings::merge(&args, file)
        .map(|s| s.machine)
        .map_err(|e| e.0)
}

#[cfg(test)]
mod tests;
