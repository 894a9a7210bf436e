//! The tools above the engine: what the `tidings` binary runs besides the worker itself. Nothing in the engine
//! imports from here; everything here uses the engine's public API and starts workers through
//! [`crate::worker::Worker`].
//!
//! - [`cli`]: the subcommands (`migrate`, `worker`, `enqueue`, `status`, `stats`);
//! - [`operator_cli`]: `cancel`, `retry`, `reschedule`, `pause`, `resume` over [`crate::operator`];
//! - [`demo`]: `tidings demo`, a realistic mix drained against the sandbox;
//! - [`bench`]: `tidings bench`, the burn-down and latency benchmark (its SQL in [`bench_store`]);
//! - [`sandbox_server`]: `tidings sandbox`, the local fake of every provider API;
//! - [`local_pg`]: a throw-away PostgreSQL cluster for the demo and the fault tests.

pub mod bench;
mod bench_store;
pub mod cli;
pub mod demo;
pub mod local_pg;
pub mod operator_cli;
pub mod sandbox_server;

use crate::error::{Error, Result};

/// `DATABASE_URL`, or a clear error.
pub(crate) fn database_url() -> Result<String> {
    std::env::var("DATABASE_URL").map_err(|_| {
        Error::Config(
            "DATABASE_URL is not set (e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)".into(),
        )
    })
}
