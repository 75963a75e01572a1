//! The harness shared by the end-to-end tests: temporary directories that take the test's
//! processes down with them, a child's stderr captured line by line, bounded waits, and a
//! bounded load client.
//!
//! Each test file declares this module `pub` and uses a part of it: a public module of a
//! test crate is not linted for dead code, a private one would warn for every item the file
//! leaves unused.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const DROVER: &str = env!("CARGO_BIN_EXE_drover");

/// The default bound of a wait.
pub const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ programs

/// The real python3 binary: `python3` on PATH may be a shell shim (pyenv) that forks helpers
/// at every start, which only slows the workers down.
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
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

/// The `hello` example (the embedded runtime). `cargo test` builds examples with the test
/// profile, but `cargo test --test embedded` alone does not: see [`example_bin`].
pub fn hello_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| example_bin("hello", &[]))
}

/// `target/<dir>/examples/<name>`, built with `features` from the current source: in the
/// debug directory this runs `cargo build --profile test --example NAME`, a no-op when it is
/// fresh, so that the tests always run the current source. Call it once per example and
/// process (cache the path): builds run one at a time on cargo's lock anyway.
pub fn example_bin(name: &str, features: &[&str]) -> PathBuf {
    // target/<dir>/deps/<test>-<hash> -> target/<dir>/examples/<name>
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let bin = dir.join("examples").join(name);
    if dir.file_name().is_some_and(|d| d == "debug") {
        let features = features.join(",");
        let mut args = vec![
            "build",
            "--profile",
            "test",
            "-p",
            "drover-os",
            "--example",
            name,
        ];
        if !features.is_empty() {
            args.extend(["--features", features.as_str()]);
        }
        let out = Command::new(env!("CARGO"))
            .args(&args)
            // Inside the workspace, wherever the test binary was started from.
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .expect("run cargo to build an example");
        assert!(
            out.status.success(),
            "cargo build --example {name} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(bin.exists(), "{} not built", bin.display());
    bin
}

// ------------------------------------------------------------------ processes

/// A directory of one test. Every process whose command line or environment names it
/// belongs to the test (a program or config file in it; `DROVER_TEST_DIR`, which a
/// [`Server`] sets and its workers inherit: drover's own command line shows its process
/// title, as do its guard's and its embedded workers') and is killed when it is dropped,
/// pass or panic.
pub struct TempDir {
    root: PathBuf,
}

impl TempDir {
    /// `drover-<test binary>-<pid>-<n>-<name>` under the system temp dir.
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "drover-{}-{}-{}-{name}",
            env!("CARGO_CRATE_NAME"),
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&root).unwrap();
        TempDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, name: &str) -> String {
        self.root.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        kill_survivors(&self.root);
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Live (non-zombie) processes whose command line or environment mentions `dir`, or that
/// hold a file in it open (a daemon started with `run_bounded`, whose title replaced its
/// command line, holds its pid file and log there).
pub fn survivors(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let names = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(&needle);
        let holds = || {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .take(4096)
                .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir)))
        };
        // Never the test itself, which may hold a file of the directory open.
        let other = pid != std::process::id();
        if other && (names(&cmdline) || names(&environ) || holds()) && alive(pid) {
            out.push(pid);
        }
    }
    out
}

