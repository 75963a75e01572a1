//! The group guard: a small forked process that outlives a drover killed with SIGKILL just
//! long enough to kill what is left of its workers' process groups.
//!
//! PR_SET_PDEATHSIG reaches only the process drover started. A program behind `sh -c 'a; b'`
//! or any worker's own children are other processes of the worker's group, and they would
//! survive (holding the listening sockets) when drover dies without a chance to stop them.
//! The guard holds the read end of a pipe and the list of live worker groups, which drover
//! keeps current through the pipe (`+PGID` when a worker starts, `-PGID` once its group is
//! empty). End-of-file means drover is gone, however it went: the guard sends SIGKILL to
//! every group still listed and exits. After a clean exit the list is empty.
//!
//! The guard blocks every signal (a terminal's ^C or a `kill` of drover's process group
//! must not end it first) and leads its own process group.

use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{fork, pipe2, ForkResult, Pid};

/// Messages kept for a guard that does not read (a stopped process): a pipe's worth.
const UNSENT_MAX: usize = 64 * 1024;

pub struct Guard {
    pid: Pid,
    /// Non-blocking write end.
    pipe: Option<OwnedFd>,
    /// Messages the pipe could not take yet (a stopped guard); sent before the next one.
    unsent: Vec<u8>,
}

impl Guard {
    /// Forks the guard. Only from a single-threaded process (the child runs ordinary code
    /// after `fork`); `None` with a warning otherwise or if the fork fails.
    /// `app` names the program in its process title.
    pub fn start(app: &str) -> Option<Guard> {
        if let Err(why) = crate::forking::single_threaded() {
            tracing::warn!(
                "no group guard: {why}; after a SIGKILL of drover, processes a worker started may outlive it"
            );
            return None;
        }
        let (read, write) = match pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("no group guard: pipe: {}", e.desc());
                return None;
            }
        };
        let title = format!("drover: guard {app}");
        let mask = crate::forking::block_all_signals();
        // SAFETY: the process is single-threaded (checked above), so the child is a complete
        // copy of it; the child never returns from its branch (`guard_main` ends in `_exit`).
        match unsafe { fork() } {
            Err(e) => {
                crate::forking::restore_signals(&mask);
                tracing::warn!("no group guard: fork: {}", e.desc());
                None
            }
            Ok(ForkResult::Child) => {
                drop(write);
                guard_main(read.as_raw_fd(), &title)
            }
            Ok(ForkResult::Parent { child }) => {
                crate::forking::restore_signals(&mask);
                drop(read);
                let flags = nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC;
                let _ = nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(flags));
                Some(Guard {
                    pid: child,
                    pipe: Some(write),
                    unsent: Vec::new(),
                })
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// A worker's group to kill if drover dies.
    pub fn watch(&mut self, pgid: u32) {
        self.send(format!("+{pgid}\n").as_bytes());
    }

    /// The group is empty (its number may be reused from now on).
    pub fn forget(&mut self, pgid: u32) {
        self.send(format!("-{pgid}\n").as_bytes());
    }

    /// The guard is gone (exited, or killed for not reading): nothing guards the groups
    /// any more.
    pub fn lost(&mut self) {
        if self.pipe.take().is_some() {
            tracing::warn!(
                "the group guard (pid {}) is gone: after a SIGKILL of drover, processes a worker started may outlive it",
                self.pid
            );
        }
    }

    fn send(&mut self, message: &[u8]) {
        let Some(pipe) = &self.pipe else {
            return;
        };
        if self.unsent.len() + message.len() > UNSENT_MAX {
            // Stopped for that long, it guards nothing; left alone, it could act on an old
            // list once it runs again.
            let _ = kill(self.pid, Signal::SIGKILL);
            return self.lost();
        }
        self.unsent.extend_from_slice(message);
        while !self.unsent.is_empty() {
            match nix::unistd::write(pipe, &self.unsent) {
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(Errno::EINTR) => {}
                // A stopped guard: kept, and sent with the next message.
                Err(Errno::EAGAIN) => return,
                Err(_) => return self.lost(),
            }
        }
    }
}

impl Drop for Guard {
    /// Closes the pipe and waits for the guard, so nothing of drover is left when it exits.
    fn drop(&mut self) {
        if self.pipe.take().is_none() {
            return;
        }
        loop {
            match waitpid(self.pid, None) {
                Err(Errno::EINTR) => continue,
                _ => return,
            }
        }
    }
}

