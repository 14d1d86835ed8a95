//! Persists the membership machine's book of member stores, so a node that
//! restarts still refuses a peer that came back on a wiped disk under its
//! old certificate (protocol/src/membership/stores.rs decides; this file
//! only remembers).

use shoal_protocol::{NodeId, StoreId};
use std::path::{Path, PathBuf};

/// File in the data directory: one `NODE_ID STORE_ID` pair (hex) per line.
pub const MEMBER_STORES_FILE: &str = "member-stores";

/// The book's file in one data directory.
#[derive(Debug, Clone)]
pub struct MemberStoresFile {
    path: PathBuf,
}

impl MemberStoresFile {
    /// The file in `data_dir`.
    pub fn new(data_dir: &Path) -> MemberStoresFile {
        MemberStoresFile {
            path: data_dir.join(MEMBER_STORES_FILE),
        }
    }

    /// Every pair the file holds. A missing file is an empty book; a line
    /// that does not parse is skipped with a warning (the book only ever
    /// refuses, so losing a line loses one refusal, never a member).
    pub fn load(&self) -> Vec<(NodeId, StoreId)> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the member stores");
                return Vec::new();
            }
        };
        let mut pairs = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let mut words = line.split_whitespace();
            let pair = match (words.next(), words.next(), words.next()) {
                (Some(id), Some(store), None) => NodeId::from_hex(id).zip(StoreId::from_hex(store)),
                _ => None,
            };
            match pair {
                Some(pair) => pairs.push(pair),
                None if line.trim().is_empty() => {}
                None => tracing::warn!(
                    path = %self.path.display(), line = number + 1,
                    "skipping a malformed line of the member stores"
                ),
            }
        }
        pairs
    }

    /// Replaces the file with `pairs` (a crash leaves the old book or the
    /// new one).
    pub fn save(&self, pairs: impl Iterator<Item = (NodeId, StoreId)>) -> std::io::Result<()> {
        let mut text = String::new();
        for (id, store) in pairs {
            text.push_str(&id.to_hex());
            text.push(' ');
            text.push_str(&store.to_hex());
            text.push('\n');
        }
        super::replace_file(&self.path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_round_trips_and_a_bad_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let file = MemberStoresFile::new(dir.path());
        assert!(file.load().is_empty());
        let pairs = vec![
            (NodeId::from_u64(1), StoreId::from_u64(10)),
            (NodeId::from_u64(2), StoreId::from_u64(20)),
        ];
        file.save(pairs.clone().into_iter()).unwrap();
        assert_eq!(file.load(), pairs);
        let path = dir.path().join(MEMBER_STORES_FILE);
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("garbage line\n");
        std::fs::write(&path, text).unwrap();
        assert_eq!(file.load(), pairs);
    }
}
