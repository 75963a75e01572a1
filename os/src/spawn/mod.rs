//! Starting workers: fork/exec of command workers with systemd conventions, or fork alone
//! for the embedded runtime (a [`ForkedWorker`], the very program that runs drover).
//!
//! Command workers: everything the child needs is prepared in the parent; between `fork` and
//! `execve` the child only makes async-signal-safe system calls (no allocation, no locks).
//! Forked workers: the supervisor is single-threaded (checked before every fork), so the
//! child is an ordinary single-threaded process once fork returns.
//!
//! Every signal is blocked across `fork`, so a signal can never run one of the supervisor's
//! handlers inside a child (they write to the supervisor's self-pipe); the child resets
//! caught signals to their default before it unblocks them.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use drover_machine::{Generation, Pid, SpawnError, WorkerId};
use nix::errno::Errno;
use nix::unistd::{fork, pipe2, ForkResult};

pub use crate::forking::open_fds;
use crate::forking::{block_all_signals, close_fds_except, restore_signals, single_threaded};

use crate::process::{failure, ChildSetup, FAILURE_LEN};
use crate::settings::Settings;

mod exec;
use exec::{child_prelude, exec_child, place_stdio, reset_caught_signals, ChildPlan};

/// What a worker process is: the part a reload can change.
pub struct WorkerSpec {
    program: CString,
    argv: Vec<CString>,
    env: Vec<CString>,
    watchdog_usec: Option<u64>,
    threads: u32,
    /// Variables of `--env`: they replace inherited ones of the same name.
    env_names: Vec<String>,
    /// User, umask and directory (`--user`, `--umask`, `--chdir`).
    setup: ChildSetup,
    /// The program's name in an embedded worker's process title.
    title: String,
    /// The TLS configs an embedded worker serves its listeners with.
    pub tls: crate::tls::WorkerTls,
}

impl WorkerSpec {
    pub fn new(settings: &Settings) -> WorkerSpec {
        let c = |s: &[u8]| CString::new(s).unwrap_or_else(|_| CString::new("?").expect("no NUL"));
        WorkerSpec {
            program: c(settings.program.as_os_str().as_bytes()),
            argv: settings.command.iter().map(|a| c(a.as_bytes())).collect(),
            env: (settings.process.env.iter())
                .chain(&settings.worker_env)
                .map(|(k, v)| var(k, v))
                .collect(),
            watchdog_usec: settings.watchdog_usec(),
            threads: settings.machine.threads,
            env_names: settings
                .process
                .env
                .iter()
                .map(|(k, _)| k.clone())
                .collect(),
            setup: ChildSetup::new(&settings.process),
            title: settings.title.clone(),
            tls: settings.tls.for_workers(),
        }
    }
}

/// A worker's own listening socket (`--listen-per-worker`): passed after the shared
/// listeners, named in LISTEN_FDNAMES, its port in `DROVER_WORKER_PORT`.
#[derive(Clone, Copy, Debug)]
pub struct OwnSocket<'a> {
    /// The supervisor's descriptor, kept across the slot's restarts.
    pub fd: RawFd,
    pub name: &'a str,
    pub port: u16,
}

/// What a forked (embedded) worker gets from the supervisor, in the child.
pub struct ForkedChild<'a> {
    pub worker: WorkerId,
    pub generation: Generation,
    /// The listening sockets (at the supervisor's fd numbers; one open file shared with the
    /// supervisor and every worker) and their names.
    pub listen_fds: &'a [RawFd],
    pub listen_names: &'a [String],
    /// The TLS configs of the listeners that serve TLS, by name.
    pub tls: &'a crate::tls::WorkerTls,
    pub notify_path: &'a Path,
    pub watchdog_usec: Option<u64>,
    pub threads: u32,
    /// The worker's own port (`--listen-per-worker`), whose socket is the last of
    /// `listen_fds`.
    pub worker_port: Option<u16>,
    /// Read end of the death pipe: EOF (POLLHUP) once the supervisor is gone.
    pub death_read: RawFd,
}

