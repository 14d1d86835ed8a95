//! Where a node keeps checkpoint chunks it holds for its shard groups, and
//! where it puts the checkpoint an attempt resumes from.
//!
//! `DATA/checkpoints/<task>/<generation>/<index>` holds one chunk; a chunk
//! is written to a temporary name, synced and renamed, so that a chunk the
//! node acknowledged is whole after a crash. `DATA/checkpoints/restore/`
//! holds the assembled file of each attempt that resumes
//! (`$SHOAL_CHECKPOINT`), removed when the attempt ends. The protocol's
//! rules (what may be saved, when it counts) are in
//! [`shoal_protocol::tasks::checkpoint`].

use shoal_protocol::tasks::checkpoint::{
    chunk_count, CHECKPOINT_CHUNK_BYTES, MAX_CHECKPOINT_BYTES,
};
use shoal_protocol::tasks::TaskId;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a chunk could not be stored or read.
#[derive(Debug, Error)]
pub enum ChunkError {
    /// The chunk breaks a limit (a peer's bug, or a hostile peer).
    #[error("chunk {index} of {len} bytes is out of bounds")]
    OutOfBounds {
        /// Its index.
        index: u32,
        /// Its length.
        len: usize,
    },
    /// This node does not hold the chunk.
    #[error("chunk {index} of generation {generation:016x} is not held here")]
    Missing {
        /// The generation.
        generation: u64,
        /// The index.
        index: u32,
    },
    /// The disk refused.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ChunkError + '_ {
    move |source| ChunkError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The checkpoint directory of one agent.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    root: PathBuf,
}

impl CheckpointDir {
    /// `DATA/checkpoints`.
    pub fn new(data_dir: &Path) -> Self {
        CheckpointDir {
            root: data_dir.join("checkpoints"),
        }
    }

    fn generation_dir(&self, task: TaskId, generation: u64) -> PathBuf {
        self.root
            .join(task.to_string())
            .join(format!("{generation:016x}"))
    }

    /// Stores chunk `index` of `generation` durably.
    pub fn put(
        &self,
        task: TaskId,
        generation: u64,
        index: u32,
        bytes: &[u8],
    ) -> Result<(), ChunkError> {
        if index >= chunk_count(MAX_CHECKPOINT_BYTES) || bytes.len() as u64 > CHECKPOINT_CHUNK_BYTES
        {
            return Err(ChunkError::OutOfBounds {
                index,
                len: bytes.len(),
            });
        }
        let dir = self.generation_dir(task, generation);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(index.to_string());
        let tmp = dir.join(format!("{index}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io(&dir))
    }

    /// Reads chunk `index` of `generation`.
    pub fn get(&self, task: TaskId, generation: u64, index: u32) -> Result<Vec<u8>, ChunkError> {
        let path = self
            .generation_dir(task, generation)
            .join(index.to_string());
        match std::fs::read(&path) {
            Ok(b) => Ok(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ChunkError::Missing { generation, index })
            }
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Removes `generation` of `task` (a superseded or refused save).
    pub fn discard(&self, task: TaskId, generation: u64) {
        let dir = self.generation_dir(task, generation);
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a checkpoint");
            }
        }
        // The task's directory goes with its last generation.
        let _ = std::fs::remove_dir(self.root.join(task.to_string()));
    }

    /// Where attempt `attempt` of `task` finds the checkpoint it resumes from.
    pub fn restore_path(&self, task: TaskId, attempt: u64) -> PathBuf {
        self.root.join("restore").join(format!("{task}.{attempt}"))
    }

    /// Writes the assembled checkpoint for an attempt; gives its path.
    pub fn write_restore(
        &self,
        task: TaskId,
        attempt: u64,
        bytes: &[u8],
    ) -> Result<PathBuf, ChunkError> {
        let path = self.restore_path(task, attempt);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
        Ok(path)
    }

    /// Removes an ended attempt's restored file.
    pub fn remove_restore(&self, task: TaskId, attempt: u64) {
        let _ = std::fs::remove_file(self.restore_path(task, attempt));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_and_a_discarded_generation_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path());
        let task = TaskId(0xab);
        dir.put(task, 7, 0, b"hello").unwrap();
        dir.put(task, 7, 1, b"").unwrap();
        dir.put(task, 8, 0, b"other").unwrap();
        assert_eq!(dir.get(task, 7, 0).unwrap(), b"hello");
        assert_eq!(dir.get(task, 7, 1).unwrap(), b"");
        dir.discard(task, 7);
        assert!(matches!(
            dir.get(task, 7, 0),
            Err(ChunkError::Missing {
                generation: 7,
                index: 0
            })
        ));
        assert_eq!(dir.get(task, 8, 0).unwrap(), b"other");
    }

    #[test]
    fn a_chunk_out_of_bounds_is_refused_before_it_reaches_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::new(tmp.path());
        let big = vec![0u8; CHECKPOINT_CHUNK_BYTES as usize + 1];
        assert!(matches!(
            dir.put(TaskId(1), 1, 0, &big),
            Err(ChunkError::OutOfBounds { .. })
        ));
        assert!(matches!(
            dir.put(TaskId(1), 1, 16, b"x"),
            Err(ChunkError::OutOfBounds { index: 16, .. })
        ));
        assert!(!tmp
            .path()
            .join("checkpoints")
            .join(TaskId(1).to_string())
            .exists());
    }
}
