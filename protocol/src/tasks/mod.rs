//! Task records and their state machine (docs/protocol.md §6).
//!
//! A task record is a CASPaxos register value. Every change to it is a
//! [`Mutation`] applied by whichever proposer won the register's ballot, so
//! the rules of the task state machine live here, in pure functions: the
//! fencing rule (a result counts only from the current attempt) is
//! [`apply`]'s check of the attempt number.

pub mod checkpoint;
pub mod container;
pub mod fit;

use crate::resources::{ResourceError, Resources};
use crate::Bugs;
use crate::NodeId;
use checkpoint::CheckpointMeta;
use container::{ContainerError, ContainerSpec};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Longest task name, command, argument, env key/value or label accepted.
pub const MAX_FIELD_BYTES: usize = 4_096;
/// Most arguments, env entries or labels of one task.
pub const MAX_LIST_ITEMS: usize = 256;
/// Most slots one task may ask for.
pub const MAX_SLOTS: u32 = 1_024;
/// Most retries of one task.
pub const MAX_RETRIES: u32 = 100;
/// Longest per-attempt time limit: 30 days.
pub const MAX_TIMEOUT_MS: u64 = 30 * 24 * 3600 * 1000;
/// Longest pretend attempt of the mock driver: 1 day.
pub const MAX_MOCK_DURATION_MS: u64 = 24 * 3600 * 1000;
/// Longest output tail kept in a record.
pub const MAX_TAIL_BYTES: usize = 2_048;
/// Attempts a record remembers (the newest); older ones are dropped so
/// that a task retried a hundred times keeps a small register value.
pub const MAX_ATTEMPT_HISTORY: usize = 8;
/// Longest failure reason kept in a record.
pub const MAX_REASON_BYTES: usize = 512;
/// The reason of an attempt that exited non-zero with no other explanation.
pub const EXIT_REASON: &str = "exit";
/// The reason of an attempt its per-task time limit ended.
pub const TIMEOUT_REASON: &str = "timeout";
/// The reason of an attempt killed because its lease was lost (the task
/// waits for its next attempt; no retry is spent).
pub const FENCED_REASON: &str = "fenced";

/// A task's identity: random 64 bits drawn by the submitting node from its
/// seeded generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(pub u64);

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What runs an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Driver {
    /// A child process from `command`, `args`, `env`, `cwd`.
    #[default]
    Command,
    /// No process: the host pretends the attempt ran for `duration_ms` and
    /// exited with `exit_code` (tests, simulator, demos).
    Mock {
        /// How long the pretend attempt runs.
        duration_ms: u64,
        /// Its exit code.
        exit_code: i32,
    },
    /// `command` and `args` (the image's own command when `command` is
    /// empty) in a container of the given image, with the task's `env`;
    /// `cwd` is a directory inside the container. Last, so that records
    /// stored before it decode unchanged.
    Docker(ContainerSpec),
}

impl Driver {
    /// The driver's name in the API: `command`, `mock` or `docker`.
    pub fn name(&self) -> &'static str {
        match self {
            Driver::Command => "command",
            Driver::Mock { .. } => "mock",
            Driver::Docker(_) => "docker",
        }
    }
}

/// What a user submits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskSpec {
    /// Human-readable name (need not be unique).
    pub name: String,
    /// Program to run.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory, if not the node's default.
    pub cwd: Option<String>,
    /// Slots the task occupies while it runs.
    pub slots: u32,
    /// CPU, memory and custom amounts reserved while it runs.
    pub resources: Resources,
    /// Memory limit of an isolated attempt, MiB, when it is not the
    /// reserved memory (0: the reservation is the limit).
    #[serde(default)]
    pub memory_limit_mib: u32,
    /// Labels a node must carry (`key=value`) to run it.
    pub labels: BTreeMap<String, String>,
    /// Per-attempt time limit; `None` for no limit.
    pub timeout_ms: Option<u64>,
    /// How many times a failed attempt is retried.
    pub retries: u32,
    /// Delay before the first retry; doubles at each further one.
    pub retry_backoff_ms: u64,
    /// How the attempt runs.
    pub driver: Driver,
}

