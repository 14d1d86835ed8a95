//! The member table: members in a dense vector, found by id through a hash
//! index.
//!
//! Every received update and every probe-list step looks a member up; at
//! 1000 members a `BTreeMap` walk of 16-byte keys was the largest single
//! cost of the simulator. Nothing iterates the hash index, so its order
//! cannot leak into the machine's behaviour; iteration goes over the
//! vector, whose order depends only on the inputs (or sorted by id where
//! an order is promised).

use super::Member;
use crate::NodeId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A fixed, seedless hash for ids: they are SHA-256 prefixes in production
/// and small numbers in the simulator, so all bytes are mixed. Not
/// DoS-resistant, and it need not be: the table holds at most
/// [`super::MAX_MEMBERS`] members of our own party, admitted by certificate.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

impl IdHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(MIX);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in chunks.by_ref() {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // Fold the high bits down: hashbrown takes its bucket from the low
        // bits and its tag from the top seven.
        self.0 ^ (self.0 >> 29)
    }
}

/// A hash map keyed by ids (or keys made of them) with [`IdHasher`].
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Every member one node knows, by id.
#[derive(Debug, Default)]
pub(crate) struct MemberTable {
    members: Vec<Member>,
    index: IdMap<NodeId, u32>,
}

impl MemberTable {
    pub(crate) fn get(&self, id: &NodeId) -> Option<&Member> {
        let at = *self.index.get(id)?;
        self.members.get(at as usize)
    }

    pub(crate) fn get_mut(&mut self, id: &NodeId) -> Option<&mut Member> {
        let at = *self.index.get(id)?;
        self.members.get_mut(at as usize)
    }

    pub(crate) fn contains_key(&self, id: &NodeId) -> bool {
        self.index.contains_key(id)
    }

    /// Adds `member`, replacing one with the same id.
    pub(crate) fn insert(&mut self, member: Member) {
        let id = member.identity.id;
        if let Some(&at) = self.index.get(&id) {
            self.members[at as usize] = member;
            return;
        }
        let at = u32::try_from(self.members.len()).expect("MAX_MEMBERS fits in u32");
        self.members.push(member);
        self.index.insert(id, at);
    }

    pub(crate) fn remove(&mut self, id: &NodeId) -> Option<Member> {
        let at = self.index.remove(id)? as usize;
        let member = self.members.swap_remove(at);
        if let Some(moved) = self.members.get(at) {
            self.index.insert(moved.identity.id, at as u32);
        }
        Some(member)
    }

    pub(crate) fn len(&self) -> usize {
        self.members.len()
    }

    /// Every member, in table order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Member> {
        self.members.iter()
    }

    /// Every member, in id order.
    pub(crate) fn sorted(&self) -> Vec<&Member> {
        let mut all: Vec<&Member> = self.members.iter().collect();
        all.sort_unstable_by_key(|m| m.identity.id);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::{Identity, MemberState};
    use crate::Instant;

    fn member(n: u64) -> Member {
        Member {
            identity: Identity {
                id: NodeId::from_u64(n),
                name: format!("n{n}"),
                addr: "127.0.0.1:7000".parse().expect("address"),
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
    }
}
