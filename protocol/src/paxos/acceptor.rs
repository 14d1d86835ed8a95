//! The acceptor role of one node, for every shard it serves.
//!
//! Every answer that depends on a state change is returned together with
//! the store writes that make that change durable; the coordinator holds
//! the answer back until the host confirms the writes
//! ([`crate::coordinator::Coordinator::handle_persisted`]). Leases change no
//! durable state, so lease answers go out at once.

use super::lease::LeaseTable;
use super::{GroupStatus, RegisterKey, ShardMeta, Slot, StoreKey, StoreValue, StoreWrite, Value};
use crate::bugs::Bugs;
use crate::resources::Resources;
use crate::shard::{ShardConfig, ShardId};
use crate::tasks::{TaskId, TaskRecord, TaskState};
use crate::time::Instant;
use crate::wire::paxos::{GroupRefusal, Header, LeaseVerdict, PaxosMessage, Snapshot};
use crate::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Most registers one shard may hold at one acceptor: bounds snapshots and
/// every scan. Creating beyond it is refused (the prepare is not promised).
pub const MAX_REGISTERS_PER_SHARD: usize = 200_000;

/// Everything one acceptor holds for one shard.
#[derive(Debug, Clone)]
pub struct ShardAcceptor {
    /// Configuration and status (durable).
    pub meta: ShardMeta,
    /// The registers (durable).
    pub registers: BTreeMap<RegisterKey, Slot>,
    /// The leases (memory only).
    pub leases: LeaseTable,
    /// When each task's value last changed here (memory only).
    changed_at: BTreeMap<TaskId, Instant>,
    /// When each task that failed may be claimed again (memory only).
    eligible_at: BTreeMap<TaskId, Instant>,
    /// When each task was first seen final here (memory only).
    final_at: BTreeMap<TaskId, Instant>,
    /// When each task's record was seen deleted here (memory only).
    deleted_at: BTreeMap<TaskId, Instant>,
    /// Orphans handed to a puller, and when (memory only): one puller at a
    /// time per acceptor, so that pullers do not split the lease votes.
    handed_out: BTreeMap<TaskId, Instant>,
}

impl ShardAcceptor {
    /// `known_since` is when this acceptor's knowledge of the shard's
    /// leases starts: now after a restart (it forgot), the origin after an
    /// install (the sealed majority told it every live lease).
    fn new(
        meta: ShardMeta,
        registers: BTreeMap<RegisterKey, Slot>,
        leases: LeaseTable,
        now: Instant,
        known_since: Instant,
    ) -> Self {
        let mut s = ShardAcceptor {
            meta,
            registers,
            leases,
            changed_at: BTreeMap::new(),
            eligible_at: BTreeMap::new(),
            final_at: BTreeMap::new(),
            deleted_at: BTreeMap::new(),
            handed_out: BTreeMap::new(),
        };
        let tasks: Vec<(TaskId, bool)> = s
            .registers
            .iter()
            .filter_map(|(k, slot)| match (k, &slot.value) {
                (RegisterKey::Task(t), Some(Value::Task(r))) => Some((*t, r.state.is_final())),
                _ => None,
            })
            .collect();
        for (t, fin) in tasks {
            s.changed_at.insert(t, known_since);
            if fin {
                s.final_at.insert(t, now);
            }
        }
        s
    }

    /// This acceptor's copy of a task record.
    pub fn record(&self, task: TaskId) -> Option<&TaskRecord> {
        match self
            .registers
            .get(&RegisterKey::Task(task))
            .and_then(|s| s.value.as_ref())
        {
            Some(Value::Task(r)) => Some(r),
            _ => None,
        }
    }

    /// How long since this task's value last changed here.
    pub fn quiet_for(&self, now: Instant, task: TaskId) -> u64 {
        let at = self.changed_at.get(&task).copied().unwrap_or(Instant::ZERO);
        now.saturating_duration_since(at).as_millis() as u64
    }

