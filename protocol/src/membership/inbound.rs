//! Decoding, authenticating and dispatching one received payload.

use super::{
    Event, InputError, MemberState, Membership, StoreJudgement, MAX_UPDATES_PER_MESSAGE,
    MAX_VERDICTS_PER_PUSH_PULL,
};
use crate::wire::swim::{PushPull, SwimBody, SwimMessageRef, Update};
use crate::wire::{decode_borrowed, DecodeError, MAX_DATAGRAM_BYTES, MAX_STREAM_MESSAGE_BYTES};
use crate::{Instant, NodeId, StoreId};
use std::net::SocketAddr;

impl Membership {
    /// A membership payload from the authenticated peer `src_id` at `src`.
    ///
    /// A payload longer than a datagram can only have come on a stream, and
    /// only a push-pull may be that long. A rejected payload changes
    /// nothing but [`super::Stats::inputs_rejected`].
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        src: SocketAddr,
        src_id: NodeId,
        payload: &[u8],
    ) -> Result<(), InputError> {
        let message = match Self::authenticate(src_id, payload) {
            Ok(message) => message,
            Err(error) => {
                self.stats.inputs_rejected += 1;
                return Err(error);
            }
        };
        if message.sender == self.identity.id || self.has_left {
            return Ok(());
        }
        if let SwimBody::Refused { known_store } = message.body {
            self.push_event(Event::RefusedByPeer {
                by: message.sender,
                known_store,
            });
            return Ok(());
        }
        if !self.admit_sender(src, message.sender, message.sender_store) {
            return Ok(());
        }
        self.members.touch(&message.sender, now);
        for update in message.updates.into_iter().take(MAX_UPDATES_PER_MESSAGE) {
            self.apply_update(now, update);
        }
        let sender = message.sender;
        self.tell_if_given_up(src, sender);
        match message.body {
            SwimBody::Ping { seq, suspected_at } => self.on_ping(now, src, seq, suspected_at),
            SwimBody::Ack { seq } => self.on_ack(sender, seq),
            SwimBody::Nack { seq } => self.on_nack(sender, seq),
            SwimBody::PingReq {
                seq,
                target,
                target_addr,
            } => self.on_ping_req(now, src, seq, target, target_addr),
            SwimBody::Gossip | SwimBody::Refused { .. } => {}
            SwimBody::PushPull(push_pull) => {
                self.on_push_pull(now, src, sender, push_pull);
                // A full state just arrived: nothing left to pull.
                self.resync_wanted = false;
            }
        }
        if !self.joined && !self.seeds.is_empty() {
            // Still joining (the seeds may all be gone) and a member found
            // us: join through it as well.
            self.resync_wanted = true;
        }
        if std::mem::take(&mut self.resync_wanted) {
            self.resync_with(now, src);
        }
        if std::mem::take(&mut self.sender_has_stale_news) {
            let me = self.self_alive_update();
            self.send_with(src, SwimBody::Gossip, vec![me]);
        }
        self.refresh_derived_timers(now);
        Ok(())
    }

    /// Judges the store a message's sender runs on. A NodeId the party
    /// knows with another store is a node that lost its data directory but
    /// kept its certificate: its message is dropped and it is told so,
    /// which makes it stop (`Event::RefusedByPeer` on its side).
    fn admit_sender(&mut self, src: SocketAddr, sender: NodeId, store: StoreId) -> bool {
        let was_refused = self.stores.refuses(&sender);
        match self.stores.judge_sender(sender, store) {
            StoreJudgement::Known => true,
            StoreJudgement::Learned => {
                self.push_event(Event::StoreLearned { id: sender, store });
                true
            }
            StoreJudgement::Foreign { known } => {
                self.stats.foreign_stores_refused += 1;
                if !was_refused {
                    self.push_event(Event::ForeignStoreRefused {
                        id: sender,
                        addr: src,
                        known,
                        found: store,
                    });
                }
                self.send_with(src, SwimBody::Refused { known_store: known }, Vec::new());
                false
            }
        }
    }

    /// A member we hold down or left is talking to us, so it is running and
    /// does not know: tell it at once so it refutes. After a partition this
    /// is what lets both sides find each other again within seconds.
    fn tell_if_given_up(&mut self, src: SocketAddr, sender: NodeId) {
        let Some(member) = self.members.hot(&sender) else {
            return;
        };
        let incarnation = member.incarnation;
        let verdict = match member.state {
            MemberState::Down => Update::Down {
                id: sender,
                incarnation,
                by: self.identity.id,
            },
            MemberState::Left => Update::Left {
                id: sender,
                incarnation,
            },
            MemberState::Alive | MemberState::Suspect => return,
        };
        self.send_with(src, SwimBody::Gossip, vec![verdict]);
    }

    /// Pulls `src`'s full state (sending only our own record), at most once
    /// per `reconnect_interval`: after it, each member we wrongly hold down
    /// is told so directly and refutes.
    fn resync_with(&mut self, now: Instant, src: SocketAddr) {
        let due = self
            .last_resync
            .is_none_or(|at| now >= at + self.config.reconnect_interval);
        if due {
            self.last_resync = Some(now);
            self.send_pull(src);
        }
    }

    fn authenticate(src_id: NodeId, payload: &[u8]) -> Result<SwimMessageRef<'_>, InputError> {
        let on_stream = payload.len() > MAX_DATAGRAM_BYTES;
        let limit = if on_stream {
            MAX_STREAM_MESSAGE_BYTES
        } else {
            MAX_DATAGRAM_BYTES
        };
        let message: SwimMessageRef<'_> = decode_borrowed(payload, limit)?;
        if message.sender != src_id {
            return Err(InputError::SpoofedSender {
                claimed: message.sender,
                authenticated: src_id,
            });
        }
        if on_stream && !matches!(message.body, SwimBody::PushPull(_)) {
            return Err(InputError::Decode(DecodeError::TooLarge {
                len: payload.len(),
                limit: MAX_DATAGRAM_BYTES,
            }));
        }
        Ok(message)
    }

    fn on_push_pull(&mut self, now: Instant, src: SocketAddr, sender: NodeId, push_pull: PushPull) {
        let PushPull {
            reply_wanted,
            members,
            states,
        } = push_pull;
        let mut verdicts = Vec::new();
        for record in members {
            if let Some(verdict) = self.apply_record(now, sender, record) {
                if verdicts.len() < MAX_VERDICTS_PER_PUSH_PULL {
                    verdicts.push(verdict);
                }
            }
        }
        for (addr, verdict) in verdicts {
            self.send_with(addr, SwimBody::Gossip, vec![verdict]);
        }
        for record in states {
            self.on_state(record);
        }
        self.members.touch(&sender, now);
        if !self.joined && !self.seeds.is_empty() {
            self.timers
                .set(super::Timer::Settle, now + super::JOIN_SETTLE);
        }
        self.joined = true;
        self.timers.stop(super::Timer::Join);
        if reply_wanted {
            self.send_push_pull(src, false);
        }
    }
}
