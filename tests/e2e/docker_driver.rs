//! End to end: the docker driver. A task submitted with `--driver docker
//! --image` runs as a container of a tiny FROM-scratch busybox image
//! (built here from Debian's busybox-static; nothing is pulled), its
//! stdout kept like a command's; `kill -9` of the agent running it kills
//! and removes the container, and the task runs again elsewhere; a
//! restarted agent removes the containers labelled with its store that it
//! no longer owns, and no other store's. Skipped, with the reason printed,
//! where `docker info` fails or busybox-static is missing.

use shoal_tests::agents::{self, wait_for, Agent, Party};
use shoal_tests::docker::docker;
use shoal_tests::shoal;
use shoal_tests::task_helpers::{cli, status, submit, wait_replicated};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const IMAGE: &str = "shoal-test-busybox:latest";
const BUSYBOX: &str = "/bin/busybox";
const POLL: Duration = Duration::from_millis(100);

/// Builds the test image; `None` (with the reason printed) where this
/// machine cannot.
fn image() -> Option<&'static str> {
    if !docker(&["info"]).status.success() {
        eprintln!("skipped: no usable Docker engine (`docker info` failed)");
        return None;
    }
    if !Path::new(BUSYBOX).exists() {
        eprintln!("skipped: {BUSYBOX} is missing (apt-get install busybox-static)");
        return None;
    }
    let ctx = tempfile::tempdir().unwrap();
    std::fs::copy(BUSYBOX, ctx.path().join("busybox")).unwrap();
    std::fs::write(
        ctx.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\n\
         RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\n",
    )
    .unwrap();
    let built = docker(&["build", "-q", "-t", IMAGE, ctx.path().to_str().unwrap()]);
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(IMAGE)
}

