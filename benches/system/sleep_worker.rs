//! The sim-to-real benchmark's worker for `drover run` (benches/system/simreal.sh): a
//! program that behaves exactly as drover-sim's model of one, so that whatever differs
//! between the simulator and the real pool is drover's, the kernel's or the model's doing,
//! never the worker's.
//!
//! ```sh
//! drover run --listen 127.0.0.1:8080 --workers 4 --readiness notify -- \
//!     target/release/examples/sleep_worker --boot 300 --threads 1
//! ```
//!
//! - boot: sleeps `--boot MS` (the model's boot time), then sends `READY=1` on
//!   `NOTIFY_SOCKET`; a TERM during the boot ends it at once (exit 0);
//! - `--threads N` threads block in `accept(2)` on the listener at fd 3 (`LISTEN_FDS`), one
//!   connection at a time each (`--accept blocking`, the default: Linux hands each
//!   connection to the thread that has waited longest, so the idle workers take turns), or
//!   wait in an epoll of their own with `EPOLLEXCLUSIVE` and take one connection per wake-up
//!   (`--accept epoll`, as drover's embedded runtime does: Linux wakes the first idle waiter
//!   in the order the epolls were registered, so the oldest idle worker takes it); a connection sends one line `GET <service_us>
//!   <client_connect_ns>`, the thread notes the accept instant (`CLOCK_MONOTONIC` ns, the
//!   client's clock on this machine) right after `accept4` returns, sleeps `service_us`,
//!   answers `OK <accept_ns> <pid>` and closes (the pid shows how the kernel spreads
//!   connections over the pool's workers);
//! - load: `X_DROVER_LOAD=busy=B,requests=R` with `READY=1` and then at every change
//!   (`--load-report change`, the default), or at most every MS while it changed
//!   (`--load-report MS`: the simulator's workers report every 2 s), or never
//!   (`--load-report none`: the pool then scales on the accept queue alone);
//! - `WATCHDOG=1` every half of `WATCHDOG_USEC` when drover sets it (`heartbeat_timeout`);
//! - TERM/INT: stop accepting, finish the request in hand, exit 0.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LISTEN_FD: i32 = 3;
/// A client that connected but sends no line gives its thread back after this.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// No request of a replayed trace holds a thread longer (drover-sim caps a service time at
/// a day; an hour is beyond any benchmark run).
const SERVICE_MAX_US: u64 = 3_600_000_000;
const USAGE: &str = "usage: sleep_worker [--boot MS] [--threads N] [--load-report change|none|MS] [--accept blocking|epoll]";

static STOP: AtomicBool = AtomicBool::new(false);

