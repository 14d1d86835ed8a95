//! Who should run a task (docs/protocol.md §7): the submitter offers it to the best
//! of `d` random candidates by gossiped free slots (power of d choices, as
//! in Sparrow); nodes with free slots also pull pending work from the shard
//! groups (late binding). Nothing here is trusted for safety: offers and
//! pulls race only through the lease.

use crate::gossip::{Health, NodeState};
use crate::tasks::TaskSpec;
use crate::NodeId;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most candidates sampled for one offer.
pub const MAX_CHOICES: usize = 8;

/// Whether `state` can take `spec` now.
pub fn fits(spec: &TaskSpec, state: &NodeState) -> bool {
    state.slots_free >= spec.slots && state.free.covers(&spec.resources) && admits(spec, state)
}

/// Whether `state` takes work like `spec` at all, room aside: its labels,
/// its health, not draining.
fn admits(spec: &TaskSpec, state: &NodeState) -> bool {
    spec.fits_labels(&state.labels)
        && !matches!(state.health, Health::Critical { .. })
        && !state.draining
}

/// How an offer picks among the candidates that have room for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    /// The candidate left with the least headroom (bin packing, as
    /// Kubernetes' `MostAllocated`): small tasks fill nodes that are
    /// already busy and leave room whole for large ones.
    #[default]
    Pack,
    /// The candidate left with the most headroom (`LeastAllocated`): load
    /// spreads evenly and a node's loss hits fewer tasks, but a large task
    /// waits longer for a node with room.
    Spread,
}

/// Picks one of `d` random eligible candidates by `placement` of the
/// headroom each would keep after taking `spec` (see
/// [`headroom_permille`]), then fewest running attempts, then lowest id.
/// `None` when no live node fits (see [`nearest`]).
pub fn choose<R: Rng>(
    spec: &TaskSpec,
    view: &BTreeMap<NodeId, NodeState>,
    d: usize,
    placement: Placement,
    rng: &mut R,
) -> Option<NodeId> {
    let eligible: Vec<(&NodeId, &NodeState)> = view.iter().filter(|(_, s)| fits(spec, s)).collect();
    let d = d.clamp(1, MAX_CHOICES);
    eligible
        .choose_multiple(rng, d)
        .max_by(|(ia, a), (ib, b)| {
            let roomier = headroom_permille(spec, a).cmp(&headroom_permille(spec, b));
            let better = match placement {
                Placement::Spread => roomier,
                Placement::Pack => roomier.reverse(),
            };
            better
                .then(b.running_attempts.cmp(&a.running_attempts))
                .then(ib.cmp(ia))
        })
        .map(|(id, _)| **id)
}

/// Where a task that fits no node now should wait, when [`choose`] finds
/// nothing: of `d` random candidates that could ever hold it (by
/// capacity, labels, health), the `fanout` that lack least of it now (see
/// [`shortfall_permille`]; then fewest running attempts, then lowest id).
/// An offer there is declined, but each of them remembers the shard and
/// pulls from it first once room frees, so the task goes to whichever
/// frees first instead of waiting for a pull that happens to come by.
pub fn nearest<R: Rng>(
    spec: &TaskSpec,
    view: &BTreeMap<NodeId, NodeState>,
    d: usize,
    fanout: usize,
    rng: &mut R,
) -> Vec<NodeId> {
    let eligible: Vec<(&NodeId, &NodeState)> = view
        .iter()
        .filter(|(_, s)| {
            s.slots_total >= spec.slots && s.capacity.covers(&spec.resources) && admits(spec, s)
        })
        .collect();
    let d = d.clamp(1, MAX_CHOICES);
    let mut sampled: Vec<&(&NodeId, &NodeState)> = eligible.choose_multiple(rng, d).collect();
    sampled.sort_by(|(ia, a), (ib, b)| {
        shortfall_permille(spec, a)
            .cmp(&shortfall_permille(spec, b))
            .then(a.running_attempts.cmp(&b.running_attempts))
            .then(ia.cmp(ib))
    });
    sampled
        .into_iter()
        .take(fanout)
        .map(|(id, _)| **id)
        .collect()
}

/// How much `state` lacks of `spec` in its scarcest kind, per mille of
/// that kind's total: 0 when it fits now.
pub fn shortfall_permille(spec: &TaskSpec, state: &NodeState) -> u64 {
    kinds(spec, state)
        .map(|(free, ask, total)| per_mille(ask.saturating_sub(free), total))
        .max()
        .unwrap_or(0)
}

/// What `state` would have left of its tightest kind after taking `spec`,
/// per mille of that kind's total: slots, and each resource kind the task
/// asks for. Only what the task needs counts, so a memory-hungry task is
/// placed by memory even where CPU is scarce.
pub fn headroom_permille(spec: &TaskSpec, state: &NodeState) -> u64 {
    kinds(spec, state)
        .map(|(free, ask, total)| per_mille(free.saturating_sub(ask), total))
        .min()
        .unwrap_or(0)
}

/// `(free, ask, total)` on `state` of slots and of each kind `spec` asks for.
fn kinds<'a>(
    spec: &'a TaskSpec,
    state: &'a NodeState,
) -> impl Iterator<Item = (u32, u32, u32)> + 'a {
    let slots = (state.slots_free, spec.slots, state.slots_total);
    std::iter::once(slots).chain(
        spec.resources
            .asked()
            .into_iter()
            .map(|(kind, ask)| (state.free.amount(&kind), ask, state.capacity.amount(&kind))),
    )
}

