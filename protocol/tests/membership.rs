//! Behaviour of the SWIM + Lifeguard machine, driven in memory on virtual
//! time through `harness::Cluster`.

mod harness;

use harness::{addr_of, id_of, identity_of, store_of, Cluster};
use shoal_protocol::gossip::NodeState;
use shoal_protocol::membership::{
    ChangeReason, Config, Event, InputError, MemberState, Membership,
};
use shoal_protocol::wire::encode;
use shoal_protocol::wire::swim::{
    MemberRecord, PushPull, SwimBody, SwimMessage, Update, WireState,
};
use shoal_protocol::{Instant, StoreId};
use std::time::Duration;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// A message from node `from` as the honest peer would send it.
fn message(from: usize, body: SwimBody, updates: Vec<Update>) -> Vec<u8> {
    encode(&SwimMessage {
        sender: id_of(from),
        sender_store: store_of(from),
        body,
        updates,
    })
}

fn alive(i: usize, incarnation: u64) -> Update {
    let who = identity_of(i);
    Update::Alive {
        id: who.id,
        name: who.name,
        addr: who.addr,
        store: who.store,
        incarnation,
    }
}

/// A lone machine (node 0) that learned of nodes 1..n through a push-pull.
fn machine_knowing(n: usize, config: Config) -> Membership {
    let mut m = Membership::new(identity_of(0), config, 1, 0, Instant::ZERO);
    let members = (1..n)
        .map(|i| MemberRecord {
            id: id_of(i),
            name: identity_of(i).name,
            addr: addr_of(i),
            store: store_of(i),
            incarnation: 0,
            state: WireState::Alive,
        })
        .collect();
    let payload = message(
        1,
        SwimBody::PushPull(PushPull {
            reply_wanted: false,
            members,
            states: vec![],
        }),
        vec![],
    );
    m.handle_datagram(Instant::ZERO, addr_of(1), id_of(1), &payload)
        .expect("valid push-pull");
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
    m
}

#[test]
fn join_through_one_seed_makes_everyone_know_everyone() {
    let c = Cluster::converged(12, Config::local(), 1);
    for o in 0..12 {
        assert_eq!(c.machine(o).members().len(), 11, "node {o}");
        assert!(c.machine(o).is_joined());
    }
}

#[test]
fn suspicion_is_refuted_by_higher_incarnation() {
    let mut c = Cluster::converged(6, Config::local(), 2);
    let before = c.machine(3).incarnation();
    // Node 3 keeps running and hearing, but nothing it sends gets out, so
    // it is suspected; it learns so from buddy pings and gossip (not from a
    // stall of its own) and refutes once its links work again.
    for i in 0..6 {
        c.blocked.insert((3, i));
    }
    let suspected = c.run_until(secs(2), |c| {
        (0..6).any(|o| matches!(c.view(o, 3), Some((MemberState::Suspect, _))))
    });
    assert!(suspected.is_some(), "a silent node was never suspected");
    c.run_for(ms(50));
    assert!(
        c.machine(3).incarnation() > before,
        "suspect did not refute"
    );
    assert_eq!(c.machine(3).stats().stalls, 0);
    c.heal();
    let healed = c.run_until(secs(5), |c| {
        (0..6)
            .filter(|&o| o != 3)
            .all(|o| matches!(c.view(o, 3), Some((MemberState::Alive, inc)) if inc > before))
    });
    assert!(healed.is_some(), "suspicion was not refuted everywhere");
    assert!(c.machine(3).incarnation() > before);
    assert_eq!(c.transitions_to(3, MemberState::Down), 0);
    assert!(c.machine(3).stats().suspicions_refuted >= 1);
}

