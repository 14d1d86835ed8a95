//! What the agent asks the executor to run and what it hears back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_protocol::tasks::container::ContainerSpec;

pub use super::cgroup::Limits;

/// Longest accepted task id (it names a directory).
pub const TASK_ID_LEN_MAX: usize = 128;

/// How an attempt runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Driver {
    /// Run `program args...` as a child process under a supervisor.
    Command {
        /// Program path or name (looked up in PATH).
        program: String,
        /// Arguments.
        args: Vec<String>,
    },
    /// Run `command` (the image's own if empty) in a container of
    /// `container.image`, through the docker CLI, under a supervisor.
    Docker {
        /// Image, mounts, network.
        container: ContainerSpec,
        /// Command and arguments inside the container.
        command: Vec<String>,
    },
    /// Complete inside the agent after `duration` with `exit_code`; no
    /// process. For tests, demos and coordination benchmarks.
    Mock {
        /// How long the fake attempt runs.
        duration: Duration,
        /// The exit code it reports.
        exit_code: i32,
    },
}

/// One attempt of one task, as the executor needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptSpec {
    /// Task id: 1..=128 characters of `[A-Za-z0-9._-]`, not `.` or `..`.
    pub task_id: String,
    /// Attempt number, the fencing token (`SHOAL_ATTEMPT`).
    pub attempt: u64,
    /// What to run.
    pub driver: Driver,
    /// Extra environment variables for the command.
    pub env: BTreeMap<String, String>,
    /// Working directory of the command (the agent's own if `None`).
    pub cwd: Option<PathBuf>,
    /// Slots the attempt occupies while it runs.
    pub slots: u32,
    /// Kill the attempt after this long (its own timeout, not the lease).
    pub timeout: Option<Duration>,
    /// Memory and CPU limits of its cgroup (where the node isolates).
    pub limits: Limits,
}

/// Why the agent asks to kill an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KillReason {
    /// The user cancelled the task.
    Cancelled,
    /// The agent lost (or cannot renew) the attempt's lease: self-fence.
    Fenced,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttemptOutcome {
    /// The command exited by itself with this code.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// The command died of a signal nobody in shoal sent.
    Signaled {
        /// Signal number.
        signal: i32,
    },
    /// Killed: the lease deadline passed without an extension, or the
    /// agent self-fenced.
    Fenced,
    /// Killed: the agent's end of the supervisor pipe closed (agent died or
    /// restarted). A fence as far as the task is concerned.
    AgentLost,
    /// Killed: the task's own timeout passed.
    TimedOut,
    /// Killed: the task was cancelled.
    Cancelled,
    /// The command could not be started.
    SpawnFailed {
        /// The operating system's reason.
        reason: String,
    },
    /// The kernel's OOM killer killed the command at its cgroup's memory
    /// limit.
    OutOfMemory {
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// The supervisor died without reporting; the process group was killed
    /// by the agent.
    SupervisorLost,
}

impl AttemptOutcome {
    /// The attempt ran to completion with exit code 0.
    pub fn is_success(&self) -> bool {
        matches!(self, AttemptOutcome::Exited { code: 0 })
    }

    /// The attempt's result must not be committed: it lost its lease.
    pub fn is_fenced(&self) -> bool {
        matches!(
            self,
            AttemptOutcome::Fenced | AttemptOutcome::AgentLost | AttemptOutcome::SupervisorLost
        )
    }

    /// Exit code if the command exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            AttemptOutcome::Exited { code } => Some(*code),
            _ => None,
        }
    }

    pub(crate) fn from_kill(reason: KillReason) -> AttemptOutcome {
        match reason {
            KillReason::Cancelled => AttemptOutcome::Cancelled,
            KillReason::Fenced => AttemptOutcome::Fenced,
        }
    }
}

/// An attempt ended (reported once on the executor's exit channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptExit {
    /// Task id.
    pub task_id: String,
    /// Attempt number.
    pub attempt: u64,
    /// How it ended.
    pub outcome: AttemptOutcome,
}

/// Errors of the executor API.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The task id cannot name a directory safely.
    #[error("invalid task id {0:?}: want 1..=128 characters of [A-Za-z0-9._-]")]
    BadTaskId(String),
    /// Not enough free slots; nothing was started.
    #[error("attempt needs {needed} slots, {free} free")]
    NoSlots {
        /// Slots asked for.
        needed: u32,
        /// Slots free.
        free: u32,
    },
    /// The same (task, attempt) is already running here.
    #[error("task {task_id} attempt {attempt} is already running")]
    AlreadyRunning {
        /// Task id.
        task_id: String,
        /// Attempt number.
        attempt: u64,
    },
    /// No such attempt is running here.
    #[error("task {task_id} attempt {attempt} is not running here")]
    NotRunning {
        /// Task id.
        task_id: String,
        /// Attempt number.
        attempt: u64,
    },
    /// No attempt with this task id and number ran on this node.
    #[error("no attempt {attempt} of task {task_id} on this node")]
    NoSuchAttempt {
        /// Task id.
        task_id: String,
        /// Attempt number.
        attempt: u64,
    },
    /// A container attempt on an executor that knows no store id (its
    /// containers are named and labelled by it).
    #[error("this node has no store id to name its containers by")]
    NoStore,
    /// The supervisor process could not be started, or a file of the
    /// attempt directory could not be written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The operating system's reason.
        source: std::io::Error,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExecError {
    let what = what.into();
    move |source| ExecError::Io { what, source }
}

/// Checks that a task id can name a directory.
pub fn validate_task_id(task_id: &str) -> Result<(), ExecError> {
    let ok = !task_id.is_empty()
        && task_id.len() <= TASK_ID_LEN_MAX
        && task_id != "."
        && task_id != ".."
        && task_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ExecError::BadTaskId(task_id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_that_could_escape_the_attempt_dir_are_refused() {
        for bad in ["", ".", "..", "a/b", "/abs", "a\0b", "sp ace"] {
            assert!(validate_task_id(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_task_id(&"x".repeat(TASK_ID_LEN_MAX + 1)).is_err());
        for good in ["t-1", "0191b2c3.d4_e5", &"x".repeat(TASK_ID_LEN_MAX)] {
            assert!(validate_task_id(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn fenced_outcomes_are_never_successes() {
        let fenced = [
            AttemptOutcome::Fenced,
            AttemptOutcome::AgentLost,
            AttemptOutcome::SupervisorLost,
        ];
        for o in fenced {
            assert!(o.is_fenced() && !o.is_success() && o.exit_code().is_none());
        }
        assert!(AttemptOutcome::Exited { code: 0 }.is_success());
        assert!(!AttemptOutcome::Exited { code: 1 }.is_success());
    }
}