/// SIGUSR2 only interrupts a blocking accept (installed without `SA_RESTART`); a request's
/// sleep, read and write resume where they were (std retries them on EINTR).
extern "C" fn wake(_: libc::c_int) {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LoadReport {
    Change,
    Never,
    Every(Duration),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Accept {
    Blocking,
    Epoll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Args {
    boot: Duration,
    threads: u32,
    load_report: LoadReport,
    accept: Accept,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut out = Args {
        boot: Duration::ZERO,
        threads: 1,
        load_report: LoadReport::Change,
        accept: Accept::Blocking,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--boot" => {
                let v = value()?;
                out.boot = match v.parse::<u64>() {
                    Ok(ms) if ms <= 3_600_000 => Duration::from_millis(ms),
                    _ => return Err(format!("--boot {v}: want milliseconds, 0..=3600000")),
                };
            }
            "--threads" => {
                let v = value()?;
                out.threads = match v.parse::<u32>() {
                    Ok(n) if (1..=1024).contains(&n) => n,
                    _ => return Err(format!("--threads {v}: want a number, 1..=1024")),
                };
            }
            "--load-report" => {
                let v = value()?;
                out.load_report = match v {
                    "change" => LoadReport::Change,
                    "none" => LoadReport::Never,
                    ms => match ms.parse::<u64>() {
                        Ok(ms) if (1..=3_600_000).contains(&ms) => {
                            LoadReport::Every(Duration::from_millis(ms))
                        }
                        _ => {
                            return Err(format!(
                                "--load-report {v}: want change, none or milliseconds (1..=3600000)"
                            ))
                        }
                    },
                };
            }
            "--accept" => {
                let v = value()?;
                out.accept = match v {
                    "blocking" => Accept::Blocking,
                    "epoll" => Accept::Epoll,
                    _ => return Err(format!("--accept {v}: want blocking or epoll")),
                };
            }
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok(out)
}

/// `GET <service_us> <client_connect_ns>`: the service time; the client's stamp is its own
/// business (it is in the line so that a packet capture shows which request is which).
fn parse_request(line: &str) -> Result<Duration, String> {
    let mut words = line.split_ascii_whitespace();
    let (Some("GET"), Some(us), Some(_), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Err("want `GET <service_us> <client_connect_ns>`".into());
    };
    match us.parse::<u64>() {
        Ok(us) if us <= SERVICE_MAX_US => Ok(Duration::from_micros(us)),
        _ => Err(format!("service_us {us:?}: want 0..={SERVICE_MAX_US}")),
    }
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The worker's load and the notify socket it reports on: one lock, so that reports leave
/// in the order of the changes they describe.
struct Load {
    inner: Mutex<LoadInner>,
    mode: LoadReport,
}

struct LoadInner {
    busy: u32,
    requests: u64,
    /// The last load sent (`Every`: sent only when it moved).
    sent: Option<(u32, u64)>,
    notify: Option<(UnixDatagram, String)>,
}

impl Load {
    fn new(mode: LoadReport) -> Load {
        let notify = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| p.starts_with('/'))
            .and_then(|p| Some((UnixDatagram::unbound().ok()?, p)));
        Load {
            inner: Mutex::new(LoadInner {
                busy: 0,
                requests: 0,
                sent: None,
                notify,
            }),
            mode,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LoadInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `READY=1`, with the first load report: drover reads a worker's datagrams promptly
    /// only once it has reported load (docs/protocol.md).
    fn ready(&self) {
        let mut g = self.lock();
        let msg = if self.mode == LoadReport::Never {
            "READY=1".to_string()
        } else {
            g.sent = Some((0, 0));
            "READY=1\nX_DROVER_LOAD=busy=0,requests=0".to_string()
        };
        g.send(&msg);
    }

    fn change(&self, busy_delta: i32, served: u64) {
        let mut g = self.lock();
        g.busy = g.busy.saturating_add_signed(busy_delta);
        g.requests += served;
        if self.mode == LoadReport::Change {
            g.report();
        }
    }

    fn send(&self, msg: &str) {
        self.lock().send(msg);
    }

    fn report_if_moved(&self) {
        let mut g = self.lock();
        if g.sent != Some((g.busy, g.requests)) {
            g.report();
        }
    }
}

impl LoadInner {
    fn report(&mut self) {
        self.sent = Some((self.busy, self.requests));
        let msg = format!(
            "X_DROVER_LOAD=busy={},requests={}",
            self.busy, self.requests
        );
        self.send(&msg);
    }

    fn send(&self, msg: &str) {
        if let Some((sock, path)) = &self.notify {
            let _ = sock.send_to(msg.as_bytes(), path);
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sleep_worker: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let fds_ok = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n >= 1);
    let pid_ok = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    if !fds_ok || !pid_ok {
        eprintln!("sleep_worker: no listener for this process (LISTEN_FDS/LISTEN_PID): run me under `drover run --listen ...`");
        std::process::exit(2);
    }

    // SAFETY: signal mask and handler set-up with valid, local arguments; done before any
    // thread starts, so every thread inherits the blocked mask.
    let stop_signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = wake as extern "C" fn(libc::c_int) as usize;
        action.sa_flags = 0;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGUSR2, &action, std::ptr::null_mut());
        // The flag is the shared open file's: every worker of a run uses the same mode.
        let flags = libc::fcntl(LISTEN_FD, libc::F_GETFL);
        if flags >= 0 {
            let want = match args.accept {
                Accept::Blocking => flags & !libc::O_NONBLOCK,
                Accept::Epoll => flags | libc::O_NONBLOCK,
            };
            if want != flags {
                libc::fcntl(LISTEN_FD, libc::F_SETFL, want);
            }
        }
        set
    };

    // The boot: a wait that a stop ends, as a program's start-up that is told to quit.
    if wait_stop(&stop_signals, Some(args.boot)) {
        std::process::exit(0);
    }

    let load = Arc::new(Load::new(args.load_report));
    let handles: Vec<_> = (0..args.threads)
        .map(|_| {
            let load = load.clone();
            let accept = args.accept;
            std::thread::spawn(move || accept_loop(&load, accept))
        })
        .collect();
    load.ready();

    // The main thread keeps the paces: heartbeats at half of WATCHDOG_USEC (the contract's
    // longest allowed period) and, with `--load-report MS`, the load.
    let beat = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&u| u > 0)
        .map(|u| Duration::from_micros(u / 2));
    let report = match args.load_report {
        LoadReport::Every(every) => Some(every),
        _ => None,
    };
    let start = std::time::Instant::now();
    let (mut next_beat, mut next_report) = (beat.map(|b| start + b), report.map(|r| start + r));
    if beat.is_some() {
        load.send("WATCHDOG=1");
    }
    loop {
        let next = next_beat.into_iter().chain(next_report).min();
        let limit = next.map(|n| n.saturating_duration_since(std::time::Instant::now()));
        if wait_stop(&stop_signals, limit) {
            break;
        }
        let now = std::time::Instant::now();
        if let (Some(at), Some(every)) = (next_beat, beat) {
            if now >= at {
                load.send("WATCHDOG=1");
                next_beat = Some(at + every);
            }
        }
        if let (Some(at), Some(every)) = (next_report, report) {
            if now >= at {
                load.report_if_moved();
                next_report = Some(at + every);
            }
        }
    }

    STOP.store(true, Ordering::SeqCst);
    // Wake every thread blocked in accept until all have finished (a thread may be between
    // its check of STOP and its accept when one signal lands).
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
        std::thread::sleep(Duration::from_millis(1));
    }
    for h in handles {
        let _ = h.join();
    }
    std::process::exit(0);
}

/// Waits up to `limit` (forever: None) for TERM or INT; true if one came.
fn wait_stop(set: &libc::sigset_t, limit: Option<Duration>) -> bool {
    let deadline = limit.map(|l| std::time::Instant::now() + l);
    loop {
        let left = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                left
            }
            None => Duration::from_secs(3600),
        };
        let ts = libc::timespec {
            tv_sec: left.as_secs() as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        };
        // SAFETY: waits for one of the blocked stop signals; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
        if sig == libc::SIGTERM || sig == libc::SIGINT {
            return true;
        }
        // EAGAIN (the time is up, rechecked above) or EINTR.
    }
}

