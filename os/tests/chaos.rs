//! Chaos on the real binary (issue 13 part 4): a kill storm under load, ten thousand worker
//! deaths, hostile control clients, the open-file limit, a stopped or frozen supervisor, a
//! 256-worker pool, and socket activation through systemd's own tool. Every test runs
//! `drover` (or the embedded `hello`) on loopback, waits on conditions with deadlines,
//! asserts on counts and states (never on speed), and checks that nothing of it survives.

pub mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ harness

/// One chaos test at a time: several load this 2-core machine on purpose (a fork storm,
/// hostile clients), and the heartbeat tests must not have their workers starved by
/// another test's storm. Taken first in each test, so it is released last.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// One control request on `ctl`, each step bounded by `timeout`: the answer, or why none
/// came.
fn control(ctl: &str, request: &str, timeout: Duration) -> Result<Value, String> {
    let mut s = UnixStream::connect(ctl).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| format!("receive: {e}"))?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer ({e}): {answer:.200}"))
}

const STATUS: &str = r#"{"cmd":"status"}"#;

/// `status`, which must answer within the default bound.
fn status(ctl: &str) -> Value {
    control(ctl, STATUS, T).unwrap_or_else(|e| panic!("status: {e}"))
}

/// Waits until `cond` holds of the status. A drover still starting, whose control socket
/// does not exist yet, counts as "not yet".
fn wait_status(ctl: &str, what: &str, timeout: Duration, mut cond: impl FnMut(&Value) -> bool) {
    wait_until(what, timeout, || {
        control(ctl, STATUS, T).is_ok_and(|s| cond(&s))
    });
}

fn workers(s: &Value) -> &[Value] {
    s["workers"].as_array().map_or(&[][..], Vec::as_slice)
}

/// The pids of the workers status shows Ready (`idle` or `busy`).
fn ready_pids(s: &Value) -> Vec<u32> {
    workers(s)
        .iter()
        .filter(|w| w["state"] == "idle" || w["state"] == "busy")
        .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
        .collect()
}

/// The pool is whole: `n` workers, all Ready, and no other live one.
fn whole(s: &Value, n: u64) -> bool {
    s["ready"] == n && s["live"] == n && ready_pids(s).len() as u64 == n
}

/// The sum of the slots' restarts: the worker deaths the machine has seen.
fn restarts(s: &Value) -> u64 {
    workers(s)
        .iter()
        .filter_map(|w| w["restarts"].as_u64())
        .sum()
}

/// `drover run --listen 127.0.0.1:0 --control CTL FLAGS -- python3 worker.py WORKER_ARGS`
/// in `dir`: (server, control path).
fn python_pool(dir: TempDir, flags: &[&str], worker_args: &[&str]) -> (Server, String) {
    let (worker, ctl) = (dir.path("worker.py"), dir.path("ctl"));
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--control", &ctl];
    args.extend_from_slice(flags);
    args.extend(["--", python(), &worker]);
    args.extend_from_slice(worker_args);
    let server = Server::start(dir, DROVER, &args);
    (server, ctl)
}

/// The end of the log, each line cut short: what a failure shows (a test's log may hold
/// 60,000 lines, or a 600 KB command line).
fn tail(log: &Log) -> String {
    let text = log.dump();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(200);
    lines[from..]
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// TERM, then exit code 0 and no process of the test left.
fn stop_cleanly(d: &mut Server) {
    d.signal(libc::SIGTERM);
    let deadline = Instant::now() + T;
    let code = loop {
        if let Some(status) = d.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            Instant::now() < deadline,
            "drover did not exit within {T:?}; log:\n{}",
            tail(&d.log)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "log:\n{}", tail(&d.log));
    assert_no_survivors(d.dir.root(), &tail(&d.log));
}

/// SIGKILL to a worker pid status reported, after checking /proc still shows a process of
/// the test under it (drover has not reaped it, so the pid is not reused).
fn kill_worker(d: &Server, pid: u32) {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let root = d.dir.root().to_string_lossy().into_owned();
    assert!(
        String::from_utf8_lossy(&cmdline).contains(&root),
        "pid {pid} is no worker of this test"
    );
    signal(pid, libc::SIGKILL);
}

/// A small pseudo-random stream (xorshift64*), seeded from the clock: which worker a storm
/// kills, or what garbage a client sends, need only vary.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(nanos | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() >> 33) as usize % n
    }
}

// ------------------------------------------------------------------ /proc

/// The descriptors of `pid`: number -> what it points to.
fn fds(pid: u32) -> BTreeMap<i32, String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_string_lossy().parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The inode of a `socket:[N]` link.
fn socket_inode(target: &str) -> Option<&str> {
    target.strip_prefix("socket:[")?.strip_suffix(']')
}