/// Names of the containers carrying every label of `labels`.
fn containers(labels: &[String]) -> Vec<String> {
    let mut args = vec!["ps", "-a", "--format", "{{.Names}}"];
    let filters: Vec<String> = labels.iter().map(|l| format!("label={l}")).collect();
    for f in &filters {
        args.extend(["--filter", f.as_str()]);
    }
    let out = docker(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn running(name: &str) -> bool {
    let out = docker(&["inspect", "--format", "{{.State.Running}}", name]);
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

fn store_of(agent: &Agent) -> String {
    std::fs::read_to_string(agent.spec.data.join("store-id"))
        .expect("store-id")
        .trim()
        .to_string()
}

/// An agent's flags: room for the tasks' reservations.
fn agent_args() -> Vec<String> {
    ["--slots", "4", "--memory", "1Gi", "--cpu", "2.0"]
        .map(String::from)
        .to_vec()
}

#[test]
fn a_docker_task_runs_in_a_container_and_its_stdout_is_kept() {
    let Some(image) = image() else { return };
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.extra_args = agent_args();
    let agent = spec.start_fresh(&[]);
    let id = submit(
        &agent,
        &[
            "--driver",
            "docker",
            "--image",
            image,
            "--cpu",
            "250m",
            "--memory",
            "64Mi",
            "--env",
            "GREETING=hi there",
        ],
        &[
            "sh",
            "-c",
            "echo \"$GREETING\"; echo \"attempt $SHOAL_ATTEMPT of $SHOAL_TASK_ID\"; echo err >&2",
        ],
    );
    let done = cli(&agent, &["wait", &id, "--timeout", "60s"]);
    assert!(
        done.status.success(),
        "{:?}\n{}",
        status(&agent, &id),
        agent.log_tail()
    );
    let s = status(&agent, &id).unwrap();
    assert_eq!(
        (&s["state"], &s["driver"], &s["image"]),
        (
            &serde_json::json!("succeeded"),
            &serde_json::json!("docker"),
            &serde_json::json!(image)
        ),
        "{s}"
    );
    assert_eq!(s["network"], "none", "{s}");
    let out = cli(&agent, &["logs", &id]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("hi there\nattempt 1 of {id}\n")
    );
    let err = cli(&agent, &["logs", &id, "--stderr"]);
    assert_eq!(String::from_utf8_lossy(&err.stdout), "err\n");

    // A non-zero exit is the container's, reported like a command's.
    let failing = submit(
        &agent,
        &["--driver", "docker", "--image", image],
        &["sh", "-c", "exit 7"],
    );
    let failed = wait_for(Duration::from_secs(60), POLL, || {
        status(&agent, &failing).filter(|s| s["state"] == "failed")
    })
    .unwrap_or_else(|| panic!("{:?}", status(&agent, &failing)));
    assert_eq!(
        (&failed["exit_code"], &failed["reason"]),
        (&7.into(), &"exit".into()),
        "{failed}"
    );
    // Every container of the agent's attempts is gone once they ended.
    let store = format!("shoal.store={}", store_of(&agent));
    let left = wait_for(Duration::from_secs(10), POLL, || {
        containers(std::slice::from_ref(&store))
            .is_empty()
            .then_some(())
    });
    assert!(left.is_some(), "{:?}", containers(&[store]));
}

#[test]
fn kill_9_of_the_agent_kills_its_container_and_the_task_runs_elsewhere() {
    let Some(image) = image() else { return };
    let party = Party::new();
    let first = {
        let mut spec = party.spec("n1");
        spec.extra_args = agent_args();
        spec.start_fresh(&[])
    };
    let seed = [first.spec.listen];
    let mut agents = vec![first];
    for name in ["n2", "n3"] {
        let mut spec = party.spec(name);
        spec.extra_args = agent_args();
        agents.push(spec.start_fresh(&seed));
    }
    wait_replicated(&agents, 3);
    let script =
        "if [ \"$SHOAL_ATTEMPT\" = 1 ]; then exec sleep 300; fi; echo \"rerun $SHOAL_ATTEMPT\"";
    let id = submit(
        &agents[0],
        &["--driver", "docker", "--image", image, "--memory", "32Mi"],
        &["sh", "-c", script],
    );
    let first_attempt = [format!("shoal.task={id}"), "shoal.attempt=1".to_string()];
    let name = wait_for(Duration::from_secs(60), POLL, || {
        let names = containers(&first_attempt);
        names.first().filter(|n| running(n)).cloned()
    })
    .unwrap_or_else(|| {
        panic!(
            "attempt 1's container never ran: {:?}\n{}",
            status(&agents[0], &id),
            agents::logs(&agents)
        )
    });
    let holder = status(&agents[0], &id).unwrap()["node"]
        .as_str()
        .expect("a holder")
        .to_string();
    let victim = agents.iter().position(|a| a.name() == holder).unwrap();
    assert!(
        name.contains(&store_of(&agents[victim])),
        "{name} is not named by its agent's store"
    );
    agents[victim].kill();
    let gone = wait_for(Duration::from_secs(20), POLL, || {
        containers(&first_attempt).is_empty().then_some(())
    });
    assert!(
        gone.is_some(),
        "the container {name} outlived its agent's kill -9: {:?}",
        containers(&first_attempt)
    );
    let survivor = &agents[(victim + 1) % 3];
    let done = wait_for(Duration::from_secs(60), POLL, || {
        status(survivor, &id).filter(|s| s["state"] == "succeeded")
    })
    .unwrap_or_else(|| {
        panic!(
            "the task never ran again: {:?}\n{}",
            status(survivor, &id),
            agents::logs(&agents)
        )
    });
    assert!(done["attempt"].as_u64() >= Some(2), "{done}");
    assert_ne!(done["node"], holder.as_str(), "{done}");
    let out = cli(survivor, &["logs", &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("rerun "),
        "{out:?}"
    );
}

#[test]
fn a_restarted_agent_removes_its_stale_containers_and_no_one_elses() {
    let Some(image) = image() else { return };
    let party = Party::new();
    let mut spec = party.spec("n1");
    spec.extra_args = agent_args();
    let mut agent = spec.start_fresh(&[]);
    let store = store_of(&agent);
    // A running container whose supervisor dies with the agent: frozen
    // first, so that neither can clean up.
    let id = submit(
        &agent,
        &["--driver", "docker", "--image", image],
        &["sleep", "300"],
    );
    let own = [format!("shoal.store={store}"), format!("shoal.task={id}")];
    let orphan = wait_for(Duration::from_secs(60), POLL, || {
        containers(&own).first().filter(|n| running(n)).cloned()
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", status(&agent, &id), agent.log_tail()));
    let status_file = agent.spec.data.join(format!("attempts/{id}/1/status.json"));
    let text = std::fs::read_to_string(&status_file).expect("the attempt's status");
    let sup: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sup = sup["supervisor_pid"].as_u64().expect("supervisor pid");
    agent.signal("STOP");
    let killed = Command::new("kill")
        .args(["-9", &sup.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    agent.kill();
    assert!(running(&orphan), "the orphan must outlive its agent here");

    // A container of this store that no attempt of the restarted agent
    // owns, and one of another store.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let other_store = format!("{:032x}", nanos ^ u128::from(std::process::id()));
    let create = |store: &str, task: &str| {
        let name = format!("shoal-{store}-{task}-1");
        let out = docker(&[
            "create",
            "--name",
            &name,
            "--label",
            &format!("shoal.store={store}"),
            "--label",
            &format!("shoal.task={task}"),
            "--label",
            "shoal.attempt=1",
            image,
            "true",
        ]);
        assert!(out.status.success(), "{out:?}");
        name
    };
    let stale = create(&store, "00000000000000aa");
    let foreign = create(&other_store, &id);

    let agent = agent.spec.start(&[]);
    let mine = [format!("shoal.store={store}")];
    // The restarted agent may already run attempt 2 in a container of
    // its own: only the two stale ones must go.
    let cleaned = wait_for(Duration::from_secs(30), POLL, || {
        let left = containers(&mine);
        (!left.contains(&orphan) && !left.contains(&stale)).then_some(())
    });
    let foreign_left = containers(&[format!("shoal.store={other_store}")]);
    let _ = docker(&["rm", "-f", &foreign]);
    assert!(
        cleaned.is_some(),
        "stale containers {:?} (of {orphan}, {stale}) survived the restart\n{}",
        containers(&mine),
        agent.log_tail()
    );
    assert_eq!(
        foreign_left,
        [foreign],
        "another store's container was removed"
    );
    // The orphaned attempt was fenced by the restart, and its task is
    // claimed again (by this node, the only one).
    let rerun = wait_for(Duration::from_secs(60), POLL, || {
        status(&agent, &id).filter(|s| s["attempt"].as_u64() >= Some(2))
    });
    assert!(rerun.is_some(), "{:?}", status(&agent, &id));
    let _ = cli(&agent, &["cancel", &id]);
}

/// Needs no Docker: the container flags are checked before any request.
#[test]
fn container_flags_are_checked_at_submit() {
    let submit = |args: &[&str]| {
        Command::new(shoal())
            .args(["submit", "--api", "http://127.0.0.1:9"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run shoal submit")
    };
    for (args, want) in [
        (
            &["--image", "busybox", "--", "true"][..],
            "--image is for --driver docker",
        ),
        (&["--driver", "docker", "--", "true"][..], "needs --image"),
        (
            &[
                "--driver", "docker", "--image", "b", "--mount", "data:/d", "--", "true",
            ][..],
            "not an absolute path",
        ),
        (
            &[
                "--driver",
                "docker",
                "--image",
                "b",
                "--network",
                "host",
                "--",
                "true",
            ][..],
            "is not one of",
        ),
        (
            &["--driver", "mock", "--network", "none"][..],
            "--network is for --driver docker",
        ),
    ] {
        let out = submit(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}
