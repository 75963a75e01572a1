//! drover talking to its own service manager: systemd (`Type=notify`, `Type=notify-reload`,
//! `WatchdogSec=`) or a supervising drover. Both hand drover `NOTIFY_SOCKET` (a path, or an
//! abstract name when it starts with '@') and maybe `WATCHDOG_USEC`/`WATCHDOG_PID`.
//!
//! The environment is read once and never modified: the shell strips these variables for
//! workers itself, and a live-upgrade successor must inherit `NOTIFY_SOCKET` from drover's
//! own environment. Every send is best-effort and non-blocking: a manager that is gone or
//! slow never stalls or fails the event loop (the first failure is a warning, later ones are
//! debug lines).

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{sendto, MsgFlags, UnixAddr};

/// The longest STATUS text sent; longer ones are cut at a character boundary.
const STATUS_MAX: usize = 1024;

/// The connection to drover's own service manager.
pub struct Manager {
    /// The manager's socket, as written in NOTIFY_SOCKET (for messages).
    shown: String,
    addr: UnixAddr,
    sock: UnixDatagram,
    watchdog_usec: Option<u64>,
    /// Set after the first failed send has been logged as a warning.
    warned: AtomicBool,
}

/// What the environment says, before any socket exists.
#[derive(Debug, PartialEq, Eq)]
struct EnvParts {
    socket: Vec<u8>,
    watchdog_usec: Option<u64>,
    /// Malformed WATCHDOG_* values, ignored with these warnings.
    warnings: Vec<String>,
}

/// NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID as systemd defines them: no socket, no
/// manager; the watchdog counts only when WATCHDOG_PID is unset or names `our_pid`.
fn parse_env(
    notify: Option<&OsStr>,
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    our_pid: u32,
) -> Option<EnvParts> {
    let socket = notify.filter(|s| !s.is_empty())?.as_bytes().to_vec();
    let mut warnings = Vec::new();
    let for_us = match pid.map(|p| p.to_str().and_then(|p| p.parse::<u32>().ok())) {
        None => true,
        Some(Some(p)) => p == our_pid,
        Some(None) => {
            warnings.push(format!(
                "WATCHDOG_PID={:?} is not a process id; the service manager's watchdog is ignored",
                pid.unwrap_or_default()
            ));
            false
        }
    };
    let watchdog_usec = match usec {
        Some(text) if for_us => match text.to_str().and_then(|t| t.parse::<u64>().ok()) {
            Some(0) => {
                warnings.push(
                    "WATCHDOG_USEC=0: a zero watchdog interval is ignored (unset it, or set the \
                     unit's WatchdogSec=)"
                        .to_string(),
                );
                None
            }
            Some(usec) => Some(usec),
            None => {
                warnings.push(format!(
                    "WATCHDOG_USEC={text:?} is not a number of microseconds; the service \
                     manager's watchdog is ignored"
                ));
                None
            }
        },
        _ => None,
    };
    Some(EnvParts {
        socket,
        watchdog_usec,
        warnings,
    })
}

