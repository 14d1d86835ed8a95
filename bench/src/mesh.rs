//! A 3-agent shoal mesh on loopback, started from the `shoal` binary, that the
//! driver can kill, restart, pause and resume, and a small client of the task
//! API (`POST /v1/tasks`, `GET /v1/tasks/{id}`).

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Deserialize;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How one mesh is laid out.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// The `shoal` binary.
    pub shoal_bin: PathBuf,
    /// Scratch directory (CA, certificates, data, logs).
    pub dir: PathBuf,
    /// QUIC ports are `base_port + i`, API ports `base_port + 100 + i`.
    pub base_port: u16,
    /// Agents (3 for the benchmark).
    pub agents: usize,
    /// Task slots per agent.
    pub slots: u32,
}

/// A running mesh; dropping it kills every agent.
#[derive(Debug)]
pub struct Mesh {
    config: MeshConfig,
    children: Vec<Option<Child>>,
}

/// `GET /v1/tasks/{id}` as far as the benchmark reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskView {
    /// Task id.
    pub id: String,
    /// pending, claimed, running, succeeded, failed or cancelled.
    pub state: String,
    /// Latest attempt.
    pub attempt: u64,
    /// Node running it or that last ran it.
    pub node: Option<String>,
}

impl TaskView {
    /// Succeeded, failed or cancelled.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

#[derive(Debug, Deserialize)]
struct MemberView {
    state: String,
}

#[derive(Debug, Deserialize)]
struct Submitted {
    id: String,
}

impl Mesh {
    /// Makes the CA and certificates and starts every agent; agent `i > 0`
    /// joins through agent 0.
    pub fn start(config: MeshConfig) -> anyhow::Result<Mesh> {
        std::fs::create_dir_all(&config.dir)?;
        let ca = config.dir.join("ca");
        run_quiet(
            Command::new(&config.shoal_bin)
                .args(["ca", "init", "--party", "bench", "--dir"])
                .arg(&ca),
        )?;
        for i in 0..config.agents {
            run_quiet(
                Command::new(&config.shoal_bin)
                    .args(["ca", "issue", "--dir"])
                    .arg(&ca)
                    .args(["--node", &Self::name(i), "--out"])
                    .arg(config.dir.join(format!("tls-{i}"))),
            )?;
        }
        let mut mesh = Mesh {
            children: (0..config.agents).map(|_| None).collect(),
            config,
        };
        for i in 0..mesh.config.agents {
            mesh.spawn(i, if i == 0 { None } else { Some(0) })?;
        }
        Ok(mesh)
    }

    /// Agent `i`'s node name.
    pub fn name(i: usize) -> String {
        format!("bench{i}")
    }

    /// Agent `i`'s API base URL.
    pub fn api(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.api_port(i))
    }

    fn api_port(&self, i: usize) -> u16 {
        self.config.base_port + 100 + u16::try_from(i).unwrap_or(0)
    }

    fn quic_port(&self, i: usize) -> u16 {
        self.config.base_port + u16::try_from(i).unwrap_or(0)
    }

    /// Number of agents.
    pub fn len(&self) -> usize {
        self.config.agents
    }

    /// Always false: a mesh has agents.
    pub fn is_empty(&self) -> bool {
        self.config.agents == 0
    }

