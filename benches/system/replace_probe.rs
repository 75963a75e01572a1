//! The whole-system benchmark's replacement probe: time from `kill -9` of a worker to its
//! replacement accepting, against a pool of ONE worker (so only the replacement can answer).
//!
//! ```sh
//! replace_probe --addr 127.0.0.1:8080 --trials 10 --cooldown-ms 1000
//! ```
//!
//! Each trial: a request finds the worker's pid (`X-Drover-Worker: ... pid=P`), then
//! `kill(P, SIGKILL)` starts the clock; once P is reaped (so no dying thread of it can take
//! the connection) a new connection sends `GET /`, and the clock stops
//! when its whole answer is in, from a pid other than P. The connection waits in the
//! listener's accept queue until the replacement accepts it, so the time is kill → reap →
//! respawn → the new worker's first accept and answer. Prints one line per trial, then
//! `median_us=…`. Exits 1 if a trial gets no answer within 10 s.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

fn main() {
    let (addr, trials, cooldown) = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("replace_probe: {e}\nusage: replace_probe --addr HOST:PORT [--trials N] [--cooldown-ms MS]");
            std::process::exit(2);
        }
    };
    let mut times = Vec::new();
    for trial in 1..=trials {
        let victim = match get(addr) {
            Ok(pid) => pid,
            Err(e) => fail(&format!("trial {trial}: first request: {e}")),
        };
        let start = Instant::now();
        // SAFETY: kill with a pid read from the worker's own answer.
        if unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) } != 0 {
            fail(&format!(
                "trial {trial}: kill -9 {victim}: {}",
                std::io::Error::last_os_error()
            ));
        }
        while alive(victim) {
            if start.elapsed() > Duration::from_secs(10) {
                fail(&format!("trial {trial}: pid {victim} survived SIGKILL"));
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        let answered_by = match get(addr) {
            Ok(pid) => pid,
            Err(e) => fail(&format!("trial {trial}: request after the kill: {e}")),
        };
        let took = start.elapsed();
        if answered_by == victim {
            fail(&format!(
                "trial {trial}: answered by the killed pid {victim}"
            ));
        }
        println!(
            "trial {trial}: killed {victim}, replacement {answered_by} answered after {} us",
            took.as_micros()
        );
        times.push(took.as_micros());
        std::thread::sleep(cooldown);
    }
    times.sort_unstable();
    let n = times.len();
    let median = if n % 2 == 1 {
        times[n / 2]
    } else {
        (times[n / 2 - 1] + times[n / 2]) / 2
    };
    println!(
        "median_us={median} min_us={} max_us={} trials={n}",
        times[0],
        times[n - 1]
    );
}

fn fail(msg: &str) -> ! {
    eprintln!("replace_probe: {msg}");
    std::process::exit(1);
}

/// True until `pid` is reaped. A zombie leader is not enough: its other threads may still
/// be on their way out, and a thread woken from `accept` by the SIGKILL can still take a
/// connection that is queued by then (and reset it as the process dies). The supervisor
/// reaps before it respawns, so this wait costs the measurement nothing.
fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// One `GET /` on a new connection; the pid in `X-Drover-Worker` of a 200 answer.
fn get(addr: SocketAddr) -> std::io::Result<u32> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    if !text.starts_with("HTTP/1.1 200 ") {
        return Err(bad(format!(
            "not a 200 answer: {:?}",
            text.lines().next().unwrap_or("")
        )));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("X-Drover-Worker: "))
        .and_then(|v| v.split(' ').find_map(|kv| kv.strip_prefix("pid=")))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad("no pid in X-Drover-Worker".into()))
}

fn args() -> Result<(SocketAddr, u32, Duration), String> {
    let (mut addr, mut trials, mut cooldown) = (None, 10, 1000);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} {v}: want a number"))
        };
        match flag.as_str() {
            "--addr" => {
                addr = Some(
                    v.parse()
                        .map_err(|_| format!("--addr {v}: want HOST:PORT"))?,
                )
            }
            "--trials" => trials = num(&v)?.max(1) as u32,
            "--cooldown-ms" => cooldown = num(&v)?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    Ok((
        addr.ok_or("--addr is required")?,
        trials,
        Duration::from_millis(cooldown),
    ))
}
