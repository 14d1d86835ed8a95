//! The holder side: claims, lease rounds, renewals, self-fencing, finishing,
//! and the scheduling inputs that start claims (offers, pulls, sweeps).
//!
//! An attempt of this node goes through
//! `Leasing -> Claiming -> Running -> (Killing) -> Finishing -> gone`.
//! Its lease is valid until `valid_until` on this host's clock: the send
//! time of the last round a majority granted, plus `lease_ms` (the holder's
//! timer starts before it asks). If renewals fail, the attempt is killed
//! `fence_margin_ms` before that instant and reported as fenced.

use super::cas::{Change, Purpose};
use super::{Coordinator, Effect, InFlight, KillReason, OpError, MAX_ATTEMPTS};
use crate::gossip::Health;
use crate::paxos::{Ballot, RegisterKey};
use crate::resources::Resources;
use crate::sched;
use crate::shard::{ShardConfig, ShardId};
use crate::tasks::{Mutation, Outcome, TaskId, TaskRecord, TaskSpec, TaskState};
use crate::time::Instant;
use crate::wire::paxos::{Header, LeaseAsk, LeaseVerdict, PaxosMessage};
use crate::{Bug, NodeId};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How long an offered task is not offered again by the same node.
const REOFFER_MS: u64 = 250;
/// How long a pull hint from a declined or parked offer is followed: long
/// enough for one of the node's running attempts to end. A stale hint
/// costs one pull that finds nothing.
const PULL_HINT_MS: u64 = 3_000;
/// Pull hints kept at most.
const MAX_PULL_HINTS: usize = 8;
/// How many nodes a task that fits nowhere is parked at: whichever frees
/// room first pulls it.
const PARK_FANOUT: usize = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Leasing,
    Claiming,
    Running,
    Killing(KillReason),
    Finishing,
}

#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) task: TaskId,
    pub(super) shard: ShardId,
    pub(super) attempt: u64,
    spec: TaskSpec,
    ballot: Ballot,
    pub(super) valid_until: Option<Instant>,
    phase: Phase,
    timeout_at: Option<Instant>,
    next_renew: Instant,
    renewing: bool,
    /// Names this claim: the answer of an abandoned earlier claim of the
    /// same attempt must not decide this one.
    claim: u64,
}

impl Attempt {
    fn uses_slots(&self) -> bool {
        !matches!(self.phase, Phase::Finishing)
    }

    fn fence_at(&self, margin_ms: u64) -> Option<Instant> {
        self.valid_until
            .map(|v| v.saturating_sub(Duration::from_millis(margin_ms)))
    }

    fn needs_lease(&self) -> bool {
        matches!(
            self.phase,
            Phase::Claiming | Phase::Running | Phase::Killing(_)
        )
    }

    pub(super) fn next_deadline(&self, cfg: &super::Config) -> Option<Instant> {
        let mut d: Option<Instant> = None;
        let mut add = |t: Instant| d = Some(d.map_or(t, |x: Instant| x.min(t)));
        if self.needs_lease() {
            if !self.renewing {
                add(self.next_renew);
            }
            if let Some(f) = self.fence_at(cfg.fence_margin_ms) {
                if self.phase == Phase::Running || self.phase == Phase::Claiming {
                    add(f);
                }
            }
        }
        if let (Some(t), Phase::Running) = (self.timeout_at, self.phase) {
            add(t);
        }
        d
    }
}

/// One lease round: a claim (one ask) or a renewal batch for one group.
pub(super) struct LeaseRound {
    config: ShardConfig,
    sent_at: Instant,
    asks: Vec<LeaseAsk>,
    grants: Vec<BTreeSet<NodeId>>,
    nays: Vec<BTreeSet<NodeId>>,
    /// What members with a newer record than the claim's said, final
    /// over stale.
    outdated: Vec<Option<Outdated>>,
    /// Longest time left on a lease held by a node that is not live.
    orphan_wait_ms: Vec<Option<u64>>,
    resolved: Vec<bool>,
    claim: bool,
    pub(super) deadline: Instant,
    /// When the request goes again to members that have not answered.
    pub(super) resend_at: Instant,
    request: PaxosMessage,
    answered: BTreeSet<NodeId>,
}

/// Why a member refused a claim without weighing the lease: its copy of
/// the record is newer than the one the claimer read. Ordered so that the
/// stronger news wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outdated {
    /// A newer attempt than the claimed one exists.
    Stale,
    /// The task is final.
    Final,
}

impl LeaseRound {
    fn note_outdated(&mut self, i: usize, news: Outdated) {
        self.outdated[i] = self.outdated[i].max(Some(news));
    }

    /// The members that answered the request.
    pub(super) fn answered(&self) -> &BTreeSet<NodeId> {
        &self.answered
    }

    /// The request for each member that has not answered it yet. A resend
    /// is safe: an acceptor that already granted this (owner, attempt)
    /// extends its own timer, which only outlasts the holder's more.
    pub(super) fn unanswered(&self) -> Vec<(NodeId, PaxosMessage)> {
        self.config
            .members
            .iter()
            .filter(|m| !self.answered.contains(m))
            .map(|m| (*m, self.request.clone()))
            .collect()
    }
}

impl Coordinator {
    pub(super) fn slots_used(&self) -> u32 {
        self.attempts
            .values()
            .filter(|a| a.uses_slots())
            .map(|a| a.spec.slots)
            .sum()
    }

    /// What this node's attempts reserve, from their claim until they end.
    pub(super) fn resources_used(&self) -> Resources {
        let mut used = Resources::default();
        for a in self.attempts.values().filter(|a| a.uses_slots()) {
            used.add(&a.spec.resources);
        }
        used
    }

    fn resources_cover(&self, spec: &TaskSpec) -> bool {
        self.cfg.bugs.has(Bug::OverCommit) || self.resources_free().covers(&spec.resources)
    }

    /// This node's own checks fail (its own gossiped record says critical):
    /// it takes no new work, however the work reaches it (docs/protocol.md §7).
    fn is_critical(&self) -> bool {
        !self.cfg.bugs.has(Bug::CriticalTakesWork)
            && self
                .view
                .get(&self.me)
                .is_some_and(|s| matches!(s.health, Health::Critical { .. }))
    }

