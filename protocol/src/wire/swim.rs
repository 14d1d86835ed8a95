//! SWIM membership messages (docs/protocol.md §3, §4).
//!
//! Every message names its sender, which the receiver checks against the
//! peer the transport authenticated. Updates ride on every probe message;
//! they are kept compact: only `Alive` carries a member's name and address,
//! the other states carry the id and incarnation the receiver already knows
//! the member by.

use crate::gossip::NodeState;
use crate::{NodeId, StoreId};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// One membership message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwimMessage {
    /// Who sent it; must equal the authenticated peer.
    pub sender: NodeId,
    /// The sender's store: a receiver that knows the sender under another
    /// store refuses it (a wiped node under its old certificate).
    pub sender_store: StoreId,
    /// What it asks or answers.
    pub body: SwimBody,
    /// Piggybacked dissemination updates (empty on push-pull).
    pub updates: Vec<Update>,
}

/// The request or answer part of a [`SwimMessage`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SwimBody {
    /// A direct probe. `suspected_at` is the buddy system: when the sender
    /// suspects the receiver, it says at which incarnation so the receiver
    /// refutes at once.
    Ping {
        /// Sender-chosen sequence number echoed by the ack.
        seq: u32,
        /// The incarnation at which the sender suspects the receiver.
        suspected_at: Option<u64>,
    },
    /// Answer to a ping, or an ack relayed by an indirect prober.
    Ack {
        /// The sequence number of the ping (the origin's, when relayed).
        seq: u32,
    },
    /// Asks the receiver to probe `target` and relay its ack.
    PingReq {
        /// The origin's sequence number, echoed by the relayed ack or nack.
        seq: u32,
        /// The member to probe.
        target: NodeId,
        /// Where the member is reached.
        target_addr: SocketAddr,
    },
    /// Lifeguard: the indirect prober got no ack from the target in time.
    Nack {
        /// The origin's sequence number.
        seq: u32,
    },
    /// Carries only piggybacked updates (fast dissemination).
    Gossip,
    /// Full-state anti-entropy exchange, also the join handshake. Sent on a
    /// reliable stream.
    PushPull(PushPull),
    /// The receiver knows the sender of the message it answers under
    /// another store and dropped it: the sender lost its data directory
    /// and must come back under a new certificate.
    Refused {
        /// The store the receiver knows this NodeId by.
        known_store: StoreId,
    },
}

/// A full-state exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PushPull {
    /// `true` when the sender wants the receiver's full state back.
    pub reply_wanted: bool,
    /// The sender's member table, itself included.
    pub members: Vec<MemberRecord>,
    /// The sender's gossiped node-state records, its own included.
    pub states: Vec<StateRecord>,
}

/// A member's liveness as carried on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireState {
    /// Alive.
    Alive,
    /// Suspected.
    Suspect,
    /// Confirmed down.
    Down,
    /// Left gracefully.
    Left,
}

/// One member in a push-pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The member's id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Its store.
    pub store: StoreId,
    /// Its incarnation as the sender knows it.
    pub incarnation: u64,
    /// Its state as the sender knows it.
    pub state: WireState,
}

/// One gossiped node-state record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateRecord {
    /// The record's owner.
    pub id: NodeId,
    /// The record.
    pub state: NodeState,
}

/// One piggybacked dissemination update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Update {
    /// The member is alive at `incarnation`; carries its identity so that
    /// receivers that never heard of it can add it.
    Alive {
        /// The member.
        id: NodeId,
        /// Its name.
        name: String,
        /// Its address.
        addr: SocketAddr,
        /// Its store.
        store: StoreId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// `by` suspects the member at `incarnation`.
    Suspect {
        /// The member.
        id: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
        /// The suspecting node (counts as an independent confirmation).
        by: NodeId,
    },
    /// `by` declared the member down at `incarnation`.
    Down {
        /// The member.
        id: NodeId,
        /// The incarnation declared down.
        incarnation: u64,
        /// The declaring node.
        by: NodeId,
    },
    /// The member left gracefully at `incarnation`.
    Left {
        /// The member.
        id: NodeId,
        /// Its incarnation when it left.
        incarnation: u64,
    },
    /// A member's newer node-state record.
    State(StateRecord),
}

