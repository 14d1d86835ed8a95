//! End to end: an attempt saves a checkpoint with `shoal checkpoint save`
//! (the agent's binary is on its PATH, its agent and attempt in its
//! environment); after `kill -9` of its agent the next attempt elsewhere
//! finds the bytes at `$SHOAL_CHECKPOINT`; a save in the name of the fenced
//! attempt is refused and changes nothing; the chunks are removed from the
//! holders once the task is final.

use shoal_tests::agents::{self, wait_for, Agent, Party};
use shoal_tests::shoal;
use shoal_tests::task_helpers::{cli, status, submit, wait_replicated};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// `shoal checkpoint save FILE` as attempt `attempt` of `id` would run it.
fn save_as(agent: &Agent, id: &str, attempt: u64, file: &Path) -> Output {
    Command::new(shoal())
        .args(["checkpoint", "save"])
        .arg(file)
        .env("SHOAL_API_URL", format!("http://{}", agent.spec.api))
        .env("SHOAL_TASK_ID", id)
        .env("SHOAL_ATTEMPT", attempt.to_string())
        .stdin(Stdio::null())
        .output()
        .expect("run shoal checkpoint save")
}

/// `shoal checkpoint show ID --json` through `agent`.
fn show(agent: &Agent, id: &str) -> Option<serde_json::Value> {
    let out = cli(agent, &["checkpoint", "show", id, "--json"]);
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

#[test]
fn a_checkpoint_survives_a_kill_9_failover_and_a_fenced_attempts_late_save_is_refused() {
    let party = Party::new();
    let mut agents = party.mesh(3);
    wait_replicated(&agents, 3);
    let work = party.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let w = work.display();
    // Attempt 1 saves 3 MB (three chunks) and waits to be killed; the next
    // attempt copies what it resumed from, saves a checkpoint of its own,
    // and waits for the test.
    let script = format!(
        "set -e
        if [ -n \"$SHOAL_CHECKPOINT\" ]; then
          cp \"$SHOAL_CHECKPOINT\" {w}/resumed-$SHOAL_ATTEMPT
          echo second > {w}/state-$SHOAL_ATTEMPT
          shoal checkpoint save {w}/state-$SHOAL_ATTEMPT
          touch {w}/saved-$SHOAL_ATTEMPT
          while [ ! -e {w}/stop ]; do sleep 0.1; done
          exit 0
        fi
        head -c 3000000 /dev/urandom > {w}/state-$SHOAL_ATTEMPT
        shoal checkpoint save {w}/state-$SHOAL_ATTEMPT
        touch {w}/saved-$SHOAL_ATTEMPT
        exec sleep 120"
    );
    let id = submit(&agents[0], &["--retries", "0"], &["sh", "-c", &script]);
    let saved = |attempt: u64| work.join(format!("saved-{attempt}")).exists();
    let first = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        saved(1).then_some(())
    });
    assert!(
        first.is_some(),
        "attempt 1 never saved its checkpoint: {:?}\n{}",
        status(&agents[0], &id),
        agents::logs(&agents)
    );
    let shown = show(&agents[1], &id).expect("checkpoint show");
    assert_eq!(shown["attempt"], 1, "{shown}");
    assert_eq!(shown["size"], 3_000_000, "{shown}");
    assert_eq!(
        shown["holders"].as_array().map(Vec::len),
        Some(3),
        "{shown}"
    );
    let s = status(&agents[1], &id).expect("status");
    assert_eq!(s["checkpoint"]["attempt"], 1, "{s}");
    let holder = s["node"].as_str().expect("a holder").to_string();

    let victim = agents.iter().position(|a| a.name() == holder).unwrap();
    agents[victim].kill();
    let survivor = &agents[(victim + 1) % 3];
    let second = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        saved(2).then_some(())
    });
    assert!(
        second.is_some(),
        "attempt 2 never resumed and saved: {:?}\n{}",
        status(survivor, &id),
        agents::logs(&agents)
    );
    let resumed = std::fs::read(work.join("resumed-2")).expect("attempt 2 resumed");
    let original = std::fs::read(work.join("state-1")).unwrap();
    assert!(
        resumed == original,
        "attempt 2 resumed from {} bytes, not attempt 1's {} bytes",
        resumed.len(),
        original.len()
    );
    let shown = show(survivor, &id).expect("checkpoint show");
    assert_eq!(shown["attempt"], 2, "{shown}");
    assert_eq!(shown["size"], "second\n".len(), "{shown}");

    // The fenced attempt 1, from any live node, cannot save any more.
    for agent in agents.iter().filter(|a| a.name() != holder) {
        let late = save_as(agent, &id, 1, &work.join("state-1"));
        let stderr = String::from_utf8_lossy(&late.stderr);
        assert!(
            !late.status.success(),
            "a fenced save was accepted: {stderr}"
        );
        assert!(stderr.contains("refused"), "{stderr}");
    }
    assert_eq!(show(survivor, &id).expect("show")["attempt"], 2);

    std::fs::write(work.join("stop"), b"").unwrap();
    let done = wait_for(Duration::from_secs(30), Duration::from_millis(100), || {
        let s = status(survivor, &id)?;
        (s["state"] == "succeeded").then_some(s)
    });
    assert!(done.is_some(), "{:?}", status(survivor, &id));
    // Final: no attempt reads a checkpoint again, and the live holders
    // drop every chunk of it.
    let live: Vec<&Agent> = agents.iter().filter(|a| a.name() != holder).collect();
    let gone = wait_for(Duration::from_secs(20), Duration::from_millis(200), || {
        live.iter()
            .all(|a| !a.spec.data.join("checkpoints").join(&id).exists())
            .then_some(())
    });
    assert!(gone.is_some(), "checkpoint chunks left on the holders");
}

#[test]
fn a_save_outside_an_attempt_or_over_the_limit_is_refused_with_a_reason() {
    let party = Party::new();
    let agent = party.spec("n1").start_fresh(&[]);
    let work = tempfile::tempdir().unwrap();
    let big = work.path().join("big");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(16 * 1024 * 1024 + 1).unwrap();
    let out = save_as(&agent, "00000000000000ab", 1, &big);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("larger than the checkpoint limit"),
        "{stderr}"
    );

    let small = work.path().join("small");
    std::fs::write(&small, b"x").unwrap();
    let out = save_as(&agent, "00000000000000ab", 1, &small);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("does not run on this node"), "{stderr}");

    let out = cli(&agent, &["checkpoint", "show", "00000000000000ab"]);
    assert!(!out.status.success());
    let id = submit(&agent, &["--driver", "mock", "--duration", "10ms"], &[]);
    let out = wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
        let o = cli(&agent, &["checkpoint", "show", &id]);
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        e.contains("has no checkpoint").then_some(o)
    });
    assert!(out.is_some_and(|o| !o.status.success()));
}
