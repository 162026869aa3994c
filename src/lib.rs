//! ferry: a single-binary customer-data appliance.
//!
//! Events arrive over HTTP (Segment/RudderStack tracking API), are made
//! durable in a hand-rolled segmented write-ahead log, and flow from there to
//! destinations. Data flows one way: ingest → log → delivery.
//!
//! `server.rs` assembles a running ferry from a configuration. Imports go one
//! way, from it down to the neutral helpers at the bottom of this list; how
//! the parts fit is in docs/architecture.md.
//!
//! # Layout
//! - `main.rs` — the `ferry` binary: parse arguments, run, exit code (mimalloc)
//! - `server.rs` — a running ferry from a `Config`: `Server::start`, `shutdown`, `run`
//! - `config.rs` — the `ferry serve` TOML configuration and its validation
//! - `memory.rs` — the `[memory]` budget and its split among filters, caches and windows
//! - `admin.rs` — the admin API (`/admin/…`, bearer token)
//! - `retention.rs` — deleting log segments below every committed cursor and the dedup floor
//! - `metrics.rs` — every Prometheus metric and `/metrics` rendering
//! - `stored_event.rs` — the stored-event format: the `_ferry` metadata and fields read back
//! - `data_dir.rs` — `DataDir`: every path in the data directory
//! - `disk.rs` — telling a full disk (ENOSPC) from other I/O errors; redb create-or-undo
//! - `error_text.rs` — an error and its causes as one line of text
//! - `bearer.rs` — bearer-token checks, in constant time
//! - `ingest/` — the HTTP tracking API (Segment/RudderStack-compatible):
//!   - `ingest/mod.rs` — router, shared state, in-flight limit, request metrics
//!   - `ingest/handler.rs` — event endpoints: read, validate, dedup, append, ack
//!   - `ingest/intake.rs` — from a body to log records: the direct way, else the `Value` way
//!   - `ingest/canonical.rs` — JSON re-encoded as a `Value` writes it, without one
//!   - `ingest/splice.rs` — the direct way: records spliced from the client's members
//!   - `ingest/batch.rs` — a request's records; the `Value` way of making them
//!   - `ingest/auth.rs` — write key → source (Basic, query, body)
//!   - `ingest/body.rs` — size caps on the wire and while inflating gzip
//!   - `ingest/normalise.rs` — validation and normalisation of one event
//!   - `ingest/timestamp.rs` — RFC 3339 parsing/formatting, skew correction
//!   - `ingest/pixel.rs` — tracking pixels (query string → event, 1×1 GIF)
//!   - `ingest/cors.rs` — CORS for browser SDKs
//!   - `ingest/health.rs` — `/health` and `/ready`
//!   - `ingest/error.rs` — ingest errors and their JSON answers
//! - `dedup/` — exact, crash-safe (source, messageId) dedup (docs/dedup.md):
//!   - `dedup/mod.rs` — the `Dedup` handle: open, begin (classify, claim, confirm), skip, flush
//!   - `dedup/supervised.rs` — `SupervisedDedup`: the index in use, reopened after a full disk
//!   - `dedup/options.rs` — window, capacity, false-positive rate, … (defaults)
//!   - `dedup/key.rs` — the 128-bit key hash and its collision bound
//!   - `dedup/clock.rs` — the injected clock the window runs on
//!   - `dedup/generations.rs` — rotating bloom generations, window and capacity
//!   - `dedup/bloom.rs` — the split block bloom filter: blocks, sizing, one standalone filter
//!   - `dedup/filters.rs` — the held generations' filters, interleaved in one huge-page region
//!   - `dedup/shared.rs` — what handles, tickets and the writer share: state, failure, wake-ups
//!   - `dedup/state.rs` — claims and pending ids, the locked claim pass
//!   - `dedup/claim.rs` — `Ticket`: a request's claim on its new ids until commit or abort
//!   - `dedup/queue.rs` — what requests hand the writer: ops, and the inbox of committed ids
//!   - `dedup/checkpoint.rs` — the WAL offset below which all is indexed
//!   - `dedup/reindex.rs` — re-indexing the log past the checkpoint (start-up, reopen)
//!   - `dedup/writer.rs` — the batching writer thread; durability reasoning
//!   - `dedup/batch.rs` — one writer batch in one redb transaction: runs, seals, checkpoint
//!   - `dedup/index_file.rs` — the index's redb file: tables, open, start-up loading, look-ups
//!   - `dedup/runs.rs` — sorted runs of ids in chunk rows: write, merge, seal, find
//!   - `dedup/stats.rs` — figures, live or from the file (`ferry dedup stats`)
//!   - `dedup/error.rs` — the dedup error type, and why a stopped index stopped
//!   - `dedup/test_hooks.rs` — tests only: no fsync, holding or crashing the writer
//! - `log/` — the segmented write-ahead log, the single source of truth:
//!   - `log/mod.rs` — the `Log` handle: options, open, append, retention
//!   - `log/segment.rs` — a segment file's name and header, byte-exact (docs/format.md)
//!   - `log/record.rs` — a record's header, encoding, validation, size limit (docs/format.md)
//!   - `log/storage.rs` — the storage seam (`Storage`) and the real file system
//!   - `log/crash_storage.rs` — `CrashStorage`: crash-simulating, fault-injecting (tests only)
//!   - `log/segment_reader.rs` — buffered positioned reads of one segment file
//!   - `log/scan.rs` — validating walk over a segment, torn tail vs corruption
//!   - `log/recovery.rs` — opening a log: segment discovery, tail recovery
//!   - `log/shared.rs` — what the writer, readers and handles share; `LogStats`
//!   - `log/writer.rs` — the group-commit writer thread
//!   - `log/reader.rs` — iterating records from any offset
//!   - `log/inspect.rs` — read-only views for `ferry log inspect|dump|verify`
//!   - `log/error.rs` — the log's error type
//! - `delivery/` — routing logged events to destinations:
//!   - `delivery/mod.rs` — `Delivery`: a loop per destination; the committed cursors
//!   - `delivery/config.rs` — `[[destinations]]` settings
//!   - `delivery/event.rs` — `LoggedEvent`, and which destinations want it
//!   - `delivery/order_window.rs` — `OrderWindow`: per-user ordering and the cursor
//!   - `delivery/destination.rs` — `DestinationLoop`: one destination's delivery loop
//!   - `delivery/settle.rs` — what an outcome does to its events; self-pause on refused credentials
//!   - `delivery/rate_limit.rs` — the token bucket of a destination's `rate_limit`
//!   - `delivery/backoff.rs` — outcomes, retry classes, full jitter, Retry-After
//!   - `delivery/backlog.rs` — how fast a backlog grows, and when to warn
//!   - `delivery/sink.rs` — the transport trait, request bodies, bytes sent
//!   - `delivery/http_client.rs` — what HTTP sinks share: client and pool, CA file, no-answer retries
//!   - `delivery/webhook.rs` — HTTP webhooks (pool per destination, HMAC)
//!   - `delivery/segment.rs` — forwarding to a Segment-compatible upstream (`/v1/batch`, gzip)
//!   - `delivery/file.rs` — JSON Lines files with rotation
//!   - `delivery/broker.rs` — what broker sinks share: subject/topic template, dedup id, headers
//!   - `delivery/broker_keys.rs` — the checks of the nats and kafka keys
//!   - `delivery/nats.rs` — NATS JetStream (one message per event, `Nats-Msg-Id`, PubAcks)
//!   - `delivery/kafka.rs` — Kafka (idempotent producer, keyed by user, murmur2 partitions)
//!   - `delivery/replay.rs` — re-delivery of dead letters
//!   - `delivery/status.rs` — live status and operator controls
//!   - `delivery/cursor_reset.rs` — where `cursor reset --to …` points
//! - `store/` — delivery state in redb (`state.redb`):
//!   - `store/mod.rs` — the `StateStore` handle: open, reopen after a full disk, transactions
//!   - `store/cursors.rs` — each destination's cursor
//!   - `store/dead_letters.rs` — dead letters and the replay queue
//!   - `store/error.rs` — the store's error type: locked, full disk, I/O, corruption
//! - `cli/` — the `ferry` command line, one file per subcommand:
//!   - `cli/mod.rs` — clap types and dispatch
//!   - `cli/serve.rs` — `ferry serve`: arguments and signals around `server.rs`
//!   - `cli/config_cmd.rs` — `ferry config check`
//!   - `cli/log_cmd.rs` — `ferry log inspect|dump|verify`
//!   - `cli/cursors_cmd.rs` — `ferry cursors` and `ferry cursors reset`
//!   - `cli/dlq_cmd.rs` — `ferry dlq list|show|replay|purge`
//!   - `cli/dedup_cmd.rs` — `ferry dedup stats`
//!   - `cli/docs_cmd.rs` — `ferry completions` and `ferry man`
//!   - `cli/state_access.rs` — delivery state for the CLI: the file, or a server's admin API

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
pub mod memory;
pub mod metrics;
pub mod retention;
pub mod server;
pub mod store;
pub mod stored_event;
