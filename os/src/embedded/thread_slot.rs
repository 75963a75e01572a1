//! One serving thread's reports ([`ThreadSlot`]), written by that thread (through its
//! `Conn`, the TLS handshake and the accept loop) and read by the worker's main thread.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::notify::coarse_monotonic_usec;

/// One thread's reports, written by that thread only and read by the main thread.
#[repr(align(64))] // one cache line each: threads do not contend
#[derive(Default)]
pub(super) struct ThreadSlot {
    /// Since when (CLOCK_MONOTONIC µs) the thread is outside both its waits and a request:
    /// 0 while it waits (for a connection, or for a request between two).
    pub(super) outside_since_usec: AtomicU64,
    /// Start of the request in hand, 0 when idle.
    pub(super) busy_since_usec: AtomicU64,
    pub(super) requests: AtomicU64,
}

impl ThreadSlot {
    pub(super) fn waiting(&self) {
        self.outside_since_usec.store(0, Ordering::Relaxed);
    }

    pub(super) fn outside(&self) {
        self.outside_since_usec
            .store(coarse_monotonic_usec().max(1), Ordering::Relaxed);
    }
}
