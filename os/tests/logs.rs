//! End-to-end tests of drover's log file (reopened for logrotate, text and JSON), of the
//! workers' output collected into it (`--worker-output log`), and of `--daemonize`: real
//! processes, every wait bounded, every process killed with the test's directory.

pub mod common;

use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `drover <args>` as a control client: (exit code, stdout, stderr).
fn client(args: &[&str]) -> (i32, String, String) {
    let out = run_bounded(DROVER, args, Duration::from_secs(15));
    (out.0.code().unwrap_or(-1), out.1, out.2)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The lines of `path` that contain every one of `parts`.
fn lines_with(path: &str, parts: &[&str]) -> Vec<String> {
    read(path)
        .lines()
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .map(str::to_string)
        .collect()
}

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
        lines_with(&log, &["SIGHUP: reopened the log file"]).len(),
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
    let worker = dir.path("worker.py");
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

// ------------------------------------------------------------------ daemon mode

/// `/proc/<pid>/stat` fields after the command name: state, ppid, pgrp, session, tty_nr.
fn stat(pid: u32) -> Option<(char, u32, u32, u32, i64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest: Vec<&str> = text[text.rfind(')')? + 2..].split_whitespace().collect();
    Some((
        rest[0].chars().next()?,
        rest[1].parse().ok()?,
        rest[2].parse().ok()?,
        rest[3].parse().ok()?,
        rest[4].parse().ok()?,
    ))
}

fn daemon_pid(pid_file: &str) -> u32 {
    read(pid_file).trim().parse().unwrap()
}

#[test]
fn daemonize_returns_once_the_pool_is_ready() {
    let dir = test_dir("daemon");
    let sock = dir.path("web.sock");
    let pid_file = dir.path("drover.pid");
    let log = dir.path("drover.log");
    let worker = dir.path("worker.py");
    let listen = format!("unix:{sock}");
    let started = Instant::now();
    let (status, out, err) = run_bounded(
        DROVER,
        &[
            "run",
            "--daemonize",
            "--listen",
            &listen,
            "--workers",
            "2",
            "--readiness",
            "notify",
            "--pid-file",
            &pid_file,
            "--log-file",
            &log,
            "--",
            python(),
            &worker,
            "--boot-delay",
            "1",
        ],
        Duration::from_secs(20),
    );
    // run_bounded also waited for EOF on the launcher's stdout and stderr: the daemon
    // does not hold them.
    assert_eq!(status.code(), Some(0), "{out}{err}\nlog:\n{}", read(&log));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "returned before the workers were ready"
    );
    // Ready means serving, right now.
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::io::Write::write_all(&mut stream, b"hi\n").unwrap();
    let mut answer = String::new();
    stream.set_read_timeout(Some(T)).unwrap();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("pid="), "{answer}");

    let pid = daemon_pid(&pid_file);
    let (state, ppid, pgrp, session, tty) = stat(pid).expect("the daemon runs");
    assert_ne!(state, 'Z');
    assert_eq!(tty, 0, "the daemon has a controlling terminal");
    let (_, _, _, my_session, _) = stat(std::process::id()).unwrap();
    assert_ne!(
        session, my_session,
        "the daemon stayed in the test's session"
    );
    // Double fork: a new session led by the intermediate child, which is gone (reaped by
    // the launcher: no zombie), so the daemon can never acquire a terminal.
    assert_eq!(pgrp, session);
    assert_ne!(session, pid, "the daemon leads its session");
    assert!(
        stat(session).is_none_or(|(s, ..)| s != 'Z'),
        "the intermediate child is a zombie"
    );
    assert_ne!(ppid, std::process::id());
    assert!(read(&log).contains("drover started"));

    // Clean stop through the pid file.
    signal(pid, libc::SIGTERM);
    wait_until("the daemon's exit", T, || {
        stat(pid).is_none_or(|(s, ..)| s == 'Z')
    });
    wait_until("the pid file removed", T, || {
        !std::path::Path::new(&pid_file).exists()
    });
}

#[test]
fn daemonize_prints_the_start_up_error_and_fails() {
    let dir = test_dir("daemon-fails");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let pid_file = dir.path("drover.pid");
    let worker = dir.path("worker.py");
    let (status, _, err) = run_bounded(
        DROVER,
        &[
            "run",
            "--daemonize",
            "--listen",
            &addr,
            "--pid-file",
            &pid_file,
            "--",
            python(),
            &worker,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("address already in use"), "{err}");
    assert!(!std::path::Path::new(&pid_file).exists());
    assert_no_survivors(dir.root(), &err);
    // A bad flag is still a usage error before any fork.
    let (status, _, err) = run_bounded(
        DROVER,
        &["run", "--daemonize", "--log-format", "xml", "--", "true"],
        T,
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--log-format"), "{err}");
}

#[test]
fn a_daemon_that_dies_before_ready_fails_its_launcher() {
    let dir = test_dir("daemon-dies");
    let pid_file = dir.path("drover.pid");
    let log = dir.path("drover.log");
    let worker = dir.path("worker.py");
    let args = [
        "run",
        "--daemonize",
        "--listen",
        "127.0.0.1:0",
        "--readiness",
        "notify",
        "--pid-file",
        &pid_file,
        "--log-file",
        &log,
        "--",
        python(),
        &worker,
        "--boot-delay",
        "30",
    ];
    let launcher = std::thread::spawn({
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run_bounded(DROVER, &args, Duration::from_secs(30))
        }
    });
    wait_until("the daemon's pid file", T, || {
        read(&pid_file).trim().parse::<u32>().is_ok()
    });
    signal(daemon_pid(&pid_file), libc::SIGKILL);
    let (status, _, err) = launcher.join().unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("exited before the pool was ready") && err.contains(&log),
        "{err}"
    );
}