/// A worker that is this program itself: forked, never exec'd (the embedded runtime).
pub trait ForkedWorker {
    /// The program's own descriptors, which the child keeps (besides stdio and listeners);
    /// every other one (the supervisor's sockets, pipes and pid file) is closed in the child.
    fn keep_fds(&self) -> &[RawFd];
    /// Runs in the supervisor just before each fork.
    fn before_fork(&mut self);
    /// Runs in the supervisor before `worker` is forked (after `before_fork`): what the
    /// slot's previous occupant left must not pass for the new worker's (the report board).
    fn prepare(&mut self, _worker: WorkerId) {}
    /// The report board the workers publish their heartbeats and load on, which the shell
    /// reads on every wake-up.
    fn board(&self) -> Option<&crate::board::Board> {
        None
    }
    /// Runs in the child and returns its exit code; the child never returns into the
    /// supervisor (a panic exits 70). Every signal is blocked on entry: the worker unblocks
    /// what it handles once its handlers are installed.
    fn run(&mut self, child: ForkedChild<'_>) -> i32;
}

pub struct Spawner {
    pub spec: WorkerSpec,
    /// Listener fds, all at `3 + listen_fds.len()` or above (see `listen::open_all_with`).
    listen_fds: Vec<RawFd>,
    listen_names: String,
    listen_name_list: Vec<String>,
    notify_path: String,
    notify_path_buf: PathBuf,
    /// Set for the embedded runtime: workers are forked, not exec'd.
    forked: Option<Box<dyn ForkedWorker>>,
    /// Inherited environment minus the variables drover sets.
    base_env: Vec<CString>,
    parent: libc::pid_t,
    /// The supervisor holds the write end for its whole life; a child sees EOF on the read
    /// end once the supervisor is gone. Command workers check it once before exec (their
    /// lasting guard is PR_SET_PDEATHSIG); the embedded runtime keeps polling it.
    death_read: OwnedFd,
    death_write: OwnedFd,
}

fn var(k: &str, v: &str) -> CString {
    CString::new(format!("{k}={v}"))
        .unwrap_or_else(|_| CString::new("DROVER_BAD_VAR=").expect("no NUL"))
}

/// This process's environment as `KEY=VALUE` strings, without the variables in `strip`.
fn environment_without(strip: &[&str]) -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| !strip.iter().any(|o| k.as_bytes() == o.as_bytes()))
        .filter_map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            CString::new(kv.as_bytes()).ok()
        })
        .collect()
}

impl Spawner {
    pub fn new(
        spec: WorkerSpec,
        listen_fds: Vec<RawFd>,
        listen_names: Vec<String>,
        notify_path: &Path,
        forked: Option<Box<dyn ForkedWorker>>,
    ) -> std::io::Result<Spawner> {
        let base_env = environment_without(crate::process::OURS);
        let (death_read, death_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Spawner {
            spec,
            listen_fds,
            listen_names: listen_names.join(":"),
            listen_name_list: listen_names,
            notify_path: notify_path.to_string_lossy().into_owned(),
            notify_path_buf: notify_path.to_path_buf(),
            forked,
            base_env,
            parent: std::process::id() as libc::pid_t,
            death_read,
            death_write,
        })
    }

    /// Starts one worker: forks and execs the command, or forks the embedded runtime.
    /// `stdio`: the descriptors that become the worker's stdout and stderr (its output
    /// pipes, `--worker-output log`), else it inherits drover's.
    /// `own`: the worker's own socket, if the slot has one.
    pub fn spawn(
        &mut self,
        worker: WorkerId,
        generation: Generation,
        stdio: Option<[RawFd; 2]>,
        own: Option<OwnSocket<'_>>,
    ) -> Result<Pid, SpawnError> {
        if self.forked.is_some() {
            self.spawn_forked(worker, generation, stdio, own)
        } else {
            self.spawn_command(worker, generation, stdio, own)
        }
    }

