//! Process-group helpers over /proc (Linux).

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// Most /proc entries one scan reads (bounds the loop).
const PROC_SCAN_MAX: usize = 1 << 20;

/// (pid, ppid, pgid) of a /proc/<pid>/stat, or `None` if it vanished.
fn stat_of(pid: i32) -> Option<(i32, i32, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may hold spaces and parentheses: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None; // a zombie runs nothing
    }
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some((pid, ppid, pgid))
}

fn live_processes() -> Vec<(i32, i32, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.take(PROC_SCAN_MAX)
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat_of)
        .collect()
}

/// Pids of live (non-zombie) processes in process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    live_processes()
        .into_iter()
        .filter(|&(_, _, g)| g == pgid)
        .map(|(p, _, _)| p)
        .collect()
}

/// Pids of live children of `parent`.
pub fn children_of(parent: i32) -> Vec<i32> {
    live_processes()
        .into_iter()
        .filter(|&(_, pp, _)| pp == parent)
        .map(|(p, _, _)| p)
        .collect()
}

/// Pids of live processes whose environment names this attempt: the
/// supervisor gives every command `SHOAL_ATTEMPT_DIR`, unique per data
/// directory, task and attempt (so two agents on one host never match each
/// other's processes).
pub fn attempt_processes(attempt_dir: &std::path::Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut wanted = b"SHOAL_ATTEMPT_DIR=".to_vec();
    wanted.extend_from_slice(attempt_dir.as_os_str().as_bytes());
    live_processes()
        .into_iter()
        .map(|(pid, _, _)| pid)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|var| var == wanted.as_slice()))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILL to every process of group `pgid`; a group already gone is fine.
pub fn kill_group(pgid: i32) {
    if pgid <= 1 {
        return; // never signal "every process" or init's group
    }
    match killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "killpg failed"),
    }
}

/// SIGKILL to one process; a process already gone is fine.
pub fn kill_pid(pid: i32) {
    if pid <= 1 {
        return;
    }
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pid, error = %e, "kill failed"),
    }
}

/// Whether a process with this pid exists (zombies included).
pub fn pid_exists(pid: i32) -> bool {
    pid > 0 && !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_found_in_its_group_and_as_a_child() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgrp().as_raw();
        assert!(group_members(pgid).contains(&me));
        let parent = nix::unistd::getppid().as_raw();
        assert!(children_of(parent).contains(&me));
        assert!(pid_exists(me));
    }

    #[test]
    fn stat_parsing_survives_parentheses_in_the_name() {
        // /proc/self/stat of a thread named with ") (" would break naive
        // parsing; our own entry must parse with the right ppid.
        let me = std::process::id() as i32;
        let (pid, ppid, _) = stat_of(me).expect("own stat parses");
        assert_eq!(pid, me);
        assert_eq!(ppid, nix::unistd::getppid().as_raw());
    }
}
