//! Each planted bug changes what the machine decides (`--features planted`): a plant that
//! silently did nothing would make its simulator canary pass for the wrong reason. Every
//! test runs one small scenario twice, shipped and planted, and pins the decision that
//! differs, by the rule the plant breaks.
#![cfg(feature = "planted")]

use core::time::Duration;

use drover_machine::testing::Harness;
use drover_machine::{
    Action, Command, Config, Event, ExitStatus, Input, Instant, Phase, Plant, Policy, Readiness,
    Signal, StopReason, Supervisor,
};

/// Runs `script` over a harness whose machine has `plant` switched on (or none).
fn run(plant: Option<Plant>, config: Config, script: impl Fn(&mut Harness)) -> Harness {
    let mut sup = Supervisor::new(config, Instant::ZERO).expect("valid config");
    if let Some(p) = plant {
        sup.plant(p);
    }
    let mut h = Harness::with(sup);
    script(&mut h);
    h
}

/// The scenario shipped and with `plant`.
fn both(plant: Plant, config: Config, script: impl Fn(&mut Harness)) -> (Harness, Harness) {
    (
        run(None, config.clone(), &script),
        run(Some(plant), config, &script),
    )
}

fn ms(t: Instant) -> u64 {
    t.as_nanos() / 1_000_000
}

fn events(h: &Harness) -> Vec<(u64, Event)> {
    h.actions()
        .iter()
        .filter_map(|(t, a)| match a {
            Action::Event(e) => Some((ms(*t), e.clone())),
            _ => None,
        })
        .collect()
}

/// Retirements: (ms, slot, reason).
fn retirements(h: &Harness) -> Vec<(u64, u32, StopReason)> {
    events(h)
        .into_iter()
        .filter_map(|(t, e)| match e {
            Event::Retiring { worker, reason } => Some((t, worker.slot, reason)),
            _ => None,
        })
        .collect()
}

fn first_retirement(h: &Harness, reason: StopReason) -> Option<u64> {
    retirements(h)
        .into_iter()
        .find(|r| r.2 == reason)
        .map(|r| r.0)
}

fn signals(h: &Harness) -> Vec<Signal> {
    h.performed()
        .filter_map(|(_, a)| match a {
            Action::Signal { signal, .. } => Some(*signal),
            _ => None,
        })
        .collect()
}

fn notify(mut config: Config) -> Config {
    config.readiness = Readiness::Notify;
    config
}

#[test]
fn every_plant_has_a_name_that_parses_back() {
    for p in Plant::ALL {
        assert_eq!(Plant::from_name(p.name()), Some(p));
    }
    assert_eq!(Plant::from_name("no-such-bug"), None);
}

#[test]
fn boot_third_kills_a_booting_worker_at_a_third_of_the_boot_timeout() {
    let mut config = notify(Config::static_pool(1));
    config.boot_timeout = Duration::from_secs(30);
    let (shipped, planted) = both(Plant::BootThird, config, |h| {
        h.at(40.0);
    });
    assert_eq!(
        first_retirement(&shipped, StopReason::BootTimeout),
        Some(30_000)
    );
    assert_eq!(
        first_retirement(&planted, StopReason::BootTimeout),
        Some(10_000)
    );
}

#[test]
fn watchdog_triple_waits_three_heartbeat_timeouts() {
    let mut config = notify(Config::static_pool(1));
    config.heartbeat_timeout = Some(Duration::from_secs(5));
    let (shipped, planted) = both(Plant::WatchdogTriple, config, |h| {
        h.at(1.0).ready(0);
        h.at(30.0);
    });
    let reason = StopReason::HeartbeatTimeout;
    assert_eq!(first_retirement(&shipped, reason), Some(6_000));
    assert_eq!(first_retirement(&planted, reason), Some(16_000));
}

