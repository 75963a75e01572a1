//! The report board: memory the supervisor shares with its embedded workers, on which each
//! worker publishes its heartbeat and load (a [`Report`]) for the supervisor to read without
//! a wake-up, plus the [`DOORBELL`] that wakes a sleeping supervisor for a load change. It
//! owns the board's layout (a header, then one cache-line slot per worker slot), a slot's
//! seqlock-style protocol (the supervisor resets the slot before each fork; the worker
//! publishes whole reports; a reader takes only a whole report of the incarnation it asks
//! for) and the arm/ring handshake of the doorbell. It must not decide anything: when to
//! publish is the worker's (`embedded`), what a report means is the machine's (fed by the
//! shell). Only atomics live in the mapping; nothing here blocks, sends or knows a thread.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

use drover_machine::WorkerId;

/// The datagram a worker sends after publishing a load change while the supervisor sleeps:
/// a bare wake-up; the news is on the board.
pub(crate) const DOORBELL: &str = "X_DROVER_REPORTS=1";

/// What a worker publishes on the board.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Report {
    /// Its last heartbeat (CLOCK_MONOTONIC µs), 0 before the first one.
    pub beat_usec: u64,
    /// Threads in a request.
    pub busy: u32,
    /// Start of the oldest running request (CLOCK_MONOTONIC µs).
    pub busy_since_usec: Option<u64>,
    /// Requests served in total.
    pub requests: u64,
}

#[repr(C, align(64))]
struct BoardHeader {
    /// 1 while the supervisor may be asleep: the first worker to publish a load change
    /// swaps it to 0 and rings the doorbell; the supervisor sets it again before each read.
    armed: AtomicU32,
}

/// One worker slot's reports; a cache line of its own.
#[repr(C, align(64))]
struct BoardSlot {
    /// `incarnation << 32 | seq`. The supervisor writes `(incarnation, 0)` before it forks
    /// that incarnation; its worker makes `seq` odd while it writes and even (2 or more)
    /// once done. A reader takes only a whole report (the same even `seq` before and
    /// after) of the incarnation it asks for: a report left by an earlier occupant of the
    /// slot can never pass for one of its successor's.
    state: AtomicU64,
    beat_usec: AtomicU64,
    busy: AtomicU64,
    busy_since_usec: AtomicU64,
    requests: AtomicU64,
}

/// The report board: `MAP_SHARED | MAP_ANONYMOUS` memory that the supervisor maps before
/// its first fork, so that it and every worker see the same pages, with one [`BoardSlot`]
/// per worker slot. Only atomics live there. A slot has one writer at a time: the
/// supervisor while no process holds the slot (it resets the slot before each fork; the
/// previous occupant is reaped by then), then the main thread of the worker forked for it.
pub(crate) struct Board {
    base: NonNull<u8>,
    len: usize,
    slots: usize,
}

// SAFETY: the mapping holds only atomics, read and written through `&self`; `base`, `len`
// and `slots` never change after `map`. A worker's report thread publishes from a thread
// of its own.
unsafe impl Send for Board {}
// SAFETY: as above: every access to the shared memory is atomic.
unsafe impl Sync for Board {}

impl Board {
    /// Maps a board of `slots` slots (pages are allocated only where a worker writes).
    pub(crate) fn map(slots: usize) -> io::Result<Board> {
        let len = size_of::<BoardHeader>() + slots * size_of::<BoardSlot>();
        // SAFETY: a new anonymous mapping; no existing memory is involved, and the result is
        // checked before use.
        let ptr = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap: null"))?;
        Ok(Board { base, len, slots })
    }

    fn header(&self) -> &BoardHeader {
        // SAFETY: the mapping starts with the header; it is page-aligned (more than the
        // header's 64), zero-filled by the kernel (a valid AtomicU32), only ever accessed
        // through atomics, and mapped as long as `self` lives.
        unsafe { &*self.base.as_ptr().cast::<BoardHeader>() }
    }

    fn slot(&self, slot: u32) -> Option<&BoardSlot> {
        let i = slot as usize;
        if i >= self.slots {
            return None;
        }
        let offset = size_of::<BoardHeader>() + i * size_of::<BoardSlot>();
        // SAFETY: `i` is in bounds (checked), so the slot lies inside the mapping; it is
        // 64-aligned (a page-aligned base plus multiples of 64), zero-filled or written
        // only through atomics, and mapped as long as `self` lives.
        Some(unsafe { &*self.base.as_ptr().add(offset).cast::<BoardSlot>() })
    }

    pub(crate) fn holds(&self, worker: WorkerId) -> bool {
        (worker.slot as usize) < self.slots
    }

    // --------------------------------------------------------- supervisor side

    /// Before forking `worker`: its slot forgets every earlier occupant.
    pub(crate) fn reset(&self, worker: WorkerId) {
        let Some(s) = self.slot(worker.slot) else {
            return;
        };
        s.state
            .store(u64::from(worker.incarnation) << 32, Ordering::SeqCst);
        for field in [&s.beat_usec, &s.busy, &s.busy_since_usec, &s.requests] {
            field.store(0, Ordering::Relaxed);
        }
    }

    /// Before a read that precedes a sleep: the next load change rings the doorbell.
    /// (Armed before the read: a change published after the read then sees it armed, so
    /// no change goes unnoticed; one published in between may ring needlessly.)
    pub(crate) fn arm(&self) {
        self.header().armed.store(1, Ordering::SeqCst);
    }

