//! Each planted bug must be caught by the chaos checkers within a bounded
//! number of seeds: proof that the checkers can fail.
#![cfg(feature = "planted-bugs")]

mod tasks_harness;

use shoal_protocol::{Bug, Bugs};
use tasks_harness::chaos::run_profile;

/// Seeds tried per bug before the test gives up.
const MAX_SEEDS: u64 = 400;

/// Clock drift bound of the runs: wide, so that a missing drift margin
/// opens a window of hundreds of milliseconds instead of tens.
const RHO: f64 = 0.1;

/// Whether a run broke a safety guarantee (lost tasks alone do not count:
/// a planted bug must be caught by what it breaks).
fn unsafe_run(o: &tasks_harness::chaos::Outcome) -> bool {
    o.lease_overlaps > 0
        || o.double_runs > 0
        || o.stale_commits > 0
        || o.violations
            .iter()
            .any(|v| v.contains("written by attempt"))
}

fn caught_within(bug: Bug) -> Option<u64> {
    let restarts = bug == Bug::NoQuarantine;
    (1..=MAX_SEEDS).find(|seed| {
        let o = run_profile(*seed, Bugs::one(bug), None, RHO, restarts);
        if unsafe_run(&o) {
            eprintln!(
                "{}: caught at seed {seed}: overlaps {} double runs {} stale {} lost {} first {:?}",
                bug.name(),
                o.lease_overlaps,
                o.double_runs,
                o.stale_commits,
                o.lost.len(),
                o.violations.first()
            );
        }
        unsafe_run(&o)
    })
}

#[test]
fn lease_overwrite_is_caught() {
    assert!(caught_within(Bug::LeaseOverwrite).is_some());
}

#[test]
fn no_quarantine_is_caught() {
    assert!(caught_within(Bug::NoQuarantine).is_some());
}

#[test]
fn no_self_fence_is_caught() {
    assert!(caught_within(Bug::NoSelfFence).is_some());
}

#[test]
fn stale_commit_is_caught() {
    assert!(caught_within(Bug::StaleCommit).is_some());
}

#[test]
fn no_drift_margin_is_caught() {
    assert!(caught_within(Bug::NoDriftMargin).is_some());
}

/// The same runs without any bug are safe: what catches the bugs is the
/// bug, not the harness.
#[test]
fn the_bug_profiles_are_safe_without_bugs() {
    for seed in 1..=10 {
        for restarts in [false, true] {
            let o = run_profile(seed, Bugs::none(), None, RHO, restarts);
            assert!(!unsafe_run(&o), "seed {seed}: {:?}", o.violations.first());
        }
    }
}