/// `VmRSS` of `pid`, in kB.
fn rss_kb(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The fields of /proc/PID/stat after the command name: [0] the state, [1] the parent,
/// [11] utime and [12] stime in clock ticks.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Children of `parent` in state Z: exited, not reaped yet.
fn zombies(parent: u32) -> usize {
    let parent = parent.to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(stat_fields)
        .filter(|f| f[1] == parent && f[0] == "Z")
        .count()
}

/// The CPU time `pid` has used, user and system.
fn cpu_time(pid: u32) -> Duration {
    let f = stat_fields(pid).expect("the process exists");
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    // SAFETY: sysconf with a valid name has no other effect.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// The inode of the TCP socket listening on 127.0.0.1:`port` (/proc/net/tcp prints the
/// address in the host's byte order).
fn tcp_listener_inode(port: u16) -> Option<String> {
    let local = [
        format!("0100007F:{port:04X}"),
        format!("7F000001:{port:04X}"),
    ];
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && local.iter().any(|a| a == f[1]) && f[3] == "0A").then(|| f[9].to_string())
    })
}

/// The bound path of each unix socket, by inode (/proc/net/unix).
fn unix_socket_paths() -> BTreeMap<String, String> {
    let table = std::fs::read_to_string("/proc/net/unix").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(6)?.to_string(), f.get(7)?.to_string()))
        })
        .collect()
}

// ------------------------------------------------------------------ 1. kill storm

