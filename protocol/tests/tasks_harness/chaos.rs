//! The randomised chaos run shared by the chaos and planted-bug tests.

use super::{test_config, Sim};
use rand::Rng;
use shoal_protocol::coordinator::Config;
use shoal_protocol::tasks::{TaskId, TaskSpec};
use shoal_protocol::Bugs;

/// What one chaos run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub acked: usize,
    pub lost: Vec<TaskId>,
    pub lease_overlaps: u64,
    pub double_runs: u64,
    pub stale_commits: u64,
    pub violations: Vec<String>,
    pub failovers_ms: Vec<u64>,
    pub submitted: usize,
    pub submit_failed: u64,
}

impl Outcome {
    pub fn clean(&self) -> bool {
        self.violations.is_empty() && self.lost.is_empty()
    }
}

pub const NODES: usize = 7;
const FAULT_MS: u64 = 20_000;
const LIVENESS_MS: u64 = 40_000;

pub fn chaos_config(bugs: Bugs) -> Config {
    // CHAOS_GROUP=5 runs the same chaos with groups of five.
    let group = std::env::var("CHAOS_GROUP")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(3);
    Config {
        group_size_large: group,
        bugs,
        ..test_config()
    }
}

pub fn run(seed: u64, bugs: Bugs) -> Outcome {
    run_watched(seed, bugs, None)
}

pub fn run_watched(seed: u64, bugs: Bugs, watch: Option<TaskId>) -> Outcome {
    run_with(seed, bugs, watch, test_config().rho)
}

/// One run with clock rates drawn within `1 ± rho`, the bound the machines
/// are told too.
pub fn run_with(seed: u64, bugs: Bugs, watch: Option<TaskId>, rho: f64) -> Outcome {
    run_profile(seed, bugs, watch, rho, false)
}

/// With `restarts`, acceptors crash and come back with their disk often
/// and quickly (tens to hundreds of milliseconds down): the fault that a
/// missing restart quarantine needs to show.
pub fn run_profile(
    seed: u64,
    bugs: Bugs,
    watch: Option<TaskId>,
    rho: f64,
    restarts: bool,
) -> Outcome {
    let mut cfg = chaos_config(bugs);
    cfg.rho = rho;
    let mut sim = Sim::new(NODES, cfg, seed, rho);
    sim.watch = watch;
    sim.net.loss = 0.05;
    sim.net.delay_min = 1;
    sim.net.delay_max = 20;
    let mut down_until: Vec<Option<(u64, bool)>> = vec![None; NODES];
    let mut last_wipe = 0u64;
    let mut heal_at = 0u64;
    while sim.now < FAULT_MS {
        // Workload: about 8 submits a second.
        if sim.rng.gen_bool(0.4) {
            let i = sim.rng.gen_range(0..NODES);
            let dur = sim.rng.gen_range(100..3_000);
            let code = if sim.rng.gen_bool(0.1) { 1 } else { 0 };
            let mut spec = TaskSpec::mock(dur, code);
            spec.retries = 1;
            spec.retry_backoff_ms = 200;
            sim.submit(i, spec);
        }
        // One fault decision every 50 ms.
        let r: f64 = sim.rng.gen();
        let now = sim.now;
        let down = down_until.iter().filter(|d| d.is_some()).count();
        if restarts && r < 0.04 && down == 0 {
            let i = sim.rng.gen_range(0..NODES);
            sim.crash(i);
            down_until[i] = Some((now + sim.rng.gen_range(10..200), true));
        } else if r < 0.01 && down == 0 {
            let i = sim.rng.gen_range(0..NODES);
            let keep_disk = now < last_wipe + 10_000 || sim.rng.gen_bool(0.7);
            if !keep_disk {
                last_wipe = now;
            }
            sim.crash(i);
            down_until[i] = Some((now + sim.rng.gen_range(300..3_000), keep_disk));
        } else if r < 0.025 {
            let i = sim.rng.gen_range(0..NODES);
            let ms = sim.rng.gen_range(100..3_000);
            if sim.nodes[i].up() {
                sim.pause(i, ms);
            }
        } else if r < 0.035 {
            // Asymmetric cut: some node stops hearing some others.
            let a = sim.rng.gen_range(0..NODES);
            for b in 0..NODES {
                if b != a && sim.rng.gen_bool(0.5) {
                    sim.net.blocked.insert((b, a));
                }
            }
            heal_at = now + sim.rng.gen_range(500..3_000);
        } else if r < 0.04 {
            // Isolation both ways.
            let a = sim.rng.gen_range(0..NODES);
            let others: Vec<usize> = (0..NODES).filter(|b| *b != a).collect();
            sim.partition(&[a], &others);
            heal_at = now + sim.rng.gen_range(500..3_000);
        }
        if heal_at != 0 && now >= heal_at {
            sim.heal();
            heal_at = 0;
        }
        for (i, d) in down_until.iter_mut().enumerate() {
            if let Some((at, keep)) = *d {
                if now >= at {
                    sim.restart(i, keep);
                    *d = None;
                }
            }
        }
        sim.run_for(50);
    }
    // Liveness: heal everything and demand convergence.
    sim.heal();
    sim.net.loss = 0.0;
    for (i, d) in down_until.iter_mut().enumerate() {
        if d.take().is_some() {
            sim.restart(i, true);
        }
    }
    let deadline = sim.now + LIVENESS_MS;
    while sim.now < deadline {
        sim.run_for(1_000);
        let all_final = sim
            .acked
            .keys()
            .all(|t| sim.record(*t).is_some_and(|r| r.state.is_final()));
        if all_final {
            break;
        }
    }
    if let Some(t) = watch {
        for s in sim.starts.iter().filter(|s| s.2 == t) {
            eprintln!("start t={} n{} attempt {}", s.0, s.1, s.3);
        }
        for c in sim.commits.iter().filter(|c| c.task == t) {
            eprintln!(
                "commit t={} n{} attempt {} {:?}",
                c.at, c.node, c.attempt, c.state
            );
        }
        for k in sim.kills.iter().filter(|k| k.2 == t) {
            eprintln!("kill t={} n{} attempt {} {:?}", k.0, k.1, k.3, k.4);
        }
        for (i, n) in sim.nodes.iter().enumerate() {
            eprintln!("n{i} restarts {}", n.restarts);
        }
    }
    let lost = sim.check_final();
    if let Some(t) = lost.first() {
        eprintln!("{}", sim.describe(*t));
    }
    Outcome {
        acked: sim.acked.len(),
        lost,
        lease_overlaps: sim.lease_overlaps,
        double_runs: sim.double_runs,
        stale_commits: sim.stale_commits,
        violations: sim.violations.clone(),
        failovers_ms: sim.failovers_ms.clone(),
        submitted: sim.submitted.len(),
        submit_failed: sim.submit_failed,
    }
}