    /// Forks and execs one worker. Returns once the child has exec'd (or failed to), so a
    /// missing program is a `SpawnFailed`, not a crash.
    fn spawn_command(
        &self,
        worker: WorkerId,
        generation: Generation,
        stdio: Option<[RawFd; 2]>,
        own: Option<OwnSocket<'_>>,
    ) -> Result<Pid, SpawnError> {
        let mut env: Vec<CString> = self.base_env.clone();
        if !self.spec.env_names.is_empty() {
            // getenv takes the first of two same names: an inherited one would win.
            env.retain(|kv| {
                let name = kv.as_bytes().split(|&b| b == b'=').next().unwrap_or(&[]);
                !self.spec.env_names.iter().any(|n| n.as_bytes() == name)
            });
        }
        // The own socket goes last, from a copy above the targets 3..3+n (see `exec_child`),
        // closed again once the child has exec'd.
        let own_high = match own {
            Some(o) => Some(dup_above(o.fd, 3 + self.listen_fds.len() as RawFd + 1)?),
            None => None,
        };
        let mut fds = self.listen_fds.clone();
        fds.extend(own_high.as_ref().map(|fd| fd.as_raw_fd()));
        if !fds.is_empty() {
            env.push(var("LISTEN_FDS", &fds.len().to_string()));
            let names = match own {
                Some(o) if self.listen_names.is_empty() => o.name.to_string(),
                Some(o) => format!("{}:{}", self.listen_names, o.name),
                None => self.listen_names.clone(),
            };
            env.push(var("LISTEN_FDNAMES", &names));
        }
        if let Some(o) = own {
            env.push(var("DROVER_WORKER_PORT", &o.port.to_string()));
        }
        env.push(var("NOTIFY_SOCKET", &self.notify_path));
        if let Some(usec) = self.spec.watchdog_usec {
            env.push(var("WATCHDOG_USEC", &usec.to_string()));
        }
        env.push(var("DROVER_WORKER_ID", &worker.slot.to_string()));
        env.push(var("DROVER_GENERATION", &generation.0.to_string()));
        env.extend(self.spec.env.iter().cloned());
        self.fork_exec(
            &self.spec.program,
            &self.spec.argv,
            env,
            &fds,
            Some(&self.spec.setup),
            stdio,
        )
    }

    /// The embedded runtime's report board, if workers publish on one.
    pub fn board(&self) -> Option<&crate::board::Board> {
        self.forked.as_ref()?.board()
    }

    /// The listeners of a reload: the next workers get these.
    pub fn set_listeners(&mut self, fds: Vec<RawFd>, names: Vec<String>) {
        self.listen_fds = fds;
        self.listen_names = names.join(":");
        self.listen_name_list = names;
    }

    /// Starts the successor of a live upgrade: `program` with `argv`, drover's own
    /// environment (so NOTIFY_SOCKET and WATCHDOG_USEC are drover's service manager's, not
    /// the workers') plus `extra_env`, the listeners at fd 3 onwards (LISTEN_FDS/LISTEN_FDNAMES/
    /// LISTEN_PID, as systemd would pass them) and `channel` right after them. Unlike a
    /// worker it must outlive this supervisor: no parent-death signal, no own group.
    /// `extra`: more sockets to hand over after the listeners (the per-worker ports), each
    /// with its LISTEN_FDNAMES entry.
    pub fn spawn_successor(
        &self,
        program: &CString,
        argv: &[CString],
        extra_env: &[(&str, String)],
        extra: &[(RawFd, String)],
        channel: RawFd,
    ) -> Result<Pid, SpawnError> {
        let strip: Vec<&str> = crate::process::OURS
            .iter()
            .copied()
            // drover's own manager and watchdog period pass on; WATCHDOG_PID (ours) not.
            .filter(|k| *k != "NOTIFY_SOCKET" && *k != "WATCHDOG_USEC")
            .collect();
        let mut env = environment_without(&strip);
        let mut names = self.listen_name_list.clone();
        names.extend(extra.iter().map(|(_, name)| name.clone()));
        env.push(var("LISTEN_FDS", &names.len().to_string()));
        env.push(var("LISTEN_FDNAMES", &names.join(":")));
        for (k, v) in extra_env {
            env.push(var(k, v));
        }
        // The listeners sit at 3 + their count or above, so each is copied before a later
        // target can overwrite it; the rest may sit anywhere and are first copied above
        // every target 3..3+n+1 (see `exec_child`).
        let floor = 3 + (names.len() + 1) as RawFd;
        let high: Vec<OwnedFd> = extra
            .iter()
            .map(|(fd, _)| *fd)
            .chain([channel])
            .map(|fd| dup_above(fd, floor))
            .collect::<Result<_, _>>()?;
        let fds: Vec<RawFd> = self
            .listen_fds
            .iter()
            .copied()
            .chain(high.iter().map(|fd| fd.as_raw_fd()))
            .collect();
        self.fork_exec(program, argv, env, &fds, None, None)
    }

