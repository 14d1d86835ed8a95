//! The task world on shoal-sim: safety and liveness on the smoke scenario,
//! and determinism of the whole run from the seed.

use shoal_sim::{tasks, Scenario};
use std::path::Path;

fn load(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).expect("scenario loads")
}

fn field(o: &shoal_sim::Outcome, name: &str) -> serde_json::Value {
    o.report.tasks.as_ref().expect("tasks section")[name].clone()
}

#[test]
fn tasks_smoke_keeps_every_guarantee_and_loses_nothing() {
    let s = load("tasks-smoke.toml");
    for seed in 1..=3 {
        let o = tasks::run(&s, seed, shoal_protocol::Bugs::none());
        assert!(
            o.report.violations.is_empty(),
            "seed {seed}: {:?}",
            &o.report.violations[..o.report.violations.len().min(3)]
        );
        assert_eq!(field(&o, "lost"), 0, "seed {seed}");
        assert_eq!(field(&o, "linearizability"), "ok", "seed {seed}");
        let acked = field(&o, "acknowledged").as_u64().expect("count");
        assert!(acked > 100, "seed {seed}: only {acked} acknowledged");
        assert_eq!(field(&o, "completed").as_u64(), Some(acked));
    }
}

/// Nodes whose own health turns critical take no work, by offer, pull or a
/// claim already in flight; their tasks run elsewhere and none is lost.
#[test]
fn critical_nodes_start_no_attempt_and_lose_nothing() {
    let s = load("tasks-critical.toml");
    for seed in 1..=30 {
        let o = tasks::run(&s, seed, shoal_protocol::Bugs::none());
        assert!(
            o.report
                .derived
                .faults
                .iter()
                .any(|f| f.contains("critical")),
            "seed {seed}: the schedule turned no node critical"
        );
        assert!(
            o.report.violations.is_empty(),
            "seed {seed}: {:?}",
            &o.report.violations[..o.report.violations.len().min(3)]
        );
        assert_eq!(field(&o, "critical_starts"), 0, "seed {seed}");
        assert_eq!(field(&o, "lost"), 0, "seed {seed}");
    }
}

/// Tasks of three resource shapes under chaos: no node's attempts ever
/// hold more slots, CPU or memory than it offers, and nothing is lost.
#[test]
fn resource_shapes_never_over_commit_a_node_and_lose_nothing() {
    let s = load("tasks-shapes.toml");
    for seed in 1..=5 {
        let o = tasks::run(&s, seed, shoal_protocol::Bugs::none());
        assert!(
            o.report.violations.is_empty(),
            "seed {seed}: {:?}",
            &o.report.violations[..o.report.violations.len().min(3)]
        );
        assert_eq!(field(&o, "over_commits"), 0, "seed {seed}");
        assert_eq!(field(&o, "lost"), 0, "seed {seed}");
        let acked = field(&o, "acknowledged").as_u64().expect("count");
        assert!(acked > 300, "seed {seed}: only {acked} acknowledged");
    }
}

#[test]
fn the_report_has_every_contract_field() {
    let o = tasks::run(&load("tasks-smoke.toml"), 4, shoal_protocol::Bugs::none());
    for name in [
        "submitted",
        "acknowledged",
        "completed",
        "lost",
        "double_runs",
        "stale_commits",
        "lease_overlaps",
        "failover_ms",
        "failover_one_fault_ms",
        "claims_per_s",
        "placement_vs_ideal",
        "linearizability",
    ] {
        assert!(!field(&o, name).is_null(), "missing {name}");
    }
    for q in ["p50", "p99", "max"] {
        assert!(field(&o, "failover_ms").get(q).is_some(), "failover_ms.{q}");
    }
    assert!(field(&o, "placement_vs_ideal").as_f64().unwrap_or(0.0) > 0.0);
}

#[test]
fn the_same_seed_gives_the_same_task_trace() {
    let s = load("tasks-smoke.toml");
    let a = tasks::run(&s, 7, shoal_protocol::Bugs::none());
    let b = tasks::run(&s, 7, shoal_protocol::Bugs::none());
    let c = tasks::run(&s, 8, shoal_protocol::Bugs::none());
    assert_eq!(a.report.trace_hash, b.report.trace_hash);
    assert_eq!(a.report.without_wall_time(), b.report.without_wall_time());
    assert_ne!(a.report.trace_hash, c.report.trace_hash);
}

#[cfg(not(feature = "planted-bugs"))]
#[test]
fn a_bug_without_the_feature_says_how_to_rebuild() {
    let e = tasks::bugs_from(Some("stale-commit")).unwrap_err();
    assert!(e.contains("--features planted-bugs"), "{e}");
    assert!(tasks::bugs_from(Some("no-such-bug")).is_err());
}

#[test]
fn the_r5_comparison_differs_from_tasks_chaos_only_in_group_size() {
    let three = load("tasks-chaos.toml");
    let five = load("tasks-chaos-r5.toml");
    let (t3, t5) = (
        three.tasks.as_ref().expect("tasks"),
        five.tasks.as_ref().expect("tasks"),
    );
    assert_eq!((t3.group_size, t5.group_size), (3, 5));
    let strip = |s: &Scenario| {
        let mut s = s.clone();
        s.name.clear();
        if let Some(t) = s.tasks.as_mut() {
            t.group_size = 0;
        }
        format!("{s:?}")
    };
    assert_eq!(strip(&three), strip(&five));
}
