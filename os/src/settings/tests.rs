//! The settings: flags over the file, errors naming the flag, what a reload applies.

use super::file::FileConfig;
use super::listen::{parse_listen, ListenAddr};
use super::*;
use std::time::Duration;

fn args(list: &[&str]) -> RunArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }
    T::try_parse_from(std::iter::once("t").chain(list.iter().copied()))
        .unwrap()
        .run
}

#[test]
fn zero_workers_names_the_flag() {
    let e = Settings::load(&args(&["--workers", "0", "--", "sh"])).unwrap_err();
    assert!(e.0.contains("--workers"), "{e}");
}

#[test]
fn zero_stop_timeout_names_the_flag() {
    let e = Settings::load(&args(&["--stop-timeout", "0", "--", "sh"])).unwrap_err();
    assert!(e.0.contains("--stop-timeout"), "{e}");
}

#[test]
fn missing_command_and_unknown_program() {
    let e = Settings::load(&args(&[])).unwrap_err();
    assert!(e.0.contains("missing command"), "{e}");
    let e = Settings::load(&args(&["--", "no-such-program-xyz"])).unwrap_err();
    assert!(e.0.contains("command not found"), "{e}");
}

#[test]
fn listen_forms() {
    let l = parse_listen(0, "127.0.0.1:80").unwrap();
    assert_eq!(l.addr, ListenAddr::Tcp("127.0.0.1:80".parse().unwrap()));
    assert_eq!(l.name, "listen0");
    let l = parse_listen(1, "web=[::1]:8080").unwrap();
    assert_eq!(l.addr, ListenAddr::Tcp("[::1]:8080".parse().unwrap()));
    assert_eq!(l.name, "web");
    let l = parse_listen(2, "unix:/tmp/x.sock").unwrap();
    assert_eq!(l.addr, ListenAddr::Unix("/tmp/x.sock".into()));
    assert!(parse_listen(3, "nonsense").is_err());
}

#[test]
fn flags_beat_the_file_and_unknown_keys_fail() {
    let file = FileConfig::parse("workers = 3\nboot_timeout = 5\ncommand = [\"sh\"]").unwrap();
    let s = Settings::merge(&args(&["--workers", "2"]), file).unwrap();
    assert_eq!(
        s.machine.policy,
        drover_machine::Policy::Static { workers: 2 }
    );
    assert_eq!(s.machine.boot_timeout, Duration::from_secs(5));
    let unknown = FileConfig::parse("wrokers = 3\ncommand = [\"sh\"]").unwrap();
    let e = Settings::merge(&args(&[]), unknown).unwrap_err();
    assert!(e.0.contains("wrokers"), "{e}");
    // Every machine key works from the file, e.g. the restart policy.
    let file = FileConfig::parse(
        "min = 1\nmax = 4\ncommand = [\"sh\"]\n[restart]\nbackoff_max = 5\nunrecoverable_exit_codes = [2]\n",
    )
    .unwrap();
    let s = Settings::merge(&args(&[]), file).unwrap();
    assert_eq!(s.machine.restart.unrecoverable_exit_codes, vec![2]);
    assert_eq!(s.machine.policy.name(), "dynamic");
}

#[test]
fn a_reload_names_every_setting_that_waits_for_a_restart() {
    let file = |text: &str| FileConfig::parse(text).unwrap();
    let old = Settings::merge(&args(&[]), file("workers = 2\ncommand = [\"sh\"]\n")).unwrap();
    let same = Settings::merge(&args(&[]), file("workers = 3\ncommand = [\"sh\"]\n")).unwrap();
    assert_eq!(old.restart_only_changes(&same), Vec::<String>::new());
    let new = Settings::merge(
        &args(&[]),
        file("workers = 2\ncommand = [\"sh\"]\nbacklog = 64\nlog_level = \"debug\"\n"),
    )
    .unwrap();
    let changed = old.restart_only_changes(&new);
    assert_eq!(changed.len(), 2, "{changed:?}");
    assert!(changed[0].contains("`backlog`") && changed[0].contains("restarts"));
    assert!(changed[1].contains("`log_level`"));
}