    /// Whether a pending task's retry backoff is over.
    pub fn eligible(&self, now: Instant, task: TaskId) -> bool {
        self.eligible_at.get(&task).is_none_or(|at| *at <= now)
    }

    fn note_value(
        &mut self,
        now: Instant,
        key: RegisterKey,
        old: Option<&Value>,
        new: Option<&Value>,
    ) {
        let RegisterKey::Task(task) = key else { return };
        if old == new {
            return;
        }
        self.changed_at.insert(task, now);
        self.leases.forget_end(task);
        match new {
            Some(Value::Task(r)) => {
                if r.state.is_final() {
                    self.final_at.entry(task).or_insert(now);
                } else {
                    self.final_at.remove(&task);
                }
                if r.state == TaskState::Pending && r.retries_used > 0 {
                    self.eligible_at
                        .insert(task, now + Duration::from_millis(r.backoff_ms()));
                }
            }
            _ => {
                self.final_at.remove(&task);
                self.eligible_at.remove(&task);
                self.changed_at.remove(&task);
                self.deleted_at.insert(task, now);
            }
        }
    }
}

/// Tunables the acceptor needs from the coordinator's configuration.
#[derive(Debug, Clone)]
pub struct AcceptorParams {
    /// The acceptor's lease timer, already drift-corrected.
    pub acceptor_lease_ms: u64,
    /// The clock rate drift bound.
    pub rho: f64,
    /// A pending task is handed to pullers only once it has been quiet this
    /// long: its submitter's offer gets a head start instead of a race that
    /// can split the lease votes so that nobody wins.
    pub pull_pending_after_ms: u64,
    /// An orphan is handed to pullers only once its lease ended this long
    /// ago here: the group's own staggered sweep goes first.
    pub pull_orphan_after_ms: u64,
    /// How long an orphan handed to one puller is not handed to another:
    /// about one claim's round trips, so that the first puller's claim is
    /// not split by the next one's.
    pub orphan_hand_out_hold_ms: u64,
    /// Planted bugs.
    pub bugs: Bugs,
}

/// An answer and the writes it waits for.
#[derive(Debug, Clone, Default)]
pub struct AcceptorOutput {
    /// The answer to the sender, if any.
    pub reply: Option<PaxosMessage>,
    /// Writes to persist before the answer may leave.
    pub writes: Vec<StoreWrite>,
}

impl AcceptorOutput {
    fn reply(msg: PaxosMessage) -> Self {
        AcceptorOutput {
            reply: Some(msg),
            writes: Vec::new(),
        }
    }
}

/// The acceptor role of one node.
#[derive(Debug, Clone, Default)]
pub struct Acceptor {
    shards: BTreeMap<ShardId, ShardAcceptor>,
}

fn refused(hdr: Header, reason: GroupRefusal) -> AcceptorOutput {
    AcceptorOutput::reply(PaxosMessage::Refused { hdr, reason })
}

fn meta_write(shard: ShardId, meta: &ShardMeta) -> StoreWrite {
    StoreWrite {
        key: StoreKey::Meta(shard),
        value: Some(StoreValue::Meta(meta.clone())),
    }
}

fn slot_write(shard: ShardId, key: RegisterKey, slot: &Slot) -> StoreWrite {
    StoreWrite {
        key: StoreKey::Register(shard, key),
        value: Some(StoreValue::Register(slot.clone())),
    }
}

impl Acceptor {
    /// Acceptors of the party's first configurations, serving at once.
    pub fn bootstrap(configs: &[ShardConfig], me: NodeId, now: Instant) -> (Self, Vec<StoreWrite>) {
        let mut acc = Acceptor::default();
        let mut writes = Vec::new();
        for c in configs.iter().filter(|c| c.contains(&me)) {
            let meta = ShardMeta {
                config: c.clone(),
                status: GroupStatus::Active,
            };
            writes.push(meta_write(c.shard, &meta));
            acc.shards.insert(
                c.shard,
                ShardAcceptor::new(meta, BTreeMap::new(), LeaseTable::default(), now, now),
            );
        }
        (acc, writes)
    }

