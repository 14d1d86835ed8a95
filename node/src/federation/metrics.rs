//! Federation metrics, registered in the agent's registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shoal_protocol::wire::fed::RefuseReason;

/// Label of `shoal_fed_links_up`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartyLabel {
    /// The trusted party.
    pub party: String,
}

/// Label of `shoal_fed_refused_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// A [`RefuseReason`] label.
    pub reason: &'static str,
}

/// Every federation metric.
#[derive(Debug, Default)]
pub struct FedMetrics {
    /// Links up to each trusted party (0 or 1 while one gateway holds them).
    pub links_up: Family<PartyLabel, Gauge>,
    /// Peers this gateway refused in the link handshake, by reason.
    pub refused: Family<ReasonLabel, Counter>,
    /// Own gateways holding the link to each trusted party, as this node
    /// sees them.
    pub link_holders: Family<PartyLabel, Gauge>,
}

impl FedMetrics {
    /// Adds the metrics to `registry`, every refusal reason at zero.
    pub fn register(&self, registry: &mut Registry) {
        for reason in RefuseReason::ALL {
            let _ = self.refused.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "fed_links_up",
            "Federation links up to each trusted party",
            self.links_up.clone(),
        );
        registry.register(
            "fed_link_holders",
            "Own gateways holding the link to each trusted party, as this node sees them",
            self.link_holders.clone(),
        );
        registry.register(
            "fed_refused",
            "Peer gateways refused in the federation handshake, by reason",
            self.refused.clone(),
        );
    }

    /// Counts one refusal.
    pub fn refused(&self, reason: RefuseReason) {
        self.refused
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Sets the link-holders gauge of `party`.
    pub fn set_link_holders(&self, party: &str, holders: usize) {
        self.link_holders
            .get_or_create(&PartyLabel {
                party: party.to_string(),
            })
            .set(i64::try_from(holders).unwrap_or(i64::MAX));
    }

    /// Sets the links-up gauge of `party`.
    pub fn set_links_up(&self, party: &str, up: bool) {
        self.links_up
            .get_or_create(&PartyLabel {
                party: party.to_string(),
            })
            .set(i64::from(up));
    }

    /// Drops the gauges of a party no longer trusted.
    pub fn forget(&self, party: &str) {
        let label = PartyLabel {
            party: party.to_string(),
        };
        self.links_up.remove(&label);
        self.link_holders.remove(&label);
    }
}
