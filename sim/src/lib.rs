//! `shoal-sim`: a deterministic discrete-event simulator hosting shoal's
//! protocol machines for hundreds to thousands of virtual nodes.
//!
//! One seed derives everything ([`engine::Sim::new`]); the same scenario and
//! seed give the same trace hash and the same report except `wall_ms`.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod engine;
pub mod faults;
pub mod host;
pub mod net;
pub mod plot;
pub mod regressions;
pub mod report;
pub mod scenario;
pub mod tasks;
pub mod trace;

pub use engine::{run, run_with_progress, Outcome, RunConfig};
pub use host::{Impl, SimNode};
pub use report::{Report, Violation};
pub use scenario::Scenario;

/// Bugs that `--bug NAME` can plant in a run (task worlds only). Any other
/// name is refused.
pub const KNOWN_BUGS: &[&str] = tasks::BUG_NAMES;

/// Runs `scenario` with `seed` on implementation `imp`.
pub fn run_scenario(scenario: &Scenario, seed: u64, imp: Impl) -> Outcome {
    run_scenario_with_progress(scenario, seed, imp, &mut |_| {})
}

/// [`run_scenario`], calling `progress(virtual_ms)` once per virtual second.
pub fn run_scenario_with_progress(
    scenario: &Scenario,
    seed: u64,
    imp: Impl,
    progress: &mut dyn FnMut(u64),
) -> Outcome {
    run_with_progress(
        RunConfig {
            scenario: scenario.clone(),
            seed,
            implementation: imp.name().to_string(),
            factory: imp.factory_with(scenario.membership_preset),
            faults: None,
        },
        progress,
    )
}
