//! Checks of a command task against the node that accepts it: a program
//! or working directory missing here is likely missing everywhere, but the
//! task may run on another machine, so these are warnings, not refusals.

use shoal_protocol::tasks::{Driver, TaskSpec};
use std::path::{Path, PathBuf};

/// What looks wrong with `spec` on this machine, in words.
pub fn warnings(spec: &TaskSpec) -> Vec<String> {
    if let Driver::Docker(_) = spec.driver {
        let path = std::env::var_os("PATH").unwrap_or_default();
        if find_program(crate::exec::docker::DOCKER_PROGRAM, &path).is_none() {
            return vec![
                "driver: the docker CLI is not installed on this node (the task may run on another)"
                    .into(),
            ];
        }
        return Vec::new();
    }
    if spec.driver != Driver::Command {
        return Vec::new();
    }
    let mut out = Vec::new();
    let path = std::env::var_os("PATH").unwrap_or_default();
    if find_program(&spec.command, &path).is_none() {
        out.push(format!(
            "command: {:?} is not an executable file on this node{}",
            spec.command,
            if spec.command.contains('/') {
                ""
            } else {
                " (searched its PATH)"
            }
        ));
    }
    if let Some(cwd) = &spec.cwd {
        if !Path::new(cwd).is_dir() {
            out.push(format!("cwd: {cwd:?} is not a directory on this node"));
        }
    }
    out
}

/// Where `program` is found: itself if it names a path, else the first
/// executable of that name on `path`.
fn find_program(program: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_executable(&p).then_some(p);
    }
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_or_directory_is_named_and_a_present_one_is_not() {
        let mut spec = TaskSpec {
            command: "sh".into(),
            slots: 1,
            ..TaskSpec::default()
        };
        assert!(find_program("sh", "/usr/bin:/bin".as_ref()).is_some());
        assert_eq!(
            find_program("no-such-program-here", "/usr/bin:/bin".as_ref()),
            None
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain-file");
        std::fs::write(&plain, "not a program").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            find_program(plain.to_str().unwrap(), "".as_ref()),
            None,
            "a file without an execute bit is not a program"
        );
        spec.command = "/no/such/program".into();
        spec.cwd = Some("/no/such/dir".into());
        let w = warnings(&spec);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("command: ") && w[1].starts_with("cwd: "),
            "{w:?}"
        );
        spec.command = "/bin/sh".into();
        spec.cwd = Some("/".into());
        assert!(warnings(&spec).is_empty());
        assert!(warnings(&TaskSpec::mock(1, 0)).is_empty());
    }
}
