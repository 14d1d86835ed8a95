//! Tasks on the mesh: the agent hosts the protocol's [`Coordinator`]
//! (shard groups, registers, leases, claims) and carries out its effects
//! with the [`Store`](crate::store::Store) and the
//! [`Executor`](crate::exec::Executor). The host decides nothing: every
//! protocol decision is the coordinator's.
//!
//! The API talks to the host through a [`TasksHandle`].
//!
//! [`Coordinator`]: shoal_protocol::coordinator::Coordinator

pub mod checkpoint;
pub mod checkpoint_flow;
pub mod host;
pub mod mesh;
pub mod metrics;
pub mod preflight;
pub mod view;

use crate::exec::LogStream;
use shoal_protocol::federation::records::{RecordEdit, RecordSet};
use shoal_protocol::tasks::checkpoint::CheckpointMeta;
use shoal_protocol::tasks::fit::Unfit;
use shoal_protocol::tasks::{TaskId, TaskRecord, TaskSpec};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};

/// How long an API request waits for the host and the mesh.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a task request failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum TaskError {
    /// The request is wrong (400).
    #[error("{0}")]
    Invalid(String),
    /// No such task (404).
    #[error("no task {0}")]
    NotFound(String),
    /// The task is final and cannot change (409).
    #[error("{0}")]
    Conflict(String),
    /// The mesh could not answer now (503): no majority, no configuration
    /// yet, the holder is unreachable, or the host is overloaded.
    #[error("{0}")]
    Unavailable(String),
    /// No current member could ever run the task (400, naming the field).
    #[error("{0}; submit with force to accept it for members that will join")]
    Unplaceable(Unfit),
}

/// A task record with what the answering node sees of its wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRead {
    /// The record.
    pub record: TaskRecord,
    /// Why it is pending, if something holds it back.
    pub waiting: Option<String>,
}

/// Which piece of a task's log to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogQuery {
    /// Which stream.
    pub stream: LogStream,
    /// From this offset.
    pub offset: u64,
    /// Which attempt; `None` for the latest.
    pub attempt: Option<u64>,
}

/// A piece of a task's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPiece {
    /// The attempt it belongs to (0 if the task never ran).
    pub attempt: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// The attempt has ended and the task is final: no more bytes will come.
    pub finished: bool,
}

/// A request from the API to the host.
#[derive(Debug)]
pub enum Request {
    /// Submit; answered once a majority persisted the record.
    Submit {
        /// What to run.
        spec: Box<TaskSpec>,
        /// Accept it although no current member could run it.
        force: bool,
        /// The answer.
        reply: oneshot::Sender<Result<TaskId, TaskError>>,
    },
    /// Read a record linearizably.
    Get(TaskId, oneshot::Sender<Result<TaskRead, TaskError>>),
    /// Records this node's acceptors hold, filtered by state name.
    List {
        /// Only this state (`pending`, `running`, ...).
        state: Option<String>,
        /// At most this many.
        limit: usize,
        /// The answer: the newest `limit` by submit time, oldest first.
        reply: oneshot::Sender<Vec<TaskRead>>,
    },
    /// Start (`true`) or cancel (`false`) draining: no new attempts here.
    Drain(bool, oneshot::Sender<Result<(), TaskError>>),
    /// Save a checkpoint of an attempt running here.
    SaveCheckpoint {
        /// The task.
        task: TaskId,
        /// The saving attempt.
        attempt: u64,
        /// What it saves.
        bytes: Vec<u8>,
        /// The checkpoint the record names now.
        reply: checkpoint_flow::SaveReply,
    },
    /// Cancel a non-final task.
    Cancel(TaskId, oneshot::Sender<Result<(), TaskError>>),
    /// Read a record set (`register` one of
    /// `shoal_protocol::federation::records`'s) linearizably, or edit it.
    Records {
        /// The register holding the set.
        register: u64,
        /// `None` reads; an edit is applied in one round.
        edit: Option<RecordEdit>,
        /// The set after the operation.
        reply: oneshot::Sender<Result<RecordSet, TaskError>>,
    },
    /// Read a task's log from the node that ran the attempt.
    Logs {
        /// The task.
        task: TaskId,
        /// Which piece.
        query: LogQuery,
        /// The answer.
        reply: oneshot::Sender<Result<LogPiece, TaskError>>,
    },
}

