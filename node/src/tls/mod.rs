//! Mutual TLS inside a party (docs/protocol.md §8): the party CA, node certificates,
//! the verifiers that refuse other CAs and other parties during the
//! handshake, and the NodeId derived from a certificate's public key.

pub mod ca;
pub mod identity;
pub mod verify;

pub use ca::{bootstrap_party, init_ca, issue_node_cert, CaError, Issued, NodeCertFiles};
pub use identity::{node_id_from_cert, party_and_node_from_cert, IdentityError};
pub use verify::{
    load_tls_material, rustls_configs, PartyVerifier, TlsError, TlsMaterial, SERVER_NAME,
};
