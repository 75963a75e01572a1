//! Zero-downtime end to end: a bounded client loop (a fresh connection per request, several
//! threads) runs against `drover run` with a python command worker and against the embedded
//! `hello`, across a rolling restart, a live upgrade, and a live upgrade whose successor
//! crashes during boot (rollback); and against `drover run --supervise` across a crash of
//! the supervised drover and its side-by-side replacement.
//!
//! The server binary is copied into the test's directory first: a live upgrade re-executes
//! it from disk, so replacing the file is how a test ships a "new build" (a broken one for
//! the rollback), and every process of the test names the directory (the survivor guard).

pub mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// Client threads: several, so a request is always in flight when a drover hands over.
const CLIENTS: usize = 4;
const REQUESTS_MAX: u64 = 2_000_000;
const LOAD_TIME_MAX: Duration = Duration::from_secs(120);
/// Answers to wait for after each step, so each step is crossed under load.
const PROGRESS: u64 = 200;

fn copy_binary(from: &Path, dir: &TempDir, name: &str) -> String {
    let to = dir.path(name);
    std::fs::copy(from, &to).unwrap();
    to
}

/// A copy of `drover` in the test directory, started as `drover run [flags]
/// --listen 127.0.0.1:0 --readiness notify --pid-file PID --control CTL -- python3
/// worker.py [worker_args]`: (server, binary, pid file, control socket).
fn python_pool(
    dir: TempDir,
    flags: &[&str],
    worker_args: &[&str],
    env: &[(&str, &str)],
) -> (Server, String, String, String) {
    let binary = copy_binary(Path::new(DROVER), &dir, "drover");
    let (worker, pid, ctl) = (dir.path("worker.py"), dir.path("pid"), dir.path("ctl"));
    let mut args = vec!["run"];
    args.extend_from_slice(flags);
    args.extend([
        "--listen",
        "127.0.0.1:0",
        "--readiness",
        "notify",
        "--pid-file",
        &pid,
        "--control",
        &ctl,
        "--",
        python(),
        &worker,
    ]);
    args.extend_from_slice(worker_args);
    let server = Server::start_with_env(dir, &binary, &args, env);
    (server, binary, pid, ctl)
}

