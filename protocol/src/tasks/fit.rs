//! Whether any member could ever run a task, and why a pending task waits.
//!
//! Both answers are judged from the gossiped node states one node sees, so
//! they are advice for people (a refusal at submit, a line in `status`),
//! never a protocol decision: placement itself is the offers and pulls.

use super::{TaskRecord, TaskSpec, TaskState};
use crate::gossip::{labels_text, Health, NodeState};
use crate::resources::Shortfall;
use crate::sched;
use std::fmt;

/// A member as the fit check sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// Its name, for the messages.
    pub name: &'a str,
    /// Its newest gossiped state.
    pub state: &'a NodeState,
}

/// Why no current member could ever run a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unfit {
    /// No member carries every label the task asks for.
    Labels {
        /// The labels asked for, as `k=v,...`.
        wanted: String,
        /// How many members were looked at.
        members: usize,
    },
    /// Members with its labels exist, but none offers that many slots.
    Slots {
        /// Slots asked for.
        asked: u32,
        /// The most slots any member with its labels offers.
        most: u32,
    },
    /// Members with its labels and slots exist, but none offers that much
    /// of one kind of resource (with the kinds before it in the request).
    Resource {
        /// `cpu`, `memory` or the custom name.
        kind: String,
        /// Asked, written in the kind's unit.
        asked: String,
        /// The most any such member offers, in the kind's unit.
        most: String,
    },
}

impl Unfit {
    /// The submit field that makes the task unplaceable.
    pub fn field(&self) -> &'static str {
        match self {
            Unfit::Labels { .. } => "labels",
            Unfit::Slots { .. } => "slots",
            Unfit::Resource { kind, .. } => match kind.as_str() {
                "cpu" => "cpu",
                "memory" => "memory",
                _ => "resources",
            },
        }
    }
}

impl fmt::Display for Unfit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unfit::Labels { wanted, members } => write!(
                f,
                "no member carries the labels {wanted} ({members} members known)"
            ),
            Unfit::Slots { asked, most } => write!(
                f,
                "asks for {asked} slots; the most any member with its labels offers is {most}"
            ),
            Unfit::Resource { kind, asked, most } => write!(
                f,
                "asks for {kind} {asked}; the most any member with its labels and slots offers is {most}"
            ),
        }
    }
}

