//! The sim-to-real benchmark's client (benches/system/simreal.sh): replays a recorded trace
//! against a real pool of `sleep_worker`s on loopback, one new connection per request, each
//! at its arrival time, and measures what drover-sim measures of the same trace: whether
//! each request was served and how long it waited in the accept queue.
//!
//! ```sh
//! replay_client --trace sim/traces/example.csv --addr 127.0.0.1:8080 --out waits.csv \
//!     [--speed 2] [--max-inflight 2000] [--timeout 30]
//! ```
//!
//! The trace is read by drover-sim's own parser (`drover_sim::lab::trace`) and time-scaled
//! as `drover-sim --speed` does, so both replay the same requests at the same instants: the
//! first request at 0, when the client starts. At each arrival (`CLOCK_MONOTONIC`, slept
//! until) a thread connects, sends `GET <service_us> <connect_start_ns>`, and reads `OK
//! <accept_ns> <pid>`: the worker's accept instant on the same clock, so the queue wait is
//! `accept_ns - connect_start_ns`, the stamp taken just before `connect(2)`. Only loopback
//! addresses are accepted: the two stamps must come from one machine's clock.
//!
//! Outcomes: `served`; `refused` (connection refused); `reset` (reset, or closed without an
//! answer); `timeout` (no answer within `--timeout` of the connect's start); `limit` (not
//! sent: `--max-inflight` connections were open); `error` (any other failure). The whole run
//! is bounded by the trace's span + 60 s; a request unanswered then counts as `timeout`.
//!
//! Output: `--out` gets a first line `# t0_realtime_ns=… t0_monotonic_ns=… speed=… requests=…`
//! (the client's time zero on both clocks, to line other logs up with it), then
//! `arrival_s,wait_us,outcome,late_us,connect_us,pid,service_us,total_us` per request in
//! trace order (`service_us`: the trace's; `wait_us`, `pid` (the worker that served it) and
//! `total_us` (from the connect's start to the answer: the wait + the service time + what
//! the request costs beyond its sleep) empty unless served; `late_us`: how far after its arrival the connect started; `connect_us`:
//! how long `connect` took, which shows SYN retries). Stdout: one summary line.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use drover_sim::lab::trace::{self, TraceFormat};

const USAGE: &str = "usage: replay_client --trace FILE --addr 127.0.0.1:PORT --out FILE.csv [--speed X] [--max-inflight N] [--timeout SECS]";
/// Past the trace's last arrival, how long the run may go on for answers.
const TAIL: Duration = Duration::from_secs(60);
/// One thread per open request; they only connect, write a line and read one.
const THREAD_STACK: usize = 64 * 1024;
/// A request's thread is started this long before its arrival and sleeps the rest: starting
/// a thread takes 0.1-1 ms here, which would otherwise make every request late.
const LEAD: Duration = Duration::from_millis(2);

