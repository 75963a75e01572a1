//! The control socket (`drover status|stop|reload|scale|upgrade ...`): each request becomes
//! a command for the machine, and the answer says what the machine did with it (its
//! refusal, verbatim). `status` reads the machine and the shell's own facts (role,
//! listeners); it changes nothing.

use drover_machine::{Command, Phase, UpgradeState, WorkerState};
use nix::sys::signal::{kill, Signal as NixSignal};
use serde_json::{json, Value};

use super::{Role, Shell, System};
use crate::control::{self, ConnId, Request};

impl Shell {
    pub(super) fn on_control(&mut self, listener_ready: bool, conns_ready: &[bool]) {
        let sys = self.sys();
        let accepting = sys.serving_control;
        let Some(control) = sys.control.as_mut() else {
            return;
        };
        // A drover that no longer serves the control path (a predecessor after the handover)
        // still finishes with the clients it has.
        let requests = control.0.service(accepting, listener_ready, conns_ready);
        for (conn, request) in requests {
            // Answered once the upgrade is decided: handed over or rolled back.
            if matches!(request, Ok(Request::Upgrade)) {
                tracing::info!("control: upgrade");
                let answer = match self.request_upgrade() {
                    Ok(what)
                        if matches!(self.sup().upgrade_state(), UpgradeState::Started { .. }) =>
                    {
                        tracing::info!("{what}");
                        self.sys().upgrade_waiters.push(conn);
                        continue;
                    }
                    Ok(what) => json!({ "ok": true, "command": "upgrade", "message": what }),
                    Err(e) => control::error(&e),
                };
                self.sys().answer_control(conn, &answer);
                continue;
            }
            let answer = match request {
                Ok(request) => self.answer(request),
                Err(e) => {
                    tracing::warn!("control: {e}");
                    control::error(&e)
                }
            };
            self.sys().answer_control(conn, &answer);
        }
    }

    fn answer(&mut self, request: Request) -> Value {
        let command = match request {
            Request::Status => return self.status(),
            Request::ReopenLogs => {
                tracing::info!("control: reopen-logs");
                return match crate::log::reopen() {
                    Ok(what) => {
                        tracing::info!("{what}");
                        json!({ "ok": true, "command": "reopen-logs", "message": what })
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        control::error(&e)
                    }
                };
            }
            Request::Metrics => {
                return json!({ "ok": true, "command": "metrics", "text": self.metrics_text() })
            }
            Request::Dump => {
                tracing::info!("control: dump");
                let (state, trace) = self.dump();
                return json!({
                    "ok": true,
                    "command": "dump",
                    "state_lines": state,
                    "trace_lines": trace,
                    "message": format!(
                        "wrote the machine's state ({state} lines) and its last {trace} trace lines to drover's log"
                    ),
                });
            }
            Request::Reload => {
                tracing::info!("control: reload");
                return match self.reload() {
                    Ok(warnings) if warnings.is_empty() => {
                        json!({ "ok": true, "command": "reload" })
                    }
                    Ok(warnings) => {
                        json!({ "ok": true, "command": "reload", "warnings": warnings })
                    }
                    Err(e) => control::error(&e),
                };
            }
            // `on_control` answers upgrades once decided; this is the immediate answer.
            Request::Upgrade => {
                return match self.request_upgrade() {
                    Ok(what) => json!({ "ok": true, "command": "upgrade", "message": what }),
                    Err(e) => control::error(&e),
                };
            }
            // A supervised drover that stopped alone would only be restarted by its parent:
            // the stop is the parent's, which stops this drover through its ladder.
            Request::Stop | Request::StopNow if self.driver.os().role == Role::Supervised => {
                return pass_stop_to_parent(&request);
            }
            Request::Stop => Command::Stop,
            Request::StopNow => Command::StopNow,
            Request::Restart => Command::Restart,
            Request::RestartNow => Command::RestartNow,
            Request::Scale { n } => Command::ScaleTo(n),
            Request::ScaleUp => Command::ScaleUp,
            Request::ScaleDown => Command::ScaleDown,
        };
        let name = command.name();
        tracing::info!("control: {name}");
        match self.command(command) {
            Ok(()) => json!({ "ok": true, "command": name }),
            Err(refusals) => control::error(&refusals),
        }
    }