/// `None` if some member could run `spec` once it has the slots free;
/// otherwise why none ever could.
pub fn never_fits(spec: &TaskSpec, members: &[Candidate<'_>]) -> Option<Unfit> {
    let labelled: Vec<&NodeState> = members
        .iter()
        .map(|c| c.state)
        .filter(|s| spec.fits_labels(&s.labels))
        .collect();
    if labelled.is_empty() {
        return Some(Unfit::Labels {
            wanted: labels_text(&spec.labels),
            members: members.len(),
        });
    }
    let most = labelled.iter().map(|s| s.slots_total).max().unwrap_or(0);
    if most < spec.slots {
        return Some(Unfit::Slots {
            asked: spec.slots,
            most,
        });
    }
    // Kind by kind, among the members that passed the kinds before: the
    // message names the first kind no remaining member has enough of.
    let mut remaining: Vec<&NodeState> = labelled
        .into_iter()
        .filter(|s| s.slots_total >= spec.slots)
        .collect();
    for (kind, asked) in spec.resources.asked() {
        let most = remaining
            .iter()
            .map(|s| s.capacity.amount(&kind))
            .max()
            .unwrap_or(0);
        remaining.retain(|s| s.capacity.amount(&kind) >= asked);
        if remaining.is_empty() {
            let (asked, most) = Shortfall {
                kind: kind.clone(),
                asked,
                have: most,
            }
            .amounts();
            return Some(Unfit::Resource { kind, asked, most });
        }
    }
    None
}

/// Whether `state`'s totals could ever hold `spec` (labels, slots, every
/// resource kind), whatever runs there now.
fn could_ever_hold(spec: &TaskSpec, state: &NodeState) -> bool {
    spec.fits_labels(&state.labels)
        && state.slots_total >= spec.slots
        && state.capacity.covers(&spec.resources)
}

/// Why the pending task `record` is not running, as `members` show the
/// party now; `None` for a task that is not pending or that nothing holds
/// back (a claim is on its way).
pub fn why_waiting(record: &TaskRecord, members: &[Candidate<'_>]) -> Option<String> {
    if record.state != TaskState::Pending {
        return None;
    }
    if let Some(unfit) = never_fits(&record.spec, members) {
        return Some(format!("{unfit}; it runs once such a member joins"));
    }
    let spec = &record.spec;
    let fitting: Vec<&Candidate<'_>> = members
        .iter()
        .filter(|c| could_ever_hold(spec, c.state))
        .collect();
    let unusable: Vec<String> = fitting.iter().filter_map(|c| takes_no_work(c)).collect();
    if unusable.len() == fitting.len() {
        return Some(format!(
            "every member that fits it takes no work now ({})",
            unusable.join("; ")
        ));
    }
    // The offers' own rule, so this line never disagrees with placement.
    if !fitting.iter().any(|c| sched::fits(spec, c.state)) {
        let resources = if spec.resources.is_empty() {
            String::new()
        } else {
            format!(" and {}", spec.resources)
        };
        return Some(format!(
            "waiting for {} free slot(s){resources} on a member that fits it ({} fit, all busy)",
            spec.slots,
            fitting.len() - unusable.len()
        ));
    }
    if record.retries_used > 0 {
        return Some(format!(
            "retry {} of {} after a failed attempt, once its backoff of {} ms has passed",
            record.retries_used,
            spec.retries,
            record.backoff_ms()
        ));
    }
    None
}

/// Why `c` takes no new work at all, if it does not.
fn takes_no_work(c: &Candidate<'_>) -> Option<String> {
    if c.state.draining {
        Some(format!("{}: draining", c.name))
    } else if let Health::Critical { reason } = &c.state.health {
        Some(format!("{}: critical ({reason})", c.name))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::TaskId;

    fn node(slots_total: u32, slots_free: u32, labels: &[(&str, &str)]) -> NodeState {
        NodeState {
            slots_total,
            slots_free,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..NodeState::default()
        }
    }

    fn spec(slots: u32, labels: &[(&str, &str)]) -> TaskSpec {
        let mut s = TaskSpec::mock(10, 0);
        s.slots = slots;
        s.labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s
    }

    fn sized(cpu_milli: u32, memory_mib: u32, gpus: u32) -> NodeState {
        let mut n = node(4, 4, &[]);
        n.capacity = crate::resources::Resources::new(cpu_milli, memory_mib);
        if gpus > 0 {
            n.capacity.custom.insert("gpu".into(), gpus);
        }
        n.free = n.capacity.clone();
        n
    }

    #[test]
    fn a_request_no_member_has_room_for_names_the_kind_and_the_most_offered() {
        let (big_cpu, big_memory) = (sized(8000, 1024, 0), sized(1000, 8192, 1));
        let members = [
            Candidate {
                name: "a",
                state: &big_cpu,
            },
            Candidate {
                name: "b",
                state: &big_memory,
            },
        ];
        let ask = |cpu, memory, gpu| {
            let mut s = spec(1, &[]);
            s.resources = crate::resources::Resources::new(cpu, memory);
            if gpu > 0 {
                s.resources.custom.insert("gpu".into(), gpu);
            }
            s
        };
        assert_eq!(never_fits(&ask(8000, 0, 0), &members), None);
        assert_eq!(never_fits(&ask(1000, 8192, 1), &members), None);
        // Each kind alone fits somewhere; together on no one member.
        let both = never_fits(&ask(2000, 2048, 0), &members).unwrap();
        assert_eq!(
            both,
            Unfit::Resource {
                kind: "memory".into(),
                asked: "2Gi".into(),
                most: "1Gi".into()
            }
        );
        assert_eq!(both.field(), "memory");
        let cpu = never_fits(&ask(9000, 0, 0), &members).unwrap();
        assert_eq!(cpu.field(), "cpu");
        assert!(cpu.to_string().contains("cpu 9; the most"), "{cpu}");
        let gpu = never_fits(&ask(0, 0, 2), &members).unwrap();
        assert_eq!(gpu.field(), "resources");
        assert!(gpu.to_string().contains("gpu 2"), "{gpu}");
        // A fitting task whose member is busy waits and says for what.
        let mut busy = sized(1000, 8192, 1);
        busy.free = crate::resources::Resources::new(0, 8192);
        let members = [Candidate {
            name: "b",
            state: &busy,
        }];
        let record = TaskRecord::new(TaskId(1), ask(500, 0, 0), 0);
        let why = why_waiting(&record, &members).unwrap();
        assert!(why.contains("cpu=500m"), "{why}");
    }

    #[test]
    fn a_task_no_member_could_run_says_which_field_and_why() {
        let (a, b) = (node(2, 2, &[("zone", "a")]), node(4, 0, &[("zone", "b")]));
        let members = [
            Candidate {
                name: "a",
                state: &a,
            },
            Candidate {
                name: "b",
                state: &b,
            },
        ];
        assert_eq!(never_fits(&spec(4, &[]), &members), None);
        assert_eq!(never_fits(&spec(2, &[("zone", "a")]), &members), None);
        let slots = never_fits(&spec(3, &[("zone", "a")]), &members).unwrap();
        assert_eq!(slots, Unfit::Slots { asked: 3, most: 2 });
        assert_eq!(slots.field(), "slots");
        let labels = never_fits(&spec(1, &[("gpu", "1")]), &members).unwrap();
        assert_eq!(labels.field(), "labels");
        assert!(labels.to_string().contains("gpu=1"), "{labels}");
        assert!(never_fits(&spec(1, &[]), &[]).is_some());
    }

    #[test]
    fn a_pending_task_says_what_holds_it_back() {
        let busy = node(2, 0, &[]);
        let mut drained = node(2, 2, &[]);
        drained.draining = true;
        let mut sick = node(2, 2, &[]);
        sick.health = Health::Critical {
            reason: "disk full".into(),
        };
        let idle = node(2, 2, &[]);
        let c = |name, state| Candidate { name, state };
        let rec = TaskRecord::new(TaskId(1), spec(1, &[]), 0);

        let busy_only = [c("a", &busy)];
        let why = why_waiting(&rec, &busy_only).unwrap();
        assert!(why.contains("free slot"), "{why}");

        let blocked = [c("d", &drained), c("s", &sick)];
        let why = why_waiting(&rec, &blocked).unwrap();
        assert!(
            why.contains("d: draining") && why.contains("disk full"),
            "{why}"
        );

        let open = [c("a", &busy), c("i", &idle)];
        assert_eq!(why_waiting(&rec, &open), None);
        let mut retrying = rec.clone();
        retrying.retries_used = 1;
        retrying.spec.retries = 3;
        assert!(why_waiting(&retrying, &open)
            .unwrap()
            .contains("retry 1 of 3"));

        let mut running = rec.clone();
        running.state = TaskState::Succeeded;
        assert_eq!(why_waiting(&running, &busy_only), None);
        let far = TaskRecord::new(TaskId(2), spec(9, &[]), 0);
        assert!(why_waiting(&far, &open)
            .unwrap()
            .contains("once such a member joins"));
    }
}
