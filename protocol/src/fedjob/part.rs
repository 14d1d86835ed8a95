//! A participant party's view of one of its parts: claims, the job lease
//! it renews with the owner, and self-fencing when it cannot.

use super::{JobConfig, ToOwner, ToPart};
use crate::time::Instant;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// Most renewal asks remembered while unanswered; older ones are forgotten
/// (their late grants then extend nothing, which is safe).
const MAX_OPEN_ASKS: usize = 8;

/// Why the part's process is to be killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The job lease could not be renewed in time.
    Fenced,
    /// The owner stopped the attempt.
    Stopped,
    /// A message of a later attempt arrived: this one is over.
    Superseded,
}

/// What the part asks its host to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartOutput {
    /// Send `0` to the owner over the links.
    Send(ToOwner),
    /// Claim a slot through the party's own lease protocol, start nothing;
    /// report with [`JobPart::handle_claimed`].
    Claim {
        /// The attempt.
        attempt: u64,
    },
    /// Give back the slot (or abandon the claim) of this attempt.
    Release {
        /// The attempt.
        attempt: u64,
    },
    /// Start the process, handing it `attempt` as `SHOAL_JOB_ATTEMPT`.
    Start {
        /// The attempt.
        attempt: u64,
    },
    /// Kill the process now: it must be dead within `fence_margin_ms`.
    /// Report its end with [`JobPart::handle_exited`].
    Kill {
        /// The attempt.
        attempt: u64,
        /// Why.
        reason: KillReason,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing of `attempt` here yet.
    Idle,
    Claiming,
    Reserved,
    Running,
    Killing,
    /// The attempt is over here.
    Done,
}

/// A participant's state machine for one part of one job.
#[derive(Debug, Clone)]
pub struct JobPart {
    cfg: JobConfig,
    attempt: u64,
    phase: Phase,
    /// Send time of each open ask, on this clock.
    asks: BTreeMap<u64, Instant>,
    next_ask: u64,
    /// End of the job lease of `attempt`, on this clock.
    valid_until: Option<Instant>,
    next_renew: Instant,
    out: VecDeque<PartOutput>,
}

impl JobPart {
    /// A part that knows no attempt yet.
    pub fn new(now: Instant, cfg: JobConfig) -> Self {
        JobPart {
            cfg,
            attempt: 0,
            phase: Phase::Idle,
            asks: BTreeMap::new(),
            next_ask: 0,
            valid_until: None,
            next_renew: now,
            out: VecDeque::new(),
        }
    }

    /// The newest attempt this part has heard of.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// Whether the process of the current attempt runs (as far as told).
    pub fn is_running(&self) -> bool {
        self.phase == Phase::Running
    }

    /// A message from the owner. Older attempts are ignored; a later one
    /// ends the current attempt here first.
    pub fn handle_message(&mut self, now: Instant, msg: ToPart) {
        let attempt = msg.attempt();
        if attempt < self.attempt {
            return;
        }
        if attempt > self.attempt {
            self.supersede(attempt);
        }
        match msg {
            ToPart::Reserve { .. } => match self.phase {
                Phase::Idle => {
                    self.phase = Phase::Claiming;
                    self.out.push_back(PartOutput::Claim { attempt });
                }
                Phase::Reserved => self.send(ToOwner::Claimed { attempt }),
                _ => {}
            },
            ToPart::Grant { ask, .. } => self.on_grant(ask),
            ToPart::StartAll { .. } => {
                if self.phase == Phase::Reserved && self.lease_valid(now) {
                    self.phase = Phase::Running;
                    self.out.push_back(PartOutput::Start { attempt });
                    self.send(ToOwner::Started { attempt });
                }
            }
            ToPart::StopAll { .. } => self.on_stop(),
        }
    }

    /// The party claimed the slot asked by [`PartOutput::Claim`].
    pub fn handle_claimed(&mut self, now: Instant, attempt: u64) {
        if attempt != self.attempt || self.phase != Phase::Claiming {
            return;
        }
        self.phase = Phase::Reserved;
        self.send(ToOwner::Claimed { attempt });
        self.ask(now);
    }

