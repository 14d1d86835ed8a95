//! Messages of a federation link between two parties' gateways
//! (docs/federation.md). The first exchange on every link connection is a
//! [`FedRequest::Hello`] answered by a [`FedResponse::Hello`] or a
//! [`FedResponse::Refused`]; nothing else is read from a peer before its
//! hello was judged (see [`crate::federation::judge_hello`]).

use serde::{Deserialize, Serialize};

/// The largest federation message; a hello is a few hundred bytes.
pub const MAX_FED_MESSAGE_BYTES: usize = 64 * 1024;

/// The version of the link protocol a hello speaks.
pub const FED_PROTOCOL_VERSION: u16 = 1;

/// A gateway's claim to speak for a party.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`FED_PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The party the sender speaks for.
    pub party: String,
    /// The sender's libp2p PeerId bytes (the key of the connection).
    pub gateway_peer: Vec<u8>,
    /// The party key's ed25519 signature over
    /// [`crate::federation::voucher_message`] of `party` and `gateway_peer`.
    pub voucher: Vec<u8>,
}

/// Why a hello was refused; also the `reason` label of
/// `shoal_fed_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefuseReason {
    /// The hello speaks another version of the link protocol.
    Version,
    /// The named party is not among the trusted cards.
    UnknownParty,
    /// The hello names the judge's own party.
    OwnParty,
    /// The hello's PeerId is not the PeerId of the connection.
    PeerMismatch,
    /// The named party's key vouches for another party's gateway: the
    /// voucher verifies under a different trusted party's key.
    ClaimsOtherParty,
    /// The voucher is not a valid signature of the named party's key.
    BadVoucher,
    /// The first message was not a hello, or did not decode.
    Malformed,
}

impl RefuseReason {
    /// Every reason, for metrics that list them all from the start.
    pub const ALL: [RefuseReason; 7] = [
        RefuseReason::Version,
        RefuseReason::UnknownParty,
        RefuseReason::OwnParty,
        RefuseReason::PeerMismatch,
        RefuseReason::ClaimsOtherParty,
        RefuseReason::BadVoucher,
        RefuseReason::Malformed,
    ];

    /// The label used in metrics, logs and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            RefuseReason::Version => "version",
            RefuseReason::UnknownParty => "unknown_party",
            RefuseReason::OwnParty => "own_party",
            RefuseReason::PeerMismatch => "peer_mismatch",
            RefuseReason::ClaimsOtherParty => "claims_other_party",
            RefuseReason::BadVoucher => "bad_voucher",
            RefuseReason::Malformed => "malformed",
        }
    }
}

/// What a dialling gateway sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedRequest {
    /// The dialler's claim; the first request on a connection.
    Hello(Hello),
}

/// What the dialled gateway answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FedResponse {
    /// The dialler was accepted; this is the answerer's own claim, which
    /// the dialler judges in turn.
    Hello(Hello),
    /// The dialler was refused; the connection closes next.
    Refused(RefuseReason),
}

/// The largest tunnel header or reply.
pub const MAX_TUNNEL_HEADER_BYTES: usize = 4 * 1024;

/// The first message on a tunnel stream, on every hop of its path
/// (`node -> link holder -> link -> peer gateway -> service node`). With
/// `probe` the path is checked end to end and no service is connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelOpen {
    /// Mesh hop to one of the party's link holders: carry this stream to
    /// `service` of `party`.
    ToParty {
        /// The peer party.
        party: String,
        /// Its exported service.
        service: String,
        /// Check only.
        probe: bool,
    },
    /// Link hop: the asking party is the one the link's hello proved.
    ToService {
        /// The exported service.
        service: String,
        /// Check only.
        probe: bool,
    },
    /// Mesh hop to the node the service runs on.
    ToPort {
        /// The service's port on that node's loopback.
        port: u16,
        /// Check only.
        probe: bool,
    },
}

/// The answer to a [`TunnelOpen`], passed back along the path; after
/// [`TunnelReply::Open`] the stream carries the connection's bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelReply {
    /// The service is connected (or, for a probe, reachable).
    Open,
    /// The service is not exported to the asking party; nothing reached it.
    Refused(String),
    /// The path is broken now (no link, a dead node, the service down).
    Unavailable(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{decode, encode};

    #[test]
    fn hello_round_trips_through_the_codec() {
        let hello = FedRequest::Hello(Hello {
            version: FED_PROTOCOL_VERSION,
            party: "alpha".into(),
            gateway_peer: vec![1, 2, 3],
            voucher: vec![9; 64],
        });
        let bytes = encode(&hello);
        assert_eq!(
            decode::<FedRequest>(&bytes, MAX_FED_MESSAGE_BYTES),
            Ok(hello)
        );
        assert!(decode::<FedRequest>(&bytes, 4).is_err());
    }

    #[test]
    fn reason_labels_are_distinct() {
        let labels: std::collections::BTreeSet<_> =
            RefuseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RefuseReason::ALL.len());
    }
}