#[test]
fn a_supervised_daemon_is_ready_with_its_child_and_both_reopen_on_hup() {
    let dir = test_dir("daemon-supervise");
    let pid_file = dir.path("drover.pid");
    let log = dir.path("drover.log");
    let control = dir.path("control.sock");
    let worker = dir.path("worker.py");
    let (status, out, err) = run_bounded(
        DROVER,
        &[
            "run",
            "--supervise",
            "--daemonize",
            "--listen",
            "127.0.0.1:0",
            "--readiness",
            "notify",
            "--pid-file",
            &pid_file,
            "--log-file",
            &log,
            "--control",
            &control,
            "--worker-output",
            "log",
            "--",
            python(),
            &worker,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(0), "{out}{err}\nlog:\n{}", read(&log));
    // Ready: the drover under the parent answers, and its worker said its line.
    let (code, answer, err) = client(&["status", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    assert!(answer.contains("\"ready\": 1"), "{answer}");
    assert!(read(&log).contains("worker pid="));
    let parent = daemon_pid(&pid_file);
    let (_, _, _, _, tty) = stat(parent).unwrap();
    assert_eq!(tty, 0);

    std::fs::rename(&log, format!("{log}.1")).unwrap();
    signal(parent, libc::SIGHUP);
    wait_until("both drovers reopened", T, || {
        lines_with(&log, &["SIGHUP: reopened the log file"]).len() == 2
    });
    let pids: std::collections::BTreeSet<String> =
        lines_with(&log, &["SIGHUP: reopened the log file"])
            .iter()
            .map(|l| {
                l.split("pid=")
                    .nth(1)
                    .unwrap()
                    .split('}')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
    assert_eq!(
        pids.len(),
        2,
        "the parent and the drover under it: {pids:?}"
    );
    assert!(pids.contains(&parent.to_string()), "{pids:?}");
    // Their stderr (the daemon's, inherited by the drover under it) follows the log too.
    for pid in &pids {
        let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
        assert_eq!(stderr.to_string_lossy(), log, "stderr of drover {pid}");
    }

    signal(parent, libc::SIGTERM);
    wait_until("the daemon's exit", T, || {
        stat(parent).is_none_or(|(s, ..)| s == 'Z')
    });
    assert_no_survivors(dir.root(), &read(&log));
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
fn a_daemon_whose_worker_fails_before_ready_fails_its_start_and_stops() {
    let dir = test_dir("daemon-worker-fails");
    let pid_file = dir.path("drover.pid");
    let log = dir.path("drover.log");
    let script = dir.path("broken.sh");
    std::fs::write(&script, "echo 'cannot load the app' >&2; exit 3\n").unwrap();
    let started = Instant::now();
    let (status, _, err) = run_bounded(
        DROVER,
        &[
            "run",
            "--daemonize",
            "--listen",
            "127.0.0.1:0",
            "--readiness",
            "notify",
            "--pid-file",
            &pid_file,
            "--log-file",
            &log,
            "--",
            "sh",
            &script,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("exit code 3") && err.contains("before the pool was ready"),
        "{err}"
    );
    assert!(started.elapsed() < T, "{:?}", started.elapsed());
    // The daemon stopped: nothing left running, the pid file gone, the worker's words in
    // the log (its stderr is drover's, which is the log file).
    assert_no_survivors(dir.root(), &read(&log));
    wait_until("the pid file removed", T, || {
        !std::path::Path::new(&pid_file).exists()
    });
    assert!(read(&log).contains("cannot load the app"), "{}", read(&log));
}

#[test]
fn a_daemon_ready_at_spawn_returns_at_once_and_an_embedded_one_when_serving() {
    // `--readiness spawn`: the pool is ready within drover's start-up itself.
    let dir = test_dir("daemon-spawn");
    let pid_file = dir.path("drover.pid");
    let script = dir.path("idle.sh");
    std::fs::write(&script, "exec sleep 60\n").unwrap();
    let (status, _, err) = run_bounded(
        DROVER,
        &[
            "run",
            "--daemonize",
            "--listen",
            "127.0.0.1:0",
            "--pid-file",
            &pid_file,
            "--",
            "sh",
            &script,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(0), "{err}");
    let pid = daemon_pid(&pid_file);
    signal(pid, libc::SIGTERM);
    wait_until("the daemon's exit", T, || {
        stat(pid).is_none_or(|(s, ..)| s == 'Z')
    });

    // The embedded runtime: `Server::run` returns the launcher's code in the launcher.
    let dir = TempDir::new("daemon-embedded");
    let pid_file = dir.path("hello.pid");
    let log = dir.path("hello.log");
    let sock = dir.path("web.sock");
    let listen = format!("unix:{sock}");
    let (status, _, err) = run_bounded(
        hello_bin(),
        &[
            "--daemonize",
            "--listen",
            &listen,
            "--workers",
            "2",
            "--pid-file",
            &pid_file,
            "--log-file",
            &log,
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(0), "{err}\n{}", read(&log));
    let mut stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    std::io::Write::write_all(&mut stream, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let pid = daemon_pid(&pid_file);
    signal(pid, libc::SIGTERM);
    wait_until("the embedded daemon's exit", T, || {
        stat(pid).is_none_or(|(s, ..)| s == 'Z')
    });
}
