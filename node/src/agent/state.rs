//! Publishing this node's gossiped state (docs/protocol.md §4): recomputed
//! every second, handed to the membership machine when it moved enough to be
//! worth a gossip round.

use super::driver::Command;
use crate::config::AgentConfig;
use crate::health::HealthHandle;
use crate::tasks::host::TaskLoad;
use shoal_protocol::federation::holders::GATEWAY_LABEL;
use shoal_protocol::gossip::NodeState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// How often this node's gossiped state is recomputed.
const STATE_REFRESH: Duration = Duration::from_secs(1);
/// Republish the state at least this often even when nothing moved.
const STATE_MAX_AGE: Duration = Duration::from_secs(30);
/// Load changes smaller than this (per mille) are not worth a gossip round.
const LOAD_CHANGE_PERMILLE: u32 = 100;
/// Load-only changes are gossiped at most this often: on a busy machine the
/// load moves every second, and every record costs a dissemination round.
const LOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// The build version every node gossips.
pub fn build_version() -> String {
    format!("shoal {}", env!("CARGO_PKG_VERSION"))
}

/// Recomputes this node's gossiped state every second and hands it to the
/// membership machine when it changed enough to be worth a gossip round.
pub async fn publish_state(
    config: AgentConfig,
    health: HealthHandle,
    commands: mpsc::Sender<Command>,
    load: Arc<TaskLoad>,
) {
    let mut last: Option<(NodeState, tokio::time::Instant)> = None;
    let mut tick = tokio::time::interval(STATE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = local_state(&config, &health, &load);
        let due = match &last {
            None => true,
            Some((prev, at)) => {
                urgent_change(prev, &state)
                    || (load_change(prev, &state) && at.elapsed() >= LOAD_MIN_INTERVAL)
                    || at.elapsed() >= STATE_MAX_AGE
            }
        };
        if due {
            if commands
                .send(Command::SetLocalState(state.clone()))
                .await
                .is_err()
            {
                return;
            }
            last = Some((state, tokio::time::Instant::now()));
        }
    }
}

/// The configured labels, plus the gateway label on a gateway so that the
/// party's other gateways count it when they choose link holders.
fn labels(config: &AgentConfig) -> std::collections::BTreeMap<String, String> {
    let mut labels = config.labels.clone();
    if config.gateway.is_some() {
        labels.insert(GATEWAY_LABEL.to_string(), "true".to_string());
    }
    labels
}

fn local_state(config: &AgentConfig, health: &HealthHandle, load: &TaskLoad) -> NodeState {
    let sample = health.sample();
    NodeState {
        version: 0,
        slots_total: config.slots,
        slots_free: load.slots_free.load(Ordering::Relaxed),
        capacity: config.capacity.clone(),
        free: load.resources_free(),
        running_attempts: load.running.load(Ordering::Relaxed),
        cpu_load_permille: sample.cpu_load_permille,
        mem_used_permille: sample.mem_used_permille,
        disk_free_mib: sample.disk_free_mib,
        health: health.node_health(),
        labels: labels(config),
        build_version: build_version(),
        draining: load.draining.load(Ordering::Relaxed),
        isolation: load.isolation.to_string(),
    }
}

/// Changes schedulers must see at once.
fn urgent_change(prev: &NodeState, next: &NodeState) -> bool {
    prev.health != next.health
        || prev.draining != next.draining
        || prev.slots_total != next.slots_total
        || prev.slots_free != next.slots_free
        || prev.capacity != next.capacity
        || prev.free != next.free
        || prev.running_attempts != next.running_attempts
        || prev.labels != next.labels
}

/// Load moves worth telling, but not every second.
fn load_change(prev: &NodeState, next: &NodeState) -> bool {
    // A step of LOAD_CHANGE_PERMILLE, or a quarter of the old value when
    // the load is high, so a machine at 4x load does not flap.
    let moved = |a: u32, b: u32| a.abs_diff(b) >= LOAD_CHANGE_PERMILLE.max(a / 4);
    moved(prev.cpu_load_permille, next.cpu_load_permille)
        || moved(prev.mem_used_permille, next.mem_used_permille)
        // Disk: a change of a tenth of what was free.
        || prev.disk_free_mib.abs_diff(next.disk_free_mib) > prev.disk_free_mib / 10
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::gossip::Health;

    #[test]
    fn small_load_wiggles_are_not_republished_but_health_changes_are() {
        let a = NodeState {
            cpu_load_permille: 100,
            disk_free_mib: 1000,
            ..NodeState::default()
        };
        let wiggle = NodeState {
            cpu_load_permille: 150,
            disk_free_mib: 990,
            ..a.clone()
        };
        assert!(!urgent_change(&a, &wiggle) && !load_change(&a, &wiggle));
        let sick = NodeState {
            health: Health::Critical { reason: "x".into() },
            ..a.clone()
        };
        assert!(urgent_change(&a, &sick));
        let busy = NodeState {
            cpu_load_permille: 300,
            ..a.clone()
        };
        assert!(!urgent_change(&a, &busy) && load_change(&a, &busy));
        let high = NodeState {
            cpu_load_permille: 4000,
            ..a.clone()
        };
        let high_wiggle = NodeState {
            cpu_load_permille: 4600,
            ..a.clone()
        };
        assert!(!load_change(&high, &high_wiggle));
    }
}
