//! Gossiped node state: each node's small versioned record of its capacity,
//! load and health. It rides on the membership piggyback channel and on
//! push-pull. Schedulers read it; nothing trusts it for safety.

use crate::resources::Resources;
use crate::NodeId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Health as the node itself judged it from its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Health {
    /// Every check passes.
    #[default]
    Passing,
    /// Some check warns; the node still takes work.
    Warning {
        /// Which check warns, and why.
        reason: String,
    },
    /// Some check fails: the node stays a member but takes no new work.
    Critical {
        /// Which check fails, and why.
        reason: String,
    },
}

/// One node's state record. `version` is set by its owner and only grows;
/// observers keep the record with the highest version they have seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeState {
    /// Owner-assigned version; a record with a higher version replaces one
    /// with a lower version, never the reverse.
    pub version: u64,
    /// Task slots this node offers in total.
    pub slots_total: u32,
    /// Task slots free right now.
    pub slots_free: u32,
    /// CPU, memory and custom amounts this node offers to tasks in total.
    pub capacity: Resources,
    /// The part of `capacity` that running attempts do not reserve.
    pub free: Resources,
    /// Attempts running on this node.
    pub running_attempts: u32,
    /// CPU load, per mille of all cores (0..=1000 and beyond when overloaded).
    pub cpu_load_permille: u32,
    /// Memory in use, per mille of total.
    pub mem_used_permille: u32,
    /// Free space in the data directory, in MiB.
    pub disk_free_mib: u64,
    /// Result of the node's health checks.
    pub health: Health,
    /// Placement labels such as `gpu=1` or `zone=a`.
    pub labels: BTreeMap<String, String>,
    /// The node's build version string.
    pub build_version: String,
    /// The node is draining (`shoal drain`): it stays a member, finishes its
    /// running attempts and takes no new work.
    #[serde(default)]
    pub draining: bool,
    /// How the node isolates attempts: `cgroup-v1`, `cgroup-v2` or `none`.
    #[serde(default)]
    pub isolation: String,
}

/// Labels as people write them: `k=v,k=v`, in key order.
pub fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// What merging a received record did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MergeOutcome {
    /// The received record was newer and replaced ours.
    Replaced,
    /// We already had this version or a newer one; nothing changed.
    Stale,
}

/// The latest state record seen from each node.
#[derive(Debug, Clone, Default)]
pub struct StateTable {
    records: BTreeMap<NodeId, NodeState>,
}

impl StateTable {
    /// Keeps `record` for `owner` if it is newer than what we hold.
    pub fn merge(&mut self, owner: NodeId, record: NodeState) -> MergeOutcome {
        match self.records.get(&owner) {
            Some(held) if held.version >= record.version => MergeOutcome::Stale,
            _ => {
                self.records.insert(owner, record);
                MergeOutcome::Replaced
            }
        }
    }

    /// The newest record held for `owner`.
    pub fn get(&self, owner: &NodeId) -> Option<&NodeState> {
        self.records.get(owner)
    }

    /// Forgets a node (it left, or was removed after being down).
    pub fn remove(&mut self, owner: &NodeId) {
        self.records.remove(owner);
    }

    /// Every record, in node-id order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &NodeState)> {
        self.records.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(version: u64, slots_free: u32) -> NodeState {
        NodeState {
            version,
            slots_free,
            ..NodeState::default()
        }
    }

    #[test]
    fn newer_versions_replace_older_never_the_reverse() {
        let mut table = StateTable::default();
        let a = NodeId::from_u64(1);
        assert_eq!(table.merge(a, record(2, 5)), MergeOutcome::Replaced);
        assert_eq!(table.merge(a, record(1, 9)), MergeOutcome::Stale);
        assert_eq!(table.merge(a, record(2, 9)), MergeOutcome::Stale);
        assert_eq!(table.get(&a).map(|r| r.slots_free), Some(5));
        assert_eq!(table.merge(a, record(3, 1)), MergeOutcome::Replaced);
        assert_eq!(table.get(&a).map(|r| r.slots_free), Some(1));
    }
}
