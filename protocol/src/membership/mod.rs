//! SWIM membership with the Lifeguard extensions (design §3).
//!
//! # Driving the machine
//! The host owns one [`Membership`] per node and, in any order it likes:
//! - feeds inputs: [`Membership::handle_join`], [`Membership::handle_datagram`]
//!   (every membership payload, datagram or stream), [`Membership::handle_timeout`]
//!   (whenever `now >= poll_timeout()`), [`Membership::handle_leave`],
//!   [`Membership::set_local_state`];
//! - then drains outputs until they return `None`: [`Membership::poll_transmit`],
//!   [`Membership::poll_event`], and re-arms its single timer from
//!   [`Membership::poll_timeout`].
//!
//! `now` must never go backwards. A call to `handle_timeout` earlier than the
//! deadline `poll_timeout` gave (a stale or spurious wake-up) changes nothing.
//!
//! Membership answers "who is probably alive". It is never the basis of
//! safety: leases are.

use crate::gossip::NodeState;
use crate::{Instant, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// Tunables. Use a preset and adjust.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Time between two probe rounds of this node.
    pub probe_interval: Duration,
    /// How long a direct probe waits for its ack before indirect probes go out.
    pub probe_timeout: Duration,
    /// How many members are asked to probe a target indirectly (`k`).
    pub indirect_probes: usize,
    /// Lifeguard `alpha`: the minimum suspicion timeout is
    /// `alpha * log10(N) * probe_interval`.
    pub suspicion_alpha: f64,
    /// Lifeguard `beta`: the maximum suspicion timeout is `beta` times the minimum.
    pub suspicion_beta: f64,
    /// Independent suspicions needed to fall from the maximum to the minimum
    /// suspicion timeout.
    pub suspicion_confirmations: u32,
    /// Dissemination `lambda`: an update is sent `lambda * ceil(log2(N+1))` times.
    pub retransmit_mult: u32,
    /// Time between two push-pull full-state exchanges of this node.
    pub push_pull_interval: Duration,
    /// Upper bound of the Lifeguard local health multiplier.
    pub max_local_health: u32,
    /// How long a down or left member is remembered before it is forgotten.
    pub down_retention: Duration,
    /// Interval between re-sends of a join to the seeds while unjoined.
    pub join_retry_interval: Duration,
}

impl Config {
    /// A LAN: sub-millisecond to few-millisecond latencies (design §3 defaults).
    pub fn lan() -> Self {
        Config {
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(200),
            indirect_probes: 3,
            suspicion_alpha: 4.0,
            suspicion_beta: 6.0,
            suspicion_confirmations: 3,
            retransmit_mult: 4,
            push_pull_interval: Duration::from_secs(30),
            max_local_health: 8,
            down_retention: Duration::from_secs(300),
            join_retry_interval: Duration::from_secs(1),
        }
    }

    /// A WAN: tens to hundreds of milliseconds of latency.
    pub fn wan() -> Self {
        Config {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            push_pull_interval: Duration::from_secs(60),
            ..Config::lan()
        }
    }

    /// One machine (loopback): fast probing for tests and demos.
    pub fn local() -> Self {
        Config {
            probe_interval: Duration::from_millis(200),
            probe_timeout: Duration::from_millis(100),
            push_pull_interval: Duration::from_secs(10),
            ..Config::lan()
        }
    }
}

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Derived from the node's certificate key.
    pub id: NodeId,
    /// Human-readable name, unique in the party by convention.
    pub name: String,
    /// The address other members reach this node at.
    pub addr: SocketAddr,
}

/// A member's state as one observer sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberState {
    /// Answering probes, or not yet suspected.
    Alive,
    /// Missed a probe; confirmed down unless it refutes in time.
    Suspect,
    /// Confirmed dead by suspicion timeout.
    Down,
    /// Announced a graceful leave.
    Left,
}

/// What one observer knows of one member.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member's identity.
    pub identity: Identity,
    /// Its state as this observer sees it.
    pub state: MemberState,
    /// The highest incarnation of it this observer has seen.
    pub incarnation: u64,
    /// When this observer last changed its state (observer's clock).
    pub state_since: Instant,
    /// When this observer last heard from it directly (observer's clock).
    pub last_heard: Option<Instant>,
    /// Its newest gossiped state record, if any.
    pub node_state: Option<NodeState>,
}

/// One payload for the host to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub dst: SocketAddr,
    /// `true` for a stream (reliable, may be large: push-pull), `false`
    /// for a datagram (at most [`crate::wire::MAX_DATAGRAM_BYTES`]).
    pub reliable: bool,
    /// The encoded message.
    pub payload: Vec<u8>,
}