/// Why a spec was refused. No state was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// `command` is empty for a [`Driver::Command`] task.
    #[error("command is empty")]
    EmptyCommand,
    /// `slots` is 0 or above [`MAX_SLOTS`].
    #[error("slots must be 1..={MAX_SLOTS}, got {0}")]
    Slots(u32),
    /// `retries` is above [`MAX_RETRIES`].
    #[error("retries must be at most {MAX_RETRIES}, got {0}")]
    Retries(u32),
    /// A string is longer than [`MAX_FIELD_BYTES`].
    #[error("{field}: a value is longer than {MAX_FIELD_BYTES} bytes")]
    TooLong {
        /// The field.
        field: &'static str,
    },
    /// A list or map holds more than [`MAX_LIST_ITEMS`] entries.
    #[error("{field}: more than {MAX_LIST_ITEMS} entries")]
    TooMany {
        /// The field.
        field: &'static str,
    },
    /// A NUL byte, which no program, argument, path or environment entry
    /// can hold.
    #[error("{field}: contains a NUL byte")]
    Nul {
        /// The field.
        field: &'static str,
    },
    /// An environment variable name that is empty or holds `=`.
    #[error("env: {0:?} is not a variable name (empty, or holds '=')")]
    EnvKey(String),
    /// A time limit or mock duration above its bound.
    #[error("{field}: {got_ms} ms is above the limit of {limit_ms} ms")]
    TooLate {
        /// The field.
        field: &'static str,
        /// What was asked.
        got_ms: u64,
        /// The bound.
        limit_ms: u64,
    },
    /// A bad resource request.
    #[error("{0}")]
    Resources(ResourceError),
    /// A bad container spec (image, mounts, network, or an environment
    /// entry a container cannot receive).
    #[error("{0}")]
    Container(ContainerError),
}

impl SpecError {
    /// The submit field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            SpecError::EmptyCommand => "command",
            SpecError::Slots(_) => "slots",
            SpecError::Retries(_) => "retries",
            SpecError::EnvKey(_) => "env",
            SpecError::Resources(e) => resource_field(e),
            SpecError::Container(e) => e.field(),
            SpecError::TooLong { field }
            | SpecError::TooMany { field }
            | SpecError::Nul { field }
            | SpecError::TooLate { field, .. } => field,
        }
    }

    /// The bound that was passed, where there is one.
    pub fn limit(&self) -> Option<u64> {
        match self {
            SpecError::Slots(_) => Some(u64::from(MAX_SLOTS)),
            SpecError::Retries(_) => Some(u64::from(MAX_RETRIES)),
            SpecError::TooLong { .. } => Some(MAX_FIELD_BYTES as u64),
            SpecError::TooMany { .. } => Some(MAX_LIST_ITEMS as u64),
            SpecError::TooLate { limit_ms, .. } => Some(*limit_ms),
            SpecError::EmptyCommand
            | SpecError::Nul { .. }
            | SpecError::EnvKey(_)
            | SpecError::Resources(_)
            | SpecError::Container(_) => None,
        }
    }
}

/// The submit field a resource error is about.
fn resource_field(e: &ResourceError) -> &'static str {
    match e {
        ResourceError::Cpu(_) => "cpu",
        ResourceError::Memory(_) => "memory",
        ResourceError::TooLarge { kind, .. } if kind == "cpu" => "cpu",
        ResourceError::TooLarge { kind, .. } if kind == "memory" => "memory",
        _ => "resources",
    }
}

/// Checks one string field: length and NUL bytes.
fn check_text(field: &'static str, value: &str) -> Result<(), SpecError> {
    if value.len() > MAX_FIELD_BYTES {
        return Err(SpecError::TooLong { field });
    }
    if value.contains('\0') {
        return Err(SpecError::Nul { field });
    }
    Ok(())
}

/// Checks a map field: its size and every key and value.
fn check_map(field: &'static str, map: &BTreeMap<String, String>) -> Result<(), SpecError> {
    if map.len() > MAX_LIST_ITEMS {
        return Err(SpecError::TooMany { field });
    }
    map.iter().try_for_each(|(k, v)| {
        check_text(field, k)?;
        check_text(field, v)
    })
}

impl TaskSpec {
    /// A spec that runs nothing for `duration_ms` and exits with `exit_code`.
    pub fn mock(duration_ms: u64, exit_code: i32) -> Self {
        TaskSpec {
            name: "mock".into(),
            slots: 1,
            driver: Driver::Mock {
                duration_ms,
                exit_code,
            },
            ..TaskSpec::default()
        }
    }

