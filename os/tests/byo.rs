//! End-to-end tests of bring-your-own-server workers (`Server::serve`) through the `axum`
//! and `hyper` examples: real processes on loopback, every wait bounded by a deadline,
//! every process killed on drop. The examples need the `tower` feature, so `cargo test`
//! alone does not build them: `example_bin` does, the way `hello_bin` builds `hello`.

pub mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ harness

/// `target/<dir>/examples/<name>`, built with the `tower` feature (once per example and
/// test process) from the current source.
fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<(String, PathBuf)>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some((_, bin)) = built.iter().find(|(n, _)| n == name) {
        return bin.clone();
    }
    let bin = common::example_bin(name, &["tower"]);
    built.push((name.to_string(), bin.clone()));
    bin
}

/// An example under drover, with `--control CTL` in its test directory (which names its
/// forked workers as processes of the test). `{dir}` in an argument stands for that
/// directory.
struct Pool {
    server: Server,
    control: String,
}

impl Pool {
    fn start(example: &str, name: &str, args: &[&str]) -> Pool {
        Pool::start_in(TempDir::new(name), &example_bin(example), args)
    }

    fn start_in(dir: TempDir, binary: &Path, args: &[&str]) -> Pool {
        let control = dir.path("ctl");
        let dir_text = dir.root().to_string_lossy().into_owned();
        let args: Vec<String> = ["--listen", "127.0.0.1:0", "--control", &control]
            .into_iter()
            .map(str::to_string)
            .chain(args.iter().map(|a| a.replace("{dir}", &dir_text)))
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Pool {
            server: Server::start(dir, binary, &args),
            control,
        }
    }

    fn status(&self) -> serde_json::Value {
        let (code, out, err) =
            run_bounded(DROVER, &["status", "--json", "--control", &self.control], T);
        assert!(code.success(), "{err}");
        serde_json::from_str(&out).unwrap()
    }

    fn control(&self, cmd: &str) {
        let (code, _, err) = run_bounded(DROVER, &[cmd, "--control", &self.control], T);
        assert!(code.success(), "drover {cmd}: {err}");
    }