#[test]
fn absence_ignored_kills_workers_for_the_supervisors_own_absence() {
    let mut config = Config::static_pool(1);
    config.heartbeat_timeout = Some(Duration::from_secs(2));
    let (shipped, planted) = both(Plant::AbsenceIgnored, config, |h| {
        h.at(1.0).heartbeat(0);
        // Asked to wake at 3 s, the supervisor runs again only at 10 s.
        h.set_now(Instant::from_secs_f64(10.0)).input(Input::Tick);
        h.at(13.0);
    });
    let killed = |h: &Harness| first_retirement(h, StopReason::HeartbeatTimeout);
    assert_eq!(killed(&shipped), Some(12_000), "a fresh window from 10 s");
    assert_eq!(killed(&planted), Some(10_000), "killed on coming back");
}

#[test]
fn request_half_kills_a_request_at_half_its_timeout() {
    let mut config = notify(Config::static_pool(1));
    config.request_timeout = Some(Duration::from_secs(10));
    let (shipped, planted) = both(Plant::RequestHalf, config, |h| {
        h.at(0.5).ready(0);
        h.at(1.0).load(0, 1, 1);
        h.at(20.0);
    });
    let reason = StopReason::RequestTimeout;
    assert_eq!(first_retirement(&shipped, reason), Some(11_000));
    assert_eq!(first_retirement(&planted, reason), Some(6_000));
}

#[test]
fn max_requests_early_retires_one_request_before_the_limit() {
    let mut config = Config::static_pool(1);
    config.max_requests = Some(10);
    let (shipped, planted) = both(Plant::MaxRequestsEarly, config, |h| {
        h.at(1.0).load(0, 0, 9);
    });
    assert_eq!(first_retirement(&shipped, StopReason::MaxRequests), None);
    assert_eq!(
        first_retirement(&planted, StopReason::MaxRequests),
        Some(1_000)
    );
}

/// When the first worker of a dynamic pool is retired for idleness, shipped and planted.
fn idle_retirement(plant: Plant) -> (Option<u64>, Option<u64>) {
    let mut config = Config::new(Policy::Dynamic {
        min: 0,
        max: 4,
        start: 3,
        min_spare: 1,
        max_spare: 4,
    });
    config.idle_timeout = Some(Duration::from_secs(10));
    let (shipped, planted) = both(plant, config, |h| {
        h.at(30.0);
    });
    let first = |h: &Harness| first_retirement(h, StopReason::Idle);
    (first(&shipped), first(&planted))
}

#[test]
fn idle_half_retires_after_half_the_idle_timeout() {
    assert_eq!(
        idle_retirement(Plant::IdleHalf),
        (Some(10_000), Some(5_000))
    );
}

#[test]
fn idle_double_retires_after_twice_the_idle_timeout() {
    assert_eq!(
        idle_retirement(Plant::IdleDouble),
        (Some(10_000), Some(20_000))
    );
}

#[test]
fn killed_counts_backs_off_after_kills_from_outside() {
    let (shipped, planted) = kill_delays(Plant::KilledCounts);
    assert_eq!(shipped, [Duration::ZERO; 4], "replaced at once");
    assert_eq!(planted[..3], [Duration::ZERO, secs(1), secs(2)]);
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The restart delays scheduled after a Ready worker is SIGKILLed from outside soon after
/// each start.
fn kill_delays(plant: Plant) -> (Vec<Duration>, Vec<Duration>) {
    deaths(plant, ExitStatus::Signaled(9))
}

/// The restart delays scheduled after a worker crashes soon after each start.
fn crash_delays(plant: Plant) -> (Vec<Duration>, Vec<Duration>) {
    deaths(plant, ExitStatus::Code(1))
}

fn deaths(plant: Plant, status: ExitStatus) -> (Vec<Duration>, Vec<Duration>) {
    let config = Config::static_pool(1);
    // Each crash 8 s after the last: every restart (after at most 4 s) dies young.
    let (shipped, planted) = both(plant, config, |h| {
        for k in 0..4 {
            h.at(f64::from(k) * 8.0 + 1.0);
            h.exit(0, status);
        }
    });
    let delays = |h: &Harness| {
        events(h)
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::RestartScheduled { delay, .. } => Some(delay),
                _ => None,
            })
            .collect()
    };
    (delays(&shipped), delays(&planted))
}

