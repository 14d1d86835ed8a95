//! The machine's timers: one enum, one fixed table of deadlines
//! (quinn-proto's `connection/timer.rs`). The host sees only the earliest.

use crate::Instant;

/// Every kind of deadline the membership machine keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// Start of the next probe round (also ends the current one).
    Probe,
    /// The direct probe of the current round went unanswered: probe indirectly.
    ProbeTimeout,
    /// Send pending updates to a few random members.
    Gossip,
    /// Full-state exchange with one random member.
    PushPull,
    /// Re-send the join to the seeds.
    Join,
    /// The earliest suspicion deadline (derived from the suspicion table).
    Suspicion,
    /// The earliest indirect probe we run for another member (nack due).
    Relay,
    /// The earliest down/left member to forget (derived).
    Reap,
    /// Ping a random down member, in case it runs and was cut off.
    Reconnect,
    /// One full-state exchange a while after joining (see `JOIN_SETTLE`).
    Settle,
}

impl Timer {
    /// All kinds, in the order expired timers are handled.
    pub(crate) const VALUES: [Timer; 10] = [
        Timer::Probe,
        Timer::ProbeTimeout,
        Timer::Relay,
        Timer::Suspicion,
        Timer::Gossip,
        Timer::PushPull,
        Timer::Join,
        Timer::Reap,
        Timer::Reconnect,
        Timer::Settle,
    ];
}

/// The deadline of every timer kind, `None` when unarmed.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimerTable {
    deadlines: [Option<Instant>; Timer::VALUES.len()],
}

impl TimerTable {
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.deadlines[timer as usize] = Some(at);
    }

    pub(crate) fn set_opt(&mut self, timer: Timer, at: Option<Instant>) {
        self.deadlines[timer as usize] = at;
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines[timer as usize]
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        self.deadlines[timer as usize] = None;
    }

    /// The earliest armed deadline.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Whether `timer` is armed and due at `now`.
    pub(crate) fn is_expired(&self, timer: Timer, now: Instant) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_armed_deadline_wins() {
        let mut t = TimerTable::default();
        assert_eq!(t.next_timeout(), None);
        t.set(Timer::Gossip, Instant::from_millis(50));
        t.set(Timer::Reap, Instant::from_millis(20));
        assert_eq!(t.next_timeout(), Some(Instant::from_millis(20)));
        t.stop(Timer::Reap);
        assert_eq!(t.next_timeout(), Some(Instant::from_millis(50)));
        assert!(!t.is_expired(Timer::Gossip, Instant::from_millis(49)));
        assert!(t.is_expired(Timer::Gossip, Instant::from_millis(50)));
    }
}
