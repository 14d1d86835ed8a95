//! `shoal ca init` and `shoal ca issue`: the party CA and node certificates.
//!
//! A node certificate names its party twice: in the subject `O=` and in a
//! SAN URI `shoal://PARTY/NODE`. The verifiers read the URI. Every node
//! certificate also carries the DNS name [`super::SERVER_NAME`], because
//! nodes are dialled by IP and the TLS server name is that fixed string.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// File names inside a CA directory and a node TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA's private key (keep it off the nodes).
pub const CA_KEY_FILE: &str = "ca.key";
/// A node's certificate.
pub const NODE_CERT_FILE: &str = "node.pem";
/// A node's private key.
pub const NODE_KEY_FILE: &str = "node.key";

/// How long certificates are valid from issue.
const CA_VALIDITY_DAYS: i64 = 3650;
const NODE_VALIDITY_DAYS: i64 = 825;

/// Why a CA operation failed.
#[derive(Debug, Error)]
pub enum CaError {
    /// The target file exists; we never overwrite keys.
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A file could not be read or written.
    #[error("{path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Certificate generation or parsing failed.
    #[error("certificate generation or parsing failed")]
    Cert(#[from] rcgen::Error),
    /// A name is not usable in a certificate.
    #[error("invalid name {0:?}: use letters, digits, '-', '_' and '.'")]
    InvalidName(String),
    /// A federation key could not be made, read or used.
    #[error("federation key: {0}")]
    FedKey(String),
    /// The CA certificate names no party.
    #[error("the CA certificate in {0} names no party (no O= in its subject)")]
    NoParty(PathBuf),
    /// The existing CA belongs to another party than the one asked for.
    #[error("the CA in {dir} is party {found}'s, not {wanted}'s")]
    OtherParty {
        /// The CA directory.
        dir: PathBuf,
        /// The party asked for.
        wanted: String,
        /// The party of the CA found there.
        found: String,
    },
}

/// Where `issue_node_cert` wrote its files.
#[derive(Debug, Clone)]
pub struct NodeCertFiles {
    /// `OUTDIR/node.pem`.
    pub cert: PathBuf,
    /// `OUTDIR/node.key`.
    pub key: PathBuf,
    /// `OUTDIR/ca.pem`, a copy of the party CA certificate.
    pub ca: PathBuf,
    /// `OUTDIR/gateway.key`, the node's libp2p key, when the CA has a
    /// federation key to vouch for it (`OUTDIR/gateway.voucher`).
    pub gateway_key: Option<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Names go into URIs and file names: keep them to a safe alphabet.
pub fn check_name(name: &str) -> Result<(), CaError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidName(name.to_string()))
    }
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = time::OffsetDateTime::now_utc();
    // An hour of back-dating tolerates small clock differences between nodes.
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
}

/// Creates a new file, failing if it exists; keys get mode 0600.
pub(crate) fn write_new(
    path: &Path,
    contents: impl AsRef<[u8]>,
    secret: bool,
) -> Result<(), CaError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CaError::Exists(path.to_path_buf())
        } else {
            CaError::Io {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    file.write_all(contents.as_ref()).map_err(io_err(path))
}

/// `shoal ca init`: writes `dir/ca.pem` and `dir/ca.key` for `party`, and
/// the party's federation key `dir/federation.key`.
pub fn init_ca(party: &str, dir: &Path) -> Result<PathBuf, CaError> {
    check_name(party)?;
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let fed_key_path = dir.join(crate::federation::keys::FEDERATION_KEY_FILE);
    for path in [&cert_path, &key_path, &fed_key_path] {
        if path.exists() {
            return Err(CaError::Exists(path.clone()));
        }
    }
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("shoal party CA {party}"));
    dn.push(DnType::OrganizationName, party);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key)?;
    write_new(&key_path, key.serialize_pem(), true)?;
    write_new(&cert_path, cert.pem(), false)?;
    crate::federation::keys::init_federation_key(dir)?;
    Ok(cert_path)
}

