//! The docker driver: an attempt as a container, through the `docker` CLI.
//!
//! The CLI rather than a client library: it adds no dependency, and it
//! talks to whatever daemon the operator's own `docker` talks to
//! (`DOCKER_HOST`, contexts, rootless sockets) with no configuration of
//! ours. Each call is a short child process, bounded in time.
//!
//! The supervisor runs an attempt in two steps: `docker create` (the
//! environment comes from a 0600 `--env-file` in the attempt directory,
//! removed as soon as the container exists, so no value is ever on a
//! command line), then `docker start --attach`, whose stdout and stderr
//! are the container's and whose exit code is the container's. The
//! supervisor treats that client as the attempt's command: its fence
//! (lease deadline, agent gone, kill) runs `docker kill` and then
//! `docker rm -f` on the container, since killing the client alone would
//! leave the container running. Containers are named
//! `shoal-<store>-<task>-<attempt>` and labelled with `shoal.store`,
//! `shoal.task` and `shoal.attempt`, so that a restarted agent removes
//! every container of its own store it no longer owns, and never another
//! agent's ([`remove_stale`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_protocol::tasks::container::ContainerSpec;

use super::cgroup::{Limits, ATTEMPT_PIDS_MAX};
use super::procs::kill_pid;

/// The CLI, looked up in the agent's PATH.
pub const DOCKER_PROGRAM: &str = "docker";
/// Label naming the agent's store (its `store-id`).
pub const LABEL_STORE: &str = "shoal.store";
/// Label naming the task.
pub const LABEL_TASK: &str = "shoal.task";
/// Label naming the attempt number.
pub const LABEL_ATTEMPT: &str = "shoal.attempt";
/// File of the container's environment in the attempt directory, present
/// only between its writing and `docker create`.
pub const ENV_FILE: &str = "container.env";
/// The supervisor kills a container this long before its lease deadline:
/// `docker kill` goes through the daemon and takes longer than a signal.
pub const KILL_LEAD_MS: u64 = 200;
/// Longest wait for `docker create`.
const CREATE_MAX: Duration = Duration::from_secs(30);
/// Longest wait for `docker kill`, `rm`, `inspect` and `ps`.
const CALL_MAX: Duration = Duration::from_secs(10);
/// How long removal keeps trying while the daemon refuses.
const REMOVE_MAX: Duration = Duration::from_secs(20);
/// Pause between two tries of a removal.
const REMOVE_RETRY: Duration = Duration::from_millis(200);
/// Most stale containers one clean-up removes.
const STALE_MAX: usize = 10_000;
/// Containers named per `docker rm` call of the clean-up.
const RM_BATCH: usize = 64;

/// One attempt's container, as the supervisor creates and removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerRun {
    /// The CLI to call.
    pub program: PathBuf,
    /// Container name: `shoal-<store>-<task>-<attempt>`.
    pub name: String,
    /// The agent's store id (label `shoal.store`).
    pub store: String,
    /// Task id (label `shoal.task`).
    pub task_id: String,
    /// Attempt number (label `shoal.attempt`).
    pub attempt: u64,
    /// Image, mounts and network.
    pub container: ContainerSpec,
    /// Command and arguments; empty for the image's own.
    pub command: Vec<String>,
    /// Working directory inside the container.
    pub workdir: Option<PathBuf>,
    /// Memory and CPU limits.
    pub limits: Limits,
}

/// The name of an attempt's container.
pub fn container_name(store: &str, task_id: &str, attempt: u64) -> String {
    format!("shoal-{store}-{task_id}-{attempt}")
}

