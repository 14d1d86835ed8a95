//! End to end: `kill -9` of the agent running a task; the task runs again
//! elsewhere with the next attempt number, and the first attempt's process
//! is dead (its supervisor fenced it when the agent's pipe closed).

use shoal_tests::agents;
use shoal_tests::agents::{wait_for, Party};
use shoal_tests::task_helpers::{alive, status, submit, wait_replicated};
use std::time::{Duration, Instant};

#[test]
fn killing_the_holder_runs_the_task_again_elsewhere_and_fences_the_first_attempt() {
    let party = Party::new();
    let mut agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let dir = party.path().join("pids");
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "echo $$ > {}/attempt-$SHOAL_ATTEMPT; exec sleep 120",
        dir.display()
    );
    let id = submit(&agents[0], &[], &["sh", "-c", &script]);
    let pid_of = |attempt: u64| -> Option<i32> {
        std::fs::read_to_string(dir.join(format!("attempt-{attempt}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let first = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        pid_of(1)
    })
    .expect("attempt 1 never started");
    let holder = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let s = status(&agents[1], &id)?;
        (s["state"] == "running").then(|| s["node"].as_str().map(str::to_string))?
    })
    .expect("never reported running");
    let victim = agents.iter().position(|a| a.name() == holder).unwrap();
    let killed_at = Instant::now();
    agents[victim].kill();
    let survivor = &agents[(victim + 1) % 3];
    let second = wait_for(Duration::from_secs(20), Duration::from_millis(50), || {
        pid_of(2)
    });
    let failover = killed_at.elapsed();
    assert!(
        second.is_some(),
        "attempt 2 never started:\n{}",
        agents::logs(&agents)
    );
    println!("failover after kill -9: {failover:?}");
    let s = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let s = status(survivor, &id)?;
        (s["state"] == "running" && s["attempt"] == 2).then_some(s)
    })
    .expect("attempt 2 not running in the record");
    assert_ne!(s["node"].as_str(), Some(holder.as_str()), "{s}");
    let fenced = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        (!alive(first)).then_some(())
    });
    assert!(fenced.is_some(), "attempt 1's process survived its agent");
    assert!(alive(second.unwrap()), "attempt 2 is not running");
    assert!(pid_of(3).is_none(), "a third attempt started");
}