/// `shoal ca issue`: a certificate for `node` signed by the CA in
/// `ca_dir`, naming `party` (the CA's own party unless the caller overrides
/// it, which only tests do, to check that other parties are refused).
pub fn issue_node_cert(
    ca_dir: &Path,
    node: &str,
    out_dir: &Path,
    party_override: Option<&str>,
) -> Result<NodeCertFiles, CaError> {
    check_name(node)?;
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
    let ca_key_pem = fs::read_to_string(&ca_key_path).map_err(io_err(&ca_key_path))?;
    let party = match party_override {
        Some(p) => p.to_string(),
        None => super::identity::ca_party_from_pem(&ca_pem)
            .ok_or_else(|| CaError::NoParty(ca_cert_path.clone()))?,
    };
    check_name(&party)?;
    let files = NodeCertFiles {
        cert: out_dir.join(NODE_CERT_FILE),
        key: out_dir.join(NODE_KEY_FILE),
        ca: out_dir.join(CA_CERT_FILE),
        gateway_key: None,
    };
    for path in [&files.cert, &files.key] {
        if path.exists() {
            return Err(CaError::Exists(path.clone()));
        }
    }
    let ca_key = KeyPair::from_pem(&ca_key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)?;

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, node);
    dn.push(DnType::OrganizationName, party.as_str());
    params.distinguished_name = dn;
    params.subject_alt_names = vec![
        SanType::DnsName(super::SERVER_NAME.try_into()?),
        SanType::URI(format!("shoal://{party}/{node}").try_into()?),
    ];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // Every node is both a QUIC server and a client of the others.
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, NODE_VALIDITY_DAYS);
    let cert = params.signed_by(&key, &issuer)?;

    fs::create_dir_all(out_dir).map_err(io_err(out_dir))?;
    write_new(&files.key, key.serialize_pem(), true)?;
    write_new(&files.cert, cert.pem(), false)?;
    // The CA copy may already be there from an earlier issue into the same dir.
    if fs::read_to_string(&files.ca).ok().as_deref() != Some(ca_pem.as_str()) {
        fs::write(&files.ca, &ca_pem).map_err(io_err(&files.ca))?;
    }
    let gateway_key = crate::federation::keys::issue_gateway(ca_dir, &party, out_dir)?;
    Ok(NodeCertFiles {
        gateway_key,
        ..files
    })
}

/// What `bootstrap_party` did for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// A certificate was issued into this directory.
    New(PathBuf),
    /// The directory already held a certificate; it was left alone.
    Kept(PathBuf),
}

/// `shoal ca bootstrap`: the party CA in `ca_dir` (made unless there) and a
/// certificate in `out/NODE/` for every node that has none yet. Running it
/// again changes nothing, so a one-shot container may run it on every start.
pub fn bootstrap_party(
    party: &str,
    ca_dir: &Path,
    nodes: &[String],
    out: &Path,
) -> Result<Vec<Issued>, CaError> {
    check_name(party)?;
    for node in nodes {
        check_name(node)?;
    }
    let ca_cert_path = ca_dir.join(CA_CERT_FILE);
    if ca_cert_path.exists() {
        let pem = fs::read_to_string(&ca_cert_path).map_err(io_err(&ca_cert_path))?;
        let found = super::identity::ca_party_from_pem(&pem)
            .ok_or_else(|| CaError::NoParty(ca_cert_path.clone()))?;
        if found != party {
            return Err(CaError::OtherParty {
                dir: ca_dir.to_path_buf(),
                wanted: party.to_string(),
                found,
            });
        }
    } else {
        init_ca(party, ca_dir)?;
    }
    nodes
        .iter()
        .map(|node| {
            let dir = out.join(node);
            if dir.join(NODE_CERT_FILE).exists() {
                Ok(Issued::Kept(dir))
            } else {
                issue_node_cert(ca_dir, node, &dir, None).map(|_| Issued::New(dir))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_to_overwrite_an_existing_ca() {
        let dir = tempfile::tempdir().unwrap();
        init_ca("acme", dir.path()).unwrap();
        assert!(matches!(
            init_ca("acme", dir.path()),
            Err(CaError::Exists(_))
        ));
    }

    #[test]
    fn issued_cert_names_party_and_node() {
        let dir = tempfile::tempdir().unwrap();
        init_ca("acme", dir.path()).unwrap();
        let out = dir.path().join("n1");
        let files = issue_node_cert(dir.path(), "n1", &out, None).unwrap();
        let pem = fs::read_to_string(&files.cert).unwrap();
        let der = super::super::identity::first_cert_der(&pem).unwrap();
        let (party, node) = super::super::identity::party_and_node_from_cert(&der).unwrap();
        assert_eq!((party.as_str(), node.as_str()), ("acme", "n1"));
        assert!(files.ca.exists() && files.key.exists());
    }

    #[test]
    fn bootstrap_issues_once_and_keeps_what_exists() {
        let root = tempfile::tempdir().unwrap();
        let ca = root.path().join("ca");
        let out = root.path().join("certs");
        let nodes = vec!["n1".to_string(), "n2".to_string()];
        let first = bootstrap_party("acme", &ca, &nodes, &out).unwrap();
        assert_eq!(
            first,
            vec![Issued::New(out.join("n1")), Issued::New(out.join("n2"))]
        );
        let key_before = fs::read_to_string(out.join("n1").join(NODE_KEY_FILE)).unwrap();
        let more = vec!["n1".to_string(), "n3".to_string()];
        let second = bootstrap_party("acme", &ca, &more, &out).unwrap();
        assert_eq!(
            second,
            vec![Issued::Kept(out.join("n1")), Issued::New(out.join("n3"))]
        );
        let key_after = fs::read_to_string(out.join("n1").join(NODE_KEY_FILE)).unwrap();
        assert_eq!(key_before, key_after, "an existing key is never replaced");
        assert!(matches!(
            bootstrap_party("other", &ca, &more, &out),
            Err(CaError::OtherParty { .. })
        ));
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            init_ca("a/b", dir.path()),
            Err(CaError::InvalidName(_))
        ));
    }
}
