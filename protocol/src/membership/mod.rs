//! SWIM membership with the Lifeguard extensions (docs/protocol.md §3).
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
//!
//! # The protocol, and where each part lives
//! - `probe`: every `probe_interval` (times the local health multiplier,
//!   LHM + 1) the next member of a shuffled round-robin list gets a ping; no
//!   ack within `probe_timeout` sends `indirect_probes` ping-reqs through
//!   alive members, which ping the target and relay its ack or answer with a
//!   nack. No ack by the end of the round makes the target suspect. A ping
//!   to a suspect names the suspected incarnation (buddy system).
//! - `suspicion`: Lifeguard's timeout, from `beta * min` down to
//!   `min = alpha * log10(N) * probe_interval` as independent suspicions
//!   arrive; then the member is declared down.
//! - `merge`: newer information wins (higher incarnation; at equal
//!   incarnation alive < suspect < down < left); a node told it is suspect,
//!   down or left at its own incarnation or above refutes with a higher one.
//!   Only a member raises its own incarnation. A node that finds itself more
//!   than a probe interval behind its own timer (paused) refutes at once.
//! - `broadcast`: updates ride on every datagram, fewest-sent first, each
//!   sent `retransmit_mult * ceil(log2(N+1))` times; pending updates also go
//!   to `gossip_fanout` random members every `gossip_interval`.
//! - `outbound`/`inbound`: push-pull full-state exchange (the join handshake,
//!   periodic anti-entropy scaled with N); every `reconnect_interval` a ping
//!   to one random down member; a member held down that talks to us is told
//!   so, which heals partitions.
//! - `timer`: one enum of timer kinds and a fixed table of deadlines.
//!
//! Everything is deterministic from `seed` and the inputs: collections are
//! ordered, the RNG is ChaCha8 seeded once. Every queue and table is bounded
//! (the `MAX_*` constants).

mod broadcast;
mod config;
mod inbound;
mod index;
mod merge;
mod outbound;
mod probe;
mod stores;
mod suspicion;
mod table;
mod timer;

pub use broadcast::MAX_PENDING_UPDATES;
pub use config::{
    Config, ConfigError, MAX_GOSSIP_FANOUT, MAX_INDIRECT_PROBES, MAX_LOCAL_HEALTH,
    MAX_RETRANSMIT_MULT,
};
pub use stores::{StoreBook, StoreJudgement, MAX_REMEMBERED_STORES};

use crate::gossip::{NodeState, StateTable};
use crate::{Instant, NodeId, StoreId};
use broadcast::BroadcastQueue;
use probe::{PendingProbe, ProbeOrder, Relay};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::Duration;
use suspicion::Suspicion;
use table::MemberTable;
use thiserror::Error;
use timer::{Timer, TimerTable};

/// Most members one node tracks; gossip about more is ignored.
pub const MAX_MEMBERS: usize = 16_384;
/// Most seed addresses a join goes to.
pub const MAX_SEEDS: usize = 64;
/// Most indirect probes this node runs for others at once.
pub const MAX_RELAYS: usize = 256;
/// Most transmits waiting for the host; past it the oldest is dropped
/// (as a full socket buffer would).
pub const MAX_QUEUED_TRANSMITS: usize = 16_384;
/// Most events waiting for the host; past it the oldest is dropped.
pub const MAX_QUEUED_EVENTS: usize = 65_536;
/// Down members considered for a reconnecting ping (the oldest are the
/// first candidates: they were down the longest).
pub const MAX_RECONNECT_CANDIDATES: usize = 1024;
/// Members told directly that we hold them down, per push-pull received.
pub const MAX_VERDICTS_PER_PUSH_PULL: usize = 256;
/// Passes over the timer table in one `handle_timeout`.
const MAX_TIMER_PASSES: usize = 4;
/// Most updates applied from one message.
pub const MAX_UPDATES_PER_MESSAGE: usize = 256;
/// A joiner learns the members in its seed's full state without gossiping
/// them on (the seed's own gossip and everyone else's push-pull already
/// cover them, and re-gossiping a thousand-member table from every joiner
/// cost O(N^2 log N) updates). Members that joined at about the same time
/// as this node reach it only by gossip among the few others that did not
/// know them yet, which can miss; one more full-state exchange this long
/// after joining, once such a burst of joins is over, closes those gaps.
pub const JOIN_SETTLE: Duration = Duration::from_secs(10);

