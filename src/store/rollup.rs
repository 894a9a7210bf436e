//! The per-minute counts of status changes (`tidings.event_minutes`, migration 0013) that the chart and the
//! "last 24 h" counts read instead of the event history, kept up by the workers' maintenance.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use crate::error::Result;

impl Store {
    /// One rollup pass: recounts the last rolled-up minutes and counts the next ones (up to an hour of them),
    /// and drops counts older than `keep`. Returns the end of the counted minutes, or None when another process
    /// is rolling up right now.
    pub async fn event_rollup(&self, keep: Duration) -> Result<Option<DateTime<Utc>>> {
        let mut tx = self.pool.begin().await?;
        let range: Option<(DateTime<Utc>, DateTime<Utc>)> =
            sqlx::query_as(include_str!("queries/rollup_take.sql"))
                .fetch_optional(&mut *tx)
                .await?;
        let Some((lo, hi)) = range else {
            return Ok(None);
        };
        if hi > lo {
            for sql in [
                include_str!("queries/rollup_clear.sql"),
                include_str!("queries/rollup_count.sql"),
            ] {
                sqlx::query(sql).bind(lo).bind(hi).execute(&mut *tx).await?;
            }
        }
        sqlx::query(include_str!("queries/rollup_done.sql"))
            .bind(hi)
            .bind(keep.as_secs_f64())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(hi))
    }
}
