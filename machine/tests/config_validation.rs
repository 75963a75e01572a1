//! Config validation: every invalid field or combination is a `ConfigError` naming that
//! field, from `Config::validate`, `Supervisor::new` and a reload alike; the message names the
//! field too. Plus: validation never panics, whatever the values.

use std::sync::Arc;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, ConfigError, Duration, Event, Input, Instant, Ladder, OnCrashLoop,
    Pid, Policy, Readiness, Refusal, Restart, Signal, SpawnError, Stage, Supervisor, WORKERS_MAX,
};
use proptest::prelude::*;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn dynamic(min: u32, max: u32, start: u32, min_spare: u32, max_spare: u32) -> Config {
    Config::new(Policy::Dynamic {
        min,
        max,
        start,
        min_spare,
        max_spare,
    })
}

fn ladder(stages: Vec<Stage>, immediate_from: usize) -> Arc<Ladder> {
    Arc::new(Ladder {
        stages,
        immediate_from,
    })
}

fn term(interval: u64, timeout: u64) -> Stage {
    Stage {
        signal: Signal::Term,
        interval: secs(interval),
        increment: Duration::ZERO,
        timeout: secs(timeout),
    }
}

/// `config` is refused for `field` by `validate` and by `Supervisor::new`, and the message
/// names the field.
fn refused(config: Config, field: &str) -> ConfigError {
    let err = config.validate().expect_err("the config must be invalid");
    assert_eq!(err.field, field, "wrong field named: {err}");
    assert!(!err.problem.is_empty(), "no problem stated for {field}");
    let message = err.to_string();
    assert!(
        message.contains(field),
        "the message does not name {field}: {message}"
    );
    match Supervisor::new(config, Instant::ZERO) {
        Ok(_) => panic!("Supervisor::new accepted a config that validate refuses ({err})"),
        Err(e) => assert_eq!(e, err, "Supervisor::new and validate disagree"),
    }
    err
}

fn accepted(config: Config) {
    if let Err(e) = config.validate() {
        panic!("a valid config was refused: {e}");
    }
}

// ------------------------------------------------------------------------- defaults

#[test]
fn defaults_and_presets_are_valid() {
    accepted(Config::static_pool(1));
    accepted(Config::dynamic(1, 10, 2, 5));
    accepted(Config::ondemand(4));
    let mut c = Config::static_pool(3);
    c.ladder = Arc::new(Ladder::serverengine());
    accepted(c);
}

// ------------------------------------------------------------------------- policy

#[test]
fn static_pool_with_zero_workers() {
    let err = refused(Config::static_pool(0), "workers");
    assert!(err.problem.contains("ondemand"), "suggests the fix: {err}");
}

#[test]
fn dynamic_max_zero() {
    refused(dynamic(0, 0, 0, 1, 1), "max");
}

#[test]
fn dynamic_min_above_max() {
    refused(dynamic(5, 4, 4, 1, 1), "min");
}

#[test]
fn dynamic_start_below_min() {
    refused(dynamic(2, 4, 1, 1, 1), "start");
}

#[test]
fn dynamic_start_above_max() {
    refused(dynamic(0, 4, 5, 1, 1), "start");
}

#[test]
fn dynamic_start_at_the_bounds_is_valid() {
    accepted(dynamic(2, 4, 2, 1, 1));
    accepted(dynamic(2, 4, 4, 1, 1));
}

#[test]
fn dynamic_min_spare_zero() {
    refused(dynamic(0, 4, 0, 0, 2), "min_spare");
}

#[test]
fn dynamic_min_spare_above_max_spare() {
    refused(dynamic(0, 4, 0, 3, 2), "min_spare");
}

