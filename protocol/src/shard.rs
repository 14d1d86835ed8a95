//! Shards and their acceptor groups (docs/protocol.md §5).
//!
//! The task key space is split into a fixed number of shards. Each shard has
//! a configuration: an epoch and the acceptor group that serves it. Groups
//! are placed by rendezvous hashing over the live members, with a per-node
//! cap so that no node carries far more groups than the others, and with the
//! live members of the current group kept so that a membership change moves
//! as few acceptors as possible.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Default number of shards of a party (fixed at party creation).
pub const DEFAULT_SHARDS: u32 = 64;
/// The largest number of shards a party may have: bounds every per-shard loop.
pub const MAX_SHARDS: u32 = 4_096;
/// The largest acceptor group.
pub const MAX_GROUP_SIZE: usize = 7;

/// One shard of the task key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u32);

/// A shard's configuration: which acceptors serve it in which epoch. The
/// pair (shard, epoch) names one member list forever, because each epoch's
/// successor is chosen by consensus in the previous epoch's group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ShardConfig {
    /// The shard.
    pub shard: ShardId,
    /// Grows by one at every reconfiguration.
    pub epoch: u64,
    /// The acceptor group, in rendezvous order.
    pub members: Vec<NodeId>,
    /// The group of epoch `epoch - 1` (empty for the first epoch), so that
    /// anyone who knows this configuration can finish the move to it.
    pub previous: Vec<NodeId>,
}

impl ShardConfig {
    /// The configuration this one followed, if any.
    pub fn predecessor(&self) -> Option<ShardConfig> {
        (self.epoch > 1 && !self.previous.is_empty()).then(|| ShardConfig {
            shard: self.shard,
            epoch: self.epoch - 1,
            members: self.previous.clone(),
            previous: Vec::new(),
        })
    }

    /// How many acceptors make a majority of this group.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Whether `node` is one of this group's acceptors.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.members.contains(node)
    }
}

/// 64-bit FNV-1a followed by the splitmix64 finaliser: cheap, stable across
/// platforms and releases (placement must agree between nodes of different
/// builds), and well mixed enough for rendezvous scores.
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in *part {
            h ^= u64::from(*byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // A separator so that ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The shard a task key belongs to.
pub fn shard_of(task_key: u64, shards: u32) -> ShardId {
    let shards = shards.clamp(1, MAX_SHARDS);
    ShardId((stable_hash(&[&task_key.to_le_bytes()]) % u64::from(shards)) as u32)
}

/// Group size for a party of `live` nodes: 3, or 5 from 7 nodes on
/// (docs/protocol.md §5), never more than there are nodes.
pub fn group_size(live: usize, small: usize, large: usize) -> usize {
    let want = if live >= 7 { large } else { small };
    want.min(live).clamp(1, MAX_GROUP_SIZE)
}

fn score(shard: ShardId, node: &NodeId) -> u64 {
    stable_hash(&[&shard.0.to_le_bytes(), &node.0])
}

/// Rendezvous order of `candidates` for `shard`: highest score first.
pub fn rendezvous(shard: ShardId, candidates: &BTreeSet<NodeId>) -> Vec<NodeId> {
    let mut ranked: Vec<(u64, NodeId)> = candidates.iter().map(|n| (score(shard, n), *n)).collect();
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// Computes a balanced placement of every shard over `live` nodes.
///
/// `current` holds each shard's present group: its live members are kept
/// (so a change moves few acceptors) unless that would put a node above the
/// cap, and the group is filled up in rendezvous order among nodes under
/// the cap `ceil(shards * size / live) + 1`.
pub fn place(
    shards: u32,
    size: usize,
    live: &BTreeSet<NodeId>,
    current: &BTreeMap<ShardId, Vec<NodeId>>,
) -> BTreeMap<ShardId, Vec<NodeId>> {
    let shards = shards.clamp(1, MAX_SHARDS);
    let mut out = BTreeMap::new();
    if live.is_empty() {
        return out;
    }
    let size = size.min(live.len()).max(1);
    let cap = (shards as usize * size).div_ceil(live.len()) + 1;
    let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
    // First pass: keep live current members, up to the cap.
    for s in 0..shards {
        let shard = ShardId(s);
        let mut group = Vec::with_capacity(size);
        if let Some(members) = current.get(&shard) {
            for m in members.iter().filter(|m| live.contains(m)).take(size) {
                let l = load.entry(*m).or_default();
                if *l < cap {
                    *l += 1;
                    group.push(*m);
                }
            }
        }
        out.insert(shard, group);
    }
    // Second pass: fill in rendezvous order among nodes under the cap.
    for (shard, group) in out.iter_mut() {
        for node in rendezvous(*shard, live) {
            if group.len() >= size {
                break;
            }
            if group.contains(&node) {
                continue;
            }
            let l = load.entry(node).or_default();
            if *l < cap {
                *l += 1;
                group.push(node);
            }
        }
        // The cap can starve the last shards only if it is too tight;
        // fill without it rather than leave a group short.
        for node in rendezvous(*shard, live) {
            if group.len() >= size {
                break;
            }
            if !group.contains(&node) {
                *load.entry(node).or_default() += 1;
                group.push(node);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u64) -> BTreeSet<NodeId> {
        (1..=n).map(NodeId::from_u64).collect()
    }

    #[test]
    fn placement_is_balanced_and_complete() {
        let live = nodes(50);
        let placed = place(64, 3, &live, &BTreeMap::new());
        assert_eq!(placed.len(), 64);
        let mut load: BTreeMap<NodeId, usize> = BTreeMap::new();
        for group in placed.values() {
            assert_eq!(group.len(), 3);
            let distinct: BTreeSet<_> = group.iter().collect();
            assert_eq!(distinct.len(), 3, "a node twice in one group");
            for m in group {
                *load.entry(*m).or_default() += 1;
            }
        }
        let max = load.values().max().copied().unwrap_or(0);
        assert!(max <= (64 * 3usize).div_ceil(50) + 1, "max load {max}");
    }

    #[test]
    fn placement_keeps_live_members_of_current_groups() {
        let live = nodes(10);
        let first = place(16, 3, &live, &BTreeMap::new());
        let mut fewer = live.clone();
        let gone = NodeId::from_u64(3);
        fewer.remove(&gone);
        let second = place(16, 3, &fewer, &first);
        let mut moved = 0;
        for (shard, group) in &second {
            assert!(!group.contains(&gone));
            let before = &first[shard];
            moved += group.iter().filter(|m| !before.contains(m)).count();
        }
        let lost: usize = first.values().filter(|g| g.contains(&gone)).count();
        assert!(moved <= lost + 4, "moved {moved} acceptors for {lost} lost");
    }

    #[test]
    fn shard_of_spreads_keys() {
        let mut seen = BTreeSet::new();
        for key in 0..1000u64 {
            seen.insert(shard_of(key, 16));
        }
        assert_eq!(seen.len(), 16);
        assert_eq!(group_size(3, 3, 5), 3);
        assert_eq!(group_size(7, 3, 5), 5);
        assert_eq!(group_size(1, 3, 5), 1);
    }
}
