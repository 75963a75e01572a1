//! The serving threads of a worker: each waits on every listener (epoll with
//! `EPOLLEXCLUSIVE`, so that a connection wakes one thread of one worker), on the worker's
//! parked connections (`parked`) and on the stop pipe; accepts, or takes a parked
//! connection that became readable, and calls the handler for it, catching its panics. A
//! connection the handler gives back between requests is parked; any other is closed. It
//! owns the state the threads share with the worker's main thread ([`Shared`]) and each
//! thread's reports ([`ThreadSlot`]: whether it waits, the start of the request in hand,
//! requests served), which the main thread sums up. It must not talk to the supervisor
//! (the main thread does, in `worker`) nor handle signals (blocked in these threads, they
//! land on the main thread), and a handler's error or panic must end nothing but its own
//! connection.
//!
//! An idle thread sleeps in `epoll_wait` without a timeout (the first thread wakes for the
//! earliest idle deadline of a parked connection): proving it alive costs no wake-up,
//! since a thread that is waiting cannot be stuck; what the heartbeat checks is that no
//! thread stays outside both a wait and a request (`ThreadSlot::outside_since_usec`).

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

use super::conn::{Conn, Handler, Stream};
use super::parked::{peer, Carry, Held, Parked};
use super::parts::WorkerInfo;
use super::signals::stop_level;
use super::thread_slot::ThreadSlot;
use super::tls;
use super::STOP_GRACE;
use crate::notify::monotonic_usec;

pub(super) struct Listener {
    pub(super) fd: RawFd,
    pub(super) name: String,
    pub(super) unix: bool,
    /// Its TLS config, if it serves TLS.
    pub(super) tls: Option<Arc<rustls::ServerConfig>>,
}

pub(super) struct Shared<H> {
    pub(super) handler: Arc<H>,
    pub(super) info: WorkerInfo,
    pub(super) listeners: Vec<Listener>,
    pub(super) slots: Vec<ThreadSlot>,
    pub(super) parked: Parked,
    /// How long a thread waits on its connection for the next request before parking it.
    pub(super) linger: Duration,
    /// How long a TLS handshake may take, from the accept (`--tls-handshake-timeout`).
    pub(super) handshake_timeout: Duration,
    /// Read end of the stop pipe: readable once a stop signal arrived.
    pub(super) stop_read: OwnedFd,
    /// Threads tell the main thread they are done, or busy again, here (never closed, like
    /// the stop pipe's write end: the signal handler may write to both until the process
    /// exits).
    pub(super) main_write: RawFd,
    /// The main thread sleeps until poked: the first thread that finds work pokes it, so a
    /// load change is reported without a wake-up per request.
    pub(super) main_idle: AtomicBool,
    /// The end of a graceful stop's grace for parked connections (µs), 0 before a stop.
    pub(super) grace_until_usec: AtomicU64,
    pub(super) live_threads: AtomicUsize,
    pub(super) setup_failed: AtomicBool,
}

impl<H> Shared<H> {
    /// Tells a sleeping main thread that work came in (one write per idle spell).
    pub(super) fn wake_main(&self) {
        if self.main_idle.load(Ordering::Relaxed) && self.main_idle.swap(false, Ordering::AcqRel) {
            // SAFETY: the main pipe's write end is never closed (see `main_write`).
            let main_write = unsafe { BorrowedFd::borrow_raw(self.main_write) };
            let _ = nix::unistd::write(main_write, b"w");
        }
    }
}

const STOP_TOKEN: u64 = u64::MAX;
const PARKED_TOKEN: u64 = u64::MAX - 1;
/// While connections are parked, the first thread looks at their deadlines at least this
/// often (a connection parked with an earlier deadline than the one it waits for).
const SWEEP_MAX: Duration = Duration::from_secs(1);

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
        serve_until_stopped(shared, t, slot, &epoll);
    }
    // Whoever leaves during a stop closes what is still parked: nothing serves it after
    // the grace (a thread leaves early only once nothing is parked).
    if stop_level() != 0 {
        shared.parked.close_all();
    }
    shared.live_threads.fetch_sub(1, Ordering::SeqCst);
    // SAFETY: the main pipe's write end is never closed (see `Shared::main_write`).
    let main_write = unsafe { BorrowedFd::borrow_raw(shared.main_write) };
    let _ = nix::unistd::write(main_write, b"t");
}

