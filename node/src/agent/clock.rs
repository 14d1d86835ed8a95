//! The agent's protocol clock: milliseconds since the agent started, from
//! the monotonic clock.

use shoal_protocol::Instant;
use std::time::Duration;

/// Converts between the host's monotonic clock and protocol instants.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    origin: std::time::Instant,
    wall_origin_ms: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose origin is now.
    pub fn new() -> Clock {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            origin: std::time::Instant::now(),
            wall_origin_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The wall clock (Unix ms) at the origin, for timestamps people read.
    pub fn wall_origin_ms(&self) -> u64 {
        self.wall_origin_ms
    }

    /// Now, in whole milliseconds since the origin (never goes backwards).
    pub fn now(&self) -> Instant {
        Instant::from_millis(u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// The tokio instant at which `deadline` is reached.
    pub fn to_tokio(&self, deadline: Instant) -> tokio::time::Instant {
        let at = self.origin + Duration::from_millis(deadline.as_millis());
        tokio::time::Instant::from_std(at)
    }

    /// How long ago `then` was.
    pub fn ago_ms(&self, then: Instant) -> u64 {
        self.now().as_millis().saturating_sub(then.as_millis())
    }
}
