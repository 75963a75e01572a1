//! Deaths and restarts: a worker that failed (a failed fork, a death before Ready, a crash,
//! a kill for a timeout) is counted (the slot's young deaths, the pool's death window), and
//! its slot waits out an exponential backoff, or is given up on for an unrecoverable exit
//! code; too many deaths within the window is a crash loop. A worker killed from outside or
//! retired by its own exit 0 after Ready is no failure of the program: its place is
//! refilled at once, within the pool's quick-restart rate. This module owns the backoff, the
//! death window, the quick-restart window and the crash-loop flag; it must not spawn: the
//! end of a backoff is a slot deadline, and `timers` refills the slot.

use core::time::Duration;

use super::slot::SlotState;
use super::{Phase, Supervisor};
use crate::config::OnCrashLoop;
use crate::io::*;
use crate::output::*;

use crate::time::Instant;

impl Supervisor {
    /// A worker died unasked, failed to spawn, or was killed for a failure: count the death
    /// if its cause counts, and schedule the slot's restart.
    pub(super) fn failed_start(&mut self, i: usize, uptime: Option<Duration>, cause: DeathCause) {
        let running = self.phase == Phase::Running;
        // Empty the slot first: the death may stop the whole pool (crash-loop exit), and a
        // process that no longer exists must not be retired.
        let generation = self.worker(i).generation;
        self.detach(i);
        self.slots[i].state = SlotState::Empty;
        self.attach(i);
        let restart = &self.config.restart;
        let young = uptime.is_none_or(|u| u < restart.healthy_uptime);
        let counts = planted!(self, KilledCounts =>
            cause.counts() || cause == DeathCause::Killed,
            cause.counts());
        let slot = &mut self.slots[i];
        slot.young_deaths = match (counts, young) {
            (true, true) => slot.young_deaths.saturating_add(1),
            (true, false) => 1,
            // Not the program's failure: the streak stands, unless it lived long enough to
            // have been healthy.
            (false, true) => slot.young_deaths,
            (false, false) => 0,
        };
        slot.restarts = slot.restarts.saturating_add(1);
        let young_deaths = slot.young_deaths;
        if counts {
            self.record_death();
            if running {
                self.fail_start(i);
            }
        }
        if self.phase != Phase::Running || i >= self.slot_limit as usize {
            return;
        }
        let delay = if counts {
            planted!(self, BackoffZero => Duration::ZERO, self.backoff(young_deaths))
        } else {
            self.quick_restart_delay()
        };
        self.detach(i);
        self.slots[i].state = SlotState::Backoff {
            generation,
            until: self.now + delay,
        };
        self.attach(i);
        self.event(Event::RestartScheduled {
            slot: i as u32,
            delay,
            young_deaths,
            cause,
        });
    }

    /// The delay of a quick refill: none while fewer than `quick_restart_rate` were
    /// scheduled within the last second, else until the oldest of them is a second old.
    /// Each refill is booked at its own instant, so a storm is paced at the rate, not
    /// stopped.
    fn quick_restart_delay(&mut self) -> Duration {
        let rate = self.config.restart.quick_restart_rate.max(1) as usize;
        let window = Duration::from_secs(1);
        // Bookings a second old no longer count: the window holds at most `rate` entries
        // however high the rate is set, and only those of the last second.
        while self.quick.len() > rate || self.quick.front().is_some_and(|&t| t + window <= self.now)
        {
            self.quick.pop_front();
        }
        let at = match self.quick.front() {
            Some(&oldest) if self.quick.len() == rate => (oldest + window).max(self.now),
            _ => self.now,
        };
        if self.quick.len() == rate {
            self.quick.pop_front();
        }
        self.quick.push_back(at);
        at.saturating_since(self.now)
    }

