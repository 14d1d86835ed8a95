//! Lifeguard's dynamic suspicion timeout (memberlist `suspicion.go`).
//!
//! A suspicion starts at the maximum timeout and falls toward the minimum
//! as independent confirmations (suspicions raised by other nodes) arrive:
//! `timeout = max - (max - min) * log(C + 1) / log(K + 1)`.

use crate::{Instant, NodeId};
use std::collections::BTreeSet;
use std::time::Duration;

/// How many distinct confirmers one suspicion remembers; more cannot
/// shorten the timeout below the minimum anyway.
const MAX_CONFIRMERS: usize = 64;

/// One live suspicion of one member.
#[derive(Debug, Clone)]
pub(crate) struct Suspicion {
    /// The incarnation suspected.
    pub(crate) incarnation: u64,
    start: Instant,
    min: Duration,
    max: Duration,
    /// Confirmations needed to reach `min` (`K`).
    needed: u32,
    /// Who raised it first; not an independent confirmation of itself.
    origin: NodeId,
    confirmers: BTreeSet<NodeId>,
}

impl Suspicion {
    pub(crate) fn new(
        incarnation: u64,
        origin: NodeId,
        start: Instant,
        min: Duration,
        max: Duration,
        needed: u32,
    ) -> Self {
        Suspicion {
            incarnation,
            start,
            min: min.min(max),
            max,
            needed,
            origin,
            confirmers: BTreeSet::new(),
        }
    }

    /// Records a suspicion from `by`; `true` if it is a new independent one
    /// that shortens the timeout (worth re-gossiping so others shorten
    /// theirs too). Past `needed` confirmations the timeout is at its
    /// minimum: more are neither counted nor spread. Spreading them (as
    /// before) made every node re-gossip each of up to 64 confirmers of
    /// every suspect, a third of the bytes of a partitioned cluster.
    pub(crate) fn confirm(&mut self, by: NodeId) -> bool {
        let enough = (self.needed as usize).min(MAX_CONFIRMERS);
        if by == self.origin || self.confirmers.len() >= enough {
            return false;
        }
        self.confirmers.insert(by)
    }

    /// Independent confirmations so far.
    pub(crate) fn confirmations(&self) -> u32 {
        u32::try_from(self.confirmers.len()).unwrap_or(u32::MAX)
    }

    /// The current timeout, given the confirmations so far.
    pub(crate) fn timeout(&self) -> Duration {
        timeout(self.min, self.max, self.confirmations(), self.needed)
    }

    /// When the member is confirmed down unless refuted.
    pub(crate) fn deadline(&self) -> Instant {
        self.start + self.timeout()
    }
}

/// `max - (max - min) * log(c + 1) / log(k + 1)`, clamped to `[min, max]`,
/// rounded to whole milliseconds.
pub(crate) fn timeout(min: Duration, max: Duration, c: u32, k: u32) -> Duration {
    if k == 0 || c >= k {
        return min;
    }
    let frac = (f64::from(c) + 1.0).ln() / (f64::from(k) + 1.0).ln();
    let span_ms = max.saturating_sub(min).as_secs_f64() * 1000.0;
    let ms = (max.as_secs_f64() * 1000.0 - span_ms * frac).round();
    Duration::from_millis(ms as u64).clamp(min, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_falls_from_max_to_min_with_confirmations() {
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(6));
        let t: Vec<_> = (0..5).map(|c| timeout(min, max, c, 3)).collect();
        assert_eq!(t[0], max);
        assert!(t[1] < t[0] && t[2] < t[1]);
        assert_eq!(t[3], min);
        assert_eq!(t[4], min);
        assert_eq!(timeout(min, max, 1, 3), Duration::from_secs(4));
    }

    #[test]
    fn only_distinct_non_origin_confirmers_count() {
        let a = NodeId::from_u64(1);
        let b = NodeId::from_u64(2);
        let mut s = Suspicion::new(
            0,
            a,
            Instant::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(6),
            3,
        );
        assert!(!s.confirm(a));
        assert!(s.confirm(b));
        assert!(!s.confirm(b));
        assert_eq!(s.confirmations(), 1);
        assert_eq!(s.deadline(), Instant::from_millis(4000));
    }

    #[test]
    fn confirmations_past_the_needed_count_are_not_spread() {
        let mut s = Suspicion::new(
            0,
            NodeId::from_u64(1),
            Instant::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(6),
            3,
        );
        let spread: Vec<bool> = (2..8).map(|n| s.confirm(NodeId::from_u64(n))).collect();
        assert_eq!(spread, vec![true, true, true, false, false, false]);
        assert_eq!(s.confirmations(), 3);
        assert_eq!(s.deadline(), Instant::from_millis(2000));
    }
}
