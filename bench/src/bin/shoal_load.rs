//! `shoal-load`: the shoal side of the benchmark. Starts a 3-agent mesh on
//! loopback (agent defaults except addresses and slots), drives it through the
//! task API, and prints one JSON `Record` line per measurement.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use nix::sys::signal::Signal;
use shoal_bench::mesh::{self, Mesh, MeshConfig};
use shoal_bench::record::{Record, Side};
use shoal_bench::runlog::count_double_runs;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Parser)]
#[command(
    name = "shoal-load",
    about = "Drive a 3-agent shoal mesh for the benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Args, Clone)]
struct MeshArgs {
    /// The shoal binary.
    #[arg(long)]
    shoal_bin: PathBuf,
    /// Scratch directory for this mesh (must not hold another mesh).
    #[arg(long)]
    dir: PathBuf,
    /// QUIC ports base..base+2, API ports base+100..base+102.
    #[arg(long, default_value_t = 27400)]
    base_port: u16,
    /// Bound on mesh formation and warm-up.
    #[arg(long, default_value_t = 60)]
    form_timeout_s: u64,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Zero-duration mock tasks: submitters post, agents claim and complete.
    Throughput {
        #[command(flatten)]
        mesh: MeshArgs,
        #[arg(long, default_value_t = 1000)]
        tasks: u64,
        #[arg(long, default_value_t = 12)]
        submitters: u32,
        /// Total slots over the 3 agents (the etcd side's worker count).
        #[arg(long, default_value_t = 12)]
        workers: u32,
        #[arg(long, default_value_t = 120)]
        timeout_s: u64,
    },
    /// kill -9 an agent holding tasks; time until they run elsewhere.
    Failover {
        #[command(flatten)]
        mesh: MeshArgs,
        #[arg(long, default_value_t = 30)]
        kills: u32,
        /// Tasks submitted per round (those on the killed agent are timed).
        #[arg(long, default_value_t = 2)]
        held: u32,
    },
    /// SIGSTOP the agent holding a task, SIGCONT after the pause; count double runs.
    Pause {
        #[command(flatten)]
        mesh: MeshArgs,
        #[arg(long, default_value_t = 1)]
        trials: u32,
        #[arg(long, default_value_t = 4000)]
        pause_ms: u64,
        /// How long the task's command runs.
        #[arg(long, default_value_t = 6000)]
        run_ms: u64,
        /// The shared run log (created fresh).
        #[arg(long)]
        log: PathBuf,
    },
}

async fn start_mesh(args: &MeshArgs, slots: u32) -> anyhow::Result<(Mesh, reqwest::Client)> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let mesh = Mesh::start(MeshConfig {
        shoal_bin: args.shoal_bin.clone(),
        dir: args.dir.clone(),
        base_port: args.base_port,
        agents: 3,
        slots,
    })?;
    let http = reqwest::Client::new();
    let bound = Duration::from_secs(args.form_timeout_s);
    mesh.wait_formed(&http, bound).await?;
    mesh.warm_up(&http, bound).await?;
    Ok((mesh, http))
}

