//! Federation links between parties over libp2p (docs/federation.md): the
//! party's federation key and gateway vouchers, party cards, and the
//! gateway's swarm. Every decision (whom to accept, when to dial again) is
//! made by `shoal_protocol::federation`; libp2p stays behind this module.

pub mod card;
pub mod codec;
pub mod keys;
pub mod link;
pub mod metrics;
pub mod records;
pub mod table;
pub mod tunnel;
pub mod view;

pub use card::Card;
pub use link::{start, FedConfig, LinkStreams};
pub use table::{FedHandle, LinkState, LinkView};
