//! Each planted bug must be caught by the chaos checkers within a bounded
//! number of seeds: proof that the checkers can fail.
#![cfg(feature = "planted-bugs")]

mod tasks_harness;

use shoal_protocol::{Bug, Bugs};
use tasks_harness::chaos::run_with;

/// Seeds tried per bug before the test gives up.
const MAX_SEEDS: u64 = 30;

/// Clock drift bound of the runs: wide, so that a missing drift margin
/// opens a window of hundreds of milliseconds instead of tens.
const RHO: f64 = 0.1;

fn caught_within(bug: Bug) -> Option<u64> {
    (1..=MAX_SEEDS).find(|seed| {
        let o = run_with(*seed, Bugs::one(bug), None, RHO);
        if !o.clean() {
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
        !o.clean()
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
