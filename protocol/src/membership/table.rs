//! The member table: members in a vector of stable slots, found by id
//! through a hash index (see `index`).
//!
//! Every received update and every probe-list step looks a member up; at
//! 1000 members a `BTreeMap` walk of 16-byte keys was the largest single
//! cost of the simulator. Nothing iterates the hash index, so its order
//! cannot leak into the machine's behaviour; iteration goes over the
//! vector, whose order depends only on the inputs (or sorted by id where
//! an order is promised).

use super::index::IdIndex;
use super::{Member, MemberState};
use crate::{Instant, NodeId};

/// Where a member lives in the table. A slot is stable while its member
/// is known; after the member is forgotten the slot may be reused.
pub(crate) type Slot = u32;

/// What most messages need of a member, kept beside its id in the hash
/// index so that one look-up reads it: the merge of an update, the check
/// of a sender and the stamp of `last_heard` touch no other memory.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hot {
    pub(crate) slot: Slot,
    pub(crate) state: MemberState,
    pub(crate) incarnation: u64,
    pub(crate) last_heard: Option<Instant>,
}

/// Every member one node knows, by id and by slot.
///
/// A member's state and incarnation live in both its [`Member`] and its
/// [`Hot`] entry and change only through [`MemberTable::set_state`];
/// `last_heard` lives only in the hot entry ([`MemberTable::view`] fills it
/// in).
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    slots: Vec<Option<Member>>,
    /// Each slot's member's state, a byte each: the probe list's liveness
    /// checks (a whole pass at every reshuffle) and random sampling read
    /// this dense array instead of a cold 232-byte member per slot.
    states: Vec<Option<MemberState>>,
    /// Slots emptied by removals, reused last-freed first.
    free: Vec<Slot>,
    index: IdIndex<NodeId, Hot>,
}

impl MemberTable {
    pub(crate) fn get(&self, id: &NodeId) -> Option<&Member> {
        self.at(self.index.get(id)?.slot)
    }

    /// The member for changes of anything but its state and incarnation.
    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Member> {
        let slot = self.index.get(id)?.slot;
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    pub(crate) fn hot(&self, id: &NodeId) -> Option<&Hot> {
        self.index.get(id)
    }

    /// Notes that the member was heard from directly at `now`.
    pub(crate) fn touch(&mut self, id: &NodeId, now: Instant) {
        if let Some(hot) = self.index.get_mut(id) {
            hot.last_heard = Some(now);
        }
    }

    /// Moves a member to `state` at `incarnation`; `since` is set when the
    /// state changes. Returns the state and the `state_since` it had.
    pub(crate) fn set_state(
        &mut self,
        id: &NodeId,
        state: MemberState,
        incarnation: u64,
        now: Instant,
    ) -> Option<(MemberState, Instant)> {
        let hot = self.index.get_mut(id)?;
        hot.state = state;
        hot.incarnation = incarnation;
        let member = self.slots.get_mut(hot.slot as usize)?.as_mut()?;
        self.states[hot.slot as usize] = Some(state);
        let old = (member.state, member.state_since);
        member.incarnation = incarnation;
        if member.state != state {
            member.state = state;
            member.state_since = now;
        }
        Some(old)
    }

    /// The slot of a known member.
    pub(crate) fn slot_of(&self, id: &NodeId) -> Option<Slot> {
        self.index.get(id).map(|hot| hot.slot)
    }

    /// The member in `slot`, if any: one memory access where a look-up by
    /// id costs a hash probe too (the probe list keeps slots).
    pub(crate) fn at(&self, slot: Slot) -> Option<&Member> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// The state of the member in `slot`, if any, without touching it.
    pub(crate) fn state_at(&self, slot: Slot) -> Option<MemberState> {
        *self.states.get(slot as usize)?
    }

    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.index.contains_key(id)
    }

