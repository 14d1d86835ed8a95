//! The per-node machine of shoal's replicated state: acceptor of the shard
//! groups this node belongs to, proposer of register operations and lease
//! rounds, and holder of the leases of the attempts it runs.
//!
//! # Driving the machine
//! The host owns one [`Coordinator`] per node. It
//! - constructs it with [`Coordinator::new`] on first start (founder of a
//!   party, or a node whose disk is empty) or [`Coordinator::restore`] with
//!   every store entry it persisted, after a restart;
//! - feeds inputs, each with the current monotonic `now`:
//!   [`Coordinator::handle_message`] (every payload of the Paxos channel),
//!   [`Coordinator::handle_timeout`] (whenever `now >= poll_timeout()`),
//!   [`Coordinator::handle_persisted`] (once the writes of a
//!   [`Effect::Persist`] are durable), [`Coordinator::handle_membership`]
//!   (whenever the live set or the gossiped node states change, at least
//!   once before anything else), [`Coordinator::handle_attempt_exited`]
//!   (when an attempt's process ended, for any reason), and requests:
//!   [`Coordinator::submit`], [`Coordinator::cancel`],
//!   [`Coordinator::write_job`], [`Coordinator::read_job`],
//!   [`Coordinator::force_reconfigure`];
//! - after each input, drains [`Coordinator::poll_transmit`] and
//!   [`Coordinator::poll_effect`] until both return `None`, and re-arms its
//!   one timer from [`Coordinator::poll_timeout`].
//!
//! Effects must be carried out in the order they are polled. A
//! [`Effect::KillAttempt`] must take effect (the process stopped) before
//! the `lease_valid_until` of that attempt's start effect, extended by
//! renewals: the machine emits it `fence_margin_ms` early for that purpose.
//!
//! `now` must never go backwards. Messages to this node itself never leave
//! the machine.

mod cas;
mod reconfig;
mod runner;

use crate::bugs::Bugs;
use crate::gossip::NodeState;
use crate::paxos::acceptor::{Acceptor, AcceptorParams};
use crate::paxos::lease::{acceptor_lease_ms, lease_timing_error};
use crate::paxos::{Ballot, RegisterKey, StoreKey, StoreValue, StoreWrite, Value};
use crate::resources::Resources;
use crate::shard::{self, ShardConfig, ShardId};
use crate::tasks::checkpoint::{CheckpointError, CheckpointMeta};
use crate::tasks::{Mutation, SpecError, TaskId, TaskRecord, TaskSpec, TaskState};
use crate::time::Instant;
use crate::wire::paxos::{GroupRefusal, PaxosMessage};
use crate::wire::{self, DecodeError};
use crate::NodeId;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use thiserror::Error;

pub use cas::OpError;
use cas::{CasOp, Change, FastPath, Purpose};
use reconfig::Reconfig;
use runner::{Attempt, LeaseRound};

/// Most operations (register ops, lease rounds, pulls) in flight at once.
pub const MAX_OPS_IN_FLIGHT: usize = 100_000;
/// Most attempts a node holds at once.
pub const MAX_ATTEMPTS: usize = 4_096;
/// Most reconfigurations a node drives at once.
pub const MAX_RECONFIGS: usize = 8;
/// How long a new pending task is left to its submitter's offer before
/// acceptors hand it to pullers (a few round trips).
const PULL_PENDING_AFTER_MS: u64 = 100;
/// Most messages to itself processed in one input (they can cascade).
const MAX_LOCAL_DELIVERIES: usize = 100_000;

/// Tunables of the coordinator. Use [`Config::default`] and adjust.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This node's name, written into the records of attempts it runs.
    pub name: String,
    /// Number of shards of the party (fixed at party creation).
    pub shards: u32,
    /// Group size of small parties.
    pub group_size_small: usize,
    /// Group size from 7 nodes on.
    pub group_size_large: usize,
    /// The holder's lease length, on its own clock.
    pub lease_ms: u64,
    /// Interval of renewals.
    pub renew_ms: u64,
    /// Bound on the clock rate drift: every clock runs at `1 ± rho` of real time.
    pub rho: f64,
    /// How long before its lease expires a holder that could not renew
    /// kills its attempt (covers the host's kill latency).
    pub fence_margin_ms: u64,
    /// How long one phase of an operation waits for a majority.
    pub op_timeout_ms: u64,
    /// How many rounds an operation tries before it fails.
    pub op_max_tries: u32,
    /// Interval of late-binding pulls while slots are free.
    pub pull_interval_ms: u64,
    /// Interval of the orphan sweep of the shards this node leads.
    pub sweep_interval_ms: u64,
    /// Length of each group member's turn in the orphan sweep (see the
    /// sweep in `runner.rs`): long enough for one member's claim to reach
    /// the others, so that they rarely race it.
    pub sweep_stagger_ms: u64,
    /// `d` of the power-of-d-choices offer.
    pub offer_choices: usize,
    /// How an offer picks among the candidates with room.
    pub placement: crate::sched::Placement,
    /// Interval of the shard placement check.
    pub reconfig_check_ms: u64,
    /// Interval of shard directory anti-entropy.
    pub directory_sync_ms: u64,
    /// How long final task records are kept.
    pub retention_ms: u64,
    /// Interval of garbage collection.
    pub gc_interval_ms: u64,
    /// Slots this node offers.
    pub slots_total: u32,
    /// CPU, memory and custom amounts this node offers to tasks.
    pub capacity: Resources,
    /// Labels of this node.
    pub labels: BTreeMap<String, String>,
    /// The wall clock (Unix ms) at the host clock's origin: the times
    /// written into task records for people to read are this plus `now`.
    pub wall_origin_ms: u64,
    /// Planted bugs (only with the `planted-bugs` feature).
    pub bugs: Bugs,
}