/// A 4-worker pool under client load loses a random Ready worker every 100 ms for 4 s
/// (SIGKILL, as the OOM killer or an operator would): every kill is a death drover takes
/// for a kill from outside and refills at once (no backoff, no crash loop, though 40 deaths
/// in 4 s are far beyond the default intensity of 10 a minute), the pool is whole soon
/// after, and the clients lose at most the request each killed worker had in hand.
#[test]
fn a_kill_storm_under_load_is_refilled_kill_for_kill() {
    let _serial = one_at_a_time();
    const WORKERS: u64 = 4;
    const STORM: Duration = Duration::from_secs(4);
    let (mut d, ctl) = python_pool(
        test_dir("storm"),
        &["--workers", "4", "--readiness", "notify"],
        &[],
    );
    wait_status(&ctl, "4 Ready workers", T, |s| whole(s, WORKERS));
    let load = Load::start(d.addr(), Proto::Line, 2, 1_000_000, Duration::from_secs(60));
    wait_until("the load under way", T, || load.ok() >= 50);

    let mut rng = Rng::new();
    let mut killed = BTreeSet::new();
    let storm_end = Instant::now() + STORM;
    // Bounded by the storm's length (each turn sleeps 100 ms).
    while Instant::now() < storm_end {
        // Ready workers only: a kill before READY=1 is a failed boot, which counts.
        let s = status(&ctl);
        let candidates: Vec<u32> = ready_pids(&s)
            .into_iter()
            .filter(|p| !killed.contains(p))
            .collect();
        if !candidates.is_empty() {
            let pid = candidates[rng.below(candidates.len())];
            kill_worker(&d, pid);
            killed.insert(pid);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let kills = killed.len();
    assert!(
        kills >= 20,
        "only {kills} kills in {STORM:?}: the storm did not run"
    );

    // Each kill: one restart scheduled at once, for a kill.
    let refills = d.log.wait_for_n(
        &["ev  backoff", "cause=killed"],
        kills,
        Duration::from_secs(20),
    );
    for line in &refills {
        assert!(
            line.contains("delay=0.000s"),
            "a kill was backed off: {line}"
        );
    }
    wait_status(
        &ctl,
        "the pool whole after the storm",
        Duration::from_secs(20),
        |s| whole(s, WORKERS) && s["crash_looping"] == false,
    );
    wait_until("every killed worker reaped", T, || {
        killed.iter().all(|&p| !alive(p))
    });
    assert_eq!(
        d.log.count(&["ev  backoff"]),
        kills,
        "a death other than the kills; log:\n{}",
        tail(&d.log)
    );
    assert_eq!(d.log.count(&["crash-looping"]), 0, "{}", tail(&d.log));
    let s = status(&ctl);
    assert!(ready_pids(&s).iter().all(|p| !killed.contains(p)), "{s}");
    // Every refill became Ready: the first 4 workers and one per kill.
    assert_eq!(
        d.log.count(&["in  ready"]),
        WORKERS as usize + kills,
        "{}",
        tail(&d.log)
    );

    // The whole pool serves again; the clients lost at most one request per kill.
    let ok = load.ok();
    wait_until("answers after the storm", T, || load.ok() >= ok + 50);
    let r = load.stop();
    eprintln!(
        "{kills} kills; {} requests answered, {} failed",
        r.ok, r.failed
    );
    assert!(
        r.failed <= kills as u64,
        "{} failed requests for {kills} kills: {r:?}",
        r.failed
    );
    stop_cleanly(&mut d);
}

// ------------------------------------------------------------------ 2. ten thousand deaths

/// drover's steady descriptors, its RSS and its zombie children, over 10 samples 10 ms
/// apart: the descriptors held (same number, same file) in every sample, since a spawn in
/// flight holds a pipe for a moment and drover spawns all the time here, but a leaked
/// descriptor stays; the largest RSS; the fewest and most zombies.
fn footprint(pid: u32) -> (BTreeMap<i32, String>, u64, usize, usize) {
    let mut steady = fds(pid);
    let (mut rss_max, mut z_min, mut z_max) = (0, usize::MAX, 0);
    for _ in 0..10 {
        let now = fds(pid);
        steady.retain(|fd, target| now.get(fd) == Some(target));
        rss_max = rss_max.max(rss_kb(pid));
        let z = zombies(pid);
        (z_min, z_max) = (z_min.min(z), z_max.max(z));
        std::thread::sleep(Duration::from_millis(10));
    }
    (steady, rss_max, z_min, z_max)
}

/// 10,000 worker deaths leave drover as they found it: no descriptor, memory or zombie that
/// grows with the deaths. The worker is `true` (through a symlink in the test's directory,
/// so that the survivor guard knows it): Ready as soon as it exists (`--readiness spawn`)
/// and gone at once with code 0, a retirement, refilled at once; the quick-restart cap is
/// raised so that fork and exec alone pace the refills (6 to 21 s here for all 10,000).
#[test]
fn ten_thousand_deaths_leave_fds_memory_and_zombies_flat() {
    let _serial = one_at_a_time();
    const WORKERS: usize = 4;
    const DEATHS: u64 = 10_000;
    const WARM_UP: u64 = 500;
    /// The quick-refill cap: above the ~1,300 deaths a second seen here, so fork and exec
    /// pace the deaths. Not higher: the machine keeps the instants of the last
    /// `quick_restart_rate` refills (8 bytes each), so a cap of a million made RSS grow by
    /// 8 bytes a death up to 8 MB; with 5,000 it stayed flat over 70,000 deaths.
    const QUICK_RATE: u32 = 5_000;
    /// RSS may grow this much from the warm-up to the end: the refill window above fills
    /// during the first 5,000 deaths (a deque of up to 8,192 instants, 64 KiB), the
    /// allocator settles (+10 to +170 kB seen). A leak of 55 bytes a death crosses it.
    const RSS_SLACK_KB: u64 = 512;
    let dir = TempDir::new("deaths");
    let worker = dir.path("true");
    std::os::unix::fs::symlink("/bin/true", &worker).unwrap();
    let config = dir.path("drover.toml");
    std::fs::write(
        &config,
        format!("[restart]\nquick_restart_rate = {QUICK_RATE}\n"),
    )
    .unwrap();
    let ctl = dir.path("ctl");
    let mut d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--workers",
            "4",
            "--config",
            &config,
            "--control",
            &ctl,
            "--",
            &worker,
        ],
    );
    let pid = d.pid();
    let started = Instant::now();
    wait_status(&ctl, "the warm-up deaths", Duration::from_secs(30), |s| {
        restarts(s) >= WARM_UP
    });
    let (fds0, rss0, z0, z0_max) = footprint(pid);
    wait_status(&ctl, "10,000 deaths", Duration::from_secs(50), |s| {
        restarts(s) >= DEATHS
    });
    let (fds1, rss1, z1, z1_max) = footprint(pid);
    eprintln!(
        "{DEATHS} deaths in {:?}: steady fds {} -> {}, RSS {rss0} -> {rss1} kB, zombies {z0}..{z0_max} -> {z1}..{z1_max}",
        started.elapsed(),
        fds0.len(),
        fds1.len()
    );
    assert!(
        fds1.len() <= fds0.len(),
        "descriptors grew from {fds0:?} to {fds1:?}"
    );
    assert!(
        rss1 <= rss0 + RSS_SLACK_KB,
        "RSS grew from {rss0} kB to {rss1} kB"
    );
    // Each slot's dead worker is reaped before its refill is spawned: never more zombies
    // than workers, and a leak would pile up thousands.
    assert!(
        z0_max <= WORKERS && z1_max <= WORKERS,
        "zombies: {z0}..{z0_max} at the start, {z1}..{z1_max} at the end"
    );
    stop_cleanly(&mut d);
    // Every death was a retirement refilled at once.
    let retired = d
        .log
        .count(&["ev  backoff", "delay=0.000s", "cause=retired"]);
    assert!(retired as u64 >= DEATHS, "{retired} retirements");
    assert_eq!(d.log.count(&["ev  backoff"]), retired, "{}", tail(&d.log));
    assert_eq!(d.log.count(&["crash-looping"]), 0);
}

