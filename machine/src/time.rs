//! The machine's own clock type. The shell converts its monotonic clock into nanoseconds
//! since one epoch taken at start-up; the simulator hands in virtual time. Never wall-clock.

use core::fmt;
use core::time::Duration;

/// A point in time, in nanoseconds since an epoch the driver chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(u64);

impl Instant {
    /// The epoch.
    pub const ZERO: Instant = Instant(0);

    /// `nanos` nanoseconds after the epoch.
    pub const fn from_nanos(nanos: u64) -> Instant {
        Instant(nanos)
    }

    /// `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Instant {
        Instant(secs.saturating_mul(1_000_000_000))
    }

    /// `secs` seconds after the epoch; negative or NaN is the epoch, too large saturates.
    pub fn from_secs_f64(secs: f64) -> Instant {
        Instant((secs * 1e9) as u64)
    }

    /// Nanoseconds since the epoch.
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// Saturates instead of overflowing: a deadline 584 years out is as good as never.
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// Time elapsed since `earlier`, zero if `earlier` is in the future.
    pub fn saturating_since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl core::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

/// Durations longer than u64 nanoseconds (584 years) are clamped: they mean "never" here.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Display for Instant {
    /// Seconds with millisecond precision, e.g. `12.500s`: the trace column format.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0 / 1_000_000;
        let s = format!("{}.{:03}s", millis / 1000, millis % 1000);
        f.pad(&s)
    }
}

/// Formats a duration like a trace timestamp (`1.500s`), so traces read uniformly.
pub(crate) struct Secs(pub Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        let s = format!("{}.{:03}s", millis / 1000, millis % 1000);
        f.pad(&s)
    }
}
