//! PaxosLease at one acceptor: leases live in memory only (docs/protocol.md §5).
//!
//! The rules that make leases safe without synchronised clocks:
//! - the holder starts its timer before it asks, the acceptor starts its
//!   own (longer, drift-corrected) timer when it grants, so the holder's
//!   lease always ends first;
//! - an acceptor never replaces another owner's live lease, whatever the
//!   ballot (the original paper let a higher ballot do so, and a model
//!   checker finds two owners in that version);
//! - an acceptor that lost its memory (restart) or just joined a group
//!   grants nothing new for one acceptor lease length. It renews only
//!   leases it knows: after a reconfiguration, the sealed group's live
//!   leases are carried over so their holders keep running.
//!
//! The prepare phase of PaxosLease is folded into the request: because a
//! live lease is never replaced, the answer to one request round already
//! tells the proposer whether a majority is free.

use crate::bugs::{Bug, Bugs};
use crate::paxos::Ballot;
use crate::tasks::{TaskId, TaskRecord, TaskState};
use crate::time::Instant;
use crate::wire::paxos::{LeaseAsk, LeaseTransfer, LeaseVerdict};
use crate::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// Most grants an acceptor remembers for one task: one owner normally, a
/// few when carried over from a sealed group whose acceptors disagreed.
const MAX_GRANTS_PER_TASK: usize = 8;

/// How long an acceptor remembers when a task's last grant ended (for the
/// staggered orphan sweep); older ends count as "long ago".
const ENDED_MEMORY_MS: u64 = 30_000;

/// How long an acceptor remembers a released round, and how many per task:
/// a resend of the request still in flight when the release was sent must
/// not grant the round again (nobody would release that grant, and it would
/// block the task's next claimer for a whole acceptor lease).
const RELEASED_MEMORY_MS: u64 = 5_000;
const MAX_RELEASED_PER_TASK: usize = 4;

/// The acceptor's timer for a holder lease of `lease_ms`:
/// `lease_ms * (1+rho)/(1-rho)`, rounded up, so that it outlasts the holder's
/// lease in real time whatever the two clocks' rates within `1 ± rho`.
pub fn acceptor_lease_ms(lease_ms: u64, rho: f64, bugs: &Bugs) -> u64 {
    if bugs.has(Bug::NoDriftMargin) {
        return lease_ms;
    }
    let rho = rho.clamp(0.0, 0.5);
    ((lease_ms as f64) * (1.0 + rho) / (1.0 - rho)).ceil() as u64
}

/// The relations every holder lease must keep, for task leases and job
/// leases alike: the drift bound, renewals at least twice per lease, and a
/// self-fence margin that still leaves room for one renewal. The offending
/// field and why, or `None` when they hold.
pub fn lease_timing_error(
    rho: f64,
    lease_ms: u64,
    renew_ms: u64,
    fence_margin_ms: u64,
) -> Option<(&'static str, &'static str)> {
    if !(0.0..0.2).contains(&rho) {
        return Some(("rho", "must be in [0, 0.2)"));
    }
    if lease_ms < 10 || renew_ms == 0 || renew_ms * 2 > lease_ms {
        return Some(("renew_ms", "must be positive and at most half of lease_ms"));
    }
    if fence_margin_ms + renew_ms >= lease_ms {
        return Some((
            "fence_margin_ms",
            "fence_margin_ms + renew_ms must be below lease_ms",
        ));
    }
    None
}

/// One grant held by this acceptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Who holds it.
    pub owner: NodeId,
    /// For which attempt.
    pub attempt: u64,
    /// With which ballot.
    pub ballot: Ballot,
    /// When this acceptor's timer ends (local clock).
    pub expires: Instant,
}

/// The leases of one shard at one acceptor.
#[derive(Debug, Clone, Default)]
pub struct LeaseTable {
    grants: BTreeMap<TaskId, Vec<Grant>>,
    /// When a grant of a task first ended here (expired or released) since
    /// its record last changed, for the staggered orphan sweep: failed
    /// claims in between do not restart the sweepers' turns. Forgotten
    /// after `ENDED_MEMORY_MS` or when the record changes.
    ended: BTreeMap<TaskId, Instant>,
    /// Rounds whose owner released them, with when: never granted again.
    released: BTreeMap<TaskId, Vec<(Ballot, Instant)>>,
    /// No new grant before this instant (restart or join quarantine).
    quarantine_until: Instant,
}

impl LeaseTable {
    /// A table that grants nothing new before `until`.
    pub fn quarantined(until: Instant) -> Self {
        LeaseTable {
            grants: BTreeMap::new(),
            ended: BTreeMap::new(),
            released: BTreeMap::new(),
            quarantine_until: until,
        }
    }

