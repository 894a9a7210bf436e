//! The benchmark's own SQL: resetting, warming and counting the benchmark channels. Tools keep their SQL out of
//! the engine's [`Store`]; this wraps a store's pool.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::Result;
use crate::store::Store;

/// The benchmark's queries over a [`Store`]'s pool.
pub(crate) struct BenchStore<'a>(pub(crate) &'a Store);

impl BenchStore<'_> {
    /// Benchmark only: deletes every message (and event) of these channels.
    pub(crate) async fn reset(&self, channels: &[&str]) -> Result<()> {
        sqlx::query(include_str!("queries/bench_reset.sql"))
            .bind(channels)
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    /// Benchmark only: opens `connections` connections at once and has each plan `enqueue_many` with an empty
    /// call, so a timed bulk enqueue starts where a running producer is (a new connection's first call spends
    /// about 20 ms planning it) instead of timing connection set-up.
    pub(crate) async fn warm(&self, connections: usize) -> Result<()> {
        let mut held = Vec::with_capacity(connections);
        for _ in 0..connections {
            held.push(self.0.pool().acquire().await?);
        }
        for conn in &mut held {
            sqlx::query(include_str!("queries/bench_warm.sql"))
                .execute(&mut **conn)
                .await?;
        }
        Ok(())
    }

    /// Benchmark only: vacuums and analyses the hot tables (VACUUM cannot be prepared: simple protocol).
    pub(crate) async fn vacuum(&self) -> Result<()> {
        sqlx::raw_sql(include_str!("queries/bench_vacuum.sql"))
            .execute(self.0.pool())
            .await?;
        Ok(())
    }

    /// Benchmark only: makes the history hold at least `n` finished messages of `channel` (three events each),
    /// created over the last `days` days; returns how many it added (0 when a run before left enough).
    pub(crate) async fn fill_history(&self, channel: &str, n: i64, days: i32) -> Result<i64> {
        let pool = self.0.pool();
        let have: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tidings.message_history WHERE channel = $1")
                .bind(channel)
                .fetch_one(pool)
                .await?;
        if have >= n {
            return Ok(0);
        }
        sqlx::query("SELECT count(*) FROM tidings.history_partitions(make_interval(days => $1 + 1), 3, (now() - make_interval(days => $1 + 1))::date)")
            .bind(days)
            .fetch_one(pool)
            .await?;
        let want = n - have;
        let mut added = 0;
        while added < want {
            let chunk = (want - added).min(500_000);
            sqlx::query(include_str!("queries/bench_history_fill.sql"))
                .bind(chunk)
                .bind(channel)
                .bind(days)
                .execute(pool)
                .await?;
            added += chunk;
            eprintln!("history: {} of {want} messages added", added);
        }
        // At rest, as a history of past days is (otherwise the first autovacuum of these insert-only partitions
        // runs during the drain and the run measures it).
        sqlx::raw_sql("VACUUM (ANALYZE) tidings.message_history, tidings.message_event_history")
            .execute(pool)
            .await?;
        Ok(added)
    }

    /// Benchmark only: (live, sent, final) counts of a channel.
    pub(crate) async fn counts(&self, channel: &str) -> Result<(i64, i64, i64)> {
        Ok(sqlx::query_as(include_str!("queries/bench_counts.sql"))
            .bind(channel)
            .fetch_one(self.0.pool())
            .await?)
    }

    /// Benchmark only: live messages of a channel.
    pub(crate) async fn live(&self, channel: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(include_str!("queries/bench_live.sql"))
            .bind(channel)
            .fetch_one(self.0.pool())
            .await?)
    }

    /// Benchmark only: enqueue → sent latency percentiles (p50, p99) in ms.
    pub(crate) async fn latency(&self, channel: &str) -> Result<(f64, f64)> {
        Ok(sqlx::query_as(include_str!("queries/bench_latency.sql"))
            .bind(channel)
            .fetch_one(self.0.pool())
            .await?)
    }

    /// Benchmark only: start of the sending attempt of each message.
    pub(crate) async fn started(&self, ids: &[Uuid]) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        Ok(sqlx::query_as(include_str!("queries/bench_started.sql"))
            .bind(ids)
            .fetch_all(self.0.pool())
            .await?)
    }
}
