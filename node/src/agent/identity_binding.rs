//! Binds a node certificate to the data directory that first used it.
//!
//! An acceptor that lost its disk must come back under a new NodeId: under
//! its old one it would answer for promises it no longer remembers, and two
//! such amnesiacs in one shard group can lose acknowledged tasks. The NodeId
//! comes from the certificate key, which lives outside the data directory,
//! so the agent itself refuses to pair a known certificate with a new store,
//! and it tells its peers its store id with every membership message: they
//! remember it (protocol/src/membership/stores.rs) and refuse the NodeId
//! with any other store, which also catches a certificate directory restored
//! beside an empty data directory.

use shoal_protocol::StoreId;
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
    /// The data directory's store id file holds something else than an id.
    #[error("{path}: not a store id (32 hex digits); was this file edited?")]
    Malformed {
        /// The file.
        path: PathBuf,
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

/// The id of the store in `data_dir`, made on first use.
pub fn store_id(data_dir: &Path) -> Result<StoreId, BindingError> {
    let store_path = data_dir.join(STORE_ID_FILE);
    let text = match read_id(&store_path)? {
        Some(id) => id,
        None => {
            let id = format!("{:032x}", rand::random::<u128>());
            write_id(&store_path, &id)?;
            id
        }
    };
    StoreId::from_hex(&text).ok_or(BindingError::Malformed { path: store_path })
}

/// The store a certificate was checked against.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The data directory's store.
    pub store: StoreId,
    /// The binding file this run wrote (the certificate's first use with
    /// this store): removed again if the party refuses the pair, so that
    /// restoring the right data directory afterwards is not refused here.
    pub made_now: Option<PathBuf>,
}

impl Binding {
    /// Forgets a binding this run made.
    pub fn undo(&self) {
        if let Some(path) = &self.made_now {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the binding this run made");
            }
        }
    }
}

/// Checks (and on first use records) that the certificate in `tls_dir` is
/// used with the store in `data_dir`. A TLS directory that cannot be written
/// (mounted read-only secrets) only loses this local check, with a warning;
/// the peers still refuse a wiped store under this certificate.
pub fn check(tls_dir: &Path, data_dir: &Path) -> Result<Binding, BindingError> {
    let store = store_id(data_dir)?;
    let store_id = store.to_hex();
    let bound_path = tls_dir.join(BOUND_STORE_FILE);
    match read_id(&bound_path)? {
        Some(bound) if bound == store_id => Ok(Binding {
            store,
            made_now: None,
        }),
        Some(bound) => Err(BindingError::ForeignStore {
            tls_dir: tls_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            bound,
            found: store_id,
        }),
        None => {
            let made_now = match write_id(&bound_path, &store_id) {
                Ok(()) => Some(bound_path),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot bind the certificate to this data directory; \
                        this node will not refuse an empty data directory itself (its peers will)");
                    None
                }
            };
            Ok(Binding { store, made_now })
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
