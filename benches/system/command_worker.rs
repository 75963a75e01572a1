//! The whole-system benchmark's command worker for `drover run`: a small, fast worker that
//! follows the worker contract (docs/protocol.md) and serves the same HTTP/1.1
//! keep-alive loop and response bytes as `hello` (`http.rs`), so `drover run` is measured
//! rather than the worker's language.
//!
//! ```sh
//! drover run --listen 127.0.0.1:8080 --workers 4 --threads 4 --readiness notify \
//!     --heartbeat-timeout 10 -- target/release/examples/command_worker --threads 4
//! ```
//!
//! - the listener is fd 3 (`LISTEN_FDS`); `--threads` threads block in `accept(2)` on it;
//! - `READY=1` once the threads run; `WATCHDOG=1` every half of `WATCHDOG_USEC` (the contract's
//!   longest allowed period) from the main thread, which otherwise sleeps in `sigtimedwait`;
//! - TERM/INT: `STOPPING=1`, stop accepting, answer each connection's next request (within
//!   100 ms) with `Connection: close`, then exit 0; QUIT: exit 0 at once.

#[path = "http.rs"]
mod http;

use std::net::TcpStream;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const LISTEN_FD: i32 = 3;
/// How long a keep-alive connection may take to send its next request once the worker stops.
const STOP_GRACE: Duration = Duration::from_millis(100);

static STOP: AtomicBool = AtomicBool::new(false);

/// SIGUSR2 only interrupts a blocking accept or read (installed without `SA_RESTART`).
extern "C" fn wake(_: libc::c_int) {}

fn main() {
    let threads = match threads_arg() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("command_worker: {e}\nusage: command_worker [--threads T]");
            std::process::exit(2);
        }
    };
    if std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        < Some(1)
    {
        eprintln!("command_worker: no LISTEN_FDS: run me under `drover run --listen ...`");
        std::process::exit(2);
    }
    let env_num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse().ok());
    let ident: &'static http::Ident = Box::leak(Box::new(http::Ident {
        slot: env_num("DROVER_WORKER_ID").unwrap_or(0) as u32,
        pid: std::process::id(),
        generation: env_num("DROVER_GENERATION").unwrap_or(0),
    }));
    let notify = Notifier::from_env();

    // SAFETY: signal mask and handler set-up with valid, local arguments; done before any
    // thread starts, so every thread inherits the blocked mask.
    let stop_signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
        // The listener is shared with every worker; they all accept blocking.
        let flags = libc::fcntl(LISTEN_FD, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK != 0 {
            libc::fcntl(LISTEN_FD, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
        set
    };

    let handles: Vec<_> = (0..threads)
        .map(|_| std::thread::spawn(move || accept_loop(ident)))
        .collect();
    notify.send("READY=1\nSTATUS=serving");

    let beat = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&u| u > 0)
        .map(|u| Duration::from_micros(u / 2));
    let wait = beat.unwrap_or(Duration::from_secs(3600));
    let timeout = libc::timespec {
        tv_sec: wait.as_secs() as libc::time_t,
        tv_nsec: wait.subsec_nanos() as libc::c_long,
    };
    loop {
        if beat.is_some() {
            notify.send("WATCHDOG=1");
        }
        // SAFETY: waits for one of the blocked stop signals; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&stop_signals, std::ptr::null_mut(), &timeout) };
        match sig {
            libc::SIGQUIT => std::process::exit(0),
            libc::SIGTERM | libc::SIGINT => break,
            _ => {} // EAGAIN (the heartbeat is due) or EINTR
        }
    }

    STOP.store(true, Ordering::SeqCst);
    notify.send("STOPPING=1");
    // Wake every thread out of its accept or keep-alive read until all have finished (a
    // thread may be between its check and its syscall when one signal lands).
    loop {
        let mut running = 0;
        for h in handles.iter().filter(|h| !h.is_finished()) {
            running += 1;
            // std's handle is an integer; the C type is one on glibc, a pointer on musl.
            let thread = h.as_pthread_t() as usize as libc::pthread_t;
            // SAFETY: the thread is not joined yet, so its pthread_t is valid.
            unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0);
}

fn accept_loop(ident: &'static http::Ident) {
    let stopping = || STOP.load(Ordering::SeqCst);
    while !stopping() {
        // SAFETY: accept4 on the inherited listener; null address pointers are allowed.
        let conn = unsafe {
            libc::accept4(
                LISTEN_FD,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        if conn < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EAGAIN) => {}
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
            continue;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let mut stream = unsafe { TcpStream::from_raw_fd(conn) };
        let _ = http::serve(&mut stream, ident, &stopping, STOP_GRACE);
    }
}

struct Notifier {
    sock: Option<(UnixDatagram, String)>,
}

impl Notifier {
    fn from_env() -> Notifier {
        let sock = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| p.starts_with('/'))
            .and_then(|p| Some((UnixDatagram::unbound().ok()?, p)));
        Notifier { sock }
    }

    fn send(&self, msg: &str) {
        if let Some((sock, path)) = &self.sock {
            let _ = sock.send_to(msg.as_bytes(), path);
        }
    }
}

fn threads_arg() -> Result<u32, String> {
    let mut threads = 1;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--threads" => {
                let v = it.next().ok_or("--threads needs a value")?;
                threads = match v.parse() {
                    Ok(n) if n > 0 => n,
                    _ => return Err(format!("--threads {v}: want a positive number")),
                };
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(threads)
}
