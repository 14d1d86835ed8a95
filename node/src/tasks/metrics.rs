//! Task metrics: registered in the agent's registry, updated by the task
//! host as effects flow and from the coordinator's counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use shoal_protocol::coordinator::Stats;
use std::sync::Mutex;

/// Label of the `shoal_tasks` gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskStateLabel {
    /// pending, claimed, running, succeeded, failed or cancelled.
    pub state: &'static str,
}

/// Failover buckets in seconds: the target is 2.5 s at p99.
const FAILOVER_BUCKETS_S: [f64; 10] = [0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0, 10.0, 30.0];
/// Store commit buckets in seconds (fsync on SSDs to slow disks).
const COMMIT_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Every task metric.
#[derive(Debug)]
pub struct TaskMetrics {
    /// Task records by state, as this node's acceptors know them.
    pub tasks: Family<TaskStateLabel, Gauge>,
    /// Claims this node won.
    pub claims_won: Counter,
    /// Claims this node started and lost (another node won, or no majority).
    pub claims_lost: Counter,
    /// Lease renewals that moved a running attempt's lease.
    pub lease_renewals: Counter,
    /// Attempts killed because their lease could not be renewed.
    pub self_fences: Counter,
    /// Attempts found running after a restart (fenced by the restart).
    pub recovered_fenced: Counter,
    /// 1 while this node drains (`shoal drain`), else 0.
    pub draining: Gauge,
    /// Attempts started here.
    pub attempts_started: Counter,
    /// Attempt outcomes refused because the attempt was no longer current.
    pub results_refused: Counter,
    /// Attempts of this node whose commit made their task `succeeded`:
    /// counted the moment the commit is chosen, so the sum over the nodes
    /// is exact at any instant (the `tasks` gauge is recomputed once a
    /// second and counts only what this node's acceptors accepted).
    pub attempts_succeeded: Counter,
    /// Seconds from this node seeing a member leave the live set to this
    /// node starting a retried attempt (attempt > 1) of a task.
    pub failover_seconds: Histogram,
    /// Seconds per store group commit (fsync included).
    pub store_commit_seconds: Histogram,
    /// Register operations that failed for want of a majority.
    pub ops_failed: Counter,
    /// Answers passed on between two other members (a one-way cut).
    pub answers_relayed: Counter,
    /// Tasks this node offered that fit no node, parked at the nodes that
    /// lacked least of them: a rising rate means work waits for room.
    pub offers_parked: Counter,
    /// Smallest shard group in this node's directory (0 until every shard
    /// is known): equals the group size once the party is fully replicated.
    pub shard_group_min_size: Gauge,
    /// Shard groups counting a member this node does not see alive.
    pub shard_groups_degraded: Gauge,
    last: Mutex<Stats>,
}

impl Default for TaskMetrics {
    fn default() -> Self {
        TaskMetrics {
            tasks: Family::default(),
            claims_won: Counter::default(),
            claims_lost: Counter::default(),
            lease_renewals: Counter::default(),
            self_fences: Counter::default(),
            recovered_fenced: Counter::default(),
            draining: Gauge::default(),
            attempts_started: Counter::default(),
            results_refused: Counter::default(),
            attempts_succeeded: Counter::default(),
            failover_seconds: Histogram::new(FAILOVER_BUCKETS_S),
            store_commit_seconds: Histogram::new(COMMIT_BUCKETS_S),
            ops_failed: Counter::default(),
            answers_relayed: Counter::default(),
            offers_parked: Counter::default(),
            shard_group_min_size: Gauge::default(),
            shard_groups_degraded: Gauge::default(),
            last: Mutex::new(Stats::default()),
        }
    }
}

impl TaskMetrics {
    /// Adds every metric to `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "tasks",
            "Task records by state, as this node's acceptors know them",
            self.tasks.clone(),
        );
        registry.register(
            "claims_won",
            "Claims this node won",
            self.claims_won.clone(),
        );
        registry.register(
            "offers_parked",
            "Tasks offered while no node had room for them, parked where room frees first",
            self.offers_parked.clone(),
        );
        registry.register(
            "claims_lost",
            "Claims this node started and did not win",
            self.claims_lost.clone(),
        );
        registry.register(
            "lease_renewals",
            "Lease renewals of running attempts",
            self.lease_renewals.clone(),
        );
        registry.register(
            "self_fences",
            "Attempts killed because their lease could not be renewed in time",
            self.self_fences.clone(),
        );
        registry.register(
            "draining",
            "1 while this node drains: it takes no new work and leaves once its attempts ended",
            self.draining.clone(),
        );
        registry.register(
            "recovered_fenced",
            "Attempts found after a restart, fenced by it",
            self.recovered_fenced.clone(),
        );
        registry.register(
            "attempts_started",
            "Attempts started on this node",
            self.attempts_started.clone(),
        );
        registry.register(
            "attempts_succeeded",
            "Attempts of this node whose committed outcome made the task succeeded",
            self.attempts_succeeded.clone(),
        );
        registry.register(
            "results_refused",
            "Attempt results refused because the attempt was stale",
            self.results_refused.clone(),
        );
        registry.register(
            "register_ops_failed",
            "Register operations that found no majority",
            self.ops_failed.clone(),
        );
        registry.register(
            "answers_relayed",
            "Group answers this node passed on to a requester that could not hear the answering member (a one-way cut)",
            self.answers_relayed.clone(),
        );
        registry.register(
            "shard_group_min_size",
            "Smallest shard group this node knows of (0 until every shard is known)",
            self.shard_group_min_size.clone(),
        );
        registry.register(
            "shard_groups_degraded",
            "Shard groups with a member this node does not see alive (take no second disk while > 0)",
            self.shard_groups_degraded.clone(),
        );
        registry.register(
            "failover_seconds",
            "From a member leaving this node's live set to a retried attempt starting here",
            self.failover_seconds.clone(),
        );
        registry.register(
            "store_commit_seconds",
            "Store group commit latency, fsync included",
            self.store_commit_seconds.clone(),
        );
    }

    /// Brings the counters derived from the coordinator's up to date.
    pub fn observe_coordinator(&self, stats: &Stats) {
        let mut last = self.last.lock().expect("task metrics lock poisoned");
        let d = |new: u64, old: u64| new.saturating_sub(old);
        let won = d(stats.claims_won, last.claims_won);
        let started = d(stats.claims_started, last.claims_started);
        self.claims_won.inc_by(won);
        self.claims_lost.inc_by(started.saturating_sub(won));
        self.self_fences.inc_by(d(stats.fenced, last.fenced));
        self.ops_failed.inc_by(d(stats.ops_failed, last.ops_failed));
        self.answers_relayed
            .inc_by(d(stats.answers_relayed, last.answers_relayed));
        self.offers_parked
            .inc_by(d(stats.parked_offers, last.parked_offers));
        *last = *stats;
    }
}
