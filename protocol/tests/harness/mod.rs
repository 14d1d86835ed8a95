//! An in-memory cluster of membership machines on virtual time (quinn's
//! `Pair`, widened to N nodes): per-link latency, loss, partitions,
//! crashes, pauses and restarts. Deterministic from one seed.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_protocol::membership::{Config, Event, Identity, MemberState, Membership};
use shoal_protocol::{Instant, NodeId, StoreId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Hard cap on the steps of one `run_*` call: a bug that spins must fail
/// the test, not hang it.
const MAX_STEPS_PER_RUN: u64 = 5_000_000;

pub struct Packet {
    pub src: usize,
    pub dst: usize,
    pub reliable: bool,
    pub payload: Vec<u8>,
}

pub struct Node {
    pub machine: Membership,
    pub crashed: bool,
    pub paused_until: Option<Instant>,
    /// Payloads that arrived while paused, handed over on resume.
    pub inbox: VecDeque<Packet>,
    /// Every event with the time it was polled.
    pub events: Vec<(Instant, Event)>,
}

pub struct Cluster {
    pub now: Instant,
    pub nodes: Vec<Node>,
    pub config: Config,
    queue: BTreeMap<(Instant, u64), Packet>,
    next_packet: u64,
    rng: ChaCha8Rng,
    /// One-way latency of every link.
    pub latency: Duration,
    /// Extra random one-way latency, uniform in `0..=latency_jitter`.
    pub latency_jitter: Duration,
    /// Drop probability of every datagram.
    pub loss: f64,
    /// Directed links that drop everything, streams included.
    pub blocked: BTreeSet<(usize, usize)>,
    addr_index: BTreeMap<SocketAddr, usize>,
    /// Each node's next wake-up (timer or resume), mirrored in `wakeups`.
    wakeup_of: Vec<Option<Instant>>,
    wakeups: BTreeSet<(Instant, usize)>,
    pub steps: u64,
    /// Payload bytes handed to the network per node.
    pub bytes_sent: Vec<u64>,
    /// Payload bytes by message kind, when `tally` is on.
    pub tally: Option<BTreeMap<String, (u64, u64)>>,
}

pub fn id_of(i: usize) -> NodeId {
    NodeId::from_u64(i as u64 + 1)
}

pub fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250) as u8 + 1)),
        7000,
    )
}

pub fn store_of(i: usize) -> StoreId {
    StoreId::from_u64(1000 + i as u64)
}

pub fn identity_of(i: usize) -> Identity {
    Identity {
        id: id_of(i),
        name: format!("node-{i}"),
        addr: addr_of(i),
        store: store_of(i),
    }
}

impl Cluster {
    /// `n` machines, not yet joined.
    pub fn new(n: usize, config: Config, seed: u64) -> Self {
        let nodes = (0..n)
            .map(|i| Node {
                machine: Membership::new(
                    identity_of(i),
                    config.clone(),
                    seed.wrapping_mul(1000).wrapping_add(i as u64),
                    0,
                    Instant::ZERO,
                ),
                crashed: false,
                paused_until: None,
                inbox: VecDeque::new(),
                events: Vec::new(),
            })
            .collect();
        let mut c = Cluster {
            now: Instant::ZERO,
            nodes,
            config,
            queue: BTreeMap::new(),
            next_packet: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            latency: Duration::from_millis(1),
            latency_jitter: Duration::ZERO,
            loss: 0.0,
            blocked: BTreeSet::new(),
            addr_index: (0..n).map(|i| (addr_of(i), i)).collect(),
            wakeup_of: vec![None; n],
            wakeups: BTreeSet::new(),
            steps: 0,
            bytes_sent: vec![0; n],
            tally: None,
        };
        for i in 0..n {
            c.refresh_wakeup(i);
        }
        c
    }

    /// Re-files node `i`'s next wake-up after anything touched it.
    fn refresh_wakeup(&mut self, i: usize) {
        if let Some(old) = self.wakeup_of[i].take() {
            self.wakeups.remove(&(old, i));
        }
        let node = &self.nodes[i];
        if node.crashed {
            return;
        }
        let next = node.paused_until.or_else(|| node.machine.poll_timeout());
        if let Some(at) = next {
            self.wakeups.insert((at, i));
            self.wakeup_of[i] = Some(at);
        }
    }

    /// `n` machines that all joined through node 0 and know each other.
    pub fn converged(n: usize, config: Config, seed: u64) -> Self {
        let mut c = Cluster::new(n, config, seed);
        c.join_all_via(0);
        let everyone_knows_everyone = |c: &Cluster| c.all_see_alive(&(0..n).collect::<Vec<_>>());
        assert!(
            c.run_until(Duration::from_secs(30), everyone_knows_everyone)
                .is_some(),
            "cluster of {n} did not converge"
        );
        c
    }

