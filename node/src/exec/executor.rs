//! The agent's side of attempts: starts supervisors (or mock attempts),
//! forwards lease extensions and kills, accounts slots, and reports every
//! end exactly once on the exit channel.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::cgroup::Isolation;
use super::clock::{boot_deadline_ms, boot_now_ms};
use super::docker::{self, DockerRun};
use super::recover::{finish_abandoned, recover_dir, RecoveredAttempt};
use super::status::{attempt_dir, read_status, AttemptState, REPORTED_FILE};
use super::supervisor::SUPERVISE_ARG;
use super::types::{
    io_err, validate_task_id, AttemptExit, AttemptOutcome, AttemptSpec, Driver, ExecError,
    KillReason,
};
use super::wire::{FromSupervisor, SupervisorSpec, ToSupervisor};

/// Settings of an [`Executor`].
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// The agent's data directory; attempts live in `attempts/` below it.
    pub data_dir: PathBuf,
    /// Slots this node offers.
    pub slots_total: u32,
    /// This node's name (`SHOAL_NODE`).
    pub node_name: String,
    /// This party's name (`SHOAL_PARTY`).
    pub party: String,
    /// The supervisor program: the `shoal` binary itself by default.
    pub supervisor_program: PathBuf,
    /// Arguments that select supervisor mode.
    pub supervisor_args: Vec<String>,
    /// The cgroups attempts run in (none by default).
    pub isolation: Isolation,
    /// The agent's store id, which names and labels its containers (read
    /// from the data directory's `store-id`; containers cannot run
    /// without it).
    pub store: Option<String>,
    /// The docker CLI of the docker driver.
    pub docker_program: PathBuf,
}

impl ExecutorConfig {
    /// A config whose supervisor is this very binary in `__supervise` mode.
    pub fn new(
        data_dir: PathBuf,
        slots_total: u32,
        node_name: impl Into<String>,
        party: impl Into<String>,
    ) -> Result<ExecutorConfig, ExecError> {
        Ok(ExecutorConfig {
            slots_total,
            node_name: node_name.into(),
            party: party.into(),
            supervisor_program: std::env::current_exe()
                .map_err(io_err("cannot find the shoal binary"))?,
            supervisor_args: vec![SUPERVISE_ARG.to_string()],
            isolation: Isolation::None {
                why: "not configured".into(),
            },
            store: docker::store_of(&data_dir),
            docker_program: docker::DOCKER_PROGRAM.into(),
            data_dir,
        })
    }
}

/// A started attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptHandle {
    /// Task id.
    pub task_id: String,
    /// Attempt number.
    pub attempt: u64,
    /// Its directory (stdout, stderr, status.json); `None` for mock.
    pub dir: Option<PathBuf>,
}

enum Control {
    Extend { lease_deadline_boot_ms: u64 },
    Kill(KillReason),
}

struct Running {
    control: mpsc::UnboundedSender<Control>,
    slots: u32,
}

type Key = (String, u64);

struct State {
    slots_free: u32,
    running: HashMap<Key, Running>,
}

struct Inner {
    config: ExecutorConfig,
    state: Mutex<State>,
    exits: mpsc::UnboundedSender<AttemptExit>,
}

/// Runs attempts. Cheap to clone. Dropping every clone closes the pipes to
/// the supervisors, which kill their attempts.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("slots_total", &self.inner.config.slots_total)
            .field("slots_free", &self.slots_free())
            .finish()
    }
}

impl Executor {
    /// A new executor and the channel on which every attempt's end arrives.
    pub fn new(mut config: ExecutorConfig) -> (Executor, mpsc::UnboundedReceiver<AttemptExit>) {
        // Canonical, so that attempt directories (also the processes'
        // SHOAL_ATTEMPT_DIR) are spelled the same after a restart.
        let _ = std::fs::create_dir_all(&config.data_dir);
        if let Ok(dir) = config.data_dir.canonicalize() {
            config.data_dir = dir;
        }
        let (exits, rx) = mpsc::unbounded_channel();
        let state = State {
            slots_free: config.slots_total,
            running: HashMap::new(),
        };
        let inner = Arc::new(Inner {
            config,
            state: Mutex::new(state),
            exits,
        });
        (Executor { inner }, rx)
    }

    /// Slots this node offers.
    pub fn slots_total(&self) -> u32 {
        self.inner.config.slots_total
    }

    /// The store id that names this node's containers, if known.
    pub fn store(&self) -> Option<String> {
        self.inner.config.store.clone()
    }

