//! `shoal agent`: start-up as named stages (identity, transport,
//! membership, tasks, federation, health and state, API), then a graceful leave on
//! SIGTERM/SIGINT (docs/architecture.md, "Agent start-up").

pub mod clock;
pub mod drain;
pub mod driver;
pub mod identity_binding;
pub mod incarnation;
pub mod member_stores;
pub mod state;

use crate::api::{self, ApiState};
use crate::config::AgentConfig;
use crate::health;
use crate::metrics::Metrics;
use crate::tasks::host::TaskLoad;
use crate::tls::{self, TlsMaterial};
use crate::transport::{Inbound, Transport};
use anyhow::Context;
use clock::Clock;
use driver::{Command, Driver};
use incarnation::IncarnationFile;
use shoal_protocol::membership::{Identity, Membership};
use shoal_protocol::StoreId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long the agent keeps running after announcing its leave, so the
/// announcement reaches the peers before the process exits.
const LEAVE_DRAIN: Duration = Duration::from_millis(500);
/// Inbound frames buffered between the transport and the driver.
const INBOUND_QUEUE: usize = 4096;
/// Commands buffered for the driver.
const COMMAND_QUEUE: usize = 64;
/// The dev CA's party name.
const DEV_PARTY: &str = "dev";

/// Replaces the file at `path` with `contents`, written beside it and then
/// renamed, so that a crash leaves the old file or the new one.
fn replace_file(path: &std::path::Path, contents: &[u8]) -> std::io::Result<()> {
    let aside = path.with_extension("tmp");
    std::fs::write(&aside, contents)?;
    std::fs::rename(&aside, path)
}

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

/// Runs the agent until a signal; returns after a graceful leave. Start-up
/// is a straight line of stages, each taking what it needs and returning what
/// the next needs.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    let (config, material, binding) = prepare_identity(config)?;
    let clock = Clock::new();
    let metrics = Arc::new(Metrics::new());
    let (net, inbound) = start_transport(&config, &material, &metrics)?;
    let mut mesh = start_membership(
        &config,
        &material,
        binding.store,
        clock,
        &net,
        inbound,
        &metrics,
    )?;
    let (tasks, load) = start_tasks(
        &config,
        binding.store,
        &material,
        clock,
        &net,
        &metrics,
        &mut mesh,
    )
    .await?;
    let (fed, gateway) = match start_federation(&config, &material, &metrics, &mesh, &tasks)? {
        Some((handle, streams, records)) => (Some(handle), Some((streams, records))),
        None => (None, None),
    };
    let relay = crate::federation::tunnel::Relay::new(
        material.node_id,
        net.transport.clone(),
        mesh.commands.clone(),
        config.fed_link_holders,
        gateway,
    );
    relay.serve();
    let tunnels = crate::federation::tunnel::Tunnels::new(relay);
    let health = health::spawn_checks(&config.data_dir, &config.builtin_health, &config.checks);
    let (drain, mut drain_watch) = drain::channel(load.clone());
    tokio::spawn(state::publish_state(
        config.clone(),
        health.clone(),
        mesh.commands.clone(),
        load.clone(),
    ));
    let api_state = ApiState {
        commands: mesh.commands.clone(),
        tasks,
        metrics,
        health,
        token: config.api_token.clone().filter(|t| !t.is_empty()),
        single_node: config.join.is_empty(),
        party: material.party.clone(),
        me: material.node_id,
        started: std::time::Instant::now(),
        fed,
        tunnels,
        drain,
        load,
    };
    let api_task = start_api(config.api, api_state).await?;

    let refusal = tokio::select! {
        signal = wait_for_signal() => {
            tracing::info!(signal = signal?, "leaving the mesh");
            None
        }
        Ok(refusal) = &mut mesh.refused => Some(refusal),
        end = drain_watch.done() => {
            tracing::info!(?end, "drained; leaving the mesh");
            None
        }
    };
    // A refused node leaves no goodbye: under this identity it must not
    // take part at all, and a leave would be refused as well.
    if refusal.is_none() {
        leave(&net, mesh).await;
    }
    api_task.abort();
    net.transport.close(Duration::from_millis(200)).await;
    if let Some(refusal) = refusal {
        binding.undo();
        anyhow::bail!("{refusal}");
    }
    tracing::info!("left; bye");
    Ok(())
}

