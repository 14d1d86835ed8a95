//! Reading an attempt's captured stdout/stderr, in chunks, for the logs
//! API and `shoal logs --follow` (which polls until `finished` and drained).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::status::{attempt_dir, read_status, AttemptState};
use super::types::{io_err, validate_task_id, ExecError};

/// Largest chunk one read returns.
pub const LOG_CHUNK_MAX_BYTES: usize = 1 << 20;

/// Which captured stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

impl LogStream {
    fn file_name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// A piece of a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogChunk {
    /// Bytes from the requested offset (at most the requested length).
    pub data: Vec<u8>,
    /// Offset to ask for next.
    pub next_offset: u64,
    /// The attempt has ended: once a read returns no data, the log is
    /// complete.
    pub finished: bool,
}

/// Reads up to `max_bytes` (capped at [`LOG_CHUNK_MAX_BYTES`]) of an
/// attempt's stream from `offset`.
pub fn read_log(
    data_dir: &Path,
    task_id: &str,
    attempt: u64,
    stream: LogStream,
    offset: u64,
    max_bytes: usize,
) -> Result<LogChunk, ExecError> {
    validate_task_id(task_id)?;
    let dir = attempt_dir(data_dir, task_id, attempt);
    // Read the state first: data written before "finished" is then
    // certainly visible to the read below.
    let finished = match read_status(&dir) {
        Ok(status) => matches!(status.state, AttemptState::Finished { .. }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExecError::NoSuchAttempt {
                task_id: task_id.to_string(),
                attempt,
            })
        }
        Err(e) => {
            return Err(io_err(format!("cannot read status in {}", dir.display()))(
                e,
            ))
        }
    };
    let path = dir.join(stream.file_name());
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        // Not created yet (attempt starting) or never (spawn failed).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogChunk {
                data: Vec::new(),
                next_offset: offset,
                finished,
            })
        }
        Err(e) => return Err(io_err(format!("cannot open {}", path.display()))(e)),
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err(format!("cannot seek {}", path.display())))?;
    let limit = max_bytes.min(LOG_CHUNK_MAX_BYTES) as u64;
    let mut data = Vec::new();
    file.take(limit)
        .read_to_end(&mut data)
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    Ok(LogChunk {
        next_offset: offset + data.len() as u64,
        data,
        finished,
    })
}