fn accept_loop(load: &Load, mode: Accept) {
    let epoll = match mode {
        Accept::Blocking => None,
        Accept::Epoll => match exclusive_epoll() {
            Ok(fd) => Some(fd),
            Err(e) => {
                eprintln!("sleep_worker: epoll on the listener: {e}");
                std::process::exit(1);
            }
        },
    };
    while !STOP.load(Ordering::SeqCst) {
        if let Some(ep) = &epoll {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            // SAFETY: waits on our own epoll for one event into a local; EINTR (a stop's
            // SIGUSR2) returns -1.
            if unsafe { libc::epoll_wait(ep.as_raw_fd(), &mut ev, 1, -1) } < 1 {
                continue;
            }
        }
        // SAFETY: accept4 on the inherited listener; null address pointers are allowed.
        let conn = unsafe {
            libc::accept4(
                LISTEN_FD,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC,
            )
        };
        let accept_ns = mono_ns();
        if conn < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::ECONNABORTED | libc::EAGAIN) => {}
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
            continue;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let stream = unsafe { TcpStream::from_raw_fd(conn) };
        // A connection taken is served, stop or not: it left the shared queue for good.
        load.change(1, 0);
        let served = serve(stream, accept_ns).is_ok();
        load.change(-1, u64::from(served));
    }
}

/// An epoll of this thread's own watching the listener with `EPOLLEXCLUSIVE`: a connection
/// wakes one idle waiter, not all of them.
fn exclusive_epoll() -> std::io::Result<std::os::fd::OwnedFd> {
    // SAFETY: epoll_create1 returns a new descriptor or -1.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is ours alone from here.
    let ep = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let mut ev = libc::epoll_event {
        events: (libc::EPOLLIN | libc::EPOLLEXCLUSIVE) as u32,
        u64: 0,
    };
    // SAFETY: adds the inherited listener to our epoll with a valid event.
    if unsafe { libc::epoll_ctl(ep.as_raw_fd(), libc::EPOLL_CTL_ADD, LISTEN_FD, &mut ev) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(ep)
}

fn serve(stream: TcpStream, accept_ns: u64) -> std::io::Result<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut stream = stream;
    match parse_request(&line) {
        Ok(service) => {
            std::thread::sleep(service);
            let pid = std::process::id();
            stream.write_all(format!("OK {accept_ns} {pid}\n").as_bytes())
        }
        Err(e) => {
            let _ = stream.write_all(format!("ERR {e}\n").as_bytes());
            Err(std::io::Error::other(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn flags_parse() {
        assert_eq!(
            args("").unwrap(),
            Args {
                boot: Duration::ZERO,
                threads: 1,
                load_report: LoadReport::Change,
                accept: Accept::Blocking,
            }
        );
        let a = args("--boot 300 --threads 4 --load-report 2000 --accept epoll").unwrap();
        assert_eq!(a.accept, Accept::Epoll);
        assert_eq!(a.boot, Duration::from_millis(300));
        assert_eq!(a.threads, 4);
        assert_eq!(a.load_report, LoadReport::Every(Duration::from_secs(2)));
        assert_eq!(
            args("--load-report none").unwrap().load_report,
            LoadReport::Never
        );
    }

    #[test]
    fn bad_flags_name_the_flag() {
        for (bad, says) in [
            ("--boot", "--boot needs a value"),
            ("--boot -1", "--boot -1"),
            ("--boot 1s", "--boot 1s"),
            ("--threads 0", "--threads 0"),
            ("--threads x", "--threads x"),
            ("--load-report sometimes", "--load-report sometimes"),
            ("--load-report 0", "--load-report 0"),
            ("--accept poll", "--accept poll"),
            ("--port 80", "unknown argument --port"),
        ] {
            let e = args(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn request_lines_parse() {
        assert_eq!(
            parse_request("GET 1500 123\n").unwrap(),
            Duration::from_micros(1500)
        );
        assert_eq!(parse_request("GET 0 0").unwrap(), Duration::ZERO);
        for bad in [
            "",
            "GET",
            "GET 10",
            "PUT 10 1",
            "GET x 1",
            "GET -1 1",
            "GET 10 1 2",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        assert!(parse_request("GET 3600000001 1").is_err());
    }
}
