//! `corral`: one binary for the master, the agent, certificates and the client commands.
//! This file only parses the command line, sets up logging and calls the subcommand.

mod cli;
mod cmd;
mod config;
mod local;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // The in-container init must stay tiny and single-threaded: no runtime, no logging setup.
    if let cli::Command::Init(args) = &cli.command {
        let code = isolation::init_main(&args.args);
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    // `run --local` keeps its in-process master and agent quiet unless asked otherwise.
    let quiet_default = matches!(&cli.command, cli::Command::Run(r) if r.local)
        && std::env::var_os("RUST_LOG").is_none();
    let level = cli
        .log_level
        .clone()
        .or_else(|| quiet_default.then(|| "warn".to_owned()));
    init_logging(level.as_deref());
    transport::install_crypto_provider();
    match cmd::dispatch(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("corral: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Log to stderr, one line per event; the level comes from --log-level, else RUST_LOG, else
/// info (with quinn and openraft at warn: their info lines are per-connection and per-raft-step
/// chatter, several a second on a quiet master). Under journald (JOURNAL_STREAM set) timestamps
/// are left to the journal.
fn init_logging(level: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,quinn=warn,openraft=warn")),
    };
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}
