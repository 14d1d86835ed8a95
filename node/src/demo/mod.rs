//! `shoal demo`: a local mesh of real agents, a batch of tasks, one node
//! killed with `kill -9`, and what the survivors do about it, printed as it
//! happens; and the chaos engine (`shoal chaos`, hidden) that the chaos
//! tests and `scripts/chaos.sh` share. Every guarantee is checked from a
//! log the tasks write outside shoal ([`tasklog`]).

pub mod chaos;
pub mod cluster;
pub mod http;
pub mod run;
pub mod tasklog;
pub mod tasks;

use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use thiserror::Error;

/// Why a demo or chaos run stopped early or failed.
#[derive(Debug, Error)]
pub enum DemoError {
    /// An option makes no sense.
    #[error("bad option: {0}")]
    BadOption(String),
    /// The CA, certificates or directories could not be made.
    #[error("setup failed: {0}")]
    Setup(String),
    /// An agent died or never answered.
    #[error("agent {node} {why}; last log lines:\n{log}")]
    AgentFailed {
        /// Which.
        node: String,
        /// What happened.
        why: String,
        /// Its log tail.
        log: String,
    },
    /// A guarantee did not hold (or could not be shown to hold in time).
    #[error("GUARANTEE BROKEN: {0}")]
    Guarantee(String),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted; agents stopped (directories removed unless --keep)")]
    Interrupted,
    /// Local I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

static ABORT: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM arrived; every wait of the demo checks it.
pub fn aborted() -> bool {
    ABORT.load(Ordering::Relaxed)
}

/// Turns SIGINT/SIGTERM into [`aborted`] so that the run unwinds and its
/// drops kill the agents and remove the directories.
pub fn watch_signals() {
    let _ = std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    return;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
            });
            ABORT.store(true, Ordering::Relaxed);
        });
}

/// `shoal demo` options.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Number of agents.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Number of tasks.
    #[arg(long, default_value_t = 40)]
    pub tasks: usize,
    /// Seconds of work per task.
    #[arg(long, default_value_t = 4.0)]
    pub task_secs: f64,
    /// Keep the run's directory (CA, data, agent logs, task log).
    #[arg(long)]
    pub keep: bool,
    /// Only membership: kill a node, watch it detected, restart it.
    #[arg(long)]
    pub membership_only: bool,
    /// The `shoal` binary for agents [default: this one].
    #[arg(long, hide = true)]
    pub binary: Option<PathBuf>,
}

/// `shoal chaos` options (hidden; used by `scripts/chaos.sh`).
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Seconds of faults.
    #[arg(long, default_value_t = 60)]
    pub duration: u64,
    /// Number of tasks, submitted evenly over the run.
    #[arg(long, default_value_t = 100)]
    pub tasks: usize,
    /// Seed of the fault schedule [default: from the clock, printed].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of agents.
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// Seconds of work per task.
    #[arg(long, default_value_t = 3.0)]
    pub task_secs: f64,
    /// Mean seconds between faults.
    #[arg(long, default_value_t = 4.0)]
    pub fault_every_secs: f64,
    /// Keep the run's directory.
    #[arg(long)]
    pub keep: bool,
    /// Never restart a killed node without its data directory.
    #[arg(long)]
    pub no_wipe: bool,
    /// Task slots per agent (enough that a failover never waits for one).
    #[arg(long, default_value_t = 8)]
    pub slots: u32,
    /// The `shoal` binary for agents [default: this one].
    #[arg(long, hide = true)]
    pub binary: Option<PathBuf>,
}

/// The binary to run agents from.
pub fn binary_or_self(binary: Option<PathBuf>) -> Result<PathBuf, DemoError> {
    match binary {
        Some(b) => Ok(b),
        None => Ok(std::env::current_exe()?),
    }
}