    /// Acceptors rebuilt from the host's store after a restart. With
    /// `quarantine`, no lease is granted for one acceptor lease length:
    /// this acceptor forgot which leases it granted.
    pub fn restore(
        stored: impl IntoIterator<Item = (StoreKey, StoreValue)>,
        now: Instant,
        quarantine_ms: u64,
    ) -> Self {
        let mut metas = BTreeMap::new();
        let mut regs: BTreeMap<ShardId, BTreeMap<RegisterKey, Slot>> = BTreeMap::new();
        for (k, v) in stored {
            match (k, v) {
                (StoreKey::Meta(s), StoreValue::Meta(m)) if m.config.shard == s => {
                    metas.insert(s, m);
                }
                (StoreKey::Register(s, key), StoreValue::Register(slot)) => {
                    regs.entry(s).or_default().insert(key, slot);
                }
                _ => {} // A mismatched pair is a store bug; ignoring it is safe (it was never acknowledged as ours).
            }
        }
        let until = now + Duration::from_millis(quarantine_ms);
        let shards = metas
            .into_iter()
            .map(|(s, meta)| {
                let r = regs.remove(&s).unwrap_or_default();
                (
                    s,
                    ShardAcceptor::new(meta, r, LeaseTable::quarantined(until), now, now),
                )
            })
            .collect();
        Acceptor { shards }
    }

    /// The shards this node has state for.
    pub fn shards(&self) -> impl Iterator<Item = (&ShardId, &ShardAcceptor)> {
        self.shards.iter()
    }

    /// One shard's state.
    pub fn shard(&self, shard: ShardId) -> Option<&ShardAcceptor> {
        self.shards.get(&shard)
    }

    fn serving(&mut self, hdr: &Header) -> Result<&mut ShardAcceptor, GroupRefusal> {
        let s = self
            .shards
            .get_mut(&hdr.shard)
            .ok_or(GroupRefusal::NotMember)?;
        if let GroupStatus::Sealed(succ) = &s.meta.status {
            if s.meta.config.epoch >= hdr.epoch {
                return Err(GroupRefusal::Sealed(succ.clone()));
            }
        }
        match s.meta.config.epoch.cmp(&hdr.epoch) {
            std::cmp::Ordering::Less => Err(GroupRefusal::NotMember),
            std::cmp::Ordering::Greater => Err(GroupRefusal::Stale(s.meta.config.clone())),
            std::cmp::Ordering::Equal => match &s.meta.status {
                GroupStatus::Active => Ok(s),
                // Installed acceptors serve at once: their state is what a
                // fresh acceptor would hold after accepting, late, the
                // proposals the sealed majority had accepted.
                GroupStatus::Installed(_) => Ok(s),
                GroupStatus::Sealed(_) => unreachable!("handled above"),
            },
        }
    }

