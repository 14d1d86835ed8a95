//! The task world: a scenario with a `[tasks]` table runs shoal's
//! coordinator (leases, CASPaxos task records, scheduling) on every node
//! under the scenario's network, clocks and fault schedule, with a Poisson
//! task workload, and reports the `tasks` section of the JSON report.

pub mod ideal;
pub mod lin;
pub mod world;

use crate::engine::Outcome;
use crate::faults::{schedule, FaultAction};
use crate::report::{Derived, MembershipReport, Quantiles3, Report, Violation};
use crate::scenario::Scenario;
pub use crate::scenario::{TaskShape, TasksModel};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocol::coordinator::Config;
use shoal_protocol::resources::Resources;
use shoal_protocol::tasks::TaskSpec;
use shoal_protocol::Bugs;
use world::World;

/// Bug names `--bug` accepts in a task world.
pub const BUG_NAMES: &[&str] = &[
    "lease-overwrite",
    "no-quarantine",
    "no-self-fence",
    "stale-commit",
    "no-drift-margin",
    "critical-takes-work",
    "over-commit",
];

/// Turns a `--bug` name into the coordinator's bug set. Without the
/// `planted-bugs` feature the bug would be a silent no-op: refused.
pub fn bugs_from(name: Option<&str>) -> Result<Bugs, String> {
    let Some(name) = name else {
        return Ok(Bugs::none());
    };
    let bug: shoal_protocol::Bug = name.parse()?;
    if !BUG_NAMES.contains(&name) {
        // A bug of a machine the task world does not run (federated jobs)
        // would be a silent no-op here.
        return Err(format!(
            "bug `{name}` is not in the task world; it takes one of: {}",
            BUG_NAMES.join(", ")
        ));
    }
    if !cfg!(feature = "planted-bugs") {
        return Err(format!(
            "bug `{name}` is not compiled in: rebuild with `cargo build -p shoal-sim --features planted-bugs`"
        ));
    }
    Ok(Bugs::one(bug))
}

/// One line over a sweep's task reports: failover quantiles of all seeds'
/// samples pooled, the mean and worst `placement_vs_ideal`, and the safety
/// counters summed. `None` when no report has a `tasks` section.
pub fn sweep_summary<'a>(reports: impl IntoIterator<Item = &'a Report>) -> Option<String> {
    let mut failovers: Vec<f64> = Vec::new();
    let mut one_fault: Vec<f64> = Vec::new();
    let mut placement: Vec<f64> = Vec::new();
    let mut sums = [0u64; 5];
    let names = [
        "acknowledged",
        "lost",
        "double_runs",
        "stale_commits",
        "lease_overlaps",
    ];
    for r in reports {
        let Some(t) = &r.tasks else { continue };
        if let Some(v) = t["failover_samples_ms"].as_array() {
            failovers.extend(v.iter().filter_map(serde_json::Value::as_f64));
        }
        if let Some(v) = t["failover_one_fault_samples_ms"].as_array() {
            one_fault.extend(v.iter().filter_map(serde_json::Value::as_f64));
        }
        if let Some(p) = t["placement_vs_ideal"].as_f64() {
            placement.push(p);
        }
        for (sum, name) in sums.iter_mut().zip(names) {
            *sum += t[name].as_u64().unwrap_or(0);
        }
    }
    if placement.is_empty() {
        return None;
    }
    let q = Quantiles3::of(&failovers);
    let q1 = Quantiles3::of(&one_fault);
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    let mean = placement.iter().sum::<f64>() / placement.len() as f64;
    let worst = placement.iter().copied().fold(f64::MIN, f64::max);
    Some(format!(
        "tasks pooled: failover_ms n {} p50 {} p99 {} max {}  (holder's crash the group's only fault: n {} p50 {} p99 {} max {})  placement_vs_ideal mean {mean:.3} max {worst:.3}  \
         acknowledged {} lost {} double_runs {} stale_commits {} lease_overlaps {}",
        failovers.len(),
        fmt(q.p50),
        fmt(q.p99),
        fmt(q.max),
        one_fault.len(),
        fmt(q1.p50),
        fmt(q1.p99),
        fmt(q1.max),
        sums[0],
        sums[1],
        sums[2],
        sums[3],
        sums[4],
    ))
}

/// A shape drawn by weight; `None` when the model has none.
fn pick_shape<'a>(shapes: &'a [TaskShape], rng: &mut ChaCha8Rng) -> Option<&'a TaskShape> {
    let total: f64 = shapes.iter().map(|s| s.weight.max(0.0)).sum();
    if shapes.is_empty() || total <= 0.0 {
        return None;
    }
    let mut x = rng.gen_range(0.0..total);
    for shape in shapes {
        let w = shape.weight.max(0.0);
        if x < w {
            return Some(shape);
        }
        x -= w;
    }
    shapes.last()
}

