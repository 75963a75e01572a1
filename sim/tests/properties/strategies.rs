//! What a case is made of: a config (and configs to reload), the faults of its world, and
//! the steps (a time advance, then one input or event).

use std::sync::Arc;

use drover_machine::{
    Config, Duration, ExitStatus, Ladder, OnCrashLoop, Policy, Readiness, Restart, Signal, Stage,
};
use proptest::prelude::*;

use crate::{millis, secs};

pub(crate) fn policy(threads: u32) -> BoxedStrategy<Policy> {
    prop_oneof![
        (1u32..=8).prop_map(|workers| Policy::Static { workers }),
        (1u32..=8, 0u32..=8, 0u32..=8, 1u32..=8, 0u32..=4).prop_map(
            move |(max, min, start, min_spare, extra)| {
                let min = min.min(max);
                Policy::Dynamic {
                    min,
                    max,
                    start: min + start % (max - min + 1),
                    min_spare,
                    max_spare: min_spare + threads - 1 + extra,
                }
            }
        ),
        (1u32..=8, 0u32..=8).prop_map(|(max, min)| Policy::Ondemand {
            min: min.min(max),
            max
        }),
    ]
    .boxed()
}

pub(crate) fn graceful_signal() -> impl Strategy<Value = Signal> {
    // Any signal a non-final ladder stage may use: all but KILL.
    prop::sample::select(
        Signal::ALL
            .into_iter()
            .filter(|s| *s != Signal::Kill)
            .collect::<Vec<_>>(),
    )
}

pub(crate) fn ladder() -> impl Strategy<Value = Ladder> {
    let custom = (
        prop::collection::vec((graceful_signal(), 1u64..=20, 0u64..=10, 1u64..=120), 0..=3),
        any::<usize>(),
    )
        .prop_map(|(stages, immediate)| {
            let mut stages: Vec<Stage> = stages
                .into_iter()
                .map(|(signal, interval, increment, timeout)| Stage {
                    signal,
                    interval: secs(interval),
                    increment: secs(increment),
                    timeout: secs(timeout),
                })
                .collect();
            stages.push(Stage::kill());
            let immediate_from = immediate % stages.len();
            Ladder {
                stages,
                immediate_from,
            }
        });
    prop_oneof![
        (1u64..=60).prop_map(|s| Ladder::for_any_program(secs(s))),
        Just(Ladder::serverengine()),
        custom,
    ]
}

pub(crate) fn restart() -> impl Strategy<Value = Restart> {
    (
        (100u64..=5_000, 0u64..=60_000, 1u64..=60),
        (1u32..=20, 1u64..=120, 1u32..=64),
        prop_oneof![
            3 => Just(OnCrashLoop::Backoff),
            1 => (3i32..=9).prop_map(OnCrashLoop::Exit)
        ],
        prop::collection::vec(1i32..=5, 0..=2),
        (any::<bool>(), prop::bool::weighted(0.2)),
    )
        .prop_map(
            |(
                (min, extra, healthy),
                (deaths, window, quick),
                on_crash_loop,
                codes,
                (stop, fail_start),
            )| {
                Restart {
                    backoff_min: millis(min),
                    backoff_max: millis(min + extra),
                    healthy_uptime: secs(healthy),
                    intensity_deaths: deaths,
                    intensity_window: secs(window),
                    on_crash_loop,
                    stop_on_unrecoverable: stop && !codes.is_empty(),
                    unrecoverable_exit_codes: codes,
                    fail_start,
                    quick_restart_rate: quick,
                }
            },
        )
}

pub(crate) fn config() -> impl Strategy<Value = Config> {
    (1u32..=4)
        .prop_flat_map(|threads| {
            (
                (Just(threads), policy(threads), 1u32..=32),
                (
                    prop::sample::select(vec![1u64, 2, 5]),
                    prop::option::of(1u64..=60),
                    prop::option::of(1u64..=500),
                    0u64..=50,
                    any::<u64>(),
                ),
                (
                    prop_oneof![Just(Readiness::AtSpawn), Just(Readiness::Notify)],
                    1u64..=120,
                    prop::option::of(1u64..=60),
                    prop::option::of(1u64..=120),
                ),
                (ladder(), restart()),
                (0u32..=3, 0u32..=2, 1u64..=120, 0u64..=2),
            )
        })
        .prop_map(
            |(
                (threads, policy, max_spawn_rate),
                (maintenance, idle, max_requests, jitter, seed),
                (readiness, boot, heartbeat, request),
                (ladder, restart),
                (max_surge, max_unavailable, upgrade, fingerprint),
            )| {
                let ondemand = matches!(policy, Policy::Ondemand { .. });
                let mut c = Config::new(policy);
                c.threads = threads;
                c.max_spawn_rate = max_spawn_rate;
                c.maintenance_interval = secs(maintenance);
                c.idle_timeout = idle.map(secs).or(ondemand.then(|| secs(10)));
                c.max_requests = max_requests;
                c.max_requests_jitter = if max_requests.is_some() { jitter } else { 0 };
                c.seed = seed;
                c.readiness = readiness;
                c.boot_timeout = secs(boot);
                c.heartbeat_timeout = heartbeat.map(secs);
                c.request_timeout = request.map(secs);
                c.ladder = Arc::new(ladder);
                c.restart = restart;
                c.max_surge = max_surge;
                c.max_unavailable = max_unavailable;
                c.upgrade_timeout = secs(upgrade);
                c.worker_fingerprint = fingerprint;
                c
            },
        )
        .prop_filter("config must validate", |c| c.validate().is_ok())
}

