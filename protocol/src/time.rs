//! Protocol time: a monotonic instant supplied by the host.
//!
//! The protocol never reads a clock. Hosts pass `now` into every `handle_*`
//! call; the node derives it from `std::time::Instant`, the simulator from
//! each virtual node's drifting clock. Millisecond resolution is enough for
//! every timer in shoal and keeps arithmetic exact and portable.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A point on the host's monotonic clock, in milliseconds since an arbitrary
/// host-chosen origin. Only differences between instants of one host mean
/// anything; instants are never sent over the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Instant(u64);

impl Instant {
    /// The host clock's origin.
    pub const ZERO: Instant = Instant(0);

    /// An instant `ms` milliseconds after the host clock's origin.
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }

    /// Milliseconds since the host clock's origin.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating instead of overflowing.
    pub fn saturating_add(self, d: Duration) -> Self {
        Instant(self.0.saturating_add(duration_ms(d)))
    }

    /// `self - d`, clamped at the origin.
    pub fn saturating_sub(self, d: Duration) -> Self {
        Instant(self.0.saturating_sub(duration_ms(d)))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl std::ops::Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        self.saturating_add(d)
    }
}

impl fmt::Debug for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}ms", self.0)
    }
}

/// A duration in whole milliseconds, saturating at `u64::MAX`.
pub fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        let t = Instant::from_millis(5);
        assert_eq!(t.saturating_sub(Duration::from_millis(10)), Instant::ZERO);
        assert_eq!(
            Instant::from_millis(u64::MAX - 1) + Duration::from_secs(1),
            Instant::from_millis(u64::MAX)
        );
        assert_eq!(
            Instant::from_millis(3).saturating_duration_since(Instant::from_millis(9)),
            Duration::ZERO
        );
    }
}
