//! Submitting and reading tasks through the HTTP API (`POST /v1/tasks`,
//! `GET /v1/tasks/{id}`), with the API's own JSON types.

use super::http;
use crate::tasks::view::{SubmitBody, TaskView};
use std::net::SocketAddr;
use std::time::Duration;

/// A submit waits for a majority of the task's shard group to persist it.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(5);
const STATUS_TIMEOUT: Duration = Duration::from_secs(3);

/// Whether a task can change no more.
pub fn is_final(view: &TaskView) -> bool {
    matches!(view.state.as_str(), "succeeded" | "failed" | "cancelled")
}

/// Submits `sh -c script`; the task id once the node acknowledged it.
pub fn submit(api: SocketAddr, script: &str, retries: u32) -> Result<String, String> {
    let body = SubmitBody {
        command: Some("sh".into()),
        args: vec!["-c".into(), script.into()],
        retries: Some(retries),
        ..SubmitBody::default()
    };
    let json = serde_json::to_string(&body).map_err(|e| e.to_string())?;
    let (status, answer) = http::request(api, "POST", "/v1/tasks", Some(&json), SUBMIT_TIMEOUT)?;
    if !(200..300).contains(&status) {
        return Err(format!("HTTP {status}: {}", answer.trim()));
    }
    let value: serde_json::Value =
        serde_json::from_str(&answer).map_err(|e| format!("submit answer: {e}"))?;
    value["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("submit answer has no id: {answer}"))
}

/// The task as `GET /v1/tasks/{id}` shows it.
pub fn status(api: SocketAddr, id: &str) -> Result<TaskView, String> {
    let (status, answer) =
        http::request(api, "GET", &format!("/v1/tasks/{id}"), None, STATUS_TIMEOUT)?;
    if status != 200 {
        return Err(format!("HTTP {status}: {}", answer.trim()));
    }
    serde_json::from_str(&answer).map_err(|e| format!("task answer: {e}"))
}
