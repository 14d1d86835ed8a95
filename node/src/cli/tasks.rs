//! `shoal submit | status | logs | cancel | wait`: clients of `/v1/tasks`.
//! `submit` prints only the task id on stdout, so scripts can capture it.

use crate::api::tasks::{FINISHED_HEADER, NEXT_OFFSET_HEADER};
use crate::cli::terminal::terminal_safe;
use crate::tasks::view::{DurationField, SubmitBody, TaskView};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;
use thiserror::Error;

/// How long one HTTP request may take (a submit waits for a majority).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Pause between polls of `wait` and `logs --follow`.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// `wait` without `--timeout` gives up after this long.
const WAIT_DEFAULT: Duration = Duration::from_secs(3600);
/// Tasks `wait` polls at once.
const WAIT_CONCURRENCY: usize = 16;

/// Flags shared by every task command.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The API of any node.
    #[arg(long, env = "SHOAL_API_URL", default_value = super::DEFAULT_API_URL, value_parser = super::parse_api_url)]
    pub api: String,
    /// Bearer token for an API off loopback.
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// How a submitted task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum DriverArg {
    /// Run CMD ARGS... as a process.
    #[default]
    Command,
    /// Run nothing: finish after --duration with --exit-code.
    Mock,
    /// Run CMD ARGS... (or the image's own command) in a container of
    /// --image, through the node's docker CLI.
    Docker,
}

/// `shoal submit`.
#[derive(Debug, Clone, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Accept the task although no current member could run it (labels no
    /// member carries, more slots than any offers): for machines that will join.
    #[arg(long)]
    pub force: bool,
    /// Slots the task occupies.
    #[arg(long)]
    pub slots: Option<u32>,
    /// A label a node must carry, KEY=VALUE (repeatable).
    #[arg(long = "label", value_parser = parse_pair)]
    pub labels: Vec<(String, String)>,
    /// CPU reserved while it runs: millicores (500m, or a plain 500) or
    /// cores with a decimal point (0.5, 2.0).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_cpu_arg)]
    pub cpu: Option<String>,
    /// Memory reserved while it runs: 256Mi, 4Gi (a plain number is MiB).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_memory_arg)]
    pub memory: Option<String>,
    /// Memory limit of an isolated attempt, if not --memory (at least it).
    #[arg(long, value_name = "AMOUNT", value_parser = parse_memory_arg)]
    pub memory_limit: Option<String>,
    /// A custom resource reserved while it runs, NAME=COUNT such as gpu=1
    /// (repeatable).
    #[arg(long = "resource", value_name = "NAME=COUNT", value_parser = crate::cli::parse_resource)]
    pub resources: Vec<(String, u32)>,
    /// An environment variable for the command, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_pair)]
    pub env: Vec<(String, String)>,
    /// Working directory of the command (inside the container for
    /// --driver docker).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Retries after a failed attempt.
    #[arg(long)]
    pub retries: Option<u32>,
    /// Per-attempt time limit, like 30s, 2m, 500ms.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// A name for the task.
    #[arg(long)]
    pub name: Option<String>,
    /// How the task runs.
    #[arg(long, value_enum, default_value_t = DriverArg::Command)]
    pub driver: DriverArg,
    /// Docker driver: the image, which must be on the node already (it is
    /// never pulled).
    #[arg(long)]
    pub image: Option<String>,
    /// Docker driver: bind a node path into the container, SRC:DST or
    /// SRC:DST:ro, both absolute (repeatable).
    #[arg(long = "mount", value_name = "SRC:DST[:ro]", value_parser = parse_mount_arg)]
    pub mounts: Vec<String>,
    /// Docker driver: the container's network.
    #[arg(long, value_name = "none|bridge", value_parser = parse_network_arg)]
    pub network: Option<String>,
    /// Mock driver: how long the task pretends to run.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Mock driver: the exit code it reports.
    #[arg(long, allow_hyphen_values = true)]
    pub exit_code: Option<i32>,
    /// The command and its arguments, after `--`.
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// `shoal status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// A task id; without it, list the tasks the node knows.
    pub id: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// List only tasks in this state.
    #[arg(long)]
    pub state: Option<String>,
    /// List at most this many: the newest, in the order they were submitted.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `shoal logs`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The task id.
    pub id: String,
    /// Keep printing until the task is final.
    #[arg(long, short)]
    pub follow: bool,
    /// Show standard error instead of standard output.
    #[arg(long)]
    pub stderr: bool,
    /// The log of this attempt (1 for the first) instead of the latest.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub attempt: Option<u64>,
}

