//! Submitting and reading tasks through the `shoal` CLI contract
//! (`submit` prints only the id, `status ID --json` prints an object with
//! `id`, `state`, `attempt`, `node`, `exit_code`), so the demo and the
//! chaos runs exercise exactly what users and outside checks run.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one CLI call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A task as `shoal status --json` shows it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct TaskStatus {
    /// Task id.
    pub id: String,
    /// pending, claimed, running, succeeded, failed or cancelled.
    pub state: String,
    /// Current or last attempt number.
    #[serde(default)]
    pub attempt: u64,
    /// Current or last holder.
    #[serde(default)]
    pub node: Option<String>,
    /// Exit code of the last attempt that finished.
    #[serde(default)]
    pub exit_code: Option<i64>,
}

impl TaskStatus {
    /// Whether the task can change no more.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// Runs `shoal submit/status/wait` against agents.
#[derive(Debug, Clone)]
pub struct TaskClient {
    binary: PathBuf,
}

fn run(mut cmd: Command, timeout: Duration) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return child.wait_with_output().map_err(|e| e.to_string()),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {timeout:?}"));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn failure(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().unwrap_or("").trim();
    format!("exit {}: {line}", out.status)
}

impl TaskClient {
    /// A client running `binary`.
    pub fn new(binary: &Path) -> TaskClient {
        TaskClient {
            binary: binary.to_path_buf(),
        }
    }

    /// Whether this build has the task commands at all.
    pub fn available(&self) -> bool {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["submit", "--help"]);
        run(cmd, CALL_TIMEOUT).is_ok_and(|o| o.status.success())
    }

    /// `shoal submit --api URL --retries N -- sh -c SCRIPT`; the task id.
    pub fn submit(&self, api_url: &str, script: &str, retries: u32) -> Result<String, String> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["submit", "--api", api_url, "--retries"])
            .arg(retries.to_string())
            .args(["--", "sh", "-c", script]);
        let out = run(cmd, CALL_TIMEOUT)?;
        if !out.status.success() {
            return Err(failure(&out));
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(format!("submit printed {id:?}, not one task id"));
        }
        Ok(id)
    }

    /// `shoal status --api URL ID --json`.
    pub fn status(&self, api_url: &str, id: &str) -> Result<TaskStatus, String> {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["status", "--api", api_url, id, "--json"]);
        let out = run(cmd, CALL_TIMEOUT)?;
        if !out.status.success() {
            return Err(failure(&out));
        }
        serde_json::from_slice(&out.stdout).map_err(|e| format!("status --json: {e}"))
    }
}
