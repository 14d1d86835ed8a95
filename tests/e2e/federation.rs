//! Federation links between two parties' gateways on loopback
//! (docs/federation.md): the link comes up on both sides, an untrusted party
//! and a forged voucher are refused and counted, and a killed gateway's link
//! goes down and comes back when it restarts.

use serde_json::Value;
use shoal_tests::agents::{free_udp_port, wait_for, Agent, Party};
use shoal_tests::shoal;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Bound on a link coming up or going down; the handshake takes
/// milliseconds, a dead peer is noticed within the QUIC idle timeout (3 s).
const LINK_DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// A party with one gateway agent, and its card written to a file.
struct Site {
    party: Party,
    gateway: String,
    card: PathBuf,
}

impl Site {
    fn new(name: &str) -> Site {
        let party = Party::named(name);
        let gateway = format!("127.0.0.1:{}", free_udp_port());
        let out = Command::new(shoal())
            .args([
                "fed",
                "card",
                "--party",
                name,
                "--gateway",
                &gateway,
                "--dir",
            ])
            .arg(party.ca_dir())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "shoal fed card failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let card = party.path().join(format!("{name}.card.toml"));
        std::fs::write(&card, &out.stdout).unwrap();
        Site {
            party,
            gateway,
            card,
        }
    }

    fn start(&self, trusting: &[&Site]) -> Agent {
        let mut spec = self.party.spec("gw1");
        spec.extra_args = vec!["--gateway".into(), self.gateway.clone()];
        for other in trusting {
            spec.extra_args.push("--fed-trust".into());
            spec.extra_args.push(other.card.display().to_string());
        }
        spec.start_fresh(&[])
    }
}

fn link_state(agent: &Agent, party: &str) -> Option<String> {
    let links: Vec<Value> = serde_json::from_str(&agent.get("/v1/fed/links")?).ok()?;
    links
        .iter()
        .find(|l| l["party"] == party)
        .and_then(|l| l["state"].as_str().map(str::to_string))
}

/// Waits until `agent`'s link to `party` is (or is not) up; the time taken.
fn wait_link(agent: &Agent, party: &str, up: bool) -> Duration {
    let started = Instant::now();
    let reached = wait_for(LINK_DEADLINE, POLL, || {
        let is_up = link_state(agent, party).as_deref() == Some("up");
        (is_up == up).then_some(())
    });
    assert!(
        reached.is_some(),
        "{}'s link to {party} not {} within {LINK_DEADLINE:?}; log:\n{}",
        agent.name(),
        if up { "up" } else { "down" },
        agent.log_tail()
    );
    started.elapsed()
}

/// `shoal_fed_refused_total{reason="REASON"}` on `agent`.
fn refused(agent: &Agent, reason: &str) -> f64 {
    let prefix = format!("shoal_fed_refused_total{{reason=\"{reason}\"}} ");
    agent
        .get("/metrics")
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0.0)
}

#[test]
fn fed_link_comes_up_refuses_strangers_and_heals_after_a_gateway_restart() {
    let alpha = Site::new("alpha");
    let beta = Site::new("beta");
    let a = alpha.start(&[&beta]);
    let started = Instant::now();
    let mut b = beta.start(&[&alpha]);
    wait_link(&a, "beta", true);
    wait_link(&b, "alpha", true);
    println!(
        "link up on both sides {:?} after beta's gateway started",
        started.elapsed()
    );
    assert_eq!(a.metric("shoal_fed_links_up"), Some(1.0));

    // gamma trusts alpha, but alpha does not trust gamma.
    let gamma = Site::new("gamma");
    let g = gamma.start(&[&alpha]);
    let counted = wait_for(LINK_DEADLINE, POLL, || {
        (refused(&a, "unknown_party") >= 1.0).then_some(())
    });
    assert!(
        counted.is_some(),
        "alpha never refused gamma; log:\n{}",
        a.log_tail()
    );
    assert_ne!(link_state(&g, "alpha").as_deref(), Some("up"));
    let log = std::fs::read_to_string(&a.spec.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("federation peer refused") && l.contains("unknown_party")),
        "no refusal log line at alpha"
    );

    // delta is trusted by alpha, but its gateway's voucher is forged.
    let delta = Site::new("delta");
    let alpha_trusting_delta = {
        let mut spec = a.spec.clone();
        spec.extra_args.push("--fed-trust".into());
        spec.extra_args.push(delta.card.display().to_string());
        spec
    };
    let tls = delta.party.issue("gw1");
    std::fs::write(tls.join("gateway.voucher"), [7u8; 64]).unwrap();
    drop(a);
    let alpha_restarted = Instant::now();
    let a = alpha_trusting_delta.start(&[]);
    let d = delta.start(&[&alpha]);
    let counted = wait_for(LINK_DEADLINE, POLL, || {
        (refused(&a, "bad_voucher") >= 1.0).then_some(())
    });
    assert!(
        counted.is_some(),
        "alpha never refused the forged voucher; log:\n{}",
        a.log_tail()
    );
    assert_ne!(link_state(&a, "delta").as_deref(), Some("up"));
    wait_link(&a, "beta", true);
    println!(
        "alpha restarted: link to beta up again {:?} after alpha's start",
        alpha_restarted.elapsed()
    );

    b.kill();
    let down = wait_link(&a, "beta", false);
    println!("beta's gateway killed: alpha saw the link down in {down:?}");
    assert_eq!(a.metric("shoal_fed_links_up"), Some(0.0));
    let restarted = Instant::now();
    let b = b.spec.start(&[]);
    wait_link(&a, "beta", true);
    wait_link(&b, "alpha", true);
    println!(
        "beta's gateway restarted: link up again in {:?}",
        restarted.elapsed()
    );
    drop((d, g));
}