    /// Whether new grants are refused at `now`.
    pub fn in_quarantine(&self, now: Instant) -> bool {
        now < self.quarantine_until
    }

    /// When the quarantine ends.
    pub fn quarantine_until(&self) -> Instant {
        self.quarantine_until
    }

    /// Time left of the quarantine at `now`.
    pub fn quarantine_left_ms(&self, now: Instant) -> u64 {
        self.quarantine_until
            .saturating_duration_since(now)
            .as_millis() as u64
    }

    /// Decides one ask from `from`. `record` is this acceptor's copy of the
    /// task's register, if any.
    pub fn decide(
        &mut self,
        now: Instant,
        from: NodeId,
        ask: &LeaseAsk,
        acceptor_ms: u64,
        record: Option<&TaskRecord>,
        bugs: &Bugs,
    ) -> LeaseVerdict {
        self.expire(now, ask.task);
        if let Some(rec) = record {
            if rec.state.is_final() {
                return LeaseVerdict::Final;
            }
            if let Some((attempt, holder)) = rec.state.holder() {
                if ask.attempt < attempt || (ask.attempt == attempt && from != holder) {
                    return LeaseVerdict::Stale;
                }
            } else if rec.state == TaskState::Pending && ask.attempt <= rec.attempt {
                return LeaseVerdict::Stale;
            }
        }
        if self
            .released
            .get(&ask.task)
            .is_some_and(|rs| rs.iter().any(|(b, _)| *b == ask.ballot))
        {
            return LeaseVerdict::Released;
        }
        let expires = now + Duration::from_millis(acceptor_ms);
        let grants = self.grants.entry(ask.task).or_default();
        // Renewal: the owner's own live grant for this attempt is extended,
        // even in quarantine (the grant is known, nobody else can hold).
        // Grants carried over from a sealed group may name several owners
        // (racing claims that each reached a minority): only the holder, who
        // says it renews, may extend then; a claim waits until it is alone.
        let others_live = grants.iter().any(|g| g.owner != from);
        if let Some(g) = grants
            .iter_mut()
            .find(|g| g.owner == from && g.attempt == ask.attempt && (ask.renewal || !others_live))
        {
            g.expires = g.expires.max(expires);
            // The latest round's ballot: only its owner's release ends it.
            g.ballot = ask.ballot;
            return LeaseVerdict::Granted;
        }
        let quarantine_ignored = bugs.has(Bug::NoQuarantine);
        if now < self.quarantine_until && !quarantine_ignored {
            return LeaseVerdict::Quarantined;
        }
        if let Some(other) = grants.iter().find(|g| g.owner != from) {
            let overwrite =
                bugs.has(Bug::LeaseOverwrite) && grants.iter().all(|g| ask.ballot > g.ballot);
            if !overwrite {
                return LeaseVerdict::Held {
                    owner: other.owner,
                    attempt: other.attempt,
                    remaining_ms: other.expires.saturating_duration_since(now).as_millis() as u64,
                };
            }
        }
        grants.clear();
        grants.push(Grant {
            owner: from,
            attempt: ask.attempt,
            ballot: ask.ballot,
            expires,
        });
        LeaseVerdict::Granted
    }

    /// The owner gives its lease up.
    pub fn release(
        &mut self,
        now: Instant,
        from: NodeId,
        task: TaskId,
        attempt: u64,
        ballot: Ballot,
    ) {
        let released = self.released.entry(task).or_default();
        if !released.iter().any(|(b, _)| *b == ballot) {
            if released.len() >= MAX_RELEASED_PER_TASK {
                released.remove(0);
            }
            released.push((ballot, now));
        }
        if let Some(grants) = self.grants.get_mut(&task) {
            grants.retain(|g| !(g.owner == from && g.attempt == attempt && g.ballot == ballot));
            if grants.is_empty() {
                self.grants.remove(&task);
                self.ended.entry(task).or_insert(now);
            }
        }
    }

    fn expire(&mut self, now: Instant, task: TaskId) {
        if let Some(grants) = self.grants.get_mut(&task) {
            let last = grants.iter().map(|g| g.expires).max();
            grants.retain(|g| g.expires > now);
            if grants.is_empty() {
                self.grants.remove(&task);
                self.ended.entry(task).or_insert(last.unwrap_or(now));
            }
        }
    }

