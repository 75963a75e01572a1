//! Socket activation: the listening sockets drover did not open itself, passed through
//! LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES by its service manager or by the drover it replaces,
//! and what such an fd is (a listening stream socket, and on which address). It takes the
//! fds once and checks them; it must not decide which spec an inherited socket serves
//! (`matching` and `adopt` do) and leaves the environment as it is.

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::socket::{getsockname, sockopt, SockType, SockaddrStorage};

use crate::settings::listen::ListenAddr;

/// A listening socket drover did not open itself: passed by its own service manager
/// (systemd socket activation) or by the drover it replaces in a live upgrade, both through
/// LISTEN_FDS.
#[derive(Debug)]
pub struct Inherited {
    pub fd: OwnedFd,
    /// Its LISTEN_FDNAMES entry ("" when none was given).
    pub name: String,
    /// Its bound address as `open` writes it: `127.0.0.1:8080`, `[::1]:80`, `unix:/path`
    /// (`unix:@name` for the abstract namespace).
    pub local: String,
    /// The same address, when a `--listen` spec could name it (not for abstract sockets).
    pub addr: Option<ListenAddr>,
}

/// LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES as systemd defines them: `Some((count, names))`
/// when LISTEN_PID names `our_pid` and LISTEN_FDS is set; `None` when the sockets are meant
/// for another process or none were passed. Missing names are "".
fn parse_listen_env(
    fds: Option<&str>,
    pid: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Option<(usize, Vec<String>)>, String> {
    const FDS_MAX: usize = 65_536;
    let Some(pid) = pid else {
        return Ok(None);
    };
    let pid: u32 = pid.trim().parse().map_err(|_| {
        format!(
            "LISTEN_PID={pid:?} is not a process id; socket activation sets it to the pid the \
             sockets are for (unset LISTEN_PID and LISTEN_FDS to open the --listen addresses)"
        )
    })?;
    if pid != our_pid {
        return Ok(None);
    }
    let Some(fds) = fds else {
        return Ok(None);
    };
    let n: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|&n| n <= FDS_MAX)
        .ok_or_else(|| {
            format!(
                "LISTEN_FDS={fds:?} is not a count of file descriptors (0 to {FDS_MAX}); \
                 socket activation sets it to the number of sockets passed at fd 3 onwards \
                 (unset LISTEN_PID and LISTEN_FDS to open the --listen addresses)"
            )
        })?;
    let mut out: Vec<String> = match names {
        None | Some("") => Vec::new(),
        Some(names) => names.split(':').map(str::to_string).collect(),
    };
    if out.len() > n {
        return Err(format!(
            "LISTEN_FDNAMES={:?} has {} names for LISTEN_FDS={n}; give one name per socket, \
             separated by ':'",
            names.unwrap_or_default(),
            out.len()
        ));
    }
    out.resize(n, String::new());
    Ok(Some((n, out)))
}

