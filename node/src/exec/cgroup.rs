//! Attempt isolation in cgroups: each attempt runs in its own cgroup below
//! the agent's, with a memory limit, a CPU quota and a pids limit.
//!
//! The agent finds what the machine offers once at start ([`Isolation::detect`]):
//! cgroup v2 where it is mounted at `/sys/fs/cgroup`, else the v1 `memory`,
//! `cpu` and `pids` hierarchies (hybrid machines), else none, with the
//! reason. Each agent owns one directory per hierarchy, named by its store
//! id so two agents on one machine never touch each other's attempts:
//! `<agent's cgroup>/shoal/<store>/<task>.<attempt>` in v1,
//! `<agent's cgroup>/shoal-<store>/<task>.<attempt>` in v2.
//!
//! The supervisor creates the attempt's cgroup, starts the command through
//! a trampoline ([`ENTER_ARG`]) that joins it before exec (so nothing the command forks can
//! escape), reads
//! the OOM-kill count when the command ends and removes the cgroup. The
//! supervisor itself stays outside: its own memory never counts against the
//! attempt, and an OOM kill can never take the fence keeper.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::procs::kill_pid;

/// Where cgroup hierarchies are mounted.
const CGROUP_MOUNT: &str = "/sys/fs/cgroup";
/// The v1 controllers an attempt's limits need.
const V1_CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];
/// The v2 controllers enabled for attempts.
const V2_SUBTREE: &str = "+memory +cpu +pids";
/// CFS period for CPU quotas (the kernel's default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel's smallest CFS quota.
const CPU_QUOTA_MIN_US: u64 = 1_000;
/// Most processes one attempt may have at once (a fork bomb stops here).
pub const ATTEMPT_PIDS_MAX: u64 = 4_096;
/// How long removing a cgroup keeps killing what is left in it.
const REMOVE_MAX: Duration = Duration::from_secs(5);
/// Most stale attempt cgroups one clean-up visits.
const STALE_SCAN_MAX: usize = 100_000;

/// Which cgroup hierarchy this agent puts attempts in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Isolation {
    /// No writable cgroup controller: attempts run as plain process groups.
    None {
        /// Why, for the one warning at start.
        why: String,
    },
    /// cgroup v1: this agent's directory in each of the memory, cpu and pids
    /// hierarchies.
    V1 {
        /// `(controller, directory)` pairs.
        roots: Vec<(String, PathBuf)>,
    },
    /// cgroup v2: this agent's directory, with memory, cpu and pids enabled
    /// for its children.
    V2 {
        /// The directory.
        root: PathBuf,
    },
}

/// The limits of one attempt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (none if `None`).
    pub memory_bytes: Option<u64>,
    /// CPU quota in millicores (none if `None`).
    pub cpu_milli: Option<u64>,
}

/// One attempt's cgroup, as the supervisor makes and removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptCgroup {
    /// The hierarchy (never `None`).
    pub isolation: Isolation,
    /// The attempt's directory name below the agent's: `<task>.<attempt>`.
    pub leaf: String,
    /// Its limits.
    pub limits: Limits,
}

/// A cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct CgroupError {
    what: &'static str,
    path: String,
    source: io::Error,
}

fn cg_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CgroupError {
    let path = path.display().to_string();
    move |source| CgroupError { what, path, source }
}

impl Isolation {
    /// What this machine offers this agent, creating the agent's own
    /// directories. `store` names them (the agent's store id).
    pub fn detect(store: &str) -> Isolation {
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let result = if Path::new(CGROUP_MOUNT).join("cgroup.controllers").exists() {
            detect_v2(&own, store)
        } else {
            detect_v1(&own, &mounts, store)
        };
        result.unwrap_or_else(|why| Isolation::None { why })
    }

    /// A short name for states and metrics: `cgroup-v1`, `cgroup-v2`, `none`.
    pub fn kind(&self) -> &'static str {
        match self {
            Isolation::None { .. } => "none",
            Isolation::V1 { .. } => "cgroup-v1",
            Isolation::V2 { .. } => "cgroup-v2",
        }
    }

    /// The cgroup of one attempt, or `None` without isolation.
    pub fn attempt(&self, task_id: &str, attempt: u64, limits: Limits) -> Option<AttemptCgroup> {
        match self {
            Isolation::None { .. } => None,
            _ => Some(AttemptCgroup {
                isolation: self.clone(),
                leaf: format!("{task_id}.{attempt}"),
                limits,
            }),
        }
    }

    fn roots(&self) -> Vec<&Path> {
        match self {
            Isolation::None { .. } => Vec::new(),
            Isolation::V1 { roots } => roots.iter().map(|(_, p)| p.as_path()).collect(),
            Isolation::V2 { root } => vec![root.as_path()],
        }
    }

    /// Kills and removes every attempt cgroup this agent left behind (a
    /// restarted agent owns no attempt yet). Returns how many it removed.
    pub fn remove_stale(&self) -> usize {
        let mut removed = 0;
        for root in self.roots() {
            let Ok(dir) = std::fs::read_dir(root) else {
                continue;
            };
            for entry in dir.take(STALE_SCAN_MAX).flatten() {
                let path = entry.path();
                if path.is_dir() && remove_dir(&path).is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }
}

/// The agent's own cgroup path in the hierarchy that `matches` the
/// controller list of a `/proc/self/cgroup` line.
fn own_path(proc_cgroup: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        matches(controllers).then(|| path.to_string())
    })
}