    /// Handles one message addressed to the acceptor role. Messages for
    /// other roles give an empty output.
    pub fn handle(
        &mut self,
        now: Instant,
        from: NodeId,
        msg: &PaxosMessage,
        p: &AcceptorParams,
    ) -> AcceptorOutput {
        match msg {
            PaxosMessage::Prepare { hdr, key, ballot } => self.prepare(*hdr, *key, *ballot),
            PaxosMessage::Accept {
                hdr,
                key,
                ballot,
                value,
                next,
            } => self.accept(now, *hdr, *key, (*ballot, *next), value.clone()),
            PaxosMessage::LeaseRequest {
                hdr,
                lease_ms: _,
                asks,
            } => {
                let mut verdicts = Vec::with_capacity(asks.len());
                for a in asks.iter().take(crate::wire::paxos::MAX_LEASES_PER_MESSAGE) {
                    let h = Header {
                        shard: a.shard,
                        epoch: a.epoch,
                        req: hdr.req,
                    };
                    verdicts.push(match self.serving(&h) {
                        Ok(s) => {
                            let rec = s.record(a.task).cloned();
                            s.leases.decide(
                                now,
                                from,
                                a,
                                p.acceptor_lease_ms,
                                rec.as_ref(),
                                &p.bugs,
                            )
                        }
                        Err(r) => LeaseVerdict::Group(r),
                    });
                }
                AcceptorOutput::reply(PaxosMessage::LeaseReply {
                    hdr: *hdr,
                    verdicts,
                })
            }
            PaxosMessage::LeaseRelease {
                hdr,
                task,
                attempt,
                ballot,
            } => {
                if let Ok(s) = self.serving(hdr) {
                    s.leases.release(now, from, *task, *attempt, *ballot);
                }
                AcceptorOutput::default()
            }
            PaxosMessage::Pull {
                hdr,
                slots_free,
                resources_free,
                labels,
                max,
            } => match self.serving(hdr) {
                Ok(s) => {
                    let room = Room {
                        slots: *slots_free,
                        resources: resources_free,
                        labels,
                    };
                    let records = pullable(s, now, from, &room, *max, p, hdr.req);
                    s.note_handed_out(now, &records, p);
                    AcceptorOutput::reply(PaxosMessage::PullReply { hdr: *hdr, records })
                }
                Err(r) => refused(*hdr, r),
            },
            PaxosMessage::Seal { hdr, successor } => self.seal(now, *hdr, successor),
            PaxosMessage::Install {
                hdr,
                config,
                snapshot,
                predecessor,
                quarantine,
            } => self.install(now, *hdr, config, predecessor, snapshot, *quarantine, p),
            PaxosMessage::Activate { hdr } => {
                let Some(s) = self.shards.get_mut(&hdr.shard) else {
                    return AcceptorOutput::default();
                };
                if s.meta.config.epoch == hdr.epoch
                    && matches!(s.meta.status, GroupStatus::Installed(_))
                {
                    s.meta.status = GroupStatus::Active;
                    return AcceptorOutput {
                        reply: None,
                        writes: vec![meta_write(hdr.shard, &s.meta)],
                    };
                }
                AcceptorOutput::default()
            }
            _ => AcceptorOutput::default(),
        }
    }

    fn prepare(&mut self, hdr: Header, key: RegisterKey, ballot: super::Ballot) -> AcceptorOutput {
        let s = match self.serving(&hdr) {
            Ok(s) => s,
            Err(r) => return refused(hdr, r),
        };
        if !s.registers.contains_key(&key) && s.registers.len() >= MAX_REGISTERS_PER_SHARD {
            return refused(hdr, GroupRefusal::Ballot(ballot));
        }
        let slot = s.registers.entry(key).or_default();
        // A repeated prepare of the ballot already promised (the proposer
        // resent it because the promise was lost) is promised again: the
        // answer is the same, since nothing below it can be accepted since.
        if ballot < slot.promised || ballot <= slot.accepted {
            return refused(hdr, GroupRefusal::Ballot(slot.promised.max(slot.accepted)));
        }
        slot.promised = ballot;
        let w = slot_write(hdr.shard, key, slot);
        AcceptorOutput {
            reply: Some(PaxosMessage::Promise {
                hdr,
                slot: slot.clone(),
            }),
            writes: vec![w],
        }
    }

    /// `next`, if any, is promised together with the accept (see
    /// [`PaxosMessage::Accept`]): no ballot between `ballot` and `next` can
    /// then gather a majority of promises, so the value accepted here stays
    /// the one a prepare of `next` would have found.
    fn accept(
        &mut self,
        now: Instant,
        hdr: Header,
        key: RegisterKey,
        (ballot, next): (super::Ballot, Option<super::Ballot>),
        value: Option<Value>,
    ) -> AcceptorOutput {
        let s = match self.serving(&hdr) {
            Ok(s) => s,
            Err(r) => return refused(hdr, r),
        };
        // A first write may come without a prepare: the bound on registers
        // holds here too.
        if !s.registers.contains_key(&key) && s.registers.len() >= MAX_REGISTERS_PER_SHARD {
            return refused(hdr, GroupRefusal::Ballot(ballot));
        }
        let slot = s.registers.entry(key).or_default();
        if ballot < slot.promised || ballot < slot.accepted {
            return refused(hdr, GroupRefusal::Ballot(slot.promised.max(slot.accepted)));
        }
        let old = slot.value.clone();
        slot.promised = next.filter(|n| *n > ballot).unwrap_or(ballot);
        slot.accepted = ballot;
        slot.value = value;
        let w = slot_write(hdr.shard, key, slot);
        let new = slot.value.clone();
        s.note_value(now, key, old.as_ref(), new.as_ref());
        AcceptorOutput {
            reply: Some(PaxosMessage::Accepted { hdr }),
            writes: vec![w],
        }
    }

