//! The `ferry` binary: parse arguments, run, turn the outcome into an exit code.

use clap::Parser;

/// mimalloc instead of glibc's malloc: under load, ingest threads blocked on
/// glibc's arena locks whenever the dedup writer thread allocated or freed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = ferry::cli::Cli::parse();
    if !cli.is_server() {
        end_quietly_on_closed_pipe();
    }
    ferry::cli::run(cli)
}

/// Rust ignores SIGPIPE, so `println!` to a closed pipe panics (`ferry log
/// dump | head`). Inspection commands take the default action instead and
/// end without a message. `serve` keeps ignoring it: a client closing its
/// socket must never stop the server.
#[cfg(unix)]
fn end_quietly_on_closed_pipe() {
    // SAFETY: called before any other thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn end_quietly_on_closed_pipe() {}
