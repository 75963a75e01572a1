//! End-to-end tests of drover's log file (reopened for logrotate, text and JSON) and of the
//! workers' output collected into it (`--worker-output log`): real processes, every wait
//! bounded, every process killed with the test's directory. `--daemonize`: daemon.rs.

pub mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Sends `sig` to drover and waits for its exit with code 0.
fn stop(d: &mut Server, log: &str) {
    d.signal(libc::SIGTERM);
    let status = d.wait_exit(T);
    assert_eq!(status.code(), Some(0), "log:\n{}", read(log));
}

/// The counter values a worker printed (`n=K` on stdout), in the order of `files`.
fn counters(files: &[&str]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for f in files {
        for line in lines_with(f, &["stream=\"stdout\""]) {
            let Some(n) = line.split_whitespace().find_map(|w| w.strip_prefix("n=")) else {
                continue;
            };
            out.push((f.to_string(), n.parse().unwrap()));
        }
    }
    out
}

#[test]
fn a_rotated_log_loses_no_line_through_reopen_logs_and_hup() {
    let dir = test_dir("rotate");
    let log = dir.path("drover.log");
    let control = dir.path("control.sock");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--log-file",
        &log,
        "--worker-output",
        "log",
        "--control",
        &control,
        "--",
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo \"n=$i\"; sleep 0.005; done",
    ];
    let mut d = Server::start(dir, DROVER, &args);
    let count = |f: &str| counters(&[f]).len();
    wait_until("counter lines in the log", T, || count(&log) >= 30);

    // logrotate: rename, then `drover reopen-logs` in postrotate.
    let first = format!("{log}.1");
    std::fs::rename(&log, &first).unwrap();
    let (code, out, err) = client(&["reopen-logs", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("reopened the log file"), "{out}");
    wait_until("counter lines in the new log", T, || count(&log) >= 30);

    // The same through HUP (logrotate's `kill -HUP`).
    let second = format!("{log}.2");
    std::fs::rename(&log, &second).unwrap();
    d.signal(libc::SIGHUP);
    wait_until("counter lines after HUP", T, || count(&log) >= 30);
    stop(&mut d, &log);

    let all = counters(&[&first, &second, &log]);
    let values: Vec<u64> = all.iter().map(|(_, n)| *n).collect();
    let expected: Vec<u64> = (1..=values.len() as u64).collect();
    assert_eq!(
        values,
        expected,
        "every line once, in order, across the rotations; files: {:?}",
        all.iter()
            .fold(BTreeMap::<&str, usize>::new(), |mut m, (f, _)| {
                *m.entry(f.as_str()).or_default() += 1;
                m
            })
    );
    for f in [&first, &second, &log] {
        assert!(count(f) >= 30, "{f} holds {} counter lines", count(f));
    }
    // Each reopen is told in the new file.
    assert_eq!(lines_with(&second, &["reopened the log file"]).len(), 1);
    assert_eq!(
        lines_with(&log, &["signal HUP: reopened the log file"]).len(),
        1
    );
    assert_eq!(lines_with(&log, &["reloading the config file"]).len(), 1);
    // Tagged with the worker's slot, generation and pid.
    let line = lines_with(&first, &[" n=1 "]).remove(0);
    assert_eq!(field(&line, "slot="), "0", "{line}");
    assert_eq!(field(&line, "generation="), "1", "{line}");
    assert!(field(&line, "pid=").parse::<u32>().unwrap() > 0, "{line}");
}

#[test]
fn a_reopen_that_fails_keeps_the_old_file_and_says_why() {
    let dir = test_dir("reopen-fails");
    let sub = dir.path("logs");
    std::fs::create_dir(&sub).unwrap();
    let log = format!("{sub}/drover.log");
    let control = dir.path("control.sock");
    let worker = dir.path("worker.py");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--log-file",
        &log,
        "--control",
        &control,
        "--",
        python(),
        &worker,
    ];
    let mut d = Server::start(dir, DROVER, &args);
    wait_until("the log", T, || read(&log).contains("listening on"));
    // The directory is gone: the new file cannot be created.
    let moved = format!("{sub}.old");
    std::fs::rename(&sub, &moved).unwrap();
    let (code, _, err) = client(&["reopen-logs", "--control", &control]);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot reopen the log file") && err.contains("still writing"),
        "{err}"
    );
    let old = format!("{moved}/drover.log");
    wait_until("the failure in the old file", T, || {
        read(&old).contains("cannot reopen the log file")
    });
    stop(&mut d, &old);
    assert!(read(&old).contains("drover exits"));
}

