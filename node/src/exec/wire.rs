//! Messages on the agent <-> supervisor pipe: one JSON object per line.
//! The agent writes the [`SupervisorSpec`] first, then [`ToSupervisor`]
//! lines on the supervisor's stdin; the supervisor writes
//! [`FromSupervisor`] lines on its stdout. EOF on stdin means the agent is
//! gone.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::cgroup::AttemptCgroup;
use super::docker::DockerRun;
use super::types::{AttemptOutcome, KillReason};

/// Longest line either side accepts.
pub const LINE_LEN_MAX: usize = 1 << 20;

/// Everything the supervisor needs to run one attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisorSpec {
    /// Task id (`SHOAL_TASK_ID`).
    pub task_id: String,
    /// Attempt number (`SHOAL_ATTEMPT`).
    pub attempt: u64,
    /// Party name (`SHOAL_PARTY`).
    pub party: String,
    /// Node name (`SHOAL_NODE`).
    pub node: String,
    /// Program to run.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Directory for stdout, stderr and status.json.
    pub attempt_dir: PathBuf,
    /// Lease deadline, CLOCK_BOOTTIME ms.
    pub lease_deadline_boot_ms: u64,
    /// Task timeout from the start of the command, ms.
    pub timeout_ms: Option<u64>,
    /// The attempt's cgroup, where the node isolates attempts.
    #[serde(default)]
    pub cgroup: Option<AttemptCgroup>,
    /// The attempt's container, for the docker driver: `program` and
    /// `args` are then the docker CLI's attached start, and `env` goes
    /// into the container.
    #[serde(default)]
    pub docker: Option<DockerRun>,
}

/// Agent -> supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToSupervisor {
    /// Move the lease deadline (CLOCK_BOOTTIME ms).
    Extend {
        /// New deadline.
        lease_deadline_boot_ms: u64,
    },
    /// Kill the attempt now.
    Kill {
        /// Why.
        reason: KillReason,
    },
}

/// Supervisor -> agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromSupervisor {
    /// The command runs as `pid`, leader of process group `pid`.
    Started {
        /// Process id and group id.
        pid: u32,
    },
    /// The attempt ended and its whole process group is dead.
    Finished {
        /// How.
        outcome: AttemptOutcome,
    },
}
