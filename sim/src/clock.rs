//! Per-node drifting clocks.
//!
//! Global (simulation) time is in microseconds. Each node's local clock runs
//! at `rate_ppb / 1e9` of global time from its own origin, and the protocol
//! sees it in whole milliseconds as [`shoal_protocol::Instant`]. Integer
//! arithmetic keeps the conversion exact both ways, so a timer asked for at
//! local `L` fires at the first global microsecond whose local time is `L`.

use shoal_protocol::Instant;

const PPB: u128 = 1_000_000_000;

/// One node's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeClock {
    /// Local milliseconds at global time zero.
    pub origin_ms: u64,
    /// Local rate in parts per billion of global time (1e9 = no drift).
    pub rate_ppb: u64,
}

impl NodeClock {
    /// A clock with drift `d` (local runs at `1 + d`) and the given origin.
    pub fn new(drift: f64, origin_ms: u64) -> Self {
        let rate = (1e9 * (1.0 + drift)).round().max(1.0) as u64;
        NodeClock {
            origin_ms,
            rate_ppb: rate,
        }
    }

    /// A clock with no drift and origin zero.
    pub fn perfect() -> Self {
        NodeClock {
            origin_ms: 0,
            rate_ppb: PPB as u64,
        }
    }

    /// The drift `d` of this clock.
    pub fn drift(&self) -> f64 {
        self.rate_ppb as f64 / 1e9 - 1.0
    }

    /// Local time at global microsecond `global_us`.
    pub fn local(&self, global_us: u64) -> Instant {
        let local_us = global_us as u128 * self.rate_ppb as u128 / PPB;
        let ms = u64::try_from(local_us / 1000).unwrap_or(u64::MAX);
        Instant::from_millis(self.origin_ms.saturating_add(ms))
    }

    /// The first global microsecond at which the local clock reads `local`
    /// or later.
    pub fn global_at(&self, local: Instant) -> u64 {
        let since_origin_ms = local.as_millis().saturating_sub(self.origin_ms) as u128;
        // floor(g * rate / PPB) >= X  <=>  g * rate >= X * PPB.
        let target = since_origin_ms * 1000 * PPB;
        let g = target.div_ceil(self.rate_ppb as u128);
        u64::try_from(g).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_is_exact_at_the_boundary() {
        for drift in [-0.01, -1e-4, 0.0, 3e-5, 0.01] {
            let c = NodeClock::new(drift, 1234);
            for l in [1234u64, 1235, 2_000, 99_999, 600_000_000] {
                let g = c.global_at(Instant::from_millis(l));
                assert!(c.local(g) >= Instant::from_millis(l));
                if g > 0 {
                    assert!(
                        c.local(g - 1) < Instant::from_millis(l),
                        "drift {drift} l {l}"
                    );
                }
            }
        }
    }
}
