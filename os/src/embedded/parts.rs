//! What [`Server`](super::Server) hands the workers it forks, whichever runtime they run
//! (drover's threads, `run`; the program's own server, `serve`): who a worker is
//! ([`WorkerInfo`]), the builder's hooks and tuning, and how the tuning applies to a
//! listening socket. It sits below every other module of the runtime and imports none of them.

use std::os::fd::{BorrowedFd, RawFd};

use crate::board::Board;
use crate::spawn::ForkedChild;

/// Who a worker is, for the hooks and the handler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    /// The slot, stable across restarts (`DROVER_WORKER_ID` of command workers).
    pub slot: u32,
    /// How many times this slot has been spawned, from 1.
    pub incarnation: u32,
    /// The configuration generation (`DROVER_GENERATION`).
    pub generation: u32,
    /// This worker's process id.
    pub pid: u32,
    /// Threads serving connections in this worker (`--threads`).
    pub threads: u32,
    /// The worker's own port (`--listen-per-worker`, `DROVER_WORKER_PORT` of command
    /// workers): its socket is one of the listeners it accepts on, named in
    /// LISTEN_FDNAMES as the flag says (default `worker`).
    pub port: Option<u16>,
}

impl WorkerInfo {
    /// The worker a fork just made, as its runtime learns it.
    pub(super) fn of(child: &ForkedChild<'_>) -> WorkerInfo {
        WorkerInfo {
            slot: child.worker.slot,
            incarnation: child.worker.incarnation,
            generation: child.generation.0,
            pid: std::process::id(),
            threads: child.threads.max(1),
            port: child.worker_port,
        }
    }
}

pub(super) type Hook = Box<dyn FnMut(&WorkerInfo)>;

/// How a worker holds its connections (the builder's `max_parked`, `defer_accept`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Tuning {
    pub(super) max_parked: usize,
    pub(super) defer_accept: bool,
}

/// What every worker runtime gets from [`Server`] (`Server::start`).
pub(super) struct Parts {
    pub(super) board: Option<Board>,
    pub(super) keep_fds: Vec<RawFd>,
    pub(super) hooks: Hooks,
    pub(super) tuning: Tuning,
}

/// The builder's lifecycle hooks.
pub(super) struct Hooks {
    pub(super) before_fork: Option<Box<dyn FnMut()>>,
    pub(super) after_fork: Option<Hook>,
    pub(super) on_worker_start: Option<Hook>,
    pub(super) on_worker_exit: Option<Hook>,
}

/// Sets what every accepted connection inherits once on the listening socket (shared by
/// all workers, so each worker setting it again changes nothing): no Nagle delay for
/// answers, and (`defer_accept`) no accept before the client has sent something.
pub(super) fn tune_listener(fd: RawFd, defer_accept: bool) {
    // SAFETY: the listener fd stays open for the life of the process.
    let sock = unsafe { BorrowedFd::borrow_raw(fd) };
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(&sock, sockopt::TcpNoDelay, &true);
    if defer_accept {
        // Seconds the kernel holds a silent connection back; after them it is handed over
        // anyway, and a silent one is parked (no thread waits on it either way).
        let seconds: libc::c_int = 1;
        // SAFETY: setsockopt on an open socket with a c_int value of the right size.
        unsafe {
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_DEFER_ACCEPT,
                (&seconds as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
