//! Connections parked between requests: a keep-alive connection whose client sent nothing
//! more, or a new one that has sent nothing yet, waits here, in the worker's poller, and not
//! on a thread (as puma's reactor does). A thread takes it back when it is readable (the
//! next request, or the client's close), and the handler is called for it again. It owns
//! the poller of parked connections, their idle deadlines and the per-worker bound; it
//! must not serve anything (`threads` does) nor decide when to park (`conn` does).
//!
//! The poller is one epoll set per worker, each connection in it one-shot: the thread that
//! gets its readiness is the only one, until it is parked again. The set's own descriptor
//! sits in every serving thread's epoll, so any idle thread can take a parked connection
//! (all idle threads of the worker wake for it; one gets it, the others find nothing).

use std::collections::BTreeSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};

/// What a connection keeps from one handler call to the next.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Carry {
    /// How long it may stay parked (`Conn::set_idle_timeout`).
    pub(super) idle_timeout: Option<Duration>,
    /// The linger read's receive timeout is set on the socket.
    pub(super) linger_set: bool,
    /// Registered in the poller (disarmed while a thread has it).
    pub(super) in_poller: bool,
    /// Its client sent the next request within the linger last time: worth lingering for.
    pub(super) hot: bool,
    /// Its TLS handshake is not done: it is closed at this time (µs, monotonic), parked
    /// or not.
    pub(super) handshake_deadline_usec: Option<u64>,
    /// Its TLS handshake was just done: its client's first request follows at once (often
    /// in the same flight as its Finished, or a moment after), so the first read lingers.
    pub(super) handshake_just_done: bool,
}

/// A connection that no handler holds.
pub(super) struct Held {
    pub(super) fd: OwnedFd,
    pub(super) listener: usize,
    /// Its TLS session (parking keeps it, with whatever it has buffered).
    pub(super) tls: Option<Box<rustls::ServerConnection>>,
    pub(super) carry: Carry,
}

struct Entry {
    held: Held,
    parked_usec: u64,
    deadline_usec: Option<u64>,
}

struct Inner {
    slots: Vec<Option<Entry>>,
    /// Bumped each time a slot is emptied: a readiness reported for its previous
    /// connection (closed meanwhile) does not take the next one.
    gens: Vec<u32>,
    free: Vec<usize>,
    by_age: BTreeSet<(u64, usize)>,
    by_deadline: BTreeSet<(u64, usize)>,
    evicted: u64,
    evicted_logged_usec: u64,
}

pub(super) struct Parked {
    epoll: Epoll,
    inner: Mutex<Inner>,
    /// How many are parked, published under the lock: read without it on every request.
    count: AtomicUsize,
    max: usize,
    pid: u32,
}

/// How often the log says that the bound closes parked connections.
const EVICTION_LOG_EVERY_USEC: u64 = 10_000_000;

fn token(gen: u32, index: usize) -> u64 {
    (u64::from(gen) << 32) | index as u64
}

impl Parked {
    pub(super) fn new(max: usize, pid: u32) -> std::io::Result<Parked> {
        Ok(Parked {
            epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?,
            inner: Mutex::new(Inner {
                slots: Vec::new(),
                gens: Vec::new(),
                free: Vec::new(),
                by_age: BTreeSet::new(),
                by_deadline: BTreeSet::new(),
                evicted: 0,
                evicted_logged_usec: 0,
            }),
            count: AtomicUsize::new(0),
            max: max.max(1),
            pid,
        })
    }

    /// The poller's descriptor, readable while a parked connection is.
    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding it cannot leave the sets inconsistent with each other
        // in a way that matters more than losing the worker's parked connections.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether a parked connection is readable now (its readiness stays for a taker).
    pub(super) fn any_ready(&self) -> bool {
        let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
    }

