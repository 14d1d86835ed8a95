//! One measurement, as the drivers print it (one JSON object per line).

use serde::{Deserialize, Serialize};

/// Which system a measurement is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// The conventional baseline: a worker pool claiming through etcd leases.
    Etcd,
    /// A 3-agent shoal mesh.
    Shoal,
}

/// One measurement line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    /// One repetition of the zero-duration throughput run.
    Throughput {
        /// Which side.
        side: Side,
        /// Tasks submitted.
        tasks: u64,
        /// Tasks observed completed.
        completed: u64,
        /// From the first submit to the last observed completion.
        elapsed_ms: u64,
        /// `completed / elapsed`.
        tasks_per_s: f64,
        /// Concurrent submitters.
        submitters: u32,
        /// Concurrent workers (etcd) or total slots (shoal).
        workers: u32,
        /// Tasks that ran twice in this run (completed twice).
        double_runs: u64,
    },
    /// A batch of kill -9 failovers.
    Failover {
        /// Which side.
        side: Side,
        /// Processes killed.
        kills: u32,
        /// Per held task: kill to the task running elsewhere.
        samples_ms: Vec<f64>,
        /// Tasks that never ran elsewhere within the wait bound.
        lost: u32,
    },
    /// SIGSTOP of a holder for a while, then SIGCONT.
    Pause {
        /// Which side.
        side: Side,
        /// Pauses done.
        trials: u32,
        /// How long each pause lasted.
        pause_ms: u64,
        /// What the run log shows.
        result: crate::runlog::DoubleRuns,
    },
}

impl Record {
    /// The side the record is of.
    pub fn side(&self) -> Side {
        match self {
            Record::Throughput { side, .. }
            | Record::Failover { side, .. }
            | Record::Pause { side, .. } => *side,
        }
    }

    /// Prints the record as one JSON line on stdout.
    pub fn emit(&self) {
        match serde_json::to_string(self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cannot encode record: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_their_json_line() {
        let r = Record::Failover {
            side: Side::Shoal,
            kills: 2,
            samples_ms: vec![1.0, 2.5],
            lost: 0,
        };
        let line = serde_json::to_string(&r).expect("encodes");
        assert!(line.contains("\"kind\":\"failover\""), "{line}");
        assert!(line.contains("\"side\":\"shoal\""), "{line}");
        let back: Record = serde_json::from_str(&line).expect("decodes");
        assert_eq!(back, r);
    }
}
