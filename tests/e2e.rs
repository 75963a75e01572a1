//! End-to-end tests of the `drover` binary: real processes on loopback, python3 workers
//! written to a temp dir, every wait bounded by a deadline, every process killed on drop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// A worker following the contract: socket on fd 3, READY=1, WATCHDOG=1 at a quarter of
/// WATCHDOG_USEC, graceful exit on TERM after the request in hand. A line protocol:
/// `slow SECS` answers after SECS, `crash` exits 3, anything else answers at once.
const WORKER_PY: &str = r#"
import os, socket, signal, sys, time, select
args = sys.argv[1:]
path = os.environ.get("NOTIFY_SOCKET")
def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try: s.sendto(msg.encode(), path)
    finally: s.close()
def log(msg):
    os.write(2, (msg + "\n").encode())  # one write: lines of workers never interleave
wid = os.environ["DROVER_WORKER_ID"]; gen = os.environ["DROVER_GENERATION"]
nfds = int(os.environ["LISTEN_FDS"])
leaked = []
for fd in range(3 + nfds, 256):
    try:
        os.fstat(fd); leaked.append(fd)
    except OSError:
        pass
log(f"worker pid={os.getpid()} id={wid} gen={gen} listen_pid_ok={os.environ['LISTEN_PID'] == str(os.getpid())} names={os.environ['LISTEN_FDNAMES']} leaked={leaked}")
lsock = socket.socket(fileno=3)
lsock.setblocking(False)
stopping = False
def on_term(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, signal.SIG_IGN if "--ignore-term" in args else on_term)
if "--boot-delay" in args:
    time.sleep(float(args[args.index("--boot-delay") + 1]))
notify("READY=1\nSTATUS=serving")
wd = float(os.environ.get("WATCHDOG_USEC", "0")) / 1e6 / 4
last = 0
while not stopping:
    if wd and time.monotonic() - last > wd:
        notify("WATCHDOG=1"); last = time.monotonic()
    r, _, _ = select.select([lsock], [], [], 0.05)
    if not r:
        continue
    try:
        conn, _ = lsock.accept()
    except (BlockingIOError, InterruptedError):
        continue
    conn.setblocking(True)
    req = b""
    while not req.endswith(b"\n"):
        chunk = conn.recv(1024)
        if not chunk:
            break
        req += chunk
    req = req.decode().strip()
    if req.startswith("slow"):
        log(f"worker pid={os.getpid()} handling {req}")
        time.sleep(float(req.split()[1]))
    if req == "crash":
        os._exit(3)
    conn.sendall(f"pid={os.getpid()} id={wid} gen={gen}\n".encode())
    conn.close()
notify("STOPPING=1")
sys.exit(0)
"#;

// ------------------------------------------------------------------ harness

/// The real python3 binary: `python3` on PATH may be a shell shim (pyenv) that forks helpers
/// at every start, which only slows the workers down.
fn python() -> &'static str {
    static PY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 on PATH");
        let path = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(!path.is_empty(), "python3 reports no executable");
        path
    })
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "drover-e2e-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("worker.py"), WORKER_PY).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }

    fn worker(&self) -> String {
        self.path("worker.py")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        kill_survivors(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Live (non-zombie) processes whose command line mentions `dir`: the workers of a test.
fn survivors(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if String::from_utf8_lossy(&cmdline).contains(&needle) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

fn kill_survivors(dir: &Path) {
    for pid in survivors(dir) {
        // SAFETY: kill(2) with a plain pid and signal number.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Exists and is not a zombie.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat[stat.rfind(')').unwrap() + 1..]
                .split_whitespace()
                .next();
            !matches!(state, Some("Z") | Some("X") | None)
        }
        Err(_) => false,
    }
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

type Log = Arc<(Mutex<(Vec<String>, bool)>, Condvar)>;

/// Collects a child's stderr lines; the flag is set at EOF (every holder of the pipe gone).
fn collect(stream: impl Read + Send + 'static) -> Log {
    let log: Log = Arc::new((Mutex::new((Vec::new(), false)), Condvar::new()));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let (lock, cv) = &*sink;
            lock.lock().unwrap().0.push(line);
            cv.notify_all();
        }
        let (lock, cv) = &*sink;
        lock.lock().unwrap().1 = true;
        cv.notify_all();
    });
    log
}

