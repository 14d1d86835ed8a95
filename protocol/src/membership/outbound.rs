//! Building and queueing messages: piggybacked probes, gossip, push-pull.

use super::{MemberState, Membership, Transmit, MAX_QUEUED_TRANSMITS};
use crate::wire::swim::{
    MemberRecord, PushPull, StateRecord, SwimBody, SwimMessage, Update, WireState,
};
use crate::wire::{encode, encode_into, MAX_DATAGRAM_BYTES, MAX_STREAM_MESSAGE_BYTES};
use serde::Serialize;
use std::net::SocketAddr;

/// Room kept free in a push-pull for the envelope and length prefixes.
const PUSH_PULL_SLACK_BYTES: usize = 64 * 1024;

/// bincode's variable-length integers below this value take one byte. The
/// smallest update (a `Left`) takes 18 bytes, so a 1200-byte datagram
/// carries at most 66 updates and their count always fits one byte.
const SINGLE_BYTE_VARINT_LIMIT: u8 = 251;

/// Room reserved for a message without updates (a ping-req is the largest).
const SMALL_DATAGRAM_BYTES: usize = 64;

fn wire_state(state: MemberState) -> WireState {
    match state {
        MemberState::Alive => WireState::Alive,
        MemberState::Suspect => WireState::Suspect,
        MemberState::Down => WireState::Down,
        MemberState::Left => WireState::Left,
    }
}

impl Membership {
    /// Sends `body` as a datagram to `dst` with as many pending updates as fit.
    pub(super) fn send(&mut self, dst: SocketAddr, body: SwimBody) {
        self.send_with(dst, body, Vec::new());
    }

    /// Like [`Membership::send`], with `first` ahead of the queued updates.
    ///
    /// The update list is the message's last field, and bincode writes a
    /// list as its length followed by its elements: so the payload is the
    /// message encoded with no updates, its one-byte empty length replaced
    /// by the real length and the updates' bytes (queued ones are kept
    /// encoded, see `broadcast`).
    pub(super) fn send_with(&mut self, dst: SocketAddr, body: SwimBody, first: Vec<Update>) {
        let message = SwimMessage {
            sender: self.identity.id,
            sender_store: self.identity.store,
            body,
            updates: Vec::new(),
        };
        // Most probes and acks carry nothing: do not reserve a full
        // datagram for each of them.
        let capacity = if first.is_empty() && self.broadcasts.is_empty() {
            SMALL_DATAGRAM_BYTES
        } else {
            MAX_DATAGRAM_BYTES
        };
        let mut payload = Vec::with_capacity(capacity);
        encode_into(&message, &mut payload);
        debug_assert_eq!(
            payload.last(),
            Some(&0),
            "empty update list ends the message"
        );
        // The count's byte stays where the empty list's was: a datagram
        // holds fewer updates than a one-byte varint counts (see below).
        let count_at = payload.len() - 1;
        for update in &first {
            encode_into(update, &mut payload);
        }
        let budget = MAX_DATAGRAM_BYTES.saturating_sub(payload.len());
        let limit = self.config.retransmit_limit(self.cluster_size());
        let queued = self.broadcasts.select(budget, limit, &mut payload);
        let count = first.len() + queued;
        payload[count_at] = u8::try_from(count)
            .ok()
            .filter(|c| *c < SINGLE_BYTE_VARINT_LIMIT)
            .expect("a datagram holds fewer than 251 updates");
        debug_assert!(payload.len() <= MAX_DATAGRAM_BYTES, "datagram overflow");
        self.push_transmit(Transmit {
            dst,
            reliable: false,
            payload,
        });
    }

    pub(super) fn push_transmit(&mut self, transmit: Transmit) {
        self.stats.transmits += 1;
        self.stats.bytes_out += transmit.payload.len() as u64;
        if self.transmits.len() >= MAX_QUEUED_TRANSMITS {
            self.transmits.pop_front();
        }
        self.transmits.push_back(transmit);
    }

    /// Sends pending updates to up to `fanout` random live members.
    pub(super) fn gossip_to_random_members(&mut self, fanout: usize) {
        if self.broadcasts.is_empty() {
            return;
        }
        let members = &self.members;
        let targets = self.probe_order.sample(&mut self.rng, fanout, |slot| {
            matches!(
                members.state_at(*slot),
                Some(MemberState::Alive | MemberState::Suspect)
            )
        });
        for target in targets {
            if self.broadcasts.is_empty() {
                break;
            }
            let Some(addr) = self.members.at(target).map(|m| m.identity.addr) else {
                continue;
            };
            self.send(addr, SwimBody::Gossip);
        }
    }