/// Stage 1: a valid configuration, a data directory, and the TLS identity
/// bound to that data directory; the node's name is its certificate's.
fn prepare_identity(
    mut config: AgentConfig,
) -> anyhow::Result<(AgentConfig, TlsMaterial, identity_binding::Binding)> {
    config.validate()?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    // Before anything in the directory is read or written: a store laid out
    // by a build that this one cannot read is refused untouched.
    crate::store::format::check_or_stamp(&config.data_dir)?;
    let material = tls_material(&config)?;
    let binding = match &config.tls_dir {
        Some(dir) => identity_binding::check(dir, &config.data_dir)?,
        None => identity_binding::Binding {
            store: identity_binding::store_id(&config.data_dir)?,
            made_now: None,
        },
    };
    config.name = config.name_for_certificate(&material.node_name)?;
    Ok((config, material, binding))
}

/// What the transport stage hands on.
struct Net {
    transport: Transport,
    addr: SocketAddr,
}

/// Stage 2: the QUIC endpoint, bound and serving; its inbound frames.
fn start_transport(
    config: &AgentConfig,
    material: &TlsMaterial,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Net, mpsc::Receiver<Inbound>)> {
    let (inbound_tx, inbound) = mpsc::channel(INBOUND_QUEUE);
    let transport = Transport::bind(
        config.listen,
        material,
        metrics.transport.clone(),
        inbound_tx,
    )?;
    let addr = transport
        .local_addr()
        .context("reading the bound QUIC address")?;
    Ok((Net { transport, addr }, inbound))
}

/// What the membership stage hands on.
struct Mesh {
    commands: mpsc::Sender<Command>,
    /// Frames of the task channel, passed on by the driver; the task stage
    /// takes them.
    forward: Option<mpsc::Receiver<Inbound>>,
    seeds: Vec<SocketAddr>,
    incarnation_file: IncarnationFile,
    driver_task: tokio::task::JoinHandle<()>,
    /// Fires when a peer refuses this node's store.
    refused: oneshot::Receiver<driver::Refusal>,
}

