//! Executor behaviours that need no fault: env, logs, timeout, cancel,
//! slots, mock driver, bad input.

mod exec_support;

use std::time::{Duration, Instant};

use exec_support::*;
use shoal_node::exec::status::{read_status, AttemptState};
use shoal_node::exec::{AttemptOutcome, AttemptSpec, Driver, ExecError, KillReason};

const LONG_LEASE: Duration = Duration::from_secs(100);
const EXIT_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_runs_with_env_cwd_and_captured_logs() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 4);
    let mut spec = sh(
        "task-env",
        7,
        "echo \"$SHOAL_TASK_ID $SHOAL_ATTEMPT $SHOAL_PARTY $SHOAL_NODE $EXTRA\"; pwd; \
         grep SigBlk /proc/self/status; echo \"$SHOAL_ATTEMPT_DIR\"; echo oops >&2; exit 3",
        work.path(),
    );
    spec.env.insert("EXTRA".into(), "hello".into());
    spec.slots = 3;
    let handle = exec.start(spec, LONG_LEASE).unwrap();
    assert_eq!(exec.slots_free(), 1);
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(exit.outcome, AttemptOutcome::Exited { code: 3 });
    assert_eq!((exit.task_id.as_str(), exit.attempt), ("task-env", 7));
    assert_eq!(exec.slots_free(), 4);

    let dir = handle.dir.unwrap();
    let stdout = std::fs::read_to_string(dir.join("stdout")).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "task-env 7 party-x node-a hello");
    assert_eq!(
        std::path::Path::new(lines[1]).canonicalize().unwrap(),
        work.path().canonicalize().unwrap()
    );
    // The supervisor blocks signals for itself; the command must not inherit that.
    assert_eq!(lines[2].split_whitespace().nth(1), Some("0000000000000000"));
    assert_eq!(std::path::Path::new(lines[3]), dir.as_path());
    assert_eq!(
        std::fs::read_to_string(dir.join("stderr")).unwrap(),
        "oops\n"
    );
    let status = read_status(&dir).unwrap();
    assert_eq!(
        status.state,
        AttemptState::Finished {
            outcome: AttemptOutcome::Exited { code: 3 }
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_timeout_kills_the_whole_group() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 1);
    let mut spec = sh("task-timeout", 1, TREE_SCRIPT, work.path());
    spec.timeout = Some(Duration::from_millis(800));
    exec.start(spec, LONG_LEASE).unwrap();
    let grandchild = wait_pid_file_async(&work.path().join("gc.pid"), Duration::from_secs(5)).await;
    assert!(alive(grandchild));
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(exit.outcome, AttemptOutcome::TimedOut);
    assert!(
        !alive(grandchild),
        "grandchild {grandchild} outlived the attempt"
    );
    assert_eq!(exec.slots_free(), 1);
}