    fn can_take(&self, spec: &TaskSpec) -> bool {
        !self.is_critical()
            && !self.draining
            && self.attempts.len() < MAX_ATTEMPTS
            && self.slots_free() >= spec.slots
            && self.resources_cover(spec)
            && spec.fits_labels(&self.cfg.labels)
    }

    /// Starts a claim of attempt `from.saturating_add(1)` if this node has room.
    pub(super) fn try_claim(
        &mut self,
        now: Instant,
        shard: ShardId,
        task: TaskId,
        from: u64,
        spec: TaskSpec,
    ) {
        if self.attempts.contains_key(&task) || !self.can_take(&spec) {
            return;
        }
        let Some(config) = self.directory.get(&shard).cloned() else {
            return;
        };
        let ballot = self.next_ballot();
        let claim_id = self.next_id();
        let attempt = from.saturating_add(1);
        self.stats.claims_started += 1;
        self.attempts.insert(
            task,
            Attempt {
                task,
                shard,
                attempt,
                spec,
                ballot,
                valid_until: None,
                phase: Phase::Leasing,
                timeout_at: None,
                next_renew: now,
                renewing: false,
                claim: claim_id,
            },
        );
        let ask = LeaseAsk {
            shard: config.shard,
            epoch: config.epoch,
            task,
            attempt,
            ballot,
            renewal: false,
        };
        self.start_lease_round(now, config, vec![ask], true);
    }

    fn start_lease_round(
        &mut self,
        now: Instant,
        config: ShardConfig,
        asks: Vec<LeaseAsk>,
        claim: bool,
    ) {
        let id = self.next_id();
        let n = asks.len();
        let msg = PaxosMessage::LeaseRequest {
            hdr: Header {
                shard: config.shard,
                epoch: config.epoch,
                req: id,
            },
            lease_ms: self.cfg.lease_ms,
            asks: asks.clone(),
        };
        let members = config.members.clone();
        // The holder's timer starts now, before anyone is asked.
        let round = LeaseRound {
            config,
            sent_at: now,
            asks,
            grants: vec![BTreeSet::new(); n],
            nays: vec![BTreeSet::new(); n],
            outdated: vec![None; n],
            orphan_wait_ms: vec![None; n],
            resolved: vec![false; n],
            claim,
            deadline: now + Duration::from_millis(self.cfg.op_timeout_ms),
            resend_at: now + Duration::from_millis(super::cas::RESEND_MS),
            request: msg.clone(),
            answered: BTreeSet::new(),
        };
        self.ops.insert(id, InFlight::Lease(Box::new(round)));
        self.broadcast(&members, &msg);
    }

    pub(super) fn lease_reply(&mut self, now: Instant, from: NodeId, id: u64, msg: PaxosMessage) {
        let Some(InFlight::Lease(mut round)) = self.ops.remove(&id) else {
            return;
        };
        if !round.config.contains(&from) {
            self.ops.insert(id, InFlight::Lease(round));
            return;
        }
        let quorum = round.config.quorum();
        let n = round.config.members.len();
        round.answered.insert(from);
        match msg {
            PaxosMessage::LeaseReply { verdicts, .. } => {
                for (i, v) in verdicts.iter().enumerate().take(round.asks.len()) {
                    match v {
                        LeaseVerdict::Granted => {
                            round.grants[i].insert(from);
                        }
                        LeaseVerdict::Final => {
                            round.note_outdated(i, Outdated::Final);
                            round.nays[i].insert(from);
                        }
                        LeaseVerdict::Stale => {
                            round.note_outdated(i, Outdated::Stale);
                            round.nays[i].insert(from);
                        }
                        LeaseVerdict::Group(reason) => {
                            let shard = round.asks[i].shard;
                            self.learn_from_refusal(from, shard, reason);
                            if matches!(reason, crate::wire::paxos::GroupRefusal::Sealed(_)) {
                                // Renew on the successor at once.
                                if let Some(a) = self.attempts.get_mut(&round.asks[i].task) {
                                    a.next_renew = now;
                                }
                            }
                            round.nays[i].insert(from);
                        }
                        LeaseVerdict::Held {
                            owner,
                            remaining_ms,
                            ..
                        } if !self.live.contains(owner) => {
                            let w = &mut round.orphan_wait_ms[i];
                            *w = Some(w.unwrap_or(0).max(*remaining_ms));
                            round.nays[i].insert(from);
                        }
                        _ => {
                            round.nays[i].insert(from);
                        }
                    }
                }
            }
            PaxosMessage::Refused { reason, .. } => {
                if matches!(reason, crate::wire::paxos::GroupRefusal::Sealed(_)) {
                    // Renew on the successor at once.
                    for a in self.attempts.values_mut() {
                        if a.shard == round.config.shard {
                            a.next_renew = now;
                        }
                    }
                }
                for nays in round.nays.iter_mut() {
                    nays.insert(from);
                }
            }
            _ => {}
        }
        // Members that may still answer: a round that cannot reach a
        // quorum even with them fails now instead of at its deadline, so
        // that its partial grants are released before they block the next
        // claimer (in a group of three with one member dead, one nay
        // settles it).
        let may_answer = round
            .config
            .members
            .iter()
            .filter(|m| !round.answered.contains(*m) && (**m == self.me || self.live.contains(*m)))
            .count();
        for i in 0..round.asks.len() {
            if round.resolved[i] {
                continue;
            }
            let hopeless = round.grants[i].len() + may_answer < quorum;
            if round.grants[i].len() >= quorum {
                round.resolved[i] = true;
                let (ask, sent_at, claim) = (round.asks[i], round.sent_at, round.claim);
                self.lease_granted(now, ask, sent_at, claim, &round.config);
            } else if round.nays[i].len() > n - quorum || hopeless {
                round.resolved[i] = true;
                let ask = round.asks[i];
                let outdated = round.outdated[i];
                let granted: Vec<NodeId> = round.grants[i].iter().copied().collect();
                if round.claim && outdated.is_none() {
                    self.retry_claim_later(now, ask, round.orphan_wait_ms[i], &round.config);
                }
                self.lease_refused(now, ask, round.claim, outdated, &round.config, &granted);
            }
        }
        if round.resolved.iter().all(|r| *r) {
            self.renew_round_closed(&round);
            return;
        }
        self.ops.insert(id, InFlight::Lease(round));
    }

