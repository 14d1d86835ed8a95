//! Health checks (Consul-style): built-in ones (free space in the data
//! directory, memory pressure) and configured ones (a command or an HTTP
//! URL, each with an interval, a timeout and a failure threshold). The
//! worst result becomes this node's gossiped [`Health`]; an unhealthy node
//! stays a member but takes no new work.

use serde::{Deserialize, Serialize};
use shoal_protocol::gossip::Health;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Thresholds of the built-in health checks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BuiltinHealth {
    /// Critical below this much free space in the data directory.
    pub disk_free_critical_mib: u64,
    /// Warning below this much free space in the data directory.
    pub disk_free_warning_mib: u64,
    /// Critical when less than this per mille of memory is available.
    pub mem_available_critical_permille: u32,
    /// Warning when less than this per mille of memory is available.
    pub mem_available_warning_permille: u32,
    /// How often the built-in checks run.
    pub interval_ms: u64,
}

impl Default for BuiltinHealth {
    fn default() -> Self {
        BuiltinHealth {
            disk_free_critical_mib: 64,
            disk_free_warning_mib: 512,
            mem_available_critical_permille: 30,
            mem_available_warning_permille: 100,
            interval_ms: 5_000,
        }
    }
}

/// The longest output of a check kept for display.
const MAX_OUTPUT_CHARS: usize = 200;
/// Bounds on configured intervals and timeouts.
const MIN_INTERVAL_MS: u64 = 100;
const MAX_TIMEOUT_MS: u64 = 300_000;

/// One configured check (`[[check]]` in the config file).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Shown in `shoal members` and `/v1/node` when it fails.
    pub name: String,
    /// Program and arguments; exit 0 passes, 1 warns, anything else fails.
    pub command: Option<Vec<String>>,
    /// URL fetched with GET; 2xx passes, 429 warns, anything else fails.
    pub http: Option<String>,
    /// Time between two runs.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// A run that takes longer fails.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive failures before the check is reported failing.
    #[serde(default = "default_failure_threshold")]
    pub failure_threshold: u32,
}

fn default_interval_ms() -> u64 {
    10_000
}
fn default_timeout_ms() -> u64 {
    2_000
}
fn default_failure_threshold() -> u32 {
    1
}

impl CheckSpec {
    /// Refuses specs that cannot run.
    pub fn validate(&self) -> Result<(), String> {
        let what = format!("check {:?}", self.name);
        match (&self.command, &self.http) {
            (Some(cmd), None) if !cmd.is_empty() => {}
            (None, Some(url)) if url.starts_with("http://") || url.starts_with("https://") => {}
            _ => {
                return Err(format!(
                "{what}: give exactly one of `command` (non-empty list) or `http` (an http:// URL)"
            ))
            }
        }
        if self.interval_ms < MIN_INTERVAL_MS {
            return Err(format!(
                "{what}: interval_ms must be at least {MIN_INTERVAL_MS}"
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "{what}: timeout_ms must be in 1..={MAX_TIMEOUT_MS}"
            ));
        }
        if self.failure_threshold == 0 {
            return Err(format!("{what}: failure_threshold must be at least 1"));
        }
        Ok(())
    }
}

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Passing,
    /// Degraded; the node still takes work.
    Warning,
    /// Failing; the node takes no new work.
    Critical,
}

/// A check's current state, as `/v1/node` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct CheckStatus {
    /// Its name.
    pub name: String,
    /// `builtin`, `command` or `http`.
    pub kind: &'static str,
    /// Reported status (after the failure threshold).
    pub status: Status,
    /// What the last run said.
    pub output: String,
    /// Non-passing runs in a row.
    pub consecutive_failures: u32,
    /// Milliseconds since the last run, if it ran.
    #[serde(skip)]
    pub last_run: Option<std::time::Instant>,
}

/// Host samples gossiped in the node state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SysSample {
    /// Free space in the data directory.
    pub disk_free_mib: u64,
    /// Memory in use, per mille.
    pub mem_used_permille: u32,
    /// One-minute load average per core, per mille.
    pub cpu_load_permille: u32,
}

/// Shared view of every check's status and the latest host sample.
#[derive(Debug, Clone, Default)]
pub struct HealthHandle {
    checks: Arc<Mutex<Vec<CheckStatus>>>,
    sample: Arc<Mutex<SysSample>>,
}

impl HealthHandle {
    /// Every check's status.
    pub fn checks(&self) -> Vec<CheckStatus> {
        self.checks.lock().expect("health lock poisoned").clone()
    }

    /// The latest host sample.
    pub fn sample(&self) -> SysSample {
        *self.sample.lock().expect("health lock poisoned")
    }

    /// The node's health: the worst check, named with its output.
    pub fn node_health(&self) -> Health {
        overall(&self.checks())
    }

    fn register(&self, name: &str, kind: &'static str) -> usize {
        let mut checks = self.checks.lock().expect("health lock poisoned");
        checks.push(CheckStatus {
            name: name.to_string(),
            kind,
            status: Status::Passing,
            output: "not run yet".to_string(),
            consecutive_failures: 0,
            last_run: None,
        });
        checks.len() - 1
    }