/// Which worker a message names.
#[derive(Clone, Debug)]
pub(crate) enum Pick {
    /// One of `Supervisor::workers()` (any state).
    Live(usize),
    /// An earlier incarnation of an occupied slot.
    Stale(usize),
    /// A slot or incarnation that never existed.
    Never(u32),
}

pub(crate) fn pick() -> impl Strategy<Value = Pick> {
    prop_oneof![
        8 => any::<usize>().prop_map(Pick::Live),
        1 => any::<usize>().prop_map(Pick::Stale),
        1 => any::<u32>().prop_map(Pick::Never),
    ]
}

#[derive(Clone, Debug)]
pub(crate) enum Scale {
    Small(u32),
    /// One above the pool's scale bound.
    JustAbove,
    Huge,
}

#[derive(Clone, Debug)]
pub(crate) enum Cmd {
    Stop,
    StopNow,
    Restart,
    RestartNow,
    Reload(usize),
    ReloadInvalid,
    Upgrade,
    ScaleTo(Scale),
    ScaleUp,
    ScaleDown,
}

pub(crate) fn cmd() -> impl Strategy<Value = Cmd> {
    // Stops are rare: they end the interesting part of a case.
    prop_oneof![
        1 => Just(Cmd::Stop),
        1 => Just(Cmd::StopNow),
        20 => Just(Cmd::Restart),
        5 => Just(Cmd::RestartNow),
        20 => any::<usize>().prop_map(Cmd::Reload),
        5 => Just(Cmd::ReloadInvalid),
        20 => Just(Cmd::Upgrade),
        15 => (0u32..=16).prop_map(|n| Cmd::ScaleTo(Scale::Small(n))),
        5 => Just(Cmd::ScaleTo(Scale::JustAbove)),
        5 => Just(Cmd::ScaleTo(Scale::Huge)),
        15 => Just(Cmd::ScaleUp),
        15 => Just(Cmd::ScaleDown),
    ]
}

/// One step's event. Worker messages are read with the reports of the next wake-up (at
/// once, or when the driver stops holding them); exits are reaped after the drain; the rest
/// are fed to the driver in a turn of their own.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    /// A wake-up with nothing to read.
    Tick,
    Ready(Pick),
    Heartbeat(Pick),
    /// Heartbeats stamped `ago_ms` before now (after now when negative), read late and
    /// together (`handle_all`), as the shell reads the embedded runtime's report board.
    Reports(Vec<(Pick, i64)>),
    Load {
        pick: Pick,
        busy: u32,
        since_ago_ms: Option<u64>,
        requests: u64,
    },
    /// A live worker process (tracked or stray) exits on its own.
    Crash {
        idx: usize,
        status: ExitStatus,
    },
    /// Only its main process does: the rest of its group runs on (`MainExited`).
    MainExit {
        idx: usize,
        status: ExitStatus,
    },
    ExitUnknown,
    /// `Spawned` for an arbitrary worker (one that is not spawning: forks are answered at
    /// once, inside the drain).
    StraySpawned(Pick),
    StraySpawnFailed(Pick),
    Backlog {
        listener: u32,
        queued: u32,
    },
    Command(Cmd),
    SuccessorStarted,
    SuccessorFailed,
    /// The successor in flight says it is ready, unless it is one that hangs.
    SuccessorReady,
    SuccessorExit(usize),
    /// Delayed KILL effects arrive: the next reap finds them.
    FlushDelayed,
    /// The predecessor hands over (`takeover`), or its channel closes before it did.
    Takeover {
        predecessor_gone: bool,
    },
}

pub(crate) fn exit_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        (0i32..=5).prop_map(ExitStatus::Code),
        prop::sample::select(vec![6, 9, 11, 15]).prop_map(ExitStatus::Signaled),
    ]
}

