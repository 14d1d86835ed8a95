//! The owner party's view of one job: its attempt counter, gang start, the
//! job leases it grants, and when the next attempt may begin.

use super::{JobConfig, JobError, PartKey, ToOwner, ToPart, MAX_PARTS};
use crate::time::Instant;
use crate::Bug;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Every part of `attempt` exited 0.
    Succeeded {
        /// The attempt whose result counts.
        attempt: u64,
    },
    /// The last allowed attempt failed.
    Failed {
        /// The last attempt.
        attempt: u64,
    },
}

/// What the owner asks its host to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnerOutput {
    /// Send `msg` to the part `to` over the links.
    Send {
        /// The part.
        to: PartKey,
        /// The message.
        msg: ToPart,
    },
    /// Attempt `attempt` begins (persist the counter before sending).
    AttemptBegun {
        /// The attempt.
        attempt: u64,
    },
    /// The job reached its final state.
    Final(JobOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for every claim of the attempt until `deadline`.
    Reserving {
        deadline: Instant,
    },
    /// Every part was told to start at `since`.
    Running {
        since: Instant,
    },
    /// Every part was told to stop; the next attempt waits for them.
    Stopping,
    Final(JobOutcome),
}

#[derive(Debug, Clone, Copy, Default)]
struct PartView {
    claimed: bool,
    started: bool,
    /// Confirmed: nothing of the current attempt runs there any more.
    stopped: bool,
    exit_code: Option<i32>,
    /// When the last grant of the current attempt to this part ends, on
    /// the owner's clock.
    lease_until: Option<Instant>,
}

/// The owner party's state machine for one job.
#[derive(Debug, Clone)]
pub struct JobOwner {
    cfg: JobConfig,
    parts: BTreeMap<PartKey, PartView>,
    attempt: u64,
    phase: Phase,
    next_resend: Instant,
    out: VecDeque<OwnerOutput>,
}

impl JobOwner {
    /// A job of `parts` whose record is durable: begins attempt 1 at once.
    pub fn new(now: Instant, cfg: JobConfig, parts: &[PartKey]) -> Result<Self, JobError> {
        cfg.validate()?;
        if parts.is_empty() || parts.len() > MAX_PARTS {
            return Err(JobError::PartCount(parts.len()));
        }
        let mut views = BTreeMap::new();
        for p in parts {
            if views.insert(p.clone(), PartView::default()).is_some() {
                return Err(JobError::DuplicatePart {
                    party: p.party.clone(),
                    part: p.part.clone(),
                });
            }
        }
        let mut owner = JobOwner {
            cfg,
            parts: views,
            attempt: 0,
            phase: Phase::Stopping,
            next_resend: now,
            out: VecDeque::new(),
        };
        owner.begin_attempt(now);
        Ok(owner)
    }

    /// The current attempt.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    /// The final outcome, once there is one.
    pub fn outcome(&self) -> Option<JobOutcome> {
        match self.phase {
            Phase::Final(o) => Some(o),
            _ => None,
        }
    }

    /// A message from part `from`. Messages of other attempts change
    /// nothing, except that a stale renewal is answered with a stop.
    pub fn handle_message(&mut self, now: Instant, from: &PartKey, msg: ToOwner) {
        let Some(view) = self.parts.get(from).copied() else {
            return;
        };
        if msg.attempt() != self.attempt {
            if let ToOwner::RenewAsk { attempt, .. } = msg {
                if attempt < self.attempt {
                    self.send(from, ToPart::StopAll { attempt });
                }
            }
            return;
        }
        match msg {
            ToOwner::Claimed { .. } => self.on_claimed(now, from),
            ToOwner::RenewAsk { ask, .. } => self.on_renew(now, from, view, ask),
            ToOwner::Started { .. } => self.view(from).started = true,
            ToOwner::Exited { code, .. } => self.on_exited(now, from, code),
            ToOwner::Stopped { .. } => {
                self.view(from).stopped = true;
                // A part that gave up its slot loses the attempt.
                if self.is_live() {
                    self.stop_attempt(now);
                } else {
                    self.try_next_attempt(now);
                }
            }
        }
    }

    /// The part's party reports the node running `part` lost. The part is
    /// not taken as stopped: the next attempt still waits for its lease.
    pub fn handle_part_lost(&mut self, now: Instant, part: &PartKey) {
        if self.parts.contains_key(part) && self.is_live() {
            self.stop_attempt(now);
        }
    }