    fn record(&self, index: usize, result: Status, output: String, threshold: u32) {
        let mut checks = self.checks.lock().expect("health lock poisoned");
        if let Some(check) = checks.get_mut(index) {
            apply_result(check, result, output, threshold);
        }
    }
}

/// Consul semantics: a pass is reported at once; a warning or failure only
/// after `threshold` non-passing runs in a row.
fn apply_result(check: &mut CheckStatus, result: Status, output: String, threshold: u32) {
    check.last_run = Some(std::time::Instant::now());
    check.output = truncate(&output);
    if result == Status::Passing {
        check.consecutive_failures = 0;
        check.status = Status::Passing;
    } else {
        check.consecutive_failures = check.consecutive_failures.saturating_add(1);
        if check.consecutive_failures >= threshold {
            check.status = result;
        }
    }
}

/// The worst status among `checks`, as gossiped health.
pub fn overall(checks: &[CheckStatus]) -> Health {
    let worst = checks.iter().max_by_key(|c| c.status);
    match worst {
        Some(c) if c.status == Status::Critical => Health::Critical {
            reason: format!("{}: {}", c.name, c.output),
        },
        Some(c) if c.status == Status::Warning => Health::Warning {
            reason: format!("{}: {}", c.name, c.output),
        },
        _ => Health::Passing,
    }
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= MAX_OUTPUT_CHARS {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(MAX_OUTPUT_CHARS).collect();
        t.push('…');
        t
    }
}

/// Starts the built-in and configured checks on the tokio runtime.
pub fn spawn_checks(data_dir: &Path, builtin: &BuiltinHealth, specs: &[CheckSpec]) -> HealthHandle {
    let handle = HealthHandle::default();
    let disk = handle.register("disk", "builtin");
    let mem = handle.register("memory", "builtin");
    tokio::spawn(builtin_loop(
        handle.clone(),
        data_dir.to_path_buf(),
        builtin.clone(),
        disk,
        mem,
    ));
    for spec in specs {
        let kind = if spec.command.is_some() {
            "command"
        } else {
            "http"
        };
        let index = handle.register(&spec.name, kind);
        tokio::spawn(check_loop(handle.clone(), spec.clone(), index));
    }
    handle
}

async fn builtin_loop(
    handle: HealthHandle,
    data_dir: PathBuf,
    limits: BuiltinHealth,
    disk: usize,
    mem: usize,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(
        limits.interval_ms.max(MIN_INTERVAL_MS),
    ));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut sample = SysSample::default();
        match disk_free_mib(&data_dir) {
            Ok(free) => {
                sample.disk_free_mib = free;
                let (status, output) = judge_disk(free, &limits);
                handle.record(disk, status, output, 1);
            }
            Err(e) => handle.record(
                disk,
                Status::Critical,
                format!("statvfs {}: {e}", data_dir.display()),
                1,
            ),
        }
        match std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| parse_meminfo(&t))
        {
            Some((total_kib, available_kib)) => {
                let available_permille = permille(available_kib, total_kib);
                sample.mem_used_permille = 1000u32.saturating_sub(available_permille);
                let (status, output) = judge_memory(available_permille, &limits);
                handle.record(mem, status, output, 1);
            }
            None => handle.record(mem, Status::Warning, "cannot read /proc/meminfo".into(), 1),
        }
        sample.cpu_load_permille = cpu_load_permille().unwrap_or(0);
        *handle.sample.lock().expect("health lock poisoned") = sample;
    }
}

fn judge_disk(free_mib: u64, limits: &BuiltinHealth) -> (Status, String) {
    let output = format!("{free_mib} MiB free in the data directory");
    if free_mib < limits.disk_free_critical_mib {
        (
            Status::Critical,
            format!(
                "{output} (critical below {} MiB)",
                limits.disk_free_critical_mib
            ),
        )
    } else if free_mib < limits.disk_free_warning_mib {
        (
            Status::Warning,
            format!(
                "{output} (warning below {} MiB)",
                limits.disk_free_warning_mib
            ),
        )
    } else {
        (Status::Passing, output)
    }
}

fn judge_memory(available_permille: u32, limits: &BuiltinHealth) -> (Status, String) {
    let output = format!(
        "{:.1}% of memory available",
        f64::from(available_permille) / 10.0
    );
    if available_permille < limits.mem_available_critical_permille {
        (Status::Critical, output)
    } else if available_permille < limits.mem_available_warning_permille {
        (Status::Warning, output)
    } else {
        (Status::Passing, output)
    }
}

fn permille(part: u64, whole: u64) -> u32 {
    if whole == 0 {
        return 0;
    }
    u32::try_from(part.saturating_mul(1000) / whole).unwrap_or(u32::MAX)
}

/// Free space available to unprivileged users in `dir`, in MiB.
pub fn disk_free_mib(dir: &Path) -> std::io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize) / (1024 * 1024))
}