#[derive(Clone, Debug, PartialEq)]
struct Args {
    trace: String,
    addr: SocketAddr,
    out: String,
    speed: f64,
    max_inflight: usize,
    timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let (mut trace, mut addr, mut out) = (None, None, None);
    let mut speed = 1.0;
    let mut max_inflight = 2000;
    let mut timeout = Duration::from_secs(30);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let v = match flag.as_str() {
            "--trace" | "--addr" | "--out" | "--speed" | "--max-inflight" | "--timeout" => {
                it.next().ok_or_else(|| format!("{flag} needs a value"))?
            }
            _ => return Err(format!("unknown argument {flag}")),
        };
        match flag.as_str() {
            "--trace" => trace = Some(v.clone()),
            "--out" => out = Some(v.clone()),
            "--addr" => {
                let a: SocketAddr = v
                    .parse()
                    .map_err(|_| format!("--addr {v}: want IP:PORT, e.g. 127.0.0.1:8080"))?;
                if !a.ip().is_loopback() || a.port() == 0 {
                    return Err(format!(
                        "--addr {v}: want a loopback address and a port (the wait is measured on this machine's clock)"
                    ));
                }
                addr = Some(a);
            }
            "--speed" => {
                speed = match v.parse::<f64>() {
                    Ok(x) if x.is_finite() && (0.001..=1000.0).contains(&x) => x,
                    _ => return Err(format!("--speed {v}: want a number, 0.001..=1000")),
                }
            }
            "--max-inflight" => {
                max_inflight = match v.parse::<usize>() {
                    Ok(n) if (1..=20_000).contains(&n) => n,
                    _ => return Err(format!("--max-inflight {v}: want a number, 1..=20000")),
                }
            }
            _ => {
                timeout = match v.parse::<f64>() {
                    Ok(s) if s.is_finite() && (0.001..=3600.0).contains(&s) => {
                        Duration::from_secs_f64(s)
                    }
                    _ => return Err(format!("--timeout {v}: want seconds, 0.001..=3600")),
                }
            }
        }
    }
    Ok(Args {
        trace: trace.ok_or("--trace FILE is required")?,
        addr: addr.ok_or("--addr 127.0.0.1:PORT is required")?,
        out: out.ok_or("--out FILE.csv is required")?,
        speed,
        max_inflight,
        timeout,
    })
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn mono_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Served,
    Refused,
    Reset,
    Timeout,
    Limit,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Served,
        Outcome::Refused,
        Outcome::Reset,
        Outcome::Timeout,
        Outcome::Limit,
        Outcome::Error,
    ];

    fn name(self) -> &'static str {
        match self {
            Outcome::Served => "served",
            Outcome::Refused => "refused",
            Outcome::Reset => "reset",
            Outcome::Timeout => "timeout",
            Outcome::Limit => "limit",
            Outcome::Error => "error",
        }
    }

    fn of_error(e: &std::io::Error) -> Outcome {
        match e.kind() {
            ErrorKind::ConnectionRefused => Outcome::Refused,
            ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
                Outcome::Reset
            }
            ErrorKind::TimedOut | ErrorKind::WouldBlock => Outcome::Timeout,
            _ => Outcome::Error,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Result1 {
    outcome: Outcome,
    wait_us: Option<u64>,
    late_us: u64,
    connect_us: u64,
    /// The worker that served it.
    pid: Option<u32>,
    total_us: Option<u64>,
}

/// `OK <accept_ns> <pid>` → the wait since `connect_start_ns` in µs (0 if the stamps cross,
/// which one clock never does) and the worker's pid.
fn parse_answer(answer: &str, connect_start_ns: u64) -> Option<(u64, u32)> {
    let mut words = answer.strip_prefix("OK ")?.split_ascii_whitespace();
    let accept_ns: u64 = words.next()?.parse().ok()?;
    let pid: u32 = words.next()?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some((accept_ns.saturating_sub(connect_start_ns) / 1000, pid))
}

/// One request: connect, send the line, read the answer, all within `timeout`.
fn request(addr: SocketAddr, service: Duration, due_ns: u64, timeout: Duration) -> Result1 {
    let start = mono_ns();
    let mut r = Result1 {
        outcome: Outcome::Error,
        wait_us: None,
        late_us: start.saturating_sub(due_ns) / 1000,
        connect_us: 0,
        pid: None,
        total_us: None,
    };
    let mut stream = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(s) => s,
        Err(e) => {
            r.connect_us = (mono_ns() - start) / 1000;
            r.outcome = Outcome::of_error(&e);
            return r;
        }
    };
    r.connect_us = (mono_ns() - start) / 1000;
    let left = |now: u64| timeout.saturating_sub(Duration::from_nanos(now - start));
    let line = format!("GET {} {start}\n", service.as_micros());
    let sent = (|| {
        let _ = stream.set_nodelay(true);
        stream.set_write_timeout(Some(left(mono_ns()).max(Duration::from_millis(1))))?;
        stream.write_all(line.as_bytes())?;
        let mut answer = Vec::with_capacity(32);
        let mut buf = [0u8; 64];
        loop {
            let l = left(mono_ns());
            if l.is_zero() {
                return Err(ErrorKind::TimedOut.into());
            }
            stream.set_read_timeout(Some(l))?;
            let n = stream.read(&mut buf)?;
            if n == 0 || answer.len() > 256 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            if answer.contains(&b'\n') {
                break;
            }
        }
        Ok::<_, std::io::Error>(answer)
    })();
    match sent {
        Ok(answer) => match parse_answer(&String::from_utf8_lossy(&answer), start) {
            Some((wait, pid)) => {
                r.outcome = Outcome::Served;
                r.wait_us = Some(wait);
                r.pid = Some(pid);
                r.total_us = Some((mono_ns() - start) / 1000);
            }
            // Closed without an answer: what a pool that drops a connection does.
            None if answer.is_empty() => r.outcome = Outcome::Reset,
            None => r.outcome = Outcome::Error,
        },
        Err(e) => r.outcome = Outcome::of_error(&e),
    }
    r
}

