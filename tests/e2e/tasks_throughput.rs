//! End to end: a 3-agent mesh completes 200 mock tasks. Prints the rate;
//! speed is measured by scripts/throughput.sh, not asserted here.

use shoal_tests::agents;
use shoal_tests::agents::{wait_for, Party};
use shoal_tests::task_helpers::{cli, http, wait_replicated};
use std::time::{Duration, Instant};

const TASKS: usize = 200;
const SUBMITTERS: usize = 8;

#[test]
fn a_three_agent_mesh_completes_200_mock_tasks() {
    let party = Party::new();
    let agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let apis: Vec<_> = agents.iter().map(|a| a.spec.api).collect();
    let started = Instant::now();
    let ids: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SUBMITTERS)
            .map(|k| {
                let apis = &apis;
                s.spawn(move || {
                    let mut ids = Vec::new();
                    for i in (k..TASKS).step_by(SUBMITTERS) {
                        let api = apis[i % apis.len()];
                        let answer = http(api, "POST", "/v1/tasks", Some(r#"{"driver":"mock"}"#));
                        let (code, body) = answer.expect("submit answered");
                        assert_eq!(code, 201, "{body}");
                        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                        ids.push(v["id"].as_str().unwrap().to_string());
                    }
                    ids
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let submitted = started.elapsed();
    assert_eq!(ids.len(), TASKS);
    let mut args = vec!["wait", "--timeout", "60s"];
    args.extend(ids.iter().map(String::as_str));
    let out = cli(&agents[0], &args);
    let done = started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agents::logs(&agents)
    );
    println!(
        "{TASKS} mock tasks: submitted in {submitted:?}, all succeeded after {done:?} \
         ({:.0} tasks/s end to end, debug build, includes polling)",
        TASKS as f64 / done.as_secs_f64()
    );
    // Every node's acceptors agree they all succeeded.
    let agreed = wait_for(Duration::from_secs(10), Duration::from_millis(200), || {
        agents
            .iter()
            .all(|a| {
                a.metric("shoal_tasks").is_some_and(|_| {
                    a.get("/metrics").is_some_and(|m| {
                        m.contains(&format!("shoal_tasks{{state=\"succeeded\"}} {TASKS}"))
                    })
                })
            })
            .then_some(())
    });
    assert!(
        agreed.is_some(),
        "acceptors do not all count {TASKS} succeeded"
    );
}
