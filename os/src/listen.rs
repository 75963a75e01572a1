//! Listening sockets, opened once by the supervisor and inherited by every worker at fd 3
//! onwards (systemd socket activation).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::socket::{
    bind, connect, getsockname, listen, setsockopt, socket, sockopt, AddressFamily, Backlog,
    SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage, UnixAddr,
};

use crate::settings::{ListenAddr, ListenSpec};

pub struct Listener {
    pub spec: ListenSpec,
    pub fd: OwnedFd,
    /// The bound address (the real port when the operator asked for port 0).
    pub local: String,
    /// A unix socket file to remove at exit.
    pub unix_path: Option<PathBuf>,
}

impl Listener {
    /// Connections waiting in this TCP listener's accept queue (Linux reports it in
    /// `tcpi_unacked` of TCP_INFO on a listening socket), so a pool of programs that report
    /// no load can still scale on demand. `None` for unix sockets or if the kernel says no.
    pub fn accept_queue(&self) -> Option<u32> {
        if !matches!(self.spec.addr, ListenAddr::Tcp(_)) {
            return None;
        }
        let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: `info` is a writable tcp_info of `len` bytes and `fd` is an open socket we
        // own; the kernel writes at most `len` bytes and updates `len`.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                info.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return None;
        }
        // SAFETY: getsockopt succeeded; the struct was zeroed, so any tail the kernel did not
        // write is a valid zero.
        let info = unsafe { info.assume_init() };
        Some(info.tcpi_unacked)
    }
}

/// Opens every listener, then moves their fds to `3 + count` and above, so that a child can
/// `dup2` them onto 3, 4, … without clobbering one it still has to copy.
pub fn open_all(
    specs: &[ListenSpec],
    backlog: u32,
    unix_mode: u32,
) -> Result<Vec<Listener>, String> {
    let floor = 3 + specs.len() as RawFd;
    let mut out: Vec<Listener> = Vec::new();
    for spec in specs {
        let opened = open(spec, backlog, unix_mode);
        let (fd, local, unix_path) = match opened {
            Ok(v) => v,
            Err(e) => {
                remove_unix_files(&out);
                return Err(e);
            }
        };
        let high = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(floor))
            .map_err(|e| format!("--listen {}: dup: {e}", spec.text))?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(high) };
        out.push(Listener {
            spec: spec.clone(),
            fd,
            local,
            unix_path,
        });
    }
    Ok(out)
}

pub fn remove_unix_files(listeners: &[Listener]) {
    for l in listeners {
        if let Some(p) = &l.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn open(
    spec: &ListenSpec,
    backlog: u32,
    unix_mode: u32,
) -> Result<(OwnedFd, String, Option<PathBuf>), String> {
    let fail = |what: &str, e: Errno| -> String {
        match e {
            Errno::EADDRINUSE => format!(
                "--listen {}: address already in use (another process listens there)",
                spec.text
            ),
            Errno::EACCES => format!("--listen {}: permission denied ({what})", spec.text),
            e => format!("--listen {}: {what}: {}", spec.text, e.desc()),
        }
    };
    let backlog =
        Backlog::new(backlog.min(i32::MAX as u32) as i32).map_err(|e| fail("backlog", e))?;
    match &spec.addr {
        ListenAddr::Tcp(addr) => {
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)
                .map_err(|e| fail("socket", e))?;
            setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| fail("SO_REUSEADDR", e))?;
            match addr {
                std::net::SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(*a)),
                std::net::SocketAddr::V6(a) => {
                    // `[::]:80` serves IPv6 only; listen on `0.0.0.0:80` too for IPv4.
                    setsockopt(&fd, sockopt::Ipv6V6Only, &true)
                        .map_err(|e| fail("IPV6_V6ONLY", e))?;
                    bind(fd.as_raw_fd(), &SockaddrIn6::from(*a))
                }
            }
            .map_err(|e| fail("bind", e))?;
            listen(&fd, backlog).map_err(|e| fail("listen", e))?;
            let local = getsockname::<SockaddrStorage>(fd.as_raw_fd())
                .ok()
                .and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|a| std::net::SocketAddr::from(std::net::SocketAddrV4::from(*a)))
                        .or_else(|| {
                            s.as_sockaddr_in6().map(|a| {
                                std::net::SocketAddr::from(std::net::SocketAddrV6::from(*a))
                            })
                        })
                })
                .map_or_else(|| addr.to_string(), |a| a.to_string());
            Ok((fd, local, None))
        }
        ListenAddr::Unix(path) => {
            remove_stale_socket(path).map_err(|e| format!("--listen {}: {e}", spec.text))?;
            let fd = socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(|e| fail("socket", e))?;
            let addr = UnixAddr::new(path.as_path()).map_err(|e| fail("address", e))?;
            bind(fd.as_raw_fd(), &addr).map_err(|e| fail("bind", e))?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(unix_mode))
                .map_err(|e| format!("--listen {}: chmod: {e}", spec.text))?;
            listen(&fd, backlog).map_err(|e| {
                let _ = std::fs::remove_file(path);
                fail("listen", e)
            })?;
            Ok((fd, format!("unix:{}", path.display()), Some(path.clone())))
        }
    }
}

/// A socket file left by a dead process is removed; one with a live listener is an error
/// (address in use); any other file is never touched.
pub fn remove_stale_socket(path: &Path) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(format!(
            "{} exists and is not a socket; remove it or choose another path",
            path.display()
        ));
    }
    let probe = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {}", e.desc()))?;
    let addr = UnixAddr::new(path).map_err(|e| format!("address: {}", e.desc()))?;
    match connect(probe.as_raw_fd(), &addr) {
        Ok(()) => Err(format!(
            "address already in use: a process listens on {}",
            path.display()
        )),
        Err(_) => {
            std::fs::remove_file(path).map_err(|e| format!("remove stale {}: {e}", path.display()))
        }
    }
}
