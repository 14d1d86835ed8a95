//! Shared support of shoal's end-to-end suites (`tests/e2e/*.rs`): where the
//! `shoal` binary under test is, a party CA with agents on loopback ports or in
//! network namespaces (`agents`), and the task API/CLI helpers
//! (`task_helpers`). Every wait here is bounded.

pub mod agents;
pub mod docker;
pub mod task_helpers;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `shoal` binary the suites run: `$SHOAL_BIN` if set, else the workspace's
/// own build of the same profile as the test, rebuilt once per test process so
/// a suite never runs a stale binary.
pub fn shoal() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("SHOAL_BIN") {
        Some(path) => PathBuf::from(path),
        None => workspace_bin("shoal-node", "shoal"),
    })
}

/// The `shoal-sim` binary, built like [`shoal`] (`$SHOAL_SIM_BIN` overrides).
pub fn shoal_sim() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("SHOAL_SIM_BIN") {
        Some(path) => PathBuf::from(path),
        None => workspace_bin("shoal-sim", "shoal-sim"),
    })
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository root")
        .to_path_buf()
}

/// Builds `bin` of workspace package `package` in the profile and target
/// directory of the running test, and returns its path.
pub fn workspace_bin(package: &str, bin: &str) -> PathBuf {
    // target/<profile>/deps/<test binary> -> target/<profile>/<bin>
    let exe = std::env::current_exe().expect("the test binary's own path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let release = profile_dir
        .file_name()
        .is_some_and(|name| name == "release");
    let target_dir = profile_dir
        .parent()
        .expect("target dir above the profile dir");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .arg("--manifest-path")
        .arg(repo_root().join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", target_dir);
    if release {
        cargo.arg("--release");
    }
    let status = cargo
        .status()
        .expect("run cargo to build a workspace binary");
    assert!(status.success(), "building {bin} failed: {status}");
    let path = profile_dir.join(bin);
    assert!(path.exists(), "no {bin} binary at {}", path.display());
    path
}