pub fn kill_survivors(dir: &Path) {
    for pid in survivors(dir) {
        // SAFETY: kill(2) with a plain pid and signal number.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
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

/// After a `kill -9` of drover its workers die a few milliseconds later (PR_SET_PDEATHSIG,
/// the group guard's SIGKILL), and the guard itself right after. Bounded wait, then a
/// report of what is left.
pub fn assert_no_survivors(dir: &Path, log: &str) {
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

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a plain pid and signal number; the caller names a process of the
    // test that is not reaped yet.
    assert_eq!(
        unsafe { libc::kill(pid as i32, sig) },
        0,
        "kill {pid} {sig}"
    );
}

/// The value after `key` in a log line or an answer, up to a space, quote or comma. The key
/// must start a word: `pid=` is not the one in a log span's `drover{pid=..}`.
pub fn field<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .match_indices(key)
        .map(|(i, _)| i)
        .find(|&i| {
            line[..i]
                .chars()
                .next_back()
                .is_none_or(char::is_whitespace)
        })
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len();
    line[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .next()
        .unwrap()
}

/// Runs a program to completion within `timeout`: (exit status, stdout, stderr). Also waits
/// for EOF on its output, which proves no process it started still holds the pipes.
pub fn run_bounded(
    program: impl AsRef<OsStr>,
    args: &[&str],
    timeout: Duration,
) -> (ExitStatus, String, String) {
    let program = program.as_ref().to_owned();
    let mut child = Command::new(&program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program:?}: {e}"));
    let out = Log::capture(child.stdout.take().unwrap());
    let err = Log::capture(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program:?} {args:?} did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    for log in [&out, &err] {
        assert!(
            log.wait_closed(Duration::from_secs(5)),
            "output of {program:?} {args:?} still open: a child holds it"
        );
    }
    (status, out.dump(), err.dump())
}

// ------------------------------------------------------------------ the python worker

/// A worker following the contract: socket on fd 3, READY=1, WATCHDOG=1 at a quarter of
/// WATCHDOG_USEC, graceful exit on TERM after the request in hand (`--stop-delay SECS`:
/// SECS later). A line protocol: `slow SECS` answers after SECS, `crash` exits 3, anything
/// else answers at once.
pub const WORKER_PY: &str = r#"
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
if "--stop-delay" in args:
    time.sleep(float(args[args.index("--stop-delay") + 1]))
sys.exit(0)
"#;

/// A test directory holding the worker; python's command line names it, which is what
/// makes the workers processes of the test.
pub fn test_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    std::fs::write(dir.path("worker.py"), WORKER_PY).unwrap();
    dir
}

/// One request on the line protocol, bounded in time.
pub fn request(port: u16, line: &str, timeout: Duration) -> std::io::Result<String> {
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

// ------------------------------------------------------------------ log capture

/// A child's output, collected line by line by a thread of its own.
#[derive(Clone)]
pub struct Log(Arc<(Mutex<Lines>, Condvar)>);

struct Lines {
    lines: Vec<String>,
    /// EOF: every holder of the pipe is gone.
    closed: bool,
}

impl Log {
    pub fn capture(stream: impl Read + Send + 'static) -> Log {
        let log = Log(Arc::new((
            Mutex::new(Lines {
                lines: Vec::new(),
                closed: false,
            }),
            Condvar::new(),
        )));
        let sink = log.0.clone();
        std::thread::spawn(move || {
            let (lock, cv) = &*sink;
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                lock.lock().unwrap().lines.push(line);
                cv.notify_all();
            }
            lock.lock().unwrap().closed = true;
            cv.notify_all();
        });
        log
    }

    pub fn dump(&self) -> String {
        self.0 .0.lock().unwrap().lines.join("\n")
    }

    /// Lines so far containing every one of `parts`.
    pub fn count(&self, parts: &[&str]) -> usize {
        let state = self.0 .0.lock().unwrap();
        state.lines.iter().filter(|l| matches(l, parts)).count()
    }

    /// The first line containing every one of `parts`; panics with the log after `timeout`.
    pub fn wait_for(&self, parts: &[&str], timeout: Duration) -> String {
        self.wait_for_n(parts, 1, timeout).remove(0)
    }

    /// The first `n` lines containing every one of `parts`.
    pub fn wait_for_n(&self, parts: &[&str], n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.0;
        let mut state = lock.lock().unwrap();
        loop {
            let hits: Vec<String> = state
                .lines
                .iter()
                .filter(|l| matches(l, parts))
                .take(n)
                .cloned()
                .collect();
            if hits.len() >= n {
                return hits;
            }
            let now = Instant::now();
            if now >= deadline {
                let dump = state.lines.join("\n");
                drop(state);
                panic!("timed out waiting for {n} line(s) with {parts:?}; log:\n{dump}");
            }
            state = cv.wait_timeout(state, deadline - now).unwrap().0;
        }
    }

    /// Whether EOF came within `timeout`.
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let state = cv
            .wait_timeout_while(lock.lock().unwrap(), timeout, |s| !s.closed)
            .unwrap()
            .0;
        state.closed
    }
}

fn matches(line: &str, parts: &[&str]) -> bool {
    parts.iter().all(|p| line.contains(p))
}

/// `drover <args>` as a control client: (exit code, stdout, stderr).
pub fn client(args: &[&str]) -> (i32, String, String) {
    let out = run_bounded(DROVER, args, Duration::from_secs(15));
    (out.0.code().unwrap_or(-1), out.1, out.2)
}