    pub(super) fn lease_round_over(&mut self, now: Instant, _id: u64, round: Box<LeaseRound>) {
        for i in 0..round.asks.len() {
            if !round.resolved[i] {
                let granted: Vec<NodeId> = round.grants[i].iter().copied().collect();
                self.lease_refused(
                    now,
                    round.asks[i],
                    round.claim,
                    round.outdated[i],
                    &round.config,
                    &granted,
                );
            }
        }
        self.renew_round_closed(&round);
    }

    fn renew_round_closed(&mut self, round: &LeaseRound) {
        for ask in &round.asks {
            if let Some(a) = self.attempts.get_mut(&ask.task) {
                if a.attempt == ask.attempt {
                    a.renewing = false;
                }
            }
        }
    }

    fn lease_granted(
        &mut self,
        now: Instant,
        ask: LeaseAsk,
        sent_at: Instant,
        claim: bool,
        config: &ShardConfig,
    ) {
        let lease = Duration::from_millis(self.cfg.lease_ms);
        let Some(a) = self.attempts.get_mut(&ask.task) else {
            self.release(config, ask.task, ask.attempt, ask.ballot);
            return;
        };
        if a.attempt != ask.attempt {
            return;
        }
        let until = sent_at + lease;
        // A grant that arrives after the lease it gives ran out is worth
        // nothing; a claim that got only that gives up its slots.
        if until <= now {
            if claim && a.phase == Phase::Leasing {
                self.attempts.remove(&ask.task);
                self.release(config, ask.task, ask.attempt, ask.ballot);
            }
            return;
        }
        if claim {
            if a.phase != Phase::Leasing {
                return;
            }
            a.valid_until = Some(until);
            a.phase = Phase::Claiming;
            a.next_renew = sent_at + Duration::from_millis(self.cfg.renew_ms);
            let (task, from, claim) = (a.task, a.attempt - 1, a.claim);
            let mutation = Mutation::Claim {
                from,
                holder: self.me,
                holder_name: self.cfg.name.clone(),
                at_ms: self.wall_ms(now),
            };
            self.start_cas(
                now,
                config.clone(),
                RegisterKey::Task(task),
                Change::Task(mutation),
                Purpose::Claim {
                    task,
                    attempt: ask.attempt,
                    claim,
                },
            );
        } else if a.valid_until.is_some() {
            // A renewal only extends a lease still valid when it was asked
            // for; otherwise the attempt was already fenced.
            if a.valid_until.is_some_and(|v| v > sent_at && v < until) {
                a.valid_until = Some(until);
                if a.phase == Phase::Running && !self.cfg.bugs.has(Bug::NoSelfFence) {
                    self.effects.push_back(Effect::LeaseExtended {
                        task: a.task,
                        attempt: a.attempt,
                        valid_until: until,
                    });
                }
            }
        }
    }

    fn lease_refused(
        &mut self,
        now: Instant,
        ask: LeaseAsk,
        claim: bool,
        outdated: Option<Outdated>,
        config: &ShardConfig,
        granted: &[NodeId],
    ) {
        if claim {
            let ours = self
                .attempts
                .get(&ask.task)
                .is_some_and(|a| a.attempt == ask.attempt && a.phase == Phase::Leasing);
            if ours {
                self.attempts.remove(&ask.task);
            }
            // The acceptors' grants are per (owner, task, attempt): if this
            // node holds that lease through another round, releasing the
            // partial grants of this one would end the lease it relies on.
            if self.holds(ask.task, ask.attempt) {
                return;
            }
            // Release at every member, not only those whose grant arrived:
            // a grant whose answer was lost would otherwise block the next
            // claimer for a whole acceptor lease. A release names this
            // (owner, attempt, ballot), so it is a no-op where nothing was
            // granted.
            let _ = granted;
            if outdated.is_some() {
                // Some member knows a newer record (final, or a newer
                // attempt), yet this node claimed from an older one: the
                // copy it read (its own, or a puller's source) missed an
                // accept (a lost message; CASPaxos needs only a majority).
                // Left alone, that copy keeps handing the task out: if
                // final, forever, holding slots for nothing; if claimed,
                // to claimers of a used attempt number whose grants split
                // the votes of the group's real orphan claim. A read writes
                // the chosen value back to every member it reaches.
                self.start_cas(
                    now,
                    config.clone(),
                    RegisterKey::Task(ask.task),
                    Change::Task(Mutation::Read),
                    Purpose::Repair,
                );
            }
            let msg = PaxosMessage::LeaseRelease {
                hdr: Header {
                    shard: config.shard,
                    epoch: config.epoch,
                    req: 0,
                },
                task: ask.task,
                attempt: ask.attempt,
                ballot: ask.ballot,
            };
            self.broadcast(&config.members.clone(), &msg);
        } else if outdated == Some(Outdated::Final) {
            // The record is final (cancelled): stop the attempt at once.
            self.cancel_notice(now, ask.task);
        }
    }

    /// A claim lost to a lease whose owner is down: try again the moment
    /// that lease runs out instead of waiting for the next sweep.
    fn retry_claim_later(
        &mut self,
        now: Instant,
        ask: LeaseAsk,
        wait_ms: Option<u64>,
        config: &ShardConfig,
    ) {
        let (Some(wait), Some(a)) = (wait_ms, self.attempts.get(&ask.task)) else {
            return;
        };
        if a.phase != Phase::Leasing
            || wait > self.params.acceptor_lease_ms
            || self.retries.len() >= MAX_ATTEMPTS
        {
            return;
        }
        let at = now + Duration::from_millis(wait + 2);
        self.retries.insert(
            ask.task,
            (at, config.shard, ask.attempt - 1, a.spec.clone()),
        );
    }

