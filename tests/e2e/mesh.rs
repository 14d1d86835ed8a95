//! End-to-end membership tests on real `shoal agent` processes over
//! loopback QUIC with the `local` membership preset.

use shoal_protocol::membership::Config;
use shoal_tests::agents::{all_agree_alive, logs, wait_for, Agent, Party};
use std::time::{Duration, Instant};

const N: usize = 5;
const POLL: Duration = Duration::from_millis(100);
const NAMES: [&str; N] = ["n1", "n2", "n3", "n4", "n5"];

/// How long a 5-node mesh may take to form: join retries plus a few gossip
/// rounds, with room for a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(20);

/// The detection bound for a crashed member under the `local` preset:
/// worst case until some member probes it (a full round-robin pass of
/// `n-1` probe intervals), the probe timeout plus an indirect round, the
/// maximum Lifeguard suspicion timeout, and a few gossip rounds to spread
/// the verdict. Doubled (plus a second) for a noisy shared machine.
fn down_bound(n: usize) -> Duration {
    let c = Config::local();
    let predicted = c.probe_interval * (n as u32 - 1)
        + c.probe_timeout
        + c.probe_interval
        + c.suspicion_timeout_max(n)
        + c.gossip_interval * 4;
    predicted * 2 + Duration::from_secs(1)
}

fn others<'a>(agents: &'a [Agent], skip: &str) -> Vec<&'a Agent> {
    agents.iter().filter(|a| a.name() != skip).collect()
}

fn converge(agents: &[Agent], expected: &[&str]) {
    let refs: Vec<&Agent> = agents.iter().collect();
    let ok = wait_for(CONVERGE, POLL, || {
        all_agree_alive(&refs, expected).then_some(())
    });
    assert!(
        ok.is_some(),
        "mesh did not converge to {expected:?}\n{}",
        logs(agents)
    );
}

#[test]
fn five_agents_join_through_one_seed_and_all_list_five_alive() {
    let party = Party::new();
    let agents = party.mesh(N);
    converge(&agents, &NAMES);
    for agent in &agents {
        let members = agent.members().unwrap();
        assert_eq!(members.len(), N);
        for m in &members {
            assert_eq!(m["id"].as_str().map(str::len), Some(32), "{m}");
            assert!(m["addr"].as_str().unwrap().starts_with("127.0.0.1:"));
            assert!(m["incarnation"].as_u64().unwrap() >= 1);
        }
        assert_eq!(agent.get("/readyz").as_deref(), Some("ready\n"));
        // The id a node derives from its own certificate is the id its
        // peers derive from the certificate TLS showed them.
        let own: serde_json::Value = serde_json::from_str(&agent.get("/v1/node").unwrap()).unwrap();
        for other in &agents {
            let listed = other.members().unwrap();
            let entry = listed.iter().find(|m| m["name"] == agent.name()).unwrap();
            assert_eq!(entry["id"], own["member"]["id"]);
        }
        assert_eq!(
            agent.metric("shoal_members"),
            Some(N as f64),
            "{}",
            agent.name()
        );
    }
}

#[test]
fn killed_agent_is_listed_down_by_every_other_within_the_bound() {
    let party = Party::new();
    let mut agents = party.mesh(N);
    converge(&agents, &NAMES);
    let bound = down_bound(N);
    agents[2].kill();
    let killed_at = Instant::now();
    let survivors = others(&agents, "n3");
    let all_down = wait_for(bound, Duration::from_millis(50), || {
        survivors
            .iter()
            .all(|a| a.state_of("n3").is_some_and(|(s, _)| s == "down"))
            .then_some(())
    });
    let took = killed_at.elapsed();
    assert!(
        all_down.is_some(),
        "not every survivor listed n3 down within {bound:?}\n{}",
        logs(&agents)
    );
    assert!(survivors.iter().all(|a| a.logged_change("n3", "down")));
    eprintln!("kill -9 -> down at every survivor in {took:?} (bound {bound:?})");
}

