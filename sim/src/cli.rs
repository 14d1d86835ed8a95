//! The command line: `shoal-sim run` and `shoal-sim sweep`.

use crate::host::Impl;
use crate::scenario::Scenario;
use crate::{plot, Outcome, KNOWN_BUGS};
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Deterministic chaos simulator for shoal's protocol machines.
///
/// Every run is a function of the scenario file and one seed: the same pair
/// replays the same trace (compare `trace_hash`).
#[derive(Debug, Parser)]
#[command(name = "shoal-sim", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs one scenario with one seed, prints a summary, optionally writes
    /// the JSON report and an SVG plot. Exits 0 once the run completed,
    /// whatever it found (read `violations`).
    Run(RunArgs),
    /// Runs one scenario for every seed of a range (two threads), prints each
    /// failing seed with its first violation and a summary line; exits 1 if
    /// any seed failed.
    Sweep(SweepArgs),
}

#[derive(Debug, Args)]
struct Common {
    /// Scenario file (TOML), e.g. sim/scenarios/smoke.toml.
    #[arg(long, value_name = "PATH")]
    scenario: PathBuf,
    /// Which membership implementation the nodes run.
    #[arg(long = "impl", value_enum, default_value = "shoal")]
    implementation: Impl,
    /// Plants a known bug (for checking that the checkers catch it).
    #[arg(long, value_name = "NAME", value_parser = parse_bug)]
    bug: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Master seed; every other seed derives from it.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Writes the JSON report here.
    #[arg(long, value_name = "OUT")]
    json: Option<PathBuf>,
    /// Writes an SVG plot (alive counts over time, detection CDF) here.
    #[arg(long, value_name = "OUT.svg")]
    plot: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SweepArgs {
    #[command(flatten)]
    common: Common,
    /// Seed range: `A..B` (B excluded) or `A..=B` (B included).
    #[arg(long, value_name = "A..B", value_parser = parse_seed_range)]
    seeds: SeedRange,
    /// Worker threads.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
}

/// An inclusive range of seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeedRange {
    /// First seed.
    pub first: u64,
    /// Last seed, included.
    pub last: u64,
}

/// Upper bound on seeds per sweep, so a typo does not run for ever.
pub const MAX_SWEEP_SEEDS: u64 = 1_000_000;

/// Parses `A..B` or `A..=B`.
pub fn parse_seed_range(s: &str) -> Result<SeedRange, String> {
    let (a, b, inclusive) = if let Some((a, b)) = s.split_once("..=") {
        (a, b, true)
    } else if let Some((a, b)) = s.split_once("..") {
        (a, b, false)
    } else {
        return Err(format!("`{s}` is not a range like 1..100 or 1..=100"));
    };
    let first: u64 = a.trim().parse().map_err(|e| format!("start `{a}`: {e}"))?;
    let end: u64 = b.trim().parse().map_err(|e| format!("end `{b}`: {e}"))?;
    let last = if inclusive {
        end
    } else {
        end.checked_sub(1).ok_or("empty range")?
    };
    if last < first {
        return Err(format!("`{s}` is empty"));
    }
    if last - first >= MAX_SWEEP_SEEDS {
        return Err(format!("at most {MAX_SWEEP_SEEDS} seeds per sweep"));
    }
    Ok(SeedRange { first, last })
}

/// Accepts only the names in [`KNOWN_BUGS`].
pub fn parse_bug(s: &str) -> Result<String, String> {
    if KNOWN_BUGS.contains(&s) {
        Ok(s.to_string())
    } else if KNOWN_BUGS.is_empty() {
        Err(format!("unknown bug `{s}`: no bugs can be planted yet"))
    } else {
        Err(format!(
            "unknown bug `{s}`; known: {}",
            KNOWN_BUGS.join(", ")
        ))
    }
}

fn bar(len: u64, what: &str) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template("{spinner} {msg} [{bar:40}] {pos}/{len} ({eta})")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    pb.set_style(style);
    pb.set_message(what.to_string());
    Some(pb)
}

fn load(path: &std::path::Path) -> anyhow::Result<Scenario> {
    Ok(Scenario::load(path)?)
}

