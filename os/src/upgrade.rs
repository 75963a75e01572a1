//! The OS side of a live upgrade: the channel between a drover and its successor, and how a
//! drover learns at start that it is one.
//!
//! The predecessor starts the successor with its listeners at fd 3 onwards (LISTEN_FDS, as
//! systemd passes them) and one end of a socket pair at `DROVER_UPGRADE_FD`. One line each
//! way, the rest is the machine's protocol:
//!
//! ```text
//! successor   → predecessor   ready      its pool is settled: every wanted worker Ready
//! predecessor → successor     takeover   the predecessor stopped accepting and drains; the
//!                                        successor now owns the pid file, the control
//!                                        socket's path and the unix socket files
//! ```
//!
//! The predecessor's decision (hand over, or roll back on timeout/exit/failure) is the
//! machine's `UpgradeState`. End of file before `takeover` means the predecessor is gone:
//! the successor takes over anyway (its workers already serve).

use std::ffi::{CString, OsStr};
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;

pub const UPGRADE_FD_VAR: &str = "DROVER_UPGRADE_FD";
/// Set by a supervising parent (`--supervise`): its pid file and its own upgrade.
pub const SUPERVISED_VAR: &str = "DROVER_SUPERVISED";
/// The predecessor's pool generation, for a successor to number its own on from.
pub const GENERATION_VAR: &str = "DROVER_UPGRADE_GENERATION";

const LINE_MAX: usize = 64;

/// A line of the upgrade protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Ready,
    Takeover,
}

impl Message {
    fn text(&self) -> &'static [u8] {
        match self {
            Message::Ready => b"ready\n",
            Message::Takeover => b"takeover\n",
        }
    }
}

/// One end of the upgrade socket pair, non-blocking.
pub struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// What a read of the channel brought.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    pub messages: Vec<Message>,
    /// The other side is gone (exited, or closed its end).
    pub closed: bool,
    /// Lines that are no message of the protocol, for the log.
    pub garbage: Vec<String>,
}

impl Channel {
    /// A connected pair: (this drover's end, the successor's end).
    pub fn pair() -> std::io::Result<(Channel, OwnedFd)> {
        let (ours, theirs) = UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        Ok((Channel::new(ours), OwnedFd::from(theirs)))
    }

    fn new(stream: UnixStream) -> Channel {
        Channel {
            stream,
            buf: Vec::new(),
        }
    }

    /// The successor's end, from `DROVER_UPGRADE_FD`.
    pub fn inherited(fd: RawFd) -> std::io::Result<Channel> {
        // SAFETY: the predecessor placed an open socket at this fd for us and nothing else in
        // this process claims it (it is read once, at start).
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let flags = nix::fcntl::fcntl(owned.as_fd(), nix::fcntl::FcntlArg::F_GETFD)?;
        let _ = nix::fcntl::fcntl(
            owned.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(
                nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC,
            ),
        );
        let stream = UnixStream::from(owned);
        stream.set_nonblocking(true)?;
        Ok(Channel::new(stream))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Best effort: a peer that is gone shows up as `closed` on the next read.
    pub fn send(&mut self, message: Message) {
        if let Err(e) = self.stream.write_all(message.text()) {
            tracing::warn!("upgrade channel: send: {e}");
        }
    }

    /// Everything readable now.
    pub fn receive(&mut self) -> Received {
        let mut out = Received::default();
        let mut chunk = [0u8; 256];
        // Bounded: a peer cannot keep this loop going; what remains is read next wake-up.
        for _ in 0..16 {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    out.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    out.closed = true;
                    break;
                }
            }
        }
        parse_lines(&mut self.buf, &mut out);
        out
    }
}

fn parse_lines(buf: &mut Vec<u8>, out: &mut Received) {
    while let Some(end) = buf.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = buf.drain(..=end).collect();
        match line.trim_ascii() {
            b"ready" => out.messages.push(Message::Ready),
            b"takeover" => out.messages.push(Message::Takeover),
            other => out
                .garbage
                .push(String::from_utf8_lossy(&other[..other.len().min(LINE_MAX)]).into()),
        }
    }
    if buf.len() > LINE_MAX {
        out.garbage
            .push(String::from_utf8_lossy(&buf[..LINE_MAX]).into_owned());
        buf.clear();
    }
}