    /// The earliest idle deadline of a parked connection.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        self.lock().by_deadline.first().map(|&(d, _)| d)
    }

    /// Parks `held` until it is readable, its idle timeout passes, or the bound makes room
    /// for a newer one (the longest parked is closed).
    pub(super) fn park(&self, mut held: Held, now_usec: u64) {
        let mut inner = self.lock();
        if inner.slots.len() - inner.free.len() >= self.max {
            if let Some(&(_, oldest)) = inner.by_age.first() {
                drop(inner.remove(oldest));
                inner.evicted += 1;
                if now_usec.saturating_sub(inner.evicted_logged_usec) >= EVICTION_LOG_EVERY_USEC {
                    inner.evicted_logged_usec = now_usec;
                    tracing::warn!(
                        "worker pid={}: {} connections parked, the limit (Server::max_parked): closed the longest idle ({} so far)",
                        self.pid,
                        self.max,
                        inner.evicted
                    );
                }
            }
        }
        let index = match inner.free.pop() {
            Some(i) => i,
            None => {
                inner.slots.push(None);
                inner.gens.push(0);
                inner.slots.len() - 1
            }
        };
        let idle_deadline = held
            .carry
            .idle_timeout
            .map(|t| now_usec.saturating_add(t.as_micros().min(u64::MAX as u128) as u64));
        let deadline_usec = match (idle_deadline, held.carry.handshake_deadline_usec) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let event = EpollEvent::new(
            EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLONESHOT,
            token(inner.gens[index], index),
        );
        // Armed under the lock: a thread that sees the readiness at once finds the entry.
        let armed = if held.carry.in_poller {
            self.epoll.modify(held.fd.as_fd(), &mut event.clone())
        } else {
            self.epoll.add(held.fd.as_fd(), event)
        };
        if let Err(e) = armed {
            tracing::debug!("worker pid={}: cannot park a connection: {e}", self.pid);
            inner.free.push(index);
            self.publish(&inner);
            return; // closed
        }
        held.carry.in_poller = true;
        inner.by_age.insert((now_usec, index));
        if let Some(d) = deadline_usec {
            inner.by_deadline.insert((d, index));
        }
        inner.slots[index] = Some(Entry {
            held,
            parked_usec: now_usec,
            deadline_usec,
        });
        self.publish(&inner);
    }

    fn publish(&self, inner: &Inner) {
        self.count
            .store(inner.slots.len() - inner.free.len(), Ordering::Release);
    }

    /// A parked connection that is readable, if any is (never waits). One that was parked
    /// for less than `linger` is hot: its client keeps it busy.
    pub(super) fn take(&self, now_usec: u64, linger: Duration) -> Option<Held> {
        let mut events = [EpollEvent::empty()];
        let n = match self.epoll.wait(&mut events, EpollTimeout::ZERO) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => {
                tracing::error!(
                    "worker pid={}: epoll_wait on parked connections: {e}",
                    self.pid
                );
                0
            }
        };
        if n == 0 {
            return None;
        }
        let token = events[0].data();
        let (gen, index) = ((token >> 32) as u32, (token & 0xffff_ffff) as usize);
        let mut inner = self.lock();
        if inner.gens.get(index) != Some(&gen) {
            return None; // closed meanwhile (its deadline, the bound)
        }
        let parked_usec = inner.slots[index].as_ref()?.parked_usec;
        let mut held = inner.remove(index)?;
        self.publish(&inner);
        held.carry.hot = now_usec.saturating_sub(parked_usec) < linger.as_micros() as u64;
        Some(held)
    }

    /// Closes the parked connections whose idle timeout has passed.
    pub(super) fn sweep(&self, now_usec: u64) {
        let mut inner = self.lock();
        while let Some(&(d, index)) = inner.by_deadline.first() {
            if d > now_usec {
                break;
            }
            if let Some(held) = inner.remove(index) {
                if held
                    .carry
                    .handshake_deadline_usec
                    .is_some_and(|h| h <= now_usec)
                {
                    tracing::debug!(
                        "worker pid={}: TLS handshake with {} timed out; closed",
                        self.pid,
                        peer(&held.fd)
                    );
                }
            }
        }
        self.publish(&inner);
    }

    /// Closes every parked connection (the end of a stop's grace).
    pub(super) fn close_all(&self) {
        let mut inner = self.lock();
        let all: Vec<usize> = inner.by_age.iter().map(|&(_, i)| i).collect();
        for index in all {
            drop(inner.remove(index));
        }
        self.publish(&inner);
    }
}

/// A connection's peer address, for the log.
pub(super) fn peer(fd: &OwnedFd) -> String {
    use nix::sys::socket::{getpeername, SockaddrStorage};
    getpeername::<SockaddrStorage>(std::os::fd::AsRawFd::as_raw_fd(fd))
        .map_or_else(|e| format!("? ({e})"), |a| a.to_string())
}

impl Inner {
    fn remove(&mut self, index: usize) -> Option<Held> {
        let entry = self.slots.get_mut(index)?.take()?;
        self.by_age.remove(&(entry.parked_usec, index));
        if let Some(d) = entry.deadline_usec {
            self.by_deadline.remove(&(d, index));
        }
        self.gens[index] = self.gens[index].wrapping_add(1);
        self.free.push(index);
        Some(entry.held)
    }
}
