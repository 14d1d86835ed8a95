//! The per-attempt supervisor: `shoal __supervise`, a small process between
//! the agent and the command, like a container shim. It keeps the fence
//! when the agent cannot: it kills the attempt's whole process group when
//! the lease deadline passes without an extension (it reads its own clock,
//! so a frozen agent changes nothing), and at once when the agent's end of
//! the pipe closes (agent killed or restarted). Belt and braces: the agent's
//! death also sends it SIGTERM (PR_SET_PDEATHSIG), which it treats the same.
//!
//! It is a child subreaper, so grandchildren that leave the group still come
//! back to it and are killed before it reports the attempt finished.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{getppid, Pid};

use super::cgroup::{self, AttemptCgroup};
use super::clock::boot_now_ms;
use super::docker::{self, DockerRun};
use super::procs::{children_of, kill_group, kill_pid};
use super::status::{boot_id, write_status, AttemptState, AttemptStatus};
use super::types::{AttemptOutcome, KillReason};
use super::wire::{FromSupervisor, SupervisorSpec, ToSupervisor, LINE_LEN_MAX};

/// First argument that selects supervisor mode in the `shoal` binary.
pub const SUPERVISE_ARG: &str = "__supervise";
/// Longest wait between two looks at the clock (deadlines are checked at
/// least this often even without events).
const TICK_MAX: Duration = Duration::from_millis(50);
/// After SIGKILL, how long to wait for the command to be reaped before
/// reporting anyway (a process stuck in uninterruptible sleep).
const REAP_AFTER_KILL_MAX: Duration = Duration::from_secs(30);
/// After the command is reaped, how long to keep killing and reaping
/// stragglers (grandchildren) before reporting.
const STRAGGLERS_MAX: Duration = Duration::from_secs(5);

enum Event {
    Control(ToSupervisor),
    AgentGone,
    CommandExited(AttemptOutcome),
    AllReaped,
}

/// Entry point of `shoal __supervise`; returns the process exit code. The
/// spec comes as the first line on stdin.
pub fn main() -> i32 {
    match run() {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("shoal supervisor: {message}");
            // The agent reads the reason into the task record: without it a
            // full disk looked like an attempt lost for no reason.
            let outcome = AttemptOutcome::SpawnFailed { reason: message };
            let _ = send(
                &mut std::io::stdout(),
                &FromSupervisor::Finished { outcome },
            );
            2
        }
    }
}