/// `DROVER_UPGRADE_FD`: the fd of the channel to the predecessor, when this drover is a
/// successor. Errors name the variable.
pub fn parse_upgrade_fd(value: Option<&OsStr>) -> Result<Option<RawFd>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("");
    match text.parse::<RawFd>() {
        Ok(fd) if fd >= 3 => Ok(Some(fd)),
        _ => Err(format!(
            "{UPGRADE_FD_VAR}={}: not a descriptor number of 3 or more; it is set by a drover \
             for its live-upgrade successor, unset it",
            value.to_string_lossy()
        )),
    }
}

/// `DROVER_UPGRADE_GENERATION`: the predecessor's generation, for a successor (`None`
/// when unset: a predecessor of an older build). Errors name the variable.
pub fn parse_generation(value: Option<&OsStr>) -> Result<Option<u32>, String> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .to_str()
        .and_then(|t| t.parse().ok())
        .map(Some)
        .ok_or_else(|| {
            format!(
                "{GENERATION_VAR}={}: not a generation number; it is set by a drover for its \
             live-upgrade successor, unset it",
                value.to_string_lossy()
            )
        })
}

/// The program a live upgrade starts: drover's own binary and arguments, taken at start so a
/// binary replaced on disk since (a new build, a package upgrade) is the one started.
pub struct Relaunch {
    pub program: CString,
    pub argv: Vec<CString>,
}

impl Relaunch {
    /// This process's binary path and argv (`/proc/self/exe` is resolved now: once the
    /// file is replaced it would name the deleted old binary).
    pub fn current() -> Option<Relaunch> {
        let exe = std::env::current_exe().ok()?;
        let c = |s: &OsStr| CString::new(s.as_bytes()).ok();
        Some(Relaunch {
            program: c(exe.as_os_str())?,
            argv: std::env::args_os()
                .map(|a| c(&a))
                .collect::<Option<Vec<_>>>()?,
        })
    }

    /// A configured command instead (`upgrade_command`), looked up like a worker's program.
    pub fn command(argv: &[String], program: &std::path::Path) -> Option<Relaunch> {
        Some(Relaunch {
            program: CString::new(program.as_os_str().as_bytes()).ok()?,
            argv: argv
                .iter()
                .map(|a| CString::new(a.as_bytes()).ok())
                .collect::<Option<Vec<_>>>()?,
        })
    }

    pub fn describe(&self) -> String {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_the_pair_and_eof_is_seen() {
        let (mut a, b) = Channel::pair().unwrap();
        let mut b = Channel::new(UnixStream::from(b));
        b.stream.set_nonblocking(true).unwrap();
        b.send(Message::Ready);
        let got = a.receive();
        assert_eq!(got.messages, vec![Message::Ready]);
        assert!(!got.closed);
        a.send(Message::Takeover);
        assert_eq!(b.receive().messages, vec![Message::Takeover]);
        drop(b);
        assert!(a.receive().closed, "the peer's exit must read as closed");
    }

    #[test]
    fn partial_lines_wait_and_garbage_is_reported_bounded() {
        let mut buf = b"rea".to_vec();
        let mut out = Received::default();
        parse_lines(&mut buf, &mut out);
        assert!(out.messages.is_empty() && out.garbage.is_empty());
        buf.extend_from_slice(b"dy\nhello\n");
        parse_lines(&mut buf, &mut out);
        assert_eq!(out.messages, vec![Message::Ready]);
        assert_eq!(out.garbage, vec!["hello".to_string()]);
        let mut flood = vec![b'x'; 1000];
        let mut out = Received::default();
        parse_lines(&mut flood, &mut out);
        assert!(flood.is_empty(), "an endless line must not grow the buffer");
        assert_eq!(out.garbage[0].len(), LINE_MAX);
    }

    #[test]
    fn upgrade_fd_variable_is_checked() {
        assert_eq!(parse_generation(None), Ok(None));
        assert_eq!(parse_generation(Some(OsStr::new("7"))), Ok(Some(7)));
        for bad in ["", "-1", "x", "4294967296"] {
            let e = parse_generation(Some(OsStr::new(bad))).unwrap_err();
            assert!(e.contains(GENERATION_VAR), "{e}");
        }
        assert_eq!(parse_upgrade_fd(None), Ok(None));
        assert_eq!(parse_upgrade_fd(Some(OsStr::new("7"))), Ok(Some(7)));
        for bad in ["", "x", "2", "-1"] {
            let e = parse_upgrade_fd(Some(OsStr::new(bad))).unwrap_err();
            assert!(e.contains(UPGRADE_FD_VAR), "{e}");
        }
    }
}
