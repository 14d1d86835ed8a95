//! The conventional baseline: workers that claim tasks through etcd.
//!
//! Keys under a run prefix `P`:
//! - `P/task/ID`: `pending` or `done`, the task record;
//! - `P/pending/ID`: present while the task is pending (an index workers list);
//! - `P/claim/ID`: the claimer's id, attached to the claimer's lease, so it
//!   vanishes when the lease expires.
//!
//! A worker claims with `txn(if create_revision(claim) == 0 and task ==
//! "pending" then put claim with my lease)`, the claim's revision being the
//! fencing token a careful user would check; it keeps its lease alive every
//! TTL/3, runs, and completes the way the conventional user writes it: one
//! unconditional transaction that marks the task done and deletes the index
//! entry and the claim. A worker paused past its lease comes back, finishes
//! and overwrites: that is the double run the benchmark counts.

use crate::wall_ms;
use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many pending keys a worker lists to pick from at random.
const LIST_LIMIT: i64 = 256;
/// How many random candidates a worker tries per listing before it lists again.
const TRIES_PER_LISTING: usize = 4;
/// Sleep when there is nothing to claim (the conventional poll loop).
const IDLE_POLL_MS: u64 = 5;
/// Heartbeat period of a logged run.
const HEARTBEAT_MS: u64 = 50;

/// Key names of one run.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (no trailing slash).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }
    /// The task record key.
    pub fn task(&self, id: &str) -> String {
        format!("{}/task/{id}", self.prefix)
    }
    /// The pending-index key.
    pub fn pending(&self, id: &str) -> String {
        format!("{}/pending/{id}", self.prefix)
    }
    /// The claim key.
    pub fn claim(&self, id: &str) -> String {
        format!("{}/claim/{id}", self.prefix)
    }
    /// Prefix of the pending index.
    pub fn pending_prefix(&self) -> String {
        format!("{}/pending/", self.prefix)
    }
    /// Prefix of the claims.
    pub fn claim_prefix(&self) -> String {
        format!("{}/claim/", self.prefix)
    }
}

/// Puts one pending task (record and index entry in one transaction).
pub async fn submit(client: &mut Client, keys: &Keys, id: &str) -> anyhow::Result<()> {
    client
        .txn(Txn::new().and_then(vec![
            TxnOp::put(keys.task(id), "pending", None),
            TxnOp::put(keys.pending(id), "", None),
        ]))
        .await?;
    Ok(())
}

/// A claim as a worker saw it succeed.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Task id.
    pub task: String,
    /// Worker id.
    pub worker: String,
    /// The claim's revision (the fencing token the plain completion ignores).
    pub revision: i64,
}

/// State a pool of in-process workers shares with its driver.
#[derive(Debug, Default)]
pub struct Shared {
    /// Workers claim only while this is set.
    pub active: AtomicBool,
    /// Workers exit when this is set.
    pub stop: AtomicBool,
    /// Completions done.
    pub completed: AtomicU64,
    /// Completions per task (a task completed twice is a double run).
    pub completions: Mutex<HashMap<String, u32>>,
}

/// How a worker runs a claimed task.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Worker id (the claim's value).
    pub id: String,
    /// Key names.
    pub keys: Keys,
    /// Lease TTL.
    pub ttl_s: i64,
    /// How long the in-process no-op "runs" (0: not at all).
    pub run_ms: u64,
    /// Append heartbeats and completions here while running.
    pub log: Option<PathBuf>,
}

