//! The `ferry` binary: parse arguments, run, turn the outcome into an exit code.

use clap::Parser;

/// mimalloc instead of glibc's malloc: under load, ingest threads blocked on
/// glibc's arena locks whenever the dedup writer thread allocated or freed.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's settings, made before the first allocation (an entry of
/// `.init_array` runs before Rust's runtime starts, which allocates): the
/// settings of mimalloc's first arena cannot change once it exists.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static ALLOCATOR_SETTINGS: extern "C" fn() = allocator_settings;

/// On Linux, mimalloc commits a new 1 GiB arena at once and advises it for
/// transparent huge pages, so every 2 MiB the heap touches counts whole in
/// the resident size (≈ 45 MiB for a ferry that holds ≈ 5 MiB). Committing on
/// demand keeps the resident size to what the heap uses.
/// `MIMALLOC_ARENA_EAGER_COMMIT` still overrides this default. Freed memory
/// goes back to the system after mimalloc's default second; sooner
/// (`MIMALLOC_PURGE_DELAY=0`) lowers the peak under load by about a quarter
/// and costs ingest about a tenth more CPU (docs/benchmarks.md, "Memory and start-up").
#[cfg(target_os = "linux")]
extern "C" fn allocator_settings() {
    // The `mi_option_t` value of mimalloc.h (the same in its v2 and v3);
    // the Rust bindings do not name it.
    const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    for (option, variable, value) in [(ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT", 0)] {
        // SAFETY: getenv reads the environment without allocating (an
        // allocation now would create the arena with the old setting);
        // mi_option_set only stores a value. No other thread exists yet.
        unsafe {
            if libc::getenv(variable.as_ptr()).is_null() {
                libmimalloc_sys::mi_option_set(option, value);
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = ferry::cli::Cli::parse();
    if cli.is_server() {
        return_freed_memory_every_second();
    } else {
        end_quietly_on_closed_pipe();
    }
    ferry::cli::run(cli)
}

/// mimalloc returns freed memory to the system only when some thread
/// allocates again: after a burst, or a start-up that loaded the dedup
/// filters, an idle server kept it resident. A thread of its own purges it
/// once a second, whichever thread freed it.
fn return_freed_memory_every_second() {
    let spawned = std::thread::Builder::new()
        .name("ferry-memory".into())
        .stack_size(64 << 10)
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: mi_collect has no preconditions; `true` also purges
            // the memory other threads freed (arena-wide).
            unsafe { libmimalloc_sys::mi_collect(true) };
        });
    if let Err(e) = spawned {
        eprintln!("warning: cannot start the thread that returns freed memory: {e}");
    }
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
