//! End-to-end tests of what shapes the worker processes and drover's own: `--user`,
//! `--group` and `--drop-privileges` (real uid, gid and groups in /proc/<pid>/status),
//! `--umask`, `--chdir` and `--env` (`Umask:`, /proc/<pid>/cwd, /proc/<pid>/environ), and the
//! process titles `ps` and `top` show (/proc/<pid>/cmdline and comm). Tests run as root; a
//! test that needs root says so and returns when it is not.
//!
//! The user is `postgres` where it exists (uid 101, primary group 104, and a member of
//! `ssl-cert`, so supplementary groups show), else `nobody`.

pub mod common;

use common::*;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A system user with supplementary groups where there is one: (name, uid, gid, groups).
fn test_user() -> (String, u32, u32, Vec<u32>) {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let group = std::fs::read_to_string("/etc/group").unwrap();
    let entry = |name: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
    };
    let (name, (uid, gid)) = ["postgres", "nobody"]
        .iter()
        .find_map(|n| Some((n.to_string(), entry(n)?)))
        .expect("a user postgres or nobody");
    let mut groups: Vec<u32> = group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 3 && f[3].split(',').any(|m| m == name)).then(|| f[2].parse().ok())?
        })
        .collect();
    groups.push(gid);
    groups.sort_unstable();
    groups.dedup();
    (name, uid, gid, groups)
}

/// A python the user may run (python3 on PATH may live under root's home).
fn user_python() -> &'static str {
    let system = "/usr/bin/python3";
    if Path::new(system).exists() {
        system
    } else {
        python()
    }
}

/// A line of /proc/<pid>/status: `Uid:\t101\t101\t101\t101` gives ["101", "101", ...].
fn status_field(pid: u32, key: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn assert_identity(pid: u32, uid: u32, gid: u32, groups: &[u32], what: &str) {
    let all = |v: u32| vec![v.to_string(); 4];
    assert_eq!(status_field(pid, "Uid"), all(uid), "{what} {pid}: uid");
    assert_eq!(status_field(pid, "Gid"), all(gid), "{what} {pid}: gid");
    let mut got: Vec<u32> = status_field(pid, "Groups")
        .iter()
        .map(|g| g.parse().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, groups, "{what} {pid}: supplementary groups");
}

fn environ(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn status(ctl: &str) -> Value {
    let (code, out, err) = run_bounded(DROVER, &["status", "--json", "--control", ctl], T);
    assert!(code.success(), "{err}");
    serde_json::from_str(&out).unwrap()
}

/// The pids of the Ready workers, once `n` are.
fn ready_workers(ctl: &str, n: usize) -> Vec<u32> {
    let mut pids = Vec::new();
    wait_until("the workers are ready", T, || {
        if !Path::new(ctl).exists() {
            return false;
        }
        let s = status(ctl);
        let ready: Vec<u32> = s["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["state"] == "idle" || w["state"] == "busy")
            .filter_map(|w| w["pid"].as_u64().map(|p| p as u32))
            .collect();
        pids = ready;
        pids.len() == n
    });
    pids
}

/// `drover run ARGS`: (exit code, stderr), for start-up errors.
fn start_error(args: &[&str]) -> (i32, String) {
    let (status, _, err) = run_bounded(DROVER, args, T);
    (status.code().unwrap_or(-1), err)
}

#[test]
fn command_workers_run_as_the_user_with_its_groups_umask_directory_and_environment() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (user, uid, gid, groups) = test_user();
    let dir = test_dir("user-command");
    let ctl = dir.path("ctl");
    let work = dir.path("work");
    std::fs::create_dir(&work).unwrap();
    let worker = dir.path("worker.py");
    let d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--control",
            &ctl,
            "--workers",
            "2",
            // READY=1 must reach drover's notify socket from the other user.
            "--readiness",
            "notify",
            "--user",
            &user,
            "--umask",
            "027",
            "--chdir",
            &work,
            "--env",
            "GREETING=hello world",
            "--env",
            "PATH=/usr/bin:/bin",
            "--",
            user_python(),
            &worker,
        ],
    );
    let pids = ready_workers(&ctl, 2);
    for &pid in &pids {
        assert_identity(pid, uid, gid, &groups, "worker");
        assert_eq!(status_field(pid, "Umask"), ["0027"], "worker {pid}");
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
            Path::new(&work)
        );
        let env = environ(pid);
        assert!(env.contains(&"GREETING=hello world".to_string()), "{env:?}");
        // --env replaces an inherited variable of the same name: one PATH, ours.
        let paths: Vec<&String> = env.iter().filter(|v| v.starts_with("PATH=")).collect();
        assert_eq!(paths, ["PATH=/usr/bin:/bin"], "{env:?}");
    }
    // drover itself stays root and in its own directory.
    assert_eq!(status_field(d.pid(), "Uid")[0], "0");
    assert_ne!(
        std::fs::read_link(format!("/proc/{}/cwd", d.pid())).unwrap(),
        Path::new(&work)
    );
    assert!(request(d.port(), "hi", T).unwrap().starts_with("pid="));
    d.signal(libc::SIGTERM);
    let mut d = d;
    d.assert_clean_exit(T);
}

