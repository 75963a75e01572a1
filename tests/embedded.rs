//! End-to-end tests of the embedded runtime through the `hello` example: real processes on
//! loopback, every wait bounded by a deadline, every process killed on drop.
//!
//! The example binary is built by `cargo test` (examples are built with the test profile);
//! the first test also runs `cargo build --profile test --example hello`, a no-op when it is
//! fresh, so that `cargo test --test embedded` alone tests the current source too.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

const DROVER: &str = env!("CARGO_BIN_EXE_drover");
const T: Duration = Duration::from_secs(10);

// ------------------------------------------------------------------ the example binary

fn hello_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        // target/<dir>/deps/embedded-<hash> -> target/<dir>/examples/hello
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap();
        let bin = dir.join("examples").join("hello");
        if dir.file_name().is_some_and(|d| d == "debug") {
            let out = Command::new(env!("CARGO"))
                .args([
                    "build",
                    "--profile",
                    "test",
                    "-p",
                    "drover-os",
                    "--example",
                    "hello",
                ])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .stdin(Stdio::null())
                .output()
                .expect("run cargo to build the hello example");
            assert!(
                out.status.success(),
                "cargo build --example hello failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(bin.exists(), "{} not built", bin.display());
        bin
    })
}

// ------------------------------------------------------------------ harness

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "drover-emb-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        kill_survivors(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Live (non-zombie) processes whose command line mentions `dir`: the supervisor and its
/// forked workers (every test passes a `--control` path inside `dir`).
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

fn assert_no_survivors(dir: &Path, log: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !survivors(dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = survivors(dir);
    assert!(left.is_empty(), "left running: {left:?}; log:\n{log}");
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a process of this test.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

type Log = Arc<(Mutex<Vec<String>>, Condvar)>;

/// The `hello` server (a supervisor and its forked workers) with its stderr collected.
struct Hello {
    child: Child,
    log: Log,
    dir: TempDir,
    control: String,
}

impl Hello {
    /// `{dir}` in an argument stands for the test's temporary directory.
    fn start(name: &str, args: &[&str]) -> Hello {
        let dir = TempDir::new(name);
        let control = dir.path("ctl");
        let dir_text = dir.0.to_string_lossy().into_owned();
        let mut child = Command::new(hello_bin())
            .args(["--listen", "127.0.0.1:0", "--control", &control])
            .args(args.iter().map(|a| a.replace("{dir}", &dir_text)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hello");
        let log: Log = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let (lock, cv) = &*sink;
                lock.lock().unwrap().push(line);
                cv.notify_all();
            }
        });
        Hello {
            child,
            log,
            dir,
            control,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn dump(&self) -> String {
        self.log.0.lock().unwrap().join("\n")
    }

    fn count(&self, parts: &[&str]) -> usize {
        let lines = self.log.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| parts.iter().all(|p| l.contains(p)))
            .count()
    }

    /// Waits for `n` lines containing every one of `parts`.
    fn wait_lines(&self, parts: &[&str], n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.log;
        let mut lines = lock.lock().unwrap();
        loop {
            let hits: Vec<String> = lines
                .iter()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .cloned()
                .collect();
            if hits.len() >= n {
                return hits;
            }
            let now = Instant::now();
            if now >= deadline {
                let dump = lines.join("\n");
                drop(lines);
                panic!("timed out waiting for {n} line(s) with {parts:?}; log:\n{dump}");
            }
            lines = cv.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    fn wait_line(&self, parts: &[&str], timeout: Duration) -> String {
        self.wait_lines(parts, 1, timeout).remove(0)
    }

    fn port(&self) -> u16 {
        let line = self.wait_line(&["listening on 127.0.0.1:"], T);
        let rest = &line[line.find("127.0.0.1:").unwrap() + 10..];
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }

    /// The pid of worker `w` (e.g. "0.1"), once it is Ready.
    fn ready_worker(&self, w: &str) -> u32 {
        let line = self.wait_line(&["in  spawned", &format!("w={w} ")], T);
        self.wait_line(&["in  ready", &format!("w={w}")], T);
        field(&line, "pid=").parse().unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = Command::new(DROVER)
            .args(["status", "--control", &self.control])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "hello did not exit within {timeout:?}; log:\n{}",
                self.dump()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_clean_exit(&mut self, timeout: Duration) {
        let status = self.wait_exit(timeout);
        assert_eq!(status.code(), Some(0), "log:\n{}", self.dump());
        assert_no_survivors(&self.dir.0, &self.dump());
    }
}

impl Drop for Hello {
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
    line[start..]
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
        .next()
        .unwrap()
}

// ------------------------------------------------------------------ an HTTP/1.1 client

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }

    /// The worker's pid, from `X-Drover-Worker`.
    fn pid(&self) -> u32 {
        field(self.header("x-drover-worker").unwrap(), "pid=")
            .parse()
            .unwrap()
    }

    fn generation(&self) -> u32 {
        field(self.header("x-drover-worker").unwrap(), "generation=")
            .parse()
            .unwrap()
    }
}

/// One keep-alive connection; every read and write bounded by a timeout.
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Responses read on this connection.
    answered: usize,
}

impl Client {
    fn connect(port: u16, timeout: Duration) -> std::io::Result<Client> {
        let addr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client {
            stream,
            buf: Vec::new(),
            answered: 0,
        })
    }

    fn send(&mut self, raw: &str) -> std::io::Result<()> {
        self.stream.write_all(raw.as_bytes())
    }

    fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"))?;
        self.read_response(false)
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    fn read_response(&mut self, head_only: bool) -> std::io::Result<Response> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8(self.buf[..end].to_vec()).unwrap();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let mut response = Response {
            status,
            head,
            body: Vec::new(),
        };
        let len: usize = match head_only {
            true => 0,
            false => response.header("content-length").unwrap().parse().unwrap(),
        };
        while self.buf.len() < end + len {
            self.fill()?;
        }
        response.body = self.buf[end..end + len].to_vec();
        self.buf.drain(..end + len);
        self.answered += 1;
        Ok(response)
    }

    /// True once the server has closed its side (EOF), within the timeout.
    fn closed_by_server(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0))
    }
}