    /// Claims postponed by [`Coordinator::retry_claim_later`] that are due.
    pub(super) fn retry_claims(&mut self, now: Instant) {
        let due: Vec<TaskId> = self
            .retries
            .iter()
            .filter(|(_, r)| r.0 <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in due {
            if let Some((_, shard, from, spec)) = self.retries.remove(&t) {
                self.try_claim(now, shard, t, from, spec);
            }
        }
    }

    /// Whether this node still counts on its lease of `(task, attempt)`.
    fn holds(&self, task: TaskId, attempt: u64) -> bool {
        self.attempts
            .get(&task)
            .is_some_and(|a| a.attempt == attempt && a.valid_until.is_some())
    }

    fn release(&mut self, config: &ShardConfig, task: TaskId, attempt: u64, ballot: Ballot) {
        if self.holds(task, attempt) {
            return;
        }
        let msg = PaxosMessage::LeaseRelease {
            hdr: Header {
                shard: config.shard,
                epoch: config.epoch,
                req: 0,
            },
            task,
            attempt,
            ballot,
        };
        let members = config.members.clone();
        self.broadcast(&members, &msg);
    }

    pub(super) fn claim_done(
        &mut self,
        now: Instant,
        task: TaskId,
        attempt: u64,
        claim: u64,
        res: Result<Option<TaskRecord>, OpError>,
    ) {
        let margin = self.cfg.fence_margin_ms;
        // Turned critical while the claim was in flight: a sick node starts
        // nothing, however the work reached it.
        let critical = self.is_critical();
        let Some(a) = self.attempts.get_mut(&task) else {
            return;
        };
        if a.attempt != attempt || a.phase != Phase::Claiming || a.claim != claim {
            return;
        }
        let won = matches!(&res, Ok(Some(r)) if r.state.holder() == Some((attempt, self.me)));
        let checkpoint = match &res {
            Ok(Some(r)) => r.checkpoint.clone(),
            _ => None,
        };
        let in_time = a.fence_at(margin).is_some_and(|f| now < f);
        let shard = a.shard;
        if won && in_time && !critical {
            self.stats.claims_won += 1;
            a.phase = Phase::Running;
            a.timeout_at = a.spec.timeout_ms.map(|ms| now + Duration::from_millis(ms));
            let (spec, mut until) = (a.spec.clone(), a.valid_until.unwrap_or(now));
            if self.cfg.bugs.has(Bug::NoSelfFence) {
                // The planted bug: nothing will ever stop this attempt.
                until = Instant::from_millis(u64::MAX);
            }
            // The claim wrote `Running` already: no separate start write.
            self.effects.push_back(Effect::StartAttempt {
                task,
                attempt,
                spec: Box::new(spec),
                lease_valid_until: until,
                checkpoint,
            });
        } else if won {
            // Won the record but the lease lapsed meanwhile, or this node
            // turned critical: never start; give the attempt back (as
            // fenced, which spends no retry) so that the next claim is quick.
            a.phase = Phase::Killing(KillReason::Fenced);
            self.attempt_exited(now, task, attempt, -1, None);
        } else {
            // Lost the race (or the task is final): let the lease go.
            let ballot = a.ballot;
            self.attempts.remove(&task);
            if let Some(config) = self.directory.get(&shard).cloned() {
                self.release(&config, task, attempt, ballot);
            }
        }
    }

    pub(super) fn attempt_exited(
        &mut self,
        now: Instant,
        task: TaskId,
        attempt: u64,
        exit_code: i32,
        host_reason: Option<String>,
    ) {
        let Some(a) = self.attempts.get_mut(&task) else {
            return;
        };
        if a.attempt != attempt {
            return;
        }
        let past_fence = a
            .fence_at(self.cfg.fence_margin_ms)
            .is_some_and(|f| now >= f);
        let outcome = match a.phase {
            // Ended after its lease could no longer be trusted (a watchdog
            // of the host fenced it): not the task's fault.
            Phase::Running if past_fence => Outcome::Fenced,
            Phase::Running => Outcome::Exited(exit_code),
            Phase::Killing(KillReason::Timeout) => Outcome::TimedOut,
            Phase::Killing(KillReason::Fenced) => Outcome::Fenced,
            Phase::Killing(KillReason::Cancelled) => {
                // The record is final already; nothing to commit.
                let (shard, ballot) = (a.shard, a.ballot);
                a.valid_until = None;
                self.attempts.remove(&task);
                if let Some(config) = self.directory.get(&shard).cloned() {
                    self.release(&config, task, attempt, ballot);
                }
                return;
            }
            Phase::Leasing | Phase::Claiming | Phase::Finishing => return,
        };
        let reason = match outcome {
            Outcome::Exited(_) => host_reason,
            Outcome::TimedOut => a
                .spec
                .timeout_ms
                .map(|ms| format!("timed out after {ms} ms")),
            Outcome::Fenced => Some("fenced: its lease could not be renewed".to_string()),
        };
        a.phase = Phase::Finishing;
        // Late binding: the slot is free now, so look for work now rather
        // than at the next pull tick.
        self.timers.pull = self.timers.pull.min(now);
        let shard = a.shard;
        let Some(config) = self.directory.get(&shard).cloned() else {
            return;
        };
        self.start_cas(
            now,
            config,
            RegisterKey::Task(task),
            Change::Task(Mutation::Finish {
                attempt,
                outcome,
                tail: String::new(),
                at_ms: self.wall_ms(now),
                reason,
            }),
            Purpose::Finish { task, attempt },
        );
    }

    pub(super) fn finish_done(
        &mut self,
        now: Instant,
        task: TaskId,
        attempt: u64,
        res: Result<Option<TaskRecord>, OpError>,
    ) {
        let Some(a) = self.attempts.get(&task) else {
            return;
        };
        if a.attempt != attempt {
            return;
        }
        let (shard, ballot) = (a.shard, a.ballot);
        self.attempts.remove(&task);
        match res {
            Ok(Some(r)) => {
                self.effects.push_back(Effect::AttemptCommitted {
                    task,
                    attempt,
                    state: r.state.clone(),
                    record_attempt: r.attempt,
                });
                if let Some(config) = self.directory.get(&shard).cloned() {
                    // Our belief ended when the attempt was removed; only
                    // now may the acceptors let the lease go.
                    self.release(&config, task, attempt, ballot);
                    if r.state == TaskState::Pending && r.backoff_ms() == 0 {
                        self.offer(now, config, r);
                    }
                }
            }
            Ok(None) => {}
            Err(error) => self.effects.push_back(Effect::AttemptRefused {
                task,
                attempt,
                error,
            }),
        }
    }

    /// The task was cancelled: kill its attempt here, if any.
    pub(super) fn cancel_notice(&mut self, _now: Instant, task: TaskId) {
        let Some(a) = self.attempts.get_mut(&task) else {
            return;
        };
        if a.phase == Phase::Running {
            a.phase = Phase::Killing(KillReason::Cancelled);
            self.effects.push_back(Effect::KillAttempt {
                task,
                attempt: a.attempt,
                reason: KillReason::Cancelled,
            });
        }
    }

    pub(super) fn notify_cancel(&mut self, task: TaskId) {
        let peers: Vec<NodeId> = self.live.iter().copied().collect();
        for p in peers {
            self.send(p, PaxosMessage::CancelNotice { task });
        }
    }

    /// Fences, timeouts and renewals that are due.
    pub(super) fn tick_attempts(&mut self, now: Instant) {
        let margin = self.cfg.fence_margin_ms;
        let no_fence = self.cfg.bugs.has(Bug::NoSelfFence);
        let mut kills = Vec::new();
        let mut give_back = Vec::new();
        for a in self.attempts.values_mut() {
            let fenced = a.fence_at(margin).is_some_and(|f| now >= f);
            match a.phase {
                Phase::Running if fenced && !no_fence => {
                    a.phase = Phase::Killing(KillReason::Fenced);
                    kills.push((a.task, a.attempt, KillReason::Fenced));
                }
                Phase::Running if a.timeout_at.is_some_and(|t| now >= t) => {
                    a.phase = Phase::Killing(KillReason::Timeout);
                    kills.push((a.task, a.attempt, KillReason::Timeout));
                }
                Phase::Claiming if fenced => give_back.push(a.task),
                _ => {}
            }
        }
        for (task, attempt, reason) in kills {
            if reason == KillReason::Fenced {
                self.stats.fenced += 1;
            }
            self.effects.push_back(Effect::KillAttempt {
                task,
                attempt,
                reason,
            });
        }
        // A claim whose lease lapsed before its CAS finished is abandoned
        // when the CAS answers (see `claim_done`).
        let _ = give_back;
        self.retry_claims(now);
        self.renew_due(now);
    }

    /// Renews every lease that is due, one request per acceptor group
    /// (shards served by the same nodes share it).
    fn renew_due(&mut self, now: Instant) {
        let mut by_group: BTreeMap<Vec<NodeId>, (ShardConfig, Vec<LeaseAsk>)> = BTreeMap::new();
        let renew = Duration::from_millis(self.cfg.renew_ms);
        for a in self.attempts.values_mut() {
            let valid = a.valid_until.is_some_and(|v| v > now);
            if !(a.needs_lease() && valid && !a.renewing && now >= a.next_renew) {
                continue;
            }
            let Some(config) = self.directory.get(&a.shard) else {
                continue;
            };
            a.renewing = true;
            a.next_renew = now + renew;
            let mut group = config.members.clone();
            group.sort_unstable();
            let entry = by_group
                .entry(group)
                .or_insert_with(|| (config.clone(), Vec::new()));
            entry.1.push(LeaseAsk {
                shard: config.shard,
                epoch: config.epoch,
                task: a.task,
                attempt: a.attempt,
                ballot: a.ballot,
                renewal: true,
            });
        }
        for (_, (config, asks)) in by_group {
            for chunk in asks.chunks(crate::wire::paxos::MAX_LEASES_PER_MESSAGE) {
                self.start_lease_round(now, config.clone(), chunk.to_vec(), false);
            }
        }
    }

    /// Offers a pending task to the best of `d` candidates (or claims it
    /// here when this node is the choice).
    pub(super) fn offer(&mut self, now: Instant, config: ShardConfig, r: TaskRecord) {
        if r.state != TaskState::Pending {
            return;
        }
        self.offer_to_best(now, config.shard, r.id, r.attempt, r.spec, false);
    }

    /// Sends an offer of attempt `from + 1` of `task` to the best of `d`
    /// candidates by the gossiped view (this node included unless
    /// `exclude_me`), or claims it here when this node is the choice.
    fn offer_to_best(
        &mut self,
        now: Instant,
        shard: ShardId,
        task: TaskId,
        from: u64,
        spec: TaskSpec,
        exclude_me: bool,
    ) {
        let mut view: BTreeMap<NodeId, crate::gossip::NodeState> = self
            .view
            .iter()
            .filter(|(id, _)| self.live.contains(id))
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        let mut mine = view.remove(&self.me).unwrap_or_default();
        if !exclude_me && !self.draining {
            mine.slots_free = self.slots_free();
            mine.slots_total = self.cfg.slots_total;
            mine.capacity = self.cfg.capacity.clone();
            mine.free = self.resources_free();
            mine.labels = self.cfg.labels.clone();
            view.insert(self.me, mine);
        }
        let Some(to) = sched::choose(
            &spec,
            &view,
            self.cfg.offer_choices,
            self.cfg.placement,
            &mut self.rng,
        ) else {
            if !exclude_me {
                self.park(now, shard, task, from, spec, &view);
            }
            return;
        };
        self.offered.insert(task, now);
        // Assume the offer is taken until gossip says otherwise, so that a
        // burst of submits does not herd onto one node.
        if let Some(s) = self.view.get_mut(&to) {
            s.slots_free = s.slots_free.saturating_sub(spec.slots);
            s.free.take(&spec.resources);
        }
        if to == self.me {
            self.try_claim(now, shard, task, from, spec);
        } else {
            self.send(
                to,
                PaxosMessage::Offer {
                    shard,
                    task,
                    attempt: from,
                    spec: Box::new(spec),
                },
            );
        }
    }

    /// An offer arrived. A node that has no room (the offerer's view was
    /// stale) passes it on once to the best candidate it knows instead of
    /// dropping it: the task would otherwise wait for the next sweep or
    /// pull. "Once" is per node and `REOFFER_MS`, so a chain of passes
    /// ends; the lease settles any race it causes.
    pub(super) fn offer_received(
        &mut self,
        now: Instant,
        shard: ShardId,
        task: TaskId,
        from: u64,
        spec: TaskSpec,
    ) {
        if self.attempts.contains_key(&task) {
            return;
        }
        if self.can_take(&spec) {
            self.try_claim(now, shard, task, from, spec);
            return;
        }
        // Under a backlog, gossiped free slots are stale by the time an
        // offer lands: slots are refilled by pulls the moment they free. So
        // this node remembers the shard, and its next pull with room goes
        // there, where orphans are handed out first.
        self.remember_shard(now, shard, &spec);
        let recently = self.offered.get(&task).is_some_and(|at| {
            now.saturating_duration_since(*at).as_millis() < u128::from(REOFFER_MS)
        });
        if !recently {
            self.offer_to_best(now, shard, task, from, spec, true);
        }
    }

    /// No node fits `task` now: offer it anyway to the few that lack least
    /// of it ([`sched::nearest`]). They decline, but the next pull with
    /// room of each goes to this shard (when one of them is this node, the
    /// hint is kept here).
    fn park(
        &mut self,
        now: Instant,
        shard: ShardId,
        task: TaskId,
        from: u64,
        spec: TaskSpec,
        view: &BTreeMap<NodeId, crate::gossip::NodeState>,
    ) {
        let to = sched::nearest(&spec, view, sched::MAX_CHOICES, PARK_FANOUT, &mut self.rng);
        if to.is_empty() {
            return;
        }
        self.stats.parked_offers += 1;
        for node in to {
            if node == self.me {
                self.remember_shard(now, shard, &spec);
                continue;
            }
            self.send(
                node,
                PaxosMessage::Offer {
                    shard,
                    task,
                    attempt: from,
                    spec: Box::new(spec.clone()),
                },
            );
        }
    }

    /// The next pull with room for `spec` goes to `shard` first.
    fn remember_shard(&mut self, now: Instant, shard: ShardId, spec: &TaskSpec) {
        let until = now + Duration::from_millis(PULL_HINT_MS);
        if let Some(h) = self.pull_hints.iter_mut().find(|h| h.shard == shard) {
            h.until = h.until.max(until);
            return;
        }
        if self.pull_hints.len() >= MAX_PULL_HINTS {
            self.pull_hints.pop_front();
        }
        self.pull_hints.push_back(super::PullHint {
            shard,
            slots: spec.slots,
            ask: spec.resources.clone(),
            until,
        });
    }

    /// Late binding: ask one group what can be claimed.
    pub(super) fn pull(&mut self, now: Instant) {
        let free = self.slots_free();
        if self.draining || free == 0 || self.directory.is_empty() || self.is_critical() {
            return;
        }
        let resources_free = self.resources_free();
        let shards = self.cfg.shards.max(1);
        self.pull_hints.retain(|h| h.until > now);
        let hinted = self.pull_hints.iter().position(|h| {
            h.slots <= free
                && resources_free.covers(&h.ask)
                && self.directory.contains_key(&h.shard)
        });
        let mut chosen = hinted
            .and_then(|i| self.pull_hints.remove(i))
            .and_then(|h| self.directory.get(&h.shard).cloned());
        for _ in 0..shards {
            if chosen.is_some() {
                break;
            }
            self.pull_cursor = (self.pull_cursor + 1) % shards;
            if let Some(c) = self.directory.get(&ShardId(self.pull_cursor)) {
                chosen = Some(c.clone());
                break;
            }
        }
        let Some(config) = chosen else { return };
        let live: Vec<NodeId> = config
            .members
            .iter()
            .filter(|m| self.live.contains(m))
            .copied()
            .collect();
        if live.is_empty() {
            return;
        }
        let to = live[self.rng.gen_range(0..live.len())];
        let id = self.next_id();
        self.ops.insert(
            id,
            InFlight::Pull {
                shard: config.shard,
                deadline: now + Duration::from_millis(self.cfg.op_timeout_ms),
            },
        );
        let msg = PaxosMessage::Pull {
            hdr: Header {
                shard: config.shard,
                epoch: config.epoch,
                req: id,
            },
            slots_free: free,
            resources_free,
            labels: self.cfg.labels.clone(),
            max: free.min(crate::wire::paxos::MAX_PULL_RECORDS),
        };
        self.send(to, msg);
    }

    pub(super) fn pull_reply(&mut self, now: Instant, id: u64, msg: PaxosMessage) {
        let Some(InFlight::Pull { shard, .. }) = self.ops.remove(&id) else {
            return;
        };
        if let PaxosMessage::PullReply { records, .. } = msg {
            for r in records
                .into_iter()
                .take(crate::wire::paxos::MAX_PULL_RECORDS as usize)
            {
                if crate::shard::shard_of(r.id.0, self.cfg.shards) != shard {
                    continue;
                }
                self.try_claim(now, shard, r.id, r.attempt, r.spec);
            }
        }
    }

    /// Every member of each active group looks for orphans (a claimed or
    /// running task whose lease ran out here) and pending tasks, and offers
    /// them: failover does not wait for a pull to come by. The members take
    /// turns of `sweep_stagger_ms`, in configuration order over the members
    /// this node believes live, counted from the moment the lease ended (or
    /// the pending task went quiet): one sweeper at a time, so claims do not
    /// split the lease votes; and when the first member is the one that died
    /// and this node's view does not know yet, its turn just passes.
    pub(super) fn sweep(&mut self, now: Instant) {
        let mut found: Vec<(ShardConfig, TaskRecord)> = Vec::new();
        let stagger = self.cfg.sweep_stagger_ms.max(1);
        for (_, s) in self.acceptor.shards() {
            if s.meta.status != crate::paxos::GroupStatus::Active {
                continue;
            }
            if s.leases.in_quarantine(now) {
                continue;
            }
            let live: Vec<&NodeId> = s
                .meta
                .config
                .members
                .iter()
                .filter(|m| **m == self.me || self.live.contains(m))
                .collect();
            let Some(rank) = live.iter().position(|m| **m == self.me) else {
                continue;
            };
            let my_turn = |ms: u64| (ms / stagger) % live.len() as u64 == rank as u64;
            for (_, slot) in s.registers.iter() {
                if found.len() >= 64 {
                    break;
                }
                let Some(r) = Coordinator::value_as_record(slot.value.as_ref()) else {
                    continue;
                };
                let recently = self.offered.get(&r.id).is_some_and(|at| {
                    now.saturating_duration_since(*at).as_millis() < REOFFER_MS as u128
                });
                if recently || self.attempts.contains_key(&r.id) {
                    continue;
                }
                let quiet = s.quiet_for(now, r.id);
                let orphan = match r.state {
                    TaskState::Claimed { .. } | TaskState::Running { .. } => {
                        quiet >= self.params.acceptor_lease_ms
                            && s.leases.expired_for(now, r.id).is_some_and(|ms| {
                                my_turn(ms.min(quiet - self.params.acceptor_lease_ms))
                            })
                    }
                    TaskState::Pending => {
                        s.eligible(now, r.id)
                            && quiet >= self.cfg.op_timeout_ms
                            && my_turn(quiet - self.cfg.op_timeout_ms)
                    }
                    _ => false,
                };
                if orphan {
                    found.push((s.meta.config.clone(), r.clone()));
                }
            }
        }
        for (config, mut r) in found {
            if let Some((attempt, _)) = r.state.holder() {
                r.attempt = attempt;
            }
            r.state = TaskState::Pending;
            if self.can_take(&r.spec) {
                // The sweeper is alive, has room and sits in the group: its
                // claim needs no offer hop and cannot be sent to a node that
                // died but is still in the membership view.
                self.offered.insert(r.id, now);
                self.try_claim(now, config.shard, r.id, r.attempt, r.spec);
            } else {
                self.offer(now, config, r);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinator::{Bootstrap, Config};
    use crate::gossip::NodeState;

    /// A founder of a three-node party, with `slots` slots and nothing sent yet.
    fn founder(slots: u32) -> (Coordinator, Instant) {
        let ids: Vec<NodeId> = (1..=3).map(NodeId::from_u64).collect();
        let cfg = Config {
            shards: 8,
            slots_total: slots,
            ..Config::default()
        };
        let now = Instant::from_millis(1_000);
        let mut c = Coordinator::new(ids[0], cfg, 7, now, Bootstrap::Founder(ids.clone()))
            .expect("valid config");
        c.handle_membership(now, &ids.iter().map(|id| (*id, None)).collect::<Vec<_>>());
        while c.poll_transmit().is_some() {}
        (c, now)
    }

    /// The shards of the pulls this node sent.
    fn pulled(c: &mut Coordinator) -> Vec<ShardId> {
        let mut out = Vec::new();
        while let Some((_, bytes)) = c.poll_transmit() {
            if let Ok(PaxosMessage::Pull { hdr, .. }) =
                crate::wire::decode(&bytes, crate::wire::MAX_STREAM_MESSAGE_BYTES)
            {
                out.push(hdr.shard);
            }
        }
        out
    }

    /// Gossips `health` as this node's own state (the host's membership
    /// view carries the node's own record, checks included).
    fn with_own_health(c: &mut Coordinator, now: Instant, health: Health) {
        let ids: Vec<NodeId> = (1..=3).map(NodeId::from_u64).collect();
        let members: Vec<(NodeId, Option<NodeState>)> = ids
            .iter()
            .map(|id| {
                let state = NodeState {
                    health: if *id == c.me {
                        health.clone()
                    } else {
                        Health::Passing
                    },
                    slots_total: 4,
                    slots_free: 4,
                    ..NodeState::default()
                };
                (*id, Some(state))
            })
            .collect();
        c.handle_membership(now, &members);
        while c.poll_transmit().is_some() {}
    }

    fn critical() -> Health {
        Health::Critical {
            reason: "data dir free space 0 MiB".into(),
        }
    }

    #[test]
    fn a_critical_node_does_not_pull() {
        let (mut c, now) = founder(4);
        with_own_health(&mut c, now, critical());
        c.pull(now);
        assert_eq!(
            pulled(&mut c),
            Vec::<ShardId>::new(),
            "a critical node pulled"
        );
        // Healthy again, it pulls at once.
        with_own_health(&mut c, now, Health::Passing);
        c.pull(now);
        assert_eq!(pulled(&mut c).len(), 1);
    }

    #[test]
    fn a_critical_node_claims_no_task_it_is_offered() {
        let (mut c, now) = founder(4);
        with_own_health(&mut c, now, critical());
        c.offer_received(now, ShardId(5), TaskId(42), 0, TaskSpec::mock(100, 0));
        assert!(
            !c.attempts.contains_key(&TaskId(42)),
            "claimed an offered task"
        );
        // Nor a task a pull it sent before turning critical hands it.
        let id = c.next_id();
        c.ops.insert(
            id,
            InFlight::Pull {
                shard: ShardId(5),
                deadline: now + Duration::from_millis(300),
            },
        );
        let task = (1..u64::MAX)
            .map(TaskId)
            .find(|t| crate::shard::shard_of(t.0, c.cfg.shards) == ShardId(5))
            .expect("a task of shard 5");
        let reply = PaxosMessage::PullReply {
            hdr: Header {
                shard: ShardId(5),
                epoch: 0,
                req: id,
            },
            records: vec![TaskRecord::new(task, TaskSpec::mock(100, 0), 0)],
        };
        c.pull_reply(now, id, reply);
        assert!(!c.attempts.contains_key(&task), "claimed a pulled task");
    }

    #[test]
    fn a_warning_node_still_claims() {
        let (mut c, now) = founder(4);
        let warning = Health::Warning {
            reason: "memory 91% used".into(),
        };
        with_own_health(&mut c, now, warning);
        c.offer_received(now, ShardId(5), TaskId(42), 0, TaskSpec::mock(100, 0));
        assert!(
            c.attempts.contains_key(&TaskId(42)),
            "a warning node declined"
        );
        c.pull(now);
        assert_eq!(pulled(&mut c).len(), 1, "a warning node did not pull");
    }

    #[test]
    fn a_declined_offer_steers_the_next_pull_with_room_enough() {
        let (mut c, now) = founder(1);
        // Offered a two-slot task with one slot: no room, so the shard is
        // remembered (the cursor would start at shard 1).
        let mut spec = TaskSpec::mock(100, 0);
        spec.slots = 2;
        c.offer_received(now, ShardId(5), TaskId(42), 0, spec);
        while c.poll_transmit().is_some() {}
        c.pull(now);
        assert_eq!(
            pulled(&mut c),
            vec![ShardId(1)],
            "one free slot cannot take it"
        );
        c.cfg.slots_total = 2;
        c.pull(now);
        assert_eq!(
            pulled(&mut c),
            vec![ShardId(5)],
            "the hint was not followed"
        );
        // Followed once; then the cursor goes on.
        c.pull(now);
        assert_eq!(pulled(&mut c), vec![ShardId(2)]);
    }

    #[test]
    fn offers_beyond_the_free_resources_are_not_claimed_and_a_pull_says_what_is_free() {
        let (mut c, now) = founder(8);
        c.cfg.capacity = Resources::new(2000, 1024);
        let claims = |c: &Coordinator| {
            c.ops
                .values()
                .filter(|op| matches!(op, InFlight::Lease(_)))
                .count()
        };
        let ask = |memory_mib| {
            let mut spec = TaskSpec::mock(100, 0);
            spec.resources = Resources::new(500, memory_mib);
            spec
        };
        c.offer_received(now, ShardId(0), TaskId(1), 0, ask(600));
        assert_eq!(claims(&c), 1);
        assert_eq!(c.resources_free(), Resources::new(1500, 424));
        // 600 MiB more would over-commit the node's memory: not claimed,
        // although slots and CPU are free.
        c.offer_received(now, ShardId(0), TaskId(2), 0, ask(600));
        assert_eq!(claims(&c), 1, "over-committed memory");
        c.offer_received(now, ShardId(0), TaskId(3), 0, ask(400));
        assert_eq!(claims(&c), 2);
        while c.poll_transmit().is_some() {}
        c.pull(now);
        let mut sent = None;
        while let Some((_, bytes)) = c.poll_transmit() {
            if let Ok(PaxosMessage::Pull { resources_free, .. }) =
                crate::wire::decode(&bytes, crate::wire::MAX_STREAM_MESSAGE_BYTES)
            {
                sent = Some(resources_free);
            }
        }
        assert_eq!(sent, Some(Resources::new(1000, 24)));
    }

    #[test]
    fn a_draining_node_neither_pulls_nor_claims_an_offer() {
        let (mut c, now) = founder(4);
        let in_flight = |c: &Coordinator, pull: bool| {
            c.ops
                .values()
                .filter(|op| match op {
                    InFlight::Pull { .. } => pull,
                    InFlight::Lease(_) => !pull,
                    _ => false,
                })
                .count()
        };
        c.set_draining(true);
        c.pull(now);
        assert_eq!(in_flight(&c, true), 0, "a draining node pulled");
        c.offer_received(now, ShardId(0), TaskId(7), 0, TaskSpec::mock(100, 0));
        assert_eq!(in_flight(&c, false), 0, "a draining node claimed an offer");
        // Drain cancelled: the same node pulls and claims again.
        c.set_draining(false);
        c.pull(now);
        assert_eq!(in_flight(&c, true), 1);
        c.offer_received(now, ShardId(0), TaskId(8), 0, TaskSpec::mock(101, 0));
        assert_eq!(in_flight(&c, false), 1);
    }

    #[test]
    fn offers_skip_a_draining_peer() {
        let (mut c, now) = founder(0);
        let ids: Vec<NodeId> = (1..=3).map(NodeId::from_u64).collect();
        let roomy = |draining| crate::gossip::NodeState {
            version: 1,
            slots_total: 8,
            slots_free: 8,
            draining,
            ..Default::default()
        };
        c.handle_membership(
            now,
            &[
                (ids[0], None),
                (ids[1], Some(roomy(true))),
                (ids[2], Some(roomy(false))),
            ],
        );
        while c.poll_transmit().is_some() {}
        let mut offered_to = Vec::new();
        for task in 0..20u64 {
            c.offer_to_best(
                now,
                ShardId(0),
                TaskId(task),
                0,
                TaskSpec::mock(task, 0),
                true,
            );
            while let Some((to, bytes)) = c.poll_transmit() {
                if let Ok(PaxosMessage::Offer { .. }) =
                    crate::wire::decode(&bytes, crate::wire::MAX_STREAM_MESSAGE_BYTES)
                {
                    offered_to.push(to);
                }
            }
        }
        assert!(!offered_to.is_empty(), "no offer was sent");
        assert!(
            offered_to.iter().all(|to| *to == ids[2]),
            "a draining node was offered a task: {offered_to:?}"
        );
    }

    #[test]
    fn a_claim_that_cannot_reach_a_quorum_fails_before_its_deadline() {
        let (mut c, now) = founder(4);
        let ids: Vec<NodeId> = (1..=3).map(NodeId::from_u64).collect();
        // The third member is dead in this node's view.
        c.handle_membership(now, &[(ids[0], None), (ids[1], None)]);
        let shard = ShardId(0);
        c.try_claim(now, shard, TaskId(7), 0, TaskSpec::mock(100, 0));
        let (id, epoch) = c
            .ops
            .iter()
            .find_map(|(id, op)| match op {
                InFlight::Lease(r) => Some((*id, r.config.epoch)),
                _ => None,
            })
            .expect("a lease round");
        // The one other live member says no before this node's own
        // acceptor answered: one grant at most, short of two.
        let nay = PaxosMessage::LeaseReply {
            hdr: Header {
                shard,
                epoch,
                req: id,
            },
            verdicts: vec![LeaseVerdict::Quarantined],
        };
        c.lease_reply(now, ids[1], id, nay);
        assert!(
            !c.attempts.contains_key(&TaskId(7)),
            "the claim waits for its deadline"
        );
        assert!(!c.ops.contains_key(&id));
    }
}
