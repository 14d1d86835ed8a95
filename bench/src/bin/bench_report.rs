//! `bench-report`: folds the drivers' JSON lines into the comparison
//! (`target/bench/etcd-vs-shoal.json`) and prints the table.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use serde_json::{json, Value};
use shoal_bench::record::{Record, Side};
use shoal_bench::stats::{median, percentile};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "bench-report",
    about = "Fold benchmark records into the comparison"
)]
struct Cli {
    /// JSON lines written by etcd-pool and shoal-load.
    #[arg(long)]
    records: PathBuf,
    /// Where to write the comparison JSON.
    #[arg(long)]
    out: PathBuf,
    /// Free-form run description kept in the JSON (mode, command).
    #[arg(long, default_value = "")]
    note: String,
}

/// One side's figures.
#[derive(Debug, Default)]
struct Figures {
    throughput: Vec<f64>,
    failover: Vec<f64>,
    kills: u32,
    lost: u32,
    double_runs: u64,
    pause_trials: u32,
    pause_double_runs: u64,
    max_overlap_ms: u64,
    completed_twice: u64,
}

impl Figures {
    fn add(&mut self, r: &Record) {
        match r {
            Record::Throughput {
                tasks_per_s,
                double_runs,
                ..
            } => {
                self.throughput.push(*tasks_per_s);
                self.double_runs += double_runs;
            }
            Record::Failover {
                kills,
                samples_ms,
                lost,
                ..
            } => {
                self.kills += kills;
                self.lost += lost;
                self.failover.extend(samples_ms);
            }
            Record::Pause { trials, result, .. } => {
                self.pause_trials += trials;
                self.double_runs += result.double_runs;
                self.pause_double_runs += result.double_runs;
                self.max_overlap_ms = self.max_overlap_ms.max(result.max_overlap_ms);
                self.completed_twice += result.completed_twice;
            }
        }
    }

    fn tasks_per_s(&self) -> Option<f64> {
        median(&self.throughput)
    }

    fn failover_p(&self, p: f64) -> Option<f64> {
        percentile(&self.failover, p)
    }

    fn json(&self) -> Value {
        let measured = !self.throughput.is_empty() || !self.failover.is_empty();
        json!({
            "measured": measured,
            "tasks_per_s": self.tasks_per_s(),
            "failover_ms": {"p50": self.failover_p(50.0), "p99": self.failover_p(99.0)},
            "double_runs": if measured || self.pause_trials > 0 { Some(self.double_runs) } else { None },
            "throughput_reps": self.throughput,
            "failover_samples": self.failover.len(),
            "failover_kills": self.kills,
            "failover_lost": self.lost,
            "pause": {
                "trials": self.pause_trials,
                "double_runs": self.pause_double_runs,
                "completed_twice": self.completed_twice,
                "max_overlap_ms": self.max_overlap_ms,
            },
        })
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    match (num, den) {
        (Some(n), Some(d)) if d > 0.0 => Some(n / d),
        _ => None,
    }
}

fn cell(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.records)
        .with_context(|| format!("read {}", cli.records.display()))?;
    let (mut etcd, mut shoal) = (Figures::default(), Figures::default());
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(r) => match r.side() {
                Side::Etcd => etcd.add(&r),
                Side::Shoal => shoal.add(&r),
            },
            Err(e) => eprintln!("bench-report: line {}: skipped ({e})", n + 1),
        }
    }
    let tp_ratio = ratio(shoal.tasks_per_s(), etcd.tasks_per_s());
    let fo_ratio = ratio(etcd.failover_p(99.0), shoal.failover_p(99.0));
    let doc = json!({
        "shoal": shoal.json(),
        "etcd": etcd.json(),
        "ratio": {"throughput": tp_ratio, "failover_p99": fo_ratio},
        "note": cli.note,
        "generated_unix_ms": shoal_bench::wall_ms(),
    });
    if let Some(dir) = cli.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&cli.out, serde_json::to_string_pretty(&doc)? + "\n")?;

    let spread = |f: &Figures| {
        format!(
            "{} reps, {}..{}",
            f.throughput.len(),
            cell(percentile(&f.throughput, 0.0)),
            cell(percentile(&f.throughput, 100.0))
        )
    };
    println!(
        "| figure | etcd median | etcd p99 | shoal median | shoal p99 | ratio (>1: shoal better) |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| throughput, tasks/s ({} vs {}) | {} | - | {} | - | {} |",
        spread(&etcd),
        spread(&shoal),
        cell(etcd.tasks_per_s()),
        cell(shoal.tasks_per_s()),
        tp_ratio.map_or("n/a".into(), |r| format!("{r:.2}x"))
    );
    println!(
        "| failover kill -9 -> runs elsewhere, ms ({} / {} samples) | {} | {} | {} | {} | {} (p99) |",
        etcd.failover.len(),
        shoal.failover.len(),
        cell(etcd.failover_p(50.0)),
        cell(etcd.failover_p(99.0)),
        cell(shoal.failover_p(50.0)),
        cell(shoal.failover_p(99.0)),
        fo_ratio.map_or("n/a".into(), |r| format!("{r:.2}x"))
    );
    println!(
        "| double runs (SIGSTOP pause: {} / {} trials; max overlap ms {} / {}) | {} | - | {} | - | - |",
        etcd.pause_trials,
        shoal.pause_trials,
        etcd.max_overlap_ms,
        shoal.max_overlap_ms,
        etcd.double_runs,
        shoal.double_runs
    );
    if etcd.lost + shoal.lost > 0 {
        println!(
            "failover: tasks never seen elsewhere within 60 s: etcd {}, shoal {}",
            etcd.lost, shoal.lost
        );
    }
    println!("wrote {}", cli.out.display());
    Ok(())
}