/// A file's text; empty if it does not exist (yet).
pub fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lines of `path` that contain every one of `parts`.
pub fn lines_with(path: &str, parts: &[&str]) -> Vec<String> {
    read(path)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

// ------------------------------------------------------------------ a supervisor under test

/// A supervisor (`drover run`, or a program on the embedded runtime) with its stderr
/// captured, run in the test's directory. Dropping it kills it, then the directory kills
/// whatever workers are left.
pub struct Server {
    pub child: Child,
    pub log: Log,
    pub dir: TempDir,
}

impl Server {
    pub fn start(dir: TempDir, program: impl AsRef<OsStr>, args: &[&str]) -> Server {
        Server::start_with_env(dir, program, args, &[])
    }

    /// With extra environment variables (e.g. a NOTIFY_SOCKET standing in for systemd).
    pub fn start_with_env(
        dir: TempDir,
        program: impl AsRef<OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let program = program.as_ref();
        let spawn = || {
            Command::new(program)
                .args(args)
                .env("DROVER_TEST_DIR", dir.root())
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
        };
        // A binary the test just copied can be "busy" for a moment: another test thread may
        // have forked while the copy was open for writing, and its child holds that
        // descriptor until it execs.
        let deadline = Instant::now() + T;
        let mut child = loop {
            match spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                other => break other.unwrap_or_else(|e| panic!("start {program:?}: {e}")),
            }
        };
        let log = Log::capture(child.stderr.take().unwrap());
        Server { child, log, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Safe until `wait_exit` has reaped the child: its pid cannot be reused before.
    pub fn signal(&self, sig: i32) {
        signal(self.pid(), sig);
    }

    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// The port of the first listener, from the `listening on` line.
    pub fn port(&self) -> u16 {
        let line = self.log.wait_for(&["listening on 127.0.0.1:"], T);
        field(&line, "127.0.0.1:").parse().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        ([127, 0, 0, 1], self.port()).into()
    }

    /// The pid the supervisor reported for worker `w` (e.g. "0.1") at its spawn.
    pub fn worker_pid(&self, w: &str) -> u32 {
        let line = self.log.wait_for(&["in  spawned", &format!("w={w} ")], T);
        field(&line, "pid=").parse().unwrap()
    }

    /// The pid of worker `w`, once it is Ready.
    pub fn ready_worker(&self, w: &str) -> u32 {
        let pid = self.worker_pid(w);
        self.log.wait_for(&["in  ready", &format!("w={w}")], T);
        pid
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the supervisor did not exit within {timeout:?}; log:\n{}",
                self.log.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Exit code 0, and every process of the test gone soon after.
    pub fn assert_clean_exit(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert_eq!(status.code(), Some(0), "log:\n{}", self.log.dump());
        assert_no_survivors(self.dir.root(), &self.log.dump());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------ load

/// What a request of the load client is and what counts as its success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// `GET /` with `Connection: close`; success is a `HTTP/1.1 200` status line and the
    /// whole body (`Content-Length` bytes, or up to EOF when there is none).
    Http,
    /// `hi\n`; success is a non-empty line ending in `\n` (the python worker's
    /// `pid=.. id=.. gen=..`).
    Line,
}

/// A request stuck longer than this is a failure: a supervisor that keeps every connection
/// answers within milliseconds, and a test must not hang on one that does not.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Distinct errors kept for the report; the rest are only counted.
const ERRORS_MAX: usize = 10;

/// Client threads sending one request per fresh connection, until stopped or out of either
/// bound, counting successes and failures.
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

struct Shared {
    started: Instant,
    issued: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    notes: Mutex<Notes>,
}

#[derive(Default)]
struct Notes {
    errors: Vec<String>,
    seen: BTreeSet<String>,
    answered_by: BTreeSet<String>,
}

#[derive(Debug)]
pub struct LoadResult {
    pub ok: u64,
    pub failed: u64,
    /// The first distinct failures, each as `+<seconds since start>s <what>`.
    pub errors: Vec<String>,
    /// Who answered: for `Line` the `pid=N` token, for `Http` the `X-Drover-Worker` value.
    pub answered_by: BTreeSet<String>,
}

impl Load {
    /// Both bounds are mandatory so that a test that loses track of its load (a panic before
    /// `stop`) leaves no client running for long.
    pub fn start(
        addr: SocketAddr,
        proto: Proto,
        threads: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Load {
        assert!(threads > 0);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared {
            started: Instant::now(),
            issued: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            notes: Mutex::new(Notes::default()),
        });
        let deadline = shared.started + max_time;
        let threads = (0..threads)
            .map(|_| {
                let (stop, shared) = (stop.clone(), shared.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::SeqCst)
                        && Instant::now() < deadline
                        && shared.issued.fetch_add(1, Ordering::SeqCst) < max_requests
                    {
                        match load_request(addr, proto) {
                            Ok(by) => {
                                if let Some(by) = by {
                                    shared.notes.lock().unwrap().answered_by.insert(by);
                                }
                                shared.ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(what) => {
                                let at = shared.started.elapsed().as_secs_f64();
                                let mut notes = shared.notes.lock().unwrap();
                                if notes.errors.len() < ERRORS_MAX
                                    && notes.seen.insert(what.clone())
                                {
                                    notes.errors.push(format!("+{at:.3}s {what}"));
                                }
                                drop(notes);
                                shared.failed.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            shared,
            threads,
        }
    }

    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::SeqCst)
    }

    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::SeqCst)
    }

    /// Every thread has ended: a bound reached (or a thread panicked).
    pub fn done(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Waits for the requests in hand (each bounded by the request timeout).
    pub fn stop(self) -> LoadResult {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a load thread panicked");
        }
        let notes = std::mem::take(&mut *self.shared.notes.lock().unwrap());
        LoadResult {
            ok: self.shared.ok.load(Ordering::SeqCst),
            failed: self.shared.failed.load(Ordering::SeqCst),
            errors: notes.errors,
            answered_by: notes.answered_by,
        }
    }
}

/// One request on a fresh connection: who answered, if the answer says, or what went wrong.
fn load_request(addr: SocketAddr, proto: Proto) -> Result<Option<String>, String> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut s =
        TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| {
            s.write_all(match proto {
                Proto::Http => b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                Proto::Line => b"hi\n",
            })
        })
        .map_err(|e| format!("send: {e}"))?;
    // Read timeouts bound each read; the deadline bounds a server that trickles.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("no complete answer within {REQUEST_TIMEOUT:?}"));
        }
        s.set_read_timeout(Some(left))
            .map_err(|e| format!("read: {e}"))?;
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(format!("no complete answer within {REQUEST_TIMEOUT:?}"))
            }
            Err(e) => return Err(format!("read after {} byte(s): {e}", answer.len())),
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    let text = String::from_utf8_lossy(&answer);
    let bad = || {
        format!(
            "bad answer: {:?}",
            text.chars().take(80).collect::<String>()
        )
    };
    match proto {
        Proto::Line => {
            let line = text.strip_suffix('\n').ok_or_else(bad)?;
            if line.trim().is_empty() || line.contains('\n') {
                return Err(bad());
            }
            Ok(line
                .split_whitespace()
                .find(|t| t.starts_with("pid="))
                .map(str::to_string))
        }
        Proto::Http => {
            let end = answer
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .ok_or_else(bad)?;
            let head = String::from_utf8_lossy(&answer[..end]);
            if !head.starts_with("HTTP/1.1 200") {
                return Err(bad());
            }
            let header = |name: &str| {
                head.lines().skip(1).find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.trim()
                        .eq_ignore_ascii_case(name)
                        .then(|| v.trim().to_string())
                })
            };
            if let Some(len) = header("content-length") {
                let len: usize = len.parse().map_err(|_| bad())?;
                let body = answer.len() - (end + 4);
                if body != len {
                    return Err(format!("body of {body} byte(s), expected {len}"));
                }
            }
            Ok(header("x-drover-worker"))
        }
    }
}

/// `n` consecutive free loopback ports; a bound check, then released for drover to bind
/// (another program could take one meanwhile: the tests then fail loudly, never hang).
/// Each call of this process starts from a candidate of its own, so that two tests
/// running at once do not pick the same ports.
pub fn free_ports(n: u16) -> u16 {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    // Bounded: 200 candidate bases, 16 ports apart.
    for attempt in 0..200u32 {
        let candidate = std::process::id() * 7 + call * 16 + attempt * 613;
        let base = 20_000 + (candidate % 40_000) as u16;
        let held: Vec<std::net::TcpListener> = (0..n)
            .map_while(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).ok())
            .collect();
        if held.len() == usize::from(n) {
            return base;
        }
    }
    panic!("no {n} consecutive free ports on 127.0.0.1");
}
