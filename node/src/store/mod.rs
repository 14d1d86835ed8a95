//! The agent's durable store: one redb file in the data directory holding
//! acceptor state, node metadata and the local attempt log. The directory's
//! format version is checked (and a new directory stamped) before anything
//! in it is opened ([`format`]).
//!
//! Writes go through [`Store::commit`] (async) or [`Store::commit_blocking`]:
//! every batch is atomic, and a batch is acknowledged only after the write
//! transaction holding it was fsynced. Concurrent batches share one
//! transaction (group commit, see `writer`). Reads run on the caller's
//! thread against the last committed state.

mod error;
pub mod format;
mod stats;
mod tables;
mod writer;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, ReadableTable};
use tokio::sync::{mpsc, oneshot};

pub use error::StoreError;
pub use stats::{CommitSample, StoreStatsSnapshot, COMMIT_LATENCY_BUCKETS_US};
pub use tables::{WriteOp, KEY_LEN_MAX, VALUE_LEN_MAX};
pub use writer::CommitObserver;

use error::{from_dir_io, from_redb};
use stats::StoreStats;
use tables::{ACCEPTOR, ATTEMPTS, META};

/// Name of the store file inside the data directory.
pub const STORE_FILE_NAME: &str = "store.redb";
/// Batches that may wait for the writer before `commit` applies
/// backpressure.
pub const QUEUE_CAPACITY_BATCHES: usize = 8192;

/// One register of a shard: (register key, encoded acceptor state).
pub type RegisterEntry = (Vec<u8>, Vec<u8>);

/// Options of [`Store::open`].
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Called after every group commit (metrics).
    pub commit_observer: Option<CommitObserver>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("commit_observer", &self.commit_observer.is_some())
            .finish()
    }
}

/// The durable store. Cheap to share behind an `Arc`; dropping the last
/// handle drains the queue and stops the writer thread.
pub struct Store {
    db: Arc<redb::Database>,
    path: PathBuf,
    queue: Option<mpsc::Sender<writer::Batch>>,
    stats: Arc<StoreStats>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`. An unusable or
    /// full directory, a corrupt file or a second opener give a typed error.
    /// After an unclean shutdown redb repairs the file here.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        probe_data_dir(data_dir)?;
        format::check_or_stamp(data_dir)?;
        let path = data_dir.join(STORE_FILE_NAME);
        let db = redb::Database::create(&path).map_err(|e| from_redb(&path, e))?;
        create_tables(&db).map_err(|e| from_redb(&path, e))?;
        let db = Arc::new(db);
        let stats = Arc::new(StoreStats::default());
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY_BATCHES);
        let writer = writer::Writer {
            db: db.clone(),
            path: path.clone(),
            queue: rx,
            stats: stats.clone(),
            observer: options.commit_observer,
        };
        let handle = std::thread::Builder::new()
            .name("shoal-store-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::Storage {
                path: path.clone(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Store {
            db,
            path,
            queue: Some(tx),
            stats,
            writer: Some(handle),
        })
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `ops` atomically; resolves once they are durable.
    pub async fn commit(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        check_batch(&ops)?;
        let (done, wait) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        queue
            .send(writer::Batch { ops, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues `ops` at once, without waiting (so batches queued one after
    /// another from one task are applied in that order), and returns a
    /// future that resolves once they are durable. A full queue is an
    /// error rather than a wait: the caller's protocol retries.
    pub fn commit_queued(
        &self,
        ops: Vec<WriteOp>,
    ) -> Result<impl std::future::Future<Output = Result<(), StoreError>> + use<>, StoreError> {
        check_batch(&ops)?;
        let (done, wait) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        queue
            .try_send(writer::Batch { ops, done })
            .map_err(|_| StoreError::Closed)?;
        Ok(async move { wait.await.map_err(|_| StoreError::Closed)? })
    }

    /// Blocking variant of [`Store::commit`], for threads outside the tokio
    /// runtime. Must not be called from inside an async context.
    pub fn commit_blocking(&self, ops: Vec<WriteOp>) -> Result<(), StoreError> {
        check_batch(&ops)?;
        let (done, wait) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or(StoreError::Closed)?;
        queue
            .blocking_send(writer::Batch { ops, done })
            .map_err(|_| StoreError::Closed)?;
        wait.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// The acceptor state of one register.
    pub fn get_acceptor(&self, shard: u32, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ACCEPTOR)?;
            Ok(table.get((shard, key))?.map(|v| v.value().to_vec()))
        })
    }

    /// Every register's acceptor state in one shard, ordered by key.
    pub fn acceptor_shard(&self, shard: u32) -> Result<Vec<RegisterEntry>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ACCEPTOR)?;
            let lo: (u32, &[u8]) = (shard, &[]);
            let mut out = Vec::new();
            let range = match shard.checked_add(1) {
                Some(next) => table.range(lo..(next, &[][..]))?,
                None => table.range(lo..)?,
            };
            for entry in range {
                let (k, v) = entry?;
                out.push((k.value().1.to_vec(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// One node metadata entry.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(META)?;
            Ok(table.get(key)?.map(|v| v.value().to_vec()))
        })
    }

    /// One attempt's local record.
    pub fn get_attempt(&self, task: &str, attempt: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ATTEMPTS)?;
            Ok(table.get((task, attempt))?.map(|v| v.value().to_vec()))
        })
    }

    /// Every attempt record, ordered by (task, attempt).
    pub fn attempts(&self) -> Result<Vec<(String, u64, Vec<u8>)>, StoreError> {
        self.read(|txn| {
            let table = txn.open_table(ATTEMPTS)?;
            let mut out = Vec::new();
            for entry in table.iter()? {
                let (k, v) = entry?;
                let (task, attempt) = k.value();
                out.push((task.to_string(), attempt, v.value().to_vec()));
            }
            Ok(out)
        })
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStatsSnapshot {
        self.stats.snapshot()
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let txn = self.db.begin_read().map_err(|e| from_redb(&self.path, e))?;
        f(&txn).map_err(|e| from_redb(&self.path, e))
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue lets the writer drain what is queued and stop.
        self.queue = None;
        if let Some(handle) = self.writer.take() {
            let _ = handle.join();
        }
    }
}

fn check_batch(ops: &[WriteOp]) -> Result<(), StoreError> {
    if ops.len() > writer::MAX_OPS_PER_TRANSACTION {
        return Err(StoreError::TooManyOps { ops: ops.len() });
    }
    ops.iter().try_for_each(WriteOp::check)
}

/// Checks that the directory exists (creating it) and takes a synced write,
/// so that a read-only or full disk is reported before anything else.
fn probe_data_dir(data_dir: &Path) -> Result<(), StoreError> {
    let dir_err = |e| from_dir_io(data_dir.to_path_buf(), e);
    std::fs::create_dir_all(data_dir).map_err(dir_err)?;
    let probe = data_dir.join(".shoal-write-probe");
    let mut file = std::fs::File::create(&probe).map_err(dir_err)?;
    file.write_all(&[0u8; 4096]).map_err(dir_err)?;
    file.sync_all().map_err(dir_err)?;
    drop(file);
    std::fs::remove_file(&probe).map_err(dir_err)?;
    Ok(())
}

fn create_tables(db: &redb::Database) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    txn.open_table(ACCEPTOR)?;
    txn.open_table(META)?;
    txn.open_table(ATTEMPTS)?;
    txn.commit()?;
    Ok(())
}
