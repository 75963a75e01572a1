//! The maintenance tick sleeps while it could change nothing (`poll_timeout` hides it). The
//! proof that it loses nothing: a driver that also wakes at every point of the maintenance
//! grid must see exactly the actions of one that sleeps until `sleep().until`, for dynamic
//! and ondemand pools under arbitrary load, queue, readiness, exit and scale inputs. A tick
//! hidden while it would have acted shows up as a difference.
//!
//! Both twins are the one `Driver` over the same model OS; they differ only in when they
//! wake: the ticking twin adds a wake-up (a turn with nothing to read) at every grid point.

use std::collections::{BTreeSet, VecDeque};

use drover_machine::trace::action_line;
use drover_machine::{
    Action, Command, Config, Driver, Duration, Event, ExitStatus, Generation, Input, Instant, Os,
    Pid, Policy, Readiness, RollbackReason, Signal, SpawnError, StopReason, Supervisor, WorkerId,
};
use proptest::prelude::*;

use crate::strategies::policy;
use crate::{millis, secs};

#[derive(Clone, Debug)]
enum TwinOp {
    Load {
        pick: usize,
        busy: u32,
        requests: u64,
    },
    Backlog(u32),
    Ready(usize),
    Exit(usize),
    ScaleTo(u32),
}

fn twin_op() -> impl Strategy<Value = TwinOp> {
    prop_oneof![
        8 => (any::<usize>(), 0u32..=4, 0u64..=50)
            .prop_map(|(pick, busy, requests)| TwinOp::Load { pick, busy, requests }),
        4 => (0u32..=12).prop_map(TwinOp::Backlog),
        3 => any::<usize>().prop_map(TwinOp::Ready),
        2 => any::<usize>().prop_map(TwinOp::Exit),
        1 => (0u32..=8).prop_map(TwinOp::ScaleTo),
    ]
}

fn twin_config() -> impl Strategy<Value = Config> {
    (1u32..=3)
        .prop_flat_map(|threads| {
            (
                Just(threads),
                policy(threads),
                1u32..=8,
                prop::sample::select(vec![1u64, 2, 5]),
                prop::option::of(1u64..=30),
                prop_oneof![Just(Readiness::AtSpawn), Just(Readiness::Notify)],
            )
        })
        .prop_filter("dynamic or ondemand", |(_, policy, ..)| {
            !matches!(policy, Policy::Static { .. })
        })
        .prop_map(|(threads, policy, rate, interval, idle, readiness)| {
            let ondemand = matches!(policy, Policy::Ondemand { .. });
            let mut c = Config::new(policy);
            c.threads = threads;
            c.max_spawn_rate = rate;
            c.maintenance_interval = secs(interval);
            c.idle_timeout = idle.map(secs).or(ondemand.then(|| secs(10)));
            c.readiness = readiness;
            c.boot_timeout = secs(600);
            c
        })
        .prop_filter("config must validate", |c| c.validate().is_ok())
}

/// Wake-ups one `advance_to` may take before it is called a timer livelock.
const WAKEUPS_MAX: usize = 100_000;

/// The twins' world: pids in spawn order, every signal ends its process (reaped after the
/// drain), worker messages read at once, the trace of every action.
struct TwinOs {
    now: Instant,
    next_pid: u32,
    gone: BTreeSet<Pid>,
    exits: VecDeque<(Pid, ExitStatus)>,
    reports: Vec<Input>,
    actions: Vec<String>,
}

impl TwinOs {
    fn fresh_pid(&mut self) -> Pid {
        self.next_pid += 1;
        Pid(self.next_pid)
    }
}

impl Os for TwinOs {
    fn now(&mut self) -> Instant {
        self.now
    }

    fn spawn(&mut self, _: &Supervisor, _: WorkerId, _: Generation) -> Result<Pid, SpawnError> {
        Ok(self.fresh_pid())
    }

    fn signal(&mut self, _: &Supervisor, _: WorkerId, pid: Pid, _: Signal, _: StopReason) {
        if self.gone.insert(pid) {
            self.exits.push_back((pid, ExitStatus::Code(0)));
        }
    }

    fn start_successor(&mut self, _: &Supervisor) -> Result<Pid, SpawnError> {
        Ok(self.fresh_pid())
    }

    fn kill_successor(&mut self, _: &Supervisor, _: Pid, _: RollbackReason) {}

    fn exit(&mut self, _: &Supervisor, _: i32) {}

    fn event(&mut self, _: &Supervisor, _: Instant, _: Event) {}

    fn read_workers(&mut self, _: &Supervisor, _: Instant, into: &mut Vec<Input>) -> bool {
        into.append(&mut self.reports);
        true
    }

    fn reap(&mut self, _: &Supervisor) -> Option<Input> {
        let (pid, status) = self.exits.pop_front()?;
        Some(Input::Exited { pid, status })
    }

