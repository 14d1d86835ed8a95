//! The docker driver through the executor and its supervisor, against the
//! machine's docker daemon: a tiny image built FROM scratch with Debian's
//! static busybox (nothing is pulled). Each test skips, saying why, where
//! `docker info` fails.

mod exec_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use exec_support::*;
use shoal_node::exec::docker::{self, ENV_FILE, LABEL_STORE};
use shoal_node::exec::{AttemptOutcome, AttemptSpec, Driver, Executor, ExecutorConfig, Limits};
use shoal_protocol::tasks::container::ContainerSpec;

const IMAGE: &str = "shoal-test-busybox:latest";
const LONG_LEASE: Duration = Duration::from_secs(100);
const EXIT_WAIT: Duration = Duration::from_secs(60);
const BUSYBOX: &str = "/bin/busybox";

/// Builds the test image once per machine; `None` (with the reason
/// printed) where docker or busybox is missing.
fn image() -> Option<&'static str> {
    let info = Command::new("docker").arg("info").output();
    if !info.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: `docker info` fails here: {info:?}");
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
    let built = Command::new("docker")
        .args(["build", "-q", "-t", IMAGE])
        .arg(ctx.path())
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    Some(IMAGE)
}

/// A store id of its own per test, so tests never see each other's
/// containers.
fn store() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn docker_executor(
    data: &Path,
    store: &str,
) -> (
    Executor,
    tokio::sync::mpsc::UnboundedReceiver<shoal_node::exec::AttemptExit>,
) {
    let mut config = ExecutorConfig::new(data.to_path_buf(), 4, "node-a", "party-x").unwrap();
    config.supervisor_program = PathBuf::from(SHOAL_BIN);
    config.store = Some(store.to_string());
    Executor::new(config)
}

fn container_task(task: &str, attempt: u64, script: &str) -> AttemptSpec {
    AttemptSpec {
        task_id: task.to_string(),
        attempt,
        driver: Driver::Docker {
            container: ContainerSpec::new(IMAGE),
            command: vec!["sh".into(), "-c".into(), script.into()],
        },
        env: BTreeMap::new(),
        cwd: None,
        slots: 1,
        timeout: None,
        limits: Limits::default(),
    }
}