/// Who this node is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Derived from the node's certificate key.
    pub id: NodeId,
    /// Human-readable name, unique in the party by convention.
    pub name: String,
    /// The address other members reach this node at.
    pub addr: SocketAddr,
    /// The data directory this node runs on.
    pub store: StoreId,
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
    /// A member's store was seen for the first time; the host persists it.
    StoreLearned {
        /// The member.
        id: NodeId,
        /// Its store.
        store: StoreId,
    },
    /// A member came back under its NodeId with another store (its data
    /// directory was lost) and is refused until it returns with its own.
    /// Raised when the refusal starts, not for every dropped message.
    ForeignStoreRefused {
        /// The member.
        id: NodeId,
        /// Where its message came from.
        addr: SocketAddr,
        /// The store the party knows it by.
        known: StoreId,
        /// The store it came back with.
        found: StoreId,
    },
    /// A member refused us: it knows our NodeId with another store. This
    /// node must not take part under this identity (see `shoal ca issue`).
    RefusedByPeer {
        /// The member that refused us.
        by: NodeId,
        /// The store it knows our NodeId by.
        known_store: StoreId,
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
    /// Times this node found itself far behind its own probe timer (paused
    /// or starved) and refuted pre-emptively.
    pub stalls: u64,
    /// Periodic push-pull rounds started (joins not counted).
    pub push_pulls_started: u64,
    /// Messages and records dropped because they named a member with
    /// another store than the one it is known by.
    pub foreign_stores_refused: u64,
}

/// The membership machine of one node.
#[derive(Debug)]
pub struct Membership {
    identity: Identity,
    config: Config,
    incarnation: u64,
    rng: ChaCha8Rng,
    /// Every other member we know, live or remembered as down/left.
    members: MemberTable,
    /// Members in state Alive or Suspect (the `N` of the formulas, minus us).
    live_count: usize,
    states: StateTable,
    stores: StoreBook,
    local_state: Option<NodeState>,
    local_health: u32,
    has_left: bool,
    joined: bool,
    seeds: Vec<SocketAddr>,
    timers: TimerTable,
    suspicions: BTreeMap<NodeId, Suspicion>,
    /// Down and left members by the time they entered that state.
    graveyard: BTreeSet<(Instant, NodeId)>,
    probe_order: ProbeOrder,
    probe: Option<PendingProbe>,
    relays: BTreeMap<u32, Relay>,
    next_seq: u32,
    broadcasts: BroadcastQueue,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    created_at: Instant,
    /// Set when a message told us we are down: pull its sender's view.
    resync_wanted: bool,
    last_resync: Option<Instant>,
    /// Set when a message carried news of us older than our incarnation.
    sender_has_stale_news: bool,
    /// This node's random phase in the push-pull cycle, in per mille.
    push_pull_phase_permille: u32,
    /// The next tick of the gossip cycle. The gossip timer is armed only
    /// while updates wait: an idle node would otherwise wake ten times a
    /// second for nothing (half of a large simulation's events).
    gossip_due: Instant,
}

impl Membership {
    /// A machine for `identity`, alone until it joins. `seed` feeds the
    /// machine's own RNG (probe order, indirect probe choice). A restarted
    /// node that remembers its last incarnation passes it as
    /// `initial_incarnation` (the protocol also refutes its way up if not).
    ///
    /// A config that [`Config::validate`] rejects is repaired with the LAN
    /// preset's values for the bad fields.
    pub fn new(
        identity: Identity,
        config: Config,
        seed: u64,
        initial_incarnation: u64,
        now: Instant,
    ) -> Self {
        let config = config.sanitized();
        let mut m = Membership {
            identity,
            config,
            incarnation: initial_incarnation,
            rng: ChaCha8Rng::seed_from_u64(seed),
            members: MemberTable::default(),
            live_count: 0,
            states: StateTable::default(),
            stores: StoreBook::default(),
            local_state: None,
            local_health: 0,
            has_left: false,
            joined: false,
            seeds: Vec::new(),
            timers: TimerTable::default(),
            suspicions: BTreeMap::new(),
            graveyard: BTreeSet::new(),
            probe_order: ProbeOrder::default(),
            probe: None,
            relays: BTreeMap::new(),
            next_seq: 0,
            broadcasts: BroadcastQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            created_at: now,
            resync_wanted: false,
            last_resync: None,
            sender_has_stale_news: false,
            push_pull_phase_permille: 0,
            gossip_due: now,
        };
        // Random phases keep the nodes of a cluster started together from
        // probing and exchanging in lockstep.
        let probe_at = now + m.jitter(m.config.probe_interval);
        m.timers.set(Timer::Probe, probe_at);
        m.gossip_due = now + m.jitter(m.config.gossip_interval);
        m.push_pull_phase_permille = rand::Rng::gen_range(&mut m.rng, 0..1000);
        let push_pull_at = m.first_push_pull_at(m.config.push_pull_interval);
        m.timers.set(Timer::PushPull, push_pull_at);
        let reconnect_at =
            now + m.config.reconnect_interval + m.jitter(m.config.reconnect_interval);
        m.timers.set(Timer::Reconnect, reconnect_at);
        m
    }

