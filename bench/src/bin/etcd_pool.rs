//! `etcd-pool`: the conventional baseline's worker pool and its measurements.
//! Each measuring subcommand prints one JSON `Record` line on stdout.
#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use shoal_bench::etcd::{self, Claimed, Keys, Shared, WorkerConfig};
use shoal_bench::record::{Record, Side};
use shoal_bench::runlog::count_double_runs;
use shoal_bench::wall_ms;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

#[derive(Debug, Parser)]
#[command(
    name = "etcd-pool",
    about = "Workers claiming tasks through etcd leases"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args, Clone)]
struct Common {
    /// etcd client endpoints, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Lease TTL (2 s is etcd's practical minimum for failover).
    #[arg(long, default_value_t = 2)]
    ttl_s: i64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Zero-duration tasks: submitters put, workers claim and complete.
    Throughput {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1000)]
        tasks: u64,
        #[arg(long, default_value_t = 12)]
        submitters: u32,
        #[arg(long, default_value_t = 12)]
        workers: u32,
        /// Give up after this long.
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// A worker process (the thing failover kills): claims forever.
    Worker {
        #[command(flatten)]
        common: Common,
        #[arg(long)]
        prefix: String,
        #[arg(long)]
        id: String,
        /// Concurrent claim loops in this process.
        #[arg(long, default_value_t = 1)]
        slots: u32,
        #[arg(long, default_value_t = 0)]
        run_ms: u64,
        #[arg(long)]
        log: Option<PathBuf>,
    },
    /// kill -9 a worker process holding tasks; time until they are claimed elsewhere.
    Failover {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 30)]
        kills: u32,
        /// Tasks the victim holds at each kill.
        #[arg(long, default_value_t = 2)]
        held: u32,
    },
    /// SIGSTOP a holder, SIGCONT it after the pause; count double runs.
    Pause {
        #[command(flatten)]
        common: Common,
        #[arg(long, default_value_t = 1)]
        trials: u32,
        #[arg(long, default_value_t = 4000)]
        pause_ms: u64,
        /// How long a task runs (longer than the pause, so the holder wakes mid-run).
        #[arg(long, default_value_t = 6000)]
        run_ms: u64,
        /// The shared run log (created fresh).
        #[arg(long)]
        log: PathBuf,
    },
}

fn run_prefix(kind: &str) -> String {
    format!("/shoal-bench/{kind}-{}-{}", std::process::id(), wall_ms())
}

