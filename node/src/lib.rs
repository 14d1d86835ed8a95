//! The `shoal` node: a thin host around the protocol machines. It moves
//! bytes between QUIC and the machines, persists what they ask, runs
//! processes and serves the API; it makes no protocol decision itself.
#![forbid(unsafe_code)]

pub mod agent;
pub mod api;
pub mod cli;
pub mod config;
pub mod demo;
pub mod exec;
pub mod federation;
pub mod health;
pub mod metrics;
pub mod store;
pub mod tasks;
pub mod tls;
pub mod transport;
pub mod ui;
