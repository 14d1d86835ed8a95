//! Replicated state of the shard groups (docs/protocol.md §5): CASPaxos registers,
//! PaxosLease leases and the acceptor that serves both. The proposer side
//! lives in [`crate::coordinator`].
//!
//! # The protocol in a page
//!
//! **Shards.** Task ids hash to one of `S` shards. Each shard has a
//! configuration `(epoch, members)`: an acceptor group of `R` nodes (3, or 5
//! from 7 nodes), placed by rendezvous hashing with a per-node cap.
//!
//! **Registers (CASPaxos).** Task records, job records and each epoch's
//! successor are registers. Any node proposes: `Prepare(b)` to the group, on
//! a majority of promises take the value of the highest accepted ballot,
//! apply the change, `Accept(b, v)` on a majority. Acceptors answer only
//! after the host persisted the change. Ballots are
//! `(counter, node, incarnation)`; every round has a fresh request id; a
//! refused change still writes the current value back, so reads are
//! linearizable; changes are idempotent on retry (a blind write applies only
//! over the version its first round saw).
//!
//! **Leases (PaxosLease, one round).** A claimer starts its timer, then asks
//! the group for the lease of `(task, attempt)`. An acceptor grants unless
//! another owner's grant is live, and times the grant for
//! `lease * (1+rho)/(1-rho)` on its own clock; the holder counts `lease` on
//! its clock from before it asked. So in real time every granting acceptor
//! outlives the holder's belief, and two majorities always share an acceptor
//! that refuses the second owner. A live grant is never replaced, whatever
//! the ballot. Leases live in memory only; an acceptor that restarted
//! grants nothing for one acceptor lease length. Renewals are batched: one
//! message per shard group renews all of a node's leases there.
//!
//! **Tasks.** Claim = lease for attempt `n+1`, then CAS attempt `n -> n+1`,
//! then start. The holder renews every `lease/3` and kills the attempt
//! `fence_margin` before its own expiry if it could not renew (self-fencing;
//! hosts also arm a watchdog on the deadline). Results commit only if their
//! attempt is still the record's attempt (the fencing token).
//!
//! **Reconfiguration.** Through the old group: choose the successor by CAS
//! on `Successor(e)`, seal a majority (sealed acceptors refuse and point to
//! the successor) and read its registers and live leases, install them at
//! `e+1` (ballots kept; the live leases travel with their remaining time,
//! stretched for drift, so the new group needs no quarantine unless a sealed
//! acceptor was itself quarantined or the move was forced), activate.
//! Every step is idempotent, so whoever meets a half-done move finishes it.
//!
//! # Guarantees and what they assume
//!
//! * One valid lease holder per task at any real instant, hence never two
//!   attempts running at once, and results fenced by attempt — assuming
//!   every clock's rate stays within `1 ± rho` of real time, a majority of
//!   each group keeps its disk, hosts stop an attempt by the deadline they
//!   are given, and a node that lost its disk returns under a new `NodeId`.
//! * Acknowledged tasks are never lost while no group loses a majority.
//! * Progress needs a majority of the shard's group up and connected; a
//!   group that lost its majority stays as it is until an operator forces a
//!   reconfiguration ([`crate::coordinator::Coordinator::force_reconfigure`]),
//!   which warns that writes seen only by the lost acceptors may be lost.

pub mod acceptor;
pub mod lease;

use crate::shard::{ShardConfig, ShardId};
use crate::tasks::{TaskId, TaskRecord};
use crate::NodeId;
use serde::{Deserialize, Serialize};

/// A CASPaxos ballot: ordered by counter, then node, then incarnation, so
/// two proposers never share one. The incarnation is drawn at random each
/// time a node's machine is constructed: the counter is not persisted, and
/// a restarted node must never reuse a ballot of its previous life (Paxos
/// breaks if one ballot carries two values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every round of the proposer.
    pub counter: u64,
    /// The proposer.
    pub node: NodeId,
    /// The proposer's incarnation.
    pub incarnation: u64,
}

impl Ballot {
    /// Below every ballot a proposer uses.
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        node: NodeId([0; 16]),
        incarnation: 0,
    };
}

/// The name of a register inside its shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum RegisterKey {
    /// A task record.
    Task(TaskId),
    /// A job record (opaque bytes owned by the API layer).
    Job(u64),
    /// The configuration chosen to follow epoch `.0` of this shard.
    Successor(u64),
}

/// A register's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A task record.
    Task(Box<TaskRecord>),
    /// A job record.
    Job(JobValue),
    /// A shard configuration.
    Config(ShardConfig),
}

/// A job register's value: opaque bytes with a version, so that a write
/// retried after an unknown outcome is applied at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobValue {
    /// Grows by one with every write.
    pub version: u64,
    /// The bytes; `None` once deleted.
    pub bytes: Option<Vec<u8>>,
}

/// One register at one acceptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Highest ballot promised.
    pub promised: Ballot,
    /// Ballot of the accepted value.
    pub accepted: Ballot,
    /// The accepted value; `None` for an absent (or deleted) register.
    pub value: Option<Value>,
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            promised: Ballot::ZERO,
            accepted: Ballot::ZERO,
            value: None,
        }
    }
}

/// How far an acceptor's part in a shard has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupStatus {
    /// Serving.
    Active,
    /// Installed by a reconfiguration from the given (sealed) predecessor,
    /// waiting for activation.
    Installed(ShardConfig),
    /// Sealed: refuses everything and points to the successor.
    Sealed(ShardConfig),
}

/// A shard's acceptor metadata as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The configuration this acceptor serves.
    pub config: ShardConfig,
    /// Its status in it.
    pub status: GroupStatus,
}

/// A key of the host's acceptor store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StoreKey {
    /// The shard's metadata.
    Meta(ShardId),
    /// One register of the shard.
    Register(ShardId, RegisterKey),
}

/// A value of the host's acceptor store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreValue {
    /// For [`StoreKey::Meta`].
    Meta(ShardMeta),
    /// For [`StoreKey::Register`].
    Register(Slot),
}

/// One write the host must make durable: put `value`, or delete the key
/// when `value` is `None`. Writes of one [`crate::coordinator::Effect::Persist`]
/// are applied in order and atomically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreWrite {
    /// The key.
    pub key: StoreKey,
    /// The new value, or `None` to delete.
    pub value: Option<StoreValue>,
}
