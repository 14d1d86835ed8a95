//! The `shoal` binary's entry point: parse, set up logging, dispatch.

use clap::Parser;
use shoal_node::cli::{
    fed, health, members, tasks, CaCommand, Cli, Command, FedCommand, LogFormat,
};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    // One thread carries an agent of this size; it keeps the footprint low.
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Ca {
            command: CaCommand::Init { party, dir },
        } => {
            let path = shoal_node::tls::init_ca(&party, &dir)?;
            eprintln!(
                "party {party}: CA and federation key written to {} (keep ca.key and federation.key off the nodes)",
                path.display()
            );
        }
        Command::Ca {
            command: CaCommand::Issue { dir, node, out },
        } => {
            let files = shoal_node::tls::issue_node_cert(&dir, &node, &out, None)?;
            eprintln!(
                "node {node}: certificate written to {}",
                files.cert.display()
            );
            match files.gateway_key {
                Some(key) => eprintln!("node {node}: gateway key written to {}", key.display()),
                None => eprintln!(
                    "node {node}: no gateway key (the CA has no federation key; `shoal fed init` makes one)"
                ),
            }
        }
        Command::Fed {
            command: FedCommand::Init { dir },
        } => {
            let path = shoal_node::federation::keys::init_federation_key(&dir)?;
            eprintln!(
                "federation key written to {} (keep it off the nodes)",
                path.display()
            );
        }
        Command::Fed {
            command:
                FedCommand::Card {
                    dir,
                    party,
                    gateway,
                },
        } => print!("{}", fed::card(&dir, party.as_deref(), &gateway)?.to_toml()),
        Command::Fed {
            command: FedCommand::Links(args),
        } => {
            let links = runtime()?.block_on(fed::links(&args))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&links)?);
            } else {
                print!("{}", fed::links_table(&links));
            }
        }
        Command::Tunnel(args) => {
            let out = runtime()?.block_on(fed::tunnel(&args))?;
            if args.close.is_some() {
                eprintln!("tunnel {out} closed");
            } else if !out.is_empty() {
                println!("{out}");
            }
        }
        Command::Fed {
            command: FedCommand::Trust { api, card },
        } => {
            let card = runtime()?.block_on(fed::trust(&api, &card))?;
            eprintln!(
                "party {} trusted; its gateways: {}",
                card.party.escape_debug(),
                card.gateways.join(",").escape_debug()
            );
        }
        Command::Fed {
            command: FedCommand::Untrust { api, party },
        } => {
            let removed = runtime()?.block_on(fed::untrust(&api, &party))?;
            if removed {
                eprintln!("party {} trusted no more", party.escape_debug());
            } else {
                eprintln!("party {} was not trusted", party.escape_debug());
            }
        }
        Command::Fed {
            command: FedCommand::Trusted { api, json },
        } => {
            let cards: Vec<shoal_node::federation::Card> = runtime()?.block_on(fed::call(
                &api,
                reqwest::Method::GET,
                "/v1/fed/trust",
                fed::Body::Empty,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cards)?);
            } else {
                print!("{}", fed::trusted_table(&cards));
            }
        }
        Command::Fed {
            command:
                FedCommand::Export {
                    api,
                    service,
                    port,
                    to,
                },
        } => {
            let export = runtime()?.block_on(fed::export(&api, &service, port, &to))?;
            eprintln!(
                "service {} (127.0.0.1:{} on node {}) exported to party {}",
                export.service.escape_debug(),
                export.port,
                export.node,
                export.to.escape_debug()
            );
        }
        Command::Fed {
            command: FedCommand::Unexport { api, service, to },
        } => {
            let removed = runtime()?.block_on(fed::unexport(&api, &service, &to))?;
            if !removed {
                eprintln!(
                    "service {} was not exported to party {}",
                    service.escape_debug(),
                    to.escape_debug()
                );
            }
        }
        Command::Fed {
            command: FedCommand::Exports { api, json },
        } => {
            let exports: Vec<shoal_node::api::fed::ExportView> = runtime()?.block_on(fed::call(
                &api,
                reqwest::Method::GET,
                "/v1/fed/exports",
                fed::Body::Empty,
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&exports)?);
            } else {
                print!("{}", fed::exports_table(&exports));
            }
        }
        Command::Ca {
            command:
                CaCommand::Bootstrap {
                    party,
                    dir,
                    nodes,
                    out,
                },
        } => {
            for issued in shoal_node::tls::bootstrap_party(&party, &dir, &nodes, &out)? {
                match issued {
                    shoal_node::tls::Issued::New(dir) => {
                        eprintln!("issued {}", dir.display())
                    }
                    shoal_node::tls::Issued::Kept(dir) => {
                        eprintln!("kept {} (already issued)", dir.display())
                    }
                }
            }
        }
        Command::Agent(args) => {
            let config = args.resolve()?;
            runtime()?.block_on(shoal_node::agent::run(config))?;
        }
        Command::Submit(args) => exit_with(runtime()?.block_on(tasks::submit(args))?),
        Command::Status(args) => exit_with(runtime()?.block_on(tasks::status(args))?),
        Command::Logs(args) => exit_with(runtime()?.block_on(tasks::logs(args))?),
        Command::Cancel(args) => exit_with(runtime()?.block_on(tasks::cancel(args))?),
        Command::Checkpoint { command } => {
            exit_with(runtime()?.block_on(shoal_node::cli::checkpoint::run(command))?)
        }
        Command::Wait(args) => exit_with(runtime()?.block_on(tasks::wait(args))?),
        Command::Members(args) => {
            let list = runtime()?.block_on(members::fetch(&args))?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", members::table(&list));
            }
        }
        Command::Drain(args) => {
            let outcome = runtime()?.block_on(shoal_node::cli::drain::drain(&args))?;
            println!(
                "{}",
                match outcome {
                    shoal_node::cli::drain::DrainOutcome::Left => "drained; the agent left",
                    shoal_node::cli::drain::DrainOutcome::Started => "draining",
                    shoal_node::cli::drain::DrainOutcome::Cancelled => "drain cancelled",
                }
            );
        }
        Command::Health(args) => {
            runtime()?.block_on(health::check(&args))?;
            println!("ok");
        }
        Command::Demo(args) => {
            shoal_node::demo::watch_signals();
            shoal_node::demo::run::demo(args)?;
        }
        Command::Chaos(args) => {
            shoal_node::demo::watch_signals();
            let report = shoal_node::demo::chaos::run_cli(args)?;
            if !report.violations().is_empty() {
                anyhow::bail!(
                    "chaos run broke guarantees:\n{}",
                    report.violations().join("\n")
                );
            }
        }
    }
    Ok(())
}