#[test]
fn dynamic_max_spare_too_small_for_threads() {
    // One new worker adds 4 idle threads: from min_spare - 1 = 1 it jumps to 5 > 3.
    let mut c = dynamic(0, 4, 0, 2, 3);
    c.threads = 4;
    let err = refused(c.clone(), "max_spare");
    assert!(err.problem.contains('5'), "states the needed value: {err}");
    // min_spare + threads - 1 is the smallest max_spare that does not oscillate.
    c.policy = Policy::Dynamic {
        min: 0,
        max: 4,
        start: 0,
        min_spare: 2,
        max_spare: 5,
    };
    accepted(c);
}

#[test]
fn ondemand_max_zero() {
    refused(Config::ondemand(0), "max");
}

#[test]
fn ondemand_min_above_max() {
    refused(Config::new(Policy::Ondemand { min: 3, max: 2 }), "min");
}

#[test]
fn ondemand_without_idle_timeout() {
    let mut c = Config::ondemand(4);
    c.idle_timeout = None;
    refused(c, "idle_timeout");
}

#[test]
fn static_pool_over_max_workers() {
    // max + max_surge counts: WORKERS_MAX workers plus the default surge of 1 is too many.
    refused(Config::static_pool(WORKERS_MAX), "max");
    let mut c = Config::static_pool(WORKERS_MAX - 1);
    accepted(c.clone());
    c.max_surge = 2;
    refused(c, "max");
}

#[test]
fn dynamic_max_over_max_workers() {
    refused(dynamic(0, WORKERS_MAX + 1, 0, 1, 1), "max");
}

#[test]
fn max_and_surge_saturating_at_u32_max() {
    let mut c = Config::static_pool(u32::MAX);
    c.max_surge = u32::MAX;
    refused(c, "max");
}

// ------------------------------------------------------------------------- sizes and rates

#[test]
fn threads_zero() {
    let mut c = Config::static_pool(2);
    c.threads = 0;
    refused(c, "threads");
}

#[test]
fn max_spawn_rate_zero() {
    let mut c = Config::static_pool(2);
    c.max_spawn_rate = 0;
    refused(c, "max_spawn_rate");
}

#[test]
fn max_requests_zero() {
    let mut c = Config::static_pool(2);
    c.max_requests = Some(0);
    refused(c, "max_requests");
}

#[test]
fn jitter_without_max_requests() {
    let mut c = Config::static_pool(2);
    c.max_requests_jitter = 10;
    refused(c.clone(), "max_requests_jitter");
    c.max_requests = Some(1000);
    accepted(c);
}

#[test]
fn max_surge_and_max_unavailable_both_zero() {
    let mut c = Config::static_pool(2);
    c.max_surge = 0;
    c.max_unavailable = 0;
    let err = refused(c.clone(), "max_surge");
    assert!(err.problem.contains("max_unavailable"), "names both: {err}");
    c.max_unavailable = 1;
    accepted(c);
}

// ------------------------------------------------------------------------- intervals and timeouts

#[test]
fn maintenance_interval_zero() {
    let mut c = Config::static_pool(2);
    c.maintenance_interval = Duration::ZERO;
    refused(c, "maintenance_interval");
}

#[test]
fn idle_timeout_zero() {
    let mut c = Config::ondemand(2);
    c.idle_timeout = Some(Duration::ZERO);
    refused(c, "idle_timeout");
}

#[test]
fn boot_timeout_zero() {
    let mut c = Config::static_pool(2);
    c.boot_timeout = Duration::ZERO;
    refused(c, "boot_timeout");
}

#[test]
fn heartbeat_timeout_zero() {
    let mut c = Config::static_pool(2);
    c.heartbeat_timeout = Some(Duration::ZERO);
    refused(c, "heartbeat_timeout");
}

#[test]
fn request_timeout_zero() {
    let mut c = Config::static_pool(2);
    c.request_timeout = Some(Duration::ZERO);
    refused(c, "request_timeout");
}

#[test]
fn upgrade_timeout_zero() {
    let mut c = Config::static_pool(2);
    c.upgrade_timeout = Duration::ZERO;
    refused(c, "upgrade_timeout");
}

