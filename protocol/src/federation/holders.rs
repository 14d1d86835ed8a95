//! Which of a party's gateways hold the link to a peer party
//! (docs/federation.md, "Link holders").
//!
//! Every gateway computes the same answer from the same membership view,
//! so choosing holders costs no message: rendezvous (highest random weight)
//! hashing of `(peer party, gateway id)` ranks the gateways per peer party,
//! and the top `k` live ones hold the link. A gateway that dies or turns
//! critical drops out of the ranking and the next one takes its place; every
//! other link keeps its holders (minimal churn). Views that disagree for a
//! moment give at most a few extra or missing holders until gossip
//! converges; an extra holder is harmless because links are idempotent.

use crate::NodeId;

/// How many gateways hold each link by default.
pub const DEFAULT_LINK_HOLDERS: usize = 2;

/// The label a gateway gossips in its node state so that the other members
/// of its party know it can hold links.
pub const GATEWAY_LABEL: &str = "shoal.fed.gateway";

/// One gateway of the party as a node's membership view sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GatewayView {
    /// The gateway's node id.
    pub id: NodeId,
    /// Alive in the membership view (not suspect, down or left).
    pub live: bool,
    /// Its own health checks fail; it holds links only when too few
    /// healthy gateways are live.
    pub critical: bool,
}

/// The gateways that hold the link to `peer`, best first: the `k` live
/// gateways ranked highest for `peer`, healthy ones before critical ones.
/// Always `min(k, live gateways)` distinct ids.
pub fn holders(peer: &str, gateways: &[GatewayView], k: usize) -> Vec<NodeId> {
    let mut ranked: Vec<(bool, u64, NodeId)> = gateways
        .iter()
        .filter(|g| g.live)
        .map(|g| (g.critical, weight(peer, &g.id), g.id))
        .collect();
    // Healthy first, then by weight descending; the id breaks weight ties so
    // the order never depends on the order of the view.
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    ranked.dedup_by(|a, b| a.2 == b.2);
    ranked.into_iter().take(k).map(|(_, _, id)| id).collect()
}

/// Whether `me` holds the link to `peer` in this view.
pub fn holds(me: &NodeId, peer: &str, gateways: &[GatewayView], k: usize) -> bool {
    holders(peer, gateways, k).contains(me)
}