/// Ends the process with a command's own exit code (0 falls through).
fn exit_with(code: i32) {
    if code != 0 {
        std::process::exit(code);
    }
}

/// Prints clap's message, naming the `SHOAL_*` variable that held a bad
/// value, and exits as clap would.
fn exit_on_usage_error(error: clap::Error) -> ! {
    use clap::CommandFactory;
    let variable = shoal_node::cli::env_errors::variable_behind(&error, &Cli::command(), |name| {
        std::env::var(name).ok()
    });
    let _ = error.print();
    if let Some((name, value)) = variable {
        eprintln!(
            "note: the value {} came from the environment variable {name}",
            shoal_node::cli::terminal::terminal_safe(&format!("{value:?}"))
        );
    }
    std::process::exit(error.exit_code());
}

fn main() -> ExitCode {
    // Hidden mode: the per-attempt supervisor (see shoal_node::exec::supervisor).
    if std::env::args().nth(1).as_deref() == Some(shoal_node::exec::supervisor::SUPERVISE_ARG) {
        std::process::exit(shoal_node::exec::supervisor::main());
    }
    if std::env::args().nth(1).as_deref() == Some(shoal_node::exec::cgroup::ENTER_ARG) {
        std::process::exit(shoal_node::exec::cgroup::enter_main());
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => exit_on_usage_error(error),
    };
    init_logging(cli.log_format);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // An error can quote what the API answered (user-set strings).
            let message = format!("{e:#}");
            eprintln!(
                "shoal: error: {}",
                shoal_node::cli::terminal::terminal_safe(&message)
            );
            ExitCode::FAILURE
        }
    }
}
