//! The `ferry` binary: parse arguments, run, turn the outcome into an exit code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = ferry::cli::Cli::parse();
    ferry::cli::run(cli)
}
