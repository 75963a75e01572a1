//! TLS on an accepted connection: the handshake, advanced without waiting on the thread
//! that accepted (what the client has sent is processed; then the connection is parked
//! until the client sends more, or its handshake deadline closes it), and reads and writes
//! of plaintext through the session. It owns the session's byte plumbing and [`TlsInfo`],
//! what the handler sees of a session; it must not decide when to park (`conn` and
//! `threads` do) nor load certificates (`crate::tls`, in the supervisor).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::socket::MsgFlags;
use rustls::ServerConnection;

use super::thread_slot::ThreadSlot;
use crate::notify::monotonic_usec;

/// Records processed per turn of a handshake or a read before the thread lets go (the
/// connection is readable still, so it comes back): a client streaming records cannot
/// hold a thread.
const ROUNDS_MAX: usize = 64;

/// Where a handshake stands after what the client has sent so far.
pub(super) enum Handshake {
    Done,
    /// Waiting for the client: park the connection until it sends more.
    WantRead,
    Failed(String),
}

/// Reads what the socket holds now, never waiting.
pub(super) struct NoWait<'a>(pub(super) BorrowedFd<'a>);

impl Read for NoWait<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match nix::sys::socket::recv(self.0.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Writes to the socket, waiting for room at most until a deadline (µs, monotonic). The
/// server's handshake flight fits a socket's send buffer: waiting happens only for a
/// client that does not read, and only until its handshake deadline. The wait counts as
/// one (the thread is not stuck: `slot.waiting`).
struct Bounded<'a> {
    fd: BorrowedFd<'a>,
    deadline_usec: u64,
    slot: &'a ThreadSlot,
}

