//! Swarm testing: each seed switches every fault kind on or off and draws its rate, so that
//! across seeds faults appear alone, together, rare and frequent. Also the random machine
//! config and the load model of a run.

use core::fmt;
use core::time::Duration;
use std::sync::Arc;

use drover_machine::{Config, Generation, Ladder, OnCrashLoop, Policy, Readiness};

use crate::rng::Rng;

/// Probabilities (per process, per spawn, per message …) of every fault kind; 0 is off.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// fork fails with EAGAIN.
    pub fork_fail: f64,
    /// fork is slow: it blocks the supervisor's loop (10 ms to 2 s), as fork is synchronous.
    pub fork_slow: f64,
    /// A process crashes before it is booted.
    pub crash_boot: f64,
    /// A process crashes some time after it booted.
    pub crash_ready: f64,
    /// A process crashes while it drains after TERM.
    pub crash_drain: f64,
    /// A generation is a bad release: its processes crash at boot (a crash loop).
    pub bad_release: f64,
    /// A process hangs: no more heartbeats, no progress, signals other than KILL ignored.
    pub hang: f64,
    /// A process ignores TERM, INT and QUIT.
    pub ignore_term: f64,
    /// A process keeps draining long after its last request.
    pub slow_drain: f64,
    /// KILL takes effect late (a process stuck in the kernel).
    pub kill_delay: f64,
    /// A process exits with an unrecoverable code (when the config lists one).
    pub unrecoverable: f64,
    /// The pid space is small, so pids are reused soon.
    pub pid_reuse: bool,
    /// SIGCHLD is delivered late and coalesced: several exits reaped at one wake-up.
    pub sigchld_coalesce: bool,
    /// Worker messages are delayed, so they overtake or trail the worker's exit.
    pub msg_delay: f64,
    /// The supervisor's timer wakes up late.
    pub late_wakeup: f64,
    /// Probability per simulated minute of a clock jump (suspend/resume).
    pub clock_jump: f64,
    /// Operator commands per simulated minute.
    pub operator: f64,
    /// A live upgrade's successor fails to start, crashes or hangs.
    pub successor_fail: f64,
    /// Children inherited from a previous supervisor (an upgrade) exit under this one: the
    /// shell reaps them and tells the machine nothing.
    pub inherited: bool,
    /// Not a fault but a way of reporting, kept when the faults heal: workers publish
    /// heartbeats and load in shared memory, as the embedded runtime does, which the
    /// supervisor reads when it wakes up (feeding `HeartbeatAt` with the worker's own
    /// stamp) and when a worker rings the doorbell after a load change; no heartbeat or load
    /// message.
    pub shm_reports: bool,
    /// Not a fault either, and kept when the faults heal: workers send heartbeats only, no
    /// load reports (most programs under `drover run`), so the pool scales on the sampled
    /// accept queue and the supervisor may leave their messages unread in the notify socket
    /// until `messages_due`. Only messages are silenced: with `shm_reports` on the workers
    /// publish load on the board, so this switch is off there (drawn off, and ignored if
    /// set by hand).
    pub load_silent: bool,
    /// Where a worker process would crash, its main process exits on its own instead while
    /// the rest of its process group runs on (a shell wrapper killed, a program whose
    /// children outlive it): the supervisor is told `MainExited`, and `Exited` with the
    /// main process's status once the rest is gone too.
    pub main_exit: f64,
    /// Not a fault but how the run starts: as a live upgrade's successor, started by a
    /// predecessor whose workers are of this generation (0: a fresh start). Its workers start
    /// at the next generation; it asks the modelled predecessor to hand over once its pool is
    /// ready, and the predecessor answers `takeover` after a while, or vanishes first.
    pub successor_of: u32,
    /// Where a worker process would crash, it is killed from outside instead (SIGKILL or
    /// SIGTERM drover did not send: the OOM killer, an operator) or exits 0 on its own
    /// (the program retiring itself): deaths the restart policy does not count once the
    /// worker was Ready.
    pub outside_kill: f64,
    /// Pauses of the supervisor alone per simulated minute (SIGSTOP, heavy swapping): its
    /// workers live on. (A clock jump freezes everything together.)
    pub pause: f64,
    /// Not a fault but how the pool runs, kept when the faults heal: each slot is an
    /// address (`Config::slot_addresses`, the shell's per-worker ports), so the drawn
    /// config gets `max_surge` 0 and `max_unavailable` at least 1.
    pub slot_addresses: bool,
    /// With `slot_addresses`: a spawn fails because the slot's address is taken
    /// (`SpawnError::Address(EADDRINUSE)`).
    pub address_fail: f64,
}

