//! The integration test binary: one module per area. Database tests use `#[sqlx::test]`, which creates a fresh
//! database (migrated) per test on the server of `DATABASE_URL` (`.cargo/config.toml` defaults it to
//! 127.0.0.1:5432).

mod adapters_e2e;
mod api;
mod architecture;
mod bad_input;
mod bench_cli;
mod callbacks;
mod enqueue_sql;
mod fallback;
mod faults;
mod history;
mod hosts;
mod leader;
mod operator_cli;
mod ops;
mod policy_e2e;
mod provider_boundary;
mod provider_contract;
mod receipts;
mod rollup;
mod security;
mod sql_api;
mod support;
mod tracing;
mod ui;
mod worker_e2e;