/// Why a member's state changed, for the host's log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeReason {
    /// We heard from it, or of it, for the first time or at a newer incarnation.
    Joined,
    /// Our own probe (direct and indirect) went unanswered.
    ProbeFailed,
    /// Another member's suspicion reached us.
    SuspectedBy(NodeId),
    /// The suspicion timeout ran out without a refutation.
    SuspicionTimeout,
    /// Another member announced it down.
    DeclaredDownBy(NodeId),
    /// It refuted a suspicion with a higher incarnation.
    Refuted,
    /// It announced a graceful leave.
    Left,
    /// It was forgotten after `down_retention`.
    Forgotten,
}

/// Something the host may want to log or act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A member's state changed in our view.
    MemberChanged {
        /// The member.
        id: NodeId,
        /// Its name.
        name: String,
        /// Its new state.
        state: MemberState,
        /// Its incarnation in our view.
        incarnation: u64,
        /// Why.
        reason: ChangeReason,
    },
    /// A member's gossiped state record was replaced by a newer one.
    NodeStateUpdated {
        /// The member.
        id: NodeId,
    },
    /// We were suspected or declared down and raised our own incarnation.
    SelfRefuted {
        /// Our new incarnation.
        incarnation: u64,
    },
}

/// Why an input was rejected. No variant changes the machine's state.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum InputError {
    /// The payload could not be decoded; dropped.
    #[error("undecodable membership payload: {0}")]
    Decode(#[from] crate::wire::DecodeError),
    /// The payload claims a sender other than the authenticated peer.
    #[error("payload claims sender {claimed} but the peer is {authenticated}")]
    SpoofedSender {
        /// The sender named in the payload.
        claimed: NodeId,
        /// The peer the transport authenticated.
        authenticated: NodeId,
    },
}

/// Counters for metrics and for the simulator's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Direct probes sent.
    pub probes_sent: u64,
    /// Probes that got no ack, direct or indirect.
    pub probes_failed: u64,
    /// Indirect probe requests sent.
    pub indirect_probes_sent: u64,
    /// Suspicions this node raised.
    pub suspicions_raised: u64,
    /// Suspicions about this node that it refuted.
    pub suspicions_refuted: u64,
    /// Inputs dropped because they did not decode or were spoofed.
    pub inputs_rejected: u64,
    /// Payloads handed to the host.
    pub transmits: u64,
    /// Bytes handed to the host.
    pub bytes_out: u64,
}

/// The membership machine of one node.
#[derive(Debug)]
pub struct Membership {
    identity: Identity,
    config: Config,
    incarnation: u64,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
}

impl Membership {
    /// A machine for `identity`, alone until it joins. `seed` feeds the
    /// machine's own RNG (probe order, indirect probe choice). A restarted
    /// node that remembers its last incarnation passes it as
    /// `initial_incarnation` (the protocol also refutes its way up if not).
    pub fn new(
        identity: Identity,
        config: Config,
        seed: u64,
        initial_incarnation: u64,
        _now: Instant,
    ) -> Self {
        let _ = seed;
        Membership {
            identity,
            config,
            incarnation: initial_incarnation,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    /// Starts (or restarts) joining through seed addresses; retried every
    /// `join_retry_interval` until some member answers.
    pub fn handle_join(&mut self, _now: Instant, _seeds: &[SocketAddr]) {}

    /// A membership payload from the authenticated peer `src_id` at `src`.
    pub fn handle_datagram(
        &mut self,
        _now: Instant,
        _src: SocketAddr,
        _src_id: NodeId,
        _payload: &[u8],
    ) -> Result<(), InputError> {
        Ok(())
    }

    /// The timer fired. Harmless when called early.
    pub fn handle_timeout(&mut self, _now: Instant) {}

    /// Announces a graceful leave; the host should drain transmits, wait a
    /// moment for them to go out, then stop.
    pub fn handle_leave(&mut self, _now: Instant) {}

    /// Replaces this node's own state record (the machine assigns the version).
    pub fn set_local_state(&mut self, _now: Instant, _state: NodeState) {}

    /// Next payload to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the host.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When to call `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Lifeguard local health multiplier: 0 is healthy, up to
    /// `max_local_health`.
    pub fn local_health(&self) -> u32 {
        0
    }

    /// Every member this node knows of (not itself), in id order.
    pub fn members(&self) -> Vec<Member> {
        Vec::new()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The active configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }
}
