//! Every case of `sim/regressions.toml` runs clean.

use shoal_sim::{regressions, run_scenario, Impl, Scenario};
use std::path::Path;

#[test]
fn every_regression_seed_runs_clean() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(dir.join("regressions.toml")).expect("regressions.toml");
    let cases = regressions::parse(&text)
        .expect("regressions.toml parses")
        .case;
    assert!(!cases.is_empty());
    for case in cases {
        let scenario = Scenario::load(&dir.join(&case.scenario)).expect("scenario loads");
        let imp = match case.implementation.as_str() {
            "shoal" => Impl::Shoal,
            "foca" => Impl::Foca,
            other => panic!("unknown impl {other} in regressions.toml"),
        };
        // A scenario with a `[tasks]` table runs the task world, as
        // `shoal-sim run` does.
        let report = if scenario.tasks.is_some() {
            shoal_sim::tasks::run(&scenario, case.seed, shoal_protocol::Bugs::none()).report
        } else {
            run_scenario(&scenario, case.seed, imp).report
        };
        assert!(
            report.violations.is_empty(),
            "{} seed {} ({}): {:?}",
            case.scenario,
            case.seed,
            case.note,
            report.violations
        );
    }
}
