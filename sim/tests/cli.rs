//! The binary's contract: the report's field names, sweep exit codes, clear
//! errors for bad scenarios and unknown bugs.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal-sim"))
}

fn smoke() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios/smoke.toml")
        .display()
        .to_string()
}

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("shoal-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn run_writes_a_report_with_the_contract_fields_and_a_plot() {
    let json = tmp("r.json");
    let svg = tmp("r.svg");
    let out = bin()
        .args([
            "run",
            "--scenario",
            &smoke(),
            "--seed",
            "3",
            "--impl",
            "foca",
        ])
        .arg("--json")
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("seed 3") && stdout.contains("faults_seed"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for field in [
        "scenario",
        "impl",
        "seed",
        "nodes",
        "virtual_s",
        "wall_ms",
        "trace_hash",
        "violations",
        "membership",
    ] {
        assert!(report.get(field).is_some(), "missing {field}");
    }
    assert_eq!(report["impl"], "foca");
    assert_eq!(report["seed"], 3);
    let m = &report["membership"];
    for field in [
        "crashes",
        "undetected",
        "false_positives",
        "converged_after_heal_ms",
        "bytes_per_node_per_s",
        "msgs_per_node_per_s",
    ] {
        assert!(m.get(field).is_some(), "missing membership.{field}");
    }
    for (field, keys) in [
        ("detect_first_ms", &["p50", "p99", "max"][..]),
        ("detect_all_ms", &["p50", "p99", "max"][..]),
        ("dissemination_all_ms", &["p50", "p99"][..]),
    ] {
        for k in keys {
            assert!(m[field].get(*k).is_some(), "missing membership.{field}.{k}");
        }
    }
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<svg"));
}

#[test]
fn sweep_exit_code_agrees_with_its_summary_line() {
    let out = bin()
        .args([
            "sweep",
            "--scenario",
            &smoke(),
            "--seeds",
            "1..=3",
            "--impl",
            "foca",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // foca may miss smoke's tight convergence deadline on some seed; the
    // exit code must agree with the summary line either way.
    let failed = !stdout.contains(" 0 failed");
    assert_eq!(out.status.success(), !failed, "{stdout}");
    assert!(stdout.contains("3 run"), "{stdout}");
}

#[test]
fn a_bad_scenario_field_is_named() {
    let path = tmp("bad.toml");
    std::fs::write(&path, "name = \"x\"\nnodes = 4\nvirtual_s = 10\nsafety_s = 5\nconvergence_deadline_ms = 1000\n[network]\nlos = 0.1\n").unwrap();
    let out = bin()
        .args(["run", "--scenario"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("los"), "{stderr}");
}

#[test]
fn an_unknown_bug_is_refused() {
    let out = bin()
        .args(["run", "--scenario", &smoke(), "--bug", "nonsense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nonsense"));
}