/// `shoal cancel`.
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The task id.
    pub id: String,
}

/// `shoal wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// Task ids.
    #[arg(required = true)]
    pub ids: Vec<String>,
    /// Give up after this long (exit non-zero), like 30s, 2m [default: 1h].
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?}: want KEY=VALUE")),
    }
}

/// Why a task command failed.
#[derive(Debug, Error)]
pub enum TaskCliError {
    /// The node could not be reached.
    #[error(
        "cannot reach the shoal API at {url}: {reason} (is an agent running there? try --api)"
    )]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node answered with an error.
    #[error("{status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The error message of the body.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from {url}: {reason}")]
    BadBody {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The arguments are wrong.
    #[error("{0}")]
    Usage(String),
}

#[derive(Clone)]
pub(super) struct Client {
    pub(super) base: String,
    pub(super) token: Option<String>,
    pub(super) http: reqwest::Client,
}

/// What a request sends.
pub(super) enum Body<'a> {
    /// Nothing.
    Empty,
    /// A task submission as JSON.
    Json(&'a SubmitBody),
    /// Raw bytes (a checkpoint).
    Bytes(Vec<u8>),
}

pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) headers: reqwest::header::HeaderMap,
    pub(super) body: Vec<u8>,
}

impl Client {
    pub(super) fn new(api: &ApiArgs) -> Result<Client, TaskCliError> {
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| TaskCliError::Unreachable {
                url: api.api.clone(),
                reason: e.to_string(),
            })?;
        Ok(Client {
            base: api.api.trim_end_matches('/').to_string(),
            token: api.api_token.clone(),
            http,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<Answer, TaskCliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Body::Empty => req,
            Body::Json(body) => req.json(body),
            Body::Bytes(bytes) => req
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(bytes),
        };
        let resp = req.send().await.map_err(|e| TaskCliError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| TaskCliError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?
            .to_vec();
        if !(200..300).contains(&status) {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_string());
            return Err(TaskCliError::Status { status, message });
        }
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub(super) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Body<'_>,
    ) -> Result<T, TaskCliError> {
        let answer = self.call(method, path, body).await?;
        serde_json::from_slice(&answer.body).map_err(|e| TaskCliError::BadBody {
            url: format!("{}{path}", self.base),
            reason: format!("HTTP {}: {e}", answer.status),
        })
    }

    async fn task(&self, id: &str) -> Result<TaskView, TaskCliError> {
        self.json(
            reqwest::Method::GET,
            &format!("/v1/tasks/{id}"),
            Body::Empty,
        )
        .await
    }
}

