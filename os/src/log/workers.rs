//! `--worker-output log`: each worker's stdout and stderr through a pipe of its own into
//! drover's log, line by line, tagged with slot, generation, pid and stream.
//!
//! The read ends are non-blocking and polled by the event loop ([`WorkerOutput::poll_fds`],
//! [`WorkerOutput::service`]). A worker that floods its output costs drover bounded work
//! and never delays another worker's lines or drover itself:
//! - at most [`READ_PER_WAKE`] bytes are read per pipe per wake-up;
//! - at most [`BYTES_PER_SEC`] bytes per worker per second: beyond, its pipes are not read
//!   until the second is over, so the flooding worker waits on its own full pipe (and only
//!   it: every worker has its own pipes);
//! - at most [`LINES_PER_SEC`] lines per worker per second go to the log: the rest are
//!   dropped, counted, and reported once a second per worker ("dropped N lines");
//! - a line longer than [`LINE_MAX`] bytes is logged in pieces, each marked `split=true`.
//!
//! After a worker's exit its pipes are read until EOF, which comes once every process of
//! its group is gone; a pipe still held open [`DRAIN_AFTER_EXIT`] after the exit (by a
//! process that left the worker's group) is closed, and that process gets EPIPE.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use drover_machine::{Generation, WorkerId};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::PollFlags;

/// The tracing target of the workers' lines (logged at INFO whatever `--log-level`).
pub const TARGET: &str = "drover::worker_output";
/// Bytes read from one pipe per wake-up of drover.
pub const READ_PER_WAKE: usize = 64 * 1024;
/// Bytes read from one worker (both streams) per second.
pub const BYTES_PER_SEC: usize = 1024 * 1024;
/// Lines logged per worker per second; the rest are dropped and counted.
pub const LINES_PER_SEC: u32 = 1000;
/// The longest line logged whole.
pub const LINE_MAX: usize = 16 * 1024;
/// How long the pipes of an exited worker are still read, waiting for EOF.
pub const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(5);
/// The window of the byte and line budgets and of the drop reports.
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The pipes of a worker about to be spawned: the child's ends go to its fds 1 and 2.
pub struct ChildPipes {
    read: [OwnedFd; 2],
    write: [OwnedFd; 2],
}

impl ChildPipes {
    /// The write ends, for the child's stdout and stderr.
    pub fn child_fds(&self) -> [RawFd; 2] {
        [self.write[0].as_raw_fd(), self.write[1].as_raw_fd()]
    }
}

struct Pipe {
    fd: OwnedFd,
    stream: Stream,
    /// The line begun and not yet ended, at most `LINE_MAX` bytes.
    partial: Vec<u8>,
}

/// One worker's output.
struct Source {
    slot: u32,
    generation: u32,
    pid: u32,
    pipes: Vec<Pipe>,
    window_start: Instant,
    bytes_left: usize,
    lines_left: u32,
    /// Lines dropped since the last report.
    dropped: u64,
    /// Out of bytes for this window: not polled until it ends.
    paused: bool,
    exited_at: Option<Instant>,
}

impl Source {
    /// Logs one line (or a piece of a split one), or counts it dropped.
    fn emit(&mut self, stream: Stream, bytes: &[u8], split: bool) {
        if self.lines_left == 0 {
            self.dropped += 1;
            return;
        }
        self.lines_left -= 1;
        let line = String::from_utf8_lossy(bytes);
        let line = line.strip_suffix('\r').unwrap_or(&line);
        if split {
            tracing::info!(
                target: TARGET,
                slot = self.slot,
                generation = self.generation,
                pid = self.pid,
                stream = stream.name(),
                split = true,
                "{line}"
            );
        } else {
            tracing::info!(
                target: TARGET,
                slot = self.slot,
                generation = self.generation,
                pid = self.pid,
                stream = stream.name(),
                "{line}"
            );
        }
    }

    fn report_drops(&mut self, why: &str) {
        if self.dropped > 0 {
            tracing::warn!(
                target: TARGET,
                slot = self.slot,
                generation = self.generation,
                pid = self.pid,
                "worker output: dropped {} lines ({why}; at most {LINES_PER_SEC} lines a second per worker go to the log)",
                self.dropped
            );
            self.dropped = 0;
        }
    }

    /// A new window: fresh budgets, and the drops of the last one reported.
    fn roll_window(&mut self, now: Instant) {
        if now.duration_since(self.window_start) < WINDOW {
            return;
        }
        self.report_drops("in the last second");
        self.window_start = now;
        self.bytes_left = BYTES_PER_SEC;
        self.lines_left = LINES_PER_SEC;
        self.paused = false;
    }

