//! The restart benchmark's probe (benches/system/restart_peers.sh): how fast a prefork
//! master — drover or a peer (unicorn, puma, gunicorn) — replaces workers killed with
//! SIGKILL, timed from outside by the same code for every server.
//!
//! ```sh
//! kill_probe five  --master PID --addr 127.0.0.1:8080 [--kills 5] [--interval-ms 1500]
//! kill_probe storm --master PID --addr 127.0.0.1:8080 --workers 4 [--period-ms 100]
//!     [--duration-ms 15000] [--sample-ms 10] [--settle-ms 20000] [--control SOCK] [--seed N]
//! (both: [--exclude PID,PID] children that are no workers, e.g. drover's group guard)
//! ```
//!
//! Workers are the master's children (`/proc/MASTER/task/*/children`, every thread's; a
//! zombie is not alive). A request is `GET /` on a new connection with `Connection:
//! close`; its answer names the worker with `pid=N` anywhere in it (drover's
//! `X-Drover-Worker` header, the peers' body).
//!
//! `five`: per kill, a random live worker gets SIGKILL. The kernel's process events (the
//! proc connector; root only, else a thread polls the children every 20 µs) date the
//! victim's exit (`exit_ms`), the master's fork of a new process (`fork_ms`: kill → the
//! new worker exists) and its exec (`exec_ms`, command workers), while the main thread sends
//! requests one after another until one is answered by a pid that was not a worker before
//! the kill (`answer_us`: kill → the new worker answers; the survivors answer the others).
//! Errors (a request caught by the dying worker) are counted and retried. The next kill
//! is `--interval-ms` after this one. Prints one line per kill, then medians and maxima.
//!
//! `storm`: one thread sends SIGKILL to a random live worker every `--period-ms` for
//! `--duration-ms`; another sends requests one after another all along and remembers which
//! pids answered; the main thread samples the children every `--sample-ms`: `alive` (live
//! children) and `serving` (live children that have answered a request). After the last
//! kill it polls every millisecond (for at most `--settle-ms`) until the pool is whole:
//! `--workers` live children that have all answered (and, with `--control`, drover's
//! status saying that many Ready workers). Prints the averages during the storm (first
//! kill → last kill + one period) and the times from the last kill to `alive` = N and to
//! whole.
//!
//! A `drover-benches` example (no dependencies beyond std), built by restart_peers.sh.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}
const SIGKILL: i32 = 9;

fn main() {
    let mut argv = std::env::args().skip(1);
    let mode = argv.next().unwrap_or_default();
    let opts = match Opts::parse(argv) {
        Ok(o) => o,
        Err(e) => fail(&format!(
            "{e}\nusage: kill_probe five|storm --master PID --addr HOST:PORT [options]"
        )),
    };
    let _ = EXCLUDE.set(opts.exclude.clone());
    match mode.as_str() {
        "five" => five(&opts),
        "storm" => storm(&opts),
        _ => fail("the first argument is five or storm"),
    }
}

struct Opts {
    master: u32,
    addr: SocketAddr,
    kills: u32,
    interval: Duration,
    workers: usize,
    period: Duration,
    duration: Duration,
    sample: Duration,
    settle: Duration,
    control: Option<String>,
    seed: u64,
    exclude: HashSet<u32>,
}