/// `(holding, state, holders)` of `agent`'s link row for `party`.
fn holder_row(agent: &Agent, party: &str) -> Option<(bool, String, Vec<String>)> {
    let links: Vec<Value> = serde_json::from_str(&agent.get("/v1/fed/links")?).ok()?;
    let row = links.iter().find(|l| l["party"] == party)?;
    let holders = row["holders"]
        .as_array()?
        .iter()
        .filter_map(|h| h.as_str().map(str::to_string))
        .collect();
    Some((
        row["holding"].as_bool()?,
        row["state"].as_str()?.to_string(),
        holders,
    ))
}

/// The indices of `gateways` that hold their link to `party`, once every
/// one of them agrees on the same `k` holders and each holder's link is up.
fn settled_holders(gateways: &[&Agent], party: &str, k: usize) -> Option<Vec<usize>> {
    let rows: Vec<_> = gateways
        .iter()
        .map(|g| holder_row(g, party))
        .collect::<Option<_>>()?;
    let agreed = rows.iter().all(|r| r.2.len() == k && r.2 == rows[0].2);
    let holding: Vec<usize> = rows
        .iter()
        .enumerate()
        .filter(|(_, r)| r.0)
        .map(|(i, _)| i)
        .collect();
    let up = holding.iter().all(|&i| rows[i].1 == "up");
    (agreed && holding.len() == k && up).then_some(holding)
}

#[test]
fn fed_link_holders_two_of_three_gateways_hold_the_link_and_a_killed_one_is_replaced() {
    const K: usize = 2;
    let alpha = Party::named("alpha");
    let ports: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_udp_port()))
        .collect();
    let out = Command::new(shoal())
        .args([
            "fed",
            "card",
            "--party",
            "alpha",
            "--gateway",
            &ports.join(","),
            "--dir",
        ])
        .arg(alpha.ca_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alpha_card = alpha.path().join("alpha.card.toml");
    std::fs::write(&alpha_card, &out.stdout).unwrap();
    let beta = Site::new("beta");

    let gateway_spec = |i: usize| {
        let mut spec = alpha.spec(&format!("gw{}", i + 1));
        spec.extra_args = vec![
            "--gateway".into(),
            ports[i].clone(),
            "--fed-trust".into(),
            beta.card.display().to_string(),
            "--fed-link-holders".into(),
            K.to_string(),
        ];
        spec
    };
    let first = gateway_spec(0).start_fresh(&[]);
    let seed = [first.spec.listen];
    let mut gateways = vec![first];
    gateways.extend((1..3).map(|i| gateway_spec(i).start_fresh(&seed)));
    let beta_site = Site {
        party: Party::named("unused"),
        gateway: String::new(),
        card: alpha_card,
    };
    let b = beta.start(&[&beta_site]);

    let all: Vec<&Agent> = gateways.iter().collect();
    let holding = wait_for(LINK_DEADLINE, POLL, || settled_holders(&all, "beta", K));
    let Some(holding) = holding else {
        panic!(
            "alpha's gateways never settled on {K} holders with links up: {:?}\nlog:\n{}",
            all.iter()
                .map(|g| holder_row(g, "beta"))
                .collect::<Vec<_>>(),
            gateways[0].log_tail()
        );
    };
    assert_eq!(
        gateways[0].metric("shoal_fed_link_holders"),
        Some(K as f64),
        "shoal_fed_link_holders at gw1"
    );

    let victim = holding[0];
    gateways[victim].kill();
    let killed = Instant::now();
    let survivors: Vec<&Agent> = gateways
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, g)| g)
        .collect();
    let replaced = wait_for(LINK_DEADLINE, POLL, || {
        settled_holders(&survivors, "beta", K)
    });
    assert!(
        replaced.is_some(),
        "no gateway took over the link of killed {}: {:?}\nlog:\n{}",
        gateways[victim].name(),
        survivors
            .iter()
            .map(|g| holder_row(g, "beta"))
            .collect::<Vec<_>>(),
        survivors[0].log_tail()
    );
    println!(
        "holder {} killed: {K} holders with links up again after {:?}",
        gateways[victim].name(),
        killed.elapsed()
    );
    assert_eq!(link_state(&b, "alpha").as_deref(), Some("up"));
}

