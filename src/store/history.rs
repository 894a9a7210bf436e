//! The partitioned history (migration 0014): the mover that takes finished messages out of the hot tables, the
//! day partitions it writes into (created ahead, dropped past the retention), and the way back for a late change.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use super::Store;
use crate::error::Result;

/// What one [`Store::history_move`] batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryMoved {
    /// Messages moved into the history (with their events).
    pub moved: i64,
    /// The last id the batch walked past: the next batch starts above it. None: the walk reached the end of
    /// what may move (the pass is over).
    pub resume_after: Option<Uuid>,
}

/// One partition day that [`Store::history_partitions`] created or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPartitionChange {
    /// `created` or `dropped`.
    pub action: String,
    /// The day (UTC) of creation the partition holds.
    pub day: NaiveDate,
}

impl Store {
    /// Moves up to `limit` finished messages not changed since `before`, with their events, from the hot tables
    /// into the history (see `queries/history_move.sql`), walking the hot table from above `after`.
    pub async fn history_move(
        &self,
        before: DateTime<Utc>,
        after: Option<Uuid>,
        limit: i64,
    ) -> Result<HistoryMoved> {
        let (moved, resume_after): (i64, Option<Uuid>) =
            sqlx::query_as(include_str!("queries/history_move.sql"))
                .bind(before)
                .bind(after)
                .bind(limit)
                .fetch_one(&self.pool)
                .await?;
        Ok(HistoryMoved {
            moved,
            resume_after,
        })
    }

    /// Creates the day partitions the history needs (from the oldest hot message's day to `ahead` days from
    /// now) and drops the days older than `retention` that no hot message belongs to.
    pub async fn history_partitions(
        &self,
        retention: Duration,
        ahead: i32,
    ) -> Result<Vec<HistoryPartitionChange>> {
        let rows: Vec<(String, NaiveDate)> = sqlx::query_as(
            "SELECT action, day FROM tidings.history_partitions(make_interval(secs => $1), $2)",
        )
        .bind(retention.as_secs_f64())
        .bind(ahead)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(action, day)| HistoryPartitionChange { action, day })
            .collect())
    }

    /// Brings these messages back from the history into the hot table (a late receipt); returns those that were
    /// there.
    pub async fn history_restore(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar("SELECT tidings.history_restore($1)")
            .bind(ids)
            .fetch_all(&self.pool)
            .await?)
    }

    /// Deletes up to `limit` finished callbacks of transitions before `before` (their messages' history is being
    /// dropped by then); returns how many.
    pub async fn callback_prune(&self, before: DateTime<Utc>, limit: i64) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(include_str!("queries/callback_prune.sql"))
            .bind(before)
            .bind(limit)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }
}