impl Faults {
    pub fn none() -> Faults {
        Faults {
            fork_fail: 0.0,
            fork_slow: 0.0,
            crash_boot: 0.0,
            crash_ready: 0.0,
            crash_drain: 0.0,
            bad_release: 0.0,
            hang: 0.0,
            ignore_term: 0.0,
            slow_drain: 0.0,
            kill_delay: 0.0,
            unrecoverable: 0.0,
            pid_reuse: false,
            sigchld_coalesce: false,
            msg_delay: 0.0,
            late_wakeup: 0.0,
            clock_jump: 0.0,
            operator: 0.0,
            successor_fail: 0.0,
            inherited: false,
            shm_reports: false,
            load_silent: false,
            main_exit: 0.0,
            successor_of: 0,
            outside_kill: 0.0,
            pause: 0.0,
            slot_addresses: false,
            address_fail: 0.0,
        }
    }

    /// Each kind on with probability 1/2, its rate drawn log-uniformly within its range.
    pub fn draw(rng: &mut Rng) -> Faults {
        let mut rate = |lo: f64, hi: f64| {
            if rng.chance(0.5) {
                lo * (hi / lo).powf(rng.unit())
            } else {
                0.0
            }
        };
        Faults {
            fork_fail: rate(0.01, 0.3),
            fork_slow: rate(0.01, 0.3),
            crash_boot: rate(0.01, 0.3),
            crash_ready: rate(0.01, 0.5),
            crash_drain: rate(0.01, 0.3),
            bad_release: rate(0.05, 0.5),
            hang: rate(0.01, 0.2),
            ignore_term: rate(0.01, 0.5),
            slow_drain: rate(0.01, 0.5),
            kill_delay: rate(0.01, 0.5),
            unrecoverable: rate(0.01, 0.1),
            pid_reuse: rate(1.0, 2.0) > 0.0,
            sigchld_coalesce: rate(1.0, 2.0) > 0.0,
            msg_delay: rate(0.01, 0.5),
            late_wakeup: rate(0.01, 0.5),
            clock_jump: rate(0.01, 0.2),
            operator: rate(0.2, 4.0),
            successor_fail: rate(0.1, 0.9),
            inherited: rate(1.0, 2.0) > 0.0,
            shm_reports: rate(1.0, 2.0) > 0.0,
            load_silent: false,
            main_exit: 0.0,
            successor_of: 0,
            outside_kill: 0.0,
            pause: 0.0,
            slot_addresses: false,
            address_fail: 0.0,
        }
    }

    /// The switches added after the load model was drawn: drawn after it, on the same
    /// swarm stream, so every older seed keeps its faults and its load (and, with the new
    /// switches off, its whole run). Call once, after `draw` and the load pick; append new
    /// draws at the end.
    pub fn draw_late(&mut self, rng: &mut Rng) {
        let load_silent = rng.chance(0.5);
        self.load_silent = load_silent && !self.shm_reports;
        self.main_exit = if rng.chance(0.5) {
            0.05 * (0.6f64 / 0.05).powf(rng.unit())
        } else {
            0.0
        };
        // Mostly the first upgrades of a service's life, sometimes a long-lived one.
        self.successor_of = if !rng.chance(0.5) {
            0
        } else if rng.chance(0.7) {
            rng.between(1, 3) as u32
        } else {
            rng.between(4, 1000) as u32
        };
        self.outside_kill = if rng.chance(0.5) {
            0.1 * (0.9f64 / 0.1).powf(rng.unit())
        } else {
            0.0
        };
        self.pause = if rng.chance(0.5) {
            0.05 * (1.0f64 / 0.05).powf(rng.unit())
        } else {
            0.0
        };
        self.slot_addresses = rng.chance(0.25);
        self.address_fail = if self.slot_addresses && rng.chance(0.5) {
            0.02 * (0.5f64 / 0.02).powf(rng.unit())
        } else {
            0.0
        };
    }

