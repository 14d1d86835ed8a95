//! `shoal agent`: starts the transport, the membership driver, the health
//! checks and the API, then waits for SIGTERM/SIGINT to leave gracefully.

pub mod clock;
pub mod driver;
pub mod identity_binding;
pub mod incarnation;

use crate::api::{self, ApiState};
use crate::config::AgentConfig;
use crate::health::{self, HealthHandle};
use crate::metrics::Metrics;
use crate::tasks::host::TaskLoad;
use crate::tls::{self, TlsMaterial};
use crate::transport::Transport;
use anyhow::Context;
use clock::Clock;
use driver::{Command, Driver};
use incarnation::IncarnationFile;
use shoal_protocol::gossip::NodeState;
use shoal_protocol::membership::{Identity, Membership};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the agent keeps running after announcing its leave, so the
/// announcement reaches the peers before the process exits.
const LEAVE_DRAIN: Duration = Duration::from_millis(500);
/// How often this node's gossiped state is recomputed.
const STATE_REFRESH: Duration = Duration::from_secs(1);
/// Republish the state at least this often even when nothing moved.
const STATE_MAX_AGE: Duration = Duration::from_secs(30);
/// Load changes smaller than this (per mille) are not worth a gossip round.
const LOAD_CHANGE_PERMILLE: u32 = 100;
/// Load-only changes are gossiped at most this often: on a busy machine the
/// load moves every second, and every record costs a dissemination round.
const LOAD_MIN_INTERVAL: Duration = Duration::from_secs(5);
/// Inbound frames buffered between the transport and the driver.
const INBOUND_QUEUE: usize = 4096;
/// Commands buffered for the driver.
const COMMAND_QUEUE: usize = 64;
/// The dev CA's party name.
const DEV_PARTY: &str = "dev";

/// Loads the configured TLS identity, or makes a development CA and node
/// certificate in the data directory.
fn tls_material(config: &AgentConfig) -> anyhow::Result<TlsMaterial> {
    if let Some(dir) = &config.tls_dir {
        return tls::load_tls_material(dir)
            .with_context(|| format!("loading TLS material from {}", dir.display()));
    }
    let ca_dir = config.data_dir.join("dev-ca");
    let tls_dir = config.data_dir.join("tls");
    if !ca_dir.join(tls::ca::CA_CERT_FILE).exists() {
        tls::init_ca(DEV_PARTY, &ca_dir).context("creating the development CA")?;
    }
    if !tls_dir.join(tls::ca::NODE_CERT_FILE).exists() {
        tls::issue_node_cert(&ca_dir, &config.name, &tls_dir, None)
            .context("issuing the development node certificate")?;
    }
    tracing::warn!(
        ca = %ca_dir.display(),
        "no --tls-dir given: using a development CA made in the data directory; \
         this node can only mesh with nodes holding certificates from it. \
         Use `shoal ca init` and `shoal ca issue` for a real party"
    );
    tls::load_tls_material(&tls_dir).context("loading the development TLS material")
}

fn build_version() -> String {
    format!("shoal {}", env!("CARGO_PKG_VERSION"))
}

