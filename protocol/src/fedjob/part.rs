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
    /// When a reservation without a start is given up.
    give_up_at: Instant,
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
            give_up_at: now,
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
        self.give_up_at = now + Duration::from_millis(self.cfg.start_timeout_ms);
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
        // An owner that never starts the attempt must not hold the slot
        // forever; releasing is always safe, nothing runs.
        if self.phase == Phase::Reserved && now >= self.give_up_due() {
            self.on_stop();
        }
        if matches!(self.phase, Phase::Reserved | Phase::Running) && now >= self.next_renew {
            self.ask(now);
        }
    }

    /// The next instant `handle_timeout` is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Reserved => Some(self.next_renew.min(self.give_up_due())),
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

    /// When an unstarted reservation is given up: after the start timeout,
    /// once no lease that could still start it is held.
    fn give_up_due(&self) -> Instant {
        self.fence_at()
            .map_or(self.give_up_at, |f| f.max(self.give_up_at))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fedjob::{JobOwner, OwnerOutput, PartKey};

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn drain(p: &mut JobPart) -> Vec<PartOutput> {
        std::iter::from_fn(|| p.poll_output()).collect()
    }

    /// A part reserved for `attempt`, its first ask sent at `at`.
    fn reserved(attempt: u64, at: Instant) -> JobPart {
        let mut p = JobPart::new(at, JobConfig::default());
        p.handle_message(at, ToPart::Reserve { attempt });
        p.handle_claimed(at, attempt);
        drain(&mut p);
        p
    }

    #[test]
    fn start_needs_a_valid_job_lease() {
        let mut p = reserved(1, t(0));
        p.handle_message(t(10), ToPart::StartAll { attempt: 1 });
        assert!(drain(&mut p).is_empty());
        p.handle_message(t(20), ToPart::Grant { attempt: 1, ask: 1 });
        p.handle_message(t(21), ToPart::StartAll { attempt: 1 });
        assert!(drain(&mut p).contains(&PartOutput::Start { attempt: 1 }));
    }

    #[test]
    fn self_fences_fence_margin_before_the_lease_counted_from_the_ask() {
        let mut p = reserved(1, t(0));
        // The grant arrives late; the lease still counts from the ask at 0.
        p.handle_message(t(50), ToPart::Grant { attempt: 1, ask: 1 });
        p.handle_message(t(60), ToPart::StartAll { attempt: 1 });
        drain(&mut p);
        for now in [260, 520, 699] {
            p.handle_timeout(t(now));
        }
        let out = drain(&mut p);
        assert!(!out.iter().any(|o| matches!(o, PartOutput::Kill { .. })));
        assert_eq!(p.poll_timeout(), Some(t(700)));
        p.handle_timeout(t(700));
        assert_eq!(
            drain(&mut p),
            vec![PartOutput::Kill {
                attempt: 1,
                reason: KillReason::Fenced
            }]
        );
    }

    #[test]
    fn a_reservation_never_started_is_released_after_the_start_timeout() {
        let mut p = reserved(1, t(0));
        let timeout = JobConfig::default().start_timeout_ms;
        let mut now = 0;
        while now < timeout + 1_000 {
            now += 100;
            p.handle_timeout(t(now));
            let out = drain(&mut p);
            let released = out.contains(&PartOutput::Release { attempt: 1 });
            assert_eq!(released, now == timeout, "at {now} ms: {out:?}");
        }
        p.handle_message(t(now), ToPart::StartAll { attempt: 1 });
        assert!(drain(&mut p).is_empty(), "a released part starts nothing");
    }

    #[test]
    fn renewals_extend_the_lease() {
        let mut p = reserved(1, t(0));
        p.handle_message(t(5), ToPart::Grant { attempt: 1, ask: 1 });
        p.handle_message(t(6), ToPart::StartAll { attempt: 1 });
        p.handle_timeout(t(260));
        p.handle_message(t(270), ToPart::Grant { attempt: 1, ask: 2 });
        p.handle_timeout(t(959));
        assert!(!drain(&mut p)
            .iter()
            .any(|o| matches!(o, PartOutput::Kill { .. })));
        assert!(p.is_running());
    }

    #[test]
    fn messages_of_older_attempts_are_ignored() {
        let mut p = reserved(2, t(0));
        for msg in [
            ToPart::Reserve { attempt: 1 },
            ToPart::Grant { attempt: 1, ask: 1 },
            ToPart::StartAll { attempt: 1 },
            ToPart::StopAll { attempt: 1 },
        ] {
            p.handle_message(t(10), msg);
        }
        assert!(drain(&mut p).is_empty());
        assert_eq!(p.attempt(), 2);
    }

    #[test]
    fn a_later_attempt_ends_the_running_one() {
        let mut p = reserved(1, t(0));
        p.handle_message(t(5), ToPart::Grant { attempt: 1, ask: 1 });
        p.handle_message(t(6), ToPart::StartAll { attempt: 1 });
        drain(&mut p);
        p.handle_message(t(10), ToPart::Reserve { attempt: 3 });
        assert_eq!(
            drain(&mut p),
            vec![
                PartOutput::Kill {
                    attempt: 1,
                    reason: KillReason::Superseded
                },
                PartOutput::Release { attempt: 1 },
                PartOutput::Claim { attempt: 3 },
            ]
        );
        p.handle_exited(t(20), 1, -9);
        assert!(drain(&mut p).is_empty(), "the old exit reports nothing");
    }

    /// Worst case of drift within `rho`: the part's clock slow (its lease
    /// lasts longest in real time), the owner's fast (its grant shortest).
    /// In real time the part still kills before the owner begins attempt 2.
    #[test]
    fn under_worst_drift_the_part_fences_before_the_owner_moves_on() {
        let cfg = JobConfig::default();
        let (slow, fast) = (1.0 - cfg.rho, 1.0 + cfg.rho);
        let on = |rate: f64, real_ms: u64| t((real_ms as f64 * rate).floor() as u64);
        let key = PartKey::new("beta", "main");
        let mut owner =
            JobOwner::new(on(fast, 0), cfg.clone(), std::slice::from_ref(&key)).unwrap();
        let mut part = JobPart::new(on(slow, 0), cfg);
        part.handle_message(on(slow, 1), ToPart::Reserve { attempt: 1 });
        part.handle_claimed(on(slow, 1), 1);
        for o in drain(&mut part) {
            if let PartOutput::Send(m) = o {
                owner.handle_message(on(fast, 1), &key, m);
            }
        }
        for o in std::iter::from_fn(|| owner.poll_output()) {
            if let OwnerOutput::Send { msg, .. } = o {
                part.handle_message(on(slow, 2), msg);
            }
        }
        assert!(part.is_running());
        // Partition from real 2 ms on: nothing passes either way.
        let (mut killed_at, mut next_attempt_at) = (None, None);
        for real in 2..3_000 {
            part.handle_timeout(on(slow, real));
            if drain(&mut part)
                .iter()
                .any(|o| matches!(o, PartOutput::Kill { .. }))
            {
                killed_at.get_or_insert(real);
            }
            owner.handle_timeout(on(fast, real));
            let begun = std::iter::from_fn(|| owner.poll_output())
                .any(|o| o == OwnerOutput::AttemptBegun { attempt: 2 });
            if begun {
                next_attempt_at.get_or_insert(real);
            }
        }
        let (killed, next) = (killed_at.unwrap(), next_attempt_at.unwrap());
        assert!(
            killed < next,
            "killed at {killed} ms, attempt 2 at {next} ms"
        );
        // The fence margin is what separates them, less the drift.
        assert!(next - killed >= 100, "gap {} ms", next - killed);
    }
}
