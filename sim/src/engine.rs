//! The deterministic discrete-event loop.
//!
//! One thread, one heap of events keyed by `(global µs, sequence)`, one seed
//! from which every other seed is drawn. Nodes see only their own drifting
//! local clock. Every view change a node reports is checked against the
//! invariants at the step it happens; full views are compared periodically.

use crate::clock::NodeClock;
use crate::faults::{self, FaultAction, ScheduledFault};
use crate::host::{HostFactory, NodeIndex, NodeSpec, SimNode, SimTransmit, ViewChange, ViewState};
use crate::net::{Links, NetworkSampler};
use crate::report::{Derived, MembershipReport, Quantiles2, Quantiles3, Report, Violation};
use crate::scenario::Scenario;
use crate::trace::Trace;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocol::Instant;
use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

/// Violations kept in the report; the rest are only counted.
pub const MAX_VIOLATIONS_KEPT: usize = 200;
/// How long a leaving node keeps running so its announcement goes out.
pub const LEAVE_LINGER_MS: u64 = 500;
/// Nodes that seed every join.
pub const JOIN_SEEDS: u32 = 3;
/// Period of the alive-count samples (plot, pending detections).
pub const SAMPLE_INTERVAL_MS: u64 = 1_000;
/// Period of convergence checks in the liveness phase.
pub const CONVERGENCE_CHECK_MS: u64 = 250;
/// A timer re-armed in the past this many times in a row at one instant is
/// a spinning machine: reported, then pushed forward.
pub const MAX_TIMER_SPINS: u32 = 1_000;

/// Everything a run needs.
pub struct RunConfig {
    /// The scenario.
    pub scenario: Scenario,
    /// The master seed.
    pub seed: u64,
    /// Implementation name for the report.
    pub implementation: String,
    /// Builds node machines.
    pub factory: HostFactory,
    /// Replaces the fault schedule drawn from the seed (tests pin faults).
    pub faults: Option<Vec<ScheduledFault>>,
}

/// One point of the alive-count series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Global ms.
    pub at_ms: u64,
    /// Nodes really live.
    pub live: u32,
    /// Fewest members (itself included) a live node sees as active.
    pub seen_min: u32,
    /// Mean of the same.
    pub seen_mean: f64,
    /// Most of the same.
    pub seen_max: u32,
}

/// A run's report plus the series the plot draws.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The report.
    pub report: Report,
    /// Alive counts over time.
    pub samples: Vec<Sample>,
    /// Detection times (crash to down everywhere), ms.
    pub detect_all_ms: Vec<f64>,
    /// Global ms of the heal.
    pub heal_ms: u64,
}

#[derive(Debug)]
enum Ev {
    Start(NodeIndex),
    Deliver {
        dst: NodeIndex,
        src: NodeIndex,
        reliable: bool,
        payload: Vec<u8>,
    },
    Timer {
        node: NodeIndex,
        gen: u64,
    },
    Early {
        node: NodeIndex,
        gen: u64,
    },
    Fault(usize),
    LeaveStop(NodeIndex),
    Heal,
    Snapshot,
    Sample,
    ConvergenceCheck,
}

struct Entry {
    at_us: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    // Reversed: BinaryHeap is a max-heap and we want the earliest first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at_us, other.seq).cmp(&(self.at_us, self.seq))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    NotStarted,
    Running,
    Paused,
    Crashed,
    Left,
}

struct Slot {
    host: Option<Box<dyn SimNode>>,
    status: Status,
    leaving: bool,
    clock: NodeClock,
    seed: u64,
    generation: u32,
    timer_gen: u64,
    armed_at_us: Option<u64>,
    slow_factor: f64,
    paused_since_us: u64,
    queue: VecDeque<(NodeIndex, bool, Vec<u8>)>,
    spin_at_us: u64,
    spins: u32,
    /// Excused from false positives until this global µs plus the grace.
    excused_until_us: Option<u64>,
    cut_off: bool,
}

struct CrashRecord {
    node: NodeIndex,
    at_us: u64,
    first_suspect_us: Option<u64>,
    first_down_us: Option<u64>,
    all_down_us: Option<u64>,
    censored: bool,
}