/// One request on a fresh connection.
fn get_once(port: u16, path: &str) -> std::io::Result<Response> {
    Client::connect(port, T)?.get(path)
}

fn ok_hello(r: &Response) -> bool {
    r.status == 200 && r.body == b"Hello, world!\n"
}

// ------------------------------------------------------------------ tests

#[test]
fn hello_serves_keep_alive_requests_from_several_clients() {
    let mut h = Hello::start(
        "keepalive",
        &[
            "--workers",
            "2",
            "--threads",
            "2",
            "--pid-file",
            "{dir}/pid",
        ],
    );
    let pid_file = h.dir.path("pid");
    let port = h.port();
    let w0 = h.ready_worker("0.1");
    h.ready_worker("1.1");
    h.wait_lines(&["hello: worker", "serves with 2 thread(s)"], 2, T);

    // A worker shares with the supervisor only what the program had (stdio, inherited pipes),
    // the listener and the death pipe: not its signal, notify and control sockets (all unix
    // sockets) nor its pid file.
    let targets = |pid: u32| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| {
                Some(
                    std::fs::read_link(e.path())
                        .ok()?
                        .to_string_lossy()
                        .into_owned(),
                )
            })
            .collect()
    };
    let supervisor = targets(h.pid());
    let mut shared: Vec<String> = targets(w0)
        .into_iter()
        .filter(|t| supervisor.contains(t) && t != "/dev/null")
        .collect();
    shared.sort();
    shared.dedup();
    let sockets = shared.iter().filter(|t| t.starts_with("socket:")).count();
    assert_eq!(sockets, 1, "only the listener: {shared:?}");
    assert!(!shared.contains(&pid_file), "{shared:?}");
    assert!(supervisor.contains(&pid_file), "{supervisor:?}");

    // Four clients, one connection each, 50 requests per connection.
    let clients: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port, T).unwrap();
                let mut pids = Vec::new();
                for _ in 0..50 {
                    let r = c.get("/").unwrap();
                    assert!(ok_hello(&r), "{r:?}");
                    assert!(!r.closes(), "{r:?}");
                    pids.push(r.pid());
                }
                assert_eq!(c.answered, 50, "all on one connection");
                pids
            })
        })
        .collect();
    let mut pids: Vec<u32> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert!(!pids.is_empty() && pids.len() <= 2, "{pids:?}");

    // Pipelined requests, HEAD, then `Connection: close`.
    let mut c = Client::connect(port, T).unwrap();
    c.send("GET /a HTTP/1.1\r\nHost: t\r\n\r\nHEAD /b HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert!(ok_hello(&c.read_response(false).unwrap()));
    let head = c.read_response(true).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("14"));
    c.send("GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let r = c.read_response(false).unwrap();
    assert!(ok_hello(&r) && r.closes(), "{r:?}");
    assert!(c.closed_by_server());

    // HTTP/1.0 closes unless asked to keep alive.
    let mut c = Client::connect(port, T).unwrap();
    c.send("GET / HTTP/1.0\r\n\r\n").unwrap();
    let r = c.read_response(false).unwrap();
    assert!(ok_hello(&r) && r.closes(), "{r:?}");
    assert!(c.closed_by_server());
    let mut c = Client::connect(port, T).unwrap();
    for _ in 0..2 {
        c.send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .unwrap();
        let r = c.read_response(false).unwrap();
        assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
    }

    // A bad request gets an answer and a close.
    let mut c = Client::connect(port, T).unwrap();
    c.send("BREW /pot HTTP/1.1\r\n\r\n").unwrap();
    let r = c.read_response(false).unwrap();
    assert_eq!(r.status, 405);
    assert!(c.closed_by_server());

    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
    assert!(!Path::new(&pid_file).exists());
}

