//! The store's redb tables. Keys are typed; values are opaque bytes that the
//! caller encodes (with `shoal_protocol::wire::encode`), so the store does not
//! change when a protocol type does.

use redb::TableDefinition;

/// Acceptor state of CASPaxos registers: (shard, register key) -> state.
pub(crate) const ACCEPTOR: TableDefinition<(u32, &[u8]), &[u8]> = TableDefinition::new("acceptor");
/// Node metadata (incarnation, node id, ...): name -> value.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// Local attempt log: (task id, attempt) -> record.
pub(crate) const ATTEMPTS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("attempts");

/// One write of a batch. A batch is applied atomically, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set the acceptor state of a register.
    PutAcceptor {
        /// Shard number.
        shard: u32,
        /// Register key within the shard.
        key: Vec<u8>,
        /// Encoded acceptor state.
        value: Vec<u8>,
    },
    /// Remove a register's acceptor state (after a shard moved away).
    DeleteAcceptor {
        /// Shard number.
        shard: u32,
        /// Register key within the shard.
        key: Vec<u8>,
    },
    /// Set a node metadata entry.
    PutMeta {
        /// Entry name, e.g. `"incarnation"`.
        key: String,
        /// Encoded value.
        value: Vec<u8>,
    },
    /// Set the local log record of one attempt.
    PutAttempt {
        /// Task id.
        task: String,
        /// Attempt number (the fencing token).
        attempt: u64,
        /// Encoded record (started / ended / exit / fenced).
        record: Vec<u8>,
    },
    /// Remove one attempt's local record (garbage collection).
    DeleteAttempt {
        /// Task id.
        task: String,
        /// Attempt number.
        attempt: u64,
    },
}

impl WriteOp {
    pub(crate) fn apply(&self, txn: &redb::WriteTransaction) -> Result<(), redb::Error> {
        match self {
            WriteOp::PutAcceptor { shard, key, value } => {
                txn.open_table(ACCEPTOR)?
                    .insert((*shard, key.as_slice()), value.as_slice())?;
            }
            WriteOp::DeleteAcceptor { shard, key } => {
                txn.open_table(ACCEPTOR)?.remove((*shard, key.as_slice()))?;
            }
            WriteOp::PutMeta { key, value } => {
                txn.open_table(META)?
                    .insert(key.as_str(), value.as_slice())?;
            }
            WriteOp::PutAttempt {
                task,
                attempt,
                record,
            } => {
                txn.open_table(ATTEMPTS)?
                    .insert((task.as_str(), *attempt), record.as_slice())?;
            }
            WriteOp::DeleteAttempt { task, attempt } => {
                txn.open_table(ATTEMPTS)?
                    .remove((task.as_str(), *attempt))?;
            }
        }
        Ok(())
    }
}