#[test]
fn json_lines_parse_and_carry_the_fields() {
    let dir = test_dir("json");
    let log = dir.path("drover.log");
    // A worker that logs one JSON line of its own first (as an embedded worker with
    // `--log-format json` does), then runs the usual worker in the same process.
    let worker = dir.path("json_worker.py");
    std::fs::write(
        &worker,
        format!(
            "import json, os, sys\n\
             print(json.dumps({{'level': 'warn', 'message': 'json hello', 'user': 7}}), file=sys.stderr, flush=True)\n\
             os.execv(sys.executable, [sys.executable, {:?}])\n",
            dir.path("worker.py")
        ),
    )
    .unwrap();
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--log-file",
        &log,
        "--log-format",
        "json",
        "--worker-output",
        "log",
        "--",
        python(),
        &worker,
    ];
    let mut d = Server::start(dir, DROVER, &args);
    let drover_pid = d.pid();
    wait_until("the worker's own line", T, || {
        read(&log).contains("worker pid=")
    });
    stop(&mut d, &log);
    let text = read(&log);
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(records.len() > 5, "{text}");
    for r in &records {
        assert!(
            r["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{r}"
        );
        assert!(r["level"].is_string() && r["message"].is_string(), "{r}");
        assert_eq!(r["pid"], drover_pid, "{r}");
        assert!(r["fields"].is_object(), "{r}");
    }
    let listening = records
        .iter()
        .find(|r| r["message"].as_str().unwrap().starts_with("listening on"))
        .expect("a listening line");
    assert_eq!(listening["fields"]["name"], "listen0");
    let own = records
        .iter()
        .find(|r| r["message"].as_str().unwrap().starts_with("worker pid="))
        .expect("the worker's line");
    let worker_pid = own["message"].as_str().unwrap()["worker pid=".len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert_eq!(own["fields"]["pid"], worker_pid, "{own}");
    assert_eq!(own["fields"]["slot"], 0, "{own}");
    assert_eq!(own["fields"]["generation"], 1, "{own}");
    assert_eq!(own["fields"]["stream"], "stderr", "{own}");
    assert_eq!(own["level"], "INFO");
    // The worker's JSON line is nested whole, not quoted into `message`.
    let nested = records
        .iter()
        .find(|r| r["message"] == "json hello")
        .expect("the worker's JSON line, its message lifted");
    assert_eq!(nested["level"], "WARN", "{nested}");
    assert_eq!(nested["worker"]["user"], 7, "{nested}");
    assert_eq!(nested["fields"]["slot"], 0, "{nested}");
}

#[test]
fn a_flooding_worker_blocks_neither_drover_nor_another_worker() {
    let dir = test_dir("flood");
    let log = dir.path("drover.log");
    let control = dir.path("control.sock");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "2",
        "--log-file",
        &log,
        "--worker-output",
        "log",
        // drover's own INFO lines off: the workers' lines stay.
        "--log-level",
        "warn",
        "--control",
        &control,
        "--",
        "sh",
        "-c",
        "if [ \"$DROVER_WORKER_ID\" = 0 ]; then exec yes flood; fi; i=0; while :; do i=$((i+1)); echo \"tick $i\"; sleep 0.05; done",
    ];
    let mut d = Server::start(dir, DROVER, &args);
    wait_until("a drop report", T, || {
        !lines_with(&log, &["dropped", "slot=0"]).is_empty()
    });
    let ticks_before = lines_with(&log, &["tick ", "slot=1"]).len();
    for _ in 0..5 {
        let asked = Instant::now();
        let (code, out, err) = client(&["status", "--control", &control]);
        assert_eq!(code, 0, "{out}{err}");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "status took {:?} while a worker floods",
            asked.elapsed()
        );
    }
    wait_until("the quiet worker's lines still arrive", T, || {
        lines_with(&log, &["tick ", "slot=1"]).len() >= ticks_before + 10
    });
    let report = lines_with(&log, &["dropped", "slot=0"]).remove(0);
    let dropped: u64 = report
        .split("dropped ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(dropped > 0, "{report}");
    assert!(report.contains("WARN"), "{report}");
    // Within a second, at most the line budget of the flooding worker is logged.
    let floods = lines_with(&log, &[" flood ", "slot=0"]).len();
    assert!(floods > 0, "the flooding worker's first lines are logged");
    assert!(
        lines_with(&log, &["spawned"]).is_empty(),
        "drover's own INFO lines are off"
    );
    // The stop is not held up by a worker blocked on its full pipe.
    let asked = Instant::now();
    stop(&mut d, &log);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    assert_no_survivors(d.dir.root(), &read(&log));
}

