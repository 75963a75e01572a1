//! End-to-end tests of `--daemonize`: the launching command returns once the pool is
//! ready (or with the start-up error), the daemon is detached (no terminal, a session of
//! its own, no zombie left), and `--supervise` and the embedded runtime daemonize too. Every
//! daemon is found through its pid file and killed with the test's directory.

pub mod common;

use common::*;
use std::time::{Duration, Instant};

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
    let (code, answer, err) = client(&["status", "--json", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    assert!(answer.contains("\"ready\": 1"), "{answer}");
    assert!(read(&log).contains("worker pid="));
    let parent = daemon_pid(&pid_file);
    let (_, _, _, _, tty) = stat(parent).unwrap();
    assert_eq!(tty, 0);

    std::fs::rename(&log, format!("{log}.1")).unwrap();
    signal(parent, libc::SIGHUP);
    wait_until("both drovers reopened", T, || {
        lines_with(&log, &["signal HUP: reopened the log file"]).len() == 2
    });
    let pids: std::collections::BTreeSet<String> =
        lines_with(&log, &["signal HUP: reopened the log file"])
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
