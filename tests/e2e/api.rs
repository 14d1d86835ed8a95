//! End-to-end tests of the agent's API, CLI and health reporting.

use shoal_tests::agents;
use shoal_tests::agents::{http_get, http_get_any, http_raw, wait_for, Party};
use shoal_tests::shoal;
use std::process::{Command, Stdio};
use std::time::Duration;

const POLL: Duration = Duration::from_millis(100);

#[test]
fn members_cli_fails_clearly_when_the_api_is_unreachable() {
    let port = agents::free_tcp_port();
    let out = Command::new(shoal())
        .args([
            "members",
            "--json",
            "--api",
            &format!("http://127.0.0.1:{port}"),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the shoal API"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn members_cli_prints_the_same_array_as_the_api() {
    let party = Party::new();
    let agents = party.mesh(2);
    let ok = wait_for(Duration::from_secs(20), POLL, || {
        (agents[0].names_in_state("alive")?.len() == 2).then_some(())
    });
    assert!(ok.is_some());
    let out = Command::new(shoal())
        .args([
            "members",
            "--json",
            "--api",
            &format!("http://{}", agents[0].spec.api),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let cli: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = cli.iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names.len(), 2);
    for m in &cli {
        for key in ["name", "id", "addr", "state", "incarnation"] {
            assert!(!m[key].is_null(), "{key} missing in {m}");
        }
    }
    let table = Command::new(shoal())
        .args([
            "members",
            "--api",
            &format!("http://{}", agents[0].spec.api),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("ID"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains("alive")).count(),
        2,
        "{text}"
    );
}

#[test]
fn api_off_loopback_requires_a_token_and_checks_it() {
    let party = Party::new();
    let mut spec = party.spec("n1");
    // Off loopback without a token: refused at start with a clear message.
    spec.api = format!("0.0.0.0:{}", agents::free_tcp_port())
        .parse()
        .unwrap();
    let out = spec
        .command(Some("n1"), &[])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--api-token"));

    spec.api_token = Some("s3cret".into());
    let agent = spec.start(&[]);
    let loopback = format!("127.0.0.1:{}", spec.api.port()).parse().unwrap();
    assert!(
        http_get(loopback, "/v1/members", None).is_none(),
        "no token must be refused"
    );
    assert!(http_get(loopback, "/v1/members", Some("wrong")).is_none());
    assert!(http_get(loopback, "/v1/members", Some("s3cret")).is_some());
    assert!(
        http_get(loopback, "/healthz", None).is_some(),
        "liveness stays open"
    );
    drop(agent);
}

#[test]
fn a_failing_configured_check_is_gossiped_with_its_reason() {
    let party = Party::new();
    let config = party.path().join("n1.toml");
    std::fs::write(
        &config,
        r#"
slots = 3
[labels]
zone = "a"
[[check]]
name = "db"
command = ["sh", "-c", "echo db unreachable; exit 2"]
interval_ms = 200
timeout_ms = 1000
failure_threshold = 2
"#,
    )
    .unwrap();
    let mut first = party.spec("n1");
    first.config = Some(config);
    let sick = first.start(&[]);
    let watcher = party.spec("n2").start(&[sick.spec.listen]);

    let node = wait_for(Duration::from_secs(15), POLL, || {
        let node: serde_json::Value = serde_json::from_str(&sick.get("/v1/node")?).ok()?;
        (node["member"]["health"] == "critical").then_some(node)
    })
    .expect("n1 never reported itself critical");
    let reason = node["member"]["health_reason"].as_str().unwrap();
    assert!(
        reason.contains("db") && reason.contains("db unreachable"),
        "{reason}"
    );
    let db = node["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "db")
        .unwrap();
    assert_eq!(db["status"], "critical");
    assert!(db["consecutive_failures"].as_u64().unwrap() >= 2);

    let seen = wait_for(Duration::from_secs(15), POLL, || {
        let members = watcher.members()?;
        let n1 = members.into_iter().find(|m| m["name"] == "n1")?;
        (n1["health"] == "critical" && n1["state"] == "alive").then_some(n1)
    })
    .expect("n2 never saw n1's critical health");
    assert_eq!(seen["slots_total"], 3);
    assert_eq!(seen["labels"]["zone"], "a");
}

#[test]
fn a_critical_node_is_not_ready_and_says_why() {
    let party = Party::new();
    let config = party.path().join("n1.toml");
    std::fs::write(
        &config,
        r#"
[[check]]
name = "scratch"
command = ["sh", "-c", "echo scratch disk gone; exit 2"]
interval_ms = 200
timeout_ms = 1000
"#,
    )
    .unwrap();
    let mut spec = party.spec("n1");
    spec.config = Some(config);
    let sick = spec.start(&[]);
    let answer = wait_for(Duration::from_secs(15), POLL, || {
        http_get_any(sick.spec.api, "/readyz").filter(|(status, _)| *status == 503)
    });
    let (_, body) = answer.expect("a critical node stayed ready");
    let body: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(body["ready"], false, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("scratch") && reason.contains("scratch disk gone"),
        "{body}"
    );
    let node: serde_json::Value = serde_json::from_str(&sick.get("/v1/node").unwrap()).unwrap();
    assert_eq!(node["ready"], false, "{node}");
}

#[test]
fn config_file_env_and_flags_apply_in_that_order() {
    let party = Party::new();
    let config = party.path().join("agent.toml");
    // A given name must be the certificate's, so each start holds the
    // certificate of the name that should win: a wrong order is refused.
    let start = |env_name: Option<&str>, flag_name: Option<&str>, winner: &str| {
        // Fresh ports each time: a port freed by the previous agent may be
        // taken by another test running beside this one.
        let spec = party.spec(winner);
        let (listen, api) = (spec.listen, spec.api);
        std::fs::write(
            &config,
            format!("name = \"from-file\"\nslots = 7\nlisten = \"{listen}\"\napi = \"{api}\"\n"),
        )
        .unwrap();
        let mut cmd = Command::new(shoal());
        cmd.args(["agent", "--config"])
            .arg(&config)
            .arg("--data")
            .arg(&spec.data)
            .arg("--tls-dir")
            .arg(&spec.tls)
            .env("SHOAL_SLOTS", "5")
            .stderr(Stdio::null());
        if let Some(name) = env_name {
            cmd.env("SHOAL_NAME", name);
        }
        if let Some(name) = flag_name {
            cmd.args(["--name", name]);
        }
        let mut child = cmd.spawn().unwrap();
        let node = wait_for(Duration::from_secs(10), POLL, || {
            let body = http_get(api, "/v1/node", None)?;
            let node: serde_json::Value = serde_json::from_str(&body).ok()?;
            (node["member"]["addr"] == listen.to_string().as_str()).then_some(node)
        });
        let _ = child.kill();
        let _ = child.wait();
        let node = node.unwrap_or_else(|| panic!("agent for {winner} did not serve /v1/node"));
        (
            node["member"]["name"].as_str().unwrap().to_string(),
            node["member"]["slots_total"].as_u64().unwrap(),
        )
    };
    assert_eq!(start(None, None, "from-file"), ("from-file".to_string(), 5));
    assert_eq!(
        start(Some("from-env"), None, "from-env"),
        ("from-env".to_string(), 5)
    );
    assert_eq!(
        start(Some("from-env"), Some("from-flag"), "from-flag"),
        ("from-flag".to_string(), 5)
    );
}

#[test]
fn without_tls_flags_an_agent_makes_a_dev_ca_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], agents::free_tcp_port()));
    let mut child = Command::new(shoal())
        .args(["agent", "--name", "solo", "--api", &api.to_string()])
        .args([
            "--listen",
            &format!("127.0.0.1:{}", agents::free_udp_port()),
        ])
        .arg("--data")
        .arg(&data)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_for(Duration::from_secs(10), POLL, || {
        http_get(api, "/readyz", None)
    });
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready\n"),
        "a single node is ready at once"
    );
    assert!(data.join("dev-ca/ca.pem").exists() && data.join("tls/node.pem").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("development CA"), "{stderr}");
}

#[test]
fn without_a_token_only_loopback_host_names_are_served() {
    let party = Party::new();
    let agent = party.spec("n1").start(&[]);
    let api = agent.spec.api;
    let port = api.port();
    let submit = |host: &str| {
        let body = r#"{"name":"rebound","driver":"mock","duration":"1ms"}"#;
        http_raw(
            api,
            &format!(
                "POST /v1/tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .expect("an answer")
    };
    let (status, body) = submit(&format!("attacker.example:{port}"));
    assert_eq!(status, 403, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let why = error["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("attacker.example") && why.contains("--api-token"),
        "{body}"
    );
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        let (status, body) = submit(&host);
        assert!((200..300).contains(&status), "Host {host}: {status} {body}");
    }
}
