//! A worker's stop signals: TERM and INT ask for a graceful stop, QUIT for an immediate one.
//! It owns the stop level that every thread polls ([`stop_level`]), the handler that raises
//! it and pokes the stop pipe (every serving thread) and the main thread's pipe, and the
//! signal mask the serving threads inherit (blocked: the signals land on the main thread).
//! The handler must stay async-signal-safe (atomics and write(2) only), and nothing here
//! acts on a stop: how to wind down is each thread's business and the main thread's.

use std::io;
use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

/// 0: serving; 1: graceful stop (TERM/INT); 2: immediate stop (QUIT).
static STOP: AtomicU8 = AtomicU8::new(0);
/// Write ends the signal handler pokes: the level-triggered stop pipe (never drained: every
/// thread sees it) and the main thread's wake-up pipe (drained).
pub(super) static STOP_FD: AtomicI32 = AtomicI32::new(-1);
pub(super) static MAIN_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_stop_signal(sig: libc::c_int) {
    let level = if sig == libc::SIGQUIT { 2 } else { 1 };
    STOP.fetch_max(level, Ordering::SeqCst);
    // SAFETY: async-signal-safe calls only (errno saved and restored, write on pipes).
    unsafe {
        let errno = *libc::__errno_location();
        for fd in [
            STOP_FD.load(Ordering::SeqCst),
            MAIN_FD.load(Ordering::SeqCst),
        ] {
            if fd >= 0 {
                libc::write(fd, b"x".as_ptr().cast(), 1);
            }
        }
        *libc::__errno_location() = errno;
    }
}

pub(super) fn stop_level() -> u8 {
    STOP.load(Ordering::SeqCst)
}

/// Installs the stop handlers (signals stay blocked in this thread until `unblock_signals`).
pub(super) fn install_stop_handlers() -> io::Result<()> {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
        // SAFETY: a plain sigaction with a handler that only touches atomics and calls
        // write(2); the struct is zeroed then filled.
        let rc = unsafe {
            let mut sa: libc::sigaction = core::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, core::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

pub(super) fn unblock_signals() {
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}
