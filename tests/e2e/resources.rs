//! End to end: a node offers CPU, memory and custom resources; tasks
//! reserve them; a request no node could hold is refused naming the kind,
//! and two tasks whose memory does not fit side by side run one after the
//! other.

use shoal_tests::agents::{wait_for, Party};
use shoal_tests::task_helpers::{cli, http, status, submit, submit_output};
use std::time::Duration;

/// The capacity and free amounts the agent gossips of itself.
fn own_resources(
    agent: &shoal_tests::agents::Agent,
) -> Option<(serde_json::Value, serde_json::Value)> {
    let members = agent.members()?;
    let me = members.iter().find(|m| m["self"] == true)?;
    Some((me["capacity"].clone(), me["free"].clone()))
}

#[test]
fn tasks_reserve_cpu_memory_and_custom_resources_and_never_over_commit_a_node() {
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.extra_args = [
        "--slots",
        "4",
        "--cpu",
        "2",
        "--memory",
        "1Gi",
        "--resource",
        "gpu=1",
    ]
    .map(String::from)
    .to_vec();
    let agent = spec.start_fresh(&[]);
    let api = agent.spec.api;
    let (capacity, _) = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        own_resources(&agent).filter(|(c, _)| !c.is_null())
    })
    .expect("the agent never showed its capacity");
    assert_eq!(capacity["cpu_milli"], 2000, "{capacity}");
    assert_eq!(capacity["memory_mib"], 1024, "{capacity}");
    assert_eq!(capacity["custom"]["gpu"], 1, "{capacity}");
    let table = cli(&agent, &["members"]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("CPU") && text.contains("2/2"), "{text}");
    assert!(text.contains("1Gi/1Gi"), "{text}");

    // More than any member offers, kind by kind: refused, naming the kind
    // (once the task host has the agent's own state, within a poll).
    wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let body = r#"{"command":"true","memory":"2Gi"}"#;
        let (code, _) = http(api, "POST", "/v1/tasks", Some(body))?;
        (code == 400).then_some(())
    })
    .expect("a task asking for 2Gi was never refused");
    for (body, field) in [
        (r#"{"command":"true","memory":"2Gi"}"#, "memory"),
        (r#"{"command":"true","cpu":"3000"}"#, "cpu"),
        (r#"{"command":"true","cpu":"3.0"}"#, "cpu"),
        (r#"{"command":"true","resources":{"gpu":2}}"#, "resources"),
        (r#"{"command":"true","resources":{"tpu":1}}"#, "resources"),
        (r#"{"command":"true","cpu":"lots"}"#, "cpu"),
        (r#"{"command":"true","memory":"1.5Gi"}"#, "memory"),
    ] {
        let (code, text) = http(api, "POST", "/v1/tasks", Some(body)).unwrap();
        assert_eq!(code, 400, "{body} -> {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["field"], field, "{body} -> {text}");
    }
    let refused = submit_output(&agent, &["--memory", "2Gi"], &["true"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("memory 2Gi") && stderr.contains("1Gi"),
        "{stderr}"
    );
    let bad_flag = submit_output(&agent, &["--cpu", "two"], &["true"]);
    assert_eq!(bad_flag.status.code(), Some(2), "a usage error");
    assert!(
        String::from_utf8_lossy(&bad_flag.stderr).contains("millicores"),
        "{}",
        String::from_utf8_lossy(&bad_flag.stderr)
    );

    // 600 MiB twice does not fit in 1 GiB: the second waits for the first,
    // although slots and CPU are free.
    let flags = ["--memory", "600Mi", "--cpu", "500m", "--resource", "gpu=0"];
    let first = submit(&agent, &flags, &["sleep", "2"]);
    wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        (status(&agent, &first)?["state"] == "running").then_some(())
    })
    .expect("the first task never ran");
    let second = submit(&agent, &flags, &["sleep", "0.2"]);
    let (_, free) = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        own_resources(&agent).filter(|(_, f)| f["memory_mib"] == 424)
    })
    .expect("the free memory never showed the first reservation");
    assert_eq!(free["cpu_milli"], 1500, "{free}");
    // The waiting reason is written by the node that last looked for room,
    // a moment after the submit: poll for it, while the task stays pending.
    let says_memory = |s: &serde_json::Value| {
        s["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("memory=600Mi"))
    };
    let waiting = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let s = status(&agent, &second)?;
        assert_eq!(s["state"], "pending", "{s}");
        says_memory(&s).then_some(s)
    })
    .unwrap_or_else(|| panic!("{:?}", status(&agent, &second)));
    assert_eq!(waiting["resources"]["memory_mib"], 600, "{waiting}");
    let shown = String::from_utf8_lossy(&cli(&agent, &["status", &second]).stdout).to_string();
    assert!(shown.contains("slots=1,cpu=500m,memory=600Mi"), "{shown}");
    for id in [&first, &second] {
        let done = cli(&agent, &["wait", id, "--timeout", "30s"]);
        assert!(
            done.status.success(),
            "{}\n{}",
            String::from_utf8_lossy(&done.stderr),
            agent.log_tail()
        );
    }
    let ended = status(&agent, &first).unwrap()["attempts"][0]["ended_at"].clone();
    let started = status(&agent, &second).unwrap()["attempts"][0]["started_at"].clone();
    let time = |v: &serde_json::Value| {
        humantime::parse_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
    };
    assert!(
        time(&started) >= time(&ended),
        "the second started at {started} before the first ended at {ended}"
    );
}
