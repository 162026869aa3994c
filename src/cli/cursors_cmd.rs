//! `ferry cursors`: each destination's cursor and lag, and `ferry cursors
//! reset` to rewind or skip for replay. Works offline on a data directory.

use super::state_access::{open_state, StateAccess};

use crate::log::LogView;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use reqwest::Method;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use time::OffsetDateTime;

/// Cursor commands.
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  ferry cursors --data-dir ./ferry-data\n  ferry cursors reset hook --to earliest --data-dir ./ferry-data\n  ferry cursors reset hook --to 2026-11-26T10:00:00Z"
)]
pub struct CursorsArgs {
    /// The data directory.
    #[arg(
        long,
        global = true,
        env = "FERRY_DATA_DIR",
        default_value = "./ferry-data"
    )]
    pub data_dir: PathBuf,
    /// Reset instead of listing.
    #[command(subcommand)]
    pub action: Option<CursorsAction>,
}

/// What to do with cursors.
#[derive(Debug, Subcommand)]
pub enum CursorsAction {
    /// Moves a destination's cursor: it next delivers from there.
    #[command(
        after_help = "Examples:\n  ferry cursors reset hook --to earliest\n  ferry cursors reset hook --to 1042\n  ferry cursors reset hook --to 2026-11-26T10:00:00Z\n  FERRY_ADMIN_TOKEN=… ferry cursors reset hook --to latest   # while a server runs"
    )]
    Reset {
        /// The destination.
        dest: String,
        /// `earliest`, `latest`, an offset, or an RFC 3339 time (first event received at or after it).
        #[arg(long)]
        to: String,
    },
}

/// Runs a cursors command.
pub fn run(args: CursorsArgs, token: Option<&str>) -> Result<ExitCode> {
    let log = open_log(&args.data_dir)?;
    let state = open_state(&args.data_dir, token)?;
    match (args.action, state) {
        (None, StateAccess::Local(store)) => {
            let cursors = store.cursors()?;
            if cursors.is_empty() {
                println!("no destination has a cursor yet");
            }
            println!(
                "{:<20} {:>12} {:>12} {:>14} {:>12}",
                "destination", "cursor", "lag_events", "lag_bytes", "oldest_age"
            );
            for (dest, cursor) in cursors {
                let (events, bytes, age) = lag(&log, cursor)?;
                let age = age.map_or_else(|| "-".into(), |s| format!("{s}s"));
                println!("{dest:<20} {cursor:>12} {events:>12} {bytes:>14} {age:>12}");
            }
            Ok(ExitCode::SUCCESS)
        }
        (None, StateAccess::Remote(r)) => {
            let v = r.call(Method::GET, "/admin/destinations", None)?;
            println!(
                "{:<20} {:>12} {:>12} {:>12}  state",
                "destination", "cursor", "lag_events", "oldest_age"
            );
            for d in v["destinations"].as_array().into_iter().flatten() {
                let state = if d["paused"] == true {
                    match d["pause_reason"].as_str() {
                        Some(why) => format!("paused: {why}"),
                        None => "paused".into(),
                    }
                } else if d["failing"] == true {
                    match d["last_error"].as_str() {
                        Some(why) => {
                            format!("failing: {}", why.chars().take(160).collect::<String>())
                        }
                        None => "failing".into(),
                    }
                } else {
                    "ok".into()
                };
                println!(
                    "{:<20} {:>12} {:>12} {:>11.0}s  {state}",
                    d["name"].as_str().unwrap_or("?"),
                    d["cursor"],
                    d["lag_events"],
                    d["lag_seconds"].as_f64().unwrap_or(0.0)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        (Some(CursorsAction::Reset { dest, to }), StateAccess::Local(store)) => {
            if !store.cursors()?.contains_key(&dest) {
                bail!(
                    "destination {dest:?} has no cursor in {} (it has never run)",
                    args.data_dir.display()
                );
            }
            let offset = resolve(&log, &to)?;
            store.set_cursors(&[(dest.clone(), offset)])?;
            println!("cursor of {dest} set to {offset}");
            Ok(ExitCode::SUCCESS)
        }
        (Some(CursorsAction::Reset { dest, to }), StateAccess::Remote(r)) => {
            let v = r.call(
                Method::POST,
                &format!("/admin/destinations/{dest}/cursor"),
                Some(serde_json::json!({ "to": to })),
            )?;
            println!("cursor of {dest} set to {}", v["cursor"]);
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn open_log(data_dir: &Path) -> Result<LogView> {
    let log_dir = crate::data_dir::DataDir::new(data_dir).log();
    if !log_dir.is_dir() {
        bail!(
            "{} is not a ferry data directory: it has no log/ folder",
            data_dir.display()
        );
    }
    LogView::open(&log_dir)
        .with_context(|| format!("cannot read the log in {}", data_dir.display()))
}

/// (events, payload bytes, age in seconds of the oldest) not yet delivered.
fn lag(log: &LogView, cursor: u64) -> Result<(u64, u64, Option<i64>)> {
    let end = log.end_offset();
    let from = cursor.max(log.start_offset());
    if from >= end {
        return Ok((end.saturating_sub(cursor), 0, None));
    }
    let mut reader = log.reader(from)?;
    let mut bytes = 0u64;
    let mut age = None;
    while let Some(r) = reader.next()? {
        if age.is_none() {
            let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            age =
                crate::stored_event::received_ms(&r.payload).map(|ms| (now_ms - ms as i64) / 1000);
        }
        bytes += r.payload.len() as u64;
    }
    Ok((end - cursor, bytes, age))
}

fn resolve(log: &LogView, to: &str) -> Result<u64> {
    let (start, end) = (log.start_offset(), log.end_offset());
    crate::delivery::resolve_target(to, start, end, |from| log.reader(from))
        .map_err(anyhow::Error::msg)
}