fn run() -> Result<(), String> {
    // Signals that would otherwise kill the supervisor and orphan the group
    // (Ctrl-C to the agent's terminal, the parent-death signal) are blocked
    // here and read by a thread. The command gets a clean mask from the
    // trampoline it starts through (`cgroup::ENTER_ARG`): fork and exec
    // would pass this one on.
    let parent = getppid();
    let mut signals = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM)
        .map_err(|e| format!("cannot set the parent-death signal: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("cannot become a child subreaper: {e}"))?;

    let mut stdin = BufReader::new(std::io::stdin());
    let spec = read_spec(&mut stdin)?;
    std::fs::create_dir_all(&spec.attempt_dir)
        .map_err(|e| format!("cannot create {}: {e}", spec.attempt_dir.display()))?;
    let mut status = AttemptStatus {
        task_id: spec.task_id.clone(),
        attempt: spec.attempt,
        boot_id: boot_id(),
        supervisor_pid: std::process::id(),
        state: AttemptState::Starting,
    };
    write_status(&spec.attempt_dir, &status).map_err(|e| format!("cannot write status: {e}"))?;

    let mut report = std::io::stdout();
    if let Some(cgroup) = &spec.cgroup {
        if let Err(e) = cgroup.create() {
            // The limits are a promise to the neighbours: no cgroup, no run.
            let _ = cgroup.remove();
            return Err(format!("cannot set up the attempt's cgroup: {e}"));
        }
    }
    let created = match &spec.docker {
        Some(run) => run.create(&spec.attempt_dir, &attempt_env(&spec)),
        None => Ok(()),
    };
    let outcome = match created.and_then(|()| spawn(&spec)) {
        Err(reason) => AttemptOutcome::SpawnFailed { reason },
        Ok(pid) => {
            status.state = AttemptState::Running { pgid: pid };
            if let Err(e) = write_status(&spec.attempt_dir, &status) {
                // Without a status the restart path cannot find the group:
                // refuse to run rather than risk an unfenced orphan.
                kill_group(pid);
                return Err(format!("cannot write status: {e}"));
            }
            let _ = send(&mut report, &FromSupervisor::Started { pid: pid as u32 });
            supervise(&spec, pid, stdin, (signals, parent))
        }
    };
    let outcome = match &spec.cgroup {
        Some(cgroup) => settle_cgroup(&spec, cgroup, outcome),
        None => outcome,
    };
    let outcome = match &spec.docker {
        Some(run) => settle_container(&spec, run, outcome),
        None => outcome,
    };
    status.state = AttemptState::Finished {
        outcome: outcome.clone(),
    };
    if let Err(e) = write_status(&spec.attempt_dir, &status) {
        eprintln!("shoal supervisor: cannot write final status: {e}");
    }
    // The agent may be gone; the status file then tells its successor.
    let _ = send(&mut report, &FromSupervisor::Finished { outcome });
    Ok(())
}

fn read_spec(stdin: &mut impl BufRead) -> Result<SupervisorSpec, String> {
    let mut line = String::new();
    stdin
        .take(LINE_LEN_MAX as u64)
        .read_line(&mut line)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    serde_json::from_str(&line).map_err(|e| format!("bad spec line: {e}"))
}

fn spawn(spec: &SupervisorSpec) -> Result<i32, String> {
    let open = |name: &str| {
        std::fs::File::create(spec.attempt_dir.join(name)).map_err(|e| {
            format!(
                "cannot create {name} in {}: {e}",
                spec.attempt_dir.display()
            )
        })
    };
    // The trampoline's exec failure would only show as an exit code: find
    // the program here, to report it as a failed start.
    // The docker CLI is the agent's program; the task's PATH is the
    // container's.
    let path = match spec.docker {
        Some(_) => None,
        None => spec.env.get("PATH").cloned(),
    }
    .or_else(|| std::env::var("PATH").ok());
    find_program(&spec.program, spec.cwd.as_deref(), path.as_deref())?;
    let procs = spec
        .cgroup
        .as_ref()
        .map(|c| c.procs_files())
        .unwrap_or_default();
    let mut command = Command::new("/proc/self/exe");
    command.args(cgroup::enter_args(&procs, &spec.program, &spec.args));
    if spec.docker.is_none() {
        // A container's environment went into its `docker create`.
        command.envs(attempt_env(spec));
    }
    command
        .stdin(Stdio::null())
        .stdout(open("stdout")?)
        .stderr(open("stderr")?)
        .process_group(0);
    if let Some(cwd) = &spec.cwd {
        // spawn() says only "No such file or directory" for a missing cwd,
        // which reads as a missing program.
        if !cwd.is_dir() {
            return Err(format!("working directory {cwd:?} does not exist"));
        }
        command.current_dir(cwd);
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", spec.program))?;
    // Reaped by the waiter thread through waitpid(-1), not through `child`.
    i32::try_from(child.id()).map_err(|_| "pid out of range".to_string())
}

/// The attempt's environment: the task's, then the `SHOAL_*` variables.
fn attempt_env(spec: &SupervisorSpec) -> std::collections::BTreeMap<String, String> {
    let mut env = spec.env.clone();
    for (k, v) in [
        ("SHOAL_TASK_ID", spec.task_id.clone()),
        ("SHOAL_ATTEMPT", spec.attempt.to_string()),
        ("SHOAL_PARTY", spec.party.clone()),
        ("SHOAL_NODE", spec.node.clone()),
        ("SHOAL_ATTEMPT_DIR", spec.attempt_dir.display().to_string()),
    ] {
        env.insert(k.to_string(), v);
    }
    env
}

/// Checks that `program` names an executable file, as exec would find it.
fn find_program(program: &str, cwd: Option<&Path>, path: Option<&str>) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    let found = if program.contains('/') {
        let p = Path::new(program);
        executable(&match cwd {
            Some(dir) if p.is_relative() => dir.join(p),
            _ => p.to_path_buf(),
        })
    } else {
        path.unwrap_or("/usr/local/bin:/usr/bin:/bin")
            .split(':')
            .any(|dir| executable(&Path::new(dir).join(program)))
    };
    if found {
        Ok(())
    } else {
        Err(format!(
            "cannot start {program:?}: no such executable file (PATH={})",
            path.unwrap_or("")
        ))
    }
}

fn supervise(
    spec: &SupervisorSpec,
    pid: i32,
    stdin: BufReader<std::io::Stdin>,
    (signals, parent): (SigSet, Pid),
) -> AttemptOutcome {
    let (tx, rx) = mpsc::channel();
    spawn_control_reader(stdin, tx.clone());
    spawn_reaper(pid, tx.clone());
    spawn_signal_waiter(signals, parent, tx);

    let started_ms = boot_now_ms();
    let timeout_deadline_ms = spec.timeout_ms.map(|t| started_ms.saturating_add(t));
    // A container dies through the daemon, which takes longer than a signal.
    let lead_ms = spec.docker.as_ref().map_or(0, |_| docker::KILL_LEAD_MS);
    let fence_at = |lease_deadline_ms: u64| lease_deadline_ms.saturating_sub(lead_ms);
    let mut lease_deadline_ms = fence_at(spec.lease_deadline_boot_ms);
    let mut stopper = Stopper {
        pid,
        container: spec.docker.as_ref(),
        container_killed: false,
    };
    let mut killed: Option<(AttemptOutcome, Instant)> = None;
    let mut exited: Option<AttemptOutcome> = None;

    // Phase 1: until the command itself is reaped.
    let outcome = loop {
        let now = boot_now_ms();
        if killed.is_none() {
            if now >= lease_deadline_ms {
                killed = Some((AttemptOutcome::Fenced, Instant::now()));
            } else if timeout_deadline_ms.is_some_and(|t| now >= t) {
                killed = Some((AttemptOutcome::TimedOut, Instant::now()));
            }
            if killed.is_some() {
                stopper.stop();
            }
        }
        if let Some((reason, at)) = &killed {
            if at.elapsed() > REAP_AFTER_KILL_MAX {
                break reason.clone();
            }
        }
        let next_ms = timeout_deadline_ms.map_or(lease_deadline_ms, |t| t.min(lease_deadline_ms));
        let wait = Duration::from_millis(next_ms.saturating_sub(now)).min(TICK_MAX);
        match rx.recv_timeout(wait) {
            Ok(Event::Control(ToSupervisor::Extend {
                lease_deadline_boot_ms,
            })) => lease_deadline_ms = fence_at(lease_deadline_boot_ms),
            Ok(Event::Control(ToSupervisor::Kill { reason })) => {
                kill_now(&mut killed, &mut stopper, AttemptOutcome::from_kill(reason))
            }
            Ok(Event::AgentGone) => kill_now(&mut killed, &mut stopper, AttemptOutcome::AgentLost),
            Ok(Event::CommandExited(by_itself)) => {
                exited = Some(by_itself.clone());
                break killed.map_or(by_itself, |(reason, _)| reason);
            }
            Ok(Event::AllReaped) => break killed.map_or(AttemptOutcome::SupervisorLost, |k| k.0),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break killed.map_or(AttemptOutcome::SupervisorLost, |k| k.0)
            }
        }
    };
    tracing::debug!(?outcome, ?exited, "command ended");

    // Phase 2: nothing of the attempt may outlive its report. The reaper
    // says `AllReaped` once this subreaper has no child left at all, which
    // for most commands follows their exit at once; only stragglers that
    // outlive that first wait are looked up in /proc (a scan of every
    // process on the machine, the dearest step of a short attempt).
    let until = Instant::now() + STRAGGLERS_MAX;
    let mut scan = false;
    loop {
        kill_group(pid);
        if scan {
            for child in children_of(std::process::id() as i32) {
                kill_pid(child);
            }
        }
        scan = true;
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(TICK_MAX);
        if wait.is_zero() {
            break;
        }
        match rx.recv_timeout(wait) {
            Ok(Event::AllReaped) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            _ => {}
        }
    }
    outcome
}

