//! What makes a `fork` safe here: the process is single-threaded (so the child is a complete
//! copy of it, with no lock held by a thread that did not come along) and every signal is
//! blocked across it (so no handler of the supervisor's runs in a child). Used by every
//! fork: workers (`spawn`), the group guard, the daemon, titles and privilege drops that
//! rewrite process-wide state. And what a forked child closes: every descriptor of the
//! supervisor's it is not given (`close_fds_except`).

use std::os::fd::RawFd;

use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};

/// Blocks every signal; returns the previous mask.
pub(crate) fn block_all_signals() -> SigSet {
    let mut old = SigSet::empty();
    let _ = sigprocmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    );
    old
}

pub(crate) fn restore_signals(mask: &SigSet) {
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None);
}

/// Whether this process runs a single thread, so that a `fork` copies all of it: from
/// /proc/self/task. Fails closed: a process that cannot count its threads (no /proc in a
/// chroot or a sandbox) must not assume it has one, since a child forked beside another
/// thread can inherit a lock held forever (the allocator's, stdout's).
pub fn single_threaded() -> Result<(), String> {
    single_threaded_at(std::path::Path::new("/proc/self/task"))
}

fn single_threaded_at(task_dir: &std::path::Path) -> Result<(), String> {
    match std::fs::read_dir(task_dir) {
        Ok(entries) => match entries.count() {
            0 | 1 => Ok(()),
            n => Err(format!("{n} threads are running")),
        },
        Err(e) => Err(format!(
            "cannot count this process's threads ({}: {e}); mount /proc",
            task_dir.display()
        )),
    }
}

/// The open descriptors of this process above stdio.
pub fn open_fds() -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let listed: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // Without the directory's own handle, closed by now.
    // SAFETY: F_GETFD only reads a descriptor's flags; EBADF for one that is not open.
    listed
        .into_iter()
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0)
        .collect()
}

/// Closes every fd of this (forked, single-threaded) process except stdio and `keep`: the
/// supervisor's self-pipe, notify and control sockets and pid file lock are not the worker's.
pub(crate) fn close_fds_except(keep: &[RawFd]) {
    for fd in open_fds() {
        if !keep.contains(&fd) {
            // SAFETY: closes descriptors the supervisor opened, whose owners never run in
            // this process (the child ends in `_exit`, the supervisor's frames never resume).
            unsafe { libc::close(fd) };
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_that_cannot_count_its_threads_is_not_taken_for_single_threaded() {
        let dir = std::env::temp_dir().join(format!("drover-tasks-{}", std::process::id()));
        let missing = dir.join("missing");
        let e = super::single_threaded_at(&missing).unwrap_err();
        assert!(e.contains("cannot count") && e.contains("/proc"), "{e}");
        std::fs::create_dir_all(dir.join("1")).unwrap();
        assert_eq!(super::single_threaded_at(&dir), Ok(()));
        std::fs::create_dir_all(dir.join("2")).unwrap();
        assert_eq!(
            super::single_threaded_at(&dir),
            Err("2 threads are running".to_string())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