impl Default for Config {
    /// Lease 800 ms renewed every 260 ms: a holder's crash is noticed when
    /// the acceptors' lease ends, at most `800 × 1.01/0.99` ≈ 817 ms after
    /// its last renewal at `rho` = 1%; a sweep turn and one claim later the
    /// task runs elsewhere, about 0.85 s after the crash in the median
    /// (`tasks-chaos`). The renewal leaves two more tries (with resends)
    /// before the holder fences at `800 - 100` ms.
    fn default() -> Self {
        Config {
            name: String::from("node"),
            shards: shard::DEFAULT_SHARDS,
            group_size_small: 3,
            group_size_large: 5,
            lease_ms: 800,
            renew_ms: 260,
            rho: 0.01,
            fence_margin_ms: 100,
            op_timeout_ms: 300,
            op_max_tries: 8,
            pull_interval_ms: 250,
            sweep_interval_ms: 100,
            sweep_stagger_ms: 200,
            offer_choices: 2,
            placement: crate::sched::Placement::default(),
            reconfig_check_ms: 1_000,
            directory_sync_ms: 1_000,
            retention_ms: 10 * 60 * 1_000,
            gc_interval_ms: 1_000,
            slots_total: 4,
            capacity: Resources::default(),
            labels: BTreeMap::new(),
            wall_origin_ms: 0,
            bugs: Bugs::none(),
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    /// A field is out of its range.
    #[error("{field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

impl Config {
    /// Checks every field's range and their relations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, why: &str| {
            Err(ConfigError::Invalid {
                field,
                why: why.to_string(),
            })
        };
        if self.shards == 0 || self.shards > shard::MAX_SHARDS {
            return bad("shards", "must be 1..=4096");
        }
        if !(1..=shard::MAX_GROUP_SIZE).contains(&self.group_size_small)
            || !(1..=shard::MAX_GROUP_SIZE).contains(&self.group_size_large)
        {
            return bad("group_size", "must be 1..=7");
        }
        if let Some((field, why)) =
            lease_timing_error(self.rho, self.lease_ms, self.renew_ms, self.fence_margin_ms)
        {
            return bad(field, why);
        }
        for (field, v) in [
            ("op_timeout_ms", self.op_timeout_ms),
            ("pull_interval_ms", self.pull_interval_ms),
            ("sweep_interval_ms", self.sweep_interval_ms),
            ("reconfig_check_ms", self.reconfig_check_ms),
            ("directory_sync_ms", self.directory_sync_ms),
            ("gc_interval_ms", self.gc_interval_ms),
        ] {
            if v == 0 {
                return bad(field, "must be positive");
            }
        }
        if self.op_max_tries == 0 {
            return bad("op_max_tries", "must be positive");
        }
        Ok(())
    }

    /// The acceptor's timer for one lease, drift-corrected.
    pub fn acceptor_lease_ms(&self) -> u64 {
        acceptor_lease_ms(self.lease_ms, self.rho, &self.bugs)
    }
}

/// How a node starts with an empty store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// It founds the party with these members (all founders must be given
    /// the same list): it serves the first configurations at once.
    Founder(Vec<NodeId>),
    /// It joins an existing party (first start, or restart after its disk
    /// was lost): it serves nothing until a reconfiguration installs it.
    /// The list is the founders', used only as a first directory guess.
    Joiner(Vec<NodeId>),
}

/// Identifies a request of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// Why an attempt is to be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// Its lease could not be renewed in time (self-fencing).
    Fenced,
    /// The task's timeout ran out.
    Timeout,
    /// The task was cancelled.
    Cancelled,
}

