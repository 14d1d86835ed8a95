//! The proposer of CASPaxos register operations (Rystsov 2018).
//!
//! One operation: choose a ballot above any seen, `Prepare` on the group,
//! and on a majority of promises take the value with the highest accepted
//! ballot, apply the change, and `Accept` the result on a majority. A
//! refused change still writes the current value back, so that every
//! completed operation, reads included, is linearizable. A rejected ballot
//! or a silent majority retries with a higher ballot after a random pause;
//! a sealed or stale group redirects the operation to the newer one.
//!
//! One-round path: a claim's accept also asks the acceptors to promise a
//! later ballot of this node ([`PaxosMessage::Accept`]'s `next`). The
//! majority that accepted the claim then promised that ballot with the
//! claimed value as their latest accepted one, which is exactly what a
//! prepare of it would have returned; so the holder's next operation on
//! the register (its finish) applies its change to the remembered value
//! and sends the accept at once. Anyone else's later operation on the
//! register outbids that ballot, and the accept is then refused and the
//! operation falls back to both rounds. The promise is only good in the
//! configuration epoch that gave it (a successor group never made it).

use super::{Coordinator, Effect, InFlight, RequestId};
use crate::federation::records::{self, RecordEdit};
use crate::paxos::{Ballot, RegisterKey, Slot, Value};
use crate::shard::ShardConfig;
use crate::tasks::{self, Mutation, Refusal, TaskId, TaskRecord};
use crate::time::Instant;
use crate::wire::paxos::{GroupRefusal, Header, PaxosMessage};
use crate::NodeId;
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use thiserror::Error;

/// How long a phase waits for an answer before its message is sent again
/// to the members that have not answered (a few round trips).
pub(super) const RESEND_MS: u64 = 60;

/// Why a register operation did not complete.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpError {
    /// No majority answered in `op_max_tries` rounds; the change may or may
    /// not have been applied.
    #[error("no majority of the shard group answered")]
    NoQuorum,
    /// The change was refused by the register's current value.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
}

/// What an operation does to its register.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Task(Mutation),
    /// A blind write. A CAS round may be retried after an earlier round
    /// was accepted by some acceptors: the write must then not be applied
    /// a second time (a reader may have seen it and others overwritten it
    /// since). `over` is the version the first round built on. Versions
    /// never fall along the chosen values (a read writes its version back,
    /// a write adds one), so on a retry that finds version `c`:
    /// `c > over` means a write was chosen since the first round (ours, or
    /// one that our write is linearized just before): it changes nothing.
    /// `c <= over` means our first round was not chosen (it would have left
    /// `over + 1` or more), and neither, when `c < over`, was the value it
    /// built on: the write applies over `c`. (Refusing whenever `c != over`
    /// acknowledged writes that no read could ever see: shoal-sim seed 701.)
    JobWrite {
        bytes: Option<Vec<u8>>,
        over: Option<u64>,
    },
    JobRead,
    /// An edit of a record set held in a job register, applied to the
    /// value a majority holds. Unlike a blind write, an edit must not be
    /// dropped when another change was chosen since its first round (it
    /// would lose that other operator's edit, or this one), so a retry is
    /// recognised by the edit's random `id`, which the set remembers.
    RecordEdit {
        edit: RecordEdit,
        id: u64,
    },
    Successor(ShardConfig),
}

/// Who waits for the operation.
#[derive(Debug, Clone)]
pub(super) enum Purpose {
    Submit {
        request: RequestId,
        task: TaskId,
    },
    Cancel {
        request: RequestId,
        task: TaskId,
    },
    Claim {
        task: TaskId,
        attempt: u64,
        claim: u64,
    },
    Finish {
        task: TaskId,
        attempt: u64,
    },
    Gc,
    /// A read whose write-back brings a member that missed the register's
    /// last accept up to date (see `lease_refused`); nobody waits for it.
    Repair,
    Job {
        request: RequestId,
    },
    ReadTask {
        request: RequestId,
        task: TaskId,
    },
    Checkpoint {
        request: RequestId,
        task: TaskId,
    },
    Successor,
}

#[derive(Debug, Clone)]
enum Phase {
    Prepare {
        promises: BTreeMap<NodeId, Slot>,
    },
    Accept {
        acks: BTreeSet<NodeId>,
        value: Option<Value>,
    },
    Pause,
}

/// Most registers whose one-round path this node remembers; beyond it the
/// memory is dropped (operations then take both rounds, as always safe).
pub(super) const MAX_FAST_REGISTERS: usize = 16_384;

