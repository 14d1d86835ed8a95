//! Reconfiguration of a shard group through the old group (docs/protocol.md §5).
//!
//! 0. Check: a majority of the proposed members must answer a
//!    `ReadyCheck`. A chosen successor can never be replaced, so a move
//!    proposed from a stale membership view (members already dead) must not
//!    get as far as being chosen: it would seal the old group for good.
//! 1. Choose: CAS the old group's `Successor(e)` register from empty to the
//!    proposed configuration; if someone chose already, theirs is kept.
//! 2. Seal: every old acceptor that receives `Seal` refuses all further
//!    operations, points to the successor, and answers with its registers
//!    and live leases; a majority of answers is needed.
//! 3. Install: the registers (highest accepted ballot of the sealed
//!    majority, ballots kept) and the live leases go to the new group at
//!    epoch `e+1`; a majority must persist them.
//! 4. Activate: the new group starts serving (and, having just joined,
//!    grants no new lease for one lease length; carried leases renew).
//!
//! Every step is idempotent, so anyone who meets a half-done
//! reconfiguration finishes it by running the same steps. A group that
//! lost its majority cannot be sealed: it stays as it is until an operator
//! calls [`Coordinator::force_reconfigure`], which seals and reads whatever
//! acceptors answer, and says so loudly.