impl Opts {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Opts, String> {
        let mut o = Opts {
            master: 0,
            addr: "127.0.0.1:0".parse().unwrap(),
            kills: 5,
            interval: Duration::from_millis(1500),
            workers: 0,
            period: Duration::from_millis(100),
            duration: Duration::from_millis(15000),
            sample: Duration::from_millis(10),
            settle: Duration::from_millis(20000),
            control: None,
            seed: 0,
            exclude: HashSet::new(),
        };
        while let Some(flag) = it.next() {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            let num = || {
                v.parse::<u64>()
                    .map_err(|_| format!("{flag} {v}: want a number"))
            };
            let ms = || num().map(Duration::from_millis);
            match flag.as_str() {
                "--master" => o.master = num()? as u32,
                "--addr" => {
                    o.addr = v
                        .parse()
                        .map_err(|_| format!("--addr {v}: want HOST:PORT"))?
                }
                "--kills" => o.kills = num()?.max(1) as u32,
                "--interval-ms" => o.interval = ms()?,
                "--workers" => o.workers = num()? as usize,
                "--period-ms" => o.period = ms()?.max(Duration::from_millis(1)),
                "--duration-ms" => o.duration = ms()?,
                "--sample-ms" => o.sample = ms()?.max(Duration::from_millis(1)),
                "--settle-ms" => o.settle = ms()?,
                "--control" => o.control = Some(v),
                "--seed" => o.seed = num()?,
                "--exclude" => {
                    for p in v.split(',').filter(|p| !p.is_empty()) {
                        o.exclude.insert(
                            p.parse()
                                .map_err(|_| format!("--exclude {v}: want PID,PID,..."))?,
                        );
                    }
                }
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        if o.master == 0 {
            return Err("--master is required".into());
        }
        if o.addr.port() == 0 {
            return Err("--addr is required".into());
        }
        if o.seed == 0 {
            o.seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1;
        }
        Ok(o)
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("kill_probe: {msg}");
    std::process::exit(1);
}

/// xorshift64*: enough to pick a victim.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n.max(1)
    }
}

/// Every child of `master` (zombies included), from every one of its threads, but the
/// excluded ones (drover's group guard: a child that is no worker).
fn children(master: u32) -> Vec<u32> {
    let ex = EXCLUDE.get().expect("set in main");
    let mut all = all_children(master);
    all.retain(|p| !ex.contains(p));
    all
}

static EXCLUDE: std::sync::OnceLock<HashSet<u32>> = std::sync::OnceLock::new();

fn all_children(master: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{master}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let mut p = t.path();
        p.push("children");
        if let Ok(s) = std::fs::read_to_string(&p) {
            out.extend(
                s.split_ascii_whitespace()
                    .filter_map(|x| x.parse::<u32>().ok()),
            );
        }
    }
    out
}

/// The process exists and is not a zombie (nor dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(
                s[i + 1..].trim_start().chars().next(),
                Some('Z' | 'X' | 'x')
            ),
            None => false,
        },
        Err(_) => false,
    }
}

fn live_children(master: u32) -> Vec<u32> {
    children(master).into_iter().filter(|&p| alive(p)).collect()
}

fn master_alive(master: u32) -> bool {
    alive(master)
}