/// A register on which a majority promised `ballot` of this node right
/// after accepting `value` in `epoch` of `shard`.
#[derive(Debug, Clone)]
pub(super) struct FastPath {
    shard: crate::shard::ShardId,
    epoch: u64,
    ballot: Ballot,
    value: Option<Value>,
}

pub(super) struct CasOp {
    config: ShardConfig,
    key: RegisterKey,
    change: Change,
    purpose: Purpose,
    ballot: Ballot,
    /// The ballot the current accept round asks to be promised next.
    next: Option<Ballot>,
    phase: Phase,
    nays: BTreeSet<NodeId>,
    outcome: Option<Result<Option<Value>, Refusal>>,
    tries: u32,
    pub(super) deadline: Instant,
    /// When the current phase's message goes again to the members that
    /// have not answered (a lost message costs a resend, not a round).
    pub(super) resend_at: Instant,
    /// The current phase's message, for resends.
    last: Option<(u64, PaxosMessage)>,
}

fn apply_change(
    change: &Change,
    current: Option<&Value>,
    config: &ShardConfig,
    bugs: &crate::Bugs,
) -> Result<Option<Value>, Refusal> {
    match change {
        Change::Task(m) => {
            let rec = Coordinator::value_as_record(current);
            if current.is_some() && rec.is_none() {
                return Err(Refusal::Missing);
            }
            tasks::apply(rec, m, bugs).map(|r| r.map(|r| Value::Task(Box::new(r))))
        }
        Change::JobWrite { bytes, over } => {
            let version = match current {
                Some(Value::Job(j)) => j.version,
                _ => 0,
            };
            if over.is_some_and(|o| version > o) {
                return Ok(current.cloned());
            }
            Ok(Some(Value::Job(crate::paxos::JobValue {
                version: version.saturating_add(1),
                bytes: bytes.clone(),
            })))
        }
        Change::JobRead => Ok(current.cloned()),
        Change::RecordEdit { edit, id } => {
            let (version, bytes) = match current {
                Some(Value::Job(j)) => (j.version, j.bytes.as_deref()),
                _ => (0, None),
            };
            let bytes = records::edit_register(bytes, *id, edit)?;
            Ok(Some(Value::Job(crate::paxos::JobValue {
                version: version.saturating_add(1),
                bytes: Some(bytes),
            })))
        }
        Change::Successor(proposed) => match current {
            // Someone chose already: keep theirs (anyone finishes it).
            Some(Value::Config(c)) if c.epoch == config.epoch.saturating_add(1) => {
                Ok(Some(Value::Config(c.clone())))
            }
            _ => Ok(Some(Value::Config(proposed.clone()))),
        },
    }
}

impl Coordinator {
    pub(super) fn start_cas(
        &mut self,
        now: Instant,
        config: ShardConfig,
        key: RegisterKey,
        change: Change,
        purpose: Purpose,
    ) -> u64 {
        let id = self.next_id();
        // Taken whatever happens: a later operation of this node on the
        // register must not reuse a ballot this one may send.
        let fast = self
            .fast
            .remove(&key)
            .filter(|f| f.shard == config.shard && f.epoch == config.epoch);
        // A task's first write needs no prepare either: its id was just
        // drawn at random here, so no one else proposes on the register, and
        // the reserved ballot of counter 0 is below every ballot a prepare
        // uses. If the register was written after all, its acceptors promised
        // more than that and refuse; the operation then takes both rounds.
        let first_write = fast.is_none() && matches!(change, Change::Task(Mutation::Create(_)));
        let ballot = match &fast {
            Some(f) => f.ballot,
            None if first_write => Ballot {
                counter: 0,
                node: self.me,
                incarnation: self.incarnation,
            },
            None => self.next_ballot(),
        };
        let mut op = CasOp {
            config,
            key,
            change,
            purpose,
            ballot,
            next: None,
            phase: Phase::Prepare {
                promises: BTreeMap::new(),
            },
            nays: BTreeSet::new(),
            outcome: None,
            tries: 1,
            deadline: now + Duration::from_millis(self.cfg.op_timeout_ms),
            resend_at: now + Duration::from_millis(RESEND_MS),
            last: None,
        };
        match fast {
            Some(f) => self.send_accept(now, id, &mut op, f.value),
            None if first_write => self.send_accept(now, id, &mut op, None),
            None => self.send_prepare(id, &mut op),
        }
        self.ops.insert(id, InFlight::Cas(Box::new(op)));
        id
    }

