//! shoal's end-to-end suites against real agent processes, linked as one test
//! binary: each suite links the whole agent, and one link instead of nine keeps
//! a CI build's disk use and link time down.

mod api;
mod chaos;
mod checkpoints;
mod cli_input;
mod containers;
mod docker_driver;
mod docs;
mod drain;
mod federation;
mod health_cli;
mod isolation;
mod mesh;
mod metrics_names;
mod partition;
mod resources;
mod rolling_upgrade;
mod security;
mod tasks_api;
mod tasks_failover;
mod tasks_throughput;
mod ui_browser;
mod versions;
