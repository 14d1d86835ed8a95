//! What a user types, or leaves in the environment, reaches the agent or
//! is refused with a message that says which input was wrong.

use serde_json::Value;
use shoal_tests::agents::{http_get, AgentSpec, Party};
use shoal_tests::shoal;
use shoal_tests::task_helpers::submit;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_value_in_a_shoal_variable_is_named_with_the_variable() {
    let out = Command::new(shoal())
        .args(["agent", "--name", "n1"])
        .env("SHOAL_SLOTS", "abc")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--slots"), "{stderr}");
    assert!(
        stderr.contains("environment variable SHOAL_SLOTS"),
        "the variable is named: {stderr}"
    );
}

#[test]
fn an_api_address_without_a_scheme_is_http_and_a_path_is_refused() {
    let party = Party::new();
    let agents = party.mesh(1);
    let bare = agents[0].spec.api.to_string();
    let out = Command::new(shoal())
        .args(["members", "--json", "--api", &bare])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"n1\""));

    let out = Command::new(shoal())
        .args(["members", "--api", &format!("http://{bare}/v1/members")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("without a path"), "{stderr}");
}

#[test]
fn waiting_on_an_unknown_task_says_so_and_fails() {
    let party = Party::new();
    let agents = party.mesh(1);
    let known = submit(&agents[0], &[], &["true"]);
    let out = Command::new(shoal())
        .args(["wait", "--timeout", "60s", "--api"])
        .arg(format!("http://{}", agents[0].spec.api))
        .args([known.as_str(), "00000000deadbeef"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("task 00000000deadbeef: no such task"),
        "{stderr}"
    );
    assert!(stderr.contains("1 succeeded, 0 not, 1 unknown"), "{stderr}");
}

/// Runs `shoal agent` for `spec`'s certificate, with `name` as `--name`
/// when given, and returns stderr once the agent exits or is ready.
fn start_under_name(
    spec: &AgentSpec,
    name: Option<&str>,
) -> (Option<ExitStatus>, Option<Vec<Value>>, String) {
    let mut child = spec
        .command(name, &[])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut exited = None;
    let mut members = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        if let Some(body) = http_get(spec.api, "/v1/members", None) {
            members = serde_json::from_str(&body).ok();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    (
        exited,
        members,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_node_is_named_by_its_certificate_and_another_name_is_refused() {
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.tls = party.issue("n7");

    let (exited, _, stderr) = start_under_name(&spec, Some("n1"));
    let status = exited.unwrap_or_else(|| panic!("started as n1 with n7's certificate: {stderr}"));
    assert!(!status.success());
    assert!(stderr.contains("issued for node n7"), "{stderr}");
    assert!(stderr.contains("shoal ca issue"), "{stderr}");

    let (exited, members, stderr) = start_under_name(&spec, None);
    assert!(exited.is_none(), "without --name it starts: {stderr}");
    let names: Vec<&str> = members
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["n7"], "{stderr}");
}
