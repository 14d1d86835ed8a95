//! Counters of the group-commit writer. Plain atomics so the API layer can
//! export them to prometheus without the store depending on it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (microseconds) of the commit latency buckets; a last
/// implicit bucket holds everything above.
pub const COMMIT_LATENCY_BUCKETS_US: [u64; 12] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
];

/// One finished group commit, handed to the optional observer.
#[derive(Debug, Clone, Copy)]
pub struct CommitSample {
    /// Wall time of the redb write transaction including its fsync.
    pub latency: Duration,
    /// How many caller batches shared this transaction.
    pub batches: usize,
    /// How many write operations it held.
    pub ops: usize,
    /// Whether it committed.
    pub ok: bool,
}

#[derive(Default)]
pub(crate) struct StoreStats {
    transactions: AtomicU64,
    failed_transactions: AtomicU64,
    batches: AtomicU64,
    ops: AtomicU64,
    max_batches_per_transaction: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_buckets: [AtomicU64; COMMIT_LATENCY_BUCKETS_US.len() + 1],
}

/// A point-in-time copy of the writer's counters (all monotonic).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreStatsSnapshot {
    /// Write transactions (= fsyncs) attempted.
    pub transactions: u64,
    /// Of which failed.
    pub failed_transactions: u64,
    /// Caller batches (`commit` calls) written.
    pub batches: u64,
    /// Write operations written.
    pub ops: u64,
    /// Largest number of batches that shared one transaction.
    pub max_batches_per_transaction: u64,
    /// Sum of commit latencies in microseconds.
    pub latency_sum_us: u64,
    /// Counts per bucket of [`COMMIT_LATENCY_BUCKETS_US`], plus one overflow
    /// bucket (not cumulative).
    pub latency_buckets: Vec<u64>,
}

impl StoreStats {
    pub(crate) fn record(&self, sample: &CommitSample) {
        let us = u64::try_from(sample.latency.as_micros()).unwrap_or(u64::MAX);
        self.transactions.fetch_add(1, Ordering::Relaxed);
        if !sample.ok {
            self.failed_transactions.fetch_add(1, Ordering::Relaxed);
        }
        self.batches
            .fetch_add(sample.batches as u64, Ordering::Relaxed);
        self.ops.fetch_add(sample.ops as u64, Ordering::Relaxed);
        self.max_batches_per_transaction
            .fetch_max(sample.batches as u64, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        let bucket = COMMIT_LATENCY_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(COMMIT_LATENCY_BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> StoreStatsSnapshot {
        StoreStatsSnapshot {
            transactions: self.transactions.load(Ordering::Relaxed),
            failed_transactions: self.failed_transactions.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            max_batches_per_transaction: self.max_batches_per_transaction.load(Ordering::Relaxed),
            latency_sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            latency_buckets: self
                .latency_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}