#[test]
fn dynamic_suspicion_timeout_shrinks_with_independent_confirmations() {
    let config = Config::lan();
    let mut m = machine_knowing(8, config.clone());
    let target = id_of(7);
    let suspect = |by: usize| Update::Suspect {
        id: target,
        incarnation: 0,
        by: id_of(by),
    };
    let now = Instant::from_millis(10);
    m.handle_datagram(
        now,
        addr_of(1),
        id_of(1),
        &message(1, SwimBody::Gossip, vec![suspect(1)]),
    )
    .unwrap();
    let (start_deadline, c0) = m.suspicion_of(&target).expect("suspected");
    let (min, max) = m.suspicion_timeout_range();
    assert_eq!(c0, 0);
    assert_eq!(start_deadline, now + max);
    let mut last = start_deadline;
    for by in 2..=4 {
        let payload = message(by, SwimBody::Gossip, vec![suspect(by)]);
        m.handle_datagram(now, addr_of(by), id_of(by), &payload)
            .unwrap();
        let (deadline, _) = m.suspicion_of(&target).unwrap();
        assert!(
            deadline < last,
            "confirmation {by} did not shorten the timeout"
        );
        last = deadline;
    }
    assert_eq!(last, now + min, "K confirmations must reach the minimum");
    // The same confirmer twice is not independent.
    let again = message(2, SwimBody::Gossip, vec![suspect(2)]);
    m.handle_datagram(now, addr_of(2), id_of(2), &again)
        .unwrap();
    assert_eq!(m.suspicion_of(&target).unwrap(), (now + min, 3));
}

#[test]
fn local_health_slows_a_sick_node() {
    let mut c = Cluster::converged(6, Config::local(), 3);
    // Node 0 hears nothing: all its probes fail and no helper can nack.
    for i in 1..6 {
        c.blocked.insert((i, 0));
    }
    c.run_for(ms(600));
    let sick = c.machine(0);
    assert!(sick.local_health() >= 2, "lhm {}", sick.local_health());
    assert_eq!(
        sick.probe_interval_now(),
        Config::local().probe_interval * (sick.local_health() + 1)
    );
    // Healthy nodes may pay +1 for refuting the sick node's accusations,
    // and earn it back with their next good probe.
    for i in 1..6 {
        let lhm = c.machine(i).local_health();
        assert!(
            lhm <= 1 && lhm < sick.local_health(),
            "healthy node {i} slowed to {lhm}"
        );
    }
    let capped = Config::local().max_local_health;
    c.run_for(secs(30));
    assert!(c.machine(0).local_health() <= capped);
}

#[test]
fn graceful_leave_is_not_death() {
    let mut c = Cluster::converged(6, Config::local(), 4);
    c.nodes[2].machine.handle_leave(c.now);
    c.drain(2);
    c.run_for(ms(50));
    c.crash(2);
    let left = c.run_until(secs(5), |c| c.all_see(2, MemberState::Left));
    assert!(left.is_some(), "leave did not reach everyone");
    c.run_for(secs(10));
    assert!(c.all_see(2, MemberState::Left));
    assert_eq!(c.transitions_to(2, MemberState::Down), 0);
    assert_eq!(c.transitions_to(2, MemberState::Suspect), 0);
}

#[test]
fn restarted_node_rejoins_with_higher_incarnation() {
    let mut c = Cluster::converged(6, Config::local(), 5);
    c.crash(4);
    let down = c.run_until(secs(20), |c| c.all_see(4, MemberState::Down));
    assert!(down.is_some(), "crash not detected");
    let dead_at = c.view(0, 4).unwrap().1;
    // A new machine that remembers nothing.
    c.restart(4, 0, 0);
    let back = c.run_until(secs(10), |c| {
        (0..6)
            .filter(|&o| o != 4)
            .all(|o| matches!(c.view(o, 4), Some((MemberState::Alive, inc)) if inc > dead_at))
    });
    assert!(back.is_some(), "restarted node not alive again everywhere");
    assert!(c.machine(4).incarnation() > dead_at);
    assert_eq!(c.machine(4).members().len(), 5);
}

