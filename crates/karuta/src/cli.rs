//! The command line: `karuta [--config FILE]`, `karuta check-config FILE`,
//! `karuta example-config`, `karuta migrate`, `karuta e2e --http URL --udp URL`,
//! with chihaya's
//! `--debug`, `--json` and `--nocolors`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracker::Registry;

use crate::config::{self, ConfigSource, HookPhase};

#[derive(Debug, Parser)]
#[command(
    name = "karuta",
    version,
    about = "A BitTorrent tracker that reads chihaya's configuration."
)]
struct Cli {
    /// Configuration file (chihaya's YAML schema). Without it, the built-in
    /// example configuration is used. `$VAR` in the path is expanded.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<String>,
    /// Log at debug level.
    #[arg(long, global = true)]
    debug: bool,
    /// Log JSON lines instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Never color log output.
    #[arg(long, global = true)]
    nocolors: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a configuration file and exit: 0 when it would start, 1 with a
    /// one-line error naming the key otherwise.
    CheckConfig {
        /// The file to check (defaults to --config).
        file: Option<String>,
    },
    /// Print the documented example configuration (every key, with its default).
    ExampleConfig,
    /// Create or update karuta's schema in every PostgreSQL database the
    /// configuration names, then exit (0, or 1 with the error).
    Migrate {
        /// The configuration (defaults to --config).
        file: Option<String>,
    },
    /// Check a running tracker end to end over HTTP and/or UDP: two peers
    /// announce, find each other, scrape, stop. Exit 0 when every check passed,
    /// 1 on the first failure.
    E2e(Box<crate::e2e::E2eArgs>),
}

fn init_logging(cli: &Cli) {
    let default_level = if cli.debug { "debug" } else { "info" };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let ansi = !cli.nocolors && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if cli.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn source_of(path: Option<&str>) -> ConfigSource {
    match path {
        Some(p) => ConfigSource::File(config::expand_path(p)),
        None => ConfigSource::Embedded,
    }
}

/// Runs the command line with the given hooks and stores; returns the exit code.
pub fn main_with(registry: Registry) -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match &cli.command {
        Some(Command::E2e(args)) => crate::e2e::run(args),
        Some(Command::ExampleConfig) => {
            print!("{}", config::EXAMPLE_CONFIG);
            ExitCode::SUCCESS
        }
        Some(Command::Migrate { file }) => {
            let source = source_of(file.as_deref().or(cli.config.as_deref()));
            let migrated = config::load(&source, &registry).and_then(|c| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| config::ConfigFileError::new(&source, e.to_string()))?;
                runtime.block_on(crate::migrate::run(&c))
            });
            match migrated {
                Ok(lines) => {
                    for line in lines {
                        println!("{line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("karuta: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::CheckConfig { file }) => {
            let source = source_of(file.as_deref().or(cli.config.as_deref()));
            match config::load_to_serve(&source, &registry) {
                Ok(c) => {
                    let t = &c.tracker;
                    println!(
                        "{source}: configuration OK (storage {:?}, {} pre-hooks, {} post-hooks)",
                        t.storage.name,
                        c.hooks(HookPhase::Pre).len(),
                        c.hooks(HookPhase::Post).len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("karuta: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        None => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("karuta: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let source = source_of(cli.config.as_deref());
            match runtime.block_on(crate::server::run(Arc::new(registry), source)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("karuta: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
