//! `shoal health`, the probe that container HEALTHCHECKs and systemd's
//! ExecStartPost run: its exit code must follow the agent's real state.

use shoal_tests::agents::{free_tcp_port, Party};
use shoal_tests::shoal;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn health(api: &str, extra: &[&str]) -> Output {
    Command::new(shoal())
        .args(["health", "--api", api])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn health_fails_clearly_when_nothing_listens() {
    let api = format!("http://127.0.0.1:{}", free_tcp_port());
    let started = Instant::now();
    let out = health(&api, &["--wait", "1s"]);
    assert!(!out.status.success(), "no agent, yet healthy");
    assert!(
        started.elapsed() >= Duration::from_millis(750),
        "--wait 1s retried"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the shoal API"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn health_and_readiness_pass_against_a_live_agent() {
    let party = Party::new();
    let agents = party.mesh(1);
    let api = format!("http://{}", agents[0].spec.api);
    let live = health(&api, &[]);
    assert!(
        live.status.success(),
        "{}",
        String::from_utf8_lossy(&live.stderr)
    );
    let ready = health(&api, &["--ready", "--wait", "20s"]);
    assert!(
        ready.status.success(),
        "{}",
        String::from_utf8_lossy(&ready.stderr)
    );
}