use super::cas::{Change, Purpose};
use super::{Coordinator, Effect, RequestError, MAX_RECONFIGS};
use crate::paxos::{RegisterKey, Slot};
use crate::shard::{self, ShardConfig, ShardId};
use crate::time::Instant;
use crate::wire::paxos::{GroupRefusal, Header, LeaseTransfer, PaxosMessage, Snapshot};
use crate::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Rounds of one step before the reconfiguration is abandoned (a later
/// check starts it again).
const MAX_STEP_TRIES: u32 = 6;

#[derive(Debug, Clone)]
enum Step {
    Check {
        proposed: Vec<NodeId>,
        ready: BTreeSet<NodeId>,
    },
    Choose,
    Seal {
        successor: ShardConfig,
        sealed: BTreeMap<NodeId, Snapshot>,
    },
    Install {
        successor: ShardConfig,
        snapshot: Snapshot,
        installed: BTreeSet<NodeId>,
    },
}

#[derive(Debug, Clone)]
pub(super) struct Reconfig {
    old: ShardConfig,
    step: Step,
    forced: bool,
    tries: u32,
    pub(super) req: u64,
    pub(super) deadline: Instant,
}

impl Coordinator {
    /// Looks for groups with a member that is down, that lost its state, or
    /// that are smaller than the party allows, and reconfigures those this
    /// node is the first live member of.
    pub(super) fn check_placement(&mut self, now: Instant) {
        let live = self.live.clone();
        let size = shard::group_size(
            live.len(),
            self.cfg.group_size_small,
            self.cfg.group_size_large,
        );
        let current: BTreeMap<ShardId, Vec<NodeId>> = self
            .directory
            .iter()
            .map(|(s, c)| (*s, c.members.clone()))
            .collect();
        let desired = shard::place(self.cfg.shards, size, &live, &current);
        let mut amnesic = std::mem::take(&mut self.needs_reconfig);
        // A move this node was installed by but never saw activated: finish
        // it (idempotent) from the predecessor it remembers.
        for (shard, s) in self.acceptor.shards() {
            if let crate::paxos::GroupStatus::Installed(pred) = &s.meta.status {
                if self
                    .directory
                    .get(shard)
                    .is_some_and(|c| *c == s.meta.config)
                {
                    self.predecessor.insert(*shard, pred.clone());
                    amnesic.insert(*shard);
                }
            }
        }
        for (shard, config) in self.directory.clone() {
            if self.reconfigs.len() >= MAX_RECONFIGS || self.reconfigs.contains_key(&shard) {
                continue;
            }
            let first_live = config.members.iter().find(|m| live.contains(m));
            // With no live member the group lost its majority: only an
            // operator can move it.
            let Some(first_live) = first_live else {
                continue;
            };
            let live_members = config.members.iter().filter(|m| live.contains(m)).count();
            if live_members < config.quorum() {
                continue;
            }
            let wanted = desired.get(&shard).cloned().unwrap_or_default();
            let dead = live_members < config.members.len();
            let short = config.members.len() < size;
            let lost_state = amnesic.contains(&shard);
            let differs = {
                let a: BTreeSet<_> = wanted.iter().collect();
                let b: BTreeSet<_> = config.members.iter().collect();
                a != b
            };
            // A member without state for the current epoch was never
            // installed (a node that lost its disk comes back under a new
            // id): finish the move, which installs it from the sealed
            // predecessor. Idempotent for everyone else.
            let predecessor = self
                .predecessor
                .get(&shard)
                .filter(|p| p.epoch.saturating_add(1) == config.epoch)
                .cloned()
                .or_else(|| config.predecessor());
            if let (true, Some(old)) = (lost_state, predecessor) {
                let members = config.members.clone();
                self.begin_reconfig(now, old, members, false);
                continue;
            }
            let should = (dead || short || lost_state) && (differs || lost_state);
            // Anyone who met a member without its state may act: that
            // member cannot, and the first live member may not have noticed.
            let mine = *first_live == self.me || lost_state;
            if should && mine && !wanted.is_empty() {
                self.begin_reconfig(now, config, wanted, false);
            }
        }
    }

    fn begin_reconfig(
        &mut self,
        now: Instant,
        old: ShardConfig,
        proposed: Vec<NodeId>,
        forced: bool,
    ) {
        let shard = old.shard;
        let req = self.next_id();
        let mut r = Reconfig {
            old: old.clone(),
            step: Step::Choose,
            forced,
            tries: 0,
            req,
            deadline: now + Duration::from_millis(self.cfg.op_timeout_ms * 4),
        };
        if forced {
            let successor = ShardConfig {
                shard,
                epoch: old.epoch.saturating_add(1),
                members: proposed,
                previous: old.members.clone(),
            };
            r.step = Step::Seal {
                successor,
                sealed: BTreeMap::new(),
            };
            self.reconfigs.insert(shard, r);
            self.send_step(now, shard);
            return;
        }
        r.step = Step::Check {
            proposed,
            ready: BTreeSet::new(),
        };
        self.reconfigs.insert(shard, r);
        self.send_step(now, shard);
    }

    /// Step 0 finished: a majority of `proposed` answered; choose it.
    fn choose(&mut self, now: Instant, r: Reconfig, proposed: Vec<NodeId>) {
        let old = r.old.clone();
        let shard = old.shard;
        self.reconfigs.insert(
            shard,
            Reconfig {
                step: Step::Choose,
                deadline: now + Duration::from_millis(self.cfg.op_timeout_ms * 4),
                ..r
            },
        );
        let successor = ShardConfig {
            shard,
            epoch: old.epoch.saturating_add(1),
            members: proposed,
            previous: old.members.clone(),
        };
        self.start_cas(
            now,
            old.clone(),
            RegisterKey::Successor(old.epoch),
            Change::Successor(successor),
            Purpose::Successor,
        );
    }

    /// Step 1 finished: `successor` was chosen (or, with `None`, the old
    /// group is sealed and the directory may know the successor).
    pub(super) fn successor_decided(
        &mut self,
        now: Instant,
        shard: ShardId,
        successor: Option<ShardConfig>,
    ) {
        let Some(r) = self.reconfigs.get(&shard) else {
            return;
        };
        let next_epoch = r.old.epoch.saturating_add(1);
        let successor = successor.or_else(|| {
            self.directory
                .get(&shard)
                .filter(|c| c.epoch == next_epoch)
                .cloned()
        });
        let Some(successor) = successor.filter(|s| s.epoch == next_epoch && !s.members.is_empty())
        else {
            self.reconfigs.remove(&shard);
            return;
        };
        let req = self.next_id();
        if let Some(r) = self.reconfigs.get_mut(&shard) {
            r.step = Step::Seal {
                successor,
                sealed: BTreeMap::new(),
            };
            r.req = req;
            r.tries = 0;
        }
        self.send_step(now, shard);
    }

    fn send_step(&mut self, now: Instant, shard: ShardId) {
        let timeout = Duration::from_millis(self.cfg.op_timeout_ms * 2);
        let Some(r) = self.reconfigs.get_mut(&shard) else {
            return;
        };
        r.tries += 1;
        r.deadline = now + timeout;
        let (targets, msg) = match &r.step {
            Step::Choose => return,
            Step::Check { proposed, .. } => (
                proposed.clone(),
                PaxosMessage::ReadyCheck {
                    hdr: Header {
                        shard,
                        epoch: r.old.epoch,
                        req: r.req,
                    },
                },
            ),
            Step::Seal { successor, .. } => (
                r.old.members.clone(),
                PaxosMessage::Seal {
                    hdr: Header {
                        shard,
                        epoch: r.old.epoch,
                        req: r.req,
                    },
                    successor: successor.clone(),
                },
            ),
            Step::Install {
                successor,
                snapshot,
                ..
            } => (
                successor.members.clone(),
                PaxosMessage::Install {
                    hdr: Header {
                        shard,
                        epoch: successor.epoch,
                        req: r.req,
                    },
                    config: successor.clone(),
                    snapshot: snapshot.clone(),
                    predecessor: r.old.clone(),
                    quarantine: r.forced,
                },
            ),
        };
        self.broadcast(&targets, &msg);
    }

    pub(super) fn reconfig_reply(&mut self, now: Instant, from: NodeId, msg: PaxosMessage) {
        let shard = match &msg {
            PaxosMessage::SealedState { hdr, .. }
            | PaxosMessage::Installed { hdr }
            | PaxosMessage::Ready { hdr }
            | PaxosMessage::Refused { hdr, .. } => hdr.shard,
            _ => return,
        };
        let Some(mut r) = self.reconfigs.remove(&shard) else {
            return;
        };
        match (&mut r.step, msg) {
            (Step::Check { proposed, ready }, PaxosMessage::Ready { .. }) => {
                if proposed.contains(&from) {
                    ready.insert(from);
                }
                if ready.len() > proposed.len() / 2 {
                    let proposed = proposed.clone();
                    self.choose(now, r, proposed);
                    return;
                }
            }
            (Step::Seal { successor, sealed }, PaxosMessage::SealedState { snapshot, .. }) => {
                if r.old.contains(&from) {
                    sealed.insert(from, snapshot);
                }
                if sealed.len() >= r.old.quorum() {
                    let snapshot = merge(sealed.values());
                    let successor = successor.clone();
                    r.step = Step::Install {
                        successor,
                        snapshot,
                        installed: BTreeSet::new(),
                    };
                    r.req = self.next_id();
                    r.tries = 0;
                    self.reconfigs.insert(shard, r);
                    self.send_step(now, shard);
                    return;
                }
            }
            (
                Step::Install {
                    successor,
                    installed,
                    ..
                },
                PaxosMessage::Installed { .. },
            ) => {
                if successor.contains(&from) {
                    installed.insert(from);
                }
                if installed.len() >= successor.quorum() {
                    let successor = successor.clone();
                    self.activate(successor);
                    return;
                }
            }
            (
                _,
                PaxosMessage::Refused {
                    reason: GroupRefusal::Stale(c) | GroupRefusal::Sealed(c),
                    ..
                },
            ) if c.epoch > r.old.epoch.saturating_add(1) => {
                // Somebody went further already.
                return;
            }
            _ => {}
        }
        self.reconfigs.insert(shard, r);
    }

    fn activate(&mut self, successor: ShardConfig) {
        let shard = successor.shard;
        let msg = PaxosMessage::Activate {
            hdr: Header {
                shard,
                epoch: successor.epoch,
                req: 0,
            },
        };
        let members = successor.members.clone();
        self.broadcast(&members, &msg);
        self.predecessor.remove(&shard);
        self.learn_config(successor.clone());
        self.stats.reconfigs += 1;
        self.effects
            .push_back(Effect::Reconfigured { config: successor });
    }

    pub(super) fn tick_reconfigs(&mut self, now: Instant) {
        let due: Vec<ShardId> = self
            .reconfigs
            .iter()
            .filter(|(_, r)| r.deadline <= now && !matches!(r.step, Step::Choose))
            .map(|(s, _)| *s)
            .collect();
        for shard in due {
            let Some(r) = self.reconfigs.get(&shard) else {
                continue;
            };
            if r.forced {
                if let Step::Seal { sealed, successor } = &r.step {
                    if !sealed.is_empty() {
                        // An operator decided: go on with what answered.
                        let snapshot = merge(sealed.values());
                        let successor = successor.clone();
                        let req = self.next_id();
                        if let Some(r) = self.reconfigs.get_mut(&shard) {
                            r.step = Step::Install {
                                successor,
                                snapshot,
                                installed: BTreeSet::new(),
                            };
                            r.req = req;
                            r.tries = 0;
                        }
                        self.send_step(now, shard);
                        continue;
                    }
                }
            }
            if r.tries >= MAX_STEP_TRIES {
                self.reconfigs.remove(&shard);
                continue;
            }
            self.send_step(now, shard);
        }
        // A Choose step waits for its CAS; if that CAS vanished, drop it.
        let orphaned: Vec<ShardId> = self
            .reconfigs
            .iter()
            .filter(|(_, r)| {
                matches!(r.step, Step::Choose) && r.deadline + Duration::from_secs(30) <= now
            })
            .map(|(s, _)| *s)
            .collect();
        for s in orphaned {
            self.reconfigs.remove(&s);
        }
    }

    /// Operator command: move `shard` to `members` through its current group
    /// (drain a node, rebalance). Safe at any time; needs a majority of the
    /// current group.
    pub fn reconfigure(
        &mut self,
        now: Instant,
        shard: ShardId,
        members: Vec<NodeId>,
    ) -> Result<(), RequestError> {
        let distinct: BTreeSet<_> = members.iter().collect();
        if members.is_empty()
            || members.len() > shard::MAX_GROUP_SIZE
            || distinct.len() != members.len()
        {
            return Err(RequestError::Members);
        }
        let old = self
            .directory
            .get(&shard)
            .cloned()
            .ok_or(RequestError::UnknownShard(shard))?;
        if self.reconfigs.contains_key(&shard) {
            return Err(RequestError::Overloaded);
        }
        self.begin_reconfig(now, old, members, false);
        self.deliver_local(now);
        Ok(())
    }

    /// Operator command for a group that lost its majority: seal whatever
    /// acceptors answer, read their state, and install it on `members` at
    /// the next epoch. Values accepted only by the lost acceptors may be
    /// lost; the machine says so in an [`Effect::Warning`].
    pub fn force_reconfigure(
        &mut self,
        now: Instant,
        shard: ShardId,
        members: Vec<NodeId>,
    ) -> Result<(), RequestError> {
        let distinct: BTreeSet<_> = members.iter().collect();
        if members.is_empty()
            || members.len() > shard::MAX_GROUP_SIZE
            || distinct.len() != members.len()
        {
            return Err(RequestError::Members);
        }
        let old = self
            .directory
            .get(&shard)
            .cloned()
            .ok_or(RequestError::UnknownShard(shard))?;
        self.effects.push_back(Effect::Warning {
            message: format!(
                "FORCED reconfiguration of shard {} from epoch {} ({:?}) to {:?}: \
                 writes acknowledged only by unreachable acceptors may be lost",
                shard.0, old.epoch, old.members, members
            ),
        });
        self.reconfigs.remove(&shard);
        self.begin_reconfig(now, old, members, true);
        self.deliver_local(now);
        Ok(())
    }
}

/// The state of a sealed majority: per register the highest accepted
/// ballot (ballots kept, so the new group orders later rounds after it),
/// and every live lease anyone reported.
fn merge<'a>(snapshots: impl Iterator<Item = &'a Snapshot>) -> Snapshot {
    let mut regs: BTreeMap<RegisterKey, Slot> = BTreeMap::new();
    let mut leases: BTreeMap<(crate::tasks::TaskId, NodeId, u64), LeaseTransfer> = BTreeMap::new();
    let mut quarantine_ms = 0;
    for s in snapshots {
        quarantine_ms = quarantine_ms.max(s.quarantine_ms);
        for (k, slot) in &s.registers {
            let keep = regs.get(k).is_none_or(|have| slot.accepted > have.accepted);
            if keep {
                let mut slot = slot.clone();
                slot.promised = slot.accepted;
                regs.insert(*k, slot);
            }
        }
        for l in &s.leases {
            let e = leases.entry((l.task, l.owner, l.attempt)).or_insert(*l);
            e.remaining_ms = e.remaining_ms.max(l.remaining_ms);
        }
    }
    Snapshot {
        registers: regs.into_iter().collect(),
        leases: leases.into_values().collect(),
        quarantine_ms,
    }
}