async fn throughput(
    args: MeshArgs,
    tasks: u64,
    submitters: u32,
    workers: u32,
    timeout_s: u64,
) -> anyhow::Result<()> {
    let slots = workers.div_ceil(3).max(1);
    let (mesh, _) = start_mesh(&args, slots).await?;
    let apis: Vec<String> = (0..mesh.len()).map(|i| mesh.api(i)).collect();
    let queue: Arc<Mutex<VecDeque<(String, usize)>>> = Arc::default();
    // Completion is read from the agents' `shoal_attempts_succeeded_total`
    // counters (a holder counts its attempt the moment its successful
    // outcome is committed; each task once), summed over the agents: exact
    // and immediate, without loading the mesh with reads the etcd side does
    // not pay. The warm-up tasks are already in the counters.
    let counter = "shoal_attempts_succeeded_total";
    let http = reqwest::Client::new();
    let succeeded_sum = |http: reqwest::Client, apis: Vec<String>| async move {
        let mut sum = 0.0f64;
        for api in &apis {
            sum += mesh::metric(&http, api, counter).await.unwrap_or(0.0);
        }
        sum
    };
    let before = succeeded_sum(http.clone(), apis.clone()).await;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(timeout_s);
    let mut subs = Vec::new();
    for k in 0..submitters {
        let http = reqwest::Client::new();
        let apis = apis.clone();
        let queue = queue.clone();
        subs.push(tokio::spawn(async move {
            let step = u64::from(submitters.max(1));
            let mut i = u64::from(k);
            while i < tasks && Instant::now() < deadline {
                let at = usize::try_from(i).unwrap_or(0) % apis.len();
                let id = mesh::submit_mock(&http, &apis[at], 0).await?;
                if let Ok(mut q) = queue.lock() {
                    q.push_back((id, at));
                }
                i += step;
            }
            anyhow::Ok(())
        }));
    }
    let mut last_change = Instant::now();
    let mut last_seen = 0.0f64;
    let done = loop {
        let seen = succeeded_sum(http.clone(), apis.clone()).await - before;
        if seen > last_seen {
            last_seen = seen;
            last_change = Instant::now();
        }
        if seen >= tasks as f64 || Instant::now() >= deadline {
            break (seen.max(0.0) as u64).min(tasks);
        }
        if last_change.elapsed() > Duration::from_secs(3) {
            let ids: Vec<(String, usize)> = queue
                .lock()
                .map(|q| q.iter().cloned().collect())
                .unwrap_or_default();
            let mut finals = 0u64;
            for (id, at) in &ids {
                if mesh::get_task(&http, &apis[*at], id)
                    .await
                    .is_ok_and(|v| v.is_final())
                {
                    finals += 1;
                }
            }
            if finals >= tasks {
                break finals;
            }
            last_change = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    for s in subs {
        s.await??;
    }
    let elapsed = started.elapsed();
    Record::Throughput {
        side: Side::Shoal,
        tasks,
        completed: done,
        elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        tasks_per_s: done as f64 / elapsed.as_secs_f64().max(1e-9),
        submitters,
        workers: slots * 3,
        // Fencing refuses a stale attempt's result, so a task cannot be
        // completed twice through the API; overlaps are what `pause` counts.
        double_runs: 0,
    }
    .emit();
    Ok(())
}

/// Polls `id` (through `api`) until it runs elsewhere than `victim`, with an
/// attempt above `attempt`; returns the time since `killed`.
async fn until_running_elsewhere(
    http: &reqwest::Client,
    api: &str,
    id: &str,
    victim: &str,
    attempt: u64,
    killed: Instant,
    bound: Duration,
) -> Option<f64> {
    while killed.elapsed() < bound {
        if let Ok(v) = mesh::get_task(http, api, id).await {
            let moved = v.attempt > attempt && v.node.as_deref() != Some(victim);
            if moved && (v.state == "running" || v.is_final()) {
                return Some(killed.elapsed().as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    None
}

async fn wait_running(
    http: &reqwest::Client,
    api: &str,
    ids: &[String],
    bound: Duration,
) -> anyhow::Result<Vec<mesh::TaskView>> {
    let deadline = Instant::now() + bound;
    loop {
        let mut views = Vec::new();
        for id in ids {
            if let Ok(v) = mesh::get_task(http, api, id).await {
                if v.state == "running" {
                    views.push(v);
                }
            }
        }
        if views.len() == ids.len() {
            return Ok(views);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "tasks {ids:?} not running within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn failover(args: MeshArgs, kills: u32, held: u32) -> anyhow::Result<()> {
    // Room for the long tasks that moved to survivors in earlier rounds.
    let (mut mesh, http) = start_mesh(&args, 16).await?;
    let bound = Duration::from_secs(args.form_timeout_s);
    let mut samples = Vec::new();
    let mut lost = 0u32;
    let mut done_kills = 0u32;
    for round in 0..kills {
        let entry = usize::try_from(round).unwrap_or(0) % mesh.len();
        let mut ids = Vec::new();
        for _ in 0..held {
            ids.push(mesh::submit_mock(&http, &mesh.api(entry), 600_000).await?);
        }
        let views = wait_running(&http, &mesh.api(entry), &ids, bound).await?;
        let victim_name = views[0]
            .node
            .clone()
            .context("running task names no node")?;
        let victim = mesh.index_of(&victim_name).context("unknown node")?;
        let on_victim: Vec<&mesh::TaskView> = views
            .iter()
            .filter(|v| v.node.as_deref() == Some(victim_name.as_str()))
            .collect();
        mesh.kill9(victim)?;
        let killed = Instant::now();
        done_kills += 1;
        let reader = mesh.api((victim + 1) % mesh.len());
        let mut waits = tokio::task::JoinSet::new();
        for v in &on_victim {
            let (http, reader, id, victim_name, attempt) = (
                http.clone(),
                reader.clone(),
                v.id.clone(),
                victim_name.clone(),
                v.attempt,
            );
            waits.spawn(async move {
                until_running_elsewhere(
                    &http,
                    &reader,
                    &id,
                    &victim_name,
                    attempt,
                    killed,
                    Duration::from_secs(60),
                )
                .await
            });
        }
        while let Some(r) = waits.join_next().await {
            match r {
                Ok(Some(ms)) => samples.push(ms),
                _ => lost += 1,
            }
        }
        for id in &ids {
            mesh::cancel(&http, &reader, id).await;
        }
        mesh.restart(victim)?;
        mesh.wait_formed(&http, bound).await?;
    }
    Record::Failover {
        side: Side::Shoal,
        kills: done_kills,
        samples_ms: samples,
        lost,
    }
    .emit();
    Ok(())
}

/// The task's command: heartbeats into the shared log while it runs, then a
/// `done` line; the runner is `node:attempt`.
fn heartbeat_script(log: &std::path::Path, run_ms: u64) -> String {
    let beats = run_ms.div_ceil(50);
    let log = log.display();
    format!(
        "r=\"$SHOAL_NODE:$SHOAL_ATTEMPT\"; i=0; while [ $i -lt {beats} ]; do \
         echo \"$SHOAL_TASK_ID $r $(date +%s%3N) hb\" >> '{log}'; sleep 0.05; i=$((i+1)); done; \
         echo \"$SHOAL_TASK_ID $r $(date +%s%3N) done\" >> '{log}'"
    )
}

async fn pause(
    args: MeshArgs,
    trials: u32,
    pause_ms: u64,
    run_ms: u64,
    log: PathBuf,
) -> anyhow::Result<()> {
    let log = std::path::absolute(&log)?;
    let _ = std::fs::remove_file(&log);
    let (mesh, http) = start_mesh(&args, 4).await?;
    let bound = Duration::from_secs(args.form_timeout_s);
    for round in 0..trials {
        let entry = usize::try_from(round).unwrap_or(0) % mesh.len();
        let body = serde_json::json!({
            "command": "sh",
            "args": ["-c", heartbeat_script(&log, run_ms)],
            "name": format!("pause-{round}"),
        });
        let id = mesh::submit(&http, &mesh.api(entry), &body).await?;
        let views = wait_running(&http, &mesh.api(entry), std::slice::from_ref(&id), bound).await?;
        let holder_name = views[0]
            .node
            .clone()
            .context("running task names no node")?;
        let holder = mesh.index_of(&holder_name).context("unknown node")?;
        tokio::time::sleep(Duration::from_millis(run_ms / 6)).await;
        mesh.signal(holder, Signal::SIGSTOP)?;
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        mesh.signal(holder, Signal::SIGCONT)?;
        let reader = mesh.api((holder + 1) % mesh.len());
        let deadline = Instant::now() + Duration::from_millis(run_ms * 3 + 10_000);
        while Instant::now() < deadline {
            if mesh::get_task(&http, &reader, &id)
                .await
                .is_ok_and(|v| v.is_final())
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // A stale run that was not fenced would still be writing: give it time to show.
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Record::Pause {
        side: Side::Shoal,
        trials,
        pause_ms,
        result: count_double_runs(&text),
    }
    .emit();
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Throughput {
            mesh,
            tasks,
            submitters,
            workers,
            timeout_s,
        } => throughput(mesh, tasks, submitters, workers, timeout_s).await,
        Cmd::Failover { mesh, kills, held } => failover(mesh, kills, held).await,
        Cmd::Pause {
            mesh,
            trials,
            pause_ms,
            run_ms,
            log,
        } => pause(mesh, trials, pause_ms, run_ms, log).await,
    }
}
