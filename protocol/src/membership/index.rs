//! Id-keyed indexes (the member table's, the broadcast queue's): an
//! open-addressing hash table with linear probing that keeps each key
//! beside its value in one bucket.
//!
//! Every received datagram looks its sender up, and most of its updates
//! look their subject up, each time in a node whose memory is cold (the
//! simulator runs a thousand of them). A `HashMap` reads a control group and
//! then the bucket it points to: two dependent cache misses. Here the hash
//! names the bucket itself, so a look-up usually costs one. Nothing
//! iterates an index, so its layout cannot leak into behaviour.

use crate::NodeId;

/// Fewest buckets once anything is stored.
const MIN_BUCKETS: usize = 16;

/// Finalizer of MurmurHash3: mixes every input bit into every output bit.
/// Ids are SHA-256 prefixes in production but small numbers in the
/// simulator, whose bits sit in a few bytes only.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The hash of an id, mixed with `salt` (keys of different kinds about
/// the same id get different salts).
pub(crate) fn hash_id(id: &NodeId, salt: u64) -> u64 {
    let (high, low) = id.0.split_at(8);
    let word = |bytes: &[u8]| {
        let mut w = [0u8; 8];
        w.copy_from_slice(bytes);
        u64::from_le_bytes(w)
    };
    fmix64(word(high).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ word(low) ^ salt)
}

/// A key of an [`IdIndex`].
pub(crate) trait IndexKey: Copy + Eq {
    /// A well-mixed hash: the index takes its low bits as the bucket.
    fn index_hash(&self) -> u64;
}

impl IndexKey for NodeId {
    fn index_hash(&self) -> u64 {
        hash_id(self, 0)
    }
}

/// Keys to values. The load stays at most one half, so probe runs are
/// short and every search ends at an empty bucket.
#[derive(Debug)]
pub(crate) struct IdIndex<K, V> {
    buckets: Vec<Option<(K, V)>>,
    len: usize,
}

impl<K, V> Default for IdIndex<K, V> {
    fn default() -> Self {
        IdIndex {
            buckets: Vec::new(),
            len: 0,
        }
    }
}

impl<K: IndexKey, V> IdIndex<K, V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    fn home(&self, key: &K) -> usize {
        key.index_hash() as usize & self.mask()
    }

    /// The bucket holding `id`, if any.
    fn find(&self, id: &K) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let mut i = self.home(id);
        loop {
            match &self.buckets[i] {
                None => return None,
                Some((key, _)) if key == id => return Some(i),
                Some(_) => i = (i + 1) & self.mask(),
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        let i = self.find(key)?;
        self.buckets[i].as_ref().map(|(_, value)| value)
    }

    pub(crate) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let i = self.find(key)?;
        self.buckets[i].as_mut().map(|(_, value)| value)
    }

    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.find(key).is_some()
    }

    /// Adds `key`, or replaces its value if it is already there.
    pub(crate) fn insert(&mut self, key: K, value: V) {
        if let Some(old) = self.get_mut(&key) {
            *old = value;
            return;
        }
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        self.place(key, value);
        self.len += 1;
    }

    /// Puts an absent key in the first empty bucket of its probe run.
    fn place(&mut self, key: K, value: V) {
        let mut i = self.home(&key);
        while self.buckets[i].is_some() {
            i = (i + 1) & self.mask();
        }
        self.buckets[i] = Some((key, value));
    }

    fn grow(&mut self) {
        let buckets = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let empty = std::iter::repeat_with(|| None).take(buckets).collect();
        let old = std::mem::replace(&mut self.buckets, empty);
        for (key, value) in old.into_iter().flatten() {
            self.place(key, value);
        }
    }

    /// Removes `key`, then shifts later keys of the probe run back into
    /// the hole, so that no search stops short of a key (no tombstones).
    pub(crate) fn remove(&mut self, id: &K) -> Option<V> {
        let mut hole = self.find(id)?;
        let (_, removed) = self.buckets[hole].take()?;
        self.len -= 1;
        let mask = self.mask();
        let mut next = (hole + 1) & mask;
        while let Some((key, _)) = &self.buckets[next] {
            let home = self.home(key);
            // The entry may move back to the hole unless its home lies
            // after the hole in the run (it would become unreachable).
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.buckets[hole] = self.buckets[next].take();
                hole = next;
            }
            next = (next + 1) & mask;
        }
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::table::Hot;
    use crate::membership::MemberState;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use std::collections::HashMap;

    fn hot(slot: u32) -> Hot {
        Hot {
            slot,
            state: MemberState::Alive,
            incarnation: u64::from(slot),
            last_heard: None,
        }
    }

    #[test]
    fn a_bucket_is_no_larger_than_an_id_and_its_entry() {
        assert_eq!(
            std::mem::size_of::<Option<(NodeId, Hot)>>(),
            std::mem::size_of::<(NodeId, Hot)>()
        );
    }

    #[test]
    fn random_inserts_and_removals_agree_with_a_hash_map() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut index: IdIndex<NodeId, Hot> = IdIndex::default();
        let mut model: HashMap<NodeId, u32> = HashMap::new();
        for step in 0..20_000u32 {
            // Small numeric ids collide in few bytes, like the simulator's;
            // random ones like production's.
            let id = if rng.gen_bool(0.8) {
                NodeId::from_u64(rng.gen_range(0..600))
            } else {
                NodeId(rng.gen())
            };
            if rng.gen_bool(0.6) {
                index.insert(id, hot(step));
                model.insert(id, step);
            } else {
                assert_eq!(
                    index.remove(&id).map(|h| h.slot),
                    model.remove(&id),
                    "step {step}"
                );
            }
            assert_eq!(index.len(), model.len());
        }
        for (id, slot) in &model {
            assert_eq!(index.get(id).map(|h| h.slot), Some(*slot));
        }
        for n in 600..700 {
            assert!(!index.contains_key(&NodeId::from_u64(n)));
        }
    }
}