/// Checked here for a clear error at the flag; sent as written.
fn parse_cpu_arg(text: &str) -> Result<String, String> {
    shoal_protocol::resources::parse_cpu_request(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

fn parse_mount_arg(text: &str) -> Result<String, String> {
    shoal_protocol::tasks::container::Mount::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

fn parse_network_arg(text: &str) -> Result<String, String> {
    shoal_protocol::tasks::container::Network::parse(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

fn parse_memory_arg(text: &str) -> Result<String, String> {
    shoal_protocol::resources::parse_memory(text)
        .map(|_| text.to_string())
        .map_err(|e| e.to_string())
}

pub(super) fn check_id(id: &str) -> Result<(), TaskCliError> {
    crate::tasks::parse_task_id(id)
        .map(|_| ())
        .map_err(|e| TaskCliError::Usage(e.to_string()))
}

/// `shoal submit`: prints the id; exit 0 once a majority persisted it.
pub async fn submit(args: SubmitArgs) -> Result<i32, TaskCliError> {
    let mut body = SubmitBody {
        slots: args.slots,
        labels: args.labels.into_iter().collect::<BTreeMap<_, _>>(),
        cpu: args.cpu,
        memory: args.memory,
        memory_limit: args.memory_limit,
        resources: args.resources.into_iter().collect::<BTreeMap<_, _>>(),
        env: args.env.into_iter().collect::<BTreeMap<_, _>>(),
        cwd: args.cwd,
        retries: args.retries,
        timeout: args
            .timeout
            .map(|t| DurationField::Millis(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))),
        name: args.name,
        force: args.force.then_some(true),
        ..SubmitBody::default()
    };
    let container_flag = [
        ("--image", args.image.is_some()),
        ("--mount", !args.mounts.is_empty()),
        ("--network", args.network.is_some()),
    ]
    .into_iter()
    .find(|(_, given)| *given);
    if let (Some((flag, _)), false) = (container_flag, args.driver == DriverArg::Docker) {
        return Err(TaskCliError::Usage(format!(
            "{flag} is for --driver docker"
        )));
    }
    match args.driver {
        DriverArg::Docker => {
            let Some(image) = args.image else {
                return Err(TaskCliError::Usage(
                    "--driver docker needs --image IMAGE (an image already on the nodes)".into(),
                ));
            };
            if args.duration.is_some() || args.exit_code.is_some() {
                return Err(TaskCliError::Usage(
                    "--duration and --exit-code are for --driver mock".into(),
                ));
            }
            body.driver = Some("docker".into());
            body.image = Some(image);
            body.mounts = args.mounts;
            body.network = args.network;
            if let Some((program, rest)) = args.command.split_first() {
                body.command = Some(program.clone());
                body.args = rest.to_vec();
            }
        }
        DriverArg::Command => {
            let Some((program, rest)) = args.command.split_first() else {
                return Err(TaskCliError::Usage(
                    "give the command after `--`, e.g. shoal submit -- echo hi (or --driver mock)"
                        .into(),
                ));
            };
            if args.duration.is_some() || args.exit_code.is_some() {
                return Err(TaskCliError::Usage(
                    "--duration and --exit-code are for --driver mock".into(),
                ));
            }
            body.command = Some(program.clone());
            body.args = rest.to_vec();
        }
        DriverArg::Mock => {
            if !args.command.is_empty() {
                return Err(TaskCliError::Usage(
                    "--driver mock runs no command: drop the arguments after `--`".into(),
                ));
            }
            body.driver = Some("mock".into());
            body.duration = args
                .duration
                .map(|d| DurationField::Millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)));
            body.exit_code = args.exit_code;
        }
    }
    let client = Client::new(&args.api)?;
    let answer: serde_json::Value = client
        .json(reqwest::Method::POST, "/v1/tasks", Body::Json(&body))
        .await?;
    let id = answer["id"].as_str().ok_or_else(|| TaskCliError::BadBody {
        url: format!("{}/v1/tasks", client.base),
        reason: "no id in the answer".into(),
    })?;
    for w in answer["warnings"].as_array().into_iter().flatten() {
        if let Some(w) = w.as_str() {
            eprintln!("warning: {}", terminal_safe(w));
        }
    }
    println!("{id}");
    Ok(0)
}

/// One line per task.
pub fn table(tasks: &[TaskView]) -> String {
    let mut out = format!(
        "{:<16}  {:<9}  {:>7}  {:<12}  {:>4}  {}\n",
        "ID", "STATE", "ATTEMPT", "NODE", "EXIT", "NAME"
    );
    for t in tasks {
        out.push_str(&format!(
            "{:<16}  {:<9}  {:>7}  {:<12}  {:>4}  {}\n",
            terminal_safe(&t.id),
            terminal_safe(&t.state),
            t.attempt,
            terminal_safe(t.node.as_deref().unwrap_or("-")),
            t.exit_code.map(|c| c.to_string()).unwrap_or("-".into()),
            terminal_safe(&t.name)
        ));
    }
    out
}

/// `slots=1` and the resources it reserves: `slots=1,cpu=500m,memory=256Mi`.
fn reserves_text(t: &TaskView) -> String {
    if t.resources.is_empty() {
        format!("slots={}", t.slots)
    } else {
        format!("slots={},{}", t.slots, t.resources)
    }
}

/// One task in full: its fields, then one line per remembered attempt.
pub fn detail(t: &TaskView) -> String {
    let mut state = t.state.clone();
    if let Some(code) = t.exit_code {
        state.push_str(&format!(" (exit {code})"));
    }
    let mut rows = vec![
        ("ID", t.id.clone()),
        ("NAME", t.name.clone()),
        ("STATE", state),
        ("ATTEMPT", t.attempt.to_string()),
        ("RETRIES", t.retries_used.to_string()),
        ("SUBMITTED", t.submitted_at.clone()),
        ("RESERVES", reserves_text(t)),
    ];
    if let Some(image) = &t.image {
        let network = t.network.as_deref().unwrap_or("none");
        rows.push(("IMAGE", format!("{image} (network {network})")));
        for m in &t.mounts {
            rows.push(("MOUNT", m.clone()));
        }
    }
    if let Some(node) = &t.node {
        rows.push(("NODE", node.clone()));
    }
    if let Some(reason) = &t.reason {
        rows.push(("REASON", reason.clone()));
    }
    if let Some(waiting) = &t.waiting {
        rows.push(("WAITING", waiting.clone()));
    }
    let mut out = String::new();
    for (k, v) in rows {
        out.push_str(&format!("{k:<10} {}\n", terminal_safe(&v)));
    }
    if !t.attempts.is_empty() {
        out.push_str(&format!(
            "\n{:>7}  {:<12}  {:<24}  {:<24}  {:<10}  {}\n",
            "ATTEMPT", "NODE", "STARTED", "ENDED", "OUTCOME", "REASON"
        ));
        for a in &t.attempts {
            let outcome = match a.exit_code {
                Some(code) => format!("exit {code}"),
                None => a.outcome.clone(),
            };
            out.push_str(&format!(
                "{:>7}  {:<12}  {:<24}  {:<24}  {:<10}  {}\n",
                a.attempt,
                terminal_safe(&a.node),
                a.started_at,
                a.ended_at.as_deref().unwrap_or("-"),
                outcome,
                terminal_safe(a.reason.as_deref().unwrap_or("-")),
            ));
        }
    }
    out
}

/// `shoal status [ID] [--json]`.
pub async fn status(args: StatusArgs) -> Result<i32, TaskCliError> {
    let client = Client::new(&args.api)?;
    match &args.id {
        Some(id) => {
            check_id(id)?;
            let task = client.task(id).await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&task).expect("views serialise")
                );
            } else {
                print!("{}", detail(&task));
            }
        }
        None => {
            let mut path = format!("/v1/tasks?limit={}", args.limit);
            if let Some(s) = &args.state {
                path.push_str(&format!("&state={s}"));
            }
            let list: Vec<TaskView> = client
                .json(reqwest::Method::GET, &path, Body::Empty)
                .await?;
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).expect("views serialise")
                );
            } else {
                print!("{}", table(&list));
            }
        }
    }
    Ok(0)
}