#[test]
fn backoff_zero_restarts_at_once_every_time() {
    let s = Duration::from_secs;
    let (shipped, planted) = crash_delays(Plant::BackoffZero);
    assert_eq!(shipped, [s(0), s(1), s(2), s(4)]);
    assert_eq!(planted, [s(0); 4]);
}

#[test]
fn backoff_no_double_stays_at_backoff_min() {
    let s = Duration::from_secs;
    let (shipped, planted) = crash_delays(Plant::BackoffNoDouble);
    assert_eq!(shipped, [s(0), s(1), s(2), s(4)]);
    assert_eq!(planted, [s(0), s(1), s(1), s(1)]);
}

#[test]
fn crash_loop_early_declares_it_at_intensity_deaths() {
    let mut config = Config::static_pool(1);
    config.restart.intensity_deaths = 2;
    let (shipped, planted) = both(Plant::CrashLoopEarly, config, |h| {
        for k in 0..2 {
            h.at(f64::from(k) * 5.0 + 1.0);
            h.exit(0, ExitStatus::Code(1));
        }
    });
    let looping = |h: &Harness| {
        events(h)
            .iter()
            .any(|(_, e)| matches!(e, Event::CrashLooping { .. }))
    };
    assert!(
        !looping(&shipped),
        "two deaths are not more than intensity_deaths = 2"
    );
    assert!(looping(&planted));
}

/// Spawns performed at `at` ms.
fn spawns_at(h: &Harness, at: u64) -> usize {
    h.performed()
        .filter(|(t, a)| ms(*t) == at && matches!(a, Action::Spawn { .. }))
        .count()
}

#[test]
fn surge_plus_one_places_one_more_than_max_surge() {
    let config = notify(Config::new(Policy::Dynamic {
        min: 2,
        max: 8,
        start: 3,
        min_spare: 1,
        max_spare: 8,
    }));
    let (shipped, planted) = both(Plant::SurgePlusOne, config, |h| {
        h.at(0.5);
        for slot in 0..3 {
            h.ready(slot);
        }
        h.at(2.0).command(Command::Restart);
    });
    assert_eq!(spawns_at(&shipped, 2_000), 1, "max_surge = 1");
    assert_eq!(spawns_at(&planted, 2_000), 2);
}

#[test]
fn unavailable_ignored_retires_ready_workers_below_the_floor() {
    let config = notify(Config::static_pool(3));
    let (shipped, planted) = both(Plant::UnavailableIgnored, config, |h| {
        h.at(0.5);
        for slot in 0..3 {
            h.ready(slot);
        }
        h.at(2.0).command(Command::Restart);
    });
    let restarts = |h: &Harness| {
        retirements(h)
            .iter()
            .filter(|r| r.2 == StopReason::Restart)
            .count()
    };
    assert_eq!(
        restarts(&shipped),
        0,
        "max_unavailable = 0: none before its replacement is Ready"
    );
    assert!(restarts(&planted) > 0);
}

#[test]
fn restart_now_rolling_retires_one_place_at_once() {
    let config = notify(Config::static_pool(3));
    let (shipped, planted) = both(Plant::RestartNowRolling, config, |h| {
        h.at(0.5);
        for slot in 0..3 {
            h.ready(slot);
        }
        h.at(2.0).command(Command::RestartNow);
    });
    let at_once = |h: &Harness| {
        retirements(h)
            .iter()
            .filter(|r| r.2 == StopReason::RestartNow && r.0 == 2000)
            .count()
    };
    assert_eq!(at_once(&shipped), 3, "every Ready worker goes at once");
    assert_eq!(at_once(&planted), 1);
}

/// Four idle workers, spares allowed 2: the first tick scales down.
fn surplus() -> Config {
    Config::new(Policy::Dynamic {
        min: 0,
        max: 8,
        start: 4,
        min_spare: 1,
        max_spare: 2,
    })
}