/// Something the host must do or learn.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Make `writes` durable, in order and atomically, then call
    /// [`Coordinator::handle_persisted`] with `token`.
    Persist {
        /// Echo it in `handle_persisted`.
        token: u64,
        /// The writes.
        writes: Vec<StoreWrite>,
    },
    /// Start attempt `attempt` of `task` (hand `attempt` to the process as
    /// `SHOAL_ATTEMPT`). The lease is valid until `lease_valid_until` on this
    /// host's clock unless renewed; the machine says when to kill.
    StartAttempt {
        /// The task.
        task: TaskId,
        /// The attempt number (fencing token).
        attempt: u64,
        /// What to run.
        spec: Box<TaskSpec>,
        /// The lease's end if never renewed.
        lease_valid_until: Instant,
        /// The latest checkpoint of an earlier attempt, to hand to this one.
        checkpoint: Option<CheckpointMeta>,
    },
    /// A renewal moved the lease of a running attempt to `valid_until`. A
    /// host whose machine may stall (GC, SIGSTOP, overload) should arm an
    /// independent watchdog that kills the attempt `fence_margin_ms` before
    /// the latest of these deadlines, so self-fencing does not depend on
    /// this machine being scheduled.
    LeaseExtended {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u64,
        /// The lease's new end on this host's clock.
        valid_until: Instant,
    },
    /// Kill the attempt now, then report its exit.
    KillAttempt {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u64,
        /// Why.
        reason: KillReason,
    },
    /// A submit was persisted by a majority.
    SubmitAcked {
        /// The request.
        request: RequestId,
        /// The new task's id.
        task: TaskId,
    },
    /// A submit could not be persisted (it may still have been: the task
    /// id is given so the caller can look).
    SubmitFailed {
        /// The request.
        request: RequestId,
        /// The task id it would have had.
        task: TaskId,
        /// Why.
        error: OpError,
    },
    /// The outcome of a cancel.
    CancelDone {
        /// The request.
        request: RequestId,
        /// The task.
        task: TaskId,
        /// Done, or why not.
        result: Result<(), OpError>,
    },
    /// An attempt of this node committed its outcome.
    AttemptCommitted {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u64,
        /// The record's new state.
        state: TaskState,
        /// The record's current attempt after the commit: equal to
        /// `attempt` unless fencing failed.
        record_attempt: u64,
    },
    /// An attempt's outcome was refused (it was no longer current).
    AttemptRefused {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u64,
        /// Why.
        error: OpError,
    },
    /// The outcome of a job register operation.
    JobDone {
        /// The request.
        request: RequestId,
        /// The register's value after the operation.
        result: Result<Option<Vec<u8>>, OpError>,
    },
    /// The outcome of [`Coordinator::save_checkpoint`]: the record names the
    /// checkpoint, or why not (a refusal means the attempt was fenced).
    CheckpointSaved {
        /// The request.
        request: RequestId,
        /// The task.
        task: TaskId,
        /// Done, or why not.
        result: Result<(), OpError>,
    },
    /// The outcome of a task read: the record as a majority of its shard
    /// group holds it (`None` when no such task exists).
    TaskRead {
        /// The request.
        request: RequestId,
        /// The task.
        task: TaskId,
        /// The record, or why the read did not complete.
        result: Result<Option<Box<TaskRecord>>, OpError>,
    },
    /// A shard moved to a new configuration through this node.
    Reconfigured {
        /// The new configuration.
        config: ShardConfig,
    },
    /// Something an operator must see (log it loudly).
    Warning {
        /// What happened.
        message: String,
    },
}

/// Why a request was refused at once. No state was changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RequestError {
    /// The task spec breaks a limit.
    #[error("invalid task: {0}")]
    Spec(#[from] SpecError),
    /// Too many operations are in flight.
    #[error("overloaded: too many operations in flight")]
    Overloaded,
    /// The shard's configuration is not known yet.
    #[error("shard {0:?} has no known configuration yet")]
    UnknownShard(ShardId),
    /// A forced reconfiguration named no member or too many.
    #[error("invalid member list")]
    Members,
    /// A checkpoint breaks a limit.
    #[error("invalid checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

/// A lease this node believes it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldLease {
    /// The task.
    pub task: TaskId,
    /// The attempt.
    pub attempt: u64,
    /// Its end on this host's clock.
    pub valid_until: Instant,
}

/// Counters for the host's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages dropped because they did not decode.
    pub malformed: u64,
    /// Claims started.
    pub claims_started: u64,
    /// Claims won.
    pub claims_won: u64,
    /// Offers of a task that fit no node, sent to the node that lacked
    /// least of it so that it pulls the task once room frees.
    pub parked_offers: u64,
    /// Attempts killed by self-fencing.
    pub fenced: u64,
    /// Register operations that completed.
    pub ops_done: u64,
    /// Register operations that failed.
    pub ops_failed: u64,
    /// Reconfigurations completed by this node.
    pub reconfigs: u64,
    /// Answers this node passed on from one member to another that could
    /// not hear it directly (a one-way cut between them).
    pub answers_relayed: u64,
}

enum InFlight {
    Cas(Box<CasOp>),
    Lease(Box<LeaseRound>),
    Pull { shard: ShardId, deadline: Instant },
}

/// Periodic deadlines of the machine (one table, quinn-style).
#[derive(Debug, Clone, Copy)]
struct Timers {
    pull: Instant,
    sweep: Instant,
    reconfig: Instant,
    directory: Instant,
    gc: Instant,
}

