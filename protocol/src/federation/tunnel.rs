//! Where each hop of a tunnel goes (docs/federation.md, "Tunnels"): the
//! decisions the node's tunnel relay carries out.

use super::holders::{holders, GatewayView};
use super::records::ExportRecord;
use crate::NodeId;

/// Where a node sends a tunnel to a peer party's service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartyRoute {
    /// This node holds an up link to the party: straight onto it.
    Link,
    /// Through this link holder of the party, over the mesh.
    Holder(NodeId),
    /// No gateway of the party holds a link to that party.
    NoLink,
}

/// The route of a tunnel from `me` to `party`: its own link when it has
/// one up, else the best-ranked other live holder (the ones that dial the
/// party, so the likeliest to have the link up).
pub fn route_to_party(
    me: &NodeId,
    linked_here: bool,
    party: &str,
    gateways: &[GatewayView],
    k: usize,
) -> PartyRoute {
    if linked_here {
        return PartyRoute::Link;
    }
    holders(party, gateways, k)
        .into_iter()
        .find(|h| h != me)
        .map_or(PartyRoute::NoLink, PartyRoute::Holder)
}

/// Where a gateway sends a tunnel that a peer party asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceRoute {
    /// The service runs on this gateway: connect to its port.
    Local(u16),
    /// The service runs on that node of the party.
    Node(NodeId, u16),
    /// The service is not exported to the asking party.
    Refused(String),
}

/// Judges a peer party's tunnel: only a service exported to exactly that
/// party is reached.
pub fn route_to_service(
    me: &NodeId,
    exports: &[ExportRecord],
    asking_party: &str,
    service: &str,
) -> ServiceRoute {
    match exports
        .iter()
        .find(|e| e.to == asking_party && e.service == service)
    {
        Some(e) if e.node == *me => ServiceRoute::Local(e.port),
        Some(e) => ServiceRoute::Node(e.node, e.port),
        None => ServiceRoute::Refused(format!(
            "service {service:?} is not exported to party {asking_party:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId::from_u64(u64::from(b))
    }

    #[test]
    fn only_the_party_a_service_is_exported_to_reaches_it() {
        let exports = [ExportRecord {
            service: "db".into(),
            to: "beta".into(),
            node: id(2),
            port: 5432,
        }];
        assert_eq!(
            route_to_service(&id(1), &exports, "beta", "db"),
            ServiceRoute::Node(id(2), 5432)
        );
        assert_eq!(
            route_to_service(&id(2), &exports, "beta", "db"),
            ServiceRoute::Local(5432)
        );
        assert!(matches!(
            route_to_service(&id(1), &exports, "gamma", "db"),
            ServiceRoute::Refused(_)
        ));
        assert!(matches!(
            route_to_service(&id(1), &exports, "beta", "web"),
            ServiceRoute::Refused(_)
        ));
    }

    #[test]
    fn a_tunnel_takes_its_own_link_else_another_live_holder() {
        let view = |live2: bool| {
            vec![
                GatewayView {
                    id: id(1),
                    live: true,
                    critical: false,
                },
                GatewayView {
                    id: id(2),
                    live: live2,
                    critical: false,
                },
            ]
        };
        assert_eq!(
            route_to_party(&id(1), true, "beta", &view(true), 2),
            PartyRoute::Link
        );
        assert_eq!(
            route_to_party(&id(1), false, "beta", &view(true), 2),
            PartyRoute::Holder(id(2))
        );
        assert_eq!(
            route_to_party(&id(1), false, "beta", &view(false), 2),
            PartyRoute::NoLink
        );
        // A node that is no gateway is not in the view at all.
        assert_eq!(
            route_to_party(&id(9), false, "beta", &view(true), 1),
            PartyRoute::Holder(holders("beta", &view(true), 1)[0])
        );
    }
}
