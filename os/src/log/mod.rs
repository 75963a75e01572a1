//! drover's own log: where its lines go (stderr, or `--log-file` opened for appending and
//! reopened for logrotate), in which format (`--log-format text|json`), and the settings
//! of the workers' output (`--worker-output`, collected by [`workers`]) and of daemon mode.
//!
//! The file is one process-wide sink behind a mutex: the tracing subscriber writes each
//! record with one `write(2)` on an `O_APPEND` descriptor, so two drovers sharing the file
//! (a live upgrade, `--supervise`) never interleave within a line. A reopen opens the new
//! file first, swaps it in, then closes the old one: every record lands in one file or the
//! other, none is lost.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use clap::{Args, ValueEnum};

use crate::settings::file::{FileConfig, UsageError};

mod json;
pub mod workers;

/// The log flags of `drover run` (each also a config-file key).
#[derive(Args, Clone, Debug, Default)]
pub struct LogArgs {
    /// Append drover's log to PATH instead of stderr; reopened on HUP and by
    /// `drover reopen-logs` (logrotate's postrotate).
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Log lines as text (default) or JSON lines for log shippers.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Workers' stdout and stderr: inherited from drover (default), or collected through a
    /// pipe per worker into drover's log, each line tagged with slot, generation and pid.
    #[arg(long, value_enum, value_name = "MODE")]
    pub worker_output: Option<WorkerOutputMode>,
    /// Detach from the terminal and run in the background; the command returns once the
    /// pool is ready (exit 0), or with the start-up error (non-zero).
    #[arg(long)]
    pub daemonize: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per record.
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, pid, message, fields.
    Json,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum WorkerOutputMode {
    /// Workers write to drover's own stdout and stderr.
    #[default]
    Inherit,
    /// Workers' lines go into drover's log (a pipe per worker and stream).
    Log,
}

/// The resolved log settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    pub file: Option<PathBuf>,
    pub format: LogFormat,
    pub worker_output: WorkerOutputMode,
    pub daemonize: bool,
}

impl LogSettings {
    /// Flags over the config file's `log_file`, `log_format`, `worker_output`, `daemonize`.
    pub(crate) fn resolve(args: &LogArgs, file: &FileConfig) -> Result<LogSettings, UsageError> {
        let file_path = match &args.log_file {
            Some(p) => Some(p.clone()),
            None => file.string("log_file")?.map(PathBuf::from),
        };
        if file_path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(UsageError(
                "invalid --log-file (config key `log_file`): empty path; give a file to append to, or leave it out to log to stderr".into(),
            ));
        }
        let format = match args.log_format {
            Some(f) => f,
            None => match file.string("log_format")? {
                None => LogFormat::default(),
                Some(text) => LogFormat::from_str(&text, false).map_err(|_| {
                    UsageError(format!(
                        "invalid config key `log_format` = \"{text}\": one of \"text\", \"json\""
                    ))
                })?,
            },
        };
        let worker_output = match args.worker_output {
            Some(m) => m,
            None => match file.string("worker_output")? {
                None => WorkerOutputMode::default(),
                Some(text) => WorkerOutputMode::from_str(&text, false).map_err(|_| {
                    UsageError(format!(
                        "invalid config key `worker_output` = \"{text}\": one of \"inherit\", \"log\""
                    ))
                })?,
            },
        };
        let daemonize = args.daemonize || file.boolean("daemonize")?.unwrap_or(false);
        Ok(LogSettings {
            file: file_path,
            format,
            worker_output,
            daemonize,
        })
    }

    /// The keys a reload cannot change in a running drover (see
    /// `Settings::restart_only_changes`): the log's file and format are set up once, the
    /// workers keep the stdout and stderr they were started with, and a running drover is
    /// already detached or not.
    pub fn restart_only_changes(&self, new: &LogSettings) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.file != new.file {
            keys.push("log_file");
        }
        if self.format != new.format {
            keys.push("log_format");
        }
        if self.worker_output != new.worker_output {
            keys.push("worker_output");
        }
        if self.daemonize != new.daemonize {
            keys.push("daemonize");
        }
        keys
    }
}

