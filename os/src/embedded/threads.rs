//! The serving threads of a worker: each waits on every listener (epoll with
//! `EPOLLEXCLUSIVE`, so that a connection wakes one thread) and on the stop pipe, accepts,
//! and runs the handler once per connection, catching its panics. It owns the state the
//! threads share with the worker's main thread ([`Shared`]) and each thread's reports
//! ([`ThreadSlot`]: heartbeat, start of the request in hand, requests served), which the
//! main thread sums up. It must not talk to the supervisor (the main thread does, in
//! `worker`) nor handle signals (blocked in these threads, they land on the main thread),
//! and a handler's error or panic must end nothing but its own connection.

use std::io;
use std::net::TcpStream;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{accept4, SockFlag};

use super::conn::{Conn, Stream};
use super::server::{Handler, WorkerInfo};
use super::signals::stop_level;
use crate::notify::monotonic_usec;

/// One thread's reports, written by that thread only and read by the main thread.
#[repr(align(64))] // one cache line each: threads do not contend
#[derive(Default)]
pub(super) struct ThreadSlot {
    /// Last time (CLOCK_MONOTONIC µs) the thread came back to a wait while idle.
    pub(super) beat_usec: AtomicU64,
    /// Start of the request in hand, 0 when idle.
    pub(super) busy_since_usec: AtomicU64,
    pub(super) requests: AtomicU64,
}

impl ThreadSlot {
    pub(super) fn beat(&self) {
        self.beat_usec.store(monotonic_usec(), Ordering::Relaxed);
    }
}

pub(super) struct Listener {
    pub(super) fd: RawFd,
    pub(super) name: String,
    pub(super) unix: bool,
}

pub(super) struct Shared<H> {
    pub(super) handler: Arc<H>,
    pub(super) info: WorkerInfo,
    pub(super) listeners: Vec<Listener>,
    pub(super) slots: Vec<ThreadSlot>,
    /// Read end of the stop pipe: readable once a stop signal arrived.
    pub(super) stop_read: OwnedFd,
    /// Threads tell the main thread they are done here (never closed, like the stop pipe's
    /// write end: the signal handler may write to both until the process exits).
    pub(super) main_write: RawFd,
    /// How often an idle thread comes back to beat.
    pub(super) tick: Duration,
    pub(super) live_threads: AtomicUsize,
    pub(super) setup_failed: AtomicBool,
}

const STOP_TOKEN: u64 = u64::MAX;

pub(super) fn accept_loop<H: Handler>(shared: &Shared<H>, t: usize, started: &Barrier) {
    let slot = &shared.slots[t];
    let epoll = match thread_epoll(shared) {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::error!("worker pid={} thread {t}: epoll: {e}", shared.info.pid);
            shared.setup_failed.store(true, Ordering::SeqCst);
            None
        }
    };
    started.wait();
    if let Some(epoll) = epoll {
        let mut events = [EpollEvent::empty(); 8];
        let timeout = EpollTimeout::try_from(shared.tick).unwrap_or(EpollTimeout::NONE);
        let mut next = 0usize;
        while stop_level() == 0 {
            slot.beat();
            // Take a waiting connection first: after a connection, after a wake-up, and on
            // every tick (an exclusive wake-up may have gone to a busy thread).
            if let Some((listener, fd)) = try_accept(shared, &mut next) {
                serve_conn(shared, t, listener, fd);
                continue;
            }
            match epoll.wait(&mut events, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("worker pid={} thread {t}: epoll_wait: {e}", shared.info.pid);
                    std::thread::sleep(shared.tick);
                }
            }
        }
    }
    shared.live_threads.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: the main pipe's write end is never closed (see `Shared::main_write`).
    let main_write = unsafe { BorrowedFd::borrow_raw(shared.main_write) };
    let _ = nix::unistd::write(main_write, b"t");
}

fn thread_epoll<H>(shared: &Shared<H>) -> io::Result<Epoll> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    for (i, l) in shared.listeners.iter().enumerate() {
        // SAFETY: listener fds stay open for the life of the process.
        let fd = unsafe { BorrowedFd::borrow_raw(l.fd) };
        let exclusive = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, i as u64);
        if let Err(e) = epoll.add(fd, exclusive) {
            if e != Errno::EINVAL {
                return Err(e.into());
            }
            // A kernel before 4.5: every waiting thread wakes.
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        }
    }
    epoll.add(
        shared.stop_read.as_fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, STOP_TOKEN),
    )?;
    Ok(epoll)
}

/// A waiting connection from any listener (round robin), or `None`.
fn try_accept<H>(shared: &Shared<H>, next: &mut usize) -> Option<(usize, OwnedFd)> {
    let n = shared.listeners.len();
    for k in 0..n {
        let i = (*next + k) % n;
        loop {
            match accept4(shared.listeners[i].fd, SockFlag::SOCK_CLOEXEC) {
                Ok(fd) => {
                    *next = i + 1;
                    // SAFETY: accept4 returned a new descriptor that nothing else owns.
                    return Some((i, unsafe { OwnedFd::from_raw_fd(fd) }));
                }
                Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning.
                    tracing::warn!(
                        "worker pid={}: accept on {}: {e}",
                        shared.info.pid,
                        shared.listeners[i].name
                    );
                    std::thread::sleep(shared.tick.min(Duration::from_millis(50)));
                    break;
                }
            }
        }
    }
    None
}

fn serve_conn<H: Handler>(shared: &Shared<H>, t: usize, listener: usize, fd: OwnedFd) {
    let stream = if shared.listeners[listener].unix {
        Stream::Unix(UnixStream::from(fd))
    } else {
        Stream::Tcp(TcpStream::from(fd))
    };
    let mut conn = Conn {
        stream,
        shared_info: &shared.info,
        listener,
        listener_name: &shared.listeners[listener].name,
        thread: t,
        slot: &shared.slots[t],
        stop_read: shared.stop_read.as_fd(),
        tick: shared.tick,
        busy: false,
        explicit: false,
        idle_timeout: None,
    };
    let handler = &shared.handler;
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&mut conn)));
    conn.finish();
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::trace!("worker pid={}: connection ended: {e}", shared.info.pid),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(
                "worker pid={}: the handler panicked: {what}; connection closed",
                shared.info.pid
            );
        }
    }
}
