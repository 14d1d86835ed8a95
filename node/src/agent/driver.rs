//! The task that owns the membership machine: it feeds it inbound frames,
//! timer expiries and local commands, and carries out what it polls out.
//! It decides nothing itself.

use super::clock::Clock;
use super::incarnation::IncarnationFile;
use super::member_stores::MemberStoresFile;
use crate::metrics::Metrics;
use crate::transport::{Inbound, Transport};
use shoal_protocol::gossip::NodeState;
use shoal_protocol::membership::{
    ChangeReason, Event, Identity, Member, MemberState, Membership, Stats,
};
use shoal_protocol::wire::Channel;
use shoal_protocol::{Instant, NodeId, StoreId};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Inbound frames handled per wake-up before timers get a turn.
const MAX_INBOUND_BATCH: usize = 256;
/// Outputs drained per wake-up; the machine's queues are bounded by its
/// own design, this only guards against a bug looping the host.
const MAX_DRAIN: usize = 100_000;
/// Rejoin backoff while this node knows no live member.
const REJOIN_MIN: Duration = Duration::from_secs(1);
const REJOIN_MAX: Duration = Duration::from_secs(30);
/// Upper bound on a sleep when the machine wants no timer.
const IDLE_WAKE: Duration = Duration::from_secs(3600);

/// What the rest of the agent can ask the driver.
#[derive(Debug)]
pub enum Command {
    /// A copy of the current view.
    Snapshot(oneshot::Sender<Snapshot>),
    /// Replace this node's gossiped state record.
    SetLocalState(NodeState),
    /// Announce a graceful leave; answered once the leave is handed to the
    /// transport.
    Leave(oneshot::Sender<u64>),
}

/// This node's view of the mesh at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Who we are.
    pub identity: Identity,
    /// Our incarnation.
    pub incarnation: u64,
    /// Lifeguard local health multiplier.
    pub local_health: u32,
    /// Everyone else we know of.
    pub members: Vec<Member>,
    /// Counters.
    pub stats: Stats,
    /// Our own state record as the membership gossips it; `None` until the
    /// state publisher's first sample, so nobody judges a node by a blank
    /// record.
    pub local_state: Option<NodeState>,
    /// When the snapshot was taken.
    pub now: Instant,
    /// We have seen another member alive at least once.
    pub joined: bool,
}

impl Snapshot {
    /// Members per state, ourselves counted alive.
    pub fn counts(&self) -> Vec<(MemberState, usize)> {
        [
            MemberState::Alive,
            MemberState::Suspect,
            MemberState::Down,
            MemberState::Left,
        ]
        .into_iter()
        .map(|s| {
            let others = self.members.iter().filter(|m| m.state == s).count();
            (s, others + usize::from(s == MemberState::Alive))
        })
        .collect()
    }
}

/// A peer knows this node's NodeId with another store: this data directory
/// is not the one the certificate served, and the node must stop.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The refusing member, by name when known.
    pub by: String,
    /// The store the party knows this NodeId by.
    pub known_store: StoreId,
    /// This node's store.
    pub own_store: StoreId,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "member {} refused this node: the party knows this node's certificate with the data \
             directory (store) {}, but this node runs on store {}. A node that lost its data must \
             come back under a new identity (its acceptors forgot their promises): issue it a new \
             certificate with `shoal ca issue --dir CA --node NAME --out DIR` and start it with \
             that, or restore the old data directory",
            self.by.escape_debug(),
            self.known_store.to_hex(),
            self.own_store.to_hex()
        )
    }
}

/// The driver task's state.
pub struct Driver {
    membership: Membership,
    clock: Clock,
    transport: Transport,
    metrics: Arc<Metrics>,
    seeds: Vec<SocketAddr>,
    incarnation_file: IncarnationFile,
    joined: bool,
    forward: Option<mpsc::Sender<Inbound>>,
    stores_file: Option<MemberStoresFile>,
    stores_dirty: bool,
    refusal: Option<oneshot::Sender<Refusal>>,
}

