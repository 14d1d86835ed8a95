//! Whether any member could ever run a task, and why a pending task waits.
//!
//! Both answers are judged from the gossiped node states one node sees, so
//! they are advice for people (a refusal at submit, a line in `status`),
//! never a protocol decision: placement itself is the offers and pulls.

use super::{TaskRecord, TaskSpec, TaskState};
use crate::gossip::{labels_text, Health, NodeState};
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
}

impl Unfit {
    /// The submit field that makes the task unplaceable.
    pub fn field(&self) -> &'static str {
        match self {
            Unfit::Labels { .. } => "labels",
            Unfit::Slots { .. } => "slots",
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
    (most < spec.slots).then_some(Unfit::Slots {
        asked: spec.slots,
        most,
    })
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
        .filter(|c| spec.fits_labels(&c.state.labels) && c.state.slots_total >= spec.slots)
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
        return Some(format!(
            "waiting for {} free slot(s) on a member that fits it ({} fit, all busy)",
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