// ------------------------------------------------------------------------- ladder

#[test]
fn ladder_empty() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![], 0);
    let err = refused(c, "ladder");
    assert!(
        err.problem.contains("KILL"),
        "says it must end in KILL: {err}"
    );
}

#[test]
fn ladder_not_ending_in_kill() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![term(10, 30)], 0);
    let err = refused(c, "ladder");
    assert!(
        err.problem.contains("TERM") && err.problem.contains("KILL"),
        "names the last signal and KILL: {err}"
    );
}

#[test]
fn ladder_kill_not_last() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![Stage::kill(), term(10, 30), Stage::kill()], 0);
    let err = refused(c, "ladder");
    assert!(err.problem.contains("stage 0"), "names the stage: {err}");
}

#[test]
fn ladder_stage_with_zero_timeout() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![term(10, 30), term(10, 0), Stage::kill()], 0);
    let err = refused(c, "ladder");
    assert!(err.problem.contains("stage 1"), "names the stage: {err}");
}

#[test]
fn ladder_stage_with_zero_interval() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![term(0, 30), Stage::kill()], 0);
    let err = refused(c, "ladder");
    assert!(err.problem.contains("stage 0"), "names the stage: {err}");
}

#[test]
fn ladder_with_too_many_stages() {
    let mut stages: Vec<Stage> = (0..16).map(|_| term(1, 1)).collect();
    stages.push(Stage::kill());
    let mut c = Config::static_pool(1);
    c.ladder = ladder(stages, 0);
    refused(c, "ladder");
}

#[test]
fn ladder_immediate_from_out_of_range() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![term(10, 30), Stage::kill()], 2);
    refused(c.clone(), "ladder.immediate_from");
    c.ladder = ladder(vec![term(10, 30), Stage::kill()], usize::MAX);
    refused(c.clone(), "ladder.immediate_from");
    // Immediate at KILL itself is fine: an immediate stop is KILL at once.
    c.ladder = ladder(vec![term(10, 30), Stage::kill()], 1);
    accepted(c);
}

#[test]
fn ladder_of_only_kill_is_valid() {
    let mut c = Config::static_pool(1);
    c.ladder = ladder(vec![Stage::kill()], 0);
    accepted(c);
}

// ------------------------------------------------------------------------- restart

#[test]
fn restart_backoff_min_zero() {
    let mut c = Config::static_pool(1);
    c.restart.backoff_min = Duration::ZERO;
    refused(c, "restart.backoff_min");
}

#[test]
fn restart_backoff_max_below_backoff_min() {
    let mut c = Config::static_pool(1);
    c.restart.backoff_min = secs(10);
    c.restart.backoff_max = secs(5);
    refused(c.clone(), "restart.backoff_max");
    c.restart.backoff_max = secs(10);
    accepted(c);
}

#[test]
fn restart_intensity_deaths_zero() {
    let mut c = Config::static_pool(1);
    c.restart.intensity_deaths = 0;
    refused(c, "restart.intensity_deaths");
}

#[test]
fn restart_intensity_window_zero() {
    let mut c = Config::static_pool(1);
    c.restart.intensity_window = Duration::ZERO;
    refused(c, "restart.intensity_window");
}

#[test]
fn stop_on_unrecoverable_without_codes() {
    let mut c = Config::static_pool(1);
    c.restart.stop_on_unrecoverable = true;
    let err = refused(c.clone(), "restart.stop_on_unrecoverable");
    assert!(
        err.problem.contains("unrecoverable_exit_codes"),
        "names the missing list: {err}"
    );
    c.restart.unrecoverable_exit_codes = vec![2];
    accepted(c);
}

// ------------------------------------------------------------------------- at run time