    /// The delay before a slot's restart after its `young_deaths`-th consecutive young
    /// death: none for the first, then `backoff_min` doubling up to `backoff_max`, and
    /// `backoff_max` throughout a crash loop.
    fn backoff(&self, young_deaths: u32) -> Duration {
        let restart = &self.config.restart;
        if self.crash_looping {
            restart.backoff_max
        } else if young_deaths <= 1 {
            Duration::ZERO
        } else {
            let doublings = planted!(self, BackoffNoDouble => 0, (young_deaths - 2).min(32));
            restart
                .backoff_min
                .saturating_mul(1u32 << doublings.min(31))
                .min(restart.backoff_max)
        }
    }

    pub(super) fn give_up(&mut self, i: usize, code: i32) {
        let running = self.phase == Phase::Running;
        let id = self.id_of(i);
        let generation = self.worker(i).generation;
        self.detach(i);
        self.slots[i].state = SlotState::GaveUp { generation, code };
        self.attach(i);
        self.event(Event::GaveUp { worker: id, code });
        if self.config.restart.stop_on_unrecoverable {
            self.exit_code.get_or_insert(code);
            self.begin_stop(false);
        }
        if running {
            self.fail_start(i);
        }
    }

    /// Slot `i` failed in a way that counts while the pool runs: before the pool was first
    /// ready, with `fail_start`, that fails the start. The pool stops with exit code 1 unless
    /// the same failure already stopped it with a code of its own (a crash loop's, an
    /// unrecoverable exit's); the event goes out either way, so whoever waits for the start
    /// (the daemon's launcher) learns why.
    fn fail_start(&mut self, i: usize) {
        let after_ready = planted!(self, StartFailsAfterReady => false, self.started);
        if !self.config.restart.fail_start || after_ready || self.start_failed {
            return;
        }
        self.start_failed = true;
        self.event(Event::StartFailed { slot: i as u32 });
        if self.phase == Phase::Running {
            self.exit_code.get_or_insert(1);
            self.begin_stop(false);
        }
    }

    fn record_death(&mut self) {
        let limit = self.config.restart.intensity_deaths as usize + 1;
        self.deaths.push_back(self.now);
        while self.deaths.len() > limit {
            self.deaths.pop_front();
        }
        if self.crash_looping
            || self.deaths.len() < planted!(self, CrashLoopEarly => limit - 1, limit)
        {
            return;
        }
        let window = self.config.restart.intensity_window;
        // Since the oldest of the deaths that make it a loop.
        let since_oldest = self.now.saturating_since(planted!(self, CrashLoopEarly =>
            self.deaths[self.deaths.len() + 1 - limit],
            self.deaths[0]));
        if since_oldest < window {
            self.crash_looping = true;
            self.event(Event::CrashLooping {
                deaths: limit as u32,
                window,
            });
            if let OnCrashLoop::Exit(code) = self.config.restart.on_crash_loop {
                if self.phase == Phase::Running {
                    self.exit_code.get_or_insert(code);
                    self.begin_stop(false);
                }
            }
        }
    }

    pub(super) fn crash_loop_end(&self) -> Option<Instant> {
        let oldest = self.crash_looping.then(|| self.deaths.front()).flatten()?;
        Some(*oldest + self.config.restart.intensity_window)
    }
}

impl Supervisor {
    pub(super) fn deaths_limit(&self) -> usize {
        self.config.restart.intensity_deaths as usize + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// The window used to be trimmed by count only: with a high rate it kept up to `rate`
    /// bookings, however old (8 bytes per death up to a million).
    #[test]
    fn the_quick_window_holds_the_last_second_only() {
        let mut config = Config::static_pool(1);
        config.restart.quick_restart_rate = 1_000_000;
        let mut sup = Supervisor::new(config, Instant::from_nanos(0)).unwrap();
        for i in 0..10_000u64 {
            // One refill every 10 ms: 100 per second, far below the rate.
            sup.now = Instant::from_nanos(i * 10_000_000);
            assert_eq!(sup.quick_restart_delay(), Duration::ZERO);
        }
        assert!(sup.quick.len() <= 100, "{} bookings kept", sup.quick.len());
    }
}
