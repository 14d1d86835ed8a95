//! The chaos engine shared by `tests/e2e/chaos.rs` and `scripts/chaos.sh`
//! (through the hidden `shoal chaos`): a mesh of real agents, tasks that
//! record themselves outside shoal, and a fault schedule drawn from a
//! printed seed — `kill -9` (restart with or without the data directory),
//! `kill -STOP`/`-CONT`, and a partition (iptables rules on the QUIC ports
//! of loopback; skipped with a printed reason when not permitted). One
//! fault at a time, so every shard group keeps a majority and durability
//! must hold. Afterwards everything is healed and checked from the log.

use super::cluster::{Cluster, ClusterOptions};
use super::run::wall_ns;
use super::tasklog::{quantile, task_script, TaskLog};
use super::tasks;
use super::{aborted, DemoError};
use crate::tasks::view::TaskView as TaskStatus;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(50);
const MESH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the founder may take to grow every shard group to full size.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for the groups of a wiped node to replace it before the
/// next wipe; past it that kill keeps the disk.
const REPAIR_TIMEOUT: Duration = Duration::from_secs(20);
/// After the last fault: a node back from a partition waits for a
/// push-pull (10 s in the local preset) to be seen alive everywhere.
const HEAL_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries per task; its command never fails by itself.
const TASK_RETRIES: u32 = 5;
/// Part of the run during which tasks are submitted (the rest lets the
/// last ones run under faults too).
const SUBMIT_SHARE: f64 = 0.8;

/// What to run.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `shoal` binary.
    pub binary: PathBuf,
    /// Agents.
    pub nodes: usize,
    /// Tasks, submitted evenly over the run.
    pub tasks: usize,
    /// Time of faults.
    pub duration: Duration,
    /// Seed of the schedule.
    pub seed: u64,
    /// Work per task.
    pub task_secs: f64,
    /// Mean time between faults.
    pub fault_every_secs: f64,
    /// Task slots per agent.
    pub slots: u32,
    /// Keep the directory.
    pub keep: bool,
    /// Whether some restarts after `kill -9` start from an empty data
    /// directory.
    pub wipe: bool,
}

/// One fault.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// `kill -9`, down for `down_ms`, restarted with an empty data
    /// directory when `wipe`.
    Kill {
        /// Node index.
        node: usize,
        /// How long it stays dead.
        down_ms: u64,
        /// Restart without its data directory.
        wipe: bool,
    },
    /// `kill -STOP`, `kill -CONT` after `stopped_ms`.
    Stop {
        /// Node index.
        node: usize,
        /// How long it stays frozen.
        stopped_ms: u64,
    },
    /// The node cut off from all others for `cut_ms`.
    Partition {
        /// Node index on the minority side.
        node: usize,
        /// How long.
        cut_ms: u64,
    },
}

/// A fault and when it begins, ms after the start of the run.
#[derive(Debug, Clone, PartialEq)]
pub struct Scheduled {
    /// Start, ms after the run's start.
    pub at_ms: u64,
    /// What.
    pub fault: Fault,
}

impl Fault {
    fn length_ms(&self) -> u64 {
        match self {
            Fault::Kill { down_ms, .. } => *down_ms,
            Fault::Stop { stopped_ms, .. } => *stopped_ms,
            Fault::Partition { cut_ms, .. } => *cut_ms,
        }
    }
}

/// The fault schedule for a seed: one fault at a time, gaps drawn around
/// `fault_every_secs`.
pub fn schedule(
    seed: u64,
    nodes: usize,
    duration: Duration,
    fault_every_secs: f64,
    wipe: bool,
) -> Vec<Scheduled> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end_ms = duration.as_millis() as u64;
    let mean_gap_ms = (fault_every_secs * 1000.0).max(200.0);
    let mut at_ms = 2_000u64;
    let mut out = Vec::new();
    while at_ms < end_ms && nodes > 0 {
        let node = rng.gen_range(0..nodes);
        let roll: f64 = rng.gen();
        let fault = if roll < 0.55 {
            Fault::Kill {
                node,
                down_ms: rng.gen_range(500..3_000),
                wipe: rng.gen_bool(0.3) && wipe,
            }
        } else if roll < 0.85 {
            // Short pauses must cost nothing; long ones must self-fence.
            Fault::Stop {
                node,
                stopped_ms: rng.gen_range(200..5_000),
            }
        } else {
            Fault::Partition {
                node,
                cut_ms: rng.gen_range(1_000..6_000),
            }
        };
        let gap_ms = rng.gen_range(0.5 * mean_gap_ms..1.5 * mean_gap_ms) as u64;
        let next_ms = at_ms + fault.length_ms() + gap_ms;
        out.push(Scheduled { at_ms, fault });
        at_ms = next_ms;
    }
    out
}

