//! End-to-end tests of what drover tells about its pool: the Prometheus metrics (`drover
//! metrics`, `--metrics-listen`, checked with Prometheus's own `promtool check metrics` and
//! by their values after real events), `drover status` as a table, and `drover dump`.

pub mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

/// `drover run --listen 127.0.0.1:0 --control DIR/ctl FLAGS -- python3 worker.py`.
fn python_pool(name: &str, flags: &[&str]) -> (Server, String) {
    let dir = test_dir(name);
    let control = dir.path("ctl");
    let worker = dir.path("worker.py");
    let mut args = vec!["run", "--listen", "127.0.0.1:0", "--control", &control];
    args.extend_from_slice(flags);
    args.extend(["--", python(), &worker]);
    (Server::start(dir, DROVER, &args), control)
}

/// The port `--metrics-listen` bound, from its log line.
fn metrics_port(server: &Server) -> u16 {
    let line = server
        .log
        .wait_for(&["metrics: serving http://127.0.0.1:"], T);
    field(&line, "http://127.0.0.1:")
        .trim_end_matches("/metrics")
        .parse()
        .unwrap()
}

/// One raw HTTP exchange, bounded in time: the whole answer up to the server's close.
fn http(port: u16, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s.write_all(raw).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
}

/// `GET /metrics`: the body of a 200 answer with the exposition format's content type.
fn scrape(port: u16) -> String {
    let answer = http(port, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{head}"
    );
    body.to_string()
}

/// `GET /metrics` while drovers come and go: the body of a 200 answer, or `None` for a
/// refused, reset or otherwise failed exchange.
fn try_scrape(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(T)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200 OK\r\n")
        .then(|| body.to_string())
}

/// `drover metrics --control PATH`: the text alone, byte for byte (`run_bounded` joins
/// lines and would drop the final newline the format requires). The client bounds its own
/// wait for the answer (10 s).
fn metrics_via_control(control: &str) -> String {
    let out = Command::new(DROVER)
        .args(["metrics", "--control", control])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    String::from_utf8(out.stdout).unwrap()
}