struct Drover {
    child: Child,
    log: Log,
    dir: TempDir,
}

impl Drover {
    fn start(dir: TempDir, args: &[&str]) -> Drover {
        let mut child = Command::new(DROVER)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start drover");
        let log = collect(child.stderr.take().unwrap());
        Drover { child, log, dir }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn lines(&self) -> Vec<String> {
        self.log.0.lock().unwrap().0.clone()
    }

    fn dump(&self) -> String {
        self.lines().join("\n")
    }

    /// Waits until `find` returns something from the log so far.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        find: impl Fn(&[String]) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.log;
        let mut guard = lock.lock().unwrap();
        loop {
            if let Some(v) = find(&guard.0) {
                return v;
            }
            let now = Instant::now();
            if now >= deadline {
                let dump = guard.0.join("\n");
                drop(guard);
                panic!("timed out waiting for {what}; log:\n{dump}");
            }
            guard = cv.wait_timeout(guard, deadline - now).unwrap().0;
        }
    }

    /// Waits for `n` lines containing every one of `parts`.
    fn wait_lines(&self, parts: &[&str], n: usize, timeout: Duration) -> Vec<String> {
        self.wait_for(&format!("{n} line(s) with {parts:?}"), timeout, |lines| {
            let hits: Vec<String> = lines
                .iter()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
                .collect();
            (hits.len() >= n).then_some(hits)
        })
    }

    fn wait_line(&self, parts: &[&str], timeout: Duration) -> String {
        self.wait_lines(parts, 1, timeout).remove(0)
    }

