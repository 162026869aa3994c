//! ferry: a single-binary customer-data appliance.
//!
//! Events arrive over HTTP (Segment/RudderStack tracking API), are made
//! durable in a hand-rolled segmented write-ahead log, and flow from there to
//! destinations. Data flows one way: ingest → log → delivery.
//!
//! # Layout
//! - `log/` — the segmented write-ahead log, the single source of truth:
//!   - `log/mod.rs` — the `Log` handle: options, open, append, retention
//!   - `log/segment.rs` — a segment file's name and header, byte-exact (docs/format.md)
//!   - `log/record.rs` — a record's header, encoding, validation, size limit (docs/format.md)
//!   - `log/storage.rs` — the storage seam (trait) and the real file system
//!   - `log/crash_storage.rs` — crash-simulating, fault-injecting storage (tests only)
//!   - `log/segment_reader.rs` — buffered positioned reads of one segment file
//!   - `log/scan.rs` — validating walk over a segment, torn tail vs corruption
//!   - `log/recovery.rs` — opening a log: segment discovery, tail recovery
//!   - `log/shared.rs` — what the writer, readers and handles share; `LogStats`
//!   - `log/writer.rs` — the group-commit writer thread
//!   - `log/reader.rs` — iterating records from any offset
//!   - `log/inspect.rs` — read-only views for `ferry log inspect|dump|verify`
//!   - `log/error.rs` — the log's error type
//! - `config.rs` — the `ferry serve` TOML configuration and its validation
//! - `ingest/` — the HTTP tracking API (Segment/RudderStack-compatible):
//!   - `ingest/mod.rs` — router, shared state, in-flight limit, `run`
//!   - `ingest/handler.rs` — event endpoints: read, validate, append, ack
//!   - `ingest/auth.rs` — write key → source (Basic, query, body)
//!   - `ingest/body.rs` — size caps on the wire and while inflating gzip
//!   - `ingest/event.rs` — validation and normalisation of one event
//!   - `ingest/timestamp.rs` — RFC 3339 parsing/formatting, skew correction
//!   - `ingest/reindex.rs` — start-up dedup re-index from the log tail
//!   - `ingest/dedup_slot.rs` — the dedup index in use, reopened after a full disk
//!   - `ingest/pixel.rs` — tracking pixels (query string → event, 1×1 GIF)
//!   - `ingest/cors.rs` — CORS for browser SDKs
//!   - `ingest/health.rs` — `/health` and `/ready`
//!   - `ingest/error.rs` — ingest errors and their JSON answers
//! - `dedup/` — exact, crash-safe (source, messageId) dedup (docs/dedup.md):
//!   - `dedup/mod.rs` — the `Dedup` handle: open, begin (classify, claim, confirm), skip, flush
//!   - `dedup/options.rs` — window, capacity, false-positive rate, … (defaults)
//!   - `dedup/key.rs` — the 128-bit key hash and its collision bound
//!   - `dedup/clock.rs` — the injected clock the window runs on
//!   - `dedup/generations.rs` — rotating bloom generations, window and capacity
//!   - `dedup/bloom.rs` — the split block bloom filter: blocks, sizing, one standalone filter
//!   - `dedup/filters.rs` — the held generations' filters, interleaved in one huge-page region
//!   - `dedup/shared.rs` — what handles, tickets and the writer share: the locked state, failure, wake-ups
//!   - `dedup/state.rs` — claims and pending ids, the locked claim pass
//!   - `dedup/claim.rs` — `Ticket`: a request's claim on its new ids until commit or abort
//!   - `dedup/queue.rs` — what requests hand the writer: ops, and the inbox of committed ids
//!   - `dedup/checkpoint.rs` — the WAL offset below which all is indexed
//!   - `dedup/reindex.rs` — start-up re-index of the WAL tail past the checkpoint
//!   - `dedup/writer.rs` — the batching writer thread; durability reasoning
//!   - `dedup/batch.rs` — one writer batch in one redb transaction: runs, seals, filters, checkpoint
//!   - `dedup/index_file.rs` — the index's redb file: tables, open, start-up loading, look-ups
//!   - `dedup/runs.rs` — sorted runs of ids in chunk rows: write, merge, seal, find
//!   - `dedup/stats.rs` — figures, live or from the file (`ferry dedup stats`)
//!   - `dedup/error.rs` — the dedup error type, and why a stopped index stopped
//!   - `dedup/test_hooks.rs` — tests only: writing without fsync, holding or crashing the writer
//! - `delivery/` — routing logged events to destinations:
//!   - `delivery/config.rs` — `[[destinations]]` settings
//!   - `delivery/event.rs` — routing fields of a stored event
//!   - `delivery/dispatcher.rs` — per-user ordering window and cursor
//!   - `delivery/backoff.rs` — retry classes, full jitter, Retry-After
//!   - `delivery/sink.rs` — the transport trait and request bodies
//!   - `delivery/webhook.rs` — HTTP webhooks (pool per destination, HMAC)
//!   - `delivery/file.rs` — JSON Lines files with rotation
//!   - `delivery/worker.rs` — one destination's delivery loop
//!   - `delivery/replay.rs` — re-delivery of dead letters
//!   - `delivery/status.rs` — live status and operator controls
//!   - `delivery/target.rs` — resolving a cursor-reset target
//! - `metrics.rs` — every Prometheus metric and `/metrics` rendering
//! - `store/` — delivery state in redb (`state.redb`):
//!   - `store/mod.rs` — the `StateStore` handle: open, reopen after a full disk, transactions
//!   - `store/cursors.rs` — each destination's cursor
//!   - `store/dead_letters.rs` — dead letters and the replay queue
//!   - `store/error.rs` — the store's error type: locked, full disk, I/O, corruption
//! - `admin.rs` — the admin API (`/admin/…`, bearer token)
//! - `cli/` — the `ferry` command line: one file per subcommand

pub mod admin;
pub mod bearer;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod dedup;
pub mod delivery;
pub mod disk;
pub mod error_text;
pub mod ingest;
pub mod log;
pub mod metrics;
pub mod retention;
pub mod server;
pub mod store;
pub mod stored_event;
