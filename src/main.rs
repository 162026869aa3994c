//! The `ferry` binary: parse arguments, run, turn the outcome into an exit code.

use clap::Parser;

/// mimalloc instead of glibc's malloc: under load, ingest threads blocked on
/// glibc's arena locks whenever the dedup writer thread allocated or freed
/// (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = ferry::cli::Cli::parse();
    ferry::cli::run(cli)
}