    fn count(&self, parts: &[&str]) -> usize {
        self.lines()
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    fn port(&self) -> u16 {
        let line = self.wait_line(&["listening on 127.0.0.1:"], Duration::from_secs(10));
        let rest = &line[line.find("127.0.0.1:").unwrap() + 10..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The pid drover reported for worker `w` (e.g. "0.1").
    fn worker_pid(&self, w: &str) -> u32 {
        let line = self.wait_line(
            &["in  spawned", &format!("w={w} ")],
            Duration::from_secs(10),
        );
        field(&line, "pid=").parse().unwrap()
    }

    fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child, which is not reaped before `wait_exit`.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "drover did not exit within {timeout:?}; log:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Exit code 0, and every process of the test gone soon after.
    fn assert_clean_exit(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert_eq!(status.code(), Some(0), "log:\n{}", self.dump());
        assert_no_survivors(&self.dir.0, &self.dump());
    }
}

/// drover reports a worker gone when its group leader exits; other members of the group
/// that got the same signal (a shell's helpers, a program behind `sh -c`) may take a few
/// more milliseconds to die. Bounded wait, then a report of what is left.
fn assert_no_survivors(dir: &Path, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !survivors(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left: Vec<String> = survivors(dir)
        .into_iter()
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            format!(
                "{p}: {} | {stat}",
                String::from_utf8_lossy(&cmd).replace('\0', " ")
            )
        })
        .collect();
    assert!(left.is_empty(), "left running: {left:?}; log:\n{log}");
}

impl Drop for Drover {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // The TempDir's drop kills any worker left.
    }
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(key)
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[start..].split_whitespace().next().unwrap()
}

/// One request on the line protocol, bounded in time.
fn request(port: u16, line: &str, timeout: Duration) -> std::io::Result<String> {
    let addr = ([127, 0, 0, 1], port).into();
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(format!("{line}\n").as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    if answer.is_empty() {
        return Err(std::io::Error::other("empty answer"));
    }
    Ok(answer)
}

/// `drover <args>` as a control client: (exit code, stdout, stderr).
fn client(args: &[&str]) -> (i32, String, String) {
    let out = run_bounded(args, Duration::from_secs(15));
    (out.0.code().unwrap_or(-1), out.1, out.2)
}

/// Runs drover to completion within `timeout`; also waits for EOF on its output, which
/// proves no process it started still holds the pipes.
fn run_bounded(args: &[&str], timeout: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(DROVER)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("drover {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = |log: &Log| {
        let (lock, cv) = &**log;
        let guard = cv
            .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(5), |g| !g.1)
            .unwrap()
            .0;
        assert!(
            guard.1,
            "output of drover {args:?} still open: a child holds it"
        );
        guard.0.join("\n")
    };
    (status, text(&out), text(&err))
}

const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ tests

#[test]
fn crashed_worker_is_replaced_and_workers_get_the_systemd_environment() {
    let dir = TempDir::new("crash");
    let worker = dir.worker();
    let d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "web=127.0.0.1:0",
            "--workers",
            "2",
            "--",
            python(),
            &worker,
        ],
    );
    let port = d.port();
    let old = d.worker_pid("0.1");
    d.worker_pid("1.1");
    for line in d.wait_lines(&["worker pid="], 2, T) {
        assert!(line.contains("listen_pid_ok=True"), "{line}");
        assert!(line.contains("names=web"), "{line}");
        assert!(
            line.contains("leaked=[]"),
            "fds leaked into a worker: {line}"
        );
    }
    assert!(request(port, "hello", T).unwrap().starts_with("pid="));

    // SAFETY: kill(2) on a worker of this test.
    unsafe { libc::kill(old as i32, libc::SIGKILL) };
    d.wait_line(
        &["ev  exited", "w=0.1", "status=signal:9", "expected=no"],
        T,
    );
    let new = d.worker_pid("0.2");
    assert_ne!(new, old);
    wait_until("the crashed worker to be reaped", T, || !alive(old));
    assert!(alive(new));
    // The replacement serves on the same listener.
    wait_until("a request served by the new worker", T, || {
        request(port, "hello", T).is_ok_and(|a| a.contains(&format!("pid={new} ")))
    });

    let mut d = d;
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn stopped_worker_is_killed_after_the_heartbeat_timeout_and_replaced() {
    let dir = TempDir::new("hang");
    let worker = dir.worker();
    let d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--heartbeat-timeout",
            "1",
            "--log-level",
            "debug",
            "--",
            python(),
            &worker,
        ],
    );
    let pid = d.worker_pid("0.1");
    // Heartbeats keep it alive past the timeout: 6 of them at 0.25 s span 1.25 s.
    d.wait_lines(&["in  heartbeat", "w=0.1"], 6, T);
    assert_eq!(d.count(&["retiring"]), 0, "log:\n{}", d.dump());

    // SAFETY: kill(2) on a worker of this test.
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    d.wait_line(&["ev  retiring", "w=0.1", "reason=heartbeat-timeout"], T);
    d.wait_line(
        &[
            "do  signal",
            &format!("pid={pid} "),
            "sig=KILL",
            "reason=heartbeat-timeout",
        ],
        T,
    );
    let new = d.worker_pid("0.2");
    wait_until("the hung worker to die", T, || !alive(pid));
    assert!(alive(new));

    let mut d = d;
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn term_lets_the_in_flight_request_finish_then_exits_0() {
    let dir = TempDir::new("drain");
    let worker = dir.worker();
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--stop-timeout",
            "20",
            "--",
            python(),
            &worker,
        ],
    );
    let port = d.port();
    let pid = d.worker_pid("0.1");
    let client = std::thread::spawn(move || request(port, "slow 1.5", T));
    d.wait_line(&["handling slow 1.5"], T);
    let asked = Instant::now();
    d.signal(libc::SIGTERM);
    d.wait_line(
        &[
            "do  signal",
            &format!("pid={pid} "),
            "sig=TERM",
            "reason=stop",
        ],
        T,
    );

    let answer = client
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert!(answer.contains(&format!("pid={pid} ")), "{answer}");
    d.assert_clean_exit(T);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the drain waited for the ladder"
    );
    assert!(d.count(&["ev  exited", "w=0.1", "status=code:0", "expected=yes"]) == 1);
}

