//! One accepted connection as the handler sees it: [`Conn`] reads and writes like a socket
//! and keeps its thread's report up to date (a request's start and end, the heartbeat while
//! it waits between requests), and [`STOP_GRACE`], how long a graceful stop still lets a
//! connection waiting between requests bring one more. It owns one thread's request
//! accounting and the wait between requests. It must not accept, answer, or end a request
//! in hand: on a stop it only ends the wait between requests (end-of-file), and when to
//! return is the handler's call.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::server::WorkerInfo;
use super::signals::stop_level;
use super::threads::ThreadSlot;
use crate::notify::monotonic_usec;

/// How long, once a graceful stop is seen, a connection waiting between requests (or for
/// its first one) still waits for the next request before it is closed.
///
/// Why not close at once: a client that got a keep-alive answer may send its next request at
/// any moment, and one may already be on the wire or in the socket buffer when the stop
/// lands. Closing then loses that request: the client sees the connection close without an
/// answer (wrk counts a read error; only some clients retry, RFC 9112 §9.3.1). So the
/// connection gets this window: a request that arrives in it is served, and the handler
/// answers it with `Connection: close` (`Conn::stopping`), the only close a client cannot
/// race with; a connection that stays quiet for the whole window is closed (its client was
/// really idle). A busy client's next request comes within microseconds; a second also
/// covers a round trip and a slow scheduler. The cost is a drain up to a second longer for
/// a worker whose connections are idle. (The benchmark's command worker,
/// `benches/system/command_worker.rs`, follows the same rule.)
pub const STOP_GRACE: Duration = Duration::from_secs(1);

pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// One accepted connection, handed to the handler on a worker thread. It reads and writes
/// like a socket and tells the supervisor what the thread is doing.
///
/// **Requests.** Mark each request with [`begin_request`](Conn::begin_request) (once its
/// head has arrived) and [`end_request`](Conn::end_request) (once answered): that is what
/// the busy count, the request timeout and `--max-requests` see. A handler that marks
/// nothing gets one request per connection, from its first byte read or written until the
/// handler returns.
///
/// **Waiting between requests.** A read outside a request waits for the next one; the
/// thread counts as idle and keeps beating. On a graceful stop that wait goes on for
/// [`STOP_GRACE`] at most: a request that arrives in it (one the client may have sent
/// before it could know of the stop) is read as usual; if none comes, the wait ends with
/// end-of-file (`Ok(0)`), so a keep-alive handler returns naturally. Check
/// [`stopping`](Conn::stopping) before answering a request: once it is true, answer with
/// `Connection: close` (or your protocol's equivalent) and return, so that no client sends
/// another request on a connection that is about to close. An idle thread must come back
/// to such a read (or return) within the heartbeat interval, or the worker stops beating.
pub struct Conn<'a> {
    pub(super) stream: Stream,
    pub(super) shared_info: &'a WorkerInfo,
    pub(super) listener: usize,
    pub(super) listener_name: &'a str,
    pub(super) thread: usize,
    pub(super) slot: &'a ThreadSlot,
    pub(super) stop_read: BorrowedFd<'a>,
    pub(super) tick: Duration,
    /// A request is in hand.
    pub(super) busy: bool,
    /// The handler marks requests itself.
    pub(super) explicit: bool,
    pub(super) idle_timeout: Option<Duration>,
}