pub(crate) fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Tick),
        8 => pick().prop_map(Op::Ready),
        8 => pick().prop_map(Op::Heartbeat),
        4 => prop::collection::vec((pick(), -2_000i64..=60_000), 1..=4).prop_map(Op::Reports),
        8 => (pick(), 0u32..=6, prop::option::of(0u64..=300_000), 0u64..=1_000).prop_map(
            |(pick, busy, since_ago_ms, requests)| Op::Load { pick, busy, since_ago_ms, requests }
        ),
        6 => (any::<usize>(), exit_status()).prop_map(|(idx, status)| Op::Crash { idx, status }),
        2 => (any::<usize>(), exit_status()).prop_map(|(idx, status)| Op::MainExit { idx, status }),
        2 => Just(Op::ExitUnknown),
        2 => pick().prop_map(Op::StraySpawned),
        2 => pick().prop_map(Op::StraySpawnFailed),
        4 => (0u32..=3, 0u32..=20).prop_map(|(listener, queued)| Op::Backlog { listener, queued }),
        8 => cmd().prop_map(Op::Command),
        2 => Just(Op::SuccessorStarted),
        1 => Just(Op::SuccessorFailed),
        2 => Just(Op::SuccessorReady),
        2 => any::<usize>().prop_map(Op::SuccessorExit),
        3 => Just(Op::FlushDelayed),
        1 => any::<bool>().prop_map(|predecessor_gone| Op::Takeover { predecessor_gone }),
    ]
}

#[derive(Clone, Debug)]
pub(crate) struct Step {
    pub advance: Duration,
    /// A late wake-up: the clock moves to the step's time with no wake-up on the way, so
    /// the step's event comes first and the deadlines passed meanwhile run with it.
    pub late: bool,
    pub op: Op,
    /// Seed of the model OS's decisions inside this step's drains.
    pub dice: u64,
}

pub(crate) fn step() -> impl Strategy<Value = Step> {
    (
        prop_oneof![
            3 => Just(0u64),
            10 => 0u64..3_000,
            5 => 0u64..120_000,
            1 => 120_000u64..1_800_000,
        ],
        prop::bool::weighted(0.15),
        op(),
        any::<u64>(),
    )
        .prop_map(|(ms, late, op, dice)| Step {
            advance: millis(ms),
            late,
            op,
            dice,
        })
}

/// The world of one case: fault rates in percent (swarm testing: some cases have none of a
/// kind), and how its message socket queues.
#[derive(Clone, Debug)]
pub(crate) struct Faults {
    pub spawn_fail: u64,
    /// A fork takes long: the loop is blocked, the clock moves on inside the drain.
    pub slow_fork: u64,
    /// A graceful signal makes the worker exit.
    pub term_exit: u64,
    /// A KILL takes effect only at a later step.
    pub kill_delay: u64,
    pub successor_fail: u64,
    /// The successor starts but never gets ready (the upgrade times out).
    pub successor_slow: u64,
    /// Once healed, workers exit on their first graceful signal; otherwise only KILL ends
    /// them (the worst case for the ladder bound).
    pub healed_obey: bool,
    /// How the converged pool is taken down.
    pub ending: Ending,
    /// Datagrams the workers' message socket holds: 0 reads every message at once, more
    /// lets the driver leave heartbeats unread until `messages_due`.
    pub messages_queue: u32,
    /// The supervisor is a live upgrade's successor (`Supervisor::succeeding`) until an
    /// `Op::Takeover`, or the healed predecessor's handover in the liveness phase.
    pub successor: bool,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Ending {
    Stop,
    /// A rolling restart first (capacity checked throughout), then Stop.
    RestartThenStop,
    /// A live upgrade that succeeds: the pool drains and exits 0.
    Upgrade,
}

pub(crate) fn faults() -> impl Strategy<Value = Faults> {
    let rate = |max: u64| prop_oneof![Just(0u64), 0..=max];
    (
        (rate(40), rate(20), rate(100), rate(40), rate(50), rate(50)),
        any::<bool>(),
        prop_oneof![
            Just(Ending::Stop),
            Just(Ending::RestartThenStop),
            Just(Ending::Upgrade)
        ],
        prop::sample::select(vec![0u32, 10, 1024]),
        prop::bool::weighted(0.2),
    )
        .prop_map(
            |(
                (spawn_fail, slow_fork, term_exit, kill_delay, successor_fail, successor_slow),
                healed_obey,
                ending,
                messages_queue,
                successor,
            )| Faults {
                spawn_fail,
                slow_fork,
                term_exit,
                kill_delay,
                successor_fail,
                successor_slow,
                healed_obey,
                ending,
                messages_queue,
                successor,
            },
        )
}