    /// Ready workers all of `generation`, as many as the target.
    fn settled(&self, generation: u64) -> bool {
        let s = self.status();
        let workers = s["workers"].as_array().unwrap();
        s["ready"] == s["target"]
            && workers.len() as u64 == s["target"].as_u64().unwrap()
            && workers.iter().all(|w| {
                w["generation"].as_u64() == Some(generation)
                    && matches!(w["state"].as_str(), Some("idle" | "busy"))
            })
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): status and body.
fn http(port: u16, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(T))?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let status = answer
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad answer: {answer:?}")))?;
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// A `200` JSON answer, parsed.
fn get_json(port: u16, path: &str) -> serde_json::Value {
    let (status, body) = http(port, "GET", path, "").expect("a request");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

fn answered_by(v: &serde_json::Value) -> u32 {
    v["worker"]["pid"].as_u64().expect("the worker's pid") as u32
}

const EXAMPLES: [&str; 2] = ["axum", "hyper"];

// ------------------------------------------------------------------ serving

#[test]
fn each_example_serves_json_and_drains_its_requests_on_term() {
    for example in EXAMPLES {
        let mut p = Pool::start(example, example, &["--workers", "2", "--threads", "2"]);
        let port = p.server.port();
        let pids = [p.server.ready_worker("0.1"), p.server.ready_worker("1.1")];
        let hello = get_json(port, "/");
        assert_eq!(hello["message"], "Hello, world!", "{example}: {hello}");
        assert!(pids.contains(&answered_by(&hello)), "{example}: {hello}");
        if example == "axum" {
            let (status, body) = http(port, "POST", "/echo", r#"{"n":[1,2]}"#).unwrap();
            assert_eq!(status, 200);
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["echo"], serde_json::json!({"n": [1, 2]}));
        }

        // A request in flight when the stop comes is answered; then every worker exits 0.
        let slow = std::thread::spawn(move || http(port, "GET", "/sleep/1500", ""));
        wait_until("the slow request is in flight", T, || {
            p.status()["workers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["state"] == "busy")
        });
        p.server.signal(libc::SIGTERM);
        let (status, body) = slow.join().unwrap().expect("the slow request's answer");
        assert_eq!(status, 200, "{example}: {body}");
        assert!(body.contains("\"slept_ms\":1500"), "{example}: {body}");
        p.server
            .log
            .wait_for_n(&["ev  exited", "status=code:0"], 2, T);
        p.server.assert_clean_exit(T);
    }
}

#[test]
fn killed_worker_is_replaced_and_requests_keep_succeeding() {
    let mut p = Pool::start("axum", "kill", &["--workers", "2", "--threads", "2"]);
    let port = p.server.port();
    let old = p.server.ready_worker("0.1");
    let other = p.server.ready_worker("1.1");
    signal(old, libc::SIGKILL);
    // Right away: the other worker and the listener's queue keep serving.
    for _ in 0..50 {
        let v = get_json(port, "/");
        assert_ne!(answered_by(&v), old);
    }
    p.server.log.wait_for(
        &["ev  exited", "w=0.1", "status=signal:9", "expected=no"],
        T,
    );
    let new = p.server.ready_worker("0.2");
    assert!(new != old && new != other);
    // The replacement serves too. Which worker accepts is the kernel's choice (and one
    // tokio worker can hold many requests at once), so ask until it has answered.
    wait_until("the new worker answers", T, || {
        answered_by(&get_json(port, "/")) == new
    });
    p.server.signal(libc::SIGTERM);
    p.server.assert_clean_exit(T);
}

#[test]
fn stopped_worker_is_killed_after_the_heartbeat_timeout_and_replaced() {
    let mut p = Pool::start(
        "axum",
        "hang",
        &[
            "--workers",
            "1",
            "--heartbeat-timeout",
            "1",
            "--log-level",
            "debug",
        ],
    );
    let port = p.server.port();
    let pid = p.server.ready_worker("0.1");
    // Drover's report thread beats for the idle program: 6 beats at 0.25 s span 1.25 s.
    p.server.log.wait_for_n(&["in  heartbeat", "w=0.1"], 6, T);
    assert_eq!(p.server.log.count(&["retiring"]), 0);
    assert_eq!(answered_by(&get_json(port, "/")), pid);

    // SIGSTOP stops every thread of the worker, the report thread too: no more beats.
    signal(pid, libc::SIGSTOP);
    p.server
        .log
        .wait_for(&["ev  retiring", "w=0.1", "reason=heartbeat-timeout"], T);
    let new = p.server.ready_worker("0.2");
    wait_until("the hung worker to die", T, || !alive(pid));
    assert_eq!(answered_by(&get_json(port, "/")), new);
    p.server.signal(libc::SIGTERM);
    p.server.assert_clean_exit(T);
}

#[test]
fn quit_to_a_worker_exits_at_once_and_workers_die_with_the_supervisor() {
    let mut p = Pool::start("hyper", "quit", &["--workers", "1"]);
    let port = p.server.port();
    let pid = p.server.ready_worker("0.1");
    // A request in flight does not hold QUIT back.
    let slow = std::thread::spawn(move || http(port, "GET", "/sleep/30000", ""));
    wait_until("the slow request is in flight", T, || {
        p.status()["workers"][0]["state"] == "busy"
    });
    let sent = Instant::now();
    signal(pid, libc::SIGQUIT);
    p.server
        .log
        .wait_for(&["ev  exited", "w=0.1", "status=code:0"], T);
    assert!(sent.elapsed() < Duration::from_secs(5));
    assert!(
        slow.join().unwrap().is_err(),
        "the request went with the worker"
    );

    // kill -9 of the supervisor: the replacement worker follows it.
    let new = p.server.ready_worker("0.2");
    p.server.signal(libc::SIGKILL);
    wait_until("the worker dies with its supervisor", T, || !alive(new));
    let _ = p.server.wait_exit(T);
    assert_no_survivors(p.server.dir.root(), &p.server.log.dump());
}

// ------------------------------------------------------------------ load reports

#[test]
fn the_layer_s_counts_retire_a_worker_at_max_requests() {
    let mut p = Pool::start("axum", "maxreq", &["--workers", "1", "--max-requests", "5"]);
    let port = p.server.port();
    let first = p.server.ready_worker("0.1");
    for _ in 0..5 {
        assert_eq!(answered_by(&get_json(port, "/")), first);
    }
    p.server
        .log
        .wait_for(&["ev  retiring", "w=0.1", "reason=max-requests"], T);
    p.server
        .log
        .wait_for(&["ev  exited", "w=0.1", "status=code:0"], T);
    // Its replacement (in another slot: the machine surges it before the old one leaves).
    p.server.log.wait_for_n(&["in  ready"], 2, T);
    wait_until("the retired worker to exit", T, || !alive(first));
    assert_ne!(answered_by(&get_json(port, "/")), first);
    p.server.signal(libc::SIGTERM);
    p.server.assert_clean_exit(T);
}

#[test]
fn a_request_past_the_request_timeout_gets_its_worker_killed() {
    for example in EXAMPLES {
        let dir = TempDir::new("reqtimeout-conf");
        let config = dir.path("drover.toml");
        std::fs::write(&config, "request_timeout = 1\n").unwrap();
        let mut p = Pool::start(
            example,
            "reqtimeout",
            &["--workers", "1", "--config", &config],
        );
        let port = p.server.port();
        let pid = p.server.ready_worker("0.1");
        let started = Instant::now();
        // The worker dies under the request: the client sees the connection end.
        let stuck = std::thread::spawn(move || http(port, "GET", "/sleep/30000", ""));
        p.server
            .log
            .wait_for(&["ev  retiring", "w=0.1", "reason=request-timeout"], T);
        assert!(started.elapsed() < Duration::from_secs(8), "{example}");
        wait_until("the stuck worker to die", T, || !alive(pid));
        let answer = stuck.join().unwrap();
        assert!(
            !matches!(answer, Ok((200, _))),
            "{example}: killed under the request: {answer:?}"
        );
        let new = p.server.ready_worker("0.2");
        assert_eq!(answered_by(&get_json(port, "/")), new);
        p.server.signal(libc::SIGTERM);
        p.server.assert_clean_exit(T);
    }
}

// ------------------------------------------------------------------ zero-downtime

/// Answers to wait for after each step, so each step is crossed under load.
const PROGRESS: u64 = 200;

fn wait_progress(load: &Load, what: &str) {
    let from = load.ok();
    wait_until(what, T, || load.ok() >= from + PROGRESS);
}

/// A rolling restart, then a live upgrade, under 4 clients sending one request per fresh
/// connection: not one fails, and the old generation drains and exits 0.
fn restart_and_upgrade_under_load(example: &str) {
    let dir = TempDir::new(&format!("{example}-upgrade"));
    // A copy of its own in the test directory: the upgrade re-executes this path.
    let binary = dir.path(example);
    std::fs::copy(example_bin(example), &binary).unwrap();
    let pid_file = dir.path("pid");
    let mut p = Pool::start_in(
        dir,
        Path::new(&binary),
        &["--workers", "2", "--threads", "2", "--pid-file", &pid_file],
    );
    wait_until("the pool is ready", T, || {
        Path::new(&p.control).exists() && p.settled(1)
    });
    let first = p.server.pid();
    let load = Load::start(
        p.server.addr(),
        Proto::Http,
        4,
        2_000_000,
        Duration::from_secs(120),
    );
    wait_progress(&load, "answers before the rolling restart");

    p.control("restart");
    wait_until(
        "the rolling restart completes",
        Duration::from_secs(30),
        || p.settled(2),
    );
    wait_progress(&load, "answers after the rolling restart");

    let (code, out, err) = run_bounded(
        DROVER,
        &["upgrade", "--control", &p.control],
        Duration::from_secs(90),
    );
    assert!(code.success(), "upgrade: {err}\n{}", p.server.log.dump());
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let successor = answer["successor_pid"].as_u64().unwrap() as u32;
    assert_ne!(successor, first);
    assert_eq!(
        p.server.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "the predecessor must drain and exit 0; log:\n{}",
        p.server.log.dump()
    );
    wait_until("the successor's pool is settled", T, || p.settled(3));
    wait_progress(&load, "answers from the successor");

    let r = load.stop();
    assert_eq!(
        r.failed,
        0,
        "{example}: requests failed across a restart and an upgrade: {r:?}\nlog:\n{}",
        p.server.log.dump()
    );
    assert!(
        r.ok >= 3 * PROGRESS,
        "too few answers to mean anything: {r:?}"
    );
    // The successor is not the test's child: stop it through its control socket.
    p.control("stop");
    wait_until("the successor exits", T, || !alive(successor));
    assert_no_survivors(p.server.dir.root(), &p.server.log.dump());
}

#[test]
fn axum_fails_no_request_across_a_rolling_restart_and_a_live_upgrade() {
    restart_and_upgrade_under_load("axum");
}

#[test]
fn hyper_fails_no_request_across_a_rolling_restart_and_a_live_upgrade() {
    restart_and_upgrade_under_load("hyper");
}

/// Failures of a client: counted, the first few kept (a client that fails at every turn
/// must not grow a list for its whole run).
#[derive(Default)]
struct Failures {
    count: u64,
    first: Vec<String>,
}

impl Failures {
    fn note(&mut self, what: String) {
        self.count += 1;
        if self.first.len() < 5 {
            self.first.push(what);
        }
    }
}

/// One keep-alive client: GET / on one connection until the server says
/// `Connection: close` (then a new connection), until `stop`. Every answer must be a 200;
/// a connection that ends without an answer to a request sent on it is a failure.
fn keep_alive_client(port: u16, stop: &AtomicBool) -> (u64, u64, Failures) {
    let (mut ok, mut closes, mut errors) = (0u64, 0u64, Failures::default());
    let deadline = Instant::now() + Duration::from_secs(120);
    'connections: while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let mut s = match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => s,
            Err(e) => {
                errors.note(format!("connect: {e}"));
                continue;
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = Vec::new();
        while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
            if let Err(e) = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") {
                errors.note(format!("send: {e}"));
                continue 'connections;
            }
            // Head, then Content-Length bytes of body.
            let (head_len, body_len, close) = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if !head.starts_with("http/1.1 200") {
                        errors.note(format!("status: {}", head.lines().next().unwrap_or("")));
                    }
                    break (end + 4, len, head.contains("connection: close"));
                }
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(0) => {
                        errors.note(format!("closed without an answer ({} bytes)", buf.len()));
                        continue 'connections;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e) => {
                        errors.note(format!("read: {e}"));
                        continue 'connections;
                    }
                }
            };
            while buf.len() < head_len + body_len {
                let mut chunk = [0u8; 4096];
                match s.read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    other => {
                        errors.note(format!("body cut short: {other:?}"));
                        continue 'connections;
                    }
                }
            }
            buf.drain(..head_len + body_len);
            ok += 1;
            if close {
                closes += 1;
                continue 'connections;
            }
        }
        break;
    }
    (ok, closes, errors)
}