/// Names of the containers labelled with `store`, running or not.
fn containers_of(store: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "--format", "{{.Names}}", "--filter"])
        .arg(format!("label={LABEL_STORE}={store}"))
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Waits (bounded) until `store` has no container left.
async fn wait_no_containers(store: &str, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    loop {
        let left = containers_of(store);
        if left.is_empty() || Instant::now() >= until {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until the container runs.
async fn wait_running(name: &str, within: Duration) {
    let until = Instant::now() + within;
    loop {
        let out = Command::new("docker")
            .args(["inspect", "--format", "{{.State.Running}}", name])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "true" {
            return;
        }
        assert!(Instant::now() < until, "container {name} never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_attempt_runs_with_shoal_env_captured_logs_and_exit_code() {
    let Some(_) = image() else { return };
    let data = tempfile::tempdir().unwrap();
    let store = store();
    let (exec, mut exits) = docker_executor(data.path(), &store);
    let mut spec = container_task(
        "task-docker-env",
        7,
        "echo \"$SHOAL_TASK_ID $SHOAL_ATTEMPT $SHOAL_PARTY $SHOAL_NODE [$EXTRA]\"; \
         echo oops >&2; exit 3",
    );
    spec.env.insert("EXTRA".into(), "a secret value".into());
    spec.limits = Limits {
        memory_bytes: Some(64 << 20),
        cpu_milli: Some(500),
    };
    let handle = exec.start(spec, LONG_LEASE).unwrap();
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    let dir = handle.dir.unwrap();
    let log = std::fs::read_to_string(dir.join("supervisor.log")).unwrap_or_default();
    assert_eq!(exit.outcome, AttemptOutcome::Exited { code: 3 }, "{log}");
    assert_eq!(
        std::fs::read_to_string(dir.join("stdout")).unwrap(),
        "task-docker-env 7 party-x node-a [a secret value]\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr")).unwrap(),
        "oops\n"
    );
    assert!(
        !dir.join(ENV_FILE).exists(),
        "the env file outlived the start"
    );
    assert_eq!(
        wait_no_containers(&store, Duration::from_secs(10)).await,
        Vec::<String>::new(),
        "an ended attempt's container is removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_is_killed_and_removed_at_its_lease_deadline() {
    let Some(_) = image() else { return };
    let data = tempfile::tempdir().unwrap();
    let store = store();
    let (exec, mut exits) = docker_executor(data.path(), &store);
    let started = Instant::now();
    exec.start(
        container_task("task-docker-lease", 1, "sleep 100"),
        Duration::from_secs(3),
    )
    .unwrap();
    let name = docker::container_name(&store, "task-docker-lease", 1);
    wait_running(&name, Duration::from_secs(20)).await;
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(exit.outcome, AttemptOutcome::Fenced);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        containers_of(&store),
        Vec::<String>::new(),
        "reported fenced while its container exists"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_agent_takes_its_containers_with_it() {
    let Some(_) = image() else { return };
    let data = tempfile::tempdir().unwrap();
    let store = store();
    let (exec, exits) = docker_executor(data.path(), &store);
    exec.start(
        container_task("task-docker-gone", 1, "sleep 100"),
        LONG_LEASE,
    )
    .unwrap();
    let name = docker::container_name(&store, "task-docker-gone", 1);
    wait_running(&name, Duration::from_secs(20)).await;
    // Dropping the executor closes the supervisor's pipe, as the agent's
    // death does.
    drop(exec);
    drop(exits);
    assert_eq!(
        wait_no_containers(&store, Duration::from_secs(20)).await,
        Vec::<String>::new(),
        "the container outlived its agent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_over_its_memory_limit_is_reported_as_oom() {
    let Some(_) = image() else { return };
    let data = tempfile::tempdir().unwrap();
    let store = store();
    let (exec, mut exits) = docker_executor(data.path(), &store);
    let mut spec = container_task(
        "task-docker-oom",
        1,
        "x=$(head -c 200000000 /dev/zero | tr '\\0' x); echo survived",
    );
    spec.limits.memory_bytes = Some(16 << 20);
    let handle = exec.start(spec, LONG_LEASE).unwrap();
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(
        exit.outcome,
        AttemptOutcome::OutOfMemory {
            limit_bytes: 16 << 20
        }
    );
    let stderr = std::fs::read_to_string(handle.dir.unwrap().join("stderr")).unwrap();
    assert!(stderr.contains("OOM killer"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_not_on_the_node_fails_the_start_with_dockers_reason() {
    let Some(_) = image() else { return };
    let data = tempfile::tempdir().unwrap();
    let store = store();
    let (exec, mut exits) = docker_executor(data.path(), &store);
    let mut spec = container_task("task-docker-noimage", 1, "true");
    spec.driver = Driver::Docker {
        container: ContainerSpec::new("shoal-test-no-such-image:never"),
        command: Vec::new(),
    };
    exec.start(spec, LONG_LEASE).unwrap();
    match next_exit(&mut exits, EXIT_WAIT).await.outcome {
        AttemptOutcome::SpawnFailed { reason } => {
            assert!(
                reason.contains("shoal-test-no-such-image") && reason.contains("No such image"),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
}

/// Needs no daemon: a node without the CLI fails the attempt, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_docker_cli_fails_the_attempt_saying_so() {
    let data = tempfile::tempdir().unwrap();
    let mut config = ExecutorConfig::new(data.path().to_path_buf(), 1, "node-a", "p").unwrap();
    config.supervisor_program = PathBuf::from(SHOAL_BIN);
    config.store = Some("00ff".into());
    config.docker_program = "/no/such/docker".into();
    let (exec, mut exits) = Executor::new(config);
    exec.start(container_task("task-no-cli", 1, "true"), LONG_LEASE)
        .unwrap();
    match next_exit(&mut exits, EXIT_WAIT).await.outcome {
        AttemptOutcome::SpawnFailed { reason } => {
            assert!(reason.contains("not installed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(exec.slots_free(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_clean_up_removes_only_its_own_stores_unowned_containers() {
    let Some(_) = image() else { return };
    let (mine, theirs) = (store(), store());
    let create = |store: &str, task: &str, attempt: u64| {
        let name = docker::container_name(store, task, attempt);
        let out = Command::new("docker")
            .args(["create", "--name", &name])
            .args(["--label", &format!("shoal.store={store}")])
            .args(["--label", &format!("shoal.task={task}")])
            .args(["--label", &format!("shoal.attempt={attempt}")])
            .args([IMAGE, "sleep", "100"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        name
    };
    create(&mine, "t-stale", 1);
    let kept = create(&mine, "t-owned", 2);
    let other = create(&theirs, "t-stale", 1);
    let owned = vec![("t-owned".to_string(), 2)];
    let removed = docker::remove_stale(Path::new("docker"), &mine, &owned).unwrap();
    assert_eq!(removed, 1);
    assert_eq!(containers_of(&mine), std::slice::from_ref(&kept));
    assert_eq!(
        containers_of(&theirs),
        std::slice::from_ref(&other),
        "another store's"
    );
    let _ = Command::new("docker")
        .args(["rm", "-f", &kept, &other])
        .output();
}