#[test]
fn group_replaces_the_primary_group() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // nobody's own entry lists it in no group: --group is its only one.
    let dir = test_dir("group");
    let ctl = dir.path("ctl");
    let d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--control",
            &ctl,
            "--user",
            "nobody",
            "--group",
            "daemon",
            "--",
            "sleep",
            "600",
        ],
    );
    let pid = ready_workers(&ctl, 1)[0];
    assert_identity(pid, 65534, 1, &[1], "worker");
    // A uid without a passwd entry works with --group.
    drop(d);
    let dir = test_dir("bare-uid");
    let ctl = dir.path("ctl");
    let _d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--control",
            &ctl,
            "--user",
            "4000123",
            "--group",
            "4000124",
            "--",
            "sleep",
            "600",
        ],
    );
    let pid = ready_workers(&ctl, 1)[0];
    assert_identity(pid, 4000123, 4000124, &[4000124], "worker");
}

#[test]
fn embedded_workers_run_as_the_user_in_their_directory_with_their_umask() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (user, uid, gid, groups) = test_user();
    let dir = TempDir::new("user-embedded");
    let ctl = dir.path("ctl");
    let work = dir.path("work");
    std::fs::create_dir(&work).unwrap();
    let d = Server::start(
        dir,
        hello_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--control",
            &ctl,
            "--workers",
            "2",
            "--heartbeat-timeout",
            "5",
            "--user",
            &user,
            "--umask",
            "077",
            "--chdir",
            &work,
        ],
    );
    // Ready means READY=1 reached the notify socket from the user.
    let pids = ready_workers(&ctl, 2);
    for &pid in &pids {
        assert_identity(pid, uid, gid, &groups, "embedded worker");
        assert_eq!(status_field(pid, "Umask"), ["0077"]);
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
            Path::new(&work)
        );
    }
    let mut d = d;
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn bad_values_are_errors_at_start_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--user", "no-such-user-xyz"], "--user"),
        (&["--group", "no-such-group-xyz"], "--group"),
        (&["--user", "4000123"], "--group"),
        (&["--drop-privileges"], "--drop-privileges"),
        (&["--umask", "8"], "--umask"),
        (&["--chdir", "/no/such/dir"], "--chdir"),
        (&["--env", "NOVALUE"], "--env"),
        (&["--env", "LISTEN_FDS=3"], "--env"),
    ];
    for (flags, named) in cases {
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend(["--", "true"]);
        let (code, err) = start_error(&args);
        assert_eq!(code, 2, "{flags:?}: {err}");
        assert!(err.contains(named), "{flags:?}: {err}");
    }
    // Not root: no other identity.
    if is_root() {
        use std::os::unix::process::CommandExt;
        let (_, uid, gid, _) = test_user();
        let out = std::process::Command::new(DROVER)
            .args(["run", "--user", "root", "--", "true"])
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--user") && err.contains("not as root"),
            "{err}"
        );
    }
    // The same from the config file.
    let dir = TempDir::new("bad-file");
    let file = dir.path("c.toml");
    std::fs::write(&file, "user = \"no-such-user-xyz\"\ncommand = [\"true\"]\n").unwrap();
    let (code, err) = start_error(&["run", "--config", &file]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("config key `user`"), "{err}");
}

