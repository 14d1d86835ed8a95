//! Each planted bug is caught by the task world's checkers within a
//! bounded number of seeds: proof that the checkers can fail.
//! `cargo test -p shoal-sim --features planted-bugs --test tasks_bugs`
#![cfg(feature = "planted-bugs")]

use shoal_protocol::{Bug, Bugs};
use shoal_sim::{tasks, Scenario};
use std::path::Path;

/// Seeds tried per bug before the test gives up.
const MAX_SEEDS: u64 = 300;

/// Invariants that show a broken safety guarantee (a lost task alone does
/// not count: a bug must be caught by what it breaks).
const SAFETY: [&str; 6] = [
    "lease_overlaps",
    "double_runs",
    "stale_commits",
    "linearizability",
    "critical_starts",
    "over_commits",
];

fn scenario() -> Scenario {
    load("tasks-bugs.toml")
}

fn load(name: &str) -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name);
    Scenario::load(&path).expect("scenario loads")
}

fn unsafe_run(s: &Scenario, seed: u64, bugs: Bugs) -> Option<String> {
    let o = tasks::run(s, seed, bugs);
    o.report
        .violations
        .iter()
        .find(|v| SAFETY.contains(&v.invariant.as_str()))
        .map(|v| format!("{} at {} ms: {}", v.invariant, v.at_ms, v.detail))
}

fn caught_within(bug: Bug) -> u64 {
    caught_in(&scenario(), bug)
}

fn caught_in(s: &Scenario, bug: Bug) -> u64 {
    let found =
        (1..=MAX_SEEDS).find_map(|seed| unsafe_run(s, seed, Bugs::one(bug)).map(|v| (seed, v)));
    let (seed, v) =
        found.unwrap_or_else(|| panic!("{} not caught in {MAX_SEEDS} seeds", bug.name()));
    eprintln!("{}: caught at seed {seed}: {v}", bug.name());
    seed
}

#[test]
fn lease_overwrite_is_caught() {
    caught_within(Bug::LeaseOverwrite);
}

#[test]
fn no_quarantine_is_caught() {
    caught_within(Bug::NoQuarantine);
}

#[test]
fn no_self_fence_is_caught() {
    caught_within(Bug::NoSelfFence);
}

#[test]
fn stale_commit_is_caught() {
    caught_within(Bug::StaleCommit);
}

#[test]
fn no_drift_margin_is_caught() {
    caught_within(Bug::NoDriftMargin);
}

#[test]
fn critical_takes_work_is_caught() {
    caught_in(&load("tasks-critical.toml"), Bug::CriticalTakesWork);
}

#[test]
fn over_commit_is_caught() {
    caught_in(&load("tasks-shapes.toml"), Bug::OverCommit);
}

#[test]
fn the_bug_scenario_is_safe_without_bugs() {
    let s = scenario();
    for seed in 1..=5 {
        assert_eq!(unsafe_run(&s, seed, Bugs::none()), None, "seed {seed}");
    }
}