/// iptables rules that drop UDP between one node's QUIC port and the rest.
struct Firewall {
    chain: String,
}

fn iptables(args: &[&str]) -> bool {
    Command::new("iptables")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Firewall {
    fn create() -> Result<Firewall, String> {
        let chain = format!("SHOALCHAOS{}", std::process::id());
        if !iptables(&["-N", &chain]) {
            return Err("`iptables -N` failed (needs root and the iptables tool)".into());
        }
        if !iptables(&["-I", "INPUT", "-j", &chain]) {
            let _ = iptables(&["-X", &chain]);
            return Err("`iptables -I INPUT` failed".into());
        }
        Ok(Firewall { chain })
    }

    fn cut(&self, port: u16, others: &[u16]) -> bool {
        let others: Vec<String> = others.iter().map(u16::to_string).collect();
        let others = others.join(",");
        let port = port.to_string();
        let one_way = |from: &str, to: &str| {
            iptables(&[
                "-A",
                &self.chain,
                "-p",
                "udp",
                "-m",
                "multiport",
                "--sports",
                from,
                "-m",
                "multiport",
                "--dports",
                to,
                "-j",
                "DROP",
            ])
        };
        one_way(&port, &others) && one_way(&others, &port)
    }

    fn heal(&self) {
        let _ = iptables(&["-F", &self.chain]);
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        let _ = iptables(&["-D", "INPUT", "-j", &self.chain]);
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct ChaosReport {
    /// The seed.
    pub seed: u64,
    /// Tasks whose submit was acknowledged.
    pub acknowledged: usize,
    /// Submits that failed (not acknowledged; not checked).
    pub submit_failures: usize,
    /// Acknowledged tasks that succeeded.
    pub succeeded: usize,
    /// Acknowledged tasks that ended failed or cancelled.
    pub failed: usize,
    /// Acknowledged tasks not final at the end: lost.
    pub lost: Vec<String>,
    /// Overlapping attempts (double runs), as text.
    pub double_runs: Vec<String>,
    /// Final states not written by the last attempt that finished.
    pub stale_finals: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// kill -9 of a node running a task → that task's next start elsewhere, ms.
    pub failover_ms: Vec<u64>,
    /// Tasks running on a killed node that never started again.
    pub failovers_missing: Vec<String>,
    /// Tasks with more than one attempt.
    pub restarted: usize,
    /// Why the partition part did not run, if it did not.
    pub partition_skipped: Option<String>,
    /// Set when the healed mesh did not agree on the live set in time.
    pub membership: Option<String>,
}

impl ChaosReport {
    /// Every broken guarantee.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        v.extend(self.membership.iter().map(|m| format!("membership: {m}")));
        if !self.lost.is_empty() {
            v.push(format!(
                "{} acknowledged tasks never final: {:?}",
                self.lost.len(),
                self.lost
            ));
        }
        v.extend(self.double_runs.iter().map(|d| format!("double run: {d}")));
        v.extend(
            self.stale_finals
                .iter()
                .map(|d| format!("stale final: {d}")),
        );
        v.extend(
            self.failovers_missing
                .iter()
                .map(|d| format!("no failover: {d}")),
        );
        v
    }

    /// The summary `scripts/chaos.sh` prints.
    pub fn summary(&self) -> String {
        let q = |p: f64| quantile(&self.failover_ms, p).map_or("-".into(), |v| v.to_string());
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        format!(
            "seed:        {}\n\
             tasks:       {} acknowledged ({} submits refused), {} succeeded, {} failed/cancelled, {} restarted\n\
             faults:      {}{}\n\
             failovers:   {} (kill -9 -> running elsewhere, from the task log)\n\
             failover ms: p50 {}  p99 {}  max {}\n\
             double runs: {}\n\
             stale final: {}\n\
             lost:        {}\n",
            self.seed,
            self.acknowledged,
            self.submit_failures,
            self.succeeded,
            self.failed,
            self.restarted,
            faults.join(", "),
            self.partition_skipped
                .as_ref()
                .map_or(String::new(), |r| format!(" (partition skipped: {r})")),
            self.failover_ms.len(),
            q(0.5),
            q(0.99),
            q(1.0),
            self.double_runs.len(),
            self.stale_finals.len(),
            self.lost.len() + self.failovers_missing.len(),
        )
    }
}

/// Node API URLs and whether each currently serves, shared with the
/// submitting thread.
type Serving = Arc<Mutex<Vec<(SocketAddr, bool)>>>;

fn mark(serving: &Serving, cluster: &Cluster) {
    if let Ok(mut s) = serving.lock() {
        *s = cluster
            .nodes
            .iter()
            .map(|n| (n.api, n.is_serving()))
            .collect();
    }
}

fn say(out: &mut dyn Write, t0: Instant, text: &str) {
    let _ = writeln!(out, "[{:>7.1}s] {text}", t0.elapsed().as_secs_f64());
}

/// `shoal chaos`: runs with `args`, progress on stderr, summary on stdout.
pub fn run_cli(args: super::ChaosArgs) -> Result<ChaosReport, DemoError> {
    let seed = args.seed.unwrap_or_else(|| wall_ns() % 1_000_000);
    let options = ChaosOptions {
        binary: super::binary_or_self(args.binary)?,
        nodes: args.nodes,
        tasks: args.tasks,
        duration: Duration::from_secs(args.duration),
        seed,
        task_secs: args.task_secs,
        fault_every_secs: args.fault_every_secs,
        slots: args.slots,
        keep: args.keep,
        wipe: !args.no_wipe,
    };
    let report = run(&options, &mut std::io::stderr())?;
    print!("{}", report.summary());
    Ok(report)
}

/// Runs the whole thing and returns what it found; `Err` only when the
/// run itself could not go on (setup, interrupt).
pub fn run(options: &ChaosOptions, out: &mut dyn Write) -> Result<ChaosReport, DemoError> {
    if options.nodes < 3 {
        return Err(DemoError::BadOption("chaos needs at least 3 nodes".into()));
    }
    let t0 = Instant::now();
    let plan = schedule(
        options.seed,
        options.nodes,
        options.duration,
        options.fault_every_secs,
        options.wipe,
    );
    say(
        out,
        t0,
        &format!(
            "seed {} (rerun with --seed {}): {} agents, {} tasks of {}s, {} faults over {:?}",
            options.seed,
            options.seed,
            options.nodes,
            options.tasks,
            options.task_secs,
            plan.len(),
            options.duration
        ),
    );
    let mut cluster = Cluster::start(ClusterOptions {
        binary: options.binary.clone(),
        nodes: options.nodes,
        slots: options.slots,
        keep: options.keep,
    })?;
    cluster.wait_all_alive(MESH_TIMEOUT)?;
    // Faults start once every shard has a full group: the founder holds
    // every shard alone at first, and killing it with its disk before the
    // groups grew would lose those shards for good (a run then measures the
    // schedule, not the mesh).
    cluster.wait_replicated(options.nodes.min(3) as u64, REPLICATION_TIMEOUT)?;
    say(out, t0, "mesh formed, every shard group full");
    let mut report = ChaosReport {
        seed: options.seed,
        ..ChaosReport::default()
    };
    let firewall = match Firewall::create() {
        Ok(f) => Some(f),
        Err(why) => {
            say(out, t0, &format!("partition faults skipped: {why}"));
            report.partition_skipped = Some(why);
            None
        }
    };
    let log_path = cluster.root().join("tasks.log");
    let serving: Serving = Arc::new(Mutex::new(Vec::new()));
    mark(&serving, &cluster);
    let submitter =
        (options.tasks > 0).then(|| spawn_submitter(options, &log_path, serving.clone()));
    let start = Instant::now();
    let mut kills: Vec<(String, u64)> = Vec::new();
    for step in &plan {
        let at = Duration::from_millis(step.at_ms);
        while start.elapsed() < at {
            if aborted() {
                return Err(DemoError::Interrupted);
            }
            std::thread::sleep(POLL);
        }
        let fault = match (&step.fault, &firewall) {
            (Fault::Partition { node, cut_ms }, None) => Fault::Stop {
                node: *node,
                stopped_ms: *cut_ms,
            },
            (f, _) => f.clone(),
        };
        inject(
            &mut cluster,
            &fault,
            firewall.as_ref(),
            &serving,
            &mut kills,
            &mut report,
            out,
            t0,
        )?;
    }
    // Healed: every live node must agree on the live set again.
    if let Err(e) = cluster.wait_all_alive(HEAL_TIMEOUT) {
        report.membership = Some(e.to_string());
    } else {
        say(out, t0, "healed: every node sees every node alive");
    }
    let acked = submitter
        .map(|s| s.join().unwrap_or_default())
        .unwrap_or_default();
    report.submit_failures = options.tasks.saturating_sub(acked.len());
    report.acknowledged = acked.len();
    say(
        out,
        t0,
        &format!(
            "faults over; waiting for {} acknowledged tasks",
            acked.len()
        ),
    );
    let statuses = wait_final(&cluster, &acked, options, out, t0)?;
    check(
        &mut report,
        &acked,
        &statuses,
        &TaskLog::read(&log_path),
        &kills,
    );
    Ok(report)
}

#[allow(clippy::too_many_arguments)]
fn inject(
    cluster: &mut Cluster,
    fault: &Fault,
    firewall: Option<&Firewall>,
    serving: &Serving,
    kills: &mut Vec<(String, u64)>,
    report: &mut ChaosReport,
    out: &mut dyn Write,
    t0: Instant,
) -> Result<(), DemoError> {
    let sleep = |ms: u64| -> Result<(), DemoError> {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if aborted() {
                return Err(DemoError::Interrupted);
            }
            std::thread::sleep(POLL);
        }
        Ok(())
    };
    match *fault {
        Fault::Kill {
            node,
            down_ms,
            wipe,
        } => {
            let name = cluster.nodes[node].name.clone();
            // The guarantees assume a majority of every group keeps its
            // disk: a second disk is taken only once the groups of the last
            // wiped node have replaced it, as an operator would wait.
            let wipe = wipe && {
                let repaired =
                    cluster.wait_repaired(cluster.nodes.len().min(3) as u64, REPAIR_TIMEOUT)?;
                if !repaired {
                    *report.faults.entry("wipe deferred").or_insert(0) += 1;
                    say(
                        out,
                        t0,
                        &format!("{name} keeps its data: shard groups not yet repaired"),
                    );
                }
                repaired
            };
            kills.push((name.clone(), wall_ns()));
            cluster.kill9(node);
            mark(serving, cluster);
            *report
                .faults
                .entry(if wipe { "kill -9 + wipe" } else { "kill -9" })
                .or_insert(0) += 1;
            say(
                out,
                t0,
                &format!(
                    "kill -9 {name}; back in {down_ms} ms{}",
                    if wipe { " without its data" } else { "" }
                ),
            );
            sleep(down_ms)?;
            cluster.restart(node, wipe)?;
        }
        Fault::Stop { node, stopped_ms } => {
            let name = cluster.nodes[node].name.clone();
            cluster.stop(node);
            mark(serving, cluster);
            *report.faults.entry("stop/cont").or_insert(0) += 1;
            say(out, t0, &format!("kill -STOP {name} for {stopped_ms} ms"));
            sleep(stopped_ms)?;
            cluster.cont(node);
        }
        Fault::Partition { node, cut_ms } => {
            let Some(fw) = firewall else { return Ok(()) };
            let name = cluster.nodes[node].name.clone();
            let port = cluster.nodes[node].listen.port();
            let others: Vec<u16> = cluster
                .nodes
                .iter()
                .filter(|n| n.name != name)
                .map(|n| n.listen.port())
                .collect();
            if !fw.cut(port, &others) {
                say(out, t0, "iptables rule refused; partition skipped");
                return Ok(());
            }
            *report.faults.entry("partition").or_insert(0) += 1;
            say(
                out,
                t0,
                &format!("partition {name} from the rest for {cut_ms} ms"),
            );
            sleep(cut_ms)?;
            fw.heal();
        }
    }
    mark(serving, cluster);
    Ok(())
}

fn spawn_submitter(
    options: &ChaosOptions,
    log_path: &std::path::Path,
    serving: Serving,
) -> std::thread::JoinHandle<Vec<String>> {
    let script = task_script(log_path, options.task_secs);
    let tasks = options.tasks;
    let window = options.duration.mul_f64(SUBMIT_SHARE);
    let seed = options.seed.wrapping_add(1);
    std::thread::spawn(move || {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let start = Instant::now();
        let mut acked = Vec::with_capacity(tasks);
        for k in 0..tasks {
            if aborted() {
                break;
            }
            let due = window.mul_f64(k as f64 / tasks.max(1) as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            // A node may die between the pick and the call: try others.
            for _ in 0..3 {
                let live: Vec<SocketAddr> = serving
                    .lock()
                    .map(|s| s.iter().filter(|(_, up)| *up).map(|(u, _)| *u).collect())
                    .unwrap_or_default();
                if live.is_empty() {
                    break;
                }
                let api = live[rng.gen_range(0..live.len())];
                if let Ok(id) = tasks::submit(api, &script, TASK_RETRIES) {
                    acked.push(id);
                    break;
                }
            }
        }
        acked
    })
}

fn wait_final(
    cluster: &Cluster,
    ids: &[String],
    options: &ChaosOptions,
    out: &mut dyn Write,
    t0: Instant,
) -> Result<BTreeMap<String, TaskStatus>, DemoError> {
    let capacity = (options.nodes as f64 * f64::from(options.slots)).max(1.0);
    let budget =
        Duration::from_secs_f64(60.0 + options.task_secs * (3.0 + ids.len() as f64 / capacity));
    let deadline = Instant::now() + budget;
    // Give up sooner once nothing has become final for a while.
    let stall = Duration::from_secs_f64(60.0 + options.task_secs * 3.0);
    let mut progress_at = Instant::now();
    let mut done: BTreeMap<String, TaskStatus> = BTreeMap::new();
    let mut last_error: BTreeMap<String, String> = BTreeMap::new();
    let mut round = 0usize;
    while done.len() < ids.len() && Instant::now() < deadline && progress_at.elapsed() < stall {
        if aborted() {
            return Err(DemoError::Interrupted);
        }
        let live = cluster.serving_other_than(&[]);
        for (k, id) in ids.iter().enumerate() {
            if done.contains_key(id) {
                continue;
            }
            let api = cluster.nodes[live[(k + round) % live.len()]].api;
            match tasks::status(api, id) {
                Ok(status) if tasks::is_final(&status) => {
                    done.insert(id.clone(), status);
                    last_error.remove(id);
                    progress_at = Instant::now();
                }
                Ok(status) => {
                    last_error.insert(id.clone(), format!("still {}", status.state));
                }
                Err(e) => {
                    last_error.insert(id.clone(), e.replace(id.as_str(), "<id>"));
                }
            }
        }
        round += 1;
        if done.len() < ids.len() {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    say(
        out,
        t0,
        &format!("{} of {} tasks final", done.len(), ids.len()),
    );
    let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
    for why in last_error.values() {
        *reasons.entry(why.as_str()).or_insert(0) += 1;
    }
    for (why, count) in reasons {
        say(
            out,
            t0,
            &format!("  {count} tasks not final, last answer: {why}"),
        );
    }
    Ok(done)
}

fn check(
    report: &mut ChaosReport,
    acked: &[String],
    statuses: &BTreeMap<String, TaskStatus>,
    log: &TaskLog,
    kills: &[(String, u64)],
) {
    for id in acked {
        match statuses.get(id) {
            None => report.lost.push(id.clone()),
            Some(s) if s.state == "succeeded" => {
                report.succeeded += 1;
                let last = log.last_finished(id);
                if last.map(|a| a.attempt) != Some(s.attempt) {
                    report.stale_finals.push(format!(
                        "{id}: succeeded by attempt {} but the last attempt that finished is {:?}",
                        s.attempt,
                        last.map(|a| a.attempt)
                    ));
                }
            }
            Some(_) => report.failed += 1,
        }
    }
    report.double_runs = log
        .overlaps()
        .iter()
        .map(|o| {
            format!(
                "task {} attempts {} and {} overlapped {} ms",
                o.task,
                o.earlier,
                o.later,
                o.overlap_ns / 1_000_000
            )
        })
        .collect();
    report.restarted = log.tasks.values().filter(|a| a.len() > 1).count();
    for (node, kill_ns) in kills {
        for (task, attempt) in log.running_on(node, *kill_ns) {
            match log.next_start_after(&task, *kill_ns) {
                Some(next) => report
                    .failover_ms
                    .push(next.start_ns.saturating_sub(*kill_ns) / 1_000_000),
                None if statuses.get(&task).is_some_and(|s| s.state == "cancelled") => {}
                None => report
                    .failovers_missing
                    .push(format!("task {task} attempt {attempt} on {node}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_gives_one_schedule() {
        let a = schedule(7, 5, Duration::from_secs(60), 4.0, true);
        let b = schedule(7, 5, Duration::from_secs(60), 4.0, true);
        let c = schedule(8, 5, Duration::from_secs(60), 4.0, true);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.len() >= 5, "{} faults in 60 s", a.len());
    }

    #[test]
    fn faults_never_overlap() {
        let plan = schedule(3, 5, Duration::from_secs(300), 2.0, true);
        for pair in plan.windows(2) {
            assert!(
                pair[0].at_ms + pair[0].fault.length_ms() <= pair[1].at_ms,
                "{pair:?}"
            );
        }
    }
}
