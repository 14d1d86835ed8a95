//! Typed store errors. Every variant names the path or cause so the agent
//! can print one clear line and exit non-zero.

use std::path::PathBuf;
use std::sync::Arc;

/// Why a store operation failed. `Clone` because one failed group commit
/// answers every batch that shared its transaction.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created, read or written (missing
    /// permission, read-only file system, a file in the way).
    #[error("data directory {path} is unusable: {source}")]
    DataDirUnusable {
        /// The data directory.
        path: PathBuf,
        /// The operating system's reason.
        source: Arc<std::io::Error>,
    },
    /// The disk (or quota) holding the data directory is full. Nothing of the
    /// failed commit was acknowledged; the store must be reopened once space
    /// is freed.
    #[error("disk full under {path}: {reason}")]
    DiskFull {
        /// The store file or data directory.
        path: PathBuf,
        /// The underlying error text.
        reason: String,
    },
    /// The store file failed its integrity checks.
    #[error("store file {path} is corrupt: {reason}")]
    Corrupt {
        /// The store file.
        path: PathBuf,
        /// What redb found.
        reason: String,
    },
    /// Another process (probably another agent) has the store file open.
    #[error("store file {path} is already open by another process")]
    Locked {
        /// The store file.
        path: PathBuf,
    },
    /// A key or value exceeds [`KEY_LEN_MAX`](super::KEY_LEN_MAX) or
    /// [`VALUE_LEN_MAX`](super::VALUE_LEN_MAX); nothing was written.
    #[error("key or value too large for the store: {len} bytes")]
    TooLarge {
        /// The offending length in bytes.
        len: usize,
    },
    /// A batch holds more writes than one transaction takes; nothing was
    /// written.
    #[error("batch of {ops} writes exceeds the store's limit")]
    TooManyOps {
        /// Writes in the batch.
        ops: usize,
    },
    /// Any other storage failure (I/O error, poisoned transaction after an
    /// earlier I/O error).
    #[error("store {path} failed: {reason}")]
    Storage {
        /// The store file.
        path: PathBuf,
        /// The underlying error text.
        reason: String,
    },
    /// The store is shutting down and accepts no more writes.
    #[error("store is closed")]
    Closed,
    /// The data directory's format marker names a format this build does
    /// not read (written by a newer build). Nothing was opened or written.
    #[error(
        "data directory {data_dir} holds store format {found}, but this shoal binary reads format {}: \
         run a shoal build that reads format {found}, or start this one on another data directory",
        versions(reads)
    )]
    UnsupportedFormat {
        /// The data directory.
        data_dir: PathBuf,
        /// The format its marker names.
        found: u32,
        /// The formats this build reads, newest first.
        reads: Vec<u32>,
    },
    /// The format marker file holds something other than a format line.
    /// Nothing was opened or written.
    #[error("store format marker {path} is unreadable (found {content:?}): it must read `shoal-store-format <version>`")]
    BadFormatMarker {
        /// The marker file.
        path: PathBuf,
        /// The start of what it holds.
        content: String,
    },
}

fn versions(reads: &[u32]) -> String {
    let names: Vec<String> = reads.iter().map(u32::to_string).collect();
    names.join(", ")
}

fn is_disk_full(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(code) if code == nix::libc::ENOSPC || code == nix::libc::EDQUOT
    ) || e.kind() == std::io::ErrorKind::StorageFull
}

/// Maps an I/O error met while probing the data directory.
pub(crate) fn from_dir_io(path: PathBuf, e: std::io::Error) -> StoreError {
    if is_disk_full(&e) {
        StoreError::DiskFull {
            path,
            reason: e.to_string(),
        }
    } else {
        StoreError::DataDirUnusable {
            path,
            source: Arc::new(e),
        }
    }
}

/// Maps any redb error to the store's typed error.
pub(crate) fn from_redb(path: &std::path::Path, e: impl Into<redb::Error>) -> StoreError {
    let path = path.to_path_buf();
    match e.into() {
        redb::Error::Io(io) if is_disk_full(&io) => StoreError::DiskFull {
            path,
            reason: io.to_string(),
        },
        redb::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) || io.raw_os_error() == Some(nix::libc::EROFS) =>
        {
            StoreError::DataDirUnusable {
                path,
                source: Arc::new(io),
            }
        }
        // redb reports a foreign file (bad magic number) as InvalidData.
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Corrupt {
                path,
                reason: io.to_string(),
            }
        }
        redb::Error::Corrupted(reason) => StoreError::Corrupt { path, reason },
        redb::Error::DatabaseAlreadyOpen => StoreError::Locked { path },
        redb::Error::ValueTooLarge(len) => StoreError::TooLarge { len },
        other => StoreError::Storage {
            path,
            reason: other.to_string(),
        },
    }
}