/// One `GET /` on a new connection; the pid its answer names.
fn get(addr: SocketAddr, timeout: Duration) -> std::io::Result<u32> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    if !(text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200")) {
        return Err(bad(format!(
            "not a 200 answer: {:?}",
            text.lines().next().unwrap_or("")
        )));
    }
    let i = text
        .find("pid=")
        .ok_or_else(|| bad("no pid= in the answer".into()))?;
    let digits: String = text[i + 4..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits
        .parse()
        .map_err(|_| bad("bad pid= in the answer".into()))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

fn median(v: &mut [u128]) -> u128 {
    v.sort_unstable();
    let n = v.len();
    if n == 0 {
        0
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2
    }
}

// ---------------------------------------------------------------------------- five

/// The kernel's process events (the proc connector, root only): each fork, exec and exit
/// with the kernel's CLOCK_MONOTONIC time of it, so the times do not depend on when a
/// polling thread gets a CPU on a busy machine.
mod cn {
    use std::sync::{Arc, Mutex};

    extern "C" {
        fn socket(domain: i32, ty: i32, proto: i32) -> i32;
        fn bind(fd: i32, addr: *const u8, len: u32) -> i32;
        fn send(fd: i32, buf: *const u8, len: usize, flags: i32) -> isize;
        fn recv(fd: i32, buf: *mut u8, len: usize, flags: i32) -> isize;
        fn setsockopt(fd: i32, level: i32, name: i32, val: *const u8, len: u32) -> i32;
        fn clock_gettime(clock: i32, ts: *mut [i64; 2]) -> i32;
    }

    /// CLOCK_MONOTONIC in ns, the clock of the events' time stamps.
    pub fn now_ns() -> u64 {
        let mut ts = [0i64; 2];
        // SAFETY: clock_gettime writes one struct timespec (two longs on x86_64 Linux).
        unsafe { clock_gettime(1, &mut ts) };
        ts[0] as u64 * 1_000_000_000 + ts[1] as u64
    }

    #[derive(Clone, Copy, Debug)]
    pub enum Ev {
        /// (time, parent tgid, child pid, child tgid)
        Fork(u64, u32, u32, u32),
        /// (time, pid)
        Exec(u64, u32),
        /// (time, tgid): one per thread
        Exit(u64, u32),
    }

    /// Starts a thread that records every event; None if the connector is not available.
    pub fn listen() -> Option<Arc<Mutex<Vec<Ev>>>> {
        const AF_NETLINK: i32 = 16;
        const NETLINK_CONNECTOR: i32 = 11;
        // SAFETY: plain socket calls on a descriptor this function owns, with buffers
        // of the sizes passed.
        unsafe {
            let fd = socket(
                AF_NETLINK,
                2 /* SOCK_DGRAM */ | 0o2000000, /* CLOEXEC */
                NETLINK_CONNECTOR,
            );
            if fd < 0 {
                return None;
            }
            let big: i32 = 8 << 20;
            setsockopt(
                fd,
                1,
                33, /* SO_RCVBUFFORCE */
                (&big as *const i32).cast(),
                4,
            );
            // sockaddr_nl: family, pad, pid (0: the kernel picks), groups (CN_IDX_PROC).
            let mut addr = [0u8; 12];
            addr[0..2].copy_from_slice(&(AF_NETLINK as u16).to_ne_bytes());
            addr[8..12].copy_from_slice(&1u32.to_ne_bytes());
            if bind(fd, addr.as_ptr(), 12) != 0 {
                return None;
            }
            // nlmsghdr (16) + cn_msg (20) + PROC_CN_MCAST_LISTEN (4)
            let mut m = Vec::with_capacity(40);
            m.extend_from_slice(&40u32.to_ne_bytes());
            m.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&0u32.to_ne_bytes());
            m.extend_from_slice(&std::process::id().to_ne_bytes());
            for v in [1u32, 1, 0, 0] {
                m.extend_from_slice(&v.to_ne_bytes()); // cb_id {CN_IDX_PROC, CN_VAL_PROC}, seq, ack
            }
            m.extend_from_slice(&4u16.to_ne_bytes());
            m.extend_from_slice(&0u16.to_ne_bytes());
            m.extend_from_slice(&1u32.to_ne_bytes());
            if send(fd, m.as_ptr(), m.len(), 0) != m.len() as isize {
                return None;
            }
            let events: Arc<Mutex<Vec<Ev>>> = Arc::default();
            let out = events.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = recv(fd, buf.as_mut_ptr(), buf.len(), 0);
                    if n < 0 {
                        if std::io::Error::last_os_error().raw_os_error() == Some(105) {
                            continue; // ENOBUFS: events were lost; go on
                        }
                        return;
                    }
                    let mut off = 0usize;
                    while off + 16 <= n as usize {
                        let len =
                            u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                        if len < 16 || off + len > n as usize {
                            break;
                        }
                        let ev = &buf[off + 36..off + len];
                        let u32_at =
                            |i: usize| u32::from_ne_bytes(ev[i..i + 4].try_into().unwrap());
                        if ev.len() >= 32 {
                            let what = u32_at(0);
                            let ts = u64::from_ne_bytes(ev[8..16].try_into().unwrap());
                            let e = match what {
                                1 => Some(Ev::Fork(ts, u32_at(20), u32_at(24), u32_at(28))),
                                2 => Some(Ev::Exec(ts, u32_at(16))),
                                0x8000_0000 => Some(Ev::Exit(ts, u32_at(20))),
                                _ => None,
                            };
                            if let Some(e) = e {
                                out.lock().unwrap().push(e);
                            }
                        }
                        off += (len + 3) & !3;
                    }
                }
            });
            Some(events)
        }
    }
}