#[test]
fn drop_privileges_runs_drover_as_the_user_and_a_live_upgrade_keeps_it() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (user, uid, gid, groups) = test_user();
    let dir = test_dir("drop");
    // The user must be able to create the successor's control socket and pid file here.
    std::os::unix::fs::chown(dir.root(), Some(uid), Some(gid)).unwrap();
    let ctl = dir.path("ctl");
    let pid_file = dir.path("pid");
    let worker = dir.path("worker.py");
    let d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--control",
            &ctl,
            "--pid-file",
            &pid_file,
            "--readiness",
            "notify",
            "--user",
            &user,
            "--drop-privileges",
            "--",
            user_python(),
            &worker,
        ],
    );
    let worker_pid = ready_workers(&ctl, 1)[0];
    assert_identity(d.pid(), uid, gid, &groups, "drover");
    assert_identity(worker_pid, uid, gid, &groups, "worker");
    d.log
        .wait_for(&["dropped privileges: drover runs as uid"], T);

    // The successor starts as the user with the same flags (read from drover's argv, which
    // the process title took the memory of): --user names itself.
    let (code, out, err) = run_bounded(
        DROVER,
        &["upgrade", "--control", &ctl],
        Duration::from_secs(30),
    );
    assert!(code.success(), "upgrade: {err}\n{}", d.log.dump());
    let answer: Value = serde_json::from_str(&out).unwrap();
    let successor = answer["successor_pid"].as_u64().unwrap() as u32;
    let mut d = d;
    assert_eq!(
        d.wait_exit(Duration::from_secs(30)).code(),
        Some(0),
        "{}",
        d.log.dump()
    );
    assert_identity(successor, uid, gid, &groups, "successor");
    let s = status(&ctl);
    assert_eq!(s["pid"].as_u64(), Some(successor as u64));
    let new_worker = ready_workers(&ctl, 1)[0];
    assert_identity(new_worker, uid, gid, &groups, "successor's worker");
    signal(successor, libc::SIGTERM);
    wait_until("the successor exits", T, || !alive(successor));
}

/// /proc/<pid>/cmdline as `ps` shows it (NULs as spaces, the padding dropped).
fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw)
        .trim_end_matches('\0')
        .replace('\0', " ")
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// drover's children that are not workers: the group guard.
fn guard_of(drover: u32, workers: &[u32]) -> u32 {
    let children =
        std::fs::read_to_string(format!("/proc/{drover}/task/{drover}/children")).unwrap();
    let guards: Vec<u32> = children
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .filter(|p| !workers.contains(p))
        .collect();
    assert_eq!(guards.len(), 1, "children {children}, workers {workers:?}");
    guards[0]
}

#[test]
fn ps_and_top_tell_the_supervisor_the_guard_and_the_workers_apart() {
    let dir = TempDir::new("titles-command");
    let ctl = dir.path("ctl");
    let d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--control",
            &ctl,
            "--workers",
            "2",
            "--",
            "sleep",
            "600",
        ],
    );
    let workers = ready_workers(&ctl, 2);
    wait_until("the supervisor's title", T, || {
        cmdline(d.pid()) == "drover: supervisor sleep 2/2 ready"
    });
    assert_eq!(comm(d.pid()), "drover-sup");
    let guard = guard_of(d.pid(), &workers);
    assert_eq!(cmdline(guard), "drover: guard sleep");
    assert_eq!(comm(guard), "drover-guard");
    // Command workers keep their own titles.
    for &w in &workers {
        assert_eq!(cmdline(w), "sleep 600");
        assert_eq!(comm(w), "sleep");
    }
    // The title follows the pool.
    let (code, _, err) = run_bounded(DROVER, &["scale", "3", "--control", &ctl], T);
    assert!(code.success(), "{err}");
    wait_until("the title shows the new target", T, || {
        cmdline(d.pid()) == "drover: supervisor sleep 3/3 ready"
    });
}