#[test]
fn paused_agent_shorter_than_suspicion_is_never_confirmed_down() {
    let party = Party::new();
    let agents = party.mesh(N);
    converge(&agents, &NAMES);
    // Shorter than the minimum suspicion timeout, so a suspicion raised
    // while it sleeps cannot have expired when it wakes and refutes.
    let pause = Config::local().suspicion_timeout_min(N) / 2;
    let paused = &agents[3];
    let watchers = others(&agents, "n4");
    let mut seen = Vec::new();
    for _ in 0..3 {
        paused.signal("STOP");
        let until = Instant::now() + pause;
        while Instant::now() < until {
            for w in &watchers {
                if let Some((state, _)) = w.state_of("n4") {
                    seen.push(state);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        paused.signal("CONT");
        let settle = Instant::now() + Duration::from_secs(2);
        while Instant::now() < settle {
            for w in &watchers {
                if let Some((state, _)) = w.state_of("n4") {
                    seen.push(state);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(!seen.is_empty());
    assert!(
        !seen.iter().any(|s| s == "down"),
        "n4 was confirmed down after a {pause:?} pause\n{}",
        logs(&agents)
    );
    // A down verdict between two samples would still be in the logs.
    for w in &watchers {
        assert!(
            !w.logged_change("n4", "down"),
            "{} logged n4 down",
            w.name()
        );
    }
    converge(&agents, &NAMES);
    eprintln!(
        "pause {pause:?} x3: {} observations, {} suspect",
        seen.len(),
        seen.iter().filter(|s| *s == "suspect").count()
    );
}

#[test]
fn restarted_agent_rejoins_alive_with_a_higher_incarnation() {
    let party = Party::new();
    let mut agents = party.mesh(N);
    converge(&agents, &NAMES);
    let before = agents[0].state_of("n5").unwrap().1;
    agents[4].kill();
    let survivors: Vec<&Agent> = agents[..4].iter().collect();
    let down = wait_for(down_bound(N), POLL, || {
        survivors
            .iter()
            .all(|a| a.state_of("n5").is_some_and(|(s, _)| s == "down"))
            .then_some(())
    });
    assert!(down.is_some(), "n5 not down\n{}", logs(&agents));
    let seed = agents[0].spec.listen;
    let spec = agents[4].spec.clone();
    agents[4] = spec.start(&[seed]);
    converge(&agents, &NAMES);
    // State and incarnation are judged from one reading per agent, polled:
    // on a loaded machine a fresh process may miss one probe after it has
    // converged and be suspected until it refutes, which SWIM allows.
    let rejoined = wait_for(CONVERGE, POLL, || {
        agents
            .iter()
            .all(|a| {
                a.state_of("n5")
                    .is_some_and(|(state, inc)| state == "alive" && inc > before)
            })
            .then_some(())
    });
    if rejoined.is_none() {
        let seen: Vec<String> = agents
            .iter()
            .map(|a| format!("{}: {:?}", a.name(), a.state_of("n5")))
            .collect();
        panic!(
            "n5 not alive above incarnation {before} everywhere: {seen:?}\n{}",
            logs(&agents)
        );
    }
}

#[test]
fn sigterm_leaves_the_mesh_gracefully() {
    let party = Party::new();
    let mut agents = party.mesh(3);
    converge(&agents, &["n1", "n2", "n3"]);
    agents[1].signal("TERM");
    let status = agents[1].wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "agent did not exit 0 on SIGTERM"
    );
    let left = wait_for(Duration::from_secs(5), POLL, || {
        [&agents[0], &agents[2]]
            .iter()
            .all(|a| a.state_of("n2").is_some_and(|(s, _)| s == "left"))
            .then_some(())
    });
    assert!(left.is_some(), "n2 not listed as left\n{}", logs(&agents));
}
