//! End-to-end tests of the signal table (`--signals`, `[signals]`) and of the immediate
//! restart (`restart-now`): real drovers and workers, every wait bounded, every process
//! killed with the test's directory.

pub mod common;

use common::*;
use serde_json::Value;

fn status(control: &str) -> Value {
    try_status(control).unwrap_or_else(|e| panic!("drover status: {e}"))
}

/// The status, or why there is none (yet: the control socket appears during start-up).
fn try_status(control: &str) -> Result<Value, String> {
    let (code, out, err) = client(&["status", "--json", "--control", control]);
    if code != 0 {
        return Err(format!("{out}{err}"));
    }
    serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))
}

/// (slot, pid, generation) of every worker with a process.
fn workers(control: &str) -> Vec<(u64, u64, u64)> {
    status(control)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["pid"].is_u64())
        .map(|w| {
            (
                w["slot"].as_u64().unwrap(),
                w["pid"].as_u64().unwrap(),
                w["generation"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Two Ready workers of generation `generation`, their pids.
fn two_ready(control: &str, generation: u64) -> Vec<u64> {
    wait_until("two Ready workers", T, || {
        let Ok(s) = try_status(control) else {
            return false;
        };
        s["ready"] == 2 && workers(control).iter().all(|w| w.2 == generation) && s["live"] == 2
    });
    workers(control).iter().map(|w| w.1).collect()
}

#[test]
fn the_serverengine_preset_restarts_now_on_hup_dumps_on_cont_and_reopens_on_usr2() {
    let dir = test_dir("signals-se");
    let control = dir.path("control.sock");
    let log = dir.path("drover.log");
    let args = [
        "run",
        "--signals",
        "serverengine",
        "--workers",
        "2",
        "--control",
        &control,
        "--log-file",
        &log,
        "--",
        "sleep",
        "1000",
    ];
    let mut d = Server::start(dir, DROVER, &args);
    wait_until("the log file", T, || {
        read(&log).contains("signals: HUP=restart-now")
    });
    let before = two_ready(&control, 1);

    // HUP: every worker at once, through the immediate stage (KILL with the default
    // ladder), each refilled by generation 2.
    d.signal(libc::SIGHUP);
    let after = two_ready(&control, 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "both replaced: {before:?} -> {after:?}"
    );
    let text = read(&log);
    assert!(text.contains("signal HUP: restart-now"), "{text}");
    assert_eq!(
        text.matches("reason=restart-now").count(),
        4,
        "two retirements and two KILLs, at once: {text}"
    );

    // CONT: the dump, in the log.
    d.signal(libc::SIGCONT);
    wait_until("the dump", T, || read(&log).contains("dump: end"));
    assert!(read(&log).contains("signal CONT: dump:"), "{}", read(&log));

    // USR2: reopen the log (logrotate renamed it), then reload.
    let rotated = format!("{log}.1");
    std::fs::rename(&log, &rotated).unwrap();
    d.signal(libc::SIGUSR2);
    wait_until("the reopened log", T, || {
        let text = read(&log);
        text.contains("signal USR2: reopened the log file")
            && text.contains("signal USR2: reloading the config file")
    });
    assert!(
        !read(&rotated).contains("signal USR2"),
        "the reopen came first"
    );

    d.signal(libc::SIGTERM);
    let status = d.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{}", read(&log));
    assert!(read(&log).contains("signal TERM: stop"));
}

#[test]
fn the_config_files_table_changes_single_signals_and_the_flag_picks_the_preset() {
    let dir = test_dir("signals-file");
    let control = dir.path("control.sock");
    let config = dir.path("drover.toml");
    std::fs::write(
        &config,
        "workers = 2\ncommand = [\"sleep\", \"1000\"]\n[signals]\npreset = \"unicorn\"\nHUP = \"none\"\nUSR1 = [\"dump\"]\n",
    )
    .unwrap();
    // The flag replaces the file's preset (unicorn: QUIT graceful); the rows stay.
    let args = [
        "run",
        "--config",
        &config,
        "--signals",
        "drover",
        "--control",
        &control,
    ];
    let mut d = Server::start(dir, DROVER, &args);
    d.log.wait_for(&["signals:", "preset=\"drover\""], T);
    let before = two_ready(&control, 1);

    d.signal(libc::SIGHUP);
    d.log
        .wait_for(&["signal HUP: no action in the signal table; ignored"], T);
    d.signal(libc::SIGUSR1);
    d.log.wait_for(&["signal USR1: dump:"], T);
    assert_eq!(
        workers(&control).iter().map(|w| w.1).collect::<Vec<_>>(),
        before
    );
    assert_eq!(status(&control)["generation"], 1, "HUP reloaded nothing");

    // QUIT under drover's table: immediate stop.
    d.signal(libc::SIGQUIT);
    let status = d.wait_exit(T);
    assert_eq!(status.code(), Some(0), "{}", d.log.dump());
    assert!(d.log.dump().contains("signal QUIT: stop-now"));
}

#[test]
fn restart_now_from_the_control_socket_replaces_every_worker_at_once() {
    let dir = test_dir("restart-now");
    let control = dir.path("control.sock");
    let args = [
        "run",
        "--workers",
        "2",
        "--control",
        &control,
        "--",
        "sleep",
        "1000",
    ];
    let mut d = Server::start(dir, DROVER, &args);
    let before = two_ready(&control, 1);
    let (code, out, err) = client(&["restart", "--now", "--control", &control]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("restart-now"), "{out}");
    let after = two_ready(&control, 2);
    assert!(after.iter().all(|p| !before.contains(p)));
    assert_eq!(d.log.count(&["ev  retiring", "reason=restart-now"]), 2);
    d.signal(libc::SIGTERM);
    d.assert_clean_exit(T);
}

#[test]
fn a_bad_signal_table_is_refused_at_start_naming_the_key() {
    let dir = test_dir("signals-bad");
    let bad = |args: &[&str]| {
        let out = run_bounded(DROVER, args, T);
        assert_eq!(out.0.code(), Some(2), "{args:?}: {}{}", out.1, out.2);
        out.2
    };
    let e = bad(&["run", "--signals", "nginx", "--", "sleep", "1"]);
    assert!(e.contains("--signals") && e.contains("serverengine"), "{e}");
    for (table, named) in [
        ("KILL = \"stop\"", "`KILL`"),
        ("USR1 = \"rstart\"", "signals.USR1"),
        ("USR1 = 1", "signals.USR1"),
        ("preset = \"apache\"", "preset"),
    ] {
        let config = dir.path("bad.toml");
        std::fs::write(&config, format!("[signals]\n{table}\n")).unwrap();
        let e = bad(&["run", "--config", &config, "--", "sleep", "1"]);
        assert!(e.contains(named), "{table}: {e}");
    }
}