/// The guard's life: read `+PGID` / `-PGID` lines until end-of-file, then SIGKILL every
/// group still listed.
fn guard_main(read: RawFd, title: &str) -> ! {
    let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
    let _ = nix::sys::prctl::set_name(c"drover-guard");
    crate::title::set_cmdline(title);
    crate::forking::close_fds_except(&[read]);
    // It writes nothing; holding drover's stdout/stderr would keep a log pipe open.
    if let Ok(null) = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDWR,
        nix::sys::stat::Mode::empty(),
    ) {
        for fd in 0..=2 {
            // SAFETY: dup2 onto the standard descriptors of this forked process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let mut groups: BTreeSet<i32> = BTreeSet::new();
    let mut line: Vec<u8> = Vec::with_capacity(16);
    let mut buf = [0u8; 512];
    loop {
        // SAFETY: reads into a buffer we own, from the pipe we hold.
        let n = unsafe { libc::read(read, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && Errno::last() == Errno::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b != b'\n' {
                // Bounded: a line longer than any pid is garbage and is dropped.
                if line.len() < 16 {
                    line.push(b);
                }
                continue;
            }
            let pgid = std::str::from_utf8(&line[1.min(line.len())..])
                .ok()
                .and_then(|s| s.parse::<i32>().ok())
                .filter(|&g| g > 1);
            match (line.first(), pgid) {
                (Some(b'+'), Some(g)) => {
                    groups.insert(g);
                }
                (Some(b'-'), Some(g)) => {
                    groups.remove(&g);
                }
                _ => {}
            }
            line.clear();
        }
    }
    for g in groups {
        let _ = kill(Pid::from_raw(-g), Signal::SIGKILL);
    }
    // SAFETY: ends the forked child without running the supervisor's exit handlers or
    // unwinding into its frames.
    unsafe { libc::_exit(0) }
}

/// Whether process group `pgid` still holds a live process of this drover's.
///
/// `kill(-pgid, 0)` alone says whether anything holds the number: it also counts zombies
/// (a worker's child that died before it and waits to be reaped would make the worker look
/// alive), and once every process of ours in the group is gone the number is free, so a
/// stranger's new group may have it. So when the cheap answer is "something", the group's
/// members are looked up in /proc: only a live one that descends from this drover counts
/// (drover is the subreaper of everything its workers start, so all of theirs do).
pub fn group_alive(pgid: u32) -> bool {
    group_alive_below(pgid, std::process::id())
}

fn group_alive_below(pgid: u32, ancestor: u32) -> bool {
    let Ok(g) = i32::try_from(pgid) else {
        return false;
    };
    if matches!(kill(Pid::from_raw(-g), None), Err(Errno::ESRCH)) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Without /proc, keep the kernel's word: a group taken for alive is only signalled
        // and looked at again, one taken for dead would be forgotten while it runs.
        return true;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .any(|pid| {
            proc_stat(pid)
                .is_some_and(|st| st.pgrp == pgid && st.live() && descends_from(st.ppid, ancestor))
        })
}

pub(crate) struct ProcStat {
    pub state: char,
    pub ppid: u32,
    pub pgrp: u32,
}

impl ProcStat {
    fn live(&self) -> bool {
        // Z: a zombie, X: being reaped.
        !matches!(self.state, 'Z' | 'X')
    }
}

/// State, parent and process group of `pid` from /proc/<pid>/stat.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcStat { state, ppid, pgrp })
}

/// Whether `pid` is `ancestor` or below it. Bounded: a process tree deeper than 64 levels
/// under a worker is not one of ours.
fn descends_from(mut pid: u32, ancestor: u32) -> bool {
    for _ in 0..64 {
        if pid == ancestor {
            return true;
        }
        if pid <= 1 {
            return false;
        }
        match proc_stat(pid) {
            Some(st) => pid = st.ppid,
            None => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_alive_while_any_process_is_in_it() {
        // (The guard itself forks only from a single-threaded process, which a test binary
        // is not: the end-to-end test `a_worker_is_its_process_group` covers it.)
        let mut child = sleeper();
        assert!(group_alive(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!group_alive(child.id()));
        assert!(Guard::start("test").is_none(), "a test binary runs threads");
    }

    fn sleeper() -> std::process::Child {
        let mut sleeper = std::process::Command::new("sleep");
        sleeper.arg("60");
        std::os::unix::process::CommandExt::process_group(&mut sleeper, 0);
        sleeper.spawn().unwrap()
    }

    /// A worker's child that died before it is a zombie until drover reaps it; `kill(-g, 0)`
    /// still finds it, and the worker's exit was taken for one whose group runs on.
    #[test]
    fn a_group_of_zombies_is_not_alive() {
        let mut child = sleeper();
        let pid = child.id();
        child.kill().unwrap();
        // Dead, unreaped: wait (bounded) until the kernel shows it as a zombie.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while proc_stat(pid).is_some_and(|st| st.live()) {
            assert!(std::time::Instant::now() < deadline, "pid {pid} never died");
            std::thread::yield_now();
        }
        assert!(
            kill(Pid::from_raw(-(pid as i32)), None).is_ok(),
            "the kernel still counts the zombie in its group"
        );
        assert!(!group_alive(pid));
        child.wait().unwrap();
    }

    /// Once our processes of a group are gone its number may be reused by a stranger's new
    /// group; signalling it then would hit someone else's processes. A group whose live
    /// members do not descend from drover is not drover's.
    #[test]
    fn a_group_of_strangers_is_not_ours() {
        let mut ours = sleeper();
        let mut stranger = sleeper();
        let (g, s) = (ours.id(), stranger.id());
        assert!(group_alive_below(g, std::process::id()));
        // Seen from the other process, this group holds no descendant of it.
        assert!(!group_alive_below(g, s));
        assert!(group_alive_below(s, std::process::id()));
        for c in [&mut ours, &mut stranger] {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}