    /// fork + execve with `fds` placed at 3, 4, …; `LISTEN_PID` is set in the child when
    /// there is any fd to pass. A `worker` (its setup given) dies with the supervisor,
    /// leads an own group and applies its setup before exec. `stdio`: placed at 1 and 2.
    fn fork_exec(
        &self,
        program: &CString,
        argv: &[CString],
        env: Vec<CString>,
        fds: &[RawFd],
        worker: Option<&ChildSetup>,
        stdio: Option<[RawFd; 2]>,
    ) -> Result<Pid, SpawnError> {
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
        // The child writes its LISTEN_PID here; the array stays NULL-terminated.
        let listen_pid_slot = (!fds.is_empty()).then_some(envp.len());
        envp.push(std::ptr::null());
        envp.push(std::ptr::null());
        let mut argv: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());

        let (err_read, err_write) =
            pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Other(e as i32))?;
        let child = ChildPlan {
            program: program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_mut_ptr(),
            listen_pid_slot,
            listen_fds: fds,
            worker,
            parent: self.parent,
            death_read: self.death_read.as_raw_fd(),
            death_write: self.death_write.as_raw_fd(),
            err_write: err_write.as_raw_fd(),
            stdio,
        };
        // The child unblocks them in `exec_child`, after resetting the supervisor's handlers.
        let mask = block_all_signals();
        // SAFETY: the supervisor is single-threaded, and the child branch only runs
        // `exec_child`, which makes async-signal-safe calls on memory prepared above and
        // never returns.
        let result = unsafe { fork() };
        if !matches!(result, Ok(ForkResult::Child)) {
            restore_signals(&mask);
        }
        match result {
            Err(e) => Err(spawn_error(e as i32)),
            Ok(ForkResult::Child) => {
                // SAFETY: we are the freshly forked child; see `exec_child`.
                unsafe { exec_child(&child) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(err_write);
                if worker.is_some() {
                    // Also set in the child: whichever runs first, the group exists before
                    // the supervisor can signal it. Fails harmlessly once the child has
                    // exec'd.
                    let _ = nix::unistd::setpgid(child, child);
                }
                let mut buf = [0u8; FAILURE_LEN];
                let n = loop {
                    match nix::unistd::read(err_read.as_fd(), &mut buf) {
                        Err(Errno::EINTR) => continue,
                        other => break other.unwrap_or(0),
                    }
                };
                if n == 0 {
                    return Ok(Pid(child.as_raw() as u32));
                }
                // exec failed: the child exits at once. It was never a worker, so reaping it
                // here cannot confuse the machine's pid bookkeeping.
                let _ = nix::sys::wait::waitpid(child, None);
                Err(spawn_error(failure(&buf, worker)))
            }
        }
    }

    /// Forks one embedded worker; the child runs `ForkedWorker::run` and exits.
    fn spawn_forked(
        &mut self,
        worker: WorkerId,
        generation: Generation,
        stdio: Option<[RawFd; 2]>,
        own: Option<OwnSocket<'_>>,
    ) -> Result<Pid, SpawnError> {
        // Prepared before the fork: the child allocates nothing it need not.
        let mut listen_fds = self.listen_fds.clone();
        let mut listen_names = self.listen_name_list.clone();
        if let Some(o) = own {
            listen_fds.push(o.fd);
            listen_names.push(o.name.to_string());
        }
        let forked = self
            .forked
            .as_mut()
            .expect("spawn_forked without a forked worker");
        forked.before_fork();
        forked.prepare(worker);
        // fork() copies only the calling thread: a lock held by any other thread (the
        // allocator's, stdout's) would stay locked forever in the child.
        if let Err(why) = single_threaded() {
            tracing::error!(
                "cannot fork w={worker}: {why} (a before_fork hook or the program may have started a thread); an embedded server must stay single-threaded"
            );
            return Err(SpawnError::Other(libc::EDEADLK));
        }
        // The child would flush a copy of anything buffered.
        let _ = std::io::stdout().flush();
        let mask = block_all_signals();
        // SAFETY: the process is single-threaded (checked above), so the child is a complete
        // copy of it; the child never returns from this branch (it ends in `_exit`).
        let result = unsafe { fork() };
        match result {
            Err(e) => {
                restore_signals(&mask);
                Err(spawn_error(e as i32))
            }
            Ok(ForkResult::Child) => {
                // SAFETY: freshly forked child; `child_prelude` makes only plain system
                // calls on integers.
                unsafe {
                    child_prelude(
                        self.parent,
                        self.death_read.as_raw_fd(),
                        self.death_write.as_raw_fd(),
                    )
                };
                // SAFETY: resets handlers installed by the supervisor; see the function.
                unsafe { reset_caught_signals(false) };
                if let Some(fds) = stdio {
                    // SAFETY: dup2 onto this forked child's own stdout and stderr.
                    if unsafe { place_stdio(fds) } < 0 {
                        // SAFETY: ends the child before it runs any of the program's code.
                        unsafe { libc::_exit(71) }
                    }
                }
                let log_fd = crate::log::in_forked_worker(stdio.is_some());
                let keep: Vec<RawFd> = listen_fds
                    .iter()
                    .copied()
                    .chain([self.death_read.as_raw_fd()])
                    .chain(log_fd)
                    .chain(forked.keep_fds().iter().copied())
                    .collect();
                close_fds_except(&keep);
                // SAFETY: the freshly forked, single-threaded child (see above).
                unsafe { self.spec.setup.apply_forked(self.parent, worker) };
                crate::title::worker(worker.slot, generation.0, &self.spec.title);
                let child = ForkedChild {
                    worker,
                    generation,
                    listen_fds: &listen_fds,
                    listen_names: &listen_names,
                    tls: &self.spec.tls,
                    notify_path: &self.notify_path_buf,
                    watchdog_usec: self.spec.watchdog_usec,
                    threads: self.spec.threads,
                    worker_port: own.map(|o| o.port),
                    death_read: self.death_read.as_raw_fd(),
                };
                let run = std::panic::AssertUnwindSafe(|| forked.run(child));
                let code = std::panic::catch_unwind(run).unwrap_or(70);
                let _ = std::io::stdout().flush();
                let _ = std::io::stderr().flush();
                // SAFETY: ends the child without unwinding into the supervisor's frames and
                // without running the supervisor's exit handlers.
                unsafe { libc::_exit(code) }
            }
            Ok(ForkResult::Parent { child }) => {
                restore_signals(&mask);
                // Also done by the child: whichever runs first, the group exists before the
                // supervisor can signal it.
                let _ = nix::unistd::setpgid(child, child);
                Ok(Pid(child.as_raw() as u32))
            }
        }
    }
}

/// A close-on-exec copy of `fd` at `floor` or above.
fn dup_above(fd: RawFd, floor: RawFd) -> Result<OwnedFd, SpawnError> {
    let high = nix::fcntl::fcntl(
        // SAFETY: `fd` is an open descriptor the caller holds for this call.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(floor),
    )
    .map_err(|e| SpawnError::Other(e as i32))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) })
}

fn spawn_error(errno: i32) -> SpawnError {
    match Errno::from_raw(errno) {
        Errno::EAGAIN | Errno::ENOMEM => SpawnError::Resources,
        Errno::ENOENT | Errno::EACCES | Errno::ENOEXEC | Errno::ENOTDIR | Errno::ELOOP => {
            SpawnError::Exec
        }
        _ => SpawnError::Other(errno),
    }
}
