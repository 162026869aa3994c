//! `ferry config check FILE`: validate a configuration and print the
//! effective configuration (defaults filled in, secrets redacted).

use crate::config::Config;
use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// Configuration commands.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate FILE; print the effective configuration (secrets redacted) or what is wrong.
    #[command(after_help = "Example:\n  ferry config check /etc/ferry/ferry.toml")]
    Check {
        /// The TOML configuration file.
        file: PathBuf,
    },
}

/// Runs a configuration command.
pub fn run(cmd: ConfigCommand) -> Result<ExitCode> {
    match cmd {
        ConfigCommand::Check { file } => {
            let config = Config::load(Some(&file))?;
            for d in &config.destinations {
                crate::delivery::make_sink(d).map_err(anyhow::Error::msg)?;
            }
            println!("{}", serde_json::to_string_pretty(&config.redacted())?);
            eprintln!("{} is valid", file.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