fn serve_until_stopped<H: Handler>(shared: &Shared<H>, t: usize, slot: &ThreadSlot, epoll: &Epoll) {
    // One event per wait: a thread never sits on work another idle thread could take.
    let mut events = [EpollEvent::empty()];
    let mut stop_seen = false;
    loop {
        match stop_level() {
            0 => {}
            1 if !stop_seen => {
                stop_seen = true;
                let grace_end = monotonic_usec() + STOP_GRACE.as_micros() as u64;
                let _ = shared.grace_until_usec.compare_exchange(
                    0,
                    grace_end,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                // No more accepting; the stop pipe would only keep this wait awake now.
                // Parked connections keep their grace to bring a request.
                for l in &shared.listeners {
                    // SAFETY: listener fds stay open for the life of the process.
                    let _ = epoll.delete(unsafe { BorrowedFd::borrow_raw(l.fd) });
                }
                let _ = epoll.delete(shared.stop_read.as_fd());
            }
            1 => {}
            _ => return,
        }
        let timeout_usec = if stop_seen {
            let until = shared.grace_until_usec.load(Ordering::SeqCst);
            let now = monotonic_usec();
            if shared.parked.len() == 0 || now >= until {
                return;
            }
            Some(until - now)
        } else if t == 0 {
            shared.parked.next_deadline().map(|d| {
                d.saturating_sub(monotonic_usec())
                    .min(SWEEP_MAX.as_micros() as u64)
            })
        } else {
            None
        };
        let timeout = match timeout_usec {
            // Rounded up: waking before the deadline would only spin.
            Some(us) => EpollTimeout::try_from(Duration::from_micros(us.div_ceil(1000) * 1000))
                .unwrap_or(EpollTimeout::MAX),
            None => EpollTimeout::NONE,
        };
        slot.waiting();
        let waited = epoll.wait(&mut events, timeout);
        slot.outside();
        let got = match waited {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                tracing::error!("worker pid={} thread {t}: epoll_wait: {e}", shared.info.pid);
                std::thread::sleep(Duration::from_millis(50));
                0
            }
        };
        if got == 0 {
            if timeout_usec.is_some() {
                shared.parked.sweep(monotonic_usec());
            }
            continue;
        }
        match events[0].data() {
            STOP_TOKEN => {}
            PARKED_TOKEN => {
                if let Some(held) = shared.parked.take(monotonic_usec(), shared.linger) {
                    shared.wake_main();
                    serve_conn(shared, t, held);
                }
            }
            // One accept per readiness, then back to the wait: trying the queue again first
            // costs a failed accept per request whenever clients are not queueing (perf
            // counted 6.0 system calls per new connection that way against 5.0).
            i if stop_level() == 0 => {
                if let Some(fd) = accept_one(shared, i as usize) {
                    shared.wake_main();
                    let held = Held {
                        fd,
                        listener: i as usize,
                        tls: None,
                        carry: Carry::default(),
                    };
                    serve_conn(shared, t, held);
                }
            }
            _ => {}
        }
    }
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
    // Not exclusive: an epoll set cannot be; every idle thread of this worker wakes for a
    // parked connection's readiness, and one takes it.
    epoll.add(
        shared.parked.fd(),
        EpollEvent::new(EpollFlags::EPOLLIN, PARKED_TOKEN),
    )?;
    Ok(epoll)
}

/// One waiting connection from listener `i`, or `None` (another thread or worker took it).
fn accept_one<H>(shared: &Shared<H>, i: usize) -> Option<OwnedFd> {
    loop {
        match accept4(shared.listeners[i].fd, SockFlag::SOCK_CLOEXEC) {
            // SAFETY: accept4 returned a new descriptor that nothing else owns.
            Ok(fd) => return Some(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(Errno::EINTR | Errno::ECONNABORTED) => continue,
            Err(Errno::EAGAIN) => return None,
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning.
                tracing::warn!(
                    "worker pid={}: accept on {}: {e}",
                    shared.info.pid,
                    shared.listeners[i].name
                );
                std::thread::sleep(Duration::from_millis(50));
                return None;
            }
        }
    }
}

