//! Metrics in the Prometheus text exposition format 0.0.4: one formatter for `drover
//! metrics` (the control socket) and `GET /metrics` (`--metrics-listen`, served by `http`).
//! Counters come from the machine (`Supervisor::counters`: it sees every decision and its
//! reason), gauges from the machine's state and from what only the shell knows (the accept
//! queues, its own wake-ups, when it started). Every family has HELP and TYPE lines and a
//! `drover_` prefix, counters end in `_total`, label values are escaped; a labelled family
//! lists every label value it can have (zeros too), so a rate over a reason that has not
//! happened yet is 0, not absent.

use std::fmt::Write;

use drover_machine::{Supervisor, WorkerState};

pub mod http;

/// What only the shell knows, sampled when the metrics are asked for.
pub struct ShellFacts {
    /// Each listener's name (its address when unnamed) and accept-queue length (TCP only).
    pub accept_queues: Vec<(String, Option<u32>)>,
    /// Turns of the supervisor's poll loop since it started.
    pub wakeups: u64,
    /// When this drover started, in seconds since the Unix epoch.
    pub started_unix: f64,
    /// This drover's role (`primary`, `successor`, `supervised`).
    pub role: &'static str,
    /// `--listen-per-worker`: each slot with an open socket, and its port.
    pub worker_ports: Vec<(u32, u16)>,
}

/// Every state `drover_workers` reports, as `WorkerState::name` spells them.
const WORKER_STATES: [&str; 7] = [
    "spawning", "booting", "idle", "busy", "stopping", "backoff", "gave-up",
];

