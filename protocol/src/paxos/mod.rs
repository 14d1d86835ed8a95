//! Replicated state of the shard groups (design §5): CASPaxos registers,
//! PaxosLease leases and the acceptor that serves both.
//!
//! The proposer side lives in [`crate::coordinator`], which runs register
//! operations and lease rounds against the acceptors of every node.

pub mod acceptor;
pub mod lease;

use crate::shard::{ShardConfig, ShardId};
use crate::tasks::{TaskId, TaskRecord};
use crate::NodeId;
use serde::{Deserialize, Serialize};

/// A CASPaxos ballot: ordered by counter, then by node, so two proposers
/// never share one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// Grows with every round of the proposer.
    pub counter: u64,
    /// The proposer.
    pub node: NodeId,
}

impl Ballot {
    /// Below every ballot a proposer uses.
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        node: NodeId([0; 16]),
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
    Job(Vec<u8>),
    /// A shard configuration.
    Config(ShardConfig),
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
