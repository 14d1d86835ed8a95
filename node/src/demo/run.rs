//! The `shoal demo` script: start, load, kill the busiest node, watch the
//! survivors detect it and restart its tasks, check, summarise.

use super::cluster::{Cluster, ClusterOptions};
use super::tasklog::{quantile, task_script, TaskLog};
use super::tasks;
use super::{aborted, binary_or_self, DemoArgs, DemoError};
use crate::tasks::view::TaskView as TaskStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the shard groups may take to grow to full size after the mesh formed.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const MESH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the survivors get to mark the dead node down.
const DETECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the killed node's tasks get to start again elsewhere.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for enough tasks to be running before the kill.
const LOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long submits may be refused while the new mesh's shard groups settle.
const SUBMIT_SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries each task is allowed (its command never fails by itself).
const TASK_RETRIES: u32 = 3;

/// Wall clock, ns since the epoch (the task log's clock).
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// Runs the demo; `Ok` only when every guarantee held.
pub fn demo(args: DemoArgs) -> Result<(), DemoError> {
    if args.nodes < 3 {
        return Err(DemoError::BadOption(
            "--nodes must be at least 3 (a node dies and the rest keep a majority)".into(),
        ));
    }
    if !(args.task_secs > 0.0 && args.task_secs <= 600.0) {
        return Err(DemoError::BadOption(
            "--task-secs must be in (0, 600]".into(),
        ));
    }
    let binary = binary_or_self(args.binary.clone())?;
    let with_tasks = !args.membership_only && args.tasks > 0;
    let t0 = Instant::now();
    // Room for the whole batch with one node gone, so that a failover
    // never waits for a free slot.
    let slots = if with_tasks {
        u32::try_from(args.tasks.div_ceil(args.nodes - 1).max(1)).unwrap_or(u32::MAX)
    } else {
        1
    };
    eprintln!(
        "[{:>6.1}s] starting {} agents on loopback (party CA, data dirs and ports are temporary)",
        t0.elapsed().as_secs_f64(),
        args.nodes
    );
    let mut cluster = Cluster::start(ClusterOptions {
        binary: binary.clone(),
        nodes: args.nodes,
        slots,
        keep: args.keep,
    })?;
    let formed = cluster.wait_all_alive(MESH_TIMEOUT)?;
    println!(
        "[{:>6.1}s] mesh formed: {} nodes, every node sees every node alive ({} ms after start)",
        t0.elapsed().as_secs_f64(),
        args.nodes,
        ms(formed)
    );
    let log_path = cluster.root().join("tasks.log");
    let ids = if with_tasks {
        cluster.wait_replicated(args.nodes.min(3) as u64, REPLICATION_TIMEOUT)?;
        submit_batch(&cluster, &log_path, &args, t0)?
    } else {
        Vec::new()
    };
    let victim = pick_victim(&cluster, &log_path, ids.len(), t0)?;
    let victim_name = cluster.nodes[victim].name.clone();
    let kill_ns = wall_ns();
    let kill_at = Instant::now();
    cluster.kill9(victim);
    let victim_tasks: BTreeSet<String> = TaskLog::read(&log_path)
        .running_on(&victim_name, kill_ns)
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    println!(
        "[{:>6.1}s] kill -9 {victim_name} (it was running {} tasks)",
        t0.elapsed().as_secs_f64(),
        victim_tasks.len()
    );
    let watch = watch_failover(&cluster, victim, &victim_tasks, &log_path, kill_ns, kill_at)?;
    let statuses = if with_tasks {
        wait_final(&cluster, &ids, &args, t0)?
    } else {
        BTreeMap::new()
    };
    println!(
        "[{:>6.1}s] restarting {victim_name} with its data directory",
        t0.elapsed().as_secs_f64()
    );
    let restart_at = Instant::now();
    cluster.restart(victim, false)?;
    cluster.wait_all_alive(MESH_TIMEOUT)?;
    println!(
        "[{:>6.1}s] {victim_name} rejoined: alive in every view after {} ms",
        t0.elapsed().as_secs_f64(),
        ms(restart_at.elapsed())
    );
    summarise(&ids, &statuses, &log_path, &watch, with_tasks)
}

fn submit_batch(
    cluster: &Cluster,
    log_path: &Path,
    args: &DemoArgs,
    t0: Instant,
) -> Result<Vec<String>, DemoError> {
    let script = task_script(log_path, args.task_secs);
    let mut ids = Vec::with_capacity(args.tasks);
    for k in 0..args.tasks {
        if aborted() {
            return Err(DemoError::Interrupted);
        }
        // Right after the mesh formed the shard groups may still be
        // settling (503): retry, bounded, on the next node.
        let deadline = Instant::now() + SUBMIT_SETTLE_TIMEOUT;
        let mut turn = k;
        let id = loop {
            let node = &cluster.nodes[turn % cluster.nodes.len()];
            match tasks::submit(node.api, &script, TASK_RETRIES) {
                Ok(id) => break id,
                Err(e) if Instant::now() >= deadline || aborted() => {
                    return Err(DemoError::Guarantee(format!(
                        "submit to {} refused: {e}",
                        node.name
                    )))
                }
                Err(_) => {
                    turn += 1;
                    std::thread::sleep(POLL * 4);
                }
            }
        };
        ids.push(id);
    }
    println!(
        "[{:>6.1}s] submitted {} tasks (each: `sh -c` ~{}s of work, recording start/beat/end in {})",
        t0.elapsed().as_secs_f64(),
        ids.len(),
        args.task_secs,
        log_path.display()
    );
    Ok(ids)
}

