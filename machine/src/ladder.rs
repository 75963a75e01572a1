//! Where a stopping worker stands on its kill ladder. Pure arithmetic over `Ladder` data.

use crate::config::Ladder;
use crate::io::Signal;
use crate::time::Instant;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LadderPos {
    pub stage: usize,
    /// Nominal start of the stage: late wake-ups do not shift later stages, so KILL lands
    /// exactly at the ladder's deadline.
    pub stage_start: Instant,
    /// Signals sent in this stage; the gap after the k-th is `interval + k·increment`.
    pub sent: u32,
    /// Nominal time of the next signal; `None` once KILL was sent.
    pub next: Option<Instant>,
}

impl LadderPos {
    pub fn enter(stage: usize, now: Instant) -> LadderPos {
        LadderPos {
            stage,
            stage_start: now,
            sent: 0,
            next: Some(now),
        }
    }

    /// When KILL goes out if nothing escalates further.
    pub fn kill_at(&self, ladder: &Ladder) -> Instant {
        self.stage_start + ladder.time_to_kill(self.stage)
    }

    /// Moves up to `stage` now unless already there or beyond: a ladder never resets.
    pub fn escalate(&mut self, stage: usize, now: Instant) {
        if self.stage < stage && self.next.is_some() {
            *self = LadderPos::enter(stage, now);
        }
    }

    /// The signal due at `now`, if any, advancing the position.
    pub fn fire(&mut self, ladder: &Ladder, now: Instant) -> Option<Signal> {
        let due = self.next?;
        if now < due {
            return None;
        }
        // Bounded: each pass moves one stage up, and validation ends the ladder in KILL.
        for _ in 0..ladder.stages.len() {
            let stage = &ladder.stages[self.stage];
            if stage.signal == Signal::Kill {
                self.next = None;
                return Some(Signal::Kill);
            }
            let stage_end = self.stage_start + stage.timeout;
            if now < stage_end {
                break;
            }
            self.stage += 1;
            self.stage_start = stage_end;
            self.sent = 0;
            self.next = Some(stage_end);
        }
        let stage = &ladder.stages[self.stage];
        let stage_end = self.stage_start + stage.timeout;
        let slot = self
            .next
            .expect("a stage below KILL always has a next slot");
        let gap = stage
            .interval
            .saturating_add(stage.increment.saturating_mul(self.sent));
        self.sent = self.sent.saturating_add(1);
        let mut next = slot + gap;
        if next <= now {
            // A late wake-up: keep the gap from now rather than firing a burst.
            next = now + gap;
        }
        self.next = Some(next.min(stage_end));
        Some(stage.signal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::time::Duration;

    fn run(ladder: &Ladder, stage: usize, until: u64) -> Vec<(u64, Signal)> {
        let mut pos = LadderPos::enter(stage, Instant::ZERO);
        let mut out = Vec::new();
        while let Some(at) = pos.next {
            if at > Instant::from_secs(until) {
                break;
            }
            let sig = pos.fire(ladder, at).expect("due");
            out.push((at.as_nanos() / 1_000_000_000, sig));
        }
        out
    }

    #[test]
    fn serverengine_graceful_schedule_matches_reference_and_kills_at_1200s() {
        let l = Ladder::serverengine();
        let got = run(&l, 0, 10_000);
        let term: Vec<u64> = got
            .iter()
            .filter(|s| s.1 == Signal::Term)
            .map(|s| s.0)
            .collect();
        let quit: Vec<u64> = got
            .iter()
            .filter(|s| s.1 == Signal::Quit)
            .map(|s| s.0)
            .collect();
        assert_eq!(term, [0, 15, 40, 75, 120, 175, 240, 315, 400, 495]);
        let quit_rel: Vec<u64> = quit.iter().map(|t| t - 600).collect();
        assert_eq!(quit_rel, [0, 10, 30, 60, 100, 150, 210, 280, 360, 450, 550]);
        assert_eq!(got.last(), Some(&(1200, Signal::Kill)));
    }

    #[test]
    fn serverengine_immediate_stop_kills_at_600s() {
        let l = Ladder::serverengine();
        let got = run(&l, l.immediate_from, 10_000);
        assert_eq!(got.first(), Some(&(0, Signal::Quit)));
        assert_eq!(got.last(), Some(&(600, Signal::Kill)));
    }

    #[test]
    fn default_ladder_terms_every_10s_and_kills_at_stop_timeout() {
        let l = Ladder::for_any_program(Duration::from_secs(25));
        let got = run(&l, 0, 100);
        assert_eq!(
            got,
            [
                (0, Signal::Term),
                (10, Signal::Term),
                (20, Signal::Term),
                (25, Signal::Kill)
            ]
        );
    }

    #[test]
    fn escalation_never_moves_down_and_late_wakeup_keeps_kill_deadline() {
        let l = Ladder::serverengine();
        let mut pos = LadderPos::enter(1, Instant::ZERO);
        pos.escalate(0, Instant::from_secs(5));
        assert_eq!(
            pos.stage, 1,
            "a graceful request must not reset an immediate stop"
        );
        // Wake up very late: the KILL deadline stays at 600 s after the stage start.
        assert_eq!(pos.fire(&l, Instant::ZERO), Some(Signal::Quit));
        assert_eq!(pos.fire(&l, Instant::from_secs(700)), Some(Signal::Kill));
        assert_eq!(pos.kill_at(&l), Instant::from_secs(600));
    }
}