    /// Phase 2: applies the change to `current` (the value of the highest
    /// accepted ballot among a majority that promised `op.ballot`) and asks
    /// the group to accept the result.
    fn send_accept(&mut self, now: Instant, id: u64, op: &mut CasOp, current: Option<Value>) {
        if let Change::JobWrite { over, .. } = &mut op.change {
            if over.is_none() {
                *over = Some(match &current {
                    Some(Value::Job(j)) => j.version,
                    _ => 0,
                });
            }
        }
        let result = apply_change(&op.change, current.as_ref(), &op.config, &self.cfg.bugs);
        let value = match &result {
            Ok(v) => v.clone(),
            Err(_) => current,
        };
        op.outcome = Some(result);
        op.nays.clear();
        // Only a claim is followed by another operation of this node on
        // the register (its finish); a promise nobody uses would only make
        // the next proposer there retry.
        op.next = matches!(op.purpose, Purpose::Claim { .. }).then(|| self.next_ballot());
        op.phase = Phase::Accept {
            acks: BTreeSet::new(),
            value: value.clone(),
        };
        op.deadline = now + Duration::from_millis(self.cfg.op_timeout_ms);
        let msg = PaxosMessage::Accept {
            hdr: Header {
                shard: op.config.shard,
                epoch: op.config.epoch,
                req: id,
            },
            key: op.key,
            ballot: op.ballot,
            value,
            next: op.next,
        };
        let members = op.config.members.clone();
        self.broadcast(&members, &msg);
        op.last = Some((id, msg));
        op.resend_at = now + Duration::from_millis(RESEND_MS);
    }

    /// Remembers the promise a completed accept round asked for.
    fn remember_fast_path(&mut self, op: &CasOp) {
        let (Some(next), Phase::Accept { value, .. }) = (op.next, &op.phase) else {
            return;
        };
        if self.fast.len() >= MAX_FAST_REGISTERS {
            self.fast.clear();
        }
        self.fast.insert(
            op.key,
            FastPath {
                shard: op.config.shard,
                epoch: op.config.epoch,
                ballot: next,
                value: value.clone(),
            },
        );
    }

    fn send_prepare(&mut self, id: u64, op: &mut CasOp) {
        let msg = PaxosMessage::Prepare {
            hdr: Header {
                shard: op.config.shard,
                epoch: op.config.epoch,
                req: id,
            },
            key: op.key,
            ballot: op.ballot,
        };
        let members = op.config.members.clone();
        self.broadcast(&members, &msg);
        op.last = Some((id, msg));
    }

    /// Resends the current phase's message of every operation that is due
    /// to the group members that have not answered it.
    pub(super) fn resend_due(&mut self, now: Instant) {
        let me = self.me;
        let mut out: Vec<(NodeId, PaxosMessage, Option<NodeId>)> = Vec::new();
        for op in self.ops.values_mut() {
            match op {
                InFlight::Cas(op) if op.resend_at <= now => {
                    op.resend_at = now + Duration::from_millis(RESEND_MS);
                    let answered: BTreeSet<NodeId> = match &op.phase {
                        Phase::Prepare { promises } => promises.keys().copied().collect(),
                        Phase::Accept { acks, .. } => acks.clone(),
                        Phase::Pause => continue,
                    };
                    let Some((_, msg)) = &op.last else { continue };
                    for m in &op.config.members {
                        if !answered.contains(m) && !op.nays.contains(m) {
                            out.push((*m, msg.clone(), relay_for(me, *m, &answered)));
                        }
                    }
                }
                InFlight::Lease(round) if round.resend_at <= now => {
                    round.resend_at = now + Duration::from_millis(RESEND_MS);
                    for (m, msg) in round.unanswered() {
                        out.push((m, msg, relay_for(me, m, round.answered())));
                    }
                }
                _ => {}
            }
        }
        for (to, msg, via) in out {
            if let Some(via) = via {
                let request = crate::wire::encode(&msg);
                self.send(to, PaxosMessage::ReplyVia { via, request });
            }
            self.send(to, msg);
        }
    }