impl Driver {
    /// A driver for `membership`; `seeds` empty means single-node.
    pub fn new(
        membership: Membership,
        clock: Clock,
        transport: Transport,
        metrics: Arc<Metrics>,
        seeds: Vec<SocketAddr>,
        incarnation_file: IncarnationFile,
    ) -> Driver {
        Driver {
            membership,
            clock,
            transport,
            metrics,
            seeds,
            incarnation_file,
            joined: false,
            forward: None,
            stores_file: None,
            stores_dirty: false,
            refusal: None,
        }
    }

    /// Loads the member stores persisted in `file` into the machine and
    /// keeps the file up to date as it learns more.
    pub fn with_member_stores(mut self, file: MemberStoresFile) -> Driver {
        for (id, store) in file.load() {
            self.membership.remember_store(id, store);
        }
        self.stores_file = Some(file);
        self
    }

    /// Sends on `refusal` (once) when a peer refuses this node's store.
    pub fn on_refusal(mut self, refusal: oneshot::Sender<Refusal>) -> Driver {
        self.refusal = Some(refusal);
        self
    }

    /// Hands every Paxos and Task frame to `forward` (the task host).
    pub fn with_forward(mut self, forward: mpsc::Sender<Inbound>) -> Driver {
        self.forward = Some(forward);
        self
    }