    /// Checks every limit; a spec that passes is safe to store and ship.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.driver == Driver::Command && self.command.is_empty() {
            return Err(SpecError::EmptyCommand);
        }
        if self.slots == 0 || self.slots > MAX_SLOTS {
            return Err(SpecError::Slots(self.slots));
        }
        if self.retries > MAX_RETRIES {
            return Err(SpecError::Retries(self.retries));
        }
        check_text("name", &self.name)?;
        check_text("command", &self.command)?;
        if let Some(cwd) = &self.cwd {
            check_text("cwd", cwd)?;
        }
        if self.args.len() > MAX_LIST_ITEMS {
            return Err(SpecError::TooMany { field: "args" });
        }
        self.args.iter().try_for_each(|a| check_text("args", a))?;
        check_map("env", &self.env)?;
        if let Some(key) = self.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            return Err(SpecError::EnvKey(key.clone()));
        }
        check_map("labels", &self.labels)?;
        self.resources.validate().map_err(SpecError::Resources)?;
        let bounded = |field, got_ms: u64, limit_ms| {
            if got_ms > limit_ms {
                return Err(SpecError::TooLate {
                    field,
                    got_ms,
                    limit_ms,
                });
            }
            Ok(())
        };
        if let Some(timeout) = self.timeout_ms {
            bounded("timeout", timeout, MAX_TIMEOUT_MS)?;
        }
        if let Driver::Mock { duration_ms, .. } = self.driver {
            bounded("duration", duration_ms, MAX_MOCK_DURATION_MS)?;
        }
        if let Driver::Docker(container) = &self.driver {
            container.validate().map_err(SpecError::Container)?;
            self.env
                .iter()
                .try_for_each(|(k, v)| container::validate_env(k, v))
                .map_err(SpecError::Container)?;
        }
        Ok(())
    }

    /// Whether a node carrying `labels` may run this task.
    pub fn fits_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Waiting for a claim.
    Pending,
    /// `holder` won attempt `attempt` and is starting it (written by
    /// earlier versions; a claim now goes straight to `Running`).
    Claimed {
        /// The attempt number, also the fencing token.
        attempt: u64,
        /// The node that runs it.
        holder: NodeId,
    },
    /// `holder` runs attempt `attempt`.
    Running {
        /// The attempt number, also the fencing token.
        attempt: u64,
        /// The node that runs it.
        holder: NodeId,
    },
    /// Final: the current attempt exited with code 0.
    Succeeded,
    /// Final: the last attempt failed and no retry is left.
    Failed,
    /// Final: cancelled by a user.
    Cancelled,
}

impl TaskState {
    /// Succeeded, Failed or Cancelled.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// The (attempt, holder) of a claimed or running task.
    pub fn holder(&self) -> Option<(u64, NodeId)> {
        match self {
            TaskState::Claimed { attempt, holder } | TaskState::Running { attempt, holder } => {
                Some((*attempt, *holder))
            }
            _ => None,
        }
    }
}

/// How an attempt ended, as its holder reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The process exited with this code.
    Exited(i32),
    /// The per-task timeout killed it.
    TimedOut,
    /// It was killed because its lease could not be renewed. Not the task's
    /// fault: it does not use up a retry.
    Fenced,
}

/// One attempt as the record remembers it. Times are Unix milliseconds by
/// the clock of the node that wrote them (for people, not for ordering:
/// the attempt number orders attempts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// The attempt number.
    pub attempt: u64,
    /// Name of the node that ran it.
    pub node: String,
    /// When its claim was written.
    pub started_at_ms: u64,
    /// When its end was written; `None` while it runs.
    pub ended_at_ms: Option<u64>,
    /// How it ended, as its holder reported; `None` while it runs, and for
    /// an attempt whose holder never reported (it was lost, and a later
    /// claim or a cancel closed it).
    pub outcome: Option<Outcome>,
    /// Why it ended, in words, where the exit code does not say it.
    pub reason: Option<String>,
}

/// The replicated record of one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its id.
    pub id: TaskId,
    /// What to run.
    pub spec: TaskSpec,
    /// Where it is.
    pub state: TaskState,
    /// The latest attempt number handed out (0 before the first claim).
    pub attempt: u64,
    /// Retries used so far.
    pub retries_used: u32,
    /// Exit code of the attempt that wrote the final state.
    pub exit_code: Option<i32>,
    /// The attempt that wrote the final state (fencing audit).
    pub final_attempt: Option<u64>,
    /// Name of the node that ran (or runs) the current attempt.
    pub holder_name: Option<String>,
    /// Tail of the last attempt's output.
    pub output_tail: String,
    /// When it was submitted (Unix ms, the submitting node's clock).
    pub submitted_at_ms: u64,
    /// Its newest attempts, oldest first (at most [`MAX_ATTEMPT_HISTORY`]).
    pub attempts: Vec<AttemptInfo>,
    /// Why the last ended attempt failed, while the task waits for a retry
    /// or after it failed for good.
    pub reason: Option<String>,
    /// The latest checkpoint an attempt saved, for the next attempt.
    #[serde(default)]
    pub checkpoint: Option<CheckpointMeta>,
}

impl TaskRecord {
    /// A fresh pending record.
    pub fn new(id: TaskId, spec: TaskSpec, submitted_at_ms: u64) -> Self {
        TaskRecord {
            id,
            spec,
            state: TaskState::Pending,
            attempt: 0,
            retries_used: 0,
            exit_code: None,
            final_attempt: None,
            holder_name: None,
            output_tail: String::new(),
            submitted_at_ms,
            attempts: Vec::new(),
            reason: None,
            checkpoint: None,
        }
    }

    /// The remembered attempt `attempt`, if it is still in the history.
    pub fn attempt_info(&self, attempt: u64) -> Option<&AttemptInfo> {
        self.attempts.iter().find(|a| a.attempt == attempt)
    }

