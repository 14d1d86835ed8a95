//! End to end: tasks on a 3-agent mesh of real processes on loopback,
//! driven through the `shoal` CLI and the HTTP API.

use shoal_tests::agents;
use shoal_tests::agents::{wait_for, Party};
use shoal_tests::task_helpers::{alive, cli, http, status, submit, submit_output, wait_replicated};
use std::time::Duration;

#[test]
fn a_command_succeeds_and_its_logs_are_served_by_any_node() {
    let party = Party::new();
    let agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let id = submit(
        &agents[0],
        &["--name", "greet"],
        &["sh", "-c", "echo hello-$SHOAL_ATTEMPT; echo oops >&2"],
    );
    let wait = cli(&agents[1], &["wait", &id, "--timeout", "30s"]);
    assert!(
        wait.status.success(),
        "wait: {}\n{}",
        String::from_utf8_lossy(&wait.stderr),
        agents::logs(&agents)
    );
    for a in &agents {
        let s = status(a, &id).expect("status");
        assert_eq!(s["id"], id.as_str());
        assert_eq!(s["state"], "succeeded");
        assert_eq!(s["attempt"], 1);
        assert_eq!(s["exit_code"], 0);
        assert!(
            s["node"].as_str().is_some_and(|n| n.starts_with('n')),
            "{s}"
        );
    }
    // Ask a node that did not run it: the log comes over the mesh.
    let ran_on = status(&agents[0], &id).unwrap()["node"]
        .as_str()
        .unwrap()
        .to_string();
    let other = agents.iter().find(|a| a.name() != ran_on).unwrap();
    let logs = cli(other, &["logs", &id]);
    assert!(logs.status.success());
    assert_eq!(String::from_utf8_lossy(&logs.stdout), "hello-1\n");
    let err = cli(other, &["logs", &id, "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&err.stdout), "oops\n");
    // The list shows it too.
    let list = cli(&agents[2], &["status", "--json", "--state", "succeeded"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["id"] == id.as_str()));
}

#[test]
fn mock_tasks_finish_with_their_exit_code_and_wait_reports_failures() {
    let party = Party::new();
    let agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let good = submit(&agents[0], &["--driver", "mock", "--duration", "50ms"], &[]);
    let bad = submit(&agents[1], &["--driver", "mock", "--exit-code", "3"], &[]);
    let ok = cli(&agents[2], &["wait", &good, "--timeout", "20s"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let both = cli(&agents[2], &["wait", &good, &bad, "--timeout", "20s"]);
    assert!(!both.status.success(), "a failed task must fail wait");
    let s = status(&agents[0], &bad).unwrap();
    assert_eq!(s["state"], "failed");
    assert_eq!(s["exit_code"], 3);
    let missing = cli(&agents[0], &["status", "00000000000000aa", "--json"]);
    assert!(!missing.status.success());
}

#[test]
fn wrong_or_missing_fields_get_a_400_naming_the_field() {
    let party = Party::new();
    let agents = party.mesh(1);
    let api = agents[0].spec.api;
    for (body, field) in [
        (r#"{}"#, "command"),
        (r#"{"comand":"ls"}"#, "comand"),
        (r#"{"command":"ls","slots":"two"}"#, "slots"),
        (r#"{"command":"ls","slots":0}"#, "slots"),
        (r#"{"command":"ls","timeout":"soon"}"#, "timeout"),
        (r#"{"command":"ls","args":"-l"}"#, "args"),
        (r#"{"driver":"mock","duration":"x"}"#, "duration"),
        (r#"{"driver":"docker"}"#, "driver"),
        (r#"{"command":"ls","retries":-1}"#, "retries"),
        (r#"{"command":"ls","timeout":-5}"#, "timeout"),
        (r#"{"command":"ls","env":{"A=B":"1"}}"#, "env"),
        (r#"{"command":"ls","args":["a\u0000b"]}"#, "args"),
        (
            r#"{"command":"ls","timeout":18446744073709551615}"#,
            "timeout",
        ),
        (r#"{"driver":"mock","duration":"100000000h"}"#, "duration"),
        (r#"not json"#, ""),
    ] {
        let (code, text) = http(api, "POST", "/v1/tasks", Some(body)).expect("answer");
        assert_eq!(code, 400, "{body} -> {code} {text}");
        let error: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains(field)),
            "{body} -> {text} does not name {field}"
        );
        assert!(
            !text.contains("untagged enum"),
            "{body} -> {text}: serde's words, not a person's"
        );
    }
    // A bound passed names the field and the bound.
    let (_, text) = http(
        api,
        "POST",
        "/v1/tasks",
        Some(&format!(
            r#"{{"command":"ls","args":["{}"]}}"#,
            "a".repeat(5000)
        )),
    )
    .unwrap();
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["field"], "args", "{text}");
    assert_eq!(error["limit"], 4096, "{text}");
    // A body over the limit: 413 with the limit, not a buffering error.
    // (Announced, not sent: the agent answers before reading, and a client
    // still writing would see the connection close under it.)
    let huge = format!(
        "POST /v1/tasks HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{{",
        2 * 1024 * 1024
    );
    let (code, text) = shoal_tests::agents::http_raw(api, &huge).expect("an answer");
    assert_eq!(code, 413, "{text}");
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(error["limit"], 1024 * 1024, "{text}");
    // Unknown routes and wrong methods answer JSON too.
    let (code, text) = http(api, "GET", "/v2/nothing", None).unwrap();
    assert_eq!(code, 404);
    assert!(text.contains("no such route"), "{text}");
    let (code, text) = http(api, "DELETE", "/v1/tasks", None).unwrap();
    assert_eq!(code, 405);
    let error: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        error["error"]
            .as_str()
            .is_some_and(|e| e.contains("DELETE")),
        "{text}"
    );
    let (code, text) = http(api, "GET", "/v1/tasks?state=sleeping", None).unwrap();
    assert_eq!(code, 400);
    assert!(text.contains("state"), "{text}");
    let (code, _) = http(api, "GET", "/v1/tasks/not-hex", None).unwrap();
    assert_eq!(code, 400);
}

#[test]
fn cancel_kills_a_running_task() {
    let party = Party::new();
    let agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let pid_file = party.path().join("cancel.pid");
    let script = format!("echo $$ > {}; exec sleep 60", pid_file.display());
    let id = submit(&agents[0], &[], &["sh", "-c", &script]);
    let pid: i32 = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .expect("task never started");
    assert!(alive(pid));
    let out = cli(&agents[1], &["cancel", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dead = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        (!alive(pid)).then_some(())
    });
    assert!(dead.is_some(), "the cancelled process is still alive");
    assert_eq!(status(&agents[2], &id).unwrap()["state"], "cancelled");
    let again = cli(&agents[2], &["wait", &id, "--timeout", "5s"]);
    assert!(!again.status.success(), "a cancelled task did not succeed");
}

#[test]
fn status_escapes_a_hostile_task_name_and_json_keeps_it_exact() {
    let party = Party::new();
    let agents = party.mesh(1);
    let hostile = "x\x1b]0;pwned\x07\x1b[2J\n0000000000000001  succeeded";
    let id = submit(&agents[0], &["--name", hostile], &["true"]);
    let out = cli(&agents[0], &["status"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains(['\x1b', '\x07']), "raw escapes in {text:?}");
    let row = text
        .lines()
        .find(|l| l.starts_with(id.as_str()))
        .expect("the task's row");
    assert!(
        row.contains("x\\x1b]0;pwned\\x07\\x1b[2J\\n0000000000000001"),
        "{row:?}"
    );
    assert_eq!(text.lines().count(), 2, "a forged row in {text:?}");
    let json = status(&agents[0], &id).expect("status --json");
    assert_eq!(json["name"], hostile, "JSON must stay exact");
}

#[test]
fn a_task_no_member_could_run_is_refused_unless_forced_and_says_why_it_waits() {
    let party = Party::new();
    let agents = party.mesh(1);
    let api = agents[0].spec.api;
    // Until the agent has gossiped its own state it accepts anything.
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        let (code, _) = http(
            api,
            "POST",
            "/v1/tasks",
            Some(r#"{"command":"true","slots":1000}"#),
        )?;
        (code == 400).then_some(())
    })
    .expect("a task asking for 1000 slots was never refused");
    for (body, field) in [
        (r#"{"command":"true","slots":1000}"#, "slots"),
        (r#"{"command":"true","labels":{"gpu":"a100"}}"#, "labels"),
    ] {
        let (code, text) = http(api, "POST", "/v1/tasks", Some(body)).unwrap();
        assert_eq!(code, 400, "{body} -> {text}");
        let error: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(error["field"], field, "{text}");
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains("force")),
            "the refusal names the way around it: {text}"
        );
    }
    let refused = submit_output(&agents[0], &["--label", "gpu=a100"], &["true"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("gpu=a100"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    // Forced, it is accepted and waits, saying why.
    let id = submit(&agents[0], &["--force", "--label", "gpu=a100"], &["true"]);
    let s = status(&agents[0], &id).unwrap();
    assert_eq!(s["state"], "pending", "{s}");
    assert!(
        s["waiting"]
            .as_str()
            .is_some_and(|w| w.contains("gpu=a100")),
        "{s}"
    );
    assert!(
        s["attempts"].as_array().is_some_and(|a| a.is_empty()),
        "{s}"
    );
    let shown = cli(&agents[0], &["status", &id]);
    assert!(
        String::from_utf8_lossy(&shown.stdout).contains("gpu=a100"),
        "{}",
        String::from_utf8_lossy(&shown.stdout)
    );
}

#[test]
fn every_failed_attempt_keeps_its_node_times_and_reason_and_its_own_logs() {
    let party = Party::new();
    let agents = party.mesh(1);
    // Fails on its first attempt and succeeds on its second.
    let flaky = submit(
        &agents[0],
        &["--retries", "1"],
        &[
            "sh",
            "-c",
            "echo try-$SHOAL_ATTEMPT; [ $SHOAL_ATTEMPT -ge 2 ]",
        ],
    );
    let wait = cli(&agents[0], &["wait", &flaky, "--timeout", "30s"]);
    assert!(
        wait.status.success(),
        "{}",
        String::from_utf8_lossy(&wait.stderr)
    );
    let s = status(&agents[0], &flaky).unwrap();
    let attempts = s["attempts"].as_array().expect("attempts").clone();
    assert_eq!(attempts.len(), 2, "{s}");
    assert_eq!(attempts[0]["attempt"], 1);
    assert_eq!(attempts[0]["outcome"], "exited");
    assert_eq!(attempts[0]["exit_code"], 1);
    assert_eq!(attempts[1]["exit_code"], 0);
    for a in &attempts {
        assert_eq!(a["node"], "n1", "{a}");
        let started = humantime::parse_rfc3339(a["started_at"].as_str().unwrap()).unwrap();
        let ended = humantime::parse_rfc3339(a["ended_at"].as_str().unwrap()).unwrap();
        assert!(ended >= started, "{a}");
    }
    let submitted = humantime::parse_rfc3339(s["submitted_at"].as_str().unwrap()).unwrap();
    let first_start =
        humantime::parse_rfc3339(attempts[0]["started_at"].as_str().unwrap()).unwrap();
    assert!(first_start >= submitted, "{s}");
    assert!(
        s.get("reason").is_some_and(serde_json::Value::is_null),
        "a success has a null reason: {s}"
    );
    let first = cli(&agents[0], &["logs", &flaky, "--attempt", "1"]);
    assert_eq!(String::from_utf8_lossy(&first.stdout), "try-1\n");
    let last = cli(&agents[0], &["logs", &flaky]);
    assert_eq!(String::from_utf8_lossy(&last.stdout), "try-2\n");
    let none = cli(&agents[0], &["logs", &flaky, "--attempt", "3"]);
    assert!(!none.status.success(), "attempt 3 never ran");

    // A program that does not exist, and a directory that does not:
    // each fails with the reason in the record and in its attempt.
    let missing = submit_output(&agents[0], &[], &["/no/such/program"]);
    assert!(missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not an executable"),
        "submit warns: {}",
        String::from_utf8_lossy(&missing.stderr)
    );
    let missing = String::from_utf8_lossy(&missing.stdout).trim().to_string();
    let no_dir = submit(&agents[0], &["--cwd", "/no/such/dir"], &["true"]);
    for (id, words) in [(&missing, "/no/such/program"), (&no_dir, "/no/such/dir")] {
        let _ = cli(&agents[0], &["wait", id, "--timeout", "30s"]);
        let s = status(&agents[0], id).unwrap();
        assert_eq!(s["state"], "failed", "{s}");
        assert!(
            s["reason"].as_str().is_some_and(|r| r.contains(words)),
            "{s}"
        );
        assert_eq!(s["attempts"][0]["reason"], s["reason"], "{s}");
    }

    // The list comes in submit order.
    let list = cli(&agents[0], &["status", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [flaky.as_str(), missing.as_str(), no_dir.as_str()]);
}
