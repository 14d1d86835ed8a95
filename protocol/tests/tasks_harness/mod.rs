//! An in-memory, deterministic multi-node host for the coordinator:
//! virtual global time in milliseconds, one drifting clock per node,
//! message loss, delay and (asymmetric) partitions, pauses, crashes and
//! restarts with or without disk, a disk with latency, an attempt model
//! with a watchdog, and checkers of docs/protocol.md §9 evaluated in global time.
#![allow(dead_code)]

pub mod chaos;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocol::coordinator::{Bootstrap, Config, Coordinator, Effect, KillReason, RequestId};
use shoal_protocol::gossip::NodeState;
use shoal_protocol::paxos::{RegisterKey, StoreKey, StoreValue, Value};
use shoal_protocol::shard::{shard_of, ShardId};
use shoal_protocol::tasks::{TaskId, TaskRecord, TaskSpec, TaskState};
use shoal_protocol::{Instant, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// A completed job register operation: (global time, node, request, result).
pub type JobDone = (
    u64,
    usize,
    RequestId,
    Result<Option<Vec<u8>>, shoal_protocol::coordinator::OpError>,
);

/// A running attempt in the attempt model.
#[derive(Debug, Clone)]
pub struct SimAttempt {
    pub attempt: u64,
    pub started: u64,
    /// Global time at which the process exits by itself.
    pub ends_at: u64,
    pub exit_code: i32,
    /// Local-clock deadline of the host watchdog.
    pub watchdog: Instant,
}

pub struct SimNode {
    pub id: NodeId,
    pub coord: Option<Coordinator>,
    pub paused_until: u64,
    rate: f64,
    base_g: u64,
    base_l: u64,
    pub store: BTreeMap<StoreKey, StoreValue>,
    disk: Vec<(u64, u64, Vec<shoal_protocol::paxos::StoreWrite>)>,
    pub running: BTreeMap<TaskId, SimAttempt>,
    /// Exits not yet reported (the agent was paused).
    exits: Vec<(TaskId, u64, i32)>,
    pub restarts: u32,
    /// While set, this node's disk never completes a write.
    pub disk_stalled: bool,
}

impl SimNode {
    pub fn local(&self, g: u64) -> Instant {
        let l = self.base_l as f64 + (g.saturating_sub(self.base_g)) as f64 * self.rate;
        Instant::from_millis(l as u64)
    }
    fn global(&self, l: Instant) -> u64 {
        let d = l.as_millis().saturating_sub(self.base_l) as f64 / self.rate;
        self.base_g.saturating_add(d.ceil().min(1e15) as u64)
    }
    pub fn up(&self) -> bool {
        self.coord.is_some()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Net {
    pub loss: f64,
    pub delay_min: u64,
    pub delay_max: u64,
    /// Directed links that drop everything: (from, to).
    pub blocked: BTreeSet<(usize, usize)>,
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub at: u64,
    pub node: usize,
    pub task: TaskId,
    pub attempt: u64,
    pub state: TaskState,
}

pub struct Sim {
    pub now: u64,
    pub nodes: Vec<SimNode>,
    queue: BTreeMap<(u64, u64), (usize, usize, Vec<u8>)>,
    seq: u64,
    pub rng: ChaCha8Rng,
    pub net: Net,
    pub cfg: Config,
    founders: Vec<NodeId>,
    pub violations: Vec<String>,
    pub submitted: BTreeMap<(usize, RequestId), u64>,
    pub acked: BTreeMap<TaskId, u64>,
    /// Prepares sent between nodes (a node's messages to itself stay inside
    /// its machine): counts the register rounds that were not skipped.
    pub prepares_sent: u64,
    pub submit_failed: u64,
    pub starts: Vec<(u64, usize, TaskId, u64)>,
    pub commits: Vec<Commit>,
    pub kills: Vec<(u64, usize, TaskId, u64, KillReason)>,
    pub effects: Vec<(u64, usize, Effect)>,
    pub log_effects: bool,
    pub lease_overlaps: u64,
    pub double_runs: u64,
    pub stale_commits: u64,
    /// Highest attempt ever started per task (global truth).
    latest_start: BTreeMap<TaskId, u64>,
    /// Crash instants of holders, for failover measurement: task -> crash time.
    orphaned_at: BTreeMap<TaskId, u64>,
    pub failovers_ms: Vec<u64>,
    next_membership: u64,
    pub check_leases_every_ms: u64,
    /// Completed job register operations: (global time, node, request, result).
    pub jobs_done: Vec<JobDone>,
    /// A task whose shard state is printed whenever it changes (debugging).
    pub watch: Option<TaskId>,
    last_watch: String,
}

pub fn node_id(i: usize) -> NodeId {
    NodeId::from_u64(i as u64 + 1)
}

impl Sim {
    /// `n` founders with clock rates drawn within `1 ± drift`.
    pub fn new(n: usize, cfg: Config, seed: u64, drift: f64) -> Sim {
        Sim::new_custom(n, cfg, seed, drift, |_, _| {})
    }

    /// Like [`Sim::new`], with a per-node tweak of the configuration.
    pub fn new_custom(
        n: usize,
        cfg: Config,
        seed: u64,
        drift: f64,
        tweak: impl Fn(usize, &mut Config),
    ) -> Sim {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let founders: Vec<NodeId> = (0..n).map(node_id).collect();
        let mut nodes = Vec::new();
        for (i, id) in founders.iter().enumerate() {
            let rate = 1.0 + rng.gen_range(-drift..=drift);
            let base_l = rng.gen_range(0..100_000);
            let mut c = cfg.clone();
            c.name = format!("n{i}");
            tweak(i, &mut c);
            let node_seed = rng.gen();
            let coord = Coordinator::new(
                *id,
                c,
                node_seed,
                Instant::from_millis(base_l),
                Bootstrap::Founder(founders.clone()),
            )
            .expect("valid config");
            nodes.push(SimNode {
                id: *id,
                coord: Some(coord),
                paused_until: 0,
                rate,
                base_g: 0,
                base_l,
                store: BTreeMap::new(),
                disk: Vec::new(),
                running: BTreeMap::new(),
                exits: Vec::new(),
                restarts: 0,
                disk_stalled: false,
            });
        }
        let mut sim = Sim {
            now: 0,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            net: Net {
                loss: 0.0,
                delay_min: 1,
                delay_max: 3,
                blocked: BTreeSet::new(),
            },
            cfg,
            founders,
            violations: Vec::new(),
            submitted: BTreeMap::new(),
            acked: BTreeMap::new(),
            prepares_sent: 0,
            submit_failed: 0,
            starts: Vec::new(),
            commits: Vec::new(),
            kills: Vec::new(),
            effects: Vec::new(),
            log_effects: false,
            lease_overlaps: 0,
            double_runs: 0,
            stale_commits: 0,
            latest_start: BTreeMap::new(),
            orphaned_at: BTreeMap::new(),
            failovers_ms: Vec::new(),
            next_membership: 0,
            check_leases_every_ms: 1,
            jobs_done: Vec::new(),
            watch: None,
            last_watch: String::new(),
        };
        for i in 0..n {
            sim.drain(i);
        }
        sim.feed_membership();
        sim
    }

    /// Delivers a raw message to node `to` as if from node `from`, now.
    pub fn inject(
        &mut self,
        from: usize,
        to: usize,
        msg: &shoal_protocol::wire::paxos::PaxosMessage,
    ) {
        let bytes = shoal_protocol::wire::encode(msg);
        let from_id = self.nodes[from].id;
        self.with(to, |c, t| {
            let _ = c.handle_message(t, from_id, &bytes);
        });
    }

    pub fn coord(&self, i: usize) -> &Coordinator {
        self.nodes[i].coord.as_ref().expect("node is up")
    }

    pub fn local_now(&self, i: usize) -> Instant {
        self.nodes[i].local(self.now)
    }

    fn active(&self, i: usize) -> bool {
        self.nodes[i].up() && self.nodes[i].paused_until <= self.now
    }

    /// Runs `f` on node `i`'s machine at its local now, then drains it.
    pub fn with<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Coordinator, Instant) -> R,
    ) -> Option<R> {
        let local = self.local_now(i);
        let r = self.nodes[i].coord.as_mut().map(|c| f(c, local));
        self.drain(i);
        r
    }

    pub fn submit(&mut self, i: usize, spec: TaskSpec) -> Option<RequestId> {
        if !self.active(i) {
            return None;
        }
        let r = self.with(i, |c, now| c.submit(now, spec))?.ok()?;
        self.submitted.insert((i, r), self.now);
        Some(r)
    }

    fn feed_membership(&mut self) {
        let members: Vec<(NodeId, Option<NodeState>)> = self
            .nodes
            .iter()
            .filter(|n| n.up())
            .map(|n| {
                let c = n.coord.as_ref().expect("up");
                let s = NodeState {
                    version: self.now,
                    slots_total: c.config().slots_total,
                    slots_free: c.slots_free(),
                    capacity: c.config().capacity.clone(),
                    free: c.resources_free(),
                    running_attempts: n.running.len() as u32,
                    ..NodeState::default()
                };
                (n.id, Some(s))
            })
            .collect();
        for i in 0..self.nodes.len() {
            if self.active(i) {
                let m = members.clone();
                self.with(i, |c, now| c.handle_membership(now, &m));
            }
        }
    }

    /// Moves every output of node `i` into the world.
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
        panic!("node {i} produced outputs without end");
    }

    fn send(&mut self, from: usize, to: NodeId, bytes: Vec<u8>) {
        let Some(to) = self.nodes.iter().position(|n| n.id == to) else {
            return;
        };
        if matches!(
            shoal_protocol::wire::decode(&bytes, shoal_protocol::wire::MAX_STREAM_MESSAGE_BYTES),
            Ok(shoal_protocol::wire::paxos::PaxosMessage::Prepare { .. })
        ) {
            self.prepares_sent += 1;
        }
        if self.net.blocked.contains(&(from, to))
            || self.rng.gen_bool(self.net.loss.clamp(0.0, 1.0))
        {
            return;
        }
        let d = self
            .rng
            .gen_range(self.net.delay_min..=self.net.delay_max.max(self.net.delay_min));
        self.seq += 1;
        self.queue
            .insert((self.now + d, self.seq), (from, to, bytes));
    }

    fn effect(&mut self, i: usize, e: Effect) {
        if self.log_effects {
            self.effects.push((self.now, i, e.clone()));
        }
        match e {
            Effect::Persist { token, writes } => {
                // The disk completes writes in the order they were issued.
                let d = self.rng.gen_range(1..=3);
                let at = self.nodes[i]
                    .disk
                    .last()
                    .map_or(0, |w| w.0)
                    .max(self.now + d);
                self.nodes[i].disk.push((at, token, writes));
            }
            Effect::StartAttempt {
                task,
                attempt,
                spec,
                lease_valid_until,
                ..
            } => {
                for (j, n) in self.nodes.iter().enumerate() {
                    if let Some(other) = n.running.get(&task) {
                        self.double_runs += 1;
                        self.violations.push(format!(
                            "t={} double run: task {task} attempt {attempt} on n{i} while attempt {} runs on n{j}",
                            self.now, other.attempt
                        ));
                    }
                }
                let (duration, code) = match spec.driver {
                    shoal_protocol::tasks::Driver::Mock {
                        duration_ms,
                        exit_code,
                    } => (duration_ms, exit_code),
                    shoal_protocol::tasks::Driver::Command
                    | shoal_protocol::tasks::Driver::Docker(_) => (100, 0),
                };
                if let Some(crash) = self.orphaned_at.remove(&task) {
                    self.failovers_ms.push(self.now - crash);
                    if std::env::var("SLOW").is_ok() && self.now - crash > 3_000 {
                        eprintln!(
                            "slow failover: task {task} crash t={crash} restart t={} on n{i}",
                            self.now
                        );
                    }
                }
                let prev = self.latest_start.entry(task).or_insert(0);
                *prev = (*prev).max(attempt);
                self.starts.push((self.now, i, task, attempt));
                let margin = self.cfg.fence_margin_ms;
                self.nodes[i].running.insert(
                    task,
                    SimAttempt {
                        attempt,
                        started: self.now,
                        ends_at: self.now + duration,
                        exit_code: code,
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
            Effect::KillAttempt {
                task,
                attempt,
                reason,
            } => {
                self.kills.push((self.now, i, task, attempt, reason));
                if let Some(a) = self.nodes[i].running.get(&task) {
                    if a.attempt == attempt {
                        self.nodes[i].running.remove(&task);
                        self.nodes[i].exits.push((task, attempt, -9));
                    }
                }
            }
            Effect::SubmitAcked { task, .. } => {
                self.acked.insert(task, self.now);
            }
            Effect::SubmitFailed { .. } => self.submit_failed += 1,
            Effect::JobDone { request, result } => {
                self.jobs_done.push((self.now, i, request, result))
            }
            Effect::AttemptCommitted {
                task,
                attempt,
                state,
                record_attempt,
            } => {
                // A result counts only from the current attempt. (The commit
                // may be reported after a later attempt started: a paused
                // proposer learns late that its write was chosen early.)
                if record_attempt != attempt {
                    self.stale_commits += 1;
                    self.violations.push(format!(
                        "t={} stale commit: task {task} attempt {attempt} wrote {state:?} over attempt {record_attempt}",
                        self.now
                    ));
                }
                self.commits.push(Commit {
                    at: self.now,
                    node: i,
                    task,
                    attempt,
                    state,
                });
            }
            _ => {}
        }
    }

    /// Advances global time by one millisecond.
    pub fn step(&mut self) {
        self.now += 1;
        let now = self.now;
        // Network.
        let due: Vec<(u64, u64)> = self
            .queue
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            let (from, to, bytes) = self.queue.remove(&k).expect("present");
            if !self.nodes[to].up() {
                continue;
            }
            if self.nodes[to].paused_until > now {
                // Sits in the socket buffer until the process runs again.
                self.seq += 1;
                self.queue
                    .insert((self.nodes[to].paused_until, self.seq), (from, to, bytes));
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
            // Attempt model: natural exits and the watchdog.
            let local = self.local_now(i);
            let node = &mut self.nodes[i];
            let mut ended = Vec::new();
            for (t, a) in node.running.iter() {
                if a.ends_at <= now {
                    ended.push((*t, a.attempt, a.exit_code));
                } else if local >= a.watchdog {
                    ended.push((*t, a.attempt, -9));
                }
            }
            for (t, a, code) in ended {
                node.running.remove(&t);
                node.exits.push((t, a, code));
            }
            if self.nodes[i].paused_until > now {
                continue;
            }
            // Disk.
            let stalled = self.nodes[i].disk_stalled;
            let done: Vec<usize> = (0..self.nodes[i].disk.len())
                .filter(|k| !stalled && self.nodes[i].disk[*k].0 <= now)
                .collect();
            for _ in done {
                let (_, token, writes) = self.nodes[i].disk.remove(0);
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
            let local = self.local_now(i);
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
        if let Some(t) = self.watch {
            let d = self.describe(t);
            let body: String = d.lines().skip(1).collect::<Vec<_>>().join("\n");
            if body != self.last_watch {
                eprintln!("{d}");
                self.last_watch = body;
            }
        }
        if self.check_leases_every_ms > 0 && now.is_multiple_of(self.check_leases_every_ms) {
            self.check_leases();
        }
    }

    pub fn run_for(&mut self, ms: u64) {
        for _ in 0..ms {
            self.step();
        }
    }

    /// Runs until `pred` holds or `max_ms` passed; whether it held.
    pub fn run_until(&mut self, max_ms: u64, mut pred: impl FnMut(&Sim) -> bool) -> bool {
        for _ in 0..max_ms {
            if pred(self) {
                return true;
            }
            self.step();
        }
        pred(self)
    }

    /// Checker 1: never two nodes believing they hold a valid lease on the
    /// same task at one global instant.
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
                if self.violations.len() < 50 {
                    self.violations.push(format!(
                        "t={} lease overlap on task {task}: {hs:?}",
                        self.now
                    ));
                }
            }
        }
    }

    pub fn crash(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.coord = None;
        node.disk.clear(); // unflushed writes are lost
        node.exits.clear();
        let tasks: Vec<TaskId> = node.running.keys().copied().collect();
        node.running.clear();
        for t in tasks {
            self.orphaned_at.entry(t).or_insert(self.now);
        }
        self.queue.retain(|_, (_, to, _)| *to != i);
    }

    pub fn restart(&mut self, i: usize, keep_disk: bool) {
        assert!(!self.nodes[i].up());
        let seed = self.rng.gen();
        let mut cfg = self.cfg.clone();
        cfg.name = format!("n{i}");
        let local = self.local_now(i);
        let node = &mut self.nodes[i];
        node.restarts += 1;
        node.paused_until = 0;
        let coord = if keep_disk {
            let stored: Vec<(StoreKey, StoreValue)> =
                node.store.iter().map(|(k, v)| (*k, v.clone())).collect();
            Coordinator::restore(node.id, cfg, seed, local, &self.founders, stored, true)
        } else {
            // A node that lost its disk lost its key too: it comes back as
            // a new member (design: NodeId = hash of the certificate key).
            node.store.clear();
            node.id = NodeId::from_u64(1_000 + i as u64 * 100 + u64::from(node.restarts));
            Coordinator::new(
                node.id,
                cfg,
                seed,
                local,
                Bootstrap::Joiner(self.founders.clone()),
            )
        };
        node.coord = Some(coord.expect("valid config"));
        self.drain(i);
        self.feed_membership();
    }

    pub fn pause(&mut self, i: usize, ms: u64) {
        self.nodes[i].paused_until = self.now + ms;
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for x in a {
            for y in b {
                self.net.blocked.insert((*x, *y));
                self.net.blocked.insert((*y, *x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.net.blocked.clear();
    }

    /// The newest chosen-looking record of a task: the highest-ballot
    /// accepted value among the acceptors of the newest known epoch.
    pub fn record(&self, task: TaskId) -> Option<TaskRecord> {
        let shard = shard_of(task.0, self.cfg.shards);
        let (slot, _) = self.register(shard, RegisterKey::Task(task))?;
        match slot {
            Some(Value::Task(r)) => Some(*r),
            _ => None,
        }
    }

    fn register(&self, shard: ShardId, key: RegisterKey) -> Option<(Option<Value>, u64)> {
        let mut best_epoch = 0;
        for n in &self.nodes {
            if let Some(s) = n.coord.as_ref().and_then(|c| c.acceptor().shard(shard)) {
                best_epoch = best_epoch.max(s.meta.config.epoch);
            }
        }
        let mut best: Option<(shoal_protocol::paxos::Ballot, Option<Value>)> = None;
        for n in &self.nodes {
            let Some(s) = n.coord.as_ref().and_then(|c| c.acceptor().shard(shard)) else {
                continue;
            };
            if s.meta.config.epoch != best_epoch {
                continue;
            }
            if let Some(slot) = s.registers.get(&key) {
                if best.as_ref().is_none_or(|(b, _)| slot.accepted > *b) {
                    best = Some((slot.accepted, slot.value.clone()));
                }
            }
        }
        best.map(|(_, v)| (v, best_epoch))
    }

    /// Checkers 3, 4 and 7 at the end of a run: every acknowledged task is
    /// final, and its final state was written by its current attempt.
    pub fn check_final(&mut self) -> Vec<TaskId> {
        let mut lost = Vec::new();
        let acked: Vec<TaskId> = self.acked.keys().copied().collect();
        for t in acked {
            match self.record(t) {
                Some(r) if r.state.is_final() => {
                    if matches!(r.state, TaskState::Succeeded | TaskState::Failed)
                        && r.final_attempt != Some(r.attempt)
                    {
                        self.violations.push(format!(
                            "task {t} final state written by attempt {:?}, current {}",
                            r.final_attempt, r.attempt
                        ));
                    }
                }
                other => {
                    lost.push(t);
                    if self.violations.len() < 50 {
                        self.violations.push(format!(
                            "acked task {t} not final: {:?}",
                            other.map(|r| r.state)
                        ));
                    }
                }
            }
        }
        lost
    }

    /// Everything the cluster knows about a task's shard, for failure messages.
    pub fn describe(&self, task: TaskId) -> String {
        let shard = shard_of(task.0, self.cfg.shards);
        let mut out = format!("task {task} shard {} at t={}\n", shard.0, self.now);
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(c) = n.coord.as_ref() else {
                out += &format!("  n{i}: down\n");
                continue;
            };
            let local = n.local(self.now);
            let idx = |id: &NodeId| self.nodes.iter().position(|n| n.id == *id).unwrap_or(99);
            let dir = c
                .directory()
                .get(&shard)
                .map(|d| (d.epoch, d.members.iter().map(idx).collect::<Vec<_>>()));
            let acc = c.acceptor().shard(shard).map(|a| {
                (
                    a.meta.config.epoch,
                    match &a.meta.status {
                        shoal_protocol::paxos::GroupStatus::Active => "active".to_string(),
                        shoal_protocol::paxos::GroupStatus::Installed(p) => {
                            format!("installed(pred {})", p.epoch)
                        }
                        shoal_protocol::paxos::GroupStatus::Sealed(s) => format!(
                            "sealed(succ {} {:?})",
                            s.epoch,
                            s.members.iter().map(idx).collect::<Vec<_>>()
                        ),
                    },
                    a.record(task).map(|r| {
                        (
                            format!("{:?}", r.state)
                                .chars()
                                .take(12)
                                .collect::<String>(),
                            r.attempt,
                            r.state.holder().map(|h| idx(&h.1)),
                        )
                    }),
                    a.leases
                        .live(local)
                        .filter(|(t, _)| *t == task)
                        .map(|(_, g)| (idx(&g.owner), g.attempt))
                        .collect::<Vec<_>>(),
                    a.leases.in_quarantine(local),
                )
            });
            let held: Vec<_> = c
                .held_leases(local)
                .into_iter()
                .filter(|l| l.task == task)
                .collect();
            out += &format!(
                "  n{i}: dir {dir:?}\n       acc {acc:?}\n       held {held:?} (local now {local:?}) running {:?} free {}\n",
                n.running.get(&task).map(|a| a.attempt),
                c.slots_free()
            );
        }
        out
    }

    pub fn running_anywhere(&self, task: TaskId) -> Option<(usize, u64)> {
        self.nodes
            .iter()
            .enumerate()
            .find_map(|(i, n)| n.running.get(&task).map(|a| (i, a.attempt)))
    }

    pub fn holder_of(&self, task: TaskId) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.coord.as_ref().is_some_and(|c| {
                c.held_leases(n.local(self.now))
                    .iter()
                    .any(|l| l.task == task)
            })
        })
    }
}

/// A short test configuration: 8 shards, the default lease timings.
pub fn test_config() -> Config {
    Config {
        shards: 8,
        retention_ms: 3_600_000,
        ..Config::default()
    }
}
