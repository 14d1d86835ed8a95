//! The task that owns this node's [`Coordinator`]: it feeds it Paxos
//! payloads, membership, timer expiries, durable-write completions,
//! attempt exits and API requests, and carries out every effect it polls
//! (persist through the store's group commit, start/extend/kill through
//! the executor, answer the API). It makes no protocol decision.

use super::checkpoint::CheckpointDir;
use super::checkpoint_flow::{Checkpoints, ChunkAnswer, LocalDone, Net, RestoreStep, Resume};
use super::mesh::{RemoteChunk, TaskMessage, REMOTE_LOG_CHUNK_BYTES};
use super::{LogPiece, LogQuery, Request, TaskError, TaskRead, TasksHandle, REQUEST_TIMEOUT};
use crate::agent::clock::Clock;
use crate::agent::driver::Command;
use crate::exec::{self, AttemptExit, AttemptOutcome, AttemptSpec, Executor};
use crate::metrics::Metrics;
use crate::store::{Store, StoreOptions, WriteOp};
use crate::transport::{Inbound, Transport};
use anyhow::Context;
use nix::sys::signal::Signal;
use shoal_protocol::coordinator::{
    Bootstrap, Config, Coordinator, Effect, KillReason, OpError, RequestId,
};
use shoal_protocol::federation::records::RecordSet;
use shoal_protocol::gossip::NodeState;
use shoal_protocol::membership::MemberState;
use shoal_protocol::paxos::{GroupStatus, StoreKey, StoreValue, StoreWrite, Value};
use shoal_protocol::resources::Resources;
use shoal_protocol::tasks::fit::{self, Candidate, Unfit};
use shoal_protocol::tasks::{Driver, Refusal, TaskId, TaskRecord, TaskSpec, TaskState};
use shoal_protocol::wire::{self, Channel};
use shoal_protocol::{Instant, NodeId};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// API requests queued for the host.
const REQUEST_QUEUE: usize = 4096;
/// Inbound Paxos/Task frames queued for the host.
pub const INBOUND_QUEUE: usize = 16_384;
/// How often the membership view is re-read from the membership driver.
const MEMBERSHIP_POLL: Duration = Duration::from_millis(100);
/// How often the gauges are recomputed.
const GAUGE_REFRESH: Duration = Duration::from_secs(1);
/// Outputs drained per wake-up (guards against a host bug looping).
const MAX_DRAIN: usize = 1_000_000;
/// Inputs handled per wake-up before timers get a turn.
const MAX_BATCH: usize = 512;
/// Remote log reads waiting for an answer, at most.
const MAX_REMOTE_LOG_READS: usize = 1024;
/// A departure older than this is not the cause of a retried attempt.
const FAILOVER_WINDOW: Duration = Duration::from_secs(30);

/// Load of this node's attempts, read by the gossiped state publisher.
#[derive(Debug, Default)]
pub struct TaskLoad {
    /// Slots not used by attempts.
    pub slots_free: AtomicU32,
    /// CPU, memory and custom amounts not reserved by attempts.
    pub resources_free: std::sync::Mutex<Resources>,
    /// Attempts running.
    pub running: AtomicU32,
    /// The node is draining (gossiped so that offers skip it).
    pub draining: std::sync::atomic::AtomicBool,
    /// How attempts are isolated (`Isolation::kind`).
    pub isolation: &'static str,
}

impl TaskLoad {
    /// What attempts leave free now.
    pub fn resources_free(&self) -> Resources {
        self.resources_free
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    fn set_resources_free(&self, free: Resources) {
        let mut slot = self
            .resources_free
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *slot = free;
    }
}

/// What the host needs to start.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// This node.
    pub me: NodeId,
    /// Its name.
    pub name: String,
    /// The party (for `SHOAL_PARTY`).
    pub party: String,
    /// The data directory (store, attempts).
    pub data_dir: PathBuf,
    /// Slots offered.
    pub slots: u32,
    /// CPU, memory and custom amounts offered.
    pub capacity: Resources,
    /// How offers pick among nodes with room.
    pub placement: shoal_protocol::sched::Placement,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// No seeds were given: with an empty store this node founds the party.
    pub founder: bool,
    /// The cgroups attempts run in.
    pub isolation: exec::cgroup::Isolation,
    /// This agent's API as an attempt reaches it (`SHOAL_API_URL`).
    pub api_url: String,
    /// The API's bearer token, if it needs one (`SHOAL_API_TOKEN`).
    pub api_token: Option<String>,
}

/// One member as the host needs it.
#[derive(Debug, Clone, PartialEq)]
struct Peer {
    id: NodeId,
    name: String,
    addr: SocketAddr,
    state: Option<NodeState>,
}

enum Pending {
    Submit(oneshot::Sender<Result<TaskId, TaskError>>),
    Get(oneshot::Sender<Result<TaskRead, TaskError>>),
    Cancel(oneshot::Sender<Result<(), TaskError>>),
    Records(oneshot::Sender<Result<RecordSet, TaskError>>),
    Logs {
        query: LogQuery,
        reply: oneshot::Sender<Result<LogPiece, TaskError>>,
    },
}

struct RemoteRead {
    reply: oneshot::Sender<Result<LogPiece, TaskError>>,
    attempt: u64,
    task_final: bool,
    since: std::time::Instant,
}

