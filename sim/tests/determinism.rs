//! The same scenario and seed replay exactly; different seeds do not.

use shoal_sim::{run_scenario, Impl, Scenario};
use std::path::Path;

fn smoke() -> Scenario {
    Scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/smoke.toml"))
        .expect("smoke scenario loads")
}

fn impls() -> Vec<Impl> {
    vec![Impl::Foca, Impl::Shoal]
}

#[test]
fn same_seed_gives_same_trace_hash() {
    let s = smoke();
    for imp in impls() {
        let a = run_scenario(&s, 42, imp).report;
        let b = run_scenario(&s, 42, imp).report;
        assert_eq!(a.trace_hash, b.trace_hash, "{imp:?}");
        assert_eq!(a.without_wall_time(), b.without_wall_time(), "{imp:?}");
        let ja = serde_json::to_string(&a.without_wall_time()).unwrap();
        let jb = serde_json::to_string(&b.without_wall_time()).unwrap();
        assert_eq!(
            ja, jb,
            "{imp:?}: reports must be byte-identical except wall_ms"
        );
    }
}

#[test]
fn different_seeds_differ() {
    let s = smoke();
    for imp in impls() {
        let a = run_scenario(&s, 1, imp).report;
        let b = run_scenario(&s, 2, imp).report;
        assert_ne!(a.trace_hash, b.trace_hash, "{imp:?}");
        assert_ne!(a.derived, b.derived, "{imp:?}");
    }
}
