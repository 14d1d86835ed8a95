//! The link table the API reads (`GET /v1/fed/links`): one row per trusted
//! party, written only by the link task.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// A link's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkState {
    /// A vouched-for gateway of the party is connected.
    Up,
    /// Dialling or exchanging hellos.
    Connecting,
    /// No connection; the next dial waits for its backoff.
    Down,
}

/// One row of `GET /v1/fed/links` and `shoal fed links --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkView {
    /// The trusted party.
    pub party: String,
    /// The state of the link.
    pub state: LinkState,
    /// The peer gateway's PeerId, while up.
    pub peer: Option<String>,
    /// The peer gateway's address, while up.
    pub remote: Option<String>,
    /// Unix time in ms when the link entered its state.
    pub since_ms: u64,
    /// The last ping round trip, while up.
    pub rtt_ms: Option<f64>,
    /// Whether this node is one of the link's holders (it dials the party).
    #[serde(default)]
    pub holding: bool,
    /// The ids of the party's gateways that hold the link, as this node's
    /// membership view sees them, slot 0 first.
    #[serde(default)]
    pub holders: Vec<String>,
    /// The link slot this node holds (its place among `holders`), or
    /// `None` when it holds none of the party's slots.
    #[serde(default)]
    pub slot: Option<usize>,
    /// The holder of that slot (this node), or, on a node holding no slot,
    /// the holder of slot 0.
    #[serde(default)]
    pub holder: Option<String>,
}

/// Unix time now, in ms.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The shared table.
#[derive(Debug, Clone, Default)]
pub struct FedHandle {
    links: Arc<Mutex<BTreeMap<String, LinkView>>>,
}

impl FedHandle {
    /// Every row, in party order.
    pub fn links(&self) -> Vec<LinkView> {
        self.links
            .lock()
            .expect("link table lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Sets a party's state; `since_ms` moves only when the state changes.
    pub(crate) fn set(
        &self,
        party: &str,
        state: LinkState,
        peer: Option<String>,
        remote: Option<String>,
    ) {
        let mut links = self.links.lock().expect("link table lock poisoned");
        let row = links.entry(party.to_string()).or_insert_with(|| LinkView {
            party: party.to_string(),
            state,
            peer: None,
            remote: None,
            since_ms: unix_ms(),
            rtt_ms: None,
            holding: false,
            holders: Vec::new(),
            slot: None,
            holder: None,
        });
        if row.state != state {
            row.since_ms = unix_ms();
            row.rtt_ms = None;
        }
        row.state = state;
        row.peer = peer;
        row.remote = remote;
    }

    /// Drops the row of a party no longer trusted.
    pub(crate) fn remove(&self, party: &str) {
        self.links
            .lock()
            .expect("link table lock poisoned")
            .remove(party);
    }

    /// Records who holds a party's link.
    pub(crate) fn set_holders(&self, party: &str, slot: Option<usize>, holders: Vec<String>) {
        let mut links = self.links.lock().expect("link table lock poisoned");
        if let Some(row) = links.get_mut(party) {
            row.holding = slot.is_some();
            row.slot = slot;
            row.holder = holders.get(slot.unwrap_or(0)).cloned();
            row.holders = holders;
        }
    }

    /// Records a ping round trip on a party's link.
    pub(crate) fn set_rtt(&self, party: &str, rtt_ms: f64) {
        let mut links = self.links.lock().expect("link table lock poisoned");
        if let Some(row) = links.get_mut(party) {
            row.rtt_ms = Some(rtt_ms);
        }
    }
}
