//! One accepted connection as the handler sees it: [`Conn`] reads and writes like a socket
//! and keeps its thread's report up to date (a request's start and end, the wait between
//! requests), and [`STOP_GRACE`], how long a graceful stop still lets a connection waiting
//! between requests bring one more. It owns one thread's request accounting and the wait
//! between requests, which decides whether the connection is parked (given back to the
//! worker's poller, `parked`) rather than waited for on this thread. It must not accept,
//! answer, or end a request in hand: on a stop it only ends the wait between requests
//! (end-of-file), and when to return is the handler's call.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use rustls::ServerConnection;

use super::parked::{Carry, Parked};
use super::parts::WorkerInfo;
use super::signals::stop_level;
use super::thread_slot::ThreadSlot;
use super::tls::{self, NoWait, TlsInfo};
use crate::notify::coarse_monotonic_usec;

/// Requests served in a row from lingering on one connection before the thread looks whether
/// another of its worker's connections is waiting (and parks this one to take its turn if
/// so): puma's `max_fast_inline` default.
const FAIR_TURNS: u32 = 10;

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

/// Serves one connection on a worker thread. Closures `Fn(&mut Conn) -> io::Result<()>`
/// are handlers too (see [`Server::run`](super::Server::run)).
pub trait Handler: Send + Sync + 'static {
    /// Called once per accepted connection; the connection closes when it returns. An error
    /// or a panic ends only this connection.
    fn handle(&self, conn: &mut Conn<'_>) -> io::Result<()>;
}

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
/// **Waiting between requests.** A read outside a request waits for the next one. It does
/// not hold the thread for it: after an answer on a connection whose client keeps it busy
/// (or on a new one while the worker holds no other) the thread waits a few milliseconds
/// (the runtime's linger: a busy client's next request comes at once), and every 10 such
/// requests it lets another waiting connection of the worker take its turn; otherwise, or
/// if nothing comes, the read returns end-of-file (`Ok(0)`)
/// and the connection is *parked*: once the handler
/// returns, the worker keeps it in its poller, not on a thread, and calls the handler
/// again for it when its next request arrives (with a fresh `Conn`: keep nothing of a
/// connection's state in the handler across an end-of-file). A connection parked longer
/// than its [idle timeout](Conn::set_idle_timeout) is closed. So a handler serves the
/// requests that are there and returns at end-of-file, as it would for a client that
/// closed; [`parked`](Conn::parked) tells the two apart, should it matter.
///
/// On a graceful stop the wait goes on, on this thread, for [`STOP_GRACE`] at most: a
/// request that arrives in it (one the client may have sent before it could know of the
/// stop) is read as usual; if none comes, the wait ends with end-of-file and the
/// connection closes. Check [`stopping`](Conn::stopping) before answering a request: once
/// it is true, answer with `Connection: close` (or your protocol's equivalent) and return,
/// so that no client sends another request on a connection that is about to close.
///
/// Read through `Conn`, not the socket from [`tcp`](Conn::tcp): for its linger the
/// runtime gives a keep-alive connection a short receive timeout, which `Conn`'s reads
/// allow for and a raw read would see as `WouldBlock`. A thread that works outside a
/// request for longer than the heartbeat allows (without [`heartbeat`](Conn::heartbeat))
/// stops the worker's heartbeat.
///
/// **TLS.** On a listener that serves TLS (`--tls-cert`), the handshake is done before the
/// handler is called, and reads and writes go through the session: the handler sees
/// plaintext, and [`tls`](Conn::tls) tells the protocol, ALPN and client certificate. The
/// session lives as long as the connection, parked or not.
pub struct Conn<'a> {
    pub(super) stream: Stream,
    /// The TLS session, on a listener that serves TLS (its handshake done).
    pub(super) tls: Option<Box<ServerConnection>>,
    pub(super) shared_info: &'a WorkerInfo,
    pub(super) listener: usize,
    pub(super) listener_name: &'a str,
    pub(super) thread: usize,
    pub(super) slot: &'a ThreadSlot,
    pub(super) linger: Duration,
    /// The worker's parked connections: lingering on this one must not keep them waiting.
    pub(super) parked: &'a Parked,
    /// Requests that came during a linger, in a row, since the last look at the others.
    pub(super) streak: u32,
    pub(super) carry: Carry,
    /// A request is in hand.
    pub(super) busy: bool,
    /// The handler marks requests itself.
    pub(super) explicit: bool,
    /// A request was answered in this call of the handler: the next read lingers.
    pub(super) answered: bool,
    /// The wait between requests gave the connection back to the poller.
    pub(super) park: bool,
    /// Bytes of the next request arrived (read outside a request): the rest is waited for
    /// like a request's, never parked, or the handler would lose what it holds.
    pub(super) partial: bool,
}

