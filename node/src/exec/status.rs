//! The attempt's status file (`status.json` in its directory), written by
//! the supervisor (and by `recover`) so that an agent that restarts finds
//! the attempts it had been running.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::types::AttemptOutcome;

/// File name of the status inside an attempt directory.
pub const STATUS_FILE: &str = "status.json";
/// Marker file: the agent has reported this attempt's end and `recover`
/// must not report it again.
pub const REPORTED_FILE: &str = "reported";

/// Where the attempt is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptState {
    /// Supervisor up, command not yet spawned.
    Starting,
    /// Command running as leader of process group `pgid`.
    Running {
        /// Process group id.
        pgid: i32,
    },
    /// Ended; its process group is dead.
    Finished {
        /// How.
        outcome: AttemptOutcome,
    },
}

/// Content of `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptStatus {
    /// Task id.
    pub task_id: String,
    /// Attempt number.
    pub attempt: u64,
    /// Kernel boot id when written: pids of another boot mean nothing.
    pub boot_id: String,
    /// Pid of the supervisor.
    pub supervisor_pid: u32,
    /// State.
    pub state: AttemptState,
}

/// The attempt directory `DATA/attempts/<task>/<attempt>`.
pub fn attempt_dir(data_dir: &Path, task_id: &str, attempt: u64) -> PathBuf {
    data_dir
        .join("attempts")
        .join(task_id)
        .join(attempt.to_string())
}

/// This boot's id (empty if the kernel does not expose one).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Reads `status.json` of an attempt directory.
pub fn read_status(dir: &Path) -> std::io::Result<AttemptStatus> {
    let bytes = std::fs::read(dir.join(STATUS_FILE))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// Replaces `status.json` atomically (temp file, rename). No fsync: the
/// file serves an agent that restarts on a machine that kept running (the
/// page cache suffices); after a power loss every attempt process is dead
/// anyway, and an unreadable status is skipped by `recover`.
pub fn write_status(dir: &Path, status: &AttemptStatus) -> std::io::Result<()> {
    let bytes = serde_json::to_vec(status)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let tmp = dir.join(format!("{STATUS_FILE}.tmp.{}", std::process::id()));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
    }
    std::fs::rename(&tmp, dir.join(STATUS_FILE))
}
