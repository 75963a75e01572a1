//! drover-sim: the deterministic simulator of drover's supervisor.
//!
//! One `u64` seed reproduces a run exactly: it picks the fault mix (swarm testing), the
//! machine config (unless a policy file is given), the load, and every random event of the
//! model OS, each from its own ChaCha8 stream. A run has a fault phase with invariant checks
//! after every step, then a liveness phase (faults healed) in which the pool must converge
//! and a final stop must end in `Exit`, both within bounds derived from the config.
#![forbid(unsafe_code)]

pub mod canaries;
pub mod coverage;
pub mod judge;
pub mod lab;
pub mod policy;
pub mod report;
pub mod rng;
pub mod shrink;
pub mod swarm;
pub mod world;

pub use canaries::{Canary, Plant};
pub use coverage::{Coverage, Mark};
pub use swarm::{Faults, Load};
pub use world::{run, Model, Outcome, RunOptions, RunResult, Spread, Stats};