    /// `config` as this run's pool runs it: with slot addresses, no surge and at least one
    /// worker that may be missing during a rollout.
    pub fn shape(&self, mut config: Config) -> Config {
        if self.slot_addresses {
            config.slot_addresses = true;
            config.max_surge = 0;
            config.max_unavailable = config.max_unavailable.max(1);
        }
        config
    }

    /// The predecessor's generation, if the run starts as a live upgrade's successor.
    pub fn predecessor(&self) -> Option<Generation> {
        (self.successor_of > 0).then_some(Generation(self.successor_of))
    }

    /// Workers send heartbeats without load reports (`load_silent`, which `shm_reports`
    /// overrides).
    pub fn silent_load(&self) -> bool {
        self.load_silent && !self.shm_reports
    }

    /// Every fault kind that is on, by name.
    fn fields(&self) -> [(&'static str, f64); 26] {
        let b = |x: bool| if x { 1.0 } else { 0.0 };
        [
            ("fork_fail", self.fork_fail),
            ("fork_slow", self.fork_slow),
            ("crash_boot", self.crash_boot),
            ("crash_ready", self.crash_ready),
            ("crash_drain", self.crash_drain),
            ("bad_release", self.bad_release),
            ("hang", self.hang),
            ("ignore_term", self.ignore_term),
            ("slow_drain", self.slow_drain),
            ("kill_delay", self.kill_delay),
            ("unrecoverable", self.unrecoverable),
            ("pid_reuse", b(self.pid_reuse)),
            ("sigchld_coalesce", b(self.sigchld_coalesce)),
            ("msg_delay", self.msg_delay),
            ("late_wakeup", self.late_wakeup),
            ("clock_jump", self.clock_jump),
            ("operator", self.operator),
            ("successor_fail", self.successor_fail),
            ("inherited", b(self.inherited)),
            ("shm_reports", b(self.shm_reports)),
            ("load_silent", b(self.load_silent)),
            ("main_exit", self.main_exit),
            ("outside_kill", self.outside_kill),
            ("pause", self.pause),
            ("slot_addresses", b(self.slot_addresses)),
            ("address_fail", self.address_fail),
        ]
    }
}

impl fmt::Display for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (name, value) in self.fields() {
            if !first {
                f.write_str(" ")?;
            }
            first = false;
            if value == 0.0 {
                write!(f, "{name}=off")?;
            } else {
                write!(f, "{name}={value:.3}")?;
            }
        }
        match self.successor_of {
            0 => write!(f, " successor_of=off"),
            g => write!(f, " successor_of={g}"),
        }
    }
}

/// How clients arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// Poisson at half the pool's capacity.
    Steady,
    /// A low base with bursts of three times capacity.
    Burst,
    /// A slow sine between a tenth and 1.2 times capacity.
    Oscillating,
    /// No clients.
    Idle,
}

impl Load {
    pub const ALL: [Load; 4] = [Load::Steady, Load::Burst, Load::Oscillating, Load::Idle];

    pub fn name(self) -> &'static str {
        match self {
            Load::Steady => "steady",
            Load::Burst => "burst",
            Load::Oscillating => "oscillating",
            Load::Idle => "idle",
        }
    }

    pub fn from_name(name: &str) -> Option<Load> {
        Load::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Arrivals per second at simulated second `t`, for a pool serving `capacity` per second.
    pub fn rate(self, t: f64, capacity: f64) -> f64 {
        match self {
            Load::Steady => 0.5 * capacity,
            // 10 s bursts once a minute.
            Load::Burst if t % 60.0 < 10.0 => 3.0 * capacity,
            Load::Burst => 0.2 * capacity,
            Load::Oscillating => {
                let phase = (t / 120.0 * core::f64::consts::TAU).sin();
                capacity * (0.65 + 0.55 * phase)
            }
            Load::Idle => 0.0,
        }
    }
}

