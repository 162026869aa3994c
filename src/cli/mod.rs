//! The `ferry` command line: clap types here, one file per subcommand that
//! only translates arguments into library calls.

mod config_cmd;
mod cursors_cmd;
mod dedup_cmd;
mod dlq_cmd;
mod docs_cmd;
mod log_cmd;
mod serve;
mod state_access;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The version `ferry --version` prints: the release and the commit it was
/// built from (see build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERRY_COMMIT"),
    ")"
);

/// ferry — durable customer-event collection and delivery.
#[derive(Debug, Parser)]
#[command(name = "ferry", version = VERSION, about, long_about = None)]
pub struct Cli {
    /// Log output format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Admin token of a running server, for `cursors` and `dlq` while it
    /// holds the data directory.
    #[arg(long, global = true, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Format of ferry's own diagnostic output.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Look inside the write-ahead log (read-only; safe while a server runs).
    #[command(subcommand)]
    Log(log_cmd::LogCommand),
    /// Ingest events and deliver them to the destinations until SIGINT or SIGTERM.
    #[command(
        after_help = "Examples:\n  ferry serve                          # embedded default: 127.0.0.1:8080, ./ferry-data\n  ferry serve --config /etc/ferry/ferry.toml\n  FERRY_LISTEN=0.0.0.0:8080 ferry serve --data-dir /var/lib/ferry"
    )]
    Serve(serve::ServeArgs),
    /// Each destination's cursor and lag; `reset` rewinds or skips.
    Cursors(cursors_cmd::CursorsArgs),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Dead letters: list, show, replay, purge.
    #[command(subcommand)]
    Dlq(dlq_cmd::DlqCommand),
    /// Look at the dedup index (read-only; refuses while a server holds it).
    #[command(subcommand)]
    Dedup(dedup_cmd::DedupCommand),
    /// Print the shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

impl Cli {
    /// True for `serve`: the one command that must outlive a closed pipe or
    /// socket. The others print to stdout and should end quietly, as other
    /// command-line tools do, when what reads it goes away (`| head`).
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    init_tracing(cli.log_format);
    let result = match cli.command {
        Command::Log(cmd) => log_cmd::run(cmd),
        Command::Serve(args) => serve::run(args).map(|()| ExitCode::SUCCESS),
        Command::Cursors(args) => cursors_cmd::run(args, cli.admin_token.as_deref()),
        Command::Dlq(cmd) => dlq_cmd::run(cmd, cli.admin_token.as_deref()),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Dedup(cmd) => dedup_cmd::run(cmd),
        Command::Completions { shell } => docs_cmd::completions(shell),
        Command::Man => docs_cmd::man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
