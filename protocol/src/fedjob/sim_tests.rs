//! An owner and 2–3 parts driven through random message orders, drops,
//! partitions, crashes and clock drift within `rho`, on a tiny global
//! clock; checked every millisecond: no two attempts have parts running.
//!
//! Each attempt of a part is hosted by a fresh machine (the party may run
//! attempt `n+1` on another node than attempt `n`), so the only thing that
//! keeps a partitioned old part from overlapping the next attempt is the
//! lease rule, not the part noticing the later attempt.

use super::*;
use crate::time::Instant;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Length of one run in global milliseconds.
const RUN_MS: u64 = 8_000;

#[derive(Debug, Clone, Copy)]
struct Clock {
    offset_ms: u64,
    /// Rate is `(1000 + drift_permille) / 1000`.
    drift_permille: i64,
}

impl Clock {
    fn random(rng: &mut ChaCha8Rng, rho: f64) -> Self {
        let bound = (rho * 1000.0).floor() as i64;
        Clock {
            offset_ms: rng.gen_range(0..100_000),
            drift_permille: rng.gen_range(-bound..=bound),
        }
    }

    fn local(&self, global_ms: u64) -> Instant {
        let scaled = global_ms as i64 * (1000 + self.drift_permille) / 1000;
        Instant::from_millis(self.offset_ms + scaled as u64)
    }
}

#[derive(Debug, Clone)]
enum Event {
    ToPart(usize, ToPart),
    ToOwner(usize, ToOwner),
    Claimed(usize, u64),
    Lost(usize),
    ProcessEnds(usize, u64, i32),
}

struct Machine {
    part: JobPart,
    clock: Clock,
}

/// What a run saw.
#[derive(Debug, Default)]
pub(super) struct RunReport {
    pub(super) starts: u64,
    pub(super) highest_attempt: u64,
    pub(super) outcome: Option<JobOutcome>,
}

struct World {
    rng: ChaCha8Rng,
    cfg: JobConfig,
    keys: Vec<PartKey>,
    owner: JobOwner,
    owner_clock: Clock,
    machines: BTreeMap<(usize, u64), Machine>,
    /// Processes alive: (part, attempt) → whether a kill is under way.
    running: BTreeMap<(usize, u64), bool>,
    events: BTreeMap<(u64, u64), Event>,
    seq: u64,
    /// Per part: global windows in which its party is cut off the owner.
    partitions: Vec<Vec<(u64, u64)>>,
    drop_permille: u32,
    crash_per_million_ms: u32,
    report: RunReport,
}

