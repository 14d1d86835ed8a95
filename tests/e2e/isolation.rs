//! End to end: each attempt runs in its own cgroup with its memory request
//! as its limit. A memory hog is OOM-killed and reported with reason `oom`
//! while its neighbour on the same node runs on; the attempt's cgroup is
//! gone when it ends; a restarted agent removes cgroups it left behind.
//!
//! Needs writable cgroup controllers (root on these machines): the test
//! fails, not skips, where the agent reports `isolation: none`, so that CI
//! cannot pass without the isolation it claims.

use shoal_tests::agents::{wait_for, Agent, Party};
use shoal_tests::task_helpers::{cli, status, submit};
use std::path::PathBuf;
use std::time::Duration;

/// What the agent gossips of itself as its isolation.
fn own_isolation(agent: &Agent) -> Option<String> {
    let members = agent.members()?;
    let me = members.iter().find(|m| m["self"] == true)?;
    me["isolation"].as_str().map(String::from)
}

/// This agent's directory in the v1 memory hierarchy, or its v2 directory.
fn memory_root(agent: &Agent, isolation: &str) -> PathBuf {
    let store = std::fs::read_to_string(agent.spec.data.join("store-id")).expect("store-id");
    let store = store.trim();
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", agent.pid())).unwrap();
    let pick = |want: &dyn Fn(&str) -> bool| {
        own.lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                want(c).then(|| path.trim_start_matches('/').to_string())
            })
            .unwrap_or_default()
    };
    if isolation == "cgroup-v2" {
        // The agent may have moved itself into a `shoal-agent` leaf.
        let path = pick(&|c: &str| c.is_empty());
        let base = PathBuf::from("/sys/fs/cgroup").join(path.trim_end_matches("shoal-agent"));
        base.join(format!("shoal-{store}"))
    } else {
        let path = pick(&|c: &str| c.split(',').any(|c| c == "memory"));
        PathBuf::from("/sys/fs/cgroup/memory")
            .join(path)
            .join("shoal")
            .join(store)
    }
}

#[test]
fn a_memory_hog_is_oom_killed_at_its_limit_and_its_neighbour_runs_on() {
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.extra_args = ["--slots", "4", "--memory", "1Gi"]
        .map(String::from)
        .to_vec();
    let mut agent = spec.start_fresh(&[]);
    let isolation = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        own_isolation(&agent)
    })
    .expect("the agent never showed its isolation");
    assert!(
        isolation == "cgroup-v1" || isolation == "cgroup-v2",
        "isolation {isolation:?}: this test needs writable cgroups (run as root)\n{}",
        agent.log_tail()
    );
    let root = memory_root(&agent, &isolation);
    assert!(root.is_dir(), "no agent cgroup at {}", root.display());

    // The neighbour runs until the test says stop, so it is surely alive
    // across the hog's death however slow the machine.
    let work = tempfile::tempdir().unwrap();
    let stop = work.path().join("stop");
    let wait_for_stop = format!(
        "while [ ! -e {} ]; do sleep 0.1; done; echo alive",
        stop.display()
    );
    let neighbour = submit(
        &agent,
        &[
            "--memory",
            "32Mi",
            "--memory-limit",
            "64Mi",
            "--cpu",
            "250m",
        ],
        &["sh", "-c", &wait_for_stop],
    );
    // `tail` keeps its whole input while it looks for the last line: with
    // no newline in 512 MiB of zeros it grows until the limit stops it.
    let hog = submit(
        &agent,
        &["--memory", "64Mi"],
        &["sh", "-c", "head -c 512M /dev/zero | tail"],
    );
    let failed = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        status(&agent, &hog).filter(|s| s["state"] == "failed")
    })
    .unwrap_or_else(|| panic!("the hog never failed\n{}", agent.log_tail()));
    assert_eq!(failed["reason"], "oom", "{failed}");
    let stderr = cli(&agent, &["logs", &hog, "--stderr"]);
    let stderr = String::from_utf8_lossy(&stderr.stdout);
    assert!(
        stderr.contains("OOM killer") && stderr.contains("64 MiB"),
        "{stderr}"
    );
    assert!(
        !root.join(format!("{hog}.1")).exists(),
        "the hog's cgroup outlived it"
    );

    // The neighbour, in its own cgroup with the same limit (reserving only
    // half of it), is untouched.
    let running = status(&agent, &neighbour).unwrap();
    assert_eq!(running["state"], "running", "{running}");
    let limit_file = if isolation == "cgroup-v2" {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    let limit = std::fs::read_to_string(root.join(format!("{neighbour}.1")).join(limit_file))
        .expect("the neighbour's cgroup");
    assert_eq!(limit.trim(), (64u64 << 20).to_string());
    std::fs::write(&stop, "").unwrap();
    let done = cli(&agent, &["wait", &neighbour, "--timeout", "30s"]);
    assert!(done.status.success(), "{}", agent.log_tail());
    let out = cli(&agent, &["logs", &neighbour]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "alive\n");
    let ok = status(&agent, &neighbour).unwrap();
    assert!(ok["reason"].is_null(), "{ok}");

    // A command's signals are its own: the supervisor's blocked SIGTERM
    // must not leak into it (then `timeout` could not stop what it runs).
    let timed = submit(&agent, &[], &["sh", "-c", "timeout 1 sleep 30; echo $?"]);
    let done = cli(&agent, &["wait", &timed, "--timeout", "20s"]);
    assert!(done.status.success(), "{}", agent.log_tail());
    let out = cli(&agent, &["logs", &timed]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "124\n");

    // A cgroup left by an earlier run (its supervisor was killed with the
    // agent) is removed when the agent starts again.
    let stale = root.join("stale-task.1");
    std::fs::create_dir(&stale).expect("make a stale cgroup");
    agent.kill();
    let agent = agent.spec.start(&[]);
    wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        (!stale.exists()).then_some(())
    })
    .unwrap_or_else(|| panic!("the stale cgroup survived a restart\n{}", agent.log_tail()));
}

#[test]
fn an_agent_told_not_to_isolate_says_none() {
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.extra_args = ["--isolation", "none"].map(String::from).to_vec();
    let agent = spec.start_fresh(&[]);
    let isolation = wait_for(Duration::from_secs(20), Duration::from_millis(100), || {
        own_isolation(&agent)
    });
    assert_eq!(isolation.as_deref(), Some("none"));
    assert!(
        agent.log_tail().contains("isolation: none"),
        "{}",
        agent.log_tail()
    );
}
