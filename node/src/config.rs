//! Agent configuration: a TOML file underneath, `SHOAL_*` environment
//! variables above it, flags on top (clap reads flags and environment; the
//! file fills in what neither gave).

use crate::health::{BuiltinHealth, CheckSpec};
use serde::Deserialize;
use shoal_protocol::membership::Config as MembershipConfig;
use shoal_protocol::resources::{self, Resources};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./shoal-data";
/// Default QUIC listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7481";
/// Default HTTP API address.
pub const DEFAULT_API: &str = "127.0.0.1:7480";

/// Membership timing presets (see `shoal_protocol::membership::Config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// One machine: fast probing, for tests and demos.
    Local,
    /// A LAN (the default).
    #[default]
    Lan,
    /// A WAN.
    Wan,
}

impl Preset {
    /// The protocol configuration of this preset.
    pub fn membership_config(self) -> MembershipConfig {
        match self {
            Preset::Local => MembershipConfig::local(),
            Preset::Lan => MembershipConfig::lan(),
            Preset::Wan => MembershipConfig::wan(),
        }
    }
}

/// Whether attempts run in cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum IsolationMode {
    /// In cgroups where a controller is writable (v2, else v1), else none.
    #[default]
    Auto,
    /// Never: attempts run as plain process groups.
    None,
}

/// How this node's offers pick among the candidates with room for a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlacementMode {
    /// The candidate left with the least headroom: small tasks fill busy
    /// nodes and room stays whole for large ones.
    #[default]
    Pack,
    /// The candidate left with the most headroom: load spreads evenly.
    Spread,
}

impl PlacementMode {
    /// The protocol's placement rule.
    pub fn rule(self) -> shoal_protocol::sched::Placement {
        match self {
            PlacementMode::Pack => shoal_protocol::sched::Placement::Pack,
            PlacementMode::Spread => shoal_protocol::sched::Placement::Spread,
        }
    }
}

/// What the machine has: every CPU this process may use (std reads the
/// cgroup CPU quota), and its memory, or the cgroup's limit if lower.
pub fn machine_resources() -> Resources {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_milli = u32::try_from(cores.saturating_mul(1000)).unwrap_or(resources::MAX_CPU_MILLI);
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| meminfo_total_mib(&t));
    let limit = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .find_map(|t| t.trim().parse::<u64>().ok())
    .map(|bytes| bytes / (1024 * 1024));
    let mib = match (total, limit) {
        (Some(t), Some(l)) => t.min(l),
        (Some(t), None) => t,
        (None, Some(l)) => l,
        (None, None) => 0,
    };
    Resources::new(
        cpu_milli.min(resources::MAX_CPU_MILLI),
        u32::try_from(mib)
            .unwrap_or(u32::MAX)
            .min(resources::MAX_MEMORY_MIB),
    )
}