#[test]
fn second_term_stops_at_once() {
    let dir = TempDir::new("term2");
    let worker = dir.worker();
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--stop-timeout",
            "60",
            "--",
            python(),
            &worker,
            "--ignore-term",
        ],
    );
    // STATUS=serving comes after the worker set TERM to ignored: a TERM before that would
    // kill it (the default action) and there would be nothing left to escalate.
    d.wait_lines(&["status: serving"], 2, T);
    d.signal(libc::SIGTERM);
    d.wait_lines(&["do  signal", "sig=TERM", "reason=stop"], 2, T);
    let second = Instant::now();
    d.signal(libc::SIGTERM);
    d.wait_lines(&["do  signal", "sig=KILL", "reason=stop"], 2, T);
    d.assert_clean_exit(T);
    assert!(second.elapsed() < Duration::from_secs(10));
}

#[test]
fn workers_die_with_drover_after_kill_9() {
    let dir = TempDir::new("orphans");
    let worker = dir.worker();
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "3",
            "--",
            python(),
            &worker,
        ],
    );
    let pids: Vec<u32> = ["0.1", "1.1", "2.1"]
        .iter()
        .map(|w| d.worker_pid(w))
        .collect();
    d.wait_lines(&["worker pid="], 3, T);
    d.signal(libc::SIGKILL);
    d.wait_exit(T);
    wait_until("every worker to die with drover", T, || {
        pids.iter().all(|&p| !alive(p))
    });
    assert_no_survivors(&d.dir.0, &d.dump());
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let dir = TempDir::new("bad");
    let worker = dir.worker();
    let toml = dir.path("bad.toml");
    std::fs::write(&toml, "wrokers = 3\n").unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    let missing = dir.path("missing.toml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--workers", "0", "--", python(), &worker],
            "--workers",
        ),
        (
            vec!["run", "--workers", "abc", "--", python(), &worker],
            "--workers",
        ),
        (
            vec!["run", "--min", "3", "--max", "2", "--", python(), &worker],
            "--min",
        ),
        (
            vec!["run", "--stop-timeout", "0", "--", python(), &worker],
            "--stop-timeout",
        ),
        (
            vec!["run", "--listen", "nonsense", "--", python(), &worker],
            "--listen",
        ),
        (
            vec!["run", "--config", &missing, "--", python(), &worker],
            "missing.toml",
        ),
        (
            vec!["run", "--config", &toml, "--", python(), &worker],
            "wrokers",
        ),
        (vec!["run", "--listen", "127.0.0.1:0"], "missing command"),
        (
            vec!["run", "--", "drover-no-such-program"],
            "command not found",
        ),
        (
            vec!["run", "--listen", &taken_addr, "--", python(), &worker],
            "address already in use",
        ),
    ];
    for (args, needle) in cases {
        let (status, _, stderr) = run_bounded(&args, T);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in: {stderr}"
        );
    }
    assert_no_survivors(&dir.0, "");
}

#[test]
fn notifications_from_behind_sh_c_reach_the_right_worker() {
    let dir = TempDir::new("shc");
    let worker = dir.worker();
    let control = dir.path("ctl");
    // `; exit $?` keeps sh as the parent, so python3 is drover's grandchild.
    let script = format!("{} {worker}; exit $?", python());
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--readiness",
            "notify",
            "--boot-timeout",
            "8",
            "--control",
            &control,
            "--",
            "sh",
            "-c",
            &script,
        ],
    );
    let sh = d.worker_pid("0.1");
    let line = d.wait_line(&["worker pid="], T);
    let python: u32 = field(&line, "pid=").parse().unwrap();
    assert_ne!(
        python, sh,
        "sh exec'd the program; the test needs a grandchild"
    );
    d.wait_line(&["in  ready", "w=0.1"], T);
    d.wait_line(&["w=0.1", &format!("pid={python} "), "status: serving"], T);
    let (code, out, _) = client(&["status", "--control", &control]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["workers"][0]["state"], "idle", "{out}");
    // TERM reaches the whole worker group. dash dies of it at once, and drover counts the
    // worker gone with it; python, reparented, finishes on its own a moment later.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.dump());
    wait_until("python behind sh to exit", T, || !alive(python));
}