impl Update {
    /// The member the update is about.
    pub fn subject(&self) -> NodeId {
        match self {
            Update::Alive { id, .. }
            | Update::Suspect { id, .. }
            | Update::Down { id, .. }
            | Update::Left { id, .. } => *id,
            Update::State(record) => record.id,
        }
    }
}

/// A received [`SwimMessage`] as the membership machine decodes it: the
/// same bytes, but `Alive` names borrow from the payload instead of being
/// copied into a `String` each. Most updates a node receives are news it
/// already has; only a new member's name is ever copied.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SwimMessageRef<'a> {
    /// Who sent it; must equal the authenticated peer.
    pub sender: NodeId,
    /// See [`SwimMessage::sender_store`].
    pub sender_store: StoreId,
    /// What it asks or answers.
    pub body: SwimBody,
    /// Piggybacked dissemination updates.
    #[serde(borrow)]
    pub updates: Vec<UpdateRef<'a>>,
}

/// A received [`Update`] whose `Alive` name borrows from the payload. The
/// variants mirror [`Update`]'s one for one, in the same order (the wire
/// carries the variant's index).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub enum UpdateRef<'a> {
    /// See [`Update::Alive`].
    Alive {
        /// The member.
        id: NodeId,
        /// Its name.
        name: &'a str,
        /// Its address.
        addr: SocketAddr,
        /// Its store.
        store: StoreId,
        /// Its incarnation.
        incarnation: u64,
    },
    /// See [`Update::Suspect`].
    Suspect {
        /// The member.
        id: NodeId,
        /// The incarnation suspected.
        incarnation: u64,
        /// The suspecting node.
        by: NodeId,
    },
    /// See [`Update::Down`].
    Down {
        /// The member.
        id: NodeId,
        /// The incarnation declared down.
        incarnation: u64,
        /// The declaring node.
        by: NodeId,
    },
    /// See [`Update::Left`].
    Left {
        /// The member.
        id: NodeId,
        /// Its incarnation when it left.
        incarnation: u64,
    },
    /// See [`Update::State`].
    State(StateRecord),
}