/// The simulation.
pub struct Sim {
    scenario: Scenario,
    seed: u64,
    implementation: String,
    factory: HostFactory,
    n: usize,
    now_us: u64,
    seq: u64,
    heap: BinaryHeap<Entry>,
    slots: Vec<Slot>,
    net: NetworkSampler,
    links: Links,
    engine_rng: ChaCha8Rng,
    schedule: Vec<ScheduledFault>,
    derived: Derived,
    trace: Trace,
    /// `view[o * n + m]`: observer o's view of member m.
    view: Vec<u8>,
    /// `last_inc[o * n + m]`: highest incarnation o reported for m.
    last_inc: Vec<u64>,
    /// Highest incarnation each node ever had itself, across restarts.
    max_own_inc: Vec<u64>,
    active_seen: Vec<u32>,
    violations: Vec<Violation>,
    violations_total: u64,
    crashes: Vec<CrashRecord>,
    open_crash: Vec<Option<usize>>,
    false_positive_keys: BTreeSet<(NodeIndex, u64)>,
    false_positives: u64,
    healed: bool,
    converged_after_heal_ms: Option<u64>,
    convergence_failed: bool,
    bytes_out: u64,
    msgs_out: u64,
    samples: Vec<Sample>,
}

/// Runs a whole scenario.
pub fn run(config: RunConfig) -> Outcome {
    run_with_progress(config, &mut |_| {})
}

/// Runs a whole scenario, calling `progress(virtual_ms)` once per virtual
/// second (the CLI's progress bar).
pub fn run_with_progress(config: RunConfig, progress: &mut dyn FnMut(u64)) -> Outcome {
    let wall = std::time::Instant::now();
    let mut sim = Sim::new(config);
    sim.run_to_end_with(progress);
    let wall_ms = wall.elapsed().as_millis() as u64;
    sim.finish(wall_ms)
}

impl Sim {
    /// Builds the simulation: derives every seed, draws clocks and the fault
    /// schedule, queues the node starts.
    pub fn new(config: RunConfig) -> Sim {
        let RunConfig {
            scenario,
            seed,
            implementation,
            factory,
            faults: pinned_faults,
        } = config;
        let n = scenario.nodes as usize;
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        // Fixed draw order: adding a stream later must append, not insert.
        let network_seed: u64 = master.gen();
        let faults_seed: u64 = master.gen();
        let engine_seed: u64 = master.gen();
        let node_seed_base: u64 = master.gen();
        let clock_seed: u64 = master.gen();

        let mut clock_rng = ChaCha8Rng::seed_from_u64(clock_seed);
        let rho = scenario.clock.drift_rho;
        let mut drift_min = f64::INFINITY;
        let mut drift_max = f64::NEG_INFINITY;
        let mut slots = Vec::with_capacity(n);
        for i in 0..n {
            let drift = if rho > 0.0 {
                clock_rng.gen_range(-rho..=rho)
            } else {
                0.0
            };
            let origin_ms = clock_rng.gen_range(0..1_000_000u64);
            let clock = NodeClock::new(drift, origin_ms);
            drift_min = drift_min.min(clock.drift());
            drift_max = drift_max.max(clock.drift());
            slots.push(Slot {
                host: None,
                status: Status::NotStarted,
                leaving: false,
                clock,
                seed: node_seed_base ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                generation: 0,
                timer_gen: 0,
                armed_at_us: None,
                slow_factor: 1.0,
                paused_since_us: 0,
                queue: VecDeque::new(),
                spin_at_us: 0,
                spins: 0,
                excused_until_us: None,
                cut_off: false,
            });
        }
        let schedule = pinned_faults.unwrap_or_else(|| faults::schedule(&scenario, faults_seed));
        let derived = Derived {
            network_seed,
            faults_seed,
            engine_seed,
            node_seed_base,
            clock_seed,
            drift_min,
            drift_max,
            faults: schedule
                .iter()
                .map(|f| format!("{} {}", f.at_ms, f.action))
                .collect(),
        };
        let mut sim = Sim {
            net: NetworkSampler::new(scenario.network.clone(), network_seed),
            links: Links::new(n),
            engine_rng: ChaCha8Rng::seed_from_u64(engine_seed),
            scenario,
            seed,
            implementation,
            factory,
            n,
            now_us: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            slots,
            schedule,
            derived,
            trace: Trace::new(),
            view: vec![0; n * n],
            last_inc: vec![0; n * n],
            max_own_inc: vec![0; n],
            active_seen: vec![0; n],
            violations: Vec::new(),
            violations_total: 0,
            crashes: Vec::new(),
            open_crash: vec![None; n],
            false_positive_keys: BTreeSet::new(),
            false_positives: 0,
            healed: false,
            converged_after_heal_ms: None,
            convergence_failed: false,
            bytes_out: 0,
            msgs_out: 0,
            samples: Vec::new(),
        };
        sim.queue_initial_events();
        sim
    }

