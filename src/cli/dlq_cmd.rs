//! `ferry dlq list|show|replay|purge`: inspect and replay dead letters.
//! Replay queues them; a running destination re-delivers them in order.

use super::state_access::{open_state, StateAccess};
use crate::store::DeadLetter;
use anyhow::{bail, Result};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
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

/// A destination's dead letters, from the file or the running server.
fn letters(state: &StateAccess, dest: &str) -> Result<Vec<DeadLetter>> {
    match state {
        StateAccess::Local(store) => Ok(store.dead_letters(dest)?),
        StateAccess::Remote(r) => {
            let v = r.call(
                Method::GET,
                &format!("/admin/destinations/{dest}/dlq"),
                None,
            )?;
            Ok(serde_json::from_value(v["dead_letters"].clone())?)
        }
    }
}

/// Runs a dead-letter command.
pub fn run(cmd: DlqCommand, token: Option<&str>) -> Result<ExitCode> {
    match cmd {
        DlqCommand::List { dest, data_dir } => {
            let letters = letters(&open_state(&data_dir, token)?, &dest)?;
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
            let letters = letters(&open_state(&data_dir, token)?, &dest)?;
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
            let moved = match open_state(&data_dir, token)? {
                StateAccess::Local(store) => {
                    store.request_replay(&dest, if all { None } else { Some(&ids) })?
                }
                StateAccess::Remote(r) => {
                    let body = if all {
                        json!({"all": true})
                    } else {
                        json!({"ids": ids})
                    };
                    let v = r.call(
                        Method::POST,
                        &format!("/admin/destinations/{dest}/dlq/replay"),
                        Some(body),
                    )?;
                    v["queued"].as_u64().unwrap_or(0) as usize
                }
            };
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
            let n = match open_state(&data_dir, token)? {
                StateAccess::Local(store) => store.purge(&dest)?,
                StateAccess::Remote(r) => {
                    let v = r.call(
                        Method::DELETE,
                        &format!("/admin/destinations/{dest}/dlq"),
                        None,
                    )?;
                    v["purged"].as_u64().unwrap_or(0)
                }
            };
            println!("purged {n} dead letter(s) of {dest}");
            Ok(ExitCode::SUCCESS)
        }
    }
}
