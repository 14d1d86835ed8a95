//! Scenario files: what cluster to build, what network it runs on, which
//! faults the safety phase injects, and what the liveness phase demands.
//!
//! Scenarios are TOML. Unknown fields are refused (a typo must not silently
//! turn a fault off), and every semantic error names the field it is about.

use serde::{Deserialize, Serialize};
use shoal_protocol::coordinator::Config;
use std::path::Path;
use thiserror::Error;

/// Why a scenario could not be used.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML did not parse into a scenario (the message names the field).
    #[error("bad scenario {path}: {message}")]
    Parse {
        /// The path given.
        path: String,
        /// The parser's message, with the field and line.
        message: String,
    },
    /// A field parsed but its value makes no sense.
    #[error("bad scenario field `{field}`: {reason}")]
    Invalid {
        /// Dotted path of the field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name printed in reports.
    pub name: String,
    /// Number of virtual nodes.
    pub nodes: u32,
    /// Total virtual run time, safety plus liveness phase.
    pub virtual_s: u64,
    /// Faults are injected in `[warmup_s, safety_s)`; at `safety_s` every
    /// fault heals and the liveness phase starts.
    pub safety_s: u64,
    /// Quiet start: nodes join, no faults.
    #[serde(default = "default_warmup_s")]
    pub warmup_s: u64,
    /// After the heal, every live node must see exactly the live set as
    /// alive within this many milliseconds.
    #[serde(default = "default_convergence_deadline_ms")]
    pub convergence_deadline_ms: u64,
    /// Nodes start within this window (spread from the seed) and join through
    /// the first nodes.
    #[serde(default = "default_start_spread_ms")]
    pub start_spread_ms: u64,
    /// A node paused for less than this must never be confirmed down (the
    /// design's refutation promise); a longer pause excuses a confirmation.
    #[serde(default = "default_pause_bound_ms")]
    pub pause_bound_ms: u64,
    /// A node cut off from a majority (or crashed, or paused past the bound)
    /// stays excused for this long after it is reachable again, so that a
    /// confirmation already on its way is not counted as a false positive.
    #[serde(default = "default_false_positive_grace_ms")]
    pub false_positive_grace_ms: u64,
    /// If set, more false positives than this is a violation.
    #[serde(default)]
    pub max_false_positives: Option<u64>,
    /// Probability that arming a node's timer also schedules a spurious
    /// early `handle_timeout`, which must change nothing.
    #[serde(default = "default_early_timeout_probability")]
    pub early_timeout_probability: f64,
    /// Full views of every node are compared against the invariants this
    /// often (events are checked at every step regardless).
    #[serde(default = "default_snapshot_interval_ms")]
    pub snapshot_interval_ms: u64,
    /// Timing preset of the membership machines (`lan`, `wan` or `local`;
    /// foca gets its own LAN or WAN preset to match).
    #[serde(default)]
    pub membership_preset: MembershipPreset,
    /// Clock model.
    #[serde(default)]
    pub clock: ClockModel,
    /// Network model.
    #[serde(default)]
    pub network: NetworkModel,
    /// Faults of the safety phase.
    #[serde(default)]
    pub faults: Faults,
    /// If present, the run is a task world (run by `crate::tasks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<TasksModel>,
}

fn default_warmup_s() -> u64 {
    5
}
fn default_convergence_deadline_ms() -> u64 {
    30_000
}
fn default_start_spread_ms() -> u64 {
    1_000
}
fn default_pause_bound_ms() -> u64 {
    1_500
}
fn default_false_positive_grace_ms() -> u64 {
    60_000
}
fn default_early_timeout_probability() -> f64 {
    0.01
}
fn default_snapshot_interval_ms() -> u64 {
    10_000
}

/// Which membership timing preset the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MembershipPreset {
    /// `Config::lan()`: probes every 200 ms.
    #[default]
    Lan,
    /// `Config::wan()`: for 50-150 ms round trips.
    Wan,
    /// `Config::local()`: loopback speed, no suspicion floor.
    Local,
}

