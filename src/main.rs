//! The `esprit-edge` command: run the server, or check a config.

use clap::{Parser, Subcommand};
use esprit_edge::{config, server, telemetry};
use std::path::PathBuf;
use std::process::ExitCode;

/// Esprit-Hub edge proxy and agent hub.
#[derive(Parser, Debug)]
#[command(name = "esprit-edge", version, about)]
struct Cli {
    /// Config file (default: $ESPRIT_CONFIG, else conf/esprit-edge.toml).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Take over the listening sockets of a running instance (after it gets SIGQUIT).
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate the config (and the certificates it names), then exit.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = config::choose_path(cli.config.as_deref());
    let cfg = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("esprit-edge: invalid config\n{e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = server::preflight(&cfg) {
        eprintln!("esprit-edge: invalid config\n{e:#}");
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Check) => {
            println!(
                "{}: ok ({} routes, {} upstreams{})",
                path.display(),
                cfg.routes.len(),
                cfg.upstreams.len(),
                if cfg.tls.is_some() { ", tls" } else { "" }
            );
            ExitCode::SUCCESS
        }
        None => {
            let _log = telemetry::init();
            match server::run(cfg, cli.upgrade) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("esprit-edge: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