/// `MemTotal` of `/proc/meminfo`, MiB.
fn meminfo_total_mib(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// The amounts a node offers: `cpu` and `memory` if given, else the
/// machine's, less what is reserved for the system; plus the custom kinds.
pub fn offered_resources(
    machine: &Resources,
    cpu: Option<&str>,
    memory: Option<&str>,
    reserve_cpu: Option<&str>,
    reserve_memory: Option<&str>,
    custom: BTreeMap<String, u32>,
) -> Result<Resources, ConfigError> {
    let bad =
        |flag: &str, e: resources::ResourceError| ConfigError::Invalid(format!("--{flag}: {e}"));
    let amount = |text: Option<&str>,
                  flag: &str,
                  parse: fn(&str) -> Result<u32, resources::ResourceError>| {
        text.map(parse).transpose().map_err(|e| bad(flag, e))
    };
    let cpu = amount(cpu, "cpu", resources::parse_cpu)?.unwrap_or(machine.cpu_milli);
    let memory = amount(memory, "memory", resources::parse_memory)?.unwrap_or(machine.memory_mib);
    let reserve_cpu = amount(reserve_cpu, "reserve-cpu", resources::parse_cpu)?.unwrap_or(0);
    let reserve_memory =
        amount(reserve_memory, "reserve-memory", resources::parse_memory)?.unwrap_or(0);
    if reserve_cpu > cpu || reserve_memory > memory {
        return Err(ConfigError::Invalid(format!(
            "--reserve-cpu {} / --reserve-memory {} leave nothing of cpu {} / memory {}",
            resources::cpu_text(reserve_cpu),
            resources::memory_text(reserve_memory),
            resources::cpu_text(cpu),
            resources::memory_text(memory),
        )));
    }
    let offered = Resources {
        cpu_milli: cpu - reserve_cpu,
        memory_mib: memory - reserve_memory,
        custom,
    };
    offered
        .validate()
        .map_err(|e| ConfigError::Invalid(format!("resources: {e}")))?;
    Ok(offered)
}

/// The TOML configuration file. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Node name.
    pub name: Option<String>,
    /// Data directory.
    pub data: Option<PathBuf>,
    /// QUIC listen address.
    pub listen: Option<SocketAddr>,
    /// HTTP API address.
    pub api: Option<SocketAddr>,
    /// Seeds to join through.
    pub join: Option<Vec<SocketAddr>>,
    /// Directory with node.pem, node.key, ca.pem.
    pub tls_dir: Option<PathBuf>,
    /// Bearer token the API requires.
    pub api_token: Option<String>,
    /// Membership timing preset.
    pub membership_preset: Option<Preset>,
    /// Attempts in cgroups (`auto`) or not (`none`).
    pub isolation: Option<IsolationMode>,
    /// How offers pick among nodes with room (`pack`, `spread`).
    pub placement: Option<PlacementMode>,
    /// Task slots offered.
    pub slots: Option<u32>,
    /// CPU offered to tasks (`4`, `3500m`); default: every CPU.
    pub cpu: Option<String>,
    /// Memory offered to tasks (`8Gi`, `512Mi`); default: the machine's.
    pub memory: Option<String>,
    /// CPU kept for the system, taken off `cpu`.
    pub reserve_cpu: Option<String>,
    /// Memory kept for the system, taken off `memory`.
    pub reserve_memory: Option<String>,
    /// Custom resources offered, such as `gpu = 2`.
    #[serde(default)]
    pub resources: BTreeMap<String, u32>,
    /// Placement labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Built-in health check thresholds.
    #[serde(default)]
    pub health: BuiltinHealth,
    /// Configured health checks.
    #[serde(default, rename = "check")]
    pub checks: Vec<CheckSpec>,
    /// UDP address of this node's federation gateway.
    pub gateway: Option<SocketAddr>,
    /// Card files of the trusted parties.
    #[serde(default)]
    pub fed_trust: Vec<PathBuf>,
    /// How many of the party's gateways hold each link at once.
    pub fed_link_holders: Option<usize>,
}

/// Why the configuration is unusable.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The values do not fit together.
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

/// The agent's resolved configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Node name.
    pub name: String,
    /// Whether the name was given (flag, variable or file): then it must be
    /// the certificate's. A host-name default yields to the certificate.
    pub name_given: bool,
    /// Data directory.
    pub data_dir: PathBuf,
    /// QUIC listen address; also the address other members reach us at.
    pub listen: SocketAddr,
    /// HTTP API address.
    pub api: SocketAddr,
    /// Seeds; empty means an explicit single-node start.
    pub join: Vec<SocketAddr>,
    /// TLS directory; `None` means a development CA in the data directory.
    pub tls_dir: Option<PathBuf>,
    /// Bearer token for the API.
    pub api_token: Option<String>,
    /// Membership preset.
    pub preset: Preset,
    /// Whether attempts run in cgroups.
    pub isolation: IsolationMode,
    /// How this node's offers pick among nodes with room.
    pub placement: PlacementMode,
    /// Task slots offered.
    pub slots: u32,
    /// CPU, memory and custom amounts offered to tasks.
    pub capacity: Resources,
    /// Placement labels.
    pub labels: BTreeMap<String, String>,
    /// Built-in health thresholds.
    pub builtin_health: BuiltinHealth,
    /// Configured checks.
    pub checks: Vec<CheckSpec>,
    /// UDP address of this node's federation gateway; `None`: not a gateway.
    pub gateway: Option<SocketAddr>,
    /// Card files of the trusted parties.
    pub fed_trust: Vec<PathBuf>,
    /// How many of the party's gateways hold each link at once.
    pub fed_link_holders: usize,
}