    /// The docker CLI of the docker driver.
    pub fn docker_program(&self) -> PathBuf {
        self.inner.config.docker_program.clone()
    }

    /// Slots not held by a running attempt.
    pub fn slots_free(&self) -> u32 {
        self.lock().slots_free
    }

    /// (task, attempt) of every attempt running here.
    pub fn running(&self) -> Vec<(String, u64)> {
        let mut keys: Vec<_> = self.lock().running.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Directory of an attempt of a command task (its logs).
    pub fn attempt_dir(&self, task_id: &str, attempt: u64) -> PathBuf {
        attempt_dir(&self.inner.config.data_dir, task_id, attempt)
    }

    /// Starts an attempt whose lease ends `lease_remaining` from now. Must
    /// be called inside a tokio runtime. Takes `spec.slots` slots until the
    /// attempt's end is reported.
    pub fn start(
        &self,
        spec: AttemptSpec,
        lease_remaining: Duration,
    ) -> Result<AttemptHandle, ExecError> {
        validate_task_id(&spec.task_id)?;
        let lease_deadline_boot_ms = boot_deadline_ms(lease_remaining);
        let key = (spec.task_id.clone(), spec.attempt);
        let (control, control_rx) = mpsc::unbounded_channel();
        self.reserve(&key, spec.slots, control)?;
        let weak = Arc::downgrade(&self.inner);
        let dir = match &spec.driver {
            Driver::Mock {
                duration,
                exit_code,
            } => {
                tokio::spawn(drive_mock(
                    weak,
                    key,
                    *duration,
                    *exit_code,
                    lease_deadline_boot_ms,
                    spec.timeout,
                    control_rx,
                ));
                None
            }
            Driver::Command { program, args } => {
                let sup_spec = self.supervisor_spec(&spec, program, args, lease_deadline_boot_ms);
                Some(self.spawn_attempt(weak, key, sup_spec, control_rx)?)
            }
            Driver::Docker { container, command } => {
                let Some(store) = self.inner.config.store.clone() else {
                    self.release(&key);
                    return Err(ExecError::NoStore);
                };
                let run = DockerRun {
                    program: self.inner.config.docker_program.clone(),
                    name: docker::container_name(&store, &spec.task_id, spec.attempt),
                    store,
                    task_id: spec.task_id.clone(),
                    attempt: spec.attempt,
                    container: container.clone(),
                    command: command.clone(),
                    workdir: spec.cwd.clone(),
                    limits: spec.limits,
                };
                let program = run.program.display().to_string();
                let mut sup_spec = self.supervisor_spec(
                    &spec,
                    &program,
                    &run.start_args(),
                    lease_deadline_boot_ms,
                );
                // Docker limits the container; the CLI client runs in no
                // cgroup of ours and the working directory is the container's.
                sup_spec.cgroup = None;
                sup_spec.cwd = None;
                sup_spec.docker = Some(run);
                Some(self.spawn_attempt(weak, key, sup_spec, control_rx)?)
            }
        };
        Ok(AttemptHandle {
            task_id: spec.task_id,
            attempt: spec.attempt,
            dir,
        })
    }

    /// What the supervisor of a process attempt needs.
    fn supervisor_spec(
        &self,
        spec: &AttemptSpec,
        program: &str,
        args: &[String],
        lease_deadline_boot_ms: u64,
    ) -> SupervisorSpec {
        SupervisorSpec {
            task_id: spec.task_id.clone(),
            attempt: spec.attempt,
            party: self.inner.config.party.clone(),
            node: self.inner.config.node_name.clone(),
            program: program.to_string(),
            args: args.to_vec(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            attempt_dir: attempt_dir(&self.inner.config.data_dir, &spec.task_id, spec.attempt),
            lease_deadline_boot_ms,
            timeout_ms: spec
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            cgroup: self
                .inner
                .config
                .isolation
                .attempt(&spec.task_id, spec.attempt, spec.limits),
            docker: None,
        }
    }

    /// Spawns the supervisor (outside the lock, so that starts do not
    /// serialise on fork) and the task that drives it; returns the
    /// attempt's directory.
    fn spawn_attempt(
        &self,
        weak: Weak<Inner>,
        key: Key,
        sup_spec: SupervisorSpec,
        control_rx: mpsc::UnboundedReceiver<Control>,
    ) -> Result<PathBuf, ExecError> {
        let dir = sup_spec.attempt_dir.clone();
        let child = match self.spawn_supervisor(&dir) {
            Ok(child) => child,
            Err(e) => {
                self.release(&key);
                return Err(e);
            }
        };
        tokio::spawn(drive_supervisor(weak, key, child, sup_spec, control_rx));
        Ok(dir)
    }

    /// Takes the slots and registers the attempt, or says why not.
    fn reserve(
        &self,
        key: &Key,
        slots: u32,
        control: mpsc::UnboundedSender<Control>,
    ) -> Result<(), ExecError> {
        let mut state = self.lock();
        if state.running.contains_key(key) {
            return Err(ExecError::AlreadyRunning {
                task_id: key.0.clone(),
                attempt: key.1,
            });
        }
        if slots > state.slots_free {
            return Err(ExecError::NoSlots {
                needed: slots,
                free: state.slots_free,
            });
        }
        state.slots_free -= slots;
        state
            .running
            .insert(key.clone(), Running { control, slots });
        Ok(())
    }

    /// Undoes `reserve` for an attempt that never started.
    fn release(&self, key: &Key) {
        let mut state = self.lock();
        if let Some(running) = state.running.remove(key) {
            state.slots_free += running.slots;
        }
    }

    /// Moves the attempt's lease deadline to `lease_remaining` from now.
    pub fn extend(
        &self,
        task_id: &str,
        attempt: u64,
        lease_remaining: Duration,
    ) -> Result<(), ExecError> {
        let lease_deadline_boot_ms = boot_deadline_ms(lease_remaining);
        self.send(
            task_id,
            attempt,
            Control::Extend {
                lease_deadline_boot_ms,
            },
        )
    }

    /// Kills the attempt's whole process group; its end is reported on the
    /// exit channel with the matching outcome.
    pub fn kill(&self, task_id: &str, attempt: u64, reason: KillReason) -> Result<(), ExecError> {
        self.send(task_id, attempt, Control::Kill(reason))
    }

    /// Attempts left by an earlier run of the agent (not running in this
    /// executor, not yet marked reported): their process groups are made
    /// sure dead first. See [`recover`](super::recover::recover). Blocking
    /// (it may wait a few seconds for leftovers to die): call it before
    /// serving, or through `spawn_blocking`.
    pub fn recover(&self) -> Result<Vec<RecoveredAttempt>, ExecError> {
        let running = self.running();
        let found = recover_dir(&self.inner.config.data_dir, &running)?;
        Ok(found)
    }

    /// Records that the end of this attempt was reported to the mesh, so
    /// that `recover` does not report it again.
    pub fn mark_reported(&self, task_id: &str, attempt: u64) -> Result<(), ExecError> {
        validate_task_id(task_id)?;
        let dir = self.attempt_dir(task_id, attempt);
        if !dir.exists() {
            return Ok(()); // mock attempts have no directory
        }
        std::fs::write(dir.join(REPORTED_FILE), b"")
            .map_err(io_err(format!("cannot mark {} reported", dir.display())))
    }

    fn send(&self, task_id: &str, attempt: u64, msg: Control) -> Result<(), ExecError> {
        let state = self.lock();
        let running = state
            .running
            .get(&(task_id.to_string(), attempt))
            .ok_or_else(|| ExecError::NotRunning {
                task_id: task_id.to_string(),
                attempt,
            })?;
        // A closed receiver means the attempt is ending; its exit follows.
        let _ = running.control.send(msg);
        Ok(())
    }

    fn spawn_supervisor(&self, dir: &Path) -> Result<tokio::process::Child, ExecError> {
        std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
        let log_path = dir.join("supervisor.log");
        let log = std::fs::File::create(&log_path)
            .map_err(io_err(format!("cannot create {}", log_path.display())))?;
        tokio::process::Command::new(&self.inner.config.supervisor_program)
            .args(&self.inner.config.supervisor_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(io_err(format!(
                "cannot start supervisor {}",
                self.inner.config.supervisor_program.display()
            )))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock_state(&self.inner)
    }
}

fn lock_state(inner: &Inner) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock leaves counters that are still
    // consistent (each update is one statement); keep going.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Frees the attempt's slots and reports its end (once).
fn finish(weak: &Weak<Inner>, key: Key, outcome: AttemptOutcome) {
    let Some(inner) = weak.upgrade() else { return };
    let mut state = lock_state(&inner);
    if let Some(running) = state.running.remove(&key) {
        state.slots_free += running.slots;
        debug_assert!(state.slots_free <= inner.config.slots_total);
    }
    drop(state);
    let _ = inner.exits.send(AttemptExit {
        task_id: key.0,
        attempt: key.1,
        outcome,
    });
}

async fn drive_mock(
    weak: Weak<Inner>,
    key: Key,
    duration: Duration,
    exit_code: i32,
    lease_deadline_boot_ms: u64,
    timeout: Option<Duration>,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let now = tokio::time::Instant::now();
    let lease_at = |deadline_ms: u64| {
        tokio::time::Instant::now()
            + Duration::from_millis(deadline_ms.saturating_sub(boot_now_ms()))
    };
    let done_at = now + duration;
    let timeout_at = timeout.map(|t| now + t);
    let mut lease = lease_at(lease_deadline_boot_ms);
    let outcome = loop {
        tokio::select! {
            biased;
            _ = tokio::time::sleep_until(done_at) => break AttemptOutcome::Exited { code: exit_code },
            _ = tokio::time::sleep_until(lease) => break AttemptOutcome::Fenced,
            _ = tokio::time::sleep_until(timeout_at.unwrap_or(done_at)), if timeout_at.is_some() => {
                break AttemptOutcome::TimedOut
            }
            msg = control.recv() => match msg {
                Some(Control::Extend { lease_deadline_boot_ms }) => lease = lease_at(lease_deadline_boot_ms),
                Some(Control::Kill(reason)) => break AttemptOutcome::from_kill(reason),
                None => break AttemptOutcome::AgentLost,
            },
        }
    };
    finish(&weak, key, outcome);
}

async fn drive_supervisor(
    weak: Weak<Inner>,
    key: Key,
    mut child: tokio::process::Child,
    spec: SupervisorSpec,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let dir = spec.attempt_dir.clone();
    let mut stdin = child.stdin.take();
    let Some(stdout) = child.stdout.take() else {
        return finish(&weak, key, AttemptOutcome::SupervisorLost);
    };
    let mut lines = BufReader::new(stdout).lines();
    let mut outcome = None;
    let mut control_open = true;
    if let Ok(line) = serde_json::to_string(&spec) {
        write_line(&mut stdin, line).await;
    }
    loop {
        tokio::select! {
            msg = control.recv(), if control_open => {
                let to = match msg {
                    Some(Control::Extend { lease_deadline_boot_ms }) => ToSupervisor::Extend { lease_deadline_boot_ms },
                    Some(Control::Kill(reason)) => ToSupervisor::Kill { reason },
                    None => {
                        // The executor is gone: closing the pipe kills the attempt.
                        control_open = false;
                        stdin = None;
                        continue;
                    }
                };
                if let Ok(line) = serde_json::to_string(&to) {
                    write_line(&mut stdin, line).await;
                }
            }
            line = lines.next_line() => match line {
                Ok(Some(line)) => match serde_json::from_str::<FromSupervisor>(&line) {
                    Ok(FromSupervisor::Started { pid }) => tracing::debug!(task = %key.0, attempt = key.1, pid, "attempt started"),
                    Ok(FromSupervisor::Finished { outcome: o }) => { outcome = Some(o); break; }
                    Err(e) => tracing::warn!(error = %e, "bad line from supervisor"),
                },
                Ok(None) | Err(_) => break,
            },
        }
    }
    drop(stdin);
    let _ = child.wait().await;
    let outcome = match outcome {
        Some(o) => o,
        None => {
            let outcome = settle_lost_supervisor(&dir).await;
            if let Some(run) = spec.docker {
                // The supervisor cannot remove its container any more.
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || run.remove()).await {
                    tracing::error!(error = %e, "container of a lost supervisor");
                }
            }
            outcome
        }
    };
    finish(&weak, key, outcome);
}

/// The supervisor died without a report: make sure its group is dead.
async fn settle_lost_supervisor(dir: &Path) -> AttemptOutcome {
    match read_status(dir) {
        Ok(status) => match &status.state {
            AttemptState::Finished { outcome } => outcome.clone(),
            AttemptState::Running { .. } | AttemptState::Starting => {
                let dir = dir.to_path_buf();
                tokio::task::spawn_blocking(move || {
                    finish_abandoned(&dir, status, AttemptOutcome::SupervisorLost)
                })
                .await
                .unwrap_or(AttemptOutcome::SupervisorLost)
            }
        },
        Err(_) => AttemptOutcome::SupervisorLost,
    }
}

async fn write_line(stdin: &mut Option<tokio::process::ChildStdin>, mut line: String) {
    line.push('\n');
    if let Some(pipe) = stdin {
        if pipe.write_all(line.as_bytes()).await.is_err() || pipe.flush().await.is_err() {
            // The supervisor is gone; its end will show up on stdout.
            *stdin = None;
        }
    }
}
