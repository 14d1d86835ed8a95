//! Federation key material on disk: the party's federation key in the CA
//! directory, and each node's gateway key with the party key's voucher for
//! it in the node's TLS directory (docs/federation.md, "Keys and cards").

use crate::tls::ca::{write_new, CaError};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use shoal_protocol::federation::{voucher_message, PARTY_KEY_BYTES};
use std::path::{Path, PathBuf};

/// The party's federation key (libp2p ed25519 keypair, protobuf-encoded),
/// beside `ca.key` in the CA directory.
pub const FEDERATION_KEY_FILE: &str = "federation.key";
/// A node's own libp2p key, in its TLS directory.
pub const GATEWAY_KEY_FILE: &str = "gateway.key";
/// The party key's signature over the gateway's PeerId and the party name.
pub const GATEWAY_VOUCHER_FILE: &str = "gateway.voucher";

fn fed_err(what: impl std::fmt::Display) -> CaError {
    CaError::FedKey(what.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, CaError> {
    std::fs::read(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes a new ed25519 keypair to `path` (never overwrites).
fn write_new_keypair(path: &Path) -> Result<Keypair, CaError> {
    let keypair = Keypair::generate_ed25519();
    let bytes = keypair.to_protobuf_encoding().map_err(fed_err)?;
    write_new(path, bytes, true)?;
    Ok(keypair)
}

/// Reads a protobuf-encoded ed25519 keypair.
pub fn load_keypair(path: &Path) -> Result<Keypair, CaError> {
    let keypair = Keypair::from_protobuf_encoding(&read(path)?)
        .map_err(|e| fed_err(format!("{}: {e}", path.display())))?;
    if keypair.public().clone().try_into_ed25519().is_err() {
        return Err(fed_err(format!("{}: not an ed25519 key", path.display())));
    }
    Ok(keypair)
}

/// `shoal fed init`: makes `ca_dir/federation.key` (never overwrites).
pub fn init_federation_key(ca_dir: &Path) -> Result<PathBuf, CaError> {
    let path = ca_dir.join(FEDERATION_KEY_FILE);
    write_new_keypair(&path)?;
    Ok(path)
}

/// The raw ed25519 public key of a keypair, as cards carry it.
pub fn public_key_bytes(keypair: &Keypair) -> Result<[u8; PARTY_KEY_BYTES], CaError> {
    keypair
        .public()
        .try_into_ed25519()
        .map(|k| k.to_bytes())
        .map_err(|_| fed_err("not an ed25519 key"))
}

/// The party key's voucher for `gateway`.
pub fn vouch(party_key: &Keypair, party: &str, gateway: &PeerId) -> Result<Vec<u8>, CaError> {
    party_key
        .sign(&voucher_message(party, &gateway.to_bytes()))
        .map_err(fed_err)
}

/// Part of `shoal ca issue`: a gateway key and its voucher in `out_dir`,
/// if the CA has a federation key (`None` for a CA made before federation
/// existed; `shoal fed init` adds one).
pub fn issue_gateway(
    ca_dir: &Path,
    party: &str,
    out_dir: &Path,
) -> Result<Option<PathBuf>, CaError> {
    let party_key_path = ca_dir.join(FEDERATION_KEY_FILE);
    if !party_key_path.exists() {
        return Ok(None);
    }
    let party_key = load_keypair(&party_key_path)?;
    let key_path = out_dir.join(GATEWAY_KEY_FILE);
    let gateway = write_new_keypair(&key_path)?;
    let voucher = vouch(&party_key, party, &gateway.public().to_peer_id())?;
    write_new(&out_dir.join(GATEWAY_VOUCHER_FILE), voucher, false)?;
    Ok(Some(key_path))
}

/// A gateway's identity as the agent loads it from its TLS directory.
pub struct GatewayIdentity {
    /// The node's libp2p key.
    pub keypair: Keypair,
    /// The party key's signature for it.
    pub voucher: Vec<u8>,
}

/// Loads `tls_dir/gateway.key` and `tls_dir/gateway.voucher`.
pub fn load_gateway(tls_dir: &Path) -> Result<GatewayIdentity, CaError> {
    let keypair = load_keypair(&tls_dir.join(GATEWAY_KEY_FILE))?;
    let voucher = read(&tls_dir.join(GATEWAY_VOUCHER_FILE))?;
    Ok(GatewayIdentity { keypair, voucher })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::federation::{judge_hello, TrustedParty, Verdict};
    use shoal_protocol::wire::fed::{Hello, FED_PROTOCOL_VERSION};

    #[test]
    fn issued_gateway_is_vouched_for_by_the_party_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        crate::tls::init_ca("alpha", &ca).unwrap();
        let out = dir.path().join("n1");
        let files = crate::tls::issue_node_cert(&ca, "n1", &out, None).unwrap();
        assert!(files.gateway_key.is_some());
        let gateway = load_gateway(&out).unwrap();
        let party_key = load_keypair(&ca.join(FEDERATION_KEY_FILE)).unwrap();
        let trusted = [TrustedParty {
            party: "alpha".into(),
            public_key: public_key_bytes(&party_key).unwrap(),
        }];
        let peer = gateway.keypair.public().to_peer_id().to_bytes();
        let hello = Hello {
            version: FED_PROTOCOL_VERSION,
            party: "alpha".into(),
            gateway_peer: peer.clone(),
            voucher: gateway.voucher,
        };
        assert_eq!(
            judge_hello("beta", &trusted, &hello, &peer),
            Verdict::Accept("alpha".into())
        );
    }

    #[test]
    fn fed_init_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::init_ca("alpha", dir.path()).unwrap();
        assert!(matches!(
            init_federation_key(dir.path()),
            Err(CaError::Exists(_))
        ));
    }
}
