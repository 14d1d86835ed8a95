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
use std::collections::BTreeMap;

/// Most candidates sampled for one offer.
pub const MAX_CHOICES: usize = 8;

/// Whether `state` can take `spec` now.
pub fn fits(spec: &TaskSpec, state: &NodeState) -> bool {
    state.slots_free >= spec.slots
        && state.free.covers(&spec.resources)
        && spec.fits_labels(&state.labels)
        && !matches!(state.health, Health::Critical { .. })
        && !state.draining
}

/// Picks the best of `d` random eligible candidates: most headroom left
/// after taking `spec` (see [`headroom_permille`]), then fewest running
/// attempts, then lowest id. `None` when no live node fits (the task then
/// waits for a pull).
pub fn choose<R: Rng>(
    spec: &TaskSpec,
    view: &BTreeMap<NodeId, NodeState>,
    d: usize,
    rng: &mut R,
) -> Option<NodeId> {
    let eligible: Vec<(&NodeId, &NodeState)> = view.iter().filter(|(_, s)| fits(spec, s)).collect();
    let d = d.clamp(1, MAX_CHOICES);
    eligible
        .choose_multiple(rng, d)
        .max_by(|(ia, a), (ib, b)| {
            headroom_permille(spec, a)
                .cmp(&headroom_permille(spec, b))
                .then(b.running_attempts.cmp(&a.running_attempts))
                .then(ib.cmp(ia))
        })
        .map(|(id, _)| **id)
}

/// What `state` would have left of its tightest kind after taking `spec`,
/// per mille of that kind's total: slots, and each resource kind the task
/// asks for. The least loaded node in what the task needs wins, so a
/// memory-hungry task goes where memory is free even if CPU is not.
pub fn headroom_permille(spec: &TaskSpec, state: &NodeState) -> u64 {
    let left = |free: u32, ask: u32, total: u32| -> u64 {
        if total == 0 {
            return 0;
        }
        u64::from(free.saturating_sub(ask)) * 1000 / u64::from(total)
    };
    let slots = left(state.slots_free, spec.slots, state.slots_total);
    spec.resources
        .asked()
        .into_iter()
        .map(|(kind, ask)| left(state.free.amount(&kind), ask, state.capacity.amount(&kind)))
        .fold(slots, u64::min)
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
            assert_eq!(choose(&spec, &view, 2, &mut rng), Some(NodeId::from_u64(3)));
        }
        spec.slots = 3;
        assert_eq!(choose(&spec, &view, 2, &mut rng), None);
    }

    #[test]
    fn a_draining_node_is_never_chosen() {
        let mut view = BTreeMap::new();
        let mut draining = state(8, &[]);
        draining.draining = true;
        view.insert(NodeId::from_u64(1), draining);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let spec = TaskSpec::mock(1, 0);
        assert_eq!(choose(&spec, &view, 8, &mut rng), None);
        view.insert(NodeId::from_u64(2), state(1, &[]));
        assert_eq!(choose(&spec, &view, 8, &mut rng), Some(NodeId::from_u64(2)));
    }

    #[test]
    fn a_task_that_asks_for_memory_goes_where_memory_is_free() {
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
        let mut spec = TaskSpec::mock(1, 0);
        assert_eq!(choose(&spec, &view, 2, &mut rng), Some(NodeId::from_u64(1)));
        spec.resources = crate::resources::Resources::new(0, 512);
        assert_eq!(choose(&spec, &view, 2, &mut rng), Some(NodeId::from_u64(2)));
        spec.resources = crate::resources::Resources::new(0, 2048);
        assert_eq!(choose(&spec, &view, 2, &mut rng), Some(NodeId::from_u64(2)));
    }

    #[test]
    fn best_of_all_when_d_covers_everyone() {
        let mut view = BTreeMap::new();
        for (i, free) in [1u32, 5, 3].into_iter().enumerate() {
            view.insert(NodeId::from_u64(i as u64), state(free, &[]));
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2);
        assert_eq!(
            choose(&TaskSpec::mock(1, 0), &view, 3, &mut rng),
            Some(NodeId::from_u64(1))
        );
    }
}
