//! The fault schedule of the safety phase, drawn once from the fault seed
//! before the run starts, so that it can be printed and replayed.

use crate::host::NodeIndex;
use crate::net::PartitionKind;
use crate::scenario::Scenario;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fmt;

/// One fault action.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultAction {
    /// The node's process dies; its state is lost.
    Crash(NodeIndex),
    /// The node comes back; `with_state` keeps what it persisted.
    Restart {
        /// The node.
        node: NodeIndex,
        /// Whether it keeps its persisted state.
        with_state: bool,
    },
    /// The process freezes.
    Pause(NodeIndex),
    /// The process thaws.
    Resume(NodeIndex),
    /// Timers fire late by a factor.
    Slow {
        /// The node.
        node: NodeIndex,
        /// The factor.
        factor: f64,
    },
    /// Timers fire on time again.
    Unslow(NodeIndex),
    /// Graceful leave.
    Leave(NodeIndex),
    /// A partition starts.
    Partition {
        /// Its id, to heal it.
        id: u64,
        /// Its shape.
        kind: PartitionKind,
        /// The special side.
        inside: Vec<NodeIndex>,
    },
    /// A partition heals.
    HealPartition(u64),
    /// Every link of the node stops.
    Clog(NodeIndex),
    /// One clog of the node lifts.
    Unclog(NodeIndex),
    /// The node's own health checks turn critical (a full disk).
    Critical(NodeIndex),
    /// The node's checks pass again.
    Passing(NodeIndex),
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Crash(n) => write!(f, "crash n{n}"),
            FaultAction::Restart { node, with_state } => {
                let how = if *with_state {
                    "with state"
                } else {
                    "without state"
                };
                write!(f, "restart n{node} {how}")
            }
            FaultAction::Pause(n) => write!(f, "pause n{n}"),
            FaultAction::Resume(n) => write!(f, "resume n{n}"),
            FaultAction::Slow { node, factor } => write!(f, "slow n{node} x{factor}"),
            FaultAction::Unslow(n) => write!(f, "unslow n{n}"),
            FaultAction::Leave(n) => write!(f, "leave n{n}"),
            FaultAction::Partition { id, kind, inside } => {
                let k = match kind {
                    PartitionKind::Symmetric => "symmetric",
                    PartitionKind::Asymmetric => "asymmetric",
                };
                write!(f, "partition #{id} {k} of {} nodes", inside.len())
            }
            FaultAction::HealPartition(id) => write!(f, "heal partition #{id}"),
            FaultAction::Clog(n) => write!(f, "clog n{n}"),
            FaultAction::Unclog(n) => write!(f, "unclog n{n}"),
            FaultAction::Critical(n) => write!(f, "health of n{n} critical"),
            FaultAction::Passing(n) => write!(f, "health of n{n} passing"),
        }
    }
}

/// A fault at a global time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduledFault {
    /// Global milliseconds.
    pub at_ms: u64,
    /// What happens.
    pub action: FaultAction,
}

fn between(rng: &mut ChaCha8Rng, [lo, hi]: [u64; 2]) -> u64 {
    if hi > lo {
        rng.gen_range(lo..=hi)
    } else {
        lo
    }
}

