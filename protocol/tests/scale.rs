//! A large-cluster run of the LAN preset against its targets (docs/protocol.md §9,
//! the simulator measures the same in earnest). Ignored by default: it is a
//! report, not a timed unit test. Run it with
//! `SHOAL_SCALE_N=1000 cargo test -p shoal-protocol --release --test scale -- --ignored --nocapture`.

mod harness;

use harness::{id_of, Cluster};
use shoal_protocol::gossip::NodeState;
use shoal_protocol::membership::{Config, Event, MemberState};
use shoal_protocol::Instant;
use std::time::Duration;

fn percentile(mut v: Vec<u64>, p: f64) -> u64 {
    v.sort_unstable();
    shoal_protocol::stats::nearest_rank(&v, p).unwrap_or(0)
}

/// For each observer other than `subject`, when it first logged `matches`
/// about `subject` at or after `since`.
fn first_seen(
    c: &Cluster,
    subject: usize,
    since: Instant,
    matches: impl Fn(&Event) -> bool,
) -> Vec<Option<u64>> {
    (0..c.nodes.len())
        .filter(|&o| o != subject && c.is_running(o))
        .map(|o| {
            c.nodes[o]
                .events
                .iter()
                .find(|(t, e)| {
                    *t >= since && matches(e) && event_subject(e) == Some(id_of(subject))
                })
                .map(|(t, _)| t.saturating_duration_since(since).as_millis() as u64)
        })
        .collect()
}

fn event_subject(e: &Event) -> Option<shoal_protocol::NodeId> {
    match e {
        Event::MemberChanged { id, .. } | Event::NodeStateUpdated { id } => Some(*id),
        Event::SelfRefuted { .. } | Event::RefusedByPeer { .. } => None,
        Event::StoreLearned { id, .. } | Event::ForeignStoreRefused { id, .. } => Some(*id),
    }
}

fn summarize(name: &str, samples: Vec<Option<u64>>) {
    let missing = samples.iter().filter(|s| s.is_none()).count();
    let got: Vec<u64> = samples.into_iter().flatten().collect();
    println!(
        "{name}: observers {} missing {missing} p50 {} ms p99 {} ms max {} ms",
        got.len() + missing,
        percentile(got.clone(), 0.5),
        percentile(got.clone(), 0.99),
        got.iter().max().copied().unwrap_or(0)
    );
}

#[test]
#[ignore = "report: run by hand with --release"]
fn lan_preset_at_scale_report() {
    let n: usize = std::env::var("SHOAL_SCALE_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut c = Cluster::new(n, Config::lan(), 42);
    c.latency = Duration::from_micros(200);
    c.latency_jitter = Duration::from_micros(1800);
    c.join_all_via(0);
    let all: Vec<usize> = (0..n).collect();
    c.run_for(Duration::from_secs(20));
    println!(
        "joined after 20 s: all see all alive = {}",
        c.all_see_alive(&all)
    );
    c.run_for(Duration::from_secs(20));
    c.loss = 0.01;
    c.run_for(Duration::from_secs(10));

    let before: Vec<u64> = c.bytes_sent.clone();
    c.tally = Some(Default::default());
    let window = Duration::from_secs(20);
    let start = c.now;
    // Steady state with 1% loss, plus one state update to time its spread.
    let updater = 10;
    c.nodes[updater]
        .machine
        .set_local_state(c.now, NodeState::default());
    c.drain(updater);
    c.run_for(window);
    let rates: Vec<u64> = (0..n)
        .map(|i| (c.bytes_sent[i] - before[i]) / window.as_secs())
        .collect();
    println!(
        "bytes/node/s with 1% loss: p50 {} p99 {} max {}",
        percentile(rates.clone(), 0.5),
        percentile(rates.clone(), 0.99),
        rates.iter().max().unwrap()
    );
    for (kind, (count, bytes)) in c.tally.take().unwrap() {
        println!("  {kind}: {count} msgs {bytes} bytes");
    }
    summarize(
        "state update spread",
        first_seen(&c, updater, start, |e| {
            matches!(e, Event::NodeStateUpdated { .. })
        }),
    );

    // Pauses of 1.5 s must be refuted, never confirmed.
    let paused = [20, 21, 22];
    for &p in &paused {
        c.pause(p, Duration::from_millis(1500));
        c.run_for(Duration::from_millis(700));
    }
    c.run_for(Duration::from_secs(10));
    // Crashes must be confirmed everywhere.
    let crashed = [30, 31, 32, 33, 34];
    let mut crash_at = Vec::new();
    for &x in &crashed {
        c.crash(x);
        crash_at.push(c.now);
        c.run_for(Duration::from_millis(900));
    }
    c.run_for(Duration::from_secs(15));
    for (&x, &at) in crashed.iter().zip(&crash_at) {
        summarize(
            &format!("crash of {x} -> down"),
            first_seen(&c, x, at, |e| {
                matches!(
                    e,
                    Event::MemberChanged {
                        state: MemberState::Down,
                        ..
                    }
                )
            }),
        );
    }
    let false_positives: usize = (0..n)
        .filter(|x| !crashed.contains(x))
        .map(|x| c.transitions_to(x, MemberState::Down))
        .sum();
    let suspicions: usize = (0..n)
        .filter(|x| !crashed.contains(x))
        .map(|x| c.transitions_to(x, MemberState::Suspect))
        .sum();
    println!("false positives (down events about live nodes): {false_positives}");
    println!("suspect events about live nodes: {suspicions}");
    assert_eq!(false_positives, 0);

    // A tenth of the cluster cut off long enough to be given up, then healed.
    let live: Vec<usize> = (0..n).filter(|x| !crashed.contains(x)).collect();
    let (minority, majority): (Vec<usize>, Vec<usize>) = live.iter().partition(|&&x| x % 10 == 7);
    c.partition(&minority, &majority);
    c.run_for(Duration::from_secs(15));
    let given_up = majority.iter().take(20).all(|&o| {
        minority
            .iter()
            .all(|&x| c.view(o, x).is_some_and(|v| v.0 == MemberState::Down))
    });
    println!(
        "minority of {} given up by the majority: {given_up}",
        minority.len()
    );
    c.heal();
    let healed_at = c.now;
    let healed = c.run_until(Duration::from_secs(120), |c| {
        c.steps % 64 == 0 && c.all_see_alive(&live)
    });
    println!(
        "partition healed: {:?}",
        healed.map(|t| t.saturating_duration_since(healed_at))
    );
    println!("steps {}", c.steps);
}