/// Runs the agent until a signal; returns after a graceful leave.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let material = tls_material(&config)?;
    if let Some(dir) = &config.tls_dir {
        identity_binding::check(dir, &config.data_dir)?;
    }
    if material.node_name != config.name {
        tracing::warn!(cert = %material.node_name, name = %config.name, "the certificate names another node than --name");
    }
    let clock = Clock::new();
    let metrics = Arc::new(Metrics::new());
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_QUEUE);
    let transport = Transport::bind(
        config.listen,
        &material,
        metrics.transport.clone(),
        inbound_tx,
    )?;
    let addr = transport
        .local_addr()
        .context("reading the bound QUIC address")?;

    let incarnation_file = IncarnationFile::new(&config.data_dir);
    let incarnation = incarnation_file
        .next()
        .context("persisting the incarnation")?;
    let identity = Identity {
        id: material.node_id,
        name: config.name.clone(),
        addr,
    };
    let seeds: Vec<_> = config.join.iter().copied().filter(|s| *s != addr).collect();
    tracing::info!(
        name = %identity.name, id = %identity.id.to_hex(), %addr, party = %material.party,
        incarnation, preset = ?config.preset, seeds = ?seeds, "agent starting"
    );
    let membership = Membership::new(
        identity,
        config.preset.membership_config(),
        rand::random(),
        incarnation,
        clock.now(),
    );
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (forward_tx, forward_rx) = mpsc::channel(crate::tasks::host::INBOUND_QUEUE);
    let driver = Driver::new(
        membership,
        clock,
        transport.clone(),
        metrics.clone(),
        seeds.clone(),
        incarnation_file.clone(),
    )
    .with_forward(forward_tx);
    let driver_task = tokio::spawn(driver.run(commands_rx, inbound_rx));
    let (tasks, load) = crate::tasks::host::start(
        crate::tasks::host::HostConfig {
            me: material.node_id,
            name: config.name.clone(),
            party: material.party.clone(),
            data_dir: config.data_dir.clone(),
            slots: config.slots,
            labels: config.labels.clone(),
            founder: seeds.is_empty(),
        },
        clock,
        transport.clone(),
        metrics.clone(),
        commands_tx.clone(),
        forward_rx,
    )
    .await
    .context("starting the task host")?;

    let health = health::spawn_checks(&config.data_dir, &config.builtin_health, &config.checks);
    tokio::spawn(publish_state(
        config.clone(),
        health.clone(),
        commands_tx.clone(),
        load,
    ));

    let api_state = ApiState {
        commands: commands_tx.clone(),
        tasks,
        metrics,
        health,
        token: config.api_token.clone().filter(|t| !t.is_empty()),
        single_node: config.join.is_empty(),
        party: material.party.clone(),
        started: std::time::Instant::now(),
    };
    let listener = tokio::net::TcpListener::bind(config.api)
        .await
        .with_context(|| format!("binding the API on {}", config.api))?;
    tracing::info!(api = %config.api, "API listening");
    let server = axum::serve(listener, api::router(api_state));
    let api_task = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "API server stopped");
        }
    });

    let signal = wait_for_signal().await?;
    tracing::info!(signal, "leaving the mesh");
    let leave_deadline = tokio::time::Instant::now() + LEAVE_DRAIN;
    let (tx, rx) = oneshot::channel();
    let final_incarnation = if commands_tx.send(Command::Leave(tx)).await.is_ok() {
        tokio::time::timeout(LEAVE_DRAIN, rx)
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        None
    };
    // Keep the driver and the connections running for the whole window:
    // queued datagrams only leave when quinn's connection tasks run, and the
    // machine keeps gossiping the leave meanwhile.
    transport.flush(LEAVE_DRAIN).await;
    tokio::time::sleep_until(leave_deadline).await;
    if let Some(incarnation) = final_incarnation {
        if let Err(e) = incarnation_file.store(incarnation) {
            tracing::error!(error = %e, "cannot persist incarnation");
        }
    }
    api_task.abort();
    driver_task.abort();
    transport.close(Duration::from_millis(200)).await;
    tracing::info!("left; bye");
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Recomputes this node's gossiped state every second and hands it to the
/// membership machine when it changed enough to be worth a gossip round.
async fn publish_state(
    config: AgentConfig,
    health: HealthHandle,
    commands: mpsc::Sender<Command>,
    load: std::sync::Arc<TaskLoad>,
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

fn local_state(config: &AgentConfig, health: &HealthHandle, load: &TaskLoad) -> NodeState {
    let sample = health.sample();
    NodeState {
        version: 0,
        slots_total: config.slots,
        slots_free: load.slots_free.load(Ordering::Relaxed),
        running_attempts: load.running.load(Ordering::Relaxed),
        cpu_load_permille: sample.cpu_load_permille,
        mem_used_permille: sample.mem_used_permille,
        disk_free_mib: sample.disk_free_mib,
        health: health.node_health(),
        labels: config.labels.clone(),
        build_version: build_version(),
    }
}

/// Changes schedulers must see at once.
fn urgent_change(prev: &NodeState, next: &NodeState) -> bool {
    prev.health != next.health
        || prev.slots_total != next.slots_total
        || prev.slots_free != next.slots_free
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