impl MembershipPreset {
    /// shoal's configuration for this preset.
    pub fn config(self) -> shoal_protocol::membership::Config {
        use shoal_protocol::membership::Config;
        match self {
            MembershipPreset::Lan => Config::lan(),
            MembershipPreset::Wan => Config::wan(),
            MembershipPreset::Local => Config::local(),
        }
    }
}

/// Per-node clock rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockModel {
    /// Each node's clock runs at `1 + d` with `|d| <= drift_rho`.
    pub drift_rho: f64,
}

impl Default for ClockModel {
    fn default() -> Self {
        ClockModel { drift_rho: 1e-4 }
    }
}

/// One-way latency of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Latency {
    /// Uniform between `min_ms` and `max_ms`.
    Uniform {
        /// Lower bound.
        min_ms: f64,
        /// Upper bound.
        max_ms: f64,
    },
    /// Lognormal with the given median and shape, cut at `max_ms`.
    Lognormal {
        /// Median latency.
        median_ms: f64,
        /// Shape (standard deviation of the underlying normal).
        sigma: f64,
        /// Cut-off.
        max_ms: f64,
    },
}

/// The network between every pair of nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkModel {
    /// Latency distribution.
    pub latency: Latency,
    /// Probability a datagram is lost (streams are never lost to this).
    pub loss: f64,
    /// Probability a datagram is delivered twice.
    pub duplicate: f64,
    /// Probability a message gets an extra random delay (reordering).
    pub reorder: f64,
    /// Upper bound of that extra delay.
    pub reorder_extra_ms: f64,
    /// A paused node's socket buffer holds this many messages; more are dropped.
    pub pause_queue_max: usize,
}

impl Default for NetworkModel {
    fn default() -> Self {
        NetworkModel {
            latency: Latency::Uniform {
                min_ms: 0.2,
                max_ms: 2.0,
            },
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_extra_ms: 0.0,
            pause_queue_max: 4096,
        }
    }
}

/// Faults injected at random times of the safety phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Crashes of distinct nodes (state lost).
    #[serde(default)]
    pub crashes: u32,
    /// Probability that a crashed node restarts later in the safety phase.
    #[serde(default)]
    pub restart_probability: f64,
    /// Probability that a restart keeps the node's state (its incarnation)
    /// rather than starting a fresh machine at incarnation 0.
    #[serde(default)]
    pub restart_with_state_probability: f64,
    /// Downtime before a restart, `[min, max]`.
    #[serde(default = "default_restart_after_ms")]
    pub restart_after_ms: [u64; 2],
    /// Pauses (frozen process: no timers, receives queue up).
    #[serde(default)]
    pub pauses: u32,
    /// Pause length, `[min, max]`.
    #[serde(default = "default_pause_ms")]
    pub pause_ms: [u64; 2],
    /// Slow nodes: timers fire late by `slow_factor`.
    #[serde(default)]
    pub slow_nodes: u32,
    /// How much later a slow node's timers fire.
    #[serde(default = "default_slow_factor")]
    pub slow_factor: f64,
    /// How long a node stays slow, `[min, max]`.
    #[serde(default = "default_slow_ms")]
    pub slow_ms: [u64; 2],
    /// Graceful leaves.
    #[serde(default)]
    pub leaves: u32,
    /// Symmetric partitions into two groups.
    #[serde(default)]
    pub partitions_symmetric: u32,
    /// Asymmetric partitions: a group's messages to the rest are dropped,
    /// the other direction works.
    #[serde(default)]
    pub partitions_asymmetric: u32,
    /// One node cut off from everyone.
    #[serde(default)]
    pub isolations: u32,
    /// Size of the smaller side of a partition, as a fraction `[min, max]`
    /// of the nodes.
    #[serde(default = "default_partition_fraction")]
    pub partition_fraction: [f64; 2],
    /// How long partitions and isolations last, `[min, max]`.
    #[serde(default = "default_partition_ms")]
    pub partition_ms: [u64; 2],
    /// Swizzle-clogs: clog a random subset of nodes one by one, then unclog
    /// them in random order.
    #[serde(default)]
    pub swizzle_clogs: u32,
    /// Nodes per swizzle-clog.
    #[serde(default = "default_swizzle_nodes")]
    pub swizzle_nodes: u32,
    /// Time between two clog (or unclog) steps.
    #[serde(default = "default_swizzle_step_ms")]
    pub swizzle_step_ms: u64,
    /// Nodes whose own health checks turn critical for a while (a full data
    /// disk): they must take no new work, by offer or by pull. Only the
    /// task world models health.
    #[serde(default)]
    pub critical_nodes: u32,
    /// How long a node stays critical, `[min, max]`.
    #[serde(default = "default_critical_ms")]
    pub critical_ms: [u64; 2],
}