/// Stage 3: the membership machine and its driver, joining through the seeds.
fn start_membership(
    config: &AgentConfig,
    material: &TlsMaterial,
    store: StoreId,
    clock: Clock,
    net: &Net,
    inbound: mpsc::Receiver<Inbound>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Mesh> {
    let incarnation_file = IncarnationFile::new(&config.data_dir);
    let incarnation = incarnation_file
        .next()
        .context("persisting the incarnation")?;
    let identity = Identity {
        id: material.node_id,
        name: config.name.clone(),
        addr: net.addr,
        store,
    };
    let seeds: Vec<_> = config
        .join
        .iter()
        .copied()
        .filter(|s| *s != net.addr)
        .collect();
    tracing::info!(
        name = %identity.name, id = %identity.id.to_hex(), addr = %net.addr, party = %material.party,
        incarnation, store = %store.to_hex(), preset = ?config.preset, seeds = ?seeds, "agent starting"
    );
    let membership = Membership::new(
        identity,
        config.preset.membership_config(),
        rand::random(),
        incarnation,
        clock.now(),
    );
    let (commands, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (refused_tx, refused) = oneshot::channel();
    let (forward_tx, forward) = mpsc::channel(crate::tasks::host::INBOUND_QUEUE);
    let driver = Driver::new(
        membership,
        clock,
        net.transport.clone(),
        metrics.clone(),
        seeds.clone(),
        incarnation_file.clone(),
    )
    .with_forward(forward_tx)
    .with_member_stores(member_stores::MemberStoresFile::new(&config.data_dir))
    .on_refusal(refused_tx);
    let driver_task = tokio::spawn(driver.run(commands_rx, inbound));
    Ok(Mesh {
        commands,
        forward: Some(forward),
        seeds,
        incarnation_file,
        driver_task,
        refused,
    })
}

/// The cgroups this agent's attempts run in, said once at start.
fn isolation(config: &AgentConfig, store: StoreId) -> crate::exec::cgroup::Isolation {
    use crate::exec::cgroup::Isolation;
    let isolation = match config.isolation {
        crate::config::IsolationMode::None => Isolation::None {
            why: "--isolation none".into(),
        },
        crate::config::IsolationMode::Auto => Isolation::detect(&store.to_hex()),
    };
    match &isolation {
        Isolation::None { why } => tracing::warn!(
            %why,
            "isolation: none: attempts run without memory or CPU limits and may disturb each other"
        ),
        _ => tracing::info!(
            isolation = isolation.kind(),
            "attempts run in their own cgroups"
        ),
    }
    isolation
}

/// The agent's API as a process on this machine reaches it: an API bound
/// to every address is reached on loopback.
fn attempt_api_url(api: std::net::SocketAddr) -> String {
    let ip = match api.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
        ip => ip,
    };
    format!("http://{}", std::net::SocketAddr::new(ip, api.port()))
}

/// Stage 4: the task host (store, coordinator, executor, recovery of the
/// attempts a previous run left); its API handle and the load it reports.
async fn start_tasks(
    config: &AgentConfig,
    store: StoreId,
    material: &TlsMaterial,
    clock: Clock,
    net: &Net,
    metrics: &Arc<Metrics>,
    mesh: &mut Mesh,
) -> anyhow::Result<(crate::tasks::TasksHandle, Arc<TaskLoad>)> {
    let forward = mesh
        .forward
        .take()
        .context("the task stage runs once per agent")?;
    crate::tasks::host::start(
        crate::tasks::host::HostConfig {
            me: material.node_id,
            name: config.name.clone(),
            party: material.party.clone(),
            data_dir: config.data_dir.clone(),
            slots: config.slots,
            capacity: config.capacity.clone(),
            placement: config.placement.rule(),
            labels: config.labels.clone(),
            founder: mesh.seeds.is_empty(),
            isolation: isolation(config, store),
            api_url: attempt_api_url(config.api),
            api_token: config.api_token.clone().filter(|t| !t.is_empty()),
        },
        clock,
        net.transport.clone(),
        metrics.clone(),
        mesh.commands.clone(),
        forward,
    )
    .await
    .context("starting the task host")
}

/// Stage 5: the federation gateway, when `--gateway` is given: the libp2p
/// swarm holding links to the trusted parties (docs/federation.md).
fn start_federation(
    config: &AgentConfig,
    material: &TlsMaterial,
    metrics: &Arc<Metrics>,
    mesh: &Mesh,
    tasks: &crate::tasks::TasksHandle,
) -> anyhow::Result<
    Option<(
        crate::federation::FedHandle,
        crate::federation::LinkStreams,
        tokio::sync::watch::Receiver<crate::federation::records::FedRecords>,
    )>,
> {
    let Some(listen) = config.gateway else {
        if !config.fed_trust.is_empty() {
            tracing::warn!("--fed-trust without --gateway: this node holds no federation links");
        }
        return Ok(None);
    };
    let tls_dir = config
        .tls_dir
        .clone()
        .unwrap_or_else(|| config.data_dir.join("tls"));
    let identity = crate::federation::keys::load_gateway(&tls_dir).with_context(|| {
        format!(
            "loading the gateway key from {} (issue the node's certificate with a CA that has a federation key)",
            tls_dir.display()
        )
    })?;
    let flag_cards = config
        .fed_trust
        .iter()
        .map(|path| crate::federation::Card::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let records = crate::federation::records::watch_records(tasks.clone());
    let (handle, streams) = crate::federation::start(
        crate::federation::FedConfig {
            listen,
            party: material.party.clone(),
            identity,
            flag_cards,
            records: records.clone(),
            me: material.node_id,
            link_holders: config.fed_link_holders,
            gateways: crate::federation::view::watch_gateways(
                mesh.commands.clone(),
                vec![shoal_protocol::federation::holders::GatewayView {
                    id: material.node_id,
                    live: true,
                    critical: false,
                }],
            ),
        },
        metrics.fed.clone(),
    )
    .context("starting the federation gateway")?;
    Ok(Some((handle, streams, records)))
}

/// Stage 6: the HTTP API.
async fn start_api(
    addr: SocketAddr,
    state: ApiState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the API on {addr}"))?;
    tracing::info!(api = %addr, "API listening");
    let server = axum::serve(listener, api::router(state));
    Ok(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "API server stopped");
        }
    }))
}

/// Last stage: announce a graceful leave and keep gossiping it for
/// `LEAVE_DRAIN`, then persist the final incarnation.
async fn leave(net: &Net, mesh: Mesh) {
    let leave_deadline = tokio::time::Instant::now() + LEAVE_DRAIN;
    let (tx, rx) = oneshot::channel();
    let final_incarnation = if mesh.commands.send(Command::Leave(tx)).await.is_ok() {
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
    net.transport.flush(LEAVE_DRAIN).await;
    tokio::time::sleep_until(leave_deadline).await;
    if let Some(incarnation) = final_incarnation {
        if let Err(e) = mesh.incarnation_file.store(incarnation) {
            tracing::error!(error = %e, "cannot persist incarnation");
        }
    }
    mesh.driver_task.abort();
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
