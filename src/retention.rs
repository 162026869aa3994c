//! Retention: whole log segments are deleted once every destination's
//! committed cursor has passed them, and never at or above the floor the
//! dedup index re-indexes from after a crash.

use crate::delivery::CursorBoard;
use crate::log::{Log, LogError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often retention looks at the cursors.
pub const RETENTION_EVERY: Duration = Duration::from_secs(5);

/// A lower bound retention must respect besides the cursors: the dedup
/// index's checkpoint (it re-indexes from there after a crash).
pub type RetentionFloor = Arc<dyn Fn() -> u64 + Send + Sync>;

/// What retention deletes below.
pub struct Retention {
    /// The log whose segments go.
    log: Log,
    /// The destinations' committed cursors.
    board: Arc<CursorBoard>,
    /// Every configured destination: each must have committed a cursor.
    names: Vec<String>,
    /// Another holder of log segments, if any.
    floor: Option<RetentionFloor>,
}

impl Retention {
    /// Retention of `log` below the committed cursors of `names` on `board`
    /// and below `floor`.
    pub fn new(
        log: Log,
        board: Arc<CursorBoard>,
        names: Vec<String>,
        floor: Option<RetentionFloor>,
    ) -> Retention {
        Retention {
            log,
            board,
            names,
            floor,
        }
    }

    /// One pass: deletes whole segments below the lowest committed cursor
    /// (and the floor); nothing until every destination has committed one,
    /// nor without destinations. Blocking. Returns how many segments were
    /// deleted.
    pub fn apply(&self) -> Result<usize, LogError> {
        if self.names.is_empty() {
            return Ok(0);
        }
        let Some(cursors) = self.board.min_over(&self.names) else {
            return Ok(0);
        };
        let floor = self.floor.as_ref().map_or(u64::MAX, |f| f());
        let min = cursors.min(floor);
        let n = self.log.delete_segments_below(min)?;
        if n > 0 {
            tracing::info!(
                segments = n,
                below = min,
                "retention deleted {n} segment(s) below offset {min}"
            );
        }
        Ok(n)
    }

    /// Applies retention every [`RETENTION_EVERY`] until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        let this = Arc::new(self);
        let mut tick = tokio::time::interval(RETENTION_EVERY);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pass = this.clone();
            match tokio::task::spawn_blocking(move || pass.apply()).await {
                Ok(Err(e)) => tracing::error!("retention failed: {e}"),
                Err(e) => tracing::error!("retention task failed: {e}"),
                Ok(Ok(_)) => {}
            }
        }
    }
}