impl Default for Faults {
    /// No faults; the ranges and factors at their documented defaults (the
    /// same values an empty `[faults]` table gets).
    fn default() -> Self {
        toml::from_str("").expect("every fault field has a default")
    }
}

fn default_restart_after_ms() -> [u64; 2] {
    [1_000, 10_000]
}
fn default_pause_ms() -> [u64; 2] {
    [100, 1_500]
}
fn default_slow_factor() -> f64 {
    3.0
}
fn default_slow_ms() -> [u64; 2] {
    [1_000, 10_000]
}
fn default_partition_fraction() -> [f64; 2] {
    [0.1, 0.4]
}
fn default_partition_ms() -> [u64; 2] {
    [2_000, 15_000]
}
fn default_swizzle_nodes() -> u32 {
    5
}
fn default_swizzle_step_ms() -> u64 {
    500
}
fn default_critical_ms() -> [u64; 2] {
    [1_000, 5_000]
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn probability(field: &'static str, p: f64) -> Result<(), ScenarioError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{p} is not a probability in [0, 1]"),
        ))
    }
}

fn range_u64(field: &'static str, r: [u64; 2]) -> Result<(), ScenarioError> {
    if r[0] <= r[1] {
        Ok(())
    } else {
        Err(invalid(field, format!("min {} exceeds max {}", r[0], r[1])))
    }
}

/// Upper bound on nodes: the view matrices are `nodes²` entries.
pub const MAX_NODES: u32 = 5_000;