/// Starts the host: opens the store, restores or creates the coordinator,
/// recovers attempts left by an earlier run, and spawns the loop.
/// `inbound` carries the Paxos and Task frames the transport received.
pub async fn start(
    config: HostConfig,
    clock: Clock,
    transport: Transport,
    metrics: Arc<Metrics>,
    commands: mpsc::Sender<Command>,
    inbound: mpsc::Receiver<Inbound>,
) -> anyhow::Result<(TasksHandle, Arc<TaskLoad>)> {
    let observer_metrics = metrics.clone();
    let options = StoreOptions {
        commit_observer: Some(Arc::new(move |sample: crate::store::CommitSample| {
            observer_metrics
                .tasks
                .store_commit_seconds
                .observe(sample.latency.as_secs_f64());
        })),
    };
    let store = Store::open(&config.data_dir, options)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let cfg = Config {
        name: config.name.clone(),
        slots_total: config.slots,
        capacity: config.capacity.clone(),
        placement: config.placement,
        labels: config.labels.clone(),
        wall_origin_ms: clock.wall_origin_ms(),
        ..Config::default()
    };
    let stored = load_acceptor_state(&store, cfg.shards)?;
    let now = clock.now();
    let coord = if stored.is_empty() {
        let bootstrap = if config.founder {
            Bootstrap::Founder(vec![config.me])
        } else {
            Bootstrap::Joiner(Vec::new())
        };
        tracing::info!(
            founder = config.founder,
            "empty store: starting the coordinator"
        );
        Coordinator::new(config.me, cfg, rand::random(), now, bootstrap)
    } else {
        tracing::info!(
            entries = stored.len(),
            "restoring the coordinator from the store"
        );
        Coordinator::restore(config.me, cfg, rand::random(), now, &[], stored, true)
    }
    .map_err(|e| anyhow::anyhow!("coordinator configuration: {e}"))?;
    let mut coord = coord;
    // The machine wants a live set before any other input; the real one
    // follows from the membership driver within one poll.
    coord.handle_membership(now, &[(config.me, None)]);

    let mut exec_config = exec::ExecutorConfig::new(
        config.data_dir.clone(),
        config.slots,
        config.name.clone(),
        config.party.clone(),
    )?;
    exec_config.isolation = config.isolation.clone();
    let (executor, exits) = Executor::new(exec_config);
    let recovering = executor.clone();
    let recovered = tokio::task::spawn_blocking(move || recovering.recover())
        .await
        .context("recovering attempts")??;
    for old in &recovered {
        // The restart fenced them: their leases lapsed while no agent
        // renewed them, so another node may hold the task now.
        tracing::warn!(task = %old.task_id, attempt = old.attempt, outcome = ?old.outcome,
            "attempt of an earlier run found; it was fenced by the restart");
        if old.outcome.is_fenced() {
            metrics.tasks.recovered_fenced.inc();
        }
        if let Err(e) = executor.mark_reported(&old.task_id, old.attempt) {
            tracing::warn!(error = %e, "cannot mark a recovered attempt reported");
        }
    }

    // A restarted agent owns no attempt yet: every cgroup it left is stale
    // (the recovery above has already fenced their supervisors).
    let stale = config.isolation.remove_stale();
    if stale > 0 {
        tracing::info!(stale, "removed attempt cgroups of an earlier run");
    }
    remove_stale_containers(&executor).await;
    let load = Arc::new(TaskLoad {
        isolation: config.isolation.kind(),
        ..TaskLoad::default()
    });
    load.slots_free.store(config.slots, Ordering::Relaxed);
    load.set_resources_free(config.capacity.clone());
    let (requests_tx, requests) = mpsc::channel(REQUEST_QUEUE);
    let (members_tx, members) = mpsc::channel(4);
    let (persisted_tx, persisted) = mpsc::unbounded_channel();
    let (checkpoints, local) = Checkpoints::new(CheckpointDir::new(&config.data_dir), config.me);
    let attempt_env = AttemptEnv::new(&config);
    tokio::spawn(watch_membership(commands, members_tx));
    let host = Host {
        coord,
        clock,
        store: Arc::new(store),
        exec: executor,
        transport,
        metrics,
        me: config.me,
        name: config.name,
        data_dir: config.data_dir,
        peers: HashMap::new(),
        last_departure: None,
        pending: HashMap::new(),
        remote: HashMap::new(),
        next_remote: 1,
        persisted_tx,
        load: load.clone(),
        checkpoints,
        attempt_env,
    };
    tokio::spawn(host.run(requests, inbound, exits, persisted, members, local));
    Ok((TasksHandle::new(requests_tx), load))
}

/// Removes the containers of this agent's store that no attempt of this
/// executor owns: a restarted agent owns none yet, and the recovery above
/// has already let every live supervisor remove its own.
async fn remove_stale_containers(executor: &Executor) {
    let Some(store) = executor.store() else {
        return;
    };
    let program = executor.docker_program();
    let owned = executor.running();
    let removed =
        tokio::task::spawn_blocking(move || exec::docker::remove_stale(&program, &store, &owned))
            .await;
    match removed {
        Ok(Ok(0)) => {}
        Ok(Ok(stale)) => tracing::info!(stale, "removed containers of an earlier run"),
        // No docker here, or its daemon is down: no container can be left.
        Ok(Err(e)) => tracing::debug!(error = %e, "no stale containers looked for"),
        Err(e) => tracing::warn!(error = %e, "stale container clean-up panicked"),
    }
}

/// Every acceptor entry the store holds, decoded; undecodable entries are
/// an error (the store is this node's own, so they mean corruption).
fn load_acceptor_state(store: &Store, shards: u32) -> anyhow::Result<Vec<(StoreKey, StoreValue)>> {
    let mut out = Vec::new();
    for shard in 0..shards {
        for (k, v) in store.acceptor_shard(shard)? {
            let key: StoreKey = wire::decode(&k, wire::MAX_STREAM_MESSAGE_BYTES)
                .with_context(|| format!("decoding a stored key of shard {shard}"))?;
            let value: StoreValue = wire::decode(&v, wire::MAX_STREAM_MESSAGE_BYTES)
                .with_context(|| format!("decoding a stored value of shard {shard}"))?;
            out.push((key, value));
        }
    }
    Ok(out)
}

fn store_ops(writes: Vec<StoreWrite>) -> Vec<WriteOp> {
    writes
        .into_iter()
        .map(|w| {
            let shard = match w.key {
                StoreKey::Meta(s) | StoreKey::Register(s, _) => s.0,
            };
            let key = wire::encode(&w.key);
            match w.value {
                Some(v) => WriteOp::PutAcceptor {
                    shard,
                    key,
                    value: wire::encode(&v),
                },
                None => WriteOp::DeleteAcceptor { shard, key },
            }
        })
        .collect()
}

