//! Node identity.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A node's identity inside its party: the first 16 bytes of the SHA-256 of
/// the node certificate's public key (the node derives it; the simulator
/// numbers its virtual nodes). Because it is bound to the key that the
/// transport authenticates, a peer cannot claim another node's id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 16]);

impl NodeId {
    /// A synthetic id for tests and the simulator: `n` in big-endian in the
    /// last 8 bytes, so ids sort like their numbers.
    pub fn from_u64(n: u64) -> Self {
        let mut bytes = [0u8; 16];
        bytes[8..].copy_from_slice(&n.to_be_bytes());
        NodeId(bytes)
    }

    /// The full id as 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses the form written by [`NodeId::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(NodeId(bytes))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Eight hex digits identify a node in logs without drowning them.
        write!(f, "{}", &self.to_hex()[..8])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..8])
    }
}

/// Names one node's data directory (its store) for as long as the directory
/// lives. A node whose disk was wiped gets a new store id, so peers can tell
/// an acceptor that forgot its promises from the one that made them, even
/// when both present the same certificate.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// A synthetic store id for tests and the simulator.
    pub fn from_u64(n: u64) -> Self {
        StoreId(NodeId::from_u64(n).0)
    }

    /// The full id as 32 lowercase hex digits (the form of the data
    /// directory's `store-id` file).
    pub fn to_hex(&self) -> String {
        NodeId(self.0).to_hex()
    }

    /// Parses the form written by [`StoreId::to_hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        NodeId::from_hex(s).map(|id| StoreId(id.0))
    }
}

impl fmt::Debug for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_rejects_garbage() {
        let id = NodeId::from_u64(0xdead_beef);
        assert_eq!(NodeId::from_hex(&id.to_hex()), Some(id));
        assert_eq!(NodeId::from_hex("zz"), None);
        assert_eq!(NodeId::from_hex(&"é".repeat(16)), None);
        assert!(NodeId::from_u64(1) < NodeId::from_u64(2));
        let store = StoreId::from_u64(7);
        assert_eq!(StoreId::from_hex(&store.to_hex()), Some(store));
        assert_eq!(StoreId::from_hex("7"), None);
    }
}
