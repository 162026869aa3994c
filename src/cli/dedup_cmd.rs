//! `ferry dedup stats`: figures of a data directory's dedup index, read
//! without writing to it.

use crate::data_dir::DataDir;
use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use crate::dedup::{self, DedupError, DedupStats};

/// Dedup index commands.
#[derive(Debug, Subcommand)]
pub enum DedupCommand {
    /// Ids held, window (configured and effective), bloom memory and estimated false-positive rate.
    #[command(after_help = "Example:\n  ferry dedup stats --data-dir ./ferry-data")]
    Stats {
        /// The data directory (holds dedup.redb).
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a dedup subcommand.
pub fn run(cmd: DedupCommand) -> Result<ExitCode> {
    match cmd {
        DedupCommand::Stats { data_dir, json } => {
            if !data_dir.is_dir() {
                bail!("data directory {} does not exist", data_dir.display());
            }
            let path = DataDir::new(&data_dir).dedup_index();
            if !path.is_file() {
                bail!(
                    "{} has no dedup index ({} is missing): dedup has not run in this data directory",
                    data_dir.display(),
                    path.display()
                );
            }
            let stats = match dedup::stats_from_file(&path, SystemTime::now()) {
                Err(e @ (DedupError::InUse(_) | DedupError::NeedsRecovery(_))) => bail!("{e}"),
                other => other.with_context(|| format!("cannot read {}", path.display()))?,
            };
            if json {
                println!("{}", to_json(&stats));
            } else {
                print!("{}", table(&stats));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn to_json(s: &DedupStats) -> serde_json::Value {
    serde_json::json!({
        "ids_held": s.ids_held,
        "capacity": s.capacity,
        "window_secs": s.window.as_secs(),
        "effective_window_secs": s.effective_window.as_secs(),
        "generations": s.generations,
        "bloom_bytes": s.bloom_bytes,
        "false_positive_rate": s.false_positive_rate,
        "duplicates": s.duplicates,
        "checkpoint": s.checkpoint,
        "file_bytes": s.file_bytes,
    })
}

fn table(s: &DedupStats) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = String::new();
    let mut row = |k: &str, v: String| out.push_str(&format!("{k:<22} {v}\n"));
    row(
        "ids held",
        format!("{} of capacity {}", s.ids_held, s.capacity),
    );
    row("window", hours(s.window.as_secs()));
    let note = if s.effective_window < s.window {
        "  (capacity reached: oldest ids aged out early)"
    } else {
        ""
    };
    row(
        "effective window",
        format!("{}{note}", hours(s.effective_window.as_secs())),
    );
    row("generations", s.generations.to_string());
    row(
        "bloom memory",
        format!("{:.1} MiB ({} bytes)", mib(s.bloom_bytes), s.bloom_bytes),
    );
    row(
        "false-positive rate",
        format!(
            "{:.2e} (estimated, of a new id hitting a filter)",
            s.false_positive_rate
        ),
    );
    row("duplicates seen", s.duplicates.to_string());
    row("checkpoint", format!("WAL offset {}", s.checkpoint));
    row(
        "index file",
        format!("{:.1} MiB ({} bytes)", mib(s.file_bytes), s.file_bytes),
    );
    out
}

fn hours(secs: u64) -> String {
    format!("{}h{:02}m{:02}s", secs / 3600, secs % 3600 / 60, secs % 60)
}
