//! Messages of the shard groups: CASPaxos register rounds, PaxosLease
//! rounds, reconfiguration, late-binding pulls and offers.
//!
//! Every message carries durations, never absolute times: instants are
//! local to one host's clock (docs/protocol.md §5).

use crate::paxos::{Ballot, RegisterKey, Slot};
use crate::resources::Resources;
use crate::shard::{ShardConfig, ShardId};
use crate::tasks::{TaskId, TaskRecord, TaskSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most leases one lease message carries (one renewal batch).
pub const MAX_LEASES_PER_MESSAGE: usize = 4_096;
/// Most records in one pull answer.
pub const MAX_PULL_RECORDS: u32 = 64;

/// Names the group a message is for and the request it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// The shard.
    pub shard: ShardId,
    /// The epoch the sender believes current.
    pub epoch: u64,
    /// The sender's request id, echoed in the answer.
    pub req: u64,
}

/// Why an acceptor did not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupRefusal {
    /// A higher ballot was promised or accepted.
    Ballot(Ballot),
    /// The epoch is sealed; its successor is given.
    Sealed(ShardConfig),
    /// The sender's epoch is old; the current configuration is given.
    Stale(ShardConfig),
    /// This node holds no state for the shard at that epoch (it was never
    /// installed, or lost its disk).
    NotMember,
}

/// One lease asked for (a claim) or renewed (a batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseAsk {
    /// The task's shard: one request carries the asks of every shard the
    /// receiving group serves (renewals are batched per group).
    pub shard: ShardId,
    /// The epoch of that shard the sender believes current.
    pub epoch: u64,
    /// The task.
    pub task: TaskId,
    /// The attempt the lease is for.
    pub attempt: u64,
    /// The proposer's ballot for this lease.
    pub ballot: Ballot,
    /// The sender holds this lease now and extends it (as opposed to a
    /// claim, which is refused while anyone else's grant is live).
    pub renewal: bool,
}

/// An acceptor's answer to one [`LeaseAsk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseVerdict {
    /// Granted: this acceptor's timer runs for the full acceptor lease length.
    Granted,
    /// Another owner holds a live lease for `remaining_ms` more.
    Held {
        /// The owner.
        owner: crate::NodeId,
        /// Its attempt.
        attempt: u64,
        /// Time left on this acceptor's timer.
        remaining_ms: u64,
    },
    /// The acceptor restarted or joined recently and grants nothing new yet.
    Quarantined,
    /// The task is final (cancelled or done): nothing to lease.
    Final,
    /// The attempt is older than the record's current one.
    Stale,
    /// The acceptor does not serve the ask's shard at that epoch.
    Group(GroupRefusal),
    /// The owner already released this round (the ask is a late resend).
    Released,
}

/// A live lease carried from a sealed group to its successor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTransfer {
    /// The task.
    pub task: TaskId,
    /// The owner.
    pub owner: crate::NodeId,
    /// Its attempt.
    pub attempt: u64,
    /// Its ballot.
    pub ballot: Ballot,
    /// Time left on the sealed acceptor's timer when it sealed.
    pub remaining_ms: u64,
}

/// Everything a sealed acceptor holds for a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// Every register with its ballots.
    pub registers: Vec<(RegisterKey, Slot)>,
    /// Every live lease.
    pub leases: Vec<LeaseTransfer>,
    /// Time left of the sender's own quarantine: it restarted and may have
    /// forgotten grants, so the successor must not grant for that long.
    pub quarantine_ms: u64,
}

