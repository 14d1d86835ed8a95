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

/// Longest key (register key, meta name, task id) a write may carry.
pub const KEY_LEN_MAX: usize = 64 * 1024;
/// Longest value a write may carry.
pub const VALUE_LEN_MAX: usize = 16 * 1024 * 1024;

impl WriteOp {
    /// (key length, value length) of this write.
    fn lens(&self) -> (usize, usize) {
        match self {
            WriteOp::PutAcceptor { key, value, .. } => (key.len(), value.len()),
            WriteOp::DeleteAcceptor { key, .. } => (key.len(), 0),
            WriteOp::PutMeta { key, value } => (key.len(), value.len()),
            WriteOp::PutAttempt { task, record, .. } => (task.len(), record.len()),
            WriteOp::DeleteAttempt { task, .. } => (task.len(), 0),
        }
    }

    /// Refuses a write over the limits before it reaches the writer, so one
    /// bad batch never fails the transaction it would share with others.
    pub(crate) fn check(&self) -> Result<(), super::StoreError> {
        let (key, value) = self.lens();
        if key > KEY_LEN_MAX {
            return Err(super::StoreError::TooLarge { len: key });
        }
        if value > VALUE_LEN_MAX {
            return Err(super::StoreError::TooLarge { len: value });
        }
        Ok(())
    }
}

/// The tables of one write transaction, each opened on first use and kept
/// open for the rest of the group commit, instead of opening (a lookup) and
/// closing (a root write-back) a table around every single operation.
pub(crate) struct OpenTables<'txn> {
    txn: &'txn redb::WriteTransaction,
    acceptor: Option<AcceptorTable<'txn>>,
    meta: Option<redb::Table<'txn, &'static str, &'static [u8]>>,
    attempts: Option<AttemptsTable<'txn>>,
}

type AcceptorTable<'txn> = redb::Table<'txn, (u32, &'static [u8]), &'static [u8]>;
type AttemptsTable<'txn> = redb::Table<'txn, (&'static str, u64), &'static [u8]>;

impl<'txn> OpenTables<'txn> {
    pub(crate) fn new(txn: &'txn redb::WriteTransaction) -> Self {
        OpenTables {
            txn,
            acceptor: None,
            meta: None,
            attempts: None,
        }
    }

    pub(crate) fn apply(&mut self, op: &WriteOp) -> Result<(), redb::Error> {
        let txn = self.txn;
        match op {
            WriteOp::PutAcceptor { shard, key, value } => {
                let table = match &mut self.acceptor {
                    Some(t) => t,
                    None => self.acceptor.insert(txn.open_table(ACCEPTOR)?),
                };
                table.insert((*shard, key.as_slice()), value.as_slice())?;
            }
            WriteOp::DeleteAcceptor { shard, key } => {
                let table = match &mut self.acceptor {
                    Some(t) => t,
                    None => self.acceptor.insert(txn.open_table(ACCEPTOR)?),
                };
                table.remove((*shard, key.as_slice()))?;
            }
            WriteOp::PutMeta { key, value } => {
                let table = match &mut self.meta {
                    Some(t) => t,
                    None => self.meta.insert(txn.open_table(META)?),
                };
                table.insert(key.as_str(), value.as_slice())?;
            }
            WriteOp::PutAttempt {
                task,
                attempt,
                record,
            } => {
                let table = match &mut self.attempts {
                    Some(t) => t,
                    None => self.attempts.insert(txn.open_table(ATTEMPTS)?),
                };
                table.insert((task.as_str(), *attempt), record.as_slice())?;
            }
            WriteOp::DeleteAttempt { task, attempt } => {
                let table = match &mut self.attempts {
                    Some(t) => t,
                    None => self.attempts.insert(txn.open_table(ATTEMPTS)?),
                };
                table.remove((task.as_str(), *attempt))?;
            }
        }
        Ok(())
    }
}
