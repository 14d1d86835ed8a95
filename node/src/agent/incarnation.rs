//! The last incarnation this node used, kept in its data directory so that a
//! restarted node starts above it and its old self's gossip cannot win.

use std::path::{Path, PathBuf};

const FILE_NAME: &str = "incarnation";

/// The incarnation file of a data directory.
#[derive(Debug, Clone)]
pub struct IncarnationFile {
    path: PathBuf,
}

impl IncarnationFile {
    /// The file in `data_dir`.
    pub fn new(data_dir: &Path) -> IncarnationFile {
        IncarnationFile {
            path: data_dir.join(FILE_NAME),
        }
    }

    /// The last stored incarnation, 0 when none (or unreadable: the
    /// protocol refutes its way up from a low incarnation anyway).
    pub fn load(&self) -> u64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stores `incarnation` atomically (write then rename).
    pub fn store(&self, incarnation: u64) -> std::io::Result<()> {
        super::replace_file(&self.path, format!("{incarnation}\n").as_bytes())
    }

    /// Reads the last incarnation, stores and returns the next one.
    pub fn next(&self) -> std::io::Result<u64> {
        let next = self.load().saturating_add(1);
        self.store(next)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_start_gets_a_higher_incarnation() {
        let dir = tempfile::tempdir().unwrap();
        let file = IncarnationFile::new(dir.path());
        assert_eq!(file.next().unwrap(), 1);
        assert_eq!(file.next().unwrap(), 2);
        file.store(41).unwrap();
        assert_eq!(file.next().unwrap(), 42);
        std::fs::write(dir.path().join(FILE_NAME), "garbage").unwrap();
        assert_eq!(file.next().unwrap(), 1);
    }
}