#[test]
fn a_node_back_under_its_id_on_a_wiped_store_is_refused_until_its_store_returns() {
    let mut c = Cluster::converged(6, Config::local(), 8);
    c.crash(4);
    let down = c.run_until(secs(20), |c| c.all_see(4, MemberState::Down));
    assert!(down.is_some(), "crash not detected");
    c.restart_wiped(4, StoreId::from_u64(999), 0);
    c.run_for(secs(10));
    let told = c.nodes[4].events.iter().any(|(_, e)| {
        matches!(e, Event::RefusedByPeer { by, known_store }
            if *by == id_of(0) && *known_store == store_of(4))
    });
    assert!(told, "the wiped node was not told that it is refused");
    assert!(c.machine(0).refuses(&id_of(4)));
    assert!(c.machine(0).stats().foreign_stores_refused > 0);
    let raised = c.nodes[0].events.iter().any(|(_, e)| {
        matches!(e, Event::ForeignStoreRefused { id, known, found, .. }
            if *id == id_of(4) && *known == store_of(4) && *found == StoreId::from_u64(999))
    });
    assert!(raised, "the refusing peer raised no event for its host");
    assert!(
        c.all_see(4, MemberState::Down),
        "a peer took the wiped node back"
    );

    // The old data directory is restored: the same store, accepted again.
    c.restart(4, 0, 0);
    let back = c.run_until(secs(10), |c| c.all_see(4, MemberState::Alive));
    assert!(
        back.is_some(),
        "the node with its own store was not taken back"
    );
    assert!(!c.machine(0).refuses(&id_of(4)));
}

#[test]
fn hearsay_of_a_member_under_another_store_is_ignored() {
    let mut m = machine_knowing(3, Config::local());
    let before = m.member(&id_of(2)).map(|m| m.incarnation);
    let who = identity_of(2);
    let forged = Update::Alive {
        id: who.id,
        name: who.name,
        addr: who.addr,
        store: StoreId::from_u64(777),
        incarnation: 9,
    };
    let payload = message(1, SwimBody::Gossip, vec![forged]);
    m.handle_datagram(Instant::from_millis(5), addr_of(1), id_of(1), &payload)
        .expect("a well-formed message");
    assert_eq!(m.member(&id_of(2)).map(|m| m.incarnation), before);
    assert_eq!(m.stats().foreign_stores_refused, 1);
    // Node 1 itself, the honest sender, is not refused for carrying it.
    assert!(!m.refuses(&id_of(1)));
}

#[test]
fn crashed_member_is_declared_down_by_all() {
    let mut c = Cluster::converged(10, Config::local(), 6);
    c.crash(7);
    let crashed_at = c.now;
    let down = c.run_until(secs(20), |c| c.all_see(7, MemberState::Down));
    let at = down.expect("crash not detected by all");
    // Bound: a few probe intervals plus the maximum suspicion timeout.
    let (_, max) = c.machine(0).suspicion_timeout_range();
    assert!(
        at.saturating_duration_since(crashed_at) <= max + secs(2),
        "took {:?}",
        at.saturating_duration_since(crashed_at)
    );
    for o in 0..10 {
        for s in 0..10 {
            if o != s && s != 7 && o != 7 {
                assert_eq!(c.view(o, s).unwrap().0, MemberState::Alive, "{o} sees {s}");
            }
        }
    }
}

#[test]
fn indirect_probe_saves_member_behind_lossy_link() {
    let mut c = Cluster::converged(6, Config::local(), 7);
    // Node 0 and node 1 cannot talk directly; everyone else can reach both.
    c.partition(&[0], &[1]);
    c.run_for(secs(10));
    let suspected_by_0 = c.nodes[0].events.iter().any(|(_, e)| {
        matches!(e, Event::MemberChanged { id, reason: ChangeReason::ProbeFailed, .. } if *id == id_of(1))
    });
    assert!(
        !suspected_by_0,
        "node 0 suspected node 1 despite indirect probes"
    );
    assert!(c.machine(0).stats().indirect_probes_sent > 0);
    assert_eq!(c.transitions_to(1, MemberState::Down), 0);
    assert_eq!(c.transitions_to(0, MemberState::Down), 0);
}