    fn queue_initial_events(&mut self) {
        // Node 0 starts first so that every later join finds someone.
        self.push(0, Ev::Start(0));
        let spread_us = self.scenario.start_spread_ms * 1000;
        for i in 1..self.n as NodeIndex {
            let at = if spread_us > 0 {
                self.engine_rng.gen_range(1..=spread_us)
            } else {
                1
            };
            self.push(at, Ev::Start(i));
        }
        for idx in 0..self.schedule.len() {
            let at = self.schedule[idx].at_ms * 1000;
            self.push(at, Ev::Fault(idx));
        }
        self.push(self.scenario.heal_ms() * 1000, Ev::Heal);
        self.push(self.scenario.snapshot_interval_ms * 1000, Ev::Snapshot);
        self.push(SAMPLE_INTERVAL_MS * 1000, Ev::Sample);
    }

    fn push(&mut self, at_us: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Entry {
            at_us,
            seq: self.seq,
            ev,
        });
    }

    /// Runs until the scenario's end.
    pub fn run_to_end(&mut self) {
        self.run_to_end_with(&mut |_| {});
    }

    /// Runs until the scenario's end, reporting virtual progress.
    pub fn run_to_end_with(&mut self, progress: &mut dyn FnMut(u64)) {
        let end_us = self.scenario.end_ms() * 1000;
        while let Some(top) = self.heap.peek() {
            if top.at_us > end_us {
                break;
            }
            let Entry { at_us, ev, .. } = self.heap.pop().expect("peeked");
            debug_assert!(at_us >= self.now_us, "time never goes backwards");
            self.now_us = at_us;
            if matches!(ev, Ev::Sample) {
                progress(self.now_ms());
            }
            self.step(ev);
        }
        self.now_us = end_us;
        self.final_checks();
    }

    fn now_ms(&self) -> u64 {
        self.now_us / 1000
    }

    fn violation(&mut self, invariant: &str, detail: String) {
        self.violations_total += 1;
        self.trace.word(0x5107);
        if self.violations.len() < MAX_VIOLATIONS_KEPT {
            self.violations.push(Violation {
                invariant: invariant.to_string(),
                at_ms: self.now_ms(),
                detail,
            });
        }
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Start(node) => self.start_node(node),
            Ev::Deliver {
                dst,
                src,
                reliable,
                payload,
            } => self.deliver(dst, src, reliable, payload),
            Ev::Timer { node, gen } => self.fire_timer(node, gen),
            Ev::Early { node, gen } => self.fire_early(node, gen),
            Ev::Fault(idx) => {
                let action = self.schedule[idx].action.clone();
                self.apply_fault(action);
            }
            Ev::LeaveStop(node) => {
                let slot = &mut self.slots[node as usize];
                if slot.status == Status::Running || slot.status == Status::Paused {
                    slot.status = Status::Left;
                    slot.queue.clear();
                    slot.timer_gen += 1;
                    slot.armed_at_us = None;
                    self.trace.words(&[0x1eaf, u64::from(node)]);
                }
            }
            Ev::Heal => self.heal(),
            Ev::Snapshot => {
                self.snapshot_all();
                let next = self.now_us + self.scenario.snapshot_interval_ms * 1000;
                self.push(next, Ev::Snapshot);
            }
            Ev::Sample => {
                self.sample();
                self.push(self.now_us + SAMPLE_INTERVAL_MS * 1000, Ev::Sample);
            }
            Ev::ConvergenceCheck => self.convergence_check(),
        }
    }

    fn seeds_for(&self, node: NodeIndex) -> Vec<NodeIndex> {
        (0..(JOIN_SEEDS + 1).min(self.n as u32))
            .filter(|&s| s != node)
            .take(JOIN_SEEDS as usize)
            .collect()
    }

    fn spec(&self, node: NodeIndex, initial_incarnation: u64) -> NodeSpec {
        let slot = &self.slots[node as usize];
        NodeSpec {
            index: node,
            nodes: self.scenario.nodes,
            seed: slot.seed ^ u64::from(slot.generation).wrapping_mul(0xd6e8_feb8_6659_fd93),
            initial_incarnation,
            generation: slot.generation,
            now: slot.clock.local(self.now_us),
        }
    }

    fn start_node(&mut self, node: NodeIndex) {
        let spec = self.spec(node, 0);
        let host = (self.factory)(spec);
        let seeds = self.seeds_for(node);
        let slot = &mut self.slots[node as usize];
        slot.host = Some(host);
        slot.status = Status::Running;
        self.trace.words(&[0x5747, u64::from(node)]);
        self.input(node, |h, now| h.handle_join(now, &seeds));
    }

    /// Feeds one input to a running node and drains everything it produced.
    fn input(&mut self, node: NodeIndex, f: impl FnOnce(&mut dyn SimNode, Instant)) {
        let i = node as usize;
        let Some(mut host) = self.slots[i].host.take() else {
            return;
        };
        let local = self.slots[i].clock.local(self.now_us);
        f(host.as_mut(), local);
        self.drain(node, host.as_mut());
        self.slots[i].host = Some(host);
    }

    fn drain(&mut self, node: NodeIndex, host: &mut dyn SimNode) {
        while let Some(t) = host.poll_transmit() {
            self.send(node, t);
        }
        let own = host.incarnation();
        let max = &mut self.max_own_inc[node as usize];
        *max = (*max).max(own);
        while let Some(change) = host.poll_event() {
            self.on_view_change(node, change);
        }
        self.arm_timer(node, host);
    }

    fn send(&mut self, src: NodeIndex, t: SimTransmit) {
        self.bytes_out += t.payload.len() as u64;
        self.msgs_out += 1;
        if t.dst as usize >= self.n {
            return;
        }
        if !self.links.all_up() && self.links.blocked(src, t.dst) {
            return;
        }
        let fate = self.net.fate(t.reliable);
        if let Some(d) = fate.duplicate_us {
            let ev = Ev::Deliver {
                dst: t.dst,
                src,
                reliable: t.reliable,
                payload: t.payload.clone(),
            };
            self.push(self.now_us + d, ev);
        }
        if let Some(d) = fate.first_us {
            let ev = Ev::Deliver {
                dst: t.dst,
                src,
                reliable: t.reliable,
                payload: t.payload,
            };
            self.push(self.now_us + d, ev);
        }
    }

    fn deliver(&mut self, dst: NodeIndex, src: NodeIndex, reliable: bool, payload: Vec<u8>) {
        // A partition that started while the message was in flight drops it.
        if !self.links.all_up() && self.links.blocked(src, dst) {
            return;
        }
        let slot = &mut self.slots[dst as usize];
        match slot.status {
            Status::Running => {
                self.trace.words(&[0xde11, u64::from(dst), u64::from(src)]);
                self.trace.bytes(&payload);
                self.input(dst, |h, now| {
                    h.handle_datagram(now, src, reliable, &payload)
                });
            }
            Status::Paused => {
                if slot.queue.len() < self.scenario.network.pause_queue_max {
                    slot.queue.push_back((src, reliable, payload));
                }
            }
            Status::NotStarted | Status::Crashed | Status::Left => {}
        }
    }

    fn arm_timer(&mut self, node: NodeIndex, host: &dyn SimNode) {
        let now = self.now_us;
        let slot = &mut self.slots[node as usize];
        let Some(local_deadline) = host.poll_timeout() else {
            if slot.armed_at_us.is_some() {
                slot.armed_at_us = None;
                slot.timer_gen += 1;
            }
            return;
        };
        let mut at = slot.clock.global_at(local_deadline);
        if slot.slow_factor > 1.0 && at > now {
            at = now + ((at - now) as f64 * slot.slow_factor) as u64;
        }
        if at <= now {
            if slot.spin_at_us == now {
                slot.spins += 1;
            } else {
                slot.spin_at_us = now;
                slot.spins = 0;
            }
            at = now;
            if slot.spins == MAX_TIMER_SPINS {
                at = now + 1000;
                self.violation(
                    "timer_spin",
                    format!("n{node} re-armed its timer in the past {MAX_TIMER_SPINS} times at one instant"),
                );
            }
        }
        let slot = &mut self.slots[node as usize];
        if slot.armed_at_us == Some(at) {
            return;
        }
        slot.timer_gen += 1;
        slot.armed_at_us = Some(at);
        let gen = slot.timer_gen;
        self.push(at, Ev::Timer { node, gen });
        let p = self.scenario.early_timeout_probability;
        if p > 0.0 && at > now + 1 && self.engine_rng.gen_bool(p) {
            let early = self.engine_rng.gen_range(now..at);
            self.push(early, Ev::Early { node, gen });
        }
    }

    fn fire_timer(&mut self, node: NodeIndex, gen: u64) {
        let slot = &mut self.slots[node as usize];
        if slot.timer_gen != gen || slot.status != Status::Running {
            return;
        }
        slot.armed_at_us = None;
        self.trace.words(&[0x7173, u64::from(node)]);
        self.input(node, |h, now| h.handle_timeout(now));
    }

    /// A spurious wake-up before the deadline: it must change nothing.
    fn fire_early(&mut self, node: NodeIndex, gen: u64) {
        let i = node as usize;
        if self.slots[i].timer_gen != gen || self.slots[i].status != Status::Running {
            return;
        }
        let Some(mut host) = self.slots[i].host.take() else {
            return;
        };
        let local = self.slots[i].clock.local(self.now_us);
        let deadline = host.poll_timeout();
        if deadline.is_some_and(|d| local < d) {
            self.trace.words(&[0xea51, u64::from(node)]);
            host.handle_timeout(local);
            let mut acted = Vec::new();
            if let Some(t) = host.poll_transmit() {
                acted.push(format!(
                    "a transmit of {} bytes to n{}",
                    t.payload.len(),
                    t.dst
                ));
                self.send(node, t);
            }
            if let Some(e) = host.poll_event() {
                acted.push(format!("an event {e:?}"));
                self.on_view_change(node, e);
            }
            let after = host.poll_timeout();
            if after != deadline {
                acted.push(format!("poll_timeout moved from {deadline:?} to {after:?}"));
            }
            if !acted.is_empty() {
                self.violation(
                    "stale_timer_acted",
                    format!(
                        "n{node} woken at local {local:?} before its deadline {deadline:?} produced {}",
                        acted.join(", ")
                    ),
                );
                self.drain(node, host.as_mut());
            }
        }
        self.slots[i].host = Some(host);
    }

    fn is_live(&self, node: usize) -> bool {
        let s = &self.slots[node];
        matches!(s.status, Status::Running | Status::Paused) && !s.leaving
    }

    fn excused(&self, node: usize) -> bool {
        let s = &self.slots[node];
        if !matches!(s.status, Status::Running | Status::Paused) || s.leaving || s.cut_off {
            return true;
        }
        if s.status == Status::Paused
            && self.now_us - s.paused_since_us > self.scenario.pause_bound_ms * 1000
        {
            return true;
        }
        s.excused_until_us
            .is_some_and(|t| self.now_us <= t + self.scenario.false_positive_grace_ms * 1000)
    }

    fn on_view_change(&mut self, observer: NodeIndex, change: ViewChange) {
        let (o, m) = (observer as usize, change.member as usize);
        if m >= self.n || m == o {
            return;
        }
        let cell = o * self.n + m;
        self.trace.words(&[
            0x7e3,
            observer as u64,
            m as u64,
            change.state as u64,
            change.incarnation.unwrap_or(u64::MAX),
        ]);
        if let Some(inc) = change.incarnation {
            self.check_incarnation(observer, change.member, change.state, inc);
        }
        let old = ViewState::from_u8(self.view[cell]);
        self.set_view(o, m, change.state);
        if old == change.state {
            return;
        }
        if matches!(change.state, ViewState::Suspect | ViewState::Down) {
            if let Some(c) = self.open_crash[m] {
                let rec = &mut self.crashes[c];
                rec.first_suspect_us.get_or_insert(self.now_us);
            }
        }
        if change.state == ViewState::Down {
            if let Some(c) = self.open_crash[m] {
                self.crashes[c].first_down_us.get_or_insert(self.now_us);
                self.update_all_down(c);
            } else if !self.excused(m) {
                self.false_positive(observer, change.member, change.incarnation);
            }
        }
    }

    fn check_incarnation(
        &mut self,
        observer: NodeIndex,
        member: NodeIndex,
        state: ViewState,
        inc: u64,
    ) {
        let cell = observer as usize * self.n + member as usize;
        if state == ViewState::Unknown {
            // Forgotten: a later sighting starts afresh.
            self.last_inc[cell] = 0;
            return;
        }
        let last = self.last_inc[cell];
        if inc < last {
            self.violation(
                "incarnation_decreased",
                format!("n{observer} holds n{member} at incarnation {inc} after {last}"),
            );
        }
        self.last_inc[cell] = last.max(inc);
        let own = self.max_own_inc[member as usize];
        if inc > own {
            self.violation(
                "incarnation_forged",
                format!(
                    "n{observer} holds n{member} at incarnation {inc} but n{member} never went above {own}"
                ),
            );
        }
    }

    fn set_view(&mut self, o: usize, m: usize, state: ViewState) {
        let cell = o * self.n + m;
        let was = ViewState::from_u8(self.view[cell]).is_active();
        self.view[cell] = state as u8;
        match (was, state.is_active()) {
            (false, true) => self.active_seen[o] += 1,
            (true, false) => self.active_seen[o] -= 1,
            _ => {}
        }
    }

    fn false_positive(&mut self, observer: NodeIndex, member: NodeIndex, inc: Option<u64>) {
        let key = (member, inc.unwrap_or(self.max_own_inc[member as usize]));
        if !self.false_positive_keys.insert(key) {
            return;
        }
        self.false_positives += 1;
        self.trace.words(&[0xfa15, u64::from(member)]);
        if let Some(max) = self.scenario.max_false_positives {
            if self.false_positives > max {
                self.violation(
                    "false_positive",
                    format!(
                        "n{observer} confirmed n{member} down (incarnation {:?}) while it was live and reached a majority",
                        inc
                    ),
                );
            }
        }
    }

    fn update_all_down(&mut self, c: usize) {
        let rec = &self.crashes[c];
        if rec.all_down_us.is_some() || rec.censored {
            return;
        }
        let m = rec.node as usize;
        let everyone = (0..self.n)
            .filter(|&o| o != m && self.is_live(o))
            .all(|o| !ViewState::from_u8(self.view[o * self.n + m]).is_active());
        if everyone {
            self.crashes[c].all_down_us = Some(self.now_us);
        }
    }

    fn apply_fault(&mut self, action: FaultAction) {
        self.trace.word(0xfa17);
        match action {
            FaultAction::Crash(node) => self.crash(node),
            FaultAction::Restart { node, with_state } => self.restart(node, with_state),
            FaultAction::Pause(node) => {
                let slot = &mut self.slots[node as usize];
                if slot.status == Status::Running {
                    slot.status = Status::Paused;
                    slot.paused_since_us = self.now_us;
                }
            }
            FaultAction::Resume(node) => self.resume(node),
            FaultAction::Slow { node, factor } => self.set_slow(node, factor),
            FaultAction::Unslow(node) => self.set_slow(node, 1.0),
            FaultAction::Leave(node) => {
                if self.slots[node as usize].status == Status::Running {
                    self.slots[node as usize].leaving = true;
                    self.input(node, |h, now| h.handle_leave(now));
                    self.push(self.now_us + LEAVE_LINGER_MS * 1000, Ev::LeaveStop(node));
                }
            }
            FaultAction::Partition { id, kind, inside } => {
                self.links.partition(id, kind, &inside);
                self.links_changed();
            }
            FaultAction::HealPartition(id) => {
                self.links.heal_partition(id);
                self.links_changed();
            }
            FaultAction::Clog(node) => {
                self.links.clog(node);
                self.links_changed();
            }
            FaultAction::Unclog(node) => {
                self.links.unclog(node);
                self.links_changed();
            }
            // Health only changes what work a node takes: the task world's.
            FaultAction::Critical(_) | FaultAction::Passing(_) => {}
        }
    }

    fn links_changed(&mut self) {
        let reach = self.links.reaches_majority();
        for (slot, ok) in self.slots.iter_mut().zip(reach) {
            if slot.cut_off && ok {
                slot.excused_until_us = Some(self.now_us);
            }
            slot.cut_off = !ok;
        }
    }

    fn crash(&mut self, node: NodeIndex) {
        let i = node as usize;
        let slot = &mut self.slots[i];
        if !matches!(slot.status, Status::Running | Status::Paused) {
            return;
        }
        slot.status = Status::Crashed;
        slot.queue.clear();
        slot.timer_gen += 1;
        slot.armed_at_us = None;
        let c = self.crashes.len();
        self.crashes.push(CrashRecord {
            node,
            at_us: self.now_us,
            first_suspect_us: None,
            first_down_us: None,
            all_down_us: None,
            censored: false,
        });
        self.open_crash[i] = Some(c);
        // Its own view dies with it.
        for m in 0..self.n {
            self.set_view(i, m, ViewState::Unknown);
            self.last_inc[i * self.n + m] = 0;
        }
    }

    fn restart(&mut self, node: NodeIndex, with_state: bool) {
        let i = node as usize;
        if self.slots[i].status != Status::Crashed {
            return;
        }
        if let Some(c) = self.open_crash[i].take() {
            let rec = &mut self.crashes[c];
            if rec.all_down_us.is_none() {
                rec.censored = true;
            }
        }
        let slot = &mut self.slots[i];
        slot.status = Status::Running;
        slot.excused_until_us = Some(self.now_us);
        slot.timer_gen += 1;
        slot.armed_at_us = None;
        let seeds = self.seeds_for(node);
        if with_state {
            self.input(node, |h, now| h.restart_with_state(now, &seeds));
        } else {
            self.slots[i].generation += 1;
            let spec = self.spec(node, 0);
            self.slots[i].host = Some((self.factory)(spec));
            self.input(node, |h, now| h.handle_join(now, &seeds));
        }
    }

    fn resume(&mut self, node: NodeIndex) {
        let i = node as usize;
        if self.slots[i].status != Status::Paused {
            return;
        }
        let paused_us = self.now_us - self.slots[i].paused_since_us;
        if paused_us > self.scenario.pause_bound_ms * 1000 {
            self.slots[i].excused_until_us = Some(self.now_us);
        }
        self.slots[i].status = Status::Running;
        // The socket buffer is read first, then the overdue timer fires.
        let queued = std::mem::take(&mut self.slots[i].queue);
        for (src, reliable, payload) in queued {
            if self.slots[i].status != Status::Running {
                break;
            }
            self.trace.words(&[0xde11, u64::from(node), u64::from(src)]);
            self.trace.bytes(&payload);
            self.input(node, |h, now| {
                h.handle_datagram(now, src, reliable, &payload)
            });
        }
        self.rearm(node);
    }

    fn rearm(&mut self, node: NodeIndex) {
        let i = node as usize;
        self.slots[i].armed_at_us = None;
        if let Some(host) = self.slots[i].host.take() {
            self.arm_timer(node, host.as_ref());
            self.slots[i].host = Some(host);
        }
    }

    fn set_slow(&mut self, node: NodeIndex, factor: f64) {
        self.slots[node as usize].slow_factor = factor;
        if self.slots[node as usize].status == Status::Running {
            self.rearm(node);
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        self.trace.word(0x4ea1);
        self.links.heal_all();
        self.links_changed();
        for node in 0..self.n as NodeIndex {
            self.resume(node);
            if self.slots[node as usize].slow_factor > 1.0 {
                self.set_slow(node, 1.0);
            }
        }
        self.push(self.now_us, Ev::ConvergenceCheck);
    }

    fn deadline_us(&self) -> u64 {
        (self.scenario.heal_ms() + self.scenario.convergence_deadline_ms) * 1000
    }

    /// Whether every live node sees exactly the live set as active; returns
    /// the disagreements (count and one example).
    fn disagreements(&self) -> (u64, Option<String>) {
        let mut count = 0u64;
        let mut example = None;
        for o in (0..self.n).filter(|&o| self.is_live(o)) {
            for m in (0..self.n).filter(|&m| m != o) {
                let seen = ViewState::from_u8(self.view[o * self.n + m]);
                let live = self.is_live(m);
                if seen.is_active() != live {
                    count += 1;
                    example.get_or_insert_with(|| {
                        let held = self.last_inc[o * self.n + m];
                        let back = ViewState::from_u8(self.view[m * self.n + o]);
                        format!(
                            "n{o} sees n{m} as {seen:?} (incarnation {held}) but it is {}; n{m} is at incarnation {} and sees n{o} as {back:?}",
                            if live { "live" } else { "gone" },
                            self.slots[m].host.as_ref().map_or(0, |h| h.incarnation()),
                        )
                    });
                }
            }
        }
        (count, example)
    }

    fn convergence_check(&mut self) {
        if self.converged_after_heal_ms.is_some() || self.convergence_failed {
            return;
        }
        let (count, _) = self.disagreements();
        if count == 0 {
            // Confirm against the machines' full views, not only their events.
            self.snapshot_all();
            if self.disagreements().0 == 0 {
                let heal_us = self.scenario.heal_ms() * 1000;
                self.converged_after_heal_ms = Some((self.now_us - heal_us) / 1000);
                return;
            }
        }
        let deadline = self.deadline_us();
        if self.now_us >= deadline {
            self.snapshot_all();
            let (count, example) = self.disagreements();
            if count == 0 {
                let heal_us = self.scenario.heal_ms() * 1000;
                self.converged_after_heal_ms = Some((self.now_us - heal_us) / 1000);
                return;
            }
            self.convergence_failed = true;
            self.violation(
                "no_convergence",
                format!(
                    "{count} (observer, member) pairs still disagree with the live set {} ms after the heal, e.g. {}",
                    self.scenario.convergence_deadline_ms,
                    example.unwrap_or_default()
                ),
            );
            return;
        }
        let next = (self.now_us + CONVERGENCE_CHECK_MS * 1000).min(deadline);
        self.push(next, Ev::ConvergenceCheck);
    }

    /// Reads every running node's full view: checks the incarnation
    /// invariants on it and re-synchronises the view matrix (some machines
    /// do not report every change as an event).
    fn snapshot_all(&mut self) {
        let n = self.n;
        let mut row: Vec<(NodeIndex, ViewState, Option<u64>)> = Vec::with_capacity(n);
        let mut seen = vec![false; n];
        for o in 0..n {
            if self.slots[o].status != Status::Running {
                continue;
            }
            row.clear();
            if let Some(host) = self.slots[o].host.as_ref() {
                host.for_each_member(&mut |m, s, inc| row.push((m, s, inc)));
            }
            seen.iter_mut().for_each(|s| *s = false);
            for &(m, state, inc) in &row {
                if m as usize >= n || m as usize == o {
                    continue;
                }
                seen[m as usize] = true;
                if let Some(inc) = inc {
                    self.check_incarnation(o as NodeIndex, m, state, inc);
                }
                self.set_view(o, m as usize, state);
            }
            for (m, &was_seen) in seen.iter().enumerate() {
                if !was_seen && m != o {
                    self.set_view(o, m, ViewState::Unknown);
                    self.last_inc[o * n + m] = 0;
                }
            }
        }
        for c in 0..self.crashes.len() {
            self.update_all_down(c);
        }
    }

    fn sample(&mut self) {
        let live: Vec<usize> = (0..self.n).filter(|&o| self.is_live(o)).collect();
        for c in 0..self.crashes.len() {
            self.update_all_down(c);
        }
        if live.is_empty() {
            return;
        }
        let seen: Vec<u32> = live.iter().map(|&o| self.active_seen[o] + 1).collect();
        let sum: u64 = seen.iter().map(|&s| u64::from(s)).sum();
        self.samples.push(crate::engine::Sample {
            at_ms: self.now_ms(),
            live: live.len() as u32,
            seen_min: seen.iter().copied().min().unwrap_or(0),
            seen_mean: sum as f64 / seen.len() as f64,
            seen_max: seen.iter().copied().max().unwrap_or(0),
        });
    }

    fn final_checks(&mut self) {
        if self.healed && self.converged_after_heal_ms.is_none() && !self.convergence_failed {
            // The run ended before the deadline check could run.
            self.convergence_check();
        }
        // Full views once more: the last word on the incarnation invariants.
        self.snapshot_all();
    }

    /// Assembles the report.
    pub fn finish(self, wall_ms: u64) -> Outcome {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut detect_first = Vec::new();
        let mut detect_all = Vec::new();
        let mut dissemination = Vec::new();
        let mut undetected = 0;
        for rec in &self.crashes {
            if let Some(t) = rec.first_suspect_us {
                detect_first.push(ms(t - rec.at_us));
            }
            match (rec.all_down_us, rec.censored) {
                (Some(t), _) => {
                    detect_all.push(ms(t - rec.at_us));
                    if let Some(first) = rec.first_down_us {
                        dissemination.push(ms(t.saturating_sub(first)));
                    }
                }
                (None, true) => {}
                (None, false) => undetected += 1,
            }
        }
        let node_s = self.n as f64 * self.scenario.virtual_s as f64;
        let membership = MembershipReport {
            crashes: self.crashes.len() as u64,
            detect_first_ms: Quantiles3::of(&detect_first),
            detect_all_ms: Quantiles3::of(&detect_all),
            undetected,
            false_positives: self.false_positives,
            dissemination_all_ms: Quantiles2::of(&dissemination),
            converged_after_heal_ms: self.converged_after_heal_ms,
            bytes_per_node_per_s: self.bytes_out as f64 / node_s,
            msgs_per_node_per_s: self.msgs_out as f64 / node_s,
        };
        let report = Report {
            scenario: self.scenario.name.clone(),
            implementation: self.implementation.clone(),
            seed: self.seed,
            nodes: self.scenario.nodes,
            virtual_s: self.scenario.virtual_s,
            wall_ms,
            trace_hash: self.trace.hex(),
            violations: self.violations,
            violations_total: self.violations_total,
            membership,
            tasks: None,
            derived: self.derived,
        };
        Outcome {
            report,
            samples: self.samples,
            detect_all_ms: detect_all,
            heal_ms: self.scenario.heal_ms(),
        }
    }
}
