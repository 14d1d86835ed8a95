//! Helpers of the task e2e tests: HTTP POST, the CLI, readiness.

use crate::agents::{http_exchange, wait_for, Agent};
use crate::shoal;
use serde_json::Value;

use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A minimal HTTP/1.1 request; (status, body) or `None` on a socket error.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    http_exchange(addr, &request, Duration::from_secs(20))
}

/// `shoal ARGS... --api URL-of(agent)`, output captured.
pub fn cli(agent: &Agent, args: &[&str]) -> Output {
    let api = format!("http://{}", agent.spec.api);
    Command::new(shoal())
        .args(args)
        .args(["--api", &api])
        .stdin(Stdio::null())
        .output()
        .expect("run shoal")
}

/// `shoal submit --api .. EXTRA... [-- CMD...]`, output captured.
pub fn submit_output(agent: &Agent, extra: &[&str], command: &[&str]) -> Output {
    let api = format!("http://{}", agent.spec.api);
    let mut cmd = Command::new(shoal());
    cmd.args(["submit", "--api", &api]).args(extra);
    if !command.is_empty() {
        cmd.arg("--").args(command);
    }
    cmd.stdin(Stdio::null()).output().expect("run shoal submit")
}

/// `shoal submit --api .. EXTRA... [-- CMD...]`: the id it printed.
pub fn submit(agent: &Agent, extra: &[&str], command: &[&str]) -> String {
    let out = submit_output(agent, extra, command);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "submit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = stdout.trim().to_string();
    assert_eq!(stdout, format!("{id}\n"), "submit must print only the id");
    assert_eq!(id.len(), 16, "id {id:?}");
    id
}

/// `shoal status --json ID` through `agent`.
pub fn status(agent: &Agent, id: &str) -> Option<Value> {
    let out = cli(agent, &["status", id, "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits until every agent's directory has every shard on a full group.
pub fn wait_replicated(agents: &[Agent], group: usize) {
    let ok = wait_for(Duration::from_secs(60), Duration::from_millis(250), || {
        agents
            .iter()
            .all(|a| a.metric("shoal_shard_group_min_size") == Some(group as f64))
            .then_some(())
    });
    assert!(
        ok.is_some(),
        "shard groups never reached {group} members:\n{}",
        crate::agents::logs(agents)
    );
}

/// Whether a process exists.
pub fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