#[test]
fn scale_down_busy_retires_a_busy_worker_while_idle_ones_exist() {
    let (shipped, planted) = both(Plant::ScaleDownBusy, surplus(), |h| {
        h.at(0.5).load(0, 1, 1);
        h.at(1.0);
    });
    let victim = |h: &Harness| {
        retirements(h)
            .into_iter()
            .find(|r| r.2 == StopReason::ScaleDown)
            .map(|r| r.1)
    };
    assert_eq!(victim(&shipped), Some(1), "the longest-idle worker");
    assert_eq!(victim(&planted), Some(0), "the busy one");
}

#[test]
fn scale_down_two_retires_two_in_one_tick() {
    let (shipped, planted) = both(Plant::ScaleDownTwo, surplus(), |h| {
        h.at(1.0);
    });
    let at_tick = |h: &Harness| {
        retirements(h)
            .iter()
            .filter(|r| r.0 == 1_000 && r.2 == StopReason::ScaleDown)
            .count()
    };
    assert_eq!(at_tick(&shipped), 1);
    assert_eq!(at_tick(&planted), 2);
}

#[test]
fn ladder_skip_first_starts_a_graceful_stop_with_kill() {
    let (shipped, planted) = both(Plant::LadderSkipFirst, Config::static_pool(1), |h| {
        h.at(1.0).command(Command::Stop);
    });
    assert_eq!(signals(&shipped).first(), Some(&Signal::Term));
    assert_eq!(signals(&planted).first(), Some(&Signal::Kill));
}

#[test]
fn immediate_graceful_starts_a_stop_now_with_term() {
    let (shipped, planted) = both(Plant::ImmediateGraceful, Config::static_pool(1), |h| {
        h.at(1.0).command(Command::StopNow);
    });
    assert_eq!(signals(&shipped).first(), Some(&Signal::Kill));
    assert_eq!(signals(&planted).first(), Some(&Signal::Term));
}

#[test]
fn ramp_triple_grows_the_spawn_ramp_by_three() {
    let config = notify(Config::new(Policy::Dynamic {
        min: 1,
        max: 32,
        start: 1,
        min_spare: 1,
        max_spare: 32,
    }));
    let (shipped, planted) = both(Plant::RampTriple, config, |h| {
        h.at(0.5).ready(0);
        h.load(0, 1, 1);
        h.input(Input::Backlog {
            listener: 0,
            queued: 30,
        });
        h.at(2.0);
    });
    let steps = |h: &Harness| -> Vec<u32> {
        events(h)
            .into_iter()
            .filter_map(|(_, e)| match e {
                Event::Scaled { from, to } if to > from => Some(to - from),
                _ => None,
            })
            .collect()
    };
    assert_eq!(steps(&shipped), [1, 2]);
    assert_eq!(steps(&planted), [1, 3]);
}

#[test]
fn upgrade_timeout_double_rolls_back_at_twice_the_timeout() {
    let (shipped, planted) = both(Plant::UpgradeTimeoutDouble, Config::static_pool(1), |h| {
        h.at(1.0).command(Command::Upgrade);
        h.at(200.0);
    });
    let rolled_back = |h: &Harness| {
        events(h)
            .into_iter()
            .find(|(_, e)| matches!(e, Event::UpgradeRolledBack { .. }))
            .map(|(t, _)| t)
    };
    assert_eq!(rolled_back(&shipped), Some(61_000));
    assert_eq!(rolled_back(&planted), Some(121_000));
}

#[test]
fn handover_early_hands_over_to_a_successor_not_yet_ready() {
    let (shipped, planted) = both(Plant::HandoverEarly, Config::static_pool(1), |h| {
        h.at(1.0).command(Command::Upgrade);
    });
    assert_eq!(shipped.sup().phase(), Phase::Running);
    assert_eq!(planted.sup().phase(), Phase::Handover);
}

/// Target changes: (ms, from, to).
fn scaled(h: &Harness) -> Vec<(u64, u32, u32)> {
    events(h)
        .into_iter()
        .filter_map(|(t, e)| match e {
            Event::Scaled { from, to } => Some((t, from, to)),
            _ => None,
        })
        .collect()
}

