//! After an agent restart: find the attempts the previous run had been
//! running, make sure their process groups are dead, and report them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::procs::{
    attempt_processes, children_of, group_members, kill_group, kill_pid, pid_exists,
};
use super::status::{
    boot_id, read_status, write_status, AttemptState, AttemptStatus, REPORTED_FILE,
};
use super::types::{io_err, AttemptOutcome, ExecError};

/// Most attempt directories one recovery looks at.
pub const RECOVER_ATTEMPTS_MAX: usize = 100_000;
/// How long recovery waits for a killed group to disappear.
const GROUP_DEATH_WAIT_MAX: Duration = Duration::from_secs(5);
/// How long recovery lets a still-live supervisor finish by itself.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(3);

/// An attempt found by [`recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredAttempt {
    /// Task id.
    pub task_id: String,
    /// Attempt number.
    pub attempt: u64,
    /// How it ended: `AgentLost` (fenced by the restart) for attempts that
    /// were still running, the recorded outcome for those that ended while
    /// no agent listened.
    pub outcome: AttemptOutcome,
    /// Its directory.
    pub dir: PathBuf,
}

/// Lists attempts under `data_dir/attempts` not yet marked reported; kills
/// the process groups of those that were still running and records them as
/// fenced by the restart (`AgentLost`).
pub fn recover(data_dir: &Path) -> Result<Vec<RecoveredAttempt>, ExecError> {
    recover_dir(data_dir, &[])
}

pub(crate) fn recover_dir(
    data_dir: &Path,
    skip: &[(String, u64)],
) -> Result<Vec<RecoveredAttempt>, ExecError> {
    // The executor hands out canonical attempt directories (they are
    // matched against the processes' SHOAL_ATTEMPT_DIR).
    let data_dir = data_dir
        .canonicalize()
        .unwrap_or_else(|_| data_dir.to_path_buf());
    let root = data_dir.join("attempts");
    let tasks = match std::fs::read_dir(&root) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("cannot list {}", root.display()))(e)),
    };
    let mut found = Vec::new();
    let mut seen = 0usize;
    for task in tasks.flatten() {
        let Ok(attempts) = std::fs::read_dir(task.path()) else {
            continue;
        };
        for entry in attempts.flatten() {
            seen += 1;
            if seen > RECOVER_ATTEMPTS_MAX {
                tracing::warn!("recovery stopped after {RECOVER_ATTEMPTS_MAX} attempt directories");
                return Ok(found);
            }
            let dir = entry.path();
            if dir.join(REPORTED_FILE).exists() {
                continue;
            }
            let Ok(status) = read_status(&dir) else {
                tracing::warn!(dir = %dir.display(), "attempt directory without a readable status");
                continue;
            };
            if skip.contains(&(status.task_id.clone(), status.attempt)) {
                continue;
            }
            let outcome = match &status.state {
                AttemptState::Finished { outcome } => outcome.clone(),
                AttemptState::Running { .. } | AttemptState::Starting => {
                    finish_abandoned(&dir, status.clone(), AttemptOutcome::AgentLost)
                }
            };
            found.push(RecoveredAttempt {
                task_id: status.task_id,
                attempt: status.attempt,
                outcome,
                dir,
            });
        }
    }
    found.sort_by(|a, b| (&a.task_id, a.attempt).cmp(&(&b.task_id, b.attempt)));
    Ok(found)
}

/// Kills what is left of an attempt whose supervisor no longer reports,
/// waits (bounded) for its group to vanish, and records `outcome`.
/// Blocking.
pub(crate) fn finish_abandoned(
    dir: &Path,
    mut status: AttemptStatus,
    outcome: AttemptOutcome,
) -> AttemptOutcome {
    // Pids recorded in another boot name unrelated processes now.
    if status.boot_id == boot_id() {
        kill_leftovers(dir, &status);
    }
    // The supervisor may have finished meanwhile and recorded the truth.
    if let Ok(AttemptStatus {
        state: AttemptState::Finished { outcome: recorded },
        ..
    }) = read_status(dir)
    {
        return recorded;
    }
    status.state = AttemptState::Finished {
        outcome: outcome.clone(),
    };
    if let Err(e) = write_status(dir, &status) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot record recovered attempt");
    }
    outcome
}

/// Makes sure nothing of the attempt runs any more (bounded in time).
fn kill_leftovers(dir: &Path, status: &AttemptStatus) {
    let sup = status.supervisor_pid;
    // A live supervisor saw the old agent's pipe close and is cleaning up;
    // let it finish and record the truth before taking over.
    let grace_until = Instant::now() + SUPERVISOR_GRACE;
    while is_supervisor(sup) && Instant::now() < grace_until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if is_supervisor(sup) {
        for child in children_of(sup as i32) {
            kill_group(child);
            kill_pid(child);
        }
        kill_pid(sup as i32);
    }
    let until = Instant::now() + GROUP_DEATH_WAIT_MAX;
    loop {
        if let AttemptState::Running { pgid } = status.state {
            kill_group(pgid);
        }
        // Processes that left the group (setsid) or were spawned before the
        // status named the group still carry the attempt's identity.
        let marked = attempt_processes(dir);
        for pid in &marked {
            kill_pid(*pid);
        }
        let group_alive = match status.state {
            AttemptState::Running { pgid } => !group_members(pgid).is_empty(),
            _ => false,
        };
        if (!group_alive && marked.is_empty()) || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn is_supervisor(pid: u32) -> bool {
    pid_exists(pid as i32)
        && std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                c.split(|&b| b == 0)
                    .any(|arg| arg == super::supervisor::SUPERVISE_ARG.as_bytes())
            })
            .unwrap_or(false)
}