    fn seal(&mut self, now: Instant, hdr: Header, successor: &ShardConfig) -> AcceptorOutput {
        let Some(s) = self.shards.get_mut(&hdr.shard) else {
            return refused(hdr, GroupRefusal::NotMember);
        };
        // A member that moved on to the successor before the move was
        // activated still speaks for the sealed epoch with its installed
        // state, so that anyone can finish the move even when the old
        // members that moved on are most of the old group.
        // (Installed or active: what it holds is what a fresh acceptor may
        // hold after accepting, late, proposals that were really made.)
        if !matches!(s.meta.status, GroupStatus::Sealed(_))
            && s.meta.config.epoch == hdr.epoch.saturating_add(1)
            && s.meta.config == *successor
        {
            {
                let snapshot = Snapshot {
                    registers: s.registers.iter().map(|(k, v)| (*k, v.clone())).collect(),
                    leases: s.leases.transfer(now),
                    quarantine_ms: s.leases.quarantine_left_ms(now),
                };
                return AcceptorOutput::reply(PaxosMessage::SealedState { hdr, snapshot });
            }
        }
        if s.meta.config.epoch > hdr.epoch {
            let r = match &s.meta.status {
                GroupStatus::Sealed(succ) => GroupRefusal::Sealed(succ.clone()),
                _ => GroupRefusal::Stale(s.meta.config.clone()),
            };
            return refused(hdr, r);
        }
        if s.meta.config.epoch < hdr.epoch || successor.epoch != hdr.epoch.saturating_add(1) {
            return refused(hdr, GroupRefusal::NotMember);
        }
        let mut writes = Vec::new();
        if !matches!(s.meta.status, GroupStatus::Sealed(_)) {
            s.meta.status = GroupStatus::Sealed(successor.clone());
            writes.push(meta_write(hdr.shard, &s.meta));
        }
        let snapshot = Snapshot {
            registers: s.registers.iter().map(|(k, v)| (*k, v.clone())).collect(),
            leases: s.leases.transfer(now),
            quarantine_ms: s.leases.quarantine_left_ms(now),
        };
        AcceptorOutput {
            reply: Some(PaxosMessage::SealedState { hdr, snapshot }),
            writes,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        now: Instant,
        hdr: Header,
        config: &ShardConfig,
        predecessor: &ShardConfig,
        snapshot: &Snapshot,
        quarantine: bool,
        p: &AcceptorParams,
    ) -> AcceptorOutput {
        let installed = PaxosMessage::Installed { hdr };
        if config.shard != hdr.shard || config.epoch != hdr.epoch {
            return refused(hdr, GroupRefusal::NotMember);
        }
        let mut writes = Vec::new();
        if let Some(s) = self.shards.get(&hdr.shard) {
            match s.meta.config.epoch.cmp(&config.epoch) {
                std::cmp::Ordering::Equal => return AcceptorOutput::reply(installed),
                std::cmp::Ordering::Greater => {
                    return refused(hdr, GroupRefusal::Stale(s.meta.config.clone()))
                }
                std::cmp::Ordering::Less => {
                    writes.extend(s.registers.keys().map(|k| StoreWrite {
                        key: StoreKey::Register(hdr.shard, *k),
                        value: None,
                    }));
                }
            }
        }
        let registers: BTreeMap<RegisterKey, Slot> = snapshot
            .registers
            .iter()
            .filter(|(k, _)| !matches!(k, RegisterKey::Successor(e) if *e < config.epoch))
            .take(MAX_REGISTERS_PER_SHARD)
            .cloned()
            .collect();
        let meta = ShardMeta {
            config: config.clone(),
            status: GroupStatus::Installed(predecessor.clone()),
        };
        writes.push(meta_write(hdr.shard, &meta));
        writes.extend(registers.iter().map(|(k, v)| slot_write(hdr.shard, *k, v)));
        // The sealed majority reported every lease that can still be valid
        // (each one's granting majority meets the sealing majority), so the
        // carried leases replace the joining quarantine; a forced
        // reconfiguration cannot promise that and quarantines.
        // A sealed acceptor that had restarted may have forgotten grants:
        // its remaining quarantine carries over, stretched by the drift
        // factor because it was measured on the sender's clock.
        let carried = stretch(snapshot.quarantine_ms, p.rho);
        let quarantine_ms = if quarantine {
            p.acceptor_lease_ms.max(carried)
        } else {
            carried
        };
        let leases = LeaseTable::from_transfer(now, quarantine_ms, p.rho, &snapshot.leases);
        let known_since = if quarantine_ms > 0 {
            now
        } else {
            Instant::ZERO
        };
        self.shards.insert(
            hdr.shard,
            ShardAcceptor::new(meta, registers, leases, now, known_since),
        );
        AcceptorOutput {
            reply: Some(installed),
            writes,
        }
    }

    /// Final task records older than `retention_ms` at shards where this
    /// node is the first member of an active group (one collector per
    /// shard, so deletes do not race), at most `max`.
    pub fn gc_candidates(
        &self,
        now: Instant,
        me: NodeId,
        retention_ms: u64,
        max: usize,
    ) -> Vec<(ShardConfig, TaskId)> {
        let mut out = Vec::new();
        for s in self.shards.values() {
            if s.meta.status != GroupStatus::Active || s.meta.config.members.first() != Some(&me) {
                continue;
            }
            for (t, at) in &s.final_at {
                if out.len() >= max {
                    return out;
                }
                if now.saturating_duration_since(*at).as_millis() as u64 >= retention_ms {
                    out.push((s.meta.config.clone(), *t));
                }
            }
        }
        out
    }

    /// Forgets the slots of task records deleted more than `retention_ms`
    /// ago (at most `max`), returning the store deletes to persist. Safe:
    /// only a create can bring a record back from nothing, and a submit is
    /// retried for seconds, not for a retention period.
    pub fn prune_tombstones(
        &mut self,
        now: Instant,
        retention_ms: u64,
        max: usize,
    ) -> Vec<StoreWrite> {
        let mut writes = Vec::new();
        for (shard, s) in self.shards.iter_mut() {
            let old: Vec<TaskId> = s
                .deleted_at
                .iter()
                .filter(|(_, at)| {
                    now.saturating_duration_since(**at).as_millis() as u64 >= retention_ms
                })
                .map(|(t, _)| *t)
                .take(max.saturating_sub(writes.len()))
                .collect();
            for t in old {
                s.deleted_at.remove(&t);
                let key = RegisterKey::Task(t);
                if s.registers
                    .get(&key)
                    .is_some_and(|slot| slot.value.is_none())
                {
                    s.registers.remove(&key);
                    writes.push(StoreWrite {
                        key: StoreKey::Register(*shard, key),
                        value: None,
                    });
                }
            }
        }
        writes
    }

    /// Drops expired leases everywhere (bounded housekeeping).
    pub fn expire_leases(&mut self, now: Instant) {
        for s in self.shards.values_mut() {
            s.leases.expire_all(now);
        }
    }

    /// Every task this acceptor knows a live lease for, with its owner.
    pub fn live_leases(&self, now: Instant) -> Vec<(ShardId, TaskId, NodeId, u64)> {
        self.shards
            .iter()
            .flat_map(|(sh, s)| {
                s.leases
                    .live(now)
                    .map(move |(t, g)| (*sh, t, g.owner, g.attempt))
            })
            .collect()
    }

    /// The configurations this node serves or sealed (directory facts).
    pub fn known_configs(&self) -> Vec<ShardConfig> {
        let mut out = Vec::new();
        for s in self.shards.values() {
            out.push(s.meta.config.clone());
            if let GroupStatus::Sealed(succ) = &s.meta.status {
                out.push(succ.clone());
            }
        }
        out
    }
}

impl ShardAcceptor {
    /// Remembers the orphans among `records` as handed out, and forgets
    /// hand-outs older than the hold.
    fn note_handed_out(&mut self, now: Instant, records: &[TaskRecord], p: &AcceptorParams) {
        let hold = p.orphan_hand_out_hold_ms as u128;
        self.handed_out
            .retain(|_, at| now.saturating_duration_since(*at).as_millis() < hold);
        for r in records.iter().filter(|r| r.state.holder().is_some()) {
            self.handed_out.insert(r.id, now);
        }
    }

