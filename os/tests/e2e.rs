//! End-to-end tests of the `drover` binary: real processes on loopback, python3 workers
//! written to a temp dir, every wait bounded by a deadline, every process killed on drop.

pub mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ harness

fn drover(dir: TempDir, args: &[&str]) -> Server {
    Server::start(dir, DROVER, args)
}

/// `drover run --listen 127.0.0.1:0 FLAGS -- python3 worker.py WORKER_ARGS` in `dir`: the
/// kernel picks the port, so tests running at once never collide.
fn python_pool(dir: TempDir, flags: &[&str], worker_args: &[&str]) -> Server {
    let worker = dir.path("worker.py");
    let mut args = vec!["run", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    args.extend(["--", python(), &worker]);
    args.extend_from_slice(worker_args);
    drover(dir, &args)
}

/// `drover run --listen 127.0.0.1:0 FLAGS -- sh -c SCRIPT` in `dir`: a worker whose first
/// process is a shell.
fn sh_pool(dir: TempDir, flags: &[&str], script: &str) -> Server {
    let mut args = vec!["run", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(flags);
    args.extend(["--", "sh", "-c", script]);
    drover(dir, &args)
}

// ------------------------------------------------------------------ tests

#[test]
fn crashed_worker_is_replaced_and_workers_get_the_systemd_environment() {
    let dir = test_dir("crash");
    let worker = dir.path("worker.py");
    let d = drover(
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
    for line in d.log.wait_for_n(&["worker pid="], 2, T) {
        assert!(line.contains("listen_pid_ok=True"), "{line}");
        assert!(line.contains("names=web"), "{line}");
        assert!(
            line.contains("leaked=[]"),
            "fds leaked into a worker: {line}"
        );
    }
    assert!(request(port, "hello", T).unwrap().starts_with("pid="));

    signal(old, libc::SIGKILL);
    d.log.wait_for(
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
    let dir = test_dir("hang");
    let d = python_pool(
        dir,
        &[
            "--workers",
            "1",
            "--heartbeat-timeout",
            "1",
            "--log-level",
            "debug",
        ],
        &[],
    );
    let pid = d.worker_pid("0.1");
    // Heartbeats keep it alive past the timeout: 6 of them at 0.25 s span 1.25 s.
    d.log.wait_for_n(&["in  heartbeat", "w=0.1"], 6, T);
    assert_eq!(d.log.count(&["retiring"]), 0, "log:\n{}", d.log.dump());

    signal(pid, libc::SIGSTOP);
    d.log
        .wait_for(&["ev  retiring", "w=0.1", "reason=heartbeat-timeout"], T);
    d.log.wait_for(
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
    let dir = test_dir("drain");
    let mut d = python_pool(dir, &["--workers", "1", "--stop-timeout", "20"], &[]);
    let port = d.port();
    let pid = d.worker_pid("0.1");
    let client = std::thread::spawn(move || request(port, "slow 1.5", T));
    d.log.wait_for(&["handling slow 1.5"], T);
    let asked = Instant::now();
    d.signal(libc::SIGTERM);
    d.log.wait_for(
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
    assert!(
        d.log
            .count(&["ev  exited", "w=0.1", "status=code:0", "expected=yes"])
            == 1
    );
}

#[test]
fn second_term_stops_at_once() {
    let dir = test_dir("term2");
    let mut d = python_pool(
        dir,
        &["--workers", "2", "--stop-timeout", "60"],
        &["--ignore-term"],
    );
    // STATUS=serving comes after the worker set TERM to ignored: a TERM before that would
    // kill it (the default action) and there would be nothing left to escalate.
    d.log.wait_for_n(&["status: serving"], 2, T);
    d.signal(libc::SIGTERM);
    d.log
        .wait_for_n(&["do  signal", "sig=TERM", "reason=stop"], 2, T);
    let second = Instant::now();
    d.signal(libc::SIGTERM);
    d.log
        .wait_for_n(&["do  signal", "sig=KILL", "reason=stop"], 2, T);
    d.assert_clean_exit(T);
    assert!(second.elapsed() < Duration::from_secs(10));
}

#[test]
fn workers_die_with_drover_after_kill_9() {
    let dir = test_dir("orphans");
    let mut d = python_pool(dir, &["--workers", "3"], &[]);
    let pids: Vec<u32> = ["0.1", "1.1", "2.1"]
        .iter()
        .map(|w| d.worker_pid(w))
        .collect();
    d.log.wait_for_n(&["worker pid="], 3, T);
    d.signal(libc::SIGKILL);
    d.wait_exit(T);
    wait_until("every worker to die with drover", T, || {
        pids.iter().all(|&p| !alive(p))
    });
    assert_no_survivors(d.dir.root(), &d.log.dump());
}

/// A worker is its process group: behind `sh -c 'PROGRAM; true'` the shell is the process
/// drover started and PROGRAM its child. A stop ends the shell at once while PROGRAM drains
/// for a second; drover waits for PROGRAM before it exits. A shell that dies on its own
/// leaves PROGRAM to be stopped (TERM, so it drains) and counts as a crash, as systemd
/// treats a service whose main process exited. And a `kill -9` of drover, which
/// PR_SET_PDEATHSIG passes on to the shell only, reaches PROGRAM through the group guard.
#[test]
fn a_worker_is_its_process_group() {
    let start = |name: &str| {
        let dir = test_dir(name);
        let script = format!(
            "{} {} --stop-delay 1; true",
            python(),
            dir.path("worker.py")
        );
        let d = sh_pool(dir, &["--workers", "1", "--readiness", "notify"], &script);
        d.log.wait_for(&["in  ready", "w=0.1"], T);
        let line = d.log.wait_for(&["worker pid="], T);
        let program: u32 = field(&line, "pid=").parse().unwrap();
        assert_ne!(
            program,
            d.worker_pid("0.1"),
            "sh stays the program's parent"
        );
        (d, program)
    };

    let (mut d, program) = start("group-stop");
    d.signal(libc::SIGTERM);
    d.log.wait_for(&["while its process group still runs"], T);
    d.assert_clean_exit(T);
    assert!(!alive(program), "drover exited before its worker's program");
    let exited = d.log.wait_for(&["ev  exited", "w=0.1"], T);
    assert!(exited.contains("expected=yes"), "{exited}");

    let (mut d, program) = start("group-main");
    signal(d.worker_pid("0.1"), libc::SIGKILL);
    d.log
        .wait_for(&["ev  retiring", "w=0.1", "reason=main-exited"], T);
    let exited = d.log.wait_for(&["ev  exited", "w=0.1"], T);
    assert!(
        exited.contains("status=signal:9") && exited.contains("expected=no"),
        "{exited}"
    );
    assert!(
        !alive(program),
        "the group is empty before the worker counts as exited"
    );
    d.log.wait_for(&["in  ready", "w=0.2"], T);
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);

    let (mut d, program) = start("group-kill");
    d.signal(libc::SIGKILL);
    d.wait_exit(T);
    wait_until("the program behind sh -c to die with drover", T, || {
        !alive(program)
    });
    assert_no_survivors(d.dir.root(), &d.log.dump());
}

/// A worker whose child died before it (a zombie, re-parented to drover when the worker
/// exits) has exited with its group: the zombie holds the group's number until drover reaps
/// it, and was taken for a process that still runs (a spurious main-exited).
#[test]
fn a_worker_leaving_a_zombie_child_exits_with_its_group() {
    let dir = test_dir("zombie-sibling");
    let worker = dir.path("zombie.py");
    std::fs::write(
        &worker,
        r#"
import os, socket, sys, time
def notify(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg.encode(), os.environ["NOTIFY_SOCKET"]); s.close()
marker = sys.argv[1]
if os.path.exists(marker):
    notify("READY=1")
    time.sleep(3600)
open(marker, "w").close()
child = os.fork()
if child == 0:
    os._exit(0)
# The child must be dead and unreaped when this process exits (bounded wait).
for _ in range(1000):
    st = open(f"/proc/{child}/stat").read()
    if st[st.rfind(")") + 2] == "Z":
        break
    time.sleep(0.01)
notify("READY=1")
os._exit(3)
"#,
    )
    .unwrap();
    let marker = dir.path("crashed-once");
    let mut d = drover(
        dir,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--readiness",
            "notify",
            "--",
            python(),
            &worker,
            &marker,
        ],
    );
    let exited = d.log.wait_for(&["ev  exited", "w=0.1"], T);
    assert!(exited.contains("status=code:3"), "{exited}");
    d.log.wait_for(&["in  ready", "w=0.2"], T);
    let log = d.log.dump();
    assert!(
        !log.contains("while its process group still runs") && !log.contains("main-exited"),
        "a zombie was taken for a live process of the worker's group:\n{log}"
    );
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

/// drover's group guard among its children (named `drover-guard`).
fn guard_of(drover: u32) -> Option<u32> {
    let children = std::fs::read_dir(format!("/proc/{drover}/task"))
        .ok()?
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>();
    children.into_iter().find(|c| {
        std::fs::read_to_string(format!("/proc/{c}/comm")).is_ok_and(|n| n.trim() == "drover-guard")
    })
}

/// A killed group guard used to leave drover unguarded: a SIGKILL of drover afterwards left
/// a worker's other processes (here python behind `sh -c`) running. A new guard takes
/// over every live group.
#[test]
fn a_killed_group_guard_is_replaced() {
    let dir = test_dir("guard-replaced");
    let script = format!("{} {}; true", python(), dir.path("worker.py"));
    let mut d = sh_pool(dir, &["--workers", "1", "--readiness", "notify"], &script);
    d.log.wait_for(&["in  ready", "w=0.1"], T);
    let line = d.log.wait_for(&["worker pid="], T);
    let program: u32 = field(&line, "pid=").parse().unwrap();
    let first = guard_of(d.pid()).expect("drover runs a group guard");
    signal(first, libc::SIGKILL);
    d.log.wait_for(&["a new group guard"], T);
    // Named once the forked guard has run its first lines: until then it has drover's.
    wait_until("the new guard names itself", T, || {
        guard_of(d.pid()).is_some_and(|g| g != first)
    });
    d.signal(libc::SIGKILL);
    d.wait_exit(T);
    wait_until("the program behind sh -c to die with drover", T, || {
        !alive(program)
    });
    assert_no_survivors(d.dir.root(), &d.log.dump());
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let dir = test_dir("bad");
    let worker = dir.path("worker.py");
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
        let (status, _, stderr) = run_bounded(DROVER, &args, T);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: expected {needle:?} in: {stderr}"
        );
    }
    assert_no_survivors(dir.root(), "");
}

#[test]
fn notifications_from_behind_sh_c_reach_the_right_worker() {
    let dir = test_dir("shc");
    let worker = dir.path("worker.py");
    let control = dir.path("ctl");
    // `; exit $?` keeps sh as the parent, so python3 is drover's grandchild.
    let script = format!("{} {worker}; exit $?", python());
    let mut d = sh_pool(
        dir,
        &[
            "--workers",
            "1",
            "--readiness",
            "notify",
            "--boot-timeout",
            "8",
            "--control",
            &control,
        ],
        &script,
    );
    let sh = d.worker_pid("0.1");
    let line = d.log.wait_for(&["worker pid="], T);
    let python: u32 = field(&line, "pid=").parse().unwrap();
    assert_ne!(
        python, sh,
        "sh exec'd the program; the test needs a grandchild"
    );
    d.log.wait_for(&["in  ready", "w=0.1"], T);
    d.log
        .wait_for(&["w=0.1", &format!("pid={python} "), "status: serving"], T);
    let (code, out, _) = client(&["status", "--json", "--control", &control]);
    assert_eq!(code, 0);
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["workers"][0]["state"], "idle", "{out}");
    // TERM reaches the whole worker group. dash dies of it at once, and drover counts the
    // worker gone with it; python, reparented, finishes on its own a moment later.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(T).code(), Some(0), "log:\n{}", d.log.dump());
    wait_until("python behind sh to exit", T, || !alive(python));
}

#[test]
fn control_socket_pid_file_and_malformed_requests() {
    let dir = test_dir("ctl");
    let worker = dir.path("worker.py");
    let control = dir.path("ctl");
    let pid_file = dir.path("drover.pid");
    let mut d = python_pool(
        dir,
        &[
            "--workers",
            "1",
            "--control",
            &control,
            "--pid-file",
            &pid_file,
        ],
        &[],
    );
    let pid = d.worker_pid("0.1");
    wait_until("the pid file", T, || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.trim() == d.pid().to_string())
    });

    let (code, out, err) = client(&["status", "--json", "--control", &control]);
    assert_eq!(code, 0, "{err}");
    let status: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["workers"][0]["pid"], pid);
    assert_eq!(status["workers"][0]["generation"], 1);
    assert_eq!(status["workers"][0]["restarts"], 0);

    // A second drover on the same pid file refuses, and leaves the first one's file alone.
    let (status2, _, stderr) = run_bounded(
        DROVER,
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
    d.log.wait_for(&["ev  retiring", "reason=scale-down"], T);

    let (code, _, _) = client(&["stop", "--control", &control]);
    assert_eq!(code, 0);
    d.assert_clean_exit(T);
    assert!(!Path::new(&pid_file).exists(), "pid file removed at exit");
    assert!(
        !Path::new(&control).exists(),
        "control socket removed at exit"
    );
}

