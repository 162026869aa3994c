//! `ferry log inspect|dump|verify`: read-only looks inside a data
//! directory's write-ahead log, through the log's own reader.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ferry_log::{LogError, LogView};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::log as ferry_log;
use crate::stored_event;

/// Read-only log commands.
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// One row per segment (file, first and last offset, records, bytes, health) and totals.
    #[command(after_help = "Example:\n  ferry log inspect --data-dir ./ferry-data")]
    Inspect {
        /// The data directory (holds log/).
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Records as JSON Lines: {"offset": N, "payload": …} (JSON payloads inline, others as text or base64).
    #[command(
        after_help = "Example:\n  ferry log dump --data-dir ./ferry-data --from 100 --limit 10"
    )]
    Dump {
        /// The data directory (holds log/).
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
        /// First offset to print (default: the oldest held).
        #[arg(long)]
        from: Option<u64>,
        /// Print at most this many records.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Full CRC scan; exit 0 when clean, 1 with segment and byte offset for every problem.
    #[command(after_help = "Example:\n  ferry log verify --data-dir ./ferry-data")]
    Verify {
        /// The data directory (holds log/).
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
    },
}

/// Runs a log subcommand.
pub fn run(cmd: LogCommand) -> Result<ExitCode> {
    match cmd {
        LogCommand::Inspect { data_dir, json } => inspect(&open(&data_dir)?, json),
        LogCommand::Dump {
            data_dir,
            from,
            limit,
        } => dump(&open(&data_dir)?, from, limit),
        LogCommand::Verify { data_dir } => verify(&open(&data_dir)?),
    }
}

/// Opens the log of a data directory read-only, with a clear error when the
/// directory is missing or not a ferry data directory.
fn open(data_dir: &Path) -> Result<LogView> {
    if !data_dir.is_dir() {
        bail!("data directory {} does not exist", data_dir.display());
    }
    let dir = crate::data_dir::DataDir::new(data_dir).log();
    if !dir.is_dir() {
        bail!(
            "{} is not a ferry data directory: it has no log/ folder",
            data_dir.display()
        );
    }
    match LogView::open(&dir) {
        Err(LogError::NotALog { path, reason }) => {
            bail!("{} is not a ferry log: {reason}", path.display())
        }
        other => other.with_context(|| format!("cannot read the log in {}", dir.display())),
    }
}

fn inspect(view: &LogView, json: bool) -> Result<ExitCode> {
    let rows = view.inspect()?;
    let corrupt = rows.iter().any(|r| r.corrupt);
    let mut out = std::io::stdout().lock();
    if json {
        let doc = serde_json::json!({
            "segments": rows,
            "start_offset": view.start_offset(),
            "end_offset": view.end_offset(),
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
    } else {
        writeln!(
            out,
            "{:<26} {:>12} {:>12} {:>10} {:>12}  health",
            "segment", "first", "last", "records", "bytes"
        )?;
        let dash = |o: Option<u64>| o.map_or_else(|| "-".to_string(), |v| v.to_string());
        for r in &rows {
            let name = r
                .file
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            writeln!(
                out,
                "{:<26} {:>12} {:>12} {:>10} {:>12}  {}",
                name,
                dash(r.first_offset),
                dash(r.last_offset),
                r.records,
                r.bytes,
                r.health
            )?;
        }
        let records: u64 = rows.iter().map(|r| r.records).sum();
        let bytes: u64 = rows.iter().map(|r| r.bytes).sum();
        writeln!(
            out,
            "total: {} segments, {records} records, {bytes} bytes, offsets [{}, {})",
            rows.len(),
            view.start_offset(),
            view.end_offset()
        )?;
    }
    Ok(if corrupt {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn dump(view: &LogView, from: Option<u64>, limit: Option<u64>) -> Result<ExitCode> {
    let from = from.unwrap_or_else(|| view.start_offset());
    let mut reader = view.reader(from)?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut n = 0;
    while limit.is_none_or(|l| n < l) {
        let Some(rec) = reader.next()? else { break };
        let payload =
            match serde_json::from_slice::<serde_json::Value>(stored_event::json(&rec.payload)) {
                Ok(v) => serde_json::json!({ "offset": rec.offset, "payload": v }),
                Err(_) => match std::str::from_utf8(&rec.payload) {
                    Ok(s) => serde_json::json!({ "offset": rec.offset, "payload_text": s }),
                    Err(_) => {
                        use base64::Engine;
                        let b64 = base64::engine::general_purpose::STANDARD.encode(&rec.payload);
                        serde_json::json!({ "offset": rec.offset, "payload_base64": b64 })
                    }
                },
            };
        serde_json::to_writer(&mut out, &payload)?;
        out.write_all(b"\n")?;
        n += 1;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn verify(view: &LogView) -> Result<ExitCode> {
    let problems = view.verify()?;
    let mut fatal = 0;
    for p in &problems {
        let level = if p.fatal { "error" } else { "warning" };
        println!(
            "{level}: {} at byte {}: {}",
            p.segment.display(),
            p.position,
            p.reason
        );
        fatal += usize::from(p.fatal);
    }
    let records = view.end_offset() - view.start_offset();
    if fatal > 0 {
        println!("verify: {fatal} problem(s) found");
        Ok(ExitCode::FAILURE)
    } else {
        println!(
            "verify: ok, {records} records in offsets [{}, {})",
            view.start_offset(),
            view.end_offset()
        );
        Ok(ExitCode::SUCCESS)
    }
}
