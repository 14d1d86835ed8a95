//! Runs task attempts. A command attempt runs under its own supervisor
//! process (`shoal __supervise`, see [`supervisor`]) which enforces the
//! lease deadline even when the agent is frozen or dead; a mock attempt
//! completes inside the agent. The agent talks to both through
//! [`Executor`].
//!
//! How the agent uses it:
//!
//! ```text
//! let (exec, mut exits) = Executor::new(ExecutorConfig::new(data_dir, slots, node, party)?);
//! for old in exec.recover()? { report(old); exec.mark_reported(&old.task_id, old.attempt)?; }
//! exec.start(spec, lease_remaining)?;          // after the claim CAS won
//! exec.extend(&task, attempt, lease_remaining)?; // after every renewal
//! exec.kill(&task, attempt, KillReason::Fenced)?; // renewal failed / cancel
//! while let Some(AttemptExit { task_id, attempt, outcome }) = exits.recv().await {
//!     // CAS the record to its final state iff `attempt` is current and
//!     // !outcome.is_fenced(); then exec.mark_reported(..).
//! }
//! ```
//!
//! `lease_remaining` must be the holder's drift-corrected remaining lease:
//! the supervisor kills the group exactly then, by CLOCK_BOOTTIME, whatever
//! the agent is doing. Attempt files live in `DATA/attempts/<task>/<n>/`
//! (`stdout`, `stderr`, `status.json`, `supervisor.log`), read with
//! [`read_log`].

pub mod cgroup;
pub mod clock;
pub mod docker;
mod executor;
pub mod logs;
mod procs;
pub mod recover;
pub mod status;
pub mod supervisor;
mod types;
pub mod wire;

pub use executor::{AttemptHandle, Executor, ExecutorConfig};
pub use logs::{read_log, LogChunk, LogStream, LOG_CHUNK_MAX_BYTES};
pub use recover::{recover, RecoveredAttempt};
pub use types::{
    validate_task_id, AttemptExit, AttemptOutcome, AttemptSpec, Driver, ExecError, KillReason,
    Limits, TASK_ID_LEN_MAX,
};