    /// Index of the agent named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        (0..self.len()).find(|&i| Self::name(i) == name)
    }

    /// Agent `i`'s process id, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children.get(i)?.as_ref().map(Child::id)
    }

    fn spawn(&mut self, i: usize, join: Option<usize>) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.config.dir.join(format!("agent-{i}.log")))?;
        let mut cmd = Command::new(&self.config.shoal_bin);
        cmd.arg("agent")
            .args(["--name", &Self::name(i)])
            .arg("--data")
            .arg(self.config.dir.join(format!("data-{i}")))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.quic_port(i)))
            .arg("--api")
            .arg(format!("127.0.0.1:{}", self.api_port(i)))
            .arg("--tls-dir")
            .arg(self.config.dir.join(format!("tls-{i}")))
            .arg("--slots")
            .arg(self.config.slots.to_string())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_AGENT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(j) = join {
            cmd.arg("--join")
                .arg(format!("127.0.0.1:{}", self.quic_port(j)));
        }
        self.children[i] = Some(cmd.spawn().context("start shoal agent")?);
        Ok(())
    }

    /// kill -9 agent `i` and reap it.
    pub fn kill9(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.children[i].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Restarts a killed agent `i` on its data, joining through another agent.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        let via = (i + 1) % self.len();
        self.spawn(i, Some(via))
    }

    /// Sends `signal` to agent `i` (only the agent: its attempt supervisors
    /// keep running, as they would on a machine whose agent hung).
    pub fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid(i).context("agent not running")?;
        kill(Pid::from_raw(i32::try_from(pid)?), signal)?;
        Ok(())
    }

    /// Waits until every agent lists every agent alive and every shard group
    /// has its full size.
    pub async fn wait_formed(
        &self,
        http: &reqwest::Client,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for i in 0..self.len() {
                let alive = members_alive(http, &self.api(i)).await.unwrap_or(0);
                // Every shard group back at full size: a kill then costs a
                // lease, not a group that already lost a member.
                let group = metric(http, &self.api(i), "shoal_shard_group_min_size")
                    .await
                    .unwrap_or(0.0);
                all &= alive == self.len() && group >= self.len().min(3) as f64;
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "mesh did not form within {timeout:?} (logs in {})",
                    self.config.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until a mock task submitted to each agent succeeds: the shard
    /// groups are placed and the task path works end to end.
    pub async fn warm_up(&self, http: &reqwest::Client, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        for i in 0..self.len() {
            let id = loop {
                match submit_mock(http, &self.api(i), 0).await {
                    Ok(id) => break id,
                    Err(e) if Instant::now() >= deadline => {
                        bail!(
                            "agent {i} accepts no task: {e:#} (logs in {})",
                            self.config.dir.display()
                        )
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            loop {
                if let Ok(v) = get_task(http, &self.api(i), &id).await {
                    if v.state == "succeeded" {
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    bail!(
                        "warm-up task {id} did not succeed on agent {i} (logs in {})",
                        self.config.dir.display()
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

async fn members_alive(http: &reqwest::Client, api: &str) -> anyhow::Result<usize> {
    let members: Vec<MemberView> = http
        .get(format!("{api}/v1/members"))
        .timeout(Duration::from_secs(2))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(members.iter().filter(|m| m.state == "alive").count())
}

/// One unlabelled value of the agent's `/metrics`.
pub async fn metric(http: &reqwest::Client, api: &str, name: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{api}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.trim().parse().ok())
        .with_context(|| format!("{name} not in {api}/metrics"))
}

/// Submits a mock task that "runs" for `duration_ms`; returns its id.
pub async fn submit_mock(
    http: &reqwest::Client,
    api: &str,
    duration_ms: u64,
) -> anyhow::Result<String> {
    submit(
        http,
        api,
        &serde_json::json!({"driver": "mock", "duration": duration_ms}),
    )
    .await
}

/// Submits any task body; returns its id.
pub async fn submit(
    http: &reqwest::Client,
    api: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let resp = http
        .post(format!("{api}/v1/tasks"))
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "submit: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(resp.json::<Submitted>().await?.id)
}

/// Reads a task.
pub async fn get_task(http: &reqwest::Client, api: &str, id: &str) -> anyhow::Result<TaskView> {
    let resp = http
        .get(format!("{api}/v1/tasks/{id}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        bail!(
            "get {id}: {status}: {}",
            resp.text().await.unwrap_or_default()
        );
    }
    Ok(resp.json().await?)
}

/// Cancels a task (best effort: used to free slots between rounds).
pub async fn cancel(http: &reqwest::Client, api: &str, id: &str) {
    let _ = http
        .post(format!("{api}/v1/tasks/{id}/cancel"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
}