/// Upper bound on virtual time, so a typo cannot make a run last for ever.
pub const MAX_VIRTUAL_S: u64 = 7 * 24 * 3600;

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parses and validates scenario text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks the values that parsing cannot.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.nodes < 2 || self.nodes > MAX_NODES {
            return Err(invalid("nodes", format!("must be in 2..={MAX_NODES}")));
        }
        if self.virtual_s == 0 || self.virtual_s > MAX_VIRTUAL_S {
            return Err(invalid(
                "virtual_s",
                format!("must be in 1..={MAX_VIRTUAL_S}"),
            ));
        }
        if self.safety_s > self.virtual_s {
            return Err(invalid("safety_s", "must not exceed virtual_s"));
        }
        if self.warmup_s > self.safety_s {
            return Err(invalid("warmup_s", "must not exceed safety_s"));
        }
        if self.safety_s * 1000 + self.convergence_deadline_ms > self.virtual_s * 1000 {
            return Err(invalid(
                "convergence_deadline_ms",
                "the deadline falls after the end of the run (safety_s + deadline > virtual_s)",
            ));
        }
        if self.snapshot_interval_ms == 0 {
            return Err(invalid("snapshot_interval_ms", "must be positive"));
        }
        probability("early_timeout_probability", self.early_timeout_probability)?;
        if !(0.0..0.5).contains(&self.clock.drift_rho) {
            return Err(invalid("clock.drift_rho", "must be in [0, 0.5)"));
        }
        let net = &self.network;
        match net.latency {
            Latency::Uniform { min_ms, max_ms } => {
                if !(min_ms >= 0.0 && min_ms <= max_ms && max_ms <= 60_000.0) {
                    return Err(invalid(
                        "network.latency",
                        "uniform needs 0 <= min_ms <= max_ms <= 60000",
                    ));
                }
            }
            Latency::Lognormal {
                median_ms,
                sigma,
                max_ms,
            } => {
                if !(median_ms > 0.0 && sigma >= 0.0 && max_ms >= median_ms && max_ms <= 60_000.0) {
                    return Err(invalid(
                        "network.latency",
                        "lognormal needs median_ms > 0, sigma >= 0, median_ms <= max_ms <= 60000",
                    ));
                }
            }
        }
        probability("network.loss", net.loss)?;
        probability("network.duplicate", net.duplicate)?;
        probability("network.reorder", net.reorder)?;
        if !(0.0..=60_000.0).contains(&net.reorder_extra_ms) {
            return Err(invalid("network.reorder_extra_ms", "must be in [0, 60000]"));
        }
        let f = &self.faults;
        if f.crashes + f.leaves > self.nodes / 2 {
            return Err(invalid(
                "faults.crashes",
                "crashes plus leaves must leave a majority of the nodes",
            ));
        }
        probability("faults.restart_probability", f.restart_probability)?;
        probability(
            "faults.restart_with_state_probability",
            f.restart_with_state_probability,
        )?;
        range_u64("faults.restart_after_ms", f.restart_after_ms)?;
        range_u64("faults.pause_ms", f.pause_ms)?;
        range_u64("faults.critical_ms", f.critical_ms)?;
        range_u64("faults.slow_ms", f.slow_ms)?;
        range_u64("faults.partition_ms", f.partition_ms)?;
        if !(f.slow_factor >= 1.0 && f.slow_factor <= 100.0) {
            return Err(invalid("faults.slow_factor", "must be in [1, 100]"));
        }
        let [lo, hi] = f.partition_fraction;
        if !(lo > 0.0 && lo <= hi && hi < 0.5) {
            return Err(invalid(
                "faults.partition_fraction",
                "needs 0 < min <= max < 0.5 (the smaller side)",
            ));
        }
        if f.swizzle_clogs > 0 && f.swizzle_nodes > self.nodes {
            return Err(invalid("faults.swizzle_nodes", "more than the nodes"));
        }
        if f.swizzle_clogs > 0 && f.swizzle_step_ms == 0 {
            return Err(invalid("faults.swizzle_step_ms", "must be positive"));
        }
        let bound = 10_000;
        for (field, count) in [
            ("faults.pauses", f.pauses),
            ("faults.slow_nodes", f.slow_nodes),
            ("faults.partitions_symmetric", f.partitions_symmetric),
            ("faults.partitions_asymmetric", f.partitions_asymmetric),
            ("faults.isolations", f.isolations),
            ("faults.swizzle_clogs", f.swizzle_clogs),
        ] {
            if count > bound {
                return Err(invalid(field, format!("at most {bound}")));
            }
        }
        Ok(())
    }

    /// Start of the liveness phase, in global milliseconds.
    pub fn heal_ms(&self) -> u64 {
        self.safety_s * 1000
    }

    /// End of the run, in global milliseconds.
    pub fn end_ms(&self) -> u64 {
        self.virtual_s * 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"t\"\nnodes = 4\nvirtual_s = 60\nsafety_s = 20\n";

    #[test]
    fn minimal_scenario_gets_defaults() {
        let s = Scenario::parse(MINIMAL, "t").unwrap();
        assert_eq!(s.nodes, 4);
        assert_eq!(s.faults.crashes, 0);
        assert_eq!(s.pause_bound_ms, 1_500);
    }

    #[test]
    fn unknown_field_is_named_in_the_error() {
        let text = format!("{MINIMAL}[faults]\ncrashs = 3\n");
        let err = Scenario::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("crashs"), "{err}");
    }

    #[test]
    fn bad_probability_is_named_in_the_error() {
        let text = format!("{MINIMAL}[network]\nlatency = {{ kind = \"uniform\", min_ms = 0.2, max_ms = 2.0 }}\nloss = 1.5\nduplicate = 0.0\nreorder = 0.0\nreorder_extra_ms = 0.0\npause_queue_max = 10\n");
        let err = Scenario::parse(&text, "t").unwrap_err().to_string();
        assert!(err.contains("network.loss"), "{err}");
    }
}

