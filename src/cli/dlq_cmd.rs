//! `ferry dlq list|show|replay|purge`: inspect and replay dead letters.
//! Replay queues them; a running destination re-delivers them in order.

use super::state_store;
use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

/// Dead-letter commands.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// One line per dead letter: id (log offset), messageId, attempts, last error.
    #[command(after_help = "Example:\n  ferry dlq list hook --data-dir ./ferry-data")]
    List {
        /// The destination.
        dest: String,
        /// The data directory.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
    },
    /// One dead letter in full (id = the offset `list` shows, or a messageId).
    #[command(after_help = "Example:\n  ferry dlq show hook 1042 --data-dir ./ferry-data")]
    Show {
        /// The destination.
        dest: String,
        /// Its id (log offset) or messageId.
        id: String,
        /// The data directory.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
    },
    /// Queue dead letters for re-delivery, in original order, by the destination.
    #[command(
        after_help = "Examples:\n  ferry dlq replay hook --all\n  ferry dlq replay hook 1042 1043"
    )]
    Replay {
        /// The destination.
        dest: String,
        /// Ids (log offsets) to replay.
        ids: Vec<u64>,
        /// Replay every dead letter of the destination.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// The data directory.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
    },
    /// Delete a destination's dead letters.
    #[command(after_help = "Example:\n  ferry dlq purge hook")]
    Purge {
        /// The destination.
        dest: String,
        /// The data directory.
        #[arg(long, env = "FERRY_DATA_DIR", default_value = "./ferry-data")]
        data_dir: PathBuf,
    },
}

/// Runs a dead-letter command.
pub fn run(cmd: DlqCommand) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List { dest, data_dir } => {
            let letters = state_store(&data_dir)?.dead_letters(&dest)?;
            for d in &letters {
                let status = d.last_status.map_or_else(|| "-".into(), |s| s.to_string());
                let error: String = d
                    .last_error
                    .chars()
                    .take(120)
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                println!(
                    "{}\tmessageId={}\tattempts={}\tstatus={status}\t{error}",
                    d.offset, d.message_id, d.attempts
                );
            }
            eprintln!("{} dead letter(s) for {dest}", letters.len());
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Show { dest, id, data_dir } => {
            let letters = state_store(&data_dir)?.dead_letters(&dest)?;
            let found = letters
                .iter()
                .find(|d| d.offset.to_string() == id || d.message_id == id);
            let Some(d) = found else {
                bail!("no dead letter {id:?} for destination {dest:?}")
            };
            let mut doc = serde_json::to_value(d)?;
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&d.event) {
                doc["event"] = event;
            }
            println!("{}", serde_json::to_string_pretty(&doc)?);
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            dest,
            ids,
            all,
            data_dir,
        } => {
            if !all && ids.is_empty() {
                bail!("name the dead letters to replay (their ids from `ferry dlq list`) or pass --all");
            }
            let store = state_store(&data_dir)?;
            let moved = store.request_replay(&dest, if all { None } else { Some(&ids) })?;
            if !all && moved < ids.len() {
                bail!(
                    "only {moved} of {} ids were dead letters of {dest:?}; those were queued",
                    ids.len()
                );
            }
            println!("{moved} dead letter(s) of {dest} queued for replay; they are re-delivered in order when ferry serve runs");
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Purge { dest, data_dir } => {
            let n = state_store(&data_dir)?.purge(&dest)?;
            println!("purged {n} dead letter(s) of {dest}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
