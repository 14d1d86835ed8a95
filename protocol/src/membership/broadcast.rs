//! The dissemination queue: updates waiting to be piggybacked, each sent a
//! bounded number of times, fewest-sent (then newest) first.
//!
//! Updates are kept encoded: an update goes out up to
//! `retransmit_limit` times, and splicing its bytes into each datagram
//! saves a clone and an encoding per send.

use super::index::{hash_id, IdIndex, IndexKey};
use crate::wire::swim::Update;
use crate::wire::{encode, MAX_DATAGRAM_BYTES};
use crate::NodeId;
use std::cmp::Reverse;
use std::collections::BTreeMap;

/// Most updates waiting at once; past it the most-sent one is dropped
/// (push-pull repairs whatever gossip loses).
pub const MAX_PENDING_UPDATES: usize = 4096;

/// An update that alone would not fit a datagram is never queued.
const MAX_UPDATE_BYTES: usize = MAX_DATAGRAM_BYTES - 64;

/// One queue slot per member and kind: a newer update about a member
/// replaces the older one still waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Key {
    Member(NodeId),
    State(NodeId),
}

impl IndexKey for Key {
    fn index_hash(&self) -> u64 {
        match self {
            Key::Member(id) => hash_id(id, 0),
            Key::State(id) => hash_id(id, 1),
        }
    }
}

fn key_of(update: &Update) -> Key {
    match update {
        Update::State(record) => Key::State(record.id),
        other => Key::Member(other.subject()),
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The update as bincode encodes it inside a message's update list.
    bytes: Vec<u8>,
    transmits: u32,
    seq: u64,
}

/// Order of sending: fewest transmits, then newest. `seq` is unique, so a
/// rank names one entry.
type Rank = (u32, Reverse<u64>);

/// What selection needs of an entry without looking it up: its key and size.
type Slot = (Key, usize);

/// Updates passed over for not fitting before selection gives up; bounds
/// the work per message when the queue is long.
const MAX_SELECT_MISSES: usize = 16;

/// Pending updates and how often each was sent.
#[derive(Debug, Default)]
pub(crate) struct BroadcastQueue {
    entries: IdIndex<Key, Entry>,
    order: BTreeMap<Rank, Slot>,
    next_seq: u64,
    /// Ranks picked by the current selection (kept to reuse its memory).
    taken: Vec<(Rank, Slot)>,
}

impl BroadcastQueue {
    /// Queues `update`, replacing a waiting one about the same member.
    pub(crate) fn push(&mut self, update: Update) {
        let bytes = encode(&update);
        let size = bytes.len();
        if size > MAX_UPDATE_BYTES {
            return;
        }
        let key = key_of(&update);
        if let Some(old) = self.entries.remove(&key) {
            self.order.remove(&(old.transmits, Reverse(old.seq)));
        }
        if self.entries.len() >= MAX_PENDING_UPDATES {
            if let Some((_, (last, _))) = self.order.pop_last() {
                self.entries.remove(&last);
            }
        }
        self.next_seq += 1;
        let entry = Entry {
            bytes,
            transmits: 0,
            seq: self.next_seq,
        };
        self.order.insert((0, Reverse(entry.seq)), (key, size));
        self.entries.insert(key, entry);
    }

    /// Appends the encodings of updates worth at most `budget_bytes` to
    /// `out`, fewest-sent first, and counts one more send for each; an
    /// update sent `limit` times leaves the queue. Returns how many.
    pub(crate) fn select(&mut self, budget_bytes: usize, limit: u32, out: &mut Vec<u8>) -> usize {
        let mut left = budget_bytes;
        let mut misses = 0;
        let mut taken = std::mem::take(&mut self.taken);
        taken.clear();
        for (rank, slot) in &self.order {
            if left < 8 || misses >= MAX_SELECT_MISSES {
                break;
            }
            if slot.1 <= left {
                left -= slot.1;
                taken.push((*rank, *slot));
            } else {
                misses += 1;
            }
        }
        let mut count = 0;
        for &(rank, slot) in &taken {
            self.order.remove(&rank);
            let Some(entry) = self.entries.get_mut(&slot.0) else {
                continue;
            };
            out.extend_from_slice(&entry.bytes);
            count += 1;
            entry.transmits += 1;
            if entry.transmits >= limit {
                self.entries.remove(&slot.0);
            } else {
                self.order
                    .insert((entry.transmits, Reverse(entry.seq)), slot);
            }
        }
        self.taken = taken;
        count
    }

    /// Updates waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `select` hands out, decoded again.
    fn take(q: &mut BroadcastQueue, budget_bytes: usize, limit: u32) -> Vec<Update> {
        let mut bytes = Vec::new();
        let count = q.select(budget_bytes, limit, &mut bytes);
        let mut list = encode(&(count as u64));
        list.extend_from_slice(&bytes);
        crate::wire::decode(&list, usize::MAX).expect("selected updates decode")
    }

    fn left(n: u64, incarnation: u64) -> Update {
        Update::Left {
            id: NodeId::from_u64(n),
            incarnation,
        }
    }

    #[test]
    fn each_update_goes_out_limit_times_fewest_sent_first() {
        let mut q = BroadcastQueue::default();
        q.push(left(1, 0));
        assert_eq!(take(&mut q, 1000, 2), vec![left(1, 0)]);
        q.push(left(2, 0));
        // The never-sent update comes first.
        assert_eq!(take(&mut q, 1000, 2), vec![left(2, 0), left(1, 0)]);
        assert_eq!(take(&mut q, 1000, 2), vec![left(2, 0)]);
        assert!(q.is_empty());
    }

    #[test]
    fn newer_update_about_a_member_replaces_the_waiting_one() {
        let mut q = BroadcastQueue::default();
        q.push(left(1, 0));
        q.push(left(1, 5));
        assert_eq!(q.len(), 1);
        assert_eq!(take(&mut q, 1000, 3), vec![left(1, 5)]);
    }

    #[test]
    fn selection_respects_the_byte_budget() {
        let mut q = BroadcastQueue::default();
        for n in 0..100 {
            q.push(left(n, n));
        }
        let size = encode(&left(1, 1)).len();
        let taken = take(&mut q, size * 10, 5);
        assert!(!taken.is_empty());
        let used: usize = taken.iter().map(|u| encode(u).len()).sum();
        assert!(used <= size * 10);
    }
}