#[test]
fn invalid_reload_is_refused_naming_the_field_and_changes_nothing() {
    let mut h = Harness::new(Config::static_pool(2));
    let mut bad = Config::static_pool(3);
    bad.threads = 0;
    h.command(Command::Reload(Box::new(bad)));
    let refusal = h.actions().iter().find_map(|(_, a)| match a {
        Action::Event(Event::Refused {
            command: "reload",
            reason: Refusal::Invalid(e),
        }) => Some(e.clone()),
        _ => None,
    });
    let err = refusal.expect("the reload must be refused as invalid");
    assert_eq!(err.field, "threads", "{err}");
    assert_eq!(h.sup().config().threads, 1, "the old config stays in force");
    assert_eq!(h.sup().target(), 2);
}

// ------------------------------------------------------------------------- never panics

fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0),
        Just(1),
        Just(u32::MAX),
        Just(WORKERS_MAX),
        Just(WORKERS_MAX + 1),
        0u32..10,
        any::<u32>(),
    ]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0), Just(1), Just(u64::MAX), 0u64..10, any::<u64>()]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        (0u64..100).prop_map(secs),
        (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn any_policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        any_u32().prop_map(|workers| Policy::Static { workers }),
        (any_u32(), any_u32(), any_u32(), any_u32(), any_u32()).prop_map(
            |(min, max, start, min_spare, max_spare)| Policy::Dynamic {
                min,
                max,
                start,
                min_spare,
                max_spare
            }
        ),
        (any_u32(), any_u32()).prop_map(|(min, max)| Policy::Ondemand { min, max }),
    ]
}

fn any_ladder() -> impl Strategy<Value = Ladder> {
    let stage = (
        prop::sample::select(Signal::ALL.to_vec()),
        any_duration(),
        any_duration(),
        any_duration(),
    )
        .prop_map(|(signal, interval, increment, timeout)| Stage {
            signal,
            interval,
            increment,
            timeout,
        });
    (
        prop::collection::vec(stage, 0..20),
        prop_oneof![0usize..20, Just(usize::MAX)],
        any::<bool>(),
    )
        .prop_map(|(mut stages, immediate_from, end_in_kill)| {
            if end_in_kill {
                stages.push(Stage::kill());
            }
            Ladder {
                stages,
                immediate_from,
            }
        })
}

fn any_restart() -> impl Strategy<Value = Restart> {
    (
        (any_duration(), any_duration(), any_duration()),
        (any_u32(), any_duration(), any_u32()),
        prop_oneof![
            Just(OnCrashLoop::Backoff),
            any::<i32>().prop_map(OnCrashLoop::Exit)
        ],
        prop::collection::vec(any::<i32>(), 0..4),
        (any::<bool>(), any::<bool>()),
    )
        .prop_map(
            |(
                (backoff_min, backoff_max, healthy_uptime),
                (intensity_deaths, intensity_window, quick_restart_rate),
                on_crash_loop,
                unrecoverable_exit_codes,
                (stop_on_unrecoverable, fail_start),
            )| Restart {
                backoff_min,
                backoff_max,
                healthy_uptime,
                intensity_deaths,
                intensity_window,
                on_crash_loop,
                unrecoverable_exit_codes,
                stop_on_unrecoverable,
                fail_start,
                quick_restart_rate,
            },
        )
}

fn any_config() -> impl Strategy<Value = Config> {
    (
        (any_policy(), any_u32(), any_u32(), any_duration()),
        (
            prop::option::of(any_duration()),
            prop::option::of(any_u64()),
            any_u64(),
            any::<u64>(),
        ),
        (
            prop_oneof![Just(Readiness::AtSpawn), Just(Readiness::Notify)],
            any_duration(),
            prop::option::of(any_duration()),
            prop::option::of(any_duration()),
        ),
        (any_ladder(), any_restart()),
        (
            any_u32(),
            any_u32(),
            any_duration(),
            any::<u64>(),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (policy, threads, max_spawn_rate, maintenance_interval),
                (idle_timeout, max_requests, max_requests_jitter, seed),
                (readiness, boot_timeout, heartbeat_timeout, request_timeout),
                (ladder, restart),
                (max_surge, max_unavailable, upgrade_timeout, worker_fingerprint, slot_addresses),
            )| Config {
                policy,
                threads,
                max_spawn_rate,
                maintenance_interval,
                idle_timeout,
                max_requests,
                max_requests_jitter,
                seed,
                readiness,
                boot_timeout,
                heartbeat_timeout,
                request_timeout,
                ladder: Arc::new(ladder),
                restart,
                max_surge,
                max_unavailable,
                upgrade_timeout,
                worker_fingerprint,
                slot_addresses,
            },
        )
}

