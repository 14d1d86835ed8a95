//! The TLS configuration of a node: both ends present a certificate, both
//! ends check that it chains to the party CA *and* names the party. A peer
//! that fails either check is refused inside the handshake, before any
//! protocol byte is read, and counted.

use super::identity::{node_id_from_cert, party_and_node_from_cert};
use prometheus_client::metrics::counter::Counter;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use shoal_protocol::wire::WireVersions;
use shoal_protocol::NodeId;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// Nodes are dialled by IP; the TLS server name is this fixed string, which
/// every node certificate carries as a DNS name. The party check, not the
/// host name, is what authorises a peer.
pub const SERVER_NAME: &str = "shoal-node";

/// Why TLS material could not be loaded or used.
#[derive(Debug, Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("{path}: {reason}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Our own certificate does not identify a shoal node.
    #[error("own certificate")]
    OwnCert(#[from] super::IdentityError),
    /// rustls refused the configuration.
    #[error("tls configuration")]
    Rustls(#[from] rustls::Error),
    /// The verifier could not be built from the CA.
    #[error("party CA: {0}")]
    Verifier(String),
}

/// A node's loaded TLS identity and trust anchor.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// Our certificate chain (leaf first).
    pub chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The party CA certificate.
    pub ca: CertificateDer<'static>,
    /// The party our certificate names.
    pub party: String,
    /// The node name our certificate names.
    pub node_name: String,
    /// Our NodeId, derived from our certificate's public key.
    pub node_id: NodeId,
}

fn pem_err(path: &Path, reason: impl ToString) -> TlsError {
    TlsError::Pem {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// Loads `dir/node.pem`, `dir/node.key` and `dir/ca.pem`.
pub fn load_tls_material(dir: &Path) -> Result<TlsMaterial, TlsError> {
    let cert_path = dir.join(super::ca::NODE_CERT_FILE);
    let key_path = dir.join(super::ca::NODE_KEY_FILE);
    let ca_path = dir.join(super::ca::CA_CERT_FILE);
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| pem_err(&cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_err(&cert_path, e))?;
    let leaf = chain
        .first()
        .ok_or_else(|| pem_err(&cert_path, "no certificate in file"))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| pem_err(&key_path, e))?;
    let ca = CertificateDer::from_pem_file(&ca_path).map_err(|e| pem_err(&ca_path, e))?;
    let (party, node_name) = party_and_node_from_cert(leaf)?;
    let node_id = node_id_from_cert(leaf)?;
    Ok(TlsMaterial {
        chain,
        key: Arc::new(key),
        ca,
        party,
        node_name,
        node_id,
    })
}

/// The one crypto provider of shoal (docs/architecture.md §11).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Checks chain and party on both sides of a handshake.
#[derive(Debug)]
pub struct PartyVerifier {
    party: String,
    server: Arc<WebPkiServerVerifier>,
    client: Arc<dyn ClientCertVerifier>,
    refusals: Counter,
}

impl PartyVerifier {
    /// A verifier trusting only `ca` and only certificates naming `party`;
    /// every refusal increments `refusals`.
    pub fn new(
        ca: &CertificateDer<'static>,
        party: &str,
        refusals: Counter,
    ) -> Result<Arc<Self>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone())?;
        let roots = Arc::new(roots);
        let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let client = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        Ok(Arc::new(PartyVerifier {
            party: party.to_string(),
            server,
            client,
            refusals,
        }))
    }

    fn check_party(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        match party_and_node_from_cert(end_entity) {
            Ok((party, _)) if party == self.party => Ok(()),
            Ok((party, node)) => Err(rustls::Error::General(format!(
                "peer {node} belongs to party {party}, not {}",
                self.party
            ))),
            Err(e) => Err(rustls::Error::General(format!("peer certificate: {e}"))),
        }
    }

    /// Counts a refusal and logs it once per handshake.
    fn refuse<T>(&self, result: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
        if let Err(e) = &result {
            self.refusals.inc();
            tracing::warn!(error = %e, "refused a peer during the TLS handshake");
        }
        result
    }
}

impl ServerCertVerifier for PartyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(SERVER_NAME).expect("SERVER_NAME is a valid DNS name");
        self.refuse(
            self.server
                .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
                .and_then(|ok| self.check_party(end_entity).map(|()| ok)),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.server.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.server.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.server.supported_verify_schemes()
    }
}

impl ClientCertVerifier for PartyVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.client.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.refuse(
            self.client
                .verify_client_cert(end_entity, intermediates, now)
                .and_then(|ok| self.check_party(end_entity).map(|()| ok)),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.client.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.client.supported_verify_schemes()
    }
}

/// rustls server and client configurations for QUIC, TLS 1.3 only. The
/// ALPN protocols carry the wire version (`shoal/<version>`, see
/// [`shoal_protocol::wire::version`]): the client offers the versions in
/// `wire`, the server accepts those first and every other known version
/// after them, so the transport can refuse a foreign version with a reason.
pub fn rustls_configs(
    material: &TlsMaterial,
    refusals: Counter,
    wire: &WireVersions,
) -> Result<(rustls::ServerConfig, rustls::ClientConfig), TlsError> {
    let verifier = PartyVerifier::new(&material.ca, &material.party, refusals)?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(material.chain.clone(), material.key.clone_key())?;
    server.alpn_protocols = wire.alpn_accept();
    let mut client = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(material.chain.clone(), material.key.clone_key())?;
    client.alpn_protocols = wire.alpn_offer();
    Ok((server, client))
}