/// A worker killed from outside (the OOM killer, an operator) is no bad release: five
/// SIGKILLs in a row, each of the replacement before, are each replaced at once, with no
/// backoff and no crash loop (the pool's default `intensity_deaths` would not be reached
/// anyway; the backoff would: 0, 1 s, 2 s, 4 s before this rule).
#[test]
fn a_worker_killed_from_outside_is_replaced_at_once_every_time() {
    let d = python_pool(test_dir("kills"), &["--workers", "2"], &[]);
    for k in 1..=5 {
        let pid = d.worker_pid(&format!("0.{k}"));
        signal(pid, libc::SIGKILL);
        d.log.wait_for_n(
            &["ev  backoff", "slot=0", "delay=0.000s", "cause=killed"],
            k,
            T,
        );
        wait_until("the killed worker to be reaped", T, || !alive(pid));
    }
    let replacement = d.worker_pid("0.6");
    assert!(alive(replacement));
    assert_eq!(
        d.log
            .count(&["ev  backoff", "cause=killed", "delay=0.000s"]),
        5,
        "log:\n{}",
        d.log.dump()
    );
    assert_eq!(d.log.count(&["crash-looping"]), 0);
    let mut d = d;
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn crash_loop_is_backed_off_while_drover_stays_up() {
    let dir = test_dir("loop");
    let mut d = drover(
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
    d.log
        .wait_for(&["ev  backoff", "slot=0", "delay=2.000s"], T);
    let spawns = d.log.count(&["do  spawn"]);
    assert!(
        spawns <= 3,
        "spawned {spawns} times; log:\n{}",
        d.log.dump()
    );
    assert!(d.running(), "drover stays up");
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn reload_applies_the_config_file_and_survives_a_bad_one() {
    let dir = test_dir("reload");
    let worker = dir.path("worker.py");
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
    let mut d = drover(dir, &["run", "--config", &config, "--control", &control]);
    d.worker_pid("0.1");
    write(2, "");
    d.signal(libc::SIGHUP);
    d.worker_pid("1.1");
    d.log.wait_for_n(&["worker pid=", "gen=1"], 2, T);
    // A new command is a new worker fingerprint: a rolling restart runs it.
    write(2, ", \"--boot-delay\", \"0\"");
    d.signal(libc::SIGHUP);
    d.log
        .wait_for(&["ev  reloaded", "gen=2", "rolling-restart=yes"], T);
    d.log.wait_for_n(&["worker pid=", "gen=2"], 2, T);
    write(0, "");
    let (code, _, err) = client(&["reload", "--control", &control]);
    assert_eq!(code, 1);
    assert!(err.contains("workers"), "{err}");
    d.signal(libc::SIGHUP);
    d.log.wait_for(&["reload failed"], T);
    assert!(d.running());
    d.signal(libc::SIGINT);
    d.assert_clean_exit(T);
}

#[test]
fn rolling_restart_under_load_fails_no_request() {
    let dir = test_dir("roll");
    let d = python_pool(
        dir,
        &["--workers", "2", "--readiness", "notify"],
        &["--boot-delay", "0.3"],
    );
    d.log.wait_for_n(&["in  ready"], 2, T);
    let old = [d.worker_pid("0.1"), d.worker_pid("1.1")];
    let load = Load::start(d.addr(), Proto::Line, 1, 1_000_000, Duration::from_secs(40));
    wait_until("answers from the first generation", T, || load.ok() >= 20);
    d.signal(libc::SIGUSR1);
    d.log
        .wait_for_n(&["ev  exited", "expected=yes"], 2, Duration::from_secs(20));
    d.log.wait_for_n(&["in  ready"], 4, T);
    let new: Vec<String> = d.log.wait_for_n(&["in  spawned"], 4, T)[2..]
        .iter()
        .map(|l| format!("pid={}", field(l, "pid=")))
        .collect();
    // Both old workers are gone: from here on only the new generation answers.
    let ok = load.ok();
    wait_until("answers from the new generation", T, || {
        load.ok() >= ok + 20
    });
    let r = load.stop();
    assert_eq!(r.failed, 0, "{r:?}");
    assert!(
        old.iter()
            .any(|p| r.answered_by.contains(&format!("pid={p}"))),
        "old {old:?}: {r:?}"
    );
    assert!(
        new.iter().any(|p| r.answered_by.contains(p)),
        "new {new:?}: {r:?}"
    );
    let mut d = d;
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn exec_failure_after_start_is_a_failed_spawn_with_backoff() {
    let dir = test_dir("exec");
    let script = dir.path("worker.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nexec {} {}\n", python(), dir.path("worker.py")),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut d = drover(dir, &["run", "--listen", "127.0.0.1:0", "--", &script]);
    let pid = d.worker_pid("0.1");
    d.log.wait_for(&["worker pid="], T);
    // The program disappears (a botched deploy): the next spawns fail in exec, in the child.
    std::fs::remove_file(&script).unwrap();
    signal(pid, libc::SIGKILL);
    d.log
        .wait_for(&["in  spawn-failed", "w=0.2", "error=exec"], T);
    d.log
        .wait_for(&["ev  backoff", "slot=0", "delay=1.000s"], T);
    assert!(d.running(), "drover stays up");
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn a_dynamic_pool_of_silent_workers_scales_on_the_accept_queue() {
    // The worker reports no load; connections waiting in the listener's accept queue
    // (TCP_INFO) are what tells the machine the pool is short.
    let dir = test_dir("backlog");
    let d = python_pool(dir, &["--min", "1", "--max", "4"], &[]);
    d.worker_pid("0.1");
    let port = d.port();
    // The pool starts with 2 workers (halfway between the default spares). Six slow
    // requests at once: two are served, four wait in the accept queue until the machine
    // sees the queue at its next tick and adds workers.
    let clients: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || request(port, "slow 2\n", Duration::from_secs(20))))
        .collect();
    d.log.wait_for(&["ev  scaled", "from=2", "to=3"], T);
    let served: Vec<String> = clients
        .into_iter()
        .map(|c| c.join().unwrap().expect("every queued request is served"))
        .collect();
    let pids: std::collections::BTreeSet<&str> = served.iter().map(|r| field(r, "pid")).collect();
    assert!(
        pids.len() >= 3,
        "the added workers served queued requests: {served:?}\n{}",
        d.log.dump()
    );
}

#[test]
fn the_readme_python_worker_serves_beats_and_drains() {
    // os/examples/worker.py is docs/protocol.md's "complete worker in Python"; copied into the test's
    // directory so the process guard recognises it.
    let dir = test_dir("readme");
    let worker = dir.path("readme_worker.py");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/worker.py"),
        &worker,
    )
    .unwrap();
    let mut d = drover(
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
    d.log.wait_for_n(&["in  ready"], 2, T);
    let port = d.port();
    let answer = request(port, "GET / HTTP/1.1\r\n\r", T).expect("the worker answers");
    assert!(
        answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("hello\n"),
        "{answer}"
    );
    // Heartbeats at half the timeout keep both workers alive past several timeouts, though
    // drover reads them in batches once their pace is known (`messages_due`): up to half a
    // timeout after they came, each dated by its arrival.
    let beats = d.log.wait_for_n(&["in  heartbeat-at"], 12, T);
    assert_eq!(d.log.count(&["heartbeat-timeout"]), 0, "{}", d.log.dump());
    // "<read>s  in  heartbeat-at  w=.. at=<arrived>s": how long each waited unread.
    let waited = |line: &String| -> Option<f64> {
        let secs = |s: &str| s.trim_end_matches('s').parse::<f64>().ok();
        let (head, tail) = line.split_once("  in  ")?;
        let read = secs(head.split_whitespace().last()?)?;
        let arrived = secs(tail.split("at=").nth(1)?.split_whitespace().next()?)?;
        Some(read - arrived)
    };
    let late = beats.iter().filter(|l| waited(l).is_some_and(|w| w > 0.3));
    assert!(
        late.count() > 0,
        "no heartbeat was read in a batch:\n{}",
        d.log.dump()
    );
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

// ------------------------------------------------------------------ the load client itself

/// A stand-in server for the load client's own tests: answers connection `n` (from 0) with
/// `answer(n)` and closes it, until a connection sends `quit`; returns how many it answered.
fn tiny_server(answer: impl Fn(u64) -> Vec<u8> + Send + 'static) -> (SocketAddr, JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        for (n, conn) in (0u64..).zip(listener.incoming()) {
            let mut conn = conn.unwrap();
            conn.set_read_timeout(Some(T)).unwrap();
            // The whole request: closing with unread bytes would send a reset, which may
            // destroy the answer before the client reads it.
            let mut req = Vec::new();
            let mut byte = [0u8; 1];
            while !(req.ends_with(b"\r\n\r\n") || req.ends_with(b"\n") && !req.starts_with(b"GET "))
                && conn.read(&mut byte).unwrap() == 1
            {
                req.push(byte[0]);
            }
            if req == b"quit\n" {
                return n;
            }
            conn.write_all(&answer(n)).unwrap();
        }
        unreachable!("incoming() never ends")
    });
    (addr, server)
}

fn stop_tiny_server(addr: SocketAddr, server: JoinHandle<u64>) -> u64 {
    TcpStream::connect(addr)
        .unwrap()
        .write_all(b"quit\n")
        .unwrap();
    server.join().unwrap()
}

#[test]
fn load_counts_line_answers_and_bad_ones() {
    // Every fourth answer lacks its newline: a worker that died mid-answer.
    let (addr, server) = tiny_server(|n| match n % 4 {
        3 => b"pid=9".to_vec(),
        _ => format!("pid={} id=0 gen=1\n", 7 + n % 2).into_bytes(),
    });
    let load = Load::start(addr, Proto::Line, 3, 40, T);
    wait_until("the load's 40 requests", T, || load.done());
    let r = load.stop();
    assert_eq!((r.ok, r.failed), (30, 10), "{r:?}");
    assert_eq!(
        r.answered_by,
        BTreeSet::from(["pid=7".to_string(), "pid=8".to_string()])
    );
    assert_eq!(r.errors.len(), 1, "one distinct error: {r:?}");
    assert!(r.errors[0].contains("bad answer: \"pid=9\""), "{r:?}");
    assert_eq!(stop_tiny_server(addr, server), 40);
}

#[test]
fn load_counts_http_answers_and_short_bodies() {
    let (addr, server) = tiny_server(|n| {
        let len = if n % 3 == 2 { 10 } else { 3 };
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nX-Drover-Worker: slot=0 pid=7 generation=1\r\n\r\nhi\n"
        )
        .into_bytes()
    });
    let load = Load::start(addr, Proto::Http, 2, 30, T);
    wait_until("the load's 30 requests", T, || load.done());
    let r = load.stop();
    assert_eq!((r.ok, r.failed), (20, 10), "{r:?}");
    assert_eq!(
        r.answered_by,
        BTreeSet::from(["slot=0 pid=7 generation=1".to_string()])
    );
    assert!(
        r.errors[0].contains("body of 3 byte(s), expected 10"),
        "{r:?}"
    );
    assert_eq!(stop_tiny_server(addr, server), 30);
}

