//! The whole listener set for a list of specs: adopt the inherited sockets that serve a
//! spec, open the rest fresh, keep an inherited socket whose new address cannot be bound,
//! and put every fd at `3 + specs.len()` or above so that a child can `dup2` them onto 3, 4,
//! … On failure it closes what it opened and removes only fresh socket files. It must not
//! read the environment (`activation` does) or close the unused inherited sockets (the
//! caller warns and closes them).

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, FcntlArg};

use super::activation::Inherited;
use super::bind::open;
use super::matching::{match_name, name_serves, same_address};
use super::socket_file::remove_unix_files;
use super::Listener;
use crate::allow::Cidr;
use crate::settings::listen::{ListenAddr, ListenSpec};

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

/// Opens every listener, then moves their fds to `3 + count` and above, so that a child can
/// `dup2` them onto 3, 4, … without clobbering one it still has to copy.
#[cfg(test)]
pub fn open_all(
    specs: &[ListenSpec],
    backlog: u32,
    unix_mode: u32,
) -> Result<Vec<Listener>, String> {
    open_all_with(specs, backlog, unix_mode, &[], Vec::new()).map(|opened| opened.listeners)
}

/// Like `open_all`, but first adopts inherited sockets (systemd socket activation, or the
/// listeners of the drover this one replaces). A spec takes the inherited socket of its name
/// (explicit, or the default `listenN`) if that socket serves the spec's address; any other
/// spec takes the inherited socket on its exact address; the rest are opened fresh. When
/// opening fresh fails and an inherited socket carries the spec's name (its address changed
/// but the new one cannot be bound), that socket is kept, with a warning. Each inherited
/// socket serves one spec at most; the others come back in `unused`. An adopted unix
/// socket's file is the caller's to remove at exit, like a fresh one's. Every listener fd
/// ends at `3 + specs.len()` or above, like `open_all`'s. Every TCP listener, fresh or
/// adopted, carries `allow`'s filter (none when it is empty) before this returns.
pub fn open_all_with(
    specs: &[ListenSpec],
    backlog: u32,
    unix_mode: u32,
    allow: &[Cidr],
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
        match open(spec, backlog, unix_mode, allow) {
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
    // An adopted TCP socket gets this list's filter, or loses the one a predecessor (or a
    // reload's previous list) put there; fresh ones got it before they listened.
    for (l, _) in slots.iter().flatten().filter(|(_, fresh)| !fresh) {
        if matches!(l.spec.addr, ListenAddr::Tcp(_)) {
            if let Err(e) = crate::allow::apply(l.fd.as_fd(), allow) {
                cleanup(&slots);
                return Err(format!(
                    "--listen {} ({}) with --allow: setting the socket filter: {e}",
                    l.spec.text, l.local
                ));
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
mod tests {
    use super::*;
    use crate::listen::describe_listener;
    use crate::listen::test_support::{spec, temp_dir};
    use std::os::fd::AsRawFd;

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
        let opened = open_all_with(&specs, 16, 0o600, &[], inherited).unwrap();
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
        let opened = open_all_with(&specs, 16, 0o600, &[], inherited).unwrap();
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
        let opened = open_all_with(&specs, 16, 0o600, &[], inherited).unwrap();
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
        let e = open_all_with(&specs, 16, 0o600, &[], inherited)
            .err()
            .unwrap();
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
        let opened = open_all_with(&specs, 16, 0o600, &[], inherited).unwrap();
        assert_ne!(ino(&opened.listeners[0].fd), old_ino);
        assert_eq!(opened.unused.len(), 1);
        assert_ne!(port(&opened.listeners[0].local), 0);
    }
}