    /// Reads what pipe `index` holds, within the budgets; true at EOF.
    fn read_pipe(&mut self, index: usize, buf: &mut [u8]) -> bool {
        let mut taken = 0;
        loop {
            let room = (READ_PER_WAKE - taken).min(self.bytes_left).min(buf.len());
            if room == 0 {
                if self.bytes_left == 0 {
                    self.paused = true;
                }
                return false;
            }
            let n = match nix::unistd::read(self.pipes[index].fd.as_fd(), &mut buf[..room]) {
                Ok(0) => return true,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return false,
                Err(e) => {
                    tracing::warn!(pid = self.pid, "worker output: read: {}", e.desc());
                    return true;
                }
            };
            taken += n;
            self.bytes_left -= n;
            self.take(index, &buf[..n]);
        }
    }

    /// Splits bytes read into lines.
    fn take(&mut self, index: usize, mut bytes: &[u8]) {
        let stream = self.pipes[index].stream;
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let mut partial = std::mem::take(&mut self.pipes[index].partial);
                    if partial.is_empty() {
                        self.emit_bounded(stream, &bytes[..end]);
                    } else {
                        partial.extend_from_slice(&bytes[..end]);
                        self.emit_bounded(stream, &partial);
                        partial.clear();
                        self.pipes[index].partial = partial;
                    }
                    bytes = &bytes[end + 1..];
                }
                None => {
                    let pipe = &mut self.pipes[index];
                    let room = LINE_MAX - pipe.partial.len();
                    let n = room.min(bytes.len());
                    pipe.partial.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if pipe.partial.len() == LINE_MAX {
                        let piece = std::mem::take(&mut pipe.partial);
                        self.emit(stream, &piece, true);
                        self.pipes[index].partial = piece;
                        self.pipes[index].partial.clear();
                    }
                }
            }
        }
    }

    /// A complete line that may exceed `LINE_MAX` (its start waited in `partial`).
    fn emit_bounded(&mut self, stream: Stream, line: &[u8]) {
        let mut pieces = line.chunks(LINE_MAX).peekable();
        while let Some(piece) = pieces.next() {
            self.emit(stream, piece, pieces.peek().is_some());
        }
    }

    /// Logs a line the worker began and never ended, and closes the pipe.
    fn close(&mut self, index: usize) {
        let pipe = self.pipes.remove(index);
        if !pipe.partial.is_empty() {
            self.emit(pipe.stream, &pipe.partial, false);
        }
    }
}

/// Every worker's output pipes, in `--worker-output log` mode.
pub struct WorkerOutput {
    enabled: bool,
    sources: Vec<Source>,
    buf: Vec<u8>,
}

