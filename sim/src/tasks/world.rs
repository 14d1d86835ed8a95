//! The task world: every node runs a [`Coordinator`], hosted on shoal-sim's
//! network model ([`NetworkSampler`] latency/loss/duplicates, [`Links`]
//! partitions incl. asymmetric ones and swizzle-clogs), per-node drifting
//! clocks, and the scenario's fault schedule. Ported from the protocol
//! crate's in-memory chaos harness (`protocol/tests/tasks_harness`): same
//! disk model, attempt model with watchdog, and checkers of docs/protocol.md §9,
//! evaluated in global simulated time.
//!
//! Time advances in 1 ms global steps (like the harness), not through the
//! membership engine's event queue: the coordinator's timers are in local
//! milliseconds and every node is polled each step.

use crate::net::{Links, NetworkSampler};
use crate::scenario::NetworkModel;
use crate::trace::Trace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocol::coordinator::{Bootstrap, Config, Coordinator, Effect, OpError, RequestId};
use shoal_protocol::gossip::{Health, NodeState};
use shoal_protocol::paxos::{RegisterKey, StoreKey, StoreValue, StoreWrite, Value};
use shoal_protocol::resources::Resources;
use shoal_protocol::shard::{shard_of, ShardConfig, ShardId};
use shoal_protocol::tasks::{Driver, TaskId, TaskRecord, TaskSpec, TaskState};
use shoal_protocol::{Instant, NodeId};
use std::collections::{BTreeMap, VecDeque};

/// A running attempt in the attempt model.
#[derive(Debug, Clone)]
pub struct SimAttempt {
    /// Attempt number (the fencing token).
    pub attempt: u64,
    /// Global time at which the process exits by itself.
    pub ends_at: u64,
    /// Its exit code when it does.
    pub exit_code: i32,
    /// Slots it holds.
    pub slots: u32,
    /// The resources it reserved.
    pub resources: Resources,
    /// Local-clock deadline of the host supervisor's watchdog: it kills the
    /// attempt then even while the node's agent is paused.
    pub watchdog: Instant,
}

/// One virtual node of the task world.
pub struct TaskNode {
    /// Current identity (a node that lost its disk comes back as a new one).
    pub id: NodeId,
    /// The machine, `None` while crashed.
    pub coord: Option<Coordinator>,
    /// Whether the agent process is stopped (SIGSTOP-like pause).
    pub paused: bool,
    rate: f64,
    base_g: u64,
    base_l: u64,
    store: BTreeMap<StoreKey, StoreValue>,
    disk: VecDeque<(u64, u64, Vec<StoreWrite>)>,
    /// Attempts running under this node's supervisor.
    pub running: BTreeMap<TaskId, SimAttempt>,
    exits: Vec<(TaskId, u64, i32)>,
    inbox: Vec<(usize, Vec<u8>)>,
    restarts: u32,
    /// Global ms since which the node's own health checks fail.
    critical_since: Option<u64>,
}

impl TaskNode {
    /// This node's clock reading at global time `g`.
    pub fn local(&self, g: u64) -> Instant {
        let l = self.base_l as f64 + (g.saturating_sub(self.base_g)) as f64 * self.rate;
        Instant::from_millis(l as u64)
    }
    /// Whether the node is running (not crashed).
    pub fn up(&self) -> bool {
        self.coord.is_some()
    }
}

/// How the membership view handed to the coordinators lags the truth.
///
/// shoal's coordinators learn who is live from SWIM (the agent feeds its
/// membership machine's view). The world does not host SWIM machines; it
/// models their lag instead: each observer learns of a crash after its own
/// detection delay and of a (re)started identity after a dissemination
/// delay, both drawn uniformly per (observer, event). Zero ranges give the
/// simulator's ground truth (refreshed every 100 ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectionModel {
    /// Crash → observer sees the identity gone, ms.
    pub detect_ms: [u64; 2],
    /// Start of an identity → observer sees it, ms.
    pub join_ms: [u64; 2],
}