/// The log file, once opened.
struct Sink {
    path: PathBuf,
    file: Mutex<File>,
    /// Set once drover's stdout and stderr point at the log file (a daemon): a reopen moves
    /// them to the new file too, so a panic message or an inheriting worker's output
    /// follows the rotation.
    stdio: AtomicBool,
    /// Set in a forked worker whose stderr is its output pipe (see `in_forked_worker`).
    to_stderr: AtomicBool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

fn open_append(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
}

/// Opens `--log-file` for this process's log: a usage error (exit 2) if it cannot be.
pub fn open_file(path: &Path) -> Result<(), String> {
    let file = open_append(path).map_err(|e| {
        format!(
            "invalid --log-file (config key `log_file`) {}: {e}; give a writable file",
            path.display()
        )
    })?;
    // A drover started by a daemon (a live upgrade's successor, the drover under a
    // daemonized `--supervise` parent) inherits stdout and stderr on this very file: they
    // follow its reopens too.
    let stdio = same_file(&file, 2);
    let sink = Sink {
        path: path.to_path_buf(),
        file: Mutex::new(file),
        stdio: AtomicBool::new(stdio),
        to_stderr: AtomicBool::new(false),
    };
    SINK.set(sink)
        .map_err(|_| "the log file is already open".to_string())
}

/// Whether descriptor `fd` is `file` (same device and inode).
fn same_file(file: &File, fd: std::os::fd::RawFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(ours) = file.metadata() else {
        return false;
    };
    // SAFETY: fstat into a zeroed struct we own; an fd that is not open fails with EBADF.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    st.st_dev == ours.dev() && st.st_ino == ours.ino()
}

/// The open log file's descriptor, to put under a daemon's stdout and stderr; marks the
/// standard descriptors as following the log file on every reopen.
pub fn file_for_stdio() -> Option<std::os::fd::RawFd> {
    let sink = SINK.get()?;
    sink.stdio.store(true, Ordering::SeqCst);
    let file = sink.file.lock().unwrap_or_else(|p| p.into_inner());
    Some(file.as_raw_fd())
}

/// Reopens the log file at its path (logrotate renamed the old one): the new file is
/// opened before the old one closes. A reopen that fails keeps the old file and says why.
pub fn reopen() -> Result<String, String> {
    let Some(sink) = SINK.get() else {
        return Ok("no --log-file: drover logs to stderr, nothing to reopen".into());
    };
    let new = open_append(&sink.path).map_err(|e| {
        format!(
            "cannot reopen the log file {}: {e}; still writing to the file open before",
            sink.path.display()
        )
    })?;
    let old = {
        let mut file = sink.file.lock().unwrap_or_else(|p| p.into_inner());
        if sink.stdio.load(Ordering::SeqCst) {
            for fd in [1, 2] {
                // SAFETY: dup2 onto the standard descriptors, which this process owns; the
                // old file behind them is closed by the kernel atomically.
                unsafe { libc::dup2(new.as_raw_fd(), fd) };
            }
        }
        std::mem::replace(&mut *file, new)
    };
    drop(old);
    Ok(format!("reopened the log file {}", sink.path.display()))
}

/// In a forked (embedded) worker, before it closes the supervisor's descriptors: the
/// worker's own log lines (the runtime's, the program's through drover's subscriber) go to
/// its stderr when that is its output pipe (`--worker-output log`, so they are tagged like
/// any of its output), else on to the log file, whose descriptor it must then keep (the
/// returned one). Never to a descriptor it closed, whose number a connection may reuse.
pub fn in_forked_worker(output_piped: bool) -> Option<std::os::fd::RawFd> {
    let sink = SINK.get()?;
    if output_piped {
        sink.to_stderr.store(true, Ordering::SeqCst);
        return None;
    }
    // The supervisor is single-threaded: nobody held the lock across the fork.
    let file = sink.file.lock().unwrap_or_else(|p| p.into_inner());
    Some(file.as_raw_fd())
}

/// Where the subscriber writes: the log file if one is open, else stderr.
struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match SINK.get() {
            Some(sink) if !sink.to_stderr.load(Ordering::Relaxed) => {
                let mut file = sink.file.lock().unwrap_or_else(|p| p.into_inner());
                file.write(buf)
            }
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs drover's subscriber, unless the program (an embedded server) installed its
/// own: that one stays, and drover's lines go where it sends them. The workers' output is
/// logged at INFO whatever `level` (an operator who asked for it with `--worker-output log`
/// and quietened drover with `--log-level warn` still gets it).
pub fn install_subscriber(level: tracing::Level, format: LogFormat) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target(workers::TARGET, level.max(tracing::Level::INFO));
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| LogWriter)
        .with_target(false);
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.event_format(json::JsonLines).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(flags: &[&str], file: &str) -> Result<LogSettings, UsageError> {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            log: LogArgs,
        }
        let args = T::try_parse_from(std::iter::once("t").chain(flags.iter().copied()))
            .unwrap()
            .log;
        LogSettings::resolve(&args, &FileConfig::parse(file).unwrap())
    }

    #[test]
    fn flags_beat_the_file_and_bad_values_name_the_key() {
        let s = resolve(
            &["--log-format", "json"],
            "log_format = \"text\"\nlog_file = \"/var/log/d.log\"\nworker_output = \"log\"\ndaemonize = true\n",
        )
        .unwrap();
        assert_eq!(s.format, LogFormat::Json);
        assert_eq!(s.file, Some(PathBuf::from("/var/log/d.log")));
        assert_eq!(s.worker_output, WorkerOutputMode::Log);
        assert!(s.daemonize);
        let defaults = resolve(&[], "").unwrap();
        assert_eq!(defaults, LogSettings::default());
        let e = resolve(&[], "log_format = \"xml\"").unwrap_err();
        assert!(e.0.contains("`log_format`") && e.0.contains("json"), "{e}");
        let e = resolve(&[], "worker_output = \"file\"").unwrap_err();
        assert!(
            e.0.contains("`worker_output`") && e.0.contains("inherit"),
            "{e}"
        );
        let e = resolve(&[], "daemonize = \"yes\"").unwrap_err();
        assert!(e.0.contains("`daemonize`"), "{e}");
        let e = resolve(&[], "log_file = \"\"").unwrap_err();
        assert!(e.0.contains("`log_file`"), "{e}");
    }

    #[test]
    fn a_reload_names_the_log_keys_it_cannot_change() {
        let old = LogSettings::default();
        let new = LogSettings {
            file: Some("/x".into()),
            format: LogFormat::Json,
            ..LogSettings::default()
        };
        assert_eq!(old.restart_only_changes(&new), ["log_file", "log_format"]);
        assert!(old.restart_only_changes(&old).is_empty());
    }
}
