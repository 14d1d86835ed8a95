//! Runs task attempts. A command attempt runs under its own supervisor
//! process (`shoal __supervise`, see [`supervisor`]) which enforces the
//! lease deadline even when the agent is frozen or dead; a mock attempt
//! completes inside the agent. The agent talks to both through
//! [`Executor`].

pub mod clock;
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
    TASK_ID_LEN_MAX,
};
