//! End to end: a rolling upgrade of a 5-node party. Every agent in turn is
//! drained (`shoal drain --deadline 10s`), exits, and starts again from a
//! copy of the binary (the "new build") on the same data directory and
//! flags, while a submitter keeps adding short tasks. Afterwards every
//! acknowledged task succeeded exactly once, no two attempts of a task
//! overlapped in time, and no task ran twice: 0 lost, 0 double runs.

use shoal_tests::agents::{all_agree_alive, http_get_any, logs, wait_for, Agent, Party};
use shoal_tests::shoal;
use shoal_tests::task_helpers::{status, wait_replicated};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const NODES: usize = 5;
/// The submitter stops after this many tasks, upgrade finished or not.
const TASKS_MAX: usize = 200;
/// Pause between two submissions.
const SUBMIT_EVERY: Duration = Duration::from_millis(250);
/// How long each task's command runs.
const TASK_SECONDS: &str = "0.3";
/// What one agent's drain may take, exit included.
const DRAIN_WAIT: Duration = Duration::from_secs(40);
/// What one restarted agent may take to be back in the mesh, replicated.
const REJOIN_WAIT: Duration = Duration::from_secs(60);
/// What the last tasks may take to finish after the upgrade.
const SETTLE_WAIT: Duration = Duration::from_secs(90);

/// One line of the run log: `start|end TASK ATTEMPT NODE NANOS`.
#[derive(Debug)]
struct Mark {
    end: bool,
    task: String,
    attempt: u64,
    node: String,
    at_ns: u128,
}

/// One attempt's run as the run log tells it.
#[derive(Debug)]
struct Run<'a> {
    start_ns: u128,
    /// `None`: it never wrote its end (killed, or still running).
    end_ns: Option<u128>,
    node: &'a str,
}

/// Runs per task, per attempt; a second start or end of one attempt fails.
fn runs_by_task(marks: &[Mark]) -> BTreeMap<&str, BTreeMap<u64, Run<'_>>> {
    let mut by_task: BTreeMap<&str, BTreeMap<u64, Run<'_>>> = BTreeMap::new();
    for m in marks {
        let attempts = by_task.entry(&m.task).or_default();
        if m.end {
            let run = attempts
                .get_mut(&m.attempt)
                .unwrap_or_else(|| panic!("end without start: {m:?}"));
            assert!(run.end_ns.is_none(), "attempt ended twice: {m:?}");
            run.end_ns = Some(m.at_ns);
        } else {
            let run = Run {
                start_ns: m.at_ns,
                end_ns: None,
                node: &m.node,
            };
            let old = attempts.insert(m.attempt, run);
            assert!(old.is_none(), "attempt started twice: {m:?}");
        }
    }
    by_task
}

/// No two attempts of a task overlap, no task completed twice, every
/// acknowledged task completed once.
fn assert_no_double_runs(by_task: &BTreeMap<&str, BTreeMap<u64, Run<'_>>>, acked: &[String]) {
    for (task, attempts) in by_task {
        let runs: Vec<&Run<'_>> = attempts.values().collect();
        for (k, a) in runs.iter().enumerate() {
            for b in &runs[k + 1..] {
                let a_end = a.end_ns.unwrap_or(u128::MAX);
                let b_end = b.end_ns.unwrap_or(u128::MAX);
                assert!(
                    a_end <= b.start_ns || b_end <= a.start_ns,
                    "task {task}: attempts overlap: {attempts:?}"
                );
            }
        }
        let completed = runs.iter().filter(|r| r.end_ns.is_some()).count();
        assert!(
            completed <= 1,
            "task {task} ran {completed} times: {attempts:?}"
        );
    }
    for id in acked {
        let completed = by_task
            .get(id.as_str())
            .map_or(0, |a| a.values().filter(|r| r.end_ns.is_some()).count());
        assert_eq!(completed, 1, "task {id} completed {completed} times");
    }
}

fn parse_marks(text: &str) -> Vec<Mark> {
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(f.len(), 5, "torn run-log line {line:?}");
            Mark {
                end: match f[0] {
                    "start" => false,
                    "end" => true,
                    other => panic!("run-log line {other:?}"),
                },
                task: f[1].to_string(),
                attempt: f[2].parse().expect("attempt number"),
                node: f[3].to_string(),
                at_ns: f[4].parse().expect("nanoseconds"),
            }
        })
        .collect()
}