/// `shoal cancel ID`.
pub async fn cancel(args: CancelArgs) -> Result<i32, TaskCliError> {
    check_id(&args.id)?;
    let client = Client::new(&args.api)?;
    let task: TaskView = client
        .json(
            reqwest::Method::POST,
            &format!("/v1/tasks/{}/cancel", args.id),
            Body::Empty,
        )
        .await?;
    eprintln!(
        "task {}: {}",
        terminal_safe(&task.id),
        terminal_safe(&task.state)
    );
    Ok(0)
}

/// `shoal logs ID [--follow]`.
pub async fn logs(args: LogsArgs) -> Result<i32, TaskCliError> {
    check_id(&args.id)?;
    let client = Client::new(&args.api)?;
    let stream = if args.stderr { "stderr" } else { "stdout" };
    let mut offset = 0u64;
    let attempt = args
        .attempt
        .map(|a| format!("&attempt={a}"))
        .unwrap_or_default();
    loop {
        let path = format!(
            "/v1/tasks/{}/logs?stream={stream}&offset={offset}{attempt}",
            args.id
        );
        let answer = match client.call(reqwest::Method::GET, &path, Body::Empty).await {
            Ok(a) => a,
            // A holder that is briefly unreachable while following.
            Err(TaskCliError::Status { status: 503, .. }) if args.follow => {
                tokio::time::sleep(POLL_INTERVAL).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let header = |name: &str| {
            answer
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&answer.body);
        let _ = out.flush();
        let finished = header(FINISHED_HEADER).as_deref() == Some("true");
        if let Some(next) = header(NEXT_OFFSET_HEADER).and_then(|v| v.parse().ok()) {
            offset = next;
        }
        if !args.follow || finished {
            return Ok(0);
        }
        if answer.body.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
}

/// `shoal wait ID... [--timeout DUR]`: exit 0 only if every task succeeded.
pub async fn wait(args: WaitArgs) -> Result<i32, TaskCliError> {
    for id in &args.ids {
        check_id(id)?;
    }
    let client = Client::new(&args.api)?;
    let deadline = tokio::time::Instant::now() + args.timeout.unwrap_or(WAIT_DEFAULT);
    let bar = (args.ids.len() > 1).then(|| {
        let bar = ProgressBar::new(args.ids.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} final {msg} [{elapsed}]")
                .expect("static template"),
        );
        bar
    });
    let mut open: Vec<String> = args.ids.clone();
    let mut done: BTreeMap<String, TaskView> = BTreeMap::new();
    let mut unknown: Vec<String> = Vec::new();
    while !open.is_empty() {
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        let mut still = Vec::new();
        for chunk in open.chunks(WAIT_CONCURRENCY) {
            let mut reads = tokio::task::JoinSet::new();
            for id in chunk {
                let (client, id) = (client.clone(), id.clone());
                reads.spawn(async move {
                    let r = client.task(&id).await;
                    (id, r)
                });
            }
            let mut results = Vec::new();
            while let Some(joined) = reads.join_next().await {
                if let Ok(pair) = joined {
                    results.push(pair);
                }
            }
            for (id, r) in results {
                match r {
                    Ok(t) if t.is_final() => {
                        done.insert(id.clone(), t);
                    }
                    Ok(_) => still.push(id.clone()),
                    Err(TaskCliError::Status {
                        status: 404,
                        message,
                    }) => {
                        let line = format!(
                            "task {}: no such task ({})",
                            terminal_safe(&id),
                            terminal_safe(&message)
                        );
                        match &bar {
                            Some(bar) => bar.suspend(|| eprintln!("{line}")),
                            None => eprintln!("{line}"),
                        }
                        unknown.push(id.clone());
                    }
                    // Transient: the node is busy or a group is moving.
                    Err(TaskCliError::Status { .. }) | Err(TaskCliError::Unreachable { .. }) => {
                        still.push(id.clone())
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        open = still;
        if let Some(bar) = &bar {
            bar.set_position((done.len() + unknown.len()) as u64);
            let failed = done.values().filter(|t| t.state != "succeeded").count();
            bar.set_message(format!("({failed} not succeeded)"));
        }
        if !open.is_empty() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    let failed: Vec<&TaskView> = done.values().filter(|t| t.state != "succeeded").collect();
    for t in &failed {
        let exit = t
            .exit_code
            .map(|c| format!(" (exit code {c})"))
            .unwrap_or_default();
        eprintln!(
            "task {}: {}{exit}",
            terminal_safe(&t.id),
            terminal_safe(&t.state)
        );
    }
    if !open.is_empty() {
        eprintln!(
            "timed out with {} of {} tasks not final: {}",
            open.len(),
            args.ids.len(),
            open.join(" ")
        );
        return Ok(2);
    }
    if args.ids.len() > 1 {
        eprintln!(
            "{} succeeded, {} not, {} unknown",
            done.len() - failed.len(),
            failed.len(),
            unknown.len()
        );
    }
    Ok(if failed.is_empty() && unknown.is_empty() {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_env_need_key_equals_value() {
        assert_eq!(parse_pair("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_pair("=x").is_err());
        assert!(parse_pair("novalue").is_err());
    }

    #[test]
    fn table_shows_null_node_and_exit_code_as_dashes() {
        let t = TaskView {
            id: "00000000000000ab".into(),
            name: "n".into(),
            state: "pending".into(),
            attempt: 0,
            node: None,
            exit_code: None,
            retries_used: 0,
            driver: "mock".into(),
            slots: 1,
            resources: Default::default(),
            memory_limit_mib: None,
            image: None,
            mounts: Vec::new(),
            network: None,
            command: String::new(),
            args: Vec::new(),
            submitted_at: "2026-12-06T10:00:00.000Z".into(),
            reason: None,
            waiting: None,
            attempts: Vec::new(),
            checkpoint: None,
        };
        let text = table(&[t]);
        assert!(text.lines().nth(1).unwrap().contains("pending"));
        assert!(text.lines().nth(1).unwrap().contains(" - "));
    }

    #[test]
    fn detail_shows_each_attempt_with_its_node_times_and_reason() {
        use crate::tasks::view::AttemptView;
        let t = TaskView {
            id: "00000000000000ab".into(),
            name: "train".into(),
            state: "failed".into(),
            attempt: 2,
            node: Some("n2".into()),
            exit_code: Some(127),
            retries_used: 1,
            driver: "command".into(),
            slots: 1,
            resources: Default::default(),
            memory_limit_mib: None,
            image: None,
            mounts: Vec::new(),
            network: None,
            command: "nope".into(),
            args: Vec::new(),
            submitted_at: "2026-12-06T10:00:00.000Z".into(),
            reason: Some("cannot start \"nope\": \x1b[2J".into()),
            waiting: None,
            attempts: vec![
                AttemptView {
                    attempt: 1,
                    node: "n1".into(),
                    started_at: "2026-12-06T10:00:00.100Z".into(),
                    ended_at: Some("2026-12-06T10:00:01.000Z".into()),
                    outcome: "lost".into(),
                    exit_code: None,
                    reason: Some("its node stopped answering; no report".into()),
                },
                AttemptView {
                    attempt: 2,
                    node: "n2".into(),
                    started_at: "2026-12-06T10:00:01.100Z".into(),
                    ended_at: Some("2026-12-06T10:00:01.200Z".into()),
                    outcome: "exited".into(),
                    exit_code: Some(127),
                    reason: None,
                },
            ],
            checkpoint: None,
        };
        let text = detail(&t);
        assert!(text.contains("STATE      failed (exit 127)"), "{text}");
        assert!(
            text.contains("SUBMITTED  2026-12-06T10:00:00.000Z"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text:?}");
        let lines: Vec<&str> = text.lines().collect();
        let first = lines
            .iter()
            .find(|l| l.trim_start().starts_with("1 "))
            .unwrap();
        assert!(first.contains("n1") && first.contains("lost"), "{first}");
        let second = lines
            .iter()
            .find(|l| l.trim_start().starts_with("2 "))
            .unwrap();
        assert!(second.contains("exit 127"), "{second}");
    }

    #[test]
    fn table_escapes_control_characters_of_user_strings() {
        let t = TaskView {
            id: "00000000000000ab".into(),
            name: "x\x1b]0;pwned\x07\x1b[2J\nfff  succeeded".into(),
            state: "pending".into(),
            attempt: 0,
            node: Some("n\r1".into()),
            exit_code: None,
            retries_used: 0,
            driver: "mock".into(),
            slots: 1,
            resources: Default::default(),
            memory_limit_mib: None,
            image: None,
            mounts: Vec::new(),
            network: None,
            command: String::new(),
            args: Vec::new(),
            submitted_at: "2026-12-06T10:00:00.000Z".into(),
            reason: None,
            waiting: None,
            attempts: Vec::new(),
            checkpoint: None,
        };
        let text = table(&[t]);
        assert_eq!(text.lines().count(), 2, "{text:?}");
        assert!(!text.contains(['\x1b', '\x07', '\r']), "{text:?}");
        assert!(text.contains("x\\x1b]0;pwned\\x07"), "{text:?}");
        assert!(text.contains("n\\r1"), "{text:?}");
    }
}
