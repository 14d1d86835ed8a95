//! Every invariant checker can fail: deliberately broken hosts must be
//! reported.

use shoal_protocol::Instant;
use shoal_sim::host::{
    HostFactory, NodeIndex, NodeSpec, SimNode, SimTransmit, ViewChange, ViewState,
};
use shoal_sim::{run, RunConfig, Scenario};
use std::collections::VecDeque;

/// What a scripted host does wrong.
#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    /// Sees everyone alive, once a second; does nothing wrong.
    None,
    /// Node 0 reports node 1 at incarnation 5, then at 3 (node 1 claims 100).
    DecreasesIncarnation,
    /// Node 0 reports node 1 at incarnation 7 though node 1 never left 0.
    RaisesAnothersIncarnation,
    /// Answers a wake-up before its deadline with a transmit.
    ActsOnEarlyTimeout,
    /// Node 0 confirms live node 1 down.
    ConfirmsLiveNodeDown,
    /// Never sees anyone.
    NeverConverges,
}

struct Scripted {
    me: NodeIndex,
    nodes: u32,
    flaw: Flaw,
    next_ms: Option<u64>,
    ticks: u64,
    transmits: VecDeque<SimTransmit>,
    events: VecDeque<ViewChange>,
}

const PERIOD_MS: u64 = 1000;

impl Scripted {
    fn own_incarnation(&self) -> u64 {
        match self.flaw {
            Flaw::DecreasesIncarnation => 100,
            _ => 0,
        }
    }
}

impl SimNode for Scripted {
    fn handle_join(&mut self, now: Instant, _seeds: &[NodeIndex]) {
        self.next_ms = Some(now.as_millis() + PERIOD_MS);
    }
    fn handle_datagram(
        &mut self,
        _now: Instant,
        _src: NodeIndex,
        _reliable: bool,
        _payload: &[u8],
    ) {
    }
    fn handle_timeout(&mut self, now: Instant) {
        let due = self.next_ms.is_some_and(|d| d <= now.as_millis());
        if !due {
            if self.flaw == Flaw::ActsOnEarlyTimeout {
                self.transmits.push_back(SimTransmit {
                    dst: (self.me + 1) % self.nodes,
                    reliable: false,
                    payload: vec![1, 2, 3],
                });
            }
            return;
        }
        self.next_ms = Some(now.as_millis() + PERIOD_MS);
        self.ticks += 1;
        if self.flaw != Flaw::NeverConverges {
            for m in (0..self.nodes).filter(|&m| m != self.me) {
                self.events.push_back(ViewChange {
                    member: m,
                    state: ViewState::Alive,
                    incarnation: None,
                });
            }
        }
        if self.me == 0 {
            let bad = match (self.flaw, self.ticks) {
                (Flaw::DecreasesIncarnation, 3) => Some((ViewState::Alive, 5)),
                (Flaw::DecreasesIncarnation, 4) => Some((ViewState::Alive, 3)),
                (Flaw::RaisesAnothersIncarnation, 3) => Some((ViewState::Alive, 7)),
                (Flaw::ConfirmsLiveNodeDown, 3) => Some((ViewState::Down, 0)),
                _ => None,
            };
            if let Some((state, inc)) = bad {
                self.events.push_back(ViewChange {
                    member: 1,
                    state,
                    incarnation: Some(inc),
                });
            }
        }
    }
    fn handle_leave(&mut self, _now: Instant) {}
    fn restart_with_state(&mut self, now: Instant, seeds: &[NodeIndex]) {
        self.handle_join(now, seeds);
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.next_ms.map(Instant::from_millis)
    }
    fn poll_transmit(&mut self) -> Option<SimTransmit> {
        self.transmits.pop_front()
    }
    fn poll_event(&mut self) -> Option<ViewChange> {
        self.events.pop_front()
    }
    fn incarnation(&self) -> u64 {
        self.own_incarnation()
    }
    fn for_each_member(&self, f: &mut dyn FnMut(NodeIndex, ViewState, Option<u64>)) {
        if self.flaw == Flaw::NeverConverges || self.ticks == 0 {
            return;
        }
        for m in (0..self.nodes).filter(|&m| m != self.me) {
            f(m, ViewState::Alive, None);
        }
    }
}

fn factory(flaw: Flaw) -> HostFactory {
    Box::new(move |spec: NodeSpec| {
        Box::new(Scripted {
            me: spec.index,
            nodes: spec.nodes,
            flaw,
            next_ms: None,
            ticks: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        }) as Box<dyn SimNode>
    })
}

fn scenario(early_timeout_probability: f64) -> Scenario {
    let text = format!(
        "name = \"checkers\"\nnodes = 5\nvirtual_s = 30\nwarmup_s = 1\nsafety_s = 10\nconvergence_deadline_ms = 5000\nmax_false_positives = 0\nearly_timeout_probability = {early_timeout_probability:?}\n"
    );
    Scenario::parse(&text, "checkers").expect("valid")
}

fn invariants(flaw: Flaw, early: f64) -> Vec<String> {
    let report = run(RunConfig {
        scenario: scenario(early),
        seed: 9,
        implementation: "scripted".into(),
        factory: factory(flaw),
        faults: Some(Vec::new()),
    })
    .report;
    report
        .violations
        .iter()
        .map(|v| v.invariant.clone())
        .collect()
}

#[test]
fn a_correct_host_passes_every_checker() {
    assert_eq!(invariants(Flaw::None, 1.0), Vec::<String>::new());
}

#[test]
fn a_decreasing_incarnation_is_reported() {
    let v = invariants(Flaw::DecreasesIncarnation, 0.0);
    assert_eq!(v, vec!["incarnation_decreased".to_string()]);
}

#[test]
fn an_incarnation_raised_by_another_member_is_reported() {
    let v = invariants(Flaw::RaisesAnothersIncarnation, 0.0);
    assert_eq!(v, vec!["incarnation_forged".to_string()]);
}

#[test]
fn a_host_acting_on_an_early_timeout_is_reported() {
    let v = invariants(Flaw::ActsOnEarlyTimeout, 1.0);
    assert!(
        !v.is_empty() && v.iter().all(|i| i == "stale_timer_acted"),
        "{v:?}"
    );
}

#[test]
fn a_live_node_confirmed_down_is_a_false_positive() {
    let v = invariants(Flaw::ConfirmsLiveNodeDown, 0.0);
    assert!(v.contains(&"false_positive".to_string()), "{v:?}");
}

#[test]
fn no_convergence_after_the_heal_is_reported() {
    let v = invariants(Flaw::NeverConverges, 0.0);
    assert_eq!(v, vec!["no_convergence".to_string()]);
}
