//! What a certificate says about its holder: the NodeId (from its public
//! key) and the party and node names (from its `shoal://PARTY/NODE` URI).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use shoal_protocol::NodeId;
use thiserror::Error;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a certificate does not identify a shoal node.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    /// Not a parseable X.509 certificate.
    #[error("unparseable certificate: {0}")]
    Unparseable(String),
    /// No `shoal://PARTY/NODE` URI in its subject alternative names.
    #[error("certificate has no shoal://PARTY/NODE name")]
    NoShoalName,
}

const URI_SCHEME: &str = "shoal://";

fn parse<'a>(der: &'a [u8]) -> Result<X509Certificate<'a>, IdentityError> {
    X509Certificate::from_der(der)
        .map(|(_, cert)| cert)
        .map_err(|e| IdentityError::Unparseable(e.to_string()))
}

/// NodeId = the first 16 bytes of SHA-256 over the certificate's
/// SubjectPublicKeyInfo, so the id is bound to the key TLS authenticated.
pub fn node_id_from_cert(der: &[u8]) -> Result<NodeId, IdentityError> {
    let cert = parse(der)?;
    let digest = Sha256::digest(cert.tbs_certificate.subject_pki.raw);
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    Ok(NodeId(id))
}

/// `(party, node)` from the certificate's `shoal://PARTY/NODE` SAN URI.
pub fn party_and_node_from_cert(der: &[u8]) -> Result<(String, String), IdentityError> {
    let cert = parse(der)?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| IdentityError::Unparseable(e.to_string()))?
        .ok_or(IdentityError::NoShoalName)?;
    san.value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => parse_shoal_uri(uri),
            _ => None,
        })
        .ok_or(IdentityError::NoShoalName)
}

fn parse_shoal_uri(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix(URI_SCHEME)?;
    let (party, node) = rest.split_once('/')?;
    if party.is_empty() || node.is_empty() || node.contains('/') {
        return None;
    }
    Some((party.to_string(), node.to_string()))
}

/// The party a CA certificate was made for: its subject `O=`.
pub fn ca_party_from_pem(pem: &str) -> Option<String> {
    let der = first_cert_der(pem)?;
    let cert = parse(&der).ok()?;
    let org = cert.subject().iter_organization().next()?;
    org.as_str().ok().map(str::to_string)
}

/// The first certificate of a PEM text.
pub fn first_cert_der(pem: &str) -> Option<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shoal_uris_parse_strictly() {
        assert_eq!(
            parse_shoal_uri("shoal://acme/n1"),
            Some(("acme".into(), "n1".into()))
        );
        assert_eq!(parse_shoal_uri("shoal://acme/"), None);
        assert_eq!(parse_shoal_uri("shoal://acme/n1/x"), None);
        assert_eq!(parse_shoal_uri("https://acme/n1"), None);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        assert!(matches!(
            node_id_from_cert(b"not a cert"),
            Err(IdentityError::Unparseable(_))
        ));
    }
}