/// Times in a row a connection parked with decrypted bytes still buffered is served again
/// at once (its socket would never wake the poller for them) before it is closed: a handler
/// that gives a connection back without reading what it holds would spin otherwise.
const BUFFERED_TURNS_MAX: u32 = 16;

/// Starts or goes on with a connection's TLS handshake: the connection, ready for its
/// handler, or `None` (parked until its client sends more, or closed).
fn handshake<H>(shared: &Shared<H>, t: usize, mut held: Held) -> Option<Held> {
    let config = shared.listeners[held.listener].tls.as_ref()?;
    if held.tls.is_none() {
        match rustls::ServerConnection::new(Arc::clone(config)) {
            Ok(session) => held.tls = Some(Box::new(session)),
            Err(e) => {
                tracing::debug!("worker pid={}: TLS session: {e}", shared.info.pid);
                return None;
            }
        }
        let timeout = shared.handshake_timeout.as_micros() as u64;
        held.carry.handshake_deadline_usec = Some(monotonic_usec().saturating_add(timeout));
    }
    let deadline = held.carry.handshake_deadline_usec?;
    let session = held.tls.as_deref_mut()?;
    let slot = &shared.slots[t];
    let mut step = tls::advance(session, held.fd.as_fd(), deadline, slot);
    // The client's next flight (its Finished, often with its first request) follows the
    // server's answer by a round trip: waiting a linger for it costs less than a trip
    // through the poller, and at most a linger for a client that stalls.
    if matches!(step, tls::Handshake::WantRead)
        && tls::wait_readable(held.fd.as_fd(), shared.linger, slot)
    {
        step = tls::advance(session, held.fd.as_fd(), deadline, slot);
    }
    match step {
        tls::Handshake::Done => {
            held.carry.handshake_deadline_usec = None;
            held.carry.handshake_just_done = true;
            Some(held)
        }
        tls::Handshake::WantRead => {
            if stop_level() == 0 {
                shared.parked.park(held, monotonic_usec());
            }
            None
        }
        tls::Handshake::Failed(why) => {
            tracing::debug!(
                "worker pid={}: TLS handshake with {} failed: {why}",
                shared.info.pid,
                peer(&held.fd)
            );
            None
        }
    }
}

fn serve_conn<H: Handler>(shared: &Shared<H>, t: usize, held: Held) {
    let mut held = held;
    let tls_listener = shared.listeners[held.listener].tls.is_some();
    if tls_listener && (held.tls.is_none() || held.carry.handshake_deadline_usec.is_some()) {
        match handshake(shared, t, held) {
            Some(ready) => held = ready,
            None => return,
        }
    }
    for _ in 0..BUFFERED_TURNS_MAX {
        match serve_once(shared, t, held) {
            Some(again) => held = again,
            None => return,
        }
    }
    tracing::debug!(
        "worker pid={}: the handler gives a connection back without reading what it holds; closed",
        shared.info.pid
    );
}

/// One call of the handler for `held`; the connection back if it is to be served again at
/// once (parked with decrypted bytes buffered).
fn serve_once<H: Handler>(shared: &Shared<H>, t: usize, held: Held) -> Option<Held> {
    let Held {
        fd,
        listener,
        tls,
        carry,
    } = held;
    let stream = if shared.listeners[listener].unix {
        Stream::Unix(UnixStream::from(fd))
    } else {
        Stream::Tcp(TcpStream::from(fd))
    };
    let mut conn = Conn {
        stream,
        tls,
        shared_info: &shared.info,
        listener,
        listener_name: &shared.listeners[listener].name,
        thread: t,
        slot: &shared.slots[t],
        linger: shared.linger,
        parked: &shared.parked,
        streak: 0,
        carry,
        busy: false,
        explicit: false,
        answered: false,
        park: false,
        partial: false,
    };
    let handler = &shared.handler;
    let result =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler.handle(&mut conn)));
    conn.finish();
    match result {
        Ok(Ok(())) if conn.park && stop_level() == 0 => {
            let buffered = conn.tls_buffered();
            let (fd, tls, carry) = conn.into_parts();
            let held = Held {
                fd,
                listener,
                tls,
                carry,
            };
            if buffered {
                return Some(held);
            }
            shared.parked.park(held, monotonic_usec());
            return None;
        }
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
    conn.close_tls();
    None
}
