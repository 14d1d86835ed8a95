//! The docker CLI, as the container tests call it.

use std::process::{Command, Output, Stdio};

/// Runs `docker ARGS...` with no stdin and returns what it said.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run docker")
}