/// The node with most attempts running (by the task log), once enough of
/// the batch runs; the last node when there are no tasks.
fn pick_victim(
    cluster: &Cluster,
    log_path: &Path,
    tasks: usize,
    t0: Instant,
) -> Result<usize, DemoError> {
    let last = cluster.nodes.len() - 1;
    if tasks == 0 {
        std::thread::sleep(Duration::from_secs(1));
        return Ok(last);
    }
    let want = tasks.div_ceil(2).max(1);
    let deadline = Instant::now() + LOAD_TIMEOUT;
    loop {
        if aborted() {
            return Err(DemoError::Interrupted);
        }
        let running = TaskLog::read(log_path).unfinished_by_node();
        let total: usize = running.values().sum();
        if total >= want || Instant::now() >= deadline {
            if total == 0 {
                return Err(DemoError::Guarantee(format!(
                    "no task started within {LOAD_TIMEOUT:?} of submission"
                )));
            }
            let shown: Vec<String> = running.iter().map(|(n, c)| format!("{n} {c}")).collect();
            println!(
                "[{:>6.1}s] running now: {}",
                t0.elapsed().as_secs_f64(),
                shown.join(", ")
            );
            let busiest = running
                .iter()
                .max_by_key(|(_, c)| **c)
                .map(|(n, _)| n.clone())
                .unwrap_or_default();
            return Ok(cluster
                .nodes
                .iter()
                .position(|n| n.name == busiest)
                .unwrap_or(last));
        }
        std::thread::sleep(POLL * 4);
    }
}

/// What the survivors did after the kill.
#[derive(Debug, Default)]
pub struct Failover {
    /// ms from the kill to the first survivor's `suspect` (or `down`).
    pub first_suspect_ms: Option<u128>,
    /// ms from the kill until every survivor said `down`.
    pub all_down_ms: Option<u128>,
    /// Per task of the killed node: ms from the kill to its next start.
    pub restart_ms: BTreeMap<String, u64>,
    /// Tasks of the killed node.
    pub victim_tasks: usize,
}

fn watch_failover(
    cluster: &Cluster,
    victim: usize,
    victim_tasks: &BTreeSet<String>,
    log_path: &Path,
    kill_ns: u64,
    kill_at: Instant,
) -> Result<Failover, DemoError> {
    let victim_name = cluster.nodes[victim].name.clone();
    let survivors = cluster.serving_other_than(&[victim]);
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut result = Failover {
        victim_tasks: victim_tasks.len(),
        ..Failover::default()
    };
    let deadline = kill_at + DETECT_TIMEOUT.max(FAILOVER_TIMEOUT);
    loop {
        if aborted() {
            return Err(DemoError::Interrupted);
        }
        let since = kill_at.elapsed();
        for &i in &survivors {
            let observer = &cluster.nodes[i];
            let Some(state) = observer.state_of(&victim_name) else {
                continue;
            };
            if seen.get(&observer.name) != Some(&state) && state != "alive" {
                println!(
                    "[+{:>5} ms] {} sees {victim_name} {state}",
                    ms(since),
                    observer.name
                );
                if result.first_suspect_ms.is_none() {
                    result.first_suspect_ms = Some(ms(since));
                }
            }
            seen.insert(observer.name.clone(), state);
        }
        if result.all_down_ms.is_none()
            && survivors
                .iter()
                .all(|&i| seen.get(&cluster.nodes[i].name).map(String::as_str) == Some("down"))
        {
            result.all_down_ms = Some(ms(since));
            println!(
                "[+{:>5} ms] {victim_name} is down in every survivor's view",
                ms(since)
            );
        }
        let log = TaskLog::read(log_path);
        for task in victim_tasks {
            if result.restart_ms.contains_key(task) {
                continue;
            }
            if let Some(next) = log.next_start_after(task, kill_ns) {
                let after_ms = next.start_ns.saturating_sub(kill_ns) / 1_000_000;
                println!(
                    "[+{:>5} ms] task {task} attempt {} running on {} ({after_ms} ms after the kill)",
                    ms(since),
                    next.attempt,
                    next.node
                );
                result.restart_ms.insert(task.clone(), after_ms);
            }
        }
        let restarted = result.restart_ms.len() == victim_tasks.len();
        if result.all_down_ms.is_some() && restarted {
            return Ok(result);
        }
        if Instant::now() >= deadline {
            if result.all_down_ms.is_none() {
                return Err(DemoError::Guarantee(format!(
                    "{victim_name} was not marked down by every survivor within {DETECT_TIMEOUT:?}"
                )));
            }
            return Err(DemoError::Guarantee(format!(
                "{} of {victim_name}'s {} tasks did not start again within {FAILOVER_TIMEOUT:?}",
                victim_tasks.len() - result.restart_ms.len(),
                victim_tasks.len()
            )));
        }
        std::thread::sleep(POLL);
    }
}