    /// `worker`'s latest whole report, or `None` if it published none yet (or kept
    /// writing during every attempt).
    pub(crate) fn read(&self, worker: WorkerId) -> Option<Report> {
        let s = self.slot(worker.slot)?;
        for _ in 0..8 {
            let before = s.state.load(Ordering::SeqCst);
            let seq = before as u32;
            if before >> 32 != u64::from(worker.incarnation) || seq < 2 {
                return None;
            }
            if seq % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let since = s.busy_since_usec.load(Ordering::Relaxed);
            let report = Report {
                beat_usec: s.beat_usec.load(Ordering::Relaxed),
                busy: s.busy.load(Ordering::Relaxed) as u32,
                busy_since_usec: (since != 0).then_some(since),
                requests: s.requests.load(Ordering::Relaxed),
            };
            fence(Ordering::Acquire);
            if s.state.load(Ordering::Relaxed) == before {
                return Some(report);
            }
        }
        None
    }

    // --------------------------------------------------------- worker side

    /// Publishes `report` in `worker`'s slot; false if the slot is not this worker's.
    pub(crate) fn publish(&self, worker: WorkerId, report: &Report) -> bool {
        let Some(s) = self.slot(worker.slot) else {
            return false;
        };
        let state = s.state.load(Ordering::Relaxed);
        if state >> 32 != u64::from(worker.incarnation) {
            return false;
        }
        let (high, seq) = (state & !0xffff_ffff, state as u32 & !1);
        s.state
            .store(high | u64::from(seq.wrapping_add(1)), Ordering::Relaxed);
        fence(Ordering::Release);
        s.beat_usec.store(report.beat_usec, Ordering::Relaxed);
        s.busy.store(u64::from(report.busy), Ordering::Relaxed);
        s.busy_since_usec
            .store(report.busy_since_usec.unwrap_or(0), Ordering::Relaxed);
        s.requests.store(report.requests, Ordering::Relaxed);
        // Even and never 0 again (0 means "nothing published"), also when seq wraps.
        let done = seq.wrapping_add(2).max(2);
        s.state.store(high | u64::from(done), Ordering::SeqCst);
        true
    }

    /// After publishing a load change: true if the supervisor was armed (this worker rings
    /// it, and disarms it for every other worker until it has read the board).
    pub(crate) fn ring(&self) -> bool {
        self.header().armed.swap(0, Ordering::SeqCst) == 1
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made; nothing borrows from `self` any
        // more. (Workers keep their own copy of the mapping until they exit.)
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(slot: u32, incarnation: u32) -> WorkerId {
        WorkerId { slot, incarnation }
    }

    fn report(beat_usec: u64, busy: u32) -> Report {
        Report {
            beat_usec,
            busy,
            busy_since_usec: (busy > 0).then_some(beat_usec),
            requests: 7,
        }
    }

    #[test]
    fn a_slot_holds_only_its_own_incarnation_s_whole_reports() {
        let board = Board::map(4).unwrap();
        let (old, new) = (id(1, 1), id(1, 2));
        board.reset(old);
        assert_eq!(board.read(old), None, "nothing published yet");
        assert!(board.publish(old, &report(100, 1)));
        assert_eq!(board.read(old), Some(report(100, 1)));
        // The slot is reset for the next incarnation: the old report is gone for good, and
        // the old worker can no longer write.
        board.reset(new);
        assert_eq!(board.read(old), None);
        assert_eq!(board.read(new), None, "a reset slot shows no report");
        assert!(!board.publish(old, &report(200, 0)));
        assert_eq!(board.read(new), None);
        assert!(board.publish(new, &report(300, 0)));
        assert_eq!(board.read(new), Some(report(300, 0)));
        // Other slots are untouched; a slot beyond the board does not exist.
        assert_eq!(board.read(id(0, 1)), None);
        assert!(!board.holds(id(4, 1)));
        assert!(!board.publish(id(4, 1), &report(1, 0)));
    }

    #[test]
    fn the_sequence_never_reads_as_unpublished_after_it_wraps() {
        let board = Board::map(1).unwrap();
        let w = id(0, 9);
        board.reset(w);
        let s = board.slot(0).unwrap();
        s.state
            .store(u64::from(9u32) << 32 | 0xffff_fffe, Ordering::SeqCst);
        assert!(board.publish(w, &report(5, 0)));
        assert_eq!(s.state.load(Ordering::SeqCst) as u32, 2);
        assert_eq!(board.read(w), Some(report(5, 0)));
    }

    #[test]
    fn the_doorbell_rings_once_per_arming() {
        let board = Board::map(1).unwrap();
        assert!(
            !board.ring(),
            "not armed before the supervisor's first read"
        );
        board.arm();
        assert!(board.ring());
        assert!(
            !board.ring(),
            "the first worker to ring disarms it for the others"
        );
    }

    #[test]
    fn a_forked_worker_s_reports_reach_the_supervisor() {
        let board = Board::map(2).unwrap();
        let w = id(1, 3);
        board.reset(w);
        board.arm();
        // SAFETY: the child only stores atomics in the shared mapping and calls _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let ok = board.publish(w, &report(42, 2)) && board.ring();
            // SAFETY: ends the forked child without running the test harness's code.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waits for the child forked above.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(board.read(w), Some(report(42, 2)));
        assert!(
            !board.ring(),
            "the child's ring disarmed the shared doorbell"
        );
    }
}
