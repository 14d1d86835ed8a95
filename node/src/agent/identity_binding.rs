//! Binds a node certificate to the data directory that first used it.
//!
//! An acceptor that lost its disk must come back under a new NodeId: under
//! its old one it would answer for promises it no longer remembers, and two
//! such amnesiacs in one shard group can lose acknowledged tasks. The NodeId
//! comes from the certificate key, which lives outside the data directory,
//! so the agent itself refuses to pair a known certificate with a new store.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// File in the data directory naming this store.
pub const STORE_ID_FILE: &str = "store-id";
/// File in the TLS directory naming the store the certificate belongs to.
pub const BOUND_STORE_FILE: &str = "bound-store-id";

/// Why the certificate and data directory may not be used together.
#[derive(Debug, Error)]
pub enum BindingError {
    /// The certificate served a store that is gone.
    #[error(
        "the certificate in {tls_dir} belongs to the data directory with store id {bound}, \
         but {data_dir} holds store {found}: a node that lost its data must return under a new \
         identity (its acceptors forgot their promises). Issue it a new certificate with \
         `shoal ca issue` and start it with that, or restore the old data directory"
    )]
    ForeignStore {
        /// The TLS directory.
        tls_dir: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
        /// The store the certificate is bound to.
        bound: String,
        /// The store found in the data directory.
        found: String,
    },
    /// A binding file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

fn read_id(path: &Path) -> Result<Option<String>, BindingError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_string())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BindingError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_id(path: &Path, id: &str) -> Result<(), BindingError> {
    std::fs::write(path, format!("{id}\n")).map_err(|source| BindingError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks (and on first use records) that the certificate in `tls_dir` is
/// used with the store in `data_dir`. A TLS directory that cannot be written
/// (mounted read-only secrets) only loses this protection, with a warning.
pub fn check(tls_dir: &Path, data_dir: &Path) -> Result<(), BindingError> {
    let store_path = data_dir.join(STORE_ID_FILE);
    let store_id = match read_id(&store_path)? {
        Some(id) => id,
        None => {
            let id = format!("{:032x}", rand::random::<u128>());
            write_id(&store_path, &id)?;
            id
        }
    };
    let bound_path = tls_dir.join(BOUND_STORE_FILE);
    match read_id(&bound_path)? {
        Some(bound) if bound == store_id => Ok(()),
        Some(bound) => Err(BindingError::ForeignStore {
            tls_dir: tls_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            bound,
            found: store_id,
        }),
        None => {
            if let Err(e) = write_id(&bound_path, &store_id) {
                tracing::warn!(error = %e, "cannot bind the certificate to this data directory; \
                    restarting this node with an empty data directory will not be refused");
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_refused_with_a_new_store_but_accepted_with_its_own() {
        let root = tempfile::tempdir().unwrap();
        let tls = root.path().join("tls");
        let data = root.path().join("data");
        std::fs::create_dir_all(&tls).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        check(&tls, &data).expect("first use binds");
        check(&tls, &data).expect("same store again");

        std::fs::remove_dir_all(&data).unwrap();
        std::fs::create_dir_all(&data).unwrap();
        let err = check(&tls, &data).expect_err("a wiped store must be refused");
        assert!(matches!(err, BindingError::ForeignStore { .. }));
        assert!(err.to_string().contains("shoal ca issue"));

        let fresh_tls = root.path().join("tls-new");
        std::fs::create_dir_all(&fresh_tls).unwrap();
        check(&fresh_tls, &data).expect("a new certificate with the new store");
    }
}