/// The `[tasks]` table of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TasksModel {
    /// Shards `S`.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Acceptor group size `R`.
    #[serde(default = "default_group")]
    pub group_size: usize,
    /// Slots per node.
    #[serde(default = "default_slots")]
    pub slots_per_node: u32,
    /// Mean task arrivals per virtual second (Poisson), during
    /// `[warmup_s, safety_s)`.
    pub arrivals_per_s: f64,
    /// Task durations, uniform in this range, ms.
    #[serde(default = "default_duration")]
    pub duration_ms: [u64; 2],
    /// Probability that a task needs 2 slots instead of 1 (when `shapes`
    /// is empty).
    #[serde(default)]
    pub two_slot_probability: f64,
    /// CPU each node offers, millicores (0: tasks ask for none).
    #[serde(default)]
    pub cpu_per_node_milli: u32,
    /// Memory each node offers, MiB (0: tasks ask for none).
    #[serde(default)]
    pub memory_per_node_mib: u32,
    /// Task shapes drawn by weight; empty: one slot (or two, see
    /// `two_slot_probability`) and no resources.
    #[serde(default)]
    pub shapes: Vec<TaskShape>,
    /// Probability that a task carries a label (`pool=a`) that half of the
    /// nodes offer.
    #[serde(default)]
    pub label_probability: f64,
    /// Probability that a task's process exits non-zero.
    #[serde(default)]
    pub fail_probability: f64,
    /// Retries per task.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Lease length, ms.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// Drift bound `rho` the machines are told (≥ the clock model's).
    #[serde(default = "default_rho")]
    pub rho: f64,
    /// Job register operations checked for linearizability (0 = off).
    #[serde(default = "default_lin_ops")]
    pub linearizability_ops: usize,
    /// Crash → each observer's coordinator sees the node gone, ms (uniform
    /// per observer and crash). The default spans shoal SWIM's measured
    /// `detect_first` p50 to `detect_all` p99 at 50 nodes (smoke: 353 and
    /// 3560 ms). `[0, 0]` is the simulator's ground truth.
    #[serde(default = "default_detect_ms")]
    pub detect_ms: [u64; 2],
    /// A (re)started identity → each observer sees it, ms. Default: SWIM's
    /// dissemination p50 to p99 (116 and 1207 ms).
    #[serde(default = "default_join_ms")]
    pub join_ms: [u64; 2],
    /// How offers pick among candidates with room: `"pack"` (the agents'
    /// default) or `"spread"`.
    #[serde(default)]
    pub placement: shoal_protocol::sched::Placement,
}

impl TasksModel {
    /// The defaults with no workload: a task world that only keeps its
    /// leases and registers alive.
    pub fn idle() -> Self {
        TasksModel {
            shards: default_shards(),
            group_size: default_group(),
            slots_per_node: default_slots(),
            arrivals_per_s: 0.0,
            duration_ms: default_duration(),
            two_slot_probability: 0.0,
            cpu_per_node_milli: 0,
            memory_per_node_mib: 0,
            shapes: Vec::new(),
            label_probability: 0.0,
            fail_probability: 0.0,
            retries: default_retries(),
            lease_ms: default_lease_ms(),
            rho: default_rho(),
            linearizability_ops: 0,
            detect_ms: default_detect_ms(),
            join_ms: default_join_ms(),
            placement: Default::default(),
        }
    }
}

/// One kind of task in the workload: what it holds while it runs.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TaskShape {
    /// Relative weight among the shapes.
    pub weight: f64,
    /// Slots.
    #[serde(default = "one")]
    pub slots: u32,
    /// CPU, millicores.
    #[serde(default)]
    pub cpu_milli: u32,
    /// Memory, MiB.
    #[serde(default)]
    pub memory_mib: u32,
}

fn one() -> u32 {
    1
}

fn default_shards() -> u32 {
    16
}
fn default_group() -> usize {
    3
}
fn default_slots() -> u32 {
    4
}
fn default_duration() -> [u64; 2] {
    [100, 2_000]
}
fn default_retries() -> u32 {
    3
}
fn default_lease_ms() -> u64 {
    Config::default().lease_ms
}
fn default_rho() -> f64 {
    0.01
}
fn default_lin_ops() -> usize {
    30
}
fn default_detect_ms() -> [u64; 2] {
    [350, 3_600]
}
fn default_join_ms() -> [u64; 2] {
    [100, 1_200]
}
