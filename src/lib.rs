//! ferry: a single-binary customer-data appliance.
//!
//! Events arrive over HTTP (Segment/RudderStack tracking API), are made
//! durable in a hand-rolled segmented write-ahead log, and flow from there to
//! destinations. Data flows one way: ingest → log → delivery.
//!
//! # Layout
//! - `log/` — the segmented write-ahead log, the single source of truth:
//!   - `log/format.rs` — byte-exact segment and record format (docs/format.md)
//!   - `log/storage.rs` — the storage seam (trait) and the real file system
//!   - `log/sim.rs` — crash-simulating, fault-injecting storage for tests
//!   - `log/chunk.rs` — buffered positioned reads of one segment file
//!   - `log/scan.rs` — validating walk over a segment, torn tail vs corruption
//!   - `log/recovery.rs` — opening a log: segment discovery, tail recovery
//!   - `log/writer.rs` — the group-commit writer thread
//!   - `log/reader.rs` — iterating records from any offset
//!   - `log/inspect.rs` — read-only views for `ferry log inspect|dump|verify`
//!   - `log/error.rs` — the log's error type
//! - `dedup/` — exact, crash-safe (source, messageId) dedup (docs/dedup.md):
//!   - `dedup/mod.rs` — the `Dedup` handle: open, begin, reindex, stats
//!   - `dedup/options.rs` — window, capacity, false-positive rate, … (defaults)
//!   - `dedup/key.rs` — the 128-bit key hash and its collision bound
//!   - `dedup/clock.rs` — the injected clock the window runs on
//!   - `dedup/generations.rs` — rotating bloom generations, window and capacity
//!   - `dedup/state.rs` — ids in flight and pending, the locked claim pass
//!   - `dedup/ticket.rs` — a request's claim until commit or abort
//!   - `dedup/checkpoint.rs` — the WAL offset below which all is indexed
//!   - `dedup/reindex.rs` — start-up re-index of the WAL tail past the checkpoint
//!   - `dedup/writer.rs` — the batching redb writer thread; durability reasoning
//!   - `dedup/store.rs` — the redb tables, start-up loading, look-ups
//!   - `dedup/stats.rs` — figures, live or from the file (`ferry dedup stats`)
//!   - `dedup/error.rs` — the dedup error type
//! - `cli/` — the `ferry` command line: one file per subcommand

pub mod cli;
pub mod dedup;
pub mod log;