/// Runs the task world of `scenario` (which must have `[tasks]`).
pub fn run(scenario: &Scenario, seed: u64, bugs: Bugs) -> Outcome {
    let started = std::time::Instant::now();
    let model = scenario.tasks.clone().unwrap_or_else(TasksModel::idle);
    let n = scenario.nodes as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a5c_5eed);
    let world_seed: u64 = rng.gen();
    let faults_seed: u64 = rng.gen();
    let lin_seed: u64 = rng.gen();
    let rho = model.rho.max(scenario.clock.drift_rho);
    let cfg = Config {
        shards: model.shards,
        group_size_small: model.group_size.min(3),
        group_size_large: model.group_size,
        lease_ms: model.lease_ms,
        renew_ms: model.lease_ms / 3,
        rho,
        slots_total: model.slots_per_node,
        capacity: Resources::new(model.cpu_per_node_milli, model.memory_per_node_mib),
        placement: model.placement,
        retention_ms: 3_600_000,
        bugs,
        // Every node offers the workload's label, so labelled tasks are
        // placeable anywhere (label-restricted placement is not modelled).
        labels: [("kind".to_string(), "batch".to_string())].into(),
        ..Config::default()
    };
    let mut w = World::new(
        n,
        cfg,
        world_seed,
        scenario.clock.drift_rho,
        scenario.network.clone(),
        world::DetectionModel {
            detect_ms: model.detect_ms,
            join_ms: model.join_ms,
        },
    );
    let faults = schedule(scenario, faults_seed);
    let mut next_fault = 0;
    let heal = scenario.heal_ms();
    let end = scenario.end_ms();
    let warm = scenario.warmup_s * 1000;
    let mut lin = lin::Checker::new(model.linearizability_ops, lin_seed);
    let mut next_arrival = warm as f64;
    let mut workload: Vec<ideal::Job> = Vec::new();
    let mut node_down_from: Vec<Option<u64>> = vec![None; n];
    let mut downs: Vec<(usize, u64, u64)> = Vec::new();
    let mut submits = 0u64;
    let mut healed = false;
    let mut liveness_done_ms = None;
    while w.now < end {
        let now = w.now;
        while next_fault < faults.len() && faults[next_fault].at_ms <= now {
            let f = faults[next_fault].action.clone();
            next_fault += 1;
            w.trace.word(0xfa);
            match f {
                FaultAction::Crash(i) | FaultAction::Leave(i) => {
                    w.crash(i as usize);
                    node_down_from[i as usize] = Some(now);
                }
                FaultAction::Restart { node, with_state } => {
                    let with_state = with_state || !w.may_lose_disk(node as usize);
                    w.restart(node as usize, with_state);
                    if let Some(from) = node_down_from[node as usize].take() {
                        downs.push((node as usize, from, now));
                    }
                }
                FaultAction::Pause(i) => w.pause(i as usize),
                FaultAction::Resume(i) => w.resume(i as usize),
                // A slow CPU is not modelled in the task world.
                FaultAction::Slow { .. } | FaultAction::Unslow(_) => {}
                FaultAction::Partition { id, kind, inside } => w.links.partition(id, kind, &inside),
                FaultAction::HealPartition(id) => w.links.heal_partition(id),
                FaultAction::Clog(i) => w.links.clog(i),
                FaultAction::Unclog(i) => w.links.unclog(i),
                FaultAction::Critical(i) => w.set_critical(i as usize, true),
                FaultAction::Passing(i) => w.set_critical(i as usize, false),
            }
        }
        if now >= heal && !healed {
            // Liveness phase: everything heals; crashed nodes come back
            // with their disk.
            healed = true;
            w.links.heal_all();
            for (i, down_from) in node_down_from.iter_mut().enumerate() {
                w.resume(i);
                w.set_critical(i, false);
                if !w.nodes[i].up() {
                    w.restart(i, true);
                    if let Some(from) = down_from.take() {
                        downs.push((i, from, now));
                    }
                }
            }
        }
        // Workload: Poisson arrivals at a random active node.
        while model.arrivals_per_s > 0.0 && next_arrival <= now as f64 && now < heal {
            let u: f64 = rng.gen_range(f64::EPSILON..1.0);
            next_arrival += -u.ln() * 1000.0 / model.arrivals_per_s;
            let [lo, hi] = model.duration_ms;
            let dur = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
            let code = i32::from(rng.gen_bool(model.fail_probability.clamp(0.0, 1.0)));
            let (slots, resources) = match pick_shape(&model.shapes, &mut rng) {
                Some(shape) => (
                    shape.slots,
                    Resources::new(shape.cpu_milli, shape.memory_mib),
                ),
                None if rng.gen_bool(model.two_slot_probability.clamp(0.0, 1.0)) => {
                    (2, Resources::default())
                }
                None => (1, Resources::default()),
            };
            let need = [slots, resources.cpu_milli, resources.memory_mib];
            let mut spec = TaskSpec::mock(dur, code);
            spec.slots = slots;
            spec.resources = resources;
            spec.retries = model.retries;
            spec.retry_backoff_ms = 200;
            if rng.gen_bool(model.label_probability.clamp(0.0, 1.0)) {
                spec.labels.insert("kind".into(), "batch".into());
            }
            let i = rng.gen_range(0..n);
            if w.submit(i, spec) {
                submits += 1;
                // A failing task runs 1 + retries times with the backoff in
                // between in the real run: the ideal pays that too.
                let busy = if code == 0 {
                    dur
                } else {
                    dur * (1 + u64::from(model.retries)) + 200 * u64::from(model.retries)
                };
                workload.push(ideal::Job {
                    submit_ms: now,
                    duration_ms: busy,
                    need,
                });
            }
        }
        lin.tick(&mut w, now < heal);
        w.step();
        if healed && liveness_done_ms.is_none() && w.now.is_multiple_of(500) && w.all_final() {
            liveness_done_ms = Some(w.now - heal);
        }
    }
    for (i, from) in node_down_from.iter().enumerate() {
        if let Some(f) = from {
            downs.push((i, *f, end));
        }
    }
    let lost = w.check_final();
    let linearizability = lin.verdict();
    if linearizability != "ok" {
        w.violations_total += 1;
        w.violations
            .push(("linearizability", w.now, linearizability.clone()));
    }
    if liveness_done_ms.is_none() && lost > 0 {
        w.violations_total += 1;
        w.violations.push((
            "liveness",
            w.now,
            format!("{lost} acknowledged tasks not final by the end of the liveness phase"),
        ));
    }
    // Mean real response over acknowledged tasks that finished.
    let mut real: Vec<f64> = Vec::new();
    for (t, sub) in &w.acked {
        if let Some(fin) = w.finished_at.get(t) {
            real.push(fin.saturating_sub(*sub) as f64);
        }
    }
    let mean_real = if real.is_empty() {
        0.0
    } else {
        real.iter().sum::<f64>() / real.len() as f64
    };
    let capacity = [
        model.slots_per_node,
        model.cpu_per_node_milli,
        model.memory_per_node_mib,
    ];
    let mean_ideal = ideal::mean_response_ms(&workload, n, capacity, &downs);
    let placement_vs_ideal = if mean_ideal > 0.0 {
        mean_real / mean_ideal
    } else {
        0.0
    };
    let acked = w.acked.len() as u64;
    let tasks = serde_json::json!({
        "submitted": submits,
        "acknowledged": acked,
        "completed": acked - lost,
        "lost": lost,
        "double_runs": w.double_runs,
        "stale_commits": w.stale_commits,
        "lease_overlaps": w.lease_overlaps,
        "critical_starts": w.critical_starts,
        "over_commits": w.over_commits,
        "failover_ms": Quantiles3::of(&w.failovers_ms),
        "failover_samples_ms": &w.failovers_ms,
        "failover_one_fault_ms": Quantiles3::of(&w.failovers_one_fault_ms),
        "failover_one_fault_samples_ms": &w.failovers_one_fault_ms,
        "claims_per_s": w.starts as f64 / scenario.virtual_s.max(1) as f64,
        "placement_vs_ideal": placement_vs_ideal,
        "mean_response_ms": mean_real,
        "ideal_mean_response_ms": mean_ideal,
        "liveness_after_heal_ms": liveness_done_ms,
        "linearizability": linearizability,
        "linearizability_ops": lin.completed(),
    });
    w.trace.word(lost);
    let violations = w
        .violations
        .iter()
        .map(|(inv, at, d)| Violation {
            invariant: (*inv).to_string(),
            at_ms: *at,
            detail: d.clone(),
        })
        .collect();
    let report = Report {
        scenario: scenario.name.clone(),
        implementation: "shoal".into(),
        seed,
        nodes: scenario.nodes,
        virtual_s: scenario.virtual_s,
        wall_ms: started.elapsed().as_millis() as u64,
        trace_hash: w.trace.hex(),
        violations,
        violations_total: w.violations_total,
        membership: MembershipReport {
            crashes: faults
                .iter()
                .filter(|f| matches!(f.action, FaultAction::Crash(_)))
                .count() as u64,
            ..MembershipReport::default()
        },
        tasks: Some(tasks),
        derived: Derived {
            network_seed: world_seed,
            faults_seed,
            engine_seed: lin_seed,
            faults: faults
                .iter()
                .map(|f| format!("{} ms: {}", f.at_ms, f.action))
                .collect(),
            ..Derived::default()
        },
    };
    Outcome {
        report,
        samples: Vec::new(),
        detect_all_ms: Vec::new(),
        heal_ms: heal,
    }
}