    /// Forgets every expired grant (bounded by the table's size) and old
    /// grant ends.
    pub fn expire_all(&mut self, now: Instant) {
        let ended = &mut self.ended;
        self.grants.retain(|task, gs| {
            let last = gs.iter().map(|g| g.expires).max();
            gs.retain(|g| g.expires > now);
            if gs.is_empty() {
                ended.entry(*task).or_insert(last.unwrap_or(now));
            }
            !gs.is_empty()
        });
        self.ended.retain(|_, at| {
            now.saturating_duration_since(*at).as_millis() < u128::from(ENDED_MEMORY_MS)
        });
        self.released.retain(|_, rs| {
            rs.retain(|(_, at)| {
                now.saturating_duration_since(*at).as_millis() < u128::from(RELEASED_MEMORY_MS)
            });
            !rs.is_empty()
        });
    }

    /// How long ago a grant of `task` first ended here since its record
    /// last changed, in ms; `None` while a grant is live, `u64::MAX` when
    /// no end is remembered.
    pub fn expired_for(&self, now: Instant, task: TaskId) -> Option<u64> {
        let since = |at: Instant| now.saturating_duration_since(at).as_millis() as u64;
        let first_end = self.ended.get(&task).copied();
        match self.grants.get(&task) {
            Some(gs) => {
                let last = gs.iter().map(|g| g.expires).max().unwrap_or(Instant::ZERO);
                (last <= now).then(|| since(first_end.map_or(last, |e| e.min(last))))
            }
            None => Some(first_end.map_or(u64::MAX, since)),
        }
    }

    /// The task's record changed: a new holder's lease ends count afresh.
    pub fn forget_end(&mut self, task: TaskId) {
        self.ended.remove(&task);
    }

    /// Whether some live grant exists for `task`.
    pub fn is_held(&self, now: Instant, task: TaskId) -> bool {
        self.grants
            .get(&task)
            .is_some_and(|gs| gs.iter().any(|g| g.expires > now))
    }

