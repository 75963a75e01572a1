//! A command worker's life between `fork` and `execve` ([`exec_child`]): only
//! async-signal-safe calls on the memory its [`ChildPlan`] points into, prepared in the
//! parent before the fork (no allocation, no locks, no unwinding). Its first steps (dying
//! with the supervisor, default signal handlers, the output pipes) are a forked embedded
//! worker's too.

use std::os::fd::RawFd;

use crate::identity::Step;
use crate::process::{encode_failure, ChildSetup};

pub(super) struct ChildPlan<'a> {
    pub(super) program: *const libc::c_char,
    pub(super) argv: *const *const libc::c_char,
    pub(super) envp: *mut *const libc::c_char,
    pub(super) listen_pid_slot: Option<usize>,
    pub(super) listen_fds: &'a [RawFd],
    /// A worker dies with the supervisor, leads its own process group and applies its
    /// setup; a successor does none of it.
    pub(super) worker: Option<&'a ChildSetup>,
    pub(super) parent: libc::pid_t,
    pub(super) death_read: RawFd,
    pub(super) death_write: RawFd,
    pub(super) err_write: RawFd,
    /// The worker's stdout and stderr (its output pipes), if not drover's.
    pub(super) stdio: Option<[RawFd; 2]>,
}

/// The child between fork and exec.
///
/// # Safety
/// Call only in a freshly forked child of a single-threaded process, with `plan`'s pointers
/// valid (they point into the parent's memory, which the child has a copy of).
pub(super) unsafe fn exec_child(plan: &ChildPlan) -> ! {
    // SAFETY (whole body): only async-signal-safe libc calls on plain integers and on memory
    // prepared before fork; no allocation, no locks, no unwinding (every path ends in execve
    // or _exit).
    unsafe {
        if plan.worker.is_some() {
            child_prelude(plan.parent, plan.death_read, plan.death_write);
        }
        // A clean signal state: the supervisor's handlers go before signals are unblocked
        // (exec would reset them, but a signal may arrive before exec); the mask and ignored
        // signals are inherited across exec (Rust ignores SIGPIPE).
        reset_caught_signals(true);
        let mut set: libc::sigset_t = core::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, core::ptr::null_mut());

        let n = plan.listen_fds.len() as RawFd;
        // Keep the error pipe out of the way of fds 3..3+n.
        let mut err = plan.err_write;
        if err < 3 + n {
            err = libc::fcntl(err, libc::F_DUPFD_CLOEXEC, 3 + n);
        }
        // Before the listeners: a pipe end may sit where a listener goes.
        if let Some(fds) = plan.stdio {
            if place_stdio(fds) < 0 {
                fail(err);
            }
        }
        for (i, &fd) in plan.listen_fds.iter().enumerate() {
            let target = 3 + i as RawFd;
            // Listener fds are all >= 3 + n, so this never clobbers one not yet copied.
            // dup2 clears close-on-exec on the copy.
            if libc::dup2(fd, target) < 0 {
                fail(err);
            }
        }
        if let Some(setup) = plan.worker {
            if let Err((step, errno)) = setup.apply(plan.parent) {
                fail_at(err, step, errno);
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

/// Puts `fds` at 1 and 2 (inherited across exec); -1 on failure.
///
/// # Safety
/// Call only in a freshly forked child; async-signal-safe calls on plain integers only.
pub(super) unsafe fn place_stdio(fds: [RawFd; 2]) -> libc::c_int {
    // SAFETY: async-signal-safe libc calls on plain integers.
    unsafe {
        for (target, fd) in [(1, fds[0]), (2, fds[1])] {
            if fd == target {
                // dup2 onto itself would keep close-on-exec.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return -1;
                }
            } else if libc::dup2(fd, target) < 0 {
                return -1;
            }
        }
        0
    }
}

/// The first steps of every child: die with the supervisor, and lead an own process group.
///
/// # Safety
/// Call only in a freshly forked child; async-signal-safe calls on plain integers only.
pub(super) unsafe fn child_prelude(parent: libc::pid_t, death_read: RawFd, death_write: RawFd) {
    // SAFETY: async-signal-safe libc calls on plain integers.
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
        if libc::getppid() != parent {
            libc::_exit(126);
        }
        // Same check through the death pipe: EOF once no write end is left but ours.
        libc::close(death_write);
        let mut pfd = libc::pollfd {
            fd: death_read,
            events: libc::POLLIN,
            revents: 0,
        };
        if libc::poll(&mut pfd, 1, 0) > 0 && pfd.revents & (libc::POLLHUP | libc::POLLIN) != 0 {
            libc::_exit(126);
        }
        // Own process group: the supervisor's signals reach the whole worker (a program
        // behind `sh -c` included), and a terminal's ^C reaches only the supervisor.
        libc::setpgid(0, 0);
    }
}

/// Resets every signal with a handler (the supervisor's) to its default; ignored signals
/// stay ignored, except SIGPIPE when `pipe_default` (Rust ignores it; exec'd programs
/// expect the default).
///
/// # Safety
/// Call only in a freshly forked child with every signal blocked; async-signal-safe.
pub(super) unsafe fn reset_caught_signals(pipe_default: bool) {
    // SAFETY: sigaction on a zeroed struct; async-signal-safe.
    unsafe {
        for sig in 1..32 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = core::mem::zeroed();
            if libc::sigaction(sig, core::ptr::null(), &mut old) != 0 {
                continue;
            }
            let caught = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if caught || (pipe_default && sig == libc::SIGPIPE) {
                let mut dfl: libc::sigaction = core::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, core::ptr::null_mut());
            }
        }
    }
}

/// Reports errno (of a failed dup2 or execve) to the parent and exits.
unsafe fn fail(err: RawFd) -> ! {
    // SAFETY: async-signal-safe calls only; see `exec_child`.
    unsafe { fail_at(err, Step::Exec, *libc::__errno_location()) }
}

/// Reports `errno` and the failed `step` to the parent and exits.
unsafe fn fail_at(err: RawFd, step: Step, errno: i32) -> ! {
    // SAFETY: async-signal-safe calls only; see `exec_child`.
    unsafe {
        let bytes = encode_failure(step, errno);
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