    /// Starts (or restarts) joining through seed addresses; retried every
    /// `join_retry_interval` until some member answers. Our own address
    /// among the seeds is skipped; with no other seed this node stays a
    /// party of one until someone joins it.
    pub fn handle_join(&mut self, now: Instant, seeds: &[SocketAddr]) {
        if self.has_left {
            return;
        }
        self.seeds = seeds
            .iter()
            .filter(|addr| **addr != self.identity.addr)
            .take(MAX_SEEDS)
            .copied()
            .collect();
        self.seeds.dedup();
        if self.seeds.is_empty() {
            self.timers.stop(Timer::Join);
            return;
        }
        self.joined = false;
        self.send_join();
        let retry_at = now + self.config.join_retry_interval;
        self.timers.set(Timer::Join, retry_at);
    }

    /// The timer fired. Harmless when called early: only expired timers run.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.timers.is_expired(Timer::Probe, now) {
            self.detect_stall(now);
        }
        // One handler can pull another deadline into the past (our own
        // failed probe confirms a suspicion), so run until none is due.
        // Every handler re-arms its timer after `now`, so a few passes do.
        for _ in 0..MAX_TIMER_PASSES {
            let mut ran = false;
            for timer in Timer::VALUES {
                if self.timers.is_expired(timer, now) {
                    self.on_timer(timer, now);
                    self.refresh_derived_timers(now);
                    ran = true;
                }
            }
            if !ran {
                break;
            }
        }
    }

    /// Announces a graceful leave; the host should drain transmits, wait a
    /// moment for them to go out, then stop. The machine stops probing and
    /// answering, and keeps gossiping the leave while the host lets it run.
    pub fn handle_leave(&mut self, now: Instant) {
        if self.has_left {
            return;
        }
        self.has_left = true;
        self.broadcasts.push(crate::wire::swim::Update::Left {
            id: self.identity.id,
            incarnation: self.incarnation,
        });
        for timer in [
            Timer::Probe,
            Timer::ProbeTimeout,
            Timer::PushPull,
            Timer::Join,
            Timer::Settle,
        ] {
            self.timers.stop(timer);
        }
        self.probe = None;
        // Tell more members than a gossip round would: the host stops soon.
        let fanout = self.config.gossip_fanout.max(1) * 3;
        self.gossip_to_random_members(fanout);
        self.refresh_derived_timers(now);
    }

    /// Replaces this node's own state record (the machine assigns the
    /// version: one more than any version of ours seen so far).
    pub fn set_local_state(&mut self, now: Instant, state: NodeState) {
        let version = self
            .local_state
            .as_ref()
            .map_or(0, |s| s.version)
            .max(state.version)
            .saturating_add(1);
        let state = NodeState { version, ..state };
        self.local_state = Some(state.clone());
        self.broadcasts.push(crate::wire::swim::Update::State(
            crate::wire::swim::StateRecord {
                id: self.identity.id,
                state,
            },
        ));
        self.refresh_derived_timers(now);
    }

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
        self.timers.next_timeout()
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Remembers that `id` runs on `store` (the host loading the book it
    /// persisted from [`Event::StoreLearned`]); a store already remembered
    /// for `id` is kept.
    pub fn remember_store(&mut self, id: NodeId, store: StoreId) {
        if id != self.identity.id {
            self.stores.remember(id, store);
        }
    }

    /// The store each member is remembered with.
    pub fn stores(&self) -> &StoreBook {
        &self.stores
    }

    /// Whether `id`'s latest message came with another store than the one
    /// it is known by: the host drops its other traffic as well.
    pub fn refuses(&self, id: &NodeId) -> bool {
        self.stores.refuses(id)
    }

    /// This node's current incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Lifeguard local health multiplier: 0 is healthy, up to
    /// `max_local_health`.
    pub fn local_health(&self) -> u32 {
        self.local_health
    }

    /// Every member this node knows of (not itself), in id order.
    pub fn members(&self) -> Vec<Member> {
        self.members
            .sorted()
            .into_iter()
            .map(|m| self.members.view(m))
            .collect()
    }

    /// Every member this node knows of (not itself), in no promised order,
    /// without copying: for hosts that scan the whole view often. Their
    /// `last_heard` is not filled in (see [`Membership::member`]).
    pub fn members_unordered(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The active configuration (after repair of invalid fields).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What this node knows of one member (`None` for itself and for
    /// members it never heard of or has forgotten).
    pub fn member(&self, id: &NodeId) -> Option<Member> {
        self.members.get(id).map(|m| self.members.view(m))
    }

    /// Members this node sees in state [`MemberState::Alive`], itself not counted.
    pub fn alive_count(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Alive)
            .count()
    }

    /// The cluster size `N` the formulas use: members seen alive or
    /// suspect, plus this node.
    pub fn cluster_size(&self) -> usize {
        self.live_count + 1
    }

    /// The timeout a suspicion raised now would start with (Lifeguard's
    /// maximum at the current cluster size); it falls toward
    /// [`Membership::suspicion_timeout_range`]'s minimum as independent
    /// confirmations arrive.
    pub fn suspicion_timeout_now(&self) -> Duration {
        self.config.suspicion_timeout_max(self.cluster_size())
    }

    /// Lifeguard's `(min, max)` suspicion timeout at the current cluster size.
    pub fn suspicion_timeout_range(&self) -> (Duration, Duration) {
        let n = self.cluster_size();
        (
            self.config.suspicion_timeout_min(n),
            self.config.suspicion_timeout_max(n),
        )
    }

    /// When a suspected member will be declared down unless it refutes, and
    /// how many independent confirmations shortened that so far.
    pub fn suspicion_of(&self, id: &NodeId) -> Option<(Instant, u32)> {
        self.suspicions
            .get(id)
            .map(|s| (s.deadline(), s.confirmations()))
    }

    /// The probe interval in force, stretched by the local health multiplier.
    pub fn probe_interval_now(&self) -> Duration {
        self.scaled(self.config.probe_interval)
    }

    /// Whether some member answered our join (or we never needed one).
    pub fn is_joined(&self) -> bool {
        self.joined || self.seeds.is_empty()
    }

    /// Whether [`Membership::handle_leave`] was called.
    pub fn has_left(&self) -> bool {
        self.has_left
    }

    /// Updates waiting to be piggybacked.
    pub fn pending_updates(&self) -> usize {
        self.broadcasts.len()
    }

    /// This node's own state record as last set, with its assigned version.
    pub fn local_state(&self) -> Option<&NodeState> {
        self.local_state.as_ref()
    }

    fn on_timer(&mut self, timer: Timer, now: Instant) {
        match timer {
            Timer::Probe => {
                self.end_probe_round(now);
                self.start_probe_round(now);
                let next = now + self.scaled(self.config.probe_interval);
                self.timers.set(Timer::Probe, next);
            }
            Timer::ProbeTimeout => {
                self.timers.stop(Timer::ProbeTimeout);
                self.probe_indirectly();
            }
            Timer::Relay => self.expire_relays(now),
            Timer::Suspicion => self.expire_suspicions(now),
            Timer::Gossip => {
                self.gossip_to_random_members(self.config.gossip_fanout);
                self.gossip_due = now + self.config.gossip_interval;
                // Stopped again by `refresh_derived_timers` if nothing waits.
                self.timers.set(Timer::Gossip, self.gossip_due);
            }
            Timer::PushPull => {
                let interval = self.config.push_pull_interval_for(self.cluster_size());
                let first_at = self.first_push_pull_at(interval);
                if self.stats.push_pulls_started == 0 && first_at > now {
                    // The cluster grew since we armed it: keep our phase
                    // in the longer cycle so the first exchanges of a
                    // cluster started together do not come all at once.
                    self.timers.set(Timer::PushPull, first_at);
                    return;
                }
                self.stats.push_pulls_started += 1;
                self.push_pull_with_random_member();
                self.timers.set(Timer::PushPull, now + interval);
            }
            Timer::Join => {
                if self.joined {
                    self.timers.stop(Timer::Join);
                } else {
                    self.send_join();
                    let next = now + self.config.join_retry_interval;
                    self.timers.set(Timer::Join, next);
                }
            }
            Timer::Reap => self.reap(now),
            Timer::Reconnect => {
                self.ping_random_down_member();
                let next = now + self.config.reconnect_interval;
                self.timers.set(Timer::Reconnect, next);
            }
            Timer::Settle => {
                self.timers.stop(Timer::Settle);
                self.push_pull_with_random_member();
            }
        }
    }

    /// Re-derives the timers that mirror tables (suspicions, relays, the
    /// graveyard, waiting updates), so `poll_timeout` always reflects the
    /// state.
    fn refresh_derived_timers(&mut self, now: Instant) {
        if self.broadcasts.is_empty() {
            self.timers.stop(Timer::Gossip);
        } else if self.timers.get(Timer::Gossip).is_none() {
            // Idle until now: resume on the cycle's next tick after `now`,
            // as if the timer had kept ticking.
            if self.gossip_due <= now {
                let interval = crate::time::duration_ms(self.config.gossip_interval).max(1);
                let behind = now.as_millis() - self.gossip_due.as_millis();
                let ticks = behind / interval + 1;
                self.gossip_due = self
                    .gossip_due
                    .saturating_add(Duration::from_millis(ticks.saturating_mul(interval)));
            }
            self.timers.set(Timer::Gossip, self.gossip_due);
        }
        let suspicion = self.suspicions.values().map(Suspicion::deadline).min();
        self.timers.set_opt(Timer::Suspicion, suspicion);
        let relay = self.relays.values().map(|r| r.deadline).min();
        self.timers.set_opt(Timer::Relay, relay);
        let reap = self
            .graveyard
            .first()
            .map(|(since, _)| *since + self.config.down_retention);
        self.timers.set_opt(Timer::Reap, reap);
    }

    /// Lifeguard: a node that falls behind its own timers was paused or
    /// starved, and was very likely suspected meanwhile. It slows down and
    /// refutes at once instead of waiting to be told (a paused node's
    /// refutation must beat the suspicion timeout).
    fn detect_stall(&mut self, now: Instant) {
        let Some(deadline) = self.timers.get(Timer::Probe) else {
            return;
        };
        let late = now.saturating_duration_since(deadline);
        if late <= self.config.probe_interval || self.has_left || self.live_count == 0 {
            return;
        }
        self.stats.stalls += 1;
        self.bump_local_health();
        self.incarnation = self.incarnation.saturating_add(1);
        self.push_event(Event::SelfRefuted {
            incarnation: self.incarnation,
        });
        self.broadcast_self_alive();
    }

    fn expire_suspicions(&mut self, now: Instant) {
        let due: Vec<(NodeId, u64)> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline() <= now)
            .map(|(id, s)| (*id, s.incarnation))
            .collect();
        let me = self.identity.id;
        for (id, incarnation) in due {
            self.on_down(now, id, incarnation, me);
            // Never leave an expired suspicion armed (the host would spin).
            self.suspicions.remove(&id);
        }
    }

    fn reap(&mut self, now: Instant) {
        let retention = self.config.down_retention;
        while let Some(&(since, id)) = self.graveyard.first() {
            if since + retention > now {
                break;
            }
            self.graveyard.pop_first();
            if let Some(member) = self.members.remove(&id) {
                self.states.remove(&id);
                self.push_event(Event::MemberChanged {
                    id,
                    name: member.identity.name,
                    state: member.state,
                    incarnation: member.incarnation,
                    reason: ChangeReason::Forgotten,
                });
            }
        }
    }

    /// When this node's first push-pull is due in a cycle of `interval`.
    fn first_push_pull_at(&self, interval: Duration) -> Instant {
        let phase = interval.mul_f64(f64::from(self.push_pull_phase_permille) / 1000.0);
        self.created_at + phase.max(Duration::from_millis(1))
    }

    /// `d` stretched by the Lifeguard local health multiplier.
    fn scaled(&self, d: Duration) -> Duration {
        d.saturating_mul(self.local_health + 1)
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        use rand::Rng;
        let ms = crate::time::duration_ms(d).max(1);
        Duration::from_millis(self.rng.gen_range(0..ms))
    }

    fn bump_local_health(&mut self) {
        self.local_health = (self.local_health + 1).min(self.config.max_local_health);
    }

    fn push_event(&mut self, event: Event) {
        if self.events.len() >= MAX_QUEUED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}