    fn status(&self) -> Value {
        let sup = self.driver.supervisor();
        let sys = self.driver.os();
        let now = sys.clock();
        let workers: Vec<Value> = sup
            .workers()
            .map(|w| {
                let mut v = json!({
                    "slot": w.id.slot,
                    "incarnation": w.id.incarnation,
                    "pid": w.pid.map(|p| p.0),
                    "state": w.state.name(),
                    "generation": w.generation.0,
                    "requests": w.requests,
                    "restarts": w.restarts,
                    "last_stop": w.last_stop.map(|r| r.name()),
                    "uptime_secs": w.spawned_at.map(|t| now.saturating_since(t).as_secs_f64()),
                    "reports_load": w.reports_load,
                });
                if let Some((port, error)) = sys.slot_ports.port_of(&sys.settings, w.id.slot) {
                    v["port"] = json!(port);
                    if let Some(error) = error {
                        v["port_error"] = json!(error);
                    }
                }
                if let Some(beat) = w.last_heartbeat {
                    v["heartbeat_age_secs"] = json!(now.saturating_since(beat).as_secs_f64());
                }
                match w.state {
                    WorkerState::Stopping { reason } => v["stop_reason"] = json!(reason.name()),
                    WorkerState::Backoff { until } => {
                        v["restart_in_secs"] = json!(until.saturating_since(now).as_secs_f64())
                    }
                    WorkerState::GaveUp { code } => v["exit_code"] = json!(code),
                    WorkerState::Ready { busy } => v["busy"] = json!(busy),
                    _ => {}
                }
                v
            })
            .collect();
        let phase = match sup.phase() {
            Phase::Running => "running",
            Phase::Stopping { immediate: false } => "stopping",
            Phase::Stopping { immediate: true } => "stopping-now",
            Phase::Handover => "handover",
            Phase::Exited => "exited",
            _ => "unknown",
        };
        json!({
            "ok": true,
            "pid": std::process::id(),
            "uptime_secs": sys.epoch.elapsed().as_secs_f64(),
            "phase": phase,
            "policy": sys.settings.machine.policy.name(),
            "target": sup.target(),
            "generation": sup.generation().0,
            "ready": sup.ready_workers(),
            "live": sup.live_workers(),
            "crash_looping": sup.is_crash_looping(),
            "role": match sys.role {
                Role::Primary => "primary",
                Role::Successor => "successor",
                Role::Supervised => "supervised",
            },
            "upgrade": match sup.upgrade_state() {
                UpgradeState::Idle => json!({ "state": "idle" }),
                UpgradeState::Requested { .. } => json!({ "state": "requested" }),
                UpgradeState::Started { pid, .. } => json!({ "state": "started", "successor_pid": pid.0 }),
                UpgradeState::Succeeded { pid } => json!({ "state": "handed-over", "successor_pid": pid.0 }),
                UpgradeState::Killing { pid } => json!({ "state": "rolling-back", "successor_pid": pid.0 }),
                other => json!({ "state": format!("{other:?}") }),
            },
            "command": sys.settings.command,
            "listeners": sys.listeners.list.iter().map(|l| json!({
                "name": l.spec.name,
                "address": l.local,
            })).collect::<Vec<_>>(),
            "workers": workers,
        })
    }
}

impl System {
    /// Answers a control client: queued, and the poll loop sends what the socket does not
    /// take at once.
    pub(super) fn answer_control(&mut self, conn: ConnId, answer: &Value) {
        if let Some(control) = &mut self.control {
            control.0.answer(conn, answer);
        }
    }
}

/// `stop`/`stop-now` on a supervised drover's control socket: the parent's stop, which
/// stops this drover through its ladder.
fn pass_stop_to_parent(request: &Request) -> Value {
    let (sig, name) = match request {
        Request::Stop => (NixSignal::SIGTERM, "stop"),
        _ => (NixSignal::SIGQUIT, "stop-now"),
    };
    let parent = nix::unistd::getppid();
    tracing::info!("control: {name}, passed to the supervising drover pid {parent}");
    match kill(parent, sig) {
        Ok(()) => json!({
            "ok": true,
            "command": name,
            "message": format!("the supervising drover (pid {parent}) stops, and this drover with it"),
        }),
        Err(e) => control::error(&format!(
            "cannot signal the supervising drover (pid {parent}): {e}"
        )),
    }
}
