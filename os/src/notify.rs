//! The sd_notify socket: a unix datagram socket with SO_PASSCRED, so the kernel stamps every
//! message with the sender's pid. Workers find it in NOTIFY_SOCKET.

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::sys::time::TimeSpec;

/// One field of an sd_notify message that drover acts on or logs.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    Ready,
    Watchdog,
    Status(String),
    Stopping,
    /// `X_DROVER_LOAD=busy=B,requests=R[,busy_since_usec=T]`: threads busy now, requests
    /// served in total, and when the longest-running request started (CLOCK_MONOTONIC in
    /// microseconds, the clock of systemd's `MONOTONIC_USEC`). The embedded runtime sends it;
    /// any worker may.
    Load {
        busy: u32,
        requests: u64,
        busy_since_usec: Option<u64>,
    },
    /// Anything else: logged, never fatal.
    Other(String),
}

pub struct NotifySocket {
    pub fd: OwnedFd,
    pub path: PathBuf,
}

/// A datagram: the sender's pid (if the kernel attached credentials), how long ago it
/// arrived, and its text.
pub struct Datagram {
    pub pid: Option<u32>,
    /// From the kernel's receive stamp (SO_TIMESTAMPNS). The stamp is wall-clock time, so a
    /// clock step between arrival and reading skews it: the caller clamps.
    pub age: Duration,
    pub text: Result<String, String>,
}

/// How many datagrams a unix datagram socket queues before its senders block: the
/// `net.unix.max_dgram_qlen` sysctl of this network namespace (the kernel's default is 10;
/// systemd raises it to 512). 0 if it cannot be read: then nothing is left waiting.
pub fn queue_capacity() -> u32 {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
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
        // Arrival times: messages may be read later than they came (`messages_due`).
        setsockopt(&fd, sockopt::ReceiveTimestampns, &true)
            .map_err(|e| err("SO_TIMESTAMPNS", e))?;
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
        let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials, TimeSpec);
        let (bytes, truncated, pid, stamp) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let (mut pid, mut stamp) = (None, None);
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            match c {
                                ControlMessageOwned::ScmCredentials(creds) => {
                                    pid = Some(creds.pid() as u32)
                                }
                                ControlMessageOwned::ScmTimestampns(ts) => stamp = Some(ts),
                                _ => {}
                            }
                        }
                    }
                    let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                    break (msg.bytes, truncated, pid, stamp);
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
        let age = stamp.map_or(Duration::ZERO, |ts| {
            let arrived = Duration::from(ts);
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(Duration::ZERO, |now| now.saturating_sub(arrived))
        });
        Some(Datagram { pid, age, text })
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
            ("X_DROVER_LOAD", v) => parse_load(v)?,
            _ => Notice::Other(truncate(line).to_string()),
        });
    }
    if out.is_empty() {
        return Err("empty message".into());
    }
    Ok(out)
}

/// `busy=B,requests=R[,busy_since_usec=T]`; unknown keys are skipped (newer senders).
fn parse_load(value: &str) -> Result<Notice, String> {
    let bad = || format!("bad X_DROVER_LOAD value {:?}", truncate(value));
    let (mut busy, mut requests, mut since) = (None, None, None);
    for part in value.split(',').filter(|p| !p.is_empty()) {
        let (key, v) = part.split_once('=').ok_or_else(bad)?;
        match key {
            "busy" => busy = Some(v.parse::<u32>().map_err(|_| bad())?),
            "requests" => requests = Some(v.parse::<u64>().map_err(|_| bad())?),
            "busy_since_usec" => since = Some(v.parse::<u64>().map_err(|_| bad())?),
            _ => {}
        }
    }
    match (busy, requests) {
        (Some(busy), Some(requests)) => Ok(Notice::Load {
            busy,
            requests,
            busy_since_usec: since.filter(|_| busy > 0),
        }),
        _ => Err(format!("{}: needs busy= and requests=", bad())),
    }
}