#[test]
fn load_reports_reach_the_machine() {
    let mut h = Hello::start(
        "load",
        &[
            "--workers",
            "1",
            "--threads",
            "2",
            "--log-level",
            "debug",
            "--max-requests",
            "40",
        ],
    );
    let port = h.port();
    let pid = h.ready_worker("0.1");

    // Exactly 30 requests, on three connections: the machine's count follows.
    for _ in 0..3 {
        let mut c = Client::connect(port, T).unwrap();
        for _ in 0..10 {
            assert!(ok_hello(&c.get("/").unwrap()));
        }
    }
    wait_until("30 requests in the status", T, || {
        h.status()["workers"][0]["requests"] == 30
    });

    // A slow request shows as a busy thread with its start time.
    let slow = std::thread::spawn(move || get_once(port, "/sleep?ms=1500"));
    let line = h.wait_line(&["in  load", "w=0.1", "busy=1", "since="], T);
    assert!(line.contains("requests=30"), "{line}");
    let status = h.status();
    assert_eq!(status["workers"][0]["state"], "busy", "{status}");
    assert_eq!(status["workers"][0]["busy"], 1, "{status}");
    assert!(ok_hello(&slow.join().unwrap().unwrap()));
    h.wait_line(&["in  load", "w=0.1", "busy=0", "requests=31"], T);

    // --max-requests acts on the reported count: the worker retires after 40.
    let mut c = Client::connect(port, T).unwrap();
    for _ in 0..9 {
        assert!(ok_hello(&c.get("/").unwrap()));
    }
    h.wait_line(&["ev  retiring", "w=0.1", "reason=max-requests"], T);
    // The replacement comes first (surge), in another slot.
    let spawned = h.wait_lines(&["in  spawned"], 2, T);
    let new: u32 = field(&spawned[1], "pid=").parse().unwrap();
    h.wait_lines(&["in  ready"], 2, T);
    assert_ne!(new, pid);
    wait_until("the retired worker to exit", T, || !alive(pid));
    h.wait_line(&["ev  exited", "w=0.1", "status=code:0", "expected=yes"], T);
    // Its keep-alive connection was closed between requests; new ones reach the new worker.
    wait_until("a request served by the new worker", T, || {
        get_once(port, "/").is_ok_and(|r| r.pid() == new)
    });

    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
}

#[test]
fn killed_worker_is_replaced_and_requests_keep_succeeding() {
    let mut h = Hello::start("kill", &["--workers", "2", "--threads", "2"]);
    let port = h.port();
    let old = h.ready_worker("0.1");
    let other = h.ready_worker("1.1");

    signal(old, libc::SIGKILL);
    // Right away: the other worker and the listener's queue keep serving.
    for _ in 0..100 {
        let r = get_once(port, "/").expect("a request after the kill");
        assert!(ok_hello(&r), "{r:?}");
    }
    h.wait_line(
        &["ev  exited", "w=0.1", "status=signal:9", "expected=no"],
        T,
    );
    let new = h.ready_worker("0.2");
    assert!(new != old && new != other);
    // A thread serves one connection at a time: four open keep-alive connections hold all
    // four threads, so both workers answer.
    let mut conns: Vec<Client> = (0..4).map(|_| Client::connect(port, T).unwrap()).collect();
    let mut pids: Vec<u32> = conns
        .iter_mut()
        .map(|c| c.get("/").unwrap().pid())
        .collect();
    pids.sort_unstable();
    pids.dedup();
    assert_eq!(pids, {
        let mut p = vec![new, other];
        p.sort_unstable();
        p
    });
    assert!(alive(other));

    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
}

