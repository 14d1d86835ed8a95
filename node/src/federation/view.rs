//! The party's gateways as this node's membership view sees them, refreshed
//! for the link task, which picks link holders from it with
//! `shoal_protocol::federation::holders`.

use crate::agent::driver::{Command, Snapshot};
use shoal_protocol::federation::holders::{GatewayView, GATEWAY_LABEL};
use shoal_protocol::gossip::{Health, NodeState};
use shoal_protocol::membership::MemberState;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// How often the gateway view is refreshed from the membership machine.
const REFRESH: Duration = Duration::from_millis(200);

fn critical(state: &NodeState) -> bool {
    matches!(state.health, Health::Critical { .. })
}

/// Every gateway in `snapshot`, this node included. A suspect member
/// counts as not live: its links move at the first sign of its death, and
/// an extra holder while it refutes costs only one more connection.
pub fn gateway_views(snapshot: &Snapshot) -> Vec<GatewayView> {
    let mut views: Vec<GatewayView> = snapshot
        .members
        .iter()
        .filter_map(|m| {
            let state = m.node_state.as_ref()?;
            state
                .labels
                .contains_key(GATEWAY_LABEL)
                .then(|| GatewayView {
                    id: m.identity.id,
                    live: m.state == MemberState::Alive,
                    critical: critical(state),
                })
        })
        .collect();
    views.push(GatewayView {
        id: snapshot.identity.id,
        live: true,
        critical: snapshot.local_state.as_ref().is_some_and(critical),
    });
    views
}

/// Keeps a gateway view fresh in the background; the receiver starts with
/// `initial` (this node alone) until the first snapshot arrives.
pub fn watch_gateways(
    commands: mpsc::Sender<Command>,
    initial: Vec<GatewayView>,
) -> watch::Receiver<Vec<GatewayView>> {
    let (tx, rx) = watch::channel(initial);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (reply, answer) = oneshot::channel();
            if commands.send(Command::Snapshot(reply)).await.is_err() {
                return;
            }
            let Ok(snapshot) = answer.await else {
                return;
            };
            if tx.send(gateway_views(&snapshot)).is_err() {
                return;
            }
        }
    });
    rx
}