/// Polls every task until it is final; asks a live node.
fn wait_final(
    cluster: &Cluster,
    ids: &[String],
    args: &DemoArgs,
    t0: Instant,
) -> Result<BTreeMap<String, TaskStatus>, DemoError> {
    let budget = Duration::from_secs_f64(args.task_secs * 3.0) + Duration::from_secs(60);
    let deadline = Instant::now() + budget;
    let mut done: BTreeMap<String, TaskStatus> = BTreeMap::new();
    let mut last_errors: BTreeMap<String, String> = BTreeMap::new();
    loop {
        if aborted() {
            return Err(DemoError::Interrupted);
        }
        let live = cluster.serving_other_than(&[]);
        for (k, id) in ids.iter().enumerate() {
            if done.contains_key(id) {
                continue;
            }
            let node = &cluster.nodes[live[k % live.len()]];
            match tasks::status(node.api, id) {
                Ok(status) if tasks::is_final(&status) => {
                    done.insert(id.clone(), status);
                }
                Ok(status) => {
                    last_errors.insert(id.clone(), format!("still {}", status.state));
                }
                Err(e) => {
                    last_errors.insert(id.clone(), e);
                }
            }
        }
        if done.len() == ids.len() {
            println!(
                "[{:>6.1}s] all {} tasks are final",
                t0.elapsed().as_secs_f64(),
                ids.len()
            );
            return Ok(done);
        }
        if Instant::now() >= deadline {
            let missing: Vec<String> = ids
                .iter()
                .filter(|id| !done.contains_key(*id))
                .take(5)
                .map(|id| format!("{id} ({})", last_errors.get(id).map_or("?", String::as_str)))
                .collect();
            return Err(DemoError::Guarantee(format!(
                "{} of {} tasks not final within {budget:?}: {}",
                ids.len() - done.len(),
                ids.len(),
                missing.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn summarise(
    ids: &[String],
    statuses: &BTreeMap<String, TaskStatus>,
    log_path: &Path,
    failover: &Failover,
    with_tasks: bool,
) -> Result<(), DemoError> {
    let log = TaskLog::read(log_path);
    let mut problems = Vec::new();
    println!("---- summary ----");
    println!(
        "detection:   first suspicion +{} ms, down in every view +{} ms",
        failover
            .first_suspect_ms
            .map_or("-".into(), |v| v.to_string()),
        failover.all_down_ms.map_or("-".into(), |v| v.to_string())
    );
    if with_tasks {
        let succeeded = statuses.values().filter(|s| s.state == "succeeded").count();
        let lost: Vec<&String> = ids
            .iter()
            .filter(|id| statuses.get(*id).is_none_or(|s| s.state != "succeeded"))
            .collect();
        let restarted = log.tasks.values().filter(|a| a.len() > 1).count();
        let overlaps = log.overlaps();
        let mut stale = Vec::new();
        for (id, status) in statuses {
            let last = log.last_finished(id);
            if last.map(|a| a.attempt) != Some(status.attempt)
                || last.map(|a| Some(a.node.clone())) != Some(status.node.clone())
            {
                stale.push(format!(
                    "{id}: record says attempt {} on {:?}, log's last finished attempt is {:?}",
                    status.attempt,
                    status.node,
                    last.map(|a| (a.attempt, a.node.as_str()))
                ));
            }
        }
        let samples: Vec<u64> = failover.restart_ms.values().copied().collect();
        println!("tasks done:  {succeeded}/{}", ids.len());
        println!(
            "restarted:   {restarted} (the killed node ran {})",
            failover.victim_tasks
        );
        println!("lost:        {}", lost.len());
        println!(
            "double runs: {} (attempts of one task overlapping in time, from the task log)",
            overlaps.len()
        );
        println!(
            "stale final: {} (final state not from the last attempt that finished)",
            stale.len()
        );
        println!(
            "failover:    kill -9 -> running elsewhere p50 {} ms, max {} ms (n = {})",
            quantile(&samples, 0.5).map_or("-".into(), |v| v.to_string()),
            quantile(&samples, 1.0).map_or("-".into(), |v| v.to_string()),
            samples.len()
        );
        if !lost.is_empty() {
            problems.push(format!("{} tasks did not succeed: {:?}", lost.len(), lost));
        }
        for o in &overlaps {
            problems.push(format!(
                "task {} attempts {} and {} ran at once ({} ms)",
                o.task,
                o.earlier,
                o.later,
                o.overlap_ns / 1_000_000
            ));
        }
        problems.extend(stale);
    }
    if problems.is_empty() {
        println!("every guarantee held");
        Ok(())
    } else {
        Err(DemoError::Guarantee(problems.join("; ")))
    }
}