/// A message between coordinators (channel [`super::Channel::Paxos`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaxosMessage {
    /// CASPaxos phase 1.
    Prepare {
        /// Group and request.
        hdr: Header,
        /// The register.
        key: RegisterKey,
        /// The proposer's ballot.
        ballot: Ballot,
    },
    /// Answer to [`PaxosMessage::Prepare`]: promised, with what was accepted.
    Promise {
        /// Group and request.
        hdr: Header,
        /// The register's accepted ballot and value.
        slot: Slot,
    },
    /// CASPaxos phase 2.
    Accept {
        /// Group and request.
        hdr: Header,
        /// The register.
        key: RegisterKey,
        /// The proposer's ballot.
        ballot: Ballot,
        /// The new value.
        value: Option<crate::paxos::Value>,
        /// With `Some`, an acceptor that accepts also promises this later
        /// ballot of the same proposer (persisted with the accept): the
        /// proposer's next operation on this register may then send its
        /// accept at once, without a prepare (CASPaxos' one-round path for a
        /// proposer that repeats on a register).
        next: Option<Ballot>,
    },
    /// Answer to [`PaxosMessage::Accept`]: accepted and persisted.
    Accepted {
        /// Group and request.
        hdr: Header,
    },
    /// Any request refused.
    Refused {
        /// Group and request.
        hdr: Header,
        /// Why.
        reason: GroupRefusal,
    },
    /// Acquire or renew leases: the sender's timer started before sending.
    LeaseRequest {
        /// Group and request.
        hdr: Header,
        /// The holder's lease length; the acceptor derives its own timer.
        lease_ms: u64,
        /// The leases.
        asks: Vec<LeaseAsk>,
    },
    /// One verdict per ask, in order.
    LeaseReply {
        /// Group and request.
        hdr: Header,
        /// The verdicts.
        verdicts: Vec<LeaseVerdict>,
    },
    /// The owner gives a lease up early.
    LeaseRelease {
        /// Group and request.
        hdr: Header,
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u64,
        /// The ballot of the round whose grants are given up: a release
        /// from an earlier life or round of the owner ends nothing newer.
        ballot: Ballot,
    },
    /// Reconfiguration step 2: seal the epoch in favour of `successor`.
    Seal {
        /// Group and request.
        hdr: Header,
        /// The configuration chosen to follow.
        successor: ShardConfig,
    },
    /// Answer to [`PaxosMessage::Seal`], once the seal is persisted.
    SealedState {
        /// Group and request.
        hdr: Header,
        /// Everything the acceptor holds for the shard.
        snapshot: Snapshot,
    },
    /// Reconfiguration step 3: become an acceptor of `config`.
    Install {
        /// Group and request (`hdr.epoch` is the new epoch).
        hdr: Header,
        /// The new configuration.
        config: ShardConfig,
        /// The state read from the sealed majority.
        snapshot: Snapshot,
        /// The sealed configuration this one follows.
        predecessor: ShardConfig,
        /// The snapshot may miss live leases (a forced reconfiguration
        /// read less than a majority): grant nothing new for one lease length.
        quarantine: bool,
    },
    /// Answer to [`PaxosMessage::Install`], once persisted.
    Installed {
        /// Group and request.
        hdr: Header,
    },
    /// Reconfiguration step 4: start serving.
    Activate {
        /// Group and request.
        hdr: Header,
    },
    /// Late binding: "I have free slots; what can I claim?"
    Pull {
        /// Group and request.
        hdr: Header,
        /// Slots free at the puller.
        slots_free: u32,
        /// CPU, memory and custom amounts free at the puller.
        resources_free: Resources,
        /// The puller's labels.
        labels: BTreeMap<String, String>,
        /// Most records wanted.
        max: u32,
    },
    /// Claimable records, as this acceptor sees them.
    PullReply {
        /// Group and request.
        hdr: Header,
        /// The records.
        records: Vec<TaskRecord>,
    },
    /// The submitter offers a new task to a chosen node.
    Offer {
        /// The task's shard.
        shard: ShardId,
        /// The task.
        task: TaskId,
        /// The attempt the task is at.
        attempt: u64,
        /// What it needs.
        spec: Box<TaskSpec>,
    },
    /// The task was cancelled: kill its attempt.
    CancelNotice {
        /// The task.
        task: TaskId,
    },
    /// Anti-entropy of shard configurations: newer epochs win.
    Directory {
        /// Known configurations.
        configs: Vec<ShardConfig>,
    },
    /// Reconfiguration step 0: "are you there?" to a proposed successor's
    /// members, so that a move never chooses a group whose majority is
    /// already dead (a chosen successor cannot be un-chosen).
    ReadyCheck {
        /// Shard and request.
        hdr: Header,
    },
    /// Answer to [`PaxosMessage::ReadyCheck`].
    Ready {
        /// Shard and request.
        hdr: Header,
    },
    /// A resent request to be answered through another group member: the
    /// sender's earlier copies went unanswered, and an answer that cannot
    /// reach it directly (a one-way cut) may still reach it through `via`.
    ///
    /// The relayed messages travel encoded rather than nested: a nested
    /// enum would let a crafted packet recurse without bound in the decoder.
    ReplyVia {
        /// The member that passes the answer on.
        via: crate::NodeId,
        /// The request, an encoded [`PaxosMessage`].
        request: Vec<u8>,
    },
    /// An answer for `to`, for the receiver to pass on.
    Forward {
        /// The requester.
        to: crate::NodeId,
        /// The answer, an encoded [`PaxosMessage`].
        reply: Vec<u8>,
    },
    /// An answer from `origin`, passed on by the sender.
    Forwarded {
        /// The member that answered.
        origin: crate::NodeId,
        /// The answer, an encoded [`PaxosMessage`].
        reply: Vec<u8>,
    },
}

impl PaxosMessage {
    /// Whether an acceptor answers this (what a [`PaxosMessage::ReplyVia`]
    /// may carry).
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            PaxosMessage::Prepare { .. }
                | PaxosMessage::Accept { .. }
                | PaxosMessage::LeaseRequest { .. }
                | PaxosMessage::Pull { .. }
        )
    }

    /// Whether this answers a request (what a relay passes on).
    pub fn is_reply(&self) -> bool {
        matches!(
            self,
            PaxosMessage::Promise { .. }
                | PaxosMessage::Accepted { .. }
                | PaxosMessage::Refused { .. }
                | PaxosMessage::LeaseReply { .. }
                | PaxosMessage::PullReply { .. }
        )
    }
}