impl WorkerOutput {
    pub fn new(enabled: bool) -> WorkerOutput {
        WorkerOutput {
            enabled,
            sources: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// The pipes for a worker about to be spawned, in log mode; `None` when workers inherit
    /// drover's stdout and stderr.
    pub fn open_pipes(&self) -> std::io::Result<Option<ChildPipes>> {
        if !self.enabled {
            return Ok(None);
        }
        // Close-on-exec: no other child (a worker spawned later, a live upgrade's
        // successor) holds them; the child's copies at 1 and 2 are made by dup2.
        let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let (err_r, err_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        // The worker's ends block, as its stdout and stderr would (programs expect that).
        for w in [&out_w, &err_w] {
            nix::fcntl::fcntl(w, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))?;
        }
        Ok(Some(ChildPipes {
            read: [out_r, err_r],
            write: [out_w, err_w],
        }))
    }

    /// The worker was spawned with `pipes`: drover keeps the read ends only.
    pub fn attach(
        &mut self,
        pipes: ChildPipes,
        worker: WorkerId,
        generation: Generation,
        pid: u32,
    ) {
        let ChildPipes { read, write } = pipes;
        drop(write);
        let [out, err] = read;
        self.sources.push(Source {
            slot: worker.slot,
            generation: generation.0,
            pid,
            pipes: vec![
                Pipe {
                    fd: out,
                    stream: Stream::Stdout,
                    partial: Vec::new(),
                },
                Pipe {
                    fd: err,
                    stream: Stream::Stderr,
                    partial: Vec::new(),
                },
            ],
            window_start: Instant::now(),
            bytes_left: BYTES_PER_SEC,
            lines_left: LINES_PER_SEC,
            dropped: 0,
            paused: false,
            exited_at: None,
        });
    }

    /// The worker whose group `pid` leads is gone: its pipes are read until EOF, for
    /// `DRAIN_AFTER_EXIT` at most.
    pub fn exited(&mut self, pid: u32) {
        if let Some(s) = self.sources.iter_mut().find(|s| s.pid == pid) {
            s.exited_at = Some(Instant::now());
        }
    }

    /// The fds to poll, in the order `service` expects its `ready` flags.
    pub fn poll_fds(&self) -> Vec<(BorrowedFd<'_>, PollFlags)> {
        self.sources
            .iter()
            .filter(|s| !s.paused)
            .flat_map(|s| s.pipes.iter().map(|p| (p.fd.as_fd(), PollFlags::POLLIN)))
            .collect()
    }

    /// When `service` has something to do without a pipe becoming readable: a budget
    /// window to end (a paused worker, drops to report) or an exited worker's drain to end.
    pub fn deadline(&self) -> Option<Instant> {
        self.sources
            .iter()
            .filter_map(|s| {
                let window = (s.paused || s.dropped > 0).then(|| s.window_start + WINDOW);
                let drain = s.exited_at.map(|t| t + DRAIN_AFTER_EXIT);
                window.into_iter().chain(drain).min()
            })
            .min()
    }

    /// Reads the pipes `poll` found ready (flags in the order of `poll_fds`), rolls the
    /// budget windows, and closes what is done.
    pub fn service(&mut self, ready: &[bool]) {
        if self.sources.is_empty() {
            return;
        }
        if self.buf.is_empty() {
            self.buf = vec![0; READ_PER_WAKE];
        }
        let mut flags = ready.iter().copied();
        let mut buf = std::mem::take(&mut self.buf);
        for source in &mut self.sources {
            if source.paused {
                continue;
            }
            let mut index = 0;
            while index < source.pipes.len() {
                if flags.next().unwrap_or(false) && source.read_pipe(index, &mut buf) {
                    source.close(index);
                    continue;
                }
                index += 1;
            }
        }
        self.buf = buf;
        let now = Instant::now();
        self.sources.retain_mut(|s| {
            s.roll_window(now);
            let drained_too_long = s
                .exited_at
                .is_some_and(|t| now.duration_since(t) >= DRAIN_AFTER_EXIT);
            if drained_too_long && !s.pipes.is_empty() {
                tracing::warn!(
                    target: TARGET,
                    slot = s.slot,
                    pid = s.pid,
                    "worker output: the worker exited {} s ago and its pipe is still open (a process it started left its group and holds it): closed",
                    DRAIN_AFTER_EXIT.as_secs()
                );
                while !s.pipes.is_empty() {
                    s.close(0);
                }
            }
            let done = s.pipes.is_empty();
            if done {
                s.report_drops("before it exited");
            }
            !done
        });
    }

    /// At drover's exit: what the pipes still hold, once, within the per-wake bound.
    pub fn drain_at_exit(&mut self) {
        let ready = vec![true; self.sources.iter().map(|s| s.pipes.len()).sum()];
        for s in &mut self.sources {
            s.paused = false;
        }
        self.service(&ready);
        for s in &mut self.sources {
            while !s.pipes.is_empty() {
                s.close(0);
            }
            s.report_drops("at drover's exit");
        }
        self.sources.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source() -> Source {
        Source {
            slot: 1,
            generation: 1,
            pid: 42,
            pipes: vec![Pipe {
                fd: nix::unistd::pipe().unwrap().0,
                stream: Stream::Stdout,
                partial: Vec::new(),
            }],
            window_start: Instant::now(),
            bytes_left: BYTES_PER_SEC,
            lines_left: LINES_PER_SEC,
            dropped: 0,
            paused: false,
            exited_at: None,
        }
    }

    #[test]
    fn lines_beyond_the_budget_are_counted_and_long_lines_split() {
        let mut s = source();
        s.lines_left = 3;
        s.take(0, b"a\nb\nc\nd\ne\n");
        assert_eq!(s.lines_left, 0);
        assert_eq!(s.dropped, 2);

        let mut s = source();
        let long = vec![b'x'; LINE_MAX * 2 + 10];
        s.take(0, &long);
        // Two full pieces logged, the rest waits for its newline.
        assert_eq!(LINES_PER_SEC - s.lines_left, 2);
        assert_eq!(s.pipes[0].partial.len(), 10);
        s.take(0, b"yz\n");
        assert_eq!(LINES_PER_SEC - s.lines_left, 3);
        assert!(s.pipes[0].partial.is_empty());
        // A line begun in one read and ended in another is one line.
        s.take(0, b"half");
        s.take(0, b" and half\n");
        assert_eq!(LINES_PER_SEC - s.lines_left, 4);
    }

    #[test]
    fn a_new_window_refills_the_budgets() {
        let mut s = source();
        s.lines_left = 0;
        s.bytes_left = 0;
        s.paused = true;
        s.dropped = 5;
        s.roll_window(Instant::now());
        assert!(s.paused, "a window lasts a second");
        s.roll_window(Instant::now() + WINDOW);
        assert!(!s.paused);
        assert_eq!(
            (s.lines_left, s.bytes_left, s.dropped),
            (LINES_PER_SEC, BYTES_PER_SEC, 0)
        );
    }
}