/// The sockets passed by LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES (fds 3..3+n) when LISTEN_PID is
/// our pid, each made close-on-exec, with their names and bound addresses. LISTEN_PID unset
/// or another process's: none. Every fd must be a listening stream socket. Only the first
/// call takes the fds (later calls return none); the environment is left as it is.
/// The descriptors socket activation hands this process (3..3+n when `LISTEN_PID` names
/// it), read from the environment without taking them: drover takes them over later, so
/// they are never a program's own. Nothing on malformed variables (`inherited_from_env`
/// reports those).
pub fn activation_fds() -> Vec<RawFd> {
    let var = |key: &str| std::env::var(key).ok();
    activation_fds_from(
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
}

fn activation_fds_from(
    fds: Option<&str>,
    pid: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Vec<RawFd> {
    match parse_listen_env(fds, pid, names, our_pid) {
        Ok(Some((n, _))) => (0..n).map(|i| 3 + i as RawFd).collect(),
        _ => Vec::new(),
    }
}

pub fn inherited_from_env() -> Result<Vec<Inherited>, String> {
    static TAKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let var = |key: &str| -> Result<Option<String>, String> {
        match std::env::var(key) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(v)) => Err(format!(
                "{key}={v:?} is not UTF-8; socket activation sets it to plain text"
            )),
        }
    };
    let (fds, pid, names) = (
        var("LISTEN_FDS")?,
        var("LISTEN_PID")?,
        var("LISTEN_FDNAMES")?,
    );
    let Some((n, names)) = parse_listen_env(
        fds.as_deref(),
        pid.as_deref(),
        names.as_deref(),
        std::process::id(),
    )?
    else {
        return Ok(Vec::new());
    };
    if TAKEN.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    // Take every fd first, so that an error closes them all rather than leaving some open.
    let mut owned = Vec::with_capacity(n);
    for (i, name) in names.into_iter().enumerate() {
        let raw = 3 + i as RawFd;
        let label = if name.is_empty() {
            format!("LISTEN_FDS={n}: fd {raw}")
        } else {
            format!("LISTEN_FDS={n}: fd {raw} ({name})")
        };
        // SAFETY: F_GETFD reads the descriptor flags of `raw` and touches no memory; on a
        // closed descriptor it fails with EBADF.
        if unsafe { libc::fcntl(raw, libc::F_GETFD) } < 0 {
            return Err(format!(
                "{label} is not open; the process that started drover set LISTEN_FDS without \
                 passing the sockets (unset LISTEN_PID and LISTEN_FDS)"
            ));
        }
        // SAFETY: LISTEN_PID names this process, so the socket-activation protocol hands it
        // fds 3..3+n; `raw` is open (checked above) and the TAKEN flag makes this the only
        // place in the process that takes ownership of it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        owned.push((fd, name, label));
    }
    let mut out = Vec::with_capacity(n);
    for (fd, name, label) in owned {
        fcntl(
            fd.as_fd(),
            FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| format!("{label}: close-on-exec: {}", e.desc()))?;
        let (local, addr) = describe_listener(fd.as_fd()).map_err(|e| {
            format!(
                "{label}: {e}; socket activation must pass listening stream sockets \
                 (ListenStream= in the .socket unit, Accept=no)"
            )
        })?;
        out.push(Inherited {
            fd,
            name,
            local,
            addr,
        });
    }
    Ok(out)
}