/// A copy of `status` that cannot add fields to a message: control characters (newlines
/// above all) become spaces, and it is cut to `STATUS_MAX` bytes.
fn clean_status(status: &str) -> String {
    let mut out = String::with_capacity(status.len().min(STATUS_MAX));
    for c in status.chars() {
        if out.len() + c.len_utf8() > STATUS_MAX {
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

impl Manager {
    /// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID from the process environment.
    /// `None` when NOTIFY_SOCKET is unset or empty, or names a socket drover cannot use (a
    /// warning says why). Call it once, at start. The environment is left as it is.
    pub fn from_env() -> Option<Manager> {
        let notify = std::env::var_os("NOTIFY_SOCKET");
        let usec = std::env::var_os("WATCHDOG_USEC");
        let pid = std::env::var_os("WATCHDOG_PID");
        let parts = parse_env(
            notify.as_deref(),
            usec.as_deref(),
            pid.as_deref(),
            std::process::id(),
        )?;
        for w in &parts.warnings {
            tracing::warn!("{w}");
        }
        match Manager::from_bytes(&parts.socket, parts.watchdog_usec) {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!("{e}; not notifying the service manager");
                None
            }
        }
    }

    /// A manager listening on `socket` (an absolute path, or `@name` for the abstract
    /// namespace) with an optional watchdog interval in microseconds.
    #[cfg(test)]
    pub fn from_parts(socket: &str, watchdog_usec: Option<u64>) -> Result<Manager, String> {
        Manager::from_bytes(socket.as_bytes(), watchdog_usec.filter(|&u| u > 0))
    }

    fn from_bytes(socket: &[u8], watchdog_usec: Option<u64>) -> Result<Manager, String> {
        let shown = String::from_utf8_lossy(socket).into_owned();
        let err = |why: &str| format!("NOTIFY_SOCKET={shown:?}: {why}");
        let addr = match socket {
            [] => return Err(err("empty")),
            [b'@', name @ ..] => {
                UnixAddr::new_abstract(name).map_err(|e| err(&format!("address: {}", e.desc())))?
            }
            [b'/', ..] => UnixAddr::new(OsStr::from_bytes(socket))
                .map_err(|e| err(&format!("address: {}", e.desc())))?,
            _ => {
                return Err(err(
                    "expected an absolute path or @name for the abstract namespace",
                ))
            }
        };
        // std's unbound datagram socket is created close-on-exec.
        let sock = UnixDatagram::unbound().map_err(|e| err(&format!("socket: {e}")))?;
        sock.set_nonblocking(true)
            .map_err(|e| err(&format!("non-blocking: {e}")))?;
        Ok(Manager {
            shown,
            addr,
            sock,
            watchdog_usec,
            warned: AtomicBool::new(false),
        })
    }

    /// `READY=1`: the pool is up.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", clean_status(status)));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC` (which `Type=notify-reload` requires); send
    /// `ready` when the reload is done.
    pub fn reloading(&self, status: &str) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS={}",
            crate::notify::monotonic_usec(),
            clean_status(status)
        ));
    }

    /// `STOPPING=1`: drover has begun to stop.
    pub fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", clean_status(status)));
    }

    /// `MAINPID=pid`: the service's main process is now `pid` (a live-upgrade successor).
    pub fn main_pid(&self, pid: u32) {
        self.send(&format!("MAINPID={pid}"));
    }

    /// `WATCHDOG=1`: drover's event loop is alive.
    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// How often to send `WATCHDOG=1`: half of WATCHDOG_USEC (systemd's advice), at least a
    /// millisecond; `None` when the manager runs no watchdog on drover.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_usec
            .map(|usec| Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
    }

    /// One datagram, never blocking; a failure is logged, never returned.
    fn send(&self, text: &str) {
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let sent = loop {
            match sendto(self.sock.as_raw_fd(), text.as_bytes(), &self.addr, flags) {
                Err(Errno::EINTR) => continue,
                other => break other,
            }
        };
        if let Err(e) = sent {
            let first = text.lines().next().unwrap_or_default();
            if self.warned.swap(true, Ordering::Relaxed) {
                tracing::debug!(
                    "service manager notify ({first}) to {} failed: {}",
                    self.shown,
                    e.desc()
                );
            } else {
                tracing::warn!(
                    "service manager notify ({first}) to {} failed: {} (further failures are \
                     logged at debug level)",
                    self.shown,
                    e.desc()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;
    use std::path::PathBuf;

    fn os(s: &str) -> Option<&OsStr> {
        Some(OsStr::new(s))
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("drover-sdnotify-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn exercise(manager: &Manager, sock: &UnixDatagram) {
        manager.ready("4 workers");
        assert_eq!(recv(sock), "READY=1\nSTATUS=4 workers");
        manager.stopping("draining");
        assert_eq!(recv(sock), "STOPPING=1\nSTATUS=draining");
        manager.main_pid(4242);
        assert_eq!(recv(sock), "MAINPID=4242");
        manager.stopping("evil\nREADY=1\r\n");
        assert_eq!(recv(sock), "STOPPING=1\nSTATUS=evil READY=1  ");
        manager.watchdog();
        assert_eq!(recv(sock), "WATCHDOG=1");
        let before = crate::notify::monotonic_usec();
        manager.reloading("reloading");
        let text = recv(sock);
        let after = crate::notify::monotonic_usec();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines.len(), 3, "{text:?}");
        assert_eq!(lines[0], "RELOADING=1");
        let usec: u64 = lines[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap()
            .parse()
            .unwrap();
        assert!(before <= usec && usec <= after, "{text:?}");
        assert_eq!(lines[2], "STATUS=reloading");
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = temp_dir("path");
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let manager = Manager::from_parts(path.to_str().unwrap(), Some(10_000_000)).unwrap();
        exercise(&manager, &sock);
        assert_eq!(manager.watchdog_interval(), Some(Duration::from_secs(5)));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("drover-sdnotify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let manager = Manager::from_parts(&format!("@{name}"), None).unwrap();
        exercise(&manager, &sock);
        assert_eq!(manager.watchdog_interval(), None);
    }

    #[test]
    fn a_missing_manager_is_not_an_error() {
        let dir = temp_dir("gone");
        let path = dir.join("nobody.sock");
        let manager = Manager::from_parts(path.to_str().unwrap(), None).unwrap();
        // Nobody listens: every send fails, quietly and without blocking.
        for _ in 0..3 {
            manager.ready("up");
            manager.watchdog();
        }
        assert!(manager.warned.load(Ordering::Relaxed));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_manager_socket_never_blocks() {
        let dir = temp_dir("full");
        let path = dir.join("notify.sock");
        let _sock = UnixDatagram::bind(&path).unwrap();
        let manager = Manager::from_parts(path.to_str().unwrap(), None).unwrap();
        let start = std::time::Instant::now();
        // Far more than a unix datagram queue holds (max_dgram_qlen is 512 by default).
        for _ in 0..5000 {
            manager.watchdog();
        }
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(manager.warned.load(Ordering::Relaxed));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_unusable_sockets() {
        assert!(Manager::from_parts("", None).is_err());
        let e = Manager::from_parts("relative/notify.sock", None)
            .err()
            .unwrap();
        assert!(e.contains("NOTIFY_SOCKET") && e.contains("absolute"), "{e}");
        let long = format!("/{}", "x".repeat(200));
        assert!(Manager::from_parts(&long, None).is_err());
        assert!(Manager::from_parts("vsock:2:1234", None).is_err());
    }

    #[test]
    fn watchdog_interval_is_half_with_a_floor() {
        let m = Manager::from_parts("@x", Some(3_000_000)).unwrap();
        assert_eq!(m.watchdog_interval(), Some(Duration::from_millis(1500)));
        let m = Manager::from_parts("@x", Some(1)).unwrap();
        assert_eq!(m.watchdog_interval(), Some(Duration::from_millis(1)));
        let m = Manager::from_parts("@x", Some(0)).unwrap();
        assert_eq!(m.watchdog_interval(), None);
    }

    #[test]
    fn parses_the_environment() {
        assert_eq!(parse_env(None, os("100"), None, 7), None);
        assert_eq!(parse_env(os(""), None, None, 7), None);
        let p = parse_env(os("/run/n.sock"), None, None, 7).unwrap();
        assert_eq!(p.socket, b"/run/n.sock");
        assert_eq!(p.watchdog_usec, None);
        assert!(p.warnings.is_empty());

        // WATCHDOG_PID unset or ours: the watchdog counts.
        let p = parse_env(os("@n"), os("2000000"), None, 7).unwrap();
        assert_eq!(p.watchdog_usec, Some(2_000_000));
        assert!(p.warnings.is_empty());
        let p = parse_env(os("@n"), os("2000000"), os("7"), 7).unwrap();
        assert_eq!(p.watchdog_usec, Some(2_000_000));

        // Meant for another process: no watchdog, no warning.
        let p = parse_env(os("@n"), os("2000000"), os("8"), 7).unwrap();
        assert_eq!(p.watchdog_usec, None);
        assert!(p.warnings.is_empty());
        assert_eq!(p.socket, b"@n");

        // Malformed: no watchdog, a warning naming the variable.
        for (usec, pid, var) in [
            ("abc", None, "WATCHDOG_USEC"),
            ("0", None, "WATCHDOG_USEC"),
            ("-5", None, "WATCHDOG_USEC"),
            ("2000000", Some("x7"), "WATCHDOG_PID"),
        ] {
            let p = parse_env(os("@n"), os(usec), pid.and_then(os), 7).unwrap();
            assert_eq!(p.watchdog_usec, None, "{usec} {pid:?}");
            assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
            assert!(p.warnings[0].contains(var), "{:?}", p.warnings);
        }

        // Not UTF-8: the socket is bytes; a non-UTF-8 number is malformed.
        let raw = OsStr::from_bytes(b"@\xff");
        let p = parse_env(Some(raw), Some(OsStr::from_bytes(b"\xff")), None, 7).unwrap();
        assert_eq!(p.socket, b"@\xff");
        assert_eq!(p.watchdog_usec, None);
        assert_eq!(p.warnings.len(), 1);
    }

    #[test]
    fn statuses_cannot_inject_fields() {
        assert_eq!(clean_status("a\nb\rc\0d\te"), "a b c d e");
        let long = "é".repeat(STATUS_MAX);
        let cut = clean_status(&long);
        assert!(cut.len() <= STATUS_MAX && cut.len() >= STATUS_MAX - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