/// Submits a task through the first agent in `apis` (from `from` on) that
/// acknowledges it; the id, or `None` when none did.
fn submit_anywhere(apis: &[SocketAddr], from: usize, script: &str) -> Option<String> {
    (0..apis.len()).find_map(|k| {
        let api = format!("http://{}", apis[(from + k) % apis.len()]);
        let out = Command::new(shoal())
            .args(["submit", "--api", &api, "--", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (out.status.success() && id.len() == 16).then_some(id)
    })
}

/// Keeps submitting until `stop` or [`TASKS_MAX`]; the acknowledged ids.
fn spawn_submitter(
    apis: Vec<SocketAddr>,
    script: String,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<String>> {
    thread::spawn(move || {
        let mut acked = Vec::new();
        for i in 0..TASKS_MAX {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(id) = submit_anywhere(&apis, i, &script) {
                acked.push(id);
            }
            thread::sleep(SUBMIT_EVERY);
        }
        acked
    })
}

/// `shoal drain --api URL --deadline 10s` of `agent`, then its exit; both
/// must succeed within [`DRAIN_WAIT`].
fn drain_and_wait_exit(agent: &mut Agent) {
    let api = format!("http://{}", agent.spec.api);
    let mut drain = Command::new(shoal())
        .args(["drain", "--api", &api, "--deadline", "10s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run shoal drain");
    let exit = agent.wait_exit(DRAIN_WAIT);
    let cli = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        drain.try_wait().ok().flatten()
    });
    if cli.is_none() {
        let _ = drain.kill();
    }
    assert!(
        exit.is_some_and(|s| s.success()),
        "{} did not exit 0 after drain: {exit:?}\n{}",
        agent.name(),
        agent.log_tail()
    );
    assert!(cli.is_some_and(|s| s.success()), "shoal drain: {cli:?}");
}

/// The new build: a copy of the binary under test.
fn new_build(dir: &Path) -> PathBuf {
    let path = dir.join("shoal-new");
    std::fs::copy(shoal(), &path).expect("copy the shoal binary");
    path
}

fn exe_of(agent: &Agent) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{}/exe", agent.pid())).ok()
}

#[test]
fn a_rolling_upgrade_of_every_agent_loses_no_task_and_runs_none_twice() {
    let party = Party::new();
    let mut agents = party.mesh(NODES);
    wait_replicated(&agents, 3);
    let names: Vec<String> = agents.iter().map(|a| a.name().to_string()).collect();
    let names_ref: Vec<&str> = names.iter().map(String::as_str).collect();
    let new_bin = new_build(party.path());
    let runs = party.path().join("runs.log");
    let r = runs.display();
    let script = format!(
        "echo \"start $SHOAL_TASK_ID $SHOAL_ATTEMPT $SHOAL_NODE $(date +%s%N)\" >> {r}; \
         sleep {TASK_SECONDS}; \
         echo \"end $SHOAL_TASK_ID $SHOAL_ATTEMPT $SHOAL_NODE $(date +%s%N)\" >> {r}"
    );
    let apis: Vec<SocketAddr> = agents.iter().map(|a| a.spec.api).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let submitter = spawn_submitter(apis, script, stop.clone());

    for i in 0..NODES {
        drain_and_wait_exit(&mut agents[i]);
        let mut spec = agents[i].spec.clone();
        spec.bin = Some(new_bin.clone());
        let join: Vec<SocketAddr> = (0..NODES)
            .filter(|k| *k != i)
            .map(|k| agents[k].spec.listen)
            .collect();
        agents[i] = spec.start(&join);
        assert_eq!(exe_of(&agents[i]).as_deref(), Some(new_bin.as_path()));
        let back = wait_for(REJOIN_WAIT, Duration::from_millis(200), || {
            let all: Vec<&Agent> = agents.iter().collect();
            let ready = http_get_any(agents[i].spec.api, "/readyz").is_some_and(|(c, _)| c == 200);
            (ready && all_agree_alive(&all, &names_ref)).then_some(())
        });
        assert!(
            back.is_some(),
            "{} is not back in the mesh after its upgrade:\n{}",
            names[i],
            logs(&agents)
        );
        wait_replicated(&agents, 3);
    }
    stop.store(true, Ordering::Relaxed);
    let acked = submitter.join().expect("the submitter panicked");
    assert!(
        acked.len() >= 20,
        "only {} tasks acknowledged during the upgrade",
        acked.len()
    );

    // 0 lost: every acknowledged task ends succeeded.
    for id in &acked {
        let s = wait_for(SETTLE_WAIT, Duration::from_millis(200), || {
            let s = status(&agents[0], id)?;
            (s["state"] == "succeeded" || s["state"] == "failed").then_some(s)
        })
        .unwrap_or_else(|| panic!("task {id} never finished:\n{}", logs(&agents)));
        assert_eq!(s["state"], "succeeded", "task {id}: {s}");
    }

    // 0 double runs, checked on every task the log names (also any whose
    // submission was not acknowledged): no overlapping attempts, at most
    // one completed run, exactly one for every acknowledged task.
    let marks = parse_marks(&std::fs::read_to_string(&runs).expect("the run log"));
    let by_task = runs_by_task(&marks);
    assert_no_double_runs(&by_task, &acked);
    let retried = by_task.values().filter(|a| a.len() > 1).count();
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for run in by_task.values().flat_map(BTreeMap::values) {
        *per_node.entry(run.node).or_default() += 1;
    }
    println!(
        "rolling upgrade: {} tasks acknowledged, {} run, {retried} needed a second attempt; \
         attempts per node {per_node:?}",
        acked.len(),
        by_task.len()
    );
    for agent in &agents {
        assert_eq!(exe_of(agent).as_deref(), Some(new_bin.as_path()));
    }
}