#[test]
fn control_socket_pid_file_and_malformed_requests() {
    let dir = TempDir::new("ctl");
    let worker = dir.worker();
    let control = dir.path("ctl");
    let pid_file = dir.path("drover.pid");
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--control",
            &control,
            "--pid-file",
            &pid_file,
            "--",
            python(),
            &worker,
        ],
    );
    let pid = d.worker_pid("0.1");
    wait_until("the pid file", T, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == d.pid().to_string())
    });

    let (code, out, err) = client(&["status", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["workers"][0]["pid"], pid);
    assert_eq!(status["workers"][0]["generation"], 1);
    assert_eq!(status["workers"][0]["restarts"], 0);

    // A second drover on the same pid file refuses, and leaves the first one's file alone.
    let (status2, _, stderr) = run_bounded(
        &["run", "--pid-file", &pid_file, "--", python(), &worker],
        T,
    );
    assert_eq!(status2.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("pid file") && stderr.contains(&d.pid().to_string()),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        d.pid().to_string()
    );

    // Malformed requests get a JSON error; drover carries on.
    for bad in [
        "garbage\n",
        "{\"cmd\":\"explode\"}\n",
        "{\"cmd\":\"scale\"}\n",
        "",
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&control).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(bad.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("\"ok\":false"), "{bad:?} -> {answer}");
    }

    let (code, _, _) = client(&["scale", "2", "--control", &control]);
    assert_eq!(code, 0);
    d.worker_pid("1.1");
    let (code, _, err) = client(&["scale", "0", "--control", &control]);
    assert_eq!(code, 1);
    assert!(err.contains("refused"), "{err}");
    d.signal(libc::SIGTTOU);
    d.wait_line(&["ev  retiring", "reason=scale-down"], T);

    let (code, _, _) = client(&["stop", "--control", &control]);
    assert_eq!(code, 0);
    d.assert_clean_exit(T);
    assert!(!Path::new(&pid_file).exists(), "pid file removed at exit");
    assert!(
        !Path::new(&control).exists(),
        "control socket removed at exit"
    );
}

#[test]
fn crash_loop_is_backed_off_while_drover_stays_up() {
    let dir = TempDir::new("loop");
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--workers",
            "1",
            "--",
            python(),
            "-c",
            "import sys; sys.exit(3)",
        ],
    );
    // Deaths 1, 2, 3 restart after 0 s, 1 s, 2 s.
    d.wait_line(&["ev  backoff", "slot=0", "delay=2.000s"], T);
    let spawns = d.count(&["do  spawn"]);
    assert!(spawns <= 3, "spawned {spawns} times; log:\n{}", d.dump());
    assert!(d.child.try_wait().unwrap().is_none(), "drover stays up");
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn reload_applies_the_config_file_and_survives_a_bad_one() {
    let dir = TempDir::new("reload");
    let worker = dir.worker();
    let config = dir.path("drover.toml");
    let control = dir.path("ctl");
    let write = |workers: i64, extra: &str| {
        std::fs::write(
            &config,
            format!(
                "listen = [\"127.0.0.1:0\"]\nworkers = {workers}\ncommand = [\"{}\", \"{worker}\"{extra}]\n",
                python()
            ),
        )
        .unwrap()
    };
    write(1, "");
    let mut d = Drover::start(dir, &["run", "--config", &config, "--control", &control]);
    d.worker_pid("0.1");
    write(2, "");
    d.signal(libc::SIGHUP);
    d.worker_pid("1.1");
    d.wait_lines(&["worker pid=", "gen=1"], 2, T);
    // A new command is a new worker fingerprint: a rolling restart runs it.
    write(2, ", \"--boot-delay\", \"0\"");
    d.signal(libc::SIGHUP);
    d.wait_line(&["ev  reloaded", "gen=2", "rolling-restart=yes"], T);
    d.wait_lines(&["worker pid=", "gen=2"], 2, T);
    write(0, "");
    let (code, _, err) = client(&["reload", "--control", &control]);
    assert_eq!(code, 1);
    assert!(err.contains("workers"), "{err}");
    d.signal(libc::SIGHUP);
    d.wait_line(&["reload failed"], T);
    assert!(d.child.try_wait().unwrap().is_none());
    d.signal(libc::SIGINT);
    d.assert_clean_exit(T);
}

