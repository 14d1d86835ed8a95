//! Merging what we hear into the member table: incarnations, state
//! precedence, refutation, node-state records.
//!
//! Newer information wins: a higher incarnation, or at equal incarnation a
//! state of higher precedence (alive < suspect < down < left). Only a
//! member itself ever raises its own incarnation.

use super::suspicion::Suspicion;
use super::StoreJudgement;
use super::{ChangeReason, Event, Identity, Member, MemberState, Membership, MAX_MEMBERS};
use crate::gossip::MergeOutcome;
use crate::wire::swim::{MemberRecord, StateRecord, Update, UpdateRef, WireState};
use crate::{Instant, NodeId, StoreId};
use std::net::SocketAddr;

/// Precedence of states at equal incarnation.
fn precedence(state: MemberState) -> u8 {
    match state {
        MemberState::Alive => 0,
        MemberState::Suspect => 1,
        MemberState::Down => 2,
        MemberState::Left => 3,
    }
}

/// Whether an alive record about a member we never heard of is gossiped on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hearsay {
    /// Yes: a piggybacked update, or a member's own record in its push-pull.
    Spread,
    /// No: a third party's record in a push-pull (the full state a joiner
    /// receives). A higher incarnation of a known member is still spread.
    KeepNewMembersQuiet,
}

/// A member alive at one incarnation, as a record or update names it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heard<'a> {
    pub id: NodeId,
    pub name: &'a str,
    pub addr: SocketAddr,
    pub store: StoreId,
    pub incarnation: u64,
}

impl Heard<'_> {
    /// The update that spreads it.
    fn update(&self) -> Update {
        Update::Alive {
            id: self.id,
            name: self.name.to_string(),
            addr: self.addr,
            store: self.store,
            incarnation: self.incarnation,
        }
    }
}

fn is_live(state: MemberState) -> bool {
    matches!(state, MemberState::Alive | MemberState::Suspect)
}

impl Membership {
    /// Applies one piggybacked update.
    pub(super) fn apply_update(&mut self, now: Instant, update: UpdateRef<'_>) {
        match update {
            UpdateRef::Alive {
                id,
                name,
                addr,
                store,
                incarnation,
            } => {
                let heard = Heard {
                    id,
                    name,
                    addr,
                    store,
                    incarnation,
                };
                if self.admits(&heard) {
                    self.on_alive(now, heard, Hearsay::Spread);
                }
            }
            UpdateRef::Suspect {
                id,
                incarnation,
                by,
            } => self.on_suspect(now, id, incarnation, by),
            UpdateRef::Down {
                id,
                incarnation,
                by,
            } => self.on_down(now, id, incarnation, by),
            UpdateRef::Left { id, incarnation } => self.on_left(now, id, incarnation),
            UpdateRef::State(record) => self.on_state(record),
        }
    }

    /// Applies one member of a push-pull from `sender`. Returns the member
    /// to tell directly that we hold it down, when the sender holds it
    /// alive at the incarnation we hold it down at: it is probably running
    /// and only we (cut off for a while) gave it up, so it must refute.
    pub(super) fn apply_record(
        &mut self,
        now: Instant,
        sender: NodeId,
        record: MemberRecord,
    ) -> Option<(SocketAddr, Update)> {
        let MemberRecord {
            id,
            name,
            addr,
            store,
            incarnation,
            state,
        } = record;
        let heard = Heard {
            id,
            name: &name,
            addr,
            store,
            incarnation,
        };
        if !self.admits(&heard) {
            return None;
        }
        match state {
            WireState::Alive => {
                let verdict = self
                    .members
                    .get(&id)
                    .filter(|m| m.state == MemberState::Down && m.incarnation == incarnation)
                    .map(|m| {
                        let down = Update::Down {
                            id,
                            incarnation,
                            by: self.identity.id,
                        };
                        (m.identity.addr, down)
                    });
                // A member first heard of in someone else's full state is
                // not news to spread: the sender (or whoever told it)
                // gossiped it already. Re-gossiping a thousand-member table
                // from every joiner made joins cost O(N^2 log N) updates.
                let hearsay = if id == sender {
                    Hearsay::Spread
                } else {
                    Hearsay::KeepNewMembersQuiet
                };
                self.on_alive(now, heard, hearsay);
                verdict
            }
            // A remote "down" is only a suspicion here (memberlist does the
            // same): a node back from a partition must not make us give up
            // everyone it gave up; a suspicion lets the live ones refute.
            WireState::Suspect | WireState::Down => {
                // A suspect we never heard of is most likely alive: learn
                // it, then hold the suspicion like any other.
                if id != self.identity.id && !self.members.contains_key(&id) {
                    self.on_alive(now, heard, Hearsay::KeepNewMembersQuiet);
                }
                if id == self.identity.id && state == WireState::Down {
                    self.on_down(now, id, incarnation, sender);
                } else {
                    self.on_suspect(now, id, incarnation, sender);
                }
                None
            }
            WireState::Left => {
                self.on_left(now, id, incarnation);
                None
            }
        }
    }