/// The nearest-rank percentile, as drover-sim computes it (`world::percentile_ms`).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replay_client: {e}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&args.trace) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("replay_client: --trace {}: {e}", args.trace);
            std::process::exit(2);
        }
    };
    let parsed = match trace::parse(&text, TraceFormat::Auto) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("replay_client: --trace {}: {e}", args.trace);
            std::process::exit(2);
        }
    };
    let trace = if args.speed == 1.0 {
        parsed
    } else {
        parsed.scaled(args.speed)
    };
    let n = trace.requests.len();
    let span = trace.span();
    // Opened before the run: a full disk must not cost a whole replay.
    let mut out = match std::fs::File::create(&args.out) {
        Ok(f) => std::io::BufWriter::new(f),
        Err(e) => {
            eprintln!("replay_client: --out {}: {e}", args.out);
            std::process::exit(2);
        }
    };

    let (tx, rx) = mpsc::channel::<(usize, Result1)>();
    let inflight = Arc::new(AtomicUsize::new(0));
    let mut results: Vec<Option<Result1>> = vec![None; n];
    let t0_real = clock_ns(libc::CLOCK_REALTIME);
    let t0 = mono_ns();
    let deadline = t0 + (span + TAIL).as_nanos() as u64;
    for (i, req) in trace.requests.iter().enumerate() {
        let due = t0 + req.arrival.as_nanos() as u64;
        let now = mono_ns();
        let wake = due.saturating_sub(LEAD.as_nanos() as u64);
        if wake > now {
            std::thread::sleep(Duration::from_nanos(wake - now));
        }
        if inflight.load(Ordering::SeqCst) >= args.max_inflight || mono_ns() >= deadline {
            results[i] = Some(Result1 {
                outcome: Outcome::Limit,
                wait_us: None,
                late_us: mono_ns().saturating_sub(due) / 1000,
                connect_us: 0,
                pid: None,
                total_us: None,
            });
            continue;
        }
        inflight.fetch_add(1, Ordering::SeqCst);
        let (tx, open) = (tx.clone(), inflight.clone());
        let (addr, service) = (args.addr, req.service);
        // Never past the run's bound: the tail of a long request is cut like a timeout.
        let timeout = args
            .timeout
            .min(Duration::from_nanos(deadline.saturating_sub(due)));
        let spawned = std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                let now = mono_ns();
                if due > now {
                    std::thread::sleep(Duration::from_nanos(due - now));
                }
                let r = request(addr, service, due, timeout);
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send((i, r));
            });
        if spawned.is_err() {
            inflight.fetch_sub(1, Ordering::SeqCst);
            results[i] = Some(Result1 {
                outcome: Outcome::Limit,
                wait_us: None,
                late_us: 0,
                connect_us: 0,
                pid: None,
                total_us: None,
            });
        }
    }
    drop(tx);
    // Every thread ends by its own timeout; the bound only guards against one that hangs.
    loop {
        let now = mono_ns();
        if now >= deadline + 1_000_000_000 {
            break;
        }
        match rx.recv_timeout(Duration::from_nanos(deadline + 1_000_000_000 - now)) {
            Ok((i, r)) => results[i] = Some(r),
            Err(_) => break,
        }
    }
    let elapsed = (mono_ns() - t0) as f64 / 1e9;

    let _ = writeln!(
        out,
        "# t0_realtime_ns={t0_real} t0_monotonic_ns={t0} speed={} requests={n}",
        args.speed
    );
    let _ = writeln!(
        out,
        "arrival_s,wait_us,outcome,late_us,connect_us,pid,service_us,total_us"
    );
    let mut counts = [0usize; 6];
    let mut waits = Vec::new();
    let mut lates = Vec::new();
    for (req, r) in trace.requests.iter().zip(&results) {
        let r = r.unwrap_or(Result1 {
            outcome: Outcome::Timeout,
            wait_us: None,
            late_us: 0,
            connect_us: 0,
            pid: None,
            total_us: None,
        });
        counts[Outcome::ALL
            .iter()
            .position(|&o| o == r.outcome)
            .unwrap_or(5)] += 1;
        waits.extend(r.wait_us);
        lates.push(r.late_us);
        let wait = r.wait_us.map(|w| w.to_string()).unwrap_or_default();
        let pid = r.pid.map(|p| p.to_string()).unwrap_or_default();
        let total = r.total_us.map(|t| t.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:.6},{wait},{},{},{},{pid},{},{total}",
            req.arrival.as_secs_f64(),
            r.outcome.name(),
            r.late_us,
            r.connect_us,
            req.service.as_micros()
        );
    }
    if let Err(e) = out.flush() {
        eprintln!("replay_client: --out {}: {e}", args.out);
        std::process::exit(1);
    }
    waits.sort_unstable();
    lates.sort_unstable();
    let outcomes: Vec<String> = Outcome::ALL
        .iter()
        .zip(counts)
        .map(|(o, c)| format!("{}={c}", o.name()))
        .collect();
    println!(
        "replay_client: {n} requests in {elapsed:.1} s: {}; wait p50={:.1} p95={:.1} p99={:.1} max={:.1} ms; late p50={:.2} p99={:.2} max={:.2} ms, {} over 10 ms",
        outcomes.join(" "),
        percentile(&waits, 50.0) as f64 / 1000.0,
        percentile(&waits, 95.0) as f64 / 1000.0,
        percentile(&waits, 99.0) as f64 / 1000.0,
        percentile(&waits, 100.0) as f64 / 1000.0,
        percentile(&lates, 50.0) as f64 / 1000.0,
        percentile(&lates, 99.0) as f64 / 1000.0,
        percentile(&lates, 100.0) as f64 / 1000.0,
        lates.iter().filter(|&&l| l > 10_000).count(),
    );
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
        let a = args("--trace t.csv --addr 127.0.0.1:8080 --out o.csv").unwrap();
        assert_eq!(a.speed, 1.0);
        assert_eq!(a.max_inflight, 2000);
        assert_eq!(a.timeout, Duration::from_secs(30));
        let a = args(
            "--trace t.csv --addr [::1]:9 --out o.csv --speed 2.5 --max-inflight 10 --timeout 0.5",
        )
        .unwrap();
        assert_eq!(a.speed, 2.5);
        assert_eq!(a.max_inflight, 10);
        assert_eq!(a.timeout, Duration::from_millis(500));
        assert_eq!(a.addr.port(), 9);
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let base = "--trace t.csv --out o.csv";
        for (bad, says) in [
            (
                "--trace t.csv --out o.csv",
                "--addr 127.0.0.1:PORT is required",
            ),
            ("--addr 127.0.0.1:1 --out o.csv", "--trace FILE is required"),
            (
                "--trace t.csv --addr 127.0.0.1:1",
                "--out FILE.csv is required",
            ),
            (&format!("{base} --addr 10.0.0.1:80"), "--addr 10.0.0.1:80"),
            (
                &format!("{base} --addr localhost:80"),
                "--addr localhost:80",
            ),
            (&format!("{base} --addr 127.0.0.1:0"), "--addr 127.0.0.1:0"),
            (&format!("{base} --addr"), "--addr needs a value"),
            (&format!("{base} --speed 0"), "--speed 0"),
            (&format!("{base} --speed NaN"), "--speed NaN"),
            (&format!("{base} --max-inflight 0"), "--max-inflight 0"),
            (&format!("{base} --timeout -1"), "--timeout -1"),
            (&format!("{base} --verbose"), "unknown argument --verbose"),
        ] {
            let e = args(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn answers_give_the_wait() {
        assert_eq!(parse_answer("OK 5000000 42\n", 1_000_000), Some((4000, 42)));
        assert_eq!(parse_answer("OK 5 7\n", 10), Some((0, 7)));
        assert_eq!(parse_answer("OK 5\n", 0), None);
        assert_eq!(parse_answer("OK 5 7 9\n", 0), None);
        assert_eq!(parse_answer("ERR bad line\n", 0), None);
        assert_eq!(parse_answer("OK\n", 0), None);
        assert_eq!(parse_answer("", 0), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<u64> = (1..=101).collect();
        assert_eq!(percentile(&v, 50.0), 51);
        assert_eq!(percentile(&v, 99.0), 100);
        assert_eq!(percentile(&v, 100.0), 101);
        assert_eq!(percentile(&[], 50.0), 0);
    }
}
