//! Harness for end-to-end tests on real `shoal` processes: a party CA,
//! agents on free loopback ports (or inside network namespaces), and
//! readers for their member lists and metrics. Every wait is bounded.

use crate::shoal;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PARTY: &str = "acme";

/// Starts of a fresh agent before a port collision is no longer retried.
const PORT_TRIES: usize = 3;

/// A free UDP port on loopback (the kernel's pick; released before use).
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free TCP port on loopback.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// A test's working directory and party CA.
pub struct Party {
    pub dir: tempfile::TempDir,
    pub name: String,
}

impl Default for Party {
    fn default() -> Self {
        Party::new()
    }
}

impl Party {
    pub fn new() -> Party {
        Party::named(PARTY)
    }

    /// A party with its own CA under another name than [`PARTY`].
    pub fn named(name: &str) -> Party {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new(shoal())
            .args(["ca", "init", "--party", name, "--dir"])
            .arg(dir.path().join("ca"))
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "shoal ca init failed");
        Party {
            dir,
            name: name.to_string(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// `shoal ca issue` for `node` into `<dir>/tls-<node>`.
    pub fn issue(&self, node: &str) -> PathBuf {
        let out = self.dir.path().join(format!("tls-{node}"));
        if out.join("node.pem").exists() {
            return out;
        }
        let status = Command::new(shoal())
            .args(["ca", "issue", "--dir"])
            .arg(self.ca_dir())
            .args(["--node", node, "--out"])
            .arg(&out)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "shoal ca issue failed");
        out
    }

    /// A fresh agent spec on free loopback ports.
    pub fn spec(&self, name: &str) -> AgentSpec {
        AgentSpec {
            name: name.to_string(),
            listen: SocketAddr::from(([127, 0, 0, 1], free_udp_port())),
            api: SocketAddr::from(([127, 0, 0, 1], free_tcp_port())),
            data: self.dir.path().join(format!("data-{name}")),
            tls: self.issue(name),
            log: self.dir.path().join(format!("{name}.log")),
            netns: None,
            api_token: None,
            config: None,
            extra_args: Vec::new(),
            bin: None,
        }
    }

    /// Starts `n` agents named `n1..`, all joining through the first.
    pub fn mesh(&self, n: usize) -> Vec<Agent> {
        let first = self.spec("n1").start_fresh(&[]);
        let seed = [first.spec.listen];
        let mut agents = vec![first];
        agents.extend((2..=n).map(|i| self.spec(&format!("n{i}")).start_fresh(&seed)));
        agents
    }
}

/// How to start one agent; kept so a killed agent restarts identically.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: String,
    pub listen: SocketAddr,
    pub api: SocketAddr,
    pub data: PathBuf,
    pub tls: PathBuf,
    pub log: PathBuf,
    pub netns: Option<String>,
    pub api_token: Option<String>,
    pub config: Option<PathBuf>,
    /// More `shoal agent` flags, passed as they are.
    pub extra_args: Vec<String>,
    /// The `shoal` binary to run instead of [`shoal()`] (an upgrade test's
    /// "new" build).
    pub bin: Option<PathBuf>,
}

impl AgentSpec {
    /// Starts an agent nobody knows the addresses of yet. Its ports were
    /// free when picked but released since, so a test running in parallel
    /// can take one first: then it starts again on new ports (a restart of
    /// a known agent cannot, and uses [`AgentSpec::start`]).
    pub fn start_fresh(mut self, join: &[SocketAddr]) -> Agent {
        for _ in 1..PORT_TRIES {
            match self.try_start(join) {
                Ok(agent) => return agent,
                Err(log) if log.contains("Address already in use") => {
                    self.listen.set_port(free_udp_port());
                    self.api.set_port(free_tcp_port());
                }
                Err(log) => panic!("agent {} did not come up; log:\n{log}", self.name),
            }
        }
        self.start(join)
    }

    pub fn start(&self, join: &[SocketAddr]) -> Agent {
        self.try_start(join)
            .unwrap_or_else(|log| panic!("agent {} did not come up; log:\n{log}", self.name))
    }

    /// The `shoal agent` command line of this spec, under `name` (`None`:
    /// no `--name`, so the certificate's name is used), joining `join`.
    /// Output and logging are the caller's.
    pub fn command(&self, name: Option<&str>, join: &[SocketAddr]) -> Command {
        let bin = self.bin.as_deref().unwrap_or(shoal());
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.arg("agent");
        if let Some(name) = name {
            cmd.args(["--name", name]);
        }
        cmd.args(["--membership-preset", "local"])
            .arg("--data")
            .arg(&self.data)
            .args([
                "--listen",
                &self.listen.to_string(),
                "--api",
                &self.api.to_string(),
            ])
            .arg("--tls-dir")
            .arg(&self.tls);
        if let Some(config) = &self.config {
            cmd.arg("--config").arg(config);
        }
        if let Some(token) = &self.api_token {
            cmd.args(["--api-token", token]);
        }
        cmd.args(&self.extra_args);
        if !join.is_empty() {
            let seeds: Vec<String> = join.iter().map(|s| s.to_string()).collect();
            cmd.args(["--join", &seeds.join(",")]);
        }
        cmd
    }