/// Polls the membership driver and sends the live view when it changed.
async fn watch_membership(commands: mpsc::Sender<Command>, out: mpsc::Sender<Vec<Peer>>) {
    let mut tick = tokio::time::interval(MEMBERSHIP_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<Peer>> = None;
    loop {
        tick.tick().await;
        let (tx, rx) = oneshot::channel();
        if commands.send(Command::Snapshot(tx)).await.is_err() {
            return;
        }
        let Ok(snapshot) = rx.await else { return };
        let mut peers: Vec<Peer> = snapshot
            .members
            .iter()
            .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
            .map(|m| Peer {
                id: m.identity.id,
                name: m.identity.name.clone(),
                addr: m.identity.addr,
                state: m.node_state.clone(),
            })
            .collect();
        peers.push(Peer {
            id: snapshot.identity.id,
            name: snapshot.identity.name.clone(),
            addr: snapshot.identity.addr,
            state: snapshot.local_state.clone(),
        });
        peers.sort_by_key(|p| p.id);
        if last.as_ref() != Some(&peers) {
            if out.send(peers.clone()).await.is_err() {
                return;
            }
            last = Some(peers);
        }
    }
}

struct Host {
    coord: Coordinator,
    clock: Clock,
    store: Arc<Store>,
    exec: Executor,
    transport: Transport,
    metrics: Arc<Metrics>,
    me: NodeId,
    name: String,
    data_dir: PathBuf,
    peers: HashMap<NodeId, Peer>,
    last_departure: Option<std::time::Instant>,
    pending: HashMap<RequestId, Pending>,
    remote: HashMap<u64, RemoteRead>,
    next_remote: u64,
    persisted_tx: mpsc::UnboundedSender<(u64, bool)>,
    load: Arc<TaskLoad>,
    checkpoints: Checkpoints,
    attempt_env: AttemptEnv,
}

/// How the checkpoint flow reaches the live members.
fn mesh_net<'a>(transport: &'a Transport, peers: &'a HashMap<NodeId, Peer>) -> Net<'a> {
    Net {
        transport,
        addr_of: Box::new(move |id| peers.get(&id).map(|p| p.addr)),
    }
}

/// What every attempt's environment gets from its agent, so that
/// `shoal checkpoint save` inside it finds the agent and its binary.
#[derive(Debug, Clone)]
struct AttemptEnv {
    /// `DATA/bin`, holding a link to this binary; `None` if it could not
    /// be made.
    bin_dir: Option<PathBuf>,
    api_url: String,
    api_token: Option<String>,
}

impl AttemptEnv {
    fn new(config: &HostConfig) -> Self {
        let bin_dir = config.data_dir.join("bin");
        let linked = std::env::current_exe().and_then(|exe| {
            std::fs::create_dir_all(&bin_dir)?;
            let link = bin_dir.join("shoal");
            match std::fs::read_link(&link) {
                Ok(old) if old == exe => return Ok(()),
                Ok(_) => std::fs::remove_file(&link)?,
                Err(_) => {}
            }
            std::os::unix::fs::symlink(&exe, &link)
        });
        if let Err(e) = &linked {
            tracing::warn!(error = %e, dir = %bin_dir.display(),
                "cannot link this binary into the attempts' PATH: `shoal checkpoint` inside attempts needs it on PATH");
        }
        AttemptEnv {
            bin_dir: linked.is_ok().then_some(bin_dir),
            api_url: config.api_url.clone(),
            api_token: config.api_token.clone(),
        }
    }

    /// Adds the agent's variables to an attempt's environment.
    fn apply(&self, env: &mut BTreeMap<String, String>) {
        if let Some(bin) = &self.bin_dir {
            let rest = env
                .get("PATH")
                .cloned()
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
            env.insert("PATH".into(), format!("{}:{rest}", bin.display()));
        }
        env.insert("SHOAL_API_URL".into(), self.api_url.clone());
        if let Some(token) = &self.api_token {
            env.insert("SHOAL_API_TOKEN".into(), token.clone());
        }
    }
}

impl Host {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut inbound: mpsc::Receiver<Inbound>,
        mut exits: mpsc::UnboundedReceiver<AttemptExit>,
        mut persisted: mpsc::UnboundedReceiver<(u64, bool)>,
        mut members: mpsc::Receiver<Vec<Peer>>,
        mut local: mpsc::UnboundedReceiver<LocalDone>,
    ) {
        let mut gauges = tokio::time::interval(GAUGE_REFRESH);
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.drain();
        loop {
            let timer = self
                .coord
                .poll_timeout()
                .map(|t| self.clock.to_tokio(t))
                .unwrap_or_else(|| tokio::time::Instant::now() + GAUGE_REFRESH);
            tokio::select! {
                Some(peers) = members.recv() => self.on_members(peers),
                Some(first) = inbound.recv() => {
                    self.on_inbound(first);
                    for _ in 1..MAX_BATCH {
                        match inbound.try_recv() {
                            Ok(next) => self.on_inbound(next),
                            Err(_) => break,
                        }
                    }
                }
                Some((token, ok)) = persisted.recv() => {
                    self.on_persisted(token, ok);
                    for _ in 1..MAX_BATCH {
                        match persisted.try_recv() {
                            Ok((token, ok)) => self.on_persisted(token, ok),
                            Err(_) => break,
                        }
                    }
                }
                Some(exit) = exits.recv() => self.on_exit(exit),
                Some(done) = local.recv() => self.on_local(done),
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request),
                    None => break,
                },
                _ = tokio::time::sleep_until(timer) => {
                    self.coord.handle_timeout(self.clock.now());
                }
                _ = gauges.tick() => self.refresh_gauges(),
            }
            self.drain();
        }
    }

    fn on_members(&mut self, peers: Vec<Peer>) {
        let before = self.peers.len();
        let left = self
            .peers
            .keys()
            .any(|id| !peers.iter().any(|p| p.id == *id));
        if left {
            self.last_departure = Some(std::time::Instant::now());
        }
        let view: Vec<(NodeId, Option<NodeState>)> =
            peers.iter().map(|p| (p.id, p.state.clone())).collect();
        self.peers = peers.into_iter().map(|p| (p.id, p)).collect();
        if self.peers.len() != before || left {
            tracing::debug!(live = self.peers.len(), "task host: live set changed");
        }
        self.coord.handle_membership(self.clock.now(), &view);
    }

    fn on_inbound(&mut self, inbound: Inbound) {
        match inbound.channel {
            Channel::Paxos => {
                let now = self.clock.now();
                if let Err(e) = self
                    .coord
                    .handle_message(now, inbound.src_id, &inbound.payload)
                {
                    self.metrics.transport.decode_errors.inc();
                    tracing::debug!(peer = %inbound.src, error = %e, "paxos payload refused");
                }
            }
            Channel::Task => {
                match wire::decode::<TaskMessage>(&inbound.payload, wire::MAX_STREAM_MESSAGE_BYTES)
                {
                    Ok(m) => self.on_task_message(inbound.src, inbound.src_id, m),
                    Err(e) => {
                        self.metrics.transport.decode_errors.inc();
                        tracing::debug!(peer = %inbound.src, error = %e, "task payload refused");
                    }
                }
            }
            Channel::Membership => {}
        }
    }

    fn on_task_message(&mut self, src: SocketAddr, src_id: NodeId, m: TaskMessage) {
        let now = self.clock.now();
        let net = mesh_net(&self.transport, &self.peers);
        let m = match m {
            TaskMessage::CheckpointStored { req, index, result } => {
                let answer = ChunkAnswer { req, index, result };
                self.checkpoints
                    .on_stored(now, &mut self.coord, &net, src_id, answer);
                return;
            }
            TaskMessage::CheckpointChunk { req, index, result } => {
                let answer = ChunkAnswer { req, index, result };
                let step = self.checkpoints.on_chunk(&net, answer);
                drop(net);
                self.restore_step(step);
                return;
            }
            m => match self.checkpoints.serve(&net, src_id, m) {
                Some(m) => m,
                None => return,
            },
        };
        match m {
            TaskMessage::LogRequest {
                req,
                task,
                attempt,
                stream,
                offset,
            } => {
                let data_dir = self.data_dir.clone();
                let transport = self.transport.clone();
                tokio::spawn(async move {
                    let result =
                        read_local_log_chunk(data_dir, task, attempt, stream, offset).await;
                    let reply = TaskMessage::LogReply { req, result };
                    transport.send(Channel::Task, src, true, &wire::encode(&reply));
                });
            }
            TaskMessage::LogReply { req, result } => {
                if let Some(r) = self.remote.remove(&req) {
                    let _ = r.reply.send(log_piece(r.attempt, r.task_final, result));
                }
            }
            TaskMessage::CheckpointPut { .. }
            | TaskMessage::CheckpointStored { .. }
            | TaskMessage::CheckpointGet { .. }
            | TaskMessage::CheckpointChunk { .. }
            | TaskMessage::CheckpointDiscard { .. } => {}
        }
    }

    fn on_local(&mut self, done: LocalDone) {
        let now = self.clock.now();
        let net = mesh_net(&self.transport, &self.peers);
        let step = match done {
            LocalDone::Stored { req, index, result } => {
                let (me, answer) = (self.me, ChunkAnswer { req, index, result });
                self.checkpoints
                    .on_stored(now, &mut self.coord, &net, me, answer);
                None
            }
            LocalDone::Read { req, index, result } => {
                let answer = ChunkAnswer { req, index, result };
                self.checkpoints.on_chunk(&net, answer)
            }
            LocalDone::Assembled { req, result } => self.checkpoints.on_assembled(req, result),
        };
        drop(net);
        self.restore_step(step);
    }

    /// Starts an attempt whose checkpoint is in place, or reports that it
    /// could not get it.
    fn restore_step(&mut self, step: Option<RestoreStep>) {
        let now = self.clock.now();
        match step {
            None => {}
            Some(RestoreStep::Start(resume)) => {
                let Resume {
                    task,
                    attempt,
                    spec,
                    lease_valid_until,
                    path,
                } = *resume;
                self.start_attempt(now, task, attempt, spec, lease_valid_until, Some(path));
            }
            Some(RestoreStep::Fail {
                task,
                attempt,
                reason,
            }) => {
                tracing::error!(%task, attempt, %reason, "cannot resume the attempt");
                self.checkpoints.attempt_ended(task, attempt);
                self.coord.handle_attempt_exited(
                    now,
                    task,
                    attempt,
                    SPAWN_FAILED_CODE,
                    Some(format!("cannot start on {}: {reason}", self.name)),
                );
            }
        }
    }

    fn on_persisted(&mut self, token: u64, ok: bool) {
        if ok {
            self.coord.handle_persisted(self.clock.now(), token);
        }
        // A failed write is never acknowledged: the operations that waited
        // for it time out and retry, as after a crash.
    }

    fn on_exit(&mut self, exit: AttemptExit) {
        let Ok(task) = super::parse_task_id(&exit.task_id) else {
            tracing::warn!(task = %exit.task_id, "exit of an attempt with a foreign task id");
            return;
        };
        let code = exit_code(&exit.outcome);
        tracing::debug!(%task, attempt = exit.attempt, outcome = ?exit.outcome, "attempt ended");
        self.checkpoints.attempt_ended(task, exit.attempt);
        self.coord.handle_attempt_exited(
            self.clock.now(),
            task,
            exit.attempt,
            code,
            exit_reason(&exit.outcome),
        );
        if let Err(e) = self.exec.mark_reported(&exit.task_id, exit.attempt) {
            tracing::debug!(error = %e, "cannot mark an attempt reported");
        }
    }

    fn on_request(&mut self, request: Request) {
        let now = self.clock.now();
        match request {
            Request::Submit { spec, force, reply } => match self.placeable(&spec, force) {
                Err(unfit) => {
                    let _ = reply.send(Err(TaskError::Unplaceable(unfit)));
                }
                Ok(()) => match self.coord.submit(now, *spec) {
                    Ok(r) => {
                        self.pending.insert(r, Pending::Submit(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(request_error(e)));
                    }
                },
            },
            Request::Get(task, reply) => match self.coord.read_task(now, task) {
                Ok(r) => {
                    self.pending.insert(r, Pending::Get(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(request_error(e)));
                }
            },
            Request::Cancel(task, reply) => match self.coord.cancel(now, task) {
                Ok(r) => {
                    self.pending.insert(r, Pending::Cancel(reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(request_error(e)));
                }
            },
            Request::Logs { task, query, reply } => match self.coord.read_task(now, task) {
                Ok(r) => {
                    self.pending.insert(r, Pending::Logs { query, reply });
                }
                Err(e) => {
                    let _ = reply.send(Err(request_error(e)));
                }
            },
            Request::Records {
                register,
                edit,
                reply,
            } => {
                let started = match edit {
                    None => self.coord.read_job(now, register),
                    Some(edit) => self.coord.edit_records(now, register, edit),
                };
                match started {
                    Ok(r) => {
                        self.pending.insert(r, Pending::Records(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(request_error(e)));
                    }
                }
            }
            Request::List {
                state,
                limit,
                reply,
            } => {
                let _ = reply.send(self.list(state.as_deref(), limit));
            }
            Request::SaveCheckpoint {
                task,
                attempt,
                bytes,
                reply,
            } => {
                let wall_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                let net = mesh_net(&self.transport, &self.peers);
                self.checkpoints.save(
                    now,
                    wall_ms,
                    &mut self.coord,
                    &net,
                    task,
                    attempt,
                    bytes,
                    reply,
                );
            }
            Request::Drain(draining, reply) => {
                self.coord.set_draining(draining);
                self.load.draining.store(draining, Ordering::Relaxed);
                self.metrics.tasks.draining.set(i64::from(draining));
                tracing::info!(draining, "drain set");
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Task records of the active shards this node serves.
    fn local_records(&self) -> impl Iterator<Item = &TaskRecord> {
        self.coord
            .acceptor()
            .shards()
            .filter(|(_, s)| s.meta.status == GroupStatus::Active)
            .flat_map(|(_, s)| s.registers.values())
            .filter_map(|slot| match &slot.value {
                Some(Value::Task(r)) => Some(&**r),
                _ => None,
            })
    }

    /// The newest `limit` records in `state`, oldest first.
    fn list(&self, state: Option<&str>, limit: usize) -> Vec<TaskRead> {
        let mut out: Vec<&TaskRecord> = self
            .local_records()
            .filter(|r| state.is_none_or(|s| super::view::state_name(&r.state) == s))
            .collect();
        out.sort_by_key(|r| (r.submitted_at_ms, r.id));
        let skip = out.len().saturating_sub(limit);
        let members = self.candidates();
        out.into_iter()
            .skip(skip)
            .map(|r| TaskRead {
                waiting: fit::why_waiting(r, &members),
                record: r.clone(),
            })
            .collect()
    }

    /// The members whose state this node has heard, itself included.
    fn candidates(&self) -> Vec<Candidate<'_>> {
        self.peers
            .values()
            .filter_map(|p| {
                p.state.as_ref().map(|state| Candidate {
                    name: &p.name,
                    state,
                })
            })
            .collect()
    }

    /// Refuses a task no current member could ever run, unless forced.
    /// Before this node has heard any member's state it cannot judge, and
    /// accepts.
    fn placeable(&self, spec: &TaskSpec, force: bool) -> Result<(), Unfit> {
        let members = self.candidates();
        if force || members.is_empty() {
            return Ok(());
        }
        fit::never_fits(spec, &members).map_or(Ok(()), Err)
    }

    fn read_of(&self, record: TaskRecord) -> TaskRead {
        let waiting = fit::why_waiting(&record, &self.candidates());
        TaskRead { record, waiting }
    }

    fn refresh_gauges(&mut self) {
        let mut counts: BTreeMap<&'static str, i64> =
            super::view::STATE_NAMES.iter().map(|s| (*s, 0)).collect();
        for r in self.local_records() {
            *counts.entry(super::view::state_name(&r.state)).or_default() += 1;
        }
        for (state, n) in counts {
            self.metrics
                .tasks
                .tasks
                .get_or_create(&super::metrics::TaskStateLabel { state })
                .set(n);
        }
        self.metrics.tasks.observe_coordinator(&self.coord.stats());
        let directory = self.coord.directory();
        let min_group = directory
            .values()
            .map(|c| c.members.len())
            .min()
            .unwrap_or(0);
        let complete = directory.len() == self.coord.config().shards as usize;
        self.metrics
            .tasks
            .shard_group_min_size
            .set(if complete { min_group as i64 } else { 0 });
        self.metrics
            .tasks
            .shard_groups_degraded
            .set(self.coord.degraded_groups() as i64);
        self.sweep_remote_reads();
        let net = mesh_net(&self.transport, &self.peers);
        let failed = self.checkpoints.sweep(&net);
        drop(net);
        for step in failed {
            self.restore_step(Some(step));
        }
    }

    fn sweep_remote_reads(&mut self) {
        self.remote
            .retain(|_, r| r.since.elapsed() < REQUEST_TIMEOUT && !r.reply.is_closed());
        self.pending.retain(|_, p| match p {
            Pending::Submit(tx) => !tx.is_closed(),
            Pending::Get(tx) => !tx.is_closed(),
            Pending::Cancel(tx) => !tx.is_closed(),
            Pending::Records(tx) => !tx.is_closed(),
            Pending::Logs { reply, .. } => !reply.is_closed(),
        });
    }

    fn drain(&mut self) {
        for _ in 0..MAX_DRAIN {
            let mut progressed = false;
            while let Some((to, bytes)) = self.coord.poll_transmit() {
                progressed = true;
                match self.peers.get(&to) {
                    Some(p) => {
                        // Datagrams when they fit (the protocol retries a
                        // lost one); anything larger goes on a stream.
                        let reliable =
                            bytes.len() + 1 > crate::transport::frame::MAX_DATAGRAM_FRAME_BYTES;
                        self.transport
                            .send(Channel::Paxos, p.addr, reliable, &bytes);
                    }
                    None => {
                        self.metrics.transport.outbound_dropped.inc();
                    }
                }
            }
            if let Some(effect) = self.coord.poll_effect() {
                progressed = true;
                self.on_effect(effect);
            }
            if !progressed {
                break;
            }
        }
        self.load
            .slots_free
            .store(self.exec.slots_free(), Ordering::Relaxed);
        self.load.set_resources_free(self.coord.resources_free());
        self.load.running.store(
            u32::try_from(self.exec.running().len()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
    }

    fn on_effect(&mut self, effect: Effect) {
        let now = self.clock.now();
        match effect {
            Effect::Persist { token, writes } => {
                match self.store.commit_queued(store_ops(writes)) {
                    Ok(durable) => {
                        let tx = self.persisted_tx.clone();
                        tokio::spawn(async move {
                            let ok = match durable.await {
                                Ok(()) => true,
                                Err(e) => {
                                    tracing::error!(error = %e, "store commit failed");
                                    false
                                }
                            };
                            let _ = tx.send((token, ok));
                        });
                    }
                    Err(e) => tracing::error!(error = %e, "store refused a write batch"),
                }
            }
            Effect::StartAttempt {
                task,
                attempt,
                spec,
                lease_valid_until,
                checkpoint,
            } => {
                let net = mesh_net(&self.transport, &self.peers);
                let ready = self.checkpoints.attempt_won(
                    &net,
                    task,
                    attempt,
                    *spec,
                    lease_valid_until,
                    checkpoint,
                );
                drop(net);
                if let Some((spec, lease_valid_until)) = ready {
                    self.start_attempt(now, task, attempt, spec, lease_valid_until, None);
                }
            }
            Effect::LeaseExtended {
                task,
                attempt,
                valid_until,
            } if self.checkpoints.lease_extended(task, attempt, valid_until) => {
                self.metrics.tasks.lease_renewals.inc();
            }
            Effect::KillAttempt {
                task,
                attempt,
                reason,
            } if self.checkpoints.abandon(task, attempt) => {
                // It never started: nothing to kill, but its end is owed.
                let code = match reason {
                    KillReason::Fenced => -1,
                    KillReason::Timeout => 124,
                    KillReason::Cancelled => 130,
                };
                self.checkpoints.attempt_ended(task, attempt);
                self.coord
                    .handle_attempt_exited(now, task, attempt, code, None);
            }
            Effect::CheckpointSaved {
                request,
                task,
                result,
            } => {
                let net = mesh_net(&self.transport, &self.peers);
                if !self.checkpoints.on_saved(&net, request, result) {
                    tracing::debug!(%task, "answer of an unknown checkpoint save");
                }
            }
            Effect::LeaseExtended {
                task,
                attempt,
                valid_until,
            } => {
                self.metrics.tasks.lease_renewals.inc();
                let remaining = valid_until.saturating_duration_since(now);
                if let Err(e) = self.exec.extend(&task.to_string(), attempt, remaining) {
                    tracing::debug!(%task, attempt, error = %e, "extend of an ended attempt");
                }
            }
            Effect::KillAttempt {
                task,
                attempt,
                reason,
            } => {
                let why = match reason {
                    KillReason::Fenced => exec::KillReason::Fenced,
                    // The coordinator knows why it asked; the executor only
                    // needs "kill the group now".
                    KillReason::Cancelled | KillReason::Timeout => exec::KillReason::Cancelled,
                };
                if reason == KillReason::Fenced {
                    tracing::warn!(%task, attempt, "self-fencing: the lease could not be renewed in time");
                }
                if let Err(e) = self.exec.kill(&task.to_string(), attempt, why) {
                    tracing::debug!(%task, attempt, error = %e, "kill of an ended attempt");
                }
            }
            Effect::SubmitAcked { request, task } => {
                if let Some(Pending::Submit(tx)) = self.pending.remove(&request) {
                    let _ = tx.send(Ok(task));
                }
            }
            Effect::SubmitFailed {
                request,
                task,
                error,
            } => {
                if let Some(Pending::Submit(tx)) = self.pending.remove(&request) {
                    let _ = tx.send(Err(TaskError::Unavailable(format!(
                        "submit not acknowledged ({error}); task {task} may or may not exist"
                    ))));
                }
            }
            Effect::CancelDone {
                request,
                task,
                result,
            } => {
                if let Some(Pending::Cancel(tx)) = self.pending.remove(&request) {
                    let _ = tx.send(result.map_err(|e| op_error(task, e)));
                }
            }
            Effect::TaskRead {
                request,
                task,
                result,
            } => match self.pending.remove(&request) {
                Some(Pending::Get(tx)) => {
                    let _ = tx.send(match result {
                        Ok(Some(r)) => Ok(self.read_of(*r)),
                        Ok(None) => Err(TaskError::NotFound(task.to_string())),
                        Err(e) => Err(op_error(task, e)),
                    });
                }
                Some(Pending::Logs { query, reply }) => match result {
                    Ok(Some(r)) => self.read_logs(*r, query, reply),
                    Ok(None) => {
                        let _ = reply.send(Err(TaskError::NotFound(task.to_string())));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(op_error(task, e)));
                    }
                },
                _ => {}
            },
            Effect::JobDone { request, result } => {
                if let Some(Pending::Records(tx)) = self.pending.remove(&request) {
                    let _ = tx.send(records_result(result));
                }
            }
            Effect::AttemptCommitted {
                task,
                attempt,
                state,
                record_attempt,
            } => {
                if state == TaskState::Succeeded && record_attempt == attempt {
                    self.metrics.tasks.attempts_succeeded.inc();
                }
                let net = mesh_net(&self.transport, &self.peers);
                self.checkpoints
                    .committed(&net, task, attempt, state.is_final());
                tracing::debug!(%task, attempt, state = super::view::state_name(&state), "attempt committed");
            }
            Effect::AttemptRefused {
                task,
                attempt,
                error,
            } => {
                self.metrics.tasks.results_refused.inc();
                let net = mesh_net(&self.transport, &self.peers);
                self.checkpoints.committed(&net, task, attempt, false);
                tracing::info!(%task, attempt, %error, "a stale attempt's result was refused");
            }
            Effect::Reconfigured { config } => {
                tracing::debug!(
                    shard = config.shard.0,
                    epoch = config.epoch,
                    members = config.members.len(),
                    "shard reconfigured"
                );
            }
            Effect::Warning { message } => tracing::warn!("{message}"),
        }
    }

    fn start_attempt(
        &mut self,
        now: Instant,
        task: TaskId,
        attempt: u64,
        spec: shoal_protocol::tasks::TaskSpec,
        lease_valid_until: Instant,
        checkpoint: Option<PathBuf>,
    ) {
        let remaining = lease_valid_until.saturating_duration_since(now);
        let mut env = spec.env;
        self.attempt_env.apply(&mut env);
        if let Some(path) = checkpoint {
            env.insert("SHOAL_CHECKPOINT".into(), path.display().to_string());
        }
        let memory_limit_mib = match spec.memory_limit_mib {
            0 => spec.resources.memory_mib,
            limit => limit,
        };
        let limits = exec::Limits {
            memory_bytes: (memory_limit_mib > 0).then(|| u64::from(memory_limit_mib) << 20),
            cpu_milli: (spec.resources.cpu_milli > 0)
                .then_some(u64::from(spec.resources.cpu_milli)),
        };
        let driver = match spec.driver {
            Driver::Command => exec::Driver::Command {
                program: spec.command,
                args: spec.args,
            },
            Driver::Mock {
                duration_ms,
                exit_code,
            } => exec::Driver::Mock {
                duration: Duration::from_millis(duration_ms),
                exit_code,
            },
            Driver::Docker(container) => exec::Driver::Docker {
                container,
                command: match spec.command.is_empty() {
                    true => Vec::new(),
                    false => std::iter::once(spec.command).chain(spec.args).collect(),
                },
            },
        };
        let attempt_spec = AttemptSpec {
            task_id: task.to_string(),
            attempt,
            driver,
            env,
            cwd: spec.cwd.map(PathBuf::from),
            slots: spec.slots,
            // The coordinator owns the task's timeout (it kills with
            // reason Timeout); the supervisor owns the lease deadline.
            timeout: None,
            limits,
        };
        self.metrics.tasks.attempts_started.inc();
        if attempt > 1 {
            if let Some(at) = self.last_departure {
                if at.elapsed() < FAILOVER_WINDOW {
                    self.metrics
                        .tasks
                        .failover_seconds
                        .observe(at.elapsed().as_secs_f64());
                }
            }
        }
        tracing::debug!(%task, attempt, lease_ms = remaining.as_millis() as u64, "starting attempt");
        if let Err(e) = self.exec.start(attempt_spec, remaining) {
            tracing::error!(%task, attempt, error = %e, "cannot start the attempt");
            self.coord.handle_attempt_exited(
                now,
                task,
                attempt,
                SPAWN_FAILED_CODE,
                Some(format!("cannot start on {}: {e}", self.name)),
            );
        }
    }

    fn read_logs(
        &mut self,
        record: TaskRecord,
        query: LogQuery,
        reply: oneshot::Sender<Result<LogPiece, TaskError>>,
    ) {
        let LogQuery { stream, offset, .. } = query;
        let attempt = query.attempt.unwrap_or(record.attempt);
        if query.attempt.is_some() && (attempt == 0 || attempt > record.attempt) {
            let _ = reply.send(Err(TaskError::Invalid(format!(
                "attempt: task {} has attempts 1..={}, not {attempt}",
                record.id, record.attempt
            ))));
            return;
        }
        // An earlier attempt has ended: no more bytes will come.
        let task_final = record.state.is_final() || attempt < record.attempt;
        let mock = matches!(record.spec.driver, Driver::Mock { .. });
        if attempt == 0 || mock {
            let _ = reply.send(Ok(LogPiece {
                attempt,
                data: Vec::new(),
                next_offset: offset,
                finished: task_final,
            }));
            return;
        }
        let by_name = |name: &str| {
            if name == self.name {
                return Some(self.me);
            }
            self.peers.values().find(|p| p.name == name).map(|p| p.id)
        };
        let holder_name = record
            .attempt_info(attempt)
            .map(|i| i.node.clone())
            .or_else(|| record.holder_name.clone());
        // The current attempt's holder is in its state; an earlier one is
        // found by the name the record kept.
        let current_holder = (attempt == record.attempt)
            .then(|| record.state.holder().map(|(_, h)| h))
            .flatten();
        let holder = current_holder.or_else(|| by_name(holder_name.as_deref()?));
        let task = record.id.to_string();
        match holder {
            Some(h) if h == self.me => {
                let data_dir = self.data_dir.clone();
                tokio::spawn(async move {
                    let result =
                        read_local_log_chunk(data_dir, task, attempt, stream, offset).await;
                    let _ = reply.send(log_piece(attempt, task_final, result));
                });
            }
            Some(h) => {
                let Some(addr) = self.peers.get(&h).map(|p| p.addr) else {
                    let who = holder_name.unwrap_or_else(|| h.to_hex());
                    let _ = reply.send(Err(TaskError::Unavailable(format!(
                        "node {who}, which ran attempt {attempt}, is not reachable"
                    ))));
                    return;
                };
                if self.remote.len() >= MAX_REMOTE_LOG_READS {
                    let _ = reply.send(Err(TaskError::Unavailable(
                        "too many log reads in flight".into(),
                    )));
                    return;
                }
                let req = self.next_remote;
                self.next_remote += 1;
                let m = TaskMessage::LogRequest {
                    req,
                    task,
                    attempt,
                    stream,
                    offset,
                };
                self.transport
                    .send(Channel::Task, addr, true, &wire::encode(&m));
                self.remote.insert(
                    req,
                    RemoteRead {
                        reply,
                        attempt,
                        task_final,
                        since: std::time::Instant::now(),
                    },
                );
            }
            None => {
                let _ = reply.send(Err(TaskError::Unavailable(match holder_name {
                    Some(n) => {
                        format!("node {n}, which ran attempt {attempt}, is not a member now")
                    }
                    None => format!("no known node ran attempt {attempt}"),
                })));
            }
        }
    }
}

/// The exit code handed to the coordinator when the executor could not
/// start an attempt (as a shell reports a command it cannot run).
const SPAWN_FAILED_CODE: i32 = 127;

/// The reason of an attempt the OOM killer ended.
pub const OOM_REASON: &str = "oom";

/// The exit code the coordinator is told for an outcome. For kills it asked
/// for, the coordinator ignores the code (it knows the reason).
fn exit_code(outcome: &AttemptOutcome) -> i32 {
    match outcome {
        AttemptOutcome::Exited { code } => *code,
        AttemptOutcome::Signaled { signal } => 128 + signal,
        AttemptOutcome::OutOfMemory { .. } => 128 + Signal::SIGKILL as i32,
        AttemptOutcome::TimedOut => 124,
        AttemptOutcome::Cancelled => 130,
        AttemptOutcome::SpawnFailed { .. } => SPAWN_FAILED_CODE,
        AttemptOutcome::Fenced | AttemptOutcome::AgentLost | AttemptOutcome::SupervisorLost => -1,
    }
}

/// Why an attempt ended, in words, where its exit code does not say it.
fn exit_reason(outcome: &AttemptOutcome) -> Option<String> {
    match outcome {
        AttemptOutcome::Exited { .. }
        | AttemptOutcome::TimedOut
        | AttemptOutcome::Cancelled
        | AttemptOutcome::Fenced => None,
        AttemptOutcome::Signaled { signal } => Some(match Signal::try_from(*signal) {
            Ok(s) => format!("killed by signal {signal} ({s})"),
            Err(_) => format!("killed by signal {signal}"),
        }),
        AttemptOutcome::SpawnFailed { reason } => Some(reason.clone()),
        // Exactly "oom": scripts match on it (`status --json`'s reason).
        AttemptOutcome::OutOfMemory { .. } => Some(OOM_REASON.into()),
        AttemptOutcome::AgentLost => Some("the agent stopped while it ran".into()),
        AttemptOutcome::SupervisorLost => Some("its supervisor died without a report".into()),
    }
}

fn log_piece(
    attempt: u64,
    task_final: bool,
    result: Result<RemoteChunk, String>,
) -> Result<LogPiece, TaskError> {
    match result {
        Ok(c) => Ok(LogPiece {
            attempt,
            finished: c.finished && task_final && c.data.is_empty(),
            data: c.data,
            next_offset: c.next_offset,
        }),
        // An attempt that never wrote a log (it did not start) of a final
        // task has an empty, complete log.
        Err(_) if task_final => Ok(LogPiece {
            attempt,
            data: Vec::new(),
            next_offset: 0,
            finished: true,
        }),
        Err(e) => Err(TaskError::Unavailable(format!("cannot read the log: {e}"))),
    }
}

fn request_error(e: shoal_protocol::coordinator::RequestError) -> TaskError {
    use shoal_protocol::coordinator::RequestError as E;
    match e {
        E::Spec(s) => TaskError::Invalid(s.to_string()),
        E::Members | E::Checkpoint(_) => TaskError::Invalid(e.to_string()),
        E::Overloaded | E::UnknownShard(_) => TaskError::Unavailable(format!(
            "{e} (the node may still be joining the mesh; retry)"
        )),
    }
}

fn records_result(result: Result<Option<Vec<u8>>, OpError>) -> Result<RecordSet, TaskError> {
    match result {
        Ok(bytes) => RecordSet::decode(bytes.as_deref())
            .map_err(|e| TaskError::Unavailable(format!("the record register: {e}"))),
        Err(OpError::Refused(Refusal::Record(e))) => Err(TaskError::Invalid(e.to_string())),
        Err(OpError::Refused(r)) => Err(TaskError::Conflict(r.to_string())),
        Err(OpError::NoQuorum) => Err(TaskError::Unavailable(
            "no majority of the records' shard group answered; retry".into(),
        )),
    }
}

fn op_error(task: TaskId, e: OpError) -> TaskError {
    match e {
        OpError::Refused(Refusal::Missing) => TaskError::NotFound(task.to_string()),
        OpError::Refused(Refusal::Final) => {
            TaskError::Conflict(format!("task {task} is already final"))
        }
        OpError::Refused(r) => TaskError::Conflict(r.to_string()),
        OpError::NoQuorum => TaskError::Unavailable(format!(
            "no majority of the shard group of task {task} answered; retry"
        )),
    }
}

/// Reads one chunk of a local attempt's log off the runtime thread, in the
/// shape both the local API and a peer's mesh request answer with.
async fn read_local_log_chunk(
    data_dir: PathBuf,
    task: String,
    attempt: u64,
    stream: exec::LogStream,
    offset: u64,
) -> Result<RemoteChunk, String> {
    let read = tokio::task::spawn_blocking(move || {
        exec::read_log(
            &data_dir,
            &task,
            attempt,
            stream,
            offset,
            REMOTE_LOG_CHUNK_BYTES,
        )
    })
    .await;
    match read {
        Ok(Ok(c)) => Ok(RemoteChunk {
            data: c.data,
            next_offset: c.next_offset,
            finished: c.finished,
        }),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::paxos::{RegisterKey, Slot};
    use shoal_protocol::shard::ShardId;

    #[test]
    fn store_writes_keep_their_shard_and_round_trip() {
        let key = StoreKey::Register(ShardId(5), RegisterKey::Task(TaskId(9)));
        let value = StoreValue::Register(Slot::default());
        let ops = store_ops(vec![
            StoreWrite {
                key,
                value: Some(value.clone()),
            },
            StoreWrite { key, value: None },
        ]);
        match &ops[0] {
            WriteOp::PutAcceptor {
                shard,
                key: k,
                value: v,
            } => {
                assert_eq!(*shard, 5);
                assert_eq!(wire::decode::<StoreKey>(k, 1 << 20).unwrap(), key);
                assert_eq!(wire::decode::<StoreValue>(v, 1 << 20).unwrap(), value);
            }
            other => panic!("not a put: {other:?}"),
        }
        assert!(matches!(ops[1], WriteOp::DeleteAcceptor { shard: 5, .. }));
    }

    #[test]
    fn fenced_outcomes_never_look_like_success() {
        assert_eq!(exit_code(&AttemptOutcome::Exited { code: 0 }), 0);
        for o in [
            AttemptOutcome::Fenced,
            AttemptOutcome::AgentLost,
            AttemptOutcome::SupervisorLost,
            AttemptOutcome::TimedOut,
            AttemptOutcome::Signaled { signal: 9 },
        ] {
            assert_ne!(exit_code(&o), 0, "{o:?}");
        }
    }
}