    /// Merges an alive record the caller has judged with `admits`.
    pub(super) fn on_alive(&mut self, now: Instant, heard: Heard<'_>, hearsay: Hearsay) {
        let Heard {
            id,
            name,
            addr,
            incarnation,
            ..
        } = heard;
        if id == self.identity.id {
            // Someone holds a newer or different view of us (an earlier
            // life of this node): out-number it.
            let differs = name != self.identity.name || addr != self.identity.addr;
            if !self.has_left
                && (incarnation > self.incarnation || (incarnation == self.incarnation && differs))
            {
                self.refute(now, incarnation);
            }
            return;
        }
        let Some(hot) = self.members.hot(&id) else {
            self.insert_alive(now, heard, hearsay);
            return;
        };
        if incarnation <= hot.incarnation {
            return;
        }
        let old = hot.state;
        if let Some(member) = self.members.get_mut(&id) {
            if member.identity.name != name {
                member.identity.name = name.to_string();
            }
            member.identity.addr = addr;
        }
        let reason = match old {
            MemberState::Suspect => ChangeReason::Refuted,
            _ => ChangeReason::Joined,
        };
        self.transition(now, id, MemberState::Alive, incarnation, reason);
        self.broadcasts.push(heard.update());
    }

    pub(super) fn on_suspect(&mut self, now: Instant, id: NodeId, incarnation: u64, by: NodeId) {
        if id == self.identity.id {
            self.answer_news_about_us(now, incarnation);
            return;
        }
        let Some(member) = self.members.hot(&id) else {
            return;
        };
        let (state, known) = (member.state, member.incarnation);
        if incarnation < known {
            return;
        }
        if incarnation == known {
            match state {
                MemberState::Down | MemberState::Left => return,
                MemberState::Suspect => {
                    let confirmed = self
                        .suspicions
                        .get_mut(&id)
                        .is_some_and(|s| s.incarnation == incarnation && s.confirm(by));
                    if confirmed {
                        // Spread independent confirmations: they shorten
                        // everyone's timer.
                        self.broadcasts.push(Update::Suspect {
                            id,
                            incarnation,
                            by,
                        });
                    }
                    return;
                }
                MemberState::Alive => {}
            }
        }
        let n = self.cluster_size();
        let suspicion = Suspicion::new(
            incarnation,
            by,
            now,
            self.config.suspicion_timeout_min(n),
            self.config.suspicion_timeout_max(n),
            self.config.suspicion_confirmations,
        );
        let reason = if by == self.identity.id {
            ChangeReason::ProbeFailed
        } else {
            ChangeReason::SuspectedBy(by)
        };
        self.transition(now, id, MemberState::Suspect, incarnation, reason);
        self.suspicions.insert(id, suspicion);
        self.broadcasts.push(Update::Suspect {
            id,
            incarnation,
            by,
        });
    }

    pub(super) fn on_down(&mut self, now: Instant, id: NodeId, incarnation: u64, by: NodeId) {
        if id == self.identity.id {
            if self.answer_news_about_us(now, incarnation) {
                // Given up by others: we were cut off, and our own view is
                // stale too. Pull the sender's view (see `inbound`).
                self.resync_wanted = true;
            }
            return;
        }
        let Some(member) = self.members.hot(&id) else {
            return;
        };
        if incarnation < member.incarnation
            || (incarnation == member.incarnation
                && precedence(member.state) >= precedence(MemberState::Down))
        {
            return;
        }
        let reason = if by == self.identity.id {
            ChangeReason::SuspicionTimeout
        } else {
            ChangeReason::DeclaredDownBy(by)
        };
        self.transition(now, id, MemberState::Down, incarnation, reason);
        self.broadcasts.push(Update::Down {
            id,
            incarnation,
            by,
        });
    }

    pub(super) fn on_left(&mut self, now: Instant, id: NodeId, incarnation: u64) {
        if id == self.identity.id {
            // A leave of an earlier life of ours: we are back.
            self.answer_news_about_us(now, incarnation);
            return;
        }
        let Some(member) = self.members.hot(&id) else {
            return;
        };
        if incarnation < member.incarnation
            || (incarnation == member.incarnation && member.state == MemberState::Left)
        {
            return;
        }
        self.transition(now, id, MemberState::Left, incarnation, ChangeReason::Left);
        self.broadcasts.push(Update::Left { id, incarnation });
    }

    pub(super) fn on_state(&mut self, record: StateRecord) {
        let StateRecord { id, state } = record;
        if id == self.identity.id {
            // An earlier life of ours published newer versions: skip past them.
            if let Some(local) = &self.local_state {
                if state.version > local.version {
                    let mut newer = local.clone();
                    newer.version = state.version.saturating_add(1);
                    self.local_state = Some(newer.clone());
                    self.broadcasts
                        .push(Update::State(StateRecord { id, state: newer }));
                }
            }
            return;
        }
        let Some(member) = self.members.get_mut(&id) else {
            return;
        };
        if self.states.merge(id, state.clone()) == MergeOutcome::Replaced {
            member.node_state = Some(state.clone());
            self.push_event(Event::NodeStateUpdated { id });
            self.broadcasts
                .push(Update::State(StateRecord { id, state }));
        }
    }