impl UpdateRef<'_> {
    /// The owned update (copies the name of an `Alive`).
    pub fn to_owned_update(&self) -> Update {
        match self {
            UpdateRef::Alive {
                id,
                name,
                addr,
                store,
                incarnation,
            } => Update::Alive {
                id: *id,
                name: (*name).to_string(),
                addr: *addr,
                store: *store,
                incarnation: *incarnation,
            },
            UpdateRef::Suspect {
                id,
                incarnation,
                by,
            } => Update::Suspect {
                id: *id,
                incarnation: *incarnation,
                by: *by,
            },
            UpdateRef::Down {
                id,
                incarnation,
                by,
            } => Update::Down {
                id: *id,
                incarnation: *incarnation,
                by: *by,
            },
            UpdateRef::Left { id, incarnation } => Update::Left {
                id: *id,
                incarnation: *incarnation,
            },
            UpdateRef::State(record) => Update::State(record.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::Health;
    use crate::wire::{
        decode, decode_borrowed, encode, MAX_DATAGRAM_BYTES, MAX_STREAM_MESSAGE_BYTES,
    };
    use proptest::prelude::*;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    /// Mostly a few small ids, so that generated updates hit the receiving
    /// machine itself and members it knows.
    fn arb_id() -> impl Strategy<Value = NodeId> {
        prop_oneof![
            3 => (1u64..6).prop_map(NodeId::from_u64),
            1 => any::<[u8; 16]>().prop_map(NodeId),
        ]
    }

    /// Mostly the store the small ids are known by, sometimes another.
    fn arb_store() -> impl Strategy<Value = StoreId> {
        prop_oneof![
            3 => (1u64..6).prop_map(StoreId::from_u64),
            1 => any::<[u8; 16]>().prop_map(StoreId),
        ]
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V4(Ipv4Addr::from(ip)), port)),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), port)),
        ]
    }

    fn arb_node_state() -> impl Strategy<Value = NodeState> {
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            0u8..3,
            "[a-z]{0,8}",
            proptest::collection::btree_map("[a-z]{1,4}", "[a-z0-9]{0,4}", 0..3),
        )
            .prop_map(|(version, slots_total, slots_free, h, text, labels)| {
                let health = match h {
                    0 => Health::Passing,
                    1 => Health::Warning {
                        reason: text.clone(),
                    },
                    _ => Health::Critical {
                        reason: text.clone(),
                    },
                };
                NodeState {
                    version,
                    slots_total,
                    slots_free,
                    health,
                    labels,
                    build_version: text,
                    ..NodeState::default()
                }
            })
    }

    fn arb_wire_state() -> impl Strategy<Value = WireState> {
        prop_oneof![
            Just(WireState::Alive),
            Just(WireState::Suspect),
            Just(WireState::Down),
            Just(WireState::Left),
        ]
    }

    fn arb_update() -> impl Strategy<Value = Update> {
        prop_oneof![
            (
                arb_id(),
                "[a-z0-9-]{0,12}",
                arb_addr(),
                arb_store(),
                any::<u64>()
            )
                .prop_map(|(id, name, addr, store, incarnation)| Update::Alive {
                    id,
                    name,
                    addr,
                    store,
                    incarnation
                }),
            (arb_id(), any::<u64>(), arb_id()).prop_map(|(id, incarnation, by)| {
                Update::Suspect {
                    id,
                    incarnation,
                    by,
                }
            }),
            (arb_id(), any::<u64>(), arb_id()).prop_map(|(id, incarnation, by)| Update::Down {
                id,
                incarnation,
                by
            }),
            (arb_id(), any::<u64>()).prop_map(|(id, incarnation)| Update::Left { id, incarnation }),
            (arb_id(), arb_node_state())
                .prop_map(|(id, state)| Update::State(StateRecord { id, state })),
        ]
    }

    fn arb_body() -> impl Strategy<Value = SwimBody> {
        let member = (
            arb_id(),
            "[a-z]{0,6}",
            arb_addr(),
            arb_store(),
            any::<u64>(),
            arb_wire_state(),
        )
            .prop_map(|(id, name, addr, store, incarnation, state)| MemberRecord {
                id,
                name,
                addr,
                store,
                incarnation,
                state,
            });
        let state = (arb_id(), arb_node_state()).prop_map(|(id, state)| StateRecord { id, state });
        prop_oneof![
            (any::<u32>(), any::<Option<u64>>())
                .prop_map(|(seq, suspected_at)| SwimBody::Ping { seq, suspected_at }),
            any::<u32>().prop_map(|seq| SwimBody::Ack { seq }),
            (any::<u32>(), arb_id(), arb_addr()).prop_map(|(seq, target, target_addr)| {
                SwimBody::PingReq {
                    seq,
                    target,
                    target_addr,
                }
            }),
            any::<u32>().prop_map(|seq| SwimBody::Nack { seq }),
            Just(SwimBody::Gossip),
            arb_store().prop_map(|known_store| SwimBody::Refused { known_store }),
            (
                any::<bool>(),
                proptest::collection::vec(member, 0..5),
                proptest::collection::vec(state, 0..3)
            )
                .prop_map(|(reply_wanted, members, states)| SwimBody::PushPull(
                    PushPull {
                        reply_wanted,
                        members,
                        states
                    }
                )),
        ]
    }

    pub(crate) fn arb_message() -> impl Strategy<Value = SwimMessage> {
        (
            arb_id(),
            arb_store(),
            arb_body(),
            proptest::collection::vec(arb_update(), 0..6),
        )
            .prop_map(|(sender, sender_store, body, updates)| SwimMessage {
                sender,
                sender_store,
                body,
                updates,
            })
    }

    proptest! {
        #[test]
        fn every_message_variant_round_trips(message in arb_message()) {
            let bytes = encode(&message);
            prop_assert_eq!(decode::<SwimMessage>(&bytes, MAX_STREAM_MESSAGE_BYTES), Ok(message));
        }

        #[test]
        fn the_borrowing_decoder_reads_what_the_encoder_wrote(message in arb_message()) {
            let bytes = encode(&message);
            let borrowed: SwimMessageRef<'_> =
                decode_borrowed(&bytes, MAX_STREAM_MESSAGE_BYTES).expect("decodes");
            prop_assert_eq!(borrowed.sender, message.sender);
            prop_assert_eq!(borrowed.sender_store, message.sender_store);
            prop_assert_eq!(&borrowed.body, &message.body);
            let owned: Vec<Update> = borrowed.updates.iter().map(UpdateRef::to_owned_update).collect();
            prop_assert_eq!(owned, message.updates);
        }

        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode::<SwimMessage>(&bytes, MAX_DATAGRAM_BYTES);
            let _ = decode_borrowed::<SwimMessageRef<'_>>(&bytes, MAX_DATAGRAM_BYTES);
        }

        #[test]
        fn mutated_encodings_never_panic_the_decoder(
            message in arb_message(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = encode(&message);
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let _ = decode::<SwimMessage>(&bytes, MAX_STREAM_MESSAGE_BYTES);
            let _ = decode_borrowed::<SwimMessageRef<'_>>(&bytes, MAX_STREAM_MESSAGE_BYTES);
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = decode::<SwimMessage>(&bytes, MAX_STREAM_MESSAGE_BYTES);
            let _ = decode_borrowed::<SwimMessageRef<'_>>(&bytes, MAX_STREAM_MESSAGE_BYTES);
        }
    }

    fn machine() -> crate::membership::Membership {
        use crate::membership::{Config, Identity, Membership};
        let identity = Identity {
            id: NodeId::from_u64(1),
            name: "n1".into(),
            addr: "127.0.0.1:7001".parse().unwrap(),
            store: StoreId::from_u64(1),
        };
        Membership::new(identity, Config::lan(), 7, 0, crate::Instant::ZERO)
    }

    /// Feeds `inputs` from the peer with id `peer`, interleaved with timer
    /// runs, draining outputs; any panic fails the property.
    fn drive(inputs: &[Vec<u8>], peer: NodeId) {
        let mut m = machine();
        let src: SocketAddr = "127.0.0.1:7002".parse().unwrap();
        let mut now = crate::Instant::ZERO;
        for bytes in inputs {
            now = now + std::time::Duration::from_millis(37);
            let _ = m.handle_datagram(now, src, peer, bytes);
            if let Some(at) = m.poll_timeout() {
                if at <= now {
                    m.handle_timeout(now);
                }
            }
            while m.poll_transmit().is_some() {}
            while m.poll_event().is_some() {}
        }
        // Let every timer run once more, far in the future.
        m.handle_timeout(now + std::time::Duration::from_secs(3600));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_machine(
            inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 1..8),
        ) {
            drive(&inputs, NodeId::from_u64(2));
        }

        #[test]
        fn mutated_valid_messages_never_panic_the_machine(
            messages in proptest::collection::vec(arb_message(), 1..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        ) {
            let peer = NodeId::from_u64(2);
            let inputs: Vec<Vec<u8>> = messages
                .into_iter()
                .enumerate()
                .map(|(i, mut m)| {
                    m.sender = peer;
                    let mut bytes = encode(&m);
                    if i % 2 == 1 {
                        for (at, value) in &flips {
                            let j = at.index(bytes.len());
                            bytes[j] = *value;
                        }
                    }
                    bytes
                })
                .collect();
            drive(&inputs, peer);
        }
    }

    #[test]
    fn a_probe_with_no_updates_is_small() {
        let ping = SwimMessage {
            sender: NodeId::from_u64(1),
            sender_store: StoreId::from_u64(1),
            body: SwimBody::Ping {
                seq: 70_000,
                suspected_at: None,
            },
            updates: vec![],
        };
        let suspect = Update::Suspect {
            id: NodeId::from_u64(2),
            incarnation: 3,
            by: NodeId::from_u64(1),
        };
        assert!(encode(&ping).len() <= 40, "{}", encode(&ping).len());
        assert!(encode(&suspect).len() <= 36, "{}", encode(&suspect).len());
    }
}
