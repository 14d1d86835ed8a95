//! A local mesh of real `shoal agent` processes on loopback: a temporary
//! party CA, one data directory per node, free ports, and the faults the
//! demo and the chaos runs inject (kill -9, stop/continue, restart with or
//! without the data directory). Children are killed when the cluster is
//! dropped, and with `setpriv --pdeathsig` also when this process dies.

use super::{aborted, http, DemoError};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The party name of every demo and chaos mesh.
pub const PARTY: &str = "demo";
/// How long one agent may take to answer `/healthz` after it was spawned.
const AGENT_START_TIMEOUT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `shoal` binary to run agents from.
    pub binary: PathBuf,
    /// Number of agents.
    pub nodes: usize,
    /// Task slots per agent.
    pub slots: u32,
    /// Keep the directory (CA, data, logs) after the run.
    pub keep: bool,
}

/// Where a node is and how to start it again identically.
#[derive(Debug)]
pub struct Node {
    /// `n1`, `n2`, ...
    pub name: String,
    /// QUIC address.
    pub listen: SocketAddr,
    /// HTTP API address.
    pub api: SocketAddr,
    /// Data directory.
    pub data: PathBuf,
    tls: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    stopped: bool,
}

impl Node {
    /// `http://ip:port` of its API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Whether its process is running (stopped counts as running).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether it is running and not stopped.
    pub fn is_serving(&self) -> bool {
        self.child.is_some() && !self.stopped
    }

    /// Its process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its `/v1/members` as JSON objects; `None` if it does not answer.
    pub fn members(&self) -> Option<Vec<Value>> {
        let body = http::get(self.api, "/v1/members")?;
        serde_json::from_str(&body).ok()
    }

    /// The state its view gives `name` (`alive`, `suspect`, `down`, `left`).
    pub fn state_of(&self, name: &str) -> Option<String> {
        self.members()?
            .into_iter()
            .find(|m| m["name"] == name)
            .and_then(|m| m["state"].as_str().map(str::to_string))
    }

    /// The last lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

/// The running mesh.
pub struct Cluster {
    options: ClusterOptions,
    root: PathBuf,
    _tempdir: Option<tempfile::TempDir>,
    /// The nodes, index `i` named `n{i+1}`.
    pub nodes: Vec<Node>,
}

fn free_udp_port() -> Result<u16, DemoError> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn free_tcp_port() -> Result<u16, DemoError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn setpriv_available() -> bool {
    Command::new("setpriv")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Cluster {
    /// Makes the CA and certificates and starts every agent; returns once
    /// each answers `/healthz` (not yet once they see each other: see
    /// [`Cluster::wait_all_alive`]).
    pub fn start(options: ClusterOptions) -> Result<Cluster, DemoError> {
        if options.nodes == 0 {
            return Err(DemoError::BadOption("--nodes must be at least 1".into()));
        }
        let tempdir = tempfile::Builder::new().prefix("shoal-demo-").tempdir()?;
        let root = tempdir.path().to_path_buf();
        let ca = root.join("ca");
        crate::tls::init_ca(PARTY, &ca).map_err(|e| DemoError::Setup(e.to_string()))?;
        let mut nodes = Vec::with_capacity(options.nodes);
        for i in 0..options.nodes {
            let name = format!("n{}", i + 1);
            let tls = root.join(format!("tls-{name}"));
            crate::tls::issue_node_cert(&ca, &name, &tls, None)
                .map_err(|e| DemoError::Setup(e.to_string()))?;
            nodes.push(Node {
                listen: SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
                api: SocketAddr::from(([127, 0, 0, 1], free_tcp_port()?)),
                data: root.join(format!("data-{name}")),
                log: root.join(format!("{name}.log")),
                name,
                tls,
                child: None,
                stopped: false,
            });
        }
        let keep = options.keep;
        if keep {
            eprintln!("          run directory (kept): {}", root.display());
        }
        let mut cluster = Cluster {
            options,
            root,
            _tempdir: if keep {
                let _ = tempdir.keep();
                None
            } else {
                Some(tempdir)
            },
            nodes,
        };
        cluster.spawn(0, true)?;
        cluster.wait_healthy(0)?;
        for i in 1..cluster.nodes.len() {
            cluster.spawn(i, true)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_healthy(i)?;
        }
        Ok(cluster)
    }

    /// The run's directory (CA, data directories, agent logs).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The binary agents run from.
    pub fn binary(&self) -> &Path {
        &self.options.binary
    }

    /// Starts node `i`. The very first start of `n1` joins nobody: it
    /// founds the party (its shard configurations); every other start,
    /// including n1's restarts, joins through all the other nodes.
    fn spawn(&mut self, i: usize, founding: bool) -> Result<(), DemoError> {
        let founder = founding && i == 0;
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i && !founder)
            .map(|(_, n)| n.listen.to_string())
            .collect();
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let mut cmd = if setpriv_available() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"])
                .arg(&self.options.binary);
            c
        } else {
            Command::new(&self.options.binary)
        };
        cmd.args(["agent", "--name", &node.name])
            .args(["--membership-preset", "local"])
            .arg("--data")
            .arg(&node.data)
            .args(["--listen", &node.listen.to_string()])
            .args(["--api", &node.api.to_string()])
            .arg("--tls-dir")
            .arg(&node.tls)
            .args(["--slots", &self.options.slots.to_string()])
            .env_remove("SHOAL_CONFIG")
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_DEMO_AGENT_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if !seeds.is_empty() {
            cmd.args(["--join", &seeds.join(",")]);
        }
        let child = cmd.spawn().map_err(|e| {
            DemoError::Setup(format!(
                "cannot start {}: {e}",
                self.options.binary.display()
            ))
        })?;
        self.nodes[i].child = Some(child);
        self.nodes[i].stopped = false;
        Ok(())
    }