/// The per-node machine. See the module documentation for the call order.
pub struct Coordinator {
    me: NodeId,
    cfg: Config,
    rng: ChaCha8Rng,
    acceptor: Acceptor,
    params: AcceptorParams,
    directory: BTreeMap<ShardId, ShardConfig>,
    predecessor: BTreeMap<ShardId, ShardConfig>,
    needs_reconfig: BTreeSet<ShardId>,
    live: BTreeSet<NodeId>,
    view: BTreeMap<NodeId, NodeState>,
    next_req: u64,
    ballot_counter: u64,
    incarnation: u64,
    ops: BTreeMap<u64, InFlight>,
    /// Registers where this node may skip the prepare (see `cas`).
    fast: BTreeMap<RegisterKey, FastPath>,
    attempts: BTreeMap<TaskId, Attempt>,
    reconfigs: BTreeMap<ShardId, Reconfig>,
    offered: BTreeMap<TaskId, Instant>,
    retries: BTreeMap<TaskId, (Instant, ShardId, u64, TaskSpec)>,
    persist_waiting: BTreeMap<u64, Vec<(NodeId, PaxosMessage)>>,
    next_token: u64,
    transmits: VecDeque<(NodeId, Vec<u8>)>,
    local: VecDeque<(NodeId, PaxosMessage)>,
    effects: VecDeque<Effect>,
    timers: Timers,
    pull_cursor: u32,
    /// Set by `shoal drain`: this node claims nothing new (no offers taken,
    /// no pulls, no sweep claims); its running attempts go on.
    draining: bool,
    /// Shards with a task this node was offered but had no room for: its
    /// next pull with room enough goes there first (see `offer_received`).
    pull_hints: VecDeque<PullHint>,
    stats: Stats,
}

/// A shard worth pulling from once `slots` and `ask` are free, until `until`.
#[derive(Debug, Clone)]
struct PullHint {
    shard: ShardId,
    slots: u32,
    ask: Resources,
    until: Instant,
}

impl Coordinator {
    /// A node with an empty store. A founder serves the first
    /// configurations at once (and asks the host to persist them).
    pub fn new(
        me: NodeId,
        cfg: Config,
        seed: u64,
        now: Instant,
        bootstrap: Bootstrap,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let (founders, founder) = match bootstrap {
            Bootstrap::Founder(m) => (m, true),
            Bootstrap::Joiner(m) => (m, false),
        };
        let configs = first_configs(&cfg, &founders);
        let mut c = Coordinator::empty(me, cfg, seed, now);
        for conf in &configs {
            c.directory.insert(conf.shard, conf.clone());
        }
        if founder {
            let (acceptor, writes) = Acceptor::bootstrap(&configs, me, now);
            c.acceptor = acceptor;
            if !writes.is_empty() {
                c.persist(writes, Vec::new());
            }
        }
        Ok(c)
    }