/// An OOM kill inside the cgroup turns a death by signal (or a shell's
/// 137) into `OutOfMemory`, noted at the end of the attempt's stderr; then
/// whatever is left in the cgroup is killed and the cgroup removed.
fn settle_cgroup(
    spec: &SupervisorSpec,
    cgroup: &AttemptCgroup,
    outcome: AttemptOutcome,
) -> AttemptOutcome {
    let died_by_itself = matches!(
        outcome,
        AttemptOutcome::Signaled { .. } | AttemptOutcome::Exited { code: 1.. }
    );
    let outcome = match (died_by_itself, cgroup.limits.memory_bytes) {
        (true, Some(limit_bytes)) if cgroup.oom_kills() > 0 => {
            note_oom(spec, limit_bytes);
            AttemptOutcome::OutOfMemory { limit_bytes }
        }
        _ => outcome,
    };
    if let Err(e) = cgroup.remove() {
        eprintln!("shoal supervisor: {e}");
    }
    outcome
}

fn kill_now(
    killed: &mut Option<(AttemptOutcome, Instant)>,
    stopper: &mut Stopper<'_>,
    reason: AttemptOutcome,
) {
    if killed.is_none() {
        *killed = Some((reason, Instant::now()));
    }
    stopper.stop();
}

/// Kills the attempt: its container first (once: `docker kill` is a call
/// to the daemon), then the process group.
struct Stopper<'a> {
    pid: i32,
    container: Option<&'a DockerRun>,
    container_killed: bool,
}

