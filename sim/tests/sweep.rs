//! Short sweeps that must come out clean: the smoke scenario and a reduced
//! membership-chaos (debug builds run these in CI).

use shoal_sim::{run_scenario, Impl, Scenario};
use std::path::Path;

fn load(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("scenarios")
            .join(name),
    )
    .expect("scenario loads")
}

/// Runs every seed; fails on any violation except the ones `tolerated`,
/// and except the seeds in `known` (seed, invariant): those are open bugs
/// found by the simulator, and must still fail with that invariant (when one
/// is fixed, this says so: move it to regressions.toml).
fn sweep_known(
    s: &Scenario,
    seeds: std::ops::Range<u64>,
    imp: Impl,
    tolerated: &[&str],
    known: &[(u64, &str)],
) {
    let mut failures = Vec::new();
    for seed in seeds {
        if let Some(&(_, invariant)) = known.iter().find(|k| k.0 == seed) {
            let r = run_scenario(s, seed, imp).report;
            assert!(
                r.violations.iter().any(|v| v.invariant == invariant),
                "{} {imp:?} seed {seed} no longer breaks {invariant}: fixed? move it to regressions.toml",
                s.name
            );
            continue;
        }
        let r = run_scenario(s, seed, imp).report;
        let first = r
            .violations
            .iter()
            .find(|v| !tolerated.contains(&v.invariant.as_str()));
        if let Some(v) = first {
            failures.push(format!(
                "seed {seed}: {} at {} ms: {}",
                v.invariant, v.at_ms, v.detail
            ));
        }
        assert!(r.membership.crashes > 0 || s.faults.crashes == 0);
    }
    assert!(
        failures.is_empty(),
        "{} {:?}:\n{}",
        s.name,
        imp,
        failures.join("\n")
    );
}

fn sweep(s: &Scenario, seeds: std::ops::Range<u64>, imp: Impl, tolerated: &[&str]) {
    sweep_known(s, seeds, imp, tolerated, &[]);
}

/// Open shoal membership bugs the chaos sweep found. Seed 10: after the
/// heal, n0 still holds n14 down at incarnation 2 while n14 is live at 3 and
/// sees n0 alive: the refutation never reaches n0 (same shape as
/// membership-chaos seeds 1, 2, 4, 5 at full size).
// Seed 10 (an observer kept a refuted member down after the heal) was fixed
// in the membership machine; the sweep below covers it as an ordinary seed.
const SHOAL_CHAOS_KNOWN: &[(u64, &str)] = &[];

/// membership-chaos with fewer nodes and less time, keeping every fault kind.
fn reduced_chaos() -> Scenario {
    let mut s = load("membership-chaos.toml");
    s.name = "membership-chaos-reduced".into();
    s.nodes = 40;
    s.virtual_s = 150;
    s.warmup_s = 10;
    s.safety_s = 80;
    s.convergence_deadline_ms = 60_000;
    s.faults.crashes = 4;
    s.faults.leaves = 1;
    s.faults.pauses = 6;
    s.faults.swizzle_nodes = 4;
    s.validate().expect("reduced chaos is valid");
    s
}

// foca is the baseline, not the system under test: it has no push-pull, so
// a lost "down" leaves a lingering suspicion for a probe round, and under
// chaos it does not always converge by the deadline. Its safety invariants
// must hold all the same.
const FOCA_TOLERATED: &[&str] = &["no_convergence"];

#[test]
fn smoke_sweep_with_foca_keeps_the_safety_invariants() {
    sweep(&load("smoke.toml"), 1..11, Impl::Foca, FOCA_TOLERATED);
}

#[test]
fn chaos_sweep_with_foca_keeps_the_safety_invariants() {
    sweep(&reduced_chaos(), 1..11, Impl::Foca, FOCA_TOLERATED);
}

#[test]
fn smoke_sweep_with_shoal_has_no_violations() {
    sweep(&load("smoke.toml"), 1..11, Impl::Shoal, &[]);
}

#[test]
fn chaos_sweep_with_shoal_has_no_violations_but_the_known_seeds() {
    sweep_known(&reduced_chaos(), 1..11, Impl::Shoal, &[], SHOAL_CHAOS_KNOWN);
}

/// The `wan` preset on 50-150 ms round trips: no violation (no live node
/// confirmed down, convergence after the heal) and detection within the
/// preset's budget: first probe of a crashed member within a few 1.5 s
/// rounds, then the 7.5 s minimum suspicion at 100 members.
#[test]
fn wan_preset_detects_crashes_without_false_positives() {
    let s = load("wan.toml");
    assert_eq!(
        s.membership_preset,
        shoal_sim::scenario::MembershipPreset::Wan
    );
    sweep(&s, 1..6, Impl::Shoal, &[]);
    for seed in 1..4 {
        let m = run_scenario(&s, seed, Impl::Shoal).report.membership;
        assert_eq!(m.false_positives, 0, "seed {seed}");
        assert_eq!(m.undetected, 0, "seed {seed}");
        let p99 = m.detect_all_ms.p99.expect("crashes were detected");
        assert!(
            (7_500.0..20_000.0).contains(&p99),
            "seed {seed}: detect_all p99 {p99} ms"
        );
    }
}
