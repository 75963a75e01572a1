//! fork/exec of command workers with systemd conventions.
//!
//! Everything the child needs is prepared in the parent; between `fork` and `execve` the
//! child only makes async-signal-safe system calls (no allocation, no locks).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use drover_machine::{Generation, Pid, SpawnError, WorkerId};
use nix::errno::Errno;
use nix::unistd::{fork, pipe2, ForkResult};

/// What a worker process is: the part a reload can change.
pub struct WorkerSpec {
    program: CString,
    argv: Vec<CString>,
    watchdog_usec: Option<u64>,
}

impl WorkerSpec {
    pub fn new(program: &Path, command: &[String], watchdog_usec: Option<u64>) -> WorkerSpec {
        let c = |s: &[u8]| CString::new(s).unwrap_or_else(|_| CString::new("?").expect("no NUL"));
        WorkerSpec {
            program: c(program.as_os_str().as_bytes()),
            argv: command.iter().map(|a| c(a.as_bytes())).collect(),
            watchdog_usec,
        }
    }
}

pub struct Spawner {
    pub spec: WorkerSpec,
    /// Listener fds, all at `3 + listen_fds.len()` or above (see `listen::open_all`).
    listen_fds: Vec<RawFd>,
    listen_names: String,
    notify_path: String,
    /// Inherited environment minus the variables drover sets.
    base_env: Vec<CString>,
    parent: libc::pid_t,
    /// The supervisor holds the write end for its whole life; a child sees EOF on the read
    /// end once the supervisor is gone. Command workers check it once before exec (their
    /// lasting guard is PR_SET_PDEATHSIG); an embedded runtime can keep polling it.
    death_read: OwnedFd,
    death_write: OwnedFd,
}

const OURS: &[&str] = &[
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "DROVER_WORKER_ID",
    "DROVER_GENERATION",
];

impl Spawner {
    pub fn new(
        spec: WorkerSpec,
        listen_fds: Vec<RawFd>,
        listen_names: Vec<String>,
        notify_path: &Path,
    ) -> std::io::Result<Spawner> {
        let base_env = std::env::vars_os()
            .filter(|(k, _)| !OURS.iter().any(|o| k.as_bytes() == o.as_bytes()))
            .filter_map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                CString::new(kv.as_bytes()).ok()
            })
            .collect();
        let (death_read, death_write) = pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok(Spawner {
            spec,
            listen_fds,
            listen_names: listen_names.join(":"),
            notify_path: notify_path.to_string_lossy().into_owned(),
            base_env,
            parent: std::process::id() as libc::pid_t,
            death_read,
            death_write,
        })
    }

    /// Forks and execs one worker. Returns once the child has exec'd (or failed to), so a
    /// missing program is a `SpawnFailed`, not a crash.
    pub fn spawn(&self, worker: WorkerId, generation: Generation) -> Result<Pid, SpawnError> {
        let var = |k: &str, v: &str| CString::new(format!("{k}={v}")).expect("no NUL");
        let mut env: Vec<CString> = self.base_env.clone();
        if !self.listen_fds.is_empty() {
            env.push(var("LISTEN_FDS", &self.listen_fds.len().to_string()));
            env.push(var("LISTEN_FDNAMES", &self.listen_names));
        }
        env.push(var("NOTIFY_SOCKET", &self.notify_path));
        if let Some(usec) = self.spec.watchdog_usec {
            env.push(var("WATCHDOG_USEC", &usec.to_string()));
        }
        env.push(var("DROVER_WORKER_ID", &worker.slot.to_string()));
        env.push(var("DROVER_GENERATION", &generation.0.to_string()));

        let mut envp: Vec<*const libc::c_char> = env.iter().map(|c| c.as_ptr()).collect();
        // The child writes its LISTEN_PID here; the array stays NULL-terminated.
        let listen_pid_slot = (!self.listen_fds.is_empty()).then_some(envp.len());
        envp.push(std::ptr::null());
        envp.push(std::ptr::null());
        let mut argv: Vec<*const libc::c_char> =
            self.spec.argv.iter().map(|c| c.as_ptr()).collect();
        argv.push(std::ptr::null());

        let (err_read, err_write) =
            pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SpawnError::Other(e as i32))?;
        let child = ChildPlan {
            program: self.spec.program.as_ptr(),
            argv: argv.as_ptr(),
            envp: envp.as_mut_ptr(),
            listen_pid_slot,
            listen_fds: &self.listen_fds,
            parent: self.parent,
            death_read: self.death_read.as_raw_fd(),
            death_write: self.death_write.as_raw_fd(),
            err_write: err_write.as_raw_fd(),
        };
        // SAFETY: the supervisor is single-threaded, and the child branch only runs
        // `exec_child`, which makes async-signal-safe calls on memory prepared above and
        // never returns.
        match unsafe { fork() } {
            Err(e) => Err(spawn_error(e as i32)),
            Ok(ForkResult::Child) => {
                // SAFETY: we are the freshly forked child; see `exec_child`.
                unsafe { exec_child(&child) }
            }
            Ok(ForkResult::Parent { child }) => {
                drop(err_write);
                // Also set in the child: whichever runs first, the group exists before the
                // supervisor can signal it. Fails harmlessly once the child has exec'd.
                let _ = nix::unistd::setpgid(child, child);
                let mut buf = [0u8; 4];
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
                Err(spawn_error(i32::from_ne_bytes(buf)))
            }
        }
    }

    /// The death pipe's read end, for an embedded runtime (not used by command workers).
    #[allow(dead_code)]
    pub fn death_read(&self) -> RawFd {
        self.death_read.as_raw_fd()
    }
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