/// Mostly valid configs with extreme values sprinkled in: exercises `Supervisor::new` on
/// accepted configs, which the fully arbitrary strategy rarely produces.
fn plausible_config() -> impl Strategy<Value = Config> {
    let extreme = || prop_oneof![3 => (1u64..100).prop_map(secs), 1 => Just(Duration::MAX)];
    (
        1u32..=8,
        1u32..=4,
        extreme(),
        extreme(),
        prop::option::of(extreme()),
        prop::option::of(extreme()),
        extreme(),
        prop_oneof![Just(Ladder::default()), Just(Ladder::serverengine())],
        any::<bool>(),
    )
        .prop_map(
            |(workers, threads, boot, maintenance, heartbeat, request, upgrade, ladder, notify)| {
                let mut c = Config::static_pool(workers);
                c.threads = threads;
                c.boot_timeout = boot;
                c.maintenance_interval = maintenance;
                c.idle_timeout = Some(maintenance);
                c.heartbeat_timeout = heartbeat;
                c.request_timeout = request;
                c.upgrade_timeout = upgrade;
                c.ladder = Arc::new(ladder);
                c.restart.backoff_max = Duration::MAX;
                c.restart.intensity_window = Duration::MAX;
                if notify {
                    c.readiness = Readiness::Notify;
                }
                c
            },
        )
}

/// Starts a supervisor on an accepted config and performs its first actions, alternating
/// fork successes and failures; it must keep its invariants, extreme durations included.
fn starts_cleanly(config: Config) -> Result<(), TestCaseError> {
    let mut sup = Supervisor::new(config, Instant::ZERO)
        .map_err(|e| TestCaseError::fail(format!("validate accepted, new refused: {e}")))?;
    let mut pid = 100;
    let mut fail = false;
    for _ in 0..1_000 {
        let Some(action) = sup.poll_action() else {
            break;
        };
        if let Action::Spawn { worker, .. } = action {
            fail = !fail;
            let input = if fail {
                Input::SpawnFailed {
                    worker,
                    error: SpawnError::Resources,
                }
            } else {
                pid += 1;
                Input::Spawned {
                    worker,
                    pid: Pid(pid),
                }
            };
            sup.handle(Instant::ZERO, input);
        }
    }
    sup.check_invariants()
        .map_err(|v| TestCaseError::fail(format!("invariant violated at start: {v}")))?;
    if let Some(at) = sup.poll_timeout() {
        prop_assert!(at > Instant::ZERO, "poll_timeout {} at start", at);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Validation never panics, whatever the values (0, 1, u32::MAX, Duration::MAX, empty or
    /// huge ladders, usize::MAX stage index …); an error names its field in the message; an
    /// accepted config small enough to build quickly starts cleanly.
    #[test]
    fn validate_never_panics(config in any_config()) {
        match config.validate() {
            Err(e) => {
                let message = e.to_string();
                prop_assert!(message.contains(e.field), "{}", message);
                prop_assert!(!e.problem.is_empty());
            }
            Ok(()) if config.slot_count() <= 64 => starts_cleanly(config)?,
            Ok(()) => {}
        }
    }

    /// The same over configs built to be mostly valid: every accepted one starts cleanly.
    #[test]
    fn accepted_configs_start_cleanly(config in plausible_config()) {
        if config.validate().is_ok() {
            starts_cleanly(config)?;
        }
    }
}
