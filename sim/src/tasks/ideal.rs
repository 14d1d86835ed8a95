//! The omniscient least-loaded placement that `placement_vs_ideal` divides
//! by (Sparrow's measure). The approximation, stated honestly:
//! - the same submitted tasks (submit instant, duration, slot need) as the
//!   real run, considered in submit order, with zero scheduling latency;
//! - each task goes to the node where it can start earliest (ties: the one
//!   with most free slots at submit time), knowing the whole fault schedule
//!   in advance: a node is eligible only if it is not down at any moment of
//!   the task's run, so the ideal never loses work to a crash;
//! - a node runs a task as soon as enough of its slots, CPU and memory are
//!   free for the whole run (FIFO in submit order); it ignores retries of
//!   failed exits, pauses and partitions.

/// One submitted task.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Global ms of the submit.
    pub submit_ms: u64,
    /// Run time, ms.
    pub duration_ms: u64,
    /// What it holds while it runs: slots, CPU millicores, memory MiB.
    pub need: Need,
}

/// Slots, CPU millicores and memory MiB, in that order.
pub type Need = [u32; 3];

fn usage_over(res: &[(u64, u64, Need)], from: u64, to: u64) -> Need {
    // Peak usage over [from, to) per kind: checked at `from` and at every
    // start inside.
    let at = |t: u64| -> Need {
        let mut sum = [0u32; 3];
        for r in res.iter().filter(|(s, e, _)| *s <= t && t < *e) {
            for (total, n) in sum.iter_mut().zip(r.2) {
                *total += n;
            }
        }
        sum
    };
    let mut peak = at(from);
    for (s, _, _) in res {
        if *s > from && *s < to {
            for (p, u) in peak.iter_mut().zip(at(*s)) {
                *p = (*p).max(u);
            }
        }
    }
    peak
}

fn room_for(used: Need, need: Need, capacity: Need) -> bool {
    (0..3).all(|k| used[k] + need[k] <= capacity[k])
}

/// Mean response time (submit → finish) of the ideal placement, ms.
/// `capacity` is each node's slots, CPU and memory; `downs` lists (node,
/// down from, down until) in global ms.
pub fn mean_response_ms(
    jobs: &[Job],
    nodes: usize,
    capacity: Need,
    downs: &[(usize, u64, u64)],
) -> f64 {
    if jobs.is_empty() || nodes == 0 {
        return 0.0;
    }
    let mut res: Vec<Vec<(u64, u64, Need)>> = vec![Vec::new(); nodes];
    let mut total = 0.0;
    let mut placed = 0usize;
    for job in jobs {
        let mut need = job.need;
        for (n, c) in need.iter_mut().zip(capacity) {
            *n = (*n).min(c);
        }
        let mut best: Option<(u64, u32, usize)> = None;
        for (node, r) in res.iter_mut().enumerate() {
            r.retain(|(_, e, _)| *e > job.submit_ms);
            let down = |t: u64| {
                downs
                    .iter()
                    .any(|(n, a, b)| *n == node && *a < t + job.duration_ms && t < *b)
            };
            let mut candidates: Vec<u64> = std::iter::once(job.submit_ms)
                .chain(r.iter().map(|x| x.1))
                .chain(downs.iter().filter(|d| d.0 == node).map(|d| d.2))
                .filter(|t| *t >= job.submit_ms)
                .collect();
            candidates.sort_unstable();
            let start = candidates.into_iter().find(|t| {
                !down(*t) && room_for(usage_over(r, *t, *t + job.duration_ms), need, capacity)
            });
            let Some(start) = start else { continue };
            let free =
                capacity[0].saturating_sub(usage_over(r, job.submit_ms, job.submit_ms + 1)[0]);
            let better = match best {
                None => true,
                Some((s, f, _)) => start < s || (start == s && free > f),
            };
            if better {
                best = Some((start, free, node));
            }
        }
        if let Some((start, _, node)) = best {
            res[node].push((start, start + job.duration_ms, need));
            total += (start + job.duration_ms - job.submit_ms) as f64;
            placed += 1;
        }
    }
    if placed == 0 {
        0.0
    } else {
        total / placed as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_cluster_queues_and_an_idle_one_runs_at_once() {
        let jobs: Vec<Job> = (0..3)
            .map(|_| Job {
                submit_ms: 0,
                duration_ms: 100,
                need: [1, 0, 0],
            })
            .collect();
        assert_eq!(mean_response_ms(&jobs, 3, [1, 0, 0], &[]), 100.0);
        // One node, one slot: 100, 200, 300.
        assert_eq!(mean_response_ms(&jobs, 1, [1, 0, 0], &[]), 200.0);
        // The only node is down until 50: everything shifts by 50.
        assert_eq!(
            mean_response_ms(&jobs[..1], 1, [1, 0, 0], &[(0, 0, 50)]),
            150.0
        );
    }

    #[test]
    fn memory_serialises_tasks_that_slots_alone_would_run_together() {
        let jobs: Vec<Job> = (0..2)
            .map(|_| Job {
                submit_ms: 0,
                duration_ms: 100,
                need: [1, 0, 600],
            })
            .collect();
        assert_eq!(mean_response_ms(&jobs, 1, [4, 0, 1024], &[]), 150.0);
        assert_eq!(mean_response_ms(&jobs, 1, [4, 0, 2048], &[]), 100.0);
    }
}