/// A random valid machine config: small pools, every policy, every timeout on or off, both
/// ladder presets.
pub fn draw_config(rng: &mut Rng) -> Config {
    for _ in 0..1000 {
        let threads = *rng.pick(&[1, 1, 2, 4]);
        let max = rng.between(1, 16) as u32;
        let min = rng.between(0, u64::from(max)) as u32;
        let policy = match rng.below(3) {
            0 => Policy::Static {
                workers: max.max(1),
            },
            1 => {
                let min_spare = rng.between(1, 4) as u32;
                let max_spare = min_spare + threads - 1 + rng.between(0, 4) as u32;
                let start = rng.between(u64::from(min), u64::from(max)) as u32;
                Policy::Dynamic {
                    min,
                    max,
                    start,
                    min_spare,
                    max_spare,
                }
            }
            _ => Policy::Ondemand { min, max },
        };
        let mut c = Config::new(policy);
        c.threads = threads;
        c.max_spawn_rate = *rng.pick(&[1, 2, 8, 32]);
        if rng.chance(0.3) {
            c.idle_timeout = Some(secs(rng.between(2, 60)));
        }
        if rng.chance(0.3) {
            c.max_requests = Some(rng.between(20, 500));
            c.max_requests_jitter = rng.between(0, 50);
        }
        c.seed = rng.u64();
        c.readiness = if rng.chance(0.5) {
            Readiness::Notify
        } else {
            Readiness::AtSpawn
        };
        c.boot_timeout = secs(rng.between(3, 30));
        if rng.chance(0.6) {
            c.heartbeat_timeout = Some(secs(rng.between(3, 30)));
        }
        if rng.chance(0.3) {
            c.request_timeout = Some(secs(rng.between(5, 60)));
        }
        c.ladder = Arc::new(if rng.chance(0.15) {
            Ladder::serverengine()
        } else {
            Ladder::for_any_program(secs(rng.between(2, 40)))
        });
        c.restart.backoff_min = Duration::from_millis(rng.between(100, 2000));
        c.restart.backoff_max = c.restart.backoff_min * rng.between(1, 60) as u32;
        c.restart.healthy_uptime = secs(rng.between(1, 30));
        c.restart.intensity_deaths = rng.between(1, 20) as u32;
        c.restart.intensity_window = secs(rng.between(5, 120));
        // Low rates too, so that a kill storm meets the cap.
        c.restart.quick_restart_rate = rng.between(1, 64) as u32;
        if rng.chance(0.2) {
            c.restart.on_crash_loop = OnCrashLoop::Exit(rng.between(64, 78) as i32);
        }
        if rng.chance(0.3) {
            c.restart.unrecoverable_exit_codes = vec![2];
            c.restart.stop_on_unrecoverable = rng.chance(0.3);
        }
        c.restart.fail_start = rng.chance(0.2);
        c.max_surge = rng.between(0, 2) as u32;
        c.max_unavailable = rng.between(0, 1) as u32;
        c.upgrade_timeout = secs(rng.between(5, 60));
        c.worker_fingerprint = rng.below(3);
        if c.validate().is_ok() {
            return c;
        }
    }
    unreachable!("1000 random configs in a row were invalid: draw_config is broken")
}

/// A variant of `base` for a reload: other sizes and timeouts, sometimes another worker
/// fingerprint (a rolling restart).
pub fn draw_reload(rng: &mut Rng, base: &Config) -> Config {
    for _ in 0..100 {
        let mut c = draw_config(rng);
        if rng.chance(0.5) {
            // Keep the policy kind more often than not: reloads usually tune, not replace.
            c.policy = base.policy.clone();
            c.threads = base.threads;
        }
        if rng.chance(0.6) {
            c.worker_fingerprint = base.worker_fingerprint;
        }
        // A reload cannot change it (drover refuses one that changes its per-worker ports).
        if base.slot_addresses {
            c.slot_addresses = true;
            c.max_surge = 0;
            c.max_unavailable = c.max_unavailable.max(1);
        }
        if c.validate().is_ok() {
            return c;
        }
    }
    base.clone()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
