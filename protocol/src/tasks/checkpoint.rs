//! Checkpoints: small state an attempt saves so that the next attempt of
//! its task resumes from it (docs/protocol.md §6, "Checkpoints").
//!
//! The bytes do not live in the task's register: a shard's registers travel
//! in one message when the shard is reconfigured, and a 16 MiB value would
//! not fit. They are stored beside the register, in chunks, by the members
//! of the task's shard group, and the record holds only a
//! [`CheckpointMeta`] naming them. Two rules make that safe:
//!
//! 1. the meta is written only after a majority of the holders made every
//!    chunk durable ([`SaveTally`]), so a record never names bytes that one
//!    lost node takes with it;
//! 2. the meta is written by [`super::Mutation::Checkpoint`], which the
//!    record refuses unless the saving attempt is the current one and runs
//!    on the saving node, so a fenced attempt's late save never becomes the
//!    checkpoint the next attempt reads.
//!
//! A generation is random per save: chunks of two saves never mix, and a
//! reader that finds a holder with another generation asks the next one.

use crate::NodeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use thiserror::Error;

/// Largest checkpoint one attempt may save.
pub const MAX_CHECKPOINT_BYTES: u64 = 16 * 1024 * 1024;
/// Bytes per stored and transferred chunk: well under a stream message.
pub const CHECKPOINT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Most holders a meta may name (a shard group is far smaller).
pub const MAX_HOLDERS: usize = 16;

/// The latest checkpoint of a task, as its record names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointMeta {
    /// The attempt that saved it.
    pub attempt: u64,
    /// Random per save: names its chunks.
    pub generation: u64,
    /// Its length in bytes.
    pub size: u64,
    /// SHA-256 of the bytes, checked by the reader.
    pub digest: [u8; 32],
    /// When it was saved (Unix ms, the saving node's clock).
    pub saved_at_ms: u64,
    /// The nodes that store its chunks (the shard group at save time).
    pub holders: Vec<NodeId>,
}

/// Why a checkpoint was refused before anything was stored.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    /// Larger than [`MAX_CHECKPOINT_BYTES`].
    #[error("checkpoint of {size} bytes is larger than the limit of {MAX_CHECKPOINT_BYTES} bytes")]
    TooLarge {
        /// Its size.
        size: u64,
    },
    /// No holder, or more than [`MAX_HOLDERS`].
    #[error("a checkpoint needs 1..={MAX_HOLDERS} holders, got {0}")]
    Holders(usize),
}

impl CheckpointMeta {
    /// Checks the limits a record enforces.
    pub fn validate(&self) -> Result<(), CheckpointError> {
        if self.size > MAX_CHECKPOINT_BYTES {
            return Err(CheckpointError::TooLarge { size: self.size });
        }
        if self.holders.is_empty() || self.holders.len() > MAX_HOLDERS {
            return Err(CheckpointError::Holders(self.holders.len()));
        }
        Ok(())
    }

    /// How many chunks its bytes take.
    pub fn chunks(&self) -> u32 {
        chunk_count(self.size)
    }
}

/// How many chunks `size` bytes take (none for an empty checkpoint).
pub fn chunk_count(size: u64) -> u32 {
    u32::try_from(size.div_ceil(CHECKPOINT_CHUNK_BYTES)).unwrap_or(u32::MAX)
}

/// The byte range of chunk `index` of a checkpoint of `size` bytes.
pub fn chunk_range(index: u32, size: u64) -> std::ops::Range<usize> {
    let start = (u64::from(index) * CHECKPOINT_CHUNK_BYTES).min(size);
    let end = (start + CHECKPOINT_CHUNK_BYTES).min(size);
    // Sizes are bounded by MAX_CHECKPOINT_BYTES, far below usize::MAX.
    start as usize..end as usize
}

/// SHA-256 of a checkpoint's bytes.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Where a save stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveVerdict {
    /// A majority of the holders stores every chunk: write the meta.
    Durable,
    /// Not yet.
    Waiting,
    /// Too many holders failed for a majority ever to store it.
    Lost,
}

/// Counts which holders made which chunks durable.
#[derive(Debug, Clone)]
pub struct SaveTally {
    holders: Vec<NodeId>,
    chunks: u32,
    stored: BTreeMap<NodeId, BTreeSet<u32>>,
    failed: BTreeSet<NodeId>,
}