// ------------------------------------------------------------------ 3. hostile clients

/// A control client thread that does `turn` until told to stop (bounded by `MAX` as well),
/// counting its turns.
fn hostile(
    stop: &Arc<AtomicBool>,
    turns: &Arc<AtomicU64>,
    mut turn: impl FnMut(&AtomicBool) + Send + 'static,
) -> JoinHandle<()> {
    const MAX: Duration = Duration::from_secs(60);
    let (stop, turns) = (stop.clone(), turns.clone());
    std::thread::spawn(move || {
        let deadline = Instant::now() + MAX;
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            turn(&stop);
            turns.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Sleeps `d` in slices, returning early once `stop` is set.
fn hold(stop: &AtomicBool, d: Duration) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Clients that send garbage, clients that connect and never finish a request, and clients
/// that ask for status (pipelined, 64 times) and never read the answer, all at once, while
/// workers are killed: status still answers every time within 2 s, and each killed worker
/// is refilled within 5 s. The status answer is padded past the socket's send buffer (the
/// worker command, which status echoes, carries a long argument): an answer that fits in
/// the buffer is taken by the kernel whether the client reads or not, one that does not
/// waits on the client. drover must neither wait with it nor give the waiting clients the
/// slots operators need (at most 13 hostile connections at once, under the 16 drover
/// serves). Before control answers went out non-blocking, drover wrote each blocking for
/// up to 0.5 s, and the first status here already took over 2 s.
#[test]
fn hostile_control_clients_neither_stall_drover_nor_delay_refills() {
    let _serial = one_at_a_time();
    const WORKERS: u64 = 3;
    const HALF_OPEN: usize = 4;
    const NON_READERS: usize = 8;
    const KILLS: usize = 4;
    let status_bound = Duration::from_secs(2);
    let refill_bound = Duration::from_secs(5);
    let dir = test_dir("hostile");
    let sndbuf: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_default")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(212_992);
    // Twice the buffer and more, in arguments of 64 KiB (an argument may hold 128 KiB);
    // capped at 1 MiB to stay far under ARG_MAX. The python worker ignores them.
    let chunk = "x".repeat(64 * 1024);
    let chunks = (2 * sndbuf + 64 * 1024).min(1 << 20).div_ceil(chunk.len());
    let mut pad: Vec<&str> = Vec::new();
    for _ in 0..chunks {
        pad.extend(["--pad", &chunk]);
    }
    let (mut d, ctl) = python_pool(dir, &["--workers", "3", "--readiness", "notify"], &pad);
    wait_status(&ctl, "3 Ready workers", T, |s| whole(s, WORKERS));
    let answer = status(&ctl).to_string().len();
    assert!(
        answer > 2 * sndbuf || answer >= 1 << 20,
        "a status answer of {answer} bytes fits a socket buffer of {sndbuf}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (garbage, half_open, non_readers) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut threads = Vec::new();
    // Garbage: random bytes of random length, the end of writing, the answer read.
    let path = ctl.clone();
    let mut rng = Rng::new();
    threads.push(hostile(&stop, &garbage, move |_| {
        let Ok(mut s) = UnixStream::connect(&path) else {
            return std::thread::sleep(Duration::from_millis(10));
        };
        let len = 1 + rng.below(8192);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(&bytes);
        let _ = s.shutdown(Shutdown::Write);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.read_to_end(&mut Vec::new());
    }));
    // Half-open: half of a request (or nothing at all), then silence until drover drops
    // the connection (its deadline, or a newer client taking the slot).
    for i in 0..HALF_OPEN {
        let path = ctl.clone();
        threads.push(hostile(&stop, &half_open, move |stop| {
            let Ok(mut s) = UnixStream::connect(&path) else {
                return std::thread::sleep(Duration::from_millis(10));
            };
            if i % 2 == 0 {
                let _ = s.write_all(br#"{"cmd":"sta"#);
            }
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let until = Instant::now() + Duration::from_secs(8);
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                match s.read(&mut [0u8; 512]) {
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    _ => break,
                }
            }
        }));
    }
    // Never reading: status asked 64 times on one connection, then 2 s of silence.
    for _ in 0..NON_READERS {
        let path = ctl.clone();
        threads.push(hostile(&stop, &non_readers, move |stop| {
            let Ok(mut s) = UnixStream::connect(&path) else {
                return std::thread::sleep(Duration::from_millis(10));
            };
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = s.write_all(format!("{STATUS}\n").repeat(64).as_bytes());
            hold(stop, Duration::from_secs(2));
        }));
    }

    // Status answers in time, every time, while the hostile clients run.
    let mut slowest = Duration::ZERO;
    let mut asked = 0;
    let mut ask = || -> Value {
        let t = Instant::now();
        let answer = control(&ctl, STATUS, status_bound);
        let took = t.elapsed();
        slowest = slowest.max(took);
        asked += 1;
        match answer {
            Ok(s) if s["ok"] == true && took < status_bound => s,
            other => panic!(
                "status {asked} under hostile clients: {:.200} after {took:?}",
                format!("{other:?}")
            ),
        }
    };
    wait_until("every kind of hostile client at work", T, || {
        ask();
        garbage.load(Ordering::SeqCst) > 0
            && half_open.load(Ordering::SeqCst) > 0
            && non_readers.load(Ordering::SeqCst) >= NON_READERS as u64
    });
    let mut rng = Rng::new();
    for _ in 0..KILLS {
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            ask();
            std::thread::sleep(Duration::from_millis(100));
        }
        let ready = ready_pids(&ask());
        let pid = ready[rng.below(ready.len())];
        kill_worker(&d, pid);
        let killed = Instant::now();
        loop {
            let s = ask();
            if whole(&s, WORKERS) && !ready_pids(&s).contains(&pid) {
                break;
            }
            assert!(
                killed.elapsed() < refill_bound,
                "worker {pid} not refilled within {refill_bound:?}: {:.300}",
                s.to_string()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().expect("a hostile client panicked");
    }
    eprintln!(
        "{asked} status requests, the slowest {slowest:?}; hostile turns: {} garbage, {} half-open, {} non-reading",
        garbage.load(Ordering::SeqCst),
        half_open.load(Ordering::SeqCst),
        non_readers.load(Ordering::SeqCst)
    );
    assert_eq!(
        d.log
            .count(&["ev  backoff", "delay=0.000s", "cause=killed"]),
        KILLS,
        "{}",
        tail(&d.log)
    );
    assert!(whole(&status(&ctl), WORKERS));
    stop_cleanly(&mut d);
}

// ------------------------------------------------------------------ 4. open-file limit

/// Sets `pid`'s RLIMIT_NOFILE, soft and hard.
fn set_open_file_limit(pid: u32, n: u64) {
    let limit = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit(2) on a process of this test, a valid new limit, no old-limit pointer.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// drover at its open-file limit: control clients take every descriptor it may open (its
/// limit is lowered to leave it 4, with prlimit(2) on the running drover, which puts it at
/// the edge whatever this build needs at start), and a worker dies meanwhile (its refill
/// fails for want of a descriptor, and is backed off). drover must not spin on a listener
/// it cannot accept from: under half a CPU over 2 s (before the listener rested after
/// EMFILE, drover took all of one here). Once the clients close it answers status and
/// refills killed workers.
#[test]
fn at_its_open_file_limit_drover_does_not_spin_and_recovers() {
    let _serial = one_at_a_time();
    const WORKERS: u64 = 2;
    let (mut d, ctl) = python_pool(
        test_dir("nofile"),
        &["--workers", "2", "--readiness", "notify"],
        &[],
    );
    wait_status(&ctl, "2 Ready workers", T, |s| whole(s, WORKERS));
    let pid = d.pid();
    let victim = ready_pids(&status(&ctl))[0];
    // The limit is on descriptor numbers: the lowest that leaves 4 free below it (drover
    // may hold a high number it inherited, which stays open above any limit).
    let held = fds(pid);
    let below = |limit: i32, held: &BTreeMap<i32, String>| held.range(..limit).count() as i32;
    let limit = (0..).find(|&l| l - below(l, &held) == 4).unwrap();
    set_open_file_limit(pid, limit as u64);
    let full = || below(limit, &fds(pid)) == limit;

    // Connections that send nothing, more than drover has descriptors left: the kernel
    // queues them on the listener (backlog 128).
    let clients: Vec<UnixStream> = (0..32)
        .map(|_| UnixStream::connect(&ctl).unwrap())
        .collect();
    wait_until(
        "drover to use every descriptor number below its limit",
        T,
        full,
    );
    // A worker dies while drover cannot open anything.
    kill_worker(&d, victim);
    d.log
        .wait_for(&["in  exited", &format!("pid={victim} ")], T);
    let (cpu0, wall0) = (cpu_time(pid), Instant::now());
    // The measurement window: how much CPU drover takes while stuck at its limit.
    std::thread::sleep(Duration::from_secs(2));
    let (cpu, wall) = (cpu_time(pid) - cpu0, wall0.elapsed());
    assert!(
        full(),
        "drover left its limit during the measurement: {:?}",
        fds(pid)
    );
    eprintln!("at the open-file limit ({limit}): {cpu:?} of CPU in {wall:?}");
    assert!(
        cpu < wall / 2,
        "drover used {cpu:?} of CPU in {wall:?} at its open-file limit; log:\n{}",
        tail(&d.log)
    );

    drop(clients);
    wait_status(
        &ctl,
        "status, and the killed worker refilled",
        Duration::from_secs(30),
        |s| whole(s, WORKERS) && !ready_pids(s).contains(&victim),
    );
    // And the next kill is refilled as any other.
    let next = ready_pids(&status(&ctl))[0];
    kill_worker(&d, next);
    wait_status(&ctl, "the next kill refilled", T, |s| {
        whole(s, WORKERS) && !ready_pids(s).contains(&next)
    });
    stop_cleanly(&mut d);
}

// ------------------------------------------------------------------ 5. stopped, frozen

/// A 3-worker pool with a 2 s heartbeat timeout (the workers beat at a quarter of it,
/// every 0.5 s), Ready and beating: (server, control path, worker pids).
fn beating_pool(name: &str) -> (Server, String, BTreeSet<u32>) {
    let (d, ctl) = python_pool(
        test_dir(name),
        &[
            "--workers",
            "3",
            "--readiness",
            "notify",
            "--heartbeat-timeout",
            "2",
            "--log-level",
            "debug",
        ],
        &[],
    );
    wait_status(&ctl, "3 Ready workers", T, |s| whole(s, 3));
    d.log.wait_for_n(&["in  heartbeat"], 6, T);
    let pids = ready_pids(&status(&ctl)).into_iter().collect();
    (d, ctl, pids)
}

/// After a pause of drover (and maybe its workers): drover says it came back, then runs on
/// for more than a heartbeat timeout (18 more heartbeats: 3 s of the 3 workers' beats, on
/// top of the 10 the socket queued meanwhile), and no worker was killed: the same three
/// pids are the pool and answer requests.
fn assert_no_worker_paid_for_the_pause(d: &mut Server, ctl: &str, pids: &BTreeSet<u32>) {
    let beats = d.log.count(&["in  heartbeat"]);
    d.log.wait_for(&["ev  came-back"], T);
    d.log.wait_for_n(&["in  heartbeat"], beats + 10 + 18, T);
    assert_eq!(
        d.log.count(&["heartbeat-timeout"]) + d.log.count(&["ev  retiring"]),
        0,
        "a worker was retired for the pause; log:\n{}",
        tail(&d.log)
    );
    let s = status(ctl);
    let now: BTreeSet<u32> = ready_pids(&s).into_iter().collect();
    assert!(whole(&s, 3) && now == *pids, "before {pids:?}, now {s}");
    assert_eq!(restarts(&s), 0, "{s}");
    // Each request goes to whichever worker accepts first: 300 of them reach all three.
    let port = d.port();
    let mut answered = BTreeSet::new();
    for _ in 0..300 {
        let answer = request(port, "hi", T).expect("a request after the pause");
        answered.insert(field(&answer, "pid=").parse::<u32>().unwrap());
        if answered == *pids {
            break;
        }
    }
    assert_eq!(answered, *pids, "who answered after the pause");
}

/// drover stopped (SIGSTOP) for 6 s, three heartbeat timeouts, while its workers beat on
/// into the notify socket: back, it takes its own absence for no worker's fault.
#[test]
fn a_stopped_supervisor_kills_no_worker_for_its_own_absence() {
    let _serial = one_at_a_time();
    let (mut d, ctl, pids) = beating_pool("sigstop");
    d.signal(libc::SIGSTOP);
    // The pause itself is the fault under test.
    std::thread::sleep(Duration::from_secs(6));
    d.signal(libc::SIGCONT);
    assert_no_worker_paid_for_the_pause(&mut d, &ctl, &pids);
    stop_cleanly(&mut d);
}

/// drover and all its workers stopped together for 6 s (what a cgroup freeze or a VM pause
/// does; SIGSTOP of every process stands in for the freezer, which needs privileges), then
/// continued, drover first so it sees its workers silent for a moment: no worker killed.
#[test]
fn a_frozen_pool_kills_no_worker() {
    let _serial = one_at_a_time();
    let (mut d, ctl, pids) = beating_pool("freeze");
    for &p in &pids {
        signal(p, libc::SIGSTOP);
    }
    d.signal(libc::SIGSTOP);
    // The freeze itself is the fault under test.
    std::thread::sleep(Duration::from_secs(6));
    d.signal(libc::SIGCONT);
    for &p in &pids {
        signal(p, libc::SIGCONT);
    }
    assert_no_worker_paid_for_the_pause(&mut d, &ctl, &pids);
    stop_cleanly(&mut d);
}

// ------------------------------------------------------------------ 6. 256 workers

/// Whether the pool is `n` Ready workers of `generation` and nothing else.
fn settled(s: &Value, n: u64, generation: u64) -> bool {
    let live: Vec<&Value> = workers(s).iter().filter(|w| !w["pid"].is_null()).collect();
    s["generation"] == generation
        && whole(s, n)
        && live.len() as u64 == n
        && live.iter().all(|w| w["generation"] == generation)
}

/// A 256-worker pool starts (all Ready), rolls (every worker replaced by one of the next
/// generation) and stops cleanly. The embedded `hello` is the lightest worker: a fork, Ready
/// in milliseconds (the whole cycle takes about a second here; 256 python workers took 6 s
/// to start and 27 s to roll on this 2-core machine).
#[test]
fn a_256_worker_pool_starts_rolls_and_stops_cleanly() {
    let _serial = one_at_a_time();
    const WORKERS: u64 = 256;
    let dir = TempDir::new("pool256");
    let ctl = dir.path("ctl");
    let mut d = Server::start(
        dir,
        hello_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--control",
            &ctl,
            "--workers",
            "256",
            "--threads",
            "1",
        ],
    );
    wait_status(&ctl, "256 Ready workers", Duration::from_secs(40), |s| {
        settled(s, WORKERS, 1)
    });
    let first: BTreeSet<u32> = ready_pids(&status(&ctl)).into_iter().collect();
    assert_eq!(first.len(), 256);
    let port = d.port();
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let answer = control(&ctl, r#"{"cmd":"restart"}"#, T).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    wait_status(
        &ctl,
        "256 Ready workers of generation 2",
        Duration::from_secs(40),
        |s| settled(s, WORKERS, 2),
    );
    let second: BTreeSet<u32> = ready_pids(&status(&ctl)).into_iter().collect();
    assert!(first.is_disjoint(&second), "a worker survived the roll");
    wait_until("the first generation gone", T, || {
        first.iter().all(|&p| !alive(p))
    });
    assert_eq!(
        d.log.count(&["ev  exited", "expected=yes"]),
        256,
        "{}",
        tail(&d.log)
    );
    assert_eq!(d.log.count(&["expected=no"]), 0, "{}", tail(&d.log));

    let answer = control(&ctl, r#"{"cmd":"stop"}"#, T).unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    let code = d.wait_exit(Duration::from_secs(30)).code();
    assert_eq!(code, Some(0), "{}", tail(&d.log));
    assert_no_survivors(d.dir.root(), &tail(&d.log));
    assert_eq!(d.log.count(&["ev  exited", "expected=yes"]), 512);
}

// ------------------------------------------------------------------ 7. socket activation

/// Two ports nothing listens on now (bound, then released: good enough on loopback).
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// One request on a fresh connection to `port`, answered in full: the python worker's line
/// protocol, or HTTP for `hello`.
fn ask_port(port: u16, http: bool) -> String {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(T)).unwrap();
    c.write_all(match http {
        true => &b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        false => b"hi\n",
    })
    .unwrap();
    let mut answer = String::new();
    c.read_to_string(&mut answer).unwrap();
    answer
}

/// Under `systemd-socket-activate -l 127.0.0.1:P1 -l 127.0.0.1:P2`, `PROGRAM HEAD --listen
/// 127.0.0.1:P1 --listen 127.0.0.1:P2 --control CTL --workers 2 REST` (HEAD: `run` for
/// drover, nothing for hello; REST: drover's `-- COMMAND`): drover adopts both sockets,
/// matched by address. Each worker holds both listeners, and nothing of the supervisor's
/// but the listeners and stdio (an embedded worker also its death pipe): not the notify
/// socket, which drover opens after it has taken fds 3 and 4 over from systemd, at those
/// very numbers (before that was fixed an embedded worker kept them: the notify socket and
/// the runtime directory's lock file).
fn activated_workers_hold_the_listeners_only(
    dir: TempDir,
    program: &str,
    head: &[&str],
    rest: &[&str],
    http: bool,
) {
    let tool = "systemd-socket-activate";
    assert!(
        std::process::Command::new(tool)
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "{tool} is missing: install the Debian package systemd (.ci/run does)"
    );
    let ctl = dir.path("ctl");
    let (p1, p2) = free_ports();
    let (l1, l2) = (format!("127.0.0.1:{p1}"), format!("127.0.0.1:{p2}"));
    let mut argv = vec!["-l", &l1, "-l", &l2, "--", program];
    argv.extend_from_slice(head);
    argv.extend([
        "--listen",
        &l1,
        "--listen",
        &l2,
        "--control",
        &ctl,
        "--workers",
        "2",
    ]);
    argv.extend_from_slice(rest);
    let mut d = Server::start(dir, tool, &argv);
    // The tool starts its command at the first connection: this request is the trigger,
    // queued on the first socket until a worker takes it.
    d.log.wait_for(&[&format!("Listening on {l2}")], T);
    let first = std::thread::spawn(move || ask_port(p1, http));
    wait_status(&ctl, "2 Ready workers", Duration::from_secs(20), |s| {
        whole(s, 2)
    });
    let answer = first.join().unwrap();
    assert!(
        !answer.is_empty(),
        "the triggering request was not answered"
    );
    // The python worker serves its first socket only; hello serves both.
    if http {
        assert!(!ask_port(p2, http).is_empty(), "the second listener");
    }

    let supervisor = d.pid();
    let inode1 = tcp_listener_inode(p1).expect("the first listener in /proc/net/tcp");
    let inode2 = tcp_listener_inode(p2).expect("the second listener in /proc/net/tcp");
    let listeners = [inode1.as_str(), inode2.as_str()];
    let theirs = fds(supervisor);
    // drover's notify socket: the unix socket it holds bound in its runtime directory.
    let paths = unix_socket_paths();
    let runtime = format!("/drover-{supervisor}-");
    let notify: Vec<&str> = theirs
        .values()
        .filter_map(|t| socket_inode(t))
        .filter(|i| {
            paths
                .get(*i)
                .is_some_and(|p| p.contains(&runtime) && p.ends_with("/notify"))
        })
        .collect();
    assert_eq!(notify.len(), 1, "drover's notify socket among {theirs:?}");
    let stdio: Vec<&String> = (0..3).filter_map(|fd| theirs.get(&fd)).collect();
    let pids = ready_pids(&status(&ctl));
    assert_eq!(pids.len(), 2);
    for pid in pids {
        let mine = fds(pid);
        let sockets: Vec<&str> = mine.values().filter_map(|t| socket_inode(t)).collect();
        for l in listeners {
            assert!(
                sockets.contains(&l),
                "worker {pid} lacks listener {l}: {mine:?}"
            );
        }
        assert!(
            !sockets.contains(&notify[0]),
            "worker {pid} holds drover's notify socket: {mine:?}"
        );
        if !http {
            // A command worker has stdio and the listeners, nothing else: them at fds 3
            // and 4, in --listen order.
            assert_eq!(
                mine.keys().copied().collect::<Vec<_>>(),
                [0, 1, 2, 3, 4],
                "{mine:?}"
            );
            assert_eq!(
                mine.get(&3),
                Some(&format!("socket:[{inode1}]")),
                "{mine:?}"
            );
            assert_eq!(
                mine.get(&4),
                Some(&format!("socket:[{inode2}]")),
                "{mine:?}"
            );
        }
        // Anything else the two hold alike (a socket, a pipe, a file such as the runtime
        // directory's lock) is the supervisor's, but for an embedded worker's death pipe.
        let shared: Vec<&String> = mine
            .values()
            .filter(|t| theirs.values().any(|o| o == *t))
            .filter(|t| !stdio.contains(t) && t.as_str() != "/dev/null")
            .filter(|t| !socket_inode(t).is_some_and(|i| listeners.contains(&i)))
            .collect();
        assert!(
            shared.len() <= usize::from(http) && shared.iter().all(|t| t.starts_with("pipe:")),
            "worker {pid} shares {shared:?} with the supervisor {theirs:?}"
        );
    }
    stop_cleanly(&mut d);
}

#[test]
fn socket_activated_command_workers_hold_the_two_listeners_only() {
    let _serial = one_at_a_time();
    let dir = test_dir("activated-run");
    let worker = dir.path("worker.py");
    activated_workers_hold_the_listeners_only(
        dir,
        DROVER,
        &["run", "--readiness", "notify"],
        &["--", python(), &worker],
        false,
    );
}

#[test]
fn socket_activated_embedded_workers_hold_the_two_listeners_only() {
    let _serial = one_at_a_time();
    let hello = hello_bin().to_string_lossy().into_owned();
    activated_workers_hold_the_listeners_only(
        TempDir::new("activated-hello"),
        &hello,
        &[],
        &[],
        true,
    );
}