/// `amount` per mille of `total` (0 of nothing).
fn per_mille(amount: u32, total: u32) -> u64 {
    if total == 0 {
        return 0;
    }
    u64::from(amount) * 1000 / u64::from(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn state(free: u32, labels: &[(&str, &str)]) -> NodeState {
        NodeState {
            slots_free: free,
            slots_total: 8,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeState::default()
        }
    }

    #[test]
    fn choice_respects_labels_and_capacity() {
        let mut view = BTreeMap::new();
        view.insert(NodeId::from_u64(1), state(0, &[("gpu", "1")]));
        view.insert(NodeId::from_u64(2), state(4, &[]));
        view.insert(NodeId::from_u64(3), state(2, &[("gpu", "1")]));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut spec = TaskSpec::mock(1, 0);
        spec.labels.insert("gpu".into(), "1".into());
        for _ in 0..20 {
            assert_eq!(
                choose(&spec, &view, 2, Placement::Pack, &mut rng),
                Some(NodeId::from_u64(3))
            );
        }
        spec.slots = 3;
        assert_eq!(choose(&spec, &view, 2, Placement::Pack, &mut rng), None);
    }

    #[test]
    fn a_draining_node_is_never_chosen() {
        let mut view = BTreeMap::new();
        let mut draining = state(8, &[]);
        draining.draining = true;
        view.insert(NodeId::from_u64(1), draining);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let spec = TaskSpec::mock(1, 0);
        assert_eq!(choose(&spec, &view, 8, Placement::Pack, &mut rng), None);
        view.insert(NodeId::from_u64(2), state(1, &[]));
        assert_eq!(
            choose(&spec, &view, 8, Placement::Pack, &mut rng),
            Some(NodeId::from_u64(2))
        );
    }

    #[test]
    fn a_task_is_placed_by_the_kinds_it_asks_for() {
        let mut view = BTreeMap::new();
        // Node 1 has more free slots; node 2 more free memory.
        let mut slots_free = state(8, &[]);
        slots_free.capacity = crate::resources::Resources::new(4000, 8192);
        slots_free.free = crate::resources::Resources::new(4000, 1024);
        let mut memory_free = state(4, &[]);
        memory_free.capacity = slots_free.capacity.clone();
        memory_free.free = crate::resources::Resources::new(4000, 8192);
        view.insert(NodeId::from_u64(1), slots_free);
        view.insert(NodeId::from_u64(2), memory_free);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut pick = |spec: &TaskSpec, placement| choose(spec, &view, 2, placement, &mut rng);
        let (one, two) = (Some(NodeId::from_u64(1)), Some(NodeId::from_u64(2)));
        // Slots only: node 1 keeps 875 per mille, node 2 375.
        let mut spec = TaskSpec::mock(1, 0);
        assert_eq!(pick(&spec, Placement::Spread), one);
        assert_eq!(pick(&spec, Placement::Pack), two);
        // 512 MiB: node 1 keeps 62 per mille of memory, node 2 375 of slots.
        spec.resources = crate::resources::Resources::new(0, 512);
        assert_eq!(pick(&spec, Placement::Spread), two);
        assert_eq!(pick(&spec, Placement::Pack), one);
        // 2 GiB fits node 2 only, however the offer picks.
        spec.resources = crate::resources::Resources::new(0, 2048);
        assert_eq!(pick(&spec, Placement::Spread), two);
        assert_eq!(pick(&spec, Placement::Pack), two);
    }

    #[test]
    fn a_task_that_fits_nowhere_waits_where_least_of_it_is_missing() {
        let node = |cpu_free: u32, cpu_total: u32| {
            let mut s = state(4, &[]);
            s.capacity = crate::resources::Resources::new(cpu_total, 8192);
            s.free = crate::resources::Resources::new(cpu_free, 8192);
            s
        };
        let mut view = BTreeMap::new();
        view.insert(NodeId::from_u64(1), node(500, 4000));
        view.insert(NodeId::from_u64(2), node(1500, 4000));
        // Node 3 has the most free CPU but could never hold the task.
        view.insert(NodeId::from_u64(3), node(1900, 1900));
        let mut spec = TaskSpec::mock(1, 0);
        spec.resources = crate::resources::Resources::new(2000, 512);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        assert_eq!(choose(&spec, &view, 8, Placement::Pack, &mut rng), None);
        assert_eq!(
            nearest(&spec, &view, 8, 2, &mut rng),
            vec![NodeId::from_u64(2), NodeId::from_u64(1)]
        );
        assert_eq!(shortfall_permille(&spec, &view[&NodeId::from_u64(2)]), 125);
        assert_eq!(shortfall_permille(&spec, &view[&NodeId::from_u64(1)]), 375);
        // Nothing can ever hold a task larger than every node.
        spec.resources = crate::resources::Resources::new(8000, 512);
        assert!(nearest(&spec, &view, 8, 2, &mut rng).is_empty());
    }

    #[test]
    fn best_of_all_when_d_covers_everyone() {
        let mut view = BTreeMap::new();
        for (i, free) in [1u32, 5, 3].into_iter().enumerate() {
            view.insert(NodeId::from_u64(i as u64), state(free, &[]));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        let spec = TaskSpec::mock(1, 0);
        assert_eq!(
            choose(&spec, &view, 3, Placement::Spread, &mut rng),
            Some(NodeId::from_u64(1))
        );
        assert_eq!(
            choose(&spec, &view, 3, Placement::Pack, &mut rng),
            Some(NodeId::from_u64(0))
        );
    }
}
