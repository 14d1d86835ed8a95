//! The `shoal` command line (clap). Agent settings come from flags, then
//! `SHOAL_*` environment variables, then the config file, then defaults.

pub mod members;
pub mod tasks;
pub mod terminal;

use crate::config::{
    AgentConfig, ConfigError, FileConfig, Preset, DEFAULT_API, DEFAULT_DATA_DIR, DEFAULT_LISTEN,
};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

/// shoal: a leaderless worker mesh.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
pub struct Cli {
    /// Log line format (filter with RUST_LOG).
    #[arg(long, global = true, env = "SHOAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an agent: join the party's mesh and serve the API.
    Agent(AgentArgs),
    /// Make the party CA and node certificates.
    Ca {
        /// CA operation.
        #[command(subcommand)]
        command: CaCommand,
    },
    /// List the members a node knows of.
    Members(MembersArgs),
    /// Submit a task; prints only its id.
    Submit(tasks::SubmitArgs),
    /// Show one task, or list the tasks a node knows.
    Status(tasks::StatusArgs),
    /// Print a task's output.
    Logs(tasks::LogsArgs),
    /// Cancel a task.
    Cancel(tasks::CancelArgs),
    /// Wait for tasks to be final; exit 0 only if all succeeded.
    Wait(tasks::WaitArgs),
    /// Start a local 5-node mesh, run tasks, kill the busiest node, and
    /// show the tasks restarting elsewhere with every guarantee checked.
    Demo(crate::demo::DemoArgs),
    /// Chaos run against real agents (for scripts/chaos.sh).
    #[command(hide = true)]
    Chaos(crate::demo::ChaosArgs),
}

/// `shoal ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a party CA: writes DIR/ca.pem and DIR/ca.key (never overwrites).
    Init {
        /// The party's name (letters, digits, '-', '_', '.').
        #[arg(long)]
        party: String,
        /// Directory for the CA files.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a node certificate: writes OUT/node.pem, OUT/node.key, OUT/ca.pem.
    Issue {
        /// The CA directory (from `shoal ca init`).
        #[arg(long)]
        dir: PathBuf,
        /// The node's name.
        #[arg(long)]
        node: String,
        /// Output directory, given to `shoal agent --tls-dir`.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `shoal agent` flags; each has a `SHOAL_*` environment variable.
#[derive(Debug, Clone, Args, Default)]
pub struct AgentArgs {
    /// Node name [default: host name].
    #[arg(long, env = "SHOAL_NAME")]
    pub name: Option<String>,
    /// Data directory [default: ./shoal-data].
    #[arg(long, env = "SHOAL_DATA")]
    pub data: Option<PathBuf>,
    /// QUIC (UDP) address to listen on and be reached at [default: 127.0.0.1:7481].
    #[arg(long, env = "SHOAL_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// HTTP API address [default: 127.0.0.1:7480].
    #[arg(long, env = "SHOAL_API")]
    pub api: Option<SocketAddr>,
    /// Seed addresses to join through (comma-separated); none means single-node.
    #[arg(long, env = "SHOAL_JOIN", value_delimiter = ',')]
    pub join: Option<Vec<SocketAddr>>,
    /// Directory with node.pem, node.key and ca.pem (from `shoal ca issue`).
    #[arg(long, env = "SHOAL_TLS_DIR")]
    pub tls_dir: Option<PathBuf>,
    /// TOML config file (lowest precedence).
    #[arg(long, env = "SHOAL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Bearer token the API requires (mandatory when --api is off loopback).
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Membership timing preset [default: lan].
    #[arg(long, env = "SHOAL_MEMBERSHIP_PRESET", value_enum)]
    pub membership_preset: Option<Preset>,
    /// Task slots this node offers [default: number of CPUs].
    #[arg(long, env = "SHOAL_SLOTS")]
    pub slots: Option<u32>,
}

/// `shoal members` flags.
#[derive(Debug, Clone, Args)]
pub struct MembersArgs {
    /// The API of any node.
    #[arg(long, env = "SHOAL_API_URL", default_value = "http://127.0.0.1:7480")]
    pub api: String,
    /// Print the JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for an API off loopback.
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

fn parse_default<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("built-in defaults parse")
}

impl AgentArgs {
    /// Flags and environment over the config file over defaults.
    pub fn resolve(self) -> Result<AgentConfig, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let slots_default = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(1))
            .unwrap_or(1);
        Ok(AgentConfig {
            name: self
                .name
                .or(file.name)
                .unwrap_or_else(crate::config::hostname),
            data_dir: self
                .data
                .or(file.data)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| parse_default(DEFAULT_LISTEN)),
            api: self
                .api
                .or(file.api)
                .unwrap_or_else(|| parse_default(DEFAULT_API)),
            join: self.join.or(file.join).unwrap_or_default(),
            tls_dir: self.tls_dir.or(file.tls_dir),
            api_token: self.api_token.or(file.api_token),
            preset: self
                .membership_preset
                .or(file.membership_preset)
                .unwrap_or_default(),
            slots: self.slots.or(file.slots).unwrap_or(slots_default),
            labels: file.labels,
            builtin_health: file.health,
            checks: file.checks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shoal.toml");
        std::fs::write(
            &path,
            "name = \"from-file\"\nslots = 3\nlisten = \"127.0.0.1:9100\"\n",
        )
        .unwrap();
        let args = AgentArgs {
            name: Some("from-flag".into()),
            config: Some(path),
            ..AgentArgs::default()
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.name, "from-flag");
        assert_eq!(config.slots, 3);
        assert_eq!(config.listen.port(), 9100);
        assert_eq!(config.api.port(), 7480);
        assert!(config.join.is_empty());
    }

    #[test]
    fn contract_command_lines_parse() {
        let cli = Cli::try_parse_from([
            "shoal",
            "agent",
            "--name",
            "n1",
            "--data",
            "/tmp/d",
            "--listen",
            "127.0.0.1:1",
            "--api",
            "127.0.0.1:2",
            "--join",
            "127.0.0.1:3,127.0.0.1:4",
            "--tls-dir",
            "/tmp/t",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(args.join.map(|j| j.len()), Some(2));
        assert!(Cli::try_parse_from(["shoal", "ca", "init", "--party", "p", "--dir", "d"]).is_ok());
        assert!(Cli::try_parse_from([
            "shoal", "ca", "issue", "--dir", "d", "--node", "n", "--out", "o"
        ])
        .is_ok());
        assert!(
            Cli::try_parse_from(["shoal", "members", "--api", "http://127.0.0.1:1", "--json"])
                .is_ok()
        );
    }
}