    /// Due timers: the start timeout, expired part leases, resends.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Reserving { deadline } if now >= deadline => self.stop_attempt(now),
            Phase::Running { since } => {
                let expired = self
                    .parts
                    .values()
                    .any(|v| v.exit_code.is_none() && now >= self.expiry(v, since));
                if expired {
                    self.stop_attempt(now);
                }
            }
            Phase::Stopping => self.try_next_attempt(now),
            _ => {}
        }
        if now >= self.next_resend {
            self.resend();
            self.next_resend = now + Duration::from_millis(self.cfg.renew_ms);
        }
    }

    /// The next instant `handle_timeout` is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let part_deadline = match self.phase {
            Phase::Final(_) => return None,
            Phase::Reserving { deadline } => Some(deadline),
            Phase::Running { since } => self
                .parts
                .values()
                .filter(|v| v.exit_code.is_none())
                .map(|v| self.expiry(v, since))
                .min(),
            Phase::Stopping => self
                .parts
                .values()
                .filter(|v| !v.stopped)
                .filter_map(|v| v.lease_until)
                .min(),
        };
        Some(part_deadline.map_or(self.next_resend, |d| d.min(self.next_resend)))
    }

    /// The next output, in the order they must be carried out.
    pub fn poll_output(&mut self) -> Option<OwnerOutput> {
        self.out.pop_front()
    }

    fn is_live(&self) -> bool {
        matches!(self.phase, Phase::Reserving { .. } | Phase::Running { .. })
    }

    fn view(&mut self, part: &PartKey) -> &mut PartView {
        self.parts.entry(part.clone()).or_default()
    }

    /// When a running part counts as lost: its grant ran out, or it never
    /// got one and a whole grant's length passed since the start.
    fn expiry(&self, v: &PartView, since: Instant) -> Instant {
        v.lease_until
            .unwrap_or(since + Duration::from_millis(self.cfg.owner_lease_ms()))
    }

    fn send(&mut self, to: &PartKey, msg: ToPart) {
        self.out.push_back(OwnerOutput::Send {
            to: to.clone(),
            msg,
        });
    }

    fn send_all(&mut self, msg: impl Fn(&PartView) -> Option<ToPart>) {
        let sends: Vec<_> = self
            .parts
            .iter()
            .filter_map(|(k, v)| msg(v).map(|m| (k.clone(), m)))
            .collect();
        for (to, m) in sends {
            self.send(&to, m);
        }
    }

    fn begin_attempt(&mut self, now: Instant) {
        self.attempt += 1;
        for v in self.parts.values_mut() {
            *v = PartView::default();
        }
        self.phase = Phase::Reserving {
            deadline: now + Duration::from_millis(self.cfg.start_timeout_ms),
        };
        self.out.push_back(OwnerOutput::AttemptBegun {
            attempt: self.attempt,
        });
        let attempt = self.attempt;
        self.send_all(|_| Some(ToPart::Reserve { attempt }));
        self.next_resend = now + Duration::from_millis(self.cfg.renew_ms);
    }

    fn on_claimed(&mut self, now: Instant, from: &PartKey) {
        if !matches!(self.phase, Phase::Reserving { .. }) {
            return;
        }
        self.view(from).claimed = true;
        if self.parts.values().all(|v| v.claimed) {
            self.phase = Phase::Running { since: now };
            let attempt = self.attempt;
            self.send_all(|_| Some(ToPart::StartAll { attempt }));
        }
    }

    fn on_renew(&mut self, now: Instant, from: &PartKey, view: PartView, ask: u64) {
        let attempt = self.attempt;
        if !self.is_live() || view.exit_code.is_some() || view.stopped {
            self.send(from, ToPart::StopAll { attempt });
            return;
        }
        // The grant is timed from now, after the part started its own timer.
        let until = now + Duration::from_millis(self.cfg.owner_lease_ms());
        self.view(from).lease_until = Some(until);
        self.send(from, ToPart::Grant { attempt, ask });
        if matches!(self.phase, Phase::Running { .. }) && !view.started {
            self.send(from, ToPart::StartAll { attempt });
        }
    }

    fn on_exited(&mut self, now: Instant, from: &PartKey, code: i32) {
        let v = self.view(from);
        v.exit_code = Some(code);
        v.stopped = true;
        if !self.is_live() {
            self.try_next_attempt(now);
        } else if code != 0 {
            self.stop_attempt(now);
        } else if self.parts.values().all(|v| v.exit_code == Some(0)) {
            self.finish(JobOutcome::Succeeded {
                attempt: self.attempt,
            });
        }
    }

    fn stop_attempt(&mut self, now: Instant) {
        self.phase = Phase::Stopping;
        let attempt = self.attempt;
        self.send_all(|v| (!v.stopped).then_some(ToPart::StopAll { attempt }));
        self.next_resend = now + Duration::from_millis(self.cfg.renew_ms);
        self.try_next_attempt(now);
    }

    /// Begins the next attempt (or fails the job) once no part of the
    /// current attempt can still be running: each is confirmed stopped or
    /// its grant ran out on this clock, after its own self-fence.
    fn try_next_attempt(&mut self, now: Instant) {
        if self.phase != Phase::Stopping {
            return;
        }
        let ignore_leases = self.cfg.bugs.has(Bug::JobNoFence);
        let all_down = self
            .parts
            .values()
            .all(|v| v.stopped || ignore_leases || v.lease_until.is_none_or(|l| now >= l));
        if !all_down {
            return;
        }
        if self.attempt < u64::from(self.cfg.max_attempts) {
            self.begin_attempt(now);
        } else {
            self.finish(JobOutcome::Failed {
                attempt: self.attempt,
            });
        }
    }

    fn finish(&mut self, outcome: JobOutcome) {
        self.phase = Phase::Final(outcome);
        self.out.push_back(OwnerOutput::Final(outcome));
    }

    /// Resends what a dropped message would leave hanging.
    fn resend(&mut self) {
        let attempt = self.attempt;
        match self.phase {
            Phase::Reserving { .. } => {
                self.send_all(|v| (!v.claimed).then_some(ToPart::Reserve { attempt }))
            }
            Phase::Stopping => {
                self.send_all(|v| (!v.stopped).then_some(ToPart::StopAll { attempt }))
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn keys(n: usize) -> Vec<PartKey> {
        (0..n)
            .map(|i| PartKey::new(&format!("p{i}"), "main"))
            .collect()
    }

    fn drain(o: &mut JobOwner) -> Vec<OwnerOutput> {
        std::iter::from_fn(|| o.poll_output()).collect()
    }

    fn sent(out: &[OwnerOutput], want: &ToPart) -> usize {
        out.iter()
            .filter(|o| matches!(o, OwnerOutput::Send { msg, .. } if msg == want))
            .count()
    }

    /// Attempt `n` claimed and leased by every part at `at`.
    fn start_all(o: &mut JobOwner, parts: &[PartKey], n: u64, at: Instant) -> Vec<OwnerOutput> {
        for p in parts {
            o.handle_message(at, p, ToOwner::RenewAsk { attempt: n, ask: 1 });
            o.handle_message(at, p, ToOwner::Claimed { attempt: n });
        }
        drain(o)
    }

    #[test]
    fn gang_start_waits_for_every_claim() {
        let parts = keys(3);
        let mut o = JobOwner::new(t(0), JobConfig::default(), &parts).unwrap();
        assert_eq!(sent(&drain(&mut o), &ToPart::Reserve { attempt: 1 }), 3);
        o.handle_message(t(5), &parts[0], ToOwner::Claimed { attempt: 1 });
        o.handle_message(t(6), &parts[1], ToOwner::Claimed { attempt: 1 });
        assert_eq!(sent(&drain(&mut o), &ToPart::StartAll { attempt: 1 }), 0);
        o.handle_message(t(7), &parts[2], ToOwner::Claimed { attempt: 1 });
        assert_eq!(sent(&drain(&mut o), &ToPart::StartAll { attempt: 1 }), 3);
    }

    #[test]
    fn start_timeout_releases_reservations_and_counts_as_an_attempt() {
        let parts = keys(2);
        let cfg = JobConfig {
            start_timeout_ms: 1_000,
            max_attempts: 2,
            ..JobConfig::default()
        };
        let mut o = JobOwner::new(t(0), cfg, &parts).unwrap();
        o.handle_message(t(5), &parts[0], ToOwner::Claimed { attempt: 1 });
        drain(&mut o);
        assert!(o.poll_timeout().unwrap() <= t(1_000));
        o.handle_timeout(t(999));
        assert_eq!(sent(&drain(&mut o), &ToPart::StopAll { attempt: 1 }), 0);
        o.handle_timeout(t(1_000));
        let out = drain(&mut o);
        assert_eq!(sent(&out, &ToPart::StopAll { attempt: 1 }), 2);
        // No part held a job lease, so nothing can run: attempt 2 at once.
        assert_eq!(sent(&out, &ToPart::Reserve { attempt: 2 }), 2);
        o.handle_timeout(t(2_000));
        assert_eq!(o.outcome(), Some(JobOutcome::Failed { attempt: 2 }));
    }

    #[test]
    fn a_lost_part_stops_all_and_the_next_attempt_waits_for_its_lease() {
        let parts = keys(2);
        let cfg = JobConfig::default();
        let grant_ms = cfg.owner_lease_ms();
        assert_eq!(grant_ms, 817, "800 ms × 1.01/0.99, rounded up");
        let mut o = JobOwner::new(t(0), cfg, &parts).unwrap();
        start_all(&mut o, &parts, 1, t(10));
        o.handle_part_lost(t(100), &parts[0]);
        let out = drain(&mut o);
        assert_eq!(sent(&out, &ToPart::StopAll { attempt: 1 }), 2);
        o.handle_message(t(120), &parts[1], ToOwner::Stopped { attempt: 1 });
        o.handle_timeout(t(10 + grant_ms - 1));
        assert_eq!(sent(&drain(&mut o), &ToPart::Reserve { attempt: 2 }), 0);
        assert!(o.poll_timeout().unwrap() <= t(10 + grant_ms));
        o.handle_timeout(t(10 + grant_ms));
        assert_eq!(sent(&drain(&mut o), &ToPart::Reserve { attempt: 2 }), 2);
        assert_eq!(o.attempt(), 2);
    }

    #[test]
    fn confirmed_stops_begin_the_next_attempt_without_waiting() {
        let parts = keys(2);
        let mut o = JobOwner::new(t(0), JobConfig::default(), &parts).unwrap();
        start_all(&mut o, &parts, 1, t(10));
        o.handle_message(
            t(50),
            &parts[0],
            ToOwner::Exited {
                attempt: 1,
                code: 3,
            },
        );
        assert_eq!(sent(&drain(&mut o), &ToPart::StopAll { attempt: 1 }), 1);
        o.handle_message(t(60), &parts[1], ToOwner::Stopped { attempt: 1 });
        assert_eq!(sent(&drain(&mut o), &ToPart::Reserve { attempt: 2 }), 2);
    }

    #[test]
    fn a_silent_part_is_lost_when_its_grant_runs_out() {
        let parts = keys(2);
        let mut o = JobOwner::new(t(0), JobConfig::default(), &parts).unwrap();
        start_all(&mut o, &parts, 1, t(10));
        // Only part 1 keeps renewing; part 0's grant ends at 10 + 817.
        o.handle_message(t(300), &parts[1], ToOwner::RenewAsk { attempt: 1, ask: 2 });
        o.handle_timeout(t(826));
        assert_eq!(sent(&drain(&mut o), &ToPart::StopAll { attempt: 1 }), 0);
        o.handle_timeout(t(827));
        assert_eq!(sent(&drain(&mut o), &ToPart::StopAll { attempt: 1 }), 2);
    }

    #[test]
    fn results_of_stale_attempts_are_ignored() {
        let parts = keys(2);
        let mut o = JobOwner::new(t(0), JobConfig::default(), &parts).unwrap();
        start_all(&mut o, &parts, 1, t(10));
        o.handle_message(
            t(20),
            &parts[0],
            ToOwner::Exited {
                attempt: 1,
                code: 1,
            },
        );
        o.handle_message(t(30), &parts[1], ToOwner::Stopped { attempt: 1 });
        assert_eq!(o.attempt(), 2);
        start_all(&mut o, &parts, 2, t(40));
        for p in &parts {
            o.handle_message(
                t(50),
                p,
                ToOwner::Exited {
                    attempt: 1,
                    code: 0,
                },
            );
        }
        assert_eq!(o.outcome(), None);
        o.handle_message(t(55), &parts[0], ToOwner::RenewAsk { attempt: 1, ask: 9 });
        let out = drain(&mut o);
        assert_eq!(sent(&out, &ToPart::StopAll { attempt: 1 }), 1);
        assert_eq!(sent(&out, &ToPart::Grant { attempt: 1, ask: 9 }), 0);
        for p in &parts {
            o.handle_message(
                t(60),
                p,
                ToOwner::Exited {
                    attempt: 2,
                    code: 0,
                },
            );
        }
        assert_eq!(o.outcome(), Some(JobOutcome::Succeeded { attempt: 2 }));
    }

    #[test]
    fn jobs_without_parts_or_with_duplicate_parts_are_refused() {
        let cfg = JobConfig::default();
        assert_eq!(
            JobOwner::new(t(0), cfg.clone(), &[]).err(),
            Some(JobError::PartCount(0))
        );
        let twice = [PartKey::new("a", "x"), PartKey::new("a", "x")];
        assert!(matches!(
            JobOwner::new(t(0), cfg, &twice),
            Err(JobError::DuplicatePart { .. })
        ));
    }
}