/// Mount point and mount root of the v1 hierarchy holding `controller`.
fn v1_mount(mountinfo: &str, controller: &str) -> Option<(PathBuf, String)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mut fs = right.split_whitespace();
        if fs.next()? != "cgroup" {
            return None;
        }
        let super_options = fs.nth(1)?;
        if !super_options.split(',').any(|o| o == controller) {
            return None;
        }
        let mut fields = left.split_whitespace();
        let root = fields.nth(3)?.to_string();
        let point = PathBuf::from(fields.next()?);
        Some((point, root))
    })
}

/// `point` + (`own` relative to the mount's `root`): where the agent's
/// cgroup shows in this mount. A cgroup namespace shows its own root as `/`.
fn mounted_dir(point: &Path, root: &str, own: &str) -> PathBuf {
    let relative = own
        .strip_prefix(root)
        .unwrap_or(own)
        .trim_start_matches('/');
    let dir = point.join(relative);
    if dir.is_dir() {
        dir
    } else {
        point.to_path_buf()
    }
}

fn detect_v1(proc_cgroup: &str, mountinfo: &str, store: &str) -> Result<Isolation, String> {
    let mut roots = Vec::new();
    for controller in V1_CONTROLLERS {
        let (point, root) = v1_mount(mountinfo, controller)
            .ok_or_else(|| format!("no cgroup v1 `{controller}` hierarchy is mounted"))?;
        let own = own_path(proc_cgroup, |c| c.split(',').any(|c| c == controller))
            .unwrap_or_else(|| "/".to_string());
        let dir = mounted_dir(&point, &root, &own).join("shoal").join(store);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        roots.push((controller.to_string(), dir));
    }
    Ok(Isolation::V1 { roots })
}

fn detect_v2(proc_cgroup: &str, store: &str) -> Result<Isolation, String> {
    let point = Path::new(CGROUP_MOUNT);
    let own = own_path(proc_cgroup, |c| c.is_empty()).unwrap_or_else(|| "/".to_string());
    let base = mounted_dir(point, "/", &own);
    let available = std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
    for wanted in ["memory", "cpu", "pids"] {
        if !available.split_whitespace().any(|c| c == wanted) {
            return Err(format!(
                "cgroup v2 controller `{wanted}` is not delegated to {} (has: {})",
                base.display(),
                available.trim()
            ));
        }
    }
    enable_subtree(&base)?;
    let root = base.join(format!("shoal-{store}"));
    std::fs::create_dir_all(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    enable_subtree(&root)?;
    Ok(Isolation::V2 { root })
}

/// Enables the attempt controllers for `dir`'s children. v2 lets a cgroup
/// with processes of its own have no controlled children, so if the agent
/// sits in `dir` it moves itself into a leaf `dir/shoal-agent` first.
fn enable_subtree(dir: &Path) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    if std::fs::write(&control, V2_SUBTREE).is_ok() {
        return Ok(());
    }
    let leaf = dir.join("shoal-agent");
    std::fs::create_dir_all(&leaf)
        .and_then(|()| std::fs::write(leaf.join("cgroup.procs"), "0"))
        .and_then(|()| std::fs::write(&control, V2_SUBTREE))
        .map_err(|e| format!("cannot enable {V2_SUBTREE} in {}: {e}", control.display()))
}