/// Replaces the binary the way a deployment does (rename over it: the running file stays
/// intact), here with a "build" that crashes a moment after it starts.
fn ship_broken_build(path: &str) {
    let temp = format!("{path}.new");
    std::fs::write(
        &temp,
        "#!/bin/sh\necho 'broken build: crashing during boot' >&2\nsleep 0.2\nkill -SEGV $$\n",
    )
    .unwrap();
    std::fs::set_permissions(&temp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

fn control(ctl: &str, cmd: &str) -> (i32, String, String) {
    let (status, out, err) = run_bounded(DROVER, &[cmd, "--control", ctl], Duration::from_secs(90));
    (status.code().unwrap_or(-1), out, err)
}

fn status(ctl: &str) -> Value {
    let (status, out, err) = run_bounded(
        DROVER,
        &["status", "--json", "--control", ctl],
        Duration::from_secs(90),
    );
    let code = status.code().unwrap_or(-1);
    assert_eq!(code, 0, "status failed: {err}");
    serde_json::from_str(&out).unwrap()
}

/// `BINARY run --config CONFIG --control CTL` in `dir`, once its pool is ready.
fn config_pool(dir: TempDir, binary: &str, config: &str, ctl: &str) -> Server {
    let server = Server::start(dir, binary, &["run", "--config", config, "--control", ctl]);
    wait_until("the pool is ready", T, || {
        Path::new(ctl).exists() && settled(ctl, 1)
    });
    server
}

/// The pid file's pid (None while it is missing or being replaced).
fn pid_in(path: &str) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn worker_pids(s: &Value) -> BTreeSet<u32> {
    s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .map(|p| p as u32)
        .collect()
}

/// The pool in charge has `target` Ready workers, all of generation `generation`.
fn settled(ctl: &str, generation: u64) -> bool {
    let s = status(ctl);
    let workers = s["workers"].as_array().unwrap();
    s["ready"] == s["target"]
        && workers.len() as u64 == s["target"].as_u64().unwrap()
        && workers.iter().all(|w| {
            w["generation"].as_u64() == Some(generation)
                && matches!(w["state"].as_str(), Some("idle" | "busy"))
        })
}

fn wait_progress(load: &Load, what: &str) {
    let from = load.ok();
    wait_until(what, T, || load.ok() >= from + PROGRESS);
}

/// The whole sequence against one server, started by the test with `--pid-file PID` and
/// `--control CTL` in its directory.
fn restart_upgrade_rollback(mut server: Server, binary: &str, proto: Proto) {
    let ctl = server.dir.path("ctl");
    let pid_file = server.dir.path("pid");
    let dir = server.dir.root().to_path_buf();
    wait_until("the pool is ready", T, || {
        Path::new(&ctl).exists() && settled(&ctl, 1)
    });
    let first = server.pid();
    assert_eq!(pid_in(&pid_file), Some(first));
    let load = Load::start(server.addr(), proto, CLIENTS, REQUESTS_MAX, LOAD_TIME_MAX);
    wait_progress(&load, "answers before the rolling restart");

    // 1. Rolling restart: every worker replaced, one at a time.
    let before = worker_pids(&status(&ctl));
    let (code, _, err) = control(&ctl, "restart");
    assert_eq!(code, 0, "{err}");
    wait_until(
        "the rolling restart completes",
        Duration::from_secs(30),
        || settled(&ctl, 2),
    );
    assert!(worker_pids(&status(&ctl)).is_disjoint(&before));
    wait_progress(&load, "answers after the rolling restart");

    // 2. Live upgrade: `drover upgrade` answers once the successor took over.
    let old_workers = worker_pids(&status(&ctl));
    let (code, out, err) = control(&ctl, "upgrade");
    assert_eq!(code, 0, "upgrade failed: {err}\n{}", server.log.dump());
    let answer: Value = serde_json::from_str(&out).unwrap();
    let successor = answer["successor_pid"].as_u64().unwrap() as u32;
    assert_ne!(successor, first);
    assert_eq!(
        server.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "the predecessor must drain and exit 0; log:\n{}",
        server.log.dump()
    );
    assert_eq!(
        pid_in(&pid_file),
        Some(successor),
        "the pid file names the successor"
    );
    let s = status(&ctl);
    assert_eq!(
        s["pid"].as_u64(),
        Some(successor as u64),
        "control answers from the successor"
    );
    assert_eq!(s["role"], "primary");
    wait_until("the old generation is gone", T, || {
        let alive = survivors(&dir);
        !alive.contains(&first) && old_workers.iter().all(|p| !alive.contains(p))
    });
    wait_progress(&load, "answers from the successor");

    // 3. A broken build: the successor crashes during boot; the running drover keeps its
    // workers and the pid file, and `drover upgrade` reports the rollback.
    // Its generations go on from the predecessor's 2, so no two workers running during the
    // handover shared a slot and a generation.
    wait_until("the successor's pool is settled", T, || settled(&ctl, 3));
    let serving = worker_pids(&status(&ctl));
    let everyone: BTreeSet<u32> = survivors(&dir).into_iter().collect();
    ship_broken_build(binary);
    let (code, _, err) = control(&ctl, "upgrade");
    assert_ne!(code, 0, "an upgrade to a crashing build must fail");
    assert!(err.contains("rolled back"), "{err}");
    assert_eq!(
        pid_in(&pid_file),
        Some(successor),
        "the pid file still names the survivor"
    );
    let s = status(&ctl);
    assert_eq!(s["pid"].as_u64(), Some(successor as u64));
    assert_eq!(s["upgrade"]["state"], "idle");
    assert_eq!(
        worker_pids(&s),
        serving,
        "the workers must be untouched by a rollback"
    );
    wait_until("no process of the crashed successor is left", T, || {
        survivors(&dir).into_iter().collect::<BTreeSet<u32>>() == everyone
    });
    wait_progress(&load, "answers after the rollback");

    let r = load.stop();
    assert_eq!(
        r.failed,
        0,
        "requests failed across restart/upgrade/rollback: {r:?}\nlog:\n{}",
        server.log.dump()
    );
    assert!(
        r.ok >= 4 * PROGRESS,
        "too few answers to mean anything: {r:?}"
    );

    // The successor is not the test's child: stop it through its control socket.
    let (code, _, err) = control(&ctl, "stop");
    assert_eq!(code, 0, "{err}");
    wait_until("the successor exits", T, || !alive(successor));
    assert!(
        !Path::new(&pid_file).exists(),
        "the last drover removes its pid file"
    );
    assert!(
        !Path::new(&ctl).exists(),
        "the last drover removes its control socket"
    );
    assert_no_survivors(&dir, &server.log.dump());
}

#[test]
fn command_pool_fails_no_request_across_restart_upgrade_and_rollback() {
    let (server, binary, _, _) =
        python_pool(test_dir("upgrade-cmd"), &["--workers", "2"], &[], &[]);
    restart_upgrade_rollback(server, &binary, Proto::Line);
}

#[test]
fn embedded_hello_fails_no_request_across_restart_upgrade_and_rollback() {
    let dir = TempDir::new("upgrade-hello");
    let binary = copy_binary(hello_bin(), &dir, "hello");
    let (pid, ctl) = (dir.path("pid"), dir.path("ctl"));
    let server = Server::start(
        dir,
        &binary,
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--threads",
            "2",
            "--pid-file",
            &pid,
            "--control",
            &ctl,
        ],
    );
    restart_upgrade_rollback(server, &binary, Proto::Http);
}

#[test]
fn usr2_upgrades_and_a_second_upgrade_in_flight_is_refused() {
    // The successor's worker boots slowly: the upgrade stays in flight a while.
    let (mut server, _, pid, ctl) = python_pool(
        test_dir("upgrade-usr2"),
        &["--workers", "1"],
        &["--boot-delay", "1.5"],
        &[],
    );
    wait_until("the pool is ready", Duration::from_secs(20), || {
        Path::new(&ctl).exists() && settled(&ctl, 1)
    });
    server.signal(libc::SIGUSR2);
    server
        .log
        .wait_for(&["live upgrade: started successor pid"], T);
    let (code, _, err) = control(&ctl, "upgrade");
    assert_ne!(code, 0);
    assert!(
        err.contains("already in flight") || err.contains("in flight"),
        "{err}"
    );
    let first = server.pid();
    assert_eq!(server.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let successor = pid_in(&pid).unwrap();
    assert_ne!(successor, first);
    assert_eq!(status(&ctl)["pid"].as_u64(), Some(successor as u64));
    let (code, _, err) = control(&ctl, "stop");
    assert_eq!(code, 0, "{err}");
    wait_until("the successor exits", T, || !alive(successor));
    assert_no_survivors(server.dir.root(), &server.log.dump());
}

/// `drover run --supervise` over 2 python workers, once the supervised pool is ready:
/// (the parent, its pid file, the control socket).
fn supervised_pool(name: &str) -> (Server, String, String) {
    let (server, _, pid, ctl) =
        python_pool(test_dir(name), &["--supervise", "--workers", "2"], &[], &[]);
    wait_until("the supervised pool is ready", T, || {
        Path::new(&ctl).exists() && settled(&ctl, 1)
    });
    (server, pid, ctl)
}

#[test]
fn supervised_drover_is_restarted_after_a_crash_and_replaced_side_by_side() {
    let (mut server, pid, ctl) = supervised_pool("supervise");
    let parent = server.pid();
    assert_eq!(
        pid_in(&pid),
        Some(parent),
        "the pid file names the supervising parent"
    );
    let child = status(&ctl)["pid"].as_u64().unwrap() as u32;
    assert_eq!(status(&ctl)["role"], "supervised");
    assert_ne!(child, parent);

    // A crash of the supervised drover: its workers die with it, the parent starts a new
    // one on the same sockets.
    let workers = worker_pids(&status(&ctl));
    signal(child, libc::SIGKILL);
    wait_until("a new supervised drover serves", T, || {
        let s = std::panic::catch_unwind(|| status(&ctl));
        s.is_ok_and(|s| s["pid"].as_u64() != Some(child as u64) && s["ready"] == s["target"])
    });
    wait_until("the crashed drover's workers are gone", T, || {
        workers.iter().all(|p| !alive(*p))
    });
    let second = status(&ctl)["pid"].as_u64().unwrap() as u32;

    // USR2 to the parent: a new drover beside the old one, no request lost.
    let load = Load::start(
        server.addr(),
        Proto::Line,
        CLIENTS,
        REQUESTS_MAX,
        LOAD_TIME_MAX,
    );
    wait_progress(&load, "answers before the replacement");
    signal(parent, libc::SIGUSR2);
    wait_until(
        "the old supervised drover is replaced",
        Duration::from_secs(30),
        || !alive(second) && status(&ctl)["ready"] == status(&ctl)["target"],
    );
    wait_progress(&load, "answers after the replacement");
    let r = load.stop();
    assert_eq!(r.failed, 0, "{r:?}\nlog:\n{}", server.log.dump());
    assert_eq!(pid_in(&pid), Some(parent));

    // `drover stop` reaches the supervised drover; the whole service stops.
    let (code, _, err) = control(&ctl, "stop");
    assert_eq!(code, 0, "{err}");
    server.assert_clean_exit(Duration::from_secs(30));
    assert!(!Path::new(&pid).exists());
}

/// `kill -9` of the supervising parent: nothing of the service is left — the supervised
/// drover goes (PR_SET_PDEATHSIG and the parent's group guard), and its workers with it
/// (their own PR_SET_PDEATHSIG and the supervised drover's guard).
#[test]
fn a_killed_supervising_drover_leaves_nothing_behind() {
    let (mut server, _, ctl) = supervised_pool("supervise-kill");
    let s = status(&ctl);
    let child = s["pid"].as_u64().unwrap() as u32;
    let workers = worker_pids(&s);
    server.signal(libc::SIGKILL);
    server.wait_exit(T);
    wait_until("the supervised drover and its workers to die", T, || {
        !alive(child) && workers.iter().all(|p| !alive(*p))
    });
    assert_no_survivors(server.dir.root(), &server.log.dump());
}

/// A port nothing listens on right now (bound and released: good enough on loopback).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(path: &str, listen: &str, extra: &str, worker: &str) {
    std::fs::write(
        path,
        format!(
            "listen = [\"{listen}\"]\nworkers = 2\nreadiness = \"notify\"\n{extra}\ncommand = [\"{}\", \"{worker}\"]\n",
            python()
        ),
    )
    .unwrap();
}

#[test]
fn a_successor_not_ready_within_upgrade_timeout_is_killed_with_its_workers() {
    let dir = test_dir("upgrade-timeout");
    let binary = copy_binary(Path::new(DROVER), &dir, "drover");
    let (worker, ctl, config) = (
        dir.path("worker.py"),
        dir.path("ctl"),
        dir.path("drover.toml"),
    );
    let successor_config = dir.path("successor.toml");
    write_config(
        &config,
        "127.0.0.1:0",
        &format!("upgrade_timeout = 2\nupgrade_command = [\"{binary}\", \"run\", \"--config\", \"{successor_config}\", \"--control\", \"{ctl}\"]"),
        &worker,
    );
    // The successor's workers never get ready in time.
    std::fs::write(
        &successor_config,
        format!(
            "listen = [\"127.0.0.1:0\"]\nworkers = 2\nreadiness = \"notify\"\ncommand = [\"{}\", \"{worker}\", \"--boot-delay\", \"60\"]\n",
            python()
        ),
    )
    .unwrap();
    let mut server = config_pool(dir, &binary, &config, &ctl);
    let everyone: BTreeSet<u32> = survivors(server.dir.root()).into_iter().collect();
    let serving = worker_pids(&status(&ctl));
    let (code, _, err) = control(&ctl, "upgrade");
    assert_ne!(code, 0);
    assert!(
        err.contains("not ready within upgrade_timeout (2 s) and was killed"),
        "{err}\n{}",
        server.log.dump()
    );
    wait_until("the successor and its workers are gone", T, || {
        survivors(server.dir.root())
            .into_iter()
            .collect::<BTreeSet<u32>>()
            == everyone
    });
    let s = status(&ctl);
    assert_eq!(s["pid"].as_u64(), Some(server.pid() as u64));
    assert_eq!(worker_pids(&s), serving);
    assert!(request(server.port(), "hi", T).is_ok());
    server.signal(libc::SIGTERM);
    server.assert_clean_exit(T);
}

#[test]
fn listen_addresses_change_on_reload_and_an_unbindable_one_keeps_the_old_socket() {
    let dir = test_dir("relisten");
    let (worker, ctl, config) = (
        dir.path("worker.py"),
        dir.path("ctl"),
        dir.path("drover.toml"),
    );
    let (a, b) = (free_port(), free_port());
    write_config(&config, &format!("127.0.0.1:{a}"), "", &worker);
    let mut server = config_pool(dir, DROVER, &config, &ctl);
    assert!(request(a, "hi", T).is_ok());

    // A new address: opened before the old one closes; the workers roll onto it.
    write_config(&config, &format!("127.0.0.1:{b}"), "", &worker);
    let (code, _, err) = control(&ctl, "reload");
    assert_eq!(code, 0, "{err}");
    wait_until("the workers moved to the new address", T, || {
        settled(&ctl, 2)
    });
    assert!(request(b, "hi", T).is_ok(), "{}", server.log.dump());
    wait_until("the old address is closed", T, || {
        request(a, "hi", Duration::from_secs(1)).is_err()
    });
    let s = status(&ctl);
    assert_eq!(s["listeners"][0]["address"], format!("127.0.0.1:{b}"));

    // An address someone else holds: the running socket stays, and the answer says so.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let c = busy.local_addr().unwrap().port();
    write_config(&config, &format!("127.0.0.1:{c}"), "", &worker);
    let (code, out, err) = control(&ctl, "reload");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("address already in use")
            && out.contains(&format!("keeping the existing socket on 127.0.0.1:{b}")),
        "{out}"
    );
    assert!(request(b, "hi", T).is_ok());
    drop(busy);
    server.signal(libc::SIGTERM);
    server.assert_clean_exit(T);
}

