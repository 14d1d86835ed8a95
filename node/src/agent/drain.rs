//! Draining (`shoal drain`, `POST /v1/drain`): the node takes no new work
//! (the decision is the coordinator's, `Coordinator::set_draining`), waits
//! until its running attempts have ended or the deadline passed, and then the
//! agent leaves the mesh as on SIGTERM. Attempts still running at the
//! deadline are fenced by the leave and restart elsewhere as their next
//! attempt.

use crate::tasks::host::TaskLoad;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often a drain looks at the running attempts.
const POLL: Duration = Duration::from_millis(100);
/// How long no attempt must run before a drain counts as finished: a claim
/// sent just before the drain began may still win its lease and start one
/// (claims end within the coordinator's operation timeout, 300 ms).
const SETTLE: Duration = Duration::from_millis(500);
/// Deadline of a drain that names none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(300);
/// Longest deadline accepted.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// The API's side: starts or cancels a drain.
#[derive(Clone, Debug)]
pub struct DrainControl {
    deadline: Arc<watch::Sender<Option<Instant>>>,
    load: Arc<TaskLoad>,
}

/// The agent's side: resolves once a drain is complete.
pub struct DrainWatch {
    deadline: watch::Receiver<Option<Instant>>,
    load: Arc<TaskLoad>,
}

/// A control and its watch over `load`.
pub fn channel(load: Arc<TaskLoad>) -> (DrainControl, DrainWatch) {
    let (tx, rx) = watch::channel(None);
    (
        DrainControl {
            deadline: Arc::new(tx),
            load: load.clone(),
        },
        DrainWatch { deadline: rx, load },
    )
}

impl DrainControl {
    /// Starts a drain ending at `now + deadline` (or moves its deadline).
    pub fn start(&self, deadline: Duration) {
        let until = Instant::now() + deadline.min(MAX_DEADLINE);
        self.deadline.send_replace(Some(until));
    }

    /// Cancels a drain: the agent stays.
    pub fn cancel(&self) {
        self.deadline.send_replace(None);
    }

    /// Whether a drain is under way.
    pub fn draining(&self) -> bool {
        self.deadline.borrow().is_some()
    }

    /// Attempts still running here.
    pub fn running(&self) -> u32 {
        self.load.running.load(Ordering::Relaxed)
    }
}

/// Why a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainEnd {
    /// Every running attempt ended.
    Finished,
    /// The deadline passed with this many attempts running.
    DeadlinePassed(u32),
}

impl DrainWatch {
    /// Waits until a drain was started and is complete; a cancelled drain
    /// goes back to waiting for the next one. Never returns if no drain is
    /// ever started.
    pub async fn done(&mut self) -> DrainEnd {
        let mut idle_since: Option<Instant> = None;
        loop {
            let Some(until) = *self.deadline.borrow_and_update() else {
                idle_since = None;
                if self.deadline.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                continue;
            };
            let running = self.load.running.load(Ordering::Relaxed);
            if running == 0 {
                let since = *idle_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SETTLE {
                    return DrainEnd::Finished;
                }
            } else {
                idle_since = None;
            }
            if Instant::now() >= until {
                return DrainEnd::DeadlinePassed(running);
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.deadline.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_drain_ends_when_attempts_end_or_at_its_deadline() {
        let load = Arc::new(TaskLoad::default());
        load.running.store(1, Ordering::Relaxed);
        let (control, mut watch) = channel(load.clone());
        control.start(Duration::from_millis(200));
        assert_eq!(watch.done().await, DrainEnd::DeadlinePassed(1));
        control.start(Duration::from_secs(60));
        let finisher = load.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            finisher.running.store(0, Ordering::Relaxed);
        });
        let started = Instant::now();
        let end = tokio::time::timeout(Duration::from_secs(5), watch.done()).await;
        assert_eq!(end.ok(), Some(DrainEnd::Finished));
        assert!(
            started.elapsed() >= SETTLE,
            "finished before the settle time"
        );
    }

    #[tokio::test]
    async fn a_cancelled_drain_does_not_end() {
        let load = Arc::new(TaskLoad::default());
        load.running.store(1, Ordering::Relaxed);
        let (control, mut watch) = channel(load);
        control.start(Duration::from_millis(100));
        control.cancel();
        let ended = tokio::time::timeout(Duration::from_millis(600), watch.done()).await;
        assert!(ended.is_err(), "a cancelled drain ended: {ended:?}");
    }
}