    /// Starts the agent and waits until it answers as itself; on failure
    /// the agent is stopped and its log's tail returned.
    fn try_start(&self, join: &[SocketAddr]) -> Result<Agent, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = self.command(Some(&self.name), join);
        cmd.args(["--log-format", "json"])
            .env("RUST_LOG", "info,shoal_node=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd.spawn().expect("spawn shoal agent");
        let agent = Agent {
            spec: self.clone(),
            child: Some(child),
        };
        let up = wait_for(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || match self.netns {
                Some(_) => agent.members().map(|_| ()),
                // Up, and really this agent: a port freed by an earlier
                // agent may have been taken by another test's agent.
                None => {
                    let node: Value = serde_json::from_str(&agent.get("/v1/node")?).ok()?;
                    (node["member"]["name"] == self.name.as_str()
                        && node["member"]["addr"] == self.listen.to_string().as_str())
                    .then_some(())
                }
            },
        );
        match up {
            Some(()) => Ok(agent),
            None => Err(agent.log_tail()),
        }
    }
}

/// A running agent, killed with SIGKILL when dropped.
pub struct Agent {
    pub spec: AgentSpec,
    pub child: Option<Child>,
}

impl Agent {
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("agent not running").id()
    }

    /// `kill -9` and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends a signal by name (STOP, CONT, TERM).
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit on its own, bounded.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = wait_for(timeout, Duration::from_millis(20), || {
            child.try_wait().ok().flatten()
        });
        if status.is_some() {
            self.child = None;
        }
        status
    }

    /// An HTTP GET on the agent's API; `None` on any failure.
    pub fn get(&self, path: &str) -> Option<String> {
        http_get(self.spec.api, path, self.spec.api_token.as_deref())
    }

    /// `GET /v1/members` as JSON values (inside a namespace, through
    /// `shoal members --json` run there, since its API is on its loopback).
    pub fn members(&self) -> Option<Vec<Value>> {
        let body = match &self.spec.netns {
            Some(ns) => {
                let out = Command::new("ip")
                    .args(["netns", "exec", ns])
                    .arg(shoal())
                    .args(["members", "--json", "--api"])
                    .arg(format!("http://{}", self.spec.api))
                    .stderr(Stdio::null())
                    .output()
                    .ok()?;
                if !out.status.success() {
                    return None;
                }
                String::from_utf8(out.stdout).ok()?
            }
            None => self.get("/v1/members")?,
        };
        serde_json::from_str(&body).ok()
    }

    /// The state this agent's view gives `name`, if listed.
    pub fn state_of(&self, name: &str) -> Option<(String, u64)> {
        self.members()?
            .into_iter()
            .find(|m| m["name"] == name)
            .map(|m| {
                (
                    m["state"].as_str().unwrap_or("").to_string(),
                    m["incarnation"].as_u64().unwrap_or(0),
                )
            })
    }

    /// Names listed in a given state.
    pub fn names_in_state(&self, state: &str) -> Option<Vec<String>> {
        let mut names: Vec<String> = self
            .members()?
            .into_iter()
            .filter(|m| m["state"] == state)
            .filter_map(|m| m["name"].as_str().map(str::to_string))
            .collect();
        names.sort();
        Some(names)
    }

    /// A metric's value from `/metrics` (summing label sets).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let text = self.get("/metrics")?;
        let values: Vec<f64> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        (!values.is_empty()).then(|| values.iter().sum())
    }

    /// Whether this agent ever logged `member` entering `state`.
    pub fn logged_change(&self, member: &str, state: &str) -> bool {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let (m, s) = (
            format!("\"member\":\"{member}\""),
            format!("\"state\":\"{state}\""),
        );
        text.lines()
            .any(|l| l.contains("membership change") && l.contains(&m) && l.contains(&s))
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.spec.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process must be continued before it can die cleanly.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}

/// A minimal HTTP/1.1 GET (axum answers with Content-Length bodies).
pub fn http_get(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<String> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    let (status, body) = http_exchange(addr, &request, Duration::from_secs(3))?;
    (status == 200).then_some(body)
}

/// Sends `request` (a whole HTTP/1.1 request, `Connection: close`) and
/// returns the status code and body of the answer; `None` if the agent
/// could not be reached or the answer is not HTTP.
pub fn http_raw(addr: SocketAddr, request: &str) -> Option<(u16, String)> {
    http_exchange(addr, request, Duration::from_secs(3))
}

/// One request/answer on a fresh connection, read to its close: the
/// status code and body, or `None` on a socket error or a non-HTTP answer.
pub fn http_exchange(
    addr: SocketAddr,
    request: &str,
    read_timeout: Duration,
) -> Option<(u16, String)> {
    http_exchange_with_head(addr, request, read_timeout).map(|(status, _, body)| (status, body))
}

/// As [`http_exchange`], with the answer's head (status line and headers).
pub fn http_exchange_with_head(
    addr: SocketAddr,
    request: &str,
    read_timeout: Duration,
) -> Option<(u16, String, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(read_timeout)).ok()?;
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
    Some((status, head.to_string(), body.to_string()))
}

/// A GET with the right `Host`, answered with any status.
pub fn http_get_any(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_raw(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
}

/// Every agent lists exactly `expected` alive (names sorted).
pub fn all_agree_alive(agents: &[&Agent], expected: &[&str]) -> bool {
    agents.iter().all(|a| {
        a.names_in_state("alive").is_some_and(|names| {
            names
                .iter()
                .map(String::as_str)
                .eq(expected.iter().copied())
        })
    })
}

pub fn logs(agents: &[Agent]) -> String {
    agents
        .iter()
        .map(|a| format!("--- {} ---\n{}", a.name(), a.log_tail()))
        .collect::<Vec<_>>()
        .join("\n")
}
