//! The byte decoders of `machine_inputs`: integers that fall back to their low end once the
//! bytes run out, and valid configs (the starting one and those a reload brings).

use std::sync::Arc;

use drover_machine::{
    Config, Duration, Ladder, OnCrashLoop, Policy, Readiness, Restart, Signal, Stage,
};
use libfuzzer_sys::arbitrary::{unstructured::Int, Unstructured};

/// An integer in `range`; the low end once the bytes run out.
pub(crate) fn int<T: Int>(u: &mut Unstructured, range: std::ops::RangeInclusive<T>) -> T {
    let low = *range.start();
    u.int_in_range(range).unwrap_or(low)
}

pub(crate) fn byte(u: &mut Unstructured) -> u8 {
    int(u, 0..=u8::MAX)
}

/// True with probability `n` in 256 (false once the bytes run out).
pub(crate) fn chance(u: &mut Unstructured, n: u8) -> bool {
    !u.is_empty() && byte(u) < n
}

pub(crate) fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub(crate) fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

const GRACEFUL: [Signal; 8] = [
    Signal::Term,
    Signal::Int,
    Signal::Quit,
    Signal::Hup,
    Signal::Usr1,
    Signal::Usr2,
    Signal::Abrt,
    Signal::Winch,
];

// ------------------------------------------------------------------------- configs

/// A valid config from the bytes: a one-byte preset (static, dynamic, ondemand, each sized
/// by the next bytes) or, for preset 0, every field decoded. Falls back to a static pool of
/// two if the decoded fields do not validate (a decoder bug, not the machine's).
pub fn config(u: &mut Unstructured) -> Config {
    let c = match int(u, 0..=4u8) {
        0 => detailed_config(u),
        1 => {
            let mut c = Config::static_pool(int(u, 1..=8));
            quick_flags(u, &mut c);
            c
        }
        2 => {
            let max = int(u, 1..=8);
            let min = int(u, 0..=max);
            let min_spare = int(u, 1..=4);
            let mut c = Config::dynamic(min, max, min_spare, min_spare + int(u, 2..=4));
            quick_flags(u, &mut c);
            c
        }
        3 => {
            let mut c = Config::ondemand(int(u, 1..=8));
            quick_flags(u, &mut c);
            c
        }
        _ => {
            let mut c = Config::static_pool(int(u, 1..=4));
            c.ladder = Arc::new(Ladder::serverengine());
            quick_flags(u, &mut c);
            c
        }
    };
    if c.validate().is_ok() {
        c
    } else {
        Config::static_pool(2)
    }
}

/// One byte of flags for a preset: readiness, watchdog, request timeout, max requests,
/// crash-loop exit, unrecoverable code 3, a short stop timeout.
fn quick_flags(u: &mut Unstructured, c: &mut Config) {
    let flags = byte(u);
    if flags & 1 != 0 {
        c.readiness = Readiness::Notify;
        c.boot_timeout = secs(5);
    }
    if flags & 2 != 0 {
        c.heartbeat_timeout = Some(secs(3));
    }
    if flags & 4 != 0 {
        c.request_timeout = Some(secs(10));
    }
    if flags & 8 != 0 {
        c.max_requests = Some(5);
        c.max_requests_jitter = 2;
    }
    if flags & 16 != 0 {
        c.restart.on_crash_loop = OnCrashLoop::Exit(7);
        c.restart.intensity_deaths = 3;
    }
    if flags & 32 != 0 {
        c.restart.unrecoverable_exit_codes = vec![3];
        c.restart.stop_on_unrecoverable = flags & 64 != 0;
    }
    if flags & 128 != 0 && c.ladder.stages.len() == 2 {
        c.ladder = Arc::new(Ladder::for_any_program(secs(2)));
    }
}