/// The text exposition of `sup` and `shell`.
pub fn render(sup: &Supervisor, shell: &ShellFacts) -> String {
    let mut e = Exposition::default();
    let now = sup.now();
    let c = sup.counters();

    e.family(
        "drover_build_info",
        "gauge",
        "Always 1; the labels name the drover build and this drover's role.",
    );
    e.sample(
        "drover_build_info",
        &[("version", env!("CARGO_PKG_VERSION")), ("role", shell.role)],
        1.0,
    );
    e.family("drover_start_time_seconds", "gauge", "When this drover started, in seconds since the Unix epoch (its counters start at zero then).");
    e.sample("drover_start_time_seconds", &[], shell.started_unix);

    // Gauges of the pool.
    let mut by_state = [0u64; WORKER_STATES.len()];
    let mut busy_threads = 0u64;
    let mut reporting = 0u64;
    let mut oldest_beat: Option<f64> = None;
    for w in sup.workers() {
        if let Some(i) = WORKER_STATES.iter().position(|s| *s == w.state.name()) {
            by_state[i] += 1;
        }
        if w.reports_load {
            reporting += 1;
            if let WorkerState::Ready { busy } = w.state {
                busy_threads += u64::from(busy);
            }
        }
        // A stopping worker is no longer held to its heartbeat: its silence while it
        // drains is no alarm.
        if let (Some(beat), WorkerState::Ready { .. }) = (w.last_heartbeat, w.state) {
            let age = now.saturating_since(beat).as_secs_f64();
            oldest_beat = Some(oldest_beat.map_or(age, |o: f64| o.max(age)));
        }
    }
    e.family(
        "drover_workers",
        "gauge",
        "Worker places by state (idle and busy are Ready workers).",
    );
    for (state, n) in WORKER_STATES.iter().zip(by_state) {
        e.sample("drover_workers", &[("state", state)], n as f64);
    }
    e.family(
        "drover_workers_target",
        "gauge",
        "Workers the pool wants now.",
    );
    e.sample("drover_workers_target", &[], f64::from(sup.target()));
    e.family(
        "drover_workers_ready",
        "gauge",
        "Ready workers that are not stopping.",
    );
    e.sample("drover_workers_ready", &[], f64::from(sup.ready_workers()));
    e.family(
        "drover_generation",
        "gauge",
        "The configuration generation (bumped by each rolling restart).",
    );
    e.sample("drover_generation", &[], f64::from(sup.generation().0));
    e.family(
        "drover_threads_per_worker",
        "gauge",
        "Threads (accepting slots) per worker.",
    );
    e.sample(
        "drover_threads_per_worker",
        &[],
        f64::from(sup.config().threads),
    );
    e.family(
        "drover_load_reporting_workers",
        "gauge",
        "Workers that report their load (their busy threads are counted in drover_busy_threads).",
    );
    e.sample("drover_load_reporting_workers", &[], reporting as f64);
    e.family(
        "drover_busy_threads",
        "gauge",
        "Threads serving a request now, over the workers that report their load.",
    );
    e.sample("drover_busy_threads", &[], busy_threads as f64);
    if let Some(timeout) = sup.config().heartbeat_timeout {
        e.family(
            "drover_heartbeat_timeout_seconds",
            "gauge",
            "The heartbeat timeout in force.",
        );
        e.sample(
            "drover_heartbeat_timeout_seconds",
            &[],
            timeout.as_secs_f64(),
        );
        e.family("drover_heartbeat_oldest_age_seconds", "gauge", "Time since the heartbeat of the Ready worker (not stopping) that beat longest ago (0 with none).");
        e.sample(
            "drover_heartbeat_oldest_age_seconds",
            &[],
            oldest_beat.unwrap_or(0.0),
        );
    }
    e.family(
        "drover_crash_looping",
        "gauge",
        "1 while the pool is crash-looping (more deaths than the restart intensity allows).",
    );
    e.sample(
        "drover_crash_looping",
        &[],
        f64::from(u8::from(sup.is_crash_looping())),
    );
    e.family(
        "drover_upgrade_in_progress",
        "gauge",
        "1 while a live upgrade's successor runs and has not taken over or been rolled back.",
    );
    let upgrading = !matches!(sup.upgrade_state(), drover_machine::UpgradeState::Idle);
    e.sample(
        "drover_upgrade_in_progress",
        &[],
        f64::from(u8::from(upgrading)),
    );
    e.family(
        "drover_accept_queue",
        "gauge",
        "Connections waiting in a TCP listener's accept queue.",
    );
    for (name, queued) in &shell.accept_queues {
        if let Some(queued) = queued {
            e.sample(
                "drover_accept_queue",
                &[("listener", name)],
                f64::from(*queued),
            );
        }
    }

    if !shell.worker_ports.is_empty() {
        e.family(
            "drover_worker_port",
            "gauge",
            "The slot's own listening port (--listen-per-worker), while its socket is open.",
        );
        for (slot, port) in &shell.worker_ports {
            e.sample(
                "drover_worker_port",
                &[("slot", &slot.to_string())],
                f64::from(*port),
            );
        }
    }

    // Counters.
    e.family(
        "drover_supervisor_wakeups_total",
        "counter",
        "Turns of the supervisor's event loop (each wake-up from poll).",
    );
    e.sample("drover_supervisor_wakeups_total", &[], shell.wakeups as f64);
    e.family("drover_supervisor_absences_total", "counter", "Wake-ups more than a second later than asked (SIGSTOP, a frozen VM): every heartbeat window restarted.");
    e.sample(
        "drover_supervisor_absences_total",
        &[],
        c.came_back() as f64,
    );
    e.family(
        "drover_worker_spawns_total",
        "counter",
        "Worker forks started.",
    );
    e.sample("drover_worker_spawns_total", &[], c.spawns() as f64);
    e.family(
        "drover_worker_spawn_failures_total",
        "counter",
        "Worker forks or execs that failed.",
    );
    e.sample(
        "drover_worker_spawn_failures_total",
        &[],
        c.spawn_failures() as f64,
    );
    e.family("drover_worker_exits_total", "counter", "Worker exits by reason: why drover stopped it, or (unasked) crash, killed, retired (exit 0) or boot (died before Ready).");
    for (reason, n) in c.exits() {
        e.sample(
            "drover_worker_exits_total",
            &[("reason", reason.name())],
            n as f64,
        );
    }
    e.family(
        "drover_worker_stops_total",
        "counter",
        "Workers drover asked to stop, by reason.",
    );
    for (reason, n) in c.retirements() {
        e.sample(
            "drover_worker_stops_total",
            &[("reason", reason.name())],
            n as f64,
        );
    }
    e.family(
        "drover_worker_signals_total",
        "counter",
        "Signals sent to workers, by signal and reason (the kill ladder's steps).",
    );
    for (signal, reason, n) in c.signals() {
        e.sample(
            "drover_worker_signals_total",
            &[("signal", signal.name()), ("reason", reason.name())],
            n as f64,
        );
    }
    e.family("drover_worker_restarts_total", "counter", "Worker places refilled after a death, by cause (boot, hung, crash count towards backoff; killed, retired do not).");
    for (cause, n) in c.restarts() {
        e.sample(
            "drover_worker_restarts_total",
            &[("cause", cause.name())],
            n as f64,
        );
    }
    e.family(
        "drover_worker_gave_up_total",
        "counter",
        "Worker places left empty after an unrecoverable exit code.",
    );
    e.sample("drover_worker_gave_up_total", &[], c.gave_up() as f64);
    e.family(
        "drover_crash_loops_total",
        "counter",
        "Times the pool entered a crash loop.",
    );
    e.sample("drover_crash_loops_total", &[], c.crash_loops() as f64);
    e.family(
        "drover_requests_total",
        "counter",
        "Requests served, as the workers that report their load reported them.",
    );
    e.sample("drover_requests_total", &[], c.requests() as f64);
    e.family(
        "drover_upgrades_started_total",
        "counter",
        "Live upgrades begun (a successor started).",
    );
    e.sample(
        "drover_upgrades_started_total",
        &[],
        c.upgrades_started() as f64,
    );
    let rolled_back: u64 = c.rollbacks().map(|(_, n)| n).sum();
    e.family(
        "drover_upgrades_total",
        "counter",
        "Live upgrades ended, by result: handed-over to the successor, or rolled-back.",
    );
    e.sample(
        "drover_upgrades_total",
        &[("result", "handed-over")],
        c.upgrades_handed_over() as f64,
    );
    e.sample(
        "drover_upgrades_total",
        &[("result", "rolled-back")],
        rolled_back as f64,
    );
    e.family(
        "drover_upgrade_rollbacks_total",
        "counter",
        "Live upgrades rolled back, by reason.",
    );
    for (reason, n) in c.rollbacks() {
        e.sample(
            "drover_upgrade_rollbacks_total",
            &[("reason", &reason.to_string())],
            n as f64,
        );
    }
    e.out
}

