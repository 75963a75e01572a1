//! The poll loop: sleep until an OS event or the driver's `sleep()`, then one driver turn
//! (worker reports first, then signals, the upgrade channel, control requests and
//! accept-queue lengths, then ticks and reaps). Also what drover tells its own service
//! manager after each turn. Owns no decision: the deadlines are the machine's.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use drover_machine::{Input, Phase, UpgradeState};
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::{Role, Shell, System, LINGER_CHECK};

/// What woke the loop (the notify socket and the report board are read on every wake-up).
pub(super) struct Ready {
    signals: bool,
    upgrade: bool,
    control_listener: bool,
    control_conns: Vec<bool>,
    worker_output: Vec<bool>,
    /// The metrics endpoint's fds, in `MetricsServer::poll_fds` order.
    metrics: Vec<bool>,
}

impl Shell {
    pub(super) fn run(&mut self) -> i32 {
        // Arms the report board's doorbell before the first sleep.
        self.driver.turn([]);
        loop {
            self.show_title();
            self.tell_manager();
            if let Some(code) = self.driver.exit_code() {
                self.sys().worker_output.drain_at_exit();
                tracing::info!(code, "drover exits");
                return code;
            }
            let ready = self.wait();
            self.sys().wakeups += 1;
            self.sys().worker_output.service(&ready.worker_output);
            self.driver.begin_turn();
            if ready.signals {
                self.on_signals();
            }
            if ready.upgrade {
                self.on_upgrade_channel();
            }
            self.on_control(ready.control_listener, &ready.control_conns);
            self.on_metrics(&ready.metrics);
            self.sys().beat_watchdog();
            self.sample_backlog();
            self.driver.end_turn();
        }
    }

    /// STOPPING=1 to the service manager once a stop begins. (READY=1 and a successor's
    /// `ready` follow the machine's `PoolReady` and `AskHandover` events.)
    fn tell_manager(&mut self) {
        let stopping = matches!(self.sup().phase(), Phase::Stopping { .. });
        let sys = self.sys();
        if stopping && !sys.announced_stopping {
            sys.announced_stopping = true;
            if let Some(m) = &sys.manager {
                m.stopping("stopping: draining workers");
            }
        }
    }

    /// The process title (`drover: supervisor APP 3/4 ready`), rewritten only when what it
    /// shows changed: a few loads and a comparison per turn otherwise.
    fn show_title(&mut self) {
        let sup = self.sup();
        let state = match sup.phase() {
            Phase::Stopping { .. } => Some("stopping"),
            Phase::Handover => Some("handing over"),
            Phase::Exited => Some("exiting"),
            _ if sup.is_crash_looping() => Some("crash-looping"),
            _ if sup.upgrade_state() != UpgradeState::Idle => Some("upgrading"),
            _ => None,
        };
        let (ready, target) = (sup.ready_workers(), sup.target());
        let sys = self.sys();
        let role = match sys.role {
            _ if sys.args.supervise => "parent",
            Role::Successor => "successor",
            Role::Primary | Role::Supervised => "supervisor",
        };
        let view = crate::title::SupervisorView {
            role,
            ready,
            target,
            state,
        };
        if sys.title_shown == Some(view) {
            return;
        }
        if sys.title_shown.is_none() {
            let name = if role == "parent" {
                "drover-parent"
            } else {
                "drover-sup"
            };
            crate::title::set(&view.text(&sys.settings.title), name);
        } else {
            crate::title::set_cmdline(&view.text(&sys.settings.title));
        }
        sys.title_shown = Some(view);
    }

    /// Reports each TCP listener's accept-queue length when it changed: the machine scales
    /// dynamic and ondemand pools on it (programs that report no load scale too). Sampled
    /// on every wake-up; while a queue could build up unseen, the machine keeps a tick every
    /// maintenance interval for it (`Supervisor::poll_timeout`).
    fn sample_backlog(&mut self) {
        let count = self.sys().listeners.list.len();
        for i in 0..count {
            let sys = self.sys();
            let Some(queued) = sys.listeners.list[i].accept_queue() else {
                continue;
            };
            if sys.backlog_seen.get(i).copied().flatten() != Some(queued) {
                sys.backlog_seen.resize(count, None);
                sys.backlog_seen[i] = Some(queued);
                self.driver.feed(Input::Backlog {
                    listener: i as u32,
                    queued,
                });
            }
        }
    }