impl DockerRun {
    /// The arguments of `docker create` for this attempt (a pure function
    /// of the run, so it is tested without a daemon).
    pub fn create_args(&self, env_file: &Path) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "create".into(),
            // A pull may take minutes while the lease runs: images must be
            // on the node already.
            "--pull".into(),
            "never".into(),
            "--name".into(),
            self.name.clone(),
            "--label".into(),
            format!("{LABEL_STORE}={}", self.store),
            "--label".into(),
            format!("{LABEL_TASK}={}", self.task_id),
            "--label".into(),
            format!("{LABEL_ATTEMPT}={}", self.attempt),
            "--network".into(),
            self.container.network.as_str().into(),
            // stdout and stderr go to the attempt's files through the
            // attached client; a second copy in the daemon would only fill
            // its disk.
            "--log-driver".into(),
            "none".into(),
            "--pids-limit".into(),
            ATTEMPT_PIDS_MAX.to_string(),
            "--env-file".into(),
            env_file.display().to_string(),
        ];
        if let Some(milli) = self.limits.cpu_milli {
            args.push("--cpus".into());
            args.push(format!("{}.{:03}", milli / 1000, milli % 1000));
        }
        if let Some(bytes) = self.limits.memory_bytes {
            // Swap equal to memory: the limit is the limit, as in a cgroup.
            for flag in ["--memory", "--memory-swap"] {
                args.push(flag.into());
                args.push(format!("{bytes}b"));
            }
        }
        if let Some(dir) = &self.workdir {
            args.push("--workdir".into());
            args.push(dir.display().to_string());
        }
        for m in &self.container.mounts {
            let mut text = format!("type=bind,source={},target={}", m.source, m.target);
            if m.read_only {
                text.push_str(",readonly");
            }
            args.push("--mount".into());
            args.push(text);
        }
        // Everything after the image is the container's command line.
        args.push(self.container.image.clone());
        args.extend(self.command.iter().cloned());
        args
    }

    /// The arguments of the attached start: its exit code is the
    /// container's.
    pub fn start_args(&self) -> Vec<String> {
        vec!["start".into(), "--attach".into(), self.name.clone()]
    }

    /// Writes the environment file, creates the container and removes the
    /// file again. The error is the reason in words (docker's own).
    pub fn create(&self, attempt_dir: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
        let env_file = attempt_dir.join(ENV_FILE);
        write_env_file(&env_file, env)?;
        let created = call(&self.program, &self.create_args(&env_file), CREATE_MAX);
        let _ = std::fs::remove_file(&env_file);
        let out = created?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "docker create of image {:?} failed: {}",
                self.container.image,
                stderr_text(&out)
            ))
        }
    }

    /// `docker kill`: the container stops at once. Errors are ignored (it
    /// may have exited already); [`DockerRun::remove`] follows in any case.
    pub fn kill(&self) {
        let args = ["kill".to_string(), self.name.clone()];
        if let Ok(out) = call(&self.program, &args, CALL_MAX) {
            if !out.status.success() && !no_such_container(&out) {
                eprintln!("shoal supervisor: docker kill: {}", stderr_text(&out));
            }
        }
    }

    /// Whether the kernel's OOM killer ended the container.
    pub fn oom_killed(&self) -> bool {
        let args = [
            "inspect".to_string(),
            "--format".into(),
            "{{.State.OOMKilled}}".into(),
            self.name.clone(),
        ];
        call(&self.program, &args, CALL_MAX)
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "true")
    }

    /// `docker rm -f` until the daemon says the container is gone
    /// (bounded). The error says why it may still exist.
    pub fn remove(&self) -> Result<(), String> {
        remove_names(&self.program, std::slice::from_ref(&self.name))
    }
}

/// Removes containers by name, retrying while the daemon refuses.
fn remove_names(program: &Path, names: &[String]) -> Result<(), String> {
    let mut args = vec!["rm".to_string(), "-f".into()];
    args.extend(names.iter().cloned());
    let until = Instant::now() + REMOVE_MAX;
    loop {
        let why = match call(program, &args, CALL_MAX) {
            Ok(out) if out.status.success() || no_such_container(&out) => return Ok(()),
            Ok(out) => stderr_text(&out),
            Err(e) => e,
        };
        // Without the CLI no retry can help (and no container was made).
        if Instant::now() >= until || !program_exists(program) {
            return Err(format!("cannot remove container(s) {names:?}: {why}"));
        }
        std::thread::sleep(REMOVE_RETRY);
    }
}

/// Whether `program` can be found: a path that exists, or a name on PATH.
fn program_exists(program: &Path) -> bool {
    if program.components().count() > 1 {
        return program.exists();
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|dir| dir.join(program).is_file())
}