/// Draws the schedule. Ends of faults that would fall after the heal are
/// left out: the heal ends everything at once. Restarts due after the heal
/// happen at the heal.
pub fn schedule(scenario: &Scenario, seed: u64) -> Vec<ScheduledFault> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let f = &scenario.faults;
    let n = scenario.nodes;
    let start = scenario.warmup_s * 1000;
    let heal = scenario.heal_ms();
    let mut out = Vec::new();
    if heal <= start {
        return out;
    }
    let at = |rng: &mut ChaCha8Rng| rng.gen_range(start..heal);
    let push_end = |out: &mut Vec<ScheduledFault>, at_ms: u64, action| {
        if at_ms < heal {
            out.push(ScheduledFault { at_ms, action });
        }
    };

    // Crashes and leaves hit distinct nodes, so each is measured on its own.
    let mut order: Vec<NodeIndex> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut victims = order.into_iter();
    for node in victims.by_ref().take(f.crashes as usize) {
        let t = at(&mut rng);
        out.push(ScheduledFault {
            at_ms: t,
            action: FaultAction::Crash(node),
        });
        if rng.gen_bool(f.restart_probability) {
            let with_state = rng.gen_bool(f.restart_with_state_probability);
            let back = (t + between(&mut rng, f.restart_after_ms)).min(heal);
            out.push(ScheduledFault {
                at_ms: back,
                action: FaultAction::Restart { node, with_state },
            });
        }
    }
    for node in victims.by_ref().take(f.leaves as usize) {
        let t = at(&mut rng);
        out.push(ScheduledFault {
            at_ms: t,
            action: FaultAction::Leave(node),
        });
    }
    for _ in 0..f.pauses {
        let node = rng.gen_range(0..n);
        let t = at(&mut rng);
        out.push(ScheduledFault {
            at_ms: t,
            action: FaultAction::Pause(node),
        });
        let end = t + between(&mut rng, f.pause_ms);
        push_end(&mut out, end, FaultAction::Resume(node));
    }
    for _ in 0..f.slow_nodes {
        let node = rng.gen_range(0..n);
        let t = at(&mut rng);
        out.push(ScheduledFault {
            at_ms: t,
            action: FaultAction::Slow {
                node,
                factor: f.slow_factor,
            },
        });
        let end = t + between(&mut rng, f.slow_ms);
        push_end(&mut out, end, FaultAction::Unslow(node));
    }
    let mut partition_id = 0u64;
    let kinds = [
        (f.partitions_symmetric, Some(PartitionKind::Symmetric)),
        (f.partitions_asymmetric, Some(PartitionKind::Asymmetric)),
        (f.isolations, None),
    ];
    for (count, kind) in kinds {
        for _ in 0..count {
            partition_id += 1;
            let inside: Vec<NodeIndex> = match kind {
                None => vec![rng.gen_range(0..n)],
                Some(_) => {
                    let [lo, hi] = f.partition_fraction;
                    let frac = if hi > lo { rng.gen_range(lo..=hi) } else { lo };
                    let size = ((frac * f64::from(n)).round() as usize).clamp(1, n as usize / 2);
                    let mut all: Vec<NodeIndex> = (0..n).collect();
                    all.shuffle(&mut rng);
                    all.truncate(size);
                    all.sort_unstable();
                    all
                }
            };
            let t = at(&mut rng);
            out.push(ScheduledFault {
                at_ms: t,
                action: FaultAction::Partition {
                    id: partition_id,
                    kind: kind.clone().unwrap_or(PartitionKind::Symmetric),
                    inside,
                },
            });
            let end = t + between(&mut rng, f.partition_ms);
            push_end(&mut out, end, FaultAction::HealPartition(partition_id));
        }
    }
    for _ in 0..f.swizzle_clogs {
        let mut all: Vec<NodeIndex> = (0..n).collect();
        all.shuffle(&mut rng);
        all.truncate(f.swizzle_nodes as usize);
        let mut t = at(&mut rng);
        for &node in &all {
            push_end(&mut out, t, FaultAction::Clog(node));
            t += f.swizzle_step_ms;
        }
        all.shuffle(&mut rng);
        for &node in &all {
            push_end(&mut out, t, FaultAction::Unclog(node));
            t += f.swizzle_step_ms;
        }
    }
    // Drawn last, so that scenarios without them keep their schedules.
    for _ in 0..f.critical_nodes {
        let node = rng.gen_range(0..n);
        let t = at(&mut rng);
        out.push(ScheduledFault {
            at_ms: t,
            action: FaultAction::Critical(node),
        });
        let end = t + between(&mut rng, f.critical_ms);
        push_end(&mut out, end, FaultAction::Passing(node));
    }
    // Stable sort: equal times keep their drawing order.
    out.sort_by_key(|s| s.at_ms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_a_function_of_the_seed_and_stays_in_the_safety_phase() {
        let text = "name = \"t\"\nnodes = 20\nvirtual_s = 60\nsafety_s = 30\n[faults]\ncrashes = 3\npauses = 4\nswizzle_clogs = 1\npartitions_symmetric = 1\nrestart_probability = 1.0\n";
        let s = Scenario::parse(text, "t").unwrap();
        let a = schedule(&s, 5);
        assert_eq!(a, schedule(&s, 5));
        assert_ne!(a, schedule(&s, 6));
        assert!(a.iter().all(|f| f.at_ms >= 5_000 && f.at_ms <= 30_000));
        let crashes = a
            .iter()
            .filter(|f| matches!(f.action, FaultAction::Crash(_)))
            .count();
        assert_eq!(crashes, 3);
    }
}