#[test]
fn axum_fails_no_keep_alive_request_across_rolling_restarts() {
    let p = Pool::start("axum", "keepalive", &["--workers", "2", "--threads", "2"]);
    let port = p.server.port();
    wait_until("the pool is ready", T, || p.settled(1));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || keep_alive_client(port, &stop))
        })
        .collect();
    for generation in 2..=3 {
        p.control("restart");
        wait_until(
            "the rolling restart completes",
            Duration::from_secs(30),
            || p.settled(generation),
        );
    }
    stop.store(true, Ordering::SeqCst);
    let (mut ok, mut closes, mut failed, mut first) = (0, 0, 0, Vec::new());
    for c in clients {
        let (o, c, e) = c.join().unwrap();
        ok += o;
        closes += c;
        failed += e.count;
        first.extend(e.first);
    }
    assert_eq!(
        failed,
        0,
        "{failed} failed of {} ({closes} answers said Connection: close), first: {first:?}\nlog:\n{}",
        ok + failed,
        p.server.log.dump()
    );
    // Each of the 4 retired workers told its busy clients to move on.
    assert!(closes >= 1, "no Connection: close seen in {ok} answers");
    assert!(ok >= 100, "too few answers to mean anything: {ok}");
}

#[test]
fn tls_flags_are_refused_where_the_program_serves_its_own_connections() {
    // drover's TLS wraps its own threads' connections; a program's own server accepts
    // them itself, so --tls-cert would be silently plain: exit 2 naming the flag.
    let dir = TempDir::new("byo-tls");
    let (pem, key) = (dir.path("c.pem"), dir.path("c.key"));
    let (code, _, err) = run_bounded(
        example_bin("axum"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            &pem,
            "--tls-key",
            &key,
        ],
        T,
    );
    assert_eq!(code.code(), Some(2), "{err}");
    assert!(
        err.contains("--tls-cert: TLS is served by drover's embedded runtime only")
            && err.contains("Server::serve"),
        "{err}"
    );
}
