//! The party's memory of which store (data directory) each member runs on.
//!
//! A NodeId comes from a certificate key, which lives outside the data
//! directory. A node whose disk was wiped but whose certificate files were
//! restored would come back under its old NodeId with an empty store, and
//! its acceptors would answer for promises they forgot: two such amnesiacs
//! in one shard group can lose acknowledged tasks. So every member remembers
//! the first store it saw each NodeId with (the host persists the book) and
//! refuses that NodeId with any other store until the old one returns.

use crate::{NodeId, StoreId};
use std::collections::{BTreeMap, BTreeSet};

/// Most NodeIds remembered. Past it, new members are accepted without being
/// remembered (the book never refuses a member for being full).
pub const MAX_REMEMBERED_STORES: usize = 65_536;

/// What the book says of a `(NodeId, StoreId)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreJudgement {
    /// The store this NodeId was seen with before.
    Known,
    /// The first store seen for this NodeId; now remembered.
    Learned,
    /// Another store than the one this NodeId is remembered with.
    Foreign {
        /// The store the NodeId is remembered with.
        known: StoreId,
    },
}

/// NodeId → the store it was first seen with.
#[derive(Debug, Clone, Default)]
pub struct StoreBook {
    known: BTreeMap<NodeId, StoreId>,
    /// NodeIds whose latest direct message came with a foreign store: the
    /// host drops their other traffic (Paxos, tasks) too.
    refused: BTreeSet<NodeId>,
}

impl StoreBook {
    /// Remembers `store` for `id` unless another store is remembered
    /// (a host loading its persisted book).
    pub fn remember(&mut self, id: NodeId, store: StoreId) {
        if self.known.len() < MAX_REMEMBERED_STORES {
            self.known.entry(id).or_insert(store);
        }
    }

    /// Judges a record or message naming `id` with `store`.
    pub fn judge(&mut self, id: NodeId, store: StoreId) -> StoreJudgement {
        match self.known.get(&id) {
            Some(known) if *known == store => StoreJudgement::Known,
            Some(known) => StoreJudgement::Foreign { known: *known },
            None => {
                if self.known.len() < MAX_REMEMBERED_STORES {
                    self.known.insert(id, store);
                    StoreJudgement::Learned
                } else {
                    StoreJudgement::Known
                }
            }
        }
    }

    /// Judges a message sent by `id` itself: a foreign store marks `id` as
    /// refused, its own store clears the mark.
    pub fn judge_sender(&mut self, id: NodeId, store: StoreId) -> StoreJudgement {
        let judgement = self.judge(id, store);
        match judgement {
            StoreJudgement::Foreign { .. } => {
                self.refused.insert(id);
            }
            StoreJudgement::Known | StoreJudgement::Learned => {
                self.refused.remove(&id);
            }
        }
        judgement
    }

    /// Whether `id`'s latest message came with a foreign store.
    pub fn refuses(&self, id: &NodeId) -> bool {
        self.refused.contains(id)
    }

    /// The store remembered for `id`.
    pub fn get(&self, id: &NodeId) -> Option<StoreId> {
        self.known.get(id).copied()
    }

    /// Every remembered pair, in NodeId order (what the host persists).
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, StoreId)> + '_ {
        self.known.iter().map(|(id, store)| (*id, *store))
    }

    /// How many NodeIds are remembered.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_store_wins_until_it_comes_back() {
        let mut book = StoreBook::default();
        let id = NodeId::from_u64(3);
        let (old, wiped) = (StoreId::from_u64(30), StoreId::from_u64(31));
        assert_eq!(book.judge_sender(id, old), StoreJudgement::Learned);
        assert_eq!(book.judge_sender(id, old), StoreJudgement::Known);
        assert_eq!(
            book.judge_sender(id, wiped),
            StoreJudgement::Foreign { known: old }
        );
        assert!(book.refuses(&id));
        // Hearsay never replaces the remembered store either.
        assert_eq!(
            book.judge(id, wiped),
            StoreJudgement::Foreign { known: old }
        );
        // The old data directory restored: accepted again.
        assert_eq!(book.judge_sender(id, old), StoreJudgement::Known);
        assert!(!book.refuses(&id));
    }

    #[test]
    fn a_persisted_book_is_not_overwritten_by_a_later_store() {
        let mut book = StoreBook::default();
        let id = NodeId::from_u64(4);
        book.remember(id, StoreId::from_u64(1));
        book.remember(id, StoreId::from_u64(2));
        assert_eq!(book.get(&id), Some(StoreId::from_u64(1)));
        assert_eq!(book.len(), 1);
    }
}