    /// Someone says we are suspect, down or left at `incarnation`. At or
    /// above our own incarnation we refute (returns `true`); below it the
    /// sender holds stale news of us that nobody gossips any more, so we
    /// tell it our current incarnation directly (see `inbound`).
    pub(super) fn answer_news_about_us(&mut self, now: Instant, incarnation: u64) -> bool {
        if self.has_left {
            return false;
        }
        if incarnation >= self.incarnation {
            self.refute(now, incarnation);
            return true;
        }
        self.sender_has_stale_news = true;
        false
    }

    /// We are suspected, declared down or left at `incarnation`, or an
    /// earlier life of ours is known at it: out-number it and say so.
    pub(super) fn refute(&mut self, _now: Instant, incarnation: u64) {
        let before = self.incarnation;
        self.incarnation = self.incarnation.max(incarnation).saturating_add(1);
        debug_assert!(self.incarnation > before, "incarnation must only grow");
        self.stats.suspicions_refuted += 1;
        self.bump_local_health();
        self.push_event(Event::SelfRefuted {
            incarnation: self.incarnation,
        });
        self.broadcast_self_alive();
    }

    pub(super) fn broadcast_self_alive(&mut self) {
        let me = self.self_alive_update();
        self.broadcasts.push(me);
    }

    pub(super) fn self_alive_update(&self) -> Update {
        Update::Alive {
            id: self.identity.id,
            name: self.identity.name.clone(),
            addr: self.identity.addr,
            store: self.identity.store,
            incarnation: self.incarnation,
        }
    }

    /// Learns a member we never heard of, alive at `incarnation`.
    fn insert_alive(&mut self, now: Instant, heard: Heard<'_>, hearsay: Hearsay) {
        let (id, incarnation) = (heard.id, heard.incarnation);
        if self.members.len() >= MAX_MEMBERS {
            return;
        }
        let member = Member {
            identity: Identity {
                id,
                name: heard.name.to_string(),
                addr: heard.addr,
                store: heard.store,
            },
            // Not live yet: `transition` makes it alive and counts it once.
            state: MemberState::Down,
            incarnation,
            state_since: now,
            last_heard: None,
            node_state: self.states.get(&id).cloned(),
        };
        self.members.insert(member);
        self.graveyard.insert((now, id));
        self.transition(
            now,
            id,
            MemberState::Alive,
            incarnation,
            ChangeReason::Joined,
        );
        if hearsay == Hearsay::Spread {
            self.broadcasts.push(heard.update());
        }
    }

    /// Whether a record or update naming a member may be applied: one of a
    /// member under another store than the party knows it by is dropped
    /// (the member's own messages are judged in `inbound`). News of
    /// ourselves is judged by the incarnation rules alone.
    fn admits(&mut self, heard: &Heard<'_>) -> bool {
        let (id, store) = (heard.id, heard.store);
        if id == self.identity.id {
            return true;
        }
        match self.stores.judge(id, store) {
            StoreJudgement::Known => true,
            StoreJudgement::Learned => {
                self.push_event(Event::StoreLearned { id, store });
                true
            }
            StoreJudgement::Foreign { .. } => {
                self.stats.foreign_stores_refused += 1;
                false
            }
        }
    }

    /// Moves a known member to `state` at `incarnation`, keeping the live
    /// count, the probe list, the graveyard and the suspicions in step.
    fn transition(
        &mut self,
        now: Instant,
        id: NodeId,
        state: MemberState,
        incarnation: u64,
        reason: ChangeReason,
    ) {
        debug_assert!(
            self.members
                .hot(&id)
                .is_none_or(|m| incarnation >= m.incarnation),
            "incarnations never decrease"
        );
        let Some((old, old_since)) = self.members.set_state(&id, state, incarnation, now) else {
            return;
        };
        let changed = old != state;
        if changed {
            if !is_live(old) {
                self.graveyard.remove(&(old_since, id));
            }
            if !is_live(state) {
                self.graveyard.insert((now, id));
            }
        }
        // The name is cloned only for the event, not on every update.
        let name = (changed || reason == ChangeReason::Refuted)
            .then(|| self.members.get(&id).map(|m| m.identity.name.clone()))
            .flatten();
        if state != MemberState::Suspect {
            self.suspicions.remove(&id);
        }
        match (is_live(old), is_live(state)) {
            (false, true) => {
                self.live_count += 1;
                if let Some(slot) = self.members.slot_of(&id) {
                    self.probe_order.insert(slot, &mut self.rng);
                }
            }
            (true, false) => self.live_count = self.live_count.saturating_sub(1),
            _ => {}
        }
        if let Some(name) = name {
            self.push_event(Event::MemberChanged {
                id,
                name,
                state,
                incarnation,
                reason,
            });
        }
    }
}
