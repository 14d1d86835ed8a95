//! End to end: an agent refuses what it cannot read instead of misreading
//! it. A data directory stamped with a newer store format stops the agent
//! with a message naming the directory and both formats (and nothing is
//! written to it); a directory without a format marker is format 1 and is
//! stamped; a party member speaking a foreign wire version is refused,
//! logged once and counted, while the mesh carries on.

use shoal_node::tls::load_tls_material;
use shoal_node::transport::{Transport, TransportCounters};
use shoal_protocol::wire::{Channel, WireVersions};
use shoal_tests::agents::{all_agree_alive, wait_for, Agent, Party};
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn an_agent_on_a_data_dir_of_a_newer_store_format_exits_non_zero_naming_both_formats() {
    let party = Party::new();
    let spec = party.spec("n1");
    std::fs::create_dir_all(&spec.data).unwrap();
    std::fs::write(spec.data.join("FORMAT"), "shoal-store-format 99\n").unwrap();
    let mut child = spec
        .command(Some("n1"), &[])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal agent");
    let exit = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        child.try_wait().ok().flatten()
    });
    if exit.is_none() {
        let _ = child.kill();
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let exit = exit.expect("the agent did not stop on a store it cannot read");
    assert!(!exit.success(), "exited {exit:?}; stderr:\n{stderr}");
    let dir = spec.data.display().to_string();
    for needle in [dir.as_str(), "store format 99", "reads format 1"] {
        assert!(stderr.contains(needle), "no {needle:?} in:\n{stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(&spec.data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec!["FORMAT"], "the refused directory was written to");
}

#[test]
fn a_data_dir_without_a_format_marker_is_format_1_and_gets_stamped() {
    let party = Party::new();
    let mut agent = party.spec("n1").start_fresh(&[]);
    let marker = agent.spec.data.join("FORMAT");
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "shoal-store-format 1\n"
    );
    agent.kill();
    // What a data directory written before markers existed looks like.
    std::fs::remove_file(&marker).unwrap();
    let agent = agent.spec.start(&[]);
    assert!(agent.get("/v1/node").is_some());
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "shoal-store-format 1\n"
    );
}

fn refusal_lines(agent: &Agent) -> usize {
    std::fs::read_to_string(&agent.spec.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("refused a peer whose wire version this agent cannot read"))
        .count()
}

#[test]
fn a_member_speaking_a_foreign_wire_version_is_refused_once_in_the_log_and_the_mesh_carries_on() {
    let party = Party::new();
    let agents = party.mesh(3);
    let names = ["n1", "n2", "n3"];
    let all: Vec<&Agent> = agents.iter().collect();
    let up = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        all_agree_alive(&all, &names).then_some(())
    });
    assert!(up.is_some(), "the party never formed");
    // A member of the party (its certificate is the party's) whose build
    // speaks wire version 2 only.
    let material = load_tls_material(&party.issue("f")).unwrap();
    let target = agents[0].spec.listen;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let foreign = runtime.block_on(async {
        let counters = TransportCounters::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let t = Transport::bind_speaking(
            any,
            &material,
            counters.clone(),
            tx,
            WireVersions::new(&[2]),
        )
        .unwrap();
        for _ in 0..10 {
            t.send(Channel::Membership, target, false, b"\x00\x01garbage");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        assert!(rx.try_recv().is_err(), "the refused agent sent a frame");
        t.close(Duration::from_millis(500)).await;
        counters
    });
    assert!(foreign.wire_version_refused.get() >= 1);
    let counted = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
        let n = agents[0].metric("shoal_wire_version_refused_total")?;
        (n >= 2.0).then_some(n)
    });
    assert!(
        counted.is_some(),
        "refusals counted: {:?}",
        agents[0].metric("shoal_wire_version_refused_total")
    );
    assert_eq!(
        refusal_lines(&agents[0]),
        1,
        "one log line per peer, not per connection:\n{}",
        agents[0].log_tail()
    );
    let log = std::fs::read_to_string(&agents[0].spec.log).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("refused a peer whose wire version"))
        .unwrap();
    assert!(
        line.contains("shoal/2") && line.contains("shoal/1"),
        "{line}"
    );
    assert_eq!(agents[0].metric("shoal_decode_errors_total"), Some(0.0));
    assert!(
        all_agree_alive(&all, &names),
        "the mesh changed: {:?}",
        agents[0].members()
    );
    for agent in &agents[1..] {
        assert_eq!(agent.metric("shoal_wire_version_refused_total"), Some(0.0));
    }
}