    /// The process of `attempt` ended, by itself or killed.
    pub fn handle_exited(&mut self, _now: Instant, attempt: u64, code: i32) {
        if attempt != self.attempt {
            return;
        }
        match self.phase {
            Phase::Running => self.send(ToOwner::Exited { attempt, code }),
            Phase::Killing => self.send(ToOwner::Stopped { attempt }),
            _ => return,
        }
        self.phase = Phase::Done;
        self.out.push_back(PartOutput::Release { attempt });
    }

    /// Due timers: self-fencing first, then renewals.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase == Phase::Running && !self.lease_valid(now) {
            self.phase = Phase::Killing;
            self.out.push_back(PartOutput::Kill {
                attempt: self.attempt,
                reason: KillReason::Fenced,
            });
        }
        if matches!(self.phase, Phase::Reserved | Phase::Running) && now >= self.next_renew {
            self.ask(now);
        }
    }

    /// The next instant `handle_timeout` is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Reserved => Some(self.next_renew),
            Phase::Running => Some(
                self.fence_at()
                    .map_or(self.next_renew, |f| f.min(self.next_renew)),
            ),
            _ => None,
        }
    }

    /// The next output, in the order they must be carried out.
    pub fn poll_output(&mut self) -> Option<PartOutput> {
        self.out.pop_front()
    }

    fn send(&mut self, msg: ToOwner) {
        self.out.push_back(PartOutput::Send(msg));
    }

    fn fence_at(&self) -> Option<Instant> {
        self.valid_until
            .map(|v| v.saturating_sub(Duration::from_millis(self.cfg.fence_margin_ms)))
    }

    fn lease_valid(&self, now: Instant) -> bool {
        self.fence_at().is_some_and(|f| now < f)
    }

    /// The lease timer starts now, before the owner can grant.
    fn ask(&mut self, now: Instant) {
        self.next_ask += 1;
        self.asks.insert(self.next_ask, now);
        while self.asks.len() > MAX_OPEN_ASKS {
            self.asks.pop_first();
        }
        self.next_renew = now + Duration::from_millis(self.cfg.renew_ms);
        self.send(ToOwner::RenewAsk {
            attempt: self.attempt,
            ask: self.next_ask,
        });
    }

    fn on_grant(&mut self, ask: u64) {
        if !matches!(self.phase, Phase::Reserved | Phase::Running) {
            return;
        }
        let Some(sent) = self.asks.get(&ask).copied() else {
            return;
        };
        self.asks.retain(|k, _| *k > ask);
        let until = sent + Duration::from_millis(self.cfg.lease_ms);
        self.valid_until = Some(self.valid_until.map_or(until, |v| v.max(until)));
    }

    fn on_stop(&mut self) {
        let attempt = self.attempt;
        match self.phase {
            Phase::Running => {
                self.phase = Phase::Killing;
                self.out.push_back(PartOutput::Kill {
                    attempt,
                    reason: KillReason::Stopped,
                });
            }
            Phase::Claiming | Phase::Reserved => {
                self.phase = Phase::Done;
                self.out.push_back(PartOutput::Release { attempt });
                self.send(ToOwner::Stopped { attempt });
            }
            Phase::Idle | Phase::Done => {
                self.phase = Phase::Done;
                self.send(ToOwner::Stopped { attempt });
            }
            Phase::Killing => {}
        }
    }

    /// A later attempt exists: whatever this one holds here ends.
    fn supersede(&mut self, attempt: u64) {
        let old = self.attempt;
        match self.phase {
            Phase::Running | Phase::Killing => {
                if self.phase == Phase::Running {
                    self.out.push_back(PartOutput::Kill {
                        attempt: old,
                        reason: KillReason::Superseded,
                    });
                }
                self.out.push_back(PartOutput::Release { attempt: old });
            }
            Phase::Claiming | Phase::Reserved => {
                self.out.push_back(PartOutput::Release { attempt: old })
            }
            Phase::Idle | Phase::Done => {}
        }
        self.attempt = attempt;
        self.phase = Phase::Idle;
        self.asks.clear();
        self.valid_until = None;
    }
}
