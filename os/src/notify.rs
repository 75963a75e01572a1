//! The sd_notify socket: a unix datagram socket with SO_PASSCRED, so the kernel stamps every
//! message with the sender's pid. Workers find it in NOTIFY_SOCKET.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};

/// One field of an sd_notify message that drover acts on or logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Watchdog,
    Status(String),
    Stopping,
    /// Anything else: logged, never fatal.
    Other(String),
}

pub struct NotifySocket {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

/// A datagram: the sender's pid (if the kernel attached credentials) and its text.
pub struct Datagram {
    pub pid: Option<u32>,
    pub text: Result<String, String>,
}

impl NotifySocket {
    pub fn bind(path: &Path) -> Result<NotifySocket, String> {
        let err = |what: &str, e: Errno| {
            format!("notify socket {}: {what}: {}", path.display(), e.desc())
        };
        let fd = socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| err("socket", e))?;
        setsockopt(&fd, sockopt::PassCred, &true).map_err(|e| err("SO_PASSCRED", e))?;
        let addr = UnixAddr::new(path).map_err(|e| err("address", e))?;
        bind(fd.as_raw_fd(), &addr).map_err(|e| err("bind", e))?;
        Ok(NotifySocket {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The next datagram, or `None` when none is waiting.
    pub fn recv(&self) -> Option<Datagram> {
        let mut buf = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
        let (bytes, truncated, pid) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut pid = None;
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmCredentials(creds) = c {
                                pid = Some(creds.pid() as u32);
                            }
                        }
                    }
                    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                    break (msg.bytes, truncated, pid);
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return None,
            }
        };
        let text = if truncated {
            Err(format!("message longer than {} bytes", buf.len()))
        } else {
            String::from_utf8(buf[..bytes].to_vec()).map_err(|_| "not UTF-8".to_string())
        };
        Some(Datagram { pid, text })
    }
}

/// Splits an sd_notify message (newline-separated `KEY=VALUE` lines) into notices.
pub fn parse(text: &str) -> Result<Vec<Notice>, String> {
    let mut out = Vec::new();
    for line in text.split('\n').filter(|l| !l.is_empty()) {
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line without '=': {:?}", truncate(line)));
        };
        out.push(match (key, value) {
            ("READY", "1") => Notice::Ready,
            ("WATCHDOG", "1") => Notice::Watchdog,
            ("STATUS", v) => Notice::Status(v.to_string()),
            ("STOPPING", "1") => Notice::Stopping,
            _ => Notice::Other(truncate(line).to_string()),
        });
    }
    if out.is_empty() {
        return Err("empty message".into());
    }
    Ok(out)
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The parent pid and process group of `pid`, from /proc/<pid>/stat.
fn stat_of(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace().skip(1);
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((ppid, pgrp))
}

/// The worker a message sender belongs to: the sender itself, its process group (each
/// worker leads its own group, which still holds a program whose `sh -c` parent is gone),
/// or the nearest ancestor that `known` recognises (a worker behind `sh -c` is a grandchild
/// of drover). Bounded: at most 32 steps up.
pub fn find_worker(pid: u32, known: impl Fn(u32) -> bool) -> Option<u32> {
    let mut p = pid;
    for _ in 0..32 {
        if known(p) {
            return Some(p);
        }
        let (ppid, pgrp) = stat_of(p)?;
        if known(pgrp) {
            return Some(pgrp);
        }
        if ppid <= 1 {
            return None;
        }
        p = ppid;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages() {
        assert_eq!(parse("READY=1").unwrap(), vec![Notice::Ready]);
        assert_eq!(
            parse("WATCHDOG=1\nSTATUS=busy serving\n").unwrap(),
            vec![Notice::Watchdog, Notice::Status("busy serving".into())]
        );
        assert_eq!(
            parse("MAINPID=4").unwrap(),
            vec![Notice::Other("MAINPID=4".into())]
        );
        assert!(parse("garbage").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn finds_the_worker_by_ancestry_or_group() {
        let me = std::process::id();
        let (parent, group) = stat_of(me).unwrap();
        assert_eq!(find_worker(me, |p| p == parent), Some(parent));
        assert_eq!(find_worker(me, |p| p == me), Some(me));
        assert_eq!(find_worker(me, |p| p == group), Some(group));
        assert_eq!(find_worker(me, |_| false), None);
    }
}
