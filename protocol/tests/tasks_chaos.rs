//! Randomised chaos on the in-memory cluster: crashes, restarts with and
//! without disk, pauses, asymmetric partitions, loss and clock drift, then
//! a liveness phase. Checks docs/protocol.md §9 items 1–4 and 7 in global time.

mod tasks_harness;

use shoal_protocol::tasks::TaskId;
use shoal_protocol::Bugs;
use tasks_harness::chaos::{run, run_watched};

#[test]
fn chaos_keeps_every_guarantee_over_50_seeds() {
    let mut acked = 0;
    let mut failovers = Vec::new();
    for seed in 1..=50 {
        let o = run(seed, Bugs::none());
        assert!(
            o.clean(),
            "seed {seed}: lost {:?}, overlaps {}, double runs {}, stale commits {}, first violations {:#?}",
            o.lost,
            o.lease_overlaps,
            o.double_runs,
            o.stale_commits,
            &o.violations[..o.violations.len().min(5)]
        );
        eprintln!(
            "seed {seed}: acked {} submitted {} failed {}",
            o.acked, o.submitted, o.submit_failed
        );
        assert!(
            o.acked > 50,
            "seed {seed}: only {} tasks acknowledged",
            o.acked
        );
        acked += o.acked;
        failovers.extend(o.failovers_ms);
    }
    failovers.sort_unstable();
    let p = |q: f64| {
        failovers
            .get(((failovers.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "chaos: {acked} acknowledged tasks over 50 seeds; failover ms p50 {} p99 {} max {} (n={})",
        p(0.5),
        p(0.99),
        failovers.last().copied().unwrap_or(0),
        failovers.len()
    );
}

#[test]
#[ignore]
fn debug_seed() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let task = std::env::var("TASK")
        .ok()
        .and_then(|s| u64::from_str_radix(&s, 16).ok())
        .map(TaskId);
    let o = run_watched(seed, Bugs::none(), task);
    eprintln!("{:#?}", &o.violations[..o.violations.len().min(5)]);
}

/// A longer sweep: `SEEDS=from..to cargo test --release --test tasks_chaos sweep -- --ignored`.
#[test]
#[ignore]
fn sweep() {
    let range = std::env::var("SEEDS").unwrap_or_else(|_| "1..200".into());
    let (a, b) = range.split_once("..").expect("SEEDS=from..to");
    let (a, b): (u64, u64) = (a.parse().expect("from"), b.parse().expect("to"));
    let mut bad = Vec::new();
    for seed in a..b {
        let o = run(seed, Bugs::none());
        if !o.clean() {
            eprintln!(
                "seed {seed}: lost {} overlaps {} double {} stale {} {:?}",
                o.lost.len(),
                o.lease_overlaps,
                o.double_runs,
                o.stale_commits,
                o.violations.first()
            );
            bad.push(seed);
        }
    }
    assert!(bad.is_empty(), "failing seeds: {bad:?}");
}
