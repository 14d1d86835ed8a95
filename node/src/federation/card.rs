//! A party's public card (TOML): its name, its federation public key and
//! its gateways' addresses. A party hands its card to the parties it links
//! with; they pin the key (`shoal agent --fed-trust CARD`).

use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use shoal_protocol::federation::{TrustedParty, PARTY_KEY_BYTES};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use thiserror::Error;

/// Why a card or a gateway address is unusable.
#[derive(Debug, Error)]
pub enum CardError {
    /// The file could not be read.
    #[error("cannot read card {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a card.
    #[error("card {path}: {message}")]
    Parse {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A gateway address is neither a multiaddr nor `IP:PORT`.
    #[error("gateway address {0:?}: expected IP:PORT or a /ip4/../udp/../quic-v1 multiaddr")]
    Address(String),
    /// The public key is not 32 bytes of hex.
    #[error("public key {0:?}: expected 64 hex digits")]
    Key(String),
}

/// The TOML card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Card {
    /// The party's name.
    pub party: String,
    /// The party's ed25519 federation public key, hex.
    pub public_key: String,
    /// The party's gateways as libp2p multiaddrs; may be empty.
    #[serde(default)]
    pub gateways: Vec<String>,
}

/// A gateway address as a QUIC multiaddr: `IP:PORT` becomes
/// `/ip4/IP/udp/PORT/quic-v1`; a multiaddr is taken as it is.
pub fn gateway_multiaddr(text: &str) -> Result<Multiaddr, CardError> {
    let bad = || CardError::Address(text.to_string());
    if text.starts_with('/') {
        return text.parse().map_err(|_| bad());
    }
    let addr: SocketAddr = text.parse().map_err(|_| bad())?;
    Ok(quic_multiaddr(addr))
}

/// `/ip4|ip6/IP/udp/PORT/quic-v1`.
pub fn quic_multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => Protocol::Ip4(v4),
        IpAddr::V6(v6) => Protocol::Ip6(v6),
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

impl Card {
    /// A card for `party` with `public_key` and gateway addresses.
    pub fn new(
        party: &str,
        public_key: &[u8; PARTY_KEY_BYTES],
        gateways: &[String],
    ) -> Result<Card, CardError> {
        let gateways = gateways
            .iter()
            .map(|g| gateway_multiaddr(g.trim()).map(|m| m.to_string()))
            .collect::<Result<_, _>>()?;
        Ok(Card {
            party: party.to_string(),
            public_key: hex::encode(public_key),
            gateways,
        })
    }

    /// Reads and checks a card file.
    pub fn load(path: &Path) -> Result<Card, CardError> {
        let text = std::fs::read_to_string(path).map_err(|source| CardError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Card::parse(&text, path)
    }

    /// Parses and checks a card's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Card, CardError> {
        let parse_error = |message: String| CardError::Parse {
            path: origin.to_path_buf(),
            message,
        };
        let card: Card = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        crate::tls::ca::check_name(&card.party).map_err(|e| parse_error(e.to_string()))?;
        card.trusted()?;
        card.dial_addrs()?;
        Ok(card)
    }

    /// The card as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a card is always TOML-encodable")
    }

    /// The pinned key, as the handshake decision takes it.
    pub fn trusted(&self) -> Result<TrustedParty, CardError> {
        let bad = || CardError::Key(self.public_key.clone());
        let bytes = hex::decode(&self.public_key).map_err(|_| bad())?;
        let public_key: [u8; PARTY_KEY_BYTES] = bytes.try_into().map_err(|_| bad())?;
        Ok(TrustedParty {
            party: self.party.clone(),
            public_key,
        })
    }

    /// The gateways to dial.
    pub fn dial_addrs(&self) -> Result<Vec<Multiaddr>, CardError> {
        self.gateways.iter().map(|g| gateway_multiaddr(g)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_round_trips_and_converts_host_ports() {
        let card = Card::new(
            "alpha",
            &[7; 32],
            &[
                "127.0.0.1:9000".into(),
                "/ip4/10.0.0.1/udp/1/quic-v1".into(),
            ],
        )
        .unwrap();
        assert_eq!(card.gateways[0], "/ip4/127.0.0.1/udp/9000/quic-v1");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alpha.toml");
        std::fs::write(&path, card.to_toml()).unwrap();
        let loaded = Card::load(&path).unwrap();
        assert_eq!(loaded, card);
        assert_eq!(loaded.trusted().unwrap().public_key, [7; 32]);
    }

    #[test]
    fn bad_addresses_and_keys_are_refused() {
        assert!(gateway_multiaddr("not an address").is_err());
        let mut card = Card::new("alpha", &[7; 32], &[]).unwrap();
        card.public_key = "abcd".into();
        assert!(card.trusted().is_err());
    }
}