#[test]
fn metrics_listen_from_the_flag_or_the_file_and_a_reload_waits_for_a_restart() {
    let file = |text: &str| FileConfig::parse(text).unwrap();
    let s = Settings::merge(
        &args(&[]),
        file(
            "metrics_listen = 9100
command = [\"sh\"]",
        ),
    )
    .unwrap();
    assert_eq!(s.metrics_listen, Some("127.0.0.1:9100".parse().unwrap()));
    let s = Settings::merge(
        &args(&["--metrics-listen", "[::1]:9200"]),
        file("metrics_listen = \"0.0.0.0:9100\"\ncommand = [\"sh\"]"),
    )
    .unwrap();
    assert_eq!(s.metrics_listen, Some("[::1]:9200".parse().unwrap()));
    let e = Settings::merge(
        &args(&[]),
        file("metrics_listen = \"x\"\ncommand = [\"sh\"]"),
    )
    .unwrap_err();
    assert!(e.0.contains("config key `metrics_listen`"), "{e}");
    let off = Settings::merge(&args(&[]), file("command = [\"sh\"]")).unwrap();
    assert_eq!(off.metrics_listen, None);
    let changed = off.restart_only_changes(&s);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert!(changed[0].contains("`metrics_listen`"), "{changed:?}");
}

#[test]
fn dynamic_pool_defaults_validate() {
    let s = Settings::load(&args(&["--min", "1", "--max", "4", "--", "sh"])).unwrap();
    assert_eq!(s.machine.policy.max(), 4);
    let s = Settings::load(&args(&[
        "--min",
        "1",
        "--max",
        "4",
        "--threads",
        "8",
        "--",
        "sh",
    ]))
    .unwrap();
    assert_eq!(s.machine.threads, 8);
}

#[test]
fn port_from_the_environment_is_the_last_default() {
    assert_eq!(listen_from_port(None).unwrap(), Vec::<String>::new());
    assert_eq!(listen_from_port(Some("5000")).unwrap(), ["0.0.0.0:5000"]);
    for bad in ["0", "70000", "http", ""] {
        let e = listen_from_port(Some(bad)).unwrap_err();
        assert!(
            e.0.contains("PORT") && e.0.contains("--listen"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn allow_flags_beat_the_file_and_refuse_unix_listeners() {
    let file = || FileConfig::parse("allow = [\"10.0.0.0/8\", \"::1\"]").unwrap();
    let s = Settings::merge(&args(&["--listen", "127.0.0.1:0", "--", "sh"]), file()).unwrap();
    let shown: Vec<String> = s.allow.iter().map(ToString::to_string).collect();
    assert_eq!(shown, ["10.0.0.0/8", "::1/128"]);
    let a = args(&[
        "--allow",
        "127.0.0.2",
        "--listen",
        "127.0.0.1:0",
        "--",
        "sh",
    ]);
    let s = Settings::merge(&a, file()).unwrap();
    assert_eq!(s.allow.len(), 1);
    let none = Settings::merge(&args(&["--", "sh"]), FileConfig::default()).unwrap();
    assert!(none.allow.is_empty());

    let a = args(&["--allow", "10.0.0.0/33", "--", "sh"]);
    let e = Settings::merge(&a, FileConfig::default()).unwrap_err();
    assert!(e.0.contains("'10.0.0.0/33'"), "{e}");
    let bad = FileConfig::parse("allow = \"10.0.0.0/8\"").unwrap();
    let e = Settings::merge(&args(&["--", "sh"]), bad).unwrap_err();
    assert!(e.0.contains("`allow` must be a list of strings"), "{e}");

    let a = args(&[
        "--allow",
        "10.0.0.0/8",
        "--listen",
        "unix:/tmp/x.sock",
        "--",
        "sh",
    ]);
    let e = Settings::merge(&a, FileConfig::default()).unwrap_err();
    assert!(
        e.0.contains("--allow") && e.0.contains("unix:/tmp/x.sock"),
        "{e}"
    );
    // Without --allow the unix listener is fine.
    let a = args(&["--listen", "unix:/tmp/x.sock", "--", "sh"]);
    assert!(Settings::merge(&a, FileConfig::default()).is_ok());
}
