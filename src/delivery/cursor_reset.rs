//! Where `cursor reset --to …` points: `earliest`, `latest`, an offset, or
//! an RFC 3339 time (the first event received at or after it). Shared by the
//! CLI (offline, through a read-only view) and the admin API (live log).

use crate::log::{LogError, LogReader};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Resolves `to` against a log holding offsets `[start, end)`; `open`
/// gives a reader from an offset (used only for times).
pub fn resolve_target(
    to: &str,
    start: u64,
    end: u64,
    open: impl FnOnce(u64) -> Result<LogReader, LogError>,
) -> Result<u64, String> {
    match to {
        "earliest" => Ok(start),
        "latest" => Ok(end),
        _ => {
            if let Ok(offset) = to.parse::<u64>() {
                if !(start..=end).contains(&offset) {
                    return Err(format!(
                        "offset {offset} is outside the log [{start}, {end}]"
                    ));
                }
                return Ok(offset);
            }
            let Ok(when) = OffsetDateTime::parse(to, &Rfc3339) else {
                return Err(format!(
                    "{to:?} is not earliest, latest, an offset or an RFC 3339 time"
                ));
            };
            let when_ms = u64::try_from(when.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            let mut reader = open(start).map_err(|e| e.to_string())?;
            while let Some(r) = reader.next_below(end).map_err(|e| e.to_string())? {
                if crate::stored_event::received_ms(&r.payload).is_some_and(|t| t >= when_ms) {
                    return Ok(r.offset);
                }
            }
            Ok(end)
        }
    }
}