impl AgentConfig {
    /// The name this node runs under, given the name its certificate was
    /// issued for: one name per certificate, so `shoal members`, task
    /// status and logs never show two machines under one name.
    pub fn name_for_certificate(&self, certificate_name: &str) -> Result<String, ConfigError> {
        if !self.name_given || self.name == certificate_name {
            return Ok(certificate_name.to_string());
        }
        Err(ConfigError::Invalid(format!(
            "--name {} but the certificate was issued for node {}: start with --name {} \
             (or without --name), or issue this node its own certificate with \
             `shoal ca issue --dir CA --node {} --out DIR`",
            self.name.escape_debug(),
            certificate_name.escape_debug(),
            certificate_name.escape_debug(),
            self.name.escape_debug(),
        )))
    }

    /// Refuses configurations that would be unsafe or meaningless.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::tls::ca::check_name(&self.name)
            .map_err(|e| ConfigError::Invalid(format!("--name: {e}")))?;
        if !self.api.ip().is_loopback() && self.api_token.as_deref().unwrap_or("").is_empty() {
            return Err(ConfigError::Invalid(format!(
                "--api {} is off loopback: give --api-token (or SHOAL_API_TOKEN) so requests are authenticated",
                self.api
            )));
        }
        if self.listen.ip().is_unspecified() {
            return Err(ConfigError::Invalid(format!(
                "--listen {}: give the address other members reach this node at, not a wildcard",
                self.listen
            )));
        }
        self.capacity
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("resources: {e}")))?;
        if self.fed_link_holders == 0 {
            return Err(ConfigError::Invalid(
                "--fed-link-holders 0: at least one gateway must hold each link".to_string(),
            ));
        }
        for check in &self.checks {
            check.validate().map_err(ConfigError::Invalid)?;
        }
        Ok(())
    }
}

/// This machine's host name, for the default node name.
pub fn hostname() -> String {
    let name = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    // Host names may hold characters a node name may not.
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if cleaned.is_empty() {
        "shoal".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_config_parses_checks_and_refuses_unknown_keys() {
        let text = r#"
            name = "n1"
            listen = "127.0.0.1:9000"
            join = ["127.0.0.1:9001"]
            membership_preset = "local"
            [labels]
            gpu = "1"
            [[check]]
            name = "web"
            http = "http://127.0.0.1:1/"
            interval_ms = 1000
            timeout_ms = 500
            failure_threshold = 2
        "#;
        let config: FileConfig = toml::from_str(text).unwrap();
        assert_eq!(config.name.as_deref(), Some("n1"));
        assert_eq!(config.membership_preset, Some(Preset::Local));
        assert_eq!(config.checks.len(), 1);
        assert_eq!(config.labels.get("gpu").map(String::as_str), Some("1"));
        assert!(toml::from_str::<FileConfig>("nmae = \"typo\"").is_err());
    }

    #[test]
    fn offered_resources_are_the_machine_or_the_flags_less_the_reserve() {
        let machine = Resources::new(4000, 8192);
        let none = BTreeMap::new();
        let all = offered_resources(&machine, None, None, None, None, none.clone()).unwrap();
        assert_eq!(all, machine);
        let reserved = offered_resources(
            &machine,
            None,
            None,
            Some("500m"),
            Some("1Gi"),
            none.clone(),
        )
        .unwrap();
        assert_eq!(reserved, Resources::new(3500, 7168));
        let gpus: BTreeMap<String, u32> = [("gpu".to_string(), 2)].into();
        let given =
            offered_resources(&machine, Some("2"), Some("512Mi"), None, None, gpus).unwrap();
        assert_eq!(given.cpu_milli, 2000);
        assert_eq!(given.memory_mib, 512);
        assert_eq!(given.custom.get("gpu"), Some(&2));
        let err = offered_resources(&machine, Some("lots"), None, None, None, none.clone())
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("--cpu: "), "{err}");
        let err = offered_resources(&machine, None, Some("1Gi"), None, Some("2Gi"), none.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("leave nothing"), "{err}");
        let bad_name: BTreeMap<String, u32> = [("GPU".to_string(), 1)].into();
        assert!(offered_resources(&machine, None, None, None, None, bad_name).is_err());
    }

    #[test]
    fn the_machine_memory_is_read_from_meminfo() {
        let text = "MemTotal:        8048640 kB\nMemFree:  1 kB\n";
        assert_eq!(meminfo_total_mib(text), Some(7860));
        assert_eq!(meminfo_total_mib("MemFree: 1 kB"), None);
        assert!(machine_resources().cpu_milli >= 1000);
    }
}