    /// A node restarted with the entries it persisted. With `quarantine`
    /// (always, except in a planted-bug run) its acceptors grant no new
    /// lease for one acceptor lease length.
    pub fn restore(
        me: NodeId,
        cfg: Config,
        seed: u64,
        now: Instant,
        founders: &[NodeId],
        stored: impl IntoIterator<Item = (StoreKey, StoreValue)>,
        quarantine: bool,
    ) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut c = Coordinator::empty(me, cfg, seed, now);
        for conf in first_configs(&c.cfg, founders) {
            c.directory.insert(conf.shard, conf);
        }
        let q = if quarantine && !c.cfg.bugs.has(crate::Bug::NoQuarantine) {
            c.cfg.acceptor_lease_ms()
        } else {
            0
        };
        c.acceptor = Acceptor::restore(stored, now, q);
        for conf in c.acceptor.known_configs() {
            c.learn_config(conf);
        }
        Ok(c)
    }

    fn empty(me: NodeId, cfg: Config, seed: u64, now: Instant) -> Self {
        let params = AcceptorParams {
            acceptor_lease_ms: cfg.acceptor_lease_ms(),
            rho: cfg.rho,
            pull_pending_after_ms: PULL_PENDING_AFTER_MS,
            // The first sweeper had its turn; after that a puller with room
            // is a better bet than the next sweeper's offer to a node whose
            // gossiped free slots may be stale.
            pull_orphan_after_ms: cfg.sweep_stagger_ms,
            orphan_hand_out_hold_ms: cfg.sweep_stagger_ms,
            bugs: cfg.bugs.clone(),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Spread periodic work of nodes started together.
        let mut jitter = |ms: u64| now + Duration::from_millis(rng.gen_range(0..ms.max(1)));
        let timers = Timers {
            pull: jitter(cfg.pull_interval_ms),
            sweep: jitter(cfg.sweep_interval_ms),
            reconfig: jitter(cfg.reconfig_check_ms),
            directory: jitter(cfg.directory_sync_ms),
            gc: jitter(cfg.gc_interval_ms),
        };
        let incarnation = rng.gen::<u64>() | 1;
        let mut live = BTreeSet::new();
        live.insert(me);
        Coordinator {
            me,
            cfg,
            rng,
            acceptor: Acceptor::default(),
            params,
            directory: BTreeMap::new(),
            predecessor: BTreeMap::new(),
            needs_reconfig: BTreeSet::new(),
            live,
            view: BTreeMap::new(),
            next_req: 1,
            ballot_counter: 0,
            incarnation,
            ops: BTreeMap::new(),
            fast: BTreeMap::new(),
            attempts: BTreeMap::new(),
            reconfigs: BTreeMap::new(),
            offered: BTreeMap::new(),
            retries: BTreeMap::new(),
            persist_waiting: BTreeMap::new(),
            next_token: 1,
            transmits: VecDeque::new(),
            local: VecDeque::new(),
            effects: VecDeque::new(),
            timers,
            pull_cursor: 0,
            draining: false,
            pull_hints: VecDeque::new(),
            stats: Stats::default(),
        }
    }

    // ----- inputs -------------------------------------------------------

    /// One payload of the Paxos channel from `from` (authenticated by the
    /// transport). Malformed input is counted and dropped.
    pub fn handle_message(
        &mut self,
        now: Instant,
        from: NodeId,
        bytes: &[u8],
    ) -> Result<(), DecodeError> {
        let msg: PaxosMessage = match wire::decode(bytes, wire::MAX_STREAM_MESSAGE_BYTES) {
            Ok(m) => m,
            Err(e) => {
                self.stats.malformed += 1;
                return Err(e);
            }
        };
        self.dispatch(now, from, msg);
        self.deliver_local(now);
        Ok(())
    }

    /// The live members (this node included or not; it is always counted)
    /// with their latest gossiped state.
    pub fn handle_membership(&mut self, now: Instant, members: &[(NodeId, Option<NodeState>)]) {
        self.live = members.iter().map(|(id, _)| *id).collect();
        self.live.insert(self.me);
        self.view = members
            .iter()
            .filter_map(|(id, s)| s.clone().map(|s| (*id, s)))
            .collect();
        self.deliver_local(now);
    }

    /// The writes of the [`Effect::Persist`] with this token are durable:
    /// the answers that waited for them go out.
    pub fn handle_persisted(&mut self, now: Instant, token: u64) {
        if let Some(msgs) = self.persist_waiting.remove(&token) {
            for (to, msg) in msgs {
                self.send(to, msg);
            }
        }
        self.deliver_local(now);
    }

    /// Runs every timer that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.tick_ops(now);
        self.tick_attempts(now);
        if now >= self.timers.pull {
            self.timers.pull = now + Duration::from_millis(self.cfg.pull_interval_ms);
            self.pull(now);
        }
        if now >= self.timers.sweep {
            self.timers.sweep = now + Duration::from_millis(self.cfg.sweep_interval_ms);
            self.sweep(now);
        }
        if now >= self.timers.reconfig {
            self.timers.reconfig = now + Duration::from_millis(self.cfg.reconfig_check_ms);
            self.check_placement(now);
        }
        if now >= self.timers.directory {
            self.timers.directory = now + Duration::from_millis(self.cfg.directory_sync_ms);
            self.sync_directory();
        }
        if now >= self.timers.gc {
            self.timers.gc = now + Duration::from_millis(self.cfg.gc_interval_ms);
            self.collect_garbage(now);
        }
        self.deliver_local(now);
    }

    /// Submits a task; [`Effect::SubmitAcked`] follows once a majority of
    /// its shard group persisted it.
    pub fn submit(&mut self, now: Instant, spec: TaskSpec) -> Result<RequestId, RequestError> {
        spec.validate()?;
        let task = TaskId(self.rng.gen::<u64>() | 1);
        let record = TaskRecord::new(task, spec, self.wall_ms(now));
        self.start_request(
            now,
            task.0,
            RegisterKey::Task(task),
            Change::Task(Mutation::Create(Box::new(record))),
            |request| Purpose::Submit { request, task },
        )
    }

    /// Cancels a task from any non-final state; [`Effect::CancelDone`] follows.
    pub fn cancel(&mut self, now: Instant, task: TaskId) -> Result<RequestId, RequestError> {
        self.start_request(
            now,
            task.0,
            RegisterKey::Task(task),
            Change::Task(Mutation::Cancel {
                at_ms: self.wall_ms(now),
            }),
            |request| Purpose::Cancel { request, task },
        )
    }

    /// Unix milliseconds at `now`, for the records' timestamps.
    fn wall_ms(&self, now: Instant) -> u64 {
        self.cfg.wall_origin_ms.saturating_add(now.as_millis())
    }

    /// Starts a client's operation on register `key` of the shard that
    /// `shard_key` maps to; `purpose` names the effect that answers it.
    fn start_request(
        &mut self,
        now: Instant,
        shard_key: u64,
        key: RegisterKey,
        change: Change,
        purpose: impl FnOnce(RequestId) -> Purpose,
    ) -> Result<RequestId, RequestError> {
        let config = self.config_for(shard_key)?;
        let request = self.request_id();
        self.start_cas(now, config, key, change, purpose(request));
        self.deliver_local(now);
        Ok(request)
    }

    /// The configuration of the shard of `key`, if an operation may start.
    fn config_for(&self, key: u64) -> Result<ShardConfig, RequestError> {
        if self.ops.len() >= MAX_OPS_IN_FLIGHT {
            return Err(RequestError::Overloaded);
        }
        let shard = shard::shard_of(key, self.cfg.shards);
        self.directory
            .get(&shard)
            .cloned()
            .ok_or(RequestError::UnknownShard(shard))
    }

    /// Reads a task record linearizably; [`Effect::TaskRead`] follows.
    pub fn read_task(&mut self, now: Instant, task: TaskId) -> Result<RequestId, RequestError> {
        self.start_request(
            now,
            task.0,
            RegisterKey::Task(task),
            Change::Task(Mutation::Read),
            |request| Purpose::ReadTask { request, task },
        )
    }

    /// Names `meta` as the task's latest checkpoint, if `meta.attempt` is
    /// the current attempt and runs here; [`Effect::CheckpointSaved`]
    /// follows. Its chunks must already be durable on a majority of
    /// `meta.holders` (see [`crate::tasks::checkpoint::SaveTally`]).
    pub fn save_checkpoint(
        &mut self,
        now: Instant,
        task: TaskId,
        meta: CheckpointMeta,
    ) -> Result<RequestId, RequestError> {
        meta.validate()?;
        self.start_request(
            now,
            task.0,
            RegisterKey::Task(task),
            Change::Task(Mutation::Checkpoint {
                holder: self.me,
                meta,
            }),
            |request| Purpose::Checkpoint { request, task },
        )
    }

    /// The members of the shard group of `task`, which store its
    /// checkpoints; `None` before the shard's configuration is known.
    pub fn checkpoint_holders(&self, task: TaskId) -> Option<Vec<NodeId>> {
        let shard = shard::shard_of(task.0, self.cfg.shards);
        self.directory.get(&shard).map(|c| c.members.clone())
    }

    /// Writes (or with `None` deletes) job register `job`; [`Effect::JobDone`] follows.
    pub fn write_job(
        &mut self,
        now: Instant,
        job: u64,
        value: Option<Vec<u8>>,
    ) -> Result<RequestId, RequestError> {
        self.start_request(
            now,
            job,
            RegisterKey::Job(job),
            Change::JobWrite {
                bytes: value,
                over: None,
            },
            |request| Purpose::Job { request },
        )
    }

    /// Edits the record set held in job register `register` (see
    /// [`crate::federation::records`]) in one round; [`Effect::JobDone`]
    /// follows with the set's bytes after the edit, or why it was refused.
    pub fn edit_records(
        &mut self,
        now: Instant,
        register: u64,
        edit: crate::federation::records::RecordEdit,
    ) -> Result<RequestId, RequestError> {
        let id = self.rng.gen();
        self.start_request(
            now,
            register,
            RegisterKey::Job(register),
            Change::RecordEdit { edit, id },
            |request| Purpose::Job { request },
        )
    }

    /// Reads job register `job` linearizably; [`Effect::JobDone`] follows.
    pub fn read_job(&mut self, now: Instant, job: u64) -> Result<RequestId, RequestError> {
        self.start_request(
            now,
            job,
            RegisterKey::Job(job),
            Change::JobRead,
            |request| Purpose::Job { request },
        )
    }

    /// The process of `attempt` of `task` ended (exited, or was killed);
    /// `reason` says why in words where the exit code cannot (a program
    /// that could not start, a full disk), and reaches the task record.
    pub fn handle_attempt_exited(
        &mut self,
        now: Instant,
        task: TaskId,
        attempt: u64,
        exit_code: i32,
        reason: Option<String>,
    ) {
        self.attempt_exited(now, task, attempt, exit_code, reason);
        self.deliver_local(now);
    }

    // ----- outputs ------------------------------------------------------

    /// The next payload to send on the Paxos channel.
    pub fn poll_transmit(&mut self) -> Option<(NodeId, Vec<u8>)> {
        self.transmits.pop_front()
    }

    /// The next effect for the host.
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// When to call [`Coordinator::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let t = &self.timers;
        let mut next = t
            .pull
            .min(t.sweep)
            .min(t.reconfig)
            .min(t.directory)
            .min(t.gc);
        for op in self.ops.values() {
            next = next.min(match op {
                InFlight::Cas(c) => c.deadline.min(c.resend_at),
                InFlight::Lease(l) => l.deadline.min(l.resend_at),
                InFlight::Pull { deadline, .. } => *deadline,
            });
        }
        for a in self.attempts.values() {
            if let Some(d) = a.next_deadline(&self.cfg) {
                next = next.min(d);
            }
        }
        for r in self.reconfigs.values() {
            next = next.min(r.deadline);
        }
        for r in self.retries.values() {
            next = next.min(r.0);
        }
        Some(next)
    }

    // ----- observers ----------------------------------------------------

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.me
    }

    /// The leases this node believes it holds at `now` (its own clock).
    pub fn held_leases(&self, now: Instant) -> Vec<HeldLease> {
        self.attempts
            .values()
            .filter_map(|a| {
                a.valid_until.filter(|v| *v > now).map(|v| HeldLease {
                    task: a.task,
                    attempt: a.attempt,
                    valid_until: v,
                })
            })
            .collect()
    }

    /// The live leases this node's acceptors granted: (shard, task, owner, attempt).
    pub fn acceptor_leases(&self, now: Instant) -> Vec<(ShardId, TaskId, NodeId, u64)> {
        self.acceptor.live_leases(now)
    }

    /// The acceptor role's state.
    pub fn acceptor(&self) -> &Acceptor {
        &self.acceptor
    }

    /// The newest configuration known for each shard.
    pub fn directory(&self) -> &BTreeMap<ShardId, ShardConfig> {
        &self.directory
    }

    /// Shard groups that count a member this node does not see alive: each
    /// such group runs on fewer working acceptors than it should until the
    /// reconfiguration that replaces the member lands. Operators (and the
    /// chaos engine) take a second machine's disk only when this is zero
    /// everywhere, or one group could lose its majority.
    pub fn degraded_groups(&self) -> usize {
        self.directory
            .values()
            .filter(|c| c.members.iter().any(|m| !self.live.contains(m)))
            .count()
    }

    /// Starts (or cancels) draining: while set, this node takes no new
    /// attempts; offers it receives are passed on, and it neither pulls nor
    /// claims what it sweeps.
    pub fn set_draining(&mut self, draining: bool) {
        self.draining = draining;
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Slots not used by this node's attempts.
    pub fn slots_free(&self) -> u32 {
        self.cfg.slots_total.saturating_sub(self.slots_used())
    }

    /// The part of the configured capacity that this node's attempts do
    /// not reserve.
    pub fn resources_free(&self) -> Resources {
        let mut free = self.cfg.capacity.clone();
        free.take(&self.resources_used());
        free
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ----- plumbing -----------------------------------------------------

    fn request_id(&mut self) -> RequestId {
        RequestId(self.next_id())
    }

    fn next_id(&mut self) -> u64 {
        let id = self.next_req;
        self.next_req += 1;
        id
    }

    fn next_ballot(&mut self) -> Ballot {
        self.ballot_counter += 1;
        Ballot {
            counter: self.ballot_counter,
            node: self.me,
            incarnation: self.incarnation,
        }
    }

    fn observe_ballot(&mut self, b: Ballot) {
        self.ballot_counter = self.ballot_counter.max(b.counter);
    }

    fn send(&mut self, to: NodeId, msg: PaxosMessage) {
        if to == self.me {
            self.local.push_back((to, msg));
        } else {
            self.transmits.push_back((to, wire::encode(&msg)));
        }
    }

    fn broadcast(&mut self, members: &[NodeId], msg: &PaxosMessage) {
        for m in members {
            self.send(*m, msg.clone());
        }
    }

    /// Hands a request to this node's acceptor and sends its answer, once
    /// persisted, to the requester: directly, or through `via` when the
    /// requester asked for that.
    fn answer(&mut self, now: Instant, from: NodeId, msg: &PaxosMessage, via: Option<NodeId>) {
        let out = self.acceptor.handle(now, from, msg, &self.params);
        let replies: Vec<_> = out
            .reply
            .into_iter()
            .map(|r| match via {
                Some(via) if via != self.me && via != from => (
                    via,
                    PaxosMessage::Forward {
                        to: from,
                        reply: wire::encode(&r),
                    },
                ),
                _ => (from, r),
            })
            .collect();
        if out.writes.is_empty() {
            for (to, r) in replies {
                self.send(to, r);
            }
        } else {
            self.persist(out.writes, replies);
        }
    }

    /// The message a relay carries, if it decodes and is of the wanted
    /// kind (never another relay: one level only); else counted malformed.
    fn relayed(&mut self, bytes: &[u8], kind: fn(&PaxosMessage) -> bool) -> Option<PaxosMessage> {
        let msg = wire::decode::<PaxosMessage>(bytes, wire::MAX_STREAM_MESSAGE_BYTES)
            .ok()
            .filter(kind);
        if msg.is_none() {
            self.stats.malformed += 1;
        }
        msg
    }

    fn persist(&mut self, writes: Vec<StoreWrite>, replies: Vec<(NodeId, PaxosMessage)>) {
        let token = self.next_token;
        self.next_token += 1;
        self.persist_waiting.insert(token, replies);
        self.effects.push_back(Effect::Persist { token, writes });
    }

    fn deliver_local(&mut self, now: Instant) {
        for _ in 0..MAX_LOCAL_DELIVERIES {
            let Some((_, msg)) = self.local.pop_front() else {
                return;
            };
            let me = self.me;
            self.dispatch(now, me, msg);
        }
    }

    fn dispatch(&mut self, now: Instant, from: NodeId, msg: PaxosMessage) {
        match &msg {
            PaxosMessage::Prepare { .. }
            | PaxosMessage::Accept { .. }
            | PaxosMessage::LeaseRequest { .. }
            | PaxosMessage::LeaseRelease { .. }
            | PaxosMessage::Pull { .. }
            | PaxosMessage::Seal { .. }
            | PaxosMessage::Install { .. }
            | PaxosMessage::Activate { .. } => self.answer(now, from, &msg, None),
            PaxosMessage::ReplyVia { via, request } => {
                if let Some(request) = self.relayed(request, PaxosMessage::is_request) {
                    self.answer(now, from, &request, Some(*via));
                }
            }
            PaxosMessage::Forward { to, reply } => {
                if self.relayed(reply, PaxosMessage::is_reply).is_some() {
                    self.stats.answers_relayed += 1;
                    let (to, reply) = (*to, reply.clone());
                    self.send(
                        to,
                        PaxosMessage::Forwarded {
                            origin: from,
                            reply,
                        },
                    );
                }
            }
            PaxosMessage::Forwarded { origin, reply } => {
                if let Some(reply) = self.relayed(reply, PaxosMessage::is_reply) {
                    self.dispatch(now, *origin, reply);
                }
            }
            PaxosMessage::Promise { hdr, .. }
            | PaxosMessage::Accepted { hdr }
            | PaxosMessage::Refused { hdr, .. }
            | PaxosMessage::LeaseReply { hdr, .. }
            | PaxosMessage::PullReply { hdr, .. }
            | PaxosMessage::SealedState { hdr, .. }
            | PaxosMessage::Installed { hdr } => {
                if let PaxosMessage::Refused { reason, .. } = &msg {
                    self.learn_from_refusal(from, hdr.shard, reason);
                }
                let req = hdr.req;
                if self.reconfigs.get(&hdr.shard).is_some_and(|r| r.req == req) {
                    self.reconfig_reply(now, from, msg);
                } else {
                    self.op_reply(now, from, req, msg);
                }
            }
            PaxosMessage::Offer {
                shard,
                task,
                attempt,
                spec,
            } => {
                let (shard, task, attempt, spec) = (*shard, *task, *attempt, (**spec).clone());
                self.offer_received(now, shard, task, attempt, spec);
            }
            PaxosMessage::CancelNotice { task } => {
                let task = *task;
                self.cancel_notice(now, task);
            }
            PaxosMessage::Directory { configs } => {
                for c in configs.iter().take(shard::MAX_SHARDS as usize) {
                    self.learn_config(c.clone());
                }
            }
            PaxosMessage::ReadyCheck { hdr } => {
                let hdr = *hdr;
                self.send(from, PaxosMessage::Ready { hdr });
            }
            PaxosMessage::Ready { hdr } => {
                if self
                    .reconfigs
                    .get(&hdr.shard)
                    .is_some_and(|r| r.req == hdr.req)
                {
                    self.reconfig_reply(now, from, msg);
                }
            }
        }
    }

    fn learn_from_refusal(&mut self, from: NodeId, shard: ShardId, reason: &GroupRefusal) {
        match reason {
            GroupRefusal::Sealed(succ) => {
                if let Some(old) = self.directory.get(&shard) {
                    if old.epoch.saturating_add(1) == succ.epoch {
                        self.predecessor.insert(shard, old.clone());
                    }
                }
                self.learn_config(succ.clone());
            }
            GroupRefusal::Stale(c) => self.learn_config(c.clone()),
            GroupRefusal::Ballot(b) => self.observe_ballot(*b),
            GroupRefusal::NotMember => {
                // A member of the group we know has no state for it: it lost
                // its disk, or never got the install.
                if self
                    .directory
                    .get(&shard)
                    .is_some_and(|c| c.contains(&from))
                {
                    self.needs_reconfig.insert(shard);
                }
            }
        }
    }

    fn learn_config(&mut self, c: ShardConfig) {
        if c.shard.0 >= self.cfg.shards
            || c.members.is_empty()
            || c.members.len() > shard::MAX_GROUP_SIZE
        {
            return;
        }
        let newer = self
            .directory
            .get(&c.shard)
            .is_none_or(|k| k.epoch < c.epoch);
        if newer {
            self.directory.insert(c.shard, c);
        }
    }

    fn sync_directory(&mut self) {
        let peers: Vec<NodeId> = self
            .live
            .iter()
            .filter(|n| **n != self.me)
            .copied()
            .collect();
        if peers.is_empty() {
            return;
        }
        let to = peers[self.rng.gen_range(0..peers.len())];
        let configs = self.directory.values().cloned().collect();
        self.send(to, PaxosMessage::Directory { configs });
    }

    fn collect_garbage(&mut self, now: Instant) {
        self.acceptor.expire_leases(now);
        let pruned = self
            .acceptor
            .prune_tombstones(now, self.cfg.retention_ms, 256);
        if !pruned.is_empty() {
            self.persist(pruned, Vec::new());
        }
        self.offered
            .retain(|_, at| now.saturating_duration_since(*at).as_millis() < 10_000);
        let candidates = self
            .acceptor
            .gc_candidates(now, self.me, self.cfg.retention_ms, 64);
        for (config, task) in candidates {
            if self.ops.len() >= MAX_OPS_IN_FLIGHT / 2 {
                break;
            }
            let fresher = self.directory.get(&config.shard).cloned().unwrap_or(config);
            self.start_cas(
                now,
                fresher,
                RegisterKey::Task(task),
                Change::Task(Mutation::Delete),
                Purpose::Gc,
            );
        }
    }

    fn value_as_record(v: Option<&Value>) -> Option<&TaskRecord> {
        match v {
            Some(Value::Task(r)) => Some(r),
            _ => None,
        }
    }
}

/// The party's first configuration of every shard, placed over the founders.
pub fn first_configs(cfg: &Config, founders: &[NodeId]) -> Vec<ShardConfig> {
    let live: BTreeSet<NodeId> = founders.iter().copied().collect();
    if live.is_empty() {
        return Vec::new();
    }
    let size = shard::group_size(live.len(), cfg.group_size_small, cfg.group_size_large);
    shard::place(cfg.shards, size, &live, &BTreeMap::new())
        .into_iter()
        .map(|(shard, members)| ShardConfig {
            shard,
            epoch: 1,
            members,
            previous: Vec::new(),
        })
        .collect()
}