    /// Anti-entropy with one random alive member.
    pub(super) fn push_pull_with_random_member(&mut self) {
        if self.has_left {
            return;
        }
        let members = &self.members;
        let target = self.probe_order.sample(&mut self.rng, 1, |slot| {
            members.state_at(*slot) == Some(MemberState::Alive)
        });
        let Some(addr) = target
            .first()
            .and_then(|slot| self.members.at(*slot))
            .map(|m| m.identity.addr)
        else {
            return;
        };
        self.send_push_pull(addr, true);
    }

    /// After a partition both sides hold the other down and never probe
    /// it. A ping to one random down member now and then (serf's reconnect,
    /// but a ping instead of a full-state exchange) reaches it if it runs:
    /// whichever side holds the other down says so on receipt (see
    /// `tell_if_given_up`), the other refutes, and the refutation spreads.
    pub(super) fn ping_random_down_member(&mut self) {
        if self.has_left {
            return;
        }
        let down: Vec<_> = self
            .graveyard
            .iter()
            .filter(|(_, id)| {
                self.members
                    .get(id)
                    .is_some_and(|m| m.state == MemberState::Down)
            })
            .map(|(_, id)| *id)
            .take(super::MAX_RECONNECT_CANDIDATES)
            .collect();
        if down.is_empty() {
            return;
        }
        let pick = down[rand::Rng::gen_range(&mut self.rng, 0..down.len())];
        if let Some(addr) = self.members.get(&pick).map(|m| m.identity.addr) {
            let seq = self.next_seq();
            self.send(
                addr,
                SwimBody::Ping {
                    seq,
                    suspected_at: None,
                },
            );
        }
    }

    /// The join handshake: a push-pull to every seed.
    pub(super) fn send_join(&mut self) {
        let seeds = self.seeds.clone();
        for seed in seeds {
            self.send_push_pull(seed, true);
        }
    }

    pub(super) fn send_push_pull(&mut self, dst: SocketAddr, reply_wanted: bool) {
        let push_pull = self.full_state(reply_wanted);
        self.send_push_pull_body(dst, push_pull);
    }

    /// A push-pull that carries only our own record: asks for the peer's
    /// full state without pushing a view we know to be stale.
    pub(super) fn send_pull(&mut self, dst: SocketAddr) {
        let mut push_pull = self.full_state(true);
        push_pull.members.truncate(1);
        push_pull
            .states
            .truncate(usize::from(self.local_state.is_some()));
        self.send_push_pull_body(dst, push_pull);
    }

    fn send_push_pull_body(&mut self, dst: SocketAddr, push_pull: PushPull) {
        let message = SwimMessage {
            sender: self.identity.id,
            sender_store: self.identity.store,
            body: SwimBody::PushPull(push_pull),
            updates: Vec::new(),
        };
        let payload = encode(&message);
        debug_assert!(payload.len() <= MAX_STREAM_MESSAGE_BYTES);
        self.push_transmit(Transmit {
            dst,
            reliable: true,
            payload,
        });
    }

    /// Our member table (ourselves first) and state records, cut off before
    /// the message would outgrow a stream message.
    fn full_state(&self, reply_wanted: bool) -> PushPull {
        let mut budget = MAX_STREAM_MESSAGE_BYTES - PUSH_PULL_SLACK_BYTES;
        // Sizes are measured in one reused buffer: a thousand members made
        // a thousand short-lived allocations per exchange.
        let mut scratch = Vec::new();
        let mut members = Vec::with_capacity(self.members.len() + 1);
        let me = MemberRecord {
            id: self.identity.id,
            name: self.identity.name.clone(),
            addr: self.identity.addr,
            store: self.identity.store,
            incarnation: self.incarnation,
            state: if self.has_left {
                WireState::Left
            } else {
                WireState::Alive
            },
        };
        budget = budget.saturating_sub(encoded_len(&me, &mut scratch));
        members.push(me);
        let mut states = Vec::new();
        if let Some(state) = &self.local_state {
            let record = StateRecord {
                id: self.identity.id,
                state: state.clone(),
            };
            budget = budget.saturating_sub(encoded_len(&record, &mut scratch));
            states.push(record);
        }
        for member in self.members.sorted() {
            let record = MemberRecord {
                id: member.identity.id,
                name: member.identity.name.clone(),
                addr: member.identity.addr,
                store: member.identity.store,
                incarnation: member.incarnation,
                state: wire_state(member.state),
            };
            let size = encoded_len(&record, &mut scratch);
            if size > budget {
                break;
            }
            budget -= size;
            members.push(record);
        }
        for (id, state) in self.states.iter() {
            let record = StateRecord {
                id: *id,
                state: state.clone(),
            };
            let size = encoded_len(&record, &mut scratch);
            if size > budget {
                break;
            }
            budget -= size;
            states.push(record);
        }
        PushPull {
            reply_wanted,
            members,
            states,
        }
    }
}

/// The encoded size of `record`, measured in `scratch`.
fn encoded_len<T: Serialize>(record: &T, scratch: &mut Vec<u8>) -> usize {
    scratch.clear();
    encode_into(record, scratch);
    scratch.len()
}
