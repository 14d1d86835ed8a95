//! The record that tasks keep outside shoal: each attempt appends
//! `start`, periodic `beat` and `end` lines `KIND TASK ATTEMPT NODE NS` to
//! one file (small `O_APPEND` writes do not interleave). The checks read
//! only this file, so they do not trust what shoal says about itself.

use std::collections::BTreeMap;
use std::path::Path;

/// Seconds between two beats of a running attempt. An attempt killed
/// without an `end` line is known to have run until its last beat, so
/// an overlap shorter than this could go unseen.
pub const BEAT_SECS: f64 = 0.2;

/// An attempt silent for longer than this (five beats) before an
/// instant is taken as no longer running then.
pub const RUNNING_SILENCE_SECS: f64 = 5.0 * BEAT_SECS;

/// The `sh -c` script of a task that runs about `work_secs` and records
/// itself in `log`.
pub fn task_script(log: &Path, work_secs: f64) -> String {
    let beats = (work_secs / BEAT_SECS).ceil().max(1.0) as u64;
    let log = log.display();
    format!(
        "L='{log}'; r() {{ echo \"$1 $SHOAL_TASK_ID $SHOAL_ATTEMPT $SHOAL_NODE $(date +%s%N)\" >> \"$L\"; }}; \
         r start; i=0; while [ $i -lt {beats} ]; do sleep {BEAT_SECS}; r beat; i=$((i+1)); done; r end"
    )
}

/// What the log says of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// `SHOAL_ATTEMPT`.
    pub attempt: u64,
    /// `SHOAL_NODE`.
    pub node: String,
    /// Wall clock of its `start` line, ns since the epoch.
    pub start_ns: u64,
    /// Its last line of any kind.
    pub last_seen_ns: u64,
    /// Its `end` line, if it finished.
    pub end_ns: Option<u64>,
    /// How many `start` lines it wrote (more than one is a double run).
    pub starts: u32,
}

/// Every attempt of every task, attempts sorted by start.
#[derive(Debug, Default, Clone)]
pub struct TaskLog {
    /// Task id → its attempts.
    pub tasks: BTreeMap<String, Vec<Attempt>>,
}

/// A broken guarantee found in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlap {
    /// The task.
    pub task: String,
    /// The attempt still running...
    pub earlier: u64,
    /// ...when this one started.
    pub later: u64,
    /// By how long, ns (0 when the same attempt started twice).
    pub overlap_ns: u64,
}

impl TaskLog {
    /// Reads the log; a missing file is an empty log, unreadable lines
    /// (a torn last line) are skipped.
    pub fn read(path: &Path) -> TaskLog {
        TaskLog::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    /// Parses log text.
    pub fn parse(text: &str) -> TaskLog {
        let mut by_key: BTreeMap<(String, u64), Attempt> = BTreeMap::new();
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            let [kind, task, attempt, node, ns] = parts[..] else {
                continue;
            };
            let (Ok(attempt), Ok(ns)) = (attempt.parse::<u64>(), ns.parse::<u64>()) else {
                continue;
            };
            let entry = by_key
                .entry((task.to_string(), attempt))
                .or_insert_with(|| Attempt {
                    attempt,
                    node: node.to_string(),
                    start_ns: ns,
                    last_seen_ns: ns,
                    end_ns: None,
                    starts: 0,
                });
            entry.last_seen_ns = entry.last_seen_ns.max(ns);
            match kind {
                "start" => {
                    entry.starts += 1;
                    entry.start_ns = entry.start_ns.min(ns);
                    if entry.node != node {
                        // The same attempt number on two nodes: a double run.
                        entry.starts += 1;
                    }
                }
                "end" => entry.end_ns = Some(ns),
                _ => {}
            }
        }
        let mut tasks: BTreeMap<String, Vec<Attempt>> = BTreeMap::new();
        for ((task, _), attempt) in by_key {
            tasks.entry(task).or_default().push(attempt);
        }
        for attempts in tasks.values_mut() {
            attempts.sort_by_key(|a| (a.start_ns, a.attempt));
        }
        TaskLog { tasks }
    }