struct ChildPlan<'a> {
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *mut *const libc::c_char,
    listen_pid_slot: Option<usize>,
    listen_fds: &'a [RawFd],
    parent: libc::pid_t,
    death_read: RawFd,
    death_write: RawFd,
    err_write: RawFd,
}

/// The child between fork and exec.
///
/// # Safety
/// Call only in a freshly forked child of a single-threaded process, with `plan`'s pointers
/// valid (they point into the parent's memory, which the child has a copy of).
unsafe fn exec_child(plan: &ChildPlan) -> ! {
    // SAFETY (whole body): only async-signal-safe libc calls on plain integers and on memory
    // prepared before fork; no allocation, no locks, no unwinding (every path ends in execve
    // or _exit).
    unsafe {
        // Die with the supervisor. PR_SET_PDEATHSIG fires when the forking *thread* exits;
        // the supervisor has only one.
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        // The supervisor may have died before the prctl: then nobody would kill us.
        if libc::getppid() != plan.parent {
            libc::_exit(126);
        }
        // Same check through the death pipe: EOF once no write end is left but ours.
        libc::close(plan.death_write);
        let mut pfd = libc::pollfd {
            fd: plan.death_read,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0 {
            libc::_exit(126);
        }
        // Own process group: the supervisor's signals reach the whole worker (a program
        // behind `sh -c` included), and a terminal's ^C reaches only the supervisor.
        libc::setpgid(0, 0);
        // A clean signal state: handlers reset on exec, but the mask and ignored signals
        // (Rust ignores SIGPIPE) are inherited.
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        let n = plan.listen_fds.len() as RawFd;
        // Keep the error pipe out of the way of fds 3..3+n.
        let mut err = plan.err_write;
        if err < 3 + n {
            err = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 3 + n);
        }
        for (i, &fd) in plan.listen_fds.iter().enumerate() {
            let target = 3 + i as RawFd;
            // Listener fds are all >= 3 + n, so this never clobbers one not yet copied.
            // dup2 clears close-on-exec on the copy.
            if libc::dup2(fd, target) < 0 {
                fail(err);
            }
        }
        let mut pid_var = [0u8; 40];
        if let Some(slot) = plan.listen_pid_slot {
            write_pid_var(&mut pid_var, libc::getpid());
            *plan.envp.add(slot) = pid_var.as_ptr().cast();
        }
        libc::execve(plan.program, plan.argv, plan.envp.cast_const());
        fail(err)
    }
}

/// Reports errno to the parent and exits.
unsafe fn fail(err: RawFd) -> ! {
    // SAFETY: async-signal-safe calls only; see `exec_child`.
    unsafe {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(err, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// Writes `LISTEN_PID=<pid>\0` into `buf` without allocating.
fn write_pid_var(buf: &mut [u8; 40], pid: libc::pid_t) {
    let prefix = b"LISTEN_PID=";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 12];
    let mut n = pid.max(0) as u32;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        buf[prefix.len() + i] = digits[len - 1 - i];
    }
    buf[prefix.len() + len] = 0;
}

#[cfg(test)]
mod tests {
    #[test]
    fn pid_var_is_formatted_without_allocation() {
        let mut buf = [0xffu8; 40];
        super::write_pid_var(&mut buf, 40213);
        let end = buf.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&buf[..end], b"LISTEN_PID=40213");
        super::write_pid_var(&mut buf, 7);
        let end = buf.iter().position(|&b| b == 0).unwrap();
        assert_eq!(&buf[..end], b"LISTEN_PID=7");
    }
}