#[test]
fn push_pull_heals_a_partition() {
    let config = Config {
        push_pull_interval: secs(2),
        ..Config::local()
    };
    let mut c = Cluster::converged(8, config, 8);
    let a = [0, 1, 2, 3];
    let b = [4, 5, 6, 7];
    c.partition(&a, &b);
    let split = c.run_until(secs(30), |c| {
        a.iter().all(|&x| {
            b.iter().all(|&y| {
                matches!(c.view(x, y), Some((MemberState::Down, _)))
                    && matches!(c.view(y, x), Some((MemberState::Down, _)))
            })
        })
    });
    assert!(split.is_some(), "the sides never gave each other up");
    // News on one side that gossip finishes spreading before the heal:
    // only a full-state exchange can carry it across afterwards.
    let news = NodeState {
        slots_free: 7,
        ..NodeState::default()
    };
    c.nodes[1].machine.set_local_state(c.now, news);
    c.drain(1);
    c.run_for(secs(3));
    assert!((0..8).all(|i| c.machine(i).pending_updates() == 0));
    c.heal();
    let all: Vec<usize> = (0..8).collect();
    let healed = c.run_until(secs(60), |c| {
        c.all_see_alive(&all)
            && b.iter().all(|&y| {
                c.machine(y)
                    .member(&id_of(1))
                    .and_then(|m| m.node_state)
                    .is_some_and(|s| s.slots_free == 7)
            })
    });
    assert!(healed.is_some(), "partition did not heal");
}

#[test]
fn spoofed_sender_is_rejected() {
    let mut m = machine_knowing(4, Config::lan());
    let before = format!("{m:?}");
    let payload = message(2, SwimBody::Gossip, vec![alive(9, 0)]);
    let result = m.handle_datagram(Instant::from_millis(5), addr_of(3), id_of(3), &payload);
    assert_eq!(
        result,
        Err(InputError::SpoofedSender {
            claimed: id_of(2),
            authenticated: id_of(3)
        })
    );
    assert_eq!(m.stats().inputs_rejected, 1);
    assert!(m.member(&id_of(9)).is_none());
    assert!(m.poll_transmit().is_none());
    // Nothing else changed.
    let after = format!("{m:?}").replace("inputs_rejected: 1", "inputs_rejected: 0");
    assert_eq!(before, after);
}

#[test]
fn early_timeout_changes_nothing() {
    let mut c = Cluster::converged(5, Config::local(), 9);
    c.run_for(ms(333));
    for i in 0..5 {
        let m = &mut c.nodes[i].machine;
        let deadline = m.poll_timeout().expect("a running machine has a timer");
        let before = format!("{m:?}");
        m.handle_timeout(Instant::from_millis(deadline.as_millis() - 1));
        assert_eq!(
            format!("{m:?}"),
            before,
            "node {i} changed on an early wake-up"
        );
        assert!(m.poll_transmit().is_none());
        assert!(m.poll_event().is_none());
        assert_eq!(m.poll_timeout(), Some(deadline));
    }
}

#[test]
fn incarnation_never_decreases() {
    let mut c = Cluster::converged(8, Config::local(), 10);
    c.loss = 0.05;
    let n = 8;
    let mut seen = vec![vec![0u64; n]; n];
    let mut own = vec![0u64; n];
    let mut check = |c: &Cluster| {
        for o in 0..n {
            let inc = c.machine(o).incarnation();
            assert!(
                inc >= own[o] || c.machine(o).members().is_empty(),
                "node {o} own"
            );
            own[o] = inc;
            for (s, last) in seen[o].iter_mut().enumerate() {
                if let Some((_, inc)) = c.view(o, s) {
                    assert!(inc >= *last, "{o} sees {s} go back {last} -> {inc}");
                    *last = inc;
                }
            }
        }
    };
    c.pause(2, ms(300));
    c.run_checked(secs(3), &mut check);
    c.pause(5, ms(400));
    c.partition(&[0, 1], &[6, 7]);
    c.run_checked(secs(5), &mut check);
    c.heal();
    c.run_checked(secs(5), &mut check);
    let raised: u64 = (0..n).map(|o| c.machine(o).incarnation()).sum();
    assert!(raised > 0, "the chaos never made anyone refute");
}