    /// A reply for a register operation.
    pub(super) fn cas_reply(&mut self, now: Instant, from: NodeId, id: u64, msg: PaxosMessage) {
        let Some(InFlight::Cas(mut op)) = self.ops.remove(&id) else {
            return;
        };
        if !op.config.contains(&from) {
            self.ops.insert(id, InFlight::Cas(op));
            return;
        }
        let quorum = op.config.quorum();
        let n = op.config.members.len();
        match (&mut op.phase, msg) {
            (Phase::Prepare { promises }, PaxosMessage::Promise { slot, .. }) => {
                promises.insert(from, slot);
                if promises.len() >= quorum {
                    let current = promises
                        .values()
                        .max_by_key(|s| s.accepted)
                        .and_then(|s| s.value.clone());
                    self.send_accept(now, id, &mut op, current);
                }
            }
            (Phase::Accept { acks, .. }, PaxosMessage::Accepted { .. }) => {
                acks.insert(from);
                if acks.len() >= quorum {
                    self.remember_fast_path(&op);
                    self.cas_done(now, *op);
                    return;
                }
            }
            (_, PaxosMessage::Refused { reason, .. }) => match reason {
                GroupRefusal::Sealed(succ) | GroupRefusal::Stale(succ)
                    if succ.epoch > op.config.epoch =>
                {
                    if matches!(op.purpose, Purpose::Successor) {
                        // The old group moved on: the reconfiguration learns
                        // its successor from the directory.
                        self.successor_decided(now, op.config.shard, None);
                        return;
                    }
                    let newest = self
                        .directory
                        .get(&op.config.shard)
                        .cloned()
                        .unwrap_or(succ);
                    op.config = newest;
                    self.retry(now, id, op, false);
                    return;
                }
                GroupRefusal::NotMember => {
                    op.nays.insert(from);
                }
                _ => {
                    op.nays.insert(from);
                }
            },
            _ => {}
        }
        if op.nays.len() > n - quorum && !matches!(op.phase, Phase::Pause) {
            self.retry(now, id, op, true);
            return;
        }
        self.ops.insert(id, InFlight::Cas(op));
    }

    /// Starts a new round with a higher ballot, after a random pause when
    /// `pause` (dueling proposers back off).
    fn retry(&mut self, now: Instant, id: u64, mut op: Box<CasOp>, pause: bool) {
        if op.tries >= self.cfg.op_max_tries {
            self.cas_failed(now, *op);
            return;
        }
        op.nays.clear();
        op.outcome = None;
        op.next = None;
        // The first refusal retries at once with a ballot above the one it
        // learned: it is mostly a promise a holder's claim left behind (see
        // the one-round path), not a duel. Duels pause from the second try.
        if pause && op.tries > 1 {
            let ms = self.rng.gen_range(1..=self.cfg.op_timeout_ms / 3 + 1);
            op.phase = Phase::Pause;
            op.deadline = now + Duration::from_millis(ms);
            self.ops.insert(id, InFlight::Cas(op));
            return;
        }
        self.restart(now, id, op);
    }

    fn restart(&mut self, now: Instant, _old_id: u64, mut op: Box<CasOp>) {
        // Every round gets a fresh request id: a late promise or accept
        // answer of an earlier round must never count for this ballot.
        let id = self.next_id();
        op.tries += 1;
        op.ballot = self.next_ballot();
        op.phase = Phase::Prepare {
            promises: BTreeMap::new(),
        };
        op.deadline = now + Duration::from_millis(self.cfg.op_timeout_ms);
        op.resend_at = now + Duration::from_millis(RESEND_MS);
        if let Some(newest) = self.directory.get(&op.config.shard) {
            if newest.epoch > op.config.epoch && !matches!(op.purpose, Purpose::Successor) {
                op.config = newest.clone();
            }
        }
        self.send_prepare(id, &mut op);
        self.ops.insert(id, InFlight::Cas(op));
    }

    /// A register operation's deadline passed.
    pub(super) fn cas_timeout(&mut self, now: Instant, id: u64, op: Box<CasOp>) {
        match op.phase {
            Phase::Pause => self.restart(now, id, op),
            _ => self.retry(now, id, op, true),
        }
    }

    fn cas_done(&mut self, now: Instant, op: CasOp) {
        self.stats.ops_done += 1;
        let result = op.outcome.unwrap_or(Err(Refusal::Missing));
        let res = result.map_err(super::OpError::Refused);
        self.cas_finished(now, op.purpose, op.config, res);
    }

    fn cas_failed(&mut self, now: Instant, op: CasOp) {
        self.stats.ops_failed += 1;
        self.cas_finished(now, op.purpose, op.config, Err(OpError::NoQuorum));
    }