#[test]
fn embedded_workers_are_titled_with_their_slot_and_generation() {
    let dir = TempDir::new("titles-embedded");
    let ctl = dir.path("ctl");
    let d = Server::start(
        dir,
        hello_bin(),
        &[
            "--listen",
            "127.0.0.1:0",
            "--control",
            &ctl,
            "--workers",
            "2",
        ],
    );
    let workers = ready_workers(&ctl, 2);
    wait_until("the supervisor's title", T, || {
        cmdline(d.pid()) == "drover: supervisor hello 2/2 ready"
    });
    assert_eq!(comm(d.pid()), "drover-sup");
    let s = status(&ctl);
    for w in s["workers"].as_array().unwrap() {
        let pid = w["pid"].as_u64().unwrap() as u32;
        let slot = w["slot"].as_u64().unwrap_or_else(|| panic!("{w}"));
        let generation = w["generation"].as_u64().unwrap_or_else(|| panic!("{w}"));
        assert_eq!(
            cmdline(pid),
            format!("drover: worker {slot} gen {generation} hello")
        );
        assert_eq!(comm(pid), format!("drover-w{slot}"));
    }
    let guard = guard_of(d.pid(), &workers);
    assert_eq!(cmdline(guard), "drover: guard hello");
    assert_eq!(comm(guard), "drover-guard");
}

#[test]
fn a_reload_that_changes_the_environment_rolls_the_workers() {
    let dir = TempDir::new("env-reload");
    let ctl = dir.path("ctl");
    let config = dir.path("drover.toml");
    let write = |value: &str| {
        std::fs::write(
            &config,
            format!("workers = 2\ncommand = [\"sleep\", \"600\"]\numask = \"022\"\n[env]\nSTAGE = \"{value}\"\n"),
        )
        .unwrap()
    };
    write("one");
    let _d = Server::start(
        dir,
        DROVER,
        &["run", "--control", &ctl, "--config", &config],
    );
    let old = ready_workers(&ctl, 2);
    for &pid in &old {
        assert!(environ(pid).contains(&"STAGE=one".to_string()));
        assert_eq!(status_field(pid, "Umask"), ["0022"]);
    }
    write("two");
    let (code, _, err) = run_bounded(DROVER, &["reload", "--control", &ctl], T);
    assert!(code.success(), "{err}");
    wait_until("every worker is replaced", T, || {
        let now = ready_workers(&ctl, 2);
        now.iter().all(|p| !old.contains(p))
    });
    for pid in ready_workers(&ctl, 2) {
        assert!(environ(pid).contains(&"STAGE=two".to_string()));
    }
}

#[test]
fn under_supervise_the_child_drover_drops_and_still_reports_to_its_parent() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (user, uid, gid, groups) = test_user();
    let dir = test_dir("supervise-drop");
    let ctl = dir.path("ctl");
    let worker = dir.path("worker.py");
    let d = Server::start(
        dir,
        DROVER,
        &[
            "run",
            "--supervise",
            "--listen",
            "127.0.0.1:0",
            "--control",
            &ctl,
            "--readiness",
            "notify",
            "--user",
            &user,
            "--drop-privileges",
            "--",
            user_python(),
            &worker,
        ],
    );
    let worker_pid = ready_workers(&ctl, 1)[0];
    assert_identity(worker_pid, uid, gid, &groups, "worker");
    let child = status(&ctl)["pid"].as_u64().unwrap() as u32;
    assert_identity(child, uid, gid, &groups, "supervised drover");
    assert_eq!(cmdline(child), "drover: supervisor python3 1/1 ready");
    // The parent keeps root; that its pool of one is ready means the child's READY=1
    // reached the parent's notify socket after the child dropped its privileges.
    assert_eq!(status_field(d.pid(), "Uid")[0], "0");
    wait_until("the parent sees its child ready", T, || {
        cmdline(d.pid()) == "drover: parent python3 1/1 ready"
    });
    assert_eq!(comm(d.pid()), "drover-parent");
    assert_eq!(comm(child), "drover-sup");
}
