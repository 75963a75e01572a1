//! Unix socket files on disk: clearing a stale one before a bind (also for the control
//! socket) and removing the listeners' files at exit. It must never remove a file that is
//! not a socket or a socket a live process listens on, and opens no listener itself.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};

use super::Listener;

pub fn remove_unix_files(listeners: &[Listener]) {
    for l in listeners {
        if let Some(p) = &l.unix_path {
            let _ = std::fs::remove_file(p);
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
