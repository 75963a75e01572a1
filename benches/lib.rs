//! Shared set-up for drover's criterion benchmarks: a supervisor with `n` Ready workers.

use drover_machine::{Action, Config, Duration, Input, Instant, Pid, Supervisor, WorkerId};

/// A static pool of `n` workers, all spawned and Ready, with a heartbeat watchdog on (so a
/// heartbeat moves a real deadline).
pub fn pool(n: u32) -> (Supervisor, Vec<(WorkerId, Pid)>) {
    let mut config = Config::static_pool(n);
    config.heartbeat_timeout = Some(Duration::from_secs(30));
    config.request_timeout = Some(Duration::from_secs(60));
    let mut sup = Supervisor::new(config, Instant::ZERO).expect("valid");
    let mut workers = Vec::new();
    let mut next = 100;
    while let Some(action) = sup.poll_action() {
        if let Action::Spawn { worker, .. } = action {
            next += 1;
            workers.push((worker, Pid(next)));
            sup.handle(
                Instant::ZERO,
                Input::Spawned {
                    worker,
                    pid: Pid(next),
                },
            );
        }
    }
    (sup, workers)
}

/// Drains and counts actions (the run-loop contract: every handle is followed by a drain).
pub fn drain(sup: &mut Supervisor) -> usize {
    let mut n = 0;
    while sup.poll_action().is_some() {
        n += 1;
    }
    n
}