impl Conn<'_> {
    /// A request starts (ends the one in hand, if any).
    pub fn begin_request(&mut self) {
        if self.busy && self.explicit {
            self.end_request();
        }
        self.explicit = true;
        self.busy = true;
        self.partial = false;
        self.slot
            .busy_since_usec
            .store(coarse_monotonic_usec().max(1), Ordering::Relaxed);
    }

    /// The request in hand is done (counted). Does nothing outside a request.
    pub fn end_request(&mut self) {
        self.explicit = true;
        self.partial = false;
        if self.busy {
            self.busy = false;
            self.slot.busy_since_usec.store(0, Ordering::Relaxed);
            let n = self.slot.requests.load(Ordering::Relaxed);
            self.slot.requests.store(n + 1, Ordering::Relaxed);
            self.slot.outside();
            self.answered = true;
        }
    }

    /// True once the worker is stopping: answer the request in hand telling the client the
    /// connection closes (HTTP: `Connection: close`), then return.
    pub fn stopping(&self) -> bool {
        stop_level() != 0
    }

    /// How long the connection may wait for its next request, parked, before it is closed
    /// (default: no limit; a stop still ends the wait). Kept while the connection lives.
    pub fn set_idle_timeout(&mut self, timeout: Option<Duration>) {
        self.carry.idle_timeout = timeout;
    }

    /// True once a read between requests has parked the connection: its end-of-file is
    /// not the client's, and the handler will be called again when the client goes on.
    pub fn parked(&self) -> bool {
        self.park
    }

    /// Proves this thread alive while it works outside a request.
    pub fn heartbeat(&self) {
        self.slot.outside();
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

    /// The connection's TLS session, if its listener serves TLS (`--tls-cert`).
    pub fn tls(&self) -> Option<TlsInfo<'_>> {
        self.tls.as_deref().map(|session| TlsInfo { session })
    }

    /// The TCP stream (socket options, peer address), if the listener is TCP. With TLS,
    /// its bytes are the encrypted records: read and write through `Conn`.
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
                .store(coarse_monotonic_usec().max(1), Ordering::Relaxed);
        }
    }

    /// The wait between requests of a stopping worker, on this thread: until data arrives
    /// (true), or until [`STOP_GRACE`] passes without any (false).
    fn wait_during_stop(&mut self) -> io::Result<bool> {
        let deadline = Instant::now() + STOP_GRACE;
        if self.tls.as_deref_mut().is_some_and(tls::plaintext_buffered) {
            return Ok(true);
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
            let mut fds = [PollFd::new(self.fd(), PollFlags::POLLIN)];
            self.slot.waiting();
            let polled = nix::poll::poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            );
            self.slot.outside();
            match polled {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            // Data (or EOF, or an error): hand it to the handler, even when stopping: its
            // client sent a request, which gets an answer.
            if fds[0].revents().is_some_and(|r| !r.is_empty()) {
                return Ok(true);
            }
        }
    }

    /// The wait between requests while serving: the first read of a handler call does not
    /// wait (the connection was just accepted with its data, or woken readable from the
    /// poller), unless a TLS handshake has just been done (the request follows it); after
    /// an answer the thread lingers for the next request when that is worth
    /// it (`worth_lingering`). Nothing: park.
    fn read_between_requests(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let lingering = std::mem::take(&mut self.carry.handshake_just_done)
            || (self.answered && self.worth_lingering());
        if !lingering {
            if let (Some(session), Stream::Tcp(s)) = (self.tls.as_deref_mut(), &self.stream) {
                return match tls::read(session, &mut NoWait(s.as_fd()), &mut &*s, buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.give_back(),
                    other => other,
                };
            }
            return loop {
                match nix::sys::socket::recv(
                    self.fd().as_raw_fd(),
                    buf,
                    nix::sys::socket::MsgFlags::MSG_DONTWAIT,
                ) {
                    Ok(n) => break Ok(n),
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break self.give_back(),
                    Err(e) => break Err(e.into()),
                }
            };
        }
        if !self.carry.linger_set {
            // Once per connection: a read returns after the linger with `WouldBlock`.
            match &self.stream {
                Stream::Tcp(s) => s.set_read_timeout(Some(self.linger))?,
                Stream::Unix(s) => s.set_read_timeout(Some(self.linger))?,
            }
            self.carry.linger_set = true;
        }
        self.slot.waiting();
        let read = loop {
            match self.read_socket(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        self.slot.outside();
        match read {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                self.carry.hot = false;
                self.give_back()
            }
            Ok(n) => {
                self.carry.hot = n > 0;
                self.streak += 1;
                Ok(n)
            }
            other => other,
        }
    }

    /// Lingering pays on a hot connection (its client sent its last request within a
    /// linger of the answer before) and on a new one while the worker holds no other: its
    /// client's next request is likely to come at once, and a thread lingering on it leaves
    /// the next new connection to an idle thread, here or in another worker, rather than
    /// parking the two side by side on one thread. It does not pay for a client that sends
    /// one request and falls silent (a burst of them is not served a linger at a time), nor
    /// once another connection of the worker is ready: every [`FAIR_TURNS`] lingered
    /// requests the thread looks, and gives this one back for the other to take its turn.
    fn worth_lingering(&mut self) -> bool {
        let others = self.parked.len() > 0;
        if !self.carry.hot && (self.carry.in_poller || others) {
            return false;
        }
        if others && self.streak >= FAIR_TURNS {
            self.streak = 0;
            if self.parked.any_ready() {
                return false;
            }
        }
        true
    }

    fn give_back(&mut self) -> io::Result<usize> {
        self.park = true;
        Ok(0)
    }

    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let (Some(session), Stream::Tcp(s)) = (self.tls.as_deref_mut(), &self.stream) {
            return tls::read(session, &mut &*s, &mut &*s, buf);
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }

    /// A read within a request: blocking, however long the client takes (the request
    /// timeout is the supervisor's); the linger's receive timeout only slices it.
    fn read_in_request(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.read_socket(buf) {
                // (A TLS read also says `WouldBlock` after a run of records with no
                // plaintext, to let go of the thread; within a request it reads on.)
                Err(e)
                    if (self.carry.linger_set || self.tls.is_some())
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    /// The socket and what the connection keeps for its next handler call (parking).
    pub(super) fn into_parts(self) -> (OwnedFd, Option<Box<ServerConnection>>, Carry) {
        let fd = match self.stream {
            Stream::Tcp(s) => OwnedFd::from(s),
            Stream::Unix(s) => OwnedFd::from(s),
        };
        (fd, self.tls, self.carry)
    }

    /// Whether the TLS session holds plaintext the handler has not read.
    pub(super) fn tls_buffered(&mut self) -> bool {
        self.tls.as_deref_mut().is_some_and(tls::plaintext_buffered)
    }

    /// Ends the TLS session politely before the connection closes.
    pub(super) fn close_tls(&mut self) {
        if let (Some(session), Stream::Tcp(s)) = (self.tls.as_deref_mut(), &self.stream) {
            tls::close_notify(session, s.as_fd());
        }
    }

    /// Closes the books when the handler returns: an open request counts as done.
    pub(super) fn finish(&mut self) {
        if self.busy {
            self.end_request();
        }
        self.slot.outside();
    }
}

impl Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.park {
            return Ok(0);
        }
        let n = if self.busy || self.partial {
            self.read_in_request(buf)?
        } else if self.stopping() {
            if !self.wait_during_stop()? {
                return Ok(0);
            }
            self.read_in_request(buf)?
        } else {
            self.read_between_requests(buf)?
        };
        if n > 0 {
            self.touch();
            self.partial = !self.busy;
        }
        Ok(n)
    }
}

impl Write for Conn<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.touch();
        if let (Some(session), Stream::Tcp(s)) = (self.tls.as_deref_mut(), &self.stream) {
            return tls::write(session, &mut &*s, buf);
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.touch();
        if let (Some(session), Stream::Tcp(s)) = (self.tls.as_deref_mut(), &self.stream) {
            let n = session.writer().write_vectored(bufs)?;
            tls::flush(session, &mut &*s)?;
            return Ok(n);
        }
        match &mut self.stream {
            Stream::Tcp(s) => s.write_vectored(bufs),
            Stream::Unix(s) => s.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if let (Some(session), Stream::Tcp(s)) = (self.tls.as_deref_mut(), &self.stream) {
            return tls::flush(session, &mut &*s);
        }
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
