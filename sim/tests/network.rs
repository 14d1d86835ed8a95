//! The network and clock model: partitions drop, asymmetric partitions drop
//! one direction only, a paused node's messages queue and arrive on resume,
//! drifting clocks convert both ways.

use shoal_protocol::Instant;
use shoal_sim::clock::NodeClock;
use shoal_sim::faults::{FaultAction, ScheduledFault};
use shoal_sim::host::{NodeIndex, NodeSpec, SimNode, SimTransmit, ViewChange, ViewState};
use shoal_sim::net::{Links, PartitionKind};
use shoal_sim::{run, RunConfig, Scenario};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

#[test]
fn a_symmetric_partition_drops_both_directions_and_heals() {
    let mut links = Links::new(4);
    links.partition(1, PartitionKind::Symmetric, &[0, 1]);
    assert!(links.blocked(0, 2) && links.blocked(2, 0));
    assert!(!links.blocked(0, 1) && !links.blocked(2, 3));
    links.heal_partition(1);
    assert!(!links.blocked(0, 2) && links.all_up());
}

#[test]
fn an_asymmetric_partition_drops_only_outgoing_messages_of_its_side() {
    let mut links = Links::new(4);
    links.partition(1, PartitionKind::Asymmetric, &[0]);
    assert!(links.blocked(0, 1));
    assert!(!links.blocked(1, 0));
    // A one-way cut node cannot exchange messages with anyone: it reaches no majority.
    assert_eq!(links.reaches_majority(), vec![false, true, true, true]);
}

#[test]
fn a_clogged_node_is_cut_until_every_clog_lifts() {
    let mut links = Links::new(3);
    links.clog(1);
    links.clog(1);
    links.unclog(1);
    assert!(links.blocked(0, 1) && links.blocked(1, 2));
    links.unclog(1);
    assert!(!links.blocked(0, 1));
}

#[test]
fn drifting_clocks_convert_exactly_both_ways() {
    let fast = NodeClock::new(0.01, 500);
    // 100 global seconds are 101 local seconds on a clock 1% fast.
    assert_eq!(fast.local(100_000_000), Instant::from_millis(500 + 101_000));
    let g = fast.global_at(Instant::from_millis(500 + 101_000));
    assert!(g <= 100_000_000 && fast.local(g) == Instant::from_millis(500 + 101_000));
}

/// Node 0 pings node 1 every 100 ms of its clock; node 1 logs the local time
/// of each arrival. Node 1 also counts its own timeouts (every 1000 ms).
struct Pinger {
    me: NodeIndex,
    next_ms: Option<u64>,
    period_ms: u64,
    out: VecDeque<SimTransmit>,
    log: Log,
}

impl SimNode for Pinger {
    fn handle_join(&mut self, now: Instant, _seeds: &[NodeIndex]) {
        self.next_ms = Some(now.as_millis() + self.period_ms);
    }
    fn handle_datagram(&mut self, now: Instant, _src: NodeIndex, _reliable: bool, _payload: &[u8]) {
        self.log
            .lock()
            .unwrap()
            .push((self.me, "recv", now.as_millis()));
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.next_ms.is_some_and(|d| d <= now.as_millis()) {
            self.next_ms = Some(now.as_millis() + self.period_ms);
            self.log
                .lock()
                .unwrap()
                .push((self.me, "tick", now.as_millis()));
            if self.me == 0 {
                self.out.push_back(SimTransmit {
                    dst: 1,
                    reliable: true,
                    payload: vec![0; 8],
                });
            }
        }
    }
    fn handle_leave(&mut self, _now: Instant) {}
    fn restart_with_state(&mut self, _now: Instant, _seeds: &[NodeIndex]) {}
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_ms.map(Instant::from_millis)
    }
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        self.out.pop_front()
    }
    fn poll_event(&mut self) -> Option<ViewChange> {
        None
    }
    fn incarnation(&self) -> u64 {
        0
    }
    fn for_each_member(&self, _f: &mut dyn FnMut(NodeIndex, ViewState, Option<u64>)) {}
}