/// Runs `shoal ARGS --api URL-of-agent`; its stdout, or its stderr as the error.
fn shoal_at(agent: &Agent, args: &[&str]) -> Result<String, String> {
    let out = Command::new(shoal())
        .args(args)
        .args(["--api", &format!("http://{}", agent.spec.api)])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `shoal fed trust CARD` at `agent`, retried while the party's shard
/// groups form after start.
fn trust(agent: &Agent, card: &std::path::Path) {
    let card = card.display().to_string();
    let trusted = wait_for(LINK_DEADLINE, POLL, || {
        shoal_at(agent, &["fed", "trust", &card]).ok()
    });
    assert!(
        trusted.is_some(),
        "shoal fed trust never succeeded at {}: {:?}",
        agent.name(),
        shoal_at(agent, &["fed", "trust", &card])
    );
}

const EXPORT_DB_TO_BETA: &[&str] = &[
    "fed",
    "export",
    "--service",
    "db",
    "--port",
    "5432",
    "--to",
    "beta",
];

#[test]
fn fed_trust_records_link_two_parties_and_untrust_drops_the_link() {
    let alpha = Site::new("alpha");
    let beta = Site::new("beta");
    // No --fed-trust: the parties trust each other through their records.
    let a = alpha.start(&[]);
    let b = beta.start(&[]);
    // An export to a party not trusted is refused, naming the party.
    let error =
        shoal_at(&a, EXPORT_DB_TO_BETA).expect_err("an export to an untrusted party was taken");
    assert!(error.contains("not trusted"), "{error}");

    trust(&a, &beta.card);
    trust(&b, &alpha.card);
    let up = wait_link(&a, "beta", true);
    wait_link(&b, "alpha", true);
    println!("trusted through the records: link up {up:?} after the second trust");
    let trusted: Vec<Value> =
        serde_json::from_str(&shoal_at(&a, &["fed", "trusted", "--json"]).unwrap()).unwrap();
    assert_eq!(trusted.len(), 1);
    assert_eq!(trusted[0]["party"], "beta");
    let links: Vec<Value> =
        serde_json::from_str(&shoal_at(&a, &["fed", "links", "--json"]).unwrap()).unwrap();
    for key in [
        "party", "slot", "holder", "remote", "state", "since_ms", "rtt_ms",
    ] {
        assert!(links[0].get(key).is_some(), "no {key} in {}", links[0]);
    }
    assert_eq!(links[0]["slot"], 0);

    shoal_at(&a, EXPORT_DB_TO_BETA).expect("export");
    let exports: Vec<Value> =
        serde_json::from_str(&shoal_at(&a, &["fed", "exports", "--json"]).unwrap()).unwrap();
    assert_eq!(exports.len(), 1, "{exports:?}");
    assert_eq!(exports[0]["service"], "db");
    assert_eq!(exports[0]["to"], "beta");
    assert_eq!(exports[0]["port"], 5432);

    shoal_at(&a, &["fed", "untrust", "beta"]).expect("untrust");
    let gone = wait_for(LINK_DEADLINE, POLL, || {
        link_state(&a, "beta").is_none().then_some(())
    });
    assert!(
        gone.is_some(),
        "alpha still lists beta; log:\n{}",
        a.log_tail()
    );
    // beta still trusts alpha and keeps dialling, but alpha refuses it now.
    wait_link(&b, "alpha", false);
    let counted = wait_for(LINK_DEADLINE, POLL, || {
        (refused(&a, "unknown_party") >= 1.0).then_some(())
    });
    assert!(counted.is_some(), "alpha never refused beta after untrust");
}

/// A party of three agents on loopback: `gw1` holds the links, `n2` and
/// `n3` are plain members. Each trusts `peer_card` through its records.
fn three_node_site(site: &Site) -> Vec<Agent> {
    let mut gateway = site.party.spec("gw1");
    gateway.extra_args = vec!["--gateway".into(), site.gateway.clone()];
    let first = gateway.start_fresh(&[]);
    let seed = [first.spec.listen];
    let mut agents = vec![first];
    agents.extend((2..=3).map(|i| site.party.spec(&format!("n{i}")).start_fresh(&seed)));
    agents
}

/// An echo service on a free loopback port, for a bounded number of
/// connections; its port.
fn echo_service(connections: usize) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(connections) {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = conn.try_clone().unwrap();
                let mut writer = conn;
                let _ = std::io::copy(&mut reader, &mut writer);
                let _ = writer.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// Sends `len` pseudo-random bytes through `addr` and reads the echo back;
/// whether every byte came back in order, and how long it took.
fn echo_through(addr: &str, len: usize) -> (bool, Duration) {
    use std::io::{Read, Write};
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let started = Instant::now();
    let conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut writer = conn.try_clone().unwrap();
    let sent = data.clone();
    let send = std::thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(len);
    let mut reader = conn;
    let _ = reader.read_to_end(&mut back);
    send.join().unwrap();
    (back == data, started.elapsed())
}

const ROUND_TRIPS: usize = 200;

/// The median 1-byte echo round trip through `addr` on one connection.
fn round_trip(addr: &str) -> Duration {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut times: Vec<Duration> = (0..ROUND_TRIPS)
        .map(|_| {
            let started = Instant::now();
            conn.write_all(b"x").unwrap();
            let mut byte = [0u8; 1];
            conn.read_exact(&mut byte).unwrap();
            started.elapsed()
        })
        .collect();
    times.sort();
    times[times.len() / 2]
}

#[test]
fn fed_tunnel_carries_a_connection_across_both_meshes_and_refuses_what_is_not_exported() {
    let alpha = Site::new("alpha");
    let beta = Site::new("beta");
    let a = three_node_site(&alpha);
    let b = three_node_site(&beta);
    trust(&a[1], &beta.card);
    trust(&b[2], &alpha.card);
    wait_link(&a[0], "beta", true);
    // The service runs on beta's n3, which is no gateway, and is exported
    // from there; alpha opens the tunnel at n2, which is no gateway either.
    let port = echo_service(16);
    shoal_at(
        &b[2],
        &[
            "fed",
            "export",
            "--service",
            "echo",
            "--port",
            &port.to_string(),
            "--to",
            "alpha",
        ],
    )
    .expect("export");
    let local = wait_for(LINK_DEADLINE, POLL, || {
        shoal_at(&a[1], &["tunnel", "beta/echo"]).ok()
    })
    .unwrap_or_else(|| panic!("no tunnel: {:?}", shoal_at(&a[1], &["tunnel", "beta/echo"])));
    let local = local.trim().to_string();
    assert!(
        local.starts_with("127.0.0.1:") && local["127.0.0.1:".len()..].parse::<u16>().is_ok(),
        "tunnel printed {local:?}, not only 127.0.0.1:PORT"
    );
    const LEN: usize = 32 << 20;
    let (intact, took) = echo_through(&local, LEN);
    assert!(
        intact,
        "the echo through the tunnel differs from what was sent"
    );
    let direct_addr = format!("127.0.0.1:{port}");
    let (direct_intact, direct) = echo_through(&direct_addr, LEN);
    assert!(direct_intact, "the direct echo differs from what was sent");
    println!(
        "{} MiB each way through n2 -> gw1 -> link -> gw1 -> n3 in {took:?}; direct {direct:?} \
         (tunnel throughput {:.0}% of direct)",
        LEN >> 20,
        100.0 * direct.as_secs_f64() / took.as_secs_f64()
    );
    let (tunnel_rtt, direct_rtt) = (round_trip(&local), round_trip(&direct_addr));
    println!(
        "1-byte round trip: tunnel {tunnel_rtt:?}, direct {direct_rtt:?} (median of {ROUND_TRIPS})"
    );

    // What is not exported to alpha is refused, with the reason.
    let error = shoal_at(&a[1], &["tunnel", "beta/secret"]).expect_err("a tunnel to nothing");
    assert!(error.contains("not exported"), "{error}");
    assert!(error.contains("403"), "{error}");

    shoal_at(&a[1], &["tunnel", "--close", &local]).expect("close");
    let refused = std::net::TcpStream::connect(&local);
    assert!(
        refused.is_err(),
        "the closed tunnel still accepts connections"
    );
}
