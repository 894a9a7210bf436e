//! What the dashboard reads beyond the API's lists: the per-minute timeline of status changes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Store;
use crate::error::Result;

/// One minute of the timeline.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TimelineMinute {
    /// The minute's start.
    pub minute: DateTime<Utc>,
    /// Messages the provider accepted.
    pub sent: i64,
    /// Messages that reached a final failure status.
    pub failed: i64,
    /// Messages deferred (a retry, quiet hours, a 429 pause).
    pub deferred: i64,
}

impl Store {
    /// Status changes of the last `window`, per minute, oldest first; minutes without any are absent.
    pub async fn stats_timeline(&self, window: Duration) -> Result<Vec<TimelineMinute>> {
        Ok(sqlx::query_as(include_str!("queries/ui_timeline.sql"))
            .bind(window.as_secs_f64())
            .fetch_all(&self.pool)
            .await?)
    }
}
