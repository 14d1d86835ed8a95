//! The JSON shapes of the task API, shared by the API and the CLI.

use serde::{Deserialize, Serialize};
use shoal_protocol::resources::{self, ResourceError, Resources};
use shoal_protocol::tasks::checkpoint::CheckpointMeta;
use shoal_protocol::tasks::container::{ContainerError, ContainerSpec, Mount, Network};
use shoal_protocol::tasks::{AttemptInfo, Driver, Outcome, TaskRecord, TaskSpec, TaskState};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every state name the API uses.
pub const STATE_NAMES: [&str; 6] = [
    "pending",
    "claimed",
    "running",
    "succeeded",
    "failed",
    "cancelled",
];

/// The API name of a state.
pub fn state_name(state: &TaskState) -> &'static str {
    match state {
        TaskState::Pending => "pending",
        TaskState::Claimed { .. } => "claimed",
        TaskState::Running { .. } => "running",
        TaskState::Succeeded => "succeeded",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
    }
}

/// A task as `GET /v1/tasks/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    /// 16 hex digits.
    pub id: String,
    /// Its name.
    pub name: String,
    /// One of [`STATE_NAMES`].
    pub state: String,
    /// The latest attempt number (0 before the first claim).
    pub attempt: u64,
    /// Name of the node running or that last ran it.
    pub node: Option<String>,
    /// Exit code of the attempt that finished it.
    pub exit_code: Option<i32>,
    /// Retries used.
    pub retries_used: u32,
    /// `command`, `mock` or `docker`.
    pub driver: String,
    /// The container image, for the docker driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The container's bind mounts, `SRC:DST[:ro]`, for the docker driver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// The container's network (`none` or `bridge`), for the docker driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Slots it holds while it runs.
    #[serde(default)]
    pub slots: u32,
    /// CPU, memory and custom amounts it reserves while it runs.
    #[serde(default)]
    pub resources: Resources,
    /// Memory limit of an isolated attempt, MiB, where it is not the
    /// reserved memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit_mib: Option<u32>,
    /// Program (empty for mock tasks).
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// When it was submitted (RFC 3339, the submitting node's clock).
    pub submitted_at: String,
    /// Why the last attempt failed, while it waits for a retry or after it
    /// failed for good; `null` otherwise (always present, so scripts can
    /// read it without checking for the key).
    #[serde(default)]
    pub reason: Option<String>,
    /// Why a pending task is not running yet, as the answering node sees
    /// the party now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Its newest attempts, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptView>,
    /// The latest checkpoint an attempt saved; absent when none did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointView>,
}

/// A task's latest checkpoint (`shoal checkpoint show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointView {
    /// The attempt that saved it.
    pub attempt: u64,
    /// Its size in bytes.
    pub size: u64,
    /// When it was saved (RFC 3339, the saving node's clock).
    pub saved_at: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// The nodes that store it (ids, hex).
    pub holders: Vec<String>,
}

impl CheckpointView {
    /// The view of a record's checkpoint.
    pub fn of(m: &CheckpointMeta) -> CheckpointView {
        CheckpointView {
            attempt: m.attempt,
            size: m.size,
            saved_at: rfc3339_ms(m.saved_at_ms),
            sha256: m.digest.iter().map(|b| format!("{b:02x}")).collect(),
            holders: m.holders.iter().map(|h| h.to_hex()).collect(),
        }
    }
}

/// One attempt of a task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptView {
    /// The attempt number.
    pub attempt: u64,
    /// The node that ran it.
    pub node: String,
    /// When it was claimed (RFC 3339, that node's clock).
    pub started_at: String,
    /// When it ended; absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// `running`, `exited`, `timed_out`, `fenced` or `lost` (its node never
    /// reported; a later claim or a cancel closed it).
    pub outcome: String,
    /// The exit code, for `exited`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why it ended, where the outcome does not say it all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// RFC 3339 text of a Unix time in milliseconds.
