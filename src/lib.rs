//! tidings: a durable outbound-message queue worker on PostgreSQL.
//!
//! Producers enqueue with one SQL call (`tidings.enqueue`) or the `tidings-client` crate; a pool of workers
//! claims due messages in batches, applies delivery policy, calls the provider and records every status change
//! with its event row in the same transaction.
//!
//! # Layout
//!
//! - [`config`]: the TOML file, validated once at startup.
//! - [`store`]: the only owner of the database pool; every runtime SQL statement lives in `src/store/queries/`.
//! - [`policy`]: pure delivery rules (validity, quiet hours, backoff, the retry table), time as a parameter.
//! - [`provider`]: the `Provider` trait, the shared HTTP classification and one adapter per provider API.
//! - [`worker`]: producer (claims up to its free slots), executor (policy → provider → outcome), completer
//!   (batched, guarded status updates plus events).
//! - [`maintenance`]: rescuer (expired leases), sweeper (overdue scheduled messages), pruner (old rows).
//! - [`sandbox`]: the local provider server used by the demo, the tests and the benchmarks.
//! - [`receipts`]: parsing and signature checks of provider delivery receipts.
//! - [`message`]: a claimed message; its recipient and content are [`lazy_json`] documents, parsed on first read.
//! - [`metrics`] and [`http`]: Prometheus metrics and the worker's HTTP listener.
//! - [`operator`]: cancel, retry, reschedule, pause, resume: one implementation for the API and the CLI.
//! - [`api`]: the HTTP API of `tidings serve` (producers and operators, `/v1`).
//! - [`ui`]: the dashboard at `/` of `tidings serve`, a client of the API.
//! - [`demo`], [`bench`], [`cli`]: what the `tidings` binary runs.
#![warn(missing_docs)]

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod http;
pub mod lazy_json;
pub mod local_pg;
pub mod maintenance;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod outcome;
pub mod policy;
pub mod provider;
pub mod receipts;
pub mod sandbox;
pub mod shutdown;
pub mod store;
pub mod ui;
pub mod worker;

pub use error::{Error, Result};
pub use tidings_client as client;

/// The use cases a message may have.
pub const USE_CASES: &[&str] = &[
    "transactional",
    "promotional",
    "conversational",
    "marketing",
    "2fa",
];