fn one_run(scenario: &Scenario, seed: u64, imp: Impl, bugs: &shoal_protocol::Bugs) -> Outcome {
    if scenario.tasks.is_some() {
        return crate::tasks::run(scenario, seed, bugs.clone());
    }
    crate::run_scenario(scenario, seed, imp)
}

/// The planted bugs of a run: only task worlds can plant them, and only in
/// a build with the `planted-bugs` feature.
fn bugs_for(scenario: &Scenario, bug: Option<&str>) -> anyhow::Result<shoal_protocol::Bugs> {
    if bug.is_some() && scenario.tasks.is_none() {
        bail!("--bug needs a scenario with a [tasks] table (e.g. sim/scenarios/tasks-smoke.toml)");
    }
    crate::tasks::bugs_from(bug).map_err(|e| anyhow::anyhow!(e))
}

fn cmd_run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let scenario = load(&args.common.scenario)?;
    let bugs = bugs_for(&scenario, args.common.bug.as_deref())?;
    let pb = bar(scenario.virtual_s, "virtual s");
    let outcome = if scenario.tasks.is_some() {
        one_run(&scenario, args.seed, args.common.implementation, &bugs)
    } else {
        crate::run_scenario_with_progress(
            &scenario,
            args.seed,
            args.common.implementation,
            &mut |virtual_ms| {
                if let Some(pb) = &pb {
                    pb.set_position(virtual_ms / 1000);
                }
            },
        )
    };
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    print!("{}", outcome.report.human());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&outcome.report)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("writing the report to {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        std::fs::write(path, plot::svg(&outcome))
            .with_context(|| format!("writing the plot to {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_sweep(args: SweepArgs) -> anyhow::Result<ExitCode> {
    let scenario = load(&args.common.scenario)?;
    let bugs = bugs_for(&scenario, args.common.bug.as_deref())?;
    let range = args.seeds;
    let count = range.last - range.first + 1;
    let next = AtomicU64::new(range.first);
    let results: Mutex<BTreeMap<u64, Outcome>> = Mutex::new(BTreeMap::new());
    let pb = bar(count, "seeds");
    let imp = args.common.implementation;
    std::thread::scope(|scope| {
        for _ in 0..args.threads.min(count as u32) {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::SeqCst);
                if seed > range.last {
                    break;
                }
                let outcome = one_run(&scenario, seed, imp, &bugs);
                if let Ok(mut map) = results.lock() {
                    map.insert(seed, outcome);
                }
                if let Some(pb) = &pb {
                    pb.inc(1);
                }
            });
        }
    });
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let results = match results.into_inner() {
        Ok(r) => r,
        Err(_) => bail!("a sweep worker panicked"),
    };
    if let Some(line) = crate::tasks::sweep_summary(results.values().map(|o| &o.report)) {
        println!("{line}");
    }
    let mut failed = Vec::new();
    for (seed, outcome) in &results {
        if let Some(v) = outcome.report.violations.first() {
            println!(
                "seed {seed} FAILED ({} violations): {} at {} ms: {}",
                outcome.report.violations_total, v.invariant, v.at_ms, v.detail
            );
            failed.push(*seed);
        }
    }
    println!(
        "sweep {} impl {} seeds {}..={}: {} run, {} failed{}",
        scenario.name,
        imp.name(),
        range.first,
        range.last,
        results.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(
                " (seeds {})",
                failed
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    );
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => cmd_run(args),
        Command::Sweep(args) => cmd_sweep(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoal-sim: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_both_forms_and_refuse_empty_ones() {
        assert_eq!(
            parse_seed_range("1..11"),
            Ok(SeedRange { first: 1, last: 10 })
        );
        assert_eq!(
            parse_seed_range("3..=3"),
            Ok(SeedRange { first: 3, last: 3 })
        );
        assert!(parse_seed_range("5..5").is_err());
        assert!(parse_seed_range("x..3").is_err());
        assert!(parse_seed_range("7").is_err());
    }

    #[test]
    fn unknown_bug_names_are_refused() {
        assert!(parse_bug("no-such-bug")
            .unwrap_err()
            .contains("no-such-bug"));
    }
}