    fn cas_finished(
        &mut self,
        now: Instant,
        purpose: Purpose,
        config: ShardConfig,
        res: Result<Option<Value>, OpError>,
    ) {
        let record = |v: &Option<Value>| -> Option<TaskRecord> {
            match v {
                Some(Value::Task(r)) => Some((**r).clone()),
                _ => None,
            }
        };
        match purpose {
            Purpose::Submit { request, task } => match res {
                Ok(v) => {
                    self.effects
                        .push_back(Effect::SubmitAcked { request, task });
                    if let Some(r) = record(&v) {
                        self.offer(now, config, r);
                    }
                }
                Err(error) => self.effects.push_back(Effect::SubmitFailed {
                    request,
                    task,
                    error,
                }),
            },
            Purpose::Cancel { request, task } => {
                if let Ok(Some(Value::Task(_))) = &res {
                    // The holder learns it at its next renewal anyway; tell
                    // every live node that might hold it now.
                    self.notify_cancel(task);
                }
                self.effects.push_back(Effect::CancelDone {
                    request,
                    task,
                    result: res.map(|_| ()),
                });
            }
            Purpose::Claim {
                task,
                attempt,
                claim,
            } => self.claim_done(now, task, attempt, claim, res.map(|v| record(&v))),
            Purpose::Gc | Purpose::Repair => {}
            Purpose::Finish { task, attempt } => {
                self.finish_done(now, task, attempt, res.map(|v| record(&v)))
            }
            Purpose::ReadTask { request, task } => {
                let result = res.map(|v| record(&v).map(Box::new));
                self.effects.push_back(Effect::TaskRead {
                    request,
                    task,
                    result,
                });
            }
            Purpose::Checkpoint { request, task } => {
                self.effects.push_back(Effect::CheckpointSaved {
                    request,
                    task,
                    result: res.map(|_| ()),
                });
            }
            Purpose::Job { request } => {
                let result = res.map(|v| match v {
                    Some(Value::Job(j)) => j.bytes,
                    _ => None,
                });
                self.effects.push_back(Effect::JobDone { request, result });
            }
            Purpose::Successor => {
                let succ = match res {
                    Ok(Some(Value::Config(c))) => Some(c),
                    _ => None,
                };
                self.successor_decided(now, config.shard, succ);
            }
        }
    }

    /// Routes a reply by request id.
    pub(super) fn op_reply(&mut self, now: Instant, from: NodeId, id: u64, msg: PaxosMessage) {
        match self.ops.get(&id) {
            Some(InFlight::Cas(_)) => self.cas_reply(now, from, id, msg),
            Some(InFlight::Lease(_)) => self.lease_reply(now, from, id, msg),
            Some(InFlight::Pull { .. }) => self.pull_reply(now, id, msg),
            None => {}
        }
    }

    /// Deadlines of operations, lease rounds and pulls.
    pub(super) fn tick_ops(&mut self, now: Instant) {
        self.resend_due(now);
        let due: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| match op {
                InFlight::Cas(c) => c.deadline <= now,
                InFlight::Lease(l) => l.deadline <= now,
                InFlight::Pull { deadline, .. } => *deadline <= now,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            match self.ops.remove(&id) {
                Some(InFlight::Cas(op)) => self.cas_timeout(now, id, op),
                Some(InFlight::Lease(round)) => self.lease_round_over(now, id, round),
                Some(InFlight::Pull { .. }) | None => {}
            }
        }
        self.tick_reconfigs(now);
    }
}

/// The member to relay `to`'s answer through, on a resend: one that did
/// answer (so its answers reach this node), neither this node nor `to`.
/// The direct copy still goes too: most unanswered requests were simply
/// lost, and a one-way cut is what the relayed copy gets around.
fn relay_for(me: NodeId, to: NodeId, answered: &BTreeSet<NodeId>) -> Option<NodeId> {
    answered.iter().copied().find(|m| *m != me && *m != to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::paxos::JobValue;

    fn job(version: u64, byte: u8) -> Value {
        Value::Job(JobValue {
            version,
            bytes: Some(vec![byte]),
        })
    }

    fn write(over: Option<u64>, current: Option<&Value>) -> Option<Value> {
        let change = Change::JobWrite {
            bytes: Some(vec![9]),
            over,
        };
        let config = ShardConfig {
            shard: crate::shard::ShardId(0),
            epoch: 1,
            members: Vec::new(),
            previous: Vec::new(),
        };
        apply_change(&change, current, &config, &crate::Bugs::none()).expect("a write applies")
    }

    #[test]
    fn a_retried_write_applies_unless_a_newer_version_was_chosen() {
        // First round: over the current version.
        assert_eq!(write(None, Some(&job(3, 1))), Some(job(4, 9)));
        // Retry, nothing chosen since: apply.
        assert_eq!(write(Some(3), Some(&job(3, 1))), Some(job(4, 9)));
        // Retry after a newer write (ours or another): change nothing.
        assert_eq!(write(Some(3), Some(&job(4, 7))), Some(job(4, 7)));
        // Retry finding an older version: the value the first round built
        // on was never chosen, nor was ours; apply over what is there.
        assert_eq!(write(Some(1), None), Some(job(1, 9)));
        assert_eq!(write(Some(5), Some(&job(2, 1))), Some(job(3, 9)));
    }
}