/// Reads the datagrams drover sends to its own NOTIFY_SOCKET, in order.
struct FakeSystemd {
    socket: std::os::unix::net::UnixDatagram,
    seen: Vec<String>,
}

impl FakeSystemd {
    fn bind(path: &str) -> FakeSystemd {
        let socket = std::os::unix::net::UnixDatagram::bind(path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        FakeSystemd {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits for a message containing `part` and returns it.
    fn expect(&mut self, part: &str) -> String {
        self.expect_from(0, part)
    }

    /// Waits for a message containing `part`, the `from`th message or a later one.
    fn expect_from(&mut self, from: usize, part: &str) -> String {
        let deadline = std::time::Instant::now() + T;
        loop {
            if let Some(m) = self.seen.iter().skip(from).find(|m| m.contains(part)) {
                return m.clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {part:?} on NOTIFY_SOCKET; got {:?}",
                self.seen
            );
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                self.seen
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    fn position(&self, part: &str) -> usize {
        self.seen.iter().position(|m| m.contains(part)).unwrap()
    }
}

#[test]
fn drover_tells_its_service_manager_ready_reloading_mainpid_watchdog_and_stopping() {
    let dir = test_dir("sd-notify");
    let notify_path = dir.path("systemd.sock");
    let mut systemd = FakeSystemd::bind(&notify_path);
    let (server, _, _, ctl) = python_pool(
        dir,
        &["--workers", "2"],
        &[],
        &[
            ("NOTIFY_SOCKET", &notify_path),
            ("WATCHDOG_USEC", "1000000"),
        ],
    );
    let ready = systemd.expect("READY=1");
    assert!(ready.contains("STATUS=2 workers ready"), "{ready}");
    systemd.expect("WATCHDOG=1");
    // A reload: RELOADING=1, then READY=1 once the pool is settled again.
    let (code, _, err) = control(&ctl, "reload");
    assert_eq!(code, 0, "{err}");
    systemd.expect("RELOADING=1");
    let reload_at = systemd.position("RELOADING=1");
    systemd.expect_from(reload_at, "READY=1");
    let before_upgrade = systemd.seen.len();
    let (code, out, err) = control(&ctl, "upgrade");
    assert_eq!(code, 0, "{err}");
    let successor = serde_json::from_str::<Value>(&out).unwrap()["successor_pid"]
        .as_u64()
        .unwrap();
    let reloading = systemd.expect_from(before_upgrade, "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    systemd.expect(&format!("MAINPID={successor}"));
    let mut server = server;
    assert_eq!(server.wait_exit(T).code(), Some(0));
    // The successor's READY=1 comes after the MAINPID= that names it.
    let mainpid_at = systemd.position(&format!("MAINPID={successor}"));
    systemd.expect_from(mainpid_at, "READY=1");
    let (code, _, err) = control(&ctl, "stop");
    assert_eq!(code, 0, "{err}");
    systemd.expect("STOPPING=1");
    wait_until("the successor exits", T, || !alive(successor as u32));
    assert_no_survivors(server.dir.root(), &server.log.dump());
}

#[test]
fn a_live_upgrade_can_move_to_a_new_address() {
    let dir = test_dir("upgrade-relisten");
    let binary = copy_binary(Path::new(DROVER), &dir, "drover");
    let (worker, ctl, config) = (
        dir.path("worker.py"),
        dir.path("ctl"),
        dir.path("drover.toml"),
    );
    let (a, b) = (free_port(), free_port());
    write_config(&config, &format!("127.0.0.1:{a}"), "", &worker);
    let mut server = config_pool(dir, &binary, &config, &ctl);
    write_config(&config, &format!("127.0.0.1:{b}"), "", &worker);
    let (code, out, err) = control(&ctl, "upgrade");
    assert_eq!(code, 0, "{err}\n{}", server.log.dump());
    let successor = serde_json::from_str::<Value>(&out).unwrap()["successor_pid"]
        .as_u64()
        .unwrap() as u32;
    assert_eq!(server.wait_exit(T).code(), Some(0));
    assert!(request(b, "hi", T).is_ok(), "{}", server.log.dump());
    assert!(
        request(a, "hi", Duration::from_secs(1)).is_err(),
        "the old address must be closed"
    );
    assert_eq!(
        status(&ctl)["listeners"][0]["address"],
        format!("127.0.0.1:{b}")
    );
    let (code, _, err) = control(&ctl, "stop");
    assert_eq!(code, 0, "{err}");
    wait_until("the successor exits", T, || !alive(successor));
    assert_no_survivors(server.dir.root(), &server.log.dump());
}