#[test]
fn node_state_newer_version_wins() {
    let mut c = Cluster::converged(5, Config::local(), 11);
    let first = NodeState {
        slots_free: 1,
        ..NodeState::default()
    };
    let second = NodeState {
        slots_free: 2,
        ..NodeState::default()
    };
    c.nodes[1].machine.set_local_state(c.now, first);
    c.drain(1);
    c.run_for(ms(20));
    c.nodes[1].machine.set_local_state(c.now, second);
    c.drain(1);
    let spread = c.run_until(secs(5), |c| {
        (0..5).filter(|&o| o != 1).all(|o| {
            c.machine(o)
                .member(&id_of(1))
                .and_then(|m| m.node_state)
                .is_some_and(|s| s.slots_free == 2 && s.version == 2)
        })
    });
    assert!(spread.is_some(), "newest state did not reach everyone");
    // An old record arriving late does not replace the newer one.
    let stale = Update::State(shoal_protocol::wire::swim::StateRecord {
        id: id_of(1),
        state: NodeState {
            version: 1,
            slots_free: 1,
            ..NodeState::default()
        },
    });
    let now = c.now;
    c.nodes[0]
        .machine
        .handle_datagram(
            now,
            addr_of(3),
            id_of(3),
            &message(3, SwimBody::Gossip, vec![stale]),
        )
        .unwrap();
    let held = c
        .machine(0)
        .member(&id_of(1))
        .unwrap()
        .node_state
        .clone()
        .unwrap();
    assert_eq!((held.version, held.slots_free), (2, 2));
    let updates = c.nodes[2]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::NodeStateUpdated { id } if *id == id_of(1)))
        .count();
    assert!(updates >= 1);
}

#[test]
fn a_paused_node_refutes_as_soon_as_it_runs_again() {
    let mut c = Cluster::converged(6, Config::local(), 12);
    let before = c.machine(3).incarnation();
    // Nothing reaches it during or right after the pause, so no buddy ping
    // can be what makes it refute.
    for i in 0..6 {
        c.blocked.insert((i, 3));
    }
    // Longer than two probe intervals, shorter than the suspicion timeout.
    c.pause(3, ms(300));
    let resumed = c.run_until(secs(2), |c| c.nodes[3].paused_until.is_none());
    assert!(resumed.is_some());
    assert_eq!(c.machine(3).stats().stalls, 1);
    assert!(c.machine(3).incarnation() > before);
    assert!(c.machine(3).local_health() >= 1);
    c.heal();
    let alive = c.run_until(secs(3), |c| c.all_see_alive(&[0, 1, 2, 3, 4, 5]));
    assert!(alive.is_some());
    assert_eq!(c.transitions_to(3, MemberState::Down), 0);
}

#[test]
fn dissemination_quiesces_when_nothing_changes() {
    let mut c = Cluster::converged(8, Config::local(), 13);
    c.nodes[2]
        .machine
        .set_local_state(c.now, NodeState::default());
    c.drain(2);
    c.run_for(secs(10));
    for i in 0..8 {
        assert_eq!(
            c.machine(i).pending_updates(),
            0,
            "node {i} still gossiping"
        );
    }
    let version = c.machine(2).local_state().unwrap().version;
    assert_eq!(version, 1, "own state echoed back bumped the version");
}

#[test]
fn a_member_held_down_is_told_when_it_speaks() {
    let mut m = machine_knowing(4, Config::lan());
    let down = Update::Down {
        id: id_of(3),
        incarnation: 0,
        by: id_of(2),
    };
    let now = Instant::from_millis(5);
    m.handle_datagram(
        now,
        addr_of(2),
        id_of(2),
        &message(2, SwimBody::Gossip, vec![down.clone()]),
    )
    .unwrap();
    while m.poll_transmit().is_some() {}
    assert_eq!(m.member(&id_of(3)).unwrap().state, MemberState::Down);
    // Node 3 is running after all: it pings us.
    let ping = message(
        3,
        SwimBody::Ping {
            seq: 9,
            suspected_at: None,
        },
        vec![],
    );
    m.handle_datagram(now, addr_of(3), id_of(3), &ping).unwrap();
    let told = std::iter::from_fn(|| m.poll_transmit())
        .filter(|t| t.dst == addr_of(3))
        .filter_map(|t| shoal_protocol::wire::decode::<SwimMessage>(&t.payload, 1200).ok())
        .any(|msg| {
            msg.updates
                .iter()
                .any(|u| matches!(u, Update::Down { id, .. } if *id == id_of(3)))
        });
    assert!(told, "a member held down was not told so");
    // Its refutation brings it back.
    let refute = message(3, SwimBody::Gossip, vec![alive(3, 1)]);
    m.handle_datagram(now, addr_of(3), id_of(3), &refute)
        .unwrap();
    assert_eq!(
        m.member(&id_of(3)).map(|x| (x.state, x.incarnation)),
        Some((MemberState::Alive, 1))
    );
}