    /// Every live grant, for observers and checkers.
    pub fn live(&self, now: Instant) -> impl Iterator<Item = (TaskId, Grant)> + '_ {
        self.grants
            .iter()
            .flat_map(|(t, gs)| gs.iter().map(move |g| (*t, *g)))
            .filter(move |(_, g)| g.expires > now)
    }

    /// The live grants to carry to a successor group.
    pub fn transfer(&self, now: Instant) -> Vec<LeaseTransfer> {
        self.live(now)
            .map(|(task, g)| LeaseTransfer {
                task,
                owner: g.owner,
                attempt: g.attempt,
                ballot: g.ballot,
                remaining_ms: g.expires.saturating_duration_since(now).as_millis() as u64,
            })
            .collect()
    }

    /// A joining acceptor's table: quarantined for `quarantine_ms`, holding the
    /// carried-over leases with timers stretched by the drift factor (the
    /// sender measured on its clock, we measure on ours).
    pub fn from_transfer(
        now: Instant,
        quarantine_ms: u64,
        rho: f64,
        leases: &[LeaseTransfer],
    ) -> Self {
        let mut table = LeaseTable::quarantined(now + Duration::from_millis(quarantine_ms));
        let rho = rho.clamp(0.0, 0.5);
        for l in leases {
            let stretched = ((l.remaining_ms as f64) * (1.0 + rho) / (1.0 - rho)).ceil() as u64;
            let grants = table.grants.entry(l.task).or_default();
            if grants.len() >= MAX_GRANTS_PER_TASK {
                continue;
            }
            let expires = now + Duration::from_millis(stretched);
            match grants
                .iter_mut()
                .find(|g| g.owner == l.owner && g.attempt == l.attempt)
            {
                Some(g) => g.expires = g.expires.max(expires),
                None => grants.push(Grant {
                    owner: l.owner,
                    attempt: l.attempt,
                    ballot: l.ballot,
                    expires,
                }),
            }
        }
        table
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(task: u64, attempt: u64, counter: u64, node: u64) -> LeaseAsk {
        LeaseAsk {
            shard: crate::shard::ShardId(0),
            epoch: 1,
            task: TaskId(task),
            attempt,
            ballot: Ballot {
                counter,
                node: NodeId::from_u64(node),
                incarnation: 1,
            },
            renewal: false,
        }
    }

    #[test]
    fn live_lease_is_never_replaced_by_a_higher_ballot() {
        let mut t = LeaseTable::default();
        let now = Instant::from_millis(1_000);
        let a = NodeId::from_u64(1);
        let b = NodeId::from_u64(2);
        let bugs = Bugs::none();
        assert_eq!(
            t.decide(now, a, &ask(7, 1, 1, 1), 100, None, &bugs),
            LeaseVerdict::Granted
        );
        let v = t.decide(
            now + Duration::from_millis(50),
            b,
            &ask(7, 1, 99, 2),
            100,
            None,
            &bugs,
        );
        assert!(
            matches!(v, LeaseVerdict::Held { owner, .. } if owner == a),
            "{v:?}"
        );
        // Once the timer ran out, the other owner gets it.
        let later = now + Duration::from_millis(101);
        assert_eq!(
            t.decide(later, b, &ask(7, 1, 2, 2), 100, None, &bugs),
            LeaseVerdict::Granted
        );
    }

    #[test]
    fn a_released_round_is_not_granted_again_by_a_late_resend() {
        let mut t = LeaseTable::default();
        let now = Instant::from_millis(1_000);
        let (a, b) = (NodeId::from_u64(1), NodeId::from_u64(2));
        let bugs = Bugs::none();
        let round = ask(7, 2, 5, 1);
        assert_eq!(
            t.decide(now, a, &round, 800, None, &bugs),
            LeaseVerdict::Granted
        );
        t.release(now, a, TaskId(7), 2, round.ballot);
        // The claimer's resend, sent before its release, arrives after it.
        let later = now + Duration::from_millis(5);
        assert_eq!(
            t.decide(later, a, &round, 800, None, &bugs),
            LeaseVerdict::Released
        );
        assert!(!t.is_held(later, TaskId(7)));
        // The next claimer is free to take the task at once, and so is the
        // first owner with a new round.
        assert_eq!(
            t.decide(later, b, &ask(7, 2, 6, 2), 800, None, &bugs),
            LeaseVerdict::Granted
        );
        t.release(later, b, TaskId(7), 2, ask(7, 2, 6, 2).ballot);
        assert_eq!(
            t.decide(later, a, &ask(7, 2, 9, 1), 800, None, &bugs),
            LeaseVerdict::Granted
        );
        // Released rounds are forgotten after a while.
        t.expire_all(later + Duration::from_millis(RELEASED_MEMORY_MS + 1_000));
        assert!(t.released.is_empty());
    }

    #[test]
    fn quarantine_refuses_new_grants_but_renews_carried_leases() {
        let now = Instant::from_millis(10);
        let a = NodeId::from_u64(1);
        let carried = LeaseTransfer {
            task: TaskId(3),
            owner: a,
            attempt: 2,
            ballot: Ballot::ZERO,
            remaining_ms: 40,
        };
        let mut t = LeaseTable::from_transfer(now, 100, 0.0, &[carried]);
        let bugs = Bugs::none();
        assert_eq!(
            t.decide(now, a, &ask(3, 2, 1, 1), 100, None, &bugs),
            LeaseVerdict::Granted
        );
        assert_eq!(
            t.decide(now, a, &ask(4, 1, 1, 1), 100, None, &bugs),
            LeaseVerdict::Quarantined
        );
        let after = now + Duration::from_millis(100);
        assert_eq!(
            t.decide(after, a, &ask(4, 1, 1, 1), 100, None, &bugs),
            LeaseVerdict::Granted
        );
    }

    #[test]
    fn acceptor_timer_outlasts_holder_under_drift() {
        assert_eq!(acceptor_lease_ms(1_000, 0.0, &Bugs::none()), 1_000);
        let acc = acceptor_lease_ms(1_500, 0.01, &Bugs::none());
        // Slowest acceptor clock vs fastest holder clock, in real time.
        assert!(acc as f64 / 1.01 >= 1_500.0 / 0.99 - 1e-9, "{acc}");
    }

    #[test]
    fn carried_grants_of_racing_claims_let_only_the_renewing_holder_extend() {
        let now = Instant::from_millis(10);
        let (a, c) = (NodeId::from_u64(1), NodeId::from_u64(3));
        let carried = |owner| LeaseTransfer {
            task: TaskId(5),
            owner,
            attempt: 1,
            ballot: Ballot::ZERO,
            remaining_ms: 50,
        };
        let mut t = LeaseTable::from_transfer(now, 0, 0.0, &[carried(a), carried(c)]);
        let bugs = Bugs::none();
        // A claim retry by either racer is refused while the other's grant lives.
        assert!(matches!(
            t.decide(now, c, &ask(5, 1, 9, 3), 100, None, &bugs),
            LeaseVerdict::Held { .. }
        ));
        assert!(matches!(
            t.decide(now, a, &ask(5, 1, 9, 1), 100, None, &bugs),
            LeaseVerdict::Held { .. }
        ));
        // The holder's renewal goes through.
        let mut renew = ask(5, 1, 9, 1);
        renew.renewal = true;
        assert_eq!(
            t.decide(now, a, &renew, 100, None, &bugs),
            LeaseVerdict::Granted
        );
    }
}