    /// Closes the newest attempt if it is still open (its holder never
    /// reported), with `reason`.
    fn close_open_attempt(&mut self, at_ms: u64, reason: &str) {
        if let Some(last) = self.attempts.last_mut() {
            if last.ended_at_ms.is_none() {
                last.ended_at_ms = Some(at_ms);
                last.reason = Some(reason.to_string());
            }
        }
    }

    /// Backoff before the next claim of a pending task that has failed
    /// `retries_used` times: `retry_backoff_ms * 2^(retries_used-1)`, capped.
    pub fn backoff_ms(&self) -> u64 {
        if self.retries_used == 0 {
            return 0;
        }
        let shift = (self.retries_used - 1).min(16);
        self.spec
            .retry_backoff_ms
            .saturating_mul(1 << shift)
            .min(10 * 60 * 1000)
    }
}

/// A change to a task record, applied in the accept phase of a CAS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mutation {
    /// Create the record if absent (a retried submit is idempotent).
    Create(Box<TaskRecord>),
    /// Take attempt `from.saturating_add(1)` for `holder`, running, if the
    /// record is still at attempt `from` and not final.
    Claim {
        /// The attempt the claimer saw.
        from: u64,
        /// The claimer.
        holder: NodeId,
        /// Its name, for the record.
        holder_name: String,
        /// When (Unix ms, the claimer's clock).
        at_ms: u64,
    },
    /// Mark attempt `attempt` started (a claimed record of an earlier
    /// version; claims now write `Running` themselves).
    Start {
        /// The attempt that started.
        attempt: u64,
    },
    /// Report how attempt `attempt` ended.
    Finish {
        /// The attempt that ended (the fencing token).
        attempt: u64,
        /// How it ended.
        outcome: Outcome,
        /// Tail of its output.
        tail: String,
        /// When (Unix ms, the holder's clock).
        at_ms: u64,
        /// Why it ended, where the outcome does not say it all.
        reason: Option<String>,
    },
    /// Cancel a non-final task.
    Cancel {
        /// When (Unix ms, the cancelling node's clock).
        at_ms: u64,
    },
    /// Name the checkpoint that attempt `meta.attempt` saved, if that
    /// attempt is current and runs on `holder` (the fencing rule for saves).
    Checkpoint {
        /// The node that saved it.
        holder: NodeId,
        /// What it saved.
        meta: CheckpointMeta,
    },
    /// Remove a final record (garbage collection).
    Delete,
    /// Change nothing (a linearizable read).
    Read,
}

/// Why a mutation did not apply. The register keeps its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum Refusal {
    /// The record does not exist.
    #[error("no such task")]
    Missing,
    /// The record is final.
    #[error("task is final")]
    Final,
    /// The attempt number moved on: the caller's attempt is stale.
    #[error("attempt {have} is current, not {asked}")]
    StaleAttempt {
        /// The attempt the caller named.
        asked: u64,
        /// The record's current attempt.
        have: u64,
    },
    /// The task is not final, so it cannot be deleted.
    #[error("task is not final")]
    NotFinal,
    /// A record edit was refused (the federation record sets).
    #[error(transparent)]
    Record(#[from] crate::federation::records::RecordError),
}

