//! tidings: a durable outbound-message queue worker on PostgreSQL.
//!
//! Producers enqueue with one SQL call (`tidings.enqueue`) or the `tidings-client` crate; a pool of workers
//! claims due messages in batches, applies delivery policy, calls the provider and records every status change
//! with its event row in the same transaction.
//!
//! # Layout
//!
//! The engine below, the tools above; dependencies point down only (`tests/it/architecture.rs` checks it).
//!
//! - Tools — [`app`]: the subcommands of the `tidings` binary ([`app::cli`]), the demo, the benchmark, the
//!   sandbox provider server and the throw-away local PostgreSQL. They use only the engine's public API and
//!   assemble workers through [`worker::Worker`], like the tests do.
//! - Engine, top down:
//!   - [`worker`]: [`worker::Worker`], the one way to assemble and run a pool: producer (claims up to its free
//!     slots), executor (carries out the policy's decisions around the provider call), completer (batched,
//!     guarded status updates plus events), the LISTEN task, maintenance and the inbound HTTP listener.
//!   - [`api`]: the HTTP API of `tidings serve` (`/v1`, for producers and operators), over [`operator`].
//!     Its [`api::ui`] is the dashboard at `/`: embedded assets that use only the `/v1` API.
//!   - [`callbacks`]: the status callbacks' deliverer (outbox rows written with each transition, POSTed signed,
//!     in order per message, with their own concurrency budget).
//!   - [`server`]: the worker's inbound HTTP listener (`/metrics`, `/healthz`, `/readyz`, `/receipts/{channel}`).
//!   - [`operator`]: cancel, retry, reschedule, pause, resume: one implementation for the API and the CLI.
//!   - [`maintenance`]: rescuer (expired leases), sweeper (overdue scheduled messages), pruner, queue sampler.
//!   - [`receipts`]: delivery receipts in one room — secrets, signature check, body, the state change.
//!   - [`provider`]: the `Provider` trait, the outbound HTTP client with its retry table, credentials, and one
//!     adapter per provider API.
//!   - [`store`]: the only owner of the database pool; every runtime SQL statement lives in `src/store/queries/`.
//!   - [`config`]: the TOML file, validated once at startup; builds each channel's policy.
//!   - [`policy`]: pure delivery rules (validity, quiet hours, time zones, backoff, caps, what a failure means),
//!     time as a parameter; a leaf.
//! - Leaf types: [`message`] (a claimed message; its recipient and content are [`lazy_json`] documents),
//!   [`outcome`] (what a provider answers and what an attempt ends in), [`error`], [`metrics`], [`shutdown`],
//!   [`mask`], [`telemetry`] (OpenTelemetry traces: the `OTEL_*` settings, the exporter, the worker's spans).
#![warn(missing_docs)]

pub mod api;
pub mod app;
pub mod callbacks;
pub mod config;
pub mod error;
pub mod lazy_json;
pub mod maintenance;
pub mod mask;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod outcome;
pub mod policy;
pub mod provider;
pub mod receipts;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod telemetry;
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
