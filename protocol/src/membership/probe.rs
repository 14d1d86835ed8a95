//! Failure detection: shuffled round-robin probing, indirect probes through
//! `k` members, Lifeguard nacks and the local health multiplier.

use super::table::Slot;
use super::{MemberState, Membership, MAX_RELAYS};
use crate::wire::swim::SwimBody;
use crate::{Instant, NodeId};
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::net::SocketAddr;

/// The round-robin probe list: every live member once per pass, reshuffled
/// after each pass. Members that stopped being live are skipped lazily and
/// dropped at the next reshuffle. It holds member-table slots, not ids: a
/// slot reaches the member in one step, an id through a hash probe, and
/// at a thousand members each step is a cache miss. A slot reused by a
/// new member after the old one was forgotten just means the new member
/// (which is inserted on its own too) may stand twice until the reshuffle.
#[derive(Debug, Default)]
pub(crate) struct ProbeOrder {
    ids: Vec<Slot>,
    next: usize,
}

impl ProbeOrder {
    /// Adds a member that became live at a random place in the not yet
    /// visited part of this pass, so it is probed soon but not first.
    /// A member that was live, went down and came back within one pass may
    /// stand twice until the next reshuffle; that costs one extra probe and
    /// saves a linear search per insertion.
    pub(crate) fn insert(&mut self, id: Slot, rng: &mut ChaCha8Rng) {
        let at = rng.gen_range(self.next..=self.ids.len());
        self.ids.insert(at, id);
    }

    /// The next member of the pass for which `is_live` holds.
    pub(crate) fn next(
        &mut self,
        rng: &mut ChaCha8Rng,
        is_live: impl Fn(&Slot) -> bool,
    ) -> Option<Slot> {
        // At most one full pass plus a reshuffled one.
        for _ in 0..=(2 * self.ids.len()) {
            if self.next >= self.ids.len() {
                self.ids.retain(&is_live);
                self.ids.sort_unstable();
                self.ids.dedup();
                self.ids.shuffle(rng);
                self.next = 0;
                if self.ids.is_empty() {
                    return None;
                }
            }
            let id = self.ids[self.next];
            self.next += 1;
            if is_live(&id) {
                return Some(id);
            }
        }
        None
    }

    /// Up to `k` distinct random members for which `accept` holds. Sampling
    /// is bounded; in a sparse list it may return fewer.
    pub(crate) fn sample(
        &self,
        rng: &mut ChaCha8Rng,
        k: usize,
        accept: impl Fn(&Slot) -> bool,
    ) -> Vec<Slot> {
        let mut out: Vec<Slot> = Vec::with_capacity(k);
        if self.ids.is_empty() || k == 0 {
            return out;
        }
        if self.ids.len() <= 4 * k {
            let mut all: Vec<Slot> = self.ids.iter().filter(|id| accept(id)).copied().collect();
            all.sort();
            all.dedup();
            all.shuffle(rng);
            all.truncate(k);
            return all;
        }
        for _ in 0..(8 * k) {
            let id = self.ids[rng.gen_range(0..self.ids.len())];
            if accept(&id) && !out.contains(&id) {
                out.push(id);
                if out.len() == k {
                    break;
                }
            }
        }
        out
    }
}

/// The probe of the current round.
#[derive(Debug, Clone)]
pub(crate) struct PendingProbe {
    pub(crate) target: NodeId,
    pub(crate) seq: u32,
    /// Members asked to probe indirectly.
    pub(crate) asked: Vec<NodeId>,
    pub(crate) nacks: usize,
}

/// An indirect probe this node runs on behalf of another member.
#[derive(Debug, Clone)]
pub(crate) struct Relay {
    pub(crate) origin_addr: SocketAddr,
    pub(crate) origin_seq: u32,
    pub(crate) target: NodeId,
    pub(crate) deadline: Instant,
}

impl Membership {
    pub(super) fn next_seq(&mut self) -> u32 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    pub(super) fn start_probe_round(&mut self, now: Instant) {
        if self.has_left {
            return;
        }
        let members = &self.members;
        let Some(slot) = self.probe_order.next(&mut self.rng, |slot| {
            matches!(
                members.state_at(*slot),
                Some(MemberState::Alive | MemberState::Suspect)
            )
        }) else {
            return;
        };
        let Some(member) = self.members.at(slot) else {
            return;
        };
        let target = member.identity.id;
        let dst = member.identity.addr;
        // Buddy system: tell a suspect it is suspected so it refutes at once.
        let suspected_at = (member.state == MemberState::Suspect).then_some(member.incarnation);
        let seq = self.next_seq();
        self.send(dst, SwimBody::Ping { seq, suspected_at });
        self.stats.probes_sent += 1;
        self.probe = Some(PendingProbe {
            target,
            seq,
            asked: Vec::new(),
            nacks: 0,
        });
        let timeout_at = now + self.scaled(self.config.probe_timeout);
        self.timers.set(super::Timer::ProbeTimeout, timeout_at);
    }

