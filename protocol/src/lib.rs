//! shoal's protocol: every decision the mesh makes, as deterministic state
//! machines with no I/O, no clock reads and no global randomness.
//!
//! Each machine follows the quinn-proto convention: `handle_*(now, ..)` feeds
//! an input, `poll_*()` drains outputs (transmits, the next timeout, events
//! for the host). The `shoal` node and the `shoal-sim` simulator are the two
//! hosts of these machines; anything decided outside this crate cannot be
//! tested by the simulator.
#![forbid(unsafe_code)]
#![deny(unreachable_pub)]

pub mod bugs;
pub mod coordinator;
pub mod federation;
pub mod fedjob;
pub mod gossip;
pub mod id;
pub mod membership;
pub mod paxos;
pub mod resources;
pub mod sched;
pub mod shard;
pub mod stats;
pub mod tasks;
pub mod time;
pub mod wire;

pub use bugs::{Bug, Bugs};
pub use id::{NodeId, StoreId};
pub use time::Instant;
