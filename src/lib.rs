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
//! - `cli/` — the `ferry` command line: one file per subcommand

pub mod cli;
pub mod log;