    /// The round is over; an unanswered probe makes its target suspect.
    pub(super) fn end_probe_round(&mut self, now: Instant) {
        self.timers.stop(super::Timer::ProbeTimeout);
        let Some(probe) = self.probe.take() else {
            return;
        };
        self.stats.probes_failed += 1;
        // Lifeguard: if no helper could tell us the target is silent, the
        // silence may be ours (overload, pause, lossy NIC).
        if probe.nacks == 0 {
            self.bump_local_health();
        }
        let Some(member) = self.members.get(&probe.target) else {
            return;
        };
        if member.state == MemberState::Alive {
            let incarnation = member.incarnation;
            self.stats.suspicions_raised += 1;
            let me = self.identity.id;
            self.on_suspect(now, probe.target, incarnation, me);
        } else if member.state == MemberState::Suspect {
            // Our own failed probe is one more independent confirmation.
            let incarnation = member.incarnation;
            let me = self.identity.id;
            self.on_suspect(now, probe.target, incarnation, me);
        }
    }

    /// The direct probe timed out: ask `k` other members to try.
    pub(super) fn probe_indirectly(&mut self) {
        let Some(probe) = &self.probe else {
            return;
        };
        let (target, seq) = (probe.target, probe.seq);
        let Some(target_addr) = self.members.get(&target).map(|m| m.identity.addr) else {
            return;
        };
        let members = &self.members;
        let helper_slots =
            self.probe_order
                .sample(&mut self.rng, self.config.indirect_probes, |slot| {
                    members.state_at(*slot) == Some(MemberState::Alive)
                        && members.at(*slot).is_some_and(|m| m.identity.id != target)
                });
        let helpers: Vec<(NodeId, SocketAddr)> = helper_slots
            .iter()
            .filter_map(|slot| self.members.at(*slot))
            .map(|m| (m.identity.id, m.identity.addr))
            .collect();
        for &(_, addr) in &helpers {
            self.send(
                addr,
                SwimBody::PingReq {
                    seq,
                    target,
                    target_addr,
                },
            );
            self.stats.indirect_probes_sent += 1;
        }
        if let Some(probe) = &mut self.probe {
            probe.asked = helpers.into_iter().map(|(id, _)| id).collect();
        }
    }

    pub(super) fn on_ping(
        &mut self,
        now: Instant,
        src: SocketAddr,
        seq: u32,
        suspected_at: Option<u64>,
    ) {
        if let Some(incarnation) = suspected_at {
            self.answer_news_about_us(now, incarnation);
        }
        self.send(src, SwimBody::Ack { seq });
    }

    pub(super) fn on_ack(&mut self, sender: NodeId, seq: u32) {
        if let Some(probe) = &self.probe {
            if probe.seq == seq && (probe.target == sender || probe.asked.contains(&sender)) {
                self.probe = None;
                self.timers.stop(super::Timer::ProbeTimeout);
                self.local_health = self.local_health.saturating_sub(1);
                return;
            }
        }
        if self.relays.get(&seq).is_some_and(|r| r.target == sender) {
            if let Some(relay) = self.relays.remove(&seq) {
                self.send(
                    relay.origin_addr,
                    SwimBody::Ack {
                        seq: relay.origin_seq,
                    },
                );
            }
        }
    }

    pub(super) fn on_nack(&mut self, sender: NodeId, seq: u32) {
        if let Some(probe) = &mut self.probe {
            if probe.seq == seq && probe.asked.contains(&sender) {
                probe.nacks += 1;
            }
        }
    }

    pub(super) fn on_ping_req(
        &mut self,
        now: Instant,
        origin_addr: SocketAddr,
        origin_seq: u32,
        target: NodeId,
        target_addr: SocketAddr,
    ) {
        if self.relays.len() >= MAX_RELAYS || target == self.identity.id {
            return;
        }
        let seq = self.next_seq();
        // Answer with a nack well before the origin's round ends.
        let deadline = now + self.config.probe_timeout.mul_f64(0.8);
        self.relays.insert(
            seq,
            Relay {
                origin_addr,
                origin_seq,
                target,
                deadline,
            },
        );
        let suspected_at = self
            .members
            .get(&target)
            .filter(|m| m.state == MemberState::Suspect)
            .map(|m| m.incarnation);
        self.send(target_addr, SwimBody::Ping { seq, suspected_at });
    }

    pub(super) fn expire_relays(&mut self, now: Instant) {
        let due: Vec<u32> = self
            .relays
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in due {
            if let Some(relay) = self.relays.remove(&seq) {
                self.send(
                    relay.origin_addr,
                    SwimBody::Nack {
                        seq: relay.origin_seq,
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_live_member_is_probed_once_per_pass() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut order = ProbeOrder::default();
        for n in 1..=10 {
            order.insert(n, &mut rng);
        }
        let dead: Slot = 4;
        let live = |slot: &Slot| *slot != dead;
        let mut pass: Vec<Slot> = (0..9).filter_map(|_| order.next(&mut rng, live)).collect();
        pass.sort();
        let expected: Vec<Slot> = (1..=10).filter(|slot| live(slot)).collect();
        assert_eq!(pass, expected);
        // A second pass is reshuffled but complete again.
        let mut second: Vec<Slot> = (0..9).filter_map(|_| order.next(&mut rng, live)).collect();
        second.sort();
        assert_eq!(second, expected);
        assert_eq!(order.next(&mut rng, |_| false), None);
    }

    #[test]
    fn sampling_returns_distinct_accepted_members() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let mut order = ProbeOrder::default();
        for n in 1..=100 {
            order.insert(n, &mut rng);
        }
        let even = |slot: &Slot| slot & 1 == 0;
        let picked = order.sample(&mut rng, 3, even);
        assert_eq!(picked.len(), 3);
        assert!(picked.iter().all(even));
        let mut dedup = picked.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 3);
    }
}
