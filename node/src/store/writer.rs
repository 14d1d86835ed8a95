//! The group-commit writer: one thread owns every write transaction. It
//! takes all batches queued while the previous fsync ran and commits them in
//! a single transaction, so N concurrent writers pay for one fsync.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::error::{from_redb, StoreError};
use super::stats::{CommitSample, StoreStats};
use super::tables::WriteOp;

/// Most batches one transaction takes; bounds the latency of the first
/// waiter and the memory of one transaction.
pub(crate) const MAX_BATCHES_PER_TRANSACTION: usize = 4096;
/// Most operations one transaction takes (a single larger batch still goes
/// alone).
pub(crate) const MAX_OPS_PER_TRANSACTION: usize = 65_536;

pub(crate) struct Batch {
    pub(crate) ops: Vec<WriteOp>,
    pub(crate) done: oneshot::Sender<Result<(), StoreError>>,
}

/// Observer called after every transaction (metrics wiring).
pub type CommitObserver = Arc<dyn Fn(CommitSample) + Send + Sync>;

pub(crate) struct Writer {
    pub(crate) db: Arc<redb::Database>,
    pub(crate) path: PathBuf,
    pub(crate) queue: mpsc::Receiver<Batch>,
    pub(crate) stats: Arc<StoreStats>,
    pub(crate) observer: Option<CommitObserver>,
}

impl Writer {
    /// Runs until every sender is gone and the queue is drained.
    pub(crate) fn run(mut self) {
        while let Some(first) = self.queue.blocking_recv() {
            let mut group = vec![first];
            let mut ops = group[0].ops.len();
            while group.len() < MAX_BATCHES_PER_TRANSACTION && ops < MAX_OPS_PER_TRANSACTION {
                match self.queue.try_recv() {
                    Ok(batch) => {
                        ops += batch.ops.len();
                        group.push(batch);
                    }
                    Err(_) => break,
                }
            }
            self.commit_group(group, ops);
        }
    }

    fn commit_group(&self, group: Vec<Batch>, ops: usize) {
        let started = Instant::now();
        let result = self.write(&group);
        let result = result.map_err(|e| from_redb(&self.path, e));
        self.record(started, group.len(), ops, result.is_ok());
        if let Err(e) = &result {
            tracing::error!(error = %e, batches = group.len(), "store group commit failed");
        }
        for batch in group {
            // A caller that stopped waiting is not an error of the store.
            let _ = batch.done.send(result.clone());
        }
    }

    fn record(&self, started: Instant, batches: usize, ops: usize, ok: bool) {
        let sample = CommitSample {
            latency: started.elapsed(),
            batches,
            ops,
            ok,
        };
        self.stats.record(&sample);
        if let Some(observer) = &self.observer {
            observer(sample);
        }
    }

    fn write(&self, group: &[Batch]) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut tables = super::tables::OpenTables::new(&txn);
            for batch in group {
                for op in &batch.ops {
                    tables.apply(op)?;
                }
            }
        }
        // Durability::Immediate is redb's default: commit returns after fsync.
        txn.commit()?;
        Ok(())
    }
}