/// The rendezvous weight of `gateway` for `peer`: FNV-1a over both, then
/// the splitmix64 finaliser so that nearby ids spread over the whole range.
/// Fixed arithmetic, so every build and platform ranks alike.
fn weight(peer: &str, gateway: &NodeId) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    // NUL never occurs in a party name, so (peer, gateway) splits uniquely.
    for byte in peer.bytes().chain([0]).chain(gateway.0) {
        h ^= u64::from(byte);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn gw(n: u64) -> GatewayView {
        GatewayView {
            id: NodeId::from_u64(n),
            live: true,
            critical: false,
        }
    }

    #[test]
    fn k_live_gateways_hold_each_link() {
        let view: Vec<_> = (1..=5).map(gw).collect();
        let chosen = holders("beta", &view, 2);
        assert_eq!(chosen.len(), 2);
        assert_ne!(chosen[0], chosen[1]);
    }

    #[test]
    fn a_dead_holder_is_replaced_and_the_other_stays() {
        let mut view: Vec<_> = (1..=5).map(gw).collect();
        let before = holders("beta", &view, 2);
        let dead = before[0];
        for g in &mut view {
            if g.id == dead {
                g.live = false;
            }
        }
        let after = holders("beta", &view, 2);
        assert_eq!(after.len(), 2);
        assert!(!after.contains(&dead));
        assert!(
            after.contains(&before[1]),
            "the surviving holder keeps the link"
        );
    }

    #[test]
    fn a_critical_gateway_holds_only_when_healthy_ones_are_too_few() {
        let mut view: Vec<_> = (1..=3).map(gw).collect();
        let first = holders("beta", &view, 2)[0];
        for g in &mut view {
            g.critical = g.id == first;
        }
        assert!(!holders("beta", &view, 2).contains(&first));
        assert!(holders("beta", &view, 3).contains(&first));
    }

    #[test]
    fn no_live_gateway_means_no_holder() {
        let mut view: Vec<_> = (1..=3).map(gw).collect();
        for g in &mut view {
            g.live = false;
        }
        assert!(holders("beta", &view, 2).is_empty());
        assert!(holders("beta", &[], 2).is_empty());
    }

    #[test]
    fn peers_spread_over_the_gateways() {
        let view: Vec<_> = (1..=4).map(gw).collect();
        let firsts: BTreeSet<NodeId> = (0..40)
            .map(|p| holders(&format!("party{p}"), &view, 1)[0])
            .collect();
        assert!(firsts.len() >= 3, "40 peers all land on {firsts:?}");
    }

    fn views() -> impl Strategy<Value = Vec<GatewayView>> {
        proptest::collection::vec((0u64..40, any::<bool>(), any::<bool>()), 0..12).prop_map(|gs| {
            gs.into_iter()
                .map(|(n, live, critical)| GatewayView {
                    id: NodeId::from_u64(n),
                    live,
                    critical,
                })
                .collect()
        })
    }

    fn live_ids(view: &[GatewayView]) -> BTreeSet<NodeId> {
        view.iter().filter(|g| g.live).map(|g| g.id).collect()
    }

    /// A view where each id appears once (as membership gives it).
    fn unique(view: Vec<GatewayView>) -> Vec<GatewayView> {
        let mut seen = BTreeSet::new();
        view.into_iter().filter(|g| seen.insert(g.id)).collect()
    }

    proptest! {
        #[test]
        fn always_min_k_live_distinct_holders(view in views(), k in 0usize..5, peer in "[a-z]{1,8}") {
            let view = unique(view);
            let chosen = holders(&peer, &view, k);
            let live = live_ids(&view);
            let distinct: BTreeSet<NodeId> = chosen.iter().copied().collect();
            prop_assert_eq!(chosen.len(), k.min(live.len()));
            prop_assert_eq!(distinct.len(), chosen.len());
            prop_assert!(distinct.is_subset(&live));
        }

        #[test]
        fn the_answer_does_not_depend_on_the_views_order(view in views(), k in 0usize..5, peer in "[a-z]{1,8}") {
            let view = unique(view);
            let mut reversed = view.clone();
            reversed.reverse();
            prop_assert_eq!(holders(&peer, &view, k), holders(&peer, &reversed, k));
        }

        /// One gateway joining, dying, or changing health moves only the
        /// holders it touches: at most one holder leaves and one arrives.
        #[test]
        fn one_gateway_change_moves_at_most_its_own_place(
            view in views(), k in 1usize..5, peer in "[a-z]{1,8}",
            pick in any::<prop::sample::Index>(), live in any::<bool>(), critical in any::<bool>(),
        ) {
            let view = unique(view);
            prop_assume!(!view.is_empty());
            let i = pick.index(view.len());
            let mut changed = view.clone();
            changed[i].live = live;
            changed[i].critical = critical;
            let before: BTreeSet<NodeId> = holders(&peer, &view, k).into_iter().collect();
            let after: BTreeSet<NodeId> = holders(&peer, &changed, k).into_iter().collect();
            let left: BTreeSet<_> = before.difference(&after).copied().collect();
            let arrived: BTreeSet<_> = after.difference(&before).copied().collect();
            let touched = view[i].id;
            prop_assert!(left.len() <= 1 && arrived.len() <= 1, "left {:?} arrived {:?}", left, arrived);
            // Every move involves the changed gateway, except the one
            // gateway that fills in for it or is displaced by it.
            prop_assert!(left.contains(&touched) || arrived.contains(&touched) || (left.is_empty() && arrived.is_empty()),
                "left {:?} arrived {:?} without {:?}", left, arrived, touched);
        }
    }
}