    fn performing(&mut self, _: &Supervisor, now: Instant, action: &Action) {
        self.actions.push(action_line(now, action));
    }
}

struct Twin {
    driver: Driver<TwinOs>,
    /// Wake at every grid point too (multiples of the interval: no reload, stop or late
    /// wake-up moves the grid here).
    grid: Option<Duration>,
}

impl Twin {
    fn new(config: &Config, grid: bool) -> Twin {
        let os = TwinOs {
            now: Instant::ZERO,
            next_pid: 100,
            gone: BTreeSet::new(),
            exits: VecDeque::new(),
            reports: Vec::new(),
            actions: Vec::new(),
        };
        let sup = Supervisor::new(config.clone(), Instant::ZERO).unwrap();
        Twin {
            // No heartbeats here, so no message ever waits: both read them at once.
            driver: Driver::new(sup, os, 0),
            grid: grid.then_some(config.maintenance_interval),
        }
    }

    fn now(&self) -> Instant {
        self.driver.os().now
    }

    fn actions(&self) -> &[String] {
        &self.driver.os().actions
    }

    /// Wakes at every `sleep().until` up to `t` and, for the ticking twin, at every grid
    /// point before `t`: a grid point at `t` itself wakes it after the input at `t`
    /// (`tick_on_grid`), as the machine runs every timer due at an input's time after the
    /// input.
    fn advance_to(&mut self, t: Instant) {
        for _ in 0..WAKEUPS_MAX {
            let now = self.now();
            let grid = self.grid.map(|d| {
                let d = d.as_nanos() as u64;
                Instant::from_nanos((now.as_nanos() / d + 1) * d)
            });
            let next = [self.driver.sleep().until, grid.filter(|&g| g < t)]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= t => {
                    self.driver.os_mut().now = at.max(now);
                    self.driver.turn([]);
                }
                _ => {
                    self.driver.os_mut().now = t;
                    return;
                }
            }
        }
        panic!("timer livelock");
    }

    /// The ticking twin's wake-up on a grid point that falls exactly now, after the input.
    fn tick_on_grid(&mut self) {
        if let Some(d) = self.grid {
            if self.now().as_nanos().is_multiple_of(d.as_nanos() as u64) {
                self.driver.turn([]);
            }
        }
    }

    fn apply(&mut self, op: &TwinOp) {
        let workers: Vec<(WorkerId, Pid)> = self
            .driver
            .supervisor()
            .workers()
            .filter_map(|w| Some((w.id, w.pid?)))
            .collect();
        let pick = |i: usize| workers.get(i % workers.len().max(1)).copied();
        let now = self.now();
        let os = self.driver.os_mut();
        match *op {
            TwinOp::Load {
                pick: i,
                busy,
                requests,
            } => {
                if let Some((worker, _)) = pick(i) {
                    os.reports.push(Input::Load {
                        worker,
                        busy,
                        oldest_busy_since: (busy > 0).then_some(now),
                        requests,
                    });
                    self.driver.turn([]);
                }
            }
            TwinOp::Backlog(queued) => self.driver.turn([Input::Backlog {
                listener: 0,
                queued,
            }]),
            TwinOp::Ready(i) => {
                if let Some((worker, _)) = pick(i) {
                    os.reports.push(Input::Ready { worker });
                    self.driver.turn([]);
                }
            }
            TwinOp::Exit(i) => {
                if let Some((_, pid)) = pick(i).filter(|(_, pid)| !os.gone.contains(pid)) {
                    os.gone.insert(pid);
                    os.exits.push_back((pid, ExitStatus::Code(1)));
                    self.driver.turn([]);
                }
            }
            TwinOp::ScaleTo(n) => self.driver.turn([Input::Command(Command::ScaleTo(n))]),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn hidden_maintenance_ticks_would_have_done_nothing(
        config in twin_config(),
        steps in prop::collection::vec((0u64..20_000, twin_op()), 1..80),
    ) {
        let mut sleeper = Twin::new(&config, false);
        let mut ticker = Twin::new(&config, true);
        for (ms, op) in &steps {
            let t = sleeper.now() + millis(*ms);
            sleeper.advance_to(t);
            ticker.advance_to(t);
            sleeper.apply(op);
            ticker.apply(op);
            ticker.tick_on_grid();
            prop_assert_eq!(
                sleeper.actions(),
                ticker.actions(),
                "a tick the sleeping driver skipped would have acted (config {:?})",
                config
            );
            // A calm tick acts without an action: it puts the spawn ramp back to 1.
            prop_assert_eq!(
                sleeper.driver.supervisor().spawn_rate(),
                ticker.driver.supervisor().spawn_rate()
            );
        }
        let end = sleeper.now() + secs(120);
        sleeper.advance_to(end);
        ticker.advance_to(end);
        prop_assert_eq!(sleeper.actions(), ticker.actions());
    }
}