/// `(MemTotal, MemAvailable)` in KiB.
pub fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| {
                rest.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
    };
    Some((field("MemTotal:")?, field("MemAvailable:")?))
}

fn cpu_load_permille() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let load: f64 = text.split_whitespace().next()?.parse().ok()?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    Some((load / cores * 1000.0).clamp(0.0, 1e6) as u32)
}

async fn check_loop(handle: HealthHandle, spec: CheckSpec, index: usize) {
    let mut tick =
        tokio::time::interval(Duration::from_millis(spec.interval_ms.max(MIN_INTERVAL_MS)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout = Duration::from_millis(spec.timeout_ms);
    let client = reqwest::Client::builder().timeout(timeout).build().ok();
    loop {
        tick.tick().await;
        let (status, output) = match (&spec.command, &spec.http) {
            (Some(cmd), _) => run_command(cmd, timeout).await,
            (None, Some(url)) => match &client {
                Some(client) => fetch(client, url).await,
                None => (Status::Critical, "no HTTP client".into()),
            },
            (None, None) => (
                Status::Critical,
                "check has neither command nor http".into(),
            ),
        };
        handle.record(index, status, output, spec.failure_threshold);
    }
}

async fn run_command(cmd: &[String], timeout: Duration) -> (Status, String) {
    let Some((program, args)) = cmd.split_first() else {
        return (Status::Critical, "empty command".into());
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(timeout, child).await {
        Err(_) => (
            Status::Critical,
            format!("timed out after {} ms", timeout.as_millis()),
        ),
        Ok(Err(e)) => (Status::Critical, format!("cannot run {program}: {e}")),
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            let status = match out.status.code() {
                Some(0) => Status::Passing,
                Some(1) => Status::Warning,
                _ => Status::Critical,
            };
            if text.trim().is_empty() {
                text = format!("exit status {}", out.status);
            }
            (status, text)
        }
    }
}

async fn fetch(client: &reqwest::Client, url: &str) -> (Status, String) {
    match client.get(url).send().await {
        Err(e) => (Status::Critical, format!("GET {url}: {e}")),
        Ok(resp) => {
            let code = resp.status();
            let status = if code.is_success() {
                Status::Passing
            } else if code.as_u16() == 429 {
                Status::Warning
            } else {
                Status::Critical
            };
            (status, format!("GET {url}: HTTP {code}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: Status) -> CheckStatus {
        CheckStatus {
            name: "c".into(),
            kind: "command",
            status: s,
            output: String::new(),
            consecutive_failures: 0,
            last_run: None,
        }
    }

    #[test]
    fn failures_are_reported_only_after_the_threshold_and_a_pass_resets() {
        let mut check = status(Status::Passing);
        apply_result(&mut check, Status::Critical, "boom".into(), 2);
        assert_eq!(check.status, Status::Passing);
        apply_result(&mut check, Status::Critical, "boom".into(), 2);
        assert_eq!(check.status, Status::Critical);
        apply_result(&mut check, Status::Passing, "ok".into(), 2);
        assert_eq!(
            (check.status, check.consecutive_failures),
            (Status::Passing, 0)
        );
    }

    #[test]
    fn overall_health_names_the_worst_check() {
        let mut bad = status(Status::Critical);
        bad.name = "db".into();
        bad.output = "down".into();
        let health = overall(&[status(Status::Warning), bad]);
        assert_eq!(
            health,
            Health::Critical {
                reason: "db: down".into()
            }
        );
        assert_eq!(overall(&[status(Status::Passing)]), Health::Passing);
    }

    #[test]
    fn meminfo_parses_and_garbage_does_not() {
        let text = "MemTotal:       16000 kB\nMemFree: 1 kB\nMemAvailable:    4000 kB\n";
        assert_eq!(parse_meminfo(text), Some((16000, 4000)));
        assert_eq!(parse_meminfo("nonsense"), None);
    }

    #[test]
    fn disk_thresholds_grade_free_space() {
        let limits = BuiltinHealth::default();
        assert_eq!(judge_disk(10, &limits).0, Status::Critical);
        assert_eq!(judge_disk(100, &limits).0, Status::Warning);
        assert_eq!(judge_disk(100_000, &limits).0, Status::Passing);
    }

    #[test]
    fn specs_need_exactly_one_probe() {
        let spec = CheckSpec {
            name: "x".into(),
            command: None,
            http: None,
            interval_ms: 1000,
            timeout_ms: 100,
            failure_threshold: 1,
        };
        assert!(spec.validate().is_err());
        let ok = CheckSpec {
            command: Some(vec!["true".into()]),
            ..spec
        };
        assert!(ok.validate().is_ok());
    }

    #[tokio::test]
    async fn commands_map_exit_codes_to_statuses() {
        let t = Duration::from_secs(5);
        assert_eq!(run_command(&["true".into()], t).await.0, Status::Passing);
        assert_eq!(run_command(&["false".into()], t).await.0, Status::Warning);
        let sleep = ["sleep".to_string(), "5".to_string()];
        assert_eq!(
            run_command(&sleep, Duration::from_millis(50)).await.0,
            Status::Critical
        );
    }
}