fn five(o: &Opts) {
    let mut rng = Rng(o.seed);
    let events = cn::listen();
    println!(
        "clock: {}",
        if events.is_some() {
            "the kernel's process events (proc connector)"
        } else {
            "polling /proc every 20 us (no proc connector: not root?)"
        }
    );
    let (mut forks, mut answers, mut exits) = (Vec::new(), Vec::new(), Vec::new());
    let (mut missed_fork, mut missed_answer) = (0, 0);
    for k in 1..=o.kills {
        let next = Instant::now() + o.interval;
        if !master_alive(o.master) {
            fail(&format!("kill {k}: the master {} is gone", o.master));
        }
        // The pool as it is: wait (up to 5 s) for --workers live children when given.
        let wait_until = Instant::now() + Duration::from_secs(5);
        let mut before = live_children(o.master);
        while o.workers > 0 && before.len() < o.workers && Instant::now() < wait_until {
            std::thread::sleep(Duration::from_millis(5));
            before = live_children(o.master);
        }
        if before.is_empty() {
            fail(&format!(
                "kill {k}: the master {} has no live child",
                o.master
            ));
        }
        let all_before: HashSet<u32> = children(o.master)
            .into_iter()
            .chain(before.iter().copied())
            .collect();
        let victim = before[rng.below(before.len())];

        let done = Arc::new(AtomicBool::new(false));
        let kill_wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let kill_ns = cn::now_ns();
        let start = Instant::now();
        // SAFETY: kill(2) with a pid that is a child of the master we measure.
        if unsafe { kill(victim as i32, SIGKILL) } != 0 {
            fail(&format!(
                "kill {k}: kill -9 {victim}: {}",
                std::io::Error::last_os_error()
            ));
        }
        // Without the proc connector: a thread polls the children.
        let poller = events.is_none().then(|| {
            let (master, seen, done) = (o.master, all_before.clone(), done.clone());
            std::thread::spawn(move || -> Option<(Duration, u32)> {
                while start.elapsed() < Duration::from_secs(10) {
                    if let Some(&p) = children(master).iter().find(|p| !seen.contains(p)) {
                        return Some((start.elapsed(), p));
                    }
                    if done.load(Ordering::Relaxed) {
                        return None;
                    }
                    std::thread::sleep(Duration::from_micros(20));
                }
                None
            })
        });
        let (mut requests, mut errors, mut last_err) = (0u32, 0u32, String::new());
        let mut answered = None;
        while start.elapsed() < Duration::from_secs(10) {
            requests += 1;
            match get(o.addr, Duration::from_secs(2)) {
                Ok(pid) if !all_before.contains(&pid) => {
                    answered = Some((start.elapsed(), pid));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    errors += 1;
                    last_err = e.to_string();
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
        }
        done.store(true, Ordering::Relaxed);
        // kill -> the victim's last thread exited; kill -> the master forked a new process;
        // kill -> that process exec'd (drover run's workers).
        let (mut exited, mut forked, mut exec) = (None, None, None);
        if let Some(ev) = &events {
            // Let the events arrive (the listening thread may wait for a CPU): until the
            // master's fork is recorded, 500 ms at most.
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until
                && !ev.lock().unwrap().iter().any(
                    |e| matches!(*e, cn::Ev::Fork(ts, parent, pid, tgid) if parent == o.master && pid == tgid && ts >= kill_ns),
                )
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(2));
            let ev = ev.lock().unwrap();
            let after = |ts: u64| Duration::from_nanos(ts.saturating_sub(kill_ns));
            for e in ev.iter() {
                match *e {
                    cn::Ev::Exit(ts, tgid) if tgid == victim && ts >= kill_ns => {
                        exited = Some(exited.map_or(after(ts), |d: Duration| d.max(after(ts))));
                    }
                    cn::Ev::Fork(ts, parent, pid, tgid)
                        if parent == o.master
                            && pid == tgid
                            && ts >= kill_ns
                            && forked.is_none() =>
                    {
                        forked = Some((after(ts), pid));
                    }
                    _ => {}
                }
            }
            if let Some((_, child)) = forked {
                exec = ev.iter().find_map(|e| match *e {
                    cn::Ev::Exec(ts, pid) if pid == child && ts >= kill_ns => Some(after(ts)),
                    _ => None,
                });
            }
        } else if let Some(p) = poller {
            forked = p.join().unwrap_or(None);
        }
        if let Some(ev) = &events {
            ev.lock().unwrap().clear();
        }
        let survivors: Vec<String> = before
            .iter()
            .filter(|&&p| p != victim)
            .map(|p| p.to_string())
            .collect();
        let x = match exited {
            Some(d) => {
                exits.push(d.as_micros());
                format!("exit_ms={} ", ms(d))
            }
            None => String::new(),
        };
        let f = match forked {
            Some((d, p)) => {
                forks.push(d.as_micros());
                format!("fork_ms={} new_pid={p}", ms(d))
            }
            None => {
                missed_fork += 1;
                "fork_ms=none".into()
            }
        };
        let e = exec
            .map(|d| format!(" exec_ms={}", ms(d)))
            .unwrap_or_default();
        let a = match answered {
            Some((d, p)) => {
                answers.push(d.as_micros());
                format!("answer_ms={} answered_by={p}", ms(d))
            }
            None => {
                missed_answer += 1;
                "answer_ms=none".into()
            }
        };
        let err = if errors > 0 {
            format!(" (last error: {last_err})")
        } else {
            String::new()
        };
        println!(
            "kill {k}: victim={victim} survivors=[{}] {x}{f}{e} {a} requests={requests} errors={errors} at={}.{:06}{err}",
            survivors.join(","),
            kill_wall.as_secs(),
            kill_wall.subsec_micros()
        );
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    let (fmax, amax) = (
        forks.iter().max().copied().unwrap_or(0),
        answers.iter().max().copied().unwrap_or(0),
    );
    let (fmed, amed, xmed) = (median(&mut forks), median(&mut answers), median(&mut exits));
    println!(
        "fork_median_us={fmed} fork_max_us={fmax} answer_median_us={amed} answer_max_us={amax} exit_median_us={xmed} missed_fork={missed_fork} missed_answer={missed_answer}"
    );
}

// ---------------------------------------------------------------------------- storm

/// drover's status through its control socket: the number of Ready workers.
fn drover_ready(path: &str) -> Option<usize> {
    let mut s = UnixStream::connect(path).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"{\"cmd\":\"status\"}\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let i = out.find("\"ready\":")?;
    let digits: String = out[i + 8..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn storm(o: &Opts) {
    if o.workers == 0 {
        fail("storm needs --workers");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let (req_ok, req_err) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let requester = {
        let (stop, seen, ok, err, addr) = (
            stop.clone(),
            seen.clone(),
            req_ok.clone(),
            req_err.clone(),
            o.addr,
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match get(addr, Duration::from_secs(1)) {
                    Ok(pid) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        seen.lock().unwrap().insert(pid);
                    }
                    Err(_) => {
                        err.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(Duration::from_micros(500));
                    }
                }
            }
        })
    };
    let serving = |live: &[u32]| {
        let s = seen.lock().unwrap();
        live.iter().filter(|p| s.contains(p)).count()
    };
    // Before the storm: the whole pool has answered (5 s at most).
    let t = Instant::now();
    loop {
        let live = live_children(o.master);
        if live.len() == o.workers && serving(&live) == o.workers {
            break;
        }
        if t.elapsed() > Duration::from_secs(5) {
            println!(
                "note: before the storm only {} of {} live workers had answered",
                serving(&live),
                live.len()
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    let kills = Arc::new(AtomicU64::new(0));
    let skipped = Arc::new(AtomicU64::new(0));
    let n_kills = (o.duration.as_nanos() / o.period.as_nanos()).max(1) as u32;
    let start = Instant::now();
    let last_kill: Arc<Mutex<Option<Instant>>> = Arc::default();
    // Pids sent SIGKILL: dead from then on, whether or not the kernel is done with them.
    let killed: Arc<Mutex<HashSet<u32>>> = Arc::default();
    let live_now = {
        let (master, killed) = (o.master, killed.clone());
        move || -> Vec<u32> {
            let k = killed.lock().unwrap();
            live_children(master)
                .into_iter()
                .filter(|p| !k.contains(p))
                .collect()
        }
    };
    let killer = {
        let (kills, skipped, last_kill, period) =
            (kills.clone(), skipped.clone(), last_kill.clone(), o.period);
        let (live_now, killed) = (live_now.clone(), killed.clone());
        let mut rng = Rng(o.seed);
        std::thread::spawn(move || {
            for i in 0..n_kills {
                let at = start + period * i;
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let live = live_now();
                if live.is_empty() {
                    skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let victim = live[rng.below(live.len())];
                killed.lock().unwrap().insert(victim);
                // SAFETY: kill(2) with a pid that is a live child of the master we measure.
                if unsafe { kill(victim as i32, SIGKILL) } == 0 {
                    kills.fetch_add(1, Ordering::Relaxed);
                    *last_kill.lock().unwrap() = Some(Instant::now());
                } else {
                    skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let storm_end = start + o.period * n_kills;
    // During the storm: a sample every --sample-ms. Once the last kill is sent (the killer
    // is done), also poll every millisecond for the pool to be whole again, timed from
    // that last kill, for at most --settle-ms.
    let (mut samples, mut sum_alive, mut sum_serving, mut min_alive) =
        (0u64, 0u64, 0u64, usize::MAX);
    let mut hist = vec![0u64; o.workers + 2];
    let mut next_sample = start;
    let (mut t_alive, mut t_whole, mut t_ready) = (None, None, None);
    let mut end = None;
    let last_kill_due = start + o.period * n_kills.saturating_sub(1);
    loop {
        // The last kill first, then the children: a pool read before the last kill must
        // not count as whole after it.
        if end.is_none() && killer.is_finished() {
            end = Some(last_kill.lock().unwrap().unwrap_or(storm_end));
        }
        let now = Instant::now();
        let live = live_now();
        if now >= next_sample && now < storm_end {
            let sv = serving(&live);
            samples += 1;
            sum_alive += live.len() as u64;
            sum_serving += sv as u64;
            min_alive = min_alive.min(live.len());
            hist[live.len().min(o.workers + 1)] += 1;
            next_sample += o.sample;
        }
        if let Some(end) = end {
            let since = end.elapsed();
            if live.len() == o.workers {
                t_alive.get_or_insert(since);
            } else {
                t_alive = None; // not settled yet after all
            }
            let whole = live.len() == o.workers && serving(&live) == o.workers;
            let ready_ok = match (&o.control, whole) {
                (Some(c), true) => {
                    let r = drover_ready(c) == Some(o.workers);
                    if r {
                        t_ready.get_or_insert(end.elapsed());
                    }
                    r
                }
                (Some(_), false) => false,
                (None, _) => true,
            };
            if whole && ready_ok && t_whole.is_none() {
                t_whole = Some(end.elapsed());
            }
            let over = now >= storm_end;
            if over && (t_whole.is_some() || since > o.settle || !master_alive(o.master)) {
                break;
            }
        }
        let wait = if end.is_some() || Instant::now() + o.sample >= last_kill_due {
            Duration::from_millis(1)
        } else {
            next_sample
                .saturating_duration_since(Instant::now())
                .min(o.sample)
        };
        std::thread::sleep(wait);
    }
    let _ = killer.join();
    stop.store(true, Ordering::Relaxed);
    let _ = requester.join();
    let f = |d: Option<Duration>| d.map(ms).unwrap_or_else(|| "none".into());
    let hist: Vec<String> = hist.iter().map(|n| n.to_string()).collect();
    println!(
        "kills={} skipped={} samples={samples} avg_alive={:.2} avg_serving={:.2} min_alive={} alive_histogram=[{}] \
         to_alive_ms={} to_ready_ms={} to_whole_ms={} probe_ok={} probe_errors={} master_alive={}",
        kills.load(Ordering::Relaxed),
        skipped.load(Ordering::Relaxed),
        sum_alive as f64 / samples.max(1) as f64,
        sum_serving as f64 / samples.max(1) as f64,
        if min_alive == usize::MAX { 0 } else { min_alive },
        hist.join(","),
        f(t_alive),
        f(t_ready),
        f(t_whole),
        req_ok.load(Ordering::Relaxed),
        req_err.load(Ordering::Relaxed),
        master_alive(o.master)
    );
}
