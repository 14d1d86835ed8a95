//! The run log of the paused-holder experiment, and how double runs are
//! counted from it.
//!
//! Every execution (an etcd worker's in-process run, or a shoal task's shell
//! command) appends lines `TASK RUNNER WALL_MS KIND` to one shared file while
//! it runs: `hb` every few tens of milliseconds, `done` when it completes.
//! A runner is one execution (worker id, or node:attempt). A task is a double
//! run when two runners executed at the same time (their stretches of
//! heartbeats, no more than [`MAX_HEARTBEAT_GAP_MS`] apart, overlap), or when
//! it was completed more than once.

use std::collections::BTreeMap;

/// What the log says about double runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DoubleRuns {
    /// Tasks seen in the log.
    pub tasks: u64,
    /// Tasks run by two runners at once, or completed twice.
    pub double_runs: u64,
    /// Longest time two runners of one task were both executing.
    pub max_overlap_ms: u64,
    /// Tasks whose `done` line appears more than once.
    pub completed_twice: u64,
}

/// Heartbeats closer than this belong to one stretch of execution; a longer
/// gap means the runner was not executing (paused, stopped).
pub const MAX_HEARTBEAT_GAP_MS: u64 = 500;

#[derive(Debug, Clone, Default)]
struct Span {
    stamps_ms: Vec<u64>,
    done: u32,
}

impl Span {
    /// Stretches `[from, to]` during which the runner was executing.
    fn segments(&self) -> Vec<(u64, u64)> {
        let mut stamps = self.stamps_ms.clone();
        stamps.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::new();
        for t in stamps {
            match out.last_mut() {
                Some((_, to)) if t.saturating_sub(*to) <= MAX_HEARTBEAT_GAP_MS => *to = t,
                _ => out.push((t, t)),
            }
        }
        out
    }
}

/// Total time two runners' executing stretches overlap, and whether they
/// touch at all.
fn overlap(a: &[(u64, u64)], b: &[(u64, u64)]) -> Option<u64> {
    let mut total: Option<u64> = None;
    for &(a0, a1) in a {
        for &(b0, b1) in b {
            let (start, end) = (a0.max(b0), a1.min(b1));
            if start <= end {
                total = Some(total.unwrap_or(0) + (end - start));
            }
        }
    }
    total
}

/// Counts double runs in a run log's text; lines that do not parse are
/// skipped (a runner killed mid-write leaves a torn last line).
pub fn count_double_runs(text: &str) -> DoubleRuns {
    let mut spans: BTreeMap<&str, BTreeMap<&str, Span>> = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(task), Some(runner), Some(ts), Some(kind), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            continue;
        };
        let Ok(ts_ms) = ts.parse::<u64>() else {
            continue;
        };
        let span = spans.entry(task).or_default().entry(runner).or_default();
        span.stamps_ms.push(ts_ms);
        if kind == "done" {
            span.done += 1;
        }
    }
    let mut out = DoubleRuns {
        tasks: spans.len() as u64,
        ..DoubleRuns::default()
    };
    for runners in spans.values() {
        let runs: Vec<&Span> = runners.values().collect();
        let segments: Vec<Vec<(u64, u64)>> = runs.iter().map(|s| s.segments()).collect();
        let mut overlap_ms = 0u64;
        let mut overlapped = false;
        for (i, a) in segments.iter().enumerate() {
            for b in &segments[i + 1..] {
                if let Some(ms) = overlap(a, b) {
                    overlapped = true;
                    overlap_ms = overlap_ms.max(ms);
                }
            }
        }
        let completions: u32 = runs.iter().map(|s| s.done).sum();
        if completions > 1 {
            out.completed_twice += 1;
        }
        if overlapped || completions > 1 {
            out.double_runs += 1;
        }
        out.max_overlap_ms = out.max_overlap_ms.max(overlap_ms);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_runners_of_one_task_are_a_double_run() {
        let log = "t1 w1 100 hb\nt1 w1 500 hb\nt1 w1 900 hb\nt1 w2 500 hb\nt1 w2 900 hb\nt1 w2 1200 done\n";
        let r = count_double_runs(log);
        assert_eq!(r.tasks, 1);
        assert_eq!(r.double_runs, 1);
        assert_eq!(r.max_overlap_ms, 400);
        assert_eq!(r.completed_twice, 0);
    }

    #[test]
    fn a_fenced_runner_that_stopped_before_the_next_began_is_not_a_double_run() {
        let log = "t1 n1:1 100 hb\nt1 n1:1 300 hb\nt1 n2:2 2400 hb\nt1 n2:2 3000 done\n";
        let r = count_double_runs(log);
        assert_eq!(r.double_runs, 0);
        assert_eq!(r.max_overlap_ms, 0);
    }

    #[test]
    fn a_paused_stretch_does_not_count_as_executing() {
        // w1 runs 0..200, is stopped, resumes 3000..3200; w2 runs 1000..2000.
        let log = "t1 w1 0 hb\nt1 w1 200 hb\nt1 w1 3000 hb\nt1 w1 3200 hb\n\
                   t1 w2 1000 hb\nt1 w2 1400 hb\nt1 w2 1800 hb\nt1 w2 2000 hb\n";
        let r = count_double_runs(log);
        assert_eq!(r.double_runs, 0);
        let resumed_into_w2 =
            "t1 w1 0 hb\nt1 w1 1500 hb\nt1 w1 1700 hb\nt1 w2 1000 hb\nt1 w2 2000 hb\n";
        let r = count_double_runs(resumed_into_w2);
        assert_eq!(
            r.double_runs, 0,
            "1000 and 2000 are 1 s apart: two single points"
        );
        let both_running =
            "t1 w1 0 hb\nt1 w1 1500 hb\nt1 w1 1700 hb\nt1 w2 1400 hb\nt1 w2 1800 hb\n";
        let r = count_double_runs(both_running);
        assert_eq!(r.double_runs, 1);
        assert_eq!(r.max_overlap_ms, 200);
    }

    #[test]
    fn two_completions_are_a_double_run_even_without_overlap() {
        let log = "t1 w1 100 done\nt1 w2 5000 done\nt2 w1 10 done\n";
        let r = count_double_runs(log);
        assert_eq!(r.tasks, 2);
        assert_eq!(r.double_runs, 1);
        assert_eq!(r.completed_twice, 1);
    }

    #[test]
    fn torn_and_garbage_lines_are_skipped() {
        let log = "t1 w1 100 hb\nt1 w2 15\nnot a line at all here\nt1 w2 abc hb\n";
        let r = count_double_runs(log);
        assert_eq!(r.tasks, 1);
        assert_eq!(r.double_runs, 0);
    }
}