#[test]
fn rolling_restart_under_load_fails_no_request() {
    let dir = TempDir::new("roll");
    let worker = dir.worker();
    let d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--readiness",
            "notify",
            "--",
            python(),
            &worker,
            "--boot-delay",
            "0.3",
        ],
    );
    let port = d.port();
    d.wait_lines(&["in  ready"], 2, T);
    let stop = Arc::new(AtomicBool::new(false));
    let gen2 = Arc::new(AtomicU32::new(0));
    let (flag, seen) = (stop.clone(), gen2.clone());
    let client = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::SeqCst) && Instant::now() < deadline && ok < 100_000 {
            match request(port, "hello", Duration::from_secs(5)) {
                Ok(a) => {
                    ok += 1;
                    if a.contains("gen=2") {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                }
                Err(e) => failed.push(e.to_string()),
            }
        }
        (ok, failed)
    });
    d.signal(libc::SIGUSR1);
    d.wait_lines(&["ev  exited", "expected=yes"], 2, Duration::from_secs(20));
    d.wait_lines(&["in  ready"], 4, T);
    wait_until("answers from the new generation", T, || {
        gen2.load(Ordering::SeqCst) >= 20
    });
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = client.join().unwrap();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 20, "ok={ok}");
    let mut d = d;
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn exec_failure_after_start_is_a_failed_spawn_with_backoff() {
    let dir = TempDir::new("exec");
    let script = dir.path("worker.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {} {}\n", python(), dir.worker()),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut d = Drover::start(dir, &["run", "--listen", "127.0.0.1:0", "--", &script]);
    let pid = d.worker_pid("0.1");
    d.wait_line(&["worker pid="], T);
    // The program disappears (a botched deploy): the next spawns fail in exec, in the child.
    std::fs::remove_file(&script).unwrap();
    // SAFETY: kill(2) on a worker of this test.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    d.wait_line(&["in  spawn-failed", "w=0.2", "error=exec"], T);
    d.wait_line(&["ev  backoff", "slot=0", "delay=1.000s"], T);
    assert!(d.child.try_wait().unwrap().is_none(), "drover stays up");
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn a_dynamic_pool_of_silent_workers_scales_on_the_accept_queue() {
    // The worker reports no load; connections waiting in the listener's accept queue
    // (TCP_INFO) are what tells the machine the pool is short.
    let dir = TempDir::new("backlog");
    let worker = dir.worker();
    let d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--min",
            "1",
            "--max",
            "4",
            "--",
            python(),
            &worker,
        ],
    );
    d.worker_pid("0.1");
    let port = d.port();
    // The pool starts with 2 workers (halfway between the default spares). Six slow
    // requests at once: two are served, four wait in the accept queue until the machine
    // sees the queue at its next tick and adds workers.
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || request(port, "slow 2\n", Duration::from_secs(20))))
        .collect();
    d.wait_line(&["ev  scaled", "from=2", "to=3"], T);
    let served: Vec<String> = clients
        .into_iter()
        .map(|c| c.join().unwrap().expect("every queued request is served"))
        .collect();
    let pids: std::collections::BTreeSet<&str> = served.iter().map(|r| field(r, "pid")).collect();
    assert!(
        pids.len() >= 3,
        "the added workers served queued requests: {served:?}\n{}",
        d.dump()
    );
}

#[test]
fn the_readme_python_worker_serves_beats_and_drains() {
    // os/examples/worker.py is the README's "good drover worker"; copied into the test's
    // directory so the process guard recognises it.
    let dir = TempDir::new("readme");
    let worker = dir.path("readme_worker.py");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker.py"),
        &worker,
    )
    .unwrap();
    let mut d = Drover::start(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--readiness",
            "notify",
            "--heartbeat-timeout",
            "2",
            "--log-level",
            "debug",
            "--",
            python(),
            &worker,
        ],
    );
    d.wait_lines(&["in  ready"], 2, T);
    let port = d.port();
    let answer = request(port, "GET / HTTP/1.1\r\n\r", T).expect("the worker answers");
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello\n"),
        "{answer}"
    );
    // Heartbeats at half the timeout keep both workers alive past several timeouts.
    d.wait_lines(&["in  heartbeat"], 8, T);
    assert_eq!(d.count(&["heartbeat-timeout"]), 0, "{}", d.dump());
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}