    pub fn join_all_via(&mut self, seed_node: usize) {
        let seed = [addr_of(seed_node)];
        for i in 0..self.nodes.len() {
            if i != seed_node {
                self.nodes[i].machine.handle_join(self.now, &seed);
                self.drain(i);
            }
        }
    }

    pub fn machine(&self, i: usize) -> &Membership {
        &self.nodes[i].machine
    }

    /// What node `observer` thinks of node `subject`.
    pub fn view(&self, observer: usize, subject: usize) -> Option<(MemberState, u64)> {
        self.nodes[observer]
            .machine
            .member(&id_of(subject))
            .map(|m| (m.state, m.incarnation))
    }

    pub fn is_running(&self, i: usize) -> bool {
        !self.nodes[i].crashed
    }

    /// Every running node in `group` sees every other node of `group` alive.
    pub fn all_see_alive(&self, group: &[usize]) -> bool {
        group.iter().filter(|&&o| self.is_running(o)).all(|&o| {
            group
                .iter()
                .filter(|&&s| s != o)
                .all(|&s| matches!(self.view(o, s), Some((MemberState::Alive, _))))
        })
    }

    /// Every running node other than `subject` sees it in `state`.
    pub fn all_see(&self, subject: usize, state: MemberState) -> bool {
        (0..self.nodes.len())
            .filter(|&o| o != subject && self.is_running(o))
            .all(|o| matches!(self.view(o, subject), Some((s, _)) if s == state))
    }