/// CLOCK_MONOTONIC in microseconds: the clock of `busy_since_usec`, the same in every
/// process of the machine (std's `Instant` reads it too, but hides the value).
pub fn monotonic_usec() -> u64 {
    clock_usec(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// The same clock as of the last timer tick (1–10 ms behind): what a serving thread stamps
/// its report with several times per request. The stamps are judged at heartbeat and
/// request-timeout scale, where a tick does not matter, and this read costs no timer
/// access (a request on a new connection read the precise clock 5 times, about 1 % of
/// its CPU).
pub fn coarse_monotonic_usec() -> u64 {
    clock_usec(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
}

fn clock_usec(clock: nix::time::ClockId) -> u64 {
    nix::time::clock_gettime(clock).map_or(0, |t| {
        (t.tv_sec() as u64)
            .saturating_mul(1_000_000)
            .saturating_add(t.tv_nsec() as u64 / 1000)
    })
}

/// A `busy_since_usec` as machine time, given the machine's `now`: both clocks are
/// monotonic, so the request's age carries over exactly. A start in the future is now.
pub fn busy_since(now: drover_machine::Instant, since_usec: u64) -> drover_machine::Instant {
    let age_nanos = monotonic_usec()
        .saturating_sub(since_usec)
        .saturating_mul(1000);
    drover_machine::Instant::from_nanos(now.as_nanos().saturating_sub(age_nanos))
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(200) {
        Some((i, _)) => &s[..i],
        None => s,
    }
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
        let crate::guard::ProcStat { ppid, pgrp, .. } = crate::guard::proc_stat(p)?;
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
        assert_eq!(
            parse("WATCHDOG=1\nX_DROVER_LOAD=busy=2,requests=17,busy_since_usec=99,new=1").unwrap(),
            vec![
                Notice::Watchdog,
                Notice::Load {
                    busy: 2,
                    requests: 17,
                    busy_since_usec: Some(99)
                }
            ]
        );
        assert_eq!(
            parse("X_DROVER_LOAD=busy=0,requests=3,busy_since_usec=5").unwrap(),
            vec![Notice::Load {
                busy: 0,
                requests: 3,
                busy_since_usec: None
            }]
        );
        assert!(parse("X_DROVER_LOAD=busy=x,requests=1").is_err());
        assert!(parse("X_DROVER_LOAD=busy=1").is_err());
        assert!(parse("garbage").is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn a_datagram_carries_its_sender_and_its_arrival() {
        let dir = std::env::temp_dir().join(format!("drover-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = NotifySocket::bind(&dir.join("notify")).unwrap();
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"WATCHDOG=1", &sock.path).unwrap();
        let d = sock.recv().expect("queued");
        assert_eq!(d.pid, Some(std::process::id()));
        assert_eq!(d.text.as_deref(), Ok("WATCHDOG=1"));
        // Stamped by the kernel on arrival, just now (a wall-clock step could skew it).
        assert!(d.age < Duration::from_secs(60), "{:?}", d.age);
        assert!(sock.recv().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
        // Linux always has the sysctl; the kernel's default is 10.
        assert!(queue_capacity() >= 1);
    }

    #[test]
    fn busy_since_carries_the_age_over() {
        let now = drover_machine::Instant::from_secs(100);
        let since = monotonic_usec() - 2_000_000;
        let t = busy_since(now, since);
        let age = now.saturating_since(t);
        assert!(age >= std::time::Duration::from_secs(2), "{age:?}");
        assert!(age < std::time::Duration::from_secs(3), "{age:?}");
        assert_eq!(busy_since(now, u64::MAX), now);
    }

    #[test]
    fn finds_the_worker_by_ancestry_or_group() {
        let me = std::process::id();
        let st = crate::guard::proc_stat(me).unwrap();
        let (parent, group) = (st.ppid, st.pgrp);
        assert_eq!(find_worker(me, |p| p == parent), Some(parent));
        assert_eq!(find_worker(me, |p| p == me), Some(me));
        assert_eq!(find_worker(me, |p| p == group), Some(group));
        assert_eq!(find_worker(me, |_| false), None);
    }
}