    fn recently_handed_out(&self, now: Instant, task: TaskId, p: &AcceptorParams) -> bool {
        self.handed_out.get(&task).is_some_and(|at| {
            now.saturating_duration_since(*at).as_millis() < p.orphan_hand_out_hold_ms as u128
        })
    }
}

/// `ms` measured on a clock within `1 ± rho`, as a safe upper bound on ours.
fn stretch(ms: u64, rho: f64) -> u64 {
    let rho = rho.clamp(0.0, 0.5);
    ((ms as f64) * (1.0 + rho) / (1.0 - rho)).ceil() as u64
}

/// What a puller has room for.
struct Room<'a> {
    slots: u32,
    resources: &'a Resources,
    labels: &'a BTreeMap<String, String>,
}

fn pullable(
    s: &ShardAcceptor,
    now: Instant,
    from: NodeId,
    room: &Room<'_>,
    max: u32,
    p: &AcceptorParams,
    req: u64,
) -> Vec<TaskRecord> {
    let max = max.min(crate::wire::paxos::MAX_PULL_RECORDS) as usize;
    let quarantined = s.leases.in_quarantine(now);
    let claimable = |r: &TaskRecord| -> bool {
        if r.spec.slots > room.slots
            || !room.resources.covers(&r.spec.resources)
            || !r.spec.fits_labels(room.labels)
        {
            return false;
        }
        let changed = s.changed_at.get(&r.id).copied().unwrap_or(Instant::ZERO);
        match r.state {
            TaskState::Pending => {
                s.eligible_at.get(&r.id).is_none_or(|at| *at <= now)
                    && now.saturating_duration_since(changed).as_millis() as u64
                        >= p.pull_pending_after_ms
            }
            TaskState::Claimed { holder, .. } | TaskState::Running { holder, .. } => {
                // An orphan: nobody holds its lease here, and long enough
                // has passed since it changed that a grant elsewhere would
                // have reached us too (or the holder is the puller itself,
                // who restarted and lost it).
                !quarantined
                    && (holder == from || !s.recently_handed_out(now, r.id, p))
                    && s.leases
                        .expired_for(now, r.id)
                        .is_some_and(|ms| holder == from || ms >= p.pull_orphan_after_ms)
                    && (holder == from
                        || now.saturating_duration_since(changed).as_millis() as u64
                            >= p.acceptor_lease_ms)
            }
            _ => false,
        }
    };
    // Start at a point that differs per request so that concurrent pullers
    // spread over different records instead of racing for the first one.
    let tasks: Vec<&TaskRecord> = s
        .registers
        .values()
        .filter_map(|slot| match &slot.value {
            Some(Value::Task(r)) => Some(&**r),
            _ => None,
        })
        .collect();
    if tasks.is_empty() {
        return Vec::new();
    }
    let start = (crate::shard::stable_hash(&[&from.0, &req.to_le_bytes()]) as usize) % tasks.len();
    // Orphans first: their attempt was admitted and ran already, and a
    // failover must not queue behind a backlog of new work. Pending tasks
    // fill what is left, in the same order.
    let mut out: Vec<TaskRecord> = Vec::new();
    let mut pending: Vec<&TaskRecord> = Vec::new();
    let mut seen = BTreeSet::new();
    for r in tasks[start..].iter().chain(tasks[..start].iter()) {
        if out.len() >= max {
            break;
        }
        if !claimable(r) || !seen.insert(r.id) {
            continue;
        }
        if r.state.holder().is_some() {
            out.push((*r).clone());
        } else if pending.len() < max {
            pending.push(r);
        }
    }
    let room = max - out.len();
    out.extend(pending.into_iter().take(room).cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::{ShardMeta, Slot};
    use crate::shard::{ShardConfig, ShardId};
    use crate::tasks::TaskSpec;

    fn params() -> AcceptorParams {
        AcceptorParams {
            acceptor_lease_ms: 1_000,
            rho: 0.01,
            pull_pending_after_ms: 100,
            pull_orphan_after_ms: 200,
            orphan_hand_out_hold_ms: 200,
            bugs: Bugs::none(),
        }
    }

    /// A shard whose registers hold `records`, quiet since time zero, with
    /// no lease granted: every claimed or running record is an orphan.
    fn shard_with(records: &[TaskRecord]) -> ShardAcceptor {
        let node = NodeId::from_u64;
        let meta = ShardMeta {
            config: ShardConfig {
                shard: ShardId(0),
                epoch: 1,
                members: vec![node(1), node(2), node(3)],
                previous: Vec::new(),
            },
            status: GroupStatus::Active,
        };
        let registers = records
            .iter()
            .map(|r| {
                let slot = Slot {
                    value: Some(Value::Task(Box::new(r.clone()))),
                    ..Slot::default()
                };
                (RegisterKey::Task(r.id), slot)
            })
            .collect();
        ShardAcceptor::new(
            meta,
            registers,
            LeaseTable::default(),
            Instant::ZERO,
            Instant::ZERO,
        )
    }

    fn record(id: u64, state: TaskState) -> TaskRecord {
        let mut r = TaskRecord::new(TaskId(id), TaskSpec::mock(1_000, 0), 0);
        if let Some((attempt, _)) = state.holder() {
            r.attempt = attempt;
        }
        r.state = state;
        r
    }

    fn pull(s: &mut ShardAcceptor, now: Instant, from: u64, max: u32) -> Vec<TaskId> {
        let p = params();
        let room = Room {
            slots: 4,
            resources: &Resources::default(),
            labels: &BTreeMap::new(),
        };
        let out = pullable(s, now, NodeId::from_u64(from), &room, max, &p, from);
        s.note_handed_out(now, &out, &p);
        out.iter().map(|r| r.id).collect()
    }

    #[test]
    fn pulls_hand_out_orphans_before_pending_tasks() {
        let running = TaskState::Running {
            attempt: 1,
            holder: NodeId::from_u64(9),
        };
        let mut records: Vec<TaskRecord> =
            (1..=20).map(|i| record(i, TaskState::Pending)).collect();
        records.push(record(21, running));
        let mut s = shard_with(&records);
        let now = Instant::from_millis(10_000);
        for from in 10..20 {
            s.handed_out.clear();
            let got = pull(&mut s, now, from, 1);
            assert_eq!(got, vec![TaskId(21)], "puller {from} got {got:?}");
        }
    }

    #[test]
    fn an_orphan_goes_to_one_puller_at_a_time() {
        let running = TaskState::Running {
            attempt: 1,
            holder: NodeId::from_u64(9),
        };
        let mut s = shard_with(&[record(1, running)]);
        let now = Instant::from_millis(10_000);
        assert_eq!(pull(&mut s, now, 10, 4), vec![TaskId(1)]);
        assert!(pull(&mut s, now + Duration::from_millis(50), 11, 4).is_empty());
        assert_eq!(
            pull(&mut s, now + Duration::from_millis(250), 11, 4),
            vec![TaskId(1)],
            "the hold never ended"
        );
    }
}