    fn wait_healthy(&mut self, i: usize) -> Result<(), DemoError> {
        let deadline = Instant::now() + AGENT_START_TIMEOUT;
        loop {
            if aborted() {
                return Err(DemoError::Interrupted);
            }
            let node = &mut self.nodes[i];
            if http::get(node.api, "/healthz").is_some_and(|b| b.starts_with("ok")) {
                return Ok(());
            }
            if let Some(child) = node.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    node.child = None;
                    return Err(DemoError::AgentFailed {
                        node: node.name.clone(),
                        why: format!("exited with {status}"),
                        log: node.log_tail(20),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(DemoError::AgentFailed {
                    node: node.name.clone(),
                    why: format!("no /healthz answer within {AGENT_START_TIMEOUT:?}"),
                    log: node.log_tail(20),
                });
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every serving node lists every other serving node alive.
    pub fn wait_all_alive(&self, timeout: Duration) -> Result<Duration, DemoError> {
        let started = Instant::now();
        loop {
            if aborted() {
                return Err(DemoError::Interrupted);
            }
            if self.all_alive() {
                return Ok(started.elapsed());
            }
            if started.elapsed() >= timeout {
                return Err(DemoError::Guarantee(format!(
                    "the mesh did not converge within {timeout:?}"
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every serving node reports shard groups of at least
    /// `min_group` acceptors (`shoal_shard_group_min_size`): before that a
    /// founder still holds shards alone, and losing it would stall them.
    pub fn wait_replicated(&self, min_group: u64, timeout: Duration) -> Result<(), DemoError> {
        if self.wait_until(timeout, || self.replicated(min_group))? {
            return Ok(());
        }
        Err(DemoError::Guarantee(format!(
            "shard groups did not reach {min_group} acceptors within {timeout:?}"
        )))
    }

    /// Waits until every serving node sees full shard groups made only of
    /// members it sees alive (`shoal_shard_groups_degraded` 0). Returns
    /// whether that happened within `timeout`.
    pub fn wait_repaired(&self, min_group: u64, timeout: Duration) -> Result<bool, DemoError> {
        self.wait_until(timeout, || {
            self.replicated(min_group)
                && self.serving_gauges("shoal_shard_groups_degraded", |v| v == 0.0)
        })
    }

    fn replicated(&self, min_group: u64) -> bool {
        self.serving_gauges("shoal_shard_group_min_size", |v| v >= min_group as f64)
    }

    /// Whether `gauge` on every serving node's `/metrics` satisfies `ok`.
    fn serving_gauges(&self, gauge: &str, ok: impl Fn(f64) -> bool) -> bool {
        let prefix = format!("{gauge} ");
        self.nodes.iter().filter(|n| n.is_serving()).all(|node| {
            http::get(node.api, "/metrics")
                .and_then(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(prefix.as_str()))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
                .is_some_and(&ok)
        })
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn() -> bool) -> Result<bool, DemoError> {
        let started = Instant::now();
        loop {
            if aborted() {
                return Err(DemoError::Interrupted);
            }
            if done() {
                return Ok(true);
            }
            if started.elapsed() >= timeout {
                return Ok(false);
            }
            std::thread::sleep(POLL * 4);
        }
    }

    /// Whether every serving node sees all serving nodes alive.
    pub fn all_alive(&self) -> bool {
        let serving: Vec<&Node> = self.nodes.iter().filter(|n| n.is_serving()).collect();
        serving.iter().all(|observer| {
            observer.members().is_some_and(|members| {
                serving.iter().all(|n| {
                    members
                        .iter()
                        .any(|m| m["name"] == n.name.as_str() && m["state"] == "alive")
                })
            })
        })
    }

    /// `kill -9` node `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        node.stopped = false;
    }

    /// `kill -STOP` node `i`.
    pub fn stop(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
            self.nodes[i].stopped = true;
        }
    }

    /// `kill -CONT` node `i`.
    pub fn cont(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
        self.nodes[i].stopped = false;
    }

    /// Starts node `i` again on the same ports and certificate, optionally
    /// with an empty data directory; waits for its `/healthz`.
    pub fn restart(&mut self, i: usize, wipe_data: bool) -> Result<(), DemoError> {
        self.kill9(i);
        if wipe_data {
            let _ = std::fs::remove_dir_all(&self.nodes[i].data);
            // A node that lost its disk returns under a new identity (the
            // agent refuses its old certificate with a new store).
            self.reissue_certificate(i)?;
        }
        self.spawn(i, false)?;
        self.wait_healthy(i)
    }

    /// Gives node `i` a new certificate (a new key, hence a new NodeId).
    fn reissue_certificate(&mut self, i: usize) -> Result<(), DemoError> {
        let node = &mut self.nodes[i];
        let generation = (1..=10_000)
            .find(|g| !self.root.join(format!("tls-{}-{g}", node.name)).exists())
            .unwrap_or(1);
        let tls = self.root.join(format!("tls-{}-{generation}", node.name));
        crate::tls::issue_node_cert(&self.root.join("ca"), &node.name, &tls, None)
            .map_err(|e| DemoError::Setup(e.to_string()))?;
        node.tls = tls;
        Ok(())
    }

    /// Index of the first serving node other than `except`.
    pub fn serving_other_than(&self, except: &[usize]) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| !except.contains(i) && self.nodes[*i].is_serving())
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            // A stopped process must be continued before it can die cleanly.
            self.cont(i);
            self.kill9(i);
        }
    }
}
