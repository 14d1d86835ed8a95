//! Side-by-side benchmark of shoal against the conventional setup: workers
//! claiming tasks through etcd leases. The binaries (`etcd-pool`,
//! `shoal-load`, `bench-report`) each measure one side and print one JSON
//! line per measurement; `scripts/bench/etcd-vs-shoal.sh` interleaves them and
//! `bench-report` folds the lines into `target/bench/etcd-vs-shoal.json`.
#![forbid(unsafe_code)]

pub mod etcd;
pub mod mesh;
pub mod record;
pub mod runlog;
pub mod stats;

use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch: the one time base shared by
/// the driver and the processes it spawns (same machine, so same clock).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
