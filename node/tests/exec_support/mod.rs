//! Helpers shared by the executor tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoal_node::exec::{AttemptExit, AttemptSpec, Driver, Executor, ExecutorConfig};
use tokio::sync::mpsc;

pub const SHOAL_BIN: &str = env!("CARGO_BIN_EXE_shoal");

pub fn executor(data_dir: &Path, slots: u32) -> (Executor, mpsc::UnboundedReceiver<AttemptExit>) {
    let mut config =
        ExecutorConfig::new(data_dir.to_path_buf(), slots, "node-a", "party-x").expect("config");
    config.supervisor_program = PathBuf::from(SHOAL_BIN);
    Executor::new(config)
}

pub fn sh(task: &str, attempt: u64, script: &str, cwd: &Path) -> AttemptSpec {
    AttemptSpec {
        task_id: task.to_string(),
        attempt,
        driver: Driver::Command {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
        },
        env: BTreeMap::new(),
        cwd: Some(cwd.to_path_buf()),
        slots: 1,
        timeout: None,
        limits: Default::default(),
    }
}

/// A script whose grandchild (a background sleep) writes its pid to
/// `gc.pid` in the cwd, while the child sleeps too.
pub const TREE_SCRIPT: &str = "sleep 100 & echo $! > gc.pid.tmp && mv gc.pid.tmp gc.pid; sleep 100";

pub async fn next_exit(
    rx: &mut mpsc::UnboundedReceiver<AttemptExit>,
    within: Duration,
) -> AttemptExit {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("no attempt exit in time")
        .expect("exit channel closed")
}

/// Waits (bounded) for a pid file and returns the pid in it.
pub fn wait_pid_file(path: &Path, within: Duration) -> i32 {
    let until = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            if let Ok(pid) = text.trim().parse() {
                return pid;
            }
        }
        assert!(Instant::now() < until, "{} never appeared", path.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Waits (bounded) for `pid` to die; returns how long it took.
pub fn wait_dead(pid: i32, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if !alive(pid) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// [`wait_pid_file`] for async tests: never blocks the runtime (on a
/// current-thread runtime a blocking wait would starve the executor).
pub async fn wait_pid_file_async(path: &Path, within: Duration) -> i32 {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || wait_pid_file(&path, within))
        .await
        .expect("pid file wait panicked")
}

/// Like [`TREE_SCRIPT`], but the background process leaves the attempt's
/// process group and session (`setsid`), so only the supervisor's subreaper
/// role or recovery's environment scan can find it.
pub const ESCAPE_SCRIPT: &str =
    "setsid sleep 100 & echo $! > gc.pid.tmp && mv gc.pid.tmp gc.pid; sleep 100";