pub fn rfc3339_ms(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

impl AttemptView {
    /// The view of one remembered attempt.
    pub fn of(a: &AttemptInfo) -> AttemptView {
        let (outcome, exit_code) = match (a.outcome, a.ended_at_ms) {
            (Some(Outcome::Exited(code)), _) => ("exited", Some(code)),
            (Some(Outcome::TimedOut), _) => ("timed_out", None),
            (Some(Outcome::Fenced), _) => ("fenced", None),
            (None, Some(_)) => ("lost", None),
            (None, None) => ("running", None),
        };
        AttemptView {
            attempt: a.attempt,
            node: a.node.clone(),
            started_at: rfc3339_ms(a.started_at_ms),
            ended_at: a.ended_at_ms.map(rfc3339_ms),
            outcome: outcome.to_string(),
            exit_code,
            reason: a.reason.clone(),
        }
    }
}

impl TaskView {
    /// The view of a record and its wait.
    pub fn of_read(read: &super::TaskRead) -> TaskView {
        TaskView {
            waiting: read.waiting.clone(),
            ..TaskView::of(&read.record)
        }
    }

    /// The view of a record.
    pub fn of(r: &TaskRecord) -> TaskView {
        let container = match &r.spec.driver {
            Driver::Docker(c) => Some(c),
            Driver::Command | Driver::Mock { .. } => None,
        };
        TaskView {
            id: r.id.to_string(),
            name: r.spec.name.clone(),
            state: state_name(&r.state).to_string(),
            attempt: r.attempt,
            node: r.holder_name.clone(),
            exit_code: r.exit_code,
            retries_used: r.retries_used,
            driver: r.spec.driver.name().into(),
            image: container.map(|c| c.image.clone()),
            mounts: container
                .map(|c| c.mounts.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            network: container.map(|c| c.network.as_str().into()),
            slots: r.spec.slots,
            resources: r.spec.resources.clone(),
            memory_limit_mib: (r.spec.memory_limit_mib > 0).then_some(r.spec.memory_limit_mib),
            command: r.spec.command.clone(),
            args: r.spec.args.clone(),
            submitted_at: rfc3339_ms(r.submitted_at_ms),
            reason: r.reason.clone(),
            waiting: None,
            attempts: r.attempts.iter().map(AttemptView::of).collect(),
            checkpoint: r.checkpoint.as_ref().map(CheckpointView::of),
        }
    }

    /// Succeeded, failed or cancelled.
    pub fn is_final(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// A duration in JSON: `"30s"`, `"2m"`, `"500ms"` or whole milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum DurationField {
    /// Milliseconds.
    Millis(u64),
    /// humantime text.
    Text(String),
}

impl<'de> Deserialize<'de> for DurationField {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DurationVisitor)
    }
}

/// Reads a [`DurationField`] with an error a person understands (serde's
/// untagged enums only say that no variant matched).
struct DurationVisitor;

impl serde::de::Visitor<'_> for DurationVisitor {
    type Value = DurationField;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a duration: whole milliseconds, or text like \"30s\", \"2m\", \"500ms\"")
    }

    fn visit_u64<E: serde::de::Error>(self, ms: u64) -> Result<DurationField, E> {
        Ok(DurationField::Millis(ms))
    }

    fn visit_i64<E: serde::de::Error>(self, ms: i64) -> Result<DurationField, E> {
        u64::try_from(ms)
            .map(DurationField::Millis)
            .map_err(|_| E::custom(format!("{ms} is negative; a duration is 0 or more")))
    }

    fn visit_f64<E: serde::de::Error>(self, ms: f64) -> Result<DurationField, E> {
        Err(E::custom(format!(
            "{ms} is not whole milliseconds; give an integer or text like \"1.5s\""
        )))
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<DurationField, E> {
        Ok(DurationField::Text(text.to_string()))
    }
}

impl DurationField {
    fn to_duration(&self, field: &'static str) -> Result<Duration, FieldError> {
        match self {
            DurationField::Millis(ms) => Ok(Duration::from_millis(*ms)),
            DurationField::Text(t) => humantime::parse_duration(t).map_err(|e| {
                FieldError::new(
                    field,
                    format!("{t:?} is not a duration like 30s, 2m or 500ms ({e})"),
                )
            }),
        }
    }
}