impl World {
    fn new(seed: u64, parts: usize, cfg: JobConfig) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let keys: Vec<_> = (0..parts)
            .map(|i| PartKey::new(&format!("p{i}"), "main"))
            .collect();
        let owner_clock = Clock::random(&mut rng, cfg.rho);
        let owner = JobOwner::new(owner_clock.local(0), cfg.clone(), &keys).expect("valid job");
        let partitions = (0..parts)
            .map(|_| {
                (0..rng.gen_range(0..3))
                    .map(|_| {
                        let start = rng.gen_range(0..RUN_MS);
                        (start, start + rng.gen_range(100..3_000))
                    })
                    .collect()
            })
            .collect();
        World {
            drop_permille: rng.gen_range(0..200),
            crash_per_million_ms: rng.gen_range(0..400),
            rng,
            cfg,
            keys,
            owner,
            owner_clock,
            machines: BTreeMap::new(),
            running: BTreeMap::new(),
            events: BTreeMap::new(),
            seq: 0,
            partitions,
            report: RunReport::default(),
        }
    }

    fn schedule(&mut self, at: u64, e: Event) {
        self.seq += 1;
        self.events.insert((at, self.seq), e);
    }

    fn cut(&self, part: usize, t: u64) -> bool {
        self.partitions[part].iter().any(|&(s, e)| s <= t && t < e)
    }

    fn transmit(&mut self, t: u64, part: usize, e: Event) {
        if self.cut(part, t) || self.rng.gen_range(0..1000) < self.drop_permille {
            return;
        }
        let at = t + self.rng.gen_range(1..40);
        self.schedule(at, e);
    }

    fn drain_owner(&mut self, t: u64) {
        while let Some(o) = self.owner.poll_output() {
            match o {
                OwnerOutput::Send { to, msg } => {
                    let part = self.keys.iter().position(|k| *k == to).expect("known");
                    self.transmit(t, part, Event::ToPart(part, msg));
                }
                OwnerOutput::AttemptBegun { attempt } => {
                    self.report.highest_attempt = attempt;
                }
                OwnerOutput::Final(outcome) => self.report.outcome = Some(outcome),
            }
        }
    }

    fn drain_part(&mut self, t: u64, key: (usize, u64)) {
        let (part, _) = key;
        while let Some(o) = self
            .machines
            .get_mut(&key)
            .and_then(|m| m.part.poll_output())
        {
            match o {
                PartOutput::Send(msg) => self.transmit(t, part, Event::ToOwner(part, msg)),
                PartOutput::Claim { attempt } => {
                    let at = t + self.rng.gen_range(0..30);
                    self.schedule(at, Event::Claimed(part, attempt));
                }
                PartOutput::Release { .. } => {}
                PartOutput::Start { attempt } => {
                    self.report.starts += 1;
                    self.running.insert((part, attempt), false);
                    if self.rng.gen_bool(0.7) {
                        let at = t + self.rng.gen_range(50..3_000);
                        let code = if self.rng.gen_bool(0.8) { 0 } else { 1 };
                        self.schedule(at, Event::ProcessEnds(part, attempt, code));
                    }
                }
                PartOutput::Kill { attempt, .. } => {
                    // The kill takes effect within half the fence margin.
                    if let Some(killing) = self.running.get_mut(&(part, attempt)) {
                        *killing = true;
                        let at = t + self.rng.gen_range(0..self.cfg.fence_margin_ms / 2);
                        self.schedule(at, Event::ProcessEnds(part, attempt, -9));
                    }
                }
            }
        }
    }

    fn deliver(&mut self, t: u64, e: Event) {
        match e {
            Event::ToOwner(part, msg) => {
                let now = self.owner_clock.local(t);
                self.owner
                    .handle_message(now, &self.keys[part].clone(), msg);
                self.drain_owner(t);
            }
            Event::Lost(part) => {
                let now = self.owner_clock.local(t);
                self.owner.handle_part_lost(now, &self.keys[part].clone());
                self.drain_owner(t);
            }
            Event::ToPart(part, msg) => {
                let key = (part, msg.attempt());
                if !self.machines.contains_key(&key) {
                    if !matches!(msg, ToPart::Reserve { .. }) {
                        return;
                    }
                    let clock = Clock::random(&mut self.rng, self.cfg.rho);
                    let part = JobPart::new(clock.local(t), self.cfg.clone());
                    self.machines.insert(key, Machine { part, clock });
                }
                let m = self.machines.get_mut(&key).expect("inserted");
                m.part.handle_message(m.clock.local(t), msg);
                self.drain_part(t, key);
            }
            Event::Claimed(part, attempt) => {
                if let Some(m) = self.machines.get_mut(&(part, attempt)) {
                    m.part.handle_claimed(m.clock.local(t), attempt);
                    self.drain_part(t, (part, attempt));
                }
            }
            Event::ProcessEnds(part, attempt, code) => {
                if self.running.remove(&(part, attempt)).is_some() {
                    if let Some(m) = self.machines.get_mut(&(part, attempt)) {
                        m.part.handle_exited(m.clock.local(t), attempt, code);
                        self.drain_part(t, (part, attempt));
                    }
                }
            }
        }
    }

    /// A node running a part dies with its process; its party tells the owner.
    fn maybe_crash(&mut self, t: u64) {
        if self.rng.gen_range(0..1_000_000) >= self.crash_per_million_ms {
            return;
        }
        let Some(&(part, attempt)) = self.running.keys().next() else {
            return;
        };
        self.running.remove(&(part, attempt));
        self.machines.remove(&(part, attempt));
        self.transmit(t, part, Event::Lost(part));
    }

    fn timers(&mut self, t: u64) {
        let now = self.owner_clock.local(t);
        if self.owner.poll_timeout().is_some_and(|d| d <= now) {
            self.owner.handle_timeout(now);
            self.drain_owner(t);
        }
        let keys: Vec<_> = self.machines.keys().copied().collect();
        for key in keys {
            let m = self.machines.get_mut(&key).expect("listed");
            let now = m.clock.local(t);
            if m.part.poll_timeout().is_some_and(|d| d <= now) {
                m.part.handle_timeout(now);
                self.drain_part(t, key);
            }
        }
    }

    fn run(mut self) -> Result<RunReport, String> {
        for t in 0..RUN_MS {
            while let Some((&(at, seq), _)) = self.events.first_key_value() {
                if at > t {
                    break;
                }
                let e = self.events.remove(&(at, seq)).expect("first");
                self.deliver(t, e);
            }
            self.maybe_crash(t);
            self.timers(t);
            let attempts: std::collections::BTreeSet<u64> =
                self.running.keys().map(|&(_, a)| a).collect();
            if attempts.len() > 1 {
                return Err(format!("at {t} ms attempts {attempts:?} run parts at once"));
            }
        }
        Ok(self.report)
    }
}

pub(super) fn run(seed: u64, parts: usize, cfg: JobConfig) -> Result<RunReport, String> {
    World::new(seed, parts, cfg).run()
}

fn chaos_config() -> JobConfig {
    JobConfig {
        start_timeout_ms: 1_500,
        max_attempts: 20,
        ..JobConfig::default()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn no_two_attempts_run_parts_at_one_instant(seed in any::<u64>(), parts in 2usize..=3) {
        let report = run(seed, parts, chaos_config());
        prop_assert!(report.is_ok(), "seed {seed}: {:?}", report.err());
    }
}

#[test]
fn the_chaos_runs_do_restart_attempts() {
    let (mut starts, mut restarted, mut succeeded) = (0, 0, 0);
    for seed in 0..40 {
        let r = run(seed, 3, chaos_config()).expect("safe");
        starts += r.starts;
        restarted += u64::from(r.highest_attempt > 1);
        succeeded += u64::from(matches!(r.outcome, Some(JobOutcome::Succeeded { .. })));
    }
    eprintln!("40 runs: {starts} part starts, {restarted} restarted, {succeeded} succeeded");
    assert!(starts > 100, "only {starts} part starts");
    assert!(restarted > 10, "only {restarted} runs went past attempt 1");
    assert!(succeeded >= 3, "only {succeeded} runs succeeded");
}

#[cfg(feature = "planted-bugs")]
#[test]
fn planted_job_no_fence_is_caught() {
    let cfg = JobConfig {
        bugs: crate::Bugs::one(crate::Bug::JobNoFence),
        ..chaos_config()
    };
    let caught = (0..300).find_map(|seed| run(seed, 3, cfg.clone()).err().map(|e| (seed, e)));
    eprintln!("job-no-fence: {caught:?}");
    assert!(caught.is_some(), "job-no-fence not caught in 300 seeds");
}