#[test]
fn same_seed_gives_the_same_trace() {
    let run = |seed: u64| {
        let mut c = Cluster::converged(7, Config::local(), seed);
        c.loss = 0.05;
        c.pause(1, ms(300));
        c.run_for(secs(1));
        c.crash(4);
        c.run_for(secs(4));
        let events: Vec<String> = c
            .nodes
            .iter()
            .flat_map(|n| n.events.iter().map(|(t, e)| format!("{t:?} {e:?}")))
            .collect();
        (events, c.bytes_sent.clone())
    };
    let (a, bytes_a) = run(21);
    let (b, bytes_b) = run(21);
    assert!(!a.is_empty());
    assert_eq!(a, b);
    assert_eq!(bytes_a, bytes_b);
    let (_, bytes_c) = run(22);
    assert_ne!(bytes_a, bytes_c, "the seed does not reach the machines");
}

#[test]
fn down_member_is_forgotten_after_retention_and_stays_forgotten() {
    let config = Config {
        down_retention: secs(2),
        push_pull_interval: secs(1),
        ..Config::local()
    };
    let mut c = Cluster::converged(5, config, 14);
    c.crash(3);
    let down = c.run_until(secs(10), |c| c.all_see(3, MemberState::Down));
    assert!(down.is_some());
    let gone = c.run_until(secs(5), |c| {
        (0..5).filter(|&o| o != 3).all(|o| c.view(o, 3).is_none())
    });
    assert!(gone.is_some(), "down member never forgotten");
    let forgotten = c.nodes[0].events.iter().any(|(_, e)| {
        matches!(e, Event::MemberChanged { id, reason: ChangeReason::Forgotten, .. } if *id == id_of(3))
    });
    assert!(forgotten);
    // Push-pulls between nodes that forgot it at different times must not
    // hand it back.
    c.run_for(secs(10));
    for o in [0, 1, 2, 4] {
        assert!(
            c.view(o, 3).is_none(),
            "node {o} resurrected a forgotten member"
        );
    }
}

#[test]
fn left_is_final_for_its_incarnation() {
    let mut m = machine_knowing(4, Config::lan());
    let now = Instant::from_millis(5);
    let feed = |m: &mut Membership, update: Update| {
        m.handle_datagram(
            now,
            addr_of(1),
            id_of(1),
            &message(1, SwimBody::Gossip, vec![update]),
        )
        .unwrap();
    };
    feed(
        &mut m,
        Update::Left {
            id: id_of(2),
            incarnation: 0,
        },
    );
    assert_eq!(m.member(&id_of(2)).unwrap().state, MemberState::Left);
    feed(&mut m, alive(2, 0));
    feed(
        &mut m,
        Update::Suspect {
            id: id_of(2),
            incarnation: 0,
            by: id_of(1),
        },
    );
    feed(
        &mut m,
        Update::Down {
            id: id_of(2),
            incarnation: 0,
            by: id_of(1),
        },
    );
    assert_eq!(m.member(&id_of(2)).unwrap().state, MemberState::Left);
    // A new life of it is a new member again.
    feed(&mut m, alive(2, 1));
    assert_eq!(
        m.member(&id_of(2)).map(|x| (x.state, x.incarnation)),
        Some((MemberState::Alive, 1))
    );
    // At equal incarnation down beats suspect beats alive.
    feed(
        &mut m,
        Update::Suspect {
            id: id_of(3),
            incarnation: 0,
            by: id_of(1),
        },
    );
    feed(&mut m, alive(3, 0));
    assert_eq!(m.member(&id_of(3)).unwrap().state, MemberState::Suspect);
    feed(
        &mut m,
        Update::Down {
            id: id_of(3),
            incarnation: 0,
            by: id_of(1),
        },
    );
    feed(
        &mut m,
        Update::Suspect {
            id: id_of(3),
            incarnation: 0,
            by: id_of(2),
        },
    );
    assert_eq!(m.member(&id_of(3)).unwrap().state, MemberState::Down);
}