    /// Runs until every command sender is gone.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<Inbound>,
    ) {
        if !self.seeds.is_empty() {
            self.membership.handle_join(self.clock.now(), &self.seeds);
        }
        self.drain();
        let mut rejoin_after = REJOIN_MIN;
        let mut rejoin_at = tokio::time::Instant::now() + rejoin_after;
        loop {
            let timer = self
                .membership
                .poll_timeout()
                .map(|t| self.clock.to_tokio(t))
                .unwrap_or_else(|| tokio::time::Instant::now() + IDLE_WAKE);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(first) = inbound.recv() => {
                    self.on_inbound(first);
                    for _ in 1..MAX_INBOUND_BATCH {
                        match inbound.try_recv() {
                            Ok(next) => self.on_inbound(next),
                            Err(_) => break,
                        }
                    }
                }
                _ = tokio::time::sleep_until(timer) => {
                    self.membership.handle_timeout(self.clock.now());
                }
                _ = tokio::time::sleep_until(rejoin_at), if !self.seeds.is_empty() => {
                    if self.alone() {
                        tracing::debug!(seeds = ?self.seeds, "no live member known; joining again");
                        self.membership.handle_join(self.clock.now(), &self.seeds);
                        rejoin_after = (rejoin_after * 2).min(REJOIN_MAX);
                    } else {
                        rejoin_after = REJOIN_MIN;
                    }
                    rejoin_at = tokio::time::Instant::now() + rejoin_after;
                }
            }
            self.drain();
        }
    }

    fn alone(&self) -> bool {
        !self
            .membership
            .members()
            .iter()
            .any(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound.channel {
            Channel::Membership => {
                let now = self.clock.now();
                if let Err(e) = self.membership.handle_datagram(
                    now,
                    inbound.src,
                    inbound.src_id,
                    &inbound.payload,
                ) {
                    self.metrics.transport.decode_errors.inc();
                    tracing::debug!(peer = %inbound.src, id = %inbound.src_id, error = %e, "membership payload refused");
                }
            }
            Channel::Paxos | Channel::Task if self.membership.refuses(&inbound.src_id) => {
                // A member back on a wiped store: its acceptors forgot
                // their promises, so none of its votes may count.
                self.metrics.transport.inbound_dropped.inc();
            }
            Channel::Paxos | Channel::Task => match &self.forward {
                Some(forward) => {
                    if forward.try_send(inbound).is_err() {
                        // The protocol retries what is lost here.
                        self.metrics.transport.inbound_dropped.inc();
                    }
                }
                None => {
                    self.metrics.transport.decode_errors.inc();
                    tracing::debug!(peer = %inbound.src, channel = ?inbound.channel, "no handler for channel");
                }
            },
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::SetLocalState(state) => {
                self.membership.set_local_state(self.clock.now(), state);
            }
            Command::Leave(reply) => {
                self.membership.handle_leave(self.clock.now());
                self.drain();
                let incarnation = self.membership.incarnation();
                let _ = reply.send(incarnation);
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        let snapshot = Snapshot {
            identity: self.membership.identity().clone(),
            incarnation: self.membership.incarnation(),
            local_health: self.membership.local_health(),
            members: self.membership.members(),
            stats: self.membership.stats().clone(),
            local_state: self.membership.local_state().cloned(),
            now: self.clock.now(),
            joined: self.joined,
        };
        self.metrics.observe_membership(
            &snapshot.stats,
            &snapshot.counts(),
            snapshot.local_health,
            snapshot.incarnation,
        );
        snapshot
    }

    /// Hands every queued transmit to the transport and logs every event.
    fn drain(&mut self) {
        for _ in 0..MAX_DRAIN {
            let Some(transmit) = self.membership.poll_transmit() else {
                break;
            };
            self.transport.send(
                Channel::Membership,
                transmit.dst,
                transmit.reliable,
                &transmit.payload,
            );
        }
        for _ in 0..MAX_DRAIN {
            let Some(event) = self.membership.poll_event() else {
                break;
            };
            self.on_event(event);
        }
        if std::mem::take(&mut self.stores_dirty) {
            if let Some(file) = &self.stores_file {
                if let Err(e) = file.save(self.membership.stores().iter()) {
                    tracing::error!(error = %e, "cannot persist the member stores");
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::MemberChanged {
                id,
                name,
                state,
                incarnation,
                reason,
            } => {
                if state == MemberState::Alive {
                    self.joined = true;
                }
                let why = self.describe(&reason);
                tracing::info!(
                    member = %name,
                    id = %id,
                    state = crate::metrics::state_name(state),
                    incarnation,
                    reason = %why,
                    "membership change"
                );
            }
            Event::NodeStateUpdated { id } => {
                tracing::trace!(id = %id, "node state updated");
            }
            Event::StoreLearned { id, store } => {
                tracing::debug!(id = %id, store = %store, "member store learned");
                self.stores_dirty = true;
            }
            Event::ForeignStoreRefused {
                id,
                addr,
                known,
                found,
            } => {
                tracing::error!(
                    member = %self.name_of(id), id = %id.to_hex(), %addr,
                    known_store = %known.to_hex(), found_store = %found.to_hex(),
                    "refusing a member back under its certificate on another data directory \
                     (a wiped disk): its messages are dropped until it returns with its own \
                     store; give it a new identity with `shoal ca issue`"
                );
            }
            Event::RefusedByPeer { by, known_store } => {
                let refusal = Refusal {
                    by: self.name_of(by),
                    known_store,
                    own_store: self.membership.identity().store,
                };
                tracing::error!(%refusal, "refused by the party");
                if let Some(tx) = self.refusal.take() {
                    let _ = tx.send(refusal);
                }
            }
            Event::SelfRefuted { incarnation } => {
                tracing::warn!(incarnation, "refuted a suspicion about this node");
                if let Err(e) = self.incarnation_file.store(incarnation) {
                    tracing::error!(error = %e, "cannot persist incarnation");
                }
            }
        }
    }

    fn name_of(&self, id: NodeId) -> String {
        if id == self.membership.identity().id {
            return self.membership.identity().name.clone();
        }
        self.membership
            .members()
            .into_iter()
            .find(|m| m.identity.id == id)
            .map(|m| m.identity.name)
            .unwrap_or_else(|| id.to_string())
    }

    fn describe(&self, reason: &ChangeReason) -> String {
        match reason {
            ChangeReason::Joined => "joined (heard of it first, or at a newer incarnation)".into(),
            ChangeReason::ProbeFailed => "our direct and indirect probes went unanswered".into(),
            ChangeReason::SuspectedBy(id) => format!("suspected by {}", self.name_of(*id)),
            ChangeReason::SuspicionTimeout => "suspicion timed out without refutation".into(),
            ChangeReason::DeclaredDownBy(id) => format!("declared down by {}", self.name_of(*id)),
            ChangeReason::Refuted => "refuted a suspicion with a higher incarnation".into(),
            ChangeReason::Left => "announced a graceful leave".into(),
            ChangeReason::Forgotten => "forgotten after the down retention".into(),
        }
    }
}