impl Stopper<'_> {
    fn stop(&mut self) {
        if let Some(run) = self.container {
            if !self.container_killed {
                self.container_killed = true;
                run.kill();
            }
        }
        kill_group(self.pid);
    }
}

/// A container the OOM killer ended at its memory limit turns the attempt
/// into `OutOfMemory`, as in a cgroup; then the container is removed
/// (killed first if anything is left of it), whatever the outcome.
fn settle_container(
    spec: &SupervisorSpec,
    run: &DockerRun,
    outcome: AttemptOutcome,
) -> AttemptOutcome {
    let died_by_itself = matches!(
        outcome,
        AttemptOutcome::Signaled { .. } | AttemptOutcome::Exited { code: 1.. }
    );
    let outcome = match (died_by_itself, run.limits.memory_bytes) {
        (true, Some(limit_bytes)) if run.oom_killed() => {
            note_oom(spec, limit_bytes);
            AttemptOutcome::OutOfMemory { limit_bytes }
        }
        _ => outcome,
    };
    if let Err(e) = run.remove() {
        eprintln!("shoal supervisor: {e}");
    }
    outcome
}

/// Says at the end of the attempt's stderr that the OOM killer ended it.
fn note_oom(spec: &SupervisorSpec, limit_bytes: u64) {
    let note = format!(
        "\nshoal: the OOM killer killed this attempt at its memory limit of {} MiB\n",
        limit_bytes >> 20
    );
    let _ = std::fs::OpenOptions::new()
        .append(true)
        .open(spec.attempt_dir.join("stderr"))
        .and_then(|mut f| f.write_all(note.as_bytes()));
}

fn spawn_control_reader(mut stdin: BufReader<std::io::Stdin>, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || loop {
        let mut line = String::new();
        match (&mut stdin).take(LINE_LEN_MAX as u64).read_line(&mut line) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Event::AgentGone);
                return;
            }
            Ok(_) => match serde_json::from_str::<ToSupervisor>(&line) {
                Ok(msg) => {
                    if tx.send(Event::Control(msg)).is_err() {
                        return;
                    }
                }
                // A bad line from our own agent is a bug; killing is the
                // safe side of it.
                Err(e) => {
                    eprintln!("shoal supervisor: bad control line: {e}");
                    let _ = tx.send(Event::Control(ToSupervisor::Kill {
                        reason: KillReason::Fenced,
                    }));
                }
            },
        }
    });
}

fn spawn_reaper(command_pid: i32, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == command_pid => {
                let _ = tx.send(Event::CommandExited(AttemptOutcome::Exited { code }));
            }
            Ok(WaitStatus::Signaled(p, signal, _)) if p.as_raw() == command_pid => {
                let _ = tx.send(Event::CommandExited(AttemptOutcome::Signaled {
                    signal: signal as i32,
                }));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => {
                // ECHILD: no child left, the whole attempt is reaped.
                let _ = tx.send(Event::AllReaped);
                return;
            }
        }
    });
}

/// Most signals the waiter examines before it stops listening.
const SIGNALS_MAX: usize = 10_000;

fn spawn_signal_waiter(signals: SigSet, parent: Pid, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        for _ in 0..SIGNALS_MAX {
            let Ok(signal) = signals.wait() else { return };
            // PDEATHSIG fires when the agent *thread* that spawned us ends,
            // which a live agent may do; only a changed parent means the
            // agent process is gone.
            if getppid() != parent {
                let _ = tx.send(Event::AgentGone);
                return;
            }
            eprintln!("shoal supervisor: ignoring {signal:?}: the agent is alive");
        }
    });
}

fn send(out: &mut impl Write, msg: &FromSupervisor) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}