impl SaveTally {
    /// A save of `chunks` chunks to `holders`.
    pub fn new(holders: Vec<NodeId>, chunks: u32) -> Self {
        SaveTally {
            holders,
            chunks,
            stored: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// `holder` made chunk `index` durable. Anyone else, or a chunk out of
    /// range, is ignored.
    pub fn stored(&mut self, holder: NodeId, index: u32) {
        if self.holders.contains(&holder) && index < self.chunks {
            self.stored.entry(holder).or_default().insert(index);
        }
    }

    /// `holder` could not store a chunk (full disk, refused, unreachable).
    pub fn failed(&mut self, holder: NodeId) {
        if self.holders.contains(&holder) {
            self.failed.insert(holder);
        }
    }

    fn majority(&self) -> usize {
        self.holders.len() / 2 + 1
    }

    /// Holders that store every chunk.
    pub fn complete(&self) -> usize {
        self.holders
            .iter()
            .filter(|h| !self.failed.contains(h))
            .filter(|h| {
                self.chunks == 0
                    || self
                        .stored
                        .get(h)
                        .is_some_and(|s| s.len() as u32 == self.chunks)
            })
            .count()
    }

    /// Whether the meta may be written now.
    pub fn verdict(&self) -> SaveVerdict {
        if self.complete() >= self.majority() {
            SaveVerdict::Durable
        } else if self.holders.len() - self.failed.len() < self.majority() {
            SaveVerdict::Lost
        } else {
            SaveVerdict::Waiting
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u64) -> Vec<NodeId> {
        (1..=n).map(NodeId::from_u64).collect()
    }

    #[test]
    fn chunks_cover_the_bytes_exactly() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        assert_eq!(chunk_count(CHECKPOINT_CHUNK_BYTES), 1);
        assert_eq!(chunk_count(CHECKPOINT_CHUNK_BYTES + 1), 2);
        assert_eq!(chunk_count(MAX_CHECKPOINT_BYTES), 16);
        let size = 2 * CHECKPOINT_CHUNK_BYTES + 5;
        let covered: usize = (0..chunk_count(size))
            .map(|i| chunk_range(i, size).len())
            .sum();
        assert_eq!(covered as u64, size);
        assert_eq!(chunk_range(2, size), (2 << 20)..(2 << 20) + 5);
    }

    #[test]
    fn a_save_is_durable_only_once_a_majority_holds_every_chunk() {
        let h = nodes(3);
        let mut t = SaveTally::new(h.clone(), 2);
        t.stored(h[0], 0);
        t.stored(h[0], 1);
        t.stored(h[1], 0);
        assert_eq!(
            t.verdict(),
            SaveVerdict::Waiting,
            "one holder complete of three"
        );
        t.stored(NodeId::from_u64(99), 0);
        t.stored(NodeId::from_u64(99), 1);
        t.stored(h[1], 7);
        assert_eq!(
            t.verdict(),
            SaveVerdict::Waiting,
            "strangers and bad indexes count for nothing"
        );
        t.stored(h[1], 1);
        assert_eq!(t.verdict(), SaveVerdict::Durable);
    }

    #[test]
    fn a_save_is_lost_once_no_majority_is_left() {
        let h = nodes(3);
        let mut t = SaveTally::new(h.clone(), 1);
        t.stored(h[0], 0);
        t.failed(h[1]);
        assert_eq!(t.verdict(), SaveVerdict::Waiting);
        t.failed(h[2]);
        assert_eq!(t.verdict(), SaveVerdict::Lost);
        // A holder that stored a chunk and then failed another is not complete.
        let mut t = SaveTally::new(h.clone(), 1);
        t.stored(h[0], 0);
        t.stored(h[1], 0);
        t.failed(h[1]);
        assert_eq!(t.complete(), 1);
    }

    #[test]
    fn an_empty_checkpoint_needs_only_the_meta() {
        let t = SaveTally::new(nodes(3), 0);
        assert_eq!(t.verdict(), SaveVerdict::Durable);
    }

    #[test]
    fn limits_are_checked() {
        let mut m = CheckpointMeta {
            attempt: 1,
            generation: 7,
            size: MAX_CHECKPOINT_BYTES,
            digest: digest(b""),
            saved_at_ms: 0,
            holders: nodes(3),
        };
        assert_eq!(m.validate(), Ok(()));
        m.size += 1;
        assert!(matches!(
            m.validate(),
            Err(CheckpointError::TooLarge { .. })
        ));
        m.size = 0;
        m.holders.clear();
        assert_eq!(m.validate(), Err(CheckpointError::Holders(0)));
    }
}