#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        // Whole numbers print without a fraction; f64 Display never uses an exponent.
        let _ = writeln!(self.out, " {value}");
    }
}

/// HELP text: backslash and newline escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A label value: backslash, double quote and newline escaped.
fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_machine::{Config, Input, Instant, Pid};

    fn facts() -> ShellFacts {
        ShellFacts {
            accept_queues: vec![("web \"a\"\\b\n".into(), Some(3)), ("unix".into(), None)],
            wakeups: 42,
            started_unix: 1_700_000_000.5,
            role: "primary",
            worker_ports: vec![(0, 3000), (1, 3001)],
        }
    }

    fn pool() -> Supervisor {
        let mut sup = Supervisor::new(Config::static_pool(2), Instant::ZERO).unwrap();
        let mut pid = 100;
        while let Some(action) = sup.poll_action() {
            if let drover_machine::Action::Spawn { worker, .. } = action {
                pid += 1;
                sup.handle(
                    Instant::ZERO,
                    Input::Spawned {
                        worker,
                        pid: Pid(pid),
                    },
                );
            }
        }
        sup
    }

    #[test]
    fn every_family_has_help_and_type_and_every_sample_a_family() {
        let text = render(&pool(), &facts());
        let mut typed: Vec<&str> = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(
                    text.contains(&format!("# HELP {name} ")),
                    "{name} has no HELP"
                );
                typed.push(name);
                if rest.ends_with(" counter") {
                    assert!(name.ends_with("_total"), "{name}");
                }
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(typed.contains(&name), "{line} comes before its TYPE");
                assert!(name.starts_with("drover_"), "{line}");
            }
        }
    }

    #[test]
    fn values_labels_and_escapes() {
        let text = render(&pool(), &facts());
        assert!(
            text.contains("drover_workers{state=\"idle\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_workers{state=\"busy\"} 0\n"),
            "{text}"
        );
        assert!(text.contains("drover_worker_spawns_total 2\n"), "{text}");
        assert!(
            text.contains("drover_worker_port{slot=\"1\"} 3001\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_supervisor_wakeups_total 42\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_start_time_seconds 1700000000.5\n"),
            "{text}"
        );
        assert!(
            text.contains("drover_accept_queue{listener=\"web \\\"a\\\"\\\\b\\n\"} 3\n"),
            "{text}"
        );
        assert!(
            !text.contains("listener=\"unix\""),
            "unix listeners have no queue"
        );
        assert!(text.contains("drover_worker_exits_total{reason=\"crash\"} 0\n"));
        assert!(
            !text.contains("drover_heartbeat_oldest_age_seconds"),
            "no watchdog, no heartbeat age"
        );
    }
}