fn detailed_config(u: &mut Unstructured) -> Config {
    let threads = int(u, 1..=4u32);
    let policy = match int(u, 0..=2u8) {
        0 => Policy::Static {
            workers: int(u, 1..=8),
        },
        1 => {
            let max = int(u, 1..=8);
            let min = int(u, 0..=max);
            let start = int(u, min..=max);
            let min_spare = int(u, 1..=8);
            Policy::Dynamic {
                min,
                max,
                start,
                min_spare,
                max_spare: min_spare + threads - 1 + int(u, 0..=4),
            }
        }
        _ => {
            let max = int(u, 1..=8);
            Policy::Ondemand {
                min: int(u, 0..=max),
                max,
            }
        }
    };
    let ondemand = matches!(policy, Policy::Ondemand { .. });
    let mut c = Config::new(policy);
    c.threads = threads;
    c.max_spawn_rate = [1, 2, 4, 32][int(u, 0..=3usize)];
    c.maintenance_interval = [millis(250), secs(1), secs(2), secs(5)][int(u, 0..=3usize)];
    c.idle_timeout = match int(u, 0..=60u64) {
        0 if !ondemand => None,
        n => Some(secs(n.max(1))),
    };
    c.max_requests = match int(u, 0..=500u64) {
        0 => None,
        n => Some(n),
    };
    c.max_requests_jitter = if c.max_requests.is_some() {
        int(u, 0..=50)
    } else {
        0
    };
    c.seed = u.arbitrary().unwrap_or(0);
    c.readiness = if chance(u, 128) {
        Readiness::Notify
    } else {
        Readiness::AtSpawn
    };
    c.boot_timeout = secs(int(u, 1..=120));
    c.heartbeat_timeout = Some(int(u, 0..=60)).filter(|s| *s > 0).map(secs);
    c.request_timeout = Some(int(u, 0..=120)).filter(|s| *s > 0).map(secs);
    c.ladder = Arc::new(ladder(u));
    c.restart = restart(u);
    c.max_surge = int(u, 0..=3);
    c.max_unavailable = int(u, 0..=2);
    if c.max_surge == 0 && c.max_unavailable == 0 {
        c.max_surge = 1;
    }
    c.upgrade_timeout = secs(int(u, 1..=120));
    c.worker_fingerprint = int(u, 0..=2);
    c
}

fn ladder(u: &mut Unstructured) -> Ladder {
    match int(u, 0..=2u8) {
        0 => Ladder::for_any_program(secs(int(u, 1..=60))),
        1 => Ladder::serverengine(),
        _ => {
            let mut stages: Vec<Stage> = (0..int(u, 0..=3usize))
                .map(|_| Stage {
                    signal: GRACEFUL[int(u, 0..=7usize)],
                    interval: secs(int(u, 1..=20)),
                    increment: secs(int(u, 0..=10)),
                    timeout: secs(int(u, 1..=120)),
                })
                .collect();
            stages.push(Stage::kill());
            let immediate_from = int(u, 0..=stages.len() - 1);
            Ladder {
                stages,
                immediate_from,
            }
        }
    }
}

fn restart(u: &mut Unstructured) -> Restart {
    let backoff_min = int(u, 100..=5_000u64);
    let codes: Vec<i32> = (0..int(u, 0..=2usize)).map(|_| int(u, 1..=5)).collect();
    Restart {
        backoff_min: millis(backoff_min),
        backoff_max: millis(backoff_min + int(u, 0..=60_000)),
        healthy_uptime: secs(int(u, 1..=60)),
        intensity_deaths: int(u, 1..=20),
        intensity_window: secs(int(u, 1..=120)),
        on_crash_loop: if chance(u, 64) {
            OnCrashLoop::Exit(int(u, 3..=9))
        } else {
            OnCrashLoop::Backoff
        },
        stop_on_unrecoverable: !codes.is_empty() && chance(u, 128),
        unrecoverable_exit_codes: codes,
        // Drawn in field order after the older ones: older corpus entries keep their
        // meaning up to here (a corpus entry that ran out of bytes draws false).
        quick_restart_rate: int(u, 1..=64),
        fail_start: chance(u, 48),
    }
}