/// Writes `KEY=VALUE` lines, readable by the owner only.
fn write_env_file(path: &Path, env: &BTreeMap<String, String>) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut text = String::new();
    for (k, v) in env {
        // Checked by the protocol's spec validation; asserted here since a
        // line break would smuggle in another variable.
        if shoal_protocol::tasks::container::validate_env(k, v).is_err() {
            return Err(format!("env: {k:?} cannot be passed to a container"));
        }
        text.push_str(&format!("{k}={v}\n"));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// The docker CLI's `No such container` answer (removal and kill of a
/// container that is already gone).
fn no_such_container(out: &Output) -> bool {
    String::from_utf8_lossy(&out.stderr).contains("No such container")
}

fn stderr_text(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let text = text.trim();
    if text.is_empty() {
        format!("exit status {}", out.status)
    } else {
        text.chars().take(1_000).collect()
    }
}

/// Runs the CLI with `args`, its output captured, killed after `max`.
pub fn call(program: &Path, args: &[String], max: Duration) -> Result<Output, String> {
    let child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "the docker CLI ({}) is not installed on this node",
                program.display()
            ),
            _ => format!("cannot run {}: {e}", program.display()),
        })?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(max) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("{} {}: {e}", program.display(), args[0])),
        Err(_) => {
            kill_pid(pid);
            Err(format!(
                "{} {} gave no answer within {max:?}",
                program.display(),
                args.first().map_or("", String::as_str)
            ))
        }
    }
}

/// One container `docker ps` lists for a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its `shoal.task` label.
    pub task_id: String,
    /// Its `shoal.attempt` label (`None` if not a number).
    pub attempt: Option<u64>,
}

/// The `--format` of the clean-up's `docker ps`.
const PS_FORMAT: &str = "{{.Names}}\t{{.Label \"shoal.task\"}}\t{{.Label \"shoal.attempt\"}}";

/// Parses the clean-up's `docker ps` lines.
pub fn parse_ps(text: &str) -> Vec<Listed> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split('\t');
            let name = f.next()?.trim();
            if name.is_empty() {
                return None;
            }
            Some(Listed {
                name: name.to_string(),
                task_id: f.next().unwrap_or("").to_string(),
                attempt: f.next().and_then(|a| a.trim().parse().ok()),
            })
        })
        .take(STALE_MAX)
        .collect()
}

