//! Everything that crosses the network: message types and their one codec.
//!
//! All encoding goes through [`codec`], so the format (bincode 2 today) could
//! be swapped without touching a state machine. Each protocol has its own
//! message enum in a submodule; the host keeps the protocols apart by the
//! [`Channel`] it carries them on.

pub mod codec;
pub mod fed;
pub mod paxos;
pub mod swim;
pub mod version;

pub use codec::{
    decode, decode_borrowed, encode, encode_into, DecodeError, MAX_DATAGRAM_BYTES,
    MAX_STREAM_MESSAGE_BYTES,
};
pub use version::{readable, VersionError, WireVersion, WireVersions, WIRE_VERSION};

use serde::{Deserialize, Serialize};

/// Which protocol machine a datagram or stream belongs to. The host puts
/// this byte in front of every payload and routes on it before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Channel {
    /// SWIM probes, acks, piggybacked gossip, push-pull.
    Membership = 1,
    /// Register and lease traffic of the shard groups.
    Paxos = 2,
    /// Task traffic: offers, log fetches.
    Task = 3,
}

impl Channel {
    /// The channel named by a frame's first byte, if any.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Channel::Membership),
            2 => Some(Channel::Paxos),
            3 => Some(Channel::Task),
            _ => None,
        }
    }
}