#[derive(Debug, Clone)]
struct Ghost {
    id: NodeId,
    down_at: u64,
    event: u64,
    state: NodeState,
}

/// A deterministic draw in `[lo, hi]` for one (seed, observer, event).
fn draw(seed: u64, observer: usize, event: u64, [lo, hi]: [u64; 2]) -> u64 {
    if hi <= lo {
        return lo;
    }
    // splitmix64 over the three inputs.
    let mut z =
        seed ^ (observer as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ event.rotate_left(32);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    lo + z % (hi - lo + 1)
}

/// A task whose holder crashed, until its next attempt starts.
#[derive(Debug, Clone)]
struct Orphan {
    /// Global ms of the crash.
    crashed_at: u64,
    /// The other members of the task's shard group at the crash (node
    /// indices with the identity they had then).
    others: Vec<(usize, NodeId)>,
    /// Whether one of them was crashed, paused or cut off from another
    /// since, or was already gone (restarted without its disk, not yet
    /// replaced): a second fault in a group of three, which the protocol
    /// is not built to mask (no majority answers until it heals).
    second_fault: bool,
}

/// The state record a node gossips (as the agent builds it from its
/// coordinator): capacity, load and labels, so that offers can match
/// labelled tasks.
fn gossiped_state(c: &Coordinator, node: &TaskNode, now: u64) -> NodeState {
    let health = match node.critical_since {
        Some(_) => Health::Critical {
            reason: "data directory full".into(),
        },
        None => Health::Passing,
    };
    NodeState {
        version: now,
        slots_total: c.config().slots_total,
        slots_free: c.slots_free(),
        capacity: c.config().capacity.clone(),
        free: c.resources_free(),
        running_attempts: node.running.len() as u32,
        labels: c.config().labels.clone(),
        health,
        ..NodeState::default()
    }
}

/// A completed job register operation: (node, request, result).
pub type JobDone = (usize, RequestId, Result<Option<Vec<u8>>, OpError>);

/// A violation found by a checker: (invariant, global ms, detail).
pub type Found = (&'static str, u64, String);

/// The whole world.
pub struct World {
    /// Global time, ms.
    pub now: u64,
    /// The nodes, by index.
    pub nodes: Vec<TaskNode>,
    queue: BTreeMap<(u64, u64), (usize, usize, Vec<u8>)>,
    seq: u64,
    /// World randomness (disk latency, restart seeds).
    pub rng: ChaCha8Rng,
    sampler: NetworkSampler,
    net_seed: u64,
    /// Which links are up.
    pub links: Links,
    cfg: Config,
    founders: Vec<NodeId>,
    /// Violations found, bounded.
    pub violations: Vec<Found>,
    /// Violations found, all.
    pub violations_total: u64,
    /// Submits issued: (node, request) -> global ms.
    pub submitted: BTreeMap<(usize, RequestId), u64>,
    /// Acknowledged tasks -> global ms of the submit.
    pub acked: BTreeMap<TaskId, u64>,
    /// First final commit per task, global ms.
    pub finished_at: BTreeMap<TaskId, u64>,
    /// Attempt starts.
    pub starts: u64,
    /// Checker counters.
    pub lease_overlaps: u64,
    /// Two attempts of one task running at one instant.
    pub double_runs: u64,
    /// Results written by a non-current attempt.
    pub stale_commits: u64,
    /// Attempts started on a node that knew its own health was critical.
    pub critical_starts: u64,
    /// Attempts started on a node whose running attempts then held more
    /// slots, CPU, memory or custom amounts than it offers.
    pub over_commits: u64,
    /// Global ms of the last membership (and health) feed.
    last_feed: u64,
    orphans: BTreeMap<TaskId, Orphan>,
    /// Holder crash → next attempt start, ms.
    pub failovers_ms: Vec<f64>,
    /// The same, of the failovers whose group kept every other member
    /// running and connected meanwhile (the holder's crash the only fault).
    pub failovers_one_fault_ms: Vec<f64>,
    next_membership: u64,
    detection: DetectionModel,
    /// Identities that crashed, still reported live to observers whose
    /// modelled failure detector has not fired yet.
    ghosts: Vec<Ghost>,
    /// Per node: global ms its current identity came up, and the event
    /// number that seeds its join delays (0: a founder, seen at once).
    came_up: Vec<(u64, u64)>,
    membership_events: u64,
    /// Job register operations completed: (node, request, result).
    pub jobs_done: Vec<JobDone>,
    /// Trace hash of everything observable.
    pub trace: Trace,
}

const MAX_KEPT_VIOLATIONS: usize = 100;

impl World {
    /// `n` founders with clock rates drawn within `1 ± drift_rho`.
    pub fn new(
        n: usize,
        cfg: Config,
        seed: u64,
        drift_rho: f64,
        net: NetworkModel,
        detection: DetectionModel,
    ) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let founders: Vec<NodeId> = (0..n).map(|i| NodeId::from_u64(i as u64 + 1)).collect();
        let mut nodes = Vec::new();
        for (i, id) in founders.iter().enumerate() {
            let rate = if drift_rho > 0.0 {
                1.0 + rng.gen_range(-drift_rho..=drift_rho)
            } else {
                1.0
            };
            let base_l = rng.gen_range(0..100_000);
            let mut c = cfg.clone();
            c.name = format!("n{i}");
            let coord = Coordinator::new(
                *id,
                c,
                rng.gen(),
                Instant::from_millis(base_l),
                Bootstrap::Founder(founders.clone()),
            )
            .ok();
            nodes.push(TaskNode {
                id: *id,
                coord,
                paused: false,
                rate,
                base_g: 0,
                base_l,
                store: BTreeMap::new(),
                disk: VecDeque::new(),
                running: BTreeMap::new(),
                exits: Vec::new(),
                inbox: Vec::new(),
                restarts: 0,
                critical_since: None,
            });
        }
        let net_seed = rng.gen();
        let mut w = World {
            now: 0,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            sampler: NetworkSampler::new(net, net_seed),
            net_seed,
            links: Links::new(n),
            cfg,
            founders,
            violations: Vec::new(),
            violations_total: 0,
            submitted: BTreeMap::new(),
            acked: BTreeMap::new(),
            finished_at: BTreeMap::new(),
            starts: 0,
            lease_overlaps: 0,
            double_runs: 0,
            stale_commits: 0,
            critical_starts: 0,
            over_commits: 0,
            last_feed: 0,
            orphans: BTreeMap::new(),
            failovers_ms: Vec::new(),
            failovers_one_fault_ms: Vec::new(),
            next_membership: 0,
            detection,
            ghosts: Vec::new(),
            came_up: vec![(0, 0); n],
            membership_events: 0,
            jobs_done: Vec::new(),
            trace: Trace::new(),
        };
        for i in 0..n {
            w.drain(i);
        }
        w.feed_membership();
        w
    }

    fn violation(&mut self, invariant: &'static str, detail: String) {
        self.violations_total += 1;
        self.trace.word(0xbad);
        if self.violations.len() < MAX_KEPT_VIOLATIONS {
            self.violations.push((invariant, self.now, detail));
        }
    }

    /// Whether node `i` is up and not paused.
    pub fn active(&self, i: usize) -> bool {
        self.nodes[i].up() && !self.nodes[i].paused
    }

    /// Runs `f` on node `i`'s machine at its local now, then drains it.
    pub fn with<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Coordinator, Instant) -> R,
    ) -> Option<R> {
        let local = self.nodes[i].local(self.now);
        let r = self.nodes[i].coord.as_mut().map(|c| f(c, local));
        self.drain(i);
        r
    }

    /// Submits `spec` at node `i` if it is active.
    pub fn submit(&mut self, i: usize, spec: TaskSpec) -> bool {
        if !self.active(i) {
            return false;
        }
        match self.with(i, |c, now| c.submit(now, spec)) {
            Some(Ok(r)) => {
                self.submitted.insert((i, r), self.now);
                true
            }
            _ => false,
        }
    }

    /// Hands every active coordinator its membership view: the identities
    /// that are up and that this observer has heard of, plus crashed ones
    /// it has not yet detected (with their last gossiped state), per
    /// [`DetectionModel`].
    fn feed_membership(&mut self) {
        let now = self.now;
        self.last_feed = now;
        let states: Vec<Option<(NodeId, NodeState)>> = self
            .nodes
            .iter()
            .map(|n| {
                let c = n.coord.as_ref()?;
                Some((n.id, gossiped_state(c, n, now)))
            })
            .collect();
        let det = self.detection;
        let seed = self.detection_seed();
        self.ghosts
            .retain(|g| now <= g.down_at + det.detect_ms[1].max(det.detect_ms[0]));
        for i in 0..self.nodes.len() {
            if !self.active(i) {
                continue;
            }
            let mut members: Vec<(NodeId, Option<NodeState>)> = Vec::new();
            for (j, st) in states.iter().enumerate() {
                let Some((id, state)) = st else { continue };
                let (up_at, event) = self.came_up[j];
                if i == j || event == 0 || now >= up_at + draw(seed, i, event, det.join_ms) {
                    members.push((*id, Some(state.clone())));
                }
            }
            for g in &self.ghosts {
                let seen = members.iter().any(|(id, _)| *id == g.id);
                if !seen && now < g.down_at + draw(seed, i, g.event, det.detect_ms) {
                    members.push((g.id, Some(g.state.clone())));
                }
            }
            self.with(i, |c, now| c.handle_membership(now, &members));
        }
    }

    /// The seed of the detection draws (fixed per world).
    fn detection_seed(&self) -> u64 {
        self.founders.len() as u64 ^ self.net_seed
    }

    fn drain(&mut self, i: usize) {
        for _ in 0..1_000_000 {
            let Some(c) = self.nodes[i].coord.as_mut() else {
                return;
            };
            if let Some((to, bytes)) = c.poll_transmit() {
                self.send(i, to, bytes);
                continue;
            }
            let Some(e) = c.poll_effect() else { return };
            self.effect(i, e);
        }
        self.violation(
            "bounded_outputs",
            format!("node {i} produced outputs without end"),
        );
    }

    fn send(&mut self, from: usize, to: NodeId, bytes: Vec<u8>) {
        let Some(to) = self.nodes.iter().position(|n| n.id == to) else {
            return;
        };
        if from != to && self.links.blocked(from as u32, to as u32) {
            return;
        }
        let fate = self.sampler.fate(false);
        for us in [fate.first_us, fate.duplicate_us].into_iter().flatten() {
            let d = us.div_ceil(1000).max(1);
            self.seq += 1;
            self.queue
                .insert((self.now + d, self.seq), (from, to, bytes.clone()));
        }
    }

    fn effect(&mut self, i: usize, e: Effect) {
        match e {
            Effect::Persist { token, writes } => {
                // The disk completes writes in the order they were issued.
                let d = self.rng.gen_range(1..=3);
                let at = self.nodes[i]
                    .disk
                    .back()
                    .map_or(0, |w| w.0)
                    .max(self.now + d);
                self.nodes[i].disk.push_back((at, token, writes));
            }
            Effect::StartAttempt {
                task,
                attempt,
                spec,
                lease_valid_until,
                ..
            } => {
                let others: Vec<(usize, u64)> = self
                    .nodes
                    .iter()
                    .enumerate()
                    .filter_map(|(j, n)| n.running.get(&task).map(|a| (j, a.attempt)))
                    .collect();
                // Critical before the last feed: its coordinator knew.
                if self.nodes[i]
                    .critical_since
                    .is_some_and(|since| since < self.last_feed)
                {
                    self.critical_starts += 1;
                    self.violation(
                        "critical_starts",
                        format!("task {task} attempt {attempt} started on n{i}, whose own health is critical"),
                    );
                }
                for (j, a) in others {
                    self.double_runs += 1;
                    self.violation(
                        "double_runs",
                        format!("task {task} attempt {attempt} started on n{i} while attempt {a} runs on n{j}"),
                    );
                }
                if let Some(c) = &self.nodes[i].coord {
                    let capacity = &c.config().capacity;
                    let mut held = spec.resources.clone();
                    let mut slots = spec.slots;
                    for a in self.nodes[i].running.values() {
                        held.add(&a.resources);
                        slots += a.slots;
                    }
                    let short = capacity.shortfall(&held);
                    if slots > c.config().slots_total || short.is_some() {
                        self.over_commits += 1;
                        let what = short.map_or_else(
                            || format!("{slots} slots of {}", c.config().slots_total),
                            |s| format!("{} {} of {}", s.kind, s.asked, s.have),
                        );
                        self.violation(
                            "over_commits",
                            format!("task {task} attempt {attempt} started on n{i}, whose attempts then held {what}"),
                        );
                    }
                }
                let (duration, code) = match spec.driver {
                    Driver::Mock {
                        duration_ms,
                        exit_code,
                    } => (duration_ms, exit_code),
                    // A container runs like a command: the simulator has neither.
                    Driver::Command | Driver::Docker(_) => (100, 0),
                };
                if let Some(orphan) = self.orphans.remove(&task) {
                    let ms = (self.now - orphan.crashed_at) as f64;
                    self.failovers_ms.push(ms);
                    if !orphan.second_fault {
                        self.failovers_one_fault_ms.push(ms);
                    }
                }
                self.starts += 1;
                self.trace.words(&[1, self.now, i as u64, task.0, attempt]);
                let margin = self.cfg.fence_margin_ms;
                self.nodes[i].running.insert(
                    task,
                    SimAttempt {
                        attempt,
                        ends_at: self.now + duration,
                        exit_code: code,
                        slots: spec.slots,
                        resources: spec.resources.clone(),
                        watchdog: lease_valid_until
                            .saturating_sub(std::time::Duration::from_millis(margin / 2)),
                    },
                );
            }
            Effect::LeaseExtended {
                task,
                attempt,
                valid_until,
            } => {
                let margin = self.cfg.fence_margin_ms;
                if let Some(a) = self.nodes[i].running.get_mut(&task) {
                    if a.attempt == attempt {
                        a.watchdog = a.watchdog.max(
                            valid_until
                                .saturating_sub(std::time::Duration::from_millis(margin / 2)),
                        );
                    }
                }
            }
            Effect::KillAttempt { task, attempt, .. }
                if self.nodes[i]
                    .running
                    .get(&task)
                    .is_some_and(|a| a.attempt == attempt) =>
            {
                self.nodes[i].running.remove(&task);
                self.nodes[i].exits.push((task, attempt, -9));
            }
            Effect::SubmitAcked { task, request } => {
                let at = self
                    .submitted
                    .get(&(i, request))
                    .copied()
                    .unwrap_or(self.now);
                self.acked.insert(task, at);
                self.trace.words(&[2, self.now, task.0]);
            }
            Effect::JobDone { request, result } => self.jobs_done.push((i, request, result)),
            Effect::AttemptCommitted {
                task,
                attempt,
                state,
                record_attempt,
            } => {
                if record_attempt != attempt {
                    self.stale_commits += 1;
                    self.violation(
                        "stale_commits",
                        format!("task {task} attempt {attempt} wrote {state:?} over attempt {record_attempt}"),
                    );
                }
                if state.is_final() {
                    self.finished_at.entry(task).or_insert(self.now);
                }
                self.trace.words(&[3, self.now, task.0, attempt]);
            }
            _ => {}
        }
    }

    /// Advances global time by one millisecond.
    pub fn step(&mut self) {
        self.now += 1;
        let now = self.now;
        while let Some((&k, _)) = self.queue.first_key_value() {
            if k.0 > now {
                break;
            }
            let (from, to, bytes) = self.queue.remove(&k).unwrap_or_default();
            if !self.nodes[to].up() {
                continue;
            }
            if self.nodes[to].paused {
                // Sits in the socket buffer until the process runs again.
                self.nodes[to].inbox.push((from, bytes));
                continue;
            }
            let from_id = self.nodes[from].id;
            self.with(to, |c, t| {
                let _ = c.handle_message(t, from_id, &bytes);
            });
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up() {
                continue;
            }
            // Attempt model: natural exits, and the supervisor's watchdog on
            // the node's own clock (it fires even while the agent is paused).
            let local = self.nodes[i].local(now);
            let node = &mut self.nodes[i];
            let ended: Vec<(TaskId, u64, i32)> = node
                .running
                .iter()
                .filter_map(|(t, a)| {
                    if a.ends_at <= now {
                        Some((*t, a.attempt, a.exit_code))
                    } else if local >= a.watchdog {
                        Some((*t, a.attempt, -9))
                    } else {
                        None
                    }
                })
                .collect();
            for (t, a, code) in ended {
                node.running.remove(&t);
                node.exits.push((t, a, code));
            }
            if self.nodes[i].paused {
                continue;
            }
            while self.nodes[i].disk.front().is_some_and(|w| w.0 <= now) {
                let Some((_, token, writes)) = self.nodes[i].disk.pop_front() else {
                    break;
                };
                for w in writes {
                    match w.value {
                        Some(v) => {
                            self.nodes[i].store.insert(w.key, v);
                        }
                        None => {
                            self.nodes[i].store.remove(&w.key);
                        }
                    }
                }
                self.with(i, |c, t| c.handle_persisted(t, token));
            }
            let exits = std::mem::take(&mut self.nodes[i].exits);
            for (t, a, code) in exits {
                self.with(i, |c, l| c.handle_attempt_exited(l, t, a, code, None));
            }
            let local = self.nodes[i].local(now);
            let due = self.nodes[i]
                .coord
                .as_ref()
                .and_then(|c| c.poll_timeout())
                .is_some_and(|t| t <= local);
            if due {
                self.with(i, |c, l| c.handle_timeout(l));
            }
        }
        if now >= self.next_membership {
            self.next_membership = now + 100;
            self.feed_membership();
        }
        self.check_leases();
        self.note_second_faults();
    }

    /// Marks orphans whose group has a second member crashed, paused,
    /// restarted as a new identity, or cut off from another member.
    fn note_second_faults(&mut self) {
        if self.orphans.values().all(|o| o.second_fault) {
            return;
        }
        let impaired = |w: &World, others: &[(usize, NodeId)]| {
            others.iter().any(|&(j, id)| {
                !w.active(j)
                    || w.nodes[j].id != id
                    || others
                        .iter()
                        .any(|&(k, _)| j != k && w.links.blocked(j as u32, k as u32))
            })
        };
        let hit: Vec<TaskId> = self
            .orphans
            .iter()
            .filter(|(_, o)| !o.second_fault && impaired(self, &o.others))
            .map(|(t, _)| *t)
            .collect();
        for t in hit {
            if let Some(o) = self.orphans.get_mut(&t) {
                o.second_fault = true;
            }
        }
    }

    /// The newest configuration of each shard that any running node knows.
    fn newest_configs(&self) -> BTreeMap<ShardId, &ShardConfig> {
        let mut newest: BTreeMap<ShardId, &ShardConfig> = BTreeMap::new();
        for n in &self.nodes {
            let Some(c) = n.coord.as_ref() else { continue };
            for config in c.directory().values() {
                let slot = newest.entry(config.shard).or_insert(config);
                if config.epoch > slot.epoch {
                    *slot = config;
                }
            }
        }
        newest
    }

    /// Checker: never two nodes believing they hold a valid lease on the
    /// same task at one global instant (each judged on its own clock).
    fn check_leases(&mut self) {
        let mut holders: BTreeMap<TaskId, Vec<(usize, u64)>> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(c) = n.coord.as_ref() else { continue };
            for l in c.held_leases(n.local(self.now)) {
                holders.entry(l.task).or_default().push((i, l.attempt));
            }
        }
        for (task, hs) in holders {
            if hs.len() > 1 {
                self.lease_overlaps += 1;
                self.violation("lease_overlaps", format!("task {task} held by {hs:?}"));
            }
        }
    }

    /// Crashes node `i`: machine, unflushed disk writes, and its attempts die.
    pub fn crash(&mut self, i: usize) {
        let Some(c) = self.nodes[i].coord.as_ref() else {
            return;
        };
        self.membership_events += 1;
        self.ghosts.push(Ghost {
            id: self.nodes[i].id,
            down_at: self.now,
            event: self.membership_events,
            state: gossiped_state(c, &self.nodes[i], self.now),
        });
        let node = &mut self.nodes[i];
        node.coord = None;
        node.paused = false;
        node.disk.clear();
        node.exits.clear();
        node.inbox.clear();
        let tasks: Vec<TaskId> = node.running.keys().copied().collect();
        node.running.clear();
        let crashed_id = self.nodes[i].id;
        let newest = self.newest_configs();
        let orphans: Vec<(TaskId, Orphan)> = tasks
            .into_iter()
            .filter(|t| !self.orphans.contains_key(t))
            .map(|t| {
                let group = newest
                    .get(&shard_of(t.0, self.cfg.shards))
                    .map_or(&[][..], |c| &c.members[..]);
                let others: Vec<(usize, NodeId)> = group
                    .iter()
                    .filter(|id| **id != crashed_id)
                    .filter_map(|id| {
                        self.nodes
                            .iter()
                            .position(|n| n.id == *id)
                            .map(|j| (j, *id))
                    })
                    .collect();
                // A member that no node answers to any more came back
                // without its disk under a new identity and was not
                // replaced yet: the group had a fault before this one.
                let member_gone =
                    others.len() + usize::from(group.contains(&crashed_id)) < group.len();
                let orphan = Orphan {
                    crashed_at: self.now,
                    others,
                    second_fault: member_gone,
                };
                (t, orphan)
            })
            .collect();
        self.orphans.extend(orphans);
        self.trace.words(&[4, self.now, i as u64]);
    }

    /// Whether node `i` may come back without its disk within the
    /// guarantees' assumption that a majority of every shard group keeps its
    /// disk: no newest group holding `i` may already count a member whose
    /// disk is gone (an identity no node has any more). Like an operator, the
    /// fault schedule takes a second disk only once the group was repaired.
    pub fn may_lose_disk(&self, i: usize) -> bool {
        let me = self.nodes[i].id;
        let current: std::collections::BTreeSet<NodeId> = self.nodes.iter().map(|n| n.id).collect();
        self.newest_configs()
            .values()
            .filter(|c| c.members.contains(&me))
            .all(|c| c.members.iter().all(|m| current.contains(m)))
    }

    /// Restarts node `i`, from its disk or (a new identity) without it.
    pub fn restart(&mut self, i: usize, keep_disk: bool) {
        if self.nodes[i].up() {
            return;
        }
        let seed = self.rng.gen();
        let mut cfg = self.cfg.clone();
        cfg.name = format!("n{i}");
        let local = self.nodes[i].local(self.now);
        let node = &mut self.nodes[i];
        node.restarts += 1;
        let coord = if keep_disk {
            let stored: Vec<(StoreKey, StoreValue)> =
                node.store.iter().map(|(k, v)| (*k, v.clone())).collect();
            Coordinator::restore(node.id, cfg, seed, local, &self.founders, stored, true)
        } else {
            // A node that lost its disk lost its key too: it comes back as
            // a new member (design: NodeId = hash of the certificate key).
            node.store.clear();
            node.id = NodeId::from_u64(1_000_000 + i as u64 * 1_000 + u64::from(node.restarts));
            Coordinator::new(
                node.id,
                cfg,
                seed,
                local,
                Bootstrap::Joiner(self.founders.clone()),
            )
        };
        node.coord = coord.ok();
        self.membership_events += 1;
        self.came_up[i] = (self.now, self.membership_events);
        self.trace
            .words(&[5, self.now, i as u64, u64::from(keep_disk)]);
        self.drain(i);
        self.feed_membership();
    }

    /// Node `i`'s own health checks turn critical (`true`) or pass again.
    /// Its peers and its own coordinator learn it with the next feed, as
    /// an agent's do from its next gossiped state.
    pub fn set_critical(&mut self, i: usize, critical: bool) {
        let node = &mut self.nodes[i];
        match (critical, node.critical_since) {
            (true, None) => node.critical_since = Some(self.now),
            (false, Some(_)) => node.critical_since = None,
            _ => return,
        }
        self.trace
            .words(&[6, self.now, i as u64, u64::from(critical)]);
    }

    /// Stops node `i`'s agent (its supervisor and attempts keep running).
    pub fn pause(&mut self, i: usize) {
        if self.nodes[i].up() {
            self.nodes[i].paused = true;
        }
    }

    /// Resumes node `i`'s agent; buffered messages are delivered now.
    pub fn resume(&mut self, i: usize) {
        if !self.nodes[i].paused {
            return;
        }
        self.nodes[i].paused = false;
        let inbox = std::mem::take(&mut self.nodes[i].inbox);
        for (from, bytes) in inbox {
            let from_id = self.nodes[from].id;
            self.with(i, |c, t| {
                let _ = c.handle_message(t, from_id, &bytes);
            });
        }
    }

    /// Any node's newest record of `task` from the newest-epoch acceptors.
    pub fn record(&self, task: TaskId) -> Option<TaskRecord> {
        let shard = shard_of(task.0, self.cfg.shards);
        match self.register(shard, RegisterKey::Task(task))? {
            Some(Value::Task(r)) => Some(*r),
            _ => None,
        }
    }

    fn register(&self, shard: ShardId, key: RegisterKey) -> Option<Option<Value>> {
        let epoch = self
            .nodes
            .iter()
            .filter_map(|n| n.coord.as_ref()?.acceptor().shard(shard))
            .map(|s| s.meta.config.epoch)
            .max()?;
        let mut best: Option<(shoal_protocol::paxos::Ballot, Option<Value>)> = None;
        for n in &self.nodes {
            let Some(s) = n.coord.as_ref().and_then(|c| c.acceptor().shard(shard)) else {
                continue;
            };
            if s.meta.config.epoch != epoch {
                continue;
            }
            if let Some(slot) = s.registers.get(&key) {
                if best.as_ref().is_none_or(|(b, _)| slot.accepted > *b) {
                    best = Some((slot.accepted, slot.value.clone()));
                }
            }
        }
        best.map(|(_, v)| v)
    }

    /// Whether every acknowledged task is final.
    pub fn all_final(&self) -> bool {
        self.acked
            .keys()
            .all(|t| self.record(*t).is_some_and(|r| r.state.is_final()))
    }

    /// End-of-run checkers: every acknowledged task is final (else lost),
    /// and its final state was written by its current attempt.
    pub fn check_final(&mut self) -> u64 {
        let mut lost = 0;
        let acked: Vec<TaskId> = self.acked.keys().copied().collect();
        for t in acked {
            match self.record(t) {
                Some(r) if r.state.is_final() => {
                    if matches!(r.state, TaskState::Succeeded | TaskState::Failed)
                        && r.final_attempt != Some(r.attempt)
                    {
                        self.stale_commits += 1;
                        self.violation(
                            "stale_commits",
                            format!(
                                "task {t} final state written by attempt {:?}, current {}",
                                r.final_attempt, r.attempt
                            ),
                        );
                    }
                }
                other => {
                    lost += 1;
                    self.violation(
                        "lost",
                        format!("acked task {t} not final: {:?}", other.map(|r| r.state)),
                    );
                }
            }
        }
        lost
    }
}