/// One worker: its own connection, its own lease, a claim loop. Returns when
/// `shared.stop` is set. `claims` hears of every successful claim.
pub async fn run_worker(
    endpoints: Vec<String>,
    config: WorkerConfig,
    shared: Arc<Shared>,
    claims: Option<mpsc::UnboundedSender<Claimed>>,
) -> anyhow::Result<()> {
    let mut client = Client::connect(&endpoints, None).await?;
    let lease = Arc::new(AtomicI64::new(
        client.lease_grant(config.ttl_s, None).await?.id(),
    ));
    let keeper = tokio::spawn(keep_lease_alive(
        client.clone(),
        config.ttl_s,
        lease.clone(),
        shared.clone(),
    ));
    let mut rng = rand::rngs::StdRng::from_entropy();
    while !shared.stop.load(Ordering::Relaxed) {
        if !shared.active.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)).await;
            continue;
        }
        let listing = client
            .get(
                config.keys.pending_prefix(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_keys_only()
                        .with_limit(LIST_LIMIT),
                ),
            )
            .await?;
        let mut ids: Vec<String> = listing
            .kvs()
            .iter()
            .filter_map(|kv| kv.key_str().ok())
            .filter_map(|k| k.rsplit('/').next().map(str::to_string))
            .collect();
        if ids.is_empty() {
            tokio::time::sleep(Duration::from_millis(IDLE_POLL_MS)).await;
            continue;
        }
        ids.shuffle(&mut rng);
        for id in ids.into_iter().take(TRIES_PER_LISTING) {
            let lease_id = lease.load(Ordering::Relaxed);
            let claim = Txn::new()
                .when(vec![
                    Compare::create_revision(config.keys.claim(&id), CompareOp::Equal, 0),
                    Compare::value(config.keys.task(&id), CompareOp::Equal, "pending"),
                ])
                .and_then(vec![TxnOp::put(
                    config.keys.claim(&id),
                    config.id.as_str(),
                    Some(PutOptions::new().with_lease(lease_id)),
                )]);
            let resp = client.txn(claim).await?;
            if !resp.succeeded() {
                continue;
            }
            let revision = resp.header().map_or(0, |h| h.revision());
            if let Some(tx) = &claims {
                let _ = tx.send(Claimed {
                    task: id.clone(),
                    worker: config.id.clone(),
                    revision,
                });
            }
            execute(&config, &id).await;
            // The plain completion: no compare on the claim revision.
            client
                .txn(Txn::new().and_then(vec![
                    TxnOp::put(config.keys.task(&id), "done", None),
                    TxnOp::delete(config.keys.pending(&id), None),
                    TxnOp::delete(config.keys.claim(&id), None),
                ]))
                .await?;
            log_line(&config, &id, "done");
            shared.completed.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut map) = shared.completions.lock() {
                *map.entry(id).or_insert(0) += 1;
            }
            break;
        }
    }
    keeper.abort();
    Ok(())
}

/// The in-process no-op run, with heartbeats when logging.
async fn execute(config: &WorkerConfig, task: &str) {
    if config.run_ms == 0 {
        return;
    }
    let Some(_) = &config.log else {
        tokio::time::sleep(Duration::from_millis(config.run_ms)).await;
        return;
    };
    // Bounded by run_ms / HEARTBEAT_MS iterations; a pause stretches the
    // wall time, not the count, as a paused computation would.
    let beats = config.run_ms.div_ceil(HEARTBEAT_MS);
    for _ in 0..beats {
        log_line(config, task, "hb");
        tokio::time::sleep(Duration::from_millis(HEARTBEAT_MS)).await;
    }
}

fn log_line(config: &WorkerConfig, task: &str, kind: &str) {
    let Some(path) = &config.log else { return };
    // One write per line on an O_APPEND file keeps lines whole across processes.
    let line = format!("{task} {} {} {kind}\n", config.id, wall_ms());
    if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(path) {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Renews every TTL/3; on a lost lease (expired while we were paused), takes
/// a new one as the conventional worker does.
async fn keep_lease_alive(
    mut client: Client,
    ttl_s: i64,
    lease: Arc<AtomicI64>,
    shared: Arc<Shared>,
) {
    let period = Duration::from_millis(u64::try_from(ttl_s.max(1)).unwrap_or(1) * 1000 / 3);
    while !shared.stop.load(Ordering::Relaxed) {
        let id = lease.load(Ordering::Relaxed);
        let alive = match client.lease_keep_alive(id).await {
            Ok((mut keeper, mut stream)) => {
                let mut ok = true;
                while ok && !shared.stop.load(Ordering::Relaxed) {
                    ok = keeper.keep_alive().await.is_ok()
                        && matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0);
                    if ok {
                        tokio::time::sleep(period).await;
                    }
                }
                false
            }
            Err(_) => false,
        };
        if !alive {
            if let Ok(resp) = client.lease_grant(ttl_s, None).await {
                lease.store(resp.id(), Ordering::Relaxed);
            } else {
                tokio::time::sleep(period).await;
            }
        }
    }
}

/// Ids of the tasks currently claimed, with their claimer.
pub async fn claims(client: &mut Client, keys: &Keys) -> anyhow::Result<HashMap<String, String>> {
    let resp = client
        .get(keys.claim_prefix(), Some(GetOptions::new().with_prefix()))
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            let id = kv.key_str().ok()?.rsplit('/').next()?.to_string();
            Some((id, kv.value_str().ok()?.to_string()))
        })
        .collect())
}