/// A listening stream socket's bound address, as `open` writes it, and as a `ListenAddr`
/// when one can name it. Anything else (not a socket, not a stream, not listening) is an
/// error saying which.
pub fn describe_listener(
    fd: std::os::fd::BorrowedFd<'_>,
) -> Result<(String, Option<ListenAddr>), String> {
    match nix::sys::socket::getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => {}
        Ok(other) => return Err(format!("a {other:?} socket, not a stream socket")),
        Err(Errno::ENOTSOCK) => return Err("not a socket".to_string()),
        Err(Errno::EINVAL) => {
            return Err("a socket of an unknown type, not a stream socket".to_string())
        }
        Err(e) => return Err(format!("socket type: {}", e.desc())),
    }
    match nix::sys::socket::getsockopt(&fd, sockopt::AcceptConn) {
        Ok(true) => {}
        Ok(false) => return Err("a stream socket that is not listening".to_string()),
        Err(e) => return Err(format!("SO_ACCEPTCONN: {}", e.desc())),
    }
    let storage = getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .map_err(|e| format!("getsockname: {}", e.desc()))?;
    if let Some(a) = storage.as_sockaddr_in() {
        let a = std::net::SocketAddr::from(std::net::SocketAddrV4::from(*a));
        return Ok((a.to_string(), Some(ListenAddr::Tcp(a))));
    }
    if let Some(a) = storage.as_sockaddr_in6() {
        let a = std::net::SocketAddr::from(std::net::SocketAddrV6::from(*a));
        return Ok((a.to_string(), Some(ListenAddr::Tcp(a))));
    }
    if let Some(u) = storage.as_unix_addr() {
        if let Some(path) = u.path() {
            return Ok((
                format!("unix:{}", path.display()),
                Some(ListenAddr::Unix(path.to_path_buf())),
            ));
        }
        if let Some(name) = u.as_abstract() {
            return Ok((format!("unix:@{}", String::from_utf8_lossy(name)), None));
        }
        return Ok(("unix:(unnamed)".to_string(), None));
    }
    Ok((
        format!(
            "a socket of address family {}",
            nix::sys::socket::SockaddrLike::family(&storage)
                .map_or_else(|| "unknown".to_string(), |f| format!("{f:?}"))
        ),
        None,
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_activation_fds_are_named_without_being_taken() {
        let me = std::process::id();
        let pid = me.to_string();
        assert_eq!(
            super::activation_fds_from(Some("2"), Some(&pid), None, me),
            [3, 4]
        );
        // For another process, or malformed: none.
        assert!(super::activation_fds_from(Some("2"), Some("1"), None, me).is_empty());
        assert!(super::activation_fds_from(Some("x"), Some(&pid), None, me).is_empty());
        assert!(super::activation_fds_from(None, None, None, me).is_empty());
    }

    use super::*;
    use crate::listen::test_support::temp_dir;
    use nix::sys::socket::{socket, AddressFamily, SockFlag};
    use std::os::unix::net::UnixListener;

    #[test]
    fn parses_the_listen_environment() {
        let p = |fds, pid, names| parse_listen_env(fds, pid, names, 42);
        assert_eq!(p(None, None, None), Ok(None));
        assert_eq!(p(Some("2"), None, None), Ok(None)); // no LISTEN_PID: not for us
        assert_eq!(p(Some("2"), Some("41"), None), Ok(None)); // another process's
        assert_eq!(p(None, Some("42"), None), Ok(None));
        assert_eq!(
            p(Some("2"), Some("42"), None),
            Ok(Some((2, vec![String::new(), String::new()])))
        );
        assert_eq!(
            p(Some("3"), Some("42"), Some("web:api:admin")),
            Ok(Some((3, vec!["web".into(), "api".into(), "admin".into()])))
        );
        assert_eq!(
            p(Some("3"), Some("42"), Some("web")),
            Ok(Some((3, vec!["web".into(), String::new(), String::new()])))
        );
        assert_eq!(
            p(Some("2"), Some("42"), Some("web::")),
            Err(
                "LISTEN_FDNAMES=\"web::\" has 3 names for LISTEN_FDS=2; give one name per \
                 socket, separated by ':'"
                    .into()
            )
        );
        assert_eq!(p(Some("0"), Some("42"), Some("")), Ok(Some((0, vec![]))));
        for fds in ["abc", "-1", "", "99999999999999999999", "70000"] {
            let e = p(Some(fds), Some("42"), None).unwrap_err();
            assert!(e.starts_with("LISTEN_FDS=") && e.contains("unset"), "{e}");
        }
        let e = p(Some("1"), Some("me"), None).unwrap_err();
        assert!(e.starts_with("LISTEN_PID=\"me\""), "{e}");
    }

    #[test]
    fn describes_listeners_and_refuses_other_fds() {
        let dir = temp_dir("describe");
        let path = dir.join("l.sock");
        let l = UnixListener::bind(&path).unwrap();
        let (local, addr) = describe_listener(l.as_fd()).unwrap();
        assert_eq!(local, format!("unix:{}", path.display()));
        assert_eq!(addr, Some(ListenAddr::Unix(path.clone())));

        let t = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (local, addr) = describe_listener(t.as_fd()).unwrap();
        assert_eq!(local, t.local_addr().unwrap().to_string());
        assert_eq!(addr, Some(ListenAddr::Tcp(t.local_addr().unwrap())));

        let abs = std::os::unix::net::SocketAddr::from_abstract_name(
            format!("drover-adopt-{}", std::process::id()).as_bytes(),
        )
        .unwrap();
        use std::os::linux::net::SocketAddrExt;
        let a = UnixListener::bind_addr(&abs).unwrap();
        let (local, addr) = describe_listener(a.as_fd()).unwrap();
        assert!(local.starts_with("unix:@drover-adopt-"), "{local}");
        assert_eq!(addr, None);

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = describe_listener(udp.as_fd()).unwrap_err();
        assert!(e.contains("not a stream socket"), "{e}");
        let s = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let e = describe_listener(s.as_fd()).unwrap_err();
        assert!(e.contains("not listening"), "{e}");
        let f = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(describe_listener(f.as_fd()).unwrap_err(), "not a socket");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
