//! The `shoal` command line (clap). Agent settings come from flags, then
//! `SHOAL_*` environment variables, then the config file, then defaults.

pub mod checkpoint;
pub mod drain;
pub mod env_errors;
pub mod fed;
pub mod health;
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
    /// Federation between parties: keys, cards, links.
    Fed {
        /// Federation operation.
        #[command(subcommand)]
        command: FedCommand,
    },
    /// Open a tunnel to a peer party's exported service: prints only the
    /// local address (127.0.0.1:PORT) that carries connections there.
    Tunnel(TunnelArgs),
    /// List the members a node knows of.
    Members(MembersArgs),
    /// Exit 0 if an agent answers /healthz (or /readyz); for HEALTHCHECKs and probes.
    Health(health::HealthArgs),
    /// Take no new work, let running attempts finish, then leave the mesh.
    Drain(drain::DrainArgs),
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
    /// Save an attempt's checkpoint for the next attempt, or show a task's.
    Checkpoint {
        /// Checkpoint operation.
        #[command(subcommand)]
        command: checkpoint::CheckpointCommand,
    },
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
    /// Make the CA unless DIR has one, and OUT/NODE/ certificates for the
    /// nodes that have none (safe to rerun: for one-shot containers).
    Bootstrap {
        /// The party's name.
        #[arg(long)]
        party: String,
        /// Directory for the CA files (keep it off the nodes).
        #[arg(long)]
        dir: PathBuf,
        /// Node names (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        /// Directory that gets one subdirectory per node.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `shoal fed ...`.
#[derive(Debug, Subcommand)]
pub enum FedCommand {
    /// Make the party's federation key DIR/federation.key for a CA made
    /// before federation existed (`shoal ca init` makes it already).
    Init {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the party's card (TOML) for other parties to trust.
    Card {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// The party's name [default: the CA's party]; must match the CA.
        #[arg(long)]
        party: Option<String>,
        /// Gateway addresses (IP:PORT or multiaddrs), comma-separated.
        #[arg(long, value_delimiter = ',')]
        gateway: Vec<String>,
    },
    /// List a node's federation links.
    Links(FedLinksArgs),
    /// Trust another party: store its card in the party's replicated
    /// records (every gateway learns it and dials the party).
    Trust {
        /// Which node to ask.
        #[command(flatten)]
        api: tasks::ApiArgs,
        /// The party's card (from its `shoal fed card`).
        card: PathBuf,
    },
    /// Trust a party no more: remove its card; the gateways drop its links.
    Untrust {
        /// Which node to ask.
        #[command(flatten)]
        api: tasks::ApiArgs,
        /// The party's name.
        party: String,
    },
    /// List the trusted parties' cards.
    Trusted {
        /// Which node to ask.
        #[command(flatten)]
        api: tasks::ApiArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Export the TCP service at 127.0.0.1:PORT on the node behind --api to
    /// one trusted party, which reaches it with `shoal tunnel`.
    Export {
        /// The node the service runs on.
        #[command(flatten)]
        api: tasks::ApiArgs,
        /// The service's name (1 to 64 of A-Z a-z 0-9 . _ -).
        #[arg(long)]
        service: String,
        /// Its TCP port on that node's loopback.
        #[arg(long)]
        port: u16,
        /// The trusted party it is exported to.
        #[arg(long)]
        to: String,
    },
    /// Remove an export; tunnels opened to it afterwards are refused.
    Unexport {
        /// Which node to ask.
        #[command(flatten)]
        api: tasks::ApiArgs,
        /// The service's name.
        #[arg(long)]
        service: String,
        /// The party it was exported to.
        #[arg(long)]
        to: String,
    },
    /// List the party's exported services.
    Exports {
        /// Which node to ask.
        #[command(flatten)]
        api: tasks::ApiArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// `shoal tunnel` flags.
#[derive(Debug, Clone, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["target", "close", "list"]))]
pub struct TunnelArgs {
    /// The agent that listens for the tunnel's connections.
    #[command(flatten)]
    pub api: tasks::ApiArgs,
    /// PARTY/SERVICE: the peer party and the service it exported to us.
    pub target: Option<String>,
    /// Close the tunnel listening on this address (127.0.0.1:PORT).
    #[arg(long, value_name = "ADDR")]
    pub close: Option<String>,
    /// List the agent's open tunnels.
    #[arg(long)]
    pub list: bool,
}

/// `shoal fed links` flags.
#[derive(Debug, Clone, Args)]
pub struct FedLinksArgs {
    /// The API of a gateway node.
    #[arg(long, env = "SHOAL_API_URL", default_value = DEFAULT_API_URL, value_parser = parse_api_url)]
    pub api: String,
    /// Print the JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for an API off loopback.
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// `shoal agent` flags; each has a `SHOAL_*` environment variable.
#[derive(Debug, Clone, Args, Default)]
pub struct AgentArgs {
    /// Node name; must be the name its certificate was issued for
    /// [default: the certificate's name, or the host name for a dev CA].
    #[arg(long, env = "SHOAL_NAME")]
    pub name: Option<String>,
    /// Data directory [default: ./shoal-data].
    #[arg(long, env = "SHOAL_DATA")]
    pub data: Option<PathBuf>,
    /// QUIC (UDP) address to listen on and be reached at, IP:PORT or
    /// HOST:PORT [default: 127.0.0.1:7481].
    #[arg(long, env = "SHOAL_LISTEN", value_parser = resolve_addr)]
    pub listen: Option<SocketAddr>,
    /// HTTP API address to listen on, IP:PORT or HOST:PORT
    /// [default: 127.0.0.1:7480]. The CLI finds it through --api URL
    /// (SHOAL_API_URL).
    #[arg(long, env = "SHOAL_API", value_parser = resolve_addr)]
    pub api: Option<SocketAddr>,
    /// Seed addresses to join through (comma-separated IP:PORT or HOST:PORT,
    /// host names resolved at start); none means single-node.
    #[arg(long, env = "SHOAL_JOIN", value_delimiter = ',', value_parser = resolve_addr)]
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
    /// Run each attempt in its own cgroup with its memory, CPU and pids
    /// limits (auto: where a cgroup controller is writable) or never (none)
    /// [default: auto].
    #[arg(long, env = "SHOAL_ISOLATION", value_enum)]
    pub isolation: Option<crate::config::IsolationMode>,
    /// How this node's offers pick among the nodes with room for a task:
    /// the one left with the least headroom (pack: room stays whole for
    /// large tasks) or the most (spread) [default: pack].
    #[arg(long, env = "SHOAL_PLACEMENT", value_enum)]
    pub placement: Option<crate::config::PlacementMode>,
    /// Task slots this node offers [default: number of CPUs].
    #[arg(long, env = "SHOAL_SLOTS")]
    pub slots: Option<u32>,
    /// CPU offered to tasks, as cores (4, 0.5) or millicores (3500m)
    /// [default: every CPU this process may use].
    #[arg(long, env = "SHOAL_CPU", value_name = "AMOUNT")]
    pub cpu: Option<String>,
    /// Memory offered to tasks, such as 8Gi or 512Mi [default: the
    /// machine's, or its cgroup limit].
    #[arg(long, env = "SHOAL_MEMORY", value_name = "AMOUNT")]
    pub memory: Option<String>,
    /// CPU kept for the system: taken off --cpu [default: 0].
    #[arg(long, env = "SHOAL_RESERVE_CPU", value_name = "AMOUNT")]
    pub reserve_cpu: Option<String>,
    /// Memory kept for the system: taken off --memory [default: 0].
    #[arg(long, env = "SHOAL_RESERVE_MEMORY", value_name = "AMOUNT")]
    pub reserve_memory: Option<String>,
    /// A custom resource this node offers, NAME=COUNT such as gpu=2
    /// (repeatable; replaces the config file's [resources]).
    #[arg(
        long = "resource",
        value_name = "NAME=COUNT",
        env = "SHOAL_RESOURCES",
        value_delimiter = ',',
        value_parser = parse_resource
    )]
    pub resources: Vec<(String, u32)>,
    /// UDP address of this node's federation gateway (libp2p QUIC); makes
    /// this node hold links to the trusted parties.
    #[arg(long, env = "SHOAL_GATEWAY", value_parser = resolve_addr)]
    pub gateway: Option<SocketAddr>,
    /// A trusted party's card (from `shoal fed card`); repeat for more.
    #[arg(
        long = "fed-trust",
        value_name = "CARD_FILE",
        env = "SHOAL_FED_TRUST",
        value_delimiter = ','
    )]
    pub fed_trust: Vec<PathBuf>,
    /// How many of the party's gateways hold each link at once (default 2).
    #[arg(long, env = "SHOAL_FED_LINK_HOLDERS")]
    pub fed_link_holders: Option<usize>,
}

/// `shoal members` flags.
#[derive(Debug, Clone, Args)]
pub struct MembersArgs {
    /// The API of any node.
    #[arg(long, env = "SHOAL_API_URL", default_value = DEFAULT_API_URL, value_parser = parse_api_url)]
    pub api: String,
    /// Print the JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Bearer token for an API off loopback.
    #[arg(long, env = "SHOAL_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

/// Where the CLI finds an agent unless told otherwise.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:7480";

/// An agent's API as a base URL. `HOST:PORT` alone means
/// `http://HOST:PORT`, the form `shoal agent --api` takes.
pub fn parse_api_url(s: &str) -> Result<String, String> {
    let trimmed = s.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_string()
    } else {
        format!("http://{trimmed}")
    };
    let url = reqwest::Url::parse(&with_scheme).map_err(|e| {
        format!(
            "{} is not an API address ({e}); give http://HOST:PORT or HOST:PORT",
            s.escape_debug()
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "{}: the API speaks http or https, not {}",
            s.escape_debug(),
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{}: no host name", s.escape_debug()));
    }
    if url.path() != "/" || url.query().is_some() {
        return Err(format!(
            "{}: give the API's base URL, without a path (e.g. http://127.0.0.1:7480)",
            s.escape_debug()
        ));
    }
    Ok(with_scheme.trim_end_matches('/').to_string())
}

/// `IP:PORT`, or `HOST:PORT` resolved now (a StatefulSet's pods and
/// compose services know each other by DNS name only; an IPv4 answer is
/// preferred). Used for seeds and for the agent's own addresses.
fn resolve_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = s.parse() {
        return Ok(addr);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", s.escape_debug()))?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .copied()
        .ok_or_else(|| format!("{} resolves to no address", s.escape_debug()))
}

fn parse_default<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().expect("built-in defaults parse")
}

/// `NAME=COUNT` of a custom resource.
pub(crate) fn parse_resource(text: &str) -> Result<(String, u32), String> {
    shoal_protocol::resources::parse_custom(text).map_err(|e| e.to_string())
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
        let given_name = self.name.or(file.name);
        Ok(AgentConfig {
            name_given: given_name.is_some(),
            name: given_name.unwrap_or_else(crate::config::hostname),
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
            isolation: self.isolation.or(file.isolation).unwrap_or_default(),
            placement: self.placement.or(file.placement).unwrap_or_default(),
            slots: self.slots.or(file.slots).unwrap_or(slots_default),
            capacity: crate::config::offered_resources(
                &crate::config::machine_resources(),
                self.cpu.as_deref().or(file.cpu.as_deref()),
                self.memory.as_deref().or(file.memory.as_deref()),
                self.reserve_cpu.as_deref().or(file.reserve_cpu.as_deref()),
                self.reserve_memory
                    .as_deref()
                    .or(file.reserve_memory.as_deref()),
                if self.resources.is_empty() {
                    file.resources
                } else {
                    self.resources.into_iter().collect()
                },
            )?,
            labels: file.labels,
            builtin_health: file.health,
            checks: file.checks,
            gateway: self.gateway.or(file.gateway),
            fed_trust: if self.fed_trust.is_empty() {
                file.fed_trust
            } else {
                self.fed_trust
            },
            fed_link_holders: self
                .fed_link_holders
                .or(file.fed_link_holders)
                .unwrap_or(shoal_protocol::federation::holders::DEFAULT_LINK_HOLDERS),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ip_and_port_or_resolvable_host_names() {
        assert_eq!(
            resolve_addr("10.0.0.7:7481"),
            Ok(SocketAddr::from(([10, 0, 0, 7], 7481)))
        );
        assert_eq!(resolve_addr("localhost:7481").map(|a| a.port()), Ok(7481));
        assert!(resolve_addr("no-such-host.invalid:7481").is_err());
        assert!(resolve_addr("10.0.0.7").is_err(), "a port is required");
    }

    #[test]
    fn api_urls_take_a_bare_address_and_refuse_paths_and_other_schemes() {
        assert_eq!(
            parse_api_url("127.0.0.1:7480").as_deref(),
            Ok("http://127.0.0.1:7480")
        );
        assert_eq!(
            parse_api_url("https://node-1.example:7480/").as_deref(),
            Ok("https://node-1.example:7480")
        );
        assert_eq!(
            parse_api_url(DEFAULT_API_URL).as_deref(),
            Ok(DEFAULT_API_URL)
        );
        for bad in [
            "ftp://h:1",
            "http://h:1/v1/tasks",
            "http://",
            "http://h:99999",
            "h:1?x=1",
        ] {
            let err = parse_api_url(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}: {err}");
        }
    }

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
    fn a_node_runs_under_its_certificates_name_and_a_different_given_name_is_refused() {
        let defaulted = AgentArgs::default().resolve().unwrap();
        assert!(!defaulted.name_given);
        assert_eq!(defaulted.name_for_certificate("n7").unwrap(), "n7");

        let given = AgentArgs {
            name: Some("n1".into()),
            ..AgentArgs::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(given.name_for_certificate("n1").unwrap(), "n1");
        let refusal = given.name_for_certificate("n7").unwrap_err().to_string();
        assert!(refusal.contains("issued for node n7"), "{refusal}");
        assert!(refusal.contains("shoal ca issue"), "{refusal}");
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
        let fed = [
            &["shoal", "fed", "init", "--dir", "d"][..],
            &[
                "shoal",
                "fed",
                "card",
                "--dir",
                "d",
                "--gateway",
                "127.0.0.1:1,127.0.0.1:2",
            ],
            &[
                "shoal",
                "fed",
                "links",
                "--api",
                "http://127.0.0.1:1",
                "--json",
            ],
        ];
        for line in fed {
            assert!(Cli::try_parse_from(line).is_ok(), "{line:?}");
        }
        let cli = Cli::try_parse_from([
            "shoal",
            "agent",
            "--gateway",
            "127.0.0.1:5",
            "--fed-trust",
            "a.toml",
            "--fed-trust",
            "b.toml",
        ])
        .unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not agent")
        };
        let config = args.resolve().unwrap();
        assert_eq!(config.gateway.map(|g| g.port()), Some(5));
        assert_eq!(config.fed_trust.len(), 2);
    }
}