#[test]
fn join_is_retried_until_a_seed_answers() {
    let mut c = Cluster::new(2, Config::local(), 15);
    c.blocked.insert((1, 0));
    c.join_all_via(0);
    c.run_for(secs(3));
    assert!(!c.machine(1).is_joined());
    let tries = c.bytes_sent[1];
    c.run_for(secs(2));
    assert!(c.bytes_sent[1] > tries, "join not retried");
    c.heal();
    let joined = c.run_until(secs(3), |c| {
        c.machine(1).is_joined() && c.all_see_alive(&[0, 1])
    });
    assert!(
        joined.is_some(),
        "join did not complete once the seed was reachable"
    );
}

#[test]
fn stale_news_about_us_is_corrected_directly() {
    let mut m = machine_knowing(4, Config::lan());
    let now = Instant::from_millis(5);
    // Suspected at 0: refute to 1.
    let suspect = Update::Suspect {
        id: id_of(0),
        incarnation: 0,
        by: id_of(1),
    };
    m.handle_datagram(
        now,
        addr_of(1),
        id_of(1),
        &message(1, SwimBody::Gossip, vec![suspect]),
    )
    .unwrap();
    assert_eq!(m.incarnation(), 1);
    while m.poll_transmit().is_some() {}
    // Node 2 missed the refutation and still holds us down at 0.
    let stale = Update::Down {
        id: id_of(0),
        incarnation: 0,
        by: id_of(2),
    };
    m.handle_datagram(
        now,
        addr_of(2),
        id_of(2),
        &message(2, SwimBody::Gossip, vec![stale]),
    )
    .unwrap();
    assert_eq!(
        m.incarnation(),
        1,
        "stale news must not raise the incarnation"
    );
    let corrected = std::iter::from_fn(|| m.poll_transmit())
        .filter(|t| t.dst == addr_of(2))
        .filter_map(|t| shoal_protocol::wire::decode::<SwimMessage>(&t.payload, 1200).ok())
        .any(|msg| {
            msg.updates
                .iter()
                .any(|u| matches!(u, Update::Alive { id, incarnation: 1, .. } if *id == id_of(0)))
        });
    assert!(
        corrected,
        "the holder of stale news was not told our incarnation"
    );
}

#[test]
fn a_rejoining_node_whose_seeds_are_gone_joins_through_whoever_finds_it() {
    let config = Config {
        // Periodic push-pull would get it in eventually; this is about now.
        push_pull_interval: secs(600),
        ..Config::local()
    };
    let mut c = Cluster::converged(4, config, 16);
    c.crash(3);
    let down = c.run_until(secs(10), |c| c.all_see(3, MemberState::Down));
    assert!(down.is_some());
    c.crash(0);
    // Node 3 comes back remembering a high incarnation, with only the dead
    // node 0 as seed: its own join can never be answered.
    c.restart(3, 5, 0);
    let joined = c.run_until(secs(20), |c| {
        c.machine(3).is_joined() && c.all_see_alive(&[1, 2, 3])
    });
    assert!(joined.is_some(), "node 3 never joined");
}

#[test]
fn an_isolated_node_and_the_rest_find_each_other_after_the_heal() {
    let mut c = Cluster::converged(8, Config::local(), 17);
    let rest: Vec<usize> = (0..8).filter(|&i| i != 5).collect();
    c.partition(&[5], &rest);
    let split = c.run_until(secs(30), |c| {
        c.all_see(5, MemberState::Down)
            && rest
                .iter()
                .all(|&y| matches!(c.view(5, y), Some((MemberState::Down, _))))
    });
    assert!(
        split.is_some(),
        "the isolated node and the rest never gave up"
    );
    c.heal();
    let all: Vec<usize> = (0..8).collect();
    let healed = c.run_until(secs(20), |c| c.all_see_alive(&all));
    assert!(healed.is_some(), "isolation did not heal");
}