/// A submit refused for one field: the API answers it as
/// `{"error", "field", "limit"?}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The body field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
    /// The bound it passed, if any.
    pub limit: Option<u64>,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> FieldError {
        FieldError {
            field,
            message: message.into(),
            limit: None,
        }
    }

    fn with_limit(mut self, limit: u64) -> FieldError {
        self.limit = Some(limit);
        self
    }
}

impl From<shoal_protocol::tasks::SpecError> for FieldError {
    fn from(e: shoal_protocol::tasks::SpecError) -> FieldError {
        let field = e.field();
        let full = e.to_string();
        // The protocol's messages may start with the field's name already.
        let message = full
            .strip_prefix(&format!("{field}: "))
            .map(str::to_string)
            .unwrap_or(full);
        FieldError {
            field,
            message,
            limit: e.limit(),
        }
    }
}

/// Body of `POST /v1/tasks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitBody {
    /// Program to run (required for the command driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Slots it occupies (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// Labels a node must carry.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// CPU reserved while it runs: `"500m"` or `"500"` (millicores), `"0.5"`
    /// (cores); default none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory reserved while it runs: `"256Mi"`, `"4Gi"` (default none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// Custom resources reserved while it runs, such as `{"gpu": 1}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resources: BTreeMap<String, u32>,
    /// Memory limit of an isolated attempt when it is not `memory`:
    /// `"512Mi"`; at least the reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    /// Per-attempt time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<DurationField>,
    /// Retries after a failed attempt (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// A name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `command` (default), `mock` or `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// Docker driver: the image (required; it must be on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Docker driver: bind mounts, `"SRC:DST"` or `"SRC:DST:ro"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<String>,
    /// Docker driver: `"none"` (default) or `"bridge"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Mock driver: how long the pretend attempt runs (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<DurationField>,
    /// Mock driver: its exit code (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Accept a task that no current member could run (labels no member
    /// carries, more slots than any offers), for members that will join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
}