// On the current-thread runtime the agent uses.
#[tokio::test(flavor = "current_thread")]
async fn cancel_kills_the_whole_group() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 1);
    exec.start(sh("task-cancel", 2, TREE_SCRIPT, work.path()), LONG_LEASE)
        .unwrap();
    let grandchild = wait_pid_file_async(&work.path().join("gc.pid"), Duration::from_secs(5)).await;
    exec.kill("task-cancel", 2, KillReason::Cancelled).unwrap();
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(exit.outcome, AttemptOutcome::Cancelled);
    assert!(
        !alive(grandchild),
        "grandchild {grandchild} outlived the attempt"
    );
    assert!(matches!(
        exec.kill("task-cancel", 2, KillReason::Cancelled),
        Err(ExecError::NotRunning { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_process_is_killed_when_the_command_exits() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 1);
    let script = "sleep 100 & echo $! > gc.pid.tmp && mv gc.pid.tmp gc.pid; exit 0";
    exec.start(sh("task-bg", 1, script, work.path()), LONG_LEASE)
        .unwrap();
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(exit.outcome, AttemptOutcome::Exited { code: 0 });
    let grandchild = wait_pid_file(&work.path().join("gc.pid"), Duration::from_secs(1));
    assert!(
        !alive(grandchild),
        "background {grandchild} outlived the attempt"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failure_is_reported() {
    let data = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 1);
    let mut spec = sh("task-nope", 1, "", data.path());
    spec.driver = Driver::Command {
        program: "/nonexistent/program".into(),
        args: vec![],
    };
    exec.start(spec, LONG_LEASE).unwrap();
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert!(
        matches!(&exit.outcome, AttemptOutcome::SpawnFailed { reason } if reason.contains("nonexistent")),
        "got {:?}",
        exit.outcome
    );
    assert_eq!(exec.slots_free(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_bad_ids_and_duplicates_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let (exec, _exits) = executor(data.path(), 2);
    let mut big = mock("task-big", 1, Duration::from_secs(10), 0);
    big.slots = 3;
    assert!(matches!(
        exec.start(big, LONG_LEASE),
        Err(ExecError::NoSlots { needed: 3, free: 2 })
    ));
    for bad in ["", "..", "a/b", "x y", &"z".repeat(200)] {
        assert!(
            matches!(
                exec.start(mock(bad, 1, Duration::ZERO, 0), LONG_LEASE),
                Err(ExecError::BadTaskId(_))
            ),
            "accepted task id {bad:?}"
        );
    }
    exec.start(mock("task-dup", 1, Duration::from_secs(10), 0), LONG_LEASE)
        .unwrap();
    assert!(matches!(
        exec.start(mock("task-dup", 1, Duration::from_secs(10), 0), LONG_LEASE),
        Err(ExecError::AlreadyRunning { .. })
    ));
    assert_eq!(exec.slots_free(), 1);
    assert_eq!(exec.running(), vec![("task-dup".to_string(), 1)]);
}

fn mock(task: &str, attempt: u64, duration: Duration, exit_code: i32) -> AttemptSpec {
    AttemptSpec {
        task_id: task.to_string(),
        attempt,
        driver: Driver::Mock {
            duration,
            exit_code,
        },
        env: Default::default(),
        cwd: None,
        slots: 1,
        timeout: None,
        limits: Default::default(),
    }
}

// On the current-thread runtime the agent uses.
#[tokio::test(flavor = "current_thread")]
async fn mock_driver_completes_after_its_duration_with_its_code() {
    let data = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 2);
    let started = Instant::now();
    exec.start(
        mock("mock-ok", 1, Duration::from_millis(300), 7),
        LONG_LEASE,
    )
    .unwrap();
    assert_eq!(exec.slots_free(), 1);
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(exit.outcome, AttemptOutcome::Exited { code: 7 });
    assert_eq!(exec.slots_free(), 2);
    assert!(
        data.path().read_dir().unwrap().next().is_none(),
        "mock wrote files"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mock_driver_is_fenced_cancelled_and_timed_out_like_a_command() {
    let data = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 3);
    let long = Duration::from_secs(100);
    exec.start(mock("mock-fence", 1, long, 0), Duration::from_millis(200))
        .unwrap();
    let mut timed = mock("mock-timeout", 1, long, 0);
    timed.timeout = Some(Duration::from_millis(400));
    exec.start(timed, LONG_LEASE).unwrap();
    exec.start(
        mock("mock-extend", 1, Duration::from_millis(900), 0),
        Duration::from_millis(300),
    )
    .unwrap();
    let mut seen = std::collections::BTreeMap::new();
    let extending = Instant::now();
    // Extend mock-extend past its 900 ms duration, 300 ms at a time (bounded: 30 rounds).
    for _ in 0..30 {
        if extending.elapsed() > Duration::from_millis(1200) {
            break;
        }
        let _ = exec.extend("mock-extend", 1, Duration::from_millis(300));
        let pause = tokio::time::sleep(Duration::from_millis(100));
        tokio::pin!(pause);
        loop {
            tokio::select! {
                _ = &mut pause => break,
                Some(exit) = exits.recv() => { seen.insert(exit.task_id, exit.outcome); }
            }
        }
    }
    exec.start(mock("mock-cancel", 1, long, 0), LONG_LEASE)
        .unwrap();
    exec.kill("mock-cancel", 1, KillReason::Cancelled).unwrap();
    while seen.len() < 4 {
        let exit = next_exit(&mut exits, EXIT_WAIT).await;
        seen.insert(exit.task_id, exit.outcome);
    }
    assert_eq!(seen["mock-fence"], AttemptOutcome::Fenced);
    assert_eq!(seen["mock-timeout"], AttemptOutcome::TimedOut);
    assert_eq!(seen["mock-extend"], AttemptOutcome::Exited { code: 0 });
    assert_eq!(seen["mock-cancel"], AttemptOutcome::Cancelled);
    assert_eq!(exec.slots_free(), 3);
}

/// Prints attempts per second for `true` commands (each through its own
/// supervisor process) and for zero-length mock attempts, 16 at a time.
/// Not asserted beyond correctness: speed is for reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_throughput_report() {
    let data = tempfile::tempdir().unwrap();
    let slots = 16;
    let (exec, mut exits) = executor(data.path(), slots);
    for (label, total) in [("true", 300u64), ("mock", 20_000u64)] {
        let started = Instant::now();
        let mut next = 0u64;
        let mut done = 0u64;
        while done < total {
            while next < total && exec.slots_free() > 0 {
                let mut spec = if label == "true" {
                    sh(&format!("{label}-{next}"), 1, "true", data.path())
                } else {
                    mock(&format!("{label}-{next}"), 1, Duration::ZERO, 0)
                };
                if label == "true" {
                    spec.driver = Driver::Command {
                        program: "/bin/true".into(),
                        args: vec![],
                    };
                }
                exec.start(spec, LONG_LEASE).unwrap();
                next += 1;
            }
            let exit = next_exit(&mut exits, EXIT_WAIT).await;
            assert_eq!(exit.outcome, AttemptOutcome::Exited { code: 0 }, "{exit:?}");
            done += 1;
        }
        let rate = total as f64 / started.elapsed().as_secs_f64();
        println!("executor {label}: {total} attempts, {rate:.0}/s with {slots} slots");
    }
    assert_eq!(exec.slots_free(), slots);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_read_in_chunks_until_finished() {
    use shoal_node::exec::{read_log, LogStream};
    let data = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 1);
    assert!(matches!(
        read_log(data.path(), "task-logs", 1, LogStream::Stdout, 0, 10),
        Err(ExecError::NoSuchAttempt { .. })
    ));
    exec.start(
        sh(
            "task-logs",
            1,
            "printf 0123456789abcdef; printf err >&2",
            data.path(),
        ),
        LONG_LEASE,
    )
    .unwrap();
    next_exit(&mut exits, EXIT_WAIT).await;
    let first = read_log(data.path(), "task-logs", 1, LogStream::Stdout, 0, 10).unwrap();
    assert_eq!(first.data, b"0123456789");
    assert_eq!(first.next_offset, 10);
    assert!(first.finished);
    let rest = read_log(data.path(), "task-logs", 1, LogStream::Stdout, 10, 100).unwrap();
    assert_eq!(rest.data, b"abcdef");
    let end = read_log(data.path(), "task-logs", 1, LogStream::Stdout, 16, 100).unwrap();
    assert!(end.data.is_empty() && end.finished);
    let err = read_log(data.path(), "task-logs", 1, LogStream::Stderr, 0, 100).unwrap();
    assert_eq!(err.data, b"err");
    assert!(matches!(
        read_log(data.path(), "../x", 1, LogStream::Stdout, 0, 1),
        Err(ExecError::BadTaskId(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_that_left_the_group_is_still_killed() {
    let data = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (exec, mut exits) = executor(data.path(), 1);
    exec.start(sh("task-escape", 1, ESCAPE_SCRIPT, work.path()), LONG_LEASE)
        .unwrap();
    let escaped = wait_pid_file_async(&work.path().join("gc.pid"), Duration::from_secs(5)).await;
    // The shell writes `$!` right after its fork, possibly before the child
    // has called setsid(): wait (bounded) for the new group.
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        let group = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(escaped))).unwrap();
        if group.as_raw() == escaped {
            break;
        }
        assert!(Instant::now() < until, "setsid did not take effect");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    exec.kill("task-escape", 1, KillReason::Cancelled).unwrap();
    let exit = next_exit(&mut exits, EXIT_WAIT).await;
    assert_eq!(exit.outcome, AttemptOutcome::Cancelled);
    assert!(
        !alive(escaped),
        "escaped process {escaped} outlived the attempt"
    );
}