#[test]
fn load_counts_refused_and_stuck_requests_and_keeps_its_bounds() {
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let load = Load::start(free, Proto::Line, 2, 20, T);
    wait_until("the load's 20 requests", T, || load.done());
    let r = load.stop();
    assert_eq!((r.ok, r.failed), (0, 20), "{r:?}");
    assert_eq!(r.errors.len(), 1, "{r:?}");
    assert!(r.errors[0].contains("connect: Connection refused"), "{r:?}");

    // max_time ends a load that max_requests would not.
    let (addr, server) = tiny_server(|_| b"pid=1\n".to_vec());
    let started = Instant::now();
    let load = Load::start(addr, Proto::Line, 1, u64::MAX, Duration::from_millis(300));
    wait_until("the load's time bound", T, || load.done());
    assert!(started.elapsed() >= Duration::from_millis(300));
    let r = load.stop();
    assert!(r.ok > 0 && r.failed == 0, "{r:?}");
    assert_eq!(stop_tiny_server(addr, server), r.ok);

    // The kernel completes the handshake of a listener that never accepts: the request is
    // sent and its answer never comes.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let load = Load::start(mute.local_addr().unwrap(), Proto::Line, 1, 1, T);
    wait_until("the stuck request to time out", T, || load.done());
    let r = load.stop();
    assert_eq!((r.ok, r.failed), (0, 1), "{r:?}");
    assert!(r.errors[0].contains("no complete answer"), "{r:?}");
}

// $PORT is the listener only when neither --listen nor the file's `listen` names one (the
// default itself, 0.0.0.0:$PORT, is a unit test: tests listen on 127.0.0.1 only); a PORT
// that is no port is refused at start, naming it.
#[test]
fn port_from_the_environment_yields_to_listen_and_a_bad_one_is_refused() {
    let dir = test_dir("port-env");
    let mut d = Server::start_with_env(
        dir,
        DROVER,
        &["run", "--listen", "127.0.0.1:0", "--", "sleep", "1000"],
        &[("PORT", "1")],
    );
    assert!(d.port() > 1, "--listen beats PORT");
    assert_eq!(d.log.count(&["listening on 0.0.0.0:1"]), 0);
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);

    let out = std::process::Command::new(DROVER)
        .args(["run", "--", "sleep", "1"])
        .env("PORT", "http")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("invalid PORT 'http'"), "{err}");
}