#[test]
fn embedded_workers_output_is_collected_too() {
    let dir = TempDir::new("embedded-output");
    let log = dir.path("drover.log");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--log-file",
        &log,
        "--worker-output",
        "log",
    ];
    let mut d = Server::start(dir, hello_bin(), &args);
    wait_until("the embedded worker's line", T, || {
        !lines_with(
            &log,
            &["hello: worker 0 pid", "stream=\"stderr\"", "slot=0"],
        )
        .is_empty()
    });
    let line = lines_with(&log, &["hello: worker 0 pid"]).remove(0);
    let own_pid = line.split("hello: worker 0 pid ").nth(1).unwrap();
    let own_pid = own_pid.split_whitespace().next().unwrap();
    assert_eq!(field(&line, "pid="), own_pid, "{line}");
    // Its stdout and stderr are its pipes; the log file is the supervisor's alone (the
    // worker's own log lines go to its stderr, not to a descriptor it closed).
    let fds = |pid: &str| -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.to_string_lossy().into_owned())
            .collect()
    };
    let target = |pid: &str, fd: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert!(target(own_pid, 1).starts_with("pipe:"));
    assert!(target(own_pid, 2).starts_with("pipe:"));
    assert!(
        !fds(own_pid).iter().any(|f| f == &log),
        "{:?}",
        fds(own_pid)
    );
    assert!(fds(&d.pid().to_string()).iter().any(|f| f == &log));
    stop(&mut d, &log);
}

#[test]
fn a_pipe_held_by_a_process_that_left_the_worker_is_closed_after_the_drain() {
    let dir = test_dir("held-pipe");
    let log = dir.path("drover.log");
    let holder = dir.path("holder.sh");
    std::fs::write(&holder, "sleep 60\n").unwrap();
    // The worker leaves a process in a session of its own holding its stdout, says a last
    // line and exits: its group is empty, its pipe is not.
    let script = format!("setsid sh {holder} & echo last words; exit 0");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--log-file",
        &log,
        "--worker-output",
        "log",
        "--",
        "sh",
        "-c",
        &script,
    ];
    let mut d = Server::start(dir, DROVER, &args);
    wait_until(
        "the pipe closed after the drain",
        Duration::from_secs(15),
        || !lines_with(&log, &["its pipe is still open", "closed"]).is_empty(),
    );
    let closed = lines_with(&log, &["its pipe is still open"]).remove(0);
    assert!(
        closed.contains("WARN") && closed.contains("slot=0"),
        "{closed}"
    );
    // The worker's last line was read before.
    let last = lines_with(&log, &["last words", "stream=\"stdout\""]);
    assert!(!last.is_empty(), "{}", read(&log));
    stop(&mut d, &log);
}

#[test]
fn after_a_live_upgrade_the_successor_collects_its_workers_output_into_the_same_log() {
    let dir = test_dir("upgrade-output");
    let log = dir.path("drover.log");
    let control = dir.path("control.sock");
    let worker = dir.path("worker.py");
    let args = [
        "run",
        "--listen",
        "127.0.0.1:0",
        "--readiness",
        "notify",
        "--log-file",
        &log,
        "--worker-output",
        "log",
        "--control",
        &control,
        "--",
        python(),
        &worker,
    ];
    let mut d = Server::start(dir, DROVER, &args);
    wait_until("the first worker's line", T, || {
        !lines_with(&log, &["worker pid=", "gen=1 ", "stream=\"stderr\""]).is_empty()
    });
    let (code, out, err) = client(&["upgrade", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}\n{}", read(&log));
    let answer: serde_json::Value = serde_json::from_str(&out).unwrap();
    let successor = answer["successor_pid"].as_u64().unwrap();
    // The predecessor drains and exits; the successor goes on in the same file.
    assert_eq!(d.wait_exit(T).code(), Some(0), "{}", read(&log));
    let line = lines_with(&log, &["worker pid=", "gen=2 ", "stream=\"stderr\""]).remove(0);
    assert!(
        line.contains(&format!("drover{{pid={successor}}}")),
        "the successor logs its own worker's line: {line}"
    );
    assert_eq!(field(&line, "generation="), "2", "{line}");
    signal(successor as u32, libc::SIGTERM);
    wait_until("the successor's exit", T, || {
        lines_with(&log, &["drover exits"]).len() == 2
    });
}