    /// Pairs of attempts of one task that ran at the same time (seen from
    /// the log: the later one started before the earlier one's last line).
    pub fn overlaps(&self) -> Vec<Overlap> {
        let mut found = Vec::new();
        for (task, attempts) in &self.tasks {
            for a in attempts.iter().filter(|a| a.starts > 1) {
                found.push(Overlap {
                    task: task.clone(),
                    earlier: a.attempt,
                    later: a.attempt,
                    overlap_ns: 0,
                });
            }
            for (i, later) in attempts.iter().enumerate() {
                for earlier in &attempts[..i] {
                    let earlier_end = earlier.end_ns.unwrap_or(earlier.last_seen_ns);
                    if later.start_ns < earlier_end {
                        found.push(Overlap {
                            task: task.clone(),
                            earlier: earlier.attempt,
                            later: later.attempt,
                            overlap_ns: earlier_end - later.start_ns,
                        });
                    }
                }
            }
        }
        found
    }

    /// Attempts running on `node` at wall time `at_ns`: the task's latest
    /// attempt by then, not finished, and beating shortly before (an
    /// attempt fenced earlier has no `end` line either, but fell silent).
    pub fn running_on(&self, node: &str, at_ns: u64) -> Vec<(String, u64)> {
        let silence_ns = (RUNNING_SILENCE_SECS * 1e9) as u64;
        let mut found = Vec::new();
        for (task, attempts) in &self.tasks {
            let latest = attempts.iter().rev().find(|a| a.start_ns <= at_ns);
            if let Some(a) = latest {
                if a.node == node
                    && a.end_ns.is_none_or(|e| e > at_ns)
                    && a.last_seen_ns + silence_ns >= at_ns
                {
                    found.push((task.clone(), a.attempt));
                }
            }
        }
        found
    }

    /// The first attempt of `task` that started after `after_ns`.
    pub fn next_start_after(&self, task: &str, after_ns: u64) -> Option<&Attempt> {
        self.tasks.get(task)?.iter().find(|a| a.start_ns > after_ns)
    }

    /// The attempt of `task` that wrote the last `end` line.
    pub fn last_finished(&self, task: &str) -> Option<&Attempt> {
        self.tasks
            .get(task)?
            .iter()
            .filter(|a| a.end_ns.is_some())
            .max_by_key(|a| a.end_ns)
    }

    /// Running attempts (no `end` yet) per node.
    pub fn unfinished_by_node(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for attempts in self.tasks.values() {
            for a in attempts.iter().filter(|a| a.end_ns.is_none()) {
                *counts.entry(a.node.clone()).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// `q`-quantile (0..=1) of `samples` by nearest rank; `None` when empty.
pub fn quantile(samples: &[u64], q: f64) -> Option<u64> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    shoal_protocol::stats::nearest_rank(&sorted, q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_attempts_do_not_overlap() {
        let log = TaskLog::parse(
            "start t1 1 n1 100\nbeat t1 1 n1 150\nstart t1 2 n2 200\nend t1 2 n2 300\n",
        );
        assert!(log.overlaps().is_empty());
        assert_eq!(log.last_finished("t1").map(|a| a.attempt), Some(2));
        assert_eq!(
            log.next_start_after("t1", 120).map(|a| a.node.as_str()),
            Some("n2")
        );
    }

    #[test]
    fn a_beat_after_the_next_start_is_an_overlap() {
        let log = TaskLog::parse(
            "start t1 1 n1 100\nstart t1 2 n2 200\nbeat t1 1 n1 250\nend t1 2 n2 300\n",
        );
        let overlaps = log.overlaps();
        assert_eq!(overlaps.len(), 1);
        assert_eq!((overlaps[0].earlier, overlaps[0].later), (1, 2));
        assert_eq!(overlaps[0].overlap_ns, 50);
    }

    #[test]
    fn one_attempt_started_twice_is_a_double_run() {
        let log = TaskLog::parse("start t1 1 n1 100\nstart t1 1 n3 110\n");
        assert_eq!(log.overlaps().len(), 1);
    }

    #[test]
    fn torn_lines_are_skipped() {
        let log = TaskLog::parse("start t1 1 n1 100\nbeat t1 1 n1\nend t1 1 n1 1x\n");
        assert_eq!(log.tasks["t1"][0].end_ns, None);
        assert_eq!(log.running_on("n1", 150), vec![("t1".to_string(), 1)]);
    }

    #[test]
    fn a_silent_or_superseded_attempt_is_not_running() {
        let log = TaskLog::parse("start t1 1 n1 0\nstart t1 2 n2 2000000000\nstart t2 1 n1 0\n");
        assert!(log.running_on("n1", 2_500_000_000).is_empty());
        assert_eq!(
            log.running_on("n2", 2_500_000_000),
            vec![("t1".to_string(), 2)]
        );
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(quantile(&samples, 0.5), Some(50));
        assert_eq!(quantile(&samples, 0.99), Some(99));
        assert_eq!(quantile(&samples, 1.0), Some(100));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