impl Conn<'_> {
    /// A request starts (ends the one in hand, if any).
    pub fn begin_request(&mut self) {
        if self.busy && self.explicit {
            self.end_request();
        }
        self.explicit = true;
        self.busy = true;
        self.slot
            .busy_since_usec
            .store(monotonic_usec().max(1), Ordering::Relaxed);
    }

    /// The request in hand is done (counted). Does nothing outside a request.
    pub fn end_request(&mut self) {
        self.explicit = true;
        if self.busy {
            self.busy = false;
            self.slot.busy_since_usec.store(0, Ordering::Relaxed);
            let n = self.slot.requests.load(Ordering::Relaxed);
            self.slot.requests.store(n + 1, Ordering::Relaxed);
            self.slot.beat();
        }
    }

    /// True once the worker is stopping: answer the request in hand telling the client the
    /// connection closes (HTTP: `Connection: close`), then return.
    pub fn stopping(&self) -> bool {
        stop_level() != 0
    }

    /// How long a read between requests waits for the next one before failing with
    /// `TimedOut` (default: no limit; a stop still ends the wait).
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.idle_timeout = timeout;
    }

    /// Proves this thread alive while it works outside a request.
    pub fn heartbeat(&self) {
        self.slot.beat();
    }

    /// The worker this connection is served by.
    pub fn worker(&self) -> &WorkerInfo {
        self.shared_info
    }

    /// The index of the serving thread in its worker (0..threads).
    pub fn thread(&self) -> usize {
        self.thread
    }

    /// The index of the listener (in `--listen` order) and its name.
    pub fn listener(&self) -> (usize, &str) {
        (self.listener, self.listener_name)
    }

    /// The TCP stream (socket options, peer address), if the listener is TCP.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match &self.stream {
            Stream::Tcp(s) => Some(s),
            Stream::Unix(_) => None,
        }
    }

    /// The unix stream, if the listener is a unix socket.
    pub fn unix(&self) -> Option<&UnixStream> {
        match &self.stream {
            Stream::Unix(s) => Some(s),
            Stream::Tcp(_) => None,
        }
    }

    fn fd(&self) -> BorrowedFd<'_> {
        match &self.stream {
            Stream::Tcp(s) => s.as_fd(),
            Stream::Unix(s) => s.as_fd(),
        }
    }

    /// Implicit request (a handler that marks nothing): busy from the first byte.
    fn touch(&mut self) {
        if !self.busy && !self.explicit {
            self.busy = true;
            self.slot
                .busy_since_usec
                .store(monotonic_usec().max(1), Ordering::Relaxed);
        }
    }

    /// Waits between requests until data arrives (true), or until the worker stops and
    /// [`STOP_GRACE`] passes without any (false). `TimedOut` after the idle timeout.
    fn wait_readable(&mut self) -> io::Result<bool> {
        let now = Instant::now();
        let idle_deadline = self.idle_timeout.map(|t| now + t);
        // Set once this wait sees the stop: from then on, the connection has STOP_GRACE to
        // bring its next request (see there why the wait does not end at the stop).
        let mut stop_deadline = None;
        loop {
            self.slot.beat();
            let now = Instant::now();
            if stop_deadline.is_none() && self.stopping() {
                stop_deadline = Some(now + STOP_GRACE);
            }
            if stop_deadline.is_some_and(|d| now >= d) {
                return Ok(false);
            }
            if idle_deadline.is_some_and(|d| now >= d) {
                return match stop_deadline {
                    Some(_) => Ok(false),
                    None => Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout")),
                };
            }
            let deadline = match (idle_deadline, stop_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let wait = deadline.map_or(self.tick, |d| (d - now).min(self.tick));
            let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
            // The stop pipe wakes the wait when the stop lands. It stays readable from then
            // on (it is never drained), so it is left out once the stop is seen.
            let mut fds = [
                PollFd::new(self.fd(), PollFlags::POLLIN),
                PollFd::new(self.stop_read, PollFlags::POLLIN),
            ];
            let n = if stop_deadline.is_some() { 1 } else { 2 };
            match nix::poll::poll(
                &mut fds[..n],
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            // Data (or EOF, or an error) on the connection: hand it to the handler, even when
            // stopping: its client sent a request, which gets an answer.
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                return Ok(true);
            }
        }
    }

    /// Closes the books when the handler returns: an open request counts as done.
    pub(super) fn finish(&mut self) {
        if self.busy {
            self.end_request();
        }
        self.slot.beat();
    }
}

impl Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.busy && !self.wait_readable()? {
            return Ok(0);
        }
        let n = match &mut self.stream {
            Stream::Tcp(s) => s.read(buf)?,
            Stream::Unix(s) => s.read(buf)?,
        };
        if n > 0 {
            self.touch();
        }
        Ok(n)
    }
}

impl Write for Conn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.touch();
        match &mut self.stream {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.touch();
        match &mut self.stream {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stream {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

impl AsRawFd for Conn<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd().as_raw_fd()
    }
}
