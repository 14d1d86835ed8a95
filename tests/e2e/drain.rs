//! End to end: `shoal drain` of the node running a task. While it drains no
//! new task lands on it, the running one finishes there as attempt 1, and the
//! agent leaves the mesh and exits 0.

use shoal_tests::agents;
use shoal_tests::agents::{wait_for, Party};
use shoal_tests::shoal;
use shoal_tests::task_helpers::{status, submit, wait_replicated};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Tasks submitted while the node drains.
const LATER_TASKS: usize = 6;

#[test]
fn a_drained_node_takes_no_new_task_finishes_its_running_one_and_exits_0() {
    let party = Party::new();
    let mut agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let marks = party.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    let script = format!("sleep 4; touch {}/done-$SHOAL_ATTEMPT", marks.display());
    let long = submit(&agents[0], &[], &["sh", "-c", &script]);
    let holder = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let s = status(&agents[1], &long)?;
        (s["state"] == "running").then(|| s["node"].as_str().map(str::to_string))?
    })
    .expect("the long task never ran");
    let drained = agents.iter().position(|a| a.name() == holder).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != drained).collect();
    let api = format!("http://{}", agents[drained].spec.api);
    let mut drain_cli = Command::new(shoal())
        .args(["drain", "--api", &api, "--deadline", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal drain");
    let draining = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let node: serde_json::Value =
            serde_json::from_str(&agents[drained].get("/v1/node")?).ok()?;
        (node["draining"] == true).then_some(())
    });
    assert!(draining.is_some(), "GET /v1/node never said draining");
    assert_eq!(agents[drained].metric("shoal_draining"), Some(1.0));
    assert_eq!(agents[others[0]].metric("shoal_draining"), Some(0.0));
    // Let the draining flag reach the others' views (gossip, about a second).
    let seen = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        others
            .iter()
            .all(|i| {
                agents[*i].members().is_some_and(|ms| {
                    ms.iter()
                        .any(|m| m["name"] == holder.as_str() && m["draining"] == true)
                })
            })
            .then_some(())
    });
    assert!(seen.is_some(), "the others never saw the node draining");
    let later: Vec<String> = (0..LATER_TASKS)
        .map(|i| submit(&agents[others[i % 2]], &[], &["sh", "-c", "sleep 0.2"]))
        .collect();
    for id in &later {
        let s = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
            let s = status(&agents[others[0]], id)?;
            (s["state"] == "succeeded").then_some(s)
        })
        .unwrap_or_else(|| panic!("task {id} never succeeded:\n{}", agents::logs(&agents)));
        assert_ne!(
            s["node"].as_str(),
            Some(holder.as_str()),
            "a task landed on the draining node: {s}"
        );
    }
    let exit = agents[drained].wait_exit(Duration::from_secs(20));
    assert!(
        exit.is_some_and(|s| s.success()),
        "the drained agent did not exit 0: {exit:?}\n{}",
        agents[drained].log_tail()
    );
    assert!(
        marks.join("done-1").exists(),
        "the running attempt did not finish"
    );
    let s = status(&agents[others[0]], &long).expect("status of the long task");
    assert_eq!(s["state"], "succeeded", "{s}");
    assert_eq!(s["attempt"], 1, "the long task ran again: {s}");
    let cli_exit = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        drain_cli.try_wait().ok().flatten()
    });
    assert!(
        cli_exit.is_some_and(|s| s.success()),
        "shoal drain: {cli_exit:?}"
    );
    let left = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        (agents[others[0]].state_of(&holder)?.0 == "left").then_some(())
    });
    assert!(left.is_some(), "the drained node is not listed left");
}