/// The API's side of the host.
#[derive(Clone, Debug)]
pub struct TasksHandle {
    tx: mpsc::Sender<Request>,
}

impl TasksHandle {
    /// A handle sending to `tx` (the host's receiver).
    pub fn new(tx: mpsc::Sender<Request>) -> Self {
        TasksHandle { tx }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, TaskError>>) -> Request,
    ) -> Result<T, TaskError> {
        let (tx, rx) = oneshot::channel();
        let busy = || TaskError::Unavailable("the task host is not running".into());
        self.tx.try_send(make(tx)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                TaskError::Unavailable("too many requests in flight; retry".into())
            }
            mpsc::error::TrySendError::Closed(_) => busy(),
        })?;
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(busy()),
            Err(_) => Err(TaskError::Unavailable(
                "no answer from the shard group in time".into(),
            )),
        }
    }

    /// Starts or cancels draining this node.
    pub async fn drain(&self, draining: bool) -> Result<(), TaskError> {
        self.ask(|tx| Request::Drain(draining, tx)).await
    }

    /// Saves a checkpoint for attempt `attempt` of `task`, which must run
    /// on this node; answered once the record names it.
    pub async fn save_checkpoint(
        &self,
        task: TaskId,
        attempt: u64,
        bytes: Vec<u8>,
    ) -> Result<CheckpointMeta, TaskError> {
        self.ask(|reply| Request::SaveCheckpoint {
            task,
            attempt,
            bytes,
            reply,
        })
        .await
    }

    /// Submits a task; its id once a majority persisted it.
    /// Unless `force`, a task that no current member could ever run is
    /// refused with [`TaskError::Unplaceable`].
    pub async fn submit(&self, spec: TaskSpec, force: bool) -> Result<TaskId, TaskError> {
        self.ask(|reply| Request::Submit {
            spec: Box::new(spec),
            force,
            reply,
        })
        .await
    }

    /// The task's record.
    pub async fn get(&self, task: TaskId) -> Result<TaskRead, TaskError> {
        self.ask(|tx| Request::Get(task, tx)).await
    }

    /// Cancels the task.
    pub async fn cancel(&self, task: TaskId) -> Result<(), TaskError> {
        self.ask(|tx| Request::Cancel(task, tx)).await
    }

    /// Reads a piece of the task's log.
    pub async fn logs(&self, task: TaskId, query: LogQuery) -> Result<LogPiece, TaskError> {
        self.ask(|reply| Request::Logs { task, query, reply }).await
    }

    /// The record set in `register`, read linearizably.
    pub async fn read_records(&self, register: u64) -> Result<RecordSet, TaskError> {
        self.ask(|reply| Request::Records {
            register,
            edit: None,
            reply,
        })
        .await
    }

    /// Applies `edit` to the record set in `register`; the set after it.
    pub async fn edit_records(
        &self,
        register: u64,
        edit: RecordEdit,
    ) -> Result<RecordSet, TaskError> {
        self.ask(|reply| Request::Records {
            register,
            edit: Some(edit),
            reply,
        })
        .await
    }

    /// Records this node knows, by state.
    pub async fn list(
        &self,
        state: Option<String>,
        limit: usize,
    ) -> Result<Vec<TaskRead>, TaskError> {
        self.ask(|tx| {
            let (reply, rx) = oneshot::channel();
            tokio::spawn(async move {
                if let Ok(list) = rx.await {
                    let _ = tx.send(Ok(list));
                }
            });
            Request::List {
                state,
                limit,
                reply,
            }
        })
        .await
    }
}

/// A task id as users write it: 16 hex digits.
pub fn parse_task_id(s: &str) -> Result<TaskId, TaskError> {
    if s.is_empty() || s.len() > 16 {
        return Err(TaskError::Invalid(format!(
            "task id {s:?}: want up to 16 hex digits"
        )));
    }
    u64::from_str_radix(s, 16)
        .map(TaskId)
        .map_err(|_| TaskError::Invalid(format!("task id {s:?}: want up to 16 hex digits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip_through_their_text_form() {
        let id = TaskId(0x00ab_cdef_0123_4567);
        assert_eq!(parse_task_id(&id.to_string()), Ok(id));
        assert!(parse_task_id("xyz").is_err());
        assert!(parse_task_id("").is_err());
        assert!(parse_task_id("00000000000000000").is_err());
    }
}
