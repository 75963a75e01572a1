//! `--daemonize`: detach from the terminal, and let the launching command exit only once
//! the pool is ready (0), or with the start-up error (non-zero), so that
//! `drover run --daemonize … && next-step` is safe.
//!
//! The classic double fork, done while drover is still single-threaded (before the group
//! guard, the signal handlers, any socket): the launcher forks an intermediate child, which
//! calls `setsid` (a new session, no controlling terminal) and forks the daemon, which is
//! then no session leader and can never acquire a terminal again. The intermediate child
//! exits at once and the launcher reaps it (no zombie; serverengine leaves its intermediate
//! child unreaped). The daemon's stdin is /dev/null; its stdout and stderr are the log
//! file with `--log-file`, else /dev/null. The daemon keeps the working directory it was
//! started in, as serverengine's does: relative paths in the flags, the config file (re-read
//! on reload) and the command keep meaning what they meant to the launcher.
//!
//! A pipe from the daemon to the launcher carries the outcome: `R` once the machine says
//! the pool is ready (`PoolReady`, when READY=1 goes to a service manager), or `E`, an exit
//! code and the message of a start-up error. EOF with neither: the daemon died first. A
//! worker that fails before the pool was ever ready fails the start, and the daemon stops:
//! a broken release must not hold `drover run --daemonize && next-step` forever (with the
//! default restart policy a worker that always fails never counts as crash-looping).

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use drover_machine::Config;
use nix::fcntl::OFlag;
use nix::unistd::{fork, ForkResult};

use crate::settings::Settings;

/// The longest start-up error the launcher prints.
const MESSAGE_MAX: u64 = 64 * 1024;

/// Which side of the fork this process is.
pub enum Side {
    /// The launching command, done: its exit code.
    Launcher(i32),
    /// The daemon, holding the pipe to the launcher.
    Daemon(Launcher),
}

/// The daemon's end of the pipe to the waiting launcher.
pub struct Launcher {
    pipe: OwnedFd,
    /// The last unexpected worker exit, for the message of a failed start.
    last_exit: Option<String>,
}

impl Launcher {
    fn new(pipe: OwnedFd) -> Launcher {
        Launcher {
            pipe,
            last_exit: None,
        }
    }

    /// A worker exited unexpectedly (the machine's `Exited`, not `expected`).
    pub fn worker_exited(&mut self, what: String) {
        self.last_exit = Some(what);
    }

    /// The machine declared the start failed (`Event::StartFailed`: a worker failed before
    /// the pool was ever ready, and `fail_start` is on while a launcher waits, see
    /// `machine_config`): the launcher exits 1 with why; the machine stops the pool, so that
    /// a failed start leaves nothing running behind the operator's back.
    pub fn start_failed(self, slot: u32) {
        let what = self
            .last_exit
            .clone()
            .unwrap_or_else(|| format!("worker slot {slot} failed to start"));
        self.fail(
            1,
            &format!("{what} before the pool was ready; the daemon stops (see its log)"),
        );
    }

    /// The pool is ready: the launcher exits 0.
    pub fn ready(self) {
        self.send(b"R");
    }

    /// The start failed (or will not succeed): the launcher prints `message` and exits
    /// with `code`.
    pub fn fail(self, code: i32, message: &str) {
        let mut out = vec![b'E', code.clamp(1, 255) as u8];
        out.extend_from_slice(message.as_bytes());
        self.send(&out);
    }

    fn send(self, bytes: &[u8]) {
        // The launcher is blocked reading: a short message fits the pipe at once.
        let _ = nix::unistd::write(&self.pipe, bytes);
    }
}

/// The machine's config for this drover: while a launcher waits for the start's outcome, a
/// worker failure before the pool is ready fails the start (`Restart::fail_start`), as
/// systemd fails a service's start; once the launcher has its answer, failures are the
/// restart policy's again.
pub fn machine_config(config: &Config, launcher: Option<&Launcher>) -> Config {
    let mut config = config.clone();
    config.restart.fail_start = launcher.is_some();
    config
}

/// Whether this drover daemonizes: asked for, and not a drover another drover started (a
/// live upgrade's successor or a supervised child, already detached with their parent).
pub fn wanted(settings: &Settings) -> bool {
    let started_by_drover = [
        crate::upgrade::UPGRADE_FD_VAR,
        crate::upgrade::SUPERVISED_VAR,
    ]
    .iter()
    .any(|v| std::env::var_os(v).is_some());
    settings.log.daemonize && !started_by_drover
}

/// Forks the daemon; returns in the launcher once the daemon's start is decided, and in the
/// daemon at once.
pub fn daemonize(log_file: Option<&Path>) -> Result<Side, String> {
    crate::forking::single_threaded()
        .map_err(|why| format!("{why}; drover must daemonize before it starts any thread"))?;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let null = nix::fcntl::open(
        "/dev/null",
        OFlag::O_RDWR | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("/dev/null: {e}"))?;
    // The children would write out a copy of anything buffered.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    // SAFETY: the process is single-threaded (checked above): the child is a whole copy.
    match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
        ForkResult::Parent { child } => {
            drop(write);
            // The intermediate child exits right after its own fork.
            let _ = nix::sys::wait::waitpid(child, None);
            Ok(Side::Launcher(wait_for_daemon(read, log_file)))
        }
        ForkResult::Child => {
            drop(read);
            if let Err(e) = nix::unistd::setsid() {
                Launcher::new(write).fail(1, &format!("--daemonize: setsid: {e}"));
                // SAFETY: ends the intermediate child without running the launcher's exit
                // handlers or destructors twice.
                unsafe { libc::_exit(1) };
            }
            // SAFETY: still single-threaded.
            match unsafe { fork() } {
                Ok(ForkResult::Parent { .. }) => {
                    // SAFETY: as above.
                    unsafe { libc::_exit(0) }
                }
                Err(e) => {
                    Launcher::new(write).fail(1, &format!("--daemonize: fork: {e}"));
                    // SAFETY: as above.
                    unsafe { libc::_exit(1) }
                }
                Ok(ForkResult::Child) => {
                    let out = crate::log::file_for_stdio().unwrap_or(null.as_raw_fd());
                    for (fd, target) in [(null.as_raw_fd(), 0), (out, 1), (out, 2)] {
                        // SAFETY: dup2 onto this process's standard descriptors.
                        unsafe { libc::dup2(fd, target) };
                    }
                    drop(null);
                    Ok(Side::Daemon(Launcher::new(write)))
                }
            }
        }
    }
}

/// The launcher's wait: the daemon's outcome, printed; the exit code.
fn wait_for_daemon(read: OwnedFd, log_file: Option<&Path>) -> i32 {
    let mut pipe = std::fs::File::from(read).take(MESSAGE_MAX);
    let mut kind = [0u8; 1];
    let got = loop {
        match pipe.read(&mut kind) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => break other.unwrap_or(0),
        }
    };
    // Ready is one byte: no need to wait for EOF, which a descriptor leaked into another
    // process would delay.
    if got == 1 && kind[0] == b'R' {
        return 0;
    }
    let mut rest = Vec::new();
    let _ = pipe.read_to_end(&mut rest);
    match (got, kind[0]) {
        (1, b'E') if !rest.is_empty() => {
            eprintln!("drover: {}", String::from_utf8_lossy(&rest[1..]));
            i32::from(rest[0]).max(1)
        }
        _ => {
            let hint = match log_file {
                Some(p) => format!("; see its log, {}", p.display()),
                None => "; run it without --daemonize, or with --log-file, to see why".into(),
            };
            eprintln!("drover: the daemon exited before the pool was ready{hint}");
            1
        }
    }
}
