//! Output: the end-of-run speed line and the policy report (pictures: `lab::plot`).

use core::fmt::Write as _;
use core::time::Duration;

use crate::world::RunResult;

/// Wall-clock time, for speed figures only: the one place the simulator reads a real clock.
pub struct WallClock(#[allow(clippy::disallowed_types)] std::time::Instant);

impl WallClock {
    #[allow(clippy::disallowed_methods)]
    pub fn start() -> WallClock {
        WallClock(std::time::Instant::now())
    }

    pub fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
}

/// `sim=…s wall=…s ratio=…x events/s=… steps/s=…`: printed at the end of every run.
/// `events` are machine inputs; `steps` every simulator event (client arrivals and
/// request completions included).
pub fn speed(sim: Duration, wall: Duration, events: u64, steps: u64) -> String {
    let wall_s = wall.as_secs_f64().max(1e-9);
    format!(
        "sim={:.3}s wall={:.3}s ratio={:.0}x events/s={:.3e} steps/s={:.3e}",
        sim.as_secs_f64(),
        wall_s,
        sim.as_secs_f64() / wall_s,
        events as f64 / wall_s,
        steps as f64 / wall_s
    )
}

/// The figures a user compares policies by.
pub fn policy_report(r: &RunResult) -> String {
    let s = &r.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy: {} load={}",
        r.config.policy.name(),
        r.load.name()
    );
    let _ = writeln!(
        out,
        "  connections: arrived={} served={} refused={} broken={}",
        s.arrivals, s.served, s.refused, s.broken
    );
    let _ = writeln!(
        out,
        "  queue wait: p50={:.1}ms p99={:.1}ms",
        s.wait_percentile_ms(50.0),
        s.wait_percentile_ms(99.0)
    );
    let _ = writeln!(
        out,
        "  cost: worker-seconds={:.0} spawns={} kills={}",
        s.worker_seconds, s.spawns, s.kills
    );
    out
}
