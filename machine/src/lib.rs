//! drover-machine: every decision of a prefork supervisor as a pure state machine.
//!
//! No IO, no clock, no threads, no OS randomness. Inputs carry `now`; effects come out as
//! [`Action`]s for the driver (the `drover-os` shell, or the `drover-sim` simulator).
//!
//! # The run-loop contract, and the one driver
//!
//! 1. [`Supervisor::handle`]`(now, input)`; `now` never decreases. Facts read together
//!    (every worker's heartbeat and load, read from shared memory on a wake-up) go in one
//!    [`Supervisor::handle_all`], so that no deadline fires between two of them.
//! 2. Drain [`Supervisor::poll_action`] until `None`, performing each action. Results of an
//!    action (`Spawned`, `SpawnFailed`, `SuccessorStarted`) are fed back with `handle`
//!    inside the drain.
//! 3. Reap exited children (`waitpid`) only after the drain, and feed each as
//!    `Input::Exited`: a zombie holds its pid until reaped, so no signal of the drain can hit
//!    a recycled pid.
//! 4. Wait for the next OS event or [`Supervisor::poll_timeout`], then go to 1
//!    (`Input::Tick` for timers).
//!
//! Timers fire after the input of the same `handle` is applied: a heartbeat arriving
//! exactly at its deadline keeps the worker alive. Spurious ticks do nothing.
//!
//! [`Driver`] implements this contract once, over an [`Os`] that performs the actions and
//! reports the world; the `drover` shell, the simulator, the property tests, the fuzz target
//! and [`testing::Harness`] all run the machine through it (docs/ARCHITECTURE.md §3). The
//! bare contract, by hand:
//!
//! ```
//! use drover_machine::{Action, Config, Input, Instant, Pid, Supervisor};
//!
//! let mut sup = Supervisor::new(Config::static_pool(2), Instant::ZERO).unwrap();
//! let mut next_pid = 100;
//! let mut spawned = Vec::new();
//! while let Some(action) = sup.poll_action() {
//!     if let Action::Spawn { worker, .. } = action {
//!         next_pid += 1; // the shell forks here
//!         spawned.push(worker);
//!         sup.handle(Instant::ZERO, Input::Spawned { worker, pid: Pid(next_pid) });
//!     }
//! }
//! assert_eq!(spawned.len(), 2);
//! assert_eq!(sup.ready_workers(), 2);
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod driver;
mod io;
mod ladder;
mod output;
#[cfg(feature = "planted")]
#[doc(hidden)]
pub mod planted;
mod rng;
mod settings;
mod supervisor;
#[doc(hidden)]
pub mod testing;
mod time;
pub mod trace;

pub use config::{
    Config, ConfigError, Ladder, OnCrashLoop, Policy, Readiness, Restart, Stage, WORKERS_MAX,
};
pub use driver::{Driver, Os, Sleep, REAPS_PER_TURN_MAX};
pub use io::{
    Command, DeathCause, ExitStatus, Generation, Input, Pid, Signal, SpawnError, StopReason,
    WorkerId, SIGKILL_NUMBER, SIGTERM_NUMBER,
};
pub use output::{Action, Event, Ignored, RampReason, Refusal, RollbackReason, Victim};
pub use settings::{Setting, SETTING_KEYS};
pub use supervisor::{
    Counters, ExitReason, Phase, Succession, Supervisor, UpgradeState, Violation, WorkerState,
    WorkerView, ABSENCE_MIN,
};
pub use time::Instant;

#[cfg(feature = "planted")]
#[doc(hidden)]
pub use planted::Plant;

pub use core::time::Duration;
