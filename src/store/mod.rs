//! Durable delivery state in redb (`<data_dir>/state.redb`): each
//! destination's cursor, its dead letters, and dead letters queued for
//! replay. One file, opened by one process at a time (redb locks it).

mod state;

pub use state::{excerpt as state_excerpt, DeadLetter, StateStore, StoreError};