/// Removes every container labelled with `store` whose (task, attempt) is
/// not in `owned`, running or not. Returns how many it removed. Blocking.
pub fn remove_stale(program: &Path, store: &str, owned: &[(String, u64)]) -> Result<usize, String> {
    let args = [
        "ps".to_string(),
        "--all".into(),
        "--no-trunc".into(),
        "--filter".into(),
        format!("label={LABEL_STORE}={store}"),
        "--format".into(),
        PS_FORMAT.into(),
    ];
    let out = call(program, &args, CALL_MAX)?;
    if !out.status.success() {
        return Err(format!("docker ps: {}", stderr_text(&out)));
    }
    let stale: Vec<String> = parse_ps(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .filter(|c| {
            !c.attempt
                .is_some_and(|a| owned.iter().any(|(t, n)| *t == c.task_id && *n == a))
        })
        .map(|c| c.name)
        .collect();
    for batch in stale.chunks(RM_BATCH) {
        remove_names(program, batch)?;
    }
    Ok(stale.len())
}

/// The store id an agent wrote in its data directory, if any.
pub fn store_of(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("store-id")).ok()?;
    let id = text.trim();
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_protocol::tasks::container::{Mount, Network};

    fn run() -> DockerRun {
        let mut container = ContainerSpec::new("shoal-test-busybox:latest");
        container.mounts = vec![
            Mount::parse("/data/in:/in:ro").unwrap(),
            Mount::parse("/data/out:/out").unwrap(),
        ];
        DockerRun {
            program: DOCKER_PROGRAM.into(),
            name: container_name("ab12", "t-1", 3),
            store: "ab12".into(),
            task_id: "t-1".into(),
            attempt: 3,
            container,
            command: vec!["sh".into(), "-c".into(), "echo --not-a-flag".into()],
            workdir: Some("/work".into()),
            limits: Limits {
                memory_bytes: Some(256 << 20),
                cpu_milli: Some(250),
            },
        }
    }

    /// The value after `flag`, each time it occurs.
    fn values<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn the_create_command_carries_limits_labels_mounts_and_no_env_value() {
        let r = run();
        let args = r.create_args(Path::new("/a/container.env"));
        assert_eq!(args[0], "create");
        assert_eq!(values(&args, "--name"), ["shoal-ab12-t-1-3"]);
        assert_eq!(
            values(&args, "--label"),
            ["shoal.store=ab12", "shoal.task=t-1", "shoal.attempt=3"]
        );
        assert_eq!(values(&args, "--cpus"), ["0.250"]);
        assert_eq!(values(&args, "--memory"), ["268435456b"]);
        assert_eq!(values(&args, "--memory-swap"), ["268435456b"]);
        assert_eq!(values(&args, "--network"), ["none"]);
        assert_eq!(values(&args, "--pull"), ["never"]);
        assert_eq!(values(&args, "--workdir"), ["/work"]);
        assert_eq!(values(&args, "--env-file"), ["/a/container.env"]);
        assert_eq!(
            values(&args, "--mount"),
            [
                "type=bind,source=/data/in,target=/in,readonly",
                "type=bind,source=/data/out,target=/out"
            ]
        );
        assert!(!args.iter().any(|a| a == "-e" || a == "--env"), "{args:?}");
        // The image, then the command exactly as given, last.
        let image_at = args
            .iter()
            .position(|a| a == "shoal-test-busybox:latest")
            .unwrap();
        assert_eq!(&args[image_at + 1..], ["sh", "-c", "echo --not-a-flag"]);
        assert!(values(&args, "--mount").len() == 2 && image_at == args.len() - 4);
    }

    #[test]
    fn without_limits_or_command_the_image_decides() {
        let mut r = run();
        r.limits = Limits::default();
        r.command.clear();
        r.workdir = None;
        r.container.network = Network::Bridge;
        r.container.mounts.clear();
        let args = r.create_args(Path::new("/e"));
        for flag in [
            "--cpus",
            "--memory",
            "--memory-swap",
            "--workdir",
            "--mount",
        ] {
            assert!(values(&args, flag).is_empty(), "{flag} in {args:?}");
        }
        assert_eq!(values(&args, "--network"), ["bridge"]);
        assert_eq!(args.last().unwrap(), "shoal-test-busybox:latest");
        assert_eq!(r.start_args(), ["start", "--attach", "shoal-ab12-t-1-3"]);
        let cores = Limits {
            cpu_milli: Some(2_500),
            memory_bytes: None,
        };
        r.limits = cores;
        assert_eq!(values(&r.create_args(Path::new("/e")), "--cpus"), ["2.500"]);
    }

    #[test]
    fn the_env_file_is_private_and_refuses_line_breaks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ENV_FILE);
        let env = BTreeMap::from([
            ("A".to_string(), "1".to_string()),
            ("SECRET".to_string(), "x y=z".to_string()),
        ]);
        write_env_file(&path, &env).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "A=1\nSECRET=x y=z\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let bad = BTreeMap::from([("A".to_string(), "1\nB=2".to_string())]);
        assert!(write_env_file(&path, &bad).is_err());
    }

    #[test]
    fn ps_lines_name_the_attempt_of_each_container() {
        let text = "shoal-s-t1-2\tt1\t2\nshoal-s-t2-x\tt2\tx\n\n";
        assert_eq!(
            parse_ps(text),
            [
                Listed {
                    name: "shoal-s-t1-2".into(),
                    task_id: "t1".into(),
                    attempt: Some(2)
                },
                Listed {
                    name: "shoal-s-t2-x".into(),
                    task_id: "t2".into(),
                    attempt: None
                }
            ]
        );
    }

    #[test]
    fn a_store_id_file_names_the_store_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(store_of(dir.path()), None);
        std::fs::write(dir.path().join("store-id"), "00ff\n").unwrap();
        assert_eq!(store_of(dir.path()).as_deref(), Some("00ff"));
        std::fs::write(dir.path().join("store-id"), "../x\n").unwrap();
        assert_eq!(store_of(dir.path()), None);
    }

    #[test]
    fn a_missing_cli_is_named_as_such_and_not_retried() {
        let missing = Path::new("/no/such/docker");
        let e = call(missing, &["info".into()], CALL_MAX).unwrap_err();
        assert!(e.contains("not installed"), "{e}");
        let started = Instant::now();
        assert!(remove_names(missing, &["x".into()]).is_err());
        assert!(started.elapsed() < REMOVE_RETRY, "{:?}", started.elapsed());
        assert!(program_exists(Path::new("sh")) && !program_exists(Path::new("no-such-cli")));
    }
}