#[test]
fn backlog_at_tick_answers_waiting_connections_only_at_the_next_tick() {
    let config = Config::new(Policy::Ondemand { min: 0, max: 4 });
    let (shipped, planted) = both(Plant::BacklogAtTick, config, |h| {
        h.at(0.5).input(Input::Backlog {
            listener: 0,
            queued: 3,
        });
        h.at(1.0);
    });
    assert_eq!(
        scaled(&shipped).first(),
        Some(&(500, 0, 1)),
        "at the sample"
    );
    assert_eq!(
        scaled(&planted).first(),
        Some(&(1_000, 0, 1)),
        "at the tick"
    );
}

#[test]
fn spare_at_max_shrinks_a_pool_with_exactly_max_spare_idle() {
    // Four workers of one thread, one busy: three idle, and max_spare is three.
    let config = Config::new(Policy::Dynamic {
        min: 0,
        max: 8,
        start: 4,
        min_spare: 1,
        max_spare: 3,
    });
    let (shipped, planted) = both(Plant::SpareAtMax, config, |h| {
        h.at(0.5).load(0, 1, 1);
        h.at(1.0);
    });
    assert_eq!(scaled(&shipped), []);
    assert_eq!(scaled(&planted), [(1_000, 4, 3)]);
}

#[test]
fn resume_forgotten_drains_on_after_the_successor_died() {
    let (shipped, planted) = both(Plant::ResumeForgotten, Config::static_pool(1), |h| {
        h.at(1.0).command(Command::Upgrade);
        h.at(2.0).input(Input::SuccessorReady);
        let pid = h.successor_pid().expect("a successor runs");
        h.at(3.0).input(Input::Exited {
            pid,
            status: ExitStatus::Code(1),
        });
    });
    assert_eq!(
        shipped.sup().phase(),
        Phase::Running,
        "the pool is its own again"
    );
    assert_eq!(planted.sup().phase(), Phase::Handover, "drains for nobody");
}

#[test]
fn requests_total_counts_each_reports_total_again() {
    let script = |h: &mut Harness| {
        h.at(1.0).load(0, 0, 10).at(2.0).load(0, 0, 15);
    };
    let (shipped, planted) = both(Plant::RequestsTotal, Config::static_pool(1), script);
    assert_eq!(shipped.sup().counters().requests(), 15);
    assert_eq!(planted.sup().counters().requests(), 25);
}

/// A static pool of `workers` with slot addresses (per-worker ports).
fn addressed(workers: u32) -> Config {
    let mut config = Config::static_pool(workers);
    config.slot_addresses = true;
    config.max_surge = 0;
    config.max_unavailable = 1;
    config
}

#[test]
fn scale_down_ignores_slots_retires_the_idlest_not_the_highest() {
    let slots = |h: &Harness| -> Vec<u32> { retirements(h).iter().map(|r| r.1).collect() };
    // A dynamic pool of 3 with one spare too many; slot 2 is busy, slot 0 idle longest.
    let mut config = addressed(1);
    config.policy = Policy::Dynamic {
        min: 1,
        max: 4,
        start: 3,
        min_spare: 1,
        max_spare: 1,
    };
    let (shipped, planted) = both(Plant::ScaleDownIgnoresSlots, config, |h| {
        h.at(0.5).load(2, 1, 1);
        h.at(1.0);
    });
    assert_eq!(slots(&shipped)[0], 2, "the highest slot, busy or not");
    assert_eq!(slots(&planted)[0], 0, "the longest idle");
}

#[test]
fn address_counts_backs_off_and_loops_on_a_busy_port() {
    let mut config = addressed(1);
    config.restart.intensity_deaths = 2;
    let (shipped, planted) = both(Plant::AddressCounts, config, |h| {
        h.fail_spawns_with(10, drover_machine::SpawnError::Address(98));
        h.at(1.0).command(Command::ScaleUp);
        h.at(600.0);
    });
    let looped = |h: &Harness| {
        events(h)
            .iter()
            .any(|(_, e)| matches!(e, Event::CrashLooping { .. }))
    };
    assert!(!looped(&shipped));
    assert!(looped(&planted));
}