    /// Events of kind MemberChanged about `subject` with `state`, at any node.
    pub fn transitions_to(&self, subject: usize, state: MemberState) -> usize {
        self.nodes
            .iter()
            .flat_map(|n| n.events.iter())
            .filter(|(_, e)| {
                matches!(e, Event::MemberChanged { id, state: s, .. }
                    if *id == id_of(subject) && *s == state)
            })
            .count()
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].crashed = true;
        self.nodes[i].inbox.clear();
        self.refresh_wakeup(i);
    }

    pub fn pause(&mut self, i: usize, d: Duration) {
        self.nodes[i].paused_until = Some(self.now + d);
        self.refresh_wakeup(i);
    }

    /// A fresh machine for node `i` (same identity) that joins via `seed_node`.
    pub fn restart(&mut self, i: usize, initial_incarnation: u64, seed_node: usize) {
        self.restart_as(identity_of(i), i, initial_incarnation, seed_node);
    }

    /// Node `i` back under its certificate (NodeId) but on a wiped disk:
    /// another store.
    pub fn restart_wiped(&mut self, i: usize, store: StoreId, seed_node: usize) {
        let identity = Identity {
            store,
            ..identity_of(i)
        };
        self.restart_as(identity, i, 0, seed_node);
    }

    fn restart_as(
        &mut self,
        identity: Identity,
        i: usize,
        initial_incarnation: u64,
        seed_node: usize,
    ) {
        let seed = 7777 + i as u64 + self.now.as_millis();
        let mut machine = Membership::new(
            identity,
            self.config.clone(),
            seed,
            initial_incarnation,
            self.now,
        );
        machine.handle_join(self.now, &[addr_of(seed_node)]);
        let node = &mut self.nodes[i];
        node.machine = machine;
        node.crashed = false;
        node.paused_until = None;
        node.inbox.clear();
        self.drain(i);
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Moves node `i`'s outputs to the network and its events to its log.
    pub fn drain(&mut self, i: usize) {
        self.refresh_wakeup(i);
        while let Some(event) = self.nodes[i].machine.poll_event() {
            self.nodes[i].events.push((self.now, event));
        }
        while let Some(t) = self.nodes[i].machine.poll_transmit() {
            self.bytes_sent[i] += t.payload.len() as u64;
            if let Some(tally) = &mut self.tally {
                let kind = kind_of(&t.payload);
                let entry = tally.entry(kind).or_default();
                entry.0 += 1;
                entry.1 += t.payload.len() as u64;
            }
            let Some(&dst) = self.addr_index.get(&t.dst) else {
                continue;
            };
            if self.blocked.contains(&(i, dst)) {
                continue;
            }
            if !t.reliable && self.loss > 0.0 && self.rng.gen_bool(self.loss) {
                continue;
            }
            self.next_packet += 1;
            let jitter_us = self.latency_jitter.as_micros() as u64;
            let extra = if jitter_us > 0 {
                Duration::from_micros(self.rng.gen_range(0..=jitter_us))
            } else {
                Duration::ZERO
            };
            // Instants are whole milliseconds: round the latency up.
            let at = self.now + (self.latency + extra).max(Duration::from_millis(1));
            self.queue.insert(
                (at, self.next_packet),
                Packet {
                    src: i,
                    dst,
                    reliable: t.reliable,
                    payload: t.payload,
                },
            );
        }
    }

    fn deliver(&mut self, packet: Packet) {
        let dst = packet.dst;
        let node = &mut self.nodes[dst];
        if node.crashed {
            return;
        }
        if node.paused_until.is_some() {
            node.inbox.push_back(packet);
            return;
        }
        let result = node.machine.handle_datagram(
            self.now,
            addr_of(packet.src),
            id_of(packet.src),
            &packet.payload,
        );
        assert!(result.is_ok(), "honest payload rejected: {result:?}");
        self.drain(dst);
    }

    /// The earliest pending thing: a delivery, a timer, or a resume.
    fn next_time(&self) -> Option<Instant> {
        let packet = self.queue.keys().next().map(|(t, _)| *t);
        let wakeup = self.wakeups.first().map(|(t, _)| *t);
        packet.into_iter().chain(wakeup).min()
    }

    /// Jumps to the next event time and processes everything due then.
    /// Returns false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let Some(at) = self.next_time() else {
            return false;
        };
        // A deadline may already be past (a confirmation shortened a
        // suspicion): the machine then runs it at the current time.
        self.now = self.now.max(at);
        self.steps += 1;
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let packet = entry.remove();
            self.deliver(packet);
        }
        while let Some(&(at, i)) = self.wakeups.first() {
            if at > self.now {
                break;
            }
            self.wake(i);
        }
        true
    }

    fn wake(&mut self, i: usize) {
        if let Some(until) = self.nodes[i].paused_until {
            if until <= self.now {
                self.nodes[i].paused_until = None;
                let inbox = std::mem::take(&mut self.nodes[i].inbox);
                for packet in inbox {
                    self.deliver(packet);
                }
            }
        }
        if self.nodes[i].paused_until.is_none()
            && self.nodes[i]
                .machine
                .poll_timeout()
                .is_some_and(|t| t <= self.now)
        {
            self.nodes[i].machine.handle_timeout(self.now);
        }
        self.drain(i);
        // A machine must move its deadline past `now` once it ran.
        if let Some(&(at, j)) = self.wakeups.first() {
            assert!(
                !(j == i && at <= self.now && self.nodes[i].paused_until.is_none()),
                "node {i} left an expired deadline armed: {:?}",
                self.nodes[i].machine
            );
        }
    }

    /// Runs for `d` of virtual time (bounded in steps).
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        let mut steps = 0;
        while self.next_time().is_some_and(|t| t <= end) && steps < MAX_STEPS_PER_RUN {
            self.step();
            steps += 1;
        }
        assert!(steps < MAX_STEPS_PER_RUN, "run_for did not terminate");
        self.now = self.now.max(end);
    }

    /// Runs until `done` holds (checked after each step) or `limit` passes;
    /// returns when it first held.
    pub fn run_until(
        &mut self,
        limit: Duration,
        done: impl Fn(&Cluster) -> bool,
    ) -> Option<Instant> {
        let end = self.now + limit;
        let mut steps = 0;
        while steps < MAX_STEPS_PER_RUN {
            if done(self) {
                return Some(self.now);
            }
            match self.next_time() {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => return None,
            }
            steps += 1;
        }
        None
    }

    /// Runs for `d`, calling `check` after every step.
    pub fn run_checked(&mut self, d: Duration, mut check: impl FnMut(&Cluster)) {
        let end = self.now + d;
        let mut steps = 0;
        while self.next_time().is_some_and(|t| t <= end) && steps < MAX_STEPS_PER_RUN {
            self.step();
            check(self);
            steps += 1;
        }
        self.now = self.now.max(end);
    }
}

/// A message's kind and update count, for traffic reports.
fn kind_of(payload: &[u8]) -> String {
    use shoal_protocol::wire::swim::{SwimBody, SwimMessage, Update};
    let Ok(m) = shoal_protocol::wire::decode::<SwimMessage>(payload, usize::MAX) else {
        return "undecodable".into();
    };
    let body = match m.body {
        SwimBody::Ping { .. } => "ping",
        SwimBody::Ack { .. } => "ack",
        SwimBody::PingReq { .. } => "ping-req",
        SwimBody::Nack { .. } => "nack",
        SwimBody::Gossip => "gossip",
        SwimBody::PushPull(_) => "push-pull",
        SwimBody::Refused { .. } => "refused",
    };
    let mut kinds: Vec<&str> = m
        .updates
        .iter()
        .map(|u| match u {
            Update::Alive { .. } => "A",
            Update::Suspect { .. } => "S",
            Update::Down { .. } => "D",
            Update::Left { .. } => "L",
            Update::State(_) => "N",
        })
        .collect();
    kinds.sort();
    kinds.dedup();
    format!("{body}[{}]", kinds.join(""))
}
