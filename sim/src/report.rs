//! The run report: the JSON contract read by checks outside this crate, and
//! the human summary printed by the CLI.

use serde::Serialize;
use shoal_protocol::stats::nearest_rank;
use std::fmt::Write as _;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant (a stable snake_case name).
    pub invariant: String,
    /// Global virtual time, milliseconds.
    pub at_ms: u64,
    /// What exactly was seen.
    pub detail: String,
}

/// `{p50, p99, max}` of a sample, `null` when there were no samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Quantiles3 {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// `{p50, p99}` of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Quantiles2 {
    /// Median.
    pub p50: Option<f64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<f64>,
}

impl Quantiles3 {
    /// Quantiles of `values`.
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        Quantiles3 {
            p50: nearest_rank(&v, 0.5),
            p99: nearest_rank(&v, 0.99),
            max: v.last().copied(),
        }
    }
}

impl Quantiles2 {
    /// Quantiles of `values`.
    pub fn of(values: &[f64]) -> Self {
        let q = Quantiles3::of(values);
        Quantiles2 {
            p50: q.p50,
            p99: q.p99,
        }
    }
}

/// The membership figures.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct MembershipReport {
    /// Crashes injected.
    pub crashes: u64,
    /// From a crash to the first suspicion (or confirmation) anywhere.
    pub detect_first_ms: Quantiles3,
    /// From a crash to "down" at every live node.
    pub detect_all_ms: Quantiles3,
    /// Crashes not confirmed down everywhere by the end (restarts before
    /// that are not counted).
    pub undetected: u64,
    /// Live nodes, able to reach a majority, confirmed down somewhere.
    pub false_positives: u64,
    /// From the first confirmation of a crash anywhere to its confirmation
    /// at every live node.
    pub dissemination_all_ms: Quantiles2,
    /// From the heal to the first instant every live node sees exactly the
    /// live set as alive; `null` if that never happened.
    pub converged_after_heal_ms: Option<u64>,
    /// Payload bytes handed to the network, per node per virtual second.
    pub bytes_per_node_per_s: f64,
    /// Payloads handed to the network, per node per virtual second.
    pub msgs_per_node_per_s: f64,
}

/// Everything derived from the seed, printed so a run can be replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Derived {
    /// Seed of the network sampler.
    pub network_seed: u64,
    /// Seed of the fault schedule.
    pub faults_seed: u64,
    /// Seed of the simulator's own choices (spurious timers, start times).
    pub engine_seed: u64,
    /// Base of the node machines' seeds.
    pub node_seed_base: u64,
    /// Seed of the clock drifts and origins.
    pub clock_seed: u64,
    /// Smallest clock drift drawn.
    pub drift_min: f64,
    /// Largest clock drift drawn.
    pub drift_max: f64,
    /// The fault schedule, one line per action: `at_ms action`.
    pub faults: Vec<String>,
}

/// A whole run's report. New sections (tasks, ...) are added as optional
/// fields so the existing contract stays.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Implementation: `shoal` or `foca`.
    #[serde(rename = "impl")]
    pub implementation: String,
    /// The master seed.
    pub seed: u64,
    /// Node count.
    pub nodes: u32,
    /// Virtual seconds simulated.
    pub virtual_s: u64,
    /// Wall-clock milliseconds the run took (the only field that differs
    /// between two runs of one seed).
    pub wall_ms: u64,
    /// Hex fingerprint of every event in order.
    pub trace_hash: String,
    /// Broken invariants (the first ones, see `violations_total`).
    pub violations: Vec<Violation>,
    /// How many violations there were in all.
    pub violations_total: u64,
    /// Membership figures.
    pub membership: MembershipReport,
    /// Task figures (a later scenario kind).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tasks: Option<serde_json::Value>,
    /// Options derived from the seed.
    pub derived: Derived,
}

fn q(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |x| format!("{x:.0}"))
}

impl Report {
    /// The summary the CLI prints.
    pub fn human(&self) -> String {
        let m = &self.membership;
        let d = &self.derived;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "scenario {} impl {} seed {} nodes {} virtual {} s  wall {} ms",
            self.scenario, self.implementation, self.seed, self.nodes, self.virtual_s, self.wall_ms
        );
        let _ = writeln!(
            s,
            "derived: network_seed {} faults_seed {} engine_seed {} node_seed_base {} clock_seed {} drift [{:+.2e}, {:+.2e}]",
            d.network_seed, d.faults_seed, d.engine_seed, d.node_seed_base, d.clock_seed, d.drift_min, d.drift_max
        );
        let _ = writeln!(s, "faults ({}):", d.faults.len());
        const SHOWN: usize = 40;
        for line in d.faults.iter().take(SHOWN) {
            let _ = writeln!(s, "  {line}");
        }
        if d.faults.len() > SHOWN {
            let _ = writeln!(s, "  ... {} more", d.faults.len() - SHOWN);
        }
        let _ = writeln!(
            s,
            "crashes {}  detect_first p50/p99/max {}/{}/{} ms  detect_all {}/{}/{} ms  undetected {}",
            m.crashes,
            q(m.detect_first_ms.p50),
            q(m.detect_first_ms.p99),
            q(m.detect_first_ms.max),
            q(m.detect_all_ms.p50),
            q(m.detect_all_ms.p99),
            q(m.detect_all_ms.max),
            m.undetected
        );
        let _ = writeln!(
            s,
            "false_positives {}  dissemination_all p50/p99 {}/{} ms  converged_after_heal {} ms",
            m.false_positives,
            q(m.dissemination_all_ms.p50),
            q(m.dissemination_all_ms.p99),
            m.converged_after_heal_ms
                .map_or("NEVER".to_string(), |v| v.to_string())
        );
        let _ = writeln!(
            s,
            "traffic {:.0} bytes/node/s  {:.2} msgs/node/s  trace_hash {}",
            m.bytes_per_node_per_s, m.msgs_per_node_per_s, self.trace_hash
        );
        if let Some(t) = &self.tasks {
            let _ = writeln!(s, "tasks {t}");
        }
        if self.violations_total == 0 {
            let _ = writeln!(s, "violations: none");
        } else {
            let _ = writeln!(s, "violations: {}", self.violations_total);
            for v in self.violations.iter().take(20) {
                let _ = writeln!(s, "  {} at {} ms: {}", v.invariant, v.at_ms, v.detail);
            }
        }
        s
    }

    /// The report without its wall time, for determinism comparisons.
    pub fn without_wall_time(&self) -> Report {
        Report {
            wall_ms: 0,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_use_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let q = Quantiles3::of(&v);
        assert_eq!((q.p50, q.p99, q.max), (Some(50.0), Some(99.0), Some(100.0)));
        assert_eq!(Quantiles2::of(&[]).p50, None);
    }
}