impl Limits {
    /// The CFS quota for the CPU request, in microseconds per period.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        self.cpu_milli
            .map(|m| (m.saturating_mul(CPU_PERIOD_US) / 1000).max(CPU_QUOTA_MIN_US))
    }

    /// `(controller, file, value)` writes that set these limits, in order.
    fn writes(&self, v2: bool) -> Vec<(&'static str, &'static str, String)> {
        let mut w = Vec::new();
        if let Some(bytes) = self.memory_bytes {
            if v2 {
                w.push(("memory", "memory.max", bytes.to_string()));
                // No swapping out of the limit: the limit is what it says.
                w.push(("memory", "memory.swap.max", "0".to_string()));
            } else {
                w.push(("memory", "memory.limit_in_bytes", bytes.to_string()));
                w.push(("memory", "memory.memsw.limit_in_bytes", bytes.to_string()));
            }
        }
        if let Some(quota) = self.cpu_quota_us() {
            if v2 {
                w.push(("cpu", "cpu.max", format!("{quota} {CPU_PERIOD_US}")));
            } else {
                w.push(("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
                w.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
            }
        }
        w.push(("pids", "pids.max", ATTEMPT_PIDS_MAX.to_string()));
        w
    }
}

impl AttemptCgroup {
    /// `(controller, directory)` of this attempt; in v2 one directory
    /// serves every controller.
    fn dirs(&self) -> Vec<(&str, PathBuf)> {
        match &self.isolation {
            Isolation::None { .. } => Vec::new(),
            Isolation::V1 { roots } => roots
                .iter()
                .map(|(c, root)| (c.as_str(), root.join(&self.leaf)))
                .collect(),
            Isolation::V2 { root } => vec![("", root.join(&self.leaf))],
        }
    }

    fn dir_of(&self, controller: &str) -> Option<PathBuf> {
        self.dirs()
            .into_iter()
            .find(|(c, _)| c.is_empty() || *c == controller)
            .map(|(_, d)| d)
    }

    /// Creates the directories and writes the limits.
    pub fn create(&self) -> Result<(), CgroupError> {
        for (_, dir) in self.dirs() {
            std::fs::create_dir_all(&dir).map_err(cg_err("cannot create", &dir))?;
        }
        let v2 = matches!(self.isolation, Isolation::V2 { .. });
        for (controller, file, value) in self.limits.writes(v2) {
            let Some(dir) = self.dir_of(controller) else {
                continue;
            };
            let path = dir.join(file);
            // Swap accounting is a boot option; without it there is no
            // swap limit to set, and the memory limit alone holds.
            let optional = file.contains("swap") || file.contains("memsw");
            if optional && !path.exists() {
                continue;
            }
            std::fs::write(&path, &value).map_err(cg_err("cannot write", &path))?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files the command joins.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs()
            .into_iter()
            .map(|(_, d)| d.join("cgroup.procs"))
            .collect()
    }

    /// How many processes of the attempt the OOM killer killed.
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = self.dir_of("memory") else {
            return 0;
        };
        let file = match self.isolation {
            Isolation::V2 { .. } => "memory.events",
            _ => "memory.oom_control",
        };
        std::fs::read_to_string(dir.join(file))
            .map(|text| counter(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// Kills whatever is left in the attempt's cgroups and removes them.
    pub fn remove(&self) -> Result<(), CgroupError> {
        let mut result = Ok(());
        for (_, dir) in self.dirs() {
            if let Err(e) = remove_dir(&dir) {
                result = Err(e);
            }
        }
        result
    }
}

/// The value of `name N` in a flat-keyed cgroup file.
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// First argument of the trampoline every command starts through:
/// `shoal __exec-attempt N PROCS_FILE... PROGRAM ARGS...`. It joins the
/// attempt's `N` cgroups, so the command is in them before its first
/// instruction and nothing it forks can escape, and clears the signal mask
/// the supervisor keeps (fork and exec inherit it; a command with SIGTERM
/// blocked outlives `timeout` and `kill`), then execs the command. Both in
/// safe code, which the supervisor cannot do between its own fork and exec.
pub const ENTER_ARG: &str = "__exec-attempt";
/// Exit code of the trampoline when it cannot join or exec (as `env` does).
const ENTER_FAILED: i32 = 125;

/// The trampoline's arguments after [`ENTER_ARG`], for these procs files.
pub fn enter_args(procs: &[PathBuf], program: &str, args: &[String]) -> Vec<std::ffi::OsString> {
    let mut out = vec![ENTER_ARG.into(), procs.len().to_string().into()];
    out.extend(procs.iter().map(|p| p.as_os_str().to_owned()));
    out.push(program.into());
    out.extend(args.iter().map(Into::into));
    out
}

/// Entry point of `shoal __exec-attempt`; returns only on failure.
pub fn enter_main() -> i32 {
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
    let Some(count) = args
        .first()
        .and_then(|n| n.to_str()?.parse::<usize>().ok())
        .filter(|n| n + 2 <= args.len())
    else {
        eprintln!("shoal {ENTER_ARG}: want N PROCS_FILE... PROGRAM ARGS...");
        return ENTER_FAILED;
    };
    for procs in &args[1..=count] {
        // "0" is the writer itself, in v1 and v2 alike.
        if let Err(e) = std::fs::write(procs, "0") {
            eprintln!("shoal: cannot join the attempt's cgroup {procs:?}: {e}");
            return ENTER_FAILED;
        }
    }
    let everything = nix::sys::signal::SigSet::empty();
    if let Err(e) = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&everything),
        None,
    ) {
        eprintln!("shoal: cannot clear the signal mask: {e}");
        return ENTER_FAILED;
    }
    let program = &args[count + 1];
    let e = std::process::Command::new(program)
        .args(&args[count + 2..])
        .exec();
    eprintln!("shoal: cannot start {program:?}: {e}");
    ENTER_FAILED
}

/// Kills every process in `dir` until it is empty, then removes it. A
/// cgroup already gone is fine.
fn remove_dir(dir: &Path) -> Result<(), CgroupError> {
    let until = Instant::now() + REMOVE_MAX;
    loop {
        if !dir.exists() {
            return Ok(());
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            kill_pid(pid);
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if Instant::now() >= until => return Err(cg_err("cannot remove", dir)(e)),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/28e9\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn the_agents_own_cgroup_is_found_per_controller() {
        let memory = own_path(HYBRID_CGROUP, |c| c.split(',').any(|c| c == "memory"));
        assert_eq!(memory.as_deref(), Some("/process_api/28e9"));
        assert_eq!(
            own_path(HYBRID_CGROUP, |c| c.is_empty()).as_deref(),
            Some("/")
        );
        // "cpuacct" must not pass for "cpu".
        let cpu = own_path("2:cpuacct:/a\n1:cpu:/b\n", |c| {
            c.split(',').any(|c| c == "cpu")
        });
        assert_eq!(cpu.as_deref(), Some("/b"));
    }

    #[test]
    fn v1_mounts_are_found_by_controller_not_by_prefix() {
        let (point, root) = v1_mount(HYBRID_MOUNTS, "cpu").unwrap();
        assert_eq!(point, PathBuf::from("/sys/fs/cgroup/cpu"));
        assert_eq!(root, "/");
        let (point, root) = v1_mount(HYBRID_MOUNTS, "memory").unwrap();
        assert_eq!(point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(root, "/docker/abc");
        assert!(v1_mount(HYBRID_MOUNTS, "blkio").is_none());
        // cgroup2 is not a v1 hierarchy.
        assert!(v1_mount("41 31 0:38 / /u rw - cgroup2 cgroup2 rw,memory\n", "memory").is_none());
    }

    #[test]
    fn limits_become_the_files_each_version_reads() {
        let limits = Limits {
            memory_bytes: Some(64 << 20),
            cpu_milli: Some(250),
        };
        let v1 = limits.writes(false);
        assert!(v1.contains(&("memory", "memory.limit_in_bytes", "67108864".into())));
        assert!(v1.contains(&("cpu", "cpu.cfs_quota_us", "25000".into())));
        assert!(v1.contains(&("pids", "pids.max", ATTEMPT_PIDS_MAX.to_string())));
        let v2 = limits.writes(true);
        assert!(v2.contains(&("memory", "memory.max", "67108864".into())));
        assert!(v2.contains(&("cpu", "cpu.max", "25000 100000".into())));
        // No request, no limit: only the pids cap.
        assert_eq!(Limits::default().writes(false).len(), 1);
        // A tiny request still gets the kernel's smallest quota.
        let tiny = Limits {
            cpu_milli: Some(1),
            ..Limits::default()
        };
        assert_eq!(tiny.cpu_quota_us(), Some(CPU_QUOTA_MIN_US));
    }

    #[test]
    fn oom_kills_are_read_from_the_flat_keyed_file() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(counter(v1, "oom_kill"), 3);
        let v2 = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), 1);
        assert_eq!(counter("", "oom_kill"), 0);
    }

    #[test]
    fn each_attempt_gets_its_own_leaf_in_every_hierarchy() {
        let iso = Isolation::V1 {
            roots: vec![
                ("memory".into(), PathBuf::from("/m/shoal/s")),
                ("cpu".into(), PathBuf::from("/c/shoal/s")),
            ],
        };
        let cg = iso.attempt("t-1", 2, Limits::default()).unwrap();
        assert_eq!(cg.dir_of("memory"), Some(PathBuf::from("/m/shoal/s/t-1.2")));
        assert_eq!(cg.dir_of("cpu"), Some(PathBuf::from("/c/shoal/s/t-1.2")));
        assert_eq!(cg.procs_files().len(), 2);
        let v2 = Isolation::V2 {
            root: PathBuf::from("/g/shoal-s"),
        };
        let cg = v2.attempt("t-1", 2, Limits::default()).unwrap();
        assert_eq!(cg.dir_of("memory"), Some(PathBuf::from("/g/shoal-s/t-1.2")));
        assert!(Isolation::None { why: "x".into() }
            .attempt("t", 1, Limits::default())
            .is_none());
    }
}