/// Starts `n` in-process workers named `{base.id}-{i}`, each like `base`.
fn spawn_pool(
    common: &Common,
    base: &WorkerConfig,
    n: u32,
    shared: &Arc<Shared>,
    claims: Option<mpsc::UnboundedSender<Claimed>>,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<()>>> {
    (0..n)
        .map(|i| {
            let config = WorkerConfig {
                id: format!("{}-{i}", base.id),
                ..base.clone()
            };
            tokio::spawn(etcd::run_worker(
                common.endpoints.clone(),
                config,
                shared.clone(),
                claims.clone(),
            ))
        })
        .collect()
}

fn base(
    common: &Common,
    prefix: &str,
    names: &str,
    run_ms: u64,
    log: Option<PathBuf>,
) -> WorkerConfig {
    WorkerConfig {
        id: names.to_string(),
        keys: Keys::new(prefix),
        ttl_s: common.ttl_s,
        run_ms,
        log,
    }
}

async fn throughput(
    common: Common,
    tasks: u64,
    submitters: u32,
    workers: u32,
    timeout_s: u64,
) -> anyhow::Result<()> {
    let prefix = run_prefix("tp");
    let keys = Keys::new(&prefix);
    let shared = Arc::new(Shared::default());
    shared.active.store(true, Ordering::Relaxed);
    let pool = spawn_pool(
        &common,
        &base(&common, &prefix, "w", 0, None),
        workers,
        &shared,
        None,
    );
    // Connect the submitters before the clock starts, as the workers did.
    let mut subs = Vec::new();
    for _ in 0..submitters {
        subs.push(etcd_client::Client::connect(&common.endpoints, None).await?);
    }
    let started = Instant::now();
    let mut handles = Vec::new();
    for (k, mut client) in subs.into_iter().enumerate() {
        let keys = keys.clone();
        let k = k as u64;
        let step = u64::from(submitters.max(1));
        handles.push(tokio::spawn(async move {
            let mut i = k;
            while i < tasks {
                etcd::submit(&mut client, &keys, &format!("t{i:08}")).await?;
                i += step;
            }
            anyhow::Ok(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let deadline = started + Duration::from_secs(timeout_s);
    while shared.completed.load(Ordering::Relaxed) < tasks && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    let completed = shared.completed.load(Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    for h in pool {
        if let Ok(Err(e)) = h.await {
            eprintln!("etcd worker: {e:#}");
        }
    }
    let double_runs = shared
        .completions
        .lock()
        .map(|m| m.values().filter(|&&c| c > 1).count() as u64)
        .unwrap_or(0);
    let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    Record::Throughput {
        side: Side::Etcd,
        tasks,
        completed,
        elapsed_ms,
        tasks_per_s: completed as f64 / elapsed.as_secs_f64().max(1e-9),
        submitters,
        workers,
        double_runs,
    }
    .emit();
    delete_prefix(&common, &prefix).await;
    Ok(())
}

async fn delete_prefix(common: &Common, prefix: &str) {
    if let Ok(mut c) = etcd_client::Client::connect(&common.endpoints, None).await {
        let _ = c
            .delete(
                prefix,
                Some(etcd_client::DeleteOptions::new().with_prefix()),
            )
            .await;
    }
}

fn spawn_worker_process(
    common: &Common,
    prefix: &str,
    id: &str,
    slots: u32,
    run_ms: u64,
    log: Option<&PathBuf>,
) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("own executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .arg("--endpoints")
        .arg(common.endpoints.join(","))
        .arg("--ttl-s")
        .arg(common.ttl_s.to_string())
        .arg("--prefix")
        .arg(prefix)
        .arg("--id")
        .arg(id)
        .arg("--slots")
        .arg(slots.to_string())
        .arg("--run-ms")
        .arg(run_ms.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(log) = log {
        cmd.arg("--log").arg(log);
    }
    Ok(cmd.spawn()?)
}

/// Waits until `victim` holds `want` claims among `ids`.
async fn wait_for_claims(
    client: &mut etcd_client::Client,
    keys: &Keys,
    ids: &[String],
    victim: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let held = etcd::claims(client, keys).await?;
        if ids
            .iter()
            .all(|id| held.get(id).is_some_and(|w| w.starts_with(victim)))
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("victim {victim} did not claim {ids:?} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn failover(common: Common, kills: u32, held: u32) -> anyhow::Result<()> {
    let prefix = run_prefix("fo");
    let keys = Keys::new(&prefix);
    let shared = Arc::new(Shared::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Survivors stand idle while the victim claims, then race as usual.
    let pool = spawn_pool(
        &common,
        &base(&common, &prefix, "survivor", 0, None),
        held,
        &shared,
        Some(tx),
    );
    let mut client = etcd_client::Client::connect(&common.endpoints, None).await?;
    let mut samples = Vec::new();
    let mut lost = 0u32;
    for round in 0..kills {
        let victim = format!("victim{round}");
        let mut child = spawn_worker_process(&common, &prefix, &victim, held, 600_000, None)?;
        let ids: Vec<String> = (0..held).map(|j| format!("r{round:04}-{j}")).collect();
        for id in &ids {
            etcd::submit(&mut client, &keys, id).await?;
        }
        if let Err(e) =
            wait_for_claims(&mut client, &keys, &ids, &victim, Duration::from_secs(20)).await
        {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
        while rx.try_recv().is_ok() {}
        child.kill()?; // SIGKILL
        let killed = Instant::now();
        shared.active.store(true, Ordering::Relaxed);
        let mut pending: Vec<String> = ids.clone();
        let deadline = killed + Duration::from_secs(30);
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, rx.recv()).await {
                Ok(Some(c)) => {
                    if let Some(pos) = pending.iter().position(|id| *id == c.task) {
                        pending.swap_remove(pos);
                        samples.push(killed.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                _ => break,
            }
        }
        lost += u32::try_from(pending.len()).unwrap_or(u32::MAX);
        shared.active.store(false, Ordering::Relaxed);
        let _ = child.wait();
        // Let the survivors finish their no-op completions before the next round.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shared.stop.store(true, Ordering::Relaxed);
    for h in pool {
        let _ = h.await;
    }
    Record::Failover {
        side: Side::Etcd,
        kills,
        samples_ms: samples,
        lost,
    }
    .emit();
    delete_prefix(&common, &prefix).await;
    Ok(())
}

async fn pause(
    common: Common,
    trials: u32,
    pause_ms: u64,
    run_ms: u64,
    log: PathBuf,
) -> anyhow::Result<()> {
    let prefix = run_prefix("pz");
    let keys = Keys::new(&prefix);
    let _ = std::fs::remove_file(&log);
    let shared = Arc::new(Shared::default());
    let pool = spawn_pool(
        &common,
        &base(&common, &prefix, "survivor", run_ms, Some(log.clone())),
        1,
        &shared,
        None,
    );
    let mut client = etcd_client::Client::connect(&common.endpoints, None).await?;
    for round in 0..trials {
        let victim = format!("victim{round}");
        let mut child = spawn_worker_process(&common, &prefix, &victim, 1, run_ms, Some(&log))?;
        let id = format!("p{round:04}");
        etcd::submit(&mut client, &keys, &id).await?;
        wait_for_claims(
            &mut client,
            &keys,
            std::slice::from_ref(&id),
            &victim,
            Duration::from_secs(20),
        )
        .await?;
        tokio::time::sleep(Duration::from_millis(run_ms / 6)).await;
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid")?);
        kill(pid, Signal::SIGSTOP)?;
        shared.active.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        kill(pid, Signal::SIGCONT)?;
        // Both runs end within one run length of the resume.
        tokio::time::sleep(Duration::from_millis(run_ms + 1000)).await;
        shared.active.store(false, Ordering::Relaxed);
        let _ = child.kill();
        let _ = child.wait();
    }
    shared.stop.store(true, Ordering::Relaxed);
    for h in pool {
        let _ = h.await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Record::Pause {
        side: Side::Etcd,
        trials,
        pause_ms,
        result: count_double_runs(&text),
    }
    .emit();
    delete_prefix(&common, &prefix).await;
    Ok(())
}

async fn worker(
    common: Common,
    prefix: String,
    id: String,
    slots: u32,
    run_ms: u64,
    log: Option<PathBuf>,
) -> anyhow::Result<()> {
    let shared = Arc::new(Shared::default());
    shared.active.store(true, Ordering::Relaxed);
    // Slot loops share the process (one lease each, like separate workers in one pod).
    let pool = spawn_pool(
        &common,
        &base(&common, &prefix, &id, run_ms, log),
        slots,
        &shared,
        None,
    );
    for h in pool {
        h.await??;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Throughput {
            common,
            tasks,
            submitters,
            workers,
            timeout_s,
        } => throughput(common, tasks, submitters, workers, timeout_s).await,
        Cmd::Worker {
            common,
            prefix,
            id,
            slots,
            run_ms,
            log,
        } => worker(common, prefix, id, slots, run_ms, log).await,
        Cmd::Failover {
            common,
            kills,
            held,
        } => failover(common, kills, held).await,
        Cmd::Pause {
            common,
            trials,
            pause_ms,
            run_ms,
            log,
        } => pause(common, trials, pause_ms, run_ms, log).await,
    }
}
