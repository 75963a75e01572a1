//! Opening one fresh listening socket for a `--listen` spec: TCP (an IPv6 address serves
//! IPv6 only) or a unix socket file with the operator's mode, listening with the operator's
//! backlog and, for TCP, the `--allow` filter attached before it listens, its errors
//! worded for the operator. It must not adopt inherited sockets or move
//! fds (both are `adopt`'s), and removes no file but its own on failure and, through
//! `socket_file`, a stale socket's.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockname, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    SockaddrIn6, SockaddrStorage, UnixAddr,
};

use super::socket_file::remove_stale_socket;
use crate::allow::Cidr;
use crate::settings::listen::{ListenAddr, ListenSpec};

pub(super) fn open(
    spec: &ListenSpec,
    backlog: u32,
    unix_mode: u32,
    allow: &[Cidr],
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
    let backlog = backlog.min(i32::MAX as u32) as i32;
    match &spec.addr {
        ListenAddr::Tcp(addr) => {
            let fd = tcp(addr, backlog, allow).map_err(|e| match e {
                TcpError::Step(what, e) => fail(what, e),
                TcpError::Filter(e) => {
                    format!("--listen {} with --allow: SO_ATTACH_FILTER: {e}", spec.text)
                }
            })?;
            let local = local_addr(&fd).map_or_else(|| addr.to_string(), |a| a.to_string());
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
            listen_with(&fd, backlog).map_err(|e| {
                let _ = std::fs::remove_file(path);
                fail("listen", e)
            })?;
            Ok((fd, format!("unix:{}", path.display()), Some(path.clone())))
        }
    }
}

/// Why a TCP listener could not be opened: the step and its errno, or the `--allow`
/// filter's error.
#[derive(Debug)]
pub(crate) enum TcpError {
    Step(&'static str, Errno),
    Filter(std::io::Error),
}

impl TcpError {
    /// The errno of the failed step (EADDRINUSE for a taken port).
    pub(crate) fn errno(&self) -> i32 {
        match self {
            TcpError::Step(_, e) => *e as i32,
            TcpError::Filter(e) => e.raw_os_error().unwrap_or(libc::EINVAL),
        }
    }
}

/// A TCP listening socket on `addr` (an IPv6 address serves IPv6 only), close-on-exec,
/// with the `--allow` filter attached before it listens.
pub(crate) fn tcp(
    addr: &std::net::SocketAddr,
    backlog: i32,
    allow: &[Cidr],
) -> Result<OwnedFd, TcpError> {
    let step = |what| move |e| TcpError::Step(what, e);
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd =
        socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(step("socket"))?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(step("SO_REUSEADDR"))?;
    match addr {
        std::net::SocketAddr::V4(a) => bind(fd.as_raw_fd(), &SockaddrIn::from(*a)),
        std::net::SocketAddr::V6(a) => {
            // `[::]:80` serves IPv6 only; listen on `0.0.0.0:80` too for IPv4.
            setsockopt(&fd, sockopt::Ipv6V6Only, &true).map_err(step("IPV6_V6ONLY"))?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(*a))
        }
    }
    .map_err(step("bind"))?;
    // Before listen(2): no SYN can be queued unfiltered.
    if !allow.is_empty() {
        crate::allow::apply(fd.as_fd(), allow).map_err(TcpError::Filter)?;
    }
    listen_with(&fd, backlog).map_err(step("listen"))?;
    Ok(fd)
}

/// The address a TCP socket is bound to (the real port when port 0 was asked for).
fn local_addr(fd: &OwnedFd) -> Option<std::net::SocketAddr> {
    let s = getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    s.as_sockaddr_in()
        .map(|a| std::net::SocketAddr::from(std::net::SocketAddrV4::from(*a)))
        .or_else(|| {
            s.as_sockaddr_in6()
                .map(|a| std::net::SocketAddr::from(std::net::SocketAddrV6::from(*a)))
        })
}

/// listen(2) with the operator's backlog as given: the kernel caps it at
/// `net.core.somaxconn`. (nix's `Backlog` refuses values above the C library's SOMAXCONN
/// constant, which is 128 on musl although Linux allows 4096 by default.)
fn listen_with(fd: &OwnedFd, backlog: i32) -> Result<(), Errno> {
    // SAFETY: listen(2) on a socket we own; no memory is passed.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    Errno::result(rc).map(drop)
}