impl Write for Bounded<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            match nix::sys::socket::send(self.fd.as_raw_fd(), buf, flags) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {}
                Err(e) => return Err(e.into()),
            }
            let now = monotonic_usec();
            if now >= self.deadline_usec {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client does not read its handshake",
                ));
            }
            let ms = (self.deadline_usec - now)
                .div_ceil(1000)
                .min(i32::MAX as u64) as i32;
            let mut fds = [PollFd::new(self.fd, PollFlags::POLLOUT)];
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
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Advances the handshake with what the client has sent, answering it; never waits for
/// the client to send (and for it to read, only until `deadline_usec`).
pub(super) fn advance(
    tls: &mut ServerConnection,
    fd: BorrowedFd<'_>,
    deadline_usec: u64,
    slot: &ThreadSlot,
) -> Handshake {
    let mut out = Bounded {
        fd,
        deadline_usec,
        slot,
    };
    for _ in 0..ROUNDS_MAX {
        while tls.wants_write() {
            if let Err(e) = tls.write_tls(&mut out) {
                return Handshake::Failed(format!("writing: {e}"));
            }
        }
        if !tls.is_handshaking() {
            return Handshake::Done;
        }
        match tls.read_tls(&mut NoWait(fd)) {
            Ok(0) => return Handshake::Failed("the client closed the connection".into()),
            Ok(_) => {
                if let Err(e) = tls.process_new_packets() {
                    // The alert rustls queued tells the client why; best effort.
                    while tls.wants_write() {
                        if tls.write_tls(&mut out).is_err() {
                            break;
                        }
                    }
                    return Handshake::Failed(e.to_string());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Handshake::WantRead,
            Err(e) => return Handshake::Failed(format!("reading: {e}")),
        }
    }
    Handshake::WantRead
}

/// Waits up to `linger` for the socket to become readable (a wait: the thread is not stuck).
pub(super) fn wait_readable(
    fd: BorrowedFd<'_>,
    linger: std::time::Duration,
    slot: &ThreadSlot,
) -> bool {
    let ms = linger.as_millis().clamp(1, i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    slot.waiting();
    let polled = nix::poll::poll(
        &mut fds,
        PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
    );
    slot.outside();
    matches!(polled, Ok(n) if n > 0)
}

/// Whether the session holds decrypted bytes the handler has not read: the connection is
/// readable whatever its socket says.
pub(super) fn plaintext_buffered(tls: &mut ServerConnection) -> bool {
    tls.process_new_packets()
        .is_ok_and(|s| s.plaintext_bytes_to_read() > 0)
}

/// Plaintext into `buf`, reading records from `sock` as needed: its `WouldBlock` (a
/// non-blocking socket or a receive timeout) comes back as such, what came is kept in the
/// session. `Ok(0)`: the client closed (with or without `close_notify`).
pub(super) fn read(
    tls: &mut ServerConnection,
    sock: &mut impl Read,
    out: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<usize> {
    for _ in 0..ROUNDS_MAX {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
            Err(e) => return Err(e),
        }
        if tls.read_tls(sock)? == 0 {
            return Ok(0);
        }
        let processed = tls.process_new_packets();
        // Alerts, key updates, session tickets: whatever the records asked to send.
        flush(tls, out)?;
        if let Err(e) = processed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
    // A stream of records with no plaintext: let the caller come back.
    Err(io::Error::from(io::ErrorKind::WouldBlock))
}

/// Sends everything the session has to send (the socket blocks, as a plain write does).
pub(super) fn flush(tls: &mut ServerConnection, out: &mut impl Write) -> io::Result<()> {
    while tls.wants_write() {
        if tls.write_tls(out)? == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
    }
    Ok(())
}

/// Plaintext out through the session: the part of `buf` it took, sent.
pub(super) fn write(
    tls: &mut ServerConnection,
    out: &mut impl Write,
    buf: &[u8],
) -> io::Result<usize> {
    let n = tls.writer().write(buf)?;
    flush(tls, out)?;
    Ok(n)
}

/// Tells the client the session ends, if its socket takes it at once (a close does not wait).
pub(super) fn close_notify(tls: &mut ServerConnection, fd: BorrowedFd<'_>) {
    tls.send_close_notify();
    let mut out = NoWaitWrite(fd);
    while tls.wants_write() {
        if !matches!(tls.write_tls(&mut out), Ok(n) if n > 0) {
            break;
        }
    }
}

struct NoWaitWrite<'a>(BorrowedFd<'a>);

impl Write for NoWaitWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        Ok(nix::sys::socket::send(self.0.as_raw_fd(), buf, flags)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the handler sees of a connection's TLS session ([`Conn::tls`](super::Conn::tls)).
pub struct TlsInfo<'c> {
    pub(super) session: &'c ServerConnection,
}

impl TlsInfo<'_> {
    /// The negotiated protocol: `"TLSv1.3"` or `"TLSv1.2"`.
    pub fn protocol(&self) -> &'static str {
        match self.session.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "unknown",
        }
    }

    /// The negotiated cipher suite, IANA name (`TLS13_AES_256_GCM_SHA384`).
    pub fn cipher_suite(&self) -> Option<String> {
        self.session
            .negotiated_cipher_suite()
            .map(|s| format!("{:?}", s.suite()))
    }

    /// The ALPN protocol agreed on (`b"http/1.1"`), if the client offered ALPN.
    pub fn alpn(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }

    /// The host name the client asked for (SNI), if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.session.server_name()
    }

    /// The client's certificate chain (DER, its own certificate first), verified against
    /// `--tls-client-ca`; empty if it presented none.
    pub fn client_certificates(&self) -> Vec<&[u8]> {
        self.session
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.as_ref()).collect())
            .unwrap_or_default()
    }

    /// The subject of the client's certificate, RFC 4514 style, most specific first
    /// (`CN=alice,O=Example`), if it presented one.
    pub fn client_subject(&self) -> Option<String> {
        let chain = self.session.peer_certificates()?;
        crate::tls::subject::of_certificate(chain.first()?.as_ref())
    }
}