#[test]
fn stopped_worker_is_killed_after_the_heartbeat_timeout_and_replaced() {
    let mut h = Hello::start(
        "hang",
        &[
            "--workers",
            "1",
            "--threads",
            "2",
            "--heartbeat-timeout",
            "1",
            "--log-level",
            "debug",
        ],
    );
    let port = h.port();
    let pid = h.ready_worker("0.1");
    // Heartbeats keep it alive past the timeout: 6 of them at 0.25 s span 1.25 s.
    h.wait_lines(&["in  heartbeat", "w=0.1"], 6, T);
    assert_eq!(h.count(&["retiring"]), 0, "log:\n{}", h.dump());
    assert!(ok_hello(&get_once(port, "/").unwrap()));

    signal(pid, libc::SIGSTOP);
    h.wait_line(&["ev  retiring", "w=0.1", "reason=heartbeat-timeout"], T);
    h.wait_line(
        &[
            "do  signal",
            &format!("pid={pid} "),
            "sig=KILL",
            "reason=heartbeat-timeout",
        ],
        T,
    );
    let new = h.ready_worker("0.2");
    wait_until("the hung worker to die", T, || !alive(pid));
    let r = get_once(port, "/").unwrap();
    assert_eq!(r.pid(), new);

    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
}

#[test]
fn a_thread_stuck_outside_a_request_stops_the_heartbeat() {
    let mut h = Hello::start(
        "stall",
        &[
            "--workers",
            "1",
            "--threads",
            "2",
            "--heartbeat-timeout",
            "2",
            "--log-level",
            "debug",
        ],
    );
    let port = h.port();
    let pid = h.ready_worker("0.1");
    // A long request is no reason to stop beating: that is the request timeout's business.
    let r = get_once(port, "/sleep?ms=3000")
        .unwrap_or_else(|e| panic!("the long request: {e}; log:\n{}", h.dump()));
    assert!(ok_hello(&r));
    assert_eq!(h.count(&["retiring"]), 0, "log:\n{}", h.dump());
    // A thread that answers, then hangs outside any request, takes the heartbeat with it,
    // although the worker's other thread and its reporting thread run on.
    let mut c = Client::connect(port, T).unwrap();
    assert!(ok_hello(&c.get("/stall?ms=8000").unwrap()));
    h.wait_line(&["withholding the heartbeat"], T);
    h.wait_line(&["ev  retiring", "w=0.1", "reason=heartbeat-timeout"], T);
    let new = h.ready_worker("0.2");
    wait_until("the hung worker to die", T, || !alive(pid));
    assert_eq!(get_once(port, "/").unwrap().pid(), new);

    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
}

#[test]
fn term_lets_the_in_flight_request_finish_then_exits_0() {
    let mut h = Hello::start(
        "drain",
        &[
            "--workers",
            "1",
            "--threads",
            "2",
            "--stop-timeout",
            "20",
            "--log-level",
            "debug",
        ],
    );
    let port = h.port();
    let pid = h.ready_worker("0.1");
    // An idle keep-alive connection: the stop closes it without waiting for the client.
    let mut idle = Client::connect(port, T).unwrap();
    assert!(ok_hello(&idle.get("/").unwrap()));
    let slow = std::thread::spawn(move || get_once(port, "/sleep?ms=1500"));
    h.wait_line(&["in  load", "w=0.1", "busy=1"], T);

    let asked = Instant::now();
    signal(h.pid(), libc::SIGTERM);
    h.wait_line(
        &[
            "do  signal",
            &format!("pid={pid} "),
            "sig=TERM",
            "reason=stop",
        ],
        T,
    );
    assert!(idle.closed_by_server(), "the idle connection is closed");
    let r = slow
        .join()
        .unwrap()
        .expect("the in-flight request completes");
    assert!(ok_hello(&r), "{r:?}");
    assert!(r.closes(), "answered with Connection: close: {r:?}");
    assert_eq!(r.pid(), pid);
    h.assert_clean_exit(T);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the drain waited for the ladder"
    );
    assert_eq!(
        h.count(&["ev  exited", "w=0.1", "status=code:0", "expected=yes"]),
        1
    );
    assert_eq!(
        h.count(&[&format!("hello: worker 0 pid {pid} exits")]),
        1,
        "on_worker_exit ran; log:\n{}",
        h.dump()
    );
}

