//! The stop signal of a bring-your-own-server worker, in the three shapes a program may wait
//! on it: a future ([`Stopped`], runtime-agnostic: a waker list, no executor of its own), a
//! blocking wait, and a raw descriptor (the read end of a pipe that becomes readable once
//! the stop is requested and stays so, for epoll, mio or an event loop of another language).
//! It owns only the "stop was requested" fact and the wake-ups; who raises it (the report
//! thread, on TERM or INT) is `byo_worker`'s business, and what a stop means for the
//! program's connections is the program's.

use std::future::Future;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// The requested-stop fact and everyone waiting for it.
pub(super) struct StopState {
    stopping: AtomicBool,
    /// One waker per pending [`Stopped`] future that was polled, by its id.
    waiters: Mutex<Vec<(u64, Waker)>>,
    next_id: AtomicU64,
    cond: Condvar,
    /// Level-triggered and never drained: readable from the stop on.
    read: OwnedFd,
    /// The same pipe's write end. In a worker it is also what the signal handler writes to
    /// (`signals::STOP_FD`), so the descriptor turns readable at the signal itself.
    write: OwnedFd,
}

impl StopState {
    pub(super) fn new(read: OwnedFd, write: OwnedFd) -> StopState {
        StopState {
            stopping: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            cond: Condvar::new(),
            read,
            write,
        }
    }

    /// A fresh state on a pipe of its own (non-blocking, close-on-exec).
    #[cfg(test)]
    pub(super) fn with_pipe() -> std::io::Result<StopState> {
        use nix::fcntl::OFlag;
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        Ok(StopState::new(read, write))
    }

    pub(super) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Raises the stop: wakes every future and blocked waiter, makes the fd readable. Only
    /// the first call does anything.
    pub(super) fn trigger(&self) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        // A byte more in a pipe the signal handler may already have written to: harmless,
        // nobody drains it. (A full pipe, EAGAIN, is readable anyway.)
        let _ = nix::unistd::write(&self.write, b"s");
        let wakers = std::mem::take(&mut *self.lock());
        for (_, waker) in wakers {
            waker.wake();
        }
        self.cond.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(u64, Waker)>> {
        // A waker that panicked in `wake` poisons nothing we rely on: the list stays valid.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Blocks until the stop is requested, or `timeout` passes; true if stopping.
    pub(super) fn wait(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.lock();
        // Checked under the lock `trigger` takes after setting the flag: no lost wake-up.
        while !self.is_stopping() {
            match deadline {
                None => guard = self.cond.wait(guard).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    guard = self
                        .cond
                        .wait_timeout(guard, left)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        true
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }

    pub(super) fn future(self: &Arc<Self>) -> Stopped {
        Stopped {
            state: self.clone(),
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            registered: false,
        }
    }
}

/// A future that completes once the worker is asked to stop (TERM or INT, which is also how
/// the supervisor retires a worker: `--max-requests`, a rolling restart, an upgrade, a scale
/// down). It works on any executor; it is `Send + 'static`, so it can be handed to
/// `axum::serve(..).with_graceful_shutdown(..)` or spawned. See [`WorkerHandle::stopped`].
///
/// [`WorkerHandle::stopped`]: super::WorkerHandle::stopped
#[must_use = "a future does nothing unless awaited"]
pub struct Stopped {
    state: Arc<StopState>,
    id: u64,
    registered: bool,
}

impl Future for Stopped {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.state.is_stopping() {
            return Poll::Ready(());
        }
        let id = self.id;
        let mut waiters = self.state.lock();
        // Under the lock `trigger` takes after setting the flag: either the flag shows here
        // or `trigger` finds this waker.
        if self.state.is_stopping() {
            return Poll::Ready(());
        }
        match waiters.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(cx.waker()),
            None => waiters.push((id, cx.waker().clone())),
        }
        drop(waiters);
        self.registered = true;
        Poll::Pending
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if self.registered {
            let id = self.id;
            self.state.lock().retain(|(i, _)| *i != id);
        }
    }
}

impl std::fmt::Debug for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stopped")
            .field("stopping", &self.state.is_stopping())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn readable(fd: BorrowedFd<'_>) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::ZERO).unwrap() == 1
    }

    #[test]
    fn the_future_is_pending_until_the_stop_then_woken_once_and_ready() {
        let state = Arc::new(StopState::with_pipe().unwrap());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut fut = Box::pin(state.future());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        assert!(
            fut.as_mut().poll(&mut cx).is_pending(),
            "polled twice: one entry"
        );
        assert_eq!(state.lock().len(), 1);
        state.trigger();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert!(fut.as_mut().poll(&mut cx).is_ready());
        // A future made after the stop is ready at once; a second trigger changes nothing.
        assert!(Box::pin(state.future()).as_mut().poll(&mut cx).is_ready());
        state.trigger();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_dropped_future_leaves_no_waker_behind() {
        let state = Arc::new(StopState::with_pipe().unwrap());
        let waker = Waker::from(Arc::new(Count(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..100 {
            let mut fut = Box::pin(state.future());
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        assert!(state.lock().is_empty());
    }

    #[test]
    fn the_fd_turns_readable_at_the_stop_and_stays_so() {
        let state = StopState::with_pipe().unwrap();
        assert!(!readable(state.fd()));
        state.trigger();
        assert!(readable(state.fd()));
        assert!(readable(state.fd()), "level-triggered: nobody drains it");
    }

    #[test]
    fn the_blocking_wait_returns_at_the_stop_or_its_timeout() {
        let state = Arc::new(StopState::with_pipe().unwrap());
        assert!(!state.wait(Some(Duration::from_millis(20))));
        let waiter = {
            let state = state.clone();
            std::thread::spawn(move || state.wait(None))
        };
        // The waiter may or may not be blocked yet: either way it must return true.
        state.trigger();
        assert!(waiter.join().unwrap());
        assert!(state.wait(Some(Duration::ZERO)));
    }
}