/// The value of one sample (`name` or `name{labels}`, exactly as exposed).
fn value(text: &str, sample: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// Prometheus's own linter on `text`. Without promtool the test fails under CI=true and is
/// skipped loudly otherwise (Debian package `prometheus`; .ci/run installs it).
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "promtool is missing: install the Debian package `prometheus` (.ci/run does)"
            );
            eprintln!("*** SKIPPED promtool check metrics: promtool is not installed ***");
            return;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_follow_a_kill_and_a_scale_and_pass_promtool() {
    let (mut d, control) = python_pool(
        "metrics-kill",
        &[
            "--workers",
            "2",
            "--readiness",
            "notify",
            "--heartbeat-timeout",
            "5",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let port = metrics_port(&d);
    let victim = d.ready_worker("0.1");
    d.ready_worker("1.1");
    wait_until("two idle workers in the metrics", T, || {
        value(&scrape(port), "drover_workers{state=\"idle\"}") == Some(2.0)
    });
    let before = scrape(port);
    promtool_check(&before);
    promtool_check(&metrics_via_control(&control));
    assert_eq!(value(&before, "drover_worker_spawns_total"), Some(2.0));
    assert_eq!(value(&before, "drover_workers_target"), Some(2.0));
    assert_eq!(
        value(&before, "drover_heartbeat_timeout_seconds"),
        Some(5.0)
    );
    let age = value(&before, "drover_heartbeat_oldest_age_seconds").unwrap();
    assert!((0.0..5.0).contains(&age), "{before}");
    let wakeups = value(&before, "drover_supervisor_wakeups_total").unwrap();
    assert!(wakeups >= 1.0, "{before}");
    // An unnamed listener goes by its LISTEN_FDNAMES name.
    assert_eq!(
        value(&before, "drover_accept_queue{listener=\"listen0\"}"),
        Some(0.0),
        "{before}"
    );

    // kill -9 from outside: one exit counted as `killed`, one more spawn.
    signal(victim, libc::SIGKILL);
    d.ready_worker("0.2");
    let after = scrape(port);
    assert_eq!(
        value(&after, "drover_worker_exits_total{reason=\"killed\"}"),
        Some(1.0),
        "{after}"
    );
    assert_eq!(value(&after, "drover_worker_spawns_total"), Some(3.0));
    assert_eq!(
        value(&after, "drover_worker_restarts_total{cause=\"killed\"}"),
        Some(1.0)
    );
    assert!(value(&after, "drover_supervisor_wakeups_total").unwrap() > wakeups);

    // Scaling up: the target and the workers gauge follow.
    let (code, _, err) = client(&["scale", "3", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    wait_until("three idle workers in the metrics", T, || {
        value(
            &metrics_via_control(&control),
            "drover_workers{state=\"idle\"}",
        ) == Some(3.0)
    });
    let scaled = scrape(port);
    assert_eq!(value(&scaled, "drover_workers_target"), Some(3.0));
    assert_eq!(value(&scaled, "drover_workers_ready"), Some(3.0));
    promtool_check(&scaled);

    // The stop's retirements and TERMs are counted before the end.
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn the_endpoint_answers_http_errors_and_silent_clients_block_nobody() {
    let (mut d, control) = python_pool(
        "metrics-http",
        &["--workers", "1", "--metrics-listen", "127.0.0.1:0"],
    );
    let port = metrics_port(&d);
    let status_line = |raw: &[u8]| http(port, raw).lines().next().unwrap_or("").to_string();
    assert_eq!(
        status_line(b"GET / HTTP/1.1\r\n\r\n"),
        "HTTP/1.1 404 Not Found"
    );
    let post = http(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        post.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"),
        "{post}"
    );
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
    assert_eq!(
        status_line(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"),
        "HTTP/1.1 400 Bad Request"
    );
    let old = http(port, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(old.starts_with("HTTP/1.0 200 OK\r\n"), "{old}");
    let head = http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );

    // More silent connections than the endpoint keeps: the loop goes on (status answers),
    // and a scrape still gets its answer, at the cost of the oldest silent one.
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let (code, _, err) = client(&["status", "--json", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    promtool_check(&scrape(port));
    drop(silent);
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn the_embedded_runtime_reports_requests_and_busy_threads() {
    let dir = TempDir::new("metrics-hello");
    let control = dir.path("ctl");
    let mut d = Server::start(
        dir,
        hello_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--control",
            &control,
            "--workers",
            "1",
            "--threads",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let port = d.port();
    let metrics = metrics_port(&d);
    d.ready_worker("0.1");
    for _ in 0..25 {
        let answer = http(
            port,
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    wait_until("25 requests in the metrics", T, || {
        value(&scrape(metrics), "drover_requests_total") == Some(25.0)
    });
    let text = scrape(metrics);
    assert_eq!(value(&text, "drover_load_reporting_workers"), Some(1.0));
    assert_eq!(value(&text, "drover_threads_per_worker"), Some(2.0));
    // A slow request is a busy thread.
    let slow = std::thread::spawn(move || {
        http(
            port,
            b"GET /sleep?ms=1500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    });
    wait_until("a busy thread in the metrics", T, || {
        value(&scrape(metrics), "drover_busy_threads") == Some(1.0)
    });
    assert!(slow.join().unwrap().starts_with("HTTP/1.1 200"));
    promtool_check(&scrape(metrics));
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn status_prints_a_table_and_dump_writes_the_state_to_the_log() {
    let (mut d, control) = python_pool("metrics-status", &["--workers", "2"]);
    let first = d.worker_pid("0.1");
    let second = d.worker_pid("1.1");
    wait_until("two ready workers", T, || {
        let (_, out, _) = client(&["status", "--control", &control]);
        out.contains("ready/live 2/2")
    });
    let (code, table, err) = client(&["status", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with(&format!("drover pid {}  running  primary for ", d.pid())),
        "{table}"
    );
    assert!(lines[0].contains("policy static  target 2"), "{table}");
    assert!(
        lines[0].ends_with("upgrade idle  crash-looping no"),
        "{table}"
    );
    assert!(lines[1].starts_with("SLOT  STATE"), "{table}");
    let row = |slot: &str, pid: u32| {
        lines.iter().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.len() == 8
                && cells[0] == slot
                && cells[1] == "idle"
                && cells[2] == pid.to_string()
        })
    };
    assert!(row("0", first) && row("1", second), "{table}");

    let (code, out, err) = client(&["dump", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("wrote the machine's state ("), "{out}");
    d.log.wait_for(&["dump: end"], T);
    let log = d.log.dump();
    for part in [
        "dump: phase: Running",
        &format!("dump:   pid {first}, generation 1"),
        "dump: death window (10 deaths in 60.000s count): []",
        "do  spawn          w=1.1",
    ] {
        assert!(
            log.lines().any(|l| l.contains("dump:") && l.contains(part)),
            "no `{part}` in the dump:\n{log}"
        );
    }
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn bad_metrics_addresses_are_usage_errors() {
    let dir = test_dir("metrics-bad");
    let worker = dir.path("worker.py");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port().to_string();
    let config = dir.path("bad.toml");
    std::fs::write(&config, "metrics_listen = true\n").unwrap();
    for (args, want) in [
        (
            vec!["--metrics-listen", "nope"],
            "invalid --metrics-listen (config key `metrics_listen`) 'nope'",
        ),
        (vec!["--metrics-listen", "70000"], "'70000'"),
        (
            vec!["--metrics-listen", taken_port.as_str()],
            "--metrics-listen 127.0.0.1:",
        ),
        (
            vec!["--config", config.as_str()],
            "`metrics_listen` must be a port or an address string",
        ),
    ] {
        let mut full = vec!["run", "--workers", "1"];
        full.extend(args.iter().copied());
        full.extend(["--", python(), &worker]);
        let (status, _, err) = run_bounded(DROVER, &full, T);
        assert_eq!(status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    drop(taken);
}

#[test]
fn a_live_upgrade_hands_the_metrics_address_to_the_successor() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (mut d, control) = python_pool(
        "metrics-upgrade",
        &["--workers", "1", "--metrics-listen", &addr],
    );
    d.ready_worker("0.1");
    let started = value(&scrape(port), "drover_start_time_seconds").unwrap();
    let (code, out, err) = run_bounded(
        DROVER,
        &["upgrade", "--control", &control],
        Duration::from_secs(60),
    );
    assert_eq!(code.code(), Some(0), "{out}{err}\n{}", d.log.dump());
    assert_eq!(d.wait_exit(Duration::from_secs(30)).code(), Some(0));
    // The successor serves the address now: its own start time, counters from zero but for
    // its own spawn.
    wait_until("the successor serves the metrics", T, || {
        try_scrape(port)
            .and_then(|text| value(&text, "drover_start_time_seconds"))
            .is_some_and(|s| s > started)
    });
    let text = scrape(port);
    assert!(text.contains("role=\"primary\""), "{text}");
    assert_eq!(value(&text, "drover_worker_spawns_total"), Some(1.0));
    promtool_check(&text);
    let (code, _, err) = client(&["stop", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    wait_until("the successor is gone", T, || {
        std::os::unix::net::UnixStream::connect(&control).is_err()
    });
}

#[test]
fn under_supervise_the_supervised_drover_serves_and_its_replacement_takes_over() {
    let port = {
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (mut d, control) = python_pool(
        "metrics-supervise",
        &["--supervise", "--workers", "1", "--metrics-listen", &addr],
    );
    let scrape_soon = || {
        let mut text = String::new();
        wait_until("the metrics are served", T, || {
            text = try_scrape(port).unwrap_or_default();
            value(&text, "drover_workers{state=\"idle\"}") == Some(1.0)
        });
        text
    };
    let text = scrape_soon();
    assert!(text.contains("role=\"supervised\""), "{text}");
    let started = value(&text, "drover_start_time_seconds").unwrap();
    // The supervised drover answers the control socket: its pid is the status's.
    let (code, out, err) = client(&["status", "--json", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    let child = status["pid"].as_u64().unwrap() as u32;
    assert_ne!(child, d.pid(), "the parent serves no control socket");

    // A crashed drover's replacement binds the address again.
    signal(child, libc::SIGKILL);
    wait_until("the replacement serves the metrics", T, || {
        try_scrape(port)
            .and_then(|text| value(&text, "drover_start_time_seconds"))
            .is_some_and(|s| s > started)
    });
    promtool_check(&scrape_soon());
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(Duration::from_secs(30));
}