/// Applies `m` to `current`, giving the new value or why not.
pub fn apply(
    current: Option<&TaskRecord>,
    m: &Mutation,
    bugs: &Bugs,
) -> Result<Option<TaskRecord>, Refusal> {
    let rec = match (current, m) {
        (None, Mutation::Create(r)) => return Ok(Some((**r).clone())),
        (Some(r), Mutation::Create(_)) => return Ok(Some(r.clone())),
        (None, Mutation::Read) => return Ok(None),
        (None, _) => return Err(Refusal::Missing),
        (Some(r), _) => r,
    };
    let mut next = rec.clone();
    match m {
        Mutation::Create(_) => unreachable!("handled above"),
        Mutation::Read => {}
        Mutation::Delete => {
            if !rec.state.is_final() {
                return Err(Refusal::NotFinal);
            }
            return Ok(None);
        }
        // Idempotence: a CAS round can be retried after an earlier round of
        // the same operation was chosen; a repeated change must then report
        // success, not a refusal.
        Mutation::Cancel { .. } if rec.state == TaskState::Cancelled => {}
        // Only the same claim retried: its wall-clock stamp is the one the
        // record kept. A later claim by the same node from a stale view (a
        // restarted process, or one fenced and claiming again) must not be
        // told it won an attempt that already ran.
        Mutation::Claim {
            from,
            holder,
            at_ms,
            ..
        } if rec.attempt == from.saturating_add(1)
            && rec.state.holder() == Some((from.saturating_add(1), *holder))
            && rec
                .attempt_info(from.saturating_add(1))
                .is_some_and(|a| a.started_at_ms == *at_ms) => {}
        Mutation::Finish { attempt, .. }
            if rec.state.is_final() && rec.final_attempt == Some(*attempt) => {}
        Mutation::Checkpoint { meta, .. } if rec.checkpoint.as_ref() == Some(meta) => {}
        Mutation::Checkpoint { holder, meta } => {
            if rec.state.is_final() {
                return Err(Refusal::Final);
            }
            if rec.state.holder() != Some((meta.attempt, *holder)) {
                return Err(Refusal::StaleAttempt {
                    asked: meta.attempt,
                    have: rec.attempt,
                });
            }
            next.checkpoint = Some(meta.clone());
        }
        Mutation::Cancel { at_ms } => {
            if rec.state.is_final() {
                return Err(Refusal::Final);
            }
            next.state = TaskState::Cancelled;
            next.close_open_attempt(*at_ms, "cancelled");
        }
        Mutation::Claim {
            from,
            holder,
            holder_name,
            at_ms,
        } => {
            if rec.state.is_final() {
                return Err(Refusal::Final);
            }
            if rec.attempt != *from {
                return Err(Refusal::StaleAttempt {
                    asked: *from,
                    have: rec.attempt,
                });
            }
            next.attempt = from.saturating_add(1);
            // The claim is the start: the holder starts the process as soon
            // as this value is chosen, so a separate `Start` write would only
            // cost a round per task (and race the finish of a short attempt).
            next.state = TaskState::Running {
                attempt: from.saturating_add(1),
                holder: *holder,
            };
            next.holder_name = Some(holder_name.clone());
            next.close_open_attempt(*at_ms, "its node stopped answering; no report");
            next.attempts.push(AttemptInfo {
                attempt: from.saturating_add(1),
                node: holder_name.clone(),
                started_at_ms: *at_ms,
                ended_at_ms: None,
                outcome: None,
                reason: None,
            });
            if next.attempts.len() > MAX_ATTEMPT_HISTORY {
                let extra = next.attempts.len() - MAX_ATTEMPT_HISTORY;
                next.attempts.drain(..extra);
            }
        }
        Mutation::Start { attempt } => match rec.state {
            TaskState::Claimed { attempt: a, holder } if a == *attempt => {
                next.state = TaskState::Running { attempt: a, holder };
            }
            TaskState::Running { attempt: a, .. } if a == *attempt => {}
            _ if rec.state.is_final() => return Err(Refusal::Final),
            _ => {
                return Err(Refusal::StaleAttempt {
                    asked: *attempt,
                    have: rec.attempt,
                })
            }
        },
        Mutation::Finish {
            attempt,
            outcome,
            tail,
            at_ms,
            reason,
        } => {
            let current = rec.state.holder().map(|(a, _)| a);
            let fenced_ok = current == Some(*attempt);
            if !fenced_ok && !bugs.has(Bug::StaleCommit) {
                if rec.state.is_final() {
                    return Err(Refusal::Final);
                }
                return Err(Refusal::StaleAttempt {
                    asked: *attempt,
                    have: rec.attempt,
                });
            }
            next.output_tail = truncate_tail(tail);
            // Scripts match these words (`status --json`'s reason): a
            // failure the host did not explain is "exit" or "timeout", a
            // fenced attempt "fenced", a success none.
            let reason = match outcome {
                Outcome::Exited(0) => None,
                Outcome::Fenced => Some(FENCED_REASON.to_string()),
                Outcome::Exited(_) => Some(
                    reason
                        .as_deref()
                        .map_or(EXIT_REASON.into(), truncate_reason),
                ),
                Outcome::TimedOut => Some(
                    reason
                        .as_deref()
                        .map_or(TIMEOUT_REASON.into(), truncate_reason),
                ),
            };
            if let Some(info) = next.attempts.iter_mut().find(|a| a.attempt == *attempt) {
                info.ended_at_ms = Some(*at_ms);
                info.outcome = Some(*outcome);
                info.reason.clone_from(&reason);
            }
            next.reason = reason;
            match outcome {
                Outcome::Exited(0) => finish(&mut next, TaskState::Succeeded, Some(0), *attempt),
                Outcome::Fenced => next.state = TaskState::Pending,
                Outcome::Exited(_) | Outcome::TimedOut => {
                    let code = match outcome {
                        Outcome::Exited(c) => Some(*c),
                        _ => None,
                    };
                    if next.retries_used < next.spec.retries {
                        next.retries_used += 1;
                        next.exit_code = code;
                        next.state = TaskState::Pending;
                    } else {
                        finish(&mut next, TaskState::Failed, code, *attempt);
                    }
                }
            }
        }
    }
    Ok(Some(next))
}