    /// Adds `member`, replacing one with the same id; returns its slot.
    pub(crate) fn insert(&mut self, member: Member) -> Slot {
        let id = member.identity.id;
        let hot = Hot {
            slot: 0,
            state: member.state,
            incarnation: member.incarnation,
            last_heard: member.last_heard,
        };
        let state = Some(member.state);
        if let Some(old) = self.index.get_mut(&id) {
            let slot = old.slot;
            *old = Hot { slot, ..hot };
            self.slots[slot as usize] = Some(member);
            self.states[slot as usize] = state;
            return slot;
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(member);
                self.states[slot as usize] = state;
                slot
            }
            None => {
                self.slots.push(Some(member));
                self.states.push(state);
                Slot::try_from(self.slots.len() - 1).expect("MAX_MEMBERS fits in a slot")
            }
        };
        self.index.insert(id, Hot { slot, ..hot });
        slot
    }

    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<Member> {
        let hot = self.index.remove(id)?;
        let mut member = self.slots.get_mut(hot.slot as usize)?.take()?;
        self.states[hot.slot as usize] = None;
        self.free.push(hot.slot);
        member.last_heard = hot.last_heard;
        Some(member)
    }

    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Every member, in slot order (`last_heard` not filled in).
    pub(crate) fn values(&self) -> impl Iterator<Item = &Member> {
        self.slots.iter().flatten()
    }

    /// A copy of `member` with `last_heard` filled in.
    pub(crate) fn view(&self, member: &Member) -> Member {
        let mut copy = member.clone();
        copy.last_heard = self
            .index
            .get(&member.identity.id)
            .and_then(|hot| hot.last_heard);
        copy
    }

    /// Every member, in id order (`last_heard` not filled in).
    pub(crate) fn sorted(&self) -> Vec<&Member> {
        let mut all: Vec<&Member> = self.values().collect();
        all.sort_unstable_by_key(|m| m.identity.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::Identity;

    fn member(n: u64) -> Member {
        Member {
            identity: Identity {
                id: NodeId::from_u64(n),
                name: format!("n{n}"),
                addr: "127.0.0.1:7000".parse().expect("address"),
                store: crate::StoreId::from_u64(n),
            },
            state: MemberState::Alive,
            incarnation: n,
            state_since: Instant::ZERO,
            last_heard: None,
            node_state: None,
        }
    }

    #[test]
    fn removal_keeps_every_other_member_findable() {
        let mut table = MemberTable::default();
        for n in 0..50 {
            table.insert(member(n));
        }
        for n in (0..50).step_by(3) {
            assert_eq!(
                table.remove(&NodeId::from_u64(n)).map(|m| m.incarnation),
                Some(n)
            );
        }
        assert_eq!(table.remove(&NodeId::from_u64(0)), None);
        for n in 0..50 {
            let found = table.get(&NodeId::from_u64(n)).map(|m| m.incarnation);
            assert_eq!(found, (n % 3 != 0).then_some(n), "member {n}");
        }
        assert_eq!(table.len(), 50 - 17);
        // A freed slot is reused; the others keep theirs.
        let kept = table.slot_of(&NodeId::from_u64(1));
        let slot = table.insert(member(100));
        assert_eq!(table.at(slot).map(|m| m.incarnation), Some(100));
        assert_eq!(table.slot_of(&NodeId::from_u64(1)), kept);
        assert_eq!(table.state_at(slot), Some(MemberState::Alive));
        assert!(table.remove(&NodeId::from_u64(100)).is_some());
        assert_eq!(table.state_at(slot), None);
        let sorted: Vec<u64> = table.sorted().iter().map(|m| m.incarnation).collect();
        let mut expected: Vec<u64> = (0..50).filter(|n| n % 3 != 0).collect();
        expected.sort_unstable();
        assert_eq!(sorted, expected);
    }

    #[test]
    fn insert_replaces_a_member_with_the_same_id() {
        let mut table = MemberTable::default();
        table.insert(member(7));
        let mut newer = member(7);
        newer.incarnation = 9;
        table.insert(newer);
        assert_eq!(table.len(), 1);
        assert_eq!(
            table.get(&NodeId::from_u64(7)).map(|m| m.incarnation),
            Some(9)
        );
        assert_eq!(
            table.hot(&NodeId::from_u64(7)).map(|h| h.incarnation),
            Some(9)
        );
    }

    #[test]
    fn state_changes_reach_both_copies_and_last_heard_the_view() {
        let mut table = MemberTable::default();
        let id = NodeId::from_u64(3);
        table.insert(member(3));
        let at = Instant::from_millis(50);
        assert_eq!(
            table.set_state(&id, MemberState::Suspect, 4, at),
            Some((MemberState::Alive, Instant::ZERO))
        );
        let hot = *table.hot(&id).expect("known");
        assert_eq!((hot.state, hot.incarnation), (MemberState::Suspect, 4));
        let cold = table.get(&id).expect("known");
        assert_eq!(
            (cold.state, cold.incarnation, cold.state_since),
            (MemberState::Suspect, 4, at)
        );
        let slot = table.slot_of(&id).expect("known");
        assert_eq!(table.state_at(slot), Some(MemberState::Suspect));
        table.touch(&id, Instant::from_millis(70));
        let view = table.view(table.get(&id).expect("known"));
        assert_eq!(view.last_heard, Some(Instant::from_millis(70)));
    }
}