type Log = Arc<Mutex<Vec<(NodeIndex, &'static str, u64)>>>;

fn run_pinger(text: &str, faults: Vec<ScheduledFault>) -> (Log, u64) {
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let scenario = Scenario::parse(text, "pinger").expect("valid");
    let run_log = log.clone();
    let outcome = run(RunConfig {
        scenario,
        seed: 3,
        implementation: "pinger".into(),
        factory: Box::new(move |spec: NodeSpec| {
            Box::new(Pinger {
                me: spec.index,
                next_ms: None,
                period_ms: if spec.index == 0 { 100 } else { 1000 },
                out: VecDeque::new(),
                log: run_log.clone(),
            }) as Box<dyn SimNode>
        }),
        faults: Some(faults),
    });
    (log, outcome.report.virtual_s)
}

const TWO_NODES: &str = "name = \"pinger\"\nnodes = 2\nvirtual_s = 20\nwarmup_s = 1\nsafety_s = 10\nstart_spread_ms = 0\nconvergence_deadline_ms = 0\nearly_timeout_probability = 0.0\n[clock]\ndrift_rho = 0.0\n";

#[test]
fn a_paused_node_receives_nothing_then_its_queue_on_resume() {
    let faults = vec![
        ScheduledFault {
            at_ms: 4_000,
            action: FaultAction::Pause(1),
        },
        ScheduledFault {
            at_ms: 6_000,
            action: FaultAction::Resume(1),
        },
    ];
    let (log, _) = run_pinger(TWO_NODES, faults);
    let log = log.lock().unwrap();
    // Local times of node 1 differ from global by its origin: find it from
    // the first tick (global 1000 ms with no drift and start at 0 or 1 µs).
    let first_tick = log.iter().find(|e| e.0 == 1 && e.1 == "tick").unwrap().2;
    let origin = first_tick - 1000;
    let recv: Vec<u64> = log
        .iter()
        .filter(|e| e.0 == 1 && e.1 == "recv")
        .map(|e| e.2 - origin)
        .collect();
    assert!(
        recv.iter().all(|&t| !(4_010..6_000).contains(&t)),
        "nothing arrives while paused"
    );
    let burst = recv.iter().filter(|&&t| t == 6_000).count();
    assert!(
        (19..=21).contains(&burst),
        "about 20 queued pings arrive at resume, got {burst}"
    );
    let ticks_while_paused = log
        .iter()
        .filter(|e| e.0 == 1 && e.1 == "tick" && (4_010..6_000).contains(&(e.2 - origin)))
        .count();
    assert_eq!(ticks_while_paused, 0, "a paused node's timers do not fire");
}

#[test]
fn a_partition_stops_messages_for_its_duration() {
    let faults = vec![
        ScheduledFault {
            at_ms: 3_000,
            action: FaultAction::Partition {
                id: 1,
                kind: PartitionKind::Symmetric,
                inside: vec![0],
            },
        },
        ScheduledFault {
            at_ms: 5_000,
            action: FaultAction::HealPartition(1),
        },
    ];
    let (log, _) = run_pinger(TWO_NODES, faults);
    let log = log.lock().unwrap();
    let first_tick = log.iter().find(|e| e.0 == 1 && e.1 == "tick").unwrap().2;
    let origin = first_tick - 1000;
    let recv: Vec<u64> = log
        .iter()
        .filter(|e| e.0 == 1 && e.1 == "recv")
        .map(|e| e.2 - origin)
        .collect();
    assert!(recv.iter().any(|&t| t < 3_000) && recv.iter().any(|&t| t > 5_010));
    assert!(
        recv.iter().all(|&t| !(3_010..5_000).contains(&t)),
        "{recv:?}"
    );
}

#[test]
fn a_drifting_node_fires_its_timers_by_its_own_clock() {
    let text = TWO_NODES.replace("drift_rho = 0.0", "drift_rho = 0.2");
    let (log, virtual_s) = run_pinger(&text, Vec::new());
    let log = log.lock().unwrap();
    let ticks = log.iter().filter(|e| e.0 == 1 && e.1 == "tick").count() as f64;
    // One tick per local second, for `virtual_s` global seconds at 1±0.2.
    let vs = virtual_s as f64;
    assert!(
        ticks >= (vs * 0.8).floor() - 1.0 && ticks <= (vs * 1.2).ceil(),
        "{ticks}"
    );
}