/// Delay before the first retry of a failed attempt.
const RETRY_BACKOFF_MS: u64 = 500;

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl SubmitBody {
    /// The resource request, or the field that is wrong and why.
    fn resources(&self) -> Result<Resources, FieldError> {
        let amount = |field: &'static str,
                      text: &Option<String>,
                      parse: fn(&str) -> Result<u32, ResourceError>| {
            text.as_deref()
                .map(parse)
                .transpose()
                .map_err(|e| FieldError::new(field, e.to_string()))
        };
        let mut asked = Resources::new(
            amount("cpu", &self.cpu, resources::parse_cpu_request)?.unwrap_or(0),
            amount("memory", &self.memory, resources::parse_memory)?.unwrap_or(0),
        );
        for (name, count) in &self.resources {
            let (name, count) = resources::parse_custom(&format!("{name}={count}"))
                .map_err(|e| FieldError::new("resources", e.to_string()))?;
            asked.custom.insert(name, count);
        }
        Ok(asked)
    }

    /// The container of a docker task, or the field that is wrong and why.
    fn container(&self) -> Result<ContainerSpec, FieldError> {
        let err = |e: ContainerError| {
            let field = e.field();
            let full = e.to_string();
            let message = full
                .strip_prefix(&format!("{field}: "))
                .or_else(|| full.strip_prefix("mount: "))
                .map(str::to_string)
                .unwrap_or(full);
            FieldError::new(field, message)
        };
        let image = match self.image.as_deref() {
            Some(image) => image,
            None => return Err(FieldError::new("image", "required for driver \"docker\"")),
        };
        let mut spec = ContainerSpec::new(image);
        spec.mounts = self
            .mounts
            .iter()
            .map(|m| Mount::parse(m))
            .collect::<Result<_, _>>()
            .map_err(err)?;
        if let Some(network) = self.network.as_deref() {
            spec.network = Network::parse(network).map_err(err)?;
        }
        spec.validate().map_err(err)?;
        Ok(spec)
    }

    /// The spec, or the field that is wrong and why.
    pub fn into_spec(self) -> Result<TaskSpec, FieldError> {
        use shoal_protocol::tasks::{MAX_RETRIES, MAX_SLOTS};
        let driver_name = self.driver.as_deref().unwrap_or("command");
        if matches!(driver_name, "command" | "mock") {
            let stray = [
                ("image", self.image.is_some()),
                ("mounts", !self.mounts.is_empty()),
                ("network", self.network.is_some()),
            ];
            if let Some((field, _)) = stray.iter().find(|(_, given)| *given) {
                return Err(FieldError::new(field, "only for driver \"docker\""));
            }
        }
        let driver = match driver_name {
            "command" | "docker" => {
                if self.duration.is_some() || self.exit_code.is_some() {
                    let field = if self.duration.is_some() {
                        "duration"
                    } else {
                        "exit_code"
                    };
                    return Err(FieldError::new(field, "only for driver \"mock\""));
                }
                match driver_name {
                    "docker" => Driver::Docker(self.container()?),
                    _ => Driver::Command,
                }
            }
            "mock" => Driver::Mock {
                duration_ms: match &self.duration {
                    Some(d) => millis(d.to_duration("duration")?),
                    None => 0,
                },
                exit_code: self.exit_code.unwrap_or(0),
            },
            other => {
                return Err(FieldError::new(
                    "driver",
                    format!("{other:?} is not one of \"command\", \"mock\", \"docker\""),
                ))
            }
        };
        let resources = self.resources()?;
        let memory_limit_mib = match self.memory_limit.as_deref() {
            None => 0,
            Some(text) => {
                let mib = resources::parse_memory(text)
                    .map_err(|e| FieldError::new("memory_limit", e.to_string()))?;
                if mib == 0 || mib < resources.memory_mib {
                    return Err(FieldError::new(
                        "memory_limit",
                        format!(
                            "{} is below the memory reserved ({})",
                            resources::memory_text(mib),
                            resources::memory_text(resources.memory_mib)
                        ),
                    ));
                }
                mib
            }
        };
        let command = self.command.unwrap_or_default();
        if driver == Driver::Command && command.trim().is_empty() {
            return Err(FieldError::new(
                "command",
                "missing or empty (required for driver \"command\")",
            ));
        }
        let slots = self.slots.unwrap_or(1);
        if slots == 0 || slots > MAX_SLOTS {
            return Err(
                FieldError::new("slots", format!("must be 1..={MAX_SLOTS}, got {slots}"))
                    .with_limit(u64::from(MAX_SLOTS)),
            );
        }
        let retries = self.retries.unwrap_or(0);
        if retries > MAX_RETRIES {
            return Err(FieldError::new(
                "retries",
                format!("must be at most {MAX_RETRIES}, got {retries}"),
            )
            .with_limit(u64::from(MAX_RETRIES)));
        }
        let timeout_ms = match &self.timeout {
            Some(t) => {
                let d = t.to_duration("timeout")?;
                if d.is_zero() {
                    return Err(FieldError::new("timeout", "must be above zero"));
                }
                Some(millis(d))
            }
            None => None,
        };
        if self.cwd.as_deref() == Some("") {
            return Err(FieldError::new("cwd", "empty"));
        }
        let name = self.name.unwrap_or_else(|| match &driver {
            Driver::Mock { .. } => "mock".to_string(),
            Driver::Command => command.clone(),
            Driver::Docker(c) if command.is_empty() => c.image.clone(),
            Driver::Docker(_) => command.clone(),
        });
        let spec = TaskSpec {
            name,
            command,
            args: self.args,
            env: self.env,
            cwd: self.cwd,
            slots,
            resources,
            memory_limit_mib,
            labels: self.labels,
            timeout_ms,
            retries,
            retry_backoff_ms: RETRY_BACKOFF_MS,
            driver,
        };
        spec.validate()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_limit_below_the_reservation_is_refused_naming_its_field() {
        let body = |json: &str| serde_json::from_str::<SubmitBody>(json).unwrap();
        let spec = body(r#"{"command":"x","memory":"256Mi","memory_limit":"1Gi"}"#)
            .into_spec()
            .unwrap();
        assert_eq!(
            (spec.resources.memory_mib, spec.memory_limit_mib),
            (256, 1024)
        );
        let spec = body(r#"{"command":"x","memory":"256Mi"}"#)
            .into_spec()
            .unwrap();
        assert_eq!(
            spec.memory_limit_mib, 0,
            "no limit given: the request is it"
        );
        for bad in [
            r#"{"command":"x","memory":"256Mi","memory_limit":"128Mi"}"#,
            r#"{"command":"x","memory_limit":"lots"}"#,
            r#"{"command":"x","memory_limit":"0"}"#,
        ] {
            assert_eq!(
                body(bad).into_spec().unwrap_err().field,
                "memory_limit",
                "{bad}"
            );
        }
    }

    #[test]
    fn docker_bodies_become_container_specs_or_name_the_wrong_field() {
        use shoal_protocol::tasks::container::{ContainerSpec, Mount, Network};
        let body = |json: &str| serde_json::from_str::<SubmitBody>(json).unwrap();
        let spec = body(
            r#"{"driver":"docker","image":"busybox","command":"sh","args":["-c","echo hi"],
                "mounts":["/data:/data:ro"],"network":"bridge","cpu":"250m","memory":"64Mi"}"#,
        )
        .into_spec()
        .unwrap();
        let mut want = ContainerSpec::new("busybox");
        want.mounts = vec![Mount::parse("/data:/data:ro").unwrap()];
        want.network = Network::Bridge;
        assert_eq!(spec.driver, Driver::Docker(want));
        assert_eq!((spec.command.as_str(), spec.name.as_str()), ("sh", "sh"));
        let own = body(r#"{"driver":"docker","image":"busybox"}"#)
            .into_spec()
            .unwrap();
        assert_eq!(
            (own.command.as_str(), own.name.as_str()),
            ("", "busybox"),
            "no command: the image's own"
        );
        let record = TaskRecord::new(shoal_protocol::tasks::TaskId(1), spec, 0);
        let json = serde_json::to_value(TaskView::of(&record)).unwrap();
        assert_eq!(
            (&json["driver"], &json["image"], &json["network"]),
            (
                &serde_json::json!("docker"),
                &serde_json::json!("busybox"),
                &serde_json::json!("bridge")
            ),
            "{json}"
        );
        assert_eq!(json["mounts"], serde_json::json!(["/data:/data:ro"]));
        for (json, field) in [
            (r#"{"driver":"docker"}"#, "image"),
            (r#"{"driver":"docker","image":"-v"}"#, "image"),
            (
                r#"{"driver":"docker","image":"b","mounts":["data:/d"]}"#,
                "mounts",
            ),
            (
                r#"{"driver":"docker","image":"b","network":"host"}"#,
                "network",
            ),
            (
                r#"{"driver":"docker","image":"b","exit_code":1}"#,
                "exit_code",
            ),
            (
                r#"{"driver":"docker","image":"b","env":{"A":"x\ny"}}"#,
                "env",
            ),
            (r#"{"command":"x","image":"busybox"}"#, "image"),
            (r#"{"command":"x","mounts":["/a:/b"]}"#, "mounts"),
            (r#"{"driver":"mock","network":"none"}"#, "network"),
        ] {
            assert_eq!(body(json).into_spec().unwrap_err().field, field, "{json}");
        }
        let unknown = serde_json::from_str::<SubmitBody>(r#"{"command":"x","volumes":["/a:/b"]}"#);
        assert!(unknown.is_err(), "unknown fields stay refused");
        let command = TaskRecord::new(
            shoal_protocol::tasks::TaskId(2),
            body(r#"{"command":"x"}"#).into_spec().unwrap(),
            0,
        );
        let json = serde_json::to_value(TaskView::of(&command)).unwrap();
        assert!(
            json.get("image").is_none() && json.get("mounts").is_none(),
            "{json}"
        );
    }

    #[test]
    fn resource_fields_become_the_request_or_name_the_field() {
        let body: SubmitBody = serde_json::from_str(
            r#"{"command":"x","cpu":"1.5","memory":"2Gi","resources":{"gpu":1}}"#,
        )
        .unwrap();
        let spec = body.into_spec().unwrap();
        assert_eq!(spec.resources.cpu_milli, 1500);
        assert_eq!(spec.resources.memory_mib, 2048);
        assert_eq!(spec.resources.custom.get("gpu"), Some(&1));
        for (json, field) in [
            (r#"{"command":"x","cpu":"fast"}"#, "cpu"),
            (r#"{"command":"x","memory":"2GB"}"#, "memory"),
            (r#"{"command":"x","resources":{"GPU":1}}"#, "resources"),
        ] {
            let body: SubmitBody = serde_json::from_str(json).unwrap();
            assert_eq!(body.into_spec().unwrap_err().field, field, "{json}");
        }
        let record = TaskRecord::new(shoal_protocol::tasks::TaskId(1), spec, 0);
        let json = serde_json::to_value(TaskView::of(&record)).unwrap();
        assert!(
            json["reason"].is_null() && json.get("reason").is_some(),
            "{json}"
        );
        assert_eq!(json["resources"]["memory_mib"], 2048, "{json}");
    }

    #[test]
    fn submit_bodies_become_specs_or_name_the_wrong_field() {
        let ok = SubmitBody {
            command: Some("echo".into()),
            args: vec!["hi".into()],
            timeout: Some(DurationField::Text("2m".into())),
            ..SubmitBody::default()
        };
        let spec = ok.into_spec().unwrap();
        assert_eq!(spec.timeout_ms, Some(120_000));
        assert_eq!(spec.slots, 1);
        let mock = SubmitBody {
            driver: Some("mock".into()),
            duration: Some(DurationField::Text("500ms".into())),
            exit_code: Some(3),
            ..SubmitBody::default()
        };
        assert_eq!(
            mock.into_spec().unwrap().driver,
            Driver::Mock {
                duration_ms: 500,
                exit_code: 3
            }
        );
        let missing = SubmitBody::default().into_spec().unwrap_err();
        assert_eq!(missing.field, "command", "{missing}");
        let slots = SubmitBody {
            command: Some("x".into()),
            slots: Some(0),
            ..SubmitBody::default()
        };
        let slots = slots.into_spec().unwrap_err();
        assert_eq!((slots.field, slots.limit), ("slots", Some(1024)));
        let bad_timeout = SubmitBody {
            command: Some("x".into()),
            timeout: Some(DurationField::Text("soon".into())),
            ..SubmitBody::default()
        };
        assert_eq!(bad_timeout.into_spec().unwrap_err().field, "timeout");
        let driver = SubmitBody {
            driver: Some("podman".into()),
            ..SubmitBody::default()
        };
        assert_eq!(driver.into_spec().unwrap_err().field, "driver");
        let huge_timeout = SubmitBody {
            command: Some("x".into()),
            timeout: Some(DurationField::Millis(u64::MAX)),
            ..SubmitBody::default()
        };
        let late = huge_timeout.into_spec().unwrap_err();
        assert_eq!(late.field, "timeout");
        assert_eq!(late.limit, Some(shoal_protocol::tasks::MAX_TIMEOUT_MS));
        assert!(late.to_string().starts_with("timeout: "), "{late}");
        assert!(!late.message.starts_with("timeout"), "said once: {late}");
    }

    #[test]
    fn durations_read_milliseconds_or_text_and_refuse_negatives_by_name() {
        let ms: DurationField = serde_json::from_str("1500").unwrap();
        assert_eq!(ms, DurationField::Millis(1500));
        let text: DurationField = serde_json::from_str("\"2m\"").unwrap();
        assert_eq!(text, DurationField::Text("2m".into()));
        let negative = serde_json::from_str::<DurationField>("-5")
            .unwrap_err()
            .to_string();
        assert!(negative.contains("negative"), "{negative}");
        let float = serde_json::from_str::<DurationField>("1.5")
            .unwrap_err()
            .to_string();
        assert!(float.contains("whole milliseconds"), "{float}");
        let other = serde_json::from_str::<DurationField>("true")
            .unwrap_err()
            .to_string();
        assert!(other.contains("a duration"), "{other}");
    }
}
