//! The JSON shapes of the API, shared with the CLI that reads them.

use serde::{Deserialize, Serialize};
use shoal_protocol::gossip::{Health, NodeState};
use shoal_protocol::membership::{Member, MemberState};
use shoal_protocol::resources::Resources;
use std::collections::BTreeMap;

/// One element of `GET /v1/members` and `shoal members --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberView {
    /// Node name.
    pub name: String,
    /// NodeId, 32 hex digits.
    pub id: String,
    /// Address other members reach it at.
    pub addr: String,
    /// alive, suspect, down or left.
    pub state: MemberState,
    /// Highest incarnation seen.
    pub incarnation: u64,
    /// `true` for the node answering the request.
    #[serde(rename = "self", default)]
    pub is_self: bool,
    /// Free task slots, if its state record reached us.
    pub slots_free: Option<u32>,
    /// Total task slots.
    pub slots_total: Option<u32>,
    /// CPU (millicores), memory (MiB) and custom amounts it offers to tasks.
    #[serde(default)]
    pub capacity: Option<Resources>,
    /// The part of `capacity` its attempts do not reserve.
    #[serde(default)]
    pub free: Option<Resources>,
    /// CPU load per mille of all cores.
    pub cpu_load_permille: Option<u32>,
    /// Memory in use per mille.
    pub mem_used_permille: Option<u32>,
    /// Free space in its data directory.
    pub disk_free_mib: Option<u64>,
    /// passing, warning, critical, or unknown (no state record yet).
    pub health: String,
    /// Which check fails or warns, and why.
    pub health_reason: Option<String>,
    /// Milliseconds since we last heard from it directly.
    pub last_heard_ms_ago: Option<u64>,
    /// Milliseconds since its state last changed in our view.
    pub state_since_ms_ago: u64,
    /// Its build version.
    pub build_version: Option<String>,
    /// Its placement labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The member said it is draining (takes no new work).
    #[serde(default)]
    pub draining: bool,
    /// How it isolates attempts: `cgroup-v1`, `cgroup-v2` or `none`.
    #[serde(default)]
    pub isolation: Option<String>,
}

/// `(status, reason)` of a gossiped health.
pub fn health_parts(health: &Health) -> (&'static str, Option<String>) {
    match health {
        Health::Passing => ("passing", None),
        Health::Warning { reason } => ("warning", Some(reason.clone())),
        Health::Critical { reason } => ("critical", Some(reason.clone())),
    }
}

impl MemberView {
    /// A view of a member, with times relative to `now_ms`.
    pub fn from_member(member: &Member, now_ms: u64) -> MemberView {
        let mut view = MemberView::base(
            &member.identity.name,
            &member.identity.id.to_hex(),
            &member.identity.addr.to_string(),
            member.state,
            member.incarnation,
            member.node_state.as_ref(),
        );
        view.last_heard_ms_ago = member
            .last_heard
            .map(|t| now_ms.saturating_sub(t.as_millis()));
        view.state_since_ms_ago = now_ms.saturating_sub(member.state_since.as_millis());
        view
    }

    /// A view with the fields every source has.
    pub fn base(
        name: &str,
        id: &str,
        addr: &str,
        state: MemberState,
        incarnation: u64,
        node_state: Option<&NodeState>,
    ) -> MemberView {
        let (health, health_reason) = match node_state {
            Some(s) => {
                let (h, r) = health_parts(&s.health);
                (h.to_string(), r)
            }
            None => ("unknown".to_string(), None),
        };
        MemberView {
            name: name.to_string(),
            id: id.to_string(),
            addr: addr.to_string(),
            state,
            incarnation,
            is_self: false,
            slots_free: node_state.map(|s| s.slots_free),
            slots_total: node_state.map(|s| s.slots_total),
            capacity: node_state.map(|s| s.capacity.clone()),
            free: node_state.map(|s| s.free.clone()),
            cpu_load_permille: node_state.map(|s| s.cpu_load_permille),
            mem_used_permille: node_state.map(|s| s.mem_used_permille),
            disk_free_mib: node_state.map(|s| s.disk_free_mib),
            health,
            health_reason,
            last_heard_ms_ago: None,
            state_since_ms_ago: 0,
            build_version: node_state.map(|s| s.build_version.clone()),
            labels: node_state.map(|s| s.labels.clone()).unwrap_or_default(),
            draining: node_state.is_some_and(|s| s.draining),
            isolation: node_state.map(|s| s.isolation.clone()),
        }
    }
}

/// `GET /v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// This node as it appears in the member list.
    pub member: MemberView,
    /// The party its certificate names.
    pub party: String,
    /// Lifeguard local health multiplier (0 is healthy).
    pub local_health: u32,
    /// Joined a mesh, or started single-node on purpose.
    pub ready: bool,
    /// Members by state in this node's view, itself included.
    pub members_by_state: BTreeMap<String, usize>,
    /// Every health check and its last result.
    pub checks: Vec<CheckView>,
    /// Seconds since the agent started.
    pub uptime_s: u64,
    /// A drain is under way: the node takes no new work and leaves once its
    /// running attempts ended.
    #[serde(default)]
    pub draining: bool,
    /// Attempts running on this node.
    #[serde(default)]
    pub running_attempts: u32,
}

/// One health check in `GET /v1/node`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckView {
    /// Its name.
    pub name: String,
    /// builtin, command or http.
    pub kind: String,
    /// passing, warning or critical.
    pub status: String,
    /// What its last run said.
    pub output: String,
    /// Non-passing runs in a row.
    pub consecutive_failures: u32,
    /// Milliseconds since its last run.
    pub last_run_ms_ago: Option<u64>,
}
