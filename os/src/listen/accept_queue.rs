//! Sampling a listener's accept queue, so that a pool of programs that report no load can
//! still scale on demand. It only reads what the kernel reports (TCP_INFO on a listening TCP
//! socket) and must not judge it: whether a queue is long enough to grow the pool is the
//! machine's decision.

use std::os::fd::AsRawFd;

use super::Listener;
use crate::settings::listen::ListenAddr;

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
