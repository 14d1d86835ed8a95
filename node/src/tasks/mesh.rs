//! Task-channel messages between agents: a log read served by the node
//! that ran an attempt, and checkpoint chunks stored on and read from the
//! members of a task's shard group. Request and answer are matched by `req`.

use crate::exec::LogStream;
use serde::{Deserialize, Serialize};
use shoal_protocol::tasks::TaskId;

/// Largest log chunk one answer carries (well under a stream frame).
pub const REMOTE_LOG_CHUNK_BYTES: usize = 256 * 1024;

/// One payload of the Task channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskMessage {
    /// Read part of an attempt's captured output.
    LogRequest {
        /// Echoed in the answer.
        req: u64,
        /// Task id (hex).
        task: String,
        /// Attempt number.
        attempt: u64,
        /// Which stream.
        stream: LogStream,
        /// Byte offset.
        offset: u64,
    },
    /// The answer to a [`TaskMessage::LogRequest`].
    LogReply {
        /// The request's `req`.
        req: u64,
        /// The chunk, or why not.
        result: Result<RemoteChunk, String>,
    },
    /// Store one chunk of a checkpoint durably.
    CheckpointPut {
        /// Echoed in the answer.
        req: u64,
        /// The task.
        task: TaskId,
        /// The save's generation.
        generation: u64,
        /// The chunk's index.
        index: u32,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// The answer to a [`TaskMessage::CheckpointPut`].
    CheckpointStored {
        /// The request's `req`.
        req: u64,
        /// The chunk's index.
        index: u32,
        /// Durable, or why not.
        result: Result<(), String>,
    },
    /// Read one chunk of a checkpoint.
    CheckpointGet {
        /// Echoed in the answer.
        req: u64,
        /// The task.
        task: TaskId,
        /// The checkpoint's generation.
        generation: u64,
        /// The chunk's index.
        index: u32,
    },
    /// The answer to a [`TaskMessage::CheckpointGet`].
    CheckpointChunk {
        /// The request's `req`.
        req: u64,
        /// The chunk's index.
        index: u32,
        /// Its bytes, or why not.
        result: Result<Vec<u8>, String>,
    },
    /// Remove a generation nobody will read: superseded by a newer save, or
    /// a save the record refused.
    CheckpointDiscard {
        /// The task.
        task: TaskId,
        /// The generation.
        generation: u64,
    },
}

/// A piece of a log, as sent over the mesh.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteChunk {
    /// The bytes read.
    pub data: Vec<u8>,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// The attempt has ended.
    pub finished: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::wire;

    #[test]
    fn log_messages_round_trip_and_garbage_is_refused() {
        let m = TaskMessage::LogReply {
            req: 7,
            result: Ok(RemoteChunk {
                data: b"hello".to_vec(),
                next_offset: 5,
                finished: true,
            }),
        };
        let bytes = wire::encode(&m);
        let back: TaskMessage = wire::decode(&bytes, wire::MAX_STREAM_MESSAGE_BYTES).unwrap();
        assert_eq!(back, m);
        assert!(wire::decode::<TaskMessage>(&[0xff, 0xff, 0xff], 1024).is_err());
    }
}
