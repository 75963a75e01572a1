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
            // Before listen(2): no SYN can be queued unfiltered.
            if !allow.is_empty() {
                crate::allow::apply(fd.as_fd(), allow).map_err(|e| {
                    format!("--listen {} with --allow: SO_ATTACH_FILTER: {e}", spec.text)
                })?;
            }
            listen_with(&fd, backlog).map_err(|e| fail("listen", e))?;
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
            listen_with(&fd, backlog).map_err(|e| {
                let _ = std::fs::remove_file(path);
                fail("listen", e)
            })?;
            Ok((fd, format!("unix:{}", path.display()), Some(path.clone())))
        }
    }
}

/// listen(2) with the operator's backlog as given: the kernel caps it at
/// `net.core.somaxconn`. (nix's `Backlog` refuses values above the C library's SOMAXCONN
/// constant, which is 128 on musl although Linux allows 4096 by default.)
fn listen_with(fd: &OwnedFd, backlog: i32) -> Result<(), Errno> {
    // SAFETY: listen(2) on a socket we own; no memory is passed.
    let rc = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    Errno::result(rc).map(drop)
}