    /// Sleeps in `poll(2)` until an OS event or the earliest deadline: the driver's, the
    /// control socket's, the service manager's watchdog, and the recheck of lingering
    /// groups.
    fn wait(&mut self) -> Ready {
        let sleep = self.driver.sleep();
        let sys = self.driver.os();
        let now = std::time::Instant::now();
        let driver_deadline = sleep
            .until
            .map(|t| sys.epoch + Duration::from_nanos(t.as_nanos()));
        let control_deadline = sys.control.as_ref().and_then(|c| c.0.deadline());
        let metrics_deadline = sys.metrics.as_ref().and_then(|m| m.deadline());
        // The last process of a lingering group is normally drover's child (re-parented)
        // and its exit wakes drover; one whose parent left the group does not.
        let linger_deadline = (!sys.lingering.is_empty()).then(|| now + LINGER_CHECK);
        let deadline = [
            driver_deadline,
            control_deadline,
            metrics_deadline,
            sys.next_watchdog,
            linger_deadline,
            sys.worker_output.deadline(),
        ]
        .into_iter()
        .flatten()
        .min();
        let timeout = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                // Round up: waking before the deadline would only spin.
                let nanos = d.saturating_duration_since(now).as_nanos();
                let millis = nanos.div_ceil(1_000_000).min(i32::MAX as u128);
                PollTimeout::try_from(millis as i32).unwrap_or(PollTimeout::MAX)
            }
        };
        sys.poll(timeout, sleep.watch_messages)
    }
}

impl System {
    /// WATCHDOG=1 to the service manager at its pace.
    fn beat_watchdog(&mut self) {
        let Some(at) = self.next_watchdog else {
            return;
        };
        if at > std::time::Instant::now() {
            return;
        }
        if let Some(m) = &self.manager {
            // Until the handover the predecessor is the main process; the manager would
            // refuse (and log) a successor's beat.
            if !matches!(self.role, Role::Successor) {
                m.watchdog();
            }
            self.next_watchdog = m.watchdog_interval().map(|i| at + i);
        }
    }

    /// One `poll(2)`. While the machine lets worker messages wait, the notify socket is not
    /// watched: they are read at the next wake-up, at the driver's deadline at the latest.
    fn poll(&self, timeout: PollTimeout, watch_messages: bool) -> Ready {
        let control_fds: Vec<(BorrowedFd<'_>, PollFlags)> = self
            .control
            .as_ref()
            .map(|c| {
                c.0.poll_fds(self.serving_control, std::time::Instant::now())
            })
            .unwrap_or_default();
        let upgrade = self.successor.as_ref().or(self.predecessor.as_ref());
        // The upgrade channel is always polled (a never-readable stand-in when there is
        // none), so the control fds keep their places at 3 and onwards.
        let mut fds = vec![
            PollFd::new(self.signals.get_read().as_fd(), PollFlags::POLLIN),
            PollFd::new(
                self.notify.fd.as_fd(),
                if watch_messages {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ),
            PollFd::new(
                upgrade.map_or(self.notify.fd.as_fd(), |c| c.fd()),
                if upgrade.is_some() {
                    PollFlags::POLLIN
                } else {
                    PollFlags::empty()
                },
            ),
        ];
        fds.extend(
            control_fds
                .iter()
                .map(|(fd, flags)| PollFd::new(*fd, *flags)),
        );
        // The metrics endpoint's fds follow the control socket's, as one block, then the
        // workers' output pipes.
        let metrics_from = fds.len();
        let metrics_fds = self
            .metrics
            .as_ref()
            .map(|m| m.poll_fds(std::time::Instant::now()))
            .unwrap_or_default();
        fds.extend(
            metrics_fds
                .iter()
                .map(|(fd, flags)| PollFd::new(*fd, *flags)),
        );
        let metrics_to = fds.len();
        fds.extend(
            self.worker_output
                .poll_fds()
                .into_iter()
                .map(|(fd, flags)| PollFd::new(fd, flags)),
        );
        let polled = nix::poll::poll(&mut fds, timeout);
        let readable = |i: usize| -> bool {
            polled.is_ok()
                && fds[i].revents().is_some_and(|r| {
                    r.intersects(
                        PollFlags::POLLIN
                            | PollFlags::POLLOUT
                            | PollFlags::POLLHUP
                            | PollFlags::POLLERR,
                    )
                })
        };
        Ready {
            signals: readable(0),
            upgrade: upgrade.is_some() && readable(2),
            control_listener: metrics_from > 3 && readable(3),
            control_conns: (4..metrics_from).map(readable).collect(),
            metrics: (metrics_from..metrics_to).map(readable).collect(),
            worker_output: (metrics_to..fds.len()).map(readable).collect(),
        }
    }
}