#[test]
fn quit_to_a_worker_exits_at_once() {
    let mut h = Hello::start("quit", &["--workers", "1", "--threads", "2"]);
    let port = h.port();
    let pid = h.ready_worker("0.1");
    let slow = std::thread::spawn(move || get_once(port, "/sleep?ms=5000"));
    wait_until("the slow request to be in hand", T, || {
        h.status()["workers"][0]["busy"] == 1
    });
    let asked = Instant::now();
    signal(pid, libc::SIGQUIT);
    h.wait_line(&["ev  exited", "w=0.1", "status=code:0"], T);
    assert!(slow.join().unwrap().is_err(), "the request was cut");
    assert!(asked.elapsed() < Duration::from_secs(4));
    assert_eq!(
        h.count(&["hello: worker 0", "exits"]),
        0,
        "no graceful exit hook"
    );
    h.ready_worker("0.2");
    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
}

#[test]
fn rolling_restart_under_keep_alive_load_fails_no_request() {
    let h = Hello::start("roll", &["--workers", "2", "--threads", "2"]);
    let port = h.port();
    h.ready_worker("0.1");
    h.ready_worker("1.1");
    let stop = Arc::new(AtomicBool::new(false));
    let gen2 = Arc::new(AtomicU32::new(0));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let (stop, gen2) = (stop.clone(), gen2.clone());
            std::thread::spawn(move || {
                let (mut ok, mut retried, mut failed) = (0u32, 0u32, Vec::new());
                let deadline = Instant::now() + Duration::from_secs(40);
                let mut conn: Option<Client> = None;
                while !stop.load(Ordering::SeqCst) && Instant::now() < deadline && ok < 100_000 {
                    let mut c = match conn.take() {
                        Some(c) => c,
                        None => match Client::connect(port, Duration::from_secs(5)) {
                            Ok(c) => c,
                            Err(e) => {
                                failed.push(format!("connect: {e}"));
                                continue;
                            }
                        },
                    };
                    let reused = c.answered > 0;
                    match c.get("/") {
                        Ok(r) if ok_hello(&r) => {
                            ok += 1;
                            if r.generation() == 2 {
                                gen2.fetch_add(1, Ordering::SeqCst);
                            }
                            if !r.closes() {
                                conn = Some(c);
                            }
                        }
                        Ok(r) => failed.push(format!("bad answer {r:?}")),
                        // A keep-alive connection the server closed between requests: the
                        // client retries on a new one, as HTTP allows (RFC 9112 §9.3.1).
                        Err(e)
                            if reused
                                && c.buf.is_empty()
                                && matches!(
                                    e.kind(),
                                    std::io::ErrorKind::UnexpectedEof
                                        | std::io::ErrorKind::ConnectionReset
                                        | std::io::ErrorKind::ConnectionAborted
                                        | std::io::ErrorKind::BrokenPipe
                                ) =>
                        {
                            retried += 1
                        }
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, retried, failed)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    signal(h.pid(), libc::SIGUSR1);
    h.wait_lines(&["ev  exited", "expected=yes"], 2, Duration::from_secs(20));
    h.wait_lines(&["in  ready"], 4, T);
    wait_until("answers from the new generation", T, || {
        gen2.load(Ordering::SeqCst) >= 50
    });
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for c in clients {
        let (ok, _retried, failed) = c.join().unwrap();
        assert!(
            failed.is_empty(),
            "{} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
        total += ok;
    }
    assert!(total > 100, "ok={total}");
    let mut h = h;
    signal(h.pid(), libc::SIGTERM);
    h.assert_clean_exit(T);
}

#[test]
fn workers_die_with_the_supervisor_after_kill_9() {
    let mut h = Hello::start("orphans", &["--workers", "3", "--threads", "2"]);
    let pids: Vec<u32> = ["0.1", "1.1", "2.1"]
        .iter()
        .map(|w| h.ready_worker(w))
        .collect();
    signal(h.pid(), libc::SIGKILL);
    h.wait_exit(T);
    wait_until("every worker to die with the supervisor", T, || {
        pids.iter().all(|&p| !alive(p))
    });
    assert_no_survivors(&h.dir.0, &h.dump());
}

#[test]
fn bad_usage_exits_2() {
    for (args, needle) in [
        (vec!["--workers", "0"], "--workers"),
        (vec!["--listen", "nonsense"], "--listen"),
        (vec!["--", "sh"], "no `-- COMMAND`"),
    ] {
        let out = Command::new(hello_bin())
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
