//! Listening sockets, opened once by the supervisor and inherited by every worker at fd 3
//! onwards (systemd socket activation).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::socket::{
    bind, connect, getsockname, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType,
    SockaddrIn, SockaddrIn6, SockaddrStorage, UnixAddr,
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
#[cfg(test)]
pub fn open_all(
    specs: &[ListenSpec],
    backlog: u32,
    unix_mode: u32,
) -> Result<Vec<Listener>, String> {
    open_all_with(specs, backlog, unix_mode, Vec::new()).map(|opened| opened.listeners)
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

/// What `open_all_with` did.
pub struct Opened {
    /// One per spec, in the specs' order, every fd at `3 + specs.len()` or above.
    pub listeners: Vec<Listener>,
    /// Things the operator should hear about (a spec served by an inherited socket on
    /// another address); the caller logs them.
    pub warnings: Vec<String>,
    /// Inherited sockets no spec asked for; the caller warns and closes them.
    pub unused: Vec<Inherited>,
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
    const MAX_FDS: usize = 65_536;
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
        .filter(|&n| n <= MAX_FDS)
        .ok_or_else(|| {
            format!(
                "LISTEN_FDS={fds:?} is not a count of file descriptors (0 to {MAX_FDS}); \
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

/// The name a spec is matched by: the operator's (`NAME=ADDR`) or the default `listenN`,
/// which is what a drover passes on to its successor or supervised child, so that a port-0
/// listener is found again (its address names no particular socket).
fn match_name(spec: &ListenSpec) -> Option<&str> {
    (!spec.name.is_empty()).then_some(spec.name.as_str())
}

/// The same socket address: TCP by IP, port (and IPv6 scope), unix by path. A spec with port
/// 0 names no particular socket and matches nothing.
fn same_address(spec: &ListenAddr, got: Option<&ListenAddr>) -> bool {
    match (spec, got) {
        (ListenAddr::Tcp(a), Some(ListenAddr::Tcp(b))) => a.port() != 0 && same_tcp(a, b),
        (ListenAddr::Unix(a), Some(ListenAddr::Unix(b))) => a == b,
        _ => false,
    }
}

fn same_tcp(a: &std::net::SocketAddr, b: &std::net::SocketAddr) -> bool {
    use std::net::SocketAddr::{V4, V6};
    a.port() == b.port()
        && match (a, b) {
            (V4(a), V4(b)) => a.ip() == b.ip(),
            (V6(a), V6(b)) => a.ip() == b.ip() && a.scope_id() == b.scope_id(),
            _ => false,
        }
}

/// Whether a socket found by name serves the spec: the same address, or any port on the
/// same IP for a spec with port 0 (the predecessor's "any port" is still any port). With no
/// address to compare (an abstract unix socket), the name alone decides.
fn name_serves(spec: &ListenAddr, got: Option<&ListenAddr>) -> bool {
    match (spec, got) {
        (_, None) => true,
        (ListenAddr::Tcp(a), Some(ListenAddr::Tcp(b))) if a.port() == 0 => {
            let mut a = *a;
            a.set_port(b.port());
            same_tcp(&a, b)
        }
        (spec, got) => same_address(spec, got),
    }
}

/// Like `open_all`, but first adopts inherited sockets (systemd socket activation, or the
/// listeners of the drover this one replaces). A spec takes the inherited socket of its name
/// (explicit, or the default `listenN`) if that socket serves the spec's address; any other
/// spec takes the inherited socket on its exact address; the rest are opened fresh. When
/// opening fresh fails and an inherited socket carries the spec's name (its address changed
/// but the new one cannot be bound), that socket is kept, with a warning. Each inherited
/// socket serves one spec at most; the others come back in `unused`. An adopted unix
/// socket's file is the caller's to remove at exit, like a fresh one's. Every listener fd
/// ends at `3 + specs.len()` or above, like `open_all`'s.
pub fn open_all_with(
    specs: &[ListenSpec],
    backlog: u32,
    unix_mode: u32,
    inherited: Vec<Inherited>,
) -> Result<Opened, String> {
    let floor = 3 + specs.len() as RawFd;
    // Inherited fds start at 3, where children put their listeners: move them above the
    // floor (closing the originals) before opening anything new.
    let mut pool: Vec<Option<Inherited>> = Vec::with_capacity(inherited.len());
    for mut inh in inherited {
        let high = fcntl(inh.fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(floor)).map_err(|e| {
            format!(
                "inherited socket {} on {}: dup: {}",
                inh.name,
                inh.local,
                e.desc()
            )
        })?;
        // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns; the old
        // one is closed when this assignment drops it.
        inh.fd = unsafe { OwnedFd::from_raw_fd(high) };
        pool.push(Some(inh));
    }
    let mut slots: Vec<Option<(Listener, bool)>> = specs.iter().map(|_| None).collect();
    let mut warnings = Vec::new();
    let adopt = |spec: &ListenSpec, inh: Inherited| -> Listener {
        let unix_path = match &inh.addr {
            Some(ListenAddr::Unix(p)) => Some(p.clone()),
            _ => None,
        };
        Listener {
            spec: spec.clone(),
            fd: inh.fd,
            local: inh.local,
            unix_path,
        }
    };
    let take = |pool: &mut Vec<Option<Inherited>>, pred: &dyn Fn(&Inherited) -> bool| {
        pool.iter_mut()
            .find(|slot| slot.as_ref().is_some_and(pred))
            .and_then(Option::take)
    };
    // By name, when the socket serves the spec's address.
    for (spec, slot) in specs.iter().zip(slots.iter_mut()) {
        let Some(name) = match_name(spec) else {
            continue;
        };
        if let Some(inh) = take(&mut pool, &|i| {
            i.name == name && name_serves(&spec.addr, i.addr.as_ref())
        }) {
            if inh.addr.is_none() {
                warnings.push(format!(
                    "--listen {}: adopting the inherited socket named {name} on {} (its address cannot be compared)",
                    spec.text, inh.local
                ));
            }
            *slot = Some((adopt(spec, inh), false));
        }
    }
    // By address.
    for (spec, slot) in specs.iter().zip(slots.iter_mut()) {
        if slot.is_some() {
            continue;
        }
        if let Some(inh) = take(&mut pool, &|i| same_address(&spec.addr, i.addr.as_ref())) {
            *slot = Some((adopt(spec, inh), false));
        }
    }
    // Fresh.
    let cleanup = |slots: &[Option<(Listener, bool)>]| {
        for (l, fresh) in slots.iter().flatten() {
            if *fresh {
                if let Some(p) = &l.unix_path {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    };
    for i in 0..specs.len() {
        if slots[i].is_some() {
            continue;
        }
        let spec = &specs[i];
        match open(spec, backlog, unix_mode) {
            Ok((fd, local, unix_path)) => {
                let listener = Listener {
                    spec: spec.clone(),
                    fd,
                    local,
                    unix_path,
                };
                let high = match fcntl(listener.fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(floor)) {
                    Ok(high) => high,
                    Err(e) => {
                        remove_unix_files(std::slice::from_ref(&listener));
                        cleanup(&slots);
                        return Err(format!("--listen {}: dup: {e}", spec.text));
                    }
                };
                // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(high) };
                slots[i] = Some((Listener { fd, ..listener }, true));
            }
            Err(e) => {
                let kept =
                    match_name(spec).and_then(|name| take(&mut pool, &|inh| inh.name == name));
                let Some(inh) = kept else {
                    cleanup(&slots);
                    return Err(e);
                };
                warnings.push(format!("{e}; keeping the existing socket on {}", inh.local));
                slots[i] = Some((adopt(spec, inh), false));
            }
        }
    }
    Ok(Opened {
        listeners: slots.into_iter().flatten().map(|(l, _)| l).collect(),
        warnings,
        unused: pool.into_iter().flatten().collect(),
    })
}

#[cfg(test)]
mod adopt_tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    fn spec(index: usize, text: &str) -> ListenSpec {
        let (name, addr) = match text.split_once('=') {
            Some((name, addr)) => (name.to_string(), addr),
            None => (format!("listen{index}"), text),
        };
        let addr = match addr.strip_prefix("unix:") {
            Some(path) => ListenAddr::Unix(PathBuf::from(path)),
            None => ListenAddr::Tcp(addr.parse().unwrap()),
        };
        ListenSpec {
            name,
            addr,
            text: text.to_string(),
        }
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("drover-adopt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// The socket's inode: the same for every descriptor of one socket.
    fn ino(fd: &OwnedFd) -> u64 {
        nix::sys::stat::fstat(fd).unwrap().st_ino as u64
    }

    fn inherit(l: Listener, name: &str) -> Inherited {
        let (local, addr) = describe_listener(l.fd.as_fd()).unwrap();
        assert_eq!(local, l.local);
        Inherited {
            fd: l.fd,
            name: name.to_string(),
            local,
            addr,
        }
    }

    fn port(local: &str) -> u16 {
        local.parse::<std::net::SocketAddr>().unwrap().port()
    }

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
    fn matching_rules() {
        assert_eq!(match_name(&spec(0, "web=127.0.0.1:80")), Some("web"));
        assert_eq!(match_name(&spec(0, "127.0.0.1:80")), Some("listen0"));
        let tcp = |s: &str| ListenAddr::Tcp(s.parse().unwrap());
        let unix = |s: &str| ListenAddr::Unix(PathBuf::from(s));
        assert!(same_address(
            &tcp("127.0.0.1:80"),
            Some(&tcp("127.0.0.1:80"))
        ));
        assert!(!same_address(
            &tcp("127.0.0.1:80"),
            Some(&tcp("127.0.0.1:81"))
        ));
        assert!(!same_address(&tcp("0.0.0.0:80"), Some(&tcp("[::]:80"))));
        assert!(!same_address(
            &tcp("127.0.0.1:0"),
            Some(&tcp("127.0.0.1:0"))
        ));
        assert!(same_address(&unix("/a"), Some(&unix("/a"))));
        assert!(!same_address(&unix("/a"), Some(&unix("/b"))));
        assert!(!same_address(&unix("/a"), None));
        assert!(name_serves(
            &tcp("127.0.0.1:0"),
            Some(&tcp("127.0.0.1:5555"))
        ));
        assert!(!name_serves(
            &tcp("127.0.0.1:0"),
            Some(&tcp("127.0.0.2:5555"))
        ));
        assert!(!name_serves(
            &tcp("127.0.0.1:80"),
            Some(&tcp("127.0.0.1:81"))
        ));
        assert!(name_serves(&unix("/a"), None));
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

    #[test]
    fn adopts_by_name_and_address_and_opens_the_rest() {
        let dir = temp_dir("adopt");
        let sock = dir.join("u.sock");
        let old_specs = [
            spec(0, "web=127.0.0.1:0"),
            spec(1, "127.0.0.1:0"),
            spec(2, &format!("unix:{}", sock.display())),
            spec(3, "extra=127.0.0.1:0"),
        ];
        let old = open_all(&old_specs, 16, 0o600).unwrap();
        let inos: Vec<u64> = old.iter().map(|l| ino(&l.fd)).collect();
        let locals: Vec<String> = old.iter().map(|l| l.local.clone()).collect();
        let inherited: Vec<Inherited> = old
            .into_iter()
            .zip(["web", "listen1", "listen2", "extra"])
            .map(|(l, name)| inherit(l, name))
            .collect();

        let specs = [
            spec(0, "fresh=127.0.0.1:0"),
            spec(1, &format!("unix:{}", sock.display())),
            spec(2, &locals[1]),
            spec(3, "web=127.0.0.1:0"),
        ];
        let opened = open_all_with(&specs, 16, 0o600, inherited).unwrap();
        assert!(opened.warnings.is_empty(), "{:?}", opened.warnings);
        let floor = 3 + specs.len() as RawFd;
        assert!(opened.listeners.iter().all(|l| l.fd.as_raw_fd() >= floor));
        let l = &opened.listeners;
        assert_eq!(l.len(), 4);
        assert_eq!(l[0].spec, specs[0]);
        assert!(!inos.contains(&ino(&l[0].fd)), "fresh");
        assert_eq!(ino(&l[1].fd), inos[2], "unix by address");
        assert_eq!(l[1].local, locals[2]);
        assert_eq!(l[1].unix_path.as_deref(), Some(sock.as_path()));
        assert_eq!(ino(&l[2].fd), inos[1], "tcp by address");
        assert_eq!(l[2].local, locals[1]);
        assert_eq!(l[2].unix_path, None);
        assert_eq!(ino(&l[3].fd), inos[0], "by name");
        assert_eq!(l[3].local, locals[0]);
        assert_eq!(l[3].spec, specs[3]);
        assert_eq!(opened.unused.len(), 1);
        assert_eq!(opened.unused[0].name, "extra");
        assert_eq!(ino(&opened.unused[0].fd), inos[3]);
        assert!(opened.unused[0].fd.as_raw_fd() >= floor);
        remove_unix_files(&opened.listeners);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn keeps_the_inherited_socket_when_the_new_address_is_taken() {
        let old = open_all(&[spec(0, "web=127.0.0.1:0")], 16, 0o600).unwrap();
        let old_ino = ino(&old[0].fd);
        let old_local = old[0].local.clone();
        let inherited = vec![inherit(old.into_iter().next().unwrap(), "web")];
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy_addr = busy.local_addr().unwrap();
        let text = format!("web={busy_addr}");
        let specs = [spec(0, &text)];
        let opened = open_all_with(&specs, 16, 0o600, inherited).unwrap();
        assert_eq!(opened.listeners.len(), 1);
        assert_eq!(ino(&opened.listeners[0].fd), old_ino);
        assert_eq!(opened.listeners[0].local, old_local);
        assert_eq!(opened.listeners[0].spec, specs[0]);
        assert_eq!(
            opened.warnings,
            vec![format!(
                "--listen {text}: address already in use (another process listens there); \
                 keeping the existing socket on {old_local}"
            )]
        );
        assert!(opened.unused.is_empty());
    }

    #[test]
    fn a_changed_address_that_binds_drops_the_inherited_socket() {
        let old = open_all(&[spec(0, "web=127.0.0.1:0")], 16, 0o600).unwrap();
        let old_ino = ino(&old[0].fd);
        let inherited = vec![inherit(old.into_iter().next().unwrap(), "web")];
        // Another address on loopback, any port: the name no longer serves it.
        let specs = [spec(0, "web=127.0.0.2:0")];
        let opened = open_all_with(&specs, 16, 0o600, inherited).unwrap();
        assert!(opened.warnings.is_empty());
        assert_ne!(ino(&opened.listeners[0].fd), old_ino);
        assert!(opened.listeners[0].local.starts_with("127.0.0.2:"));
        assert_eq!(opened.unused.len(), 1);
        assert_eq!(ino(&opened.unused[0].fd), old_ino);
    }

    #[test]
    fn a_failure_removes_only_fresh_socket_files() {
        let dir = temp_dir("fail");
        let kept = dir.join("kept.sock");
        let fresh = dir.join("fresh.sock");
        let old = open_all(&[spec(0, &format!("unix:{}", kept.display()))], 16, 0o600).unwrap();
        let inherited = vec![inherit(old.into_iter().next().unwrap(), "listen0")];
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy_text = format!("x={}", busy.local_addr().unwrap());
        let specs = [
            spec(0, &format!("unix:{}", kept.display())),
            spec(1, &format!("unix:{}", fresh.display())),
            spec(2, &busy_text),
        ];
        let e = open_all_with(&specs, 16, 0o600, inherited).err().unwrap();
        assert!(e.contains("address already in use"), "{e}");
        assert!(kept.exists(), "the inherited socket's file stays");
        assert!(!fresh.exists(), "the fresh socket's file is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_port_zero_spec_does_not_match_by_address() {
        let old = open_all(&[spec(0, "127.0.0.1:0")], 16, 0o600).unwrap();
        let old_ino = ino(&old[0].fd);
        let inherited = vec![inherit(old.into_iter().next().unwrap(), "")];
        let specs = [spec(0, "127.0.0.1:0")];
        let opened = open_all_with(&specs, 16, 0o600, inherited).unwrap();
        assert_ne!(ino(&opened.listeners[0].fd), old_ino);
        assert_eq!(opened.unused.len(), 1);
        assert_ne!(port(&opened.listeners[0].local), 0);
    }
}