fn finish(rec: &mut TaskRecord, state: TaskState, code: Option<i32>, attempt: u64) {
    rec.state = state;
    rec.exit_code = code;
    rec.final_attempt = Some(attempt);
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

fn truncate_tail(tail: &str) -> String {
    if tail.len() <= MAX_TAIL_BYTES {
        return tail.to_string();
    }
    let mut start = tail.len() - MAX_TAIL_BYTES;
    while !tail.is_char_boundary(start) {
        start += 1;
    }
    tail[start..].to_string()
}

use crate::bugs::Bug;

#[cfg(test)]
mod tests {
    use super::*;

    fn running(attempt: u64) -> TaskRecord {
        let mut r = TaskRecord::new(TaskId(1), TaskSpec::mock(10, 0), 0);
        r.attempt = attempt;
        r.state = TaskState::Running {
            attempt,
            holder: NodeId::from_u64(1),
        };
        r
    }

    #[test]
    fn stale_attempt_cannot_finish() {
        let rec = running(3);
        let m = Mutation::Finish {
            attempt: 2,
            outcome: Outcome::Exited(0),
            tail: String::new(),
            at_ms: 0,
            reason: None,
        };
        assert_eq!(
            apply(Some(&rec), &m, &Bugs::none()),
            Err(Refusal::StaleAttempt { asked: 2, have: 3 })
        );
        let ok = apply(
            Some(&rec),
            &Mutation::Finish {
                attempt: 3,
                outcome: Outcome::Exited(0),
                tail: String::new(),
                at_ms: 0,
                reason: None,
            },
            &Bugs::none(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(ok.state, TaskState::Succeeded);
        assert_eq!(ok.final_attempt, Some(3));
    }

    #[test]
    fn only_the_current_attempt_on_its_holder_names_a_checkpoint() {
        let none = Bugs::none();
        let meta = |attempt, generation| CheckpointMeta {
            attempt,
            generation,
            size: 3,
            digest: checkpoint::digest(b"abc"),
            saved_at_ms: 5,
            holders: vec![NodeId::from_u64(1)],
        };
        let save = |holder, meta| Mutation::Checkpoint {
            holder: NodeId::from_u64(holder),
            meta,
        };
        let rec = running(3);
        let saved = apply(Some(&rec), &save(1, meta(3, 10)), &none)
            .unwrap()
            .unwrap();
        assert_eq!(saved.checkpoint, Some(meta(3, 10)));
        assert_eq!(saved.state, rec.state, "a save changes nothing else");
        assert_eq!(
            apply(Some(&saved), &save(1, meta(3, 10)), &none),
            Ok(Some(saved.clone())),
            "the same save retried reports success"
        );
        assert_eq!(
            apply(Some(&saved), &save(1, meta(2, 11)), &none),
            Err(Refusal::StaleAttempt { asked: 2, have: 3 }),
            "a fenced attempt's late save is refused"
        );
        assert_eq!(
            apply(Some(&saved), &save(2, meta(3, 12)), &none),
            Err(Refusal::StaleAttempt { asked: 3, have: 3 }),
            "another node cannot save for the holder's attempt"
        );
        let next = apply(
            Some(&saved),
            &Mutation::Claim {
                from: 3,
                holder: NodeId::from_u64(2),
                holder_name: "b".into(),
                at_ms: 9,
            },
            &none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            next.checkpoint,
            Some(meta(3, 10)),
            "the next attempt finds the checkpoint"
        );
        let mut done = saved.clone();
        done.state = TaskState::Succeeded;
        assert_eq!(
            apply(Some(&done), &save(1, meta(3, 13)), &none),
            Err(Refusal::Final)
        );
    }

    #[test]
    fn an_unexplained_end_has_the_reason_scripts_match() {
        let none = Bugs::none();
        let end = |outcome| Mutation::Finish {
            attempt: 3,
            outcome,
            tail: String::new(),
            at_ms: 0,
            reason: None,
        };
        let reason_after = |outcome| {
            apply(Some(&running(3)), &end(outcome), &none)
                .unwrap()
                .unwrap()
                .reason
        };
        assert_eq!(reason_after(Outcome::Exited(2)).as_deref(), Some("exit"));
        assert_eq!(reason_after(Outcome::TimedOut).as_deref(), Some("timeout"));
        assert_eq!(reason_after(Outcome::Fenced).as_deref(), Some("fenced"));
        assert_eq!(reason_after(Outcome::Exited(0)), None);
        let fenced = apply(Some(&running(3)), &end(Outcome::Fenced), &none)
            .unwrap()
            .unwrap();
        assert_eq!(
            fenced.state,
            TaskState::Pending,
            "a fenced attempt spends no retry"
        );
        assert_eq!(fenced.retries_used, 0);
    }

    #[test]
    fn failures_retry_until_retries_run_out() {
        let mut rec = running(1);
        rec.spec.retries = 1;
        rec.spec.retry_backoff_ms = 100;
        let fail = |a| Mutation::Finish {
            attempt: a,
            outcome: Outcome::Exited(2),
            tail: "x".repeat(MAX_TAIL_BYTES + 10),
            at_ms: 0,
            reason: Some("disk full".into()),
        };
        let after = apply(Some(&rec), &fail(1), &Bugs::none()).unwrap().unwrap();
        assert_eq!(after.state, TaskState::Pending);
        assert_eq!(after.backoff_ms(), 100);
        assert_eq!(after.output_tail.len(), MAX_TAIL_BYTES);
        let mut again = after.clone();
        again.attempt = 2;
        again.state = TaskState::Running {
            attempt: 2,
            holder: NodeId::from_u64(2),
        };
        let done = apply(Some(&again), &fail(2), &Bugs::none())
            .unwrap()
            .unwrap();
        assert_eq!(done.state, TaskState::Failed);
        assert_eq!(done.exit_code, Some(2));
    }

    #[test]
    fn cancel_and_claim_respect_final_states() {
        let rec = running(1);
        let cancelled = apply(Some(&rec), &Mutation::Cancel { at_ms: 5 }, &Bugs::none())
            .unwrap()
            .unwrap();
        assert_eq!(cancelled.state, TaskState::Cancelled);
        // Cancelling twice is idempotent (a retried round); cancelling a
        // task that ended otherwise is refused.
        assert_eq!(
            apply(
                Some(&cancelled),
                &Mutation::Cancel { at_ms: 5 },
                &Bugs::none()
            ),
            Ok(Some(cancelled.clone()))
        );
        let mut done = rec.clone();
        done.state = TaskState::Succeeded;
        assert_eq!(
            apply(Some(&done), &Mutation::Cancel { at_ms: 5 }, &Bugs::none()),
            Err(Refusal::Final)
        );
        let claim = Mutation::Claim {
            from: 1,
            holder: NodeId::from_u64(2),
            holder_name: "b".into(),
            at_ms: 0,
        };
        assert_eq!(
            apply(Some(&cancelled), &claim, &Bugs::none()),
            Err(Refusal::Final)
        );
        assert_eq!(
            apply(Some(&cancelled), &Mutation::Delete, &Bugs::none()),
            Ok(None)
        );
        assert_eq!(
            apply(Some(&rec), &Mutation::Delete, &Bugs::none()),
            Err(Refusal::NotFinal)
        );
    }

    #[test]
    fn a_retried_claim_wins_again_but_a_later_claim_from_a_stale_view_is_refused() {
        let none = Bugs::none();
        let claim = |at_ms| Mutation::Claim {
            from: 0,
            holder: NodeId::from_u64(1),
            holder_name: "n1".into(),
            at_ms,
        };
        let rec = TaskRecord::new(TaskId(9), TaskSpec::mock(10, 0), 1_000);
        let won = apply(Some(&rec), &claim(1_100), &none).unwrap().unwrap();
        assert_eq!(
            apply(Some(&won), &claim(1_100), &none),
            Ok(Some(won.clone())),
            "the same round retried reports the win it had"
        );
        assert_eq!(
            apply(Some(&won), &claim(4_000), &none),
            Err(Refusal::StaleAttempt { asked: 0, have: 1 }),
            "a new claim from attempt 0 must not start attempt 1 a second time"
        );
    }

    #[test]
    fn the_record_keeps_each_attempts_node_times_and_reason() {
        let none = Bugs::none();
        let claim = |from, node: &str, at_ms| Mutation::Claim {
            from,
            holder: NodeId::from_u64(from + 1),
            holder_name: node.into(),
            at_ms,
        };
        let finish = |attempt, code, at_ms, reason: Option<&str>| Mutation::Finish {
            attempt,
            outcome: Outcome::Exited(code),
            tail: String::new(),
            at_ms,
            reason: reason.map(String::from),
        };
        let mut spec = TaskSpec::mock(10, 0);
        spec.retries = MAX_ATTEMPT_HISTORY as u32 + 2;
        let rec = TaskRecord::new(TaskId(7), spec, 1_000);
        let r = apply(Some(&rec), &claim(0, "n1", 1_100), &none)
            .unwrap()
            .unwrap();
        let r = apply(
            Some(&r),
            &finish(1, 127, 1_200, Some("cannot start: no such file")),
            &none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.state, TaskState::Pending);
        assert_eq!(r.reason.as_deref(), Some("cannot start: no such file"));
        let first = r.attempt_info(1).unwrap();
        assert_eq!((first.node.as_str(), first.started_at_ms), ("n1", 1_100));
        assert_eq!(first.ended_at_ms, Some(1_200));
        assert_eq!(first.outcome, Some(Outcome::Exited(127)));

        // Attempt 2's holder dies without a report: the next claim closes it.
        let r = apply(Some(&r), &claim(1, "n2", 1_300), &none)
            .unwrap()
            .unwrap();
        let r = apply(Some(&r), &claim(2, "n3", 2_500), &none)
            .unwrap()
            .unwrap();
        let lost = r.attempt_info(2).unwrap();
        assert_eq!((lost.ended_at_ms, lost.outcome), (Some(2_500), None));
        assert!(lost.reason.as_deref().unwrap().contains("no report"));
        let r = apply(Some(&r), &finish(3, 0, 2_600, None), &none)
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.state.clone(), r.reason.clone()),
            (TaskState::Succeeded, None)
        );

        // A long history keeps only the newest attempts.
        let mut r = TaskRecord::new(TaskId(8), r.spec.clone(), 0);
        for a in 0..(MAX_ATTEMPT_HISTORY as u64 + 3) {
            r = apply(Some(&r), &claim(a, "n", a), &none).unwrap().unwrap();
            r = apply(
                Some(&r),
                &finish(a + 1, 1, a, Some(&"r".repeat(MAX_REASON_BYTES * 2))),
                &none,
            )
            .unwrap()
            .unwrap();
        }
        assert_eq!(r.attempts.len(), MAX_ATTEMPT_HISTORY);
        assert_eq!(
            r.attempts.last().unwrap().attempt,
            MAX_ATTEMPT_HISTORY as u64 + 3
        );
        assert_eq!(r.reason.as_ref().unwrap().len(), MAX_REASON_BYTES);
    }

    #[test]
    fn spec_limits_are_enforced() {
        assert_eq!(TaskSpec::default().validate(), Err(SpecError::EmptyCommand));
        let mut s = TaskSpec::mock(1, 0);
        assert_eq!(s.validate(), Ok(()));
        s.slots = 0;
        assert_eq!(s.validate(), Err(SpecError::Slots(0)));
        s.slots = 1;
        s.args = vec!["a".repeat(MAX_FIELD_BYTES + 1)];
        assert_eq!(s.validate(), Err(SpecError::TooLong { field: "args" }));
        s.args = vec!["a".into(); MAX_LIST_ITEMS + 1];
        assert_eq!(s.validate(), Err(SpecError::TooMany { field: "args" }));
        s.args = vec!["a\0b".into()];
        assert_eq!(s.validate(), Err(SpecError::Nul { field: "args" }));
        s.args.clear();
        s.env.insert("A=B".into(), "1".into());
        assert_eq!(s.validate(), Err(SpecError::EnvKey("A=B".into())));
        s.env.clear();
        s.timeout_ms = Some(u64::MAX);
        let late = s.validate().unwrap_err();
        assert_eq!(
            (late.field(), late.limit()),
            ("timeout", Some(MAX_TIMEOUT_MS))
        );
        s.timeout_ms = None;
        s.driver = Driver::Mock {
            duration_ms: MAX_MOCK_DURATION_MS + 1,
            exit_code: 0,
        };
        assert_eq!(s.validate().unwrap_err().field(), "duration");
    }

    #[test]
    fn a_docker_spec_needs_a_valid_image_but_no_command() {
        use container::{ContainerSpec, Mount};
        let mut s = TaskSpec {
            slots: 1,
            driver: Driver::Docker(ContainerSpec::new("busybox")),
            ..TaskSpec::default()
        };
        assert_eq!(s.validate(), Ok(()), "the image's own command");
        s.driver = Driver::Docker(ContainerSpec::new("-v"));
        assert_eq!(s.validate().unwrap_err().field(), "image");
        let mut c = ContainerSpec::new("busybox");
        c.mounts.push(Mount {
            source: "relative".into(),
            target: "/in".into(),
            read_only: true,
        });
        s.driver = Driver::Docker(c);
        assert_eq!(s.validate().unwrap_err().field(), "mounts");
        s.driver = Driver::Docker(ContainerSpec::new("busybox"));
        s.env.insert("A".into(), "two\nlines".into());
        assert_eq!(s.validate().unwrap_err().field(), "env");
        s.driver = Driver::Command;
        s.command = "sh".into();
        assert_eq!(s.validate(), Ok(()), "a command's env may hold newlines");
    }

    #[test]
    fn records_stored_before_the_docker_driver_decode_unchanged() {
        // The variant index is the stored form: Docker must stay last.
        let mock = Driver::Mock {
            duration_ms: 5,
            exit_code: 3,
        };
        assert_eq!(crate::wire::encode(&Driver::Command), vec![0]);
        assert_eq!(crate::wire::encode(&mock)[0], 1);
        let docker = Driver::Docker(container::ContainerSpec::new("busybox"));
        assert_eq!(crate::wire::encode(&docker)[0], 2);
        let back: Driver = crate::wire::decode(&crate::wire::encode(&docker), 1 << 16).unwrap();
        assert_eq!((back.name(), mock.name()), ("docker", "mock"));
    }
}
